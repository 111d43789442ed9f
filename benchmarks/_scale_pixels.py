"""Pixel-path cost against history length: one window's step and its state (issue #16 item 2).

A synthetic tile of ``side x side`` chips (default 21 x 21 = 441, a quarter of a 10980-px
tile in 256-px chips) with 32 x 32 watched pixels each (``PixelParams.max_side``), one
acquisition a week: NDVI with an annual cycle and noise, and a clearing (NDVI -0.4) in a
6 x 6 block of a few chips from week 70. Windows go through
:func:`~clay_core.change.pixels.step_pixels` one after another, in memory, as a replay does;
at windows 4 and 50 (history being collected), 60 and 104 (monitoring) the step is timed together
with writing its state (:func:`~clay_core.change.pixels.save_pixel_state`, ``pixels.npz``),
and the state's size on disk is reported, with ``pixel_change_fraction`` of the cleared chips
(the block is 36 / 1024 = 3.5 % of a chip) and of the unchanged ones. The history ends after
365 days, the path's default.

    .venv/bin/python benchmarks/_scale_pixels.py [--side 21] [--json]

Ratios are window 104 against window 60 of the same run (both monitoring; the machine is
shared and noisy).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from clay_core.change.pixels import PixelObs, PixelParams, new_pixel_table, save_pixel_state, step_pixels  # noqa: E402

START = date(2022, 1, 5)
MEASURE = (4, 50, 60, 104)


def window_obs(ids: np.ndarray, i: int, n_pix: int, changed: np.ndarray, rng: np.random.Generator) -> PixelObs:
    """Week ``i``: every chip once, NDVI of ``n_pix`` pixels (a 6 x 6 block of ``changed`` chips
    cleared from week 70)."""
    when = datetime.combine(START + timedelta(weeks=i), datetime.min.time()) + timedelta(hours=10)
    season = 0.6 + 0.2 * np.sin(2 * np.pi * i / 52.18)
    ndvi = season + rng.normal(0, 0.03, (len(ids), n_pix))
    if i >= 70:
        side = int(np.sqrt(n_pix))
        block = (np.arange(n_pix) // side < 6) & (np.arange(n_pix) % side < 6)
        ndvi[np.ix_(changed, np.flatnonzero(block))] -= 0.4
    return PixelObs(ids, np.full(len(ids), np.datetime64(when, "ns")), ndvi.astype(np.float32),
                    np.ones(len(ids), bool))


def _r(x: float) -> float | None:
    return round(float(x), 4) if np.isfinite(x) else None


def run(side: int = 21) -> dict:
    params = PixelParams()
    n_pix = params.max_side ** 2
    ids = np.array([f"31UFU_r{r:03d}c{c:03d}" for r in range(side) for c in range(side)], dtype=object)
    rng = np.random.default_rng(0)
    changed = rng.choice(len(ids), max(1, len(ids) // 50), replace=False)
    tab = new_pixel_table()
    out: dict = {"chips": len(ids), "pixels_per_chip": n_pix, "windows": {}}
    with tempfile.TemporaryDirectory(prefix="scale_pixels_") as tmp:
        for i in range(max(MEASURE) + 1):
            obs = window_obs(ids, i, n_pix, changed, rng)
            t0 = time.perf_counter()
            scores = step_pixels(tab, obs, params)
            t_step = time.perf_counter() - t0
            if i in MEASURE:
                t0 = time.perf_counter()
                npz, _ = save_pixel_state(Path(tmp), tab, {"window": i})
                t_save = time.perf_counter() - t0
                frac = scores["pixel_change_fraction"].to_numpy()
                stable = np.delete(frac, changed)
                out["windows"][i] = {
                    "step_s": round(t_step, 3), "save_s": round(t_save, 3),
                    "state_mb": round(npz.stat().st_size / 2**20, 1),
                    "fraction_cleared_min": _r(np.min(frac[changed])),
                    "fraction_unchanged_median": _r(np.median(stable)),
                    "fraction_unchanged_max": _r(np.max(stable)),
                }
    # monitoring from week ~53 on: 60 vs 104 is how the cost grows with history once monitoring
    w60, w104 = out["windows"][60], out["windows"][104]
    out["time_ratio_104_vs_60"] = round((w104["step_s"] + w104["save_s"]) / (w60["step_s"] + w60["save_s"]), 2)
    out["state_ratio_104_vs_60"] = round(w104["state_mb"] / w60["state_mb"], 2)
    out["changed_chips"] = len(changed)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--side", type=int, default=21, help="chips per tile side (21: a quarter of a 42 x 42 tile)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    out = run(args.side)
    print(json.dumps(out, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

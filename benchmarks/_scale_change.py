"""Change-partition cost against history length: window 4 vs window 104 (issue #15).

A synthetic tile of 42 x 42 = 1,764 chips with 768-d embeddings (``--quick``: 21 x 21), one
acquisition a week, a seasonal drift and planted steps, written as real embedding Zarr stores
and chip indexes in a real :class:`~clay_core.storage.Layout`. Windows 0-4 go through
``score_change`` one after another, and window 4 is measured. For window 104 the carry of
window 103 is built by stepping the same per-window code through windows 0-103 in memory
and stored as window 103's change partition (no embeddings of 0-103 on disk), then window
104 is measured through the real incremental ``score_change``. Time: wall clock, the fastest
of three calls; memory: tracemalloc peak of a fourth call (numpy's buffers included).
``render_s*`` is the part of the time spent drawing the PNGs (intensity map, PC1 series:
matplotlib, in ``clay_core.render``), reported apart because it does not depend on history.

    .venv/bin/python benchmarks/_scale_change.py --json [--quick]
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
import tracemalloc
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from clay_core.change import ChangeParams, PcaBasis, score_change  # noqa: E402
from clay_core.storage import CHANGE, CHIPS, EMBEDDINGS, Layout, write_manifest  # noqa: E402
from clay_core.types import Observations, PartitionId  # noqa: E402

TILE = "31UFU"
START = date(2022, 1, 3)  # a Monday
REPEAT = 3  # timed calls per window; the fastest counts (the machine is shared)


def window_name(i: int) -> str:
    return (START + timedelta(weeks=i)).isoformat()


class World:
    """Embeddings of ``side**2`` chips: a fixed direction per chip plus an annual cycle and
    noise; a few chips step to another direction at ``step_at``."""

    def __init__(self, side: int = 42, dim: int = 768, seed: int = 0, step_at: int = 70):
        rng = np.random.default_rng(seed)
        self.side, self.dim, self.step_at = side, dim, step_at
        self.ids = np.array([f"{TILE}_r{r:03d}c{c:03d}" for r in range(side) for c in range(side)], dtype=object)
        self.base = rng.standard_normal((len(self.ids), dim)).astype(np.float32)
        self.season = rng.standard_normal((len(self.ids), dim)).astype(np.float32) * 0.3
        self.stepped = rng.choice(len(self.ids), max(3, len(self.ids) // 100), replace=False)
        self.jump = rng.standard_normal((len(self.stepped), dim)).astype(np.float32) * 1.5
        self.seed = seed

    def window(self, i: int, extra: int = 0) -> Observations:
        """Window ``i``: every chip once (Wednesday noon), ``extra`` chips twice (Friday too)."""
        rng = np.random.default_rng(self.seed * 100_003 + i)
        when = datetime.combine(START + timedelta(weeks=i, days=2), datetime.min.time()) + timedelta(hours=12)
        phase = 2 * np.pi * i / 52.18
        v = self.base + np.float32(np.cos(phase)) * self.season
        v = v + rng.standard_normal(v.shape).astype(np.float32) * 0.1
        if i >= self.step_at:
            v[self.stepped] += self.jump
        ids, dts = self.ids, np.full(len(self.ids), np.datetime64(when, "ns"))
        if extra:
            k = rng.choice(len(self.ids), extra, replace=False)
            ids = np.concatenate([ids, self.ids[k]])
            dts = np.concatenate([dts, np.full(extra, np.datetime64(when + timedelta(days=2), "ns"))])
            v = np.concatenate([v, v[k] + rng.standard_normal((extra, self.dim)).astype(np.float32) * 0.1])
        return Observations(ids, dts, v.astype(np.float32))

    def basis(self, k: int = 8) -> PcaBasis:
        rng = np.random.default_rng(self.seed + 7)
        q, _ = np.linalg.qr(rng.standard_normal((self.dim, k)))
        return PcaBasis(1, np.zeros(self.dim), q.T.copy(), np.full(k, 1.0 / k), len(self.ids))

    def write(self, layout: Layout, i: int, obs: Observations | None = None) -> Observations:
        """Window ``i``'s embedding store and chip index, as the earlier stages leave them."""
        from clay_core.encoder.store import write_embeddings

        obs = obs if obs is not None else self.window(i)
        d = layout.partition(EMBEDDINGS, TILE, window_name(i))
        d.mkdir(parents=True, exist_ok=True)
        write_embeddings(d / "embeddings.zarr", obs.chip_id, obs.datetime, obs.vectors, None, {})
        write_manifest(d, {"chips": int(len(obs.chip_id))})
        self._index(layout, i)
        return obs

    def _index(self, layout: Layout, i: int) -> None:
        import geopandas as gpd
        from shapely.geometry import box

        rows, cols = np.divmod(np.arange(len(self.ids)), self.side)
        x0, y0 = 600_000 + cols * 640.0, 5_700_000 - rows * 640.0
        gdf = gpd.GeoDataFrame({"chip_id": self.ids, "row": rows, "col": cols, "x_min": x0, "x_max": x0 + 640.0},
                               geometry=[box(x, y - 640.0, x + 640.0, y) for x, y in zip(x0, y0)], crs="EPSG:32631")
        d = layout.partition(CHIPS, TILE, window_name(i))
        d.mkdir(parents=True, exist_ok=True)
        gdf.to_parquet(d / "index.parquet")
        write_manifest(d, {"chips": int(len(self.ids))})


def carry_state(layout: Layout, world: World, upto: int, basis: PcaBasis, params: ChangeParams) -> None:
    """Window ``upto``'s change partition holding only its carry, stepped in memory from 0."""
    from clay_core.change.carry import CarryHeader, save_carry
    from clay_core.change.stage import new_table, params_record, step_window

    tab = new_table(world.dim, params)
    for i in range(upto + 1):
        step_window(tab, world.window(i), basis, params)
    d = layout.partition(CHANGE, TILE, window_name(upto))
    d.mkdir(parents=True, exist_ok=True)
    save_carry(d, tab, CarryHeader(basis.version, params_record(params), window_name(upto), upto + 1))
    write_manifest(d, {"tile": TILE, "window": window_name(upto)})


class _RenderClock:
    """Times the PNG rendering (matplotlib) inside score_change; the calls stay real."""

    def __init__(self):
        from clay_core.change import series_plots, stage

        self.seconds, self.patched = 0.0, [(stage, "intensity_map"), (series_plots, "series_plot")]
        self.real = [getattr(m, n) for m, n in self.patched]

    def __enter__(self):
        for (m, n), real in zip(self.patched, self.real):
            setattr(m, n, self._timed(real))
        return self

    def _timed(self, real):
        def call(*a, **k):
            t0 = time.perf_counter()
            try:
                return real(*a, **k)
            finally:
                self.seconds += time.perf_counter() - t0
        return call

    def __exit__(self, *exc):
        for (m, n), real in zip(self.patched, self.real):
            setattr(m, n, real)


def _measure(layout: Layout, i: int, basis: PcaBasis, params: ChangeParams) -> tuple[float, float, int, float]:
    """``(seconds, peak MiB, history windows, PNG seconds)``: the fastest of ``REPEAT`` calls
    (re-running a partition replaces it and redoes the same work), then a traced one."""
    pid = PartitionId(window=window_name(i), tile=TILE)
    runs = []
    for _ in range(REPEAT):
        with _RenderClock() as render:
            t0 = time.perf_counter()
            res = score_change(layout, pid, basis, params)
            runs.append((time.perf_counter() - t0, render.seconds))
        assert res.replayed_windows == 0, res.replay_reason  # the incremental path was measured
    seconds, png = min(runs)
    tracemalloc.start()
    score_change(layout, pid, basis, params)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return seconds, peak / 2**20, int(res.history_windows), png


def run(quick: bool = False) -> dict:
    """Time and peak memory of one change partition at window 4 and at window 104."""
    side = 21 if quick else 42
    world, params = World(side=side), ChangeParams()
    basis = world.basis()
    with tempfile.TemporaryDirectory(prefix="scale_change_") as tmp:
        layout = Layout(Path(tmp))
        for i in range(5):
            world.write(layout, i)
            if i < 4:
                score_change(layout, PartitionId(window=window_name(i), tile=TILE), basis, params)
        time4, peak4, hist4, render4 = _measure(layout, 4, basis, params)
        t0 = time.perf_counter()
        carry_state(layout, world, 103, basis, params)
        build_s = time.perf_counter() - t0
        world.write(layout, 104)
        time104, peak104, hist104, render104 = _measure(layout, 104, basis, params)
    return {
        "chips": int(len(world.ids)), "dim": world.dim, "history_windows4": hist4, "history_windows104": hist104,
        "time4_s": round(time4, 3), "time104_s": round(time104, 3),
        "change_growth_ratio": round(time104 / time4, 3),
        "peak_mb4": round(peak4, 1), "peak_mb104": round(peak104, 1),
        "memory_growth_ratio": round(peak104 / peak4, 3),
        "render_s4": round(render4, 3), "render_s104": round(render104, 3),
        "time4_without_png_s": round(time4 - render4, 3), "time104_without_png_s": round(time104 - render104, 3),
        "history_build_s": round(build_s, 1),
        "note": "one process; window 103's carry stepped in memory through windows 0-103, window 104 scored "
                "by the real incremental score_change (tracemalloc peak, detector included)",
    }


if __name__ == "__main__":
    out = run(quick="--quick" in sys.argv)
    print(json.dumps(out, indent=None if "--json" in sys.argv else 2))

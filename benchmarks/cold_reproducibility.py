"""How well pyxccd's COLD reproduces its own breaks when one knob or one observation changes.

The real-series arm of ``change_eval.py`` scores our detector against COLD's confirmed breaks
on nrt's Sentinel-2 pixels (``benchmarks/_change_real.py``). This script puts a number on the
reference itself: COLD re-run with one setting changed (``conse``, ``p_cg``, least squares
instead of lasso) or with one random clear observation per pixel masked, each scored against
the default run exactly as ours is (one-to-one matching within +-1 clear observation).

It also says where COLD's breaks sit: the share whose break observation is bright in blue
(B2 reflectance above 0.15: undetected cloud, haze or snow the SCL mask let through).

    .venv/bin/python benchmarks/cold_reproducibility.py [--pixels 2000] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._change_real import cold_breaks, load_pixels, mask_one  # noqa: E402
from benchmarks._change_refs import clear_index, match_events  # noqa: E402

BRIGHT_BLUE = 1500  # B2 x 10,000: vegetation and soil stay well below


def _score(ref: list[list[int]], other: list[list[int]], ci: np.ndarray) -> tuple[float, float, int]:
    """(share of ``ref``'s breaks matched within +-1, unmatched ``other`` events per 100 series, events)."""
    tp = n_ref = n_other = 0
    for i, (r, o) in enumerate(zip(ref, other)):
        pairs = match_events([int(ci[i, b]) for b in r], [int(ci[i, b]) for b in o], 1)
        tp, n_ref, n_other = tp + len(pairs), n_ref + len(r), n_other + len(o)
    return tp / max(n_ref, 1), 100.0 * (n_other - tp) / len(ref), n_other


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pixels", type=int, default=2000, help="random subset of the 10,000 pixels (0 = all)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    px = load_pixels(args.pixels, args.seed)
    ci = clear_index(px.clear)
    ref, _ = cold_breaks(px)
    n_ref = sum(map(len, ref))
    bright = sum(px.values[i, b, 0] > BRIGHT_BLUE for i, bs in enumerate(ref) for b in bs)
    print(f"{len(ref)} pixel-series; COLD (lam 20, conse 6, p_cg 0.99) confirms {n_ref} breaks; "
          f"{100.0 * bright / max(n_ref, 1):.0f} % of them at an observation with B2 > {BRIGHT_BLUE / 1e4:.2f}")
    print(f"{'variant':<40} {'breaks':>7} {'default breaks matched +-1':>27} {'breaks the default lacks /100':>30}")
    variants = [
        ("conse 5", {"conse": 5}), ("conse 7", {"conse": 7}), ("p_cg 0.95", {"p_cg": 0.95}),
        ("p_cg 0.999", {"p_cg": 0.999}), ("least squares (lam 0)", {"lam": 0}),
        ("one clear obs masked per pixel (seed 1)", {"clear": mask_one(px.clear, 1)}),
        ("one clear obs masked per pixel (seed 2)", {"clear": mask_one(px.clear, 2)}),
    ]
    for name, kw in variants:
        other, _ = cold_breaks(px, **kw)
        share, extra, n = _score(ref, other, ci)
        print(f"{name:<40} {n:>7} {100 * share:>26.1f}% {extra:>30.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

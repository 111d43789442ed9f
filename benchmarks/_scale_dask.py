"""Embedding throughput: one process against a Dask cluster of 2 CPU workers, same chips.

The cluster is :class:`clay_core.dask_cluster.LoopbackCluster`: a scheduler and 2 workers,
each its own process on 127.0.0.1, one torch thread per worker. The local path runs
``embed_chips`` in this process with torch's default thread count (every core). Both embed
the same random Sentinel-2 chips (raw digital numbers) with the same seeded encoder and batch
size; the cluster's first call (workers importing torch and building the model) is a warm-up
and is not timed. ``local_1_thread_chips_per_s`` is the local path on one torch thread, what
each worker runs. Each path runs ``repeats`` times, interleaved; the best run is reported.

On one idle machine the cluster cannot beat the local path by much: both use the same cores,
and the cluster adds pickling and task scheduling. On a loaded machine one process's OpenMP
threads wait on each other at every parallel region, which single-threaded workers avoid. What it shows is the cost of the distributed
path, and that its embeddings equal the local ones (``max_abs_diff``: 0 when the thread counts
match; float32 rounding otherwise).

    python benchmarks/_scale_dask.py            # tiny preset, 96 chips of 128 px, 10 bands
    python benchmarks/_scale_dask.py --quick --json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from clay_core.dask_cluster import LoopbackCluster  # noqa: E402
from clay_core.encoder import build_encoder, embed_chips  # noqa: E402
from clay_core.platforms import get_platform  # noqa: E402

PLATFORM = "sentinel-2-l2a"
WORKERS = 2


def _chips(n: int, size: int, bands: list[str]) -> tuple[np.ndarray, dict]:
    rng = np.random.default_rng(0)
    pixels = rng.integers(1, 10000, size=(n, len(bands), size, size), dtype=np.uint16)
    dates = np.array([np.datetime64("2024-01-01T10:00") + np.timedelta64(5 * i, "D") for i in range(n)])
    return pixels, {"datetimes": dates, "lat": np.linspace(40, 50, n), "lon": np.linspace(-5, 5, n)}


def run(quick: bool = False, *, preset: str = "tiny", repeats: int | None = None) -> dict:
    """Chips/s of the local path and of a 2-worker loopback Dask cluster on the same chips."""
    n, size, batch = (24, 64, 4) if quick else (96, 128, 8)
    repeats = repeats or (1 if quick else 3)
    bands = get_platform(PLATFORM).band_names
    pixels, meta = _chips(n, size, bands)
    encoder = build_encoder(preset, seed=0)
    kw = dict(platform=PLATFORM, bands=bands, batch_size=batch, **meta)
    local_s, one_s, dask_s = [], [], []
    threads = torch.get_num_threads()
    with LoopbackCluster(WORKERS, threads=1, memory_limit="2GiB") as cluster:
        embed_chips(encoder, pixels[: 2 * batch], scheduler_address=cluster.address,
                    **{**kw, **{k: v[: 2 * batch] for k, v in meta.items()}})  # warm-up: imports, model build
        for _ in range(repeats):
            t0 = time.perf_counter()
            local = embed_chips(encoder, pixels, **kw)
            local_s.append(time.perf_counter() - t0)
            torch.set_num_threads(1)  # the workers' per-process thread count
            try:
                t0 = time.perf_counter()
                embed_chips(encoder, pixels, **kw)
                one_s.append(time.perf_counter() - t0)
            finally:
                torch.set_num_threads(threads)
            t0 = time.perf_counter()
            remote = embed_chips(encoder, pixels, scheduler_address=cluster.address, **kw)
            dask_s.append(time.perf_counter() - t0)
    local_rate, dask_rate = n / min(local_s), n / min(dask_s)
    return {
        "local_chips_per_s": round(local_rate, 2),
        "dask_chips_per_s": round(dask_rate, 2),
        "local_1_thread_chips_per_s": round(n / min(one_s), 2),
        "dask_workers": WORKERS,
        "speedup": round(dask_rate / local_rate, 3),
        "speedup_vs_1_thread": round(dask_rate * min(one_s) / n, 3),
        "max_abs_diff": float(np.abs(remote.cls - local.cls).max()),
        "preset": preset,
        "n_chips": n,
        "chip_size": size,
        "bands": len(bands),
        "batch_size": batch,
        "repeats": repeats,
        "local_torch_threads": torch.get_num_threads(),
        "worker_torch_threads": 1,
        "cpu_count": os.cpu_count(),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="24 chips of 64 px, one run")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--json", action="store_true", help="print one JSON line instead of the table")
    args = ap.parse_args(argv)
    report = run(args.quick, preset=args.preset, repeats=args.repeats)
    if args.json:
        print(json.dumps(report))
        return
    for key, value in report.items():
        print(f"{key:>22}: {value}")


if __name__ == "__main__":
    main()

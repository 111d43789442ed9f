"""Chipping throughput: a full Sentinel-2-size tile (10980 x 10980 px, 4 uint16 bands, one
tiled deflate GeoTIFF on local disk) through ``LocalRasterSource.load_scene`` ->
``chip_scene`` -> ``to_dataset`` -> ``write_cube`` (Zarr v3), against the bare rasterio
windowed read of the same chip windows of the same file in the same run.

The baseline opens the file and reads every ``chip_size`` window, all bands, row-major --
the least any chipper must do (decompress every pixel it keeps). The pipeline time is
measured for load + chip (what the chip asset does before writing) and, separately, for
the Zarr write; the ratio compares load + chip with the bare reads.

    python benchmarks/chipping.py                    # full tile (writes ~0.5 GB of GeoTIFF)
    python benchmarks/chipping.py --size 2048        # quick check
"""

from __future__ import annotations

import argparse
import json
import os
import platform as _platform
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from clay_core.chips import ChipParams, chip_scene, to_dataset, write_cube  # noqa: E402
from clay_core.sources.local import LocalRasterSource  # noqa: E402

BANDS = ["blue", "green", "red", "nir"]
TILE = "31UFU"
ORIGIN = (600000.0, 5800020.0)  # the real 31UFU upper-left corner


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=10980, help="tile width = height in px (S2: 10980)")
    ap.add_argument("--chip-size", type=int, default=256)
    ap.add_argument("--blocksize", type=int, default=512, help="GeoTIFF tile size")
    ap.add_argument("--workdir", default=None, help="where to write (default: a temp dir, removed)")
    ap.add_argument("--repeat", type=int, default=1, help="timed runs of each path (best is reported)")
    ap.add_argument("--no-write", action="store_true", help="skip the Zarr write")
    ap.add_argument("--json", action="store_true", help="print one JSON line only")
    return ap.parse_args(argv)


def write_tile(path: Path, size: int, blocksize: int) -> float:
    """Realistic-ish reflectance: smooth fields + texture + noise (compresses like land)."""
    t0 = time.perf_counter()
    profile = dict(driver="GTiff", height=size, width=size, count=len(BANDS), dtype="uint16",
                   crs="EPSG:32631", transform=from_origin(*ORIGIN, 10, 10), nodata=0, tiled=True,
                   blockxsize=blocksize, blockysize=blocksize, compress="deflate", predictor=2,
                   interleave="pixel", BIGTIFF="IF_SAFER", NUM_THREADS="ALL_CPUS")  # fmt: skip
    rng = np.random.default_rng(0)
    x = np.arange(size, dtype=np.float32)
    with rasterio.open(path, "w", **profile) as ds:
        for band_i, _ in enumerate(BANDS):
            ds.set_band_description(band_i + 1, BANDS[band_i])
        for r0 in range(0, size, blocksize):
            h = min(blocksize, size - r0)
            y = np.arange(r0, r0 + h, dtype=np.float32)[:, None]
            base = 1500 + 600 * np.sin(x / 310.0)[None, :] * np.cos(y / 470.0) + 300 * np.sin((x[None, :] + y) / 37.0)
            strip = np.empty((len(BANDS), h, size), np.uint16)
            for b in range(len(BANDS)):
                noise = rng.integers(0, 120, (h, size), dtype=np.uint16)
                strip[b] = np.clip(base * (0.8 + 0.25 * b) + noise, 1, 65535).astype(np.uint16)
            ds.write(strip, window=Window(0, r0, size, h))
    return time.perf_counter() - t0


def bare_read(path: Path, chip: int) -> tuple[float, int, int]:
    """Every chip window, all bands, with plain rasterio windowed reads."""
    t0 = time.perf_counter()
    n = 0
    checksum = 0
    with rasterio.open(path) as src:
        nr, nc = src.height // chip, src.width // chip
        for r in range(nr):
            for c in range(nc):
                a = src.read(window=Window(c * chip, r * chip, chip, chip))
                checksum += int(a[0, 0, 0])
                n += 1
    return time.perf_counter() - t0, n, checksum


def pipeline(root: Path, chip: int, write_to: Path | None) -> dict:
    src = LocalRasterSource(str(root), pattern="{tile}_{date}.tif", band_names=BANDS, qa_band=None)
    refs = src.list_scenes(TILE, datetime(2020, 1, 1, tzinfo=timezone.utc), datetime(2030, 1, 1, tzinfo=timezone.utc))
    assert len(refs) == 1, refs
    t0 = time.perf_counter()
    scene = src.load_scene(refs[0], BANDS)
    t1 = time.perf_counter()
    chips = chip_scene(scene, ChipParams(chip_size=chip, max_cloud=1.0, max_nodata=1.0))
    t2 = time.perf_counter()
    out = {"load_s": t1 - t0, "chip_s": t2 - t1, "n_chips": len(chips), "checksum": int(chips.pixels[:, 0, 0, 0].astype(np.int64).sum())}
    if write_to is not None:
        ds = to_dataset(chips, chip)
        write_cube(ds, write_to)
        out["write_s"] = time.perf_counter() - t2
        out["cube_mb"] = sum(f.stat().st_size for f in write_to.rglob("*") if f.is_file()) / 1e6
    del scene, chips
    return out


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="clay-chipbench-"))
    work.mkdir(parents=True, exist_ok=True)
    tif = work / "tiles" / f"{TILE}_20230105.tif"
    tif.parent.mkdir(exist_ok=True)
    try:
        write_s = write_tile(tif, args.size, args.blocksize)
        bare_runs, pipe_runs = [], []
        for i in range(max(1, args.repeat)):
            bare_runs.append(bare_read(tif, args.chip_size))
            cube = None if args.no_write else work / f"cube{i}.zarr"
            pipe_runs.append(pipeline(tif.parent, args.chip_size, cube))
            if cube is not None:
                shutil.rmtree(cube, ignore_errors=True)
        bare_s, n_bare, bare_sum = min(bare_runs)
        best = min(pipe_runs, key=lambda p: p["load_s"] + p["chip_s"])
        assert best["n_chips"] == n_bare, (best["n_chips"], n_bare)
        assert best["checksum"] == bare_sum, "chip pixels differ from the bare windowed reads"
        pipe_s = best["load_s"] + best["chip_s"]
        result = {
            "benchmark": "chipping",
            "size": args.size, "bands": len(BANDS), "chip_size": args.chip_size, "blocksize": args.blocksize,
            "file_mb": round(tif.stat().st_size / 1e6, 1), "write_tile_s": round(write_s, 2),
            "n_chips": n_bare,
            "bare_read_s": round(bare_s, 3), "bare_chips_per_s": round(n_bare / bare_s, 1),
            "load_s": round(best["load_s"], 3), "chip_s": round(best["chip_s"], 3),
            "pipeline_s": round(pipe_s, 3), "pipeline_chips_per_s": round(n_bare / pipe_s, 1),
            "ratio_pipeline_over_bare": round(pipe_s / bare_s, 3),
            "zarr_write_s": round(best["write_s"], 3) if "write_s" in best else None,
            "chips_per_s_incl_write": round(n_bare / (pipe_s + best["write_s"]), 1) if "write_s" in best else None,
            "cube_mb": round(best["cube_mb"], 1) if "cube_mb" in best else None,
            "cpus": os.cpu_count(), "python": _platform.python_version(),
            "rasterio": rasterio.__version__, "gdal": rasterio.__gdal_version__,
        }  # fmt: skip
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:28s} {v}")
        print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()

"""Chipping throughput: a full Sentinel-2-size tile (10980 x 10980 px, 4 uint16 bands, one
tiled deflate GeoTIFF on local disk) cut into 256 px chips, against the bare rasterio
windowed read of the same chip windows of the same file in the same run.

The baseline opens the file and reads every ``chip_size`` window, all bands, row-major,
in one thread -- the least any chipper must do (decompress every pixel it keeps). Timed,
each ``--repeat`` times (best reported), interleaved with the baseline:

- ``stream``: ``chip_source_scene`` -> ``LocalRasterSource.chip_reader`` +
  ``chip_raster_strips``: chip rows read straight into chip layout in threads, per-chip
  counts and packing overlapped with the reads (what the chip asset should call);
  ``ratio_stream_over_bare`` is the headline number (target <= 1.5);
- ``legacy``: ``load_scene`` (the ``[band, y, x]`` scene array) then ``chip_scene``;
- ``zarr``: ``to_dataset`` + ``write_cube`` of the stream's chips (Zarr v3, sharded, zstd).

Correctness, untimed: a reference pass reads every chip window with rasterio and keeps
its CRC32 and nodata fraction; both paths must return exactly the expected chips (count,
ids, order) with the same CRC32 for every chip, and the cube read back must match on a
sample of chips. ``--nodata-wedge F`` blanks a triangle (fraction F of the tile, all
bands 0) like a swath edge, so chips are also dropped (``--max-nodata``).

    python benchmarks/chipping.py                    # full tile (writes ~0.6 GB of GeoTIFF)
    python benchmarks/chipping.py --size 2048        # quick check
    python benchmarks/chipping.py --nodata-wedge 0.2 --max-nodata 0.1
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
import zlib
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from clay_core.chips import (  # noqa: E402
    ChipParams,
    chip_id,
    chip_scene,
    chip_source_scene,
    open_cube,
    to_dataset,
    write_cube,
)
from clay_core.sources import LocalRasterSource  # noqa: E402

BANDS = ["blue", "green", "red", "nir"]
TILE = "31UFU"
ORIGIN = (600000.0, 5800020.0)  # the real 31UFU upper-left corner


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=10980, help="tile width = height in px (S2: 10980)")
    ap.add_argument("--chip-size", type=int, default=256)
    ap.add_argument("--blocksize", type=int, default=512, help="GeoTIFF tile size")
    ap.add_argument("--workdir", default=None, help="where to write (default: a temp dir, removed)")
    ap.add_argument("--reuse-tile", action="store_true", help="keep an existing tile of the same name in --workdir")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs of each path (best is reported)")
    ap.add_argument("--workers", type=int, default=None, help="reader threads of the stream path (default: source's)")
    ap.add_argument("--nodata-wedge", type=float, default=0.0, help="fraction of the tile blanked (all bands 0)")
    ap.add_argument("--max-nodata", type=float, default=1.0, help="ChipParams.max_nodata (1.0: keep every chip)")
    ap.add_argument("--no-legacy", action="store_true", help="skip load_scene + chip_scene")
    ap.add_argument("--no-write", action="store_true", help="skip the Zarr write")
    ap.add_argument("--json", action="store_true", help="print one JSON line only")
    return ap.parse_args(argv)


def write_tile(path: Path, size: int, blocksize: int, wedge: float = 0.0) -> float:
    """Realistic-ish reflectance: smooth fields + texture + noise (compresses like land);
    ``wedge``: that fraction of the tile (upper-left triangle) is 0 in every band."""
    t0 = time.perf_counter()
    profile = dict(driver="GTiff", height=size, width=size, count=len(BANDS), dtype="uint16",
                   crs="EPSG:32631", transform=from_origin(*ORIGIN, 10, 10), nodata=0, tiled=True,
                   blockxsize=blocksize, blockysize=blocksize, compress="deflate", predictor=2,
                   interleave="pixel", BIGTIFF="IF_SAFER", NUM_THREADS="ALL_CPUS")  # fmt: skip
    rng = np.random.default_rng(0)
    x = np.arange(size, dtype=np.float32)
    edge = size * np.sqrt(2 * wedge)  # x + y < edge: a triangle of area wedge * size**2
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
            if wedge > 0:
                strip[:, (x[None, :] + y) < edge] = 0
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


def reference(path: Path, chip: int, max_nodata: float) -> dict:
    """Untimed: CRC32 of every chip window (band, y, x order) and the chips a correct
    chipper keeps (no QA band: nodata fraction = pixels 0 in every band)."""
    crc: dict[tuple[int, int], int] = {}
    kept: list[tuple[int, int]] = []
    with rasterio.open(path) as src:
        nr, nc = src.height // chip, src.width // chip
        for r in range(nr):
            for c in range(nc):
                a = np.ascontiguousarray(src.read(window=Window(c * chip, r * chip, chip, chip)))
                crc[(r, c)] = zlib.crc32(a)
                if (a == 0).all(axis=0).mean() <= max_nodata:
                    kept.append((r, c))
    return {"crc": crc, "kept": kept, "n_windows": nr * nc}


def verify(chips, ref: dict, what: str) -> int:
    """Exact chips: count, ids and order, and every chip's CRC32; returns the combined CRC."""
    rows, cols = chips.meta["row"].to_numpy(), chips.meta["col"].to_numpy()
    got = list(zip(rows.tolist(), cols.tolist()))
    assert len(chips) == len(ref["kept"]), f"{what}: {len(chips)} chips, expected {len(ref['kept'])}"
    assert got == ref["kept"], f"{what}: kept chips differ from the reference"
    assert list(chips.meta["chip_id"]) == [chip_id(TILE, r, c) for r, c in got], f"{what}: chip ids"
    total = 0
    for i, rc in enumerate(got):
        crc = zlib.crc32(np.ascontiguousarray(chips.pixels[i]))
        assert crc == ref["crc"][rc], f"{what}: chip {rc} pixels differ from the bare windowed read"
        total = zlib.crc32(crc.to_bytes(4, "little"), total)
    return total


def make_source(root: Path) -> tuple[LocalRasterSource, object]:
    src = LocalRasterSource(str(root), pattern="{tile}_{date}.tif", band_names=BANDS, qa_band=None)
    refs = src.list_scenes(TILE, datetime(2020, 1, 1, tzinfo=timezone.utc), datetime(2030, 1, 1, tzinfo=timezone.utc))
    assert len(refs) == 1, refs
    src.grid(TILE)  # grid lookup (file header) is not chipping
    return src, refs[0]


def run_stream(root: Path, params: ChipParams, workers: int | None):
    src, ref = make_source(root)
    t0 = time.perf_counter()
    chips = chip_source_scene(src, ref, BANDS, params, workers=workers)
    return time.perf_counter() - t0, chips


def run_legacy(root: Path, params: ChipParams) -> tuple[float, float, object]:
    src, ref = make_source(root)
    t0 = time.perf_counter()
    scene = src.load_scene(ref, BANDS)
    t1 = time.perf_counter()
    chips = chip_scene(scene, params)
    t2 = time.perf_counter()
    del scene
    return t1 - t0, t2 - t1, chips


def run_write(chips, chip: int, cube: Path) -> tuple[float, float]:
    t0 = time.perf_counter()
    write_cube(to_dataset(chips, chip), cube)
    dt = time.perf_counter() - t0
    return dt, sum(f.stat().st_size for f in cube.rglob("*") if f.is_file()) / 1e6


def check_cube(cube: Path, chips) -> None:
    ds = open_cube(cube)
    assert ds.sizes["chip"] == len(chips), (ds.sizes["chip"], len(chips))
    assert list(ds["chip_id"].values) == list(chips.meta["chip_id"]), "cube chip ids"
    for i in range(0, len(chips), max(1, len(chips) // 40)):
        assert np.array_equal(ds["pixels"][i].values, chips.pixels[i]), f"cube chip {i} differs"


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="clay-chipbench-"))
    work.mkdir(parents=True, exist_ok=True)
    tif = work / "tiles" / f"{TILE}_20230105.tif"
    tif.parent.mkdir(exist_ok=True)
    params = ChipParams(chip_size=args.chip_size, max_cloud=1.0, max_nodata=args.max_nodata)
    load_at_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    try:
        if args.reuse_tile and tif.exists():
            write_s = 0.0
        else:
            write_s = write_tile(tif, args.size, args.blocksize, args.nodata_wedge)
        ref = reference(tif, args.chip_size, args.max_nodata)
        bare, stream, legacy, zarr_w = [], [], [], []
        cube_mb = None
        for i in range(max(1, args.repeat)):
            bare.append(bare_read(tif, args.chip_size))
            dt, chips = run_stream(tif.parent, params, args.workers)
            stream_crc = verify(chips, ref, "stream")
            stream.append(dt)
            if not args.no_write:
                cube = work / f"cube{i}.zarr"
                wdt, cube_mb = run_write(chips, args.chip_size, cube)
                zarr_w.append(wdt)
                if i == 0:
                    check_cube(cube, chips)
                shutil.rmtree(cube, ignore_errors=True)
            del chips
            if not args.no_legacy:
                load_s, chip_s, chips = run_legacy(tif.parent, params)
                assert verify(chips, ref, "legacy") == stream_crc
                legacy.append((load_s + chip_s, load_s, chip_s))
                del chips
        bare_s, n_bare, _ = min(bare)
        stream_s = min(stream)
        result = {
            "benchmark": "chipping",
            "size": args.size, "bands": len(BANDS), "chip_size": args.chip_size, "blocksize": args.blocksize,
            "nodata_wedge": args.nodata_wedge, "max_nodata": args.max_nodata,
            "file_mb": round(tif.stat().st_size / 1e6, 1), "write_tile_s": round(write_s, 2),
            "windows": n_bare, "n_chips": len(ref["kept"]), "verified": "count+ids+crc32 of every chip",
            "repeat": max(1, args.repeat),
            "bare_read_s": round(bare_s, 3), "bare_chips_per_s": round(n_bare / bare_s, 1),
            "stream_s": round(stream_s, 3), "stream_chips_per_s": round(len(ref["kept"]) / stream_s, 1),
            "ratio_stream_over_bare": round(stream_s / bare_s, 3),
            "bare_runs_s": [round(b[0], 3) for b in bare], "stream_runs_s": [round(s, 3) for s in stream],
        }  # fmt: skip
        if legacy:
            best = min(legacy)
            result.update({
                "legacy_load_s": round(best[1], 3), "legacy_chip_s": round(best[2], 3),
                "legacy_s": round(best[0], 3), "ratio_legacy_over_bare": round(best[0] / bare_s, 3),
            })  # fmt: skip
        if zarr_w:
            result.update({
                "zarr_write_s": round(min(zarr_w), 3),
                "chips_per_s_incl_write": round(len(ref["kept"]) / (stream_s + min(zarr_w)), 1),
                "cube_mb": round(cube_mb, 1),
            })  # fmt: skip
        result.update({
            "cpus": os.cpu_count(), "loadavg_at_start": round(load_at_start, 2) if load_at_start is not None else None,
            "python": _platform.python_version(), "numpy": np.__version__,
            "rasterio": rasterio.__version__, "gdal": rasterio.__gdal_version__,
        })  # fmt: skip
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

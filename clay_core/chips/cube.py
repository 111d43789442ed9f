"""Chip cubes: a :class:`ChipSet` as an xarray Dataset, written and opened as Zarr v3
(one chunk per chip, sharded, zstd), on local disk or published on S3 (:mod:`.s3`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from clay_core.chips.chipset import ChipSet
from clay_core.chips.s3 import open_published, write_published

__all__ = ["CUBE_CLEVEL", "to_dataset", "write_cube", "open_cube"]


def to_dataset(chips: ChipSet, chip_size: int) -> xr.Dataset:
    """The chip cube as an xarray Dataset (dims chip, band, y, x) with per-chip coordinates."""
    m = chips.meta
    coords = {
        "chip_id": ("chip", m["chip_id"].astype(str).to_numpy(dtype=object)),
        "datetime": ("chip", m["datetime"].dt.tz_localize(None).to_numpy().astype("datetime64[ns]")),
        "band": ("band", np.asarray(chips.bands, dtype=object)),
        "lat": ("chip", m["lat"].to_numpy(float)),
        "lon": ("chip", m["lon"].to_numpy(float)),
        "row": ("chip", m["row"].to_numpy("int32")),
        "col": ("chip", m["col"].to_numpy("int32")),
        "cloud_fraction": ("chip", m["cloud_fraction"].to_numpy("float32")),
        "nodata_fraction": ("chip", m["nodata_fraction"].to_numpy("float32")),
        "bounds": (("chip", "corner"), m[["west", "south", "east", "north"]].to_numpy(float).reshape(-1, 4)),
        "native_bounds": (("chip", "corner"), m[["x_min", "y_min", "x_max", "y_max"]].to_numpy(float).reshape(-1, 4)),
    }
    ds = xr.Dataset({"pixels": (("chip", "band", "y", "x"), chips.pixels)}, coords=coords)
    # Variable-length strings: zarr v3 has no stable spec for fixed-width unicode.
    ds = ds.assign_coords(corner=np.array(["west|x_min", "south|y_min", "east|x_max", "north|y_max"], dtype=object))
    ds.attrs.update(chip_size=chip_size, crs=str(m["crs"].iloc[0]) if len(m) else "", time_zone="UTC")
    return ds


#: zstd level of the cube's BloscCodec (bitshuffle). 3 writes a full Sentinel-2 tile's chips
#: about 25-30% faster than 5 for ~2% more bytes (docs/chipping.md).
CUBE_CLEVEL = 3


def _cube_encoding(ds: xr.Dataset, shard_chips: int, clevel: int) -> dict:
    from zarr.codecs import BloscCodec

    n, c, h, w = ds["pixels"].shape
    chunk = (1, max(c, 1), max(h, 1), max(w, 1))
    shard = (max(1, min(shard_chips, n)), *chunk[1:])
    return {
        "pixels": {
            "chunks": chunk,
            "shards": shard,
            "compressors": [BloscCodec(cname="zstd", clevel=clevel, shuffle="bitshuffle")],
        }
    }


def write_cube(ds: xr.Dataset, path: Path | str, shard_chips: int = 16, *, clevel: int = CUBE_CLEVEL,
               storage_options: dict | None = None) -> str:  # fmt: skip
    """Zarr v3: one chunk per chip (all bands), ``shard_chips`` chips per stored object, zstd
    (BloscCodec, bitshuffle, level ``clevel``). Returns the cube's URI.

    ``path`` is a local directory (replaced; the caller's ``atomic_dir`` makes the switch
    atomic) or ``s3://bucket/key``: the cube is written under the fresh prefix
    ``key.v-<uuid>/`` and published by writing ``key/pointer.json`` last (one PUT: readers
    see the old cube or the new one, never a half-written one); the cube the previous
    pointer named is then deleted. ``storage_options``: ``{"client": <boto3 S3 client>}``
    or ``boto3.client("s3", ...)`` keyword arguments (``endpoint_url``, ``region_name``,
    credentials). :func:`open_cube` follows the pointer.
    """
    encoding = _cube_encoding(ds, shard_chips, clevel)
    if isinstance(path, str) and path.startswith("s3://"):
        return write_published(ds, path, encoding, storage_options or {})
    ds.to_zarr(path, mode="w", zarr_format=3, consolidated=False, encoding=encoding)
    return str(path)


def open_cube(path: Path | str, storage_options: dict | None = None) -> xr.Dataset:
    """Open a chip cube lazily (pixels stay on disk until indexed); ``s3://`` through its pointer."""
    if isinstance(path, str) and path.startswith("s3://"):
        store = open_published(path, storage_options or {})
        return xr.open_zarr(store, zarr_format=3, consolidated=False, chunks=None)
    return xr.open_zarr(path, zarr_format=3, consolidated=False, chunks=None)


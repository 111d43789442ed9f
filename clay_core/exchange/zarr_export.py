"""The exchange table as a Zarr v3 store (written and read by xarray).

Dimensions ``obs`` (one per chip observation) and ``dim`` (embedding components):

- ``embedding (obs, dim)`` float32, chunked by rows;
- one ``(obs,)`` variable per column of :data:`clay_core.exchange.table.COLUMNS`: text as
  strings (NULL is ``""``), ``acquired`` as days and ``acquired_at`` as microseconds since the
  epoch (CF time encoding: xarray decodes them; NULL is NaT), float8 as float64 (NULL is NaN),
  ``change_flag`` as int8 (1 true, 0 false, -1 NULL; CF ``flag_values``);
- ``geometry (obs)``: the chip footprint as WKT, with ``grid_mapping = "spatial_ref"``;
- ``spatial_ref``: a scalar carrying the CRS (EPSG:4326) as CF ``crs_wkt``.

Metadata is consolidated, so ``xarray.open_zarr(path)`` opens it in one read.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from clay_core.errors import ConfigError
from clay_core.exchange.table import COLUMNS, typed_frame
from clay_core.vectordb.rows import ROW_COLUMNS

__all__ = ["FILE_NAME", "MEDIA_TYPE", "read_zarr", "write_zarr"]

FILE_NAME = "embeddings.zarr"
MEDIA_TYPE = "application/vnd+zarr; version=3"
_CHUNK_ROWS = 8192
_TYPES = {c: t for c, t, _ in ROW_COLUMNS}
_EPOCH = "1970-01-01"


def write_zarr(path: Path, rows: pd.DataFrame, emb: np.ndarray, geometry, attrs: dict) -> Path:
    """Write ``rows`` + ``geometry`` (WGS84 polygons) + ``emb`` as a Zarr v3 store at ``path``;
    ``attrs`` become the store's global attributes."""
    import shapely
    import xarray as xr
    from pyproj import CRS

    data = {c: (("obs",), _encode(rows[c], _TYPES[c]), _attrs(c)) for c in COLUMNS}
    data["embedding"] = (("obs", "dim"), np.asarray(emb, np.float32),
                         {"long_name": "Clay encoder class-token embedding"})
    data["geometry"] = (("obs",), np.asarray(shapely.to_wkt(np.asarray(geometry), rounding_precision=-1),
                                             dtype=object),
                        {"long_name": "chip footprint", "geometry_encoding": "WKT",
                         "grid_mapping": "spatial_ref"})
    crs = CRS.from_epsg(4326)
    data["spatial_ref"] = ((), np.int32(0), {"crs_wkt": crs.to_wkt(), "spatial_ref": crs.to_wkt(),
                                             "epsg": 4326})
    ds = xr.Dataset(data, attrs=attrs)
    rows_chunk = max(1, min(len(rows), _CHUNK_ROWS))
    encoding = {"embedding": {"chunks": (rows_chunk, ds.sizes["dim"] or 1)},
                "acquired": {"units": f"days since {_EPOCH}", "dtype": "int32"},
                "acquired_at": {"units": f"microseconds since {_EPOCH}", "dtype": "int64"}}
    with warnings.catch_warnings():
        # consolidated metadata is a zarr-python extension of format 3: read by xarray, and the
        # store opens without listing every array
        warnings.filterwarnings("ignore", message="Consolidated metadata")
        ds.to_zarr(path, mode="w-", zarr_format=3, consolidated=True, encoding=encoding)
    return path


def _encode(s: pd.Series, typ: str) -> np.ndarray:
    if typ == "text":
        return s.where(s.notna(), "").astype(str).to_numpy(dtype=object)
    if typ == "date":
        return pd.to_datetime(s).to_numpy(dtype="datetime64[ns]")
    if typ == "timestamptz":
        return pd.to_datetime(s, utc=True).dt.tz_localize(None).to_numpy(dtype="datetime64[ns]")
    if typ == "float8":
        return s.to_numpy(dtype=np.float64, na_value=np.nan)
    return s.astype("Int8").fillna(-1).to_numpy(dtype=np.int8)


def _attrs(column: str) -> dict:
    if column == "change_flag":
        return {"flag_values": [-1, 0, 1], "flag_meanings": "missing false true"}
    if column in ("west", "east", "lon"):
        return {"units": "degrees_east"}
    if column in ("south", "north", "lat"):
        return {"units": "degrees_north"}
    return {}


def read_zarr(path: Path) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, dict]:
    """(rows, float32 embeddings, geometries, global attributes) of a Zarr export; ConfigError
    naming the store when it lacks a variable or is not in WGS84."""
    import shapely
    import xarray as xr
    from pyproj import CRS

    try:
        ds = xr.open_zarr(path, chunks=None)
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"{path}: not a readable Zarr store ({exc})") from None
    missing = [v for v in COLUMNS + ["embedding", "geometry", "spatial_ref"] if v not in ds.variables]
    if missing:
        raise ConfigError(f"{path} lacks variable(s) {missing}; it is not a clay-assets export")
    wkt = ds["spatial_ref"].attrs.get("crs_wkt")
    if not wkt or CRS.from_wkt(wkt).to_epsg() != 4326:
        raise ConfigError(f"{path}: spatial_ref is not EPSG:4326 (WGS84 lon/lat); the footprints "
                          "must be in WGS84")
    raw = {c: ds[c].values for c in COLUMNS}
    for c in COLUMNS:
        if _TYPES[c] == "text":
            raw[c] = np.array([None if v == "" else str(v) for v in raw[c]], dtype=object)
        elif _TYPES[c] == "bool":
            raw[c] = pd.array(np.where(raw[c] < 0, None, raw[c] > 0), dtype="boolean")
    rows = typed_frame(pd.DataFrame(raw))
    geoms = shapely.from_wkt(np.asarray(ds["geometry"].values, dtype=object))
    return rows, np.asarray(ds["embedding"].values, np.float32), geoms, dict(ds.attrs)

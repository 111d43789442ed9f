"""``export_embeddings``: ``clay.observations`` -> a folder with GeoParquet or Zarr + STAC.

The folder holds ``embeddings.parquet`` (or ``embeddings.zarr``), ``collection.json`` and one
item per tile (``<collection>-<tile>/<collection>-<tile>.json``).  It is written under a
temporary name next to ``out`` and renamed into place when complete, so a reader never finds a
half-written export; an existing non-empty ``out`` is refused, never overwritten.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import shapely

from clay_core.errors import ConfigError
import clay_core.exchange.geoparquet as geoparquet
import clay_core.exchange.zarr_export as zarr_export
from clay_core.exchange.footprints import footprints_with_fallbacks
from clay_core.exchange.stac import ExportInfo, write_stac
from clay_core.exchange.table import check_rows, read_observations

if TYPE_CHECKING:
    from clay_core.vectordb.store import VectorStore

__all__ = ["FORMATS", "ExportResult", "export_embeddings"]

FORMATS = ("geoparquet", "zarr")


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote."""

    out: Path
    data: Path  # the GeoParquet file or Zarr store
    collection: Path  # collection.json
    rows: int
    dim: int
    tiles: int
    footprint_fallbacks: int  # rows whose footprint is their WGS84 envelope (no native CRS)
    seconds: float


def export_embeddings(store: "VectorStore", out: str | Path, fmt: str = "geoparquet", *,
                      tiles: Sequence[str] | None = None,
                      info: ExportInfo | None = None) -> ExportResult:
    """Export every row of ``clay.observations`` (or those of ``tiles``) with its footprint
    and embedding to the folder ``out`` in ``fmt`` (``geoparquet`` or ``zarr``), with a STAC
    collection describing it (:mod:`clay_core.exchange.stac`)."""
    t0 = time.perf_counter()
    if fmt not in FORMATS:
        raise ConfigError(f"export format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out} already exists; export to a new folder (or remove it first)")
    rows, emb = read_observations(store, tiles)
    if not len(rows):
        raise ConfigError("clay.observations holds no rows" + (f" of tiles {list(tiles)}" if tiles else "")
                          + ": nothing to export; materialize some partitions first")
    check_rows(rows, emb, "clay.observations")
    geoms, fallbacks = footprints_with_fallbacks(rows)
    _check_footprints(rows, geoms)
    info = info or ExportInfo()
    # no dot inside the name: pystac takes a folder whose name has a suffix for a file
    tmp = out.parent.resolve() / f".{out.name.replace('.', '_')}-tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        if fmt == "geoparquet":
            data = geoparquet.write_geoparquet(tmp / geoparquet.FILE_NAME, rows, emb, geoms)
            media = geoparquet.MEDIA_TYPE
        else:
            attrs = {"title": info.description, "crs": "EPSG:4326", "clay:dimensions": int(emb.shape[1]),
                     "clay:model_ids": sorted({str(m) for m in rows["model_id"].dropna()}),
                     "clay:key": "one row (obs) per chip_id, acquired"}
            data = zarr_export.write_zarr(tmp / zarr_export.FILE_NAME, rows, emb, geoms, attrs)
            media = zarr_export.MEDIA_TYPE
        write_stac(tmp, rows, geoms, int(emb.shape[1]), data.name, media, info, fallbacks)
        if out.exists():
            out.rmdir()  # empty (checked above)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ExportResult(out=out, data=out / data.name, collection=out / "collection.json",
                        rows=len(rows), dim=int(emb.shape[1]), tiles=int(rows["tile"].nunique()),
                        footprint_fallbacks=fallbacks, seconds=time.perf_counter() - t0)


def _check_footprints(rows, geoms: np.ndarray) -> None:
    """Every footprint is a valid polygon containing its chip's centre (else the export would
    publish wrong geometries: refuse)."""
    lon, lat = rows["lon"].to_numpy(np.float64), rows["lat"].to_numpy(np.float64)
    bad = np.flatnonzero(~(shapely.is_valid(geoms) & shapely.intersects_xy(geoms, lon, lat)))
    if bad.size:
        raise RuntimeError(f"{bad.size} chip footprint(s) are invalid or miss their centre, e.g. "
                           f"{rows['chip_id'].iloc[bad[:3]].tolist()}; their bounds/lon/lat/crs "
                           "in clay.observations disagree")

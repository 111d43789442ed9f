"""``import_embeddings``: an export (GeoParquet or Zarr, with or without its STAC collection)
-> ``clay.observations``.

The whole file is checked before anything is written: WGS84 footprints that contain their
chip centres, the required columns, one row per (chip_id, acquired), a partition_key on every
row, finite non-zero embeddings of one dimension, matching the collection's ``emb:dimensions``
and the database's embedding column.  Rows then go through ``VectorStore.load_partition``, one
partition per transaction: each partition's rows are replaced (re-running an import replaces,
never duplicates), and a failure leaves that partition as it was.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import shapely

from clay_core.errors import ConfigError
import clay_core.exchange.geoparquet as geoparquet
import clay_core.exchange.zarr_export as zarr_export
from clay_core.exchange.table import check_rows

__all__ = ["ExportData", "ImportResult", "import_embeddings", "read_export"]


@dataclass(frozen=True)
class ExportData:
    """An export read back: rows, float32 embeddings [n, dim], WGS84 footprints."""

    path: Path  # the data file or store
    rows: pd.DataFrame
    embeddings: np.ndarray
    geometry: np.ndarray
    declared_dim: int | None  # the STAC collection's emb:dimensions, when there is one


@dataclass(frozen=True)
class ImportResult:
    rows: int
    partitions: int
    dim: int
    seconds: float


def read_export(path: str | Path) -> ExportData:
    """Read an export: its folder (``collection.json`` + data), or the ``.parquet`` file or
    ``.zarr`` store itself.  Checked as the module docstring says (ConfigError naming the file)."""
    path = Path(path)
    declared = None
    if (path / "collection.json").is_file():
        data, declared = _from_collection(path / "collection.json")
    elif path.is_file() or path.suffix == ".zarr" or (path / "zarr.json").is_file():
        data = path
    else:
        raise ConfigError(f"{path} is not an export: give an export folder (with collection.json), "
                          "a .parquet file or a .zarr store")
    if data.suffix == ".zarr" or (data / "zarr.json").is_file():
        rows, emb, geoms, _ = zarr_export.read_zarr(data)
    else:
        rows, emb, geoms = geoparquet.read_geoparquet(data)
    check_rows(rows, emb, str(data))
    if declared is not None and len(emb) and emb.shape[1] != declared:
        raise ConfigError(f"{data}: embeddings have {emb.shape[1]} dimensions but its STAC "
                          f"collection declares emb:dimensions = {declared}")
    _check_geometry(data, rows, geoms)
    return ExportData(data, rows, emb, geoms, declared)


def _from_collection(collection: Path) -> tuple[Path, int | None]:
    """The data file the collection's items point at (their ``embeddings`` asset)."""
    import pystac

    col = pystac.Collection.from_file(str(collection))
    hrefs = {Path(item.assets["embeddings"].get_absolute_href()).resolve()
             for item in col.get_items() if "embeddings" in item.assets}
    if len(hrefs) != 1:
        raise ConfigError(f"{collection}: expected every item's 'embeddings' asset to name one "
                          f"data file, found {len(hrefs)}; import the file itself instead")
    dims = col.extra_fields.get("emb:dimensions")
    return hrefs.pop(), (int(dims) if dims is not None else None)


def _check_geometry(where: Path, rows: pd.DataFrame, geoms: np.ndarray) -> None:
    lon, lat = rows["lon"].to_numpy(np.float64), rows["lat"].to_numpy(np.float64)
    with np.errstate(invalid="ignore"):
        ok = shapely.is_valid(geoms) & shapely.intersects_xy(geoms, lon, lat)
    bad = np.flatnonzero(~ok)
    if bad.size:
        raise ConfigError(f"{where}: {bad.size} footprint(s) are invalid or do not contain their "
                          f"chip centre (lon, lat), e.g. {rows['chip_id'].iloc[bad[:3]].tolist()}; "
                          "geometries must be WGS84 lon/lat polygons of the chips")


def import_embeddings(url: str, path: str | Path, *, expect_dim: int | None = None,
                      progress=None) -> ImportResult:
    """Load the export at ``path`` into ``clay.observations`` of the database at ``url``
    (schema created when missing).  ``expect_dim``: refuse unless the embeddings have this
    many dimensions (the platform's model).  ``progress(partition_key, stats)`` after each
    partition.  Two connections load partitions side by side; when the file holds at least as
    many rows as the table, the indexes are dropped for the load and built once at the end
    (``VectorStore.bulk_load``)."""
    from clay_core.vectordb import VectorStore

    t0 = time.perf_counter()
    data = read_export(path)
    dim = int(data.embeddings.shape[1]) if len(data.embeddings) else None
    if dim is None:
        raise ConfigError(f"{data.path} holds no rows: nothing to import")
    if expect_dim is not None and dim != expect_dim:
        raise ConfigError(f"{data.path} holds {dim}-dimensional embeddings but this platform's "
                          f"model makes {expect_dim}-dimensional ones (CLAY_PRESET); import it "
                          "with the matching preset, or into another CLAY_HOME / DATABASE_URL")
    with VectorStore(url, dim) as store:
        have = store.table_dim()
        if have is not None and have != dim:
            raise ConfigError(f"{data.path} holds {dim}-dimensional embeddings; clay.observations "
                              f"on {store._where} stores {have}: import into a database for that "
                              "model (another CLAY_HOME or DATABASE_URL)")
        store.ensure_schema()
        groups = data.rows.groupby("partition_key", sort=True).indices
        items = ((key, data.rows.iloc[idx].reset_index(drop=True), data.embeddings[idx])
                 for key, idx in groups.items())
        # Importing at least as many rows as the table holds: one index build at the end is far
        # cheaper than maintaining the HNSW index row by row (67 rows/s at 768-d on 2 busy cores).
        bulk = len(data.rows) >= store.count()
        with store.bulk_load() if bulk else contextlib.nullcontext():
            stats = store.load_partitions(items, workers=2, progress=progress)
    return ImportResult(rows=stats.rows, partitions=len(groups), dim=dim,
                        seconds=time.perf_counter() - t0)

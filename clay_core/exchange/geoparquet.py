"""The exchange table as GeoParquet (written and read by geopandas).

One row per chip observation: the columns of :data:`clay_core.exchange.table.COLUMNS`, the
chip's footprint as ``geometry`` (WKB polygons, EPSG:4326, GeoParquet ``geo`` metadata with the
CRS as PROJJSON, and a ``bbox`` covering column for row-group filtering) and ``embedding``, a
list of float32.  ``geopandas.read_parquet(path)`` opens it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from clay_core.errors import ConfigError
from clay_core.exchange.table import COLUMNS, typed_frame

__all__ = ["FILE_NAME", "MEDIA_TYPE", "read_geoparquet", "write_geoparquet"]

FILE_NAME = "embeddings.parquet"
MEDIA_TYPE = "application/vnd.apache.parquet"
_ROW_GROUP = 65536  # rows per row group: a few MB of 768-d float32 vectors


def write_geoparquet(path: Path, rows: pd.DataFrame, emb: np.ndarray, geometry) -> Path:
    """Write ``rows`` + ``geometry`` (WGS84 polygons) + ``emb`` to ``path``."""
    import geopandas as gpd

    frame = rows[COLUMNS].copy()
    frame["embedding"] = list(np.asarray(emb, np.float32))
    gdf = gpd.GeoDataFrame(frame, geometry=list(geometry), crs="EPSG:4326")
    gdf.to_parquet(path, index=False, compression="zstd", write_covering_bbox=True,
                   row_group_size=_ROW_GROUP)
    return path


def read_geoparquet(path: Path) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """(rows, float32 embeddings, geometries) of a GeoParquet export; ConfigError naming the
    file when its CRS is not WGS84 or its embeddings are ragged."""
    import geopandas as gpd

    try:
        gdf = gpd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not a readable GeoParquet file ({exc})") from None
    if gdf.crs is None or gdf.crs.to_epsg() != 4326:
        raise ConfigError(f"{path}: geometry CRS is {gdf.crs and gdf.crs.to_string()}, not "
                          "EPSG:4326 (WGS84 lon/lat); reproject it (GeoDataFrame.to_crs(4326))")
    missing = [c for c in COLUMNS + ["embedding"] if c not in gdf.columns]
    if missing:
        raise ConfigError(f"{path} lacks column(s) {missing}; it is not a clay-assets export")
    vecs = [np.asarray(v, np.float32) for v in gdf["embedding"]]
    dims = {len(v) for v in vecs}
    if len(dims) > 1:
        raise ConfigError(f"{path}: embeddings have different lengths {sorted(dims)[:5]}; one "
                          "model's vectors have one dimension")
    emb = np.stack(vecs) if vecs else np.zeros((0, 0), np.float32)
    rows = typed_frame(pd.DataFrame(gdf.drop(columns=[gdf.geometry.name, "embedding"])))
    return rows, emb, gdf.geometry.to_numpy()

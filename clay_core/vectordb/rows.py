"""The row schema of ``clay.observations``, and the rows of one partition built from its files.

One row per chip observation: the chip's WGS84 bounds and centre, native CRS, cloud and nodata
fractions, thumbnail and cube locations, the encoder's id and the change scores, next to the
class-token embedding.  :func:`partition_rows` assembles them from the chips index, the
embeddings store and the change scores of one partition, in the form
``VectorStore.load_partition`` takes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from clay_core.storage import CHANGE, CHIPS, EMBEDDINGS, Layout, read_manifest
from clay_core.types import PartitionId

__all__ = ["COLS", "ROW_COLUMNS", "partition_rows"]

#: (column, postgres type, required) for the rows frame of ``load_partition``; order = COPY order.
ROW_COLUMNS: list[tuple[str, str, bool]] = [
    ("chip_id", "text", True),
    ("tile", "text", True),
    ("acquired", "date", True),
    ("acquired_at", "timestamptz", False),
    ("partition_key", "text", False),
    ("west", "float8", True),
    ("south", "float8", True),
    ("east", "float8", True),
    ("north", "float8", True),
    ("lon", "float8", False),
    ("lat", "float8", False),
    ("crs", "text", False),
    ("cloud_fraction", "float8", False),
    ("nodata_fraction", "float8", False),
    ("thumbnail_uri", "text", False),
    ("cube_uri", "text", False),
    ("model_id", "text", False),
    ("cosine_to_baseline", "float8", False),
    ("harmonic_deviation", "float8", False),
    ("change_score", "float8", False),
    ("change_flag", "bool", False),
]
#: the column names of :data:`ROW_COLUMNS`, in order
COLS = [c for c, _, _ in ROW_COLUMNS]


def partition_rows(layout: Layout, pid: PartitionId, model_id: str) -> tuple[pd.DataFrame, np.ndarray]:
    """The rows and row-aligned float32 embeddings of partition ``pid``, as
    ``VectorStore.load_partition`` takes them (an empty frame when the partition has no chips).

    Reads the chips index, the embeddings store and the change scores; they must list the same
    chips in the same order (a RuntimeError says to re-materialize otherwise).
    """
    from clay_core.encoder import open_embeddings  # zarr/xarray: only when a partition is read

    tile, window = pid.tile, pid.window
    emb_dir = layout.partition_dir(EMBEDDINGS, pid)
    man = read_manifest(emb_dir)
    if not man["chips"]:
        return pd.DataFrame(), np.zeros((0, int(man["dim"])), np.float32)
    index = pd.read_parquet(layout.partition_dir(CHIPS, pid) / "index.parquet")
    ds = open_embeddings(emb_dir / "embeddings.zarr")
    emb = ds["embedding"].values.astype(np.float32)
    scores = pd.read_parquet(layout.partition_dir(CHANGE, pid) / "scores.parquet")
    ids = [str(c) for c in ds["chip_id"].values.tolist()]
    if not (ids == index["chip_id"].astype(str).tolist() == scores["chip_id"].astype(str).tolist()):
        raise RuntimeError(f"{tile} {window}: chip order differs between chips, embeddings and change scores; "
                           "re-materialize this partition's chip_cubes and downstream assets")
    acquired_at = pd.to_datetime(index["datetime"], utc=True)
    rows = pd.DataFrame(
        {
            "chip_id": index["chip_id"].astype(str),
            "tile": tile,
            "acquired": acquired_at.dt.date,
            "acquired_at": acquired_at,
            "partition_key": pid.key,
            "west": index["west"], "south": index["south"], "east": index["east"], "north": index["north"],
            "lon": index["lon"], "lat": index["lat"],
            "crs": index["crs"].astype(str),
            "cloud_fraction": index["cloud_fraction"].astype(float),
            "nodata_fraction": index["nodata_fraction"].astype(float),
            # The index stores locations relative to the layout root: the rows carry them resolved
            # against the current root, so the database points at this root's files.
            "thumbnail_uri": index["thumbnail"].astype(str).map(layout.locate),
            "cube_uri": index["cube_uri"].astype(str).map(layout.locate),
            "model_id": model_id,
            "cosine_to_baseline": scores["cosine_to_baseline"].astype(float),
            "harmonic_deviation": scores["harmonic_deviation"].astype(float),
            "change_score": scores["change_score"].astype(float),
            "change_flag": scores["change_flag"].astype(bool),
        }
    )
    return rows, emb

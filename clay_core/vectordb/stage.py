"""The "load vectors" stage: one partition's chips, embeddings and change scores into Postgres.

The partition's previous rows are replaced in one transaction (re-running never duplicates,
a failed load leaves the old rows), and so are the change events confirmed in its window and
the pixel path's results (``clay.pixel_changes``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pandas as pd

from clay_core.storage import CHANGE, EMBEDDINGS, Layout, read_manifest
from clay_core.types import PartitionId
from clay_core.vectordb.rows import partition_rows
from clay_core.vectordb.store import VectorStore

__all__ = ["VectorLoad", "load_vectors"]


@dataclass(frozen=True)
class VectorLoad:
    """What loading one partition did, and what the table holds for it afterwards."""

    partition: PartitionId
    rows: int  # rows written by this load
    rows_per_s: float
    total: int  # the partition's rows now in clay.observations
    cube_chips: int  # chips the partition's embeddings manifest lists
    dim: int
    duplicates: int  # (chip_id, acquired) pairs of the partition stored more than once
    storage: str  # "vector" or "halfvec"
    pgvector: str | None  # version of the vector extension
    change_events: int  # events loaded into clay.change_events
    first_chip_id: str | None  # an example chip for a query, None when there are no rows
    pixel_changes: int = 0  # rows loaded into clay.pixel_changes


def load_vectors(layout: Layout, pid: PartitionId,
                 open_store: Callable[[int], VectorStore]) -> VectorLoad:
    """Load partition ``pid`` into the store that ``open_store(dim)`` returns (with its schema
    ensured), then close it.  The dimension comes from the partition's embeddings manifest, so
    the caller does not need to know it before the store is opened."""
    man = read_manifest(layout.partition_dir(EMBEDDINGS, pid))
    dim = int(man["dim"])
    rows, emb = partition_rows(layout, pid, man["model_id"])
    store = open_store(dim)
    try:
        stats = store.load_partition(pid.key, rows, emb)
        total = store.count(partition_key=pid.key)
        duplicates = store.duplicate_observations(pid.key)
        storage, pgvector = store.storage, store.pgvector_version()
        events_path = layout.partition_dir(CHANGE, pid) / "events.parquet"
        events = pd.read_parquet(events_path) if events_path.is_file() else pd.DataFrame()
        n_events = store.load_change_events(pid.key, events)
        scores_path = layout.partition_dir(CHANGE, pid) / "scores.parquet"
        scores = pd.read_parquet(scores_path) if scores_path.is_file() else pd.DataFrame()
        n_pixels = store.load_pixel_changes(pid.key, pid.tile, scores)
    finally:
        store.close()
    return VectorLoad(
        partition=pid, rows=stats.rows, rows_per_s=stats.rows_per_s, total=total,
        cube_chips=int(man["chips"]), dim=dim, duplicates=duplicates, storage=storage,
        pgvector=pgvector, change_events=n_events,
        first_chip_id=str(rows["chip_id"].iloc[0]) if len(rows) else None, pixel_changes=n_pixels,
    )

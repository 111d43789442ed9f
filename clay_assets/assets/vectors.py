"""Rows in Postgres/pgvector: one per chip observation with its embedding and change scores.

Loads the partition's chips (WGS84 bounds and centre, native CRS, cloud/nodata fractions,
thumbnail and cube locations), class-token embeddings and change scores into ``clay.chips``.
The partition's previous rows are replaced in one transaction, so re-running never
duplicates and a failed load leaves the old rows. Change events confirmed in the window go to
``clay.change_events`` the same way. Query with ``clay.similar_chips``.
"""


import numpy as np
import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    BackfillPolicy,
    MaterializeResult,
    MetadataValue,
    asset,
)

from clay_assets.partitions import scene_partitions, split_key
from clay_assets.resources import ClayHome, ClayModel, VectorDB
from clay_core.vectordb import redact
from clay_core.encoder.store import open_embeddings
from clay_core.storage.layout import read_manifest


def partition_rows(layout, tile: str, window: str, model_id: str) -> tuple[pd.DataFrame, np.ndarray]:
    """The rows and row-aligned embeddings of one partition, as ``VectorStore.load_partition`` takes them."""
    chips_dir = layout.partition("chips", tile, window)
    emb_dir = layout.partition("embeddings", tile, window)
    man = read_manifest(emb_dir)
    if not man["chips"]:
        return pd.DataFrame(), np.zeros((0, int(man["dim"])), np.float32)
    index = pd.read_parquet(chips_dir / "index.parquet")
    ds = open_embeddings(emb_dir / "embeddings.zarr")
    emb = ds["embedding"].values.astype(np.float32)
    scores = pd.read_parquet(layout.partition("change", tile, window) / "scores.parquet")
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
            "partition_key": f"{window}|{tile}",
            "west": index["west"], "south": index["south"], "east": index["east"], "north": index["north"],
            "lon": index["lon"], "lat": index["lat"],
            "crs": index["crs"].astype(str),
            "cloud_fraction": index["cloud_fraction"].astype(float),
            "nodata_fraction": index["nodata_fraction"].astype(float),
            "thumbnail_uri": index["thumbnail"].astype(str),
            "cube_uri": index["cube_uri"].astype(str),
            "model_id": model_id,
            "cosine_to_baseline": scores["cosine_to_baseline"].astype(float),
            "harmonic_deviation": scores["harmonic_deviation"].astype(float),
            "change_score": scores["change_score"].astype(float),
            "change_flag": scores["change_flag"].astype(bool),
        }
    )
    return rows, emb


@asset(
    partitions_def=scene_partitions,
    code_version="vectors-1",
    group_name="clay",
    deps=["chip_cubes", "embeddings", "change_scores"],
    description=__doc__,
    backfill_policy=BackfillPolicy.multi_run(max_partitions_per_run=1),
    check_specs=[
        AssetCheckSpec("rows_match_cube", asset="vectors", blocking=True,
                       description="the partition's rows in clay.chips equal the chips in its Zarr cube"),
        AssetCheckSpec("no_duplicate_observations", asset="vectors", blocking=True,
                       description="no (chip_id, acquired) pair appears twice in clay.chips"),
    ],
)
def vectors(context: AssetExecutionContext, home: ClayHome, model: ClayModel, vectordb: VectorDB) -> MaterializeResult:
    tile, window = split_key(context.partition_key)
    man = read_manifest(home.layout.partition("embeddings", tile, window))
    rows, emb = partition_rows(home.layout, tile, window, man["model_id"])
    url = vectordb.url()
    store = vectordb.store(int(man["dim"]))
    try:
        stats = store.load_partition(f"{window}|{tile}", rows, emb)
        total = store.count(partition_key=f"{window}|{tile}")
        duplicates = store.duplicate_observations(f"{window}|{tile}")
        storage, pgvector = store.storage, store.pgvector_version()
        events_path = home.layout.partition("change", tile, window) / "events.parquet"
        events = pd.read_parquet(events_path) if events_path.is_file() else pd.DataFrame()
        n_events = store.load_change_events(f"{window}|{tile}", events)
    finally:
        store.close()
    checks = [
        AssetCheckResult(check_name="rows_match_cube", passed=total == int(man["chips"]), severity=AssetCheckSeverity.ERROR,
                         metadata={"rows": total, "cube_chips": int(man["chips"])}),
        AssetCheckResult(check_name="no_duplicate_observations", passed=duplicates == 0, severity=AssetCheckSeverity.ERROR,
                         metadata={"duplicates": duplicates}),
    ]
    context.log.info(f"{tile} {window}: loaded {stats.rows} rows at {stats.rows_per_s:.0f} rows/s")
    return MaterializeResult(
        check_results=checks,
        metadata={
            "rows": stats.rows,
            "dagster/row_count": total,
            "rows_per_s": round(stats.rows_per_s, 1),
            "storage": f"{storage}({int(man['dim'])}), pgvector {pgvector}",
            "change_events": n_events,
            "database": redact(url),
            "table": "clay.chips",
            "query": MetadataValue.md(
                f"```sql\nSELECT * FROM clay.similar_chips('{rows['chip_id'].iloc[0]}', 10);\n```" if len(rows) else "(empty window)"
            ),
        }
    )

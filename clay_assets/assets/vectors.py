"""Rows in Postgres/pgvector: one per chip observation with its embedding and change scores.

Loads the partition's chips (WGS84 bounds and centre, native CRS, cloud/nodata fractions,
thumbnail and cube locations), class-token embeddings and change scores into ``clay.chips``.
The partition's previous rows are replaced in one transaction, so re-running never
duplicates and a failed load leaves the old rows. Change events confirmed in the window go to
``clay.change_events`` the same way. Query with ``clay.similar_chips``.
"""

import dagster as dg

from clay_assets.explorer import explorer_url
from clay_assets.batching import PartitionOutcome, batched_policy, for_each_partition
from clay_assets.partitions import scene_partitions
from clay_assets.resources import ClayHome, ClayModel, VectorDB
from clay_core.types import PartitionId
from clay_core.vectordb import load_vectors, redact


@dg.asset(
    partitions_def=scene_partitions,
    code_version="vectors-1",
    group_name="clay",
    deps=["chip_cubes", "embeddings", "change_scores"],
    description=__doc__,
    backfill_policy=batched_policy(),
    check_specs=[
        dg.AssetCheckSpec("rows_match_cube", asset="vectors", blocking=True,
                          description="the partition's rows in clay.chips equal the chips in its Zarr cube"),
        dg.AssetCheckSpec("no_duplicate_observations", asset="vectors", blocking=True,
                          description="no (chip_id, acquired) pair appears twice in clay.chips"),
    ],
)
def vectors(context: dg.AssetExecutionContext, home: ClayHome, model: ClayModel,
            vectordb: VectorDB) -> dg.MaterializeResult:
    def one(pid: PartitionId) -> PartitionOutcome:
        load = load_vectors(home.layout, pid, vectordb.store)
        url = vectordb.url()
        checks = [
            dg.AssetCheckResult(check_name="rows_match_cube", passed=load.total == load.cube_chips,
                                severity=dg.AssetCheckSeverity.ERROR,
                                metadata={"rows": load.total, "cube_chips": load.cube_chips}),
            dg.AssetCheckResult(check_name="no_duplicate_observations", passed=load.duplicates == 0,
                                severity=dg.AssetCheckSeverity.ERROR, metadata={"duplicates": load.duplicates}),
        ]
        context.log.info(f"{pid.tile} {pid.window}: loaded {load.rows} rows at {load.rows_per_s:.0f} rows/s")
        query = (f"```sql\nSELECT * FROM clay.similar_chips('{load.first_chip_id}', 10);\n```"
                 if load.first_chip_id is not None else "(empty window)")
        return PartitionOutcome(
            checks=checks,
            metadata={
                "rows": load.rows,
                "dagster/row_count": load.total,
                "rows_per_s": round(load.rows_per_s, 1),
                "storage": f"{load.storage}({load.dim}), pgvector {load.pgvector}",
                "change_events": load.change_events,
                "database": redact(url),
                "table": "clay.chips",
                "query": dg.MetadataValue.md(query),
                "explorer": dg.MetadataValue.url(explorer_url(pid)),
            },
        )

    return for_each_partition(context, one)

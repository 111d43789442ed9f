"""Acquisitions of a tile within a weekly window, as listed by the scene source.

Records each scene's id, time, platform and source hrefs (lineage to the raw data) in a
per-partition manifest; pixels are read by ``chip_cubes`` straight from the source, so large
rasters are never copied. A window with no acquisition is an empty partition, not a failure.
"""


import time

from dagster import AssetExecutionContext, Backoff, MaterializeResult, MetadataValue, RetryPolicy, asset

from clay_assets.batching import PartitionOutcome, batched_policy, for_each_partition
from clay_assets.partitions import scene_partitions
from clay_assets.errors import no_retry_for_config_errors
from clay_assets.resources import ClayHome, SceneSourceResource
from clay_core.sources import record_partition_scenes
from clay_core.types import PartitionId


@asset(
    partitions_def=scene_partitions,
    code_version="raw-1",
    group_name="clay",
    description=__doc__,
    backfill_policy=batched_policy(),
    # Catalogue searches time out now and then; retry this run's partitions only.
    retry_policy=RetryPolicy(max_retries=2, delay=1, backoff=Backoff.EXPONENTIAL),
)
def raw_scenes(context: AssetExecutionContext, home: ClayHome, source: SceneSourceResource) -> MaterializeResult:
    def one(pid: PartitionId) -> PartitionOutcome:
        t0 = time.perf_counter()
        with no_retry_for_config_errors():
            listing = record_partition_scenes(home.layout, pid, source.get_source())
        n = len(listing.refs)
        context.log.info(f"{pid.tile} {pid.window}: {n} acquisition(s)" + ("" if n else " — empty window"))
        return PartitionOutcome(metadata={
            "scenes": n,
            "empty": listing.empty,
            "platform": listing.platform,
            "scene_ids": MetadataValue.json(listing.scene_ids),
            "hrefs": MetadataValue.json(listing.hrefs),
            "crs": listing.crs,
            "seconds": round(time.perf_counter() - t0, 3),
        })

    return for_each_partition(context, one)

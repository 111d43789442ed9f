"""Acquisitions of a tile within a weekly window, as listed by the scene source.

Records each scene's id, time, platform and source hrefs (lineage to the raw data) in a
per-partition manifest; pixels are read by ``chip_cubes`` straight from the source, so large
rasters are never copied. A window with no acquisition is an empty partition, not a failure.
"""


import time

from dagster import AssetExecutionContext, BackfillPolicy, Backoff, MaterializeResult, MetadataValue, RetryPolicy, asset

from clay_assets.partitions import scene_partitions, split_key, window_bounds
from clay_assets.resources import ClayHome, SceneSourceResource
from clay_core.storage.layout import atomic_dir, write_manifest


@asset(
    partitions_def=scene_partitions,
    code_version="raw-1",
    group_name="clay",
    description=__doc__,
    backfill_policy=BackfillPolicy.multi_run(max_partitions_per_run=1),
    # Catalogue searches time out now and then; retry this partition only.
    retry_policy=RetryPolicy(max_retries=2, delay=1, backoff=Backoff.EXPONENTIAL),
)
def raw_scenes(context: AssetExecutionContext, home: ClayHome, source: SceneSourceResource) -> MaterializeResult:
    t0 = time.perf_counter()
    tile, window = split_key(context.partition_key)
    src = source.get_source()
    grid = src.grid(tile)
    start, end = window_bounds(window)
    refs = src.list_scenes(tile, start, end)
    scenes = [
        {"scene_id": r.scene_id, "tile": r.tile, "platform": r.platform, "datetime": r.datetime.isoformat(),
         "hrefs": r.hrefs, "cloud_cover": r.cloud_cover}
        for r in refs
    ]
    with atomic_dir(home.layout.partition("raw", tile, window)) as tmp:
        write_manifest(tmp, {"tile": tile, "window": window, "crs": grid.crs, "scenes": scenes})
    context.log.info(f"{tile} {window}: {len(refs)} acquisition(s)" + ("" if refs else " — empty window"))
    return MaterializeResult(
        metadata={
            "scenes": len(refs),
            "empty": not refs,
            "platform": src.platform,
            "scene_ids": MetadataValue.json([r.scene_id for r in refs]),
            "hrefs": MetadataValue.json([r.hrefs for r in refs]),
            "crs": grid.crs,
            "seconds": round(time.perf_counter() - t0, 3),
        }
    )

"""Zarr v3 chip cubes: the window's scenes cut into fixed chips on the tile grid.

Per partition: ``cube.zarr`` (dims chip, band, y, x; sharded, zstd; coordinates chip id,
centre lat/lon, WGS84 and native bounds, datetime, band, cloud and nodata fractions), a
GeoParquet chip index with lineage hrefs, and PNG thumbnails. Chips over the cloud or nodata
thresholds are dropped; the partition directory is swapped in atomically.
"""


import time

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    Backoff,
    MaterializeResult,
    MetadataValue,
    RetryPolicy,
    asset,
)

from clay_assets.batching import PartitionOutcome, batched_policy, for_each_partition
from clay_assets.metadata import histogram_md, image_md
from clay_assets.partitions import scene_partitions
from clay_assets.errors import no_retry_for_config_errors
from clay_assets.resources import ChipSettings, ClayHome, SceneSourceResource
from clay_assets.versions import chips_code_version, digest
from clay_core.chips import make_chip_cube
from clay_core.render import mosaic
from clay_core.types import PartitionId


@asset(
    partitions_def=scene_partitions,
    code_version=chips_code_version(),
    group_name="clay",
    deps=["raw_scenes"],
    description=__doc__,
    backfill_policy=batched_policy(),
    # Reading scenes over the network fails transiently; a retry re-reads only this run's partitions.
    retry_policy=RetryPolicy(max_retries=2, delay=1, backoff=Backoff.EXPONENTIAL),
    check_specs=[AssetCheckSpec("cloud_fractions_in_range", asset="chip_cubes", blocking=True,
                                description="cloud and nodata fractions are within [0, 1] and under the thresholds")],
)
def chip_cubes(
    context: AssetExecutionContext, home: ClayHome, source: SceneSourceResource, chip_settings: ChipSettings
) -> MaterializeResult:
    params = chip_settings.params()
    return for_each_partition(context, lambda pid: _chip(context, home, source, params, pid, chip_settings.dask_scheduler))


def _chip(context, home: ClayHome, source: SceneSourceResource, params, pid: PartitionId,
          scheduler_address: str | None) -> PartitionOutcome:
    t0 = time.perf_counter()
    # Local rasters are streamed chip row by chip row straight from the files; other sources load each scene.
    with no_retry_for_config_errors():
        res = make_chip_cube(
            home.layout, pid, source.get_source(), params, list(source.bands),
            cube_location=home.cube_location(pid.tile, pid.window) if home.cubes_uri else None,
            storage_options=home.storage_options(), log=context.log.info,
            scheduler_address=scheduler_address,
        )  # fmt: skip
    cloud, nodata = res.cloud_fraction, res.nodata_fraction
    md = {
        "chips": res.chips,
        "dagster/row_count": res.chips,
        "empty": res.empty,
        "scenes": len(res.scene_ids),
        "dropped_cloudy": res.dropped.get("cloudy", 0),
        "dropped_nodata": res.dropped.get("nodata", 0),
        "chip_size": params.chip_size,
        "cloud_screening": res.cloud_screening,  # "off": no QA band, only nodata was screened
        "cube": MetadataValue.path(res.cube_uri or "(no chips)"),
        "cloud_fraction_histogram": histogram_md(cloud, label="cloud fraction"),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    if res.thumbnails:
        labels = [f"{c}\ncloud {f:.2f}" for c, f in zip(res.chip_ids, cloud)]
        md["mosaic"] = image_md(mosaic(res.thumbnails, columns=8, max_tiles=32, labels=labels),
                                f"{pid.tile} {pid.window}: {res.chips} chips")  # fmt: skip
    version = digest([params.__dict__, res.scene_ids, res.bands])
    check = AssetCheckResult(
        check_name="cloud_fractions_in_range", passed=res.fractions_in_range(params), severity=AssetCheckSeverity.ERROR,
        metadata={"max_cloud": float(cloud.max()) if len(cloud) else 0.0, "max_nodata": float(nodata.max()) if len(nodata) else 0.0},
    )
    return PartitionOutcome(metadata=md, checks=[check], data_version=version)

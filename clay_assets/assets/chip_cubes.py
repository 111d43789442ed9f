"""Zarr v3 chip cubes: the window's scenes cut into fixed chips on the tile grid.

Per partition: ``cube.zarr`` (dims chip, band, y, x; sharded, zstd; coordinates chip id,
centre lat/lon, WGS84 and native bounds, datetime, band, cloud and nodata fractions), a
GeoParquet chip index with lineage hrefs, and PNG thumbnails. Chips over the cloud or nodata
thresholds are dropped; the partition directory is swapped in atomically.
"""


import time
from datetime import datetime

import numpy as np
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    BackfillPolicy,
    Backoff,
    DataVersion,
    MaterializeResult,
    MetadataValue,
    RetryPolicy,
    asset,
)

from clay_assets.metadata import histogram_md, image_md
from clay_assets.partitions import scene_partitions, split_key
from clay_assets.resources import ChipSettings, ClayHome, SceneSourceResource
from clay_assets.versions import chips_code_version, digest
from clay_core.chips import ChipSet, chip_source_scene, mosaic, png_bytes, rgb_image, thumb_name, to_dataset, write_cube, write_index
from clay_core.storage.layout import atomic_dir, read_manifest, write_manifest
from clay_core.types import SceneRef


@asset(
    partitions_def=scene_partitions,
    code_version=chips_code_version(),
    group_name="clay",
    deps=["raw_scenes"],
    description=__doc__,
    backfill_policy=BackfillPolicy.multi_run(max_partitions_per_run=1),
    # Reading scenes over the network fails transiently; a retry re-reads only this partition.
    retry_policy=RetryPolicy(max_retries=2, delay=1, backoff=Backoff.EXPONENTIAL),
    check_specs=[AssetCheckSpec("cloud_fractions_in_range", asset="chip_cubes", blocking=True,
                                description="cloud and nodata fractions are within [0, 1] and under the thresholds")],
)
def chip_cubes(
    context: AssetExecutionContext, home: ClayHome, source: SceneSourceResource, chip_settings: ChipSettings
) -> MaterializeResult:
    t0 = time.perf_counter()
    params = chip_settings.params()
    tile, window = split_key(context.partition_key)
    layout = home.layout
    raw = read_manifest(layout.partition("raw", tile, window))
    src = source.get_source()
    sets = []
    for s in raw["scenes"]:
        ref = SceneRef(s["scene_id"], s["tile"], s["platform"], datetime.fromisoformat(s["datetime"]), s["hrefs"], s["cloud_cover"])
        # Streams chip rows straight from the files for local rasters; loads the scene otherwise.
        cs = chip_source_scene(src, ref, list(source.bands), params)
        context.log.info(f"{ref.scene_id}: kept {len(cs)} chips, dropped {cs.dropped}")
        sets.append(cs)
    chips = ChipSet.concat(sets, list(source.bands), params.chip_size)
    final = layout.partition("chips", tile, window)
    thumbs_img = []
    cube_uri = None
    with atomic_dir(final) as tmp:
        thumbs = []
        if len(chips):
            (tmp / "thumbs").mkdir()
            for i, row in chips.meta.iterrows():
                img = rgb_image(chips.pixels[i], chips.bands)
                name = thumb_name(row["chip_id"], row["datetime"])
                (tmp / "thumbs" / name).write_bytes(png_bytes(img))
                thumbs.append(str(final / "thumbs" / name))
                thumbs_img.append(img)
            if home.cubes_uri:
                cube_uri = write_cube(to_dataset(chips, params.chip_size), home.cube_location(tile, window),
                                      storage_options=home.storage_options())
            else:
                write_cube(to_dataset(chips, params.chip_size), tmp / "cube.zarr")
                cube_uri = home.cube_location(tile, window)
            write_index(chips, tmp / "index.parquet", thumbs, cube_uri)
            (tmp / "mosaic.png").write_bytes(png_bytes(mosaic(thumbs_img)))
        write_manifest(tmp, {"tile": tile, "window": window, "chips": len(chips), "chip_size": params.chip_size,
                             "cube_uri": cube_uri if len(chips) else None,
                             "bands": chips.bands, "dropped": chips.dropped, "scenes": len(raw["scenes"])})
    cloud = chips.meta["cloud_fraction"].to_numpy() if len(chips) else np.zeros(0)
    nodata = chips.meta["nodata_fraction"].to_numpy() if len(chips) else np.zeros(0)
    in_range = bool(np.all((cloud >= 0) & (cloud <= params.max_cloud)) and np.all((nodata >= 0) & (nodata <= params.max_nodata)))
    md = {
        "chips": len(chips),
        "dagster/row_count": len(chips),
        "empty": len(chips) == 0,
        "scenes": len(raw["scenes"]),
        "dropped_cloudy": chips.dropped.get("cloudy", 0),
        "dropped_nodata": chips.dropped.get("nodata", 0),
        "chip_size": params.chip_size,
        "cube": MetadataValue.path(cube_uri or "(no chips)"),
        "cloud_fraction_histogram": histogram_md(cloud, label="cloud fraction"),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    if thumbs_img:
        md["mosaic"] = image_md(mosaic([im[::2, ::2] for im in thumbs_img], max_tiles=32), f"{tile} {window}: {len(chips)} chips")
    version = digest([params.__dict__, [s["scene_id"] for s in raw["scenes"]], chips.bands])
    check = AssetCheckResult(
        check_name="cloud_fractions_in_range", passed=in_range, severity=AssetCheckSeverity.ERROR,
        metadata={"max_cloud": float(cloud.max()) if len(cloud) else 0.0, "max_nodata": float(nodata.max()) if len(nodata) else 0.0},
    )
    return MaterializeResult(metadata=md, data_version=DataVersion(version), check_results=[check])

"""New-scene sensor and newest-window schedule: new acquisitions flow through without re-running history.

``new_scenes_sensor`` asks the scene source, per tile, for acquisitions since its cursor and
requests exactly the tile x window partitions that are new (never materialized) or whose
set of scenes changed (a late-arriving acquisition). Each request runs the whole per-scene
chain (scenes → chips → embeddings → change scores → vectors) for that partition with the
current PCA basis; refitting PCA stays an explicit action. The cursor (JSON: the time scanned
up to (the newest acquisition seen) and a digest of the scene ids per partition) is stored by Dagster, so it survives
daemon restarts.

``newest_window_schedule`` is the cron alternative: every Monday it runs the previous
week's window for every registered tile.

``tiles_sensor`` (running by default, no runs, one instance query a minute) registers the
configured tiles (``CLAY_TILES`` + the tiles of ``CLAY_AREA``) as partitions of the dynamic
``tile`` dimension, so ``dagster dev`` users see them without running anything first.
"""

import json
from datetime import datetime, timedelta, timezone

from dagster import (
    AddDynamicPartitionsRequest,
    AssetKey,
    AssetSelection,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    define_asset_job,
    schedule,
    sensor,
)

from clay_assets import config
from clay_assets.partitions import TILES_DIMENSION, date_partitions, scene_partitions
from clay_assets.resources import SceneSourceResource
from clay_assets.versions import digest
from clay_core.types import PartitionId, window_start

__all__ = ["INCREMENTAL_ASSETS", "incremental_job", "plan_new_partitions", "new_scenes_sensor", "tiles_sensor",
           "newest_window_schedule", "SENSORS"]

INCREMENTAL_ASSETS = ["raw_scenes", "chip_cubes", "embeddings", "change_scores", "vectors"]

incremental_job = define_asset_job(
    "incremental_update",
    AssetSelection.assets(*INCREMENTAL_ASSETS),
    partitions_def=scene_partitions,
    description="One tile x window through scenes, chips, embeddings, change scores and vectors (current PCA basis).",
)

# How far back each tick looks again, for acquisitions that reach the catalogue late.
LOOKBACK = timedelta(days=14)


def plan_new_partitions(source, tiles: list[str], cursor: dict, now: datetime, materialized: set[str]) -> tuple[list[str], dict]:
    """Partition keys to request and the new cursor.

    A key is requested when its scenes were never seen by the sensor and it is not already
    materialized (first tick on an existing deployment), or when its scene set changed.
    """
    start_default = datetime.fromisoformat(config.current().start).replace(tzinfo=timezone.utc)
    # Scan again from a little before the newest acquisition already seen (not from "now"):
    # catalogues publish late, and a source's clock need not be ours.
    scanned = cursor.get("newest_seen")
    scan_from = max(start_default, datetime.fromisoformat(scanned) - LOOKBACK) if scanned else start_default
    end = date_partitions.end
    scan_to = min(now, end) if end else now
    seen: dict = dict(cursor.get("seen", {}))
    newest = datetime.fromisoformat(scanned) if scanned else None
    keys = []
    valid_windows = set(date_partitions.get_partition_keys(current_time=now))
    for tile in tiles:
        by_window: dict[str, list[str]] = {}
        for ref in source.list_scenes(tile, scan_from, scan_to):
            newest = ref.datetime if newest is None else max(newest, ref.datetime)
            by_window.setdefault(window_start(ref.datetime), []).append(ref.scene_id)
        for window, ids in sorted(by_window.items()):
            if window not in valid_windows:
                continue  # the window is still open: wait until it closes
            key = PartitionId(window=window, tile=tile).key
            dg = digest(sorted(ids))
            if seen.get(key) == dg:
                continue
            if key not in seen and key in materialized:
                seen[key] = dg
                continue
            seen[key] = dg
            keys.append(key)
    return keys, {"newest_seen": newest.isoformat() if newest else None, "seen": seen}


@sensor(
    job=incremental_job,
    minimum_interval_seconds=3600,
    default_status=DefaultSensorStatus.STOPPED,
    description=__doc__,
)
def new_scenes_sensor(context: SensorEvaluationContext, source: SceneSourceResource):
    cursor = json.loads(context.cursor) if context.cursor else {}
    src = source.get_source()
    materialized = {str(k) for k in context.instance.get_materialized_partitions(AssetKey("raw_scenes"))}
    now = datetime.now(timezone.utc)
    registered = list(context.instance.get_dynamic_partitions(TILES_DIMENSION))
    tiles = list(dict.fromkeys([*config.current().tiles, *registered]))
    keys, new_cursor = plan_new_partitions(src, tiles, cursor, now, materialized)
    if not keys:
        return SensorResult(skip_reason=SkipReason("no new acquisitions"), cursor=json.dumps(new_cursor))
    context.log.info(f"new acquisitions in {len(keys)} partition(s): {keys}")
    # A configured tile the tiles sensor has not registered yet is registered in this same
    # tick (Dagster adds partitions before it launches the tick's runs).
    unregistered = sorted({PartitionId.parse(k).tile for k in keys} - set(registered))
    return SensorResult(
        run_requests=[RunRequest(run_key=f"{k}:{new_cursor['seen'][k]}", partition_key=k) for k in keys],
        cursor=json.dumps(new_cursor),
        dynamic_partitions_requests=[AddDynamicPartitionsRequest(TILES_DIMENSION, unregistered)] if unregistered else [],
    )


@sensor(minimum_interval_seconds=60, default_status=DefaultSensorStatus.RUNNING,
        description="Registers the configured tiles (CLAY_TILES + CLAY_AREA) as partitions of the tile dimension.")
def tiles_sensor(context: SensorEvaluationContext):
    have = set(context.instance.get_dynamic_partitions(TILES_DIMENSION))
    new = [t for t in config.current().tiles if t not in have]
    if not new:
        return SensorResult(skip_reason=SkipReason(f"all {len(have)} configured tiles are registered"))
    context.log.info(f"registering tiles {new}")
    return SensorResult(dynamic_partitions_requests=[AddDynamicPartitionsRequest(TILES_DIMENSION, new)])


@schedule(
    job=incremental_job,
    cron_schedule="0 6 * * 1",
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.STOPPED,
    description="Every Monday 06:00 UTC: last week's window for every tile.",
)
def newest_window_schedule(context):
    when = context.scheduled_execution_time or datetime.now(timezone.utc)
    window = window_start(when - timedelta(days=7))
    # Only registered tiles: a run for an unregistered one would be refused (tiles_sensor registers them).
    for tile in context.instance.get_dynamic_partitions(TILES_DIMENSION):
        key = PartitionId(window=window, tile=tile).key
        yield RunRequest(run_key=key, partition_key=key)


#: Every sensor of the code location (``clay_assets.definitions`` lists these).
SENSORS = [new_scenes_sensor, tiles_sensor]

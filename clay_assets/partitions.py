"""tile x date partitions shared by every per-scene asset.

``date`` is a weekly time window (Monday 00:00 UTC to the next Monday): Sentinel-2 revisits
every ~5 days, so a week holds one or two acquisitions per tile and date-range backfills and
"newest window" schedules are native Dagster features. ``tile`` is the configured MGRS tiles.
Keys look like ``2024-01-01|31UFU`` (Dagster orders dimensions by name).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from dagster import MultiPartitionKey, MultiPartitionsDefinition, StaticPartitionsDefinition, WeeklyPartitionsDefinition

from clay_assets import settings
from clay_core.tiles import parse_tile

for _t in settings.tiles():
    parse_tile(_t)  # an invalid CLAY_TILES entry fails when the code location loads

tile_partitions = StaticPartitionsDefinition(settings.tiles())
date_partitions = WeeklyPartitionsDefinition(
    start_date=settings.start_date(), end_date=settings.end_date(), day_offset=1, timezone="UTC"
)
scene_partitions = MultiPartitionsDefinition({"date": date_partitions, "tile": tile_partitions})


def split_key(key: str | MultiPartitionKey) -> tuple[str, str]:
    """(tile, window start 'YYYY-MM-DD') of a multi-partition key."""
    if isinstance(key, MultiPartitionKey):
        dims = key.keys_by_dimension
        return dims["tile"], dims["date"]
    window, tile = str(key).split("|")
    return tile, window


def make_key(tile: str, window: str) -> MultiPartitionKey:
    return MultiPartitionKey({"tile": tile, "date": window})


def window_bounds(window: str) -> tuple[datetime, datetime]:
    start = datetime.fromisoformat(window).replace(tzinfo=timezone.utc)
    return start, start + timedelta(days=7)

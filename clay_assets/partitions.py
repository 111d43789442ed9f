"""tile x date partitions shared by every per-scene asset.

``date`` is a weekly time window (Monday 00:00 UTC to the next Monday): Sentinel-2 revisits
every ~5 days, so a week holds one or two acquisitions per tile and date-range backfills and
"newest window" schedules are native Dagster features. ``tile`` is the configured MGRS tiles
(``CLAY_TILES``, validated by ``clay_assets.config`` when the code location loads). Keys look
like ``2024-01-01|31UFU`` (Dagster orders dimensions by name), which is
``clay_core.types.PartitionId.key``.
"""

from __future__ import annotations

from dagster import MultiPartitionKey, MultiPartitionsDefinition, StaticPartitionsDefinition, WeeklyPartitionsDefinition

from clay_assets import config
from clay_core.types import PartitionId

_cfg = config.current()
tile_partitions = StaticPartitionsDefinition(list(_cfg.tiles))
date_partitions = WeeklyPartitionsDefinition(start_date=_cfg.start, end_date=_cfg.end, day_offset=1, timezone="UTC")
scene_partitions = MultiPartitionsDefinition({"date": date_partitions, "tile": tile_partitions})


def partition_id(key: str | MultiPartitionKey) -> PartitionId:
    """The ``PartitionId`` of a multi-partition key (``context.partition_key``)."""
    return PartitionId.parse(str(key))


def make_key(tile: str, window: str) -> MultiPartitionKey:
    """The Dagster key of a tile x window partition."""
    return MultiPartitionKey({"tile": tile, "date": window})


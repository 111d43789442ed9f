"""tile x date partitions shared by every per-scene asset.

``date`` is a weekly time window (Monday 00:00 UTC to the next Monday): Sentinel-2 revisits
every ~5 days, so a week holds one or two acquisitions per tile and date-range backfills and
"newest window" schedules are native Dagster features. Windows run from ``CLAY_START`` to
``CLAY_END`` and never past the last complete week (Dagster's default ``end_offset=0``: the
week in progress is not a partition until it ends), so nothing in the future looks "missing".
A cube source without ``CLAY_START`` / ``CLAY_END`` gets its own date range
(:mod:`clay_assets.config`).

``tile`` is a *dynamic* dimension (``DynamicPartitionsDefinition("tiles")``): tiles are
registered in the Dagster instance at run time, so a new area's tiles appear without
reloading code. :func:`register_tiles` adds them; the runner, the ``tiles_sensor`` (running
by default) and the CLI call it with the configured tiles (``CLAY_TILES`` + ``CLAY_AREA``).
Keys look like ``2024-01-01|31UFU`` (Dagster orders dimensions by name), which is
``clay_core.types.PartitionId.key``.
"""

from __future__ import annotations

from collections.abc import Iterable

from dagster import (
    DagsterInstance,
    DimensionPartitionMapping,
    DynamicPartitionsDefinition,
    IdentityPartitionMapping,
    MultiPartitionKey,
    MultiPartitionMapping,
    MultiPartitionsDefinition,
    TimeWindowPartitionMapping,
    WeeklyPartitionsDefinition,
)

from clay_assets import config
from clay_core.tiles import parse_tile

__all__ = ["TILES_DIMENSION", "window_partitions", "tile_partitions", "date_partitions", "scene_partitions", "register_tiles",
           "make_key", "HISTORY_WINDOWS", "previous_window_mapping", "history_mapping"]

TILES_DIMENSION = "tiles"

#: How many preceding windows of a tile's embeddings a change partition declares it reads (a
#: year: the detector's baseline span). Dagster follows at most 99 upstream partitions per
#: partition when it works out staleness, so this must stay under 99.
HISTORY_WINDOWS = 52



def window_partitions(start: str, end: str | None) -> WeeklyPartitionsDefinition:
    """Weekly windows (Monday 00:00 UTC) from ``start`` up to ``end`` (exclusive) or, at the
    latest, the last complete week: never into the future."""
    return WeeklyPartitionsDefinition(start_date=start, end_date=end, day_offset=1, timezone="UTC")


_cfg = config.current()
tile_partitions = DynamicPartitionsDefinition(name=TILES_DIMENSION)
date_partitions = window_partitions(_cfg.start, _cfg.end)
scene_partitions = MultiPartitionsDefinition({"date": date_partitions, "tile": tile_partitions})


def register_tiles(instance: DagsterInstance, tiles: Iterable[str]) -> list[str]:
    """Register ``tiles`` as partitions of the ``tile`` dimension; returns the ones that were new.

    Idempotent: tiles already registered are left alone. Each id is checked to be an MGRS tile
    first, so a typo never becomes a partition.
    """
    wanted = list(dict.fromkeys(t.strip().upper() for t in tiles))
    for t in wanted:
        parse_tile(t)
    have = set(instance.get_dynamic_partitions(TILES_DIMENSION))
    new = [t for t in wanted if t not in have]
    if new:
        instance.add_dynamic_partitions(TILES_DIMENSION, new)
    return new


def _same_tile_dates(start_offset: int, end_offset: int) -> MultiPartitionMapping:
    return MultiPartitionMapping({
        "date": DimensionPartitionMapping("date", TimeWindowPartitionMapping(
            start_offset=start_offset, end_offset=end_offset, allow_nonexistent_upstream_partitions=True)),
        "tile": DimensionPartitionMapping("tile", IdentityPartitionMapping()),
    })  # fmt: skip


def previous_window_mapping() -> MultiPartitionMapping:
    """The same tile's previous window (none for the first window): ``change_scores`` on itself."""
    return _same_tile_dates(-1, -1)


def history_mapping(windows: int = HISTORY_WINDOWS) -> MultiPartitionMapping:
    """The same tile's window and the ``windows`` before it (fewer at the start)."""
    return _same_tile_dates(-windows, 0)


def make_key(tile: str, window: str) -> MultiPartitionKey:
    """The Dagster key of a tile x window partition."""
    return MultiPartitionKey({"tile": tile, "date": window})

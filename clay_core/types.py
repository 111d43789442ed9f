"""The shared vocabulary: tile grids, scene references, partitions, observations.

Every stage speaks in these frozen types, so a partition key or a weekly window is built and
parsed in exactly one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone

import numpy as np
from affine import Affine


__all__ = ["TileGrid", "SceneRef", "Scene", "PartitionId", "Observations", "WINDOW", "window_start", "weekly_windows"]

# Partitions are weekly windows, Monday 00:00 UTC to the next Monday: Sentinel-2 revisits about
# every 5 days, so a week holds one or two acquisitions of a tile.
WINDOW = timedelta(days=7)


def window_start(when: datetime | date) -> str:
    """The window (its Monday, ``YYYY-MM-DD``) that contains ``when`` (naive means UTC)."""
    day = when.astimezone(timezone.utc).date() if isinstance(when, datetime) and when.tzinfo else (
        when.date() if isinstance(when, datetime) else when)
    return (day - timedelta(days=day.weekday())).isoformat()


def weekly_windows(start: str | date, n: int) -> list[str]:
    """``n`` consecutive windows from the one containing ``start``."""
    first = date.fromisoformat(window_start(date.fromisoformat(start) if isinstance(start, str) else start))
    return [(first + i * WINDOW).isoformat() for i in range(n)]


@dataclass(frozen=True, order=True)
class PartitionId:
    """One tile x weekly window: the unit every per-scene stage reads and writes.

    ``key`` is ``"<window>|<tile>"``, the form Dagster gives a two-dimensional partition key
    (dimensions ordered by name, ``date`` before ``tile``) and the one stored in Postgres.
    """

    window: str  # the window's Monday, YYYY-MM-DD
    tile: str

    @property
    def key(self) -> str:
        return f"{self.window}|{self.tile}"

    @classmethod
    def parse(cls, key: str) -> "PartitionId":
        window, sep, tile = str(key).partition("|")
        if not sep or not tile:
            raise ValueError(f"partition key {key!r} is not '<YYYY-MM-DD>|<tile>'")
        date.fromisoformat(window)
        return cls(window=window, tile=tile)

    def bounds(self) -> tuple[datetime, datetime]:
        """[start, end) of the window as UTC datetimes."""
        start = datetime.fromisoformat(self.window).replace(tzinfo=timezone.utc)
        return start, start + WINDOW

    def __str__(self) -> str:
        return self.key


@dataclass(frozen=True)
class TileGrid:
    """The fixed pixel grid of one tile: every acquisition of the tile is on it."""

    tile: str
    crs: str  # e.g. "EPSG:32631"
    transform: Affine  # pixel (col, row) -> native CRS (x, y), upper-left corner
    height: int
    width: int

    @property
    def resolution(self) -> float:
        return float(self.transform.a)


@dataclass(frozen=True)
class SceneRef:
    """One acquisition a source can load (cheap to list, no pixels)."""

    scene_id: str
    tile: str
    platform: str
    datetime: datetime  # timezone-aware UTC
    hrefs: dict[str, str] = field(default_factory=dict)  # band -> URI, for lineage
    cloud_cover: float | None = None


@dataclass
class Scene:
    """Pixels of one acquisition on its tile grid.

    ``data`` is [band, y, x] in the platform's digital numbers (uint16 reflectance x 10000
    for Sentinel-2 L2A). ``qa`` is the classification band used for cloud/nodata masks
    (Sentinel-2 SCL), on the same grid.
    """

    ref: SceneRef
    grid: TileGrid
    bands: list[str]
    data: np.ndarray
    qa: np.ndarray
    nodata: int = 0

    def __post_init__(self) -> None:
        if self.data.ndim != 3 or self.data.shape[0] != len(self.bands):
            raise ValueError(
                f"scene {self.ref.scene_id}: data shape {self.data.shape} does not match bands {self.bands}"
            )
        if self.data.shape[1:] != self.qa.shape:
            raise ValueError(
                f"scene {self.ref.scene_id}: qa shape {self.qa.shape} != pixel shape {self.data.shape[1:]}"
            )


@dataclass
class Observations:
    """Embeddings of one partition (or several): row-aligned chip ids, times, vectors."""

    chip_id: np.ndarray  # [n] str
    datetime: np.ndarray  # [n] datetime64[ns]
    vectors: np.ndarray  # [n, dim] float32

    @staticmethod
    def concat(parts: list["Observations"], dim: int) -> "Observations":
        if not parts:
            return Observations(np.array([], dtype=object), np.array([], dtype="datetime64[ns]"),
                                np.zeros((0, dim), np.float32))
        return Observations(
            np.concatenate([p.chip_id for p in parts]),
            np.concatenate([p.datetime for p in parts]),
            np.concatenate([p.vectors for p in parts]),
        )

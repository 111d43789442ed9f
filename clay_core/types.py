"""Plain data types shared by sources, the chipper and the assets."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
from affine import Affine


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

"""Tile grids of rasters and of JSON-able configuration."""

from __future__ import annotations

from typing import Any

import rasterio
from affine import Affine

from clay_core.errors import ConfigError
from clay_core.sources.crs import crs_string
from clay_core.types import TileGrid

__all__ = ["grid_of", "grid_from_dict"]


def grid_of(src: rasterio.io.DatasetReader, tile: str) -> TileGrid:
    """The pixel grid of an open raster as a TileGrid for ``tile``."""
    return TileGrid(tile=tile, crs=crs_string(src.crs), transform=src.transform,
                    height=src.height, width=src.width)  # fmt: skip


def grid_from_dict(tile: str, spec: dict[str, Any]) -> TileGrid:
    """A TileGrid from a JSON-able dict ``{"crs", "transform": [a,b,c,d,e,f], "height", "width"}``."""
    try:
        tr = list(spec["transform"])[:6]
        return TileGrid(tile=tile, crs=crs_string(spec["crs"]), transform=Affine(*map(float, tr)),
                        height=int(spec["height"]), width=int(spec["width"]))  # fmt: skip
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(
            f"grid for tile {tile!r} must be a dict with crs, transform [a,b,c,d,e,f], height "
            f"and width; got {spec!r} ({exc})"
        ) from exc

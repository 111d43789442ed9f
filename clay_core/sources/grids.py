"""Tile grids of rasters and of JSON-able configuration."""

from __future__ import annotations

from typing import Any

import rasterio
from affine import Affine

from clay_core.errors import ConfigError
from clay_core.sources.crs import crs_string
from clay_core.types import TileGrid

__all__ = ["grid_of", "grid_from_dict", "grid_tile", "check_grid_tile"]


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


def grid_tile(grid: TileGrid) -> str:
    """The MGRS tile the grid's data lies in: the 100 km square holding its centre."""
    from clay_core.areas import footprint_tile

    return footprint_tile(grid.crs, _bounds(grid))


def _bounds(grid: TileGrid) -> tuple[float, float, float, float]:
    t = grid.transform
    xs = (t.c, t.c + grid.width * t.a)
    ys = (t.f, t.f + grid.height * t.e)
    return min(xs), min(ys), max(xs), max(ys)


def check_grid_tile(tile: str, grid: TileGrid, what: str) -> None:
    """Refuse data asked for as ``tile`` whose footprint centre lies outside that tile.

    A tile id that is not an MGRS id (a site name) is taken as given. The Sentinel-2 extent
    of ``tile`` (109.8 km, its overlap with the neighbours included) must hold the centre;
    otherwise the error names the tile the data really is in.
    """
    from pyproj import Transformer

    from clay_core.areas import tile_contains
    from clay_core.errors import UnknownTileError
    from clay_core.tiles import parse_tile

    try:
        parse_tile(tile)
    except UnknownTileError:
        return
    left, bottom, right, top = _bounds(grid)
    lon, lat = Transformer.from_crs(grid.crs, 4326, always_xy=True).transform((left + right) / 2, (bottom + top) / 2)
    if tile_contains(tile.strip().upper(), lon, lat):
        return
    real = grid_tile(grid)
    raise UnknownTileError(
        f"{what}: the data is in MGRS tile {real} (centre lat {lat:.3f}, lon {lon:.3f}), "
        f"not in {tile.strip().upper()}; set CLAY_TILES={real} (or an area around it in CLAY_AREA)"
    )

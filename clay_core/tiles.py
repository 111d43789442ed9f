"""MGRS tile ids -> the UTM pixel grid Sentinel-2 uses for that tile.

A Sentinel-2 L2A tile is 109.8 km square, 10980 x 10980 px at 10 m, in the UTM zone of
its MGRS grid square, with its upper-left corner at (about) the square's north-west
corner; the published tiling adds a few tens of metres to the northing that this
function does not (real sources take the exact grid from the data, e.g. STAC
``proj:transform``). Chip ids are anchored to the grid, so the same id means the same
ground on every date.
"""

from __future__ import annotations

import re
from functools import lru_cache

import mgrs
from affine import Affine
from pyproj import Transformer

from clay_core.errors import UnknownTileError
from clay_core.types import TileGrid

TILE_RE = re.compile(r"^(?P<zone>\d{1,2})(?P<band>[C-HJ-NP-X])(?P<square>[A-HJ-NP-Z]{2})$")
S2_TILE_PX = 10980
S2_RES = 10.0


def parse_tile(tile: str) -> tuple[int, str, str]:
    """Split an MGRS tile id like ``31UFU`` into (zone, latitude band, 100 km square)."""
    m = TILE_RE.match(tile.strip().upper()) if isinstance(tile, str) else None
    if not m or not 1 <= int(m["zone"]) <= 60:
        raise UnknownTileError(
            f"unknown tile {tile!r}: expected an MGRS tile id such as '31UFU' or '20LPP' "
            "(UTM zone 1-60, latitude band C-X, two-letter 100 km square)"
        )
    return int(m["zone"]), m["band"], m["square"]


def utm_epsg(zone: int, band: str) -> int:
    """EPSG code of the WGS84 / UTM zone; bands N..X are northern hemisphere."""
    return (32600 if band >= "N" else 32700) + zone


@lru_cache(maxsize=256)
def s2_tile_grid(tile: str, resolution: float = S2_RES) -> TileGrid:
    """The Sentinel-2 grid of ``tile`` at ``resolution`` metres (10 m: 10980 x 10980 px)."""
    zone, band, _ = parse_tile(tile)
    tile = tile.strip().upper()
    try:
        lat, lon = mgrs.MGRS().toLatLon(f"{tile}0000000000")
    except Exception as exc:  # the native library only says "String Error"
        raise UnknownTileError(
            f"unknown tile {tile!r}: not a valid MGRS 100 km square ({exc})"
        ) from exc
    epsg = utm_epsg(zone, band)
    x, y = Transformer.from_crs(4326, epsg, always_xy=True).transform(lon, lat)
    # The square's SW corner lands on a 100 km multiple in its own zone; round away
    # the few centimetres the geodetic round trip adds.
    west, south = round(x / 100.0) * 100.0, round(y / 100.0) * 100.0
    size = int(round(S2_TILE_PX * S2_RES / resolution))
    transform = Affine(resolution, 0.0, west, 0.0, -resolution, south + 100_000.0)
    return TileGrid(tile=tile, crs=f"EPSG:{epsg}", transform=transform, height=size, width=size)


def subgrid(grid: TileGrid, height: int, width: int) -> TileGrid:
    """The upper-left ``height`` x ``width`` pixels of ``grid`` (same origin, same chip ids)."""
    return TileGrid(grid.tile, grid.crs, grid.transform, min(height, grid.height), min(width, grid.width))

"""Areas of interest -> the MGRS tiles that cover them, and data footprints -> their tile.

A user gives an area (a GeoJSON file, a GeoJSON geometry, or a ``west,south,east,north``
bbox in degrees) and :func:`tiles_for_area` returns the MGRS 100 km squares it touches.

The rule: a tile is the MGRS 100 km grid square (its UTM zone x latitude band x square),
not the 109.8 km Sentinel-2 product extent. Sentinel-2 tiles overlap their east and south
neighbours by 9.8 km; an area that only reaches into that overlap strip does not pull the
neighbour in, because the square the area lies in already covers it. The walk is exact,
not sampled: the area is cut by the UTM zones (with the Norway / Svalbard exceptions) and
the 8-degree latitude bands, each piece is projected to its zone's UTM and cut by the
100 km grid, and every non-empty cell is named by the ``mgrs`` library from a point
inside it.

:func:`footprint_tile` is the tile of a data footprint (the square holding its centre);
:func:`tile_contains` says whether a Sentinel-2 tile's extent holds a point.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import mgrs
from pyproj import Transformer
from shapely import geometry as sg
from shapely.ops import transform as shp_transform

from clay_core.errors import ConfigError
from clay_core.tiles import s2_tile_grid, utm_epsg

__all__ = ["parse_area", "tiles_for_area", "footprint_tile", "point_tile", "tile_contains", "footprint_lonlat"]

_BANDS = "CDEFGHJKLMNPQRSTUVWX"  # 8 degrees each from 80 S; X is 12 degrees (72..84 N)


def parse_area(area: str | dict | Any) -> Any:
    """A shapely geometry in WGS84 lon/lat from ``west,south,east,north``, a GeoJSON file
    path, a GeoJSON mapping (Geometry, Feature or FeatureCollection) or a shapely geometry."""
    if hasattr(area, "geom_type"):
        return area
    if isinstance(area, dict):
        return _geojson(area, "the area")
    text = str(area).strip()
    parts = text.split(",")
    if len(parts) == 4:
        try:
            w, s, e, n = (float(p) for p in parts)
        except ValueError:
            raise ConfigError(f"area {text!r}: a bbox is four numbers west,south,east,north (degrees)") from None
        if not (-180 <= w < e <= 180 and -80 <= s < n <= 84):
            raise ConfigError(f"area {text!r}: need west < east in [-180, 180] and south < north in [-80, 84] "
                              "(degrees; an area across the antimeridian is two areas)")
        return sg.box(w, s, e, n)
    path = Path(text).expanduser()
    if not path.is_file():
        raise ConfigError(f"area {text!r} is neither a bbox west,south,east,north nor a GeoJSON file")
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"area file {text!r} is not readable GeoJSON: {exc}") from None
    return _geojson(doc, repr(text))


def _geojson(doc: dict, what: str) -> Any:
    kind = doc.get("type")
    try:
        if kind == "FeatureCollection":
            geoms = [sg.shape(f["geometry"]) for f in doc.get("features", []) if f.get("geometry")]
        elif kind == "Feature":
            geoms = [sg.shape(doc["geometry"])]
        else:
            geoms = [sg.shape(doc)]
    except Exception as exc:  # noqa: BLE001 - shapely raises several types for bad GeoJSON
        raise ConfigError(f"{what} is not a GeoJSON geometry, Feature or FeatureCollection: {exc}") from None
    if not geoms:
        raise ConfigError(f"{what} has no geometry")
    geom = geoms[0] if len(geoms) == 1 else sg.GeometryCollection(geoms).buffer(0) if all(
        g.geom_type.endswith("Polygon") for g in geoms) else sg.GeometryCollection(geoms)
    w, s, e, n = geom.bounds
    if not (-180 <= w and e <= 180 and -90 <= s and n <= 90):
        raise ConfigError(f"{what}: coordinates must be WGS84 longitude/latitude degrees (GeoJSON's CRS); "
                          f"got bounds {geom.bounds}")
    return geom


def _zone_strips(band: str) -> list[tuple[int, float, float]]:
    """(zone, west, east) longitude strips of one latitude band, with the MGRS exceptions."""
    strips = [(z, -180.0 + 6 * (z - 1), -180.0 + 6 * z) for z in range(1, 61)]
    if band == "V":  # south-west Norway: 31V is narrowed to 0-3 E, 32V widened to 3-12 E
        strips = [s for s in strips if s[0] not in (31, 32)] + [(31, 0.0, 3.0), (32, 3.0, 12.0)]
    if band == "X":  # Svalbard: 32X, 34X, 36X do not exist; 31X/33X/35X/37X are widened
        strips = [s for s in strips if s[0] not in (31, 32, 33, 34, 35, 36, 37)]
        strips += [(31, 0.0, 9.0), (33, 9.0, 21.0), (35, 21.0, 33.0), (37, 33.0, 42.0)]
    return strips


def point_tile(lon: float, lat: float) -> str:
    """The MGRS 100 km square (``34TER``) holding a WGS84 point."""
    return mgrs.MGRS().toMGRS(lat, lon, MGRSPrecision=0)


def tiles_for_area(area: str | dict | Any) -> list[str]:
    """The MGRS 100 km squares an area intersects, sorted (see the module docstring's rule)."""
    geom = parse_area(area)
    found: set[str] = set()
    for i, band in enumerate(_BANDS):
        south = -80.0 + 8 * i
        north = 84.0 if band == "X" else south + 8
        for zone, west, east in _zone_strips(band):
            piece = geom.intersection(sg.box(west, south, east, north))
            if piece.is_empty:
                continue
            to_utm = Transformer.from_crs(4326, utm_epsg(zone, band), always_xy=True)
            to_ll = Transformer.from_crs(utm_epsg(zone, band), 4326, always_xy=True)
            # densify first: a long straight edge in degrees is curved in UTM
            utm = shp_transform(to_utm.transform, piece.segmentize(0.01) if piece.length else piece)
            x0, y0, x1, y1 = utm.bounds
            for gx in range(math.floor(x0 / 100_000), math.floor(x1 / 100_000) + 1):
                for gy in range(math.floor(y0 / 100_000), math.floor(y1 / 100_000) + 1):
                    cell = utm.intersection(sg.box(gx * 1e5, gy * 1e5, (gx + 1) * 1e5, (gy + 1) * 1e5))
                    if cell.is_empty:
                        continue
                    p = cell.representative_point() if cell.area or cell.length else cell
                    lon, lat = to_ll.transform(p.x, p.y)
                    found.add(point_tile(lon, lat))
    return sorted(found)


def footprint_lonlat(crs: str, bounds: tuple[float, float, float, float]) -> Any:
    """A projected ``(left, bottom, right, top)`` box as a WGS84 lon/lat polygon."""
    to_ll = Transformer.from_crs(crs, 4326, always_xy=True)
    return shp_transform(to_ll.transform, sg.box(*bounds).segmentize(max(bounds[2] - bounds[0], 1.0) / 16))


def footprint_tile(crs: str, bounds: tuple[float, float, float, float]) -> str:
    """The MGRS square holding the centre of a projected footprint (the data's own tile)."""
    cx, cy = (bounds[0] + bounds[2]) / 2, (bounds[1] + bounds[3]) / 2
    lon, lat = Transformer.from_crs(crs, 4326, always_xy=True).transform(cx, cy)
    return point_tile(lon, lat)


def tile_contains(tile: str, lon: float, lat: float) -> bool:
    """Whether the Sentinel-2 product extent of ``tile`` (109.8 km, overlap included) holds a point."""
    g = s2_tile_grid(tile)
    x, y = Transformer.from_crs(4326, g.crs, always_xy=True).transform(lon, lat)
    left, top = g.transform.c, g.transform.f
    return left <= x <= left + g.width * g.transform.a and top + g.height * g.transform.e <= y <= top

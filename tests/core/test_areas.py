"""Areas -> MGRS tiles, checked against tiles known from the Sentinel-2 tiling and mgrs itself."""

from __future__ import annotations

import json

import pytest
from pyproj import Transformer

from clay_core.areas import footprint_tile, parse_area, point_tile, tile_contains, tiles_for_area
from clay_core.errors import ConfigError
from clay_core.sources import CubeSource
from clay_core.tiles import s2_tile_grid


def test_a_bbox_around_amsterdam_gives_its_tiles():
    # central Amsterdam (52.37 N, 4.90 E) is in 31UFU; the bbox reaches south into 31UFT
    assert tiles_for_area("4.85,52.35,4.95,52.40") == ["31UFU"]
    assert tiles_for_area("4.75,52.20,5.05,52.45") == ["31UFT", "31UFU"]


def test_the_nrt_cube_footprint_is_34TER():
    cube = CubeSource("nrt:")
    assert tiles_for_area(cube.footprint) == ["34TER"]
    g = cube.grid("34TER")
    assert footprint_tile(g.crs, (g.transform.c, g.transform.f - 1000, g.transform.c + 1000, g.transform.f)) == "34TER"


def test_every_square_of_a_large_area_is_found_exactly():
    """A 2 x 1 degree box across the zone 31/32 boundary: every point sampled on a fine grid lies
    in a returned tile, and every returned tile holds some sampled point (nothing extra)."""
    tiles = tiles_for_area("5.0,52.0,7.0,53.0")
    sampled = {point_tile(5.0 + i * 0.02, 52.0 + j * 0.02) for i in range(101) for j in range(51)}
    assert set(tiles) == sampled
    assert {"31UFU", "32ULC", "32ULD"} <= set(tiles) and all(t[:2] in ("31", "32") for t in tiles)


def test_an_area_only_in_the_overlap_strip_does_not_pull_in_the_neighbour():
    # a point 5 km south of 31UFU's square: inside the 31UFU Sentinel-2 extent (109.8 km) but in 31UFT
    g = s2_tile_grid("31UFU")
    lon, lat = Transformer.from_crs(g.crs, 4326, always_xy=True).transform(650_000, 5_795_000)
    assert tile_contains("31UFU", lon, lat) and tile_contains("31UFT", lon, lat)
    assert tiles_for_area(f"{lon - 0.001},{lat - 0.001},{lon + 0.001},{lat + 0.001}") == ["31UFT"]


def test_geojson_files_and_the_norway_exception(tmp_path):
    # Bergen (60.39 N, 5.32 E) is in zone 32 (the 32V widening), not in 31V where 6-degree zones put it
    poly = {"type": "Polygon", "coordinates": [[[5.30, 60.395], [5.35, 60.395], [5.35, 60.42], [5.30, 60.42], [5.30, 60.395]]]}
    f = tmp_path / "bergen.geojson"
    f.write_text(json.dumps({"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {},
                                                                          "geometry": poly}]}))
    assert tiles_for_area(str(f)) == tiles_for_area(poly) == [point_tile(5.32, 60.39)]
    assert tiles_for_area(str(f))[0].startswith("32V")


@pytest.mark.parametrize("bad, match", [
    ("1,2,3", "neither a bbox"),
    ("10,50,5,52", "west < east"),
    ("a,b,c,d", "four numbers"),
    ({"type": "Point"}, "not a GeoJSON"),
    ({"type": "Polygon", "coordinates": [[[500000, 5800000], [500100, 5800000], [500100, 5800100],
                                          [500000, 5800000]]]}, "WGS84"),
])
def test_bad_areas_say_what_is_wrong(bad, match):
    with pytest.raises(ConfigError, match=match):
        parse_area(bad)

"""CubeSource on the real Sentinel-2 cube shipped by nrt==0.2.1 (and small derived cubes)."""

from __future__ import annotations

from datetime import datetime, timezone

import netCDF4
import numpy as np
import pytest
import xarray as xr
from pyproj import Transformer

from clay_core.errors import ConfigError, SceneError, UnknownTileError
from clay_core.sources.base import SceneSource
from clay_core.sources.cube import CubeSource, nrt_cube_path

UTC = timezone.utc
EVER = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))


@pytest.fixture(scope="module")
def raw():
    """The file read independently of xarray (netCDF4), as stored."""
    with netCDF4.Dataset(nrt_cube_path()) as nc:
        nc.set_auto_maskandscale(False)
        return {k: np.array(nc.variables[k][:]) for k in ("x", "y", "B2", "B3", "B4", "B8", "SCL", "time")} | {
            "wkt": nc.variables["spatial_ref"].getncattr("spatial_ref"),
            "time_units": nc.variables["time"].units,
        }


@pytest.fixture(scope="module")
def src():
    return CubeSource(nrt_cube_path(), tile="34TER")


def test_lists_all_140_dates(src, raw):
    assert isinstance(src, SceneSource)
    refs = src.list_scenes("34TER", *EVER)
    assert len(refs) == 140 == len(raw["time"])
    assert raw["time_units"] == "days since 2015-08-01 00:00:00"
    assert refs[0].datetime == datetime(2015, 8, 1, tzinfo=UTC)
    assert refs[-1].datetime == datetime(2021, 1, 1, tzinfo=UTC)
    days = [(r.datetime - refs[0].datetime).days for r in refs]
    assert days == [int(d) for d in raw["time"]]
    assert len({r.scene_id for r in refs}) == 140 and refs[0].scene_id == "34TER_20150801T000000"
    # lineage: file path + variable + time index
    assert refs[3].hrefs["blue"] == f"{nrt_cube_path()}#B2[time=3]"
    assert refs[3].hrefs["scl"] == f"{nrt_cube_path()}#SCL[time=3]"
    # window filtering, end exclusive, naive = UTC
    sub = src.list_scenes("34TER", datetime(2015, 8, 11), datetime(2015, 8, 31))
    assert [r.datetime.day for r in sub] == [11]
    assert src.bands == {"blue": "B2", "green": "B3", "red": "B4", "nir": "B8"}


def test_georeferencing(src, raw):
    g = src.grid("34TER")
    assert g.crs == "EPSG:3035" and "LAEA Europe" in raw["wkt"]
    assert (g.height, g.width) == (100, 100) and g.resolution == 10.0
    # the transform maps pixel centres onto the x / y coordinate arrays (y descending)
    for col in (0, 37, 99):
        x, _ = g.transform @ (col + 0.5, 0.5)
        assert abs(x - raw["x"][col]) < 1e-6
    for row in (0, 51, 99):
        _, y = g.transform @ (0.5, row + 0.5)
        assert abs(y - raw["y"][row]) < 1e-6
    assert g.transform.e == -10.0 and g.transform.c == pytest.approx(raw["x"][0] - 5)
    assert g.transform.f == pytest.approx(raw["y"][0] + 5)
    # one pixel centre in lat/lon through pyproj from the file's own WKT
    row, col = 50, 50
    xc, yc = g.transform @ (col + 0.5, row + 0.5)
    lon, lat = Transformer.from_crs(raw["wkt"], "EPSG:4326", always_xy=True).transform(raw["x"][col], raw["y"][row])
    lon2, lat2 = Transformer.from_crs(g.crs, "EPSG:4326", always_xy=True).transform(xc, yc)
    assert (lat, lon) == pytest.approx((lat2, lon2), abs=1e-9)
    assert (lat, lon) == pytest.approx((45.2047, 22.1523), abs=1e-3)  # Romanian Carpathians


def test_pixels_and_scl_pass_through(src, raw):
    refs = src.list_scenes("34TER", *EVER)
    for i in (0, 13, 139):
        scene = src.load_scene(refs[i], ["red", "green", "blue", "nir"])
        assert scene.data.dtype == np.uint16 and scene.data.shape == (4, 100, 100)
        np.testing.assert_array_equal(scene.data, np.stack([raw[v][i] for v in ("B4", "B3", "B2", "B8")]))
        assert scene.qa.dtype == np.uint8
        np.testing.assert_array_equal(scene.qa, raw["SCL"][i])
        assert scene.grid == src.grid("34TER")
    assert set(np.unique(src.load_scene(refs[1], ["nir"]).qa)) <= set(range(12))
    # a ref rebuilt without hrefs (e.g. from a partition key) finds its date
    bare = type(refs[13])(refs[13].scene_id, "34TER", refs[13].platform, refs[13].datetime)
    np.testing.assert_array_equal(src.load_scene(bare, ["blue"]).data[0], raw["B2"][13])


def test_errors(src, tmp_path):
    refs = src.list_scenes("34TER", *EVER)
    with pytest.raises(SceneError, match="swir16"):
        src.load_scene(refs[0], ["swir16"])
    with pytest.raises(UnknownTileError, match="31UFU"):
        src.grid("31UFU")
    with pytest.raises(ConfigError, match="does not exist"):
        CubeSource(str(tmp_path / "nope.nc"), tile="x").grid("x")
    bad = tmp_path / "truncated.nc"
    raw = open(nrt_cube_path(), "rb").read()
    bad.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(SceneError, match="truncated.nc"):
        CubeSource(str(bad), tile="x").grid("x")
    bad.write_bytes(b"not a cube" * 10)
    with pytest.raises(SceneError, match="truncated.nc"):
        CubeSource(str(bad), tile="x").list_scenes("x", *EVER)
    ghost = type(refs[0])("34TER_19990101", "34TER", "sentinel-2-l2a", datetime(1999, 1, 1, tzinfo=UTC))
    with pytest.raises(SceneError, match="1999"):
        src.load_scene(ghost, ["blue"])


def test_zarr_cube_with_ascending_y_and_nan(tmp_path):
    """A float Zarr cube, y ascending, NaN gaps, CRS only given as an argument."""
    ds = xr.open_dataset(nrt_cube_path(), mask_and_scale=False).isel(time=slice(0, 3))
    ref = ds.B4.values.copy()
    flipped = ds.isel(y=slice(None, None, -1))
    red = flipped.B4.astype("float32").values
    red[1, 0, :] = np.nan  # y ascending: row 0 is the south edge (last row north-up)
    cube = xr.Dataset(
        {"red": (("time", "y", "x"), red), "scl": (("time", "y", "x"), flipped.SCL.values)},
        coords={"time": ds.time.values, "y": flipped.y.values, "x": ds.x.values},
    )
    path = tmp_path / "cube.zarr"
    cube.to_zarr(path, zarr_format=3, consolidated=False)
    src = CubeSource(str(path), tile="34TER", qa_var="scl", crs="EPSG:3035")
    assert src.grid("34TER").transform == CubeSource(nrt_cube_path(), tile="34TER").grid("34TER").transform
    refs = src.list_scenes("34TER", *EVER)
    assert len(refs) == 3
    s0 = src.load_scene(refs[0], ["red"])
    np.testing.assert_array_equal(s0.data[0], ref[0])  # flipped back to north-up
    s1 = src.load_scene(refs[1], ["red"])
    assert (s1.data[0, -1] == 0).all() and s1.nodata == 0  # NaN -> nodata, at the south edge
    np.testing.assert_array_equal(s1.data[0, :-1], ref[1, :-1])
    np.testing.assert_array_equal(s1.qa, ds.SCL.values[1])
    with pytest.raises(ConfigError, match="CRS"):
        CubeSource(str(path), tile="34TER", qa_var="scl").grid("34TER")


def test_nrt_prefix_and_synthetic_qa():
    src = CubeSource("nrt:", tile="34TER", qa_var=None)
    ref = src.list_scenes("34TER", *EVER)[0]
    scene = src.load_scene(ref, ["blue"])
    assert (scene.qa == 7).all()  # no QA variable: nothing is nodata (no zero DN), all 'unclassified'

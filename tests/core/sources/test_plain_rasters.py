"""LocalRasterSource on rasters as people have them: no band descriptions, no QA band, no tile
(or the wrong tile) in the name, the date in the TIFF tags -- and every option from config."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from clay_assets import config
from clay_assets.resources.build import scene_source
from clay_core.errors import ConfigError, SceneError, UnknownTileError
from clay_core.sources import LocalRasterSource
from tests.support.servers import write_cog

CRS = "EPSG:32631"
X0, Y0 = 640_000.0, 5_850_000.0  # inside MGRS 31UFU
EVER = (datetime(2000, 1, 1, tzinfo=timezone.utc), datetime(2100, 1, 1, tzinfo=timezone.utc))


def _plain(path, count: int, seed: int = 0, tags: dict | None = None, n: int = 64) -> np.ndarray:
    data = np.random.default_rng(seed).integers(1, 9000, (count, n, n), dtype=np.uint16)
    data[:, :8, :8] = 0  # a nodata corner
    with rasterio.open(path, "w", driver="GTiff", height=n, width=n, count=count, dtype="uint16", crs=CRS,
                       transform=from_origin(X0, Y0, 10, 10), nodata=0) as dst:
        dst.write(data)
        if tags:
            dst.update_tags(**tags)
    return data


def test_four_plain_bands_are_blue_green_red_nir_without_qa(tmp_path):
    data = _plain(tmp_path / "S2_2024-01-03.tif", 4)
    src = LocalRasterSource(str(tmp_path), pattern="S2_{date}.tif", qa_band="auto")
    assert src.tiles() == ["31UFU"]  # from the footprint: the name does not say it
    (ref,) = src.list_scenes("31UFU", *EVER)
    scene = src.load_scene(ref, ["nir", "red", "green", "blue"])
    np.testing.assert_array_equal(scene.data, data[::-1])
    # no QA: nodata pixels are 0 (no data), the rest 7 (unclassified, never "cloud")
    assert set(np.unique(scene.qa)) == {0, 7} and (scene.qa[:8, :8] == 0).all()
    assert src.cloud_screening == "off" and src.cloud_screening_of(ref) == "off"


def test_other_band_counts_need_CLAY_SOURCE_BANDS(tmp_path):
    data = _plain(tmp_path / "S2_2024-01-03.tif", 3)
    src = LocalRasterSource(str(tmp_path), pattern="S2_{date}.tif", qa_band="auto")
    (ref,) = src.list_scenes("31UFU", *EVER)
    with pytest.raises(SceneError, match="3 bands without band descriptions.*set CLAY_SOURCE_BANDS"):
        src.load_scene(ref, ["red"])
    named = LocalRasterSource(str(tmp_path), pattern="S2_{date}.tif", qa_band="auto", band_names=["red", "nir", "x"])
    np.testing.assert_array_equal(named.load_scene(ref, ["nir"]).data[0], data[1])
    wrong = LocalRasterSource(str(tmp_path), pattern="S2_{date}.tif", qa_band="auto", band_names=["red", "nir"])
    with pytest.raises(SceneError, match="has 3 bands but CLAY_SOURCE_BANDS"):
        wrong.load_scene(ref, ["nir"])
    with pytest.raises(SceneError, match="band 'blue' is missing.*set CLAY_SOURCE_BANDS"):
        named.load_scene(ref, ["blue"])


def test_date_from_tiff_tags_and_a_clear_error_without_one(tmp_path):
    _plain(tmp_path / "a.tif", 4, tags={"TIFFTAG_DATETIME": "2024:01:10 10:56:29"})
    src = LocalRasterSource(str(tmp_path), pattern="*.tif", qa_band=None)
    (ref,) = src.list_scenes("31UFU", *EVER)
    assert ref.datetime == datetime(2024, 1, 10, 10, 56, 29, tzinfo=timezone.utc)
    assert ref.scene_id == "31UFU_20240110T105629"
    _plain(tmp_path / "b.tif", 4)
    with pytest.raises(ConfigError, match="b.tif: CLAY_SOURCE_PATTERN .* no TIFFTAG_DATETIME"):
        src.list_scenes("31UFU", *EVER)


def test_a_file_named_for_the_wrong_tile_is_refused_naming_its_real_one(tmp_path):
    _plain(tmp_path / "32UNB_20240103.tif", 4)
    src = LocalRasterSource(str(tmp_path), pattern="{tile}_{date}.tif", qa_band=None)
    with pytest.raises(UnknownTileError, match=r"in MGRS tile 31UFU .*not in 32UNB; set CLAY_TILES=31UFU"):
        src.grid("32UNB")


def test_qa_auto_uses_scl_where_a_scene_has_it(tmp_path):
    t = from_origin(X0, Y0, 10, 10)
    for day in ("20240103", "20240110"):
        for b in ("B02", "B03", "B04", "B08"):
            write_cog(tmp_path / f"31UFU_{day}_{b}.tif", np.full((64, 64), 500, np.uint16), CRS, t)
    write_cog(tmp_path / "31UFU_20240103_SCL.tif", np.full((64, 64), 9, np.uint8), CRS, t)
    src = LocalRasterSource(str(tmp_path), qa_band="auto")
    with_scl, without = src.list_scenes("31UFU", *EVER)
    assert (src.load_scene(with_scl, ["blue"]).qa == 9).all() and (src.load_scene(without, ["blue"]).qa == 7).all()
    assert src.cloud_screening_of(with_scl) == "scl" and src.cloud_screening_of(without) == "off"
    assert src.cloud_screening == "partial"
    strict = LocalRasterSource(str(tmp_path), qa_band="scl")
    with pytest.raises(SceneError, match="QA band 'scl' is missing.*unset CLAY_SOURCE_QA_BAND"):
        strict.load_scene(without, ["blue"])


def test_every_local_option_is_reachable_from_config(tmp_path):
    env = {"CLAY_HOME": str(tmp_path), "CLAY_SOURCE": "local", "CLAY_SOURCE_ROOT": str(tmp_path),
           "CLAY_SOURCE_PATTERN": "{date}.tif", "CLAY_SOURCE_BANDS": "red,green,blue,nir08",
           "CLAY_SOURCE_QA_BAND": "none", "CLAY_PLATFORM": "landsat-c2l2-sr"}
    src = scene_source(config.load(env)).get_source()
    assert (src.root, src.pattern, src.band_names, src.qa_band, src.platform) == (
        str(tmp_path), "{date}.tif", ["red", "green", "blue", "nir08"], None, "landsat-c2l2-sr")
    landsat_qa = scene_source(config.load({**env, "CLAY_SOURCE_QA_BAND": "qa_pixel"})).get_source()
    assert (landsat_qa.qa_band, landsat_qa.qa_format) == ("qa_pixel", "landsat_qa_pixel")
    assert scene_source(config.load({**env, "CLAY_SOURCE_QA_BAND": ""})).get_source().qa_band == "auto"

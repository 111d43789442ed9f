"""LocalRasterSource on real COG files written with rasterio (tiled, deflate, overviews)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin


from tests.support.servers import write_cog  # noqa: E402

from clay_core.errors import ConfigError, SceneError, UnknownTileError  # noqa: E402
from clay_core.sources.base import SceneSource  # noqa: E402
from clay_core.sources.local import LocalRasterSource, parse_date, pattern_regex  # noqa: E402
from clay_core.sources.qa import landsat_qa_to_scl  # noqa: E402

CRS = "EPSG:32631"
X0, Y0 = 600000.0, 5850000.0  # inside 31UFU: a source refuses files outside the tile they are named for
N = 512  # 10 m pixels per side (two 256 blocks, overviews)
T10 = from_origin(X0, Y0, 10, 10)
T20 = from_origin(X0, Y0, 20, 20)
UTC = timezone.utc


def make_bands(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {b: rng.integers(1, 12000, (N, N), dtype=np.uint16) for b in ("blue", "green", "red", "nir")}
    # 20 m swir16: a ramp in x and y, so bilinear upsampling has a known answer
    jj, ii = np.meshgrid(np.arange(N // 2), np.arange(N // 2))
    out["swir16"] = (1000 + 8 * jj + 4 * ii).astype(np.uint16)
    out["scl"] = rng.integers(0, 12, (N // 2, N // 2), dtype=np.uint8)
    return out


FILE_TOKENS = {"blue": "B02", "green": "B03", "red": "B04", "nir": "B08", "swir16": "B11", "scl": "SCL"}


@pytest.fixture(scope="module")
def tile_dir(tmp_path_factory) -> tuple[Path, dict[str, dict[str, np.ndarray]]]:
    root = tmp_path_factory.mktemp("local")
    truth = {}
    for date, seed, style in (("20230105", 1, "ids"), ("2023-02-10", 2, "names")):
        bands = make_bands(seed)
        truth[date] = bands
        for b, arr in bands.items():
            token = FILE_TOKENS[b] if style == "ids" else b
            t = T10 if arr.shape[0] == N else T20
            write_cog(root / f"31UFU_{date}_{token}.tif", arr, CRS, t)
    # another tile in the same folder, and a file that does not match the pattern
    write_cog(root / "32ULC_20230105_blue.tif", np.ones((64, 64), np.uint16), "EPSG:32632", T10)
    (root / "README.txt").write_text("not a raster")
    return root, truth


def test_is_a_scene_source_and_lists_scenes(tile_dir):
    root, _ = tile_dir
    src = LocalRasterSource(str(root))
    assert isinstance(src, SceneSource)
    refs = src.list_scenes("31UFU", datetime(2023, 1, 1, tzinfo=UTC), datetime(2024, 1, 1, tzinfo=UTC))
    assert [r.scene_id for r in refs] == ["31UFU_20230105", "31UFU_20230210"]
    assert [r.datetime for r in refs] == [datetime(2023, 1, 5, tzinfo=UTC), datetime(2023, 2, 10, tzinfo=UTC)]
    assert all(r.platform == "sentinel-2-l2a" and r.tile == "31UFU" for r in refs)
    # aliases: B02 -> blue ... SCL -> scl, and hrefs point at the files
    assert set(refs[0].hrefs) == {"blue", "green", "red", "nir", "swir16", "scl"}
    assert refs[0].hrefs["blue"].endswith("31UFU_20230105_B02.tif")
    # end is exclusive; naive datetimes are UTC
    refs = src.list_scenes("31UFU", datetime(2023, 1, 5), datetime(2023, 2, 10))
    assert [r.scene_id for r in refs] == ["31UFU_20230105"]
    assert src.list_scenes("31UFU", datetime(2022, 1, 1), datetime(2023, 1, 1)) == []
    assert [r.scene_id for r in src.list_scenes("32ULC", datetime(2020, 1, 1), datetime(2030, 1, 1))] == ["32ULC_20230105"]
    assert src.tiles() == ["31UFU", "32ULC"]


def test_grid_is_the_finest_band(tile_dir):
    root, _ = tile_dir
    g = LocalRasterSource(str(root)).grid("31UFU")
    assert g.crs == CRS and (g.height, g.width) == (N, N)
    assert g.transform == T10 and g.resolution == 10.0
    with pytest.raises(UnknownTileError, match="31TCJ"):
        LocalRasterSource(str(root)).grid("31TCJ")


def test_load_scene_values_resampling_and_qa(tile_dir):
    root, truth = tile_dir
    src = LocalRasterSource(str(root))
    ref = src.list_scenes("31UFU", datetime(2023, 1, 1), datetime(2023, 1, 6))[0]
    bands = ["red", "green", "blue", "nir", "swir16"]
    scene = src.load_scene(ref, bands)
    t = truth["20230105"]
    assert scene.bands == bands and scene.data.shape == (5, N, N) and scene.data.dtype == np.uint16
    for i, b in enumerate(bands[:4]):
        np.testing.assert_array_equal(scene.data[i], t[b])
    # 20 m swir16 -> 10 m with bilinear: the ramp 1000 + 8*j + 4*i sampled at 10 m pixel
    # centres (j20 = (j10 + 0.5)/2 - 0.5) is 1000 + 4*j10 - 2 + 2*i10 - 1 inside the raster
    sw = scene.data[4].astype(float)
    jj, ii = np.meshgrid(np.arange(N), np.arange(N))
    expected = 1000 + 8 * ((jj + 0.5) / 2 - 0.5) + 4 * ((ii + 0.5) / 2 - 0.5)
    np.testing.assert_allclose(sw[2:-2, 2:-2], expected[2:-2, 2:-2], atol=0.51)
    assert not np.array_equal(sw, np.repeat(np.repeat(t["swir16"], 2, 0), 2, 1))  # not nearest
    # SCL 20 m -> 10 m with nearest: each class pixel becomes a 2x2 block, values untouched
    assert scene.qa.dtype == np.uint8 and scene.qa.shape == (N, N)
    np.testing.assert_array_equal(scene.qa, np.repeat(np.repeat(t["scl"], 2, 0), 2, 1))
    assert scene.grid == src.grid("31UFU") and scene.nodata == 0


@pytest.mark.parametrize("workers", [1, 3])
def test_strip_reads_are_seamless(tile_dir, tmp_path, monkeypatch, workers):
    """Many small strips (and threads) give exactly the one-read result, 20 m bilinear too."""
    import clay_core.sources.grid_read as grid_read

    _, truth = tile_dir
    t = truth["20230105"]
    for b in ("blue", "nir", "swir16", "scl"):
        write_cog(tmp_path / f"31UFU_20230105_{b}.tif", t[b], CRS, T10 if t[b].shape[0] == N else T20, blocksize=64)
    write_cog(tmp_path / "m" / "31UFU_20230105.tif", np.stack([t["blue"], t["nir"]]), CRS, T10, blocksize=64)
    ref = LocalRasterSource(str(tmp_path)).list_scenes("31UFU", datetime(2023, 1, 1), datetime(2024, 1, 1))[0]
    one = LocalRasterSource(str(tmp_path), max_workers=1).load_scene(ref, ["blue", "swir16"])  # one strip each
    calls = []
    real = grid_read._read_strips
    monkeypatch.setattr(grid_read, "_read_strips", lambda *a: calls.append(a) or real(*a))
    monkeypatch.setattr(grid_read, "STRIP_ROWS", 48)  # 64-row strips at 10 m, 64 source rows (128 px) at 20 m
    many = LocalRasterSource(str(tmp_path), max_workers=workers).load_scene(ref, ["blue", "swir16"])
    np.testing.assert_array_equal(many.data[0], t["blue"])
    np.testing.assert_array_equal(many.data, one.data)  # bilinear seams: neighbours across strips used
    np.testing.assert_array_equal(many.qa, one.qa)
    src = LocalRasterSource(str(tmp_path / "m"), pattern="{tile}_{date}.tif", band_names=["blue", "nir"],
                            qa_band=None, max_workers=workers)  # fmt: skip
    (mref,) = src.list_scenes("31UFU", datetime(2023, 1, 1), datetime(2024, 1, 1))
    np.testing.assert_array_equal(src.load_scene(mref, ["nir", "blue"]).data, np.stack([t["nir"], t["blue"]]))
    assert calls  # the strip path ran


def test_second_date_with_band_names_in_files(tile_dir):
    root, truth = tile_dir
    src = LocalRasterSource(str(root))
    ref = src.list_scenes("31UFU", datetime(2023, 2, 1), datetime(2023, 3, 1))[0]
    scene = src.load_scene(ref, ["nir"])
    np.testing.assert_array_equal(scene.data[0], truth["2023-02-10"]["nir"])


def test_multiband_files_with_band_names_and_descriptions(tmp_path):
    rng = np.random.default_rng(5)
    data = rng.integers(1, 9000, (4, 128, 128), dtype=np.uint16)
    scl = rng.integers(0, 12, (128, 128)).astype(np.uint16)
    stack = np.concatenate([data, scl[None]])
    write_cog(tmp_path / "T31UFU" / "2023-06-01T10:30:21Z.tif", stack, CRS, T10)
    src = LocalRasterSource(
        str(tmp_path), pattern="T{tile}/{date}.tif", band_names=["blue", "green", "red", "nir", "scl"]
    )
    (ref,) = src.list_scenes("31UFU", datetime(2023, 6, 1), datetime(2023, 6, 2))
    assert ref.datetime == datetime(2023, 6, 1, 10, 30, 21, tzinfo=UTC)
    scene = src.load_scene(ref, ["nir", "blue"])
    np.testing.assert_array_equal(scene.data, data[[3, 0]])
    np.testing.assert_array_equal(scene.qa, scl.astype(np.uint8))
    # without band_names the band descriptions name the bands (S2 ids are aliased)
    write_cog(tmp_path / "d" / "31UFU_20230601.tif", stack, CRS, T10, descriptions=["B02", "B03", "B04", "B08", "SCL"])
    src2 = LocalRasterSource(str(tmp_path / "d"), pattern="{tile}_{date}.tif")
    (ref2,) = src2.list_scenes("31UFU", datetime(2023, 1, 1), datetime(2024, 1, 1))
    np.testing.assert_array_equal(src2.load_scene(ref2, ["red"]).data[0], data[2])
    with pytest.raises(SceneError, match="swir16"):
        src2.load_scene(ref2, ["swir16"])


def test_missing_band_names_band_scene_and_files(tile_dir, tmp_path):
    root, _ = tile_dir
    src = LocalRasterSource(str(root))
    ref = src.list_scenes("31UFU", datetime(2023, 1, 1), datetime(2023, 1, 6))[0]
    with pytest.raises(SceneError) as ei:
        src.load_scene(ref, ["blue", "rededge1"])
    msg = str(ei.value)
    assert "rededge1" in msg and "31UFU_20230105" in msg and "31UFU_20230105_B02.tif" in msg
    # a missing QA band is named as such
    write_cog(tmp_path / "31UFU_20230105_blue.tif", np.ones((32, 32), np.uint16), CRS, T10)
    s2 = LocalRasterSource(str(tmp_path))
    (r2,) = s2.list_scenes("31UFU", datetime(2023, 1, 1), datetime(2024, 1, 1))
    with pytest.raises(SceneError, match="QA band 'scl'"):
        s2.load_scene(r2, ["blue"])
    # ... unless the source has no QA band: then qa is synthesised (7 = unclassified)
    scene = LocalRasterSource(str(tmp_path), qa_band=None).load_scene(r2, ["blue"])
    assert (scene.qa == 7).all()


def test_truncated_and_corrupt_files_name_the_file(tmp_path):
    rng = np.random.default_rng(3)
    for b in ("blue", "scl"):
        write_cog(tmp_path / f"31UFU_20230105_{b}.tif", rng.integers(1, 9000, (N, N), dtype=np.uint16), CRS, T10)
    bad = tmp_path / "31UFU_20230105_blue.tif"
    raw = bad.read_bytes()
    bad.write_bytes(raw[: len(raw) // 2])  # header intact, tiles cut off
    src = LocalRasterSource(str(tmp_path))
    (ref,) = src.list_scenes("31UFU", datetime(2023, 1, 1), datetime(2024, 1, 1))
    with pytest.raises(SceneError) as ei:
        src.load_scene(ref, ["blue"])
    assert str(bad) in str(ei.value)
    # not a TIFF at all: fails already when the grid is taken from it
    bad.write_bytes(b"II*\x00garbage" + bytes(100))
    with pytest.raises(SceneError) as ei:
        LocalRasterSource(str(tmp_path)).grid("31UFU")
    assert str(bad) in str(ei.value)


def test_unexpected_crs_is_refused(tmp_path):
    data = np.ones((64, 64), np.uint16)
    for b in ("blue", "scl"):
        write_cog(tmp_path / f"31UFU_20230105_{b}.tif", data, CRS, T10)
        write_cog(tmp_path / f"31UFU_20230115_{b}.tif", data, "EPSG:32632", T10)
    src = LocalRasterSource(str(tmp_path))
    refs = src.list_scenes("31UFU", datetime(2023, 1, 1), datetime(2024, 1, 1))
    assert src.load_scene(refs[0], ["blue"]).data.shape == (1, 64, 64)
    with pytest.raises(SceneError) as ei:
        src.load_scene(refs[1], ["blue"])
    assert "EPSG:32632" in str(ei.value) and "EPSG:32631" in str(ei.value)


def test_all_nodata_scene_loads(tmp_path):
    for b in ("blue", "red"):
        write_cog(tmp_path / f"31UFU_20230105_{b}.tif", np.zeros((N, N), np.uint16), CRS, T10)
    write_cog(tmp_path / "31UFU_20230105_scl.tif", np.zeros((N // 2, N // 2), np.uint8), CRS, T20)
    src = LocalRasterSource(str(tmp_path))
    (ref,) = src.list_scenes("31UFU", datetime(2023, 1, 1), datetime(2024, 1, 1))
    scene = src.load_scene(ref, ["red", "blue"])
    assert scene.data.shape == (2, N, N) and not scene.data.any() and not scene.qa.any()


def test_partial_and_misaligned_coverage_is_filled(tmp_path):
    # explicit grid larger than the files; one file half a pixel off the grid
    grid = {"crs": CRS, "transform": list(T10)[:6], "height": 128, "width": 128}
    blue = np.full((64, 64), 500, np.uint16)
    write_cog(tmp_path / "31UFU_20230105_blue.tif", blue, CRS, from_origin(X0 + 320, Y0 - 320, 10, 10))
    write_cog(tmp_path / "31UFU_20230105_red.tif", blue, CRS, from_origin(X0 + 5, Y0, 10, 10))
    write_cog(tmp_path / "31UFU_20230105_scl.tif", np.full((64, 64), 4, np.uint8), CRS, T20)
    src = LocalRasterSource(str(tmp_path), grids={"*": grid})
    assert src.grid("31UFU").transform == T10
    (ref,) = src.list_scenes("31UFU", datetime(2023, 1, 1), datetime(2024, 1, 1))
    scene = src.load_scene(ref, ["blue", "red"])
    b, r = scene.data
    assert (b[32:96, 32:96] == 500).all() and b.sum() == 500 * 64 * 64
    # red covers x in [X0+5, X0+645): grid columns whose centre is inside: 0..63 (centre 645 is out)
    assert (r[:64, :64] == 500).all() and (r[64:] == 0).all() and (r[:, 64:] == 0).all()
    assert (scene.qa == 4).all()


def test_landsat_qa_format(tmp_path):
    qa = np.array([[1, 1 << 3, 1 << 4, 1 << 6], [1 << 1, 1 << 2, (1 << 7) | (1 << 6), (1 << 3) | (1 << 4)]], np.uint16)
    write_cog(tmp_path / "044034_20230105_red.tif", np.ones((2, 4), np.uint16), "EPSG:32610", from_origin(0, 0, 30, 30))
    write_cog(tmp_path / "044034_20230105_qa_pixel.tif", qa, "EPSG:32610", from_origin(0, 0, 30, 30), nodata=None)
    src = LocalRasterSource(str(tmp_path), platform="landsat-c2l2-sr", qa_band="qa_pixel", qa_format="landsat_qa_pixel")
    (ref,) = src.list_scenes("044034", datetime(2023, 1, 1), datetime(2024, 1, 1))
    scene = src.load_scene(ref, ["red"])
    np.testing.assert_array_equal(scene.qa, landsat_qa_to_scl(qa))
    np.testing.assert_array_equal(scene.qa, [[0, 9, 3, 4], [8, 10, 6, 9]])


def test_pattern_and_date_parsing():
    assert parse_date("20230105") == datetime(2023, 1, 5, tzinfo=UTC)
    assert parse_date("2023-01-05T10:30:00+02:00") == datetime(2023, 1, 5, 8, 30, tzinfo=UTC)
    assert parse_date("20230105T103000") == datetime(2023, 1, 5, 10, 30, tzinfo=UTC)
    m = pattern_regex("{tile}_{date}_{band}.tif").match("31UFU_2023-01-05_B8A.tif")
    assert m and (m["tile"], m["date"], m["band"]) == ("31UFU", "2023-01-05", "B8A")
    # no {date} / {tile}: the TIFF tags and the footprint say them (test_plain_rasters.py)
    assert set(pattern_regex("{tile}_{band}.tif").groupindex) == {"tile", "band"}
    assert set(pattern_regex("*.tif").groupindex) == set()
    with pytest.raises(ConfigError, match="unknown field"):
        pattern_regex("{tile}_{date}_{sensor}.tif")
    with pytest.raises(ConfigError, match="not a directory"):
        LocalRasterSource("/nonexistent/clay").list_scenes("31UFU", datetime(2023, 1, 1), datetime(2024, 1, 1))


def test_rasterio_reads_what_was_written(tile_dir):
    # guard for the fixture itself: tiled, compressed, with overviews
    root, _ = tile_dir
    with rasterio.open(root / "31UFU_20230105_B02.tif") as ds:
        assert ds.profile["tiled"] and ds.compression is not None and ds.overviews(1)


def test_synthetic_qa_marks_pixels_empty_in_every_band():
    from clay_core.sources.qa import synthetic_qa

    data = np.ones((2, 600, 3), np.uint16)
    data[:, 0] = 0
    data[:, 599, 1] = 0
    data[0, 1] = 0  # only one band empty: still data
    qa = synthetic_qa(data, 0)
    assert qa.dtype == np.uint8 and (qa[0] == 0).all() and qa[599, 1] == 0
    assert (qa[1] == 7).all() and qa[599, 0] == 7 and int((qa == 0).sum()) == 4

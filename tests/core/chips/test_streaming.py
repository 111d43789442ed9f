"""Chipping while streaming from files: ``chip_source_scene`` -> ``LocalRasterSource.chip_reader``
-> ``chip_raster_strips`` against ``chip_scene(load_scene())`` on real tiled GeoTIFFs (exact
windows, 20 m bilinear and nearest bands, partial coverage, threads, chips skipped by QA).
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd
import pytest
from rasterio.transform import from_origin

from clay_core.chips import ChipParams, ChipSet, chip_raster_strips, chip_scene, chip_source_scene
from clay_core.errors import ConfigError
from clay_core.sources.local import LocalRasterSource
from tests.core.chips.reference import (
    CRS, REF, X0, Y0, assert_matches_reference, make_scene, naive_chips, random_scene,
)  # fmt: skip
from tests.support.servers import write_cog

# --------------------------------------------------------------------------- streaming from files

N10 = 7 * 32 + 5  # 10 m pixels per side: 7 chips of 32 and a ragged edge
T10 = from_origin(X0, Y0, 10, 10)
T20 = from_origin(X0, Y0, 20, 20)


@pytest.fixture(scope="module")
def per_band_dir(tmp_path_factory):
    """S2-like files, one per band: 10 m bands on the grid (read chip by chip), a 20 m band
    (bilinear) and a 20 m SCL (nearest) with clouds and a nodata swath edge, 64 px blocks."""
    root = tmp_path_factory.mktemp("chips-per-band")
    rng = np.random.default_rng(11)
    yy, xx = np.mgrid[0:N10, 0:N10]
    edge = xx + yy < 90  # swath edge: every band 0 there
    for b in ("B02", "B03", "B04"):
        a = rng.integers(1, 12000, (N10, N10)).astype(np.uint16)
        a[edge] = 0
        write_cog(root / f"31UFU_20230105_{b}.tif", a, CRS, T10, blocksize=64)
    n20 = (N10 + 1) // 2
    sw = (1000 + 8 * np.arange(n20)[None, :] + 4 * np.arange(n20)[:, None]).astype(np.uint16)
    write_cog(root / "31UFU_20230105_B11.tif", sw, CRS, T20, blocksize=64)
    scl = np.full((n20, n20), 4, np.uint8)
    scl[10:40, 60:100] = 9
    scl[70:90, 5:30] = 8
    scl[(np.arange(n20)[None, :] + np.arange(n20)[:, None]) < 45] = 0
    scl[rng.random((n20, n20)) < 0.03] = 3
    write_cog(root / "31UFU_20230105_SCL.tif", scl, CRS, T20, blocksize=64)
    return root


def assert_same_chips(a: ChipSet, b: ChipSet) -> None:
    assert a.bands == b.bands and a.dropped == b.dropped
    assert a.pixels.dtype == b.pixels.dtype and a.pixels.shape == b.pixels.shape
    np.testing.assert_array_equal(a.pixels, b.pixels)
    pd.testing.assert_frame_equal(a.meta, b.meta)


@pytest.mark.parametrize("workers", [1, 3])
def test_stream_equals_load_scene_then_chip_scene_per_band_files(per_band_dir, workers):
    src = LocalRasterSource(str(per_band_dir), max_workers=workers)
    (ref,) = src.list_scenes("31UFU", datetime(2023, 1, 1), datetime(2024, 1, 1))
    bands = ["red", "swir16", "blue", "green"]
    p = ChipParams(chip_size=32, max_cloud=0.2, max_nodata=0.1)
    scene = src.load_scene(ref, bands)
    expected = chip_scene(scene, p)
    ref_chips = naive_chips(scene.data, scene.qa, 0, scene.grid, p)
    assert ref_chips["kept"] and ref_chips["dropped"]["cloudy"] and ref_chips["dropped"]["nodata"]
    assert_matches_reference(expected, ref_chips, ref)
    reader = src.chip_reader(ref, bands, 32, workers=workers)
    assert reader.direct == [True, False, True, True]  # 10 m windows; 20 m through read_to_grid
    assert reader.unit_rows == 2  # 64 px blocks / 32 px chips: no block decoded twice
    assert_same_chips(chip_raster_strips(reader, ref, p), expected)
    assert_same_chips(chip_source_scene(src, ref, bands, p), expected)


def test_stream_skips_chips_whose_qa_is_nodata(per_band_dir, monkeypatch):
    import clay_core.sources.chip_reader as chip_reader

    src = LocalRasterSource(str(per_band_dir), max_workers=1)
    (ref,) = src.list_scenes("31UFU", datetime(2023, 1, 1), datetime(2024, 1, 1))
    p = ChipParams(chip_size=32, max_cloud=1.0, max_nodata=0.1)
    expected = chip_scene(src.load_scene(ref, ["blue"]), p)
    reads = []
    real = chip_reader.ChipRowReader._read_direct

    def spy(self, src_, o, view, r0, r1, need):
        reads.append(np.ones((r1 - r0, self.n_cols), bool) if need is None else need.copy())
        return real(self, src_, o, view, r0, r1, need)

    monkeypatch.setattr(chip_reader.ChipRowReader, "_read_direct", spy)
    got = chip_source_scene(src, ref, ["blue"], p)
    assert_same_chips(got, expected)
    n_read = int(sum(r.sum() for r in reads))
    assert 0 < n_read < 49 and expected.dropped["nodata"] >= 49 - n_read > 0


def test_stream_multiband_synthetic_qa_and_partial_grid(tmp_path):
    rng = np.random.default_rng(5)
    data = rng.integers(1, 9000, (3, 150, 170)).astype(np.uint16)
    data[:, :40, :50] = 0  # empty in every band
    data[1, 60:, 100:] = 0  # empty in one band only
    write_cog(tmp_path / "m" / "31UFU_20230105.tif", data, CRS, T10, blocksize=32, descriptions=["B02", "B03", "B04"])
    write_cog(tmp_path / "o" / "31UFU_20230105.tif", data, CRS, from_origin(X0 + 64 * 10, Y0 - 32 * 10, 10, 10),
              blocksize=32, descriptions=["B02", "B03", "B04"])  # fmt: skip
    grid = {"crs": CRS, "transform": list(T10)[:6], "height": 200, "width": 250}
    for sub, kw in (("m", {}), ("o", {"grids": {"*": grid}})):  # exact grid / grid larger than the file
        src = LocalRasterSource(str(tmp_path / sub), pattern="{tile}_{date}.tif", qa_band=None, max_workers=2, **kw)
        (ref,) = src.list_scenes("31UFU", datetime(2023, 1, 1), datetime(2024, 1, 1))
        for p in (ChipParams(chip_size=16, max_cloud=0.0, max_nodata=0.3),
                  ChipParams(chip_size=16, max_cloud=0.5, max_nodata=0.9, cloud_classes=(7,)),  # synthetic 7 = cloud
                  ChipParams(chip_size=24, max_cloud=1.0, max_nodata=0.0, nodata_classes=())):  # fmt: skip
            scene = src.load_scene(ref, ["green", "blue"])
            expected = chip_scene(scene, p)
            assert_matches_reference(expected, naive_chips(scene.data, scene.qa, 0, scene.grid, p), ref)
            reader = src.chip_reader(ref, ["green", "blue"], p.chip_size)
            assert reader.direct == [sub == "m"]
            assert_same_chips(chip_raster_strips(reader, ref, p), expected)
        assert expected.dropped["nodata"] > 0 and len(expected) > 0


def test_chip_source_scene_without_chip_reader_and_too_small():
    data, qa = random_scene(3, 16)

    class Plain:  # a source with load_scene only
        def load_scene(self, ref, bands):
            return make_scene(data, qa, ref=ref)

    p = ChipParams(chip_size=16, max_cloud=0.2, max_nodata=0.1)
    assert_same_chips(chip_source_scene(Plain(), REF, ["b0", "b1", "b2"], p), chip_scene(make_scene(data, qa), p))


def test_stream_too_small_scene_is_a_config_error(tmp_path):
    write_cog(tmp_path / "31UFU_20230105.tif", np.ones((2, 20, 20), np.uint16), CRS, T10)
    src = LocalRasterSource(str(tmp_path), pattern="{tile}_{date}.tif", band_names=["a", "b"], qa_band=None)
    (ref,) = src.list_scenes("31UFU", datetime(2023, 1, 1), datetime(2024, 1, 1))
    with pytest.raises(ConfigError, match="larger than scene"):
        chip_source_scene(src, ref, ["a"], ChipParams(chip_size=32))


def test_stream_multiband_with_qa_band_reads_chips_at_the_nodata_threshold(tmp_path, monkeypatch):
    """QA in the same file: a chip whose QA nodata is exactly max_nodata is read and kept, one
    pixel more and it is dropped without being read."""
    import clay_core.sources.chip_reader as chip_reader

    rng = np.random.default_rng(21)
    cs = 16
    data = rng.integers(1, 9000, (3, 3 * cs, 4 * cs)).astype(np.uint16)
    scl = np.full((3 * cs, 4 * cs), 4, np.uint8)
    scl[0:2, 0:cs] = 0  # chip (0, 0): 32 / 256 = 0.125 -> kept at max_nodata=0.125
    scl[0:2, cs : 2 * cs] = 0
    scl[2, cs] = 0  # chip (0, 1): 33 / 256 -> dropped, never read
    scl[cs : 2 * cs, 2 * cs : 3 * cs] = 9  # chip (1, 2): cloudy -> read (its nodata decides the reason)
    stack = np.concatenate([data, scl[None].astype(np.uint16)])
    write_cog(tmp_path / "31UFU_20230105.tif", stack, CRS, T10, blocksize=16,
              descriptions=["B02", "B03", "B04", "SCL"], nodata=None)  # fmt: skip
    src = LocalRasterSource(str(tmp_path), pattern="{tile}_{date}.tif", max_workers=1)
    (ref,) = src.list_scenes("31UFU", datetime(2023, 1, 1), datetime(2024, 1, 1))
    p = ChipParams(chip_size=cs, max_cloud=0.2, max_nodata=0.125)
    scene = src.load_scene(ref, ["blue", "red"])
    expected = chip_scene(scene, p)
    assert_matches_reference(expected, naive_chips(scene.data, scene.qa, 0, scene.grid, p), ref)
    assert (0, 0) in set(zip(expected.meta["row"], expected.meta["col"]))
    assert expected.dropped == {"cloudy": 1, "nodata": 1}
    read = []
    real = chip_reader.ChipRowReader._read_direct
    monkeypatch.setattr(chip_reader.ChipRowReader, "_read_direct",
                        lambda self, s, o, v, r0, r1, need: read.append((r0, need)) or real(self, s, o, v, r0, r1, need))  # fmt: skip
    assert_same_chips(chip_source_scene(src, ref, ["blue", "red"], p), expected)
    needs = {r0: need for r0, need in read}
    assert needs[0] is not None and needs[0][0].tolist() == [True, False, True, True]

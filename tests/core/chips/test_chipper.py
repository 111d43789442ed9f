"""The chipper against a naive per-chip reference implementation (loops, one chip at a time).

Random scenes with cloud / nodata patches, pixels that are nodata in only some bands, chips
exactly at the thresholds, odd QA dtypes, grids with other origins and resolutions.
"""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine

from clay_core.chips import ChipParams, ChipSet, chip_scene
from clay_core.chips import chipper as chipper_mod
from clay_core.chips import chipset as chipset_mod
from clay_core.errors import ConfigError
from clay_core.types import Scene, TileGrid
from tests.core.chips.reference import CRS, REF, assert_matches_reference, make_scene, naive_chips, random_scene


@pytest.mark.parametrize(
    "seed,params",
    [
        (0, ChipParams(chip_size=16, max_cloud=0.2, max_nodata=0.1)),
        (1, ChipParams(chip_size=32, max_cloud=0.3, max_nodata=0.05)),
        (2, ChipParams(chip_size=16, max_cloud=0.5, max_nodata=0.2, cloud_classes=(8, 9), nodata_classes=(0, 1))),
        (3, ChipParams(chip_size=24, max_cloud=0.1, max_nodata=0.1)),
    ],
)
def test_chip_scene_matches_naive_reference(seed, params):
    data, qa = random_scene(seed, params.chip_size)
    scene = make_scene(data, qa)
    ref = naive_chips(data, qa, 0, scene.grid, params)
    # the scene exercises every branch, so a wrong filter cannot pass
    assert ref["kept"] and ref["dropped"]["cloudy"] and ref["dropped"]["nodata"], ref["dropped"]
    out = chip_scene(scene, params)
    assert_matches_reference(out, ref)
    assert out.pixels.dtype == np.uint16 and out.pixels.flags.c_contiguous
    assert out.bands == scene.bands


def test_thresholds_are_inclusive_and_fractions_exact():
    cs, n = 16, 256
    data = np.full((2, cs, 4 * cs), 500, np.uint16)
    qa = np.full((cs, 4 * cs), 4, np.uint8)
    chip0 = np.full(n, 4, np.uint8)
    chip0[:64] = 9  # exactly 0.25 cloud -> kept at max_cloud=0.25
    qa[:, 0:cs] = chip0.reshape(cs, cs)
    chip1 = np.full(n, 4, np.uint8)
    chip1[:65] = 8  # 65/256 > 0.25 -> cloudy
    qa[:, cs : 2 * cs] = chip1.reshape(cs, cs)
    data[:, :2, 2 * cs : 3 * cs] = 0  # 32/256 = 0.125 all-band nodata -> kept at max_nodata=0.125
    data[:, :3, 3 * cs : 4 * cs] = 0  # 48/256 > 0.125 -> nodata
    p = ChipParams(chip_size=cs, max_cloud=0.25, max_nodata=0.125)
    out = chip_scene(make_scene(data, qa), p)
    assert list(out.meta["col"]) == [0, 2]
    assert out.dropped == {"cloudy": 1, "nodata": 1}
    assert list(out.meta["cloud_fraction"]) == [0.25, 0.0]
    assert list(out.meta["nodata_fraction"]) == [0.0, 0.125]


def test_cloudy_and_empty_chip_counts_as_nodata_and_one_band_zeros_do_not():
    cs = 8
    data = np.full((3, cs, 3 * cs), 7, np.uint16)
    qa = np.full((cs, 3 * cs), 4, np.uint8)
    qa[:, :cs] = 9  # all cloud ...
    data[:, :, :cs] = 0  # ... and all empty: dropped as nodata, not cloudy
    data[1, :, cs : 2 * cs] = 0  # empty in one band only: a valid chip
    data[:, :, 2 * cs :] = 0
    qa[:, 2 * cs :] = 0  # QA nodata
    out = chip_scene(make_scene(data, qa), ChipParams(chip_size=cs, max_cloud=0.5, max_nodata=0.5))
    assert list(out.meta["col"]) == [1] and out.dropped == {"cloudy": 0, "nodata": 2}
    assert out.meta["nodata_fraction"].iloc[0] == 0.0


@pytest.mark.parametrize("qa_dtype", [np.int16, np.uint16, np.float32])
def test_other_qa_dtypes_and_classes_outside_uint8(qa_dtype):
    data, qa = random_scene(7, 16)
    qa = qa.astype(qa_dtype)
    if qa_dtype is np.int16:
        qa[qa == 6] = -3
    if qa_dtype is np.uint16:
        qa[qa == 6] = 300
    p = ChipParams(chip_size=16, max_cloud=0.2, max_nodata=0.1, cloud_classes=(1, 3, 8, 9, 10, 300, -3))
    scene = make_scene(data, qa)
    assert_matches_reference(chip_scene(scene, p), naive_chips(data, qa, 0, scene.grid, p))


def test_many_scattered_classes_use_the_lookup_table():
    data, qa = random_scene(8, 16)
    rng = np.random.default_rng(8)
    qa[rng.random(qa.shape) < 0.1] = 200
    qa[rng.random(qa.shape) < 0.05] = 14
    qa[16:48, 16:40] = 200
    classes = (1, 3, 5, 8, 10, 12, 14, 200)  # 8 runs: the 256-entry lookup table path
    p = ChipParams(chip_size=16, max_cloud=0.6, max_nodata=0.1, cloud_classes=classes)
    assert len(chipper_mod._ClassCounter(classes).runs) > 6
    scene = make_scene(data, qa)
    ref = naive_chips(data, qa, 0, scene.grid, p)
    assert ref["kept"] and ref["dropped"]["cloudy"]
    assert_matches_reference(chip_scene(scene, p), ref)


@pytest.mark.parametrize("nodata", [5, None, -1])
def test_other_nodata_values(nodata):
    data, qa = random_scene(9, 16, nodata=5 if nodata == 5 else 0)
    scene = make_scene(data, qa, nodata=nodata)
    p = ChipParams(chip_size=16, max_cloud=0.3, max_nodata=0.1)
    ref = naive_chips(data, qa, nodata, scene.grid, p)
    assert_matches_reference(chip_scene(scene, p), ref)


def test_no_chip_kept_and_too_small_scene():
    data = np.zeros((2, 32, 32), np.uint16)
    qa = np.zeros((32, 32), np.uint8)
    out = chip_scene(make_scene(data, qa), ChipParams(chip_size=16))
    assert len(out) == 0 and out.pixels.shape == (0, 2, 16, 16) and list(out.meta.columns) == list(chipset_mod._META_COLUMNS)
    assert out.dropped == {"cloudy": 0, "nodata": 4}
    with pytest.raises(ConfigError, match="larger than scene"):
        chip_scene(make_scene(data[:, :8], qa[:8]), ChipParams(chip_size=16))


def test_chipset_concat_keeps_order_and_counts():
    d1, q1 = random_scene(1, 16)
    d2, q2 = random_scene(2, 16)
    p = ChipParams(chip_size=16, max_cloud=0.3, max_nodata=0.1)
    a, b = chip_scene(make_scene(d1, q1), p), chip_scene(make_scene(d2, q2), p)
    c = ChipSet.concat([a, b], a.bands, 16)
    assert len(c) == len(a) + len(b)
    np.testing.assert_array_equal(c.pixels, np.concatenate([a.pixels, b.pixels]))
    assert c.dropped == {k: a.dropped[k] + b.dropped[k] for k in a.dropped}
    assert list(c.meta["chip_id"]) == list(a.meta["chip_id"]) + list(b.meta["chip_id"])
    assert len(ChipSet.concat([], ["x"], 16)) == 0


def test_affine_of_grid_is_used_for_bounds():
    # a grid with another origin and 20 m pixels: bounds follow the transform, not constants
    data, qa = random_scene(12, 16, nb=1)
    grid = TileGrid("31UFU", CRS, Affine(20, 0, 500000, 0, -20, 4000000), data.shape[1], data.shape[2])
    scene = Scene(REF, grid, ["b0"], data, qa, 0)
    p = ChipParams(chip_size=16, max_cloud=0.6, max_nodata=0.5)
    out = chip_scene(scene, p)
    assert_matches_reference(out, naive_chips(data, qa, 0, grid, p))
    r, c = int(out.meta["row"].iloc[0]), int(out.meta["col"].iloc[0])
    assert out.meta["x_min"].iloc[0] == 500000 + c * 16 * 20 and out.meta["y_max"].iloc[0] == 4000000 - r * 16 * 20


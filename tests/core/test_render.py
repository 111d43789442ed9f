"""What people look at: readable thumbnails, labelled mosaics, intensity maps with a legend."""

import io

import numpy as np
from PIL import Image

from clay_core.render import FLAG_COLOUR, intensity_map, mosaic, rgb_image, stretch_limits

BANDS = ["blue", "green", "red", "nir"]


def _dark_forest_chip(seed: int = 0) -> np.ndarray:
    """Reflectance x 10000 of a real dark forest chip: a few hundred DN in the visible bands."""
    rng = np.random.default_rng(seed)
    vis = rng.normal(350, 80, (3, 64, 64)).clip(50, 900)
    nir = rng.normal(2800, 300, (1, 64, 64))
    return np.concatenate([vis, nir]).astype(np.uint16)


def test_thumbnails_of_dark_scenes_are_stretched_not_black():
    chip = _dark_forest_chip()
    fixed = rgb_image(chip, BANDS, scale=3000.0)
    stretched = rgb_image(chip, BANDS)
    assert fixed.mean() < 40  # what a 0..3000 stretch made of real scenes
    assert stretched.mean() > 90 and stretched.std() > 30
    assert stretched.shape == (64, 64, 3) and stretched.dtype == np.uint8


def test_one_partition_stretch_keeps_dark_chips_darker_than_bright_ones():
    dark, bright = _dark_forest_chip(1), _dark_forest_chip(2)
    bright[:3] = (bright[:3] * 3).astype(np.uint16)  # bare soil: three times the reflectance
    limits = stretch_limits(np.stack([dark, bright]), BANDS)
    d, b = rgb_image(dark, BANDS, limits=limits), rgb_image(bright, BANDS, limits=limits)
    assert b.mean() > d.mean() + 60  # per-chip stretches would make both look alike
    assert abs(rgb_image(dark, BANDS).mean() - rgb_image(bright, BANDS).mean()) < 15


def test_stretch_survives_a_constant_or_empty_chip():
    flat = np.full((4, 16, 16), 500, np.uint16)
    assert rgb_image(flat, BANDS).shape == (16, 16, 3)
    assert rgb_image(np.zeros((4, 16, 16), np.uint16), BANDS).max() == 0


def test_mosaic_tiles_are_large_and_labelled():
    ims = [rgb_image(_dark_forest_chip(i), BANDS, size=32) for i in range(10)]
    labels = [f"31UFU_r00{i}c000\ncloud 0.0{i}" for i in range(10)]
    bare = mosaic(ims, columns=5)
    out = mosaic(ims, columns=5, labels=labels)
    assert bare.shape[0] >= 2 * 96 and bare.shape[1] >= 5 * 96  # 32 px chips enlarged to >= 96 px
    assert out.shape[0] > bare.shape[0]  # room for two text lines under every row
    text_band = out[2 + 96 : 2 + 96 + 20, 2 : 2 + 96]
    assert (text_band > 200).any()  # light text on the dark background


def test_intensity_map_has_a_colour_bar_legend_and_marks_flags():
    rows, cols = np.repeat(np.arange(4), 4), np.tile(np.arange(4), 4)
    score = np.linspace(0, 12, 16)
    flag = score > 9
    png = intensity_map(rows, cols, score, flag, chip_m=2560.0, title="31UFU 2024-01-29")
    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    assert img.shape[0] >= 300 and img.shape[1] >= 400  # not a 64 px postage stamp
    cyan = np.array([int(FLAG_COLOUR[i : i + 2], 16) for i in (1, 3, 5)])
    assert (np.abs(img.astype(int) - cyan).sum(axis=2) < 40).sum() > 50  # flagged outlines and legend
    no_flags = np.asarray(Image.open(io.BytesIO(intensity_map(rows, cols, score, flag & False))).convert("RGB"))
    assert (np.abs(no_flags.astype(int) - cyan).sum(axis=2) < 40).sum() < (np.abs(img.astype(int) - cyan).sum(axis=2) < 40).sum()

"""The embeddings stage refuses damaged input before it replaces anything: a chip read as all
zeros, embeddings that are not finite, two chips with the same embedding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clay_core.chips import ChipParams, make_chip_cube, open_cube
from clay_core.encoder import LoadedEncoder, build_encoder, embed_partition, read_observations
from clay_core.sources import SyntheticSceneSource, SyntheticWorld, record_partition_scenes
from clay_core.storage import CHIPS, DamagedDataError, Layout
from clay_core.types import PartitionId

SOURCE = SyntheticSceneSource(SyntheticWorld(tiles=("31UFU",), size=64, seed=1, revisit_days=3))
PID = PartitionId("2024-01-08", "31UFU")


@pytest.fixture()
def chips(tmp_path):
    layout = Layout(tmp_path)
    record_partition_scenes(layout, PID, SOURCE)
    make_chip_cube(layout, PID, SOURCE, ChipParams(chip_size=16, max_cloud=0.5, max_nodata=0.1),
                   ["blue", "green", "red", "nir"])
    return layout


def _cube(layout: Layout):
    return open_cube(layout.partition_dir(CHIPS, PID) / "cube.zarr")


def _embed(layout: Layout, model: LoadedEncoder, opener=None):
    return embed_partition(layout, PID, model, open_cube=opener or (lambda t, w: _cube(layout)),
                           platform=SOURCE.platform, batch_size=4)


def _model() -> LoadedEncoder:
    return LoadedEncoder(build_encoder("tiny", seed=0), "cpu", "tiny-seed0", "tiny", None)


def _kept(layout: Layout, before) -> None:
    after = read_observations(layout.partition("embeddings", PID.tile, PID.window) / "embeddings.zarr")
    np.testing.assert_array_equal(after.vectors, before.vectors)


def test_nan_embeddings_fail_the_partition_and_keep_the_previous_one(chips):
    good = _embed(chips, _model())
    assert good.chips > 2 and good.finite
    before = read_observations(good.store)
    broken = _model()
    with torch.no_grad():
        next(broken.encoder.parameters()).fill_(float("nan"))
    with pytest.raises(DamagedDataError, match=rf"embeddings of {PID.key}: {good.chips} of {good.chips} "
                                               r"embeddings are not finite"):
        _embed(chips, broken)
    _kept(chips, before)


def test_a_chip_read_as_all_zeros_is_refused(chips):
    before = read_observations(_embed(chips, _model()).store)

    def zeroed(tile, window):
        ds = _cube(chips).load()
        ds["pixels"][1] = 0  # what zarr returns for a lost chunk
        return ds

    chip = str(_cube(chips)["chip_id"].values[1])
    with pytest.raises(DamagedDataError, match=rf"1 chip\(s\) read as all zeros, e.g. \['{chip}'\]"):
        _embed(chips, _model(), zeroed)
    _kept(chips, before)


def test_two_chips_with_the_same_embedding_are_refused(chips):
    before = read_observations(_embed(chips, _model()).store)

    def doubled(tile, window):
        # chip 1 is read as chip 0's data (pixels, time and place): a broken read
        ds = _cube(chips).load()
        for name in ["pixels", "datetime", "lat", "lon"]:
            ds[name][1] = ds[name][0].values
        return ds

    ids = [str(c) for c in _cube(chips)["chip_id"].values[:2]]
    with pytest.raises(DamagedDataError, match=rf"1 embeddings duplicate another chip's exactly, e.g. \{ids}"):
        _embed(chips, _model(), doubled)
    _kept(chips, before)

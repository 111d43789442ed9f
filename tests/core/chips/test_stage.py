"""The chip_cubes stage: a partition's scenes -> cube, index, thumbnails, mosaic, manifest."""

from __future__ import annotations

from datetime import date

import geopandas as gpd
import numpy as np

from clay_core.chips import ChipParams, make_chip_cube, open_cube
from clay_core.sources import SyntheticSceneSource, SyntheticWorld, record_partition_scenes
from clay_core.storage import CHIPS, Layout, read_manifest
from clay_core.types import PartitionId

SOURCE = SyntheticSceneSource(SyntheticWorld(tiles=("31UFU",), size=64, seed=1, revisit_days=3))
PARAMS = ChipParams(chip_size=16, max_cloud=0.5, max_nodata=0.1)
BANDS = ["blue", "green", "red", "nir"]


def test_make_chip_cube_writes_the_partition(tmp_path):
    layout = Layout(tmp_path)
    pid = PartitionId("2024-01-08", "31UFU")
    listing = record_partition_scenes(layout, pid, SOURCE)
    lines: list[str] = []
    res = make_chip_cube(layout, pid, SOURCE, PARAMS, BANDS, log=lines.append)
    d = layout.partition_dir(CHIPS, pid)
    assert res.directory == d and res.cube_uri == str(d / "cube.zarr") and res.chips > 0 and not res.empty
    assert res.scene_ids == listing.scene_ids and len(lines) == len(listing.refs)
    assert all(line.startswith(f"{s}: kept ") for line, s in zip(lines, res.scene_ids))
    man = read_manifest(d)
    assert man["chips"] == res.chips and man["cube_uri"] == "chips/31UFU/2024-01-08/cube.zarr" and man["bands"] == BANDS
    assert layout.locate(man["cube_uri"]) == res.cube_uri  # stored relative to the root
    assert man["scenes"] == len(listing.refs) and man["dropped"] == res.dropped
    cube = open_cube(res.cube_uri)
    assert cube.sizes["chip"] == res.chips
    np.testing.assert_array_equal(cube["cloud_fraction"].values, res.cloud_fraction)
    index = gpd.read_parquet(d / "index.parquet")
    assert len(index) == res.chips and (index["cube_uri"] == man["cube_uri"]).all()
    assert all((d / "thumbs" / p.rsplit("/", 1)[1]).is_file() for p in index["thumbnail"])
    assert (d / "mosaic.png").is_file() and len(res.thumbnails) == res.chips
    assert res.fractions_in_range(PARAMS)


def test_make_chip_cube_of_an_empty_window(tmp_path):
    layout = Layout(tmp_path)
    pid = PartitionId("2030-01-07", "31UFU")
    src = SyntheticSceneSource(SyntheticWorld(tiles=("31UFU",), size=64, until=date(2025, 1, 1)))
    record_partition_scenes(layout, pid, src)
    res = make_chip_cube(layout, pid, src, PARAMS, BANDS)
    assert res.empty and res.cube_uri is None and res.scene_ids == [] and res.fractions_in_range(PARAMS)
    man = read_manifest(layout.partition_dir(CHIPS, pid))
    assert man["chips"] == 0 and man["cube_uri"] is None
    assert sorted(p.name for p in layout.partition_dir(CHIPS, pid).iterdir()) == ["manifest.json"]

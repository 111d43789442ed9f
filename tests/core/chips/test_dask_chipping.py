"""Chipping on a real Dask cluster (a scheduler and two CPU workers, separate processes on
127.0.0.1): one task per scene, the same chip cube as chipping in this process, for the
synthetic source and for GeoTIFFs streamed chip row by chip row on the workers."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pytest
from rasterio.transform import from_origin

from clay_core.chips import ChipParams, make_chip_cube, open_cube
from clay_core.chips.stage import chip_scenes
from clay_core.dask_cluster import LoopbackCluster
from clay_core.sources import LocalRasterSource, SyntheticSceneSource, SyntheticWorld, record_partition_scenes
from clay_core.storage import Layout
from clay_core.types import PartitionId
from tests.core.chips.reference import CRS, X0, Y0
from tests.core.chips.test_streaming import assert_same_chips
from tests.support.servers import write_cog

BANDS = ["blue", "green", "red", "nir"]


@pytest.fixture(scope="module")
def cluster():
    with LoopbackCluster(2, memory_limit="1GiB") as c:
        yield c


def test_a_partition_chipped_on_the_cluster_is_the_same_cube(cluster, tmp_path):
    source = SyntheticSceneSource(SyntheticWorld(tiles=("31UFU",), size=64, seed=1, revisit_days=2))
    pid = PartitionId("2024-01-08", "31UFU")
    params = ChipParams(chip_size=16, max_cloud=0.5, max_nodata=0.1)
    cubes, logs = [], []
    for sub, address in (("local", None), ("dask", cluster.address)):
        layout = Layout(tmp_path / sub)
        listing = record_partition_scenes(layout, pid, source)
        lines: list[str] = []
        res = make_chip_cube(layout, pid, source, params, BANDS, log=lines.append, scheduler_address=address)
        cubes.append(open_cube(res.cube_uri).load())
        logs.append(sorted(lines))
    assert len(listing.refs) >= 3 and cubes[0].sizes["chip"] > 8  # several scenes: several tasks
    assert cubes[1].identical(cubes[0])  # pixels, chip ids, times, fractions, in the same order
    assert logs[1] == logs[0]  # one line per scene either way


def test_geotiffs_streamed_on_the_workers_give_the_same_chips(cluster, tmp_path):
    rng = np.random.default_rng(3)
    for day in ("20230105", "20230110"):
        for band in ("B02", "B03", "B04", "B08"):
            write_cog(tmp_path / f"31UFU_{day}_{band}.tif", rng.integers(1, 12000, (96, 96)).astype(np.uint16), CRS,
                      from_origin(X0, Y0, 10, 10), blocksize=32)  # fmt: skip
        scl = np.full((96, 96), 4, np.uint8)
        scl[:40, :40] = 9  # cloudy corner: dropped chips
        write_cog(tmp_path / f"31UFU_{day}_SCL.tif", scl, CRS, from_origin(X0, Y0, 10, 10), blocksize=32)
    source = LocalRasterSource(str(tmp_path), max_workers=1)
    refs = source.list_scenes("31UFU", datetime(2023, 1, 1), datetime(2024, 1, 1))
    params = ChipParams(chip_size=32, max_cloud=0.2, max_nodata=0.1)
    local = chip_scenes(source, refs, BANDS, params)
    remote = chip_scenes(source, refs, BANDS, params, scheduler_address=cluster.address)
    assert len(refs) == 2 and all(cs.dropped["cloudy"] for cs in local)
    for a, b in zip(remote, local, strict=True):
        assert_same_chips(a, b)

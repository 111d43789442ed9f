"""Damaged data is refused, not embedded, and a copied CLAY_HOME reads its own files.

Through real Dagster materializations: a deleted cube shard or a cube missing a band fails the
``embeddings`` partition with a message naming the file or the band, before anything is
replaced (the old embeddings and the old ``clay.chips`` rows stay); NaN embeddings in one
partition make ``pca`` skip that partition and fail only its ``change_scores``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import psycopg
import pytest
import xarray as xr
from dagster import AssetKey, materialize

from clay_assets.definitions import ALL_ASSETS, PER_SCENE_DOWNSTREAM, PER_SCENE_UPSTREAM, pca
from clay_assets.partitions import make_key
from clay_assets.resources import ClayHome
from clay_core.chips import open_cube, write_cube
from clay_core.encoder import read_observations
from clay_core.storage import read_manifest
from clay_core.types import PartitionId
from clay_core.vectordb.rows import partition_rows
from tests.support.pipeline import small_resources, small_source

TILE, WINDOW = "31UFU", "2024-01-01"
KEY = make_key(TILE, WINDOW)


def _graph(res: dict, instance, keys=(KEY,)) -> None:
    for key in keys:
        assert materialize(ALL_ASSETS, selection=PER_SCENE_UPSTREAM, partition_key=key, resources=res,
                           instance=instance).success
    assert materialize(ALL_ASSETS, selection=[pca], resources=res, instance=instance).success
    for key in keys:
        assert materialize(ALL_ASSETS, selection=PER_SCENE_DOWNSTREAM, partition_key=key, resources=res,
                           instance=instance).success


def _rows(pg_url: str) -> list[tuple]:
    with psycopg.connect(pg_url) as conn:
        return conn.execute("SELECT chip_id, acquired, embedding::text FROM clay.chips WHERE partition_key = %s "
                            "ORDER BY chip_id, acquired", (str(KEY),)).fetchall()


def _embeddings(home: ClayHome, window: str = WINDOW) -> np.ndarray:
    return read_observations(home.layout.partition("embeddings", TILE, window) / "embeddings.zarr").vectors


def _rerun_fails(res: dict, instance) -> str:
    """Re-run embeddings -> change scores -> vectors for KEY; it must fail. Returns the error."""
    r = materialize(ALL_ASSETS, selection=[*PER_SCENE_UPSTREAM[2:], *PER_SCENE_DOWNSTREAM], partition_key=KEY,
                    resources=res, instance=instance, raise_on_error=False)
    assert not r.success
    (failure,) = r.get_step_failure_events()
    assert failure.step_key == "embeddings"
    return str(failure.event_specific_data.error)


@pytest.fixture()
def built(tmp_path, pg_url, instance):
    res = small_resources(tmp_path / "clay", pg_url, source=small_source(tiles=[TILE]))
    _graph(res, instance)
    home = res["home"]
    rows = _rows(pg_url)
    assert rows
    return res, home, _embeddings(home), rows


def test_a_deleted_cube_shard_fails_embeddings_naming_the_file_and_keeps_the_old_data(built, pg_url, instance):
    res, home, before, rows = built
    cube = home.layout.partition("chips", TILE, WINDOW) / "cube.zarr"
    shard = cube / "pixels" / "c" / "0" / "0" / "0" / "0"
    shard.unlink()
    error = _rerun_fails(res, instance)
    assert "pixels/c/0/0/0/0 is missing" in error and str(cube) in error and "re-materialize chip_cubes" in error
    np.testing.assert_array_equal(_embeddings(home), before)
    assert _rows(pg_url) == rows


def test_a_cube_missing_a_band_fails_embeddings_naming_the_band_and_keeps_the_old_data(built, pg_url, instance):
    res, home, before, rows = built
    cube = home.layout.partition("chips", TILE, WINDOW) / "cube.zarr"
    ds = open_cube(cube).load()
    bands = [str(b) for b in ds["band"].values]
    write_cube(ds.isel(band=slice(0, len(bands) - 1)), cube)  # the last band lost
    error = _rerun_fails(res, instance)
    assert f"band(s) ['{bands[-1]}'] missing" in error and str(cube) in error
    np.testing.assert_array_equal(_embeddings(home), before)
    assert _rows(pg_url) == rows


def test_nan_embeddings_are_skipped_by_pca_and_fail_only_their_change_scores(tmp_path, pg_url, instance):
    res = small_resources(tmp_path / "clay", pg_url, source=small_source(tiles=[TILE]))
    keys = [make_key(TILE, w) for w in ["2024-01-01", "2024-01-08", "2024-01-15"]]
    _graph(res, instance, keys)
    layout = res["home"].layout
    # damage the middle window's stored embeddings after the fact (a bad disk, a bad copy)
    store = layout.partition("embeddings", TILE, "2024-01-08") / "embeddings.zarr"
    ds = xr.open_zarr(store, zarr_format=3, consolidated=False).load()
    ds["embedding"][0, 0] = np.nan
    ds.to_zarr(store, mode="a", zarr_format=3, consolidated=False)

    assert materialize(ALL_ASSETS, selection=[pca], resources=res, instance=instance).success
    md = instance.fetch_materializations(AssetKey("pca"), limit=1).records[0].asset_materialization.metadata
    assert md["skipped_partitions"].value == ["embeddings/31UFU/2024-01-08/embeddings.zarr"]
    assert md["partitions"].value == 2
    r = materialize(ALL_ASSETS, selection=["change_scores"], partition_key=keys[1], resources=res,
                    instance=instance, raise_on_error=False)
    assert not r.success
    error = str(r.get_step_failure_events()[0].event_specific_data.error)
    assert "embeddings of 31UFU 2024-01-08: 1 of" in error and "not finite" in error
    assert materialize(ALL_ASSETS, selection=["change_scores"], partition_key=keys[0], resources=res,
                       instance=instance).success


def test_a_copied_clay_home_reads_its_own_cubes_and_thumbnails(built, tmp_path):
    res, home, before, _ = built
    copy = tmp_path / "copied"
    shutil.copytree(home.root, copy, symlinks=True)  # like cp -a
    shutil.rmtree(home.root)
    moved = ClayHome(root=str(copy))
    cube = moved.open_cube(TILE, WINDOW)
    assert cube.sizes["chip"] == len(before) and int(cube["pixels"].values.max()) > 0
    rows, emb = partition_rows(moved.layout, PartitionId(WINDOW, TILE), "tiny")
    np.testing.assert_array_equal(emb, before)
    assert all(p.startswith(str(copy)) for p in rows["thumbnail_uri"])
    assert all(Path(p).is_file() for p in rows["thumbnail_uri"])
    assert read_manifest(moved.layout.partition("chips", TILE, WINDOW))["cube_uri"] == "chips/31UFU/2024-01-01/cube.zarr"

"""Bad input gets a clear error naming the thing and the fix; empty windows are not failures."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import AssetKey, materialize

from clay_assets.definitions import ALL_ASSETS, PER_SCENE_DOWNSTREAM, PER_SCENE_UPSTREAM, pca
from clay_assets.partitions import make_key
from clay_core.chips import ChipParams
from clay_core.errors import ConfigError, DatabaseError, UnknownTileError
from clay_core.storage import read_manifest
from clay_core.tiles import parse_tile
from tests.support.pipeline import small_resources, small_source

ROOT = Path(__file__).resolve().parents[2]


def test_empty_window_materializes_with_zero_chips_and_downstream_succeeds(tmp_path, pg_url, instance):
    # 2024-01-15 is an outage: the source has no acquisition that week for any tile.
    src = small_source(tiles=["31UFU"], outages=["2024-01-15"])
    res = small_resources(tmp_path / "clay", pg_url, source=src)
    for w in ["2024-01-01", "2024-01-08", "2024-01-15"]:
        r = materialize(ALL_ASSETS, selection=PER_SCENE_UPSTREAM, partition_key=make_key("31UFU", w), resources=res, instance=instance)
        assert r.success
    assert materialize(ALL_ASSETS, selection=[pca], resources=res, instance=instance).success
    key = make_key("31UFU", "2024-01-15")
    r = materialize(ALL_ASSETS, selection=PER_SCENE_DOWNSTREAM, partition_key=key, resources=res, instance=instance)
    assert r.success
    layout = res["home"].layout
    for stage in ("raw", "chips", "embeddings", "change"):
        m = read_manifest(layout.partition(stage, "31UFU", "2024-01-15"))
        n = m["chips"] if "chips" in m else len(m["scenes"])
        assert n == 0, stage
    mats = [
        e for e in instance.fetch_materializations(AssetKey("raw_scenes"), limit=10).records
        if e.partition_key == str(key)
    ]
    assert mats and mats[0].asset_materialization.metadata["empty"].value is True
    assert mats[0].asset_materialization.metadata["scenes"].value == 0


def test_unknown_tile_is_a_clear_error(tmp_path, pg_url, instance):
    with pytest.raises(UnknownTileError, match="99ZZZ"):
        parse_tile("99ZZZ")
    with pytest.raises(UnknownTileError, match="MGRS"):
        parse_tile("hello")
    # A tile in the partitions that the source does not serve: the run fails naming it.
    res = small_resources(tmp_path / "clay", pg_url, source=small_source(tiles=["31UFU"]))
    r = materialize(ALL_ASSETS, selection=PER_SCENE_UPSTREAM, partition_key=make_key("32UNB", "2024-01-01"),
                    resources=res, instance=instance, raise_on_error=False)
    assert not r.success
    msg = str(r.get_step_failure_events()[0].event_specific_data.error)
    assert "32UNB" in msg and "CLAY_TILES" in msg
    assert not (res["home"].layout.partition("raw", "32UNB", "2024-01-01")).exists()
    # a configuration error is not retried (the step's retry policy is for I/O errors)
    assert [e for e in r.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"] == []


def test_invalid_configured_tile_fails_at_load():
    env = dict(os.environ, CLAY_TILES="31UFU,NOT_A_TILE")
    proc = subprocess.run([sys.executable, "-c", "import clay_assets.definitions"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "NOT_A_TILE" in proc.stderr and "MGRS" in proc.stderr


def test_chip_size_not_multiple_of_8():
    with pytest.raises(ConfigError, match="multiple of 8"):
        ChipParams(chip_size=100)


def test_chip_size_not_multiple_of_8_fails_the_run(tmp_path, pg_url, instance):
    res = small_resources(tmp_path / "clay", pg_url, chip_size=60)
    r = materialize(ALL_ASSETS, selection=PER_SCENE_UPSTREAM, partition_key=make_key("31UFU", "2024-01-01"),
                    resources=res, instance=instance, raise_on_error=False)
    assert not r.success
    assert "multiple of 8" in str(r.get_step_failure_events()[0].event_specific_data.error)
    assert not res["home"].layout.partition("chips", "31UFU", "2024-01-01").exists()


def test_unreachable_database_names_server_without_password(tmp_path, pg_url, instance):
    res = small_resources(tmp_path / "clay", pg_url)
    key = make_key("31UFU", "2024-01-01")
    assert materialize(ALL_ASSETS, selection=PER_SCENE_UPSTREAM, partition_key=key, resources=res, instance=instance).success
    assert materialize(ALL_ASSETS, selection=[pca], resources=res, instance=instance).success
    bad = small_resources(tmp_path / "clay", "postgresql://clay:s3cretpw@127.0.0.1:1/vectors")
    r = materialize(ALL_ASSETS, selection=PER_SCENE_DOWNSTREAM, partition_key=key, resources=bad,
                    instance=instance, raise_on_error=False)
    assert not r.success
    err = r.get_step_failure_events()[0].event_specific_data.error
    text = str(err)
    assert "127.0.0.1:1" in text and "DATABASE_URL" in text
    assert "s3cretpw" not in text
    # the password appears nowhere in the run's event log either
    logs = instance.all_logs(r.run_id)
    assert not any("s3cretpw" in (e.user_message or "") for e in logs)
    with pytest.raises(DatabaseError):
        from clay_core.vectordb import VectorStore

        VectorStore("postgresql://clay:s3cretpw@127.0.0.1:1/vectors", 8)


def test_corrupt_scene_fails_and_keeps_the_previous_cube(tmp_path, pg_url, instance):
    from clay_core.chips import open_cube
    from tests.support.pipeline import DamagedSource

    key = make_key("31UFU", "2024-01-01")
    good = small_resources(tmp_path / "clay", pg_url)
    assert materialize(ALL_ASSETS, selection=PER_SCENE_UPSTREAM, partition_key=key, resources=good, instance=instance).success
    part = good["home"].layout.partition("chips", "31UFU", "2024-01-01")
    before = open_cube(part / "cube.zarr")["pixels"].values.copy()

    bad = small_resources(tmp_path / "clay", pg_url, source=DamagedSource(**small_source().model_dump(), mode="corrupt"))
    r = materialize(ALL_ASSETS, selection=["chip_cubes"], partition_key=key, resources=bad, instance=instance,
                    raise_on_error=False)
    assert not r.success
    assert "truncated" in str(r.get_step_failure_events()[0].event_specific_data.error)
    # the previous cube is untouched and no temporary directory is left behind
    assert (open_cube(part / "cube.zarr")["pixels"].values == before).all()
    assert sorted(p.name for p in part.parent.iterdir() if not p.name.startswith(".")) == ["2024-01-01"]
    assert [p.name for p in part.parent.iterdir() if ".tmp-" in p.name] == []


def test_all_nodata_scene_is_an_empty_partition(tmp_path, pg_url, instance):
    from tests.support.pipeline import DamagedSource

    key = make_key("31UFU", "2024-01-01")
    res = small_resources(tmp_path / "clay", pg_url, source=DamagedSource(**small_source().model_dump(), mode="nodata"))
    assert materialize(ALL_ASSETS, selection=PER_SCENE_UPSTREAM, partition_key=key, resources=res, instance=instance).success
    m = read_manifest(res["home"].layout.partition("chips", "31UFU", "2024-01-01"))
    assert m["chips"] == 0 and m["dropped"]["nodata"] == 16

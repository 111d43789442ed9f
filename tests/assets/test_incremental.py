"""Incremental operation: the new-scene sensor, staleness from chip-size changes, blocking checks."""

from __future__ import annotations

import json

import pytest
from dagster import AssetKey, build_sensor_context, materialize
# Dagster has no public Python API for an asset partition's stale status (the UI reads it over
# GraphQL); these two private imports are the documented exception.
from dagster._core.definitions.data_version import StaleStatus
from dagster._utils.test.data_versions import get_stale_status_resolver

from clay_assets.automation import INCREMENTAL_ASSETS, new_scenes_sensor
from clay_assets.definitions import ALL_ASSETS, PER_SCENE_UPSTREAM, pca
from clay_assets.partitions import make_key
from clay_assets.runner import materialize_graph
from tests.support.pipeline import TILES, small_resources, small_source


def _materialization_counts(instance, keys) -> dict[tuple[str, str], int]:
    counts = {}
    for name in INCREMENTAL_ASSETS:
        for rec in instance.fetch_materializations(AssetKey(name), limit=1000).records:
            k = (name, rec.partition_key)
            counts[k] = counts.get(k, 0) + 1
    return counts


def _tick(instance, resources, cursor):
    ctx = build_sensor_context(instance=instance, cursor=cursor, resources={"source": resources["source"]})
    result = new_scenes_sensor(ctx)
    return result


def test_sensor_requests_exactly_the_new_partitions(tmp_path, pg_url, instance, monkeypatch):
    monkeypatch.setenv("CLAY_TILES", ",".join(TILES))
    windows = ["2024-01-01", "2024-01-08", "2024-01-15"]
    # "now" in the source world: the 4th acquisition (2024-01-22) does not exist yet
    res = small_resources(tmp_path / "clay", pg_url, source=small_source(until="2024-01-22"))
    assert not materialize_graph(TILES, windows, res, instance).failures
    before = _materialization_counts(instance, None)

    # First tick on an existing deployment: everything found is already materialized.
    r1 = _tick(instance, res, None)
    assert r1.run_requests == []
    cursor = r1.cursor
    assert set(json.loads(cursor)["seen"]) == {str(make_key(t, w)) for t in TILES for w in windows}

    # A new acquisition lands: window 4 for both tiles.
    res2 = small_resources(tmp_path / "clay", pg_url, source=small_source(until="2024-01-29"))
    r2 = _tick(instance, res2, cursor)
    requested = sorted(rr.partition_key for rr in r2.run_requests)
    assert requested == sorted(str(make_key(t, "2024-01-22")) for t in TILES)

    # The daemon would launch these as runs of `incremental_update`; do the same in process.
    for key in requested:
        assert materialize(ALL_ASSETS, selection=INCREMENTAL_ASSETS, partition_key=key, resources=res2, instance=instance).success

    after = _materialization_counts(instance, None)
    new = {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}
    assert new == {(a, k): 1 for a in INCREMENTAL_ASSETS for k in requested}
    # the incremental runs used the existing PCA basis: refitting stays an explicit action
    assert len(instance.fetch_materializations(AssetKey("pca"), limit=10).records) == 1

    # Ticking again (cursor carried over, as across a daemon restart) requests nothing.
    r3 = _tick(instance, res2, r2.cursor)
    assert r3.run_requests == []


def test_changing_chip_size_marks_downstream_stale(tmp_path, pg_url, instance):
    key = make_key("31UFU", "2024-01-01")
    res64 = small_resources(tmp_path / "clay", pg_url, chip_size=64)
    assert materialize(ALL_ASSETS, selection=PER_SCENE_UPSTREAM, partition_key=key, resources=res64, instance=instance).success

    def status():
        resolver = get_stale_status_resolver(instance, ALL_ASSETS)
        return resolver.get_status(AssetKey("embeddings"), str(key))

    assert status() == StaleStatus.FRESH
    # Re-chipping with the same parameters yields the same data version: still fresh.
    assert materialize(ALL_ASSETS, selection=["chip_cubes"], partition_key=key, resources=res64, instance=instance).success
    assert status() == StaleStatus.FRESH
    # A different chip size changes the chips' data version: embeddings become stale.
    res32 = small_resources(tmp_path / "clay", pg_url, chip_size=32)
    assert materialize(ALL_ASSETS, selection=["chip_cubes"], partition_key=key, resources=res32, instance=instance).success
    assert status() == StaleStatus.STALE


def _check_evaluations(*runs) -> dict[str, bool]:
    out = {}
    for run in runs:
        for ev in run.all_events:
            if ev.event_type_value == "ASSET_CHECK_EVALUATION":
                out[ev.event_specific_data.check_name] = ev.event_specific_data.passed
    return out


def test_blocking_checks_pass_and_are_recorded(tmp_path, pg_url, instance):
    key = make_key("31UFU", "2024-01-01")
    res = small_resources(tmp_path / "clay", pg_url)
    r = materialize(ALL_ASSETS, selection=PER_SCENE_UPSTREAM, partition_key=key, resources=res, instance=instance)
    assert r.success
    assert materialize(ALL_ASSETS, selection=[pca], resources=res, instance=instance).success
    r2 = materialize(ALL_ASSETS, selection=["change_scores", "vectors"], partition_key=key, resources=res, instance=instance)
    assert r2.success
    assert _check_evaluations(r, r2) == {
        "cloud_fractions_in_range": True,
        "embeddings_finite_with_dim": True,
        "rows_match_cube": True,
        "no_duplicate_observations": True,
    }


def test_non_finite_embeddings_block_downstream(tmp_path, pg_url, instance):
    """A checkpoint with a NaN weight: the embeddings step fails and change_scores does not run."""
    import torch

    from clay_core.encoder.model import build_encoder

    key = make_key("31UFU", "2024-01-01")
    good = small_resources(tmp_path / "clay", pg_url)
    assert materialize(ALL_ASSETS, selection=PER_SCENE_UPSTREAM, partition_key=key, resources=good, instance=instance).success
    assert materialize(ALL_ASSETS, selection=[pca], resources=good, instance=instance).success
    assert materialize(ALL_ASSETS, selection=["change_scores"], partition_key=key, resources=good, instance=instance).success

    state = build_encoder("tiny", seed=0).state_dict()
    state["transformer.norm.weight"][0] = float("nan")
    ckpt = tmp_path / "nan.ckpt"
    torch.save({"state_dict": {f"model.encoder.{k}": v for k, v in state.items()}}, ckpt)
    bad = small_resources(tmp_path / "clay", pg_url, checkpoint=str(ckpt))
    r = materialize(ALL_ASSETS, selection=["embeddings", "change_scores"], partition_key=key, resources=bad,
                    instance=instance, raise_on_error=False)
    # The embeddings step refuses non-finite vectors before anything is replaced (the blocking
    # asset check stays as a second line of defence), so no bad partition is ever materialized.
    assert not r.success
    failures = [e for e in r.all_events if e.event_type_value == "STEP_FAILURE"]
    assert [e.step_key for e in failures] == ["embeddings"]
    assert "not finite" in str(failures[0].event_specific_data.error)
    assert len(instance.fetch_materializations(AssetKey("embeddings"), limit=10).records) == 1
    # change_scores was not re-run on the bad embeddings: still only the first materialization
    assert len(instance.fetch_materializations(AssetKey("change_scores"), limit=10).records) == 1

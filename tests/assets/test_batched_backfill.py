"""Batched backfills: several partitions per run, each partition materialized exactly once.

Backfills go through Dagster's own backfill logic (what ``dagster-daemon`` runs, driven in this
process by :func:`clay_assets.runner.run_backfill`) against the real code location, with runs
launched in their own processes through the run queue of the project's dagster.yaml. The
selection is not a rectangle (52 windows of one tile, 5 of another), the shape that split
``single_run`` backfills unpredictably (dagster #18852, #23996).
"""

from __future__ import annotations

import logging
import math
import shutil
from datetime import date, timedelta
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance
from dagster._core.storage.dagster_run import RunsFilter
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG
from dagster._core.test_utils import create_test_daemon_workspace_context
from dagster._core.workspace.load_target import PythonFileTarget
from dagster._daemon.backfill import execute_backfill_iteration

from clay_assets.partitions import make_key, register_tiles
from clay_assets.runner import run_backfill, submit_backfill
from clay_core.types import window_start

ROOT = Path(__file__).resolve().parents[2]
PER_RUN = 26


def _weeks(n: int) -> list[str]:
    return [window_start(date(2024, 1, 1) + timedelta(weeks=i)) for i in range(n)]


@pytest.fixture()
def deployment(tmp_path, monkeypatch):
    dagster_home = tmp_path / "dagster"
    dagster_home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", dagster_home / "dagster.yaml")
    # The code location and the run workers are processes of their own: configure them by environment.
    for k, v in dict(DAGSTER_HOME=str(dagster_home), CLAY_HOME=str(tmp_path / "clay"), CLAY_TILES="31UFU,32UNB",
                     CLAY_START="2024-01-01", CLAY_END="2025-01-06", CLAY_SYNTHETIC_SIZE="256",
                     CLAY_CHIP_SIZE="64", CLAY_PARTITIONS_PER_RUN=str(PER_RUN)).items():
        monkeypatch.setenv(k, v)
    target = PythonFileTarget(python_file=str(ROOT / "clay_assets" / "definitions.py"), attribute="defs",
                              working_directory=str(ROOT), location_name="clay")
    with DagsterInstance.get() as instance:
        register_tiles(instance, ["31UFU", "32UNB"])
        yield instance, target


def test_non_rectangular_backfill_runs_many_partitions_per_run(deployment):
    instance, target = deployment
    keys = [str(make_key("31UFU", w)) for w in _weeks(52)] + [str(make_key("32UNB", w)) for w in _weeks(5)]
    summary = run_backfill(instance, target, keys, ["raw_scenes"])
    assert summary.status == "COMPLETED_SUCCESS", summary
    # 2 runs for the year of 31UFU, 1 for 32UNB's 5 windows: 19x fewer than one run per partition
    assert summary.runs == math.ceil(52 / PER_RUN) + 1, summary
    per_key: dict[str, int] = {}
    scene_ids = {}
    for rec in instance.fetch_materializations(AssetKey("raw_scenes"), limit=1000).records:
        per_key[rec.partition_key] = per_key.get(rec.partition_key, 0) + 1
        scene_ids[rec.partition_key] = str(rec.asset_materialization.metadata["scene_ids"].value)
    assert per_key == {k: 1 for k in keys}
    # each partition's materialization carries its own metadata, not one copy of the batch's
    assert len(set(scene_ids.values())) == len(keys)
    assert all(k.split("|")[1] in ids for k, ids in scene_ids.items())


def test_change_scores_backfill_keeps_each_tiles_windows_in_one_ordered_run(deployment):
    """change_scores (self-dependent) is backfilled one run per tile of a non-rectangular selection,
    holding all that tile's windows, which the asset scores oldest first; no second run of the
    same tile is launched beside it (multi_run did: a tile's July beside its January)."""
    instance, target = deployment
    windows = _weeks(30)
    keys = [str(make_key("31UFU", w)) for w in windows] + [str(make_key("32UNB", w)) for w in windows[:5]]
    with create_test_daemon_workspace_context(target, instance) as ctx:
        bid = submit_backfill(instance, ctx.create_request_context().asset_graph, keys, ["change_scores"])
        for _ in range(2):  # the runs stay queued (no queue daemon here): the plan is what is checked
            list(execute_backfill_iteration(ctx, logging.getLogger("test")))
    runs = instance.get_runs(RunsFilter.for_backfill(bid))
    assert sorted((r.tags[ASSET_PARTITION_RANGE_START_TAG], r.tags[ASSET_PARTITION_RANGE_END_TAG]) for r in runs) == [
        (str(make_key("31UFU", windows[0])), str(make_key("31UFU", windows[-1]))),
        (str(make_key("32UNB", windows[0])), str(make_key("32UNB", windows[4]))),
    ]

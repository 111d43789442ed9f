"""Materialize the whole graph for tiles x windows, in dependency order, on one instance; and
drive a Dagster backfill to its end without a daemon.

:func:`materialize_graph` runs one partition per run, in process (the demo and ``clay-assets
run``); ``pca`` runs once between the upstream and downstream halves because it needs every
partition's embeddings. The tiles are registered as partitions of the dynamic tile dimension
first (:func:`clay_assets.partitions.register_tiles`). :func:`run_backfill` goes through
Dagster's backfill logic instead, so the assets' backfill policies batch partitions into runs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from dagster import DagsterInstance, materialize

from clay_assets.definitions import ALL_ASSETS, PER_SCENE_DOWNSTREAM, PER_SCENE_UPSTREAM, pca
from clay_assets.partitions import make_key, register_tiles


@dataclass
class RunSummary:
    runs: int = 0
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)


def materialize_graph(
    tiles: list[str],
    windows: list[str],
    resources: dict,
    instance: DagsterInstance,
    log: Callable[[str], None] = lambda _m: None,
    raise_on_error: bool = True,
    console_log_level: str | None = None,
) -> RunSummary:
    summary = RunSummary()
    t0 = time.perf_counter()
    register_tiles(instance, tiles)

    # The console logger only: every event still goes to the instance's event log (the UI).
    run_config = {"loggers": {"console": {"config": {"log_level": console_log_level}}}} if console_log_level else None

    def run(selection, key=None, label=""):
        result = materialize(ALL_ASSETS, selection=selection, partition_key=key, resources=resources,
                             instance=instance, raise_on_error=raise_on_error, run_config=run_config)
        summary.runs += 1
        if not result.success:
            summary.failures.append(label)
        log(f"{label}: {'ok' if result.success else 'FAILED'} ({time.perf_counter() - t0:.1f}s)")
        return result

    total = len(tiles) * len(windows)
    done = 0
    for window in sorted(windows):
        for tile in tiles:
            done += 1
            run(PER_SCENE_UPSTREAM, make_key(tile, window), f"[{done}/{total}] scenes→embeddings {tile} {window}")
    run([pca], None, "pca")
    done = 0
    # Oldest window first: change scores read earlier windows as history.
    for window in sorted(windows):
        for tile in tiles:
            done += 1
            run(PER_SCENE_DOWNSTREAM, make_key(tile, window), f"[{done}/{total}] change→vectors {tile} {window}")
    summary.seconds = time.perf_counter() - t0
    return summary


@dataclass
class BackfillSummary:
    backfill_id: str
    status: str
    runs: int
    seconds: float


def run_backfill(instance: DagsterInstance, workspace_target, partition_keys: list[str], assets: list[str],
                 timeout: float = 1800.0) -> BackfillSummary:
    """Launch an asset backfill and drive it to the end in this process, as ``dagster-daemon``'s
    backfill loop does: each iteration submits the runs whose parents are done (with the assets'
    backfill policies), then waits for them. Runs go through the instance's run launcher.

    ``workspace_target`` is a Dagster workspace load target (e.g. a ``PythonFileTarget`` of the code
    location); ``partition_keys`` may be any set of keys (a non-rectangular selection too).
    """
    import logging

    from dagster._core.execution.backfill import BulkActionStatus
    from dagster._core.storage.dagster_run import DagsterRunStatus, RunsFilter
    from dagster._core.test_utils import create_test_daemon_workspace_context
    from dagster._daemon.backfill import execute_backfill_iteration
    from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import QueuedRunCoordinatorDaemon

    t0 = time.perf_counter()
    logger = logging.getLogger("clay_assets.backfill")
    queue = QueuedRunCoordinatorDaemon(interval_seconds=1)
    with create_test_daemon_workspace_context(workspace_target, instance) as ctx, queue:
        backfill_id = submit_backfill(instance, ctx.create_request_context().asset_graph, partition_keys, assets)
        done = {BulkActionStatus.COMPLETED_SUCCESS, BulkActionStatus.COMPLETED_FAILED, BulkActionStatus.FAILED,
                BulkActionStatus.CANCELED, BulkActionStatus.COMPLETED}
        runs_filter = RunsFilter.for_backfill(backfill_id)
        while True:
            list(execute_backfill_iteration(ctx, logger))
            # the run queue (QueuedRunCoordinator, dagster.yaml's limits and pools) starts queued runs
            list(queue.run_iteration(ctx))
            status = instance.get_backfill(backfill_id).status
            if status in done:
                break
            if time.perf_counter() - t0 > timeout:
                raise TimeoutError(f"backfill {backfill_id} still {status.value} after {timeout:.0f}s")
            # wait for the submitted runs before the next iteration (the daemon polls instead)
            while any(not r.is_finished for r in instance.get_runs(runs_filter)):
                list(queue.run_iteration(ctx))
                time.sleep(0.2)
        runs = instance.get_runs(runs_filter)
        failed = [r.run_id for r in runs if r.status != DagsterRunStatus.SUCCESS]
        if failed:
            logger.warning(f"backfill {backfill_id}: {len(failed)} run(s) did not succeed: {failed}")
    return BackfillSummary(backfill_id, status.value, len(runs), time.perf_counter() - t0)


def submit_backfill(instance: DagsterInstance, asset_graph, partition_keys: list[str], assets: list[str]) -> str:
    """Record an asset backfill of ``assets`` x ``partition_keys`` (as the UI's dialog does); returns its id."""
    import uuid

    from dagster import AssetKey
    from dagster._core.execution.backfill import PartitionBackfill

    backfill = PartitionBackfill.from_asset_partitions(
        backfill_id=uuid.uuid4().hex[:8], asset_graph=asset_graph, partition_names=partition_keys,
        asset_selection=[AssetKey(a) for a in assets], backfill_timestamp=time.time(), tags={},
        dynamic_partitions_store=instance, all_partitions=False, title=None, description=None, run_config=None,
    )  # fmt: skip
    instance.add_backfill(backfill)
    return backfill.backfill_id

"""Several tile x window partitions per run: one stage call and one materialization per partition.

A backfill with ``BackfillPolicy.multi_run(max_partitions_per_run=N)`` hands an asset up to N
partition keys in one run (``context.partition_keys``), so a year of one tile is a few runs
instead of 52 and the process start-up and instance overhead is paid once per run. Dagster 1.13
records one ``AssetMaterialization`` per partition of the run from the asset's single output;
per-partition metadata goes in through ``context.add_asset_metadata(..., partition_key=key)``.
What Dagster cannot scope to a partition — the output's data version and asset check results —
is combined here: one digest over the partitions' own versions (a single-partition run keeps its
partition's version exactly as before), and one result per check that passes only when it
passed for every partition (its metadata names the partitions it failed for).

An asset body becomes::

    def my_asset(context, ...):
        return for_each_partition(context, lambda pid: PartitionOutcome(metadata=stage(pid)))

Partitions run oldest window first (then by tile), as ``change_scores`` needs. A partition that
raises fails the run; partitions written before it stay on disk (writes are atomic per
partition) and are replaced when the run is retried, never duplicated.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from dagster import AssetCheckResult, AssetExecutionContext, BackfillPolicy, DataVersion, MaterializeResult

from clay_assets import config
from clay_assets.versions import digest
from clay_core.types import PartitionId

__all__ = ["batched_policy", "run_partitions", "PartitionOutcome", "for_each_partition"]


def batched_policy() -> BackfillPolicy:
    """The backfill policy of every per-scene asset: ``CLAY_PARTITIONS_PER_RUN`` partitions per run
    (default 13 weekly windows, a quarter: a year of one tile is 4 runs per asset group instead of
    52, and one run stays small enough to retry). ``multi_run``, not ``single_run``: the latter
    splits non-rectangular multi-partition selections unpredictably (dagster #18852, #23996)."""
    return BackfillPolicy.multi_run(max_partitions_per_run=config.current().partitions_per_run)


def run_partitions(context: AssetExecutionContext) -> list[PartitionId]:
    """The run's partitions, oldest window first, then by tile."""
    return sorted((PartitionId.parse(k) for k in context.partition_keys), key=lambda p: (p.window, p.tile))


@dataclass
class PartitionOutcome:
    """What one partition's stage produced: its materialization metadata, its asset check results
    and, when the asset computes one, its data version."""

    metadata: Mapping = field(default_factory=dict)
    checks: Sequence[AssetCheckResult] = ()
    data_version: str | None = None


def for_each_partition(context: AssetExecutionContext,
                       stage: Callable[[PartitionId], PartitionOutcome]) -> MaterializeResult:
    """Run ``stage`` for each of the run's partitions in order; one materialization per partition."""
    pids = run_partitions(context)
    outcomes = [(pid, stage(pid)) for pid in pids]
    if len(outcomes) == 1:
        _, out = outcomes[0]
        return MaterializeResult(metadata=dict(out.metadata), check_results=list(out.checks),
                                 data_version=DataVersion(out.data_version) if out.data_version else None)
    for pid, out in outcomes:
        context.add_asset_metadata(dict(out.metadata), partition_key=pid.key)
    versions = [(pid.key, out.data_version) for pid, out in outcomes if out.data_version]
    return MaterializeResult(check_results=_merge_checks(outcomes),
                             data_version=DataVersion(digest(versions)) if versions else None)


def _merge_checks(outcomes: list[tuple[PartitionId, PartitionOutcome]]) -> list[AssetCheckResult]:
    by_name: dict[str, list[tuple[PartitionId, AssetCheckResult]]] = {}
    for pid, out in outcomes:
        for check in out.checks:
            by_name.setdefault(check.check_name, []).append((pid, check))
    merged = []
    for name, results in by_name.items():
        failed = [(pid, r) for pid, r in results if not r.passed]
        # The first failing partition's own metadata (thresholds, counts) says why it failed.
        detail = {f"{failed[0][0].key}: {k}": v for k, v in (failed[0][1].metadata or {}).items()} if failed else {}
        merged.append(AssetCheckResult(
            check_name=name, passed=not failed, severity=results[0][1].severity,
            metadata={"partitions": len(results), "failed_partitions": ", ".join(p.key for p, _ in failed) or "none",
                      **detail},
        ))  # fmt: skip
    return merged

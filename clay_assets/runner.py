"""Materialize the whole graph for tiles x windows, in dependency order, on one instance.

Per-scene assets run one partition per run (the multi-partition ``single_run`` backfill
policy has open Dagster bugs with non-rectangular partition selections); ``pca`` runs once between the upstream and
downstream halves because it needs every partition's embeddings. The tiles are registered as
partitions of the dynamic tile dimension first (:func:`clay_assets.partitions.register_tiles`).
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

"""`clay-assets runs list` and `clay-assets runs clear`: runs in progress, the pool slots they
hold, and clearing a run whose worker died.

A run keeps its pool slots (the `gpu` slot of `embeddings`) until its worker frees them; a
worker killed with -9 never does, and marking the run failed does not free them either. The
daemon's run monitoring (`dagster.yaml`) frees them about 45 s after the run ended; `clear` does
it now, and also works without a daemon or for a run nobody marked failed (the code server that
launched it died too).

A worker is "dead" when the process of the run's "Started process for run (pid: N)" event no
longer exists on this machine (or the pid now belongs to a younger process). That holds for
the default launcher, which runs workers on the daemon's machine; run `clear` there.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from clay_assets.cli.common import load_config as _config

__all__ = ["RunState", "collect", "clear_run", "worker_of", "add_parsers"]

WORKER_EVENT = "Started process for run (pid: "
CLEARED = "Cleared by `clay-assets runs clear`: its worker is gone; its pool slots were freed."


@dataclass
class RunState:
    """One run that is in progress or holds pool slots."""

    run_id: str
    job: str
    status: str
    partition: str | None
    pid: int | None
    alive: bool | None  # None: no worker started yet
    slots: list[str] = field(default_factory=list)  # "pool:step" per claimed slot

    @property
    def dead(self) -> bool:
        """A started run whose worker is gone, or a finished run still holding slots."""
        if self.status in ("SUCCESS", "FAILURE", "CANCELED"):
            return bool(self.slots)
        return self.status in ("STARTING", "STARTED", "CANCELING") and self.alive is False


def _instance():
    from dagster import DagsterInstance

    from clay_assets import config

    config.dagster_home(_config())
    return DagsterInstance.get()


def worker_of(instance, run_id: str) -> tuple[int | None, bool | None]:
    """(pid, alive) of the run's latest worker process; (None, None) before one started."""
    import psutil
    from dagster import DagsterEventType

    started = [e for e in instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT)
               if (e.message or "").startswith(WORKER_EVENT)]
    if not started:
        return None, None
    last = started[-1]
    pid = int(last.message[len(WORKER_EVENT):].split(")")[0])
    try:
        # a pid the OS handed to a younger process is not the worker
        return pid, psutil.Process(pid).create_time() <= last.timestamp + 1.0
    except psutil.NoSuchProcess:
        return pid, False


def _claimed_slots(instance) -> dict[str, list[str]]:
    storage = instance.event_log_storage
    held: dict[str, list[str]] = {}
    if not storage.supports_global_concurrency_limits:
        return held
    for pool in sorted(storage.get_concurrency_keys()):
        for slot in storage.get_concurrency_info(pool).claimed_slots:
            held.setdefault(slot.run_id, []).append(f"{pool}:{slot.step_key}")
    return held


def collect(instance) -> list[RunState]:
    """Every run in progress (queued included) and every run that holds a pool slot."""
    from dagster import RunsFilter
    from dagster._core.storage.dagster_run import IN_PROGRESS_RUN_STATUSES

    held = _claimed_slots(instance)
    runs = {r.run_id: r for r in instance.get_runs(RunsFilter(statuses=IN_PROGRESS_RUN_STATUSES))}
    if held:
        runs.update({r.run_id: r for r in instance.get_runs(RunsFilter(run_ids=list(held)))})
    out = []
    for run in runs.values():
        pid, alive = worker_of(instance, run.run_id)
        out.append(RunState(run.run_id, run.job_name, run.status.value, run.tags.get("dagster/partition"),
                            pid, alive, held.get(run.run_id, [])))
    return sorted(out, key=lambda s: s.run_id)


def clear_run(instance, run_id: str, force: bool = False) -> str:
    """Mark ``run_id`` failed (when it is not finished) and free every pool slot it holds."""
    from clay_core.errors import ClayError

    run = instance.get_run_by_id(run_id)
    if run is None:
        raise ClayError(f"no run {run_id} in this Dagster instance ({instance.root_directory}); "
                        "list them with `clay-assets runs list`")
    pid, alive = worker_of(instance, run_id)
    if alive and not force:
        raise ClayError(f"run {run_id} is still running (worker pid {pid}); terminate it from the UI, "
                        "or pass --force to clear it anyway")
    slots = _claimed_slots(instance).get(run_id, [])
    done = []
    if not run.is_finished:
        instance.report_run_failed(run, CLEARED)
        done.append(f"marked FAILURE (was {run.status.value})")
    if instance.event_log_storage.supports_global_concurrency_limits:
        instance.event_log_storage.free_concurrency_slots_for_run(run_id)
    done.append(f"freed {len(slots)} pool slot(s)" + (f" ({', '.join(slots)})" if slots else ""))
    return f"{run_id}: " + "; ".join(done)


def cmd_list(args: argparse.Namespace) -> int:
    instance = _instance()
    try:
        states = collect(instance)
        if not states:
            print("no runs in progress and no pool slots held")
        for s in states:
            worker = "-" if s.pid is None else f"pid {s.pid} ({'alive' if s.alive else 'dead'})"
            flag = "  DEAD: clear it with `clay-assets runs clear --dead`" if s.dead else ""
            print(f"{s.run_id}  {s.status:<9} {s.job}  {s.partition or '-'}  worker {worker}  "
                  f"slots {','.join(s.slots) or '-'}{flag}")
        storage = instance.event_log_storage
        if storage.supports_global_concurrency_limits:
            for pool in sorted(storage.get_concurrency_keys()):
                info = storage.get_concurrency_info(pool)
                print(f"pool {pool}: {info.active_slot_count}/{info.slot_count} slots claimed, "
                      f"{info.pending_step_count} step(s) waiting")
    finally:
        instance.dispose()
    return 0


def cmd_clear(args: argparse.Namespace) -> int:
    from clay_core.errors import ClayError

    if bool(args.run_ids) == args.dead:
        raise ClayError("give run ids to clear, or --dead for every run whose worker is gone")
    instance = _instance()
    try:
        ids = args.run_ids or [s.run_id for s in collect(instance) if s.dead]
        if not ids:
            print("no dead runs")
        for run_id in ids:
            print(clear_run(instance, run_id, force=args.force))
    finally:
        instance.dispose()
    return 0


def add_parsers(sub) -> None:
    r = sub.add_parser("runs", help="runs in progress and pool slots; clear a run whose worker died")
    rs = r.add_subparsers(dest="runs_cmd", required=True)
    rs.add_parser("list", help="runs in progress or holding pool slots, with their worker and slots"
                  ).set_defaults(fn=cmd_list)
    c = rs.add_parser("clear", help="mark runs failed and free their pool slots")
    c.add_argument("run_ids", nargs="*", metavar="RUN_ID")
    c.add_argument("--dead", action="store_true", help="every run whose worker process is gone")
    c.add_argument("--force", action="store_true", help="clear a run even though its worker still runs")
    c.set_defaults(fn=cmd_clear)

"""A killed run does not stall the `gpu` pool: run monitoring frees its slot, and so does
`clay-assets runs clear`.

A real deployment on loopback with the project's ``dagster.yaml``: one code server (``dagster api
grpc``) that both ``dagster-daemon`` and the ``dagster job launch`` CLI use. The code location is
the project's definitions with one change: the encoder's ``load()`` waits while
``$CLAY_HOME/hold-gpu`` exists, so a run can be caught inside ``embeddings`` holding the `gpu`
slot; its steps run in the worker process (the in-process executor: the worker claims and frees
pool slots the same way with either executor, and a run starts ~30 s sooner without a process per
step). That run's worker process tree is killed with SIGKILL (no cleanup runs); the code server
marks the run failed but the slot stays claimed, which is what used to stall every later run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest
from dagster import AssetKey, DagsterInstance, DagsterRunStatus

from clay_assets.cli.runs import worker_of
from tests.support.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
JOB = "scenes_to_embeddings"

HELD_DEFS = '''
"""The project's code location; the encoder waits while $CLAY_HOME/hold-gpu exists."""
import os
import time
from pathlib import Path

from dagster import Definitions, in_process_executor

import clay_assets.definitions as project
from clay_assets.resources import ClayModel


class HeldModel(ClayModel):
    def load(self):
        hold = Path(os.environ["CLAY_HOME"]) / "hold-gpu"
        deadline = time.time() + 240  # never hang a test for ever
        while hold.exists() and time.time() < deadline:
            time.sleep(0.2)
        return super().load()


def _build():
    d = project.defs
    resources = dict(d.resources)
    resources["model"] = HeldModel(**resources["model"].model_dump())
    return Definitions(assets=list(d.assets), resources=resources, jobs=list(d.jobs), sensors=list(d.sensors),
                       schedules=list(d.schedules), executor=in_process_executor)


defs = _build()
'''


def _wait(what: str, predicate, timeout: float, logs: Path | None = None, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    tail = "".join(f"\n--- {p.name}\n{p.read_text()[-2500:]}" for p in sorted(logs.iterdir())) if logs else ""
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}{tail}")


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    base = tmp_path_factory.mktemp("stuck")
    home, dagster_home, logs = base / "clay", base / "dagster", base / "logs"
    for d in (home, dagster_home, logs):
        d.mkdir()
    shutil.copy(ROOT / "dagster.yaml", dagster_home / "dagster.yaml")
    (base / "held_defs.py").write_text(HELD_DEFS)
    port = free_port()
    ws = base / "workspace.yaml"
    ws.write_text(f"load_from:\n  - grpc_server:\n      host: 127.0.0.1\n      port: {port}\n"
                  f"      location_name: clay\n")
    env = dict(
        os.environ, CLAY_HOME=str(home), DAGSTER_HOME=str(dagster_home), CLAY_TILES="31UFU",
        CLAY_START="2024-01-01", CLAY_END="2024-02-05", CLAY_SYNTHETIC_SIZE="256", CLAY_CHIP_SIZE="64",
        CLAY_MAX_CONCURRENT="1", PYTHONPATH=str(ROOT),
    )
    env.pop("DATABASE_URL", None)
    # the tile dimension is dynamic (clay_assets.partitions): register the tile the way the CLI does
    with DagsterInstance.from_config(str(dagster_home)) as inst:
        inst.add_dynamic_partitions("tiles", ["31UFU"])
    procs = [
        psutil.Popen([str(BIN / "dagster"), "api", "grpc", "-f", str(base / "held_defs.py"), "-a", "defs",
                          "-d", str(ROOT), "-h", "127.0.0.1", "-p", str(port)],
                         env=env, cwd=ROOT, stdout=open(logs / "code-server.log", "w"), stderr=subprocess.STDOUT),
    ]
    try:
        _wait("the code server", lambda: _port_open(port), 120, logs)
        procs.append(psutil.Popen([str(BIN / "dagster-daemon"), "run", "-w", str(ws)], env=env, cwd=ROOT,
                                      stdout=open(logs / "daemon.log", "w"), stderr=subprocess.STDOUT))
        os.environ["DAGSTER_HOME"] = str(dagster_home)
        inst = DagsterInstance.get()
        yield {"env": env, "ws": ws, "home": home, "logs": logs, "instance": inst}
        inst.dispose()
    finally:
        for p in procs:
            p.terminate()
        for p in psutil.wait_procs(procs, timeout=30)[1]:  # still alive after 30 s
            p.kill()


def _launch(dep, window: str) -> str:
    run_id = str(uuid.uuid4())
    key = f"{window}|31UFU"
    tags = {"dagster/partition": key, "dagster/partition/date": window, "dagster/partition/tile": "31UFU"}
    proc = subprocess.run([str(BIN / "dagster"), "job", "launch", "-w", str(dep["ws"]), "-j", JOB, "--run-id", run_id,
                           "--tags", json.dumps(tags)], env=dep["env"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_id


def _gpu_holders(inst) -> set[str]:
    storage = inst.event_log_storage
    if "gpu" not in storage.get_concurrency_keys():
        return set()
    return {s.run_id for s in storage.get_concurrency_info("gpu").claimed_slots}


def _status(inst, run_id: str):
    run = inst.get_run_by_id(run_id)
    return run.status if run else None


def _kill_worker_tree(inst, run_id: str) -> int:
    pid, alive = worker_of(inst, run_id)
    assert pid and alive, (pid, alive)
    tree = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    for p in tree:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(tree, timeout=10)
    return pid


def _hold_then_kill(dep, window: str, next_window: str) -> tuple[str, str]:
    """Launch a run and wait until it holds the gpu slot inside `embeddings`; launch the next run
    (its first steps overlap); SIGKILL the first run's workers. Returns (killed, next) run ids."""
    inst, logs = dep["instance"], dep["logs"]
    hold = dep["home"] / "hold-gpu"
    hold.write_text("held by the test\n")
    run_id = _launch(dep, window)
    _wait(f"run {run_id} to hold the gpu slot", lambda: run_id in _gpu_holders(inst), 150, logs)
    nxt = _launch(dep, next_window)
    _kill_worker_tree(inst, run_id)
    hold.unlink()
    _wait(f"run {run_id} to be marked failed", lambda: _status(inst, run_id) == DagsterRunStatus.FAILURE, 60, logs)
    return run_id, nxt


def _finished(dep, run_id: str, timeout: float):
    inst = dep["instance"]
    done = (DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED)
    _wait(f"run {run_id} to finish", lambda: _status(inst, run_id) in done, timeout, dep["logs"], interval=1.0)
    return _status(inst, run_id)


def _embedded(inst, window: str) -> bool:
    key = f"{window}|31UFU"
    return any(r.partition_key == key for r in inst.fetch_materializations(AssetKey("embeddings"), limit=50).records)


def test_run_monitoring_frees_a_killed_runs_gpu_slot(deployment):
    inst = deployment["instance"]
    dead, nxt = _hold_then_kill(deployment, "2024-01-01", "2024-01-08")
    # marked failed, yet still holding the slot: without run monitoring it would stay that way
    assert dead in _gpu_holders(inst)
    assert _finished(deployment, nxt, 150) == DagsterRunStatus.SUCCESS
    assert _embedded(inst, "2024-01-08")
    assert dead not in _gpu_holders(inst)


def test_runs_clear_frees_a_killed_runs_slot_at_once(deployment):
    inst, env = deployment["instance"], deployment["env"]
    dead, nxt = _hold_then_kill(deployment, "2024-01-15", "2024-01-22")
    cli = str(BIN / "clay-assets")
    listed = subprocess.run([cli, "runs", "list"], env=env, capture_output=True, text=True, timeout=120)
    line = next(ln for ln in listed.stdout.splitlines() if ln.startswith(dead))
    assert "FAILURE" in line and "gpu:embeddings" in line and "DEAD" in line, listed.stdout
    cleared = subprocess.run([cli, "runs", "clear", "--dead"], env=env, capture_output=True, text=True, timeout=120)
    assert cleared.returncode == 0, cleared.stderr
    assert f"{dead}: freed 1 pool slot(s) (gpu:embeddings)" in cleared.stdout, cleared.stdout
    assert dead not in _gpu_holders(inst)  # at once, not after the monitoring delay
    assert _finished(deployment, nxt, 150) == DagsterRunStatus.SUCCESS
    assert _embedded(inst, "2024-01-22")


def test_runs_clear_refuses_a_run_whose_worker_is_alive_and_an_unknown_run(instance):
    from dagster._core.test_utils import create_run_for_test

    from clay_assets.cli.runs import WORKER_EVENT, clear_run
    from clay_core.errors import ClayError

    run = create_run_for_test(instance, job_name=JOB, status=DagsterRunStatus.STARTED)
    instance.report_engine_event(f"{WORKER_EVENT}{os.getpid()}).", run)  # this process: alive
    with pytest.raises(ClayError, match=f"run {run.run_id} is still running \\(worker pid {os.getpid()}\\)"):
        clear_run(instance, run.run_id)
    assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.STARTED
    assert "marked FAILURE (was STARTED)" in clear_run(instance, run.run_id, force=True)
    assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.FAILURE
    with pytest.raises(ClayError, match="no run nope in this Dagster instance"):
        clear_run(instance, "nope")

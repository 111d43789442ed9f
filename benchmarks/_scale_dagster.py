"""Dagster at scale: the full tile x week partition space on SQLite and on Postgres storage, and
batched vs one-run-per-partition backfills (issue #15).

Per storage (SQLite files under DAGSTER_HOME; Postgres: the project's embedded server, a
database of its own, through ``deploy/dagster-postgres.yaml``), in a fresh instance:
500 registered tiles x 261 weekly windows (130,500 partitions per asset), then

- ``event_write``: N materializations of ``raw_scenes`` partitions (30,000; ``--quick`` 1,000),
  one ``report_runless_asset_event`` each, as runs record them: events/s;
- ``definitions_load_s``: a fresh process importing the code location and resolving its asset
  graph (the work of every run worker and code server start);
- ``sensor_tick_s``: one ``tiles_sensor`` evaluation, and ``materialized_query_s``: the query
  ``new_scenes_sensor`` makes for the materialized partitions;
- ``backfill_submit_s``: recording a backfill of 10,000 partitions (``--quick`` 1,000), what the
  UI's *Launch backfill* does, and ``iteration_s``: the daemon's first iteration over a backfill
  of one tile's 261 windows (``--quick`` 26), which plans the batched runs and queues them
  (nothing executes), with ``iteration_runs_queued``;
- ``graphql_partition_stats_s`` and ``partitions_page_s``: ``dagster-webserver`` on that
  instance, the asset's partition stats over GraphQL, and the asset's partitions page in
  headless Chromium until the partition count and the status bar are drawn.

Backfill of 52 windows of one tile (``--quick``: 4), ``raw_scenes``, real runs through the run
queue of the project's dagster.yaml: one run per partition vs ``CLAY_PARTITIONS_PER_RUN=13``.

    .venv/bin/python benchmarks/_scale_dagster.py --json [--quick | --sizes=EVENTS,BACKFILL,ITERATE,WINDOWS]
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BIN = Path(sys.executable).parent
WEEKS, TILES = 261, 500
ASSETS = ["raw_scenes", "chip_cubes", "embeddings"]
#: (materializations written, partitions of the recorded backfill, partitions of the backfill the
#: daemon iterates over, windows of the per-partition vs batched backfill)
FULL, QUICK = (30_000, 10_000, 261, 52), (1_000, 1_000, 26, 4)
BAND_LETTERS = "CDEFGHJKLMNPQRSTUVWX"
RESULT = "SCALE-RESULT "


def _tiles(n: int) -> list[str]:
    """``n`` MGRS-shaped tile ids (zone x latitude band; the square is fixed)."""
    return [f"{z:02d}{b}FU" for b in BAND_LETTERS for z in range(1, 61)][:n]


def _first_monday(weeks: int) -> date:
    today = date.today()
    last_complete = today - timedelta(days=today.weekday() + 7)
    return last_complete - timedelta(weeks=weeks - 1)


def _env(base: Path, start: date, weeks: int, **extra: str) -> dict:
    return dict(os.environ, CLAY_HOME=str(base / "clay"), DAGSTER_HOME=str(base / "dagster"),
                CLAY_START=start.isoformat(), CLAY_END=(start + timedelta(weeks=weeks)).isoformat(),
                CLAY_TILES="31UFU", CLAY_SYNTHETIC_SIZE="256", CLAY_CHIP_SIZE="64", PYTHONPATH=str(ROOT),
                **extra)  # fmt: skip


def _dagster_home(base: Path, pg_url: str | None) -> None:
    home = base / "dagster"
    home.mkdir(parents=True)
    text = (ROOT / "dagster.yaml").read_text()
    if pg_url:
        text += "\n" + (ROOT / "deploy" / "dagster-postgres.yaml").read_text()
    (home / "dagster.yaml").write_text(text)


def _worker(args: list[str], env: dict, timeout: float = 3600) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], env=env, capture_output=True, text=True, timeout=timeout)
    if out.returncode:
        raise RuntimeError(f"worker {args} failed:\n{out.stderr[-4000:]}")
    # Dagster's code server logs to stdout too: the result is the line after the marker
    return json.loads(out.stdout.split(RESULT, 1)[1].splitlines()[0])


# --------------------------------------------------------------------------- in the worker process


def _fill(n_events: int, n_backfill: int, n_iterate: int) -> dict:
    """Partition space, event writes, sensor, backfill launch (env says which storage)."""
    import logging

    from dagster import AssetKey, AssetMaterialization, DagsterInstance, build_sensor_context
    from dagster._core.execution.backfill import BulkActionStatus
    from dagster._core.storage.dagster_run import RunsFilter
    from dagster._core.test_utils import create_test_daemon_workspace_context
    from dagster._core.workspace.load_target import PythonFileTarget
    from dagster._daemon.backfill import execute_backfill_iteration

    from clay_assets.automation import tiles_sensor
    from clay_assets.partitions import TILES_DIMENSION, date_partitions, make_key
    from clay_assets.runner import submit_backfill

    res: dict = {}
    tiles = _tiles(TILES)
    with DagsterInstance.get() as instance:
        res["storage"] = type(instance.event_log_storage).__name__
        instance.add_dynamic_partitions(TILES_DIMENSION, tiles)
        windows = date_partitions.get_partition_keys()
        res["partitions"] = len(windows) * len(tiles)
        keys = [str(make_key(t, w)) for t in tiles for w in windows]
        t0 = time.perf_counter()
        for k in keys[:n_events]:
            instance.report_runless_asset_event(AssetMaterialization("raw_scenes", partition=k, metadata={"scenes": 1}))
        dt = time.perf_counter() - t0
        res.update(materialized=n_events, event_write_s=round(dt, 2), events_per_s=round(n_events / dt, 1))

        t0 = time.perf_counter()
        tiles_sensor(build_sensor_context(instance=instance))
        res["sensor_tick_s"] = round(time.perf_counter() - t0, 3)
        t0 = time.perf_counter()
        got = instance.get_materialized_partitions(AssetKey("raw_scenes"))
        res["materialized_query_s"] = round(time.perf_counter() - t0, 3)
        assert len(got) == n_events, (len(got), n_events)

        target = PythonFileTarget(python_file=str(ROOT / "clay_assets" / "definitions.py"), attribute="defs",
                                  working_directory=str(ROOT), location_name="clay")
        with create_test_daemon_workspace_context(target, instance) as ctx:
            graph = ctx.create_request_context().asset_graph
            chosen = keys[:n_backfill]  # tile-major: whole tiles (all their windows), then part of one
            t0 = time.perf_counter()
            big = submit_backfill(instance, graph, chosen, ASSETS)
            res["backfill_partitions"] = len(chosen)
            res["backfill_submit_s"] = round(time.perf_counter() - t0, 2)
            # cancelled before any daemon iteration: only the small backfill below is iterated over
            instance.update_backfill(instance.get_backfill(big).with_status(BulkActionStatus.CANCELED))
            # The daemon's first iteration plans the runs and queues every one it can (nothing
            # executes: no queue daemon). Run creation dominates, so it is timed on a smaller backfill.
            bid = submit_backfill(instance, graph, keys[-n_iterate:], ASSETS)
            t0 = time.perf_counter()
            list(execute_backfill_iteration(ctx, logging.getLogger("bench")))
            res["iteration_partitions"] = n_iterate
            res["iteration_s"] = round(time.perf_counter() - t0, 2)
            res["iteration_runs_queued"] = len(instance.get_runs(RunsFilter.for_backfill(bid)))
    return res


def _load_time() -> dict:
    t0 = time.perf_counter()
    from clay_assets.definitions import defs

    defs.resolve_asset_graph()
    return {"definitions_load_s": round(time.perf_counter() - t0, 2)}


def _backfill(windows: int) -> dict:
    from dagster import DagsterInstance
    from dagster._core.workspace.load_target import PythonFileTarget

    from clay_assets.partitions import date_partitions, make_key, register_tiles
    from clay_assets.runner import run_backfill

    target = PythonFileTarget(python_file=str(ROOT / "clay_assets" / "definitions.py"), attribute="defs",
                              working_directory=str(ROOT), location_name="clay")
    with DagsterInstance.get() as instance:
        register_tiles(instance, ["31UFU"])
        keys = [str(make_key("31UFU", w)) for w in date_partitions.get_partition_keys()[:windows]]
        s = run_backfill(instance, target, keys, ["raw_scenes"], timeout=3600)
    return {"partitions": len(keys), "runs": s.runs, "wall_s": round(s.seconds, 1), "status": s.status}


# --------------------------------------------------------------------------- webserver + browser


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gql(port: int, query: str) -> dict:
    import urllib.request

    req = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": query}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=300) as resp:
        return json.loads(resp.read())


def _ui(base: Path, env: dict, tag: str) -> dict:
    import urllib.request

    ws = base / "workspace.yaml"
    ws.write_text(f"load_from:\n  - python_file:\n      relative_path: {ROOT / 'clay_assets' / 'definitions.py'}\n"
                  f"      working_directory: {ROOT}\n      attribute: defs\n")
    port = _free_port()
    log = open(base / f"webserver-{tag}.log", "w")
    proc = subprocess.Popen([str(BIN / "dagster-webserver"), "-w", str(ws), "-h", "127.0.0.1", "-p", str(port)],
                            env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    out: dict = {}
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=5)
                body = _gql(port, "{ workspaceOrError { ... on Workspace { locationEntries { loadStatus } } } }")
                if all(e["loadStatus"] == "LOADED" for e in body["data"]["workspaceOrError"]["locationEntries"]):
                    break
            except OSError:
                pass
            time.sleep(1)
        t0 = time.perf_counter()
        stats = _gql(port, '{ assetNodeOrError(assetKey: {path: ["raw_scenes"]}) { ... on AssetNode { '
                           'partitionStats { numMaterialized numPartitions numFailed } } } }')
        out["graphql_partition_stats_s"] = round(time.perf_counter() - t0, 3)
        out["partition_stats"] = stats["data"]["assetNodeOrError"]["partitionStats"]
        out.update(_page(port, ROOT / "test-artifacts" / f"scale-partitions-{tag}.png"))
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    return out


def _page(port: int, shot: Path) -> dict:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium", headless=True,
                                     args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        shot.parent.mkdir(exist_ok=True)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.goto(f"http://127.0.0.1:{port}/asset-groups", wait_until="networkidle", timeout=300_000)  # warm-up
        t0 = time.perf_counter()
        page.goto(f"http://127.0.0.1:{port}/assets/raw_scenes?view=partitions", wait_until="networkidle",
                  timeout=300_000)
        dt = time.perf_counter() - t0
        try:  # the page's partition count, to show it drew the whole space (a label, not a timing)
            page.get_by_text("130,500").first.wait_for(timeout=30_000)
            drawn = True
        except Exception:  # noqa: BLE001 - reported, and the screenshot shows what was drawn
            drawn = False
        page.screenshot(path=str(shot))
        browser.close()
    return {"partitions_page_s": round(dt, 2), "partitions_page_count_shown": drawn}


# --------------------------------------------------------------------------- driver


def _postgres(base: Path) -> tuple[str, Path]:
    from urllib.parse import urlsplit, urlunsplit

    import psycopg

    from clay_core.vectordb import start_embedded

    pgdir = base / "pgsrv"
    pgdir.mkdir()
    pgdir.chmod(0o755)
    url = start_embedded(pgdir / "pg")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE DATABASE dagster_bench")
    db = urlunsplit(urlsplit(url)._replace(path="/dagster_bench", scheme="postgresql+psycopg2"))
    return db, pgdir / "pg"


def run(quick: bool = False, sizes: tuple[int, int, int, int] | None = None) -> dict:
    from clay_core.vectordb import stop_embedded

    n_events, n_backfill, n_iterate, windows = sizes or (QUICK if quick else FULL)
    start = _first_monday(WEEKS)
    result: dict = {"tiles": TILES, "weeks": WEEKS, "sizes": [n_events, n_backfill, n_iterate, windows]}
    with tempfile.TemporaryDirectory(prefix="scale_dagster_") as tmp:
        tmp_path = Path(tmp)
        tmp_path.chmod(0o755)
        pg_url, pgdata = _postgres(tmp_path)
        try:
            for storage in ("sqlite", "postgres"):
                base = tmp_path / storage
                _dagster_home(base, pg_url if storage == "postgres" else None)
                env = _env(base, start, WEEKS, **({"CLAY_DAGSTER_PG_URL": pg_url} if storage == "postgres" else {}))
                row = _worker(["--fill", str(n_events), str(n_backfill), str(n_iterate)], env)
                row.update(_worker(["--load"], env))
                row.update(_ui(base, env, storage))
                result[storage] = row
        finally:
            stop_embedded(pgdata)
        for mode, per_run in (("per_partition", "1"), ("batched", "13")):
            base = tmp_path / f"backfill-{mode}"
            _dagster_home(base, None)
            env = _env(base, _first_monday(windows), windows, CLAY_PARTITIONS_PER_RUN=per_run)
            result[f"backfill_{mode}"] = _worker(["--backfill", str(windows)], env)
    b1, b2 = result["backfill_per_partition"], result["backfill_batched"]
    result["backfill_run_ratio"] = round(b1["runs"] / max(b2["runs"], 1), 1)
    return result


if __name__ == "__main__":
    argv = sys.argv[1:]
    if argv[:1] == ["--fill"]:
        print(RESULT + json.dumps(_fill(int(argv[1]), int(argv[2]), int(argv[3]))))
    elif argv[:1] == ["--load"]:
        print(RESULT + json.dumps(_load_time()))
    elif argv[:1] == ["--backfill"]:
        print(RESULT + json.dumps(_backfill(int(argv[1]))))
    else:
        sizes = next((tuple(int(x) for x in a.split("=", 1)[1].split(",")) for a in argv if a.startswith("--sizes=")), None)
        print(json.dumps(run(quick="--quick" in argv, sizes=sizes), indent=None if "--json" in argv else 2))

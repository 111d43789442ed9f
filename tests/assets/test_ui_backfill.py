"""A real deployment on loopback: dagster-daemon + dagster-webserver, a backfill, and a browser.

The backfill (2 tiles x 4 windows of scenes → chips → embeddings) is launched through the
webserver's GraphQL API exactly as the UI's "Materialize → backfill" dialog does; the daemon
runs it with the project's dagster.yaml (run queue, `gpu` pool of 1). One partition's scene
read fails once; the step retry re-reads it and every partition is materialized exactly once.
Then headless Chromium (Debian's, driven by Playwright) opens the asset graph and a
partition page and checks that every asset and the thumbnail mosaic render.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance

from clay_assets.partitions import register_tiles

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TILES = ["31UFU", "32UNB"]
WINDOWS = ["2024-01-01", "2024-01-08", "2024-01-15", "2024-01-22"]
FLAKY = "31UFU|2024-01-08"
ARTIFACTS = ROOT / "test-artifacts"
ALL = ["raw_scenes", "chip_cubes", "embeddings", "pca", "change_scores", "vectors", "head_model", "head_predictions"]
BACKFILLED = ["raw_scenes", "chip_cubes", "embeddings"]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gql(port: int, query: str, variables: dict | None = None) -> dict:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            body = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"GraphQL HTTP {exc.code}: {exc.read()[:2000]!r}") from None
    assert "errors" not in body, body
    return body["data"]


@pytest.fixture(scope="module")
def deployment(tmp_path_factory, pg_url):
    base = tmp_path_factory.mktemp("deploy")
    home, dagster_home = base / "clay", base / "dagster"
    home.mkdir()
    dagster_home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", dagster_home / "dagster.yaml")
    # the tile dimension is dynamic: register the tiles before the backfill names them
    with DagsterInstance.from_config(str(dagster_home)) as inst:
        register_tiles(inst, TILES)
    ws = base / "workspace.yaml"
    ws.write_text(
        f"load_from:\n  - python_file:\n      relative_path: {ROOT / 'tests' / 'support' / 'ui_defs.py'}\n"
        f"      working_directory: {ROOT}\n      attribute: defs\n"
    )
    env = dict(
        os.environ,
        CLAY_HOME=str(home), DAGSTER_HOME=str(dagster_home), DATABASE_URL=pg_url,
        CLAY_TILES=",".join(TILES), CLAY_START="2024-01-01", CLAY_END="2024-03-04",
        CLAY_SYNTHETIC_SIZE="256", CLAY_CHIP_SIZE="64", CLAY_FLAKY_PARTITION=FLAKY,
        PYTHONPATH=str(ROOT), CLAY_MAX_CONCURRENT="1",
    )
    port = _free_port()
    logs = base / "logs"
    logs.mkdir()
    procs = [
        subprocess.Popen([str(BIN / "dagster-webserver"), "-w", str(ws), "-h", "127.0.0.1", "-p", str(port)],
                         env=env, cwd=ROOT, stdout=open(logs / "webserver.log", "w"), stderr=subprocess.STDOUT),
        subprocess.Popen([str(BIN / "dagster-daemon"), "run", "-w", str(ws)],
                         env=env, cwd=ROOT, stdout=open(logs / "daemon.log", "w"), stderr=subprocess.STDOUT),
    ]
    try:
        deadline = time.time() + 180
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=5)
                data = _gql(port, "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus "
                                  "locationOrLoadError { __typename ... on PythonError { message } } } } } }")
                entries = data["workspaceOrError"]["locationEntries"]
                if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                    errors = [e["locationOrLoadError"] for e in entries if e["locationOrLoadError"]["__typename"] == "PythonError"]
                    assert not errors, errors
                    break
            except (OSError, urllib.error.URLError, AssertionError) as exc:  # still starting
                if isinstance(exc, AssertionError) and "PythonError" in str(exc):
                    raise
                pass
            time.sleep(1)
        else:
            pytest.fail("dagster-webserver did not come up: " + (logs / "webserver.log").read_text()[-3000:])
        yield {"port": port, "env": env, "home": home, "dagster_home": dagster_home, "logs": logs}
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()


@pytest.fixture(scope="module")
def backfill(deployment):
    port = deployment["port"]
    keys = [f"{w}|{t}" for t in TILES for w in WINDOWS]
    data = _gql(
        port,
        """mutation($p: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $p) {
             __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } } }""",
        {"p": {"partitionNames": keys, "assetSelection": [{"path": [a]} for a in BACKFILLED], "fromFailure": False}},
    )["launchPartitionBackfill"]
    assert data["__typename"] == "LaunchBackfillSuccess", data
    bid = data["backfillId"]
    deadline = time.time() + 900
    status = None
    while time.time() < deadline:
        status = _gql(port, "query($id: String!) { partitionBackfillOrError(backfillId: $id) { ... on PartitionBackfill { status } } }",
                      {"id": bid})["partitionBackfillOrError"]["status"]
        if status not in ("REQUESTED",):
            break
        time.sleep(3)
    return {"id": bid, "status": status, "keys": keys}


def test_backfill_completes_with_each_partition_once_despite_a_failure(deployment, backfill):
    assert backfill["status"] in ("COMPLETED", "COMPLETED_SUCCESS"), (
        backfill["status"], (deployment["logs"] / "daemon.log").read_text()[-3000:])
    os.environ["DAGSTER_HOME"] = str(deployment["dagster_home"])
    inst = DagsterInstance.get()
    try:
        for name in BACKFILLED:
            recs = inst.fetch_materializations(AssetKey(name), limit=100).records
            per_key: dict[str, int] = {}
            for r in recs:
                per_key[r.partition_key] = per_key.get(r.partition_key, 0) + 1
            assert per_key == {k: 1 for k in backfill["keys"]}, name
        # the flaky partition really failed once and was retried inside its run
        assert (deployment["home"] / "flaky-failed-once").exists()
        from dagster import DagsterEventType, EventRecordsFilter

        retries = inst.get_event_records(EventRecordsFilter(event_type=DagsterEventType.STEP_UP_FOR_RETRY))
        assert len(retries) == 1
    finally:
        inst.dispose()


def _launch_browser():
    from playwright.sync_api import sync_playwright

    pw = sync_playwright().start()
    browser = pw.chromium.launch(
        executable_path=CHROMIUM, headless=True,
        args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
              "--disable-sync", "--no-first-run", "--disable-quic"],
    )
    return pw, browser


def _dismiss_welcome(page) -> None:
    skip = page.get_by_role("button", name="Skip")
    try:
        skip.wait_for(timeout=5_000)
        skip.click()
    except Exception:  # noqa: BLE001 - the dialog only shows on a fresh instance
        pass


def test_browser_shows_asset_graph_and_partition_mosaic(deployment, backfill):
    ARTIFACTS.mkdir(exist_ok=True)
    port = deployment["port"]
    pw, browser = _launch_browser()
    try:
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.goto(f"http://127.0.0.1:{port}/asset-groups", wait_until="networkidle", timeout=120_000)
        _dismiss_welcome(page)
        for name in ALL:
            page.get_by_text(name, exact=True).first.wait_for(timeout=60_000)
        page.screenshot(path=str(ARTIFACTS / "asset-graph.png"))

        key = "2024-01-01|31UFU"
        page.goto(f"http://127.0.0.1:{port}/assets/chip_cubes?view=partitions&partition={key}",
                  wait_until="networkidle", timeout=120_000)
        _dismiss_welcome(page)
        row = page.locator("tr", has=page.get_by_text("mosaic", exact=True))
        row.get_by_text("[Show Markdown]").click()
        img = page.locator("img[src^='data:image/png;base64']").first
        img.wait_for(timeout=60_000)
        size = page.evaluate("(el) => [el.complete, el.naturalWidth, el.naturalHeight]", img.element_handle())
        page.screenshot(path=str(ARTIFACTS / "chip-cubes-partition-mosaic.png"))
        assert size[0] and size[1] > 100 and size[2] > 20, f"mosaic image did not load: {size}"
        # readable, not a 274 x 70 strip: chips of >= 96 px with a caption row under them
        assert size[2] >= 96 + 12 and size[1] >= 96, f"mosaic too small to read: {size}"
    finally:
        browser.close()
        pw.stop()

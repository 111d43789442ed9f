"""`clay-assets explore` on a planted world: its JSON API, what it refuses, that it cannot write,
and the page in headless Chromium (screenshots in test-artifacts/).

One world per module: 1 tile x 7 weekly windows of the synthetic source through the real
runner (15 Dagster materializations, Zarr, Postgres), 4 clearings planted in week 5, each one
chip of 16; the detector (flat 3-observation baseline) confirms an event for each. The explorer runs as
the CLI starts it: ``clay-assets explore`` in its own process, on the module's database.
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
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import psycopg
import pytest
from dagster import DagsterInstance

from clay_assets.explorer import explorer_url
from clay_assets.resources import ChangeSettings
from clay_assets.runner import materialize_graph
from clay_core.types import PartitionId
from tests.support.pipeline import small_resources, small_source

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
TILES = ["31UFU"]
WINDOWS = [(date(2024, 1, 1) + timedelta(weeks=i)).isoformat() for i in range(7)]
DETECTOR = dict(n_components=3, n_harmonics=0, detector_baseline_obs=3, detector_k=2, detector_threshold=4.0)
LAST = WINDOWS[-1]
QUERY = "31UFU_r001c001"  # a planted clearing


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def world(tmp_path_factory, pg_url):
    src = small_source(tiles=TILES, clearings_per_tile=4, change_at=[4], cloud_every=0)
    home = tmp_path_factory.mktemp("explorer") / "clay"
    resources = dict(small_resources(home, pg_url, source=src), change_settings=ChangeSettings(**DETECTOR))
    with DagsterInstance.ephemeral() as instance:  # the runs' records are not what is tested here
        assert not materialize_graph(TILES, WINDOWS, resources, instance).failures
    planted = {f"{p.tile}_r{p.row0 // 64:03d}c{p.col0 // 64:03d}": p.acquired
               for p in src.get_source().planted_changes(TILES)}
    assert len(planted) == 4 and set(planted.values()) == {date(2024, 1, 29)}
    return {"home": home, "pg_url": pg_url, "planted": planted}


@pytest.fixture(scope="module")
def server(world):
    """``clay-assets explore`` in its own process, as a user starts it."""
    port = _free_port()
    env = dict(os.environ, CLAY_HOME=str(world["home"]), DATABASE_URL=world["pg_url"], PYTHONPATH=str(ROOT))
    log = open(world["home"] / "explore.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "clay_assets.cli", "explore", "--port", str(port)], env=env,
                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(base + "/api/overview", timeout=5)
                break
            except (OSError, urllib.error.URLError):
                if proc.poll() is not None or time.time() > deadline:
                    pytest.fail("clay-assets explore did not come up: " + (world["home"] / "explore.log").read_text())
                time.sleep(0.5)
        yield {"base": base, "proc": proc, **world}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _get(server, path: str, method: str = "GET") -> tuple[int, dict | bytes, str]:
    req = urllib.request.Request(server["base"] + path, method=method)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            body, status, ctype = resp.read(), resp.status, resp.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        body, status, ctype = exc.read(), exc.code, exc.headers.get("Content-Type", "")
    return status, (json.loads(body) if "json" in ctype else body), ctype


def _ids(results: list[dict]) -> list[tuple[str, str]]:
    return [(r["chip_id"], r["acquired"]) for r in results]


# -- the API ------------------------------------------------------------------------------------


def test_similar_to_a_planted_clearing_lists_the_other_clearings_first(server):
    planted = server["planted"]
    query = QUERY
    assert query in planted
    status, body, _ = _get(server, f"/api/similar?chip={query}&k=20")
    assert status == 200, body
    assert body["query"] == {"chip_id": query, "acquired": "2024-02-12"}  # its latest observation
    # every other clearing's observations since its clearing outrank everything else
    cleared = {(c, d.isoformat()) for c, first in planted.items() if c != query
               for d in (date.fromisoformat(w) for w in WINDOWS) if d >= first}
    got = _ids(body["results"])
    assert set(got[: len(cleared)]) == cleared, got
    assert all(c not in planted for c, _ in got[len(cleared):])
    assert query not in {c for c, _ in got}
    # the filters reach the SQL function
    status, body, _ = _get(server, f"/api/similar?chip={query}&k=50&tiles=31UFU&from=2024-02-05&min_similarity=0.5")
    assert status == 200 and body["results"]
    assert all(r["tile"] == "31UFU" and r["acquired"] >= "2024-02-05" and r["similarity"] >= 0.5
               for r in body["results"])


def test_chips_of_a_week_carry_scores_and_events(server):
    status, body, _ = _get(server, f"/api/chips?tiles=31UFU&window={LAST}")
    assert status == 200, body
    chips = {c["chip_id"]: c for c in body["chips"]}
    assert len(chips) == 16 and all(c["tile"] == "31UFU" for c in chips.values())
    with_events = {c for c, v in chips.items() if "event" in v}
    assert with_events == {c for c in server["planted"] if c.startswith("31UFU")}
    w, s, e, n = chips[QUERY]["bounds"]
    assert 4 < w < e < 5 and 53 < s < n < 54  # WGS84 degrees: 31UFU is near Amsterdam
    status, body, _ = _get(server, "/api/overview")
    assert body["tiles"] == TILES and body["windows"] == WINDOWS


def test_timeline_of_a_changed_chip_shows_its_event_and_baseline(server):
    chip = QUERY
    status, body, _ = _get(server, f"/api/timeline?chip={chip}")
    assert status == 200, body
    assert [s["acquired"] for s in body["series"]] == WINDOWS
    (event,) = body["events"]
    assert event["first_date"] == server["planted"][chip].isoformat()
    assert event["thumbnails"] == ["2024-01-15", "2024-01-22", "2024-01-29", "2024-02-05"]
    before = [s for s in body["series"] if s["acquired"] < event["first_date"]]
    after = [s for s in body["series"] if s["acquired"] >= event["first_date"]]
    assert all(s["pc1"] is not None for s in body["series"]) and body["pc1_available"]
    # the clearing moves PC1 far outside the first baseline's spread, and a new baseline follows it
    first = [s for s in before if s["baseline"] is not None]
    assert first and {s["baseline_segment"] for s in first} == {0}
    spread = max(abs(s["pc1"] - s["baseline"]) for s in first)
    assert abs(after[0]["pc1"] - first[-1]["baseline"]) > 20 * spread
    assert after[-1]["baseline_segment"] == 1 and abs(after[-1]["pc1"] - after[-1]["baseline"]) < 5 * spread + 0.1
    assert [s["change_flag"] for s in after] == [True] * len(after)


def test_thumbnails_are_pngs_from_the_data_root_only(server):
    status, body, ctype = _get(server, "/api/thumb?chip=31UFU_r001c002&date=2024-01-29")
    assert status == 200 and ctype == "image/png" and body[:8] == b"\x89PNG\r\n\x1a\n"
    # a row pointing outside the data root (a tampered or foreign database) is not served
    where = "chip_id = '31UFU_r000c000' AND acquired = '2024-01-01'"
    with psycopg.connect(server["pg_url"], autocommit=True) as conn:
        old = conn.execute(f"SELECT thumbnail_uri FROM clay.observations WHERE {where}").fetchone()[0]
        try:
            for bad in ("/etc/passwd", str(server["home"] / "data" / ".." / "explore.log"), "../../../etc/hostname",
                        str(server["home"] / "data" / "chips")):
                conn.execute(f"UPDATE clay.observations SET thumbnail_uri = %s WHERE {where}", (bad,))
                status, body, _ = _get(server, "/api/thumb?chip=31UFU_r000c000&date=2024-01-01")
                assert status == 404 and "not a PNG file under the data root" in body["error"], (bad, body)
        finally:
            conn.execute(f"UPDATE clay.observations SET thumbnail_uri = %s WHERE {where}", (old,))


@pytest.mark.parametrize("path, status, message", [
    ("/api/similar?chip=31UFU_r001c002&k=1000000000", 400, "k must be an integer in 1..200, got 1000000000"),
    ("/api/similar?chip=31UFU_r001c002&k=0", 400, "k must be an integer in 1..200"),
    ("/api/similar?chip=31UFU_r001c002&k=1e9", 400, "k must be an integer in 1..200, got '1e9'"),
    ("/api/similar?chip=31UFU_r001c002&min_similarity=nan", 400, "min_similarity must be a number in [-1, 1]"),
    ("/api/similar?chip=31UFU_r001c002';DROP TABLE clay.observations;--", 400, "is not a chip id"),
    ("/api/similar?chip=31UFU_r001c002&tiles=31UFU') OR 1=1 --", 400, "is not an MGRS tile"),
    ("/api/similar?chip=31UFU_r001c002&from=2024-02-30", 400, "from '2024-02-30' is not a calendar date"),
    ("/api/similar?chip=31UFU_r001c002&from=2024-02-10&to=2024-02-01", 400, "from 2024-02-10 is after to 2024-02-01"),
    ("/api/similar?chip=31UFU_r001c002&limit=5", 400, "unknown parameter 'limit'"),
    ("/api/similar?chip=31UFU_r009c009", 404, "chip '31UFU_r009c009' is not in clay.chips"),
    ("/api/similar?chip=31UFU_r001c002&date=2023-01-01", 404, "has no observation on 2023-01-01"),
    ("/api/similar", 400, "chip is required"),
    ("/api/timeline?chip=<script>alert(1)</script>", 400, "is not a chip id"),
    ("/api/timeline?chip=31UFU_r009c009", 404, "is not in clay.chips"),
    ("/api/chips?window=2024-02-07", 400, "window 2024-02-07 is not a weekly window; windows start on Mondays"),
    ("/api/chips", 400, "window is required"),
    ("/api/thumb?chip=31UFU_r001c002&date=../../etc/passwd", 400, "is not a date"),
    ("/api/thumb?chip=31UFU_r009c009&date=2024-01-01", 404, "has no observation on 2024-01-01"),
    ("/api/labeled?pos=31UFU_r001c002", 400, "is not an observation; write CHIP@YYYY-MM-DD"),
    ("/api/labeled?pos=31UFU_r009c009@2024-01-01", 404, "not in clay.chips: 31UFU_r009c009@2024-01-01"),
    ("/api/labeled?neg=31UFU_r001c002@2024-02-12", 400, "pos is required"),
    ("/api/probe?pos=31UFU_r001c002@2024-02-12", 400, "neg is required for the probe"),
    ("/api/probe?pos=31UFU_r001c002@2024-02-12&neg=31UFU_r001c002@2024-02-12", 400,
     "labelled both positive and negative"),
    ("/api/labeled?pos=" + ",".join(f"31UFU_r000c{i:03d}@2024-01-01" for i in range(101)), 400,
     "at most 100 labelled observations"),
])
def test_bad_parameters_get_a_4xx_with_a_clear_message(server, path, status, message):
    got, body, ctype = _get(server, path.replace(" ", "%20").replace("<", "%3C").replace(">", "%3E"))
    assert (got, "json" in ctype) == (status, True), body
    assert message in body["error"], body["error"]
    assert "\n" not in body["error"]


def test_the_explorer_cannot_write(server):
    # only GET routes: a write method is refused by the app itself
    for method in ("POST", "PUT", "DELETE"):
        assert _get(server, "/api/similar?chip=31UFU_r001c002", method)[0] == 405
    with psycopg.connect(server["pg_url"], autocommit=True) as conn:
        users = {r[0] for r in conn.execute(
            "SELECT usename FROM pg_stat_activity WHERE application_name = 'clay-explorer'").fetchall()}
        assert users == {"clay_explorer"}  # the server process connects as the reader role only
        grants = conn.execute(
            "SELECT c.relname, p.priv FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace, "
            "unnest(ARRAY['INSERT', 'UPDATE', 'DELETE', 'TRUNCATE']) AS p(priv) WHERE n.nspname = 'clay' "
            "AND c.relkind IN ('r', 'v', 'p') AND has_table_privilege('clay_explorer', c.oid, p.priv)").fetchall()
        assert grants == []
        assert not conn.execute("SELECT has_schema_privilege('clay_explorer', 'clay', 'CREATE') OR "
                                "has_database_privilege('clay_explorer', current_database(), 'TEMP')").fetchone()[0]
        rows_before = conn.execute("SELECT count(*) FROM clay.observations").fetchone()[0]
    # and a connection of that role's kind, used by the same code, fails to write
    from clay_core.errors import ConfigError
    from clay_core.vectordb import VectorStore
    from clay_assets.explorer.queries import Explorer, reader_url

    with VectorStore(server["pg_url"], 192) as owner:
        url = reader_url(owner, role="clay_explorer_t")
        with pytest.raises(ConfigError, match="can write schema clay; the explorer only runs as a read-only role"):
            Explorer(server["pg_url"], None)  # the owner's own URL is refused
    ex = Explorer(url, None)
    try:
        conn = ex._connection()  # the explorer's own connection
        for stmt in ("DELETE FROM clay.observations", "CREATE TEMP TABLE t (x int)"):
            with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
                conn.execute(stmt)
        conn.execute("SET default_transaction_read_only = off")  # the role may; it still cannot write
        for stmt in ("DELETE FROM clay.observations", "CREATE TEMP TABLE t (x int)",
                     "CREATE TABLE public.t (x int)", "SELECT lo_create(0)"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(stmt)
    finally:
        ex.close()
    with psycopg.connect(server["pg_url"]) as conn:
        assert conn.execute("SELECT count(*) FROM clay.observations").fetchone()[0] == rows_before


def test_probe_scores_are_the_fitted_probe_s_probabilities(server):
    """The probe ranks in SQL with a linearisation of clay_core.heads.fit_probe's pipeline: its
    probabilities equal the pipeline's own on the same embeddings."""
    from clay_core.heads import fit_probe
    from clay_core.vectordb import VectorStore

    pos = ["31UFU_r001c000@2024-02-12", "31UFU_r003c000@2024-02-12"]  # clearings
    neg = ["31UFU_r000c003@2024-02-12", "31UFU_r000c000@2024-02-12"]  # bare soil (the lookalike), forest
    status, body, _ = _get(server, f"/api/probe?pos={','.join(pos)}&neg={','.join(neg)}&k=20")
    assert status == 200, body
    with VectorStore(server["pg_url"], 192) as store:
        frame, emb = store.embeddings()
    key = {(c, d.isoformat()): i for i, (c, d) in enumerate(zip(frame["chip_id"], frame["acquired"]))}
    lab = [key[tuple(o.split("@"))] for o in pos + neg]
    probe = fit_probe("explorer", emb[lab], np.array([True, True, False, False]),
                      np.array([o.split("@")[0] for o in pos + neg]))
    got = np.array([r["probability"] for r in body["results"]])
    want = probe.score(emb[[key[i] for i in _ids(body["results"])]])
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert list(got) == sorted(got, reverse=True)
    # 2 clearings against bare soil and forest: the other clearings' cleared observations come first
    cleared = {(c, w) for c, first in server["planted"].items() for w in WINDOWS if w >= first.isoformat()}
    cleared -= {tuple(o.split("@")) for o in pos}
    assert set(_ids(body["results"])[: len(cleared)]) == cleared


def test_foreign_hosts_and_a_home_without_data_are_refused(server, tmp_path):
    # a page on another site that resolves its own name to 127.0.0.1 (DNS rebinding) gets nothing
    req = urllib.request.Request(server["base"] + "/api/overview", headers={"Host": "evil.example"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=30)
    assert err.value.code == 400
    status, _, _ = _get(server, "/")
    assert status == 200
    # a CLAY_HOME without platform data: one line naming the fix, exit 2, nothing created
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(CLAY_HOME=str(tmp_path / "empty"), PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-m", "clay_assets.cli", "explore", "--port", "1"], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    assert "no platform data under" in out.stderr and "clay-assets demo" in out.stderr
    assert not (tmp_path / "empty" / "pg").exists()


def test_explorer_url_names_the_partition():
    pid = PartitionId("2024-01-29", "31UFU")
    assert explorer_url(pid) == "http://127.0.0.1:8765/?tiles=31UFU&window=2024-01-29"
    assert explorer_url(pid.key, "http://h:1/", chip="31UFU_r001c002") == \
        "http://h:1/?tiles=31UFU&window=2024-01-29&chip=31UFU_r001c002"


# -- the page in headless Chromium -------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    pw = sync_playwright().start()
    b = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                           args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                                 "--disable-component-update", "--disable-sync", "--no-first-run"])
    try:
        yield b
    finally:
        b.close()
        pw.stop()


def _open(browser, url: str, requests: list, problems: list):
    page = browser.new_page(viewport={"width": 1500, "height": 950})
    page.on("request", lambda r: requests.append(r.url))
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.goto(url, wait_until="networkidle", timeout=60_000)
    page.wait_for_selector("body[data-ready='1']", timeout=30_000)
    return page


def _results(page) -> list[tuple[str, str]]:
    return page.eval_on_selector_all("#results .result", "els => els.map(e => [e.dataset.chip, e.dataset.acquired])")


def test_page_similar_labels_and_timeline(server, browser):
    """The page on the planted world: the map, a click on a clearing, labelled search and probe,
    the timeline; nothing loaded from anywhere but the explorer itself."""
    ARTIFACTS.mkdir(exist_ok=True)
    planted = server["planted"]
    requests, problems = [], []
    page = _open(browser, explorer_url(PartitionId(LAST, "31UFU"), server["base"]), requests, problems)

    # the map: the tile's 16 chips coloured by change score, its 4 events marked
    assert page.get_attribute("body", "data-chips") == "16"
    assert page.locator("path.chip").count() == 16
    assert page.locator("path.event-marker").count() == len(planted)
    assert page.input_value("#window") == LAST
    fills = {page.get_attribute(f"path.chip-{c}", "fill") for c in planted if c.startswith("31UFU")}
    calm = page.get_attribute("path.chip-31UFU_r000c000", "fill")
    assert calm not in fills  # a changed chip is not coloured like an unchanged one
    page.hover("path.chip-31UFU_r000c000")
    tip = page.locator(".leaflet-tooltip .tip img")
    tip.wait_for(timeout=10_000)
    page.wait_for_function("() => document.querySelector('.leaflet-tooltip .tip img').naturalWidth > 0")
    page.screenshot(path=str(ARTIFACTS / "explorer-map.png"))

    # a click on a planted clearing: the other clearings' cleared observations come first
    page.fill("#k", "20")
    page.click(f"path.chip-{QUERY}", force=True)
    page.wait_for_selector("body[data-results='similar']", timeout=30_000)
    similar = _results(page)
    cleared = {(c, w) for c, first in planted.items() if c != QUERY for w in WINDOWS
               if w >= first.isoformat()}
    assert len(similar) == 20 and set(map(tuple, similar[: len(cleared)])) == cleared, similar
    page.wait_for_selector("#timeline .event", timeout=30_000)
    page.screenshot(path=str(ARTIFACTS / "explorer-similar.png"))

    # label two positives (clearings) and two negatives (results that are not), each a different chip
    def firsts(chips):
        return [i for i, (c, _) in enumerate(similar) if c in chips and c not in {similar[j][0] for j in range(i)}]

    positives = firsts(planted)[:2]
    others = firsts({c for c, _ in similar} - set(planted))[:2]
    assert len(positives) == len(others) == 2
    cards = page.locator("#results .result")
    for i in positives:
        cards.nth(i).locator(".mark-pos").click()
    for i in others:
        cards.nth(i).locator(".mark-neg").click()
    assert (page.inner_text("#n-pos"), page.inner_text("#n-neg")) == ("2", "2")
    page.click("#run-labeled")
    page.wait_for_selector("body[data-results='labeled']", timeout=30_000)
    labelled = _results(page)
    assert labelled and labelled != similar  # the labels changed the ranking
    negatives = {similar[i][0] for i in others}
    assert not negatives & {c for c, _ in labelled[: len(cleared)]}
    page.screenshot(path=str(ARTIFACTS / "explorer-labelled.png"))
    page.click("#run-probe")
    page.wait_for_selector("body[data-results='probe']", timeout=30_000)
    probed = _results(page)
    assert probed != similar
    marked = {tuple(similar[i]) for i in positives}  # the probe ranks every other observation, the query chip's too
    rest = {(c, w) for c, first in planted.items() for w in WINDOWS if w >= first.isoformat()} - marked
    assert set(map(tuple, probed[: len(rest)])) == rest, probed

    # the timeline of the changed chip: its event at the planted date, thumbnails around it
    first = planted[QUERY].isoformat()
    assert page.get_attribute("#timeline .event", "data-first") == first
    assert page.locator("#timeline circle.obs.flag").count() == 3  # the 3 observations since the clearing
    assert page.locator("#timeline polyline.baseline").count() == 2  # before and after the change
    thumbs = page.locator(f"#event-thumbs .event-row[data-first='{first}'] img")
    assert thumbs.count() == 4
    page.wait_for_function("() => [...document.querySelectorAll('#event-thumbs img')].every(i => i.naturalWidth > 0)")
    page.locator("#timeline-section").scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "explorer-timeline.png"))

    assert not problems, problems
    outside = [u for u in requests if not u.startswith(server["base"] + "/") and not u.startswith("data:")]
    assert not outside, outside  # offline: the page and its map library come from the explorer
    page.close()

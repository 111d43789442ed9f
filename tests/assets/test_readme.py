"""The README's code blocks run as written.

Convention (stated here and in the README's opening):

* Every ```bash block is run with bash (``set -e``), every ```sql block statement by
  statement with psycopg, against a platform prepared by the fixture.
* A block preceded by ``<!-- readme-test: skip: REASON -->`` on the line before its fence is
  not run; the reason says what runs instead. Only the blocks in :data:`SKIPPABLE` may be
  skipped (``make demo``/``make test``/``make dev`` and package installs), so a new command
  cannot be skipped silently.
* Other languages (```python fragments, ```console transcripts, ```yaml) are illustrations
  and are not run.

The prepared platform is ``clay-assets demo --quiet`` in a temporary ``CLAY_HOME`` with its
own embedded Postgres: that is ``make demo`` without the install step (the ``make demo`` line
itself is skipped by design, because the fixture runs its equivalent; ``make test`` would run
this suite inside itself). Bash blocks run in a temporary folder where ``.venv`` points at the
project's, so relative paths like ``.venv/bin/clay-assets`` work and nothing is written into
the checkout.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
SKIP = re.compile(r"<!--\s*readme-test:\s*skip:\s*(?P<reason>[^>]+?)\s*-->\s*$")
SKIPPABLE = ("make demo", "make test", "make dev", "pip install")


def blocks(text: str) -> list[dict]:
    """Fenced blocks: language, body, line number and the skip reason (if marked)."""
    out, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        m = re.match(r"^```(\w*)\s*$", lines[i])
        if not m or not m.group(1):
            i += 1
            continue
        j = i + 1
        while not lines[j].startswith("```"):
            j += 1
        prev = lines[i - 1] if i else ""
        skip = SKIP.search(prev)
        out.append({"lang": m.group(1), "body": "\n".join(lines[i + 1 : j]), "line": i + 1,
                    "skip": skip.group("reason") if skip else None})
        i = j + 1
    return out


def _runnable(lang: str) -> list[dict]:
    return [b for b in blocks(README.read_text()) if b["lang"] == lang and not b["skip"]]


def test_skipped_blocks_are_only_the_make_targets_and_installs():
    skipped = [b for b in blocks(README.read_text()) if b["skip"]]
    assert skipped, "the make demo/make test block is marked"
    for b in skipped:
        commands = [l.split("#")[0].strip() for l in b["body"].splitlines() if l.split("#")[0].strip()]
        assert all(c.startswith(SKIPPABLE) for c in commands), (b["line"], commands)
        assert len(b["skip"]) > 10, f"line {b['line']}: say why it is not run"


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    """``make demo`` without the install: ``clay-assets demo`` into a temp CLAY_HOME."""
    base = Path(os.environ.get("TMPDIR", "/tmp")) / f"clay-readme-{os.getpid()}"
    base.mkdir(mode=0o755, exist_ok=True)  # the embedded postgres runs unprivileged when we are root
    work = tmp_path_factory.mktemp("readme-cwd")
    (work / ".venv").symlink_to(ROOT / ".venv")
    env = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "DATABASE_URL")}
    env.update(CLAY_HOME=str(base / "clay"))
    demo = subprocess.run([str(Path(sys.executable).parent / "clay-assets"), "demo", "--quiet"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1200)
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    url = subprocess.run([str(Path(sys.executable).parent / "clay-assets"), "db-url"], env=env, capture_output=True,
                         text=True, timeout=120, check=True).stdout.strip()
    yield {"env": env, "cwd": work, "url": url, "demo": demo.stdout}
    subprocess.run([str(Path(sys.executable).parent / "clay-assets"), "db", "stop"], env=env, timeout=120)
    import shutil

    shutil.rmtree(base, ignore_errors=True)


def test_demo_prints_a_search_and_events_scored_against_the_planted_truth(platform):
    out = platform["demo"]
    assert "Similarity search: chips most like" in out
    assert "Change report (per-date flags vs planted clearings)" in out
    assert "Confirmed change events (clay.change_events:" in out
    events = out.split("Events vs planted clearings:")[1]
    m = re.search(r"true positives (\d+): precision ([\d.]+), recall ([\d.]+)", events)
    assert m and int(m.group(1)) >= 3 and float(m.group(3)) >= 0.75, events
    with psycopg.connect(platform["url"]) as conn:
        (n,) = conn.execute("SELECT count(*) FROM clay.change_events").fetchone()
    assert n >= int(m.group(1))


@pytest.mark.parametrize("block", _runnable("bash"), ids=lambda b: f"line{b['line']}")
def test_bash_block_runs_as_written(block, platform):
    proc = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", block["body"]], cwd=platform["cwd"],
                          env=platform["env"], capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"README line {block['line']}:\n{block['body']}\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"


def _statements(sql: str) -> list[str]:
    body = "\n".join(l for l in sql.splitlines() if not l.strip().startswith("--"))
    return [s.strip() for s in body.split(";") if s.strip()]


@pytest.mark.parametrize("block", _runnable("sql"), ids=lambda b: f"line{b['line']}")
def test_sql_block_runs_as_written(block, platform):
    # `clay-assets db-url` again: a bash block may have run `clay-assets db stop`
    url = subprocess.run([str(Path(sys.executable).parent / "clay-assets"), "db-url"], env=platform["env"],
                         capture_output=True, text=True, timeout=120, check=True).stdout.strip()
    with psycopg.connect(url) as conn:
        for stmt in _statements(block["body"]):
            rows = conn.execute(stmt).fetchall()
            if "similar" in stmt:
                assert rows, f"README line {block['line']}: no rows from {stmt}"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_make_clean_then_make_dev_serves_the_ui(tmp_path):
    """`make clean` then `make dev` (the README's skipped block) on a fresh CLAY_HOME: the UI
    comes up with the code location's assets. The server is stopped at the end."""
    import json
    import signal
    import time
    import urllib.request

    env = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "DATABASE_URL")}
    env["CLAY_HOME"] = str(tmp_path / "clay")
    (tmp_path / "clay" / "data").mkdir(parents=True)
    subprocess.run(["make", "clean"], cwd=ROOT, env=env, check=True, capture_output=True, timeout=120)
    assert not (tmp_path / "clay").exists()
    port = _free_port()
    proc = subprocess.Popen(["make", "dev", f"DEV_ARGS=-p {port}"], cwd=ROOT, env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    query = json.dumps({"query": "{ assetNodes { assetKey { path } } }"}).encode()
    names: set[str] = set()
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None and "raw_scenes" not in names:
            time.sleep(2)
            try:
                req = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", data=query,
                                             headers={"Content-Type": "application/json"})
                body = json.loads(urllib.request.urlopen(req, timeout=10).read())
                names = {n["assetKey"]["path"][-1] for n in (body.get("data") or {}).get("assetNodes") or []}
            except OSError:
                continue
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
    assert {"raw_scenes", "embeddings", "vectors"} <= names, out[-3000:]
    assert (tmp_path / "clay" / "dagster" / "dagster.yaml").is_file()

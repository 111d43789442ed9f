"""Dagster's own storage on the same Postgres server as the vectors (deploy/dagster-postgres.yaml)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import psycopg
from dagster import AssetKey, DagsterInstance, materialize
from urllib.parse import urlsplit, urlunsplit

from clay_assets.definitions import ALL_ASSETS
from clay_assets.partitions import make_key, register_tiles
from tests.support.pipeline import small_resources

ROOT = Path(__file__).resolve().parents[2]


def test_materializations_are_recorded_in_postgres_instance(tmp_path, pg_url):
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS clay_dagster_test")
        conn.execute("CREATE DATABASE clay_dagster_test")
    # Same server, its own database: swap the database in the URL's path.
    parts = urlsplit(pg_url)
    db_url = urlunsplit(parts._replace(path="/clay_dagster_test"))
    # SQLAlchemy 2.1 maps postgresql:// to psycopg 3, whose server-side binding breaks
    # dagster-postgres' NOTIFY; name the psycopg2 driver that dagster-postgres installs.
    dagster_url = urlunsplit(urlsplit(db_url)._replace(scheme="postgresql+psycopg2"))
    home = tmp_path / "dagster"
    home.mkdir()
    shutil.copy(ROOT / "deploy" / "dagster-postgres.yaml", home / "dagster.yaml")
    os.environ["DAGSTER_HOME"] = str(home)
    os.environ["CLAY_DAGSTER_PG_URL"] = dagster_url
    inst = DagsterInstance.get()
    try:
        assert type(inst.run_storage).__name__ == "PostgresRunStorage"
        register_tiles(inst, ["31UFU"])
        key = make_key("31UFU", "2024-01-01")
        res = small_resources(tmp_path / "clay", pg_url)
        assert materialize(ALL_ASSETS, selection=["raw_scenes"], partition_key=key, resources=res, instance=inst).success
        assert str(key) in {str(k) for k in inst.get_materialized_partitions(AssetKey("raw_scenes"))}
    finally:
        inst.dispose()
    # the run is in Postgres, not in a SQLite file under DAGSTER_HOME
    assert not list(home.rglob("*.db"))
    with psycopg.connect(db_url) as conn:
        (n,) = conn.execute("SELECT count(*) FROM runs").fetchone()
    assert n == 1

"""clay_core.vectordb.server: the embedded server behind ``database_url`` (the flavours are
tested in test_pgvector08.py, which needs the pixeltable package)."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import psycopg

from clay_core import vectordb as cdb
from clay_core.vectordb import database_url


def test_database_url_prefers_the_given_url_else_embedded(tmp_path):
    # the caller passes DATABASE_URL in: clay_core reads no environment variable
    given = "postgresql://u:pw@example.invalid:5/x"
    assert database_url(tmp_path / "home", database_url=given) == given
    assert database_url(tmp_path / "home", database_url=f"  {given}\n") == given
    # as root, postgres runs as 'pgserver', which cannot enter pytest's 0700 tmp_path (and
    # start_embedded never widens it): a home under a traversable temp dir
    base = Path(tempfile.mkdtemp(prefix="clay-test-url-"))
    base.chmod(0o755)
    home = base / "home"
    try:
        url = database_url(home)
        assert url.startswith("postgresql://") and (home / "pg" / "PG_VERSION").exists()
        t0 = time.monotonic()
        assert database_url(home) == url  # reuse: no new server, fast
        assert time.monotonic() - t0 < 0.5
        assert database_url(home, database_url="  ") == url  # blank: the embedded server
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        assert cdb.stop_embedded(home / "pg")
    assert not cdb.stop_embedded(home / "pg")
    shutil.rmtree(base, ignore_errors=True)

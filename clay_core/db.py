"""Postgres + pgvector store for chip embeddings, with SQL similarity search.

Layout (schema ``clay``)::

    clay.schema_version   applied migrations (version, description, applied_at)
    clay.meta             key/value: embedding dimension, checksum of the SQL functions
    clay.observations     one row per chip observation (chip_id, acquired) + embedding vector(dim)
    clay.chips            view over clay.observations: what users query

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
``hnsw.ef_search``, default 100; filtered queries raise it to ``clay.filter_oversample`` (default
4) x k / selectivity, the selectivity being the planner's estimate).
``k`` + the query chip's observations above 1000 (pgvector's ef_search limit) -> exact search.

The embedded server (``database_url``/``start_embedded``) is a ``pgserver`` cluster (Postgres 16
with pgvector) under ``<clay_home>/pg`` that listens on a Unix socket only and keeps running after
the Python process exits.  Tests start one in a temporary directory::

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
import struct
import time
import warnings
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Iterator, Sequence
from urllib.parse import quote

import numpy as np
import pandas as pd
import psycopg
from psycopg import sql
from psycopg.adapt import Dumper
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import Format

from .errors import ConfigError, DatabaseError

__all__ = [
    "ChipNotFoundError",
    "LoadStats",
    "VectorStore",
    "database_url",
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


def start_embedded(pgdata: str | Path, *, timeout: float = 60.0, tune: bool = True) -> str:
    """Start (or reuse) a pgserver cluster with data directory ``pgdata``; return its URI.

    Safe to call concurrently from several processes (a file lock next to ``pgdata``
    serialises starts; a running cluster is found in a few milliseconds without it).  A
    ``postmaster.pid`` left by a crash or a reboot whose pid now belongs to another process is
    removed before starting.  A cluster created here gets memory settings sized for vector search
    (``tune``: shared_buffers = RAM/4 up to 2GB, max_wal_size 4GB, temp_buffers 256MB).
    """
    pgdata = Path(pgdata).expanduser().resolve()
    marker = pgdata / _TUNED_MARKER
    if marker.exists():
        url = _running_embedded_url(pgdata)
        if url:
            return url
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(pgdata.parent / f".{pgdata.name}.start.lock"):
        url = _running_embedded_url(pgdata, wait=timeout if _read_pidfile(pgdata) else 0.0)
        if url:
            if not marker.exists():  # a cluster started by someone else: never restart it
                marker.write_text("not tuned: cluster was already running\n")
            return url
        fresh = not (pgdata / "PG_VERSION").exists()
        _remove_stale_pidfile(pgdata)
        pgserver = _import_pgserver()
        # pgserver caches one handle per pgdata and would not restart a server stopped since
        pgserver.PostgresServer._instances.pop(pgdata, None)
        try:
            pgserver.get_server(pgdata, cleanup_mode=None)
        except Exception as exc:  # noqa: BLE001 - pgserver raises assorted types
            raise DatabaseError(
                f"could not start the embedded PostgreSQL server in {pgdata}: "
                f"{type(exc).__name__}: {exc}. Its log is {pgdata / 'log'}; set DATABASE_URL to "
                "use another server instead."
            ) from exc
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
    _import_pgserver()
    from pgserver._commands import pg_ctl  # type: ignore[import-untyped]

    user = None
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        import pwd

        user = pwd.getpwuid(pgdata.stat().st_uid).pw_name  # pgserver runs postgres as 'pgserver'
    pg_ctl(args, pgdata=pgdata, user=user, timeout=120)


def stop_embedded(pgdata: str | Path, *, mode: str = "fast") -> bool:
    """Stop the embedded server of ``pgdata``; False if it was not running."""
    pgdata = Path(pgdata).expanduser().resolve()
    info = _read_pidfile(pgdata)
    if info is None or not _is_postgres(info["pid"], pgdata):
        return False
    _pg_ctl(pgdata, ["-w", "-m", mode, "stop"])
    return True


def embedded_psql() -> Path:
    """Path of the psql binary shipped with pgserver (psql is often not on PATH)."""
    _import_pgserver()
    from pgserver._commands import POSTGRES_BIN_PATH  # type: ignore[import-untyped]

    return Path(POSTGRES_BIN_PATH) / "psql"


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


def _import_pgserver():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
        import pgserver  # type: ignore[import-untyped]
    return pgserver


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
_TYPES = {c: t for c, t, _ in ROW_COLUMNS}


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
        "CREATE INDEX observations_tile_acquired_idx ON clay.observations (tile, acquired)",
        "CREATE TABLE IF NOT EXISTS clay.meta (key text PRIMARY KEY, value text NOT NULL)",
        f"INSERT INTO clay.meta VALUES ('dim', '{dim}') ON CONFLICT (key) DO NOTHING",
        "COMMENT ON TABLE clay.observations IS "
        "'One row per chip observation (chip_id = fixed ground cell, acquired = date). "
        "Loaded per Dagster partition (partition_key = YYYY-MM-DD|TILE) by clay_core.db.'",
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
    return [
        "CREATE INDEX observations_acquired_idx ON clay.observations (acquired)",
        "CREATE INDEX observations_bounds_gist_idx ON clay.observations "
        "USING gist (box(point(west, south), point(east, north)))",
    ]


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


MIGRATIONS = [
    (1, "clay.observations, clay.chips view, HNSW cosine index", _migration_1),
    (2, "indexes for filtered search (acquired, bounds box)", _migration_2),
    (3, "clay.change_events", _migration_3),
]


def _create_index_sql(m: int, ef_construction: int) -> str:
    return (
        f"CREATE INDEX {HNSW_INDEX} ON clay.observations USING hnsw "
        f"(embedding vector_cosine_ops) WITH (m = {int(m)}, ef_construction = {int(ef_construction)})"
    )


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

  IF ef <= 1000 THEN
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
      || ' FROM (SELECT o.chip_id, o.tile, o.acquired, o.embedding <=> $1 AS dist'
      || ' FROM clay.observations o WHERE true' || filter_sql
      || ' ORDER BY o.embedding <=> $1 LIMIT $2) s'
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
    'SELECT o.chip_id, o.tile, o.acquired, 1 - (o.embedding <=> $1) AS similarity'
    || ' FROM clay.observations o WHERE 1 - (o.embedding <=> $1) >= $3' || filter_sql
    || ' ORDER BY 1 - (o.embedding <=> $1) DESC, o.chip_id, o.acquired LIMIT $2'
    USING query, k, min_similarity, exclude_chips, tiles, date_from, date_to, bbox;
END
"""

_QUERY_EMBEDDING = r"""
  IF query_chip_id IS NULL THEN
    RAISE EXCEPTION 'chip_id must not be NULL' USING ERRCODE = 'null_value_not_allowed';
  END IF;
  SELECT o.embedding INTO q FROM clay.observations o
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


def _functions_sql(dim: int, ext_schema: str, iterative: bool) -> list[str]:
    path = f"SET search_path = pg_catalog, {_ident(ext_schema)}, pg_temp"
    sets = f"{path}\nSET hnsw.ef_search = 40" + ("\nSET hnsw.iterative_scan = off" if iterative else "")
    filt = ("tiles text[] DEFAULT NULL, date_from date DEFAULT NULL, date_to date DEFAULT NULL, "
            "bbox double precision[] DEFAULT NULL")
    body = (_KNN_BODY.replace("{default_ef}", str(DEFAULT_EF_SEARCH))
            .replace("{dim}", str(dim))
            .replace("{filter_safety}", repr(FILTER_SAFETY))
            .replace("{iterative}", "true" if iterative else "false"))
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
  SELECT avg(e.embedding), array_agg(e.chip_id) INTO q, found
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


class _PackedVector(bytes):
    """A vector already in pgvector's binary wire format (marker type for the COPY dumper)."""


class _PackedVectorDumper(Dumper):
    format = Format.BINARY

    def dump(self, obj):  # noqa: D102 - already encoded
        return obj


def _pack_vectors(emb: np.ndarray) -> list[bytes]:
    n, dim = emb.shape
    buf = np.empty((n, 4 + 4 * dim), dtype=np.uint8)
    buf[:, :4] = np.frombuffer(struct.pack(">HH", dim, 0), dtype=np.uint8)
    buf[:, 4:] = np.ascontiguousarray(emb, dtype=">f4").view(np.uint8).reshape(n, 4 * dim)
    return [row.tobytes() for row in buf]


def _pg_float(v: float) -> str:
    """float8 as Postgres prints it (shortest round-trip; 2.0 -> '2')."""
    r = repr(float(v))
    return r[:-2] if r.endswith(".0") else r


def _wkt_polygons(west, south, east, north) -> list[str]:
    out = []
    for w, s, e, n in zip(west, south, east, north):
        w, s, e, n = _pg_float(w), _pg_float(s), _pg_float(e), _pg_float(n)
        out.append(f"POLYGON(({w} {s}, {e} {s}, {e} {n}, {w} {n}, {w} {s}))")
    return out


def _text_column(s: pd.Series, name: str, required: bool) -> list:
    isna = s.isna().to_numpy()
    if required and isna.any():
        raise ConfigError(f"rows.{name} has {int(isna.sum())} missing values; every row needs one")
    vals = s.astype(object).to_numpy()
    return [None if na else str(v) for v, na in zip(vals, isna)]


def _float_array(s: pd.Series, name: str) -> np.ndarray:
    try:
        return pd.to_numeric(s, errors="raise").to_numpy(dtype=np.float64, na_value=np.nan)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"rows.{name} must be numeric: {exc}") from None


def _nullable_floats(a: np.ndarray) -> list:
    out = a.astype(object)
    out[np.isnan(a)] = None
    return out.tolist()


def _prepare_rows(partition_key: str, rows: pd.DataFrame, embeddings: np.ndarray,
                  dim: int) -> tuple[list[list], list[str]]:
    """Validate the frame; return (column value lists in ROW_COLUMNS order + vectors, names)."""
    if not isinstance(partition_key, str) or not partition_key:
        raise ConfigError(f"partition_key must be a non-empty string, got {partition_key!r}")
    if not isinstance(rows, pd.DataFrame):
        raise ConfigError(f"rows must be a pandas DataFrame, got {type(rows).__name__}")
    emb = np.asarray(embeddings)
    n = len(rows)
    if n == 0 and emb.size == 0:
        return [], []
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
    norms = np.linalg.norm(emb, axis=1)
    bad = np.flatnonzero(~finite | (norms == 0))
    if bad.size:
        ids = rows["chip_id"].iloc[bad[:5]].tolist()
        raise ConfigError(
            f"{bad.size} embedding(s) are zero or not finite (cosine similarity is undefined), "
            f"e.g. chips {ids}"
        )

    cols: dict[str, list] = {}
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
            cols[name] = [partition_key] * n
        elif not present:
            cols[name] = [None] * n  # lon/lat are filled from the bounds below
        elif typ == "text":
            cols[name] = _text_column(s, name, required)
        elif typ == "date":
            try:
                d = pd.to_datetime(s)
            except (ValueError, TypeError) as exc:
                raise ConfigError(f"rows.{name} must hold dates: {exc}") from None
            if d.isna().any():
                raise ConfigError(f"rows.{name} has missing values; every row needs a date")
            cols[name] = list(d.dt.date)
        elif typ == "timestamptz":
            try:
                t = pd.to_datetime(s, utc=True)  # naive values are taken as UTC
            except (ValueError, TypeError) as exc:
                raise ConfigError(f"rows.{name} must hold timestamps: {exc}") from None
            py = t.dt.to_pydatetime()
            isna = t.isna().to_numpy()
            cols[name] = [None if na else v for v, na in zip(py, isna)]
        elif typ == "float8":
            a = _float_array(s, name)
            if required and not np.isfinite(a).all():
                raise ConfigError(f"rows.{name} must be finite numbers (chip bounds, WGS84)")
            cols[name] = _nullable_floats(a)
        elif typ == "bool":
            vals = s.astype(object).to_numpy()
            isna = s.isna().to_numpy()
            cols[name] = [None if na else bool(v) for v, na in zip(vals, isna)]
        else:  # pragma: no cover - ROW_COLUMNS is fixed
            raise AssertionError(typ)

    w, so, e, no = (np.asarray(cols[c], dtype=np.float64) for c in ("west", "south", "east", "north"))
    if (w > e).any() or (so > no).any():
        i = int(np.flatnonzero((w > e) | (so > no))[0])
        raise ConfigError(
            f"chip {cols['chip_id'][i]} has bounds west={w[i]} south={so[i]} east={e[i]} "
            f"north={no[i]}; need west <= east and south <= north"
        )
    for name, centre in (("lon", (w + e) / 2), ("lat", (so + no) / 2)):
        if name not in rows.columns:
            cols[name] = centre.tolist()
        else:
            a = np.asarray([np.nan if v is None else v for v in cols[name]], dtype=np.float64)
            cols[name] = np.where(np.isnan(a), centre, a).tolist()

    key = pd.DataFrame({"c": cols["chip_id"], "a": cols["acquired"]})
    dup = key.duplicated(keep=False).to_numpy()
    if dup.any():
        ex = key[dup].head(3).values.tolist()
        raise ConfigError(
            f"rows has {int(dup.sum())} rows sharing (chip_id, acquired), e.g. {ex}; one row per "
            "chip observation is allowed"
        )
    out = [cols[c] for c in _COLS] + [_pack_vectors(emb)]
    return out, _COLS + ["embedding"]


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
        self._stage_ready = False
        self._iterative: bool | None = None
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

    def _register_types(self) -> None:
        if self._vector_oid is not None:
            return
        from pgvector.psycopg import register_vector

        with self._errors("registering the vector type"):
            cur = self._cursor()
            cur.execute("SELECT 'vector'::regtype::oid")
            oid = cur.fetchone()[0]
            register_vector(self._conn)
            dumper = type("_VecDumper", (_PackedVectorDumper,), {"oid": oid})
            self._conn.adapters.register_dumper(_PackedVector, dumper)
            self._vector_oid = oid

    def table_dim(self) -> int | None:
        """Dimension of clay.observations.embedding, None if the table does not exist."""
        with self._errors("reading the embedding dimension"):
            cur = self._cursor()
            cur.execute(
                "SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
                "WHERE a.attrelid = to_regclass('clay.observations') AND a.attname = 'embedding' "
                "AND NOT a.attisdropped"
            )
            row = cur.fetchone()
        if not row:
            return None
        m = re.search(r"\((\d+)\)", row[0])
        return int(m.group(1)) if m else None

    def _check_dim(self) -> None:
        have = self.table_dim()
        if have is not None and have != self.dim:
            raise DatabaseError(
                f"clay.observations on {self._where} stores vector({have}) embeddings but this "
                f"store was opened with dim={self.dim}: the embedding model changed. Use the "
                f"matching model (dim {have}), or a new database/DATABASE_URL for dim {self.dim} "
                "(or drop schema clay to start over)."
            )

    # -- schema -----------------------------------------------------------------------------

    def ensure_schema(self, *, m: int = 16, ef_construction: int = 64,
                      create_index: bool = True) -> None:
        """Create/upgrade extension, schema, tables, indexes and SQL functions (idempotent).

        ``m``/``ef_construction`` are the HNSW build parameters used when the index is created
        (an existing index is kept; ``rebuild_index`` changes them).  ``create_index=False`` for
        bulk loads: build it afterwards with ``rebuild_index``.
        """
        _check_hnsw_params(m, ef_construction)
        with self._errors("creating the clay schema"), self._conn.transaction():
            cur = self._cursor()
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_ADVISORY_LOCK,))
            ext = self._server_vector(cur)
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
            ext_version, ext_schema = ext
            cur.execute("CREATE SCHEMA IF NOT EXISTS clay")
            cur.execute(
                "CREATE TABLE IF NOT EXISTS clay.schema_version (version integer PRIMARY KEY, "
                "description text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            self._check_dim()
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
            if create_index and self.dim <= HNSW_MAX_DIM and not self._index_exists(cur):
                cur.execute(_create_index_sql(m, ef_construction))
            # functions: re-created when their text (dim, pgvector features) changes
            iterative = _version_tuple(ext_version) >= (0, 8)
            stmts = _functions_sql(self.dim, ext_schema, iterative)
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
        self._register_types()

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
        if self.dim > HNSW_MAX_DIM:
            raise ConfigError(f"pgvector cannot index vectors over {HNSW_MAX_DIM} dims ({self.dim})")
        cur_params = self.index_params() or {"m": 16, "ef_construction": 64}
        m = cur_params["m"] if m is None else m
        ef_construction = cur_params["ef_construction"] if ef_construction is None else ef_construction
        _check_hnsw_params(m, ef_construction)
        if maintenance_work_mem is None:
            n = self.count()
            need = int(n * (self.dim * 4 + 16 * m + 200) * 1.3 / 2**20) + 64
            maintenance_work_mem = f"{min(max(need, 64), 4096)}MB"
        t0 = time.perf_counter()
        with self._errors("rebuilding the HNSW index"), self._conn.transaction():
            cur = self._cursor()
            cur.execute("SELECT set_config('maintenance_work_mem', %s, true)",
                        (maintenance_work_mem,))
            if parallel_workers is not None:
                cur.execute("SELECT set_config('max_parallel_maintenance_workers', %s, true)",
                            (str(int(parallel_workers)),))
            cur.execute(f"DROP INDEX IF EXISTS clay.{HNSW_INDEX}")
            try:
                with self._conn.transaction():
                    cur.execute(_create_index_sql(m, ef_construction))
            except psycopg.errors.DiskFull:  # /dev/shm too small for a parallel build (docker)
                _log.warning("parallel HNSW build ran out of shared memory; building serially")
                cur.execute("SELECT set_config('max_parallel_maintenance_workers', '0', true)")
                cur.execute(_create_index_sql(m, ef_construction))
        return time.perf_counter() - t0

    @contextlib.contextmanager
    def bulk_load(self, **index_kwargs) -> Iterator["VectorStore"]:
        """``with store.bulk_load(): store.load_partition(...)...``: no index during the loads,
        one index build at the end (much faster than maintaining HNSW row by row)."""
        self.drop_index()
        try:
            yield self
        finally:
            self.rebuild_index(**index_kwargs)

    # -- loading ----------------------------------------------------------------------------

    def _before_insert(self, cur) -> None:
        """Hook between DELETE and INSERT of ``load_partition`` (tests inject failures here)."""

    def load_partition(self, partition_key: str, rows: pd.DataFrame,
                       embeddings: np.ndarray, *, staging: bool = False) -> LoadStats:
        """Replace every row of ``partition_key`` by ``rows``/``embeddings``, atomically.

        Default: DELETE the partition's rows, then binary-COPY the new ones straight into
        clay.observations, in one transaction: a failure anywhere (tested at every step) leaves
        the previous rows as they were. Zero rows empties the partition.

        ``staging=True`` binary-COPYs into a temporary staging table first, then DELETEs and
        INSERT ... SELECTs in the same transaction: the same guarantee, with a second copy of
        the rows on the server (about 25% more server CPU, 8.5x instead of 10.7x the ORM
        insert rate in docs/benchmarks_vector.md).
        """
        t0 = time.perf_counter()
        values, names = _prepare_rows(partition_key, rows, embeddings, self.dim)
        n = len(values[0]) if values else 0
        self._register_types()
        col_list = ", ".join(_COLS)
        stage = f"clay_stage_{self.dim}"
        if n and staging and not self._stage_ready:
            # one staging table per session, emptied at every commit/rollback
            stage_cols = ", ".join(f"{c} {t}" for c, t, _ in ROW_COLUMNS)
            with self._errors("creating the staging table"):
                cur = self._cursor()
                cur.execute(
                    f"CREATE TEMP TABLE IF NOT EXISTS {stage} ({stage_cols}, "
                    f"embedding vector({self.dim})) ON COMMIT DELETE ROWS"
                )
                cur.execute(f"ALTER TABLE {stage} ALTER COLUMN embedding SET STORAGE PLAIN")
            self._stage_ready = True
        types = [_TYPES[c] for c in _COLS] + [self._vector_oid]
        with self._errors(f"loading partition {partition_key!r}"), self._conn.transaction():
            cur = self._cursor()
            cur.execute("SET LOCAL lock_timeout = '60s'")
            # concurrent loads of the same partition run one after the other (the second one's
            # DELETE would not see the first one's new rows and its INSERT would collide)
            cur.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
                        (_ADVISORY_LOCK & 0x7FFFFFFF, partition_key))
            if n and staging:
                with cur.copy(
                    f"COPY pg_temp.{stage} ({col_list}, embedding) FROM STDIN (FORMAT BINARY)"
                ) as copy:
                    copy.set_types(types)
                    write = copy.write_row
                    for row in zip(*values):
                        write(row)
            cur.execute("DELETE FROM clay.observations WHERE partition_key = %s", (partition_key,))
            self._before_insert(cur)
            if n:
                try:
                    if staging:
                        cur.execute(
                            f"INSERT INTO clay.observations ({col_list}, geom_wkt, embedding) "
                            f"SELECT {col_list}, format('POLYGON((%s %s, %s %s, %s %s, %s %s, "
                            "%s %s))', west, south, east, south, east, north, west, north, west, "
                            f"south), embedding FROM pg_temp.{stage}"
                        )
                    else:
                        wkt = _wkt_polygons(*(values[_COLS.index(c)]
                                              for c in ("west", "south", "east", "north")))
                        with cur.copy(
                            f"COPY clay.observations ({col_list}, embedding, geom_wkt) "
                            "FROM STDIN (FORMAT BINARY)"
                        ) as copy:
                            copy.set_types(types + ["text"])
                            write = copy.write_row
                            for row in zip(*values, wkt):
                                write(row)
                except psycopg.errors.UniqueViolation as exc:
                    raise DatabaseError(
                        f"loading partition {partition_key!r}: "
                        f"{exc.diag.message_detail or exc} A chip observation (chip_id, acquired) "
                        "can belong to one partition only and is already stored under another "
                        "partition_key; nothing was changed."
                    ) from exc
        secs = time.perf_counter() - t0
        return LoadStats(rows=n, seconds=secs, rows_per_s=(n / secs) if secs > 0 else 0.0)

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

    def duplicate_observations(self) -> int:
        """(chip_id, acquired) pairs stored more than once: 0 unless the unique key was lost."""
        with self._errors("checking for duplicate observations"):
            cur = self._cursor()
            cur.execute(
                "SELECT count(*) FROM (SELECT 1 FROM clay.observations GROUP BY chip_id, acquired "
                "HAVING count(*) > 1) d"
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
                "SELECT o.chip_id, o.acquired, o.geom_wkt, o.lon, o.lat, o.cloud_fraction, o.thumbnail_uri, o.cube_uri "
                "FROM clay.observations o JOIN unnest(%s::text[], %s::date[]) AS q(chip_id, acquired) "
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

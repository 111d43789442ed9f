"""The ``clay`` schema, version by version, and the DDL the store shares with it.

Layout (schema ``clay``)::

    clay.schema_version   applied migrations (version, description, applied_at)
    clay.meta             key/value: embedding dimension, storage, checksum of the SQL functions
    clay.observations     one row per chip observation (chip_id, acquired) + embedding
                          vector(dim), or halfvec(dim) with pgvector >= 0.7
    clay.chips            view over clay.observations (+ geom_wkt computed from the bounds):
                          what users query
    clay.change_events    confirmed changes per chip
    clay.class_areas      per partition, date and class: the area a task head predicts
    clay.labels           analysts' labelled chip observations, per named label set
    clay.detections       per label set and observation: the linear probe's score
    clay.pixel_changes    per chip observation: the pixel path's share of changed pixels and date

Migrations are applied in order, each once, in the transaction of
``VectorStore.ensure_schema`` under a transaction-level advisory lock (:data:`ADVISORY_LOCK`),
so concurrent processes never run one twice; the wait for it is bounded (``lock_timeout``), so a
session that holds it (any role can take an advisory lock) makes schema work fail, not hang.  :func:`ensure_class_areas` applies the class-areas
migration alone: its writer needs the table but not the embedding dimension.
"""

from __future__ import annotations

import re
from typing import Callable

from clay_core.errors import ConfigError, DatabaseError
from clay_core.vectordb.changes import migration_7 as _migration_7
from clay_core.vectordb.rows import COLS, ROW_COLUMNS

__all__ = [
    "ADVISORY_LOCK",
    "CLASS_AREAS_TABLE",
    "DETECTIONS_TABLE",
    "FILTER_INDEXES",
    "LABELS_TABLE",
    "PIXEL_CHANGES_TABLE",
    "HNSW_INDEX",
    "HNSW_MAX_DIM",
    "HNSW_MAX_DIM_HALFVEC",
    "MIGRATIONS",
    "SCHEMA",
    "STORAGES",
    "TABLE",
    "apply_migrations",
    "check_hnsw_params",
    "check_storage",
    "create_index_sql",
    "ensure_class_areas",
    "prepare_schema",
    "max_index_dim",
    "storage_of",
    "version_tuple",
]

SCHEMA = "clay"
TABLE = "clay.observations"
CLASS_AREAS_TABLE = "clay.class_areas"
LABELS_TABLE = "clay.labels"
DETECTIONS_TABLE = "clay.detections"
PIXEL_CHANGES_TABLE = "clay.pixel_changes"
HNSW_INDEX = "observations_embedding_hnsw_idx"
HNSW_MAX_DIM = 2000  # pgvector's limit for indexed vector columns
HNSW_MAX_DIM_HALFVEC = 4000  # ... and for halfvec columns (pgvector >= 0.7)
STORAGES = ("vector", "halfvec")  # embedding column types (halfvec: fp16, pgvector >= 0.7)
ADVISORY_LOCK = 0x636C6179  # "clay": serialises schema changes across processes

#: builds one migration's statements from (dim, m, ef_construction, create_index)
MigrationFn = Callable[[int, int, int, bool], list[str]]


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
        dict(FILTER_INDEXES)["observations_tile_acquired_idx"],
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
        stmts.append(create_index_sql(m, ef_construction))
    stmts.append(f"CREATE VIEW clay.chips AS SELECT {_view_columns('geom_wkt')} FROM clay.observations")
    stmts.append("COMMENT ON VIEW clay.chips IS 'Chip observations with embeddings; "
                 "see clay.similar_chips(chip_id, k, min_similarity, acquired)'")
    return stmts


def _view_columns(geom_wkt: str) -> str:
    """The clay.chips view's column list, with ``geom_wkt`` as the footprint expression."""
    return ", ".join(
        ["chip_id", "tile", "acquired"]
        + [c for c in COLS if c not in ("chip_id", "tile", "acquired")]
        + [geom_wkt, "embedding", "loaded_at"]
    )


def _migration_2(dim: int, m: int, ef_construction: int, create_index: bool) -> list[str]:
    """Indexes for the filtered searches (date range, bbox)."""
    return [ddl for name, ddl in FILTER_INDEXES
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
    return [
        # same columns, names and types: CREATE OR REPLACE keeps the view's grants and comment
        f"CREATE OR REPLACE VIEW clay.chips AS SELECT {_view_columns(f'{_WKT_SQL} AS geom_wkt')} "
        "FROM clay.observations",
        "ALTER TABLE clay.observations DROP COLUMN geom_wkt",
        "COMMENT ON COLUMN clay.chips.geom_wkt IS "
        "'Chip footprint as WKT POLYGON in WGS84 (lon lat), computed from west/south/east/north.'",
    ]


_CLASS_AREAS_VERSION, _CLASS_AREAS_DESCRIPTION = 5, "clay.class_areas"


def _class_areas_ddl() -> list[str]:
    # IF NOT EXISTS: databases from before this migration have the table the writer created
    return [
        f"""CREATE TABLE IF NOT EXISTS {CLASS_AREAS_TABLE} (
                    partition_key text NOT NULL,
                    tile text NOT NULL,
                    acquired date NOT NULL,
                    class text NOT NULL,
                    pixels bigint NOT NULL CHECK (pixels >= 0),
                    area_m2 double precision NOT NULL,
                    head_sha256 text,
                    model_id text,
                    loaded_at timestamptz NOT NULL DEFAULT now(),
                    PRIMARY KEY (partition_key, acquired, class))""",
    ]


def _migration_5(dim: int, m: int, ef_construction: int, create_index: bool) -> list[str]:
    """Per-class areas predicted by a task head (written by ``write_class_areas``)."""
    return _class_areas_ddl()


def _migration_6(dim: int, m: int, ef_construction: int, create_index: bool) -> list[str]:
    """Labelled search and probe detections: analysts' label sets and the probe's scores.

    A label names one observation (chip_id, acquired), not a chip: a chip cleared in March is
    forest in January.  ``clay.detections`` is replaced per (tile x week) partition by the
    ``detections`` asset; ``model_version`` identifies the probe that scored a row."""
    return [
        f"""CREATE TABLE {LABELS_TABLE} (
  label_set text NOT NULL CHECK (label_set ~ '^[A-Za-z0-9_.-]{{1,64}}$'),
  chip_id text NOT NULL,
  acquired date NOT NULL,
  label boolean NOT NULL,
  added_at timestamptz NOT NULL DEFAULT now(),
  added_by text NOT NULL DEFAULT current_user,
  PRIMARY KEY (label_set, chip_id, acquired)
)""",
        f"""CREATE TABLE {DETECTIONS_TABLE} (
  label_set text NOT NULL,
  chip_id text NOT NULL,
  tile text NOT NULL,
  acquired date NOT NULL,
  score double precision NOT NULL CHECK (score >= 0 AND score <= 1),
  partition_key text NOT NULL,
  model_version text NOT NULL,
  scored_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (label_set, chip_id, acquired)
)""",
        "CREATE INDEX detections_partition_idx ON clay.detections (partition_key)",
        "CREATE INDEX detections_set_score_idx ON clay.detections (label_set, score DESC)",
        f"COMMENT ON TABLE {LABELS_TABLE} IS 'Labelled chip observations per named label set "
        "(label = true: positive). Written by clay-assets label add; read by the detections asset.'",
        f"COMMENT ON TABLE {DETECTIONS_TABLE} IS 'Linear-probe scores (P(positive)) per label set "
        "and chip observation; rows of a partition_key replaced together. See clay.detections().'",
    ]


def _migration_8(dim: int, m: int, ef_construction: int, create_index: bool) -> list[str]:
    """The pixel path's per chip observation results (clay_core.change.pixels), replaced per
    partition by the loader of the change scores; NULL fraction = history still collected."""
    return [
        f"""CREATE TABLE {PIXEL_CHANGES_TABLE} (
  partition_key text NOT NULL,
  chip_id text NOT NULL,
  tile text NOT NULL,
  acquired date NOT NULL,
  pixel_change_fraction float8 CHECK (pixel_change_fraction >= 0 AND pixel_change_fraction <= 1),
  pixel_change_date date,
  pixels_monitored integer NOT NULL CHECK (pixels_monitored >= 0),
  PRIMARY KEY (chip_id, acquired)
)""",
        f"CREATE INDEX pixel_changes_partition_idx ON {PIXEL_CHANGES_TABLE} (partition_key)",
        f"CREATE INDEX pixel_changes_tile_acquired_idx ON {PIXEL_CHANGES_TABLE} (tile, acquired)",
        f"COMMENT ON TABLE {PIXEL_CHANGES_TABLE} IS 'Per chip observation: share of the chip''s monitored "
        "pixels with a break confirmed by nrt''s MoSum on NDVI so far, the date most of them broke, and "
        "how many pixels are monitored (0 while the history is collected).'",
    ]


# Secondary indexes for filtered searches: migrations 1 and 2 create them, bulk_load() drops them
# during a backfill and recreates them from these definitions.
FILTER_INDEXES = [
    ("observations_tile_acquired_idx",
     "CREATE INDEX IF NOT EXISTS observations_tile_acquired_idx ON clay.observations (tile, acquired)"),
    ("observations_acquired_idx",
     "CREATE INDEX IF NOT EXISTS observations_acquired_idx ON clay.observations (acquired)"),
    ("observations_bounds_gist_idx",
     "CREATE INDEX IF NOT EXISTS observations_bounds_gist_idx ON clay.observations "
     "USING gist (box(point(west, south), point(east, north)))"),
]

#: (version, description, statements) in the order they apply
MIGRATIONS: list[tuple[int, str, MigrationFn]] = [
    (1, "clay.observations, clay.chips view, HNSW cosine index", _migration_1),
    (2, "indexes for filtered search (acquired, bounds box)", _migration_2),
    (3, "clay.change_events", _migration_3),
    (4, "geom_wkt computed by the clay.chips view, no longer stored", _migration_4),
    (_CLASS_AREAS_VERSION, _CLASS_AREAS_DESCRIPTION, _migration_5),
    (6, "clay.labels, clay.detections (labelled search, probe scores)", _migration_6),
    (7, "clay.changed_chips (change between two dates by embeddings)", _migration_7),
    (8, "clay.pixel_changes (pixel-level change per chip observation)", _migration_8),
]


def prepare_schema(cur) -> None:
    """Create schema clay and clay.schema_version when missing (the caller holds the lock)."""
    cur.execute("CREATE SCHEMA IF NOT EXISTS clay")
    cur.execute(
        "CREATE TABLE IF NOT EXISTS clay.schema_version (version integer PRIMARY KEY, "
        "description text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
    )


def _applied(cur) -> set[int]:
    cur.execute("SELECT version FROM clay.schema_version")
    return {r[0] for r in cur.fetchall()}


def apply_migrations(cur, dim: int, m: int, ef_construction: int, create_index: bool,
                     where: str) -> None:
    """Apply every migration not yet recorded in clay.schema_version, in order, in the
    caller's transaction (which holds :data:`ADVISORY_LOCK`).  A database newer than this code
    is refused (``where`` names it)."""
    applied = _applied(cur)
    newest = max(v for v, _, _ in MIGRATIONS)
    if applied and max(applied) > newest:
        raise DatabaseError(
            f"the clay schema on {where} is at version {max(applied)}, newer than "
            f"this code knows ({newest}); upgrade clay-assets"
        )
    for version, description, fn in MIGRATIONS:
        if version in applied:
            continue
        for stmt in fn(dim, m, ef_construction, create_index):
            cur.execute(stmt)
        cur.execute(
            "INSERT INTO clay.schema_version (version, description) VALUES (%s, %s)",
            (version, description),
        )


def ensure_class_areas(conn) -> None:
    """Make sure clay.class_areas exists: apply its migration when it is not recorded, or
    create the table again when someone dropped it.  A lock-free look first, so writers do
    not queue behind a long schema change; the DDL itself runs under :data:`ADVISORY_LOCK`,
    in its own transaction."""
    with conn.transaction():  # explicit: a non-autocommit connection must not stay in it
        if _class_areas_ready(conn):
            return
    with conn.transaction():
        cur = conn.cursor()
        # a session holding the lock (a reader, a stuck client) must not stall the writer
        cur.execute("SELECT set_config('lock_timeout', '30s', true)")
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (ADVISORY_LOCK,))
        prepare_schema(cur)
        for stmt in _class_areas_ddl():
            cur.execute(stmt)
        cur.execute(
            "INSERT INTO clay.schema_version (version, description) VALUES (%s, %s) "
            "ON CONFLICT (version) DO NOTHING", (_CLASS_AREAS_VERSION, _CLASS_AREAS_DESCRIPTION),
        )


def _class_areas_ready(conn) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL, to_regclass('clay.schema_version') "
                       "IS NOT NULL", (CLASS_AREAS_TABLE,)).fetchone()
    if not (row[0] and row[1]):
        return False
    return conn.execute("SELECT EXISTS (SELECT 1 FROM clay.schema_version WHERE version = %s)",
                        (_CLASS_AREAS_VERSION,)).fetchone()[0]


def create_index_sql(m: int, ef_construction: int, storage: str = "vector") -> str:
    """CREATE INDEX of the HNSW cosine index on the embedding column of type ``storage``."""
    ops = "halfvec_cosine_ops" if storage == "halfvec" else "vector_cosine_ops"
    return (
        f"CREATE INDEX {HNSW_INDEX} ON clay.observations USING hnsw "
        f"(embedding {ops}) WITH (m = {int(m)}, ef_construction = {int(ef_construction)})"
    )


def max_index_dim(storage: str) -> int:
    """The most dimensions pgvector's HNSW can index for a column of type ``storage``."""
    return HNSW_MAX_DIM_HALFVEC if storage == "halfvec" else HNSW_MAX_DIM


def check_hnsw_params(m: int, ef_construction: int) -> None:
    """ConfigError unless ``m``/``ef_construction`` are HNSW build parameters pgvector takes."""
    if not isinstance(m, int) or not 2 <= m <= 100:
        raise ConfigError(f"HNSW m must be an integer in [2, 100], got {m!r}")
    if not isinstance(ef_construction, int) or not 4 <= ef_construction <= 1000:
        raise ConfigError(f"HNSW ef_construction must be an integer in [4, 1000], got {ef_construction!r}")
    if ef_construction < 2 * m:
        raise ConfigError(f"HNSW ef_construction ({ef_construction}) must be >= 2 * m ({2 * m})")


def version_tuple(v: str) -> tuple[int, ...]:
    """(major, minor, patch) of a version string such as pgvector's ``0.8.5``."""
    return tuple(int(x) for x in re.findall(r"\d+", v)[:3])


def storage_of(type_name: str) -> str:
    """'halfvec' for 'halfvec(16)' / 'public.halfvec(16)', else 'vector'."""
    return "halfvec" if type_name.split("(")[0].strip().endswith("halfvec") else "vector"


def check_storage(storage: str) -> str:
    """``storage`` normalised to one of :data:`STORAGES`; ConfigError otherwise."""
    s = str(storage).strip().lower() if storage is not None else ""
    if s not in STORAGES:
        raise ConfigError(f"storage must be one of {', '.join(STORAGES)}, got {storage!r}")
    return s

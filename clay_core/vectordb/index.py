"""The HNSW index of ``clay.observations``: its parameters, rebuilds, and bulk loads.

A mixin of ``VectorStore`` (it uses the store's connection and error handling).
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import TYPE_CHECKING, Iterator

import psycopg

from clay_core.errors import ConfigError
from clay_core.vectordb.functions import BQ_INDEX
from clay_core.vectordb.migrations import (
    FILTER_INDEXES,
    HNSW_INDEX,
    check_hnsw_params,
    create_index_sql,
    max_index_dim,
    version_tuple,
)

if TYPE_CHECKING:
    from clay_core.vectordb.store import VectorStore

__all__ = ["DEFAULT_M", "DEFAULT_EF_CONSTRUCTION", "IndexMixin", "binary_index_sql"]

# HNSW build parameters of a new index.  pgvector's own defaults (m=16, ef_construction=64)
# plateau at recall@10 0.92 on 1M clustered 768-d vectors whatever ef_search; these reach 0.99
# at ef_search 400 in p50 3.6 ms (docs/benchmarks_vector.md, benchmarks/vector_search.py --n 1000000).
DEFAULT_M = 32
DEFAULT_EF_CONSTRUCTION = 128

_log = logging.getLogger(__name__)


def binary_index_sql(dim: int, m: int, ef_construction: int) -> str:
    """CREATE INDEX of the binary-quantized index; its expression is the one the SQL functions'
    re-rank path orders by (they must match for the planner to use the index)."""
    return (f"CREATE INDEX {BQ_INDEX} ON clay.observations USING hnsw "
            f"((binary_quantize(embedding)::bit({int(dim)})) bit_hamming_ops) "
            f"WITH (m = {int(m)}, ef_construction = {int(ef_construction)})")


class IndexMixin:
    """Index management of ``VectorStore``."""

    @staticmethod
    def _index_exists(cur) -> bool:
        cur.execute("SELECT to_regclass(%s) IS NOT NULL", (f"clay.{HNSW_INDEX}",))
        return bool(cur.fetchone()[0])

    def index_params(self) -> dict | None:
        """{'m': .., 'ef_construction': ..} of the HNSW index, None if there is none."""
        return self._hnsw_params(HNSW_INDEX)

    def _hnsw_params(self, index: str) -> dict | None:
        """{'m', 'ef_construction'} of the HNSW index ``clay.<index>``, None if there is none."""
        with self._errors(f"reading the index {index}"):
            cur = self._cursor()
            cur.execute(
                "SELECT c.reloptions FROM pg_class c WHERE c.oid = to_regclass(%s)",
                (f"clay.{index}",),
            )
            row = cur.fetchone()
        if not row:
            return None
        opts = dict(o.split("=", 1) for o in (row[0] or []))
        return {"m": int(opts.get("m", 16)), "ef_construction": int(opts.get("ef_construction", 64))}

    def has_binary_index(self) -> bool:
        """Whether the binary-quantized index (``build_binary_index``) exists."""
        return self._hnsw_params(BQ_INDEX) is not None

    def build_binary_index(self, m: int = DEFAULT_M, ef_construction: int = DEFAULT_EF_CONSTRUCTION, *,
                           maintenance_work_mem: str | None = None,
                           parallel_workers: int | None = None) -> float:
        """(Re)build the Hamming HNSW index over ``binary_quantize(embedding)`` (pgvector >= 0.8
        here: the SQL functions' re-rank path is only created there); returns seconds.

        Searches use it only in sessions that ``SET clay.rerank_candidates = N``: the N nearest
        by Hamming distance are re-ranked by exact cosine on the stored embeddings.  Whether it
        pays depends on the embeddings (benchmarks/vector_search.py --binary measures it).
        """
        check_hnsw_params(m, ef_construction)
        version = self.pgvector_version() or "0"
        if version_tuple(version) < (0, 8):
            raise ConfigError(f"the binary-quantized index needs pgvector >= 0.8 (this server has "
                              f"{version}); upgrade the extension or search the HNSW index only")
        t0 = time.perf_counter()
        with self._index_build("building the binary-quantized index", parallel_workers) as cur:
            if maintenance_work_mem is None:  # the graph: dim/8 bytes of bits + neighbours per row
                need = int(self.count() * (self.dim / 8 + 16 * m + 200) * 1.3 / 2**20) + 64
                maintenance_work_mem = f"{min(max(need, 64), 4096)}MB"
            cur.execute("SELECT set_config('maintenance_work_mem', %s, true)", (maintenance_work_mem,))
            cur.execute(f"DROP INDEX IF EXISTS clay.{BQ_INDEX}")
            cur.execute(binary_index_sql(self.dim, m, ef_construction))
        return time.perf_counter() - t0

    def drop_binary_index(self) -> None:
        """Drop the binary-quantized index (searches with clay.rerank_candidates set then fail
        with a message saying so)."""
        self._locked_ddl("dropping the binary-quantized index", [f"DROP INDEX IF EXISTS clay.{BQ_INDEX}"])

    def drop_index(self) -> None:
        """Drop the HNSW index (before a bulk load; ``rebuild_index`` builds it again)."""
        self._locked_ddl("dropping the HNSW index", [f"DROP INDEX IF EXISTS clay.{HNSW_INDEX}"])

    def rebuild_index(self, m: int | None = None, ef_construction: int | None = None, *,
                      maintenance_work_mem: str | None = None,
                      parallel_workers: int | None = None) -> float:
        """Drop and build the HNSW cosine index; returns the build time in seconds.

        Parameters default to the current index's (else DEFAULT_M, DEFAULT_EF_CONSTRUCTION).  The table is
        locked against reads and writes during the build (it runs in one transaction).
        ``maintenance_work_mem`` defaults to an estimate of the graph size (64MB..4GB) so the
        build does not spill; ``parallel_workers`` sets max_parallel_maintenance_workers.
        """
        storage = self.table_storage() or self.storage  # the column's type decides the opclass
        self._storage = storage
        if self.dim > max_index_dim(storage):
            raise ConfigError(f"pgvector cannot index {storage} columns over "
                              f"{max_index_dim(storage)} dims ({self.dim})")
        cur_params = self.index_params() or {"m": DEFAULT_M, "ef_construction": DEFAULT_EF_CONSTRUCTION}
        m = cur_params["m"] if m is None else m
        ef_construction = cur_params["ef_construction"] if ef_construction is None else ef_construction
        check_hnsw_params(m, ef_construction)
        t0 = time.perf_counter()
        with self._index_build("rebuilding the HNSW index", parallel_workers) as cur:
            cur.execute(f"DROP INDEX IF EXISTS clay.{HNSW_INDEX}")
            self._build_hnsw(cur, m, ef_construction, storage, maintenance_work_mem)
        return time.perf_counter() - t0

    @contextlib.contextmanager
    def _index_build(self, action: str, parallel_workers: int | None) -> Iterator:
        """A cursor in one transaction for an index (re)build: ``lock_timeout`` applies to the
        table lock, ``parallel_workers`` (if given) sets max_parallel_maintenance_workers."""
        with self._errors(action), self._conn.transaction():
            cur = self._cursor()
            self._set_lock_timeout(cur)
            if parallel_workers is not None:
                cur.execute("SELECT set_config('max_parallel_maintenance_workers', %s, true)",
                            (str(int(parallel_workers)),))
            yield cur

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
                cur.execute(create_index_sql(m, ef_construction, storage))
        except psycopg.errors.DiskFull:  # /dev/shm too small for a parallel build (docker)
            _log.warning("parallel HNSW build ran out of shared memory; building serially")
            cur.execute("SELECT set_config('max_parallel_maintenance_workers', '0', true)")
            cur.execute(create_index_sql(m, ef_construction, storage))

    @staticmethod
    def _bulk_running(cur) -> bool:
        """Whether a bulk_load of a live session has the filter/HNSW indexes dropped (then
        ensure_schema must not build them under it; a dead session's drop is to be undone)."""
        cur.execute("SELECT EXISTS (SELECT 1 FROM clay.meta m JOIN pg_stat_activity a "
                    "ON a.pid::text = m.value WHERE m.key = 'bulk_load_pid')")
        return bool(cur.fetchone()[0])

    def _set_lock_timeout(self, cur) -> None:
        """In the caller's transaction: fail after ``self.lock_timeout`` waiting for a lock."""
        cur.execute("SELECT set_config('lock_timeout', %s, true)",
                    (f"{int(self.lock_timeout * 1000)}ms",))

    def _locked_ddl(self, action: str, statements: list[str]) -> None:
        """``statements`` in one transaction that waits at most ``lock_timeout`` for locks."""
        with self._errors(action), self._conn.transaction():
            cur = self._cursor()
            self._set_lock_timeout(cur)
            for stmt in statements:
                cur.execute(stmt)

    @contextlib.contextmanager
    def bulk_load(self, **index_kwargs) -> Iterator[VectorStore]:
        """``with store.bulk_load(): store.load_partition(...)...`` for backfills: the HNSW index,
        the binary-quantized one if there is one, and the filter indexes (tile/date/bbox) are
        dropped during the loads and built once at the end, which is much cheaper than
        maintaining them row by row (docs/benchmarks_vector.md).
        The primary key and the partition_key index stay: uniqueness and per-partition
        replacement work as usual.  Searches during the block fall back to exact scans.

        Each partition loaded in the block commits without waiting for its WAL flush; the index
        build at the end commits synchronously and so flushes them all.  A server crash inside
        the block can lose the last partitions reported loaded: re-run the backfill.  The
        indexes are rebuilt (and the table analyzed) even when the block raises, which takes
        minutes at millions of rows; when that fails too (the connection is gone), the block's
        own error is raised (the rebuild's is logged) and the next ``ensure_schema`` builds
        the indexes again (``clay.meta`` records the bulk load's session, so they are not
        built under a live one).
        """
        # the rebuilt index keeps the dropped one's parameters unless new ones are given
        index_kwargs = {**(self.index_params() or {}), **index_kwargs}
        # the binary-quantized index too: dropped for the loads, rebuilt after the HNSW index
        index_kwargs["binary"] = self._hnsw_params(BQ_INDEX)
        failed = False
        try:
            self._bulk = True
            self._locked_ddl("dropping the indexes for a bulk load", [
                "INSERT INTO clay.meta VALUES ('bulk_load_pid', pg_backend_pid()::text) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                f"DROP INDEX IF EXISTS clay.{HNSW_INDEX}",
                f"DROP INDEX IF EXISTS clay.{BQ_INDEX}",
                *(f"DROP INDEX IF EXISTS clay.{name}" for name, _ in FILTER_INDEXES),
            ])
            yield self
        except BaseException:
            failed = True
            raise
        finally:
            self._bulk = False
            try:
                self._finish_bulk_load(index_kwargs)
            except Exception as exc:  # noqa: BLE001 - never hide the block's own error
                if not failed:
                    raise
                _log.error("bulk_load: rebuilding the indexes after the failure failed too "
                           "(%s); the next VectorStore.ensure_schema() builds them", exc)

    def _finish_bulk_load(self, index_kwargs: dict) -> None:
        self._locked_ddl("rebuilding the filter indexes", [ddl for _, ddl in FILTER_INDEXES])
        binary = index_kwargs.pop("binary", None)
        storage = self.table_storage() or self.storage
        if self.dim <= max_index_dim(storage):  # else there was no HNSW index to rebuild
            self.rebuild_index(**index_kwargs)
        if binary is not None:
            self.build_binary_index(**binary, parallel_workers=index_kwargs.get("parallel_workers"))
        with self._errors("analyzing clay.observations after a bulk load"):
            # fresh statistics: the filtered searches steer ef_search from row estimates
            cur = self._cursor()
            cur.execute("ANALYZE clay.observations")
            cur.execute("DELETE FROM clay.meta WHERE key = 'bulk_load_pid'")

"""Loading partitions into ``clay.observations``: one atomically, or many over several
connections, as binary COPY (:mod:`clay_core.vectordb.pgcopy`); and the change events.

A mixin of ``VectorStore`` (it uses the store's connection and error handling).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable

import numpy as np
import pandas as pd
import psycopg

from clay_core.errors import ConfigError, DatabaseError
from clay_core.vectordb.columns import copy_columns
from clay_core.vectordb.migrations import ADVISORY_LOCK
from clay_core.vectordb.pgcopy import BinaryCopy

if TYPE_CHECKING:
    from clay_core.vectordb.store import VectorStore

__all__ = ["LoadStats", "LoadingMixin"]


@dataclass(frozen=True)
class LoadStats:
    """What one load did: rows written, its duration, and the rate."""

    rows: int
    seconds: float
    rows_per_s: float


class LoadingMixin:
    """Partition loads of ``VectorStore``."""

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
        columns = copy_columns(partition_key, rows, embeddings, self.dim, self.storage)
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
                        (self._bulk, ADVISORY_LOCK & 0x7FFFFFFF, partition_key))
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

        def work(store: VectorStore) -> None:
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
                st = type(self)(self.url, self.dim)
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

    def load_pixel_changes(self, partition_key: str, tile: str, scores: pd.DataFrame) -> int:
        """Replace the rows of ``partition_key`` in clay.pixel_changes in one transaction.

        ``scores``: the change scores (chip_id, datetime and the pixel path's
        pixel_change_fraction, pixel_change_date, pixels_monitored); without those columns
        (the pixel path off) the partition's rows are only deleted."""
        cols = ["chip_id", "datetime", "pixel_change_fraction", "pixel_change_date", "pixels_monitored"]
        ok = not scores.empty and set(cols) <= set(scores.columns)
        rows = [] if not ok else [
            (partition_key, str(r.chip_id), tile, pd.Timestamp(r.datetime).date(),
             None if pd.isna(r.pixel_change_fraction) else float(r.pixel_change_fraction),
             None if pd.isna(r.pixel_change_date) else pd.Timestamp(r.pixel_change_date).date(),
             int(r.pixels_monitored))
            for r in scores[cols].itertuples(index=False)
        ]
        insert = ("INSERT INTO clay.pixel_changes (partition_key, chip_id, tile, acquired, pixel_change_fraction, "
                  "pixel_change_date, pixels_monitored) VALUES (%s, %s, %s, %s, %s, %s, %s)")
        return self._replace_rows("clay.pixel_changes", partition_key, insert, rows, "pixel changes")

    def _replace_rows(self, table: str, partition_key: str, insert: str, rows: list[tuple], what: str) -> int:
        """DELETE ``table``'s rows of ``partition_key`` and ``insert`` ``rows``, in one transaction."""
        with self._errors(f"loading {what} of {partition_key}"), self._conn.transaction():
            cur = self._cursor()
            cur.execute(f"DELETE FROM {table} WHERE partition_key = %s", (partition_key,))
            if rows:
                cur.executemany(insert, rows)
        return len(rows)

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
        insert = ("INSERT INTO clay.change_events (partition_key, chip_id, tile, first_date, confirmed_date, "
                  "magnitude, signals, n_obs_baseline) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
                  "ON CONFLICT (chip_id, first_date) DO UPDATE SET partition_key = EXCLUDED.partition_key, "
                  "confirmed_date = EXCLUDED.confirmed_date, magnitude = EXCLUDED.magnitude, "
                  "signals = EXCLUDED.signals, n_obs_baseline = EXCLUDED.n_obs_baseline")
        return self._replace_rows("clay.change_events", partition_key, insert, [(partition_key, *r) for r in rows],
                                  "change events")

"""clay_core.vectordb.class_areas: clay.class_areas comes from its schema migration, which the
writer applies itself (head predictions may run before any embeddings were loaded)."""

from __future__ import annotations

import threading
from datetime import date, timedelta

import psycopg

from clay_core.vectordb import CLASS_AREAS_TABLE, MIGRATIONS, VectorStore, write_class_areas


def _rows(key: str, n: int) -> list[tuple]:
    """(partition_key, tile, acquired, class, pixels, area_m2) of ``n`` classes over two dates."""
    return [(key, key.split("|")[1], date(2024, 1, 1) + timedelta(days=i % 2), f"class{i}", 10 * i,
             100.0 * i) for i in range(n)]


def _one(url: str, query: str, params=()):
    with psycopg.connect(url) as conn:
        return conn.execute(query, params).fetchall()


def test_class_areas_table_comes_from_its_migration(pg_url):
    assert _one(pg_url, "SELECT to_regnamespace('clay')") == [(None,)]  # a database without schema clay
    results, errors = {}, []
    barrier = threading.Barrier(4)

    def writer(i: int) -> None:
        try:
            barrier.wait()
            results[i] = write_class_areas(pg_url, f"2024-01-01|T{i}", _rows(f"2024-01-01|T{i}", 3 + i),
                                           "sha", "model")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # concurrent first writers: one applies the migration, none fails
    assert not errors, errors
    assert results == {i: (3 + i, sum(10 * j for j in range(3 + i))) for i in range(4)}
    assert _one(pg_url, "SELECT version FROM clay.schema_version") == [(5,)]

    # a re-run replaces the partition's rows; a table dropped by hand is created again
    assert write_class_areas(pg_url, "2024-01-01|T0", _rows("2024-01-01|T0", 2), "sha2", "model") == (2, 10)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE {CLASS_AREAS_TABLE}")
    assert write_class_areas(pg_url, "2024-01-01|T1", _rows("2024-01-01|T1", 4), "sha", "model") == (4, 60)
    assert _one(pg_url, f"SELECT count(*) FROM {CLASS_AREAS_TABLE}") == [(4,)]

    # the store's schema applies the other migrations and keeps the class areas
    with VectorStore(pg_url, 8) as store:
        store.ensure_schema()
        assert store.schema_version() == max(v for v, _, _ in MIGRATIONS)
    assert _one(pg_url, "SELECT version FROM clay.schema_version ORDER BY version") == [
        (v,) for v, _, _ in MIGRATIONS]
    assert _one(pg_url, f"SELECT count(*), sum(pixels) FROM {CLASS_AREAS_TABLE}") == [(4, 60)]
    assert _one(pg_url, f"SELECT head_sha256, model_id FROM {CLASS_AREAS_TABLE} LIMIT 1") == [("sha", "model")]

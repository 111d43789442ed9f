"""``clay.class_areas``: per partition, acquisition date and class, the area a task head predicts.

The table is created by a schema migration (:mod:`clay_core.vectordb.migrations`); the writer
only makes sure it has been applied, since head predictions may run before any embeddings were
loaded.
"""

from __future__ import annotations

import psycopg

from clay_core.vectordb.migrations import CLASS_AREAS_TABLE, ensure_class_areas

__all__ = ["CLASS_AREAS_TABLE", "write_class_areas"]


def write_class_areas(url: str, partition_key: str, rows: list, head_sha: str, model_id: str) -> tuple:
    """Replace the partition's rows of ``clay.class_areas`` in one transaction; returns (rows, pixels) now stored.

    ``rows`` are (partition_key, tile, acquired, class, pixels, area_m2) tuples.
    """
    with psycopg.connect(url) as conn:
        ensure_class_areas(conn)
        with conn.transaction():
            conn.execute(f"DELETE FROM {CLASS_AREAS_TABLE} WHERE partition_key = %s", (partition_key,))
            with conn.cursor() as cur:
                cur.executemany(
                    f"INSERT INTO {CLASS_AREAS_TABLE} (partition_key, tile, acquired, class, pixels, area_m2, "
                    "head_sha256, model_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                    [(*r, head_sha, model_id) for r in rows],
                )
        (n,) = conn.execute(f"SELECT count(*) FROM {CLASS_AREAS_TABLE} WHERE partition_key = %s",
                            (partition_key,)).fetchone()
        (px,) = conn.execute(f"SELECT coalesce(sum(pixels), 0) FROM {CLASS_AREAS_TABLE} WHERE partition_key = %s",
                             (partition_key,)).fetchone()
    return int(n), int(px)

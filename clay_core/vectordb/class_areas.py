"""``clay.class_areas``: per partition, acquisition date and class, the area a task head predicts."""

from __future__ import annotations

import psycopg

CLASS_AREAS_TABLE = "clay.class_areas"
_DDL_LOCK = 0x68656164  # "head": serialises CREATE TABLE across concurrent runs


def write_class_areas(url: str, partition_key: str, rows: list, head_sha: str, model_id: str) -> tuple:
    """Replace the partition's rows of ``clay.class_areas`` in one transaction; returns (rows, pixels) now stored."""
    with psycopg.connect(url) as conn:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_DDL_LOCK,))
            conn.execute("CREATE SCHEMA IF NOT EXISTS clay")
            conn.execute(
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
                    PRIMARY KEY (partition_key, acquired, class))"""
            )
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

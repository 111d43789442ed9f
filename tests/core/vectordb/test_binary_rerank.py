"""Binary quantization + re-ranking (pgvector >= 0.8): ``VectorStore.build_binary_index`` and the
``clay.rerank_candidates`` path of the clay.similar_* functions.

With as many candidates as rows, the re-ranked answer must be the exact top-k (numpy, float64):
the Hamming index only picks candidates, the order is exact cosine.  Real server (the default
embedded flavour, pgvector 0.8.5), small table.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import psycopg
import pytest
from pgvector import Vector

from clay_core.vectordb import VectorStore
from clay_core.vectordb.functions import BQ_INDEX
from clay_core.vectordb.migrations import HNSW_INDEX

from tests.core.vectordb.test_pgvector08 import scans
from tests.support.vectors import assert_same_result, exact_search

DIM = 32
N = 300  # 3 tiles x 100 chips, one date
TILES = ("31UFQ", "31UGQ", "32ULV")
DAY = date(2024, 5, 1)


def chips(tile: str) -> pd.DataFrame:
    i = np.arange(100)
    west = 2.0 + TILES.index(tile) + (i % 10) * 0.01
    south = 48.0 + (i // 10) * 0.01
    return pd.DataFrame({
        "chip_id": [f"{tile}_r{a:02d}c{b:02d}" for a, b in zip(i // 10, i % 10)],
        "tile": tile, "acquired": DAY, "partition_key": f"{DAY.isoformat()}|{tile}",
        "west": west, "south": south, "east": west + 0.01, "north": south + 0.01,
        "model_id": "clay-test",
    })


@pytest.fixture(scope="module")
def world(pg08_url):
    """300 rows (vector storage: exact float32 answers), HNSW + binary-quantized index."""
    rng = np.random.default_rng(7)
    store = VectorStore(pg08_url, DIM)
    store.ensure_schema(storage="vector")
    frames, embs = [], []
    for tile in TILES:
        f = chips(tile)
        # clustered like real embeddings: the sign bits of near rows agree, so Hamming alone
        # cannot order a cluster, only the re-rank can
        e = (rng.normal(size=(1, DIM)) + 0.3 * rng.normal(size=(100, DIM))).astype(np.float32)
        store.load_partition(f["partition_key"][0], f, e)
        frames.append(f)
        embs.append(e)
    store.build_binary_index(m=8, ef_construction=32)
    yield {"store": store, "url": pg08_url, "frame": pd.concat(frames, ignore_index=True),
           "emb": np.concatenate(embs), "rng": rng}
    store.close()


def search(url: str, sql: str, params, rerank: int | None) -> tuple[pd.DataFrame, dict]:
    """Rows of ``sql`` with clay.rerank_candidates = ``rerank`` (a connection option) and the
    scans it made ({'seq': table scans, index name: scans}); no sequential scans, as 300 rows
    would rather be scanned and sorted than searched through any index."""
    if rerank is not None:
        url = psycopg.conninfo.make_conninfo(url, options=f"-c clay.rerank_candidates={int(rerank)}")
    rows, counts = scans(url, sql, params, seqscan=False)
    return pd.DataFrame(rows, columns=["chip_id", "tile", "acquired", "similarity"]), counts


def test_reranked_results_equal_the_exact_top_k_and_use_the_binary_index(world):
    url, frame, emb = world["url"], world["frame"], world["emb"]
    for _ in range(5):
        q = (emb[world["rng"].integers(N)] + 0.2 * world["rng"].normal(size=DIM)).astype(np.float32)
        got, scans = search(url, "SELECT * FROM clay.similar_to_vector(%s, 10)", (Vector(q),), N)
        assert_same_result(got, exact_search(frame, emb, q, 10))
        assert scans[BQ_INDEX] >= 1 and scans[HNSW_INDEX] == 0, scans
    # without the knob the binary index is not touched (the default path is unchanged)
    _, scans = search(url, "SELECT * FROM clay.similar_to_vector(%s, 10)", (Vector(q),), None)
    assert scans[BQ_INDEX] == 0 and scans[HNSW_INDEX] >= 1, scans


def test_reranked_similar_chips_excludes_the_query_chip(world):
    url, frame, emb = world["url"], world["frame"], world["emb"]
    chip = frame["chip_id"][42]
    got, scans = search(url, "SELECT * FROM clay.similar_chips(%s, 5)", (chip,), N)
    assert_same_result(got, exact_search(frame, emb, emb[42], 5, exclude=[chip]))
    assert scans[BQ_INDEX] >= 1, scans


def test_few_candidates_still_return_k_rows_ordered_by_exact_cosine(world):
    """rerank below k is raised to k: k rows from the binary index alone (no exact fallback scan),
    sorted by exact similarity."""
    url, emb = world["url"], world["emb"]
    got, scans = search(url, "SELECT * FROM clay.similar_to_vector(%s, 10)", (Vector(emb[0]),), 3)
    assert len(got) == 10
    assert scans[BQ_INDEX] == 1 and scans["seq"] == 0 and scans["observations_pkey"] == 0, scans
    assert got["similarity"].is_monotonic_decreasing
    sims = emb.astype(np.float64) @ emb[0] / (np.linalg.norm(emb, axis=1) * np.linalg.norm(emb[0]))
    want = dict(zip(world["frame"]["chip_id"], sims))
    np.testing.assert_allclose(got["similarity"], [want[c] for c in got["chip_id"]], atol=1e-5)


def test_rerank_without_the_index_is_a_clear_error_and_bulk_load_rebuilds_it(world):
    store, url = world["store"], world["url"]
    q = Vector(world["emb"][1])
    store.drop_binary_index()
    assert not store.has_binary_index()
    with pytest.raises(psycopg.errors.UndefinedObject, match="build_binary_index"):
        search(url, "SELECT * FROM clay.similar_to_vector(%s, 10)", (q,), 50)
    store.build_binary_index(m=8, ef_construction=32)
    # a backfill drops it with the other indexes and rebuilds it with the same parameters
    f = chips(TILES[0])
    with store.bulk_load():
        assert not store.has_binary_index()
        store.load_partition(f["partition_key"][0], f, world["emb"][:100])
    assert store.has_binary_index()
    assert store._hnsw_params(BQ_INDEX) == {"m": 8, "ef_construction": 32}
    got, scans = search(url, "SELECT * FROM clay.similar_to_vector(%s, 10)", (q,), N)
    assert len(got) == 10 and scans[BQ_INDEX] >= 1

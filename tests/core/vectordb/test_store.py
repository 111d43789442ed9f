"""clay_core.vectordb against a real Postgres + pgvector (the embedded default server, see
conftest.pg_url).

Each test that writes gets its own database (``db_url``), so tests do not see each other's rows
or schemas.  Exact answers are computed with numpy (float32) and compared with the SQL functions,
so the tables here store ``vector`` (float32); halfvec, the default for new tables, is tested in
test_pgvector08.py.
"""

from __future__ import annotations

import time
import uuid
from datetime import date, timedelta

import numpy as np
import pandas as pd
import psycopg
import pytest

from clay_core import vectordb as cdb
from clay_core.vectordb import ChipNotFoundError, LoadStats, VectorStore, migrations
from clay_core.errors import ConfigError, DatabaseError

from tests.support.vectors import assert_same_result, exact_search

DIM = 16
STORAGE = "vector"  # float32, as numpy computes the exact answers
TILES = ("31UFQ", "31UGQ")
DAYS = tuple(date(2024, 5, 1) + timedelta(days=10 * i) for i in range(3))


# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------


def _with_db(url: str, dbname: str) -> str:
    params = psycopg.conninfo.conninfo_to_dict(url)
    params["dbname"] = dbname
    return psycopg.conninfo.make_conninfo(**params)


@pytest.fixture
def db_url(pg_url):
    """A fresh, empty database on the session's server; dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield _with_db(pg_url, name)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def chips_frame(tile: str, day: date, n: int, *, seed: int = 0, start: int = 0) -> pd.DataFrame:
    """n chips of one tile on one day, laid out on a grid of 0.01 degree cells."""
    rng = np.random.default_rng(seed)
    idx = np.arange(start, start + n)
    r, c = idx // 10, idx % 10
    x0 = 2.0 if tile == TILES[0] else 3.0
    west = x0 + c * 0.01
    south = 48.0 + r * 0.01
    return pd.DataFrame(
        {
            "chip_id": [f"{tile}_r{i:02d}c{j:02d}" for i, j in zip(r, c)],
            "tile": tile,
            "acquired": day,
            "acquired_at": pd.Timestamp(day, tz="UTC") + pd.Timedelta(hours=10, minutes=30),
            "partition_key": f"{day.isoformat()}|{tile}",
            "west": west, "south": south, "east": west + 0.01, "north": south + 0.01,
            "lon": west + 0.005, "lat": south + 0.005,
            "crs": "EPSG:32631",
            "cloud_fraction": rng.uniform(0, 0.3, n),
            "nodata_fraction": 0.0,
            "thumbnail_uri": [f"file:///thumbs/{tile}/{i}.png" for i in idx],
            "cube_uri": f"file:///cubes/{tile}.zarr",
            "model_id": "clay-test",
            "cosine_to_baseline": rng.uniform(0.5, 1.0, n),
            "harmonic_deviation": rng.normal(size=n),
            "change_score": np.where(idx % 7 == 0, np.nan, rng.uniform(0, 5, n)),
            "change_flag": idx % 5 == 0,
        }
    )


def random_embeddings(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)


def sql_rows(url: str, query: str, params=()):
    with psycopg.connect(url) as conn:
        return conn.execute(query, params).fetchall()


# ------------------------------------------------------------------------------------------
# a loaded store shared by the read-only query tests
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def world(pg_url):
    """2 tiles x 3 days x 40 chips, loaded partition by partition; module-scoped database."""
    name = f"world_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = _with_db(pg_url, name)
    store = VectorStore(url, DIM)
    store.ensure_schema(storage=STORAGE)
    frames, embs = [], []
    for t_i, tile in enumerate(TILES):
        for d_i, day in enumerate(DAYS):
            f = chips_frame(tile, day, 40, seed=10 * t_i + d_i)
            e = random_embeddings(len(f), seed=100 + 10 * t_i + d_i)
            store.load_partition(f"{day.isoformat()}|{tile}", f, e)
            frames.append(f)
            embs.append(e)
    frame = pd.concat(frames, ignore_index=True)
    yield {"url": url, "store": store, "frame": frame, "emb": np.concatenate(embs)}
    store.close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _query_vec(world, chip_id, day=None):
    f = world["frame"]
    sel = f["chip_id"] == chip_id
    if day is not None:
        sel &= f["acquired"] == day
    i = f.index[sel][np.argmax(np.asarray(f.loc[sel, "acquired"].map(date.toordinal)))]
    return world["emb"][i]


# ------------------------------------------------------------------------------------------
# schema
# ------------------------------------------------------------------------------------------


def test_ensure_schema_is_idempotent(db_url):
    with VectorStore(db_url, DIM) as store:
        store.ensure_schema(storage=STORAGE)
        store.ensure_schema(storage=STORAGE)
        assert store.schema_version() == max(v for v, _, _ in cdb.MIGRATIONS)
        assert store.index_params() == {"m": 32, "ef_construction": 128}
        assert store.count() == 0
    with VectorStore(db_url, DIM) as store:  # another connection: still fine, nothing duplicated
        store.ensure_schema(storage=STORAGE, m=8, ef_construction=32)
        assert store.index_params() == {"m": 32, "ef_construction": 128}  # existing index kept
    versions = sql_rows(db_url, "SELECT version FROM clay.schema_version ORDER BY version")
    assert [v for (v,) in versions] == [v for v, _, _ in cdb.MIGRATIONS]
    cols = {c for (c,) in sql_rows(db_url, "SELECT column_name FROM information_schema.columns "
                                             "WHERE table_schema = 'clay' AND table_name = 'chips'")}
    assert {"chip_id", "tile", "acquired", "embedding", "geom_wkt", "change_score", "partition_key",
            "lon", "lat", "crs", "cube_uri", "model_id", "change_flag"} <= cols
    (idx,) = sql_rows(db_url, "SELECT indexdef FROM pg_indexes WHERE indexname = %s", (cdb.HNSW_INDEX,))
    assert "hnsw" in idx[0] and "vector_cosine_ops" in idx[0]
    funcs = {f for (f,) in sql_rows(db_url, "SELECT p.proname FROM pg_proc p JOIN pg_namespace n "
                                              "ON n.oid = p.pronamespace WHERE n.nspname = 'clay'")}
    assert {"similar_chips", "similar_chips_filtered", "similar_to_chips", "similar_to_vector"} <= funcs


def test_dimension_mismatch_is_a_clear_error(db_url):
    with VectorStore(db_url, DIM) as store:
        store.ensure_schema(storage=STORAGE)
        with pytest.raises(ConfigError, match=r"\[3, 16\]"):
            store.load_partition("2024-05-01|31UFQ", chips_frame("31UFQ", DAYS[0], 3),
                                 np.ones((3, DIM + 1), np.float32))
    with VectorStore(db_url, 32) as other:
        with pytest.raises(DatabaseError, match=r"vector\(16\).*dim=32"):
            other.ensure_schema(storage=STORAGE)


def test_unreachable_database_names_target_not_password():
    url = "postgresql://user:s3cret@127.0.0.1:1/db"
    t0 = time.monotonic()
    with pytest.raises(DatabaseError) as err:
        VectorStore(url, DIM, connect_timeout=2)
    msg = str(err.value)
    assert "s3cret" not in msg and "s3cret" not in repr(err.value)
    assert err.value.__cause__ is None and err.value.__suppress_context__
    assert "127.0.0.1:1/db" in msg and "DATABASE_URL" in msg and "unset" in msg
    assert time.monotonic() - t0 < 10
    # malformed URLs are no better at leaking
    with pytest.raises(DatabaseError) as err2:
        VectorStore("postgresql://user:s3cret@127.0.0.1:notaport/db", DIM, connect_timeout=2)
    assert "s3cret" not in str(err2.value)


# ------------------------------------------------------------------------------------------
# loading
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("staging", [True, False])
def test_load_partition_and_count(staging, db_url):
    with VectorStore(db_url, DIM) as store:
        store.ensure_schema(storage=STORAGE)
        f1, f2 = chips_frame("31UFQ", DAYS[0], 25), chips_frame("31UGQ", DAYS[0], 15, seed=1)
        s1 = store.load_partition(f"{DAYS[0]}|31UFQ", f1, random_embeddings(25, 1), staging=staging)
        store.load_partition(f"{DAYS[0]}|31UGQ", f2, random_embeddings(15, 2), staging=staging)
        assert isinstance(s1, LoadStats) and s1.rows == 25 and s1.seconds > 0 and s1.rows_per_s > 0
        assert store.count() == 40
        assert store.count(partition_key=f"{DAYS[0]}|31UFQ") == 25
        assert store.count(tile="31UGQ") == 15
        assert store.count(partition_key=f"{DAYS[0]}|31UFQ", tile="31UGQ") == 0
        assert store.partition_chip_count(f"{DAYS[0]}|31UGQ") == 15
        assert store.partition_chip_count() == {f"{DAYS[0]}|31UFQ": 25, f"{DAYS[0]}|31UGQ": 15}
    row = sql_rows(db_url, "SELECT geom_wkt, acquired, acquired_at, change_score, change_flag, crs, "
                           "lon, lat, embedding::text FROM clay.chips WHERE chip_id = %s",
                   (f1["chip_id"][0],))[0]
    w, s, e, n = (repr(float(v)).removesuffix(".0") for v in f1.loc[0, ["west", "south", "east", "north"]])
    assert row[0] == f"POLYGON(({w} {s}, {e} {s}, {e} {n}, {w} {n}, {w} {s}))"
    assert row[1] == DAYS[0] and row[2] == f1["acquired_at"][0].to_pydatetime()
    assert row[3] is None  # NaN change score -> NULL
    assert row[4] is True and row[5] == "EPSG:32631"
    assert row[6] == pytest.approx(f1["lon"][0]) and row[7] == pytest.approx(f1["lat"][0])
    np.testing.assert_allclose(np.array(row[8].strip("[]").split(","), float),
                               random_embeddings(25, 1)[0], rtol=1e-6)


@pytest.mark.parametrize("staging", [True, False])
def test_reload_replaces_rows_without_duplicates(staging, db_url):
    key = f"{DAYS[0]}|31UFQ"
    with VectorStore(db_url, DIM) as store:
        store.ensure_schema(storage=STORAGE)
        store.load_partition(f"{DAYS[1]}|31UFQ", chips_frame("31UFQ", DAYS[1], 10),
                             random_embeddings(10, 9), staging=staging)
        f = chips_frame("31UFQ", DAYS[0], 30)
        store.load_partition(key, f, random_embeddings(30, 1), staging=staging)
        store.load_partition(key, f, random_embeddings(30, 1), staging=staging)
        assert store.count(partition_key=key) == 30
        # new values, fewer chips: the partition holds exactly the new rows
        g = f.head(20).copy()
        g["change_score"] = 42.0
        new_emb = random_embeddings(20, 2)
        store.load_partition(key, g, new_emb, staging=staging)
        assert store.count(partition_key=key) == 20 and store.count() == 30
        frame, emb = store.embeddings(g["chip_id"].tolist())
        frame = frame[frame["acquired"] == DAYS[0]]
        np.testing.assert_allclose(emb[frame.index], new_emb[np.argsort(g["chip_id"].to_numpy())])
        # zero rows empties the partition and leaves the others alone
        stats = store.load_partition(key, g.iloc[:0], np.zeros((0, DIM), np.float32), staging=staging)
        assert stats.rows == 0 and store.count(partition_key=key) == 0 and store.count() == 10
        store.load_partition(key, pd.DataFrame(), np.zeros((0, DIM), np.float32), staging=staging)
        assert store.count() == 10
    assert sql_rows(db_url, "SELECT count(*) FROM clay.chips WHERE change_score = 42")[0][0] == 0


@pytest.mark.parametrize("staging", [True, False])
def test_failure_between_delete_and_insert_keeps_old_rows(staging, db_url, monkeypatch):
    key = f"{DAYS[0]}|31UFQ"
    with VectorStore(db_url, DIM) as store:
        store.ensure_schema(storage=STORAGE)
        old = chips_frame("31UFQ", DAYS[0], 12)
        store.load_partition(key, old, random_embeddings(12, 1), staging=staging)

        def boom(self, cur):
            # the partition's rows are deleted inside the transaction at this point
            cur.execute("SELECT count(*) FROM clay.observations WHERE partition_key = %s", (key,))
            assert cur.fetchone()[0] == 0
            raise RuntimeError("injected failure after DELETE")

        monkeypatch.setattr(VectorStore, "_before_insert", boom)
        new = chips_frame("31UFQ", DAYS[0], 30)
        new["change_score"] = -1.0
        with pytest.raises(RuntimeError, match="injected"):
            store.load_partition(key, new, random_embeddings(30, 2), staging=staging)
        monkeypatch.undo()
        assert store.count(partition_key=key) == 12
        assert store.count() == 12
        # the store is usable afterwards
        store.load_partition(key, new, random_embeddings(30, 2), staging=staging)
        assert store.count(partition_key=key) == 30


@pytest.mark.parametrize("staging", [True, False])
def test_failure_inside_insert_keeps_old_rows(staging, db_url):
    key0, key1 = f"{DAYS[0]}|31UFQ", f"{DAYS[1]}|31UFQ"
    with VectorStore(db_url, DIM) as store:
        store.ensure_schema(storage=STORAGE)
        store.load_partition(key0, chips_frame("31UFQ", DAYS[0], 8), random_embeddings(8, 1), staging=staging)
        store.load_partition(key1, chips_frame("31UFQ", DAYS[1], 8), random_embeddings(8, 2), staging=staging)
        # the new rows of key1 claim an observation that belongs to key0: the INSERT fails
        bad = chips_frame("31UFQ", DAYS[1], 20)
        bad.loc[3, "acquired"] = DAYS[0]  # 31UFQ_r00c03 on DAYS[0] is key0's
        with pytest.raises(DatabaseError, match="already"):
            store.load_partition(key1, bad, random_embeddings(20, 3), staging=staging)
        assert store.count(partition_key=key1) == 8 and store.count(partition_key=key0) == 8
        # bad input is refused before anything is sent
        dup = pd.concat([bad.head(3), bad.head(1)], ignore_index=True)
        with pytest.raises(ConfigError, match="sharing"):
            store.load_partition(key1, dup, random_embeddings(4, 4), staging=staging)
        wrong_key = chips_frame("31UFQ", DAYS[1], 3)
        with pytest.raises(ConfigError, match="partition_key"):
            store.load_partition(key0, wrong_key, random_embeddings(3, 4), staging=staging)
        zero = random_embeddings(3, 4)
        zero[1] = 0
        with pytest.raises(ConfigError, match="zero, not finite"):
            store.load_partition(key1, chips_frame("31UFQ", DAYS[1], 3), zero, staging=staging)
        assert store.count() == 16


# ------------------------------------------------------------------------------------------
# similarity search
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ef_search", [None, 1000])
def test_similar_chips_matches_exact_numpy_ranking(world, ef_search):
    store, frame, emb = world["store"], world["frame"], world["emb"]
    for chip in ("31UFQ_r00c00", "31UFQ_r02c07", "31UGQ_r03c09"):
        got = store.similar_chips(chip, k=10, ef_search=ef_search)
        want = exact_search(frame, emb, _query_vec(world, chip), 10, exclude=[chip])
        assert_same_result(got, want)
        assert chip not in set(got["chip_id"])
        assert (np.diff(got["similarity"]) <= 1e-9).all()


def test_similar_chips_respects_k_min_similarity_and_acquired(world):
    store, frame, emb = world["store"], world["frame"], world["emb"]
    chip = "31UFQ_r01c03"
    assert len(store.similar_chips(chip, k=1)) == 1
    big = store.similar_chips(chip, k=500, min_similarity=-1)  # more than exist: all others
    assert len(big) == len(frame) - len(DAYS)
    assert_same_result(big, exact_search(frame, emb, _query_vec(world, chip), 500, -1, exclude=[chip]))
    positive = store.similar_chips(chip, k=500)  # default min_similarity 0
    assert_same_result(positive, exact_search(frame, emb, _query_vec(world, chip), 500, exclude=[chip]))
    assert 0 < len(positive) < len(big)
    # min_similarity halfway between the 4th and 5th best: exactly 4 rows
    want = exact_search(frame, emb, _query_vec(world, chip), 10, exclude=[chip])
    cut = float(want["similarity"][3] + want["similarity"][4]) / 2
    got = store.similar_chips(chip, k=10, min_similarity=cut)
    assert_same_result(got, want.head(4))
    assert store.similar_chips(chip, k=10, min_similarity=0.9999).empty
    # acquired picks the query observation; default is the latest
    q0 = _query_vec(world, chip, DAYS[0])
    got0 = store.similar_chips(chip, k=7, acquired=DAYS[0])
    assert_same_result(got0, exact_search(frame, emb, q0, 7, exclude=[chip]))
    assert got0["chip_id"].tolist() != store.similar_chips(chip, k=7)["chip_id"].tolist()
    # the SQL function itself, as psql users call it
    rows = sql_rows(world["url"], "SELECT * FROM clay.similar_chips(%s, 5)", (chip,))
    assert [r[0] for r in rows] == want["chip_id"].head(5).tolist()
    rows = sql_rows(world["url"], "SELECT chip_id FROM clay.similar_chips(%s, 3, 0.0, %s)", (chip, DAYS[0]))
    assert [r[0] for r in rows] == got0["chip_id"].head(3).tolist()


def test_similar_chips_unknown_chip_or_bad_arguments(world):
    store = world["store"]
    with pytest.raises(ChipNotFoundError, match="31XYZ_r99c99"):
        store.similar_chips("31XYZ_r99c99")
    with pytest.raises(ChipNotFoundError, match="31UFQ_r00c00.*2020-01-01"):
        store.similar_chips("31UFQ_r00c00", acquired=date(2020, 1, 1))
    with pytest.raises(DatabaseError, match="k must be a positive integer"):
        store.similar_chips("31UFQ_r00c00", k=0)
    with pytest.raises(psycopg.errors.NoDataFound, match="31XYZ_r99c99"):
        sql_rows(world["url"], "SELECT * FROM clay.similar_chips('31XYZ_r99c99')")
    assert store.count() == len(world["frame"])  # the store still works after errors


def test_filtered_search_matches_exact_numpy(world):
    store, frame, emb = world["store"], world["frame"], world["emb"]
    chip = "31UGQ_r02c02"
    q = _query_vec(world, chip)
    tiles_mask = (frame["tile"] == "31UFQ").to_numpy()
    date_mask = (frame["acquired"] >= DAYS[1]).to_numpy()
    bbox = [2.025, 48.0, 3.045, 48.025]  # intersects columns c02..c04 / c0..c4 of 31UGQ rows 0..2
    bbox_mask = ((frame["west"] <= bbox[2]) & (frame["east"] >= bbox[0])
                 & (frame["south"] <= bbox[3]) & (frame["north"] >= bbox[1])).to_numpy()
    cases = [
        ({"tiles": ["31UFQ"]}, tiles_mask),
        ({"date_from": DAYS[1]}, date_mask),
        ({"date_from": DAYS[1], "date_to": DAYS[1]}, (frame["acquired"] == DAYS[1]).to_numpy()),
        ({"bbox": bbox}, bbox_mask),
        ({"tiles": ["31UFQ", "31UGQ"], "date_to": DAYS[0], "bbox": bbox},
         bbox_mask & (frame["acquired"] <= DAYS[0]).to_numpy()),
    ]
    for kwargs, mask in cases:
        for k in (5, 10):
            got = store.similar_chips_filtered(chip, k=k, **kwargs)
            want = exact_search(frame, emb, q, k, exclude=[chip], mask=mask)
            assert len(want) == k  # there are at least k rows: exactly k must come back
            assert_same_result(got, want)
        got = store.similar_to_vector(q, k=10, **kwargs)
        assert_same_result(got, exact_search(frame, emb, q, 10, mask=mask))
    # a filter with fewer than k matches returns all of them
    few = {"tiles": ["31UGQ"], "date_from": DAYS[2], "bbox": [3.0, 48.0, 3.012, 48.005]}
    mask = ((frame["tile"] == "31UGQ") & (frame["acquired"] >= DAYS[2]) & (frame["west"] <= 3.012)
            & (frame["east"] >= 3.0) & (frame["south"] <= 48.005)).to_numpy()
    got = store.similar_chips_filtered(chip, k=10, min_similarity=-1, **few)
    want = exact_search(frame, emb, q, 10, -1, exclude=[chip], mask=mask)
    assert 0 < len(want) < 10
    assert_same_result(got, want)
    with pytest.raises(DatabaseError, match="bbox"):
        store.similar_chips_filtered(chip, bbox=[3, 48, 2, 49])


def test_similar_to_chips_uses_mean_and_excludes_references(world):
    store, frame, emb = world["store"], world["frame"], world["emb"]
    refs = ["31UFQ_r00c01", "31UGQ_r01c05"]
    q = np.mean([_query_vec(world, c) for c in refs], axis=0)
    got = store.similar_to_chips(refs, k=10)
    assert_same_result(got, exact_search(frame, emb, q, 10, exclude=refs))
    got = store.similar_to_chips(refs, k=6, date_to=DAYS[1])
    want = exact_search(frame, emb, q, 6, exclude=refs, mask=(frame["acquired"] <= DAYS[1]).to_numpy())
    assert_same_result(got, want)
    with pytest.raises(ChipNotFoundError, match="nope_r00c00"):
        store.similar_to_chips(["31UFQ_r00c01", "nope_r00c00"])


def test_selective_filter_falls_back_to_exact(db_url):
    """Planner estimates that are far off (correlated tile/date) must not cost rows.

    Tile A has many rows in May and few in June, tile B the reverse: the planner estimates a
    quarter of the table for (A, June), the HNSW candidates hold almost none, and the fallback
    must still return the k exact nearest."""
    a, b = TILES
    may, june = date(2024, 5, 1), date(2024, 6, 1)
    frames = [chips_frame(a, may, 300, seed=1), chips_frame(a, june, 12, seed=2),
              chips_frame(b, may, 12, seed=3), chips_frame(b, june, 300, seed=4)]
    embs = [random_embeddings(len(f), seed=20 + i) for i, f in enumerate(frames)]
    with VectorStore(db_url, DIM) as store:
        store.ensure_schema(storage=STORAGE)
        for f, e in zip(frames, embs):
            store.load_partition(f["partition_key"][0], f, e)
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute("ANALYZE clay.observations")
        frame, emb = pd.concat(frames, ignore_index=True), np.concatenate(embs)
        q = random_embeddings(1, 99)[0]
        mask = ((frame["tile"] == a) & (frame["acquired"] == june)).to_numpy()
        for ef in (None, 10):
            got = store.similar_to_vector(q, k=10, tiles=[a], date_from=june, ef_search=ef)
            assert_same_result(got, exact_search(frame, emb, q, 10, mask=mask))
        # unfiltered, with the query chip's own observations excluded
        chip = frames[0]["chip_id"][0]
        got = store.similar_chips(chip, k=20, acquired=may, ef_search=1)
        assert_same_result(got, exact_search(frame, emb, embs[0][0], 20, exclude=[chip]))


def test_sql_injection_in_text_parameters_changes_nothing(world):
    store, url = world["store"], world["url"]
    n = store.count()
    evil = [
        "x'; DROP TABLE clay.observations; --",
        "'); DELETE FROM clay.observations; --",
        "31UFQ_r00c00' OR '1'='1",
        "\\'; TRUNCATE clay.observations; --",
        '"; DROP SCHEMA clay CASCADE; --',
    ]
    for s in evil:
        with pytest.raises(ChipNotFoundError):
            store.similar_chips(s)
        with pytest.raises(ChipNotFoundError):
            store.similar_chips_filtered(s, tiles=[s])
        with pytest.raises(ChipNotFoundError):
            store.similar_to_chips(["31UFQ_r00c00", s])
        assert store.similar_chips_filtered("31UFQ_r00c00", tiles=[s, s]).empty
        assert store.similar_to_vector(world["emb"][0], tiles=[s]).empty
        assert store.count(partition_key=s) == 0 and store.count(tile=s) == 0
        assert store.partition_chip_count(s) == 0
        with pytest.raises(psycopg.errors.NoDataFound):
            sql_rows(url, "SELECT * FROM clay.similar_chips(%s, 10)", (s,))
    assert store.count() == n
    assert len(store.similar_chips("31UFQ_r00c00", k=3)) == 3


def test_injection_in_load_partition_key(db_url):
    evil = "2024-05-01|31UFQ'; DROP TABLE clay.observations; --"
    with VectorStore(db_url, DIM) as store:
        store.ensure_schema(storage=STORAGE)
        f = chips_frame("31UFQ", DAYS[0], 5)
        f["partition_key"] = evil
        f["chip_id"] = f["chip_id"] + "'); DELETE FROM clay.observations; --"
        store.load_partition(evil, f, random_embeddings(5, 1))
        store.load_partition(evil, f, random_embeddings(5, 1))
        assert store.count(partition_key=evil) == 5 and store.count() == 5
        assert len(store.similar_chips(f["chip_id"][0], k=3, min_similarity=-1)) == 3


def test_reader_role_can_query_but_not_write(world):
    store, url = world["store"], world["url"]
    reader_url = store.create_reader_role("clay_reader", "r3ader-pw")
    store.create_reader_role("clay_reader", "r3ader-pw")  # idempotent
    assert "clay_reader" in reader_url
    n = store.count()
    with psycopg.connect(reader_url, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM clay.chips").fetchone()[0] == n
        assert len(conn.execute("SELECT * FROM clay.similar_chips('31UFQ_r00c00', 3)").fetchall()) == 3
        conn.execute("SET default_transaction_read_only = off")  # privileges, not only read-only mode
        for stmt in (
            "INSERT INTO clay.observations (chip_id) VALUES ('x')",
            "DELETE FROM clay.observations",
            "UPDATE clay.observations SET change_score = 0",
            "DELETE FROM clay.schema_version",
            "CREATE TABLE clay.evil (x int)",
            "DROP FUNCTION clay.similar_chips(text, integer, double precision, date)",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(stmt)
    with VectorStore(reader_url, DIM) as ro:
        with pytest.raises(DatabaseError, match="read-only|permission denied"):
            ro.load_partition(f"{DAYS[0]}|31UFQ", chips_frame("31UFQ", DAYS[0], 2), random_embeddings(2, 1))
        assert len(ro.similar_chips("31UFQ_r00c00", k=2)) == 2
    assert store.count() == n
    with pytest.raises(ConfigError):
        store.create_reader_role("bad name; drop", "x")


def test_rebuild_index_with_new_parameters(db_url):
    with VectorStore(db_url, DIM) as store:
        store.ensure_schema(storage=STORAGE, create_index=False)
        assert store.index_params() is None
        f = chips_frame("31UFQ", DAYS[0], 60)
        e = random_embeddings(60, 5)
        with store.bulk_load(m=8, ef_construction=40):
            store.load_partition(f"{DAYS[0]}|31UFQ", f, e)
        assert store.index_params() == {"m": 8, "ef_construction": 40}
        seconds = store.rebuild_index(ef_construction=48)
        assert seconds > 0 and store.index_params() == {"m": 8, "ef_construction": 48}
        got = store.similar_chips(f["chip_id"][3], k=5)
        assert_same_result(got, exact_search(f, e, e[3], 5, exclude=[f["chip_id"][3]]))
        with pytest.raises(ConfigError):
            store.rebuild_index(m=1)


def test_concurrent_schema_creation_and_loads_of_one_partition(db_url):
    """Several processes/threads (Dagster runs partitions in parallel) may create the schema and
    load the same partition at once: no errors, no duplicates, one complete version wins."""
    import threading

    key = f"{DAYS[0]}|31UFQ"
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def worker(seed: int) -> None:
        try:
            with VectorStore(db_url, DIM) as store:
                barrier.wait()
                store.ensure_schema(storage=STORAGE)
                for i in range(4):
                    store.load_partition(key, chips_frame("31UFQ", DAYS[0], 30),
                                         random_embeddings(30, seed + i), staging=bool(i % 2))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(100 * s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    with VectorStore(db_url, DIM) as store:
        assert store.count() == 30 and store.count(partition_key=key) == 30
        assert store.schema_version() == max(v for v, _, _ in cdb.MIGRATIONS)


def _index_defs(url: str) -> dict[str, str]:
    return dict(sql_rows(url, "SELECT indexname, indexdef FROM pg_indexes "
                              "WHERE schemaname = 'clay' AND tablename = 'observations'"))


def test_bulk_backfill_over_two_connections_restores_every_index(db_url):
    """bulk_load() + load_partitions(workers=2): the rows arrive exactly once, the search and
    filter indexes are dropped during the loads and come back identical, and searches match
    exact numpy results afterwards."""
    with VectorStore(db_url, DIM) as store:
        store.ensure_schema(storage=STORAGE, m=8, ef_construction=40)
        store.load_partition(f"{DAYS[0]}|31UFQ", chips_frame("31UFQ", DAYS[0], 5), random_embeddings(5, 0))
        before = _index_defs(db_url)
        assert {"observations_tile_acquired_idx", "observations_acquired_idx",
                "observations_bounds_gist_idx", cdb.HNSW_INDEX} <= set(before)
        parts = []
        for d_i, day in enumerate(DAYS):
            for t_i, tile in enumerate(TILES):
                f = chips_frame(tile, day, 40, seed=d_i * 10 + t_i)
                parts.append((f"{day}|{tile}", f, random_embeddings(40, d_i * 10 + t_i)))
        seen, during = [], {}

        def progress(key, stats):
            seen.append((key, stats.rows))
            during.update(_index_defs(db_url))

        with store.bulk_load():
            stats = store.load_partitions(parts, workers=2, progress=progress)
        assert stats.rows == 240 and stats.rows_per_s > 0
        assert sorted(seen) == sorted((k, 40) for k, _, _ in parts)
        # during the loads only the primary key and the partition index were maintained
        assert set(during) == {"observations_pkey", "observations_partition_key_idx"}
        assert _index_defs(db_url) == before
        assert store.index_params() == {"m": 8, "ef_construction": 40}
        assert store.count() == 240 and store.duplicate_observations() == 0
        assert store.partition_chip_count() == {k: 40 for k, _, _ in parts}
        frame = pd.concat([f for _, f, _ in parts], ignore_index=True)
        emb = np.concatenate([e for _, _, e in parts])
        q = random_embeddings(1, 99)[0]
        got = store.similar_to_vector(q, k=7, date_from=DAYS[1], date_to=DAYS[1])
        mask = (frame["acquired"] == DAYS[1]).to_numpy()
        assert_same_result(got, exact_search(frame[mask].reset_index(drop=True), emb[mask], q, 7))


def test_load_partitions_stops_at_the_first_bad_partition(db_url):
    with VectorStore(db_url, DIM) as store:
        store.ensure_schema(storage=STORAGE)
        good = [(f"{day}|31UFQ", chips_frame("31UFQ", day, 20), random_embeddings(20, i))
                for i, day in enumerate(DAYS)]
        bad = chips_frame("31UGQ", DAYS[0], 20)
        bad.loc[3, "west"] = 99.0  # west > east
        items = [good[0], (f"{DAYS[0]}|31UGQ", bad, random_embeddings(20, 7)), *good[1:]]
        with pytest.raises(ConfigError, match="west=99"):
            store.load_partitions(items, workers=1)
        assert store.partition_chip_count() == {good[0][0]: 20}  # committed before the failure
        with pytest.raises(ConfigError, match="workers"):
            store.load_partitions(good, workers=0)
        store.load_partitions(good, workers=3)
        assert store.count() == 60 and store.duplicate_observations() == 0


def test_duplicate_check_finds_pairs_stored_twice_when_the_key_is_lost(db_url):
    k0, k1 = f"{DAYS[0]}|31UFQ", f"{DAYS[0]}|31UGQ"
    with VectorStore(db_url, DIM) as store:
        store.ensure_schema(storage=STORAGE)
        store.load_partition(k0, chips_frame("31UFQ", DAYS[0], 6), random_embeddings(6, 1))
        store.load_partition(k1, chips_frame("31UGQ", DAYS[0], 6), random_embeddings(6, 2))
        assert store.duplicate_observations() == 0 and store.duplicate_observations(k0) == 0
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute("ALTER TABLE clay.observations DROP CONSTRAINT observations_pkey")
            # a copy of one k0 observation filed under k1: the pair now exists twice
            conn.execute("INSERT INTO clay.observations SELECT * FROM clay.observations "
                         "WHERE chip_id = '31UFQ_r00c02'")
            conn.execute("UPDATE clay.observations SET partition_key = %s WHERE ctid = "
                         "(SELECT max(ctid) FROM clay.observations WHERE chip_id = '31UFQ_r00c02')",
                         (k1,))
        assert store.duplicate_observations() == 1
        assert store.duplicate_observations(k0) == 1 and store.duplicate_observations(k1) == 1
        assert store.duplicate_observations(f"{DAYS[1]}|31UFQ") == 0


def test_upgrade_from_schema_3_keeps_rows_grants_and_footprints(db_url, monkeypatch):
    """A database created before migration 4 (geom_wkt stored per row) upgrades in place: every
    row stays, clay.chips still shows the same WKT (now computed), the reader role keeps
    SELECT on the view, and loads and searches work afterwards."""
    monkeypatch.setattr(migrations, "MIGRATIONS", [m for m in migrations.MIGRATIONS if m[0] <= 3])
    with VectorStore(db_url, DIM) as store:
        store.ensure_schema(storage=STORAGE)
        assert store.schema_version() == 3
    emb = random_embeddings(4, 3)
    with psycopg.connect(db_url, autocommit=True) as conn:
        for i in range(4):
            w, s = 2.0 + 0.01 * i, 48.5
            conn.execute(
                "INSERT INTO clay.observations (chip_id, tile, acquired, partition_key, west, south, "
                "east, north, geom_wkt, embedding) VALUES (%s, '31UFQ', %s, %s, %s, %s, %s, %s, %s, %s)",
                (f"31UFQ_r09c0{i}", DAYS[2], f"{DAYS[2]}|31UFQ", w, s, w + 0.01, s + 0.01,
                 # what the loader stored before migration 4 (floats printed like Postgres does)
                 "POLYGON(({0} {1}, {2} {1}, {2} {3}, {0} {3}, {0} {1}))".format(
                     *(repr(v).removesuffix(".0") for v in (w, s, w + 0.01, s + 0.01))),
                 "[" + ",".join(map(str, emb[i])) + "]"))
        before = conn.execute("SELECT chip_id, geom_wkt FROM clay.chips ORDER BY chip_id").fetchall()
    with VectorStore(db_url, DIM) as store:
        reader_url = store.create_reader_role("clay_old_reader", "old-r3ader-pw")
    with psycopg.connect(db_url, autocommit=True) as conn:
        # a grant made by hand, not covered by the reader role's default privileges
        conn.execute("DROP ROLE IF EXISTS clay_hand_granted")
        conn.execute("CREATE ROLE clay_hand_granted")
        conn.execute("GRANT SELECT ON clay.chips TO clay_hand_granted")
        view_comment = conn.execute("SELECT obj_description('clay.chips'::regclass)").fetchone()[0]
    monkeypatch.undo()
    with VectorStore(db_url, DIM) as store:
        store.ensure_schema(storage=STORAGE)
        assert store.schema_version() == max(v for v, _, _ in cdb.MIGRATIONS) >= 4
        assert store.count() == 4
        store.load_partition(f"{DAYS[0]}|31UFQ", chips_frame("31UFQ", DAYS[0], 3), random_embeddings(3, 4))
        assert store.count() == 7
        got = store.similar_to_vector(emb[1], k=1)
        assert got["chip_id"].tolist() == ["31UFQ_r09c01"]
    cols = {c for (c,) in sql_rows(db_url, "SELECT column_name FROM information_schema.columns "
                                           "WHERE table_schema = 'clay' AND table_name = 'observations'")}
    assert "geom_wkt" not in cols
    after = sql_rows(db_url, "SELECT chip_id, geom_wkt FROM clay.chips WHERE acquired = %s "
                             "ORDER BY chip_id", (DAYS[2],))
    assert after == before
    with psycopg.connect(reader_url) as conn:
        assert conn.execute("SELECT count(*) FROM clay.chips").fetchone()[0] == 7
    with psycopg.connect(db_url, autocommit=True) as conn:
        assert conn.execute("SELECT has_table_privilege('clay_hand_granted', 'clay.chips', "
                            "'SELECT')").fetchone()[0]
        assert conn.execute("SELECT obj_description('clay.chips'::regclass)").fetchone()[0] == view_comment
        col_comment = conn.execute(
            "SELECT col_description('clay.chips'::regclass, a.attnum) FROM pg_attribute a "
            "WHERE a.attrelid = 'clay.chips'::regclass AND a.attname = 'geom_wkt'").fetchone()[0]
        assert col_comment and "WKT" in col_comment
        conn.execute("DROP OWNED BY clay_hand_granted")
        conn.execute("DROP ROLE clay_hand_granted")


def test_bulk_loads_skip_the_commit_flush_and_plain_loads_keep_the_setting(db_url, monkeypatch):
    """Inside bulk_load() each partition commits without waiting for the WAL flush (the index
    build at the end commits synchronously); outside, the session's setting is untouched."""
    seen = []

    def spy(self, cur):
        cur.execute("SHOW synchronous_commit")
        seen.append(cur.fetchone()[0])

    monkeypatch.setattr(VectorStore, "_before_insert", spy)
    with VectorStore(db_url, DIM) as store:
        store.ensure_schema(storage=STORAGE)
        store._conn.execute("SET synchronous_commit = remote_apply")
        store.load_partition(f"{DAYS[0]}|31UFQ", chips_frame("31UFQ", DAYS[0], 5), random_embeddings(5, 1))
        with store.bulk_load():
            store.load_partition(f"{DAYS[1]}|31UFQ", chips_frame("31UFQ", DAYS[1], 5), random_embeddings(5, 2))
        store.load_partition(f"{DAYS[2]}|31UFQ", chips_frame("31UFQ", DAYS[2], 5), random_embeddings(5, 3))
        assert seen == ["remote_apply", "off", "remote_apply"]
        assert store._conn.execute("SHOW synchronous_commit").fetchone()[0] == "remote_apply"
        assert store.count() == 15


def test_load_partitions_over_two_connections_stops_on_any_failure(db_url):
    with VectorStore(db_url, DIM) as store:
        store.ensure_schema(storage=STORAGE)
        good = [(f"{day}|{tile}", chips_frame(tile, day, 15), random_embeddings(15, i))
                for i, (day, tile) in enumerate((d, t) for d in DAYS for t in TILES)]

        def progress(key, stats):
            if key == good[2][0]:
                raise RuntimeError("progress callback failed")

        with pytest.raises(RuntimeError, match="progress callback failed"):
            store.load_partitions(good, workers=2, progress=progress)
        loaded = store.partition_chip_count()
        assert good[2][0] in loaded and len(loaded) < len(good)

        def items():
            yield good[0]
            raise OSError("reading the embeddings store failed")

        with pytest.raises(OSError, match="embeddings store"):
            store.load_partitions(items(), workers=2)
        # every worker has stopped and its connection is closed: only ours is left. A backend
        # whose client has closed can stay listed for a moment while it exits, so wait for that
        # (a connection left open never goes away, and fails this).
        deadline = time.monotonic() + 10
        while True:
            n_conn = sql_rows(db_url, "SELECT count(*) FROM pg_stat_activity WHERE datname = "
                                      "current_database() AND application_name = 'clay-assets'")[0][0]
            if n_conn == 1 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert n_conn == 1
        pids = set()

        def record_pid(key, stats):
            pids.update(p for (p,) in sql_rows(
                db_url, "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                        "AND application_name = 'clay-assets'"))

        stats = store.load_partitions(good, workers=2, progress=record_pid)
        assert stats.rows == 15 * len(good) and store.count() == 15 * len(good)
        assert len(pids) >= 2  # a second connection was really used


def test_bulk_load_restores_indexes_when_its_block_fails(db_url):
    with VectorStore(db_url, DIM) as store:
        store.ensure_schema(storage=STORAGE, m=8, ef_construction=40)
        before = _index_defs(db_url)
        with pytest.raises(ZeroDivisionError):
            with store.bulk_load():
                store.load_partition(f"{DAYS[0]}|31UFQ", chips_frame("31UFQ", DAYS[0], 8),
                                     random_embeddings(8, 1))
                1 / 0
        assert _index_defs(db_url) == before and not store._bulk
        assert store.count() == 8  # the committed partition stays
        got = store.similar_to_vector(random_embeddings(1, 1)[0], k=1)
        assert got["chip_id"].tolist() == ["31UFQ_r00c00"]

"""Label sets, ``clay.search_labeled`` and ``clay.detections`` against a real Postgres + pgvector.

The labelled query is checked against numpy: q = 2·mean(unit positives) − mean(unit
negatives), exact cosine ranking, labelled chips excluded.  Both storages (halfvec, the
default, and vector), pgvector 0.6 (no l2_normalize there) and the reader role are covered.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import psycopg
import pytest

from clay_core.errors import ConfigError, DatabaseError
from clay_core.vectordb import ChipNotFoundError, VectorStore
from tests.support.vectors import assert_same_result, exact_search

DIM = 8
DAYS = (date(2024, 3, 4), date(2024, 3, 11))


def _frame(tile: str, day: date, n: int) -> pd.DataFrame:
    idx = np.arange(n)
    west = 2.0 + idx * 0.01
    return pd.DataFrame({
        "chip_id": [f"{tile}_r000c{i:03d}" for i in idx], "tile": tile, "acquired": day,
        "acquired_at": pd.Timestamp(day, tz="UTC"), "partition_key": f"{day.isoformat()}|{tile}",
        "west": west, "south": 48.0, "east": west + 0.01, "north": 48.01, "lon": west + 0.005, "lat": 48.005,
        "crs": "EPSG:32631", "cloud_fraction": 0.0, "nodata_fraction": 0.0, "thumbnail_uri": "t",
        "cube_uri": "c", "model_id": "m", "cosine_to_baseline": 1.0, "harmonic_deviation": 0.0,
        "change_score": 0.0, "change_flag": False,
    })


@pytest.fixture(scope="module", params=[("vector", "pg_url"), ("halfvec", "pg_url"), ("vector", "pg06_url")],
                ids=["vector", "halfvec", "pgvector06"])
def world(request):
    storage, server = request.param
    url = request.getfixturevalue(server)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS clay CASCADE")
    store = VectorStore(url, DIM)
    store.ensure_schema(storage=storage)
    rng = np.random.default_rng(3)
    frames, embs = [], []
    for tile in ("31UFU", "32UNB"):
        for day in DAYS:
            f = _frame(tile, day, 30)
            e = rng.normal(size=(len(f), DIM)).astype(np.float32)
            if storage == "halfvec":
                e = e.astype(np.float16).astype(np.float32)  # what the table gives back
            store.load_partition(f["partition_key"].iloc[0], f, e)
            frames.append(f)
            embs.append(e)
    yield {"store": store, "url": url, "frame": pd.concat(frames, ignore_index=True),
           "emb": np.concatenate(embs), "storage": storage}
    store.close()


def _vec(world, chip_id, day=None):
    f = world["frame"]
    sel = (f["chip_id"] == chip_id) & ((f["acquired"] == day) if day else True)
    return world["emb"][f.index[sel][np.argmax(f.loc[sel, "acquired"].map(date.toordinal).to_numpy())]]


def _unit(v):
    return v / np.linalg.norm(v)


def test_search_labeled_is_the_documented_formula(world):
    pos = ["31UFU_r000c001@2024-03-04", "31UFU_r000c002"]  # an explicit date and the latest
    neg = ["32UNB_r000c005", "32UNB_r000c006@2024-03-04", "32UNB_r000c007"]
    p = [_vec(world, "31UFU_r000c001", DAYS[0]), _vec(world, "31UFU_r000c002")]
    n = [_vec(world, "32UNB_r000c005"), _vec(world, "32UNB_r000c006", DAYS[0]), _vec(world, "32UNB_r000c007")]
    q = 2 * np.mean([_unit(v) for v in p], axis=0) - np.mean([_unit(v) for v in n], axis=0)
    chips = [x.split("@")[0] for x in pos + neg]
    atol = 2e-3 if world["storage"] == "halfvec" else 1e-5
    got = world["store"].search_labeled(pos, neg, k=12)
    want = exact_search(world["frame"], world["emb"], q, 12, exclude=chips)
    np.testing.assert_allclose(got["similarity"].to_numpy(float), want["similarity"].to_numpy(float), atol=atol)
    if world["storage"] == "vector":
        assert_same_result(got, want)
    # without negatives: the positives' mean; with filters: only those rows
    got = world["store"].search_labeled(pos, None, k=5, tiles=["32UNB"], date_from=DAYS[1])
    mask = (world["frame"]["tile"] == "32UNB") & (world["frame"]["acquired"] >= DAYS[1])
    want = exact_search(world["frame"], world["emb"], np.mean([_unit(v) for v in p], axis=0), 5,
                        exclude=chips[:2], mask=mask)
    assert got["chip_id"].tolist() == want["chip_id"].tolist()
    # the same through SQL, as a reader would call it
    with psycopg.connect(world["url"]) as conn:
        rows = conn.execute("SELECT chip_id FROM clay.search_labeled(%s, %s, 12)", (pos, neg)).fetchall()
    assert [r[0] for r in rows][:3] == world["store"].search_labeled(pos, neg, k=12)["chip_id"].tolist()[:3]


def test_unknown_or_malformed_ids_are_named(world):
    store = world["store"]
    with pytest.raises(ChipNotFoundError, match=r"not found in clay.chips: 31UFU_r000c001@2020-01-01, nope_r1c1"):
        store.search_labeled(["31UFU_r000c001", "nope_r1c1", "31UFU_r000c001@2020-01-01"], ["32UNB_r000c001"])
    with pytest.raises(DatabaseError, match="observation id 'a b' is not chip_id or chip_id@YYYY-MM-DD"):
        store.search_labeled(["a b"])
    with pytest.raises(DatabaseError, match="positives must be a non-empty array"):
        store.search_labeled([], ["32UNB_r000c001"])
    with pytest.raises(ChipNotFoundError, match="nope_r1c1"):
        store.add_labels("s1", ["31UFU_r000c001", "nope_r1c1"])
    assert store.labels("s1").empty, "one unknown id writes nothing"
    with pytest.raises(ConfigError, match="label set 'bad name'"):
        store.add_labels("bad name", ["31UFU_r000c001"])
    with pytest.raises(ConfigError, match="both positive and negative"):
        store.add_labels("s1", ["31UFU_r000c001"], ["31UFU_r000c001"])


def test_label_sets_upsert_search_and_detections(world):
    store = world["store"]
    store.remove_labels("trees")
    added = store.add_labels("trees", ["31UFU_r000c001"], ["31UFU_r000c002@2024-03-04"])
    assert added[["chip_id", "acquired", "label"]].values.tolist() == [
        ["31UFU_r000c001", DAYS[1], True], ["31UFU_r000c002", DAYS[0], False]]
    store.add_labels("trees", negatives=["31UFU_r000c001"])  # relabelled, not duplicated
    store.add_labels("trees", positives=["31UFU_r000c003"])
    lab = store.labels("trees")
    assert lab[["chip_id", "label"]].values.tolist() == [["31UFU_r000c001", False], ["31UFU_r000c002", False],
                                                        ["31UFU_r000c003", True]]
    sets = store.label_sets().set_index("label_set")
    assert (sets.loc["trees", "positives"], sets.loc["trees", "negatives"]) == (1, 2)
    by_set = store.search_labeled(["31UFU_r000c003"], ["31UFU_r000c001", "31UFU_r000c002@2024-03-04"], k=5)
    with psycopg.connect(world["url"]) as conn:
        rows = conn.execute("SELECT chip_id, acquired FROM clay.search_label_set('trees', 5)").fetchall()
    assert [r[0] for r in rows] == by_set["chip_id"].tolist()

    # detections: a partition's rows replaced together, read back best first
    det = pd.DataFrame({"label_set": "trees", "chip_id": ["31UFU_r000c004", "31UFU_r000c005"], "tile": "31UFU",
                        "acquired": DAYS[0], "score": [0.9, 0.2], "model_version": "probe-x"})
    key = f"{DAYS[0].isoformat()}|31UFU"
    assert store.write_detections(key, det) == 2
    assert store.write_detections(key, det.iloc[:1]) == 1
    got = store.detections("trees", 0.0)
    assert got[["chip_id", "score", "model_version"]].values.tolist() == [["31UFU_r000c004", 0.9, "probe-x"]]
    assert store.detections("trees", 0.95).empty
    with pytest.raises(ChipNotFoundError, match="label set 'nothing' has no labels and no detections"):
        store.detections("nothing")
    with pytest.raises(ConfigError, match=r"in \[0, 1\]"):
        store.write_detections(key, det.assign(score=[1.5, 0.1]))


def test_reader_can_search_and_read_labels_but_not_write_them(world):
    store = world["store"]
    store.add_labels("reader_set", ["31UFU_r000c001"], ["31UFU_r000c002"])
    url = store.create_reader_role("clay_label_reader", "r3ad-labels")
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM clay.labels WHERE label_set = 'reader_set'").fetchone()[0] == 2
        assert conn.execute("SELECT count(*) FROM clay.search_label_set('reader_set', 3)").fetchone()[0] == 3
        conn.execute("SELECT * FROM clay.detections('reader_set')").fetchall()
        conn.execute("SET default_transaction_read_only = off")
        for stmt in ("INSERT INTO clay.labels (label_set, chip_id, acquired, label) "
                     "VALUES ('x', '31UFU_r000c001', '2024-03-04', true)",
                     "DELETE FROM clay.detections", "UPDATE clay.labels SET label = NOT label"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(stmt)

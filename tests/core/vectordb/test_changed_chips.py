"""clay.changed_chips (migration 7) on a planted world: the synthetic source's scenes, chipped
and embedded by the tiny encoder, in a real Postgres + pgvector (halfvec, the default storage).

The planted clearings appear at acquisitions 4 and 5 (2024-01-29, 2024-02-05); acquisitions 2
and 7 (2024-01-15, 2024-02-19) are cloudy, so "nearest clear observation" matters there.
"""

from __future__ import annotations

import json
from datetime import date

import numpy as np
import pandas as pd
import psycopg
import pytest
import shapely
from pyproj import Transformer
from shapely.geometry import shape

from clay_core.encoder import resolve_config
from clay_core.errors import ClayError
from clay_core.tiles import s2_tile_grid
from clay_core.vectordb import VectorStore, changed_chips

from tests.support.planted import load_world, planted_world

BEFORE, AFTER = date(2024, 1, 15), date(2024, 2, 19)


@pytest.fixture(scope="module")
def world():
    return planted_world()


@pytest.fixture(scope="module")
def store(pg_url, world):
    with VectorStore(pg_url, resolve_config("tiny")["dim"]) as st:
        st.ensure_schema()
        load_world(st, world)
        yield st


@pytest.fixture(scope="module")
def stored(store):
    """Every stored observation: key, cloud fraction and the embedding as the server holds it."""
    frame, emb = store.embeddings()
    with psycopg.connect(store.url) as conn:
        clouds = pd.DataFrame(conn.execute("SELECT chip_id, acquired, cloud_fraction FROM clay.observations").fetchall(),
                              columns=["chip_id", "acquired", "cloud_fraction"])
    return frame.merge(clouds, on=["chip_id", "acquired"], how="left"), emb


def reference(stored, date_a, date_b, max_cloud=0.0, max_gap=None):
    """The comparison computed in numpy: per chip, its clear observations nearest to each date
    (ties: earlier for A, later for B), cosine distance (float64)."""
    frame, emb = stored
    out = {}
    for chip, idx in frame.groupby("chip_id").indices.items():
        obs = [(frame["acquired"].iloc[i], i) for i in idx if frame["cloud_fraction"].iloc[i] <= max_cloud]
        near = lambda d, later: [o for o in sorted(obs, key=lambda o: (abs((o[0] - d).days),  # noqa: E731
                                                                       -o[0].toordinal() if later else o[0].toordinal()))
                                 if max_gap is None or abs((o[0] - d).days) <= max_gap][:1]
        a, b = near(date_a, False), near(date_b, True)
        if a and b and a[0][0] < b[0][0]:
            u, v = emb[a[0][1]].astype(np.float64), emb[b[0][1]].astype(np.float64)
            out[chip] = (a[0][0], b[0][0], 1 - u @ v / np.linalg.norm(u) / np.linalg.norm(v))
    return out


def test_migration_7_is_recorded(store):
    assert store.schema_version() >= 7
    with psycopg.connect(store.url) as conn:
        assert conn.execute("SELECT description FROM clay.schema_version WHERE version = 7").fetchone()[0] \
            .startswith("clay.changed_chips")


def test_finds_exactly_the_planted_clearings_between_a_date_before_and_after(store, world):
    res = changed_chips(store, BEFORE, AFTER, 0.03)
    assert set(res["chip_id"]) == set(world.cleared), res
    for r in res.itertuples():
        assert r.acquired_a < world.cleared[r.chip_id] <= r.acquired_b
    # most changed first
    assert res["distance"].is_monotonic_decreasing
    # a wide margin: the clearings move about 0.07, every other chip less than 0.01
    every = changed_chips(store, BEFORE, AFTER, 0.0)
    planted = every["chip_id"].isin(list(world.cleared))
    assert every.loc[planted, "distance"].min() > 0.05 and every.loc[~planted, "distance"].max() < 0.01


def test_before_both_clearings_nothing_changed(store):
    assert changed_chips(store, date(2024, 1, 1), date(2024, 1, 22), 0.03).empty


def test_every_chip_matches_the_numpy_reference(store, stored):
    """min_distance 0: every chip with two distinct clear observations, with the observation
    nearest each date among the clear ones, and the cosine distance of the stored vectors."""
    for max_cloud, gap in ((0.0, None), (1.0, None), (0.0, 3)):
        want = reference(stored, BEFORE, AFTER, max_cloud, gap)
        got = changed_chips(store, BEFORE, AFTER, 0.0, max_cloud=max_cloud, max_gap_days=gap)
        assert set(got["chip_id"]) == set(want), (max_cloud, gap)
        for r in got.itertuples():
            a, b, d = want[r.chip_id]
            assert (r.acquired_a, r.acquired_b) == (a, b), (r, a, b)
            assert r.distance == pytest.approx(d, abs=1e-6)


def test_partly_cloudy_views_are_not_clear(store, stored):
    """On the cloudy dates the clear view nearest is another date; with every stored view
    counted (max_cloud 1), some chips compare their partly cloudy view of that day."""
    strict = changed_chips(store, BEFORE, AFTER, 0.0)
    cloudy = stored[0].query("acquired == @BEFORE and cloud_fraction > 0")["chip_id"]
    assert len(cloudy), "the planted world has partly cloudy chips on 2024-01-15"
    strict_a = strict.set_index("chip_id")["acquired_a"]
    assert all(strict_a[c] != BEFORE for c in cloudy if c in strict_a.index)
    loose = changed_chips(store, BEFORE, AFTER, 0.0, max_cloud=1.0).set_index("chip_id")["acquired_a"]
    assert any(loose[c] == BEFORE for c in cloudy)


def test_filters_tiles_and_bbox(store, world):
    res = changed_chips(store, BEFORE, AFTER, 0.03, tiles=["32UNB"])
    assert set(res["chip_id"]) == {c for c in world.cleared if c.startswith("32UNB")}
    one = res.iloc[0]
    inner = [one.lon - 1e-4, one.lat - 1e-4, one.lon + 1e-4, one.lat + 1e-4]
    assert changed_chips(store, BEFORE, AFTER, 0.03, bbox=inner)["chip_id"].tolist() == [one.chip_id]


@pytest.mark.parametrize("args, message", [
    ((AFTER, BEFORE, 0.1), "must be before"),
    ((BEFORE, AFTER, float("nan")), "min_distance must be a number"),
    ((BEFORE, AFTER, 0.1, -1), "max_gap_days must be >= 0"),
])
def test_bad_arguments_are_clear_errors(store, args, message):
    a, b, d, *gap = args
    with pytest.raises(ClayError, match=message):
        changed_chips(store, a, b, d, max_gap_days=gap[0] if gap else None)


def test_the_reader_role_can_call_it(store, world):
    url = store.create_reader_role("clay_reader_changes", "s3cret-changes")
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT chip_id FROM clay.changed_chips(%s, %s, 0.03)", (BEFORE, AFTER)).fetchall()
    assert {r[0] for r in rows} == set(world.cleared)


def test_cli_writes_geojson_of_the_chip_footprints(store, world, tmp_path, monkeypatch, capsys):
    from clay_assets.cli import main

    monkeypatch.setenv("DATABASE_URL", store.url)
    monkeypatch.setenv("CLAY_HOME", str(tmp_path / "home"))
    out = tmp_path / "changes.geojson"
    assert main(["changes", "--from", str(BEFORE), "--to", str(AFTER), "--min-distance", "0.03",
                 "--geojson", str(out)]) == 0
    assert f"{len(world.cleared)} chip(s) changed" in capsys.readouterr().out
    doc = json.loads(out.read_text())
    assert {f["properties"]["chip_id"] for f in doc["features"]} == set(world.cleared)
    for f in doc["features"]:
        poly, tile = shape(f["geometry"]), f["properties"]["tile"]
        grid = s2_tile_grid(tile)
        native = shapely.transform(poly, lambda xy: np.column_stack(
            Transformer.from_crs(4326, grid.crs, always_xy=True).transform(xy[:, 0], xy[:, 1])))
        west, north = grid.transform.c, grid.transform.f
        assert native.bounds[0] >= west - 1e-3 and native.bounds[3] <= north + 1e-3  # inside the tile
    assert main(["changes", "--from", str(AFTER), "--to", str(BEFORE)]) == 2

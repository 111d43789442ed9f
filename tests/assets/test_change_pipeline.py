"""Persistent change events through the real pipeline: incremental (window by window) equals
batch (the whole series at once), events land in Postgres, re-running a window does not
duplicate them."""

from __future__ import annotations

import os
from datetime import date, timedelta

import numpy as np
import pandas as pd
import psycopg
import pytest
from dagster import DagsterInstance, materialize

from clay_assets.definitions import ALL_ASSETS, PER_SCENE_DOWNSTREAM
from clay_assets.partitions import make_key
from clay_assets.resources import ChangeSettings
from clay_assets.runner import materialize_graph
from clay_core.change import detect_changes, load_current
from clay_core.encoder.store import read_observations
from clay_core.types import Observations
from tests.support.pipeline import small_resources, small_source

WINDOWS = [(date(2024, 1, 1) + timedelta(weeks=i)).isoformat() for i in range(9)]
DETECTOR = dict(n_components=3, n_harmonics=0, detector_baseline_obs=3, detector_k=2, detector_threshold=4.0)


@pytest.fixture(scope="module")
def run(tmp_path_factory, pg_url):
    base = tmp_path_factory.mktemp("events")
    (base / "dagster").mkdir()
    os.environ["DAGSTER_HOME"] = str(base / "dagster")
    instance = DagsterInstance.get()
    src = small_source(tiles=["31UFU"], clearings_per_tile=2, change_at=[5, 6], cloud_every=0)
    res = small_resources(base / "clay", pg_url, source=src)
    res["change_settings"] = ChangeSettings(**DETECTOR)
    summary = materialize_graph(["31UFU"], WINDOWS, res, instance)
    assert not summary.failures
    yield {"res": res, "instance": instance, "src": src.get_source(), "pg_url": pg_url}
    instance.dispose()


def _events(layout) -> pd.DataFrame:
    frames = [pd.read_parquet(layout.partition("change", "31UFU", w) / "events.parquet") for w in WINDOWS]
    return pd.concat(frames, ignore_index=True).sort_values(["chip_id", "first_date"]).reset_index(drop=True)


def test_planted_clearings_become_dated_events(run):
    layout = run["res"]["home"].layout
    ev = _events(layout)
    planted = {f"31UFU_r{p.row0 // 64:03d}c{p.col0 // 64:03d}": p.acquired for p in run["src"].planted_changes(["31UFU"])}
    found = {r.chip_id: r.first_date for r in ev.itertuples()}
    assert set(planted) <= set(found), (planted, found)
    for cid, day in planted.items():
        assert found[cid] == day  # dated at the planted acquisition exactly
    assert len(set(found) - set(planted)) <= 1  # at most one false alarm among 16 chips


def test_incremental_equals_batch(run):
    layout = run["res"]["home"].layout
    basis = load_current(layout.root / "pca")
    obs = Observations.concat([read_observations(layout.partition("embeddings", "31UFU", w) / "embeddings.zarr")
                               for w in WINDOWS], 192)
    pcs = basis.transform(obs.vectors)[:, :3]
    detector = run["res"]["change_settings"].params().detector
    batch = []
    for cid in sorted(set(obs.chip_id)):
        m = obs.chip_id == cid
        order = np.argsort(obs.datetime[m])
        dates = list(pd.to_datetime(obs.datetime[m][order]).to_pydatetime())
        for e in detect_changes(dates, pcs[m][order], params=detector):
            batch.append((cid, e.first_date.date(), e.confirmed_date.date(), round(float(e.magnitude), 9)))
    inc = [(r.chip_id, r.first_date, r.confirmed_date, round(float(r.magnitude), 9)) for r in _events(layout).itertuples()]
    assert inc == sorted(batch)
    assert inc  # something was detected, so the comparison means something


def test_events_in_postgres_and_rerun_keeps_them_once(run):
    layout = run["res"]["home"].layout
    n_files = len(_events(layout))
    q = "SELECT count(*) FROM clay.change_events WHERE tile = '31UFU'"
    with psycopg.connect(run["pg_url"]) as conn:
        assert conn.execute(q).fetchone()[0] == n_files
    key = make_key("31UFU", WINDOWS[6])
    assert materialize(ALL_ASSETS, selection=PER_SCENE_DOWNSTREAM, partition_key=key, resources=run["res"],
                       instance=run["instance"]).success
    with psycopg.connect(run["pg_url"]) as conn:
        assert conn.execute(q).fetchone()[0] == n_files
    assert len(_events(layout)) == n_files


def test_settings_give_one_typed_parameter_object():
    p = ChangeSettings(**DETECTOR).params()
    assert (p.n_components, p.n_harmonics, p.baseline_obs) == (3, 0, 3)
    d = p.detector
    assert (d.baseline_obs, d.k_consecutive, d.threshold, d.n_harmonics) == (3, 2, 4.0, 0)
    assert d.feature_names == ("pc1", "pc2", "pc3")

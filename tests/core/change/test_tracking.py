"""Tests of clay_core.change.tracking: per-chip detector states carried window to window."""

from __future__ import annotations

import numpy as np
import pandas as pd

from clay_core.change import ChangeParams, DetectorParams, PcaBasis, advance_events, detect_changes
from clay_core.change.tracking import EVENT_COLUMNS, STATE_FILE, previous_states, replay_windows, save_states
from clay_core.storage import Layout, write_manifest
from clay_core.types import Observations, PartitionId, weekly_windows
from tests.core.change.series import first_index_after, make_dates, seasonal

DETECTOR = DetectorParams(baseline_obs=6, n_harmonics=0, k_consecutive=2, feature_names=("pc1", "pc2"))


def _windows() -> dict[str, Observations]:
    """Two chips observed weekly for a year, one with a step after ~7 months, by window."""
    dates = make_dates(n_years=1.0, seed=5, drop=0.0, jitter=0)
    values = {"a": seasonal(dates, n_features=2, seed=6), "b": seasonal(dates, n_features=2, seed=7)}
    values["b"][first_index_after(dates, 0.6):] += [0.5, -0.4]
    out = {}
    for i, w in enumerate(weekly_windows(dates[0].date(), len(dates))):
        out[w] = Observations(np.array(["a", "b"], dtype=object),
                              np.array([dates[i], dates[i]], dtype="datetime64[ns]"),
                              np.stack([values["a"][i], values["b"][i]]).astype(np.float32))
    return out


def test_window_by_window_equals_batch():
    windows = _windows()
    states, events = {}, []
    for obs in windows.values():
        tracked = advance_events(states, obs, obs.vectors.astype(np.float64), DETECTOR)
        states = tracked.states
        assert list(tracked.scores.columns)[:2] == ["chip_id", "datetime"]
        events.append(tracked.events)
    got = pd.concat(events, ignore_index=True)
    assert list(got.columns) == EVENT_COLUMNS
    obs = Observations.concat(list(windows.values()), 2)
    for cid in ("a", "b"):
        m = obs.chip_id == cid
        batch = detect_changes(list(pd.to_datetime(obs.datetime[m]).to_pydatetime()), obs.vectors[m].astype(np.float64),
                               params=DETECTOR)
        mine = got[got["chip_id"] == cid]
        assert [e.first_date.date() for e in batch] == list(mine["first_date"])
    assert (got["chip_id"] == "b").any() and got.loc[got["chip_id"] == "b", "signals"].iloc[0][0] in ("pc1", "pc2")


def test_saved_states_are_reused_only_with_the_same_basis_and_parameters(tmp_path):
    layout = Layout(tmp_path)
    windows = _windows()
    names = list(windows)
    identity = PcaBasis(1, np.zeros(2), np.eye(2), np.array([0.6, 0.4]), 10)
    params = ChangeParams(n_components=2, detector=DETECTOR)
    states, replayed = replay_windows({}, dict(list(windows.items())[:3]), None, identity, params)
    assert replayed == 3 and set(states) == {"a", "b"}
    d = layout.partition("change", "T1", names[2])
    d.mkdir(parents=True)
    assert save_states(d, 1, DETECTOR, states) == d / STATE_FILE
    write_manifest(d, {})

    later = PartitionId(window=names[5], tile="T1")
    loaded, upto = previous_states(layout, later, 1, DETECTOR)
    assert upto == names[2] and loaded == states
    # only windows after the saved one are replayed
    _, n = replay_windows(loaded, {w: windows[w] for w in names[:5]}, upto, identity, params)
    assert n == 2
    # another basis version or other detector settings: start over
    assert previous_states(layout, later, 2, DETECTOR) == ({}, None)
    other = DetectorParams(baseline_obs=7, n_harmonics=0, k_consecutive=2, feature_names=("pc1", "pc2"))
    assert previous_states(layout, later, 1, other) == ({}, None)
    # windows at or after the partition itself are never used
    assert previous_states(layout, PartitionId(window=names[2], tile="T1"), 1, DETECTOR) == ({}, None)


def test_change_params_carry_the_detector():
    assert ChangeParams().detector == DetectorParams()
    p = ChangeParams(n_components=2, detector=DETECTOR)
    assert p.detector.feature_names == ("pc1", "pc2")
    assert DetectorParams.from_dict(p.detector.to_dict()) == DETECTOR

"""Tests of clay_core.change.tracking: every chip's detector advanced window by window on
columnar state, against the scalar detector on whole series."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from clay_core.change import ChangeParams, DetectorParams, advance_events, detect_changes, score_series
from clay_core.change.batch_detector import state_of
from clay_core.change.carry import CarryHeader, ChipTable, load_carry, save_carry
from clay_core.change.tracking import EVENT_COLUMNS, new_detector_table
from clay_core.types import Observations, weekly_windows
from tests.core.change.series import first_index_after, make_dates, seasonal

DETECTOR = DetectorParams(baseline_obs=6, n_harmonics=0, k_consecutive=2, feature_names=("pc1", "pc2"))
SEASONAL = DetectorParams(baseline_obs=8, baseline_years=0.3, k_consecutive=3, feature_names=("pc1", "pc2"))


def _windows(n_chips: int = 6) -> dict[str, Observations]:
    """Chips observed weekly for a year (chip 0 skips every 5th week), every odd chip steps
    after ~7 months, by window."""
    dates = make_dates(n_years=1.0, seed=5, drop=0.0, jitter=0)
    ids = [f"c{i}" for i in range(n_chips)]
    values = {c: seasonal(dates, n_features=2, seed=6 + i) for i, c in enumerate(ids)}
    for i, c in enumerate(ids):
        if i % 2:
            values[c][first_index_after(dates, 0.6):] += [0.5, -0.4]
    out = {}
    for k, w in enumerate(weekly_windows(dates[0].date(), len(dates))):
        here = [c for c in ids if not (c == "c0" and k % 5 == 4)]
        out[w] = Observations(np.array(here, dtype=object), np.array([dates[k]] * len(here), dtype="datetime64[ns]"),
                              np.stack([values[c][k] for c in here]).astype(np.float32))
    return out


@pytest.mark.parametrize("detector", [DETECTOR, SEASONAL])
def test_window_by_window_equals_the_scalar_detector_on_whole_series(detector):
    windows = _windows()
    tab, events, scores = new_detector_table(2, detector), [], []
    for obs in windows.values():
        tracked = advance_events(tab, obs, obs.vectors.astype(np.float64), detector)
        events.append(tracked.events)
        scores.append(tracked.scores)
    got = pd.concat(events, ignore_index=True)
    assert list(got.columns) == EVENT_COLUMNS
    obs = Observations.concat(list(windows.values()), 2)
    sc = pd.concat(scores, ignore_index=True)
    for cid in sorted(set(obs.chip_id)):
        m = obs.chip_id == cid
        dates = list(pd.to_datetime(obs.datetime[m]).to_pydatetime())
        batch = detect_changes(dates, obs.vectors[m].astype(np.float64), params=detector)
        mine = got[got["chip_id"] == cid]
        assert [(e.first_date.date(), e.confirmed_date.date(), e.magnitude) for e in batch] == \
            list(zip(mine["first_date"], mine["confirmed_date"], mine["magnitude"]))  # bit for bit
        ref = score_series(dates, obs.vectors[m].astype(np.float64), params=detector)
        np.testing.assert_array_equal(sc.loc[sc["chip_id"] == cid, "detector_score"].to_numpy(), ref["score"].to_numpy())
    assert got["chip_id"].isin(["c1", "c3", "c5"]).sum() >= 2  # steps fired, so the comparison means something


def test_columnar_state_round_trips_through_the_carry_file(tmp_path):
    windows = _windows()
    names = list(windows)
    tab = new_detector_table(2, SEASONAL)
    for w in names[:30]:
        advance_events(tab, windows[w], windows[w].vectors.astype(np.float64), SEASONAL)
    save_carry(tmp_path, tab, CarryHeader(1, {}, names[29], 30))
    loaded = load_carry(tmp_path)
    assert isinstance(loaded, ChipTable) and loaded.equals(tab)
    # a row reads back as the scalar detector's state, fitted baseline included
    fitted = np.flatnonzero(loaded["det_fit_ok"])
    assert len(fitted) >= 3 and state_of(loaded, int(fitted[0]), SEASONAL).fit.n_obs >= 8


def test_dates_going_backwards_are_refused():
    windows = list(_windows().values())
    tab = new_detector_table(2, DETECTOR)
    advance_events(tab, windows[3], windows[3].vectors.astype(np.float64), DETECTOR)
    with pytest.raises(ValueError, match="non-decreasing"):
        advance_events(tab, windows[2], windows[2].vectors.astype(np.float64), DETECTOR)


def test_change_params_carry_the_detector():
    assert ChangeParams().detector == DetectorParams()
    p = ChangeParams(n_components=2, detector=DETECTOR)
    assert p.detector.feature_names == ("pc1", "pc2")
    assert DetectorParams.from_dict(p.detector.to_dict()) == DETECTOR

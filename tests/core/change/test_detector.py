"""Tests of clay_core.change.detector on constructed series with seeded noise."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from clay_core.change.detector import detect_changes, run_series, score_series, update
from clay_core.change.params import DetectorParams
from clay_core.change.state import ChangeEvent, ChangeState, ObservationScore
from clay_core.change.timeutil import to_datetime, to_decimal_years
from tests.core.change.series import SIGMA, START, first_index_after, make_dates, seasonal


# --------------------------------------------------------------------------------------
# detection on constructed series


def test_pure_seasonal_series_never_fires():
    for seed in range(5):
        dates = make_dates(n_years=3, seed=seed)
        assert detect_changes(dates, seasonal(dates, seed=100 + seed)) == []
        assert detect_changes(dates, seasonal(dates, n_features=5, seed=200 + seed)) == []


def test_step_change_1d_fires_once_at_the_step():
    dates = make_dates(n_years=3, seed=11)
    y = seasonal(dates, seed=12)
    s = first_index_after(dates, 1.6)
    y[s:] += 0.5  # 25 sd
    events = detect_changes(dates, y)
    assert len(events) == 1
    e = events[0]
    assert isinstance(e, ChangeEvent)
    assert e.first_date == dates[s] and e.first_index == s
    assert e.confirmed_date == dates[s + 2] and e.confirmed_index == s + 2  # k = 3
    assert e.signals == ["value"]
    assert e.magnitude > 8  # 25 noise sd's, over a scale floored at the season's step from one week to the next
    assert e.n_obs_baseline >= 12
    # k_consecutive is honoured
    e5 = detect_changes(dates, y, k_consecutive=5)[0]
    assert (e5.first_index, e5.confirmed_index) == (s, s + 4)


def test_step_change_multivariate_fires_once_with_the_right_signals():
    dates = make_dates(n_years=3, seed=13)
    y = seasonal(dates, n_features=5, seed=14)
    s = first_index_after(dates, 1.4)
    y[s:, 1] += 0.3
    y[s:, 3] -= 0.9
    events = detect_changes(dates, y)
    assert len(events) == 1
    e = events[0]
    assert (e.first_date, e.confirmed_date) == (dates[s], dates[s + 2])
    assert e.signals == ["f3", "f1"]  # strongest first
    named = detect_changes(dates, y, feature_names=["pc1", "pc2", "pc3", "pc4", "pc5"])
    assert named[0].signals == ["pc4", "pc2"]
    assert detect_changes(dates, y, max_signals=1)[0].signals == ["f3"]


def test_isolated_outliers_do_not_fire_with_k3():
    dates = make_dates(n_years=3, seed=15)
    y = seasonal(dates, seed=16)
    a = first_index_after(dates, 1.3)
    b = first_index_after(dates, 2.0)
    y[a] += 10.0  # one cloud-like spike
    y[b : b + 2] += 10.0  # two in a row
    assert detect_changes(dates, y) == []
    # control: the spikes do exceed, and with k=1 a single one fires
    scores = run_series(dates, y)[2]
    assert scores[a].exceeds and scores[b].exceeds and scores[b + 1].exceeds
    assert len(detect_changes(dates, y, k_consecutive=1)) >= 1


def test_marked_cloudy_observations_are_skipped_even_if_extreme():
    dates = make_dates(n_years=3, seed=17)
    y = seasonal(dates, n_features=3, seed=18)
    a = first_index_after(dates, 1.5)
    y[a : a + 6] = 50.0  # six extreme observations in a row
    clear = np.ones(len(dates), dtype=bool)
    clear[a : a + 6] = False
    assert detect_changes(dates, y, clear=clear) == []
    assert len(detect_changes(dates, y)) == 1  # control: unmarked, they fire
    df = score_series(dates, y, clear=clear)
    assert not df["clear"].iloc[a : a + 6].any()
    assert df["score"].iloc[a : a + 6].isna().all()
    assert not df["exceeds"].any()
    # non-finite values count as cloudy too
    y_nan = seasonal(dates, n_features=3, seed=18)
    y_nan[a : a + 6] = np.nan
    assert detect_changes(dates, y_nan) == []


def test_cloudy_observation_inside_a_run_neither_breaks_nor_extends_it():
    dates = make_dates(n_years=3, seed=19)
    y = seasonal(dates, seed=20)
    s = first_index_after(dates, 1.5)
    y[s:] += 0.5
    clear = np.ones(len(dates), dtype=bool)
    clear[s + 1] = False
    y[s + 1] = 0.0  # would not exceed if it were used
    e = detect_changes(dates, y, clear=clear)
    assert len(e) == 1
    assert (e[0].first_index, e[0].confirmed_index) == (s, s + 3)
    df = score_series(dates, y, clear=clear)
    assert df["change_flag"].to_numpy().nonzero()[0].tolist() == [s, s + 2, s + 3]


def test_gap_in_dates_is_handled():
    # three months without data, no change: nothing fires
    dates = make_dates(n_years=3, seed=21, gap=(1.5, 1.75))
    t = to_decimal_years(dates)
    assert np.max(np.diff(t)) > 0.24
    assert detect_changes(dates, seasonal(dates, seed=22)) == []
    # a step during the gap is dated at the first observation after it
    y = seasonal(dates, seed=22)
    after = first_index_after(dates, 1.75)
    y[after:] += 0.5
    e = detect_changes(dates, y)
    assert len(e) == 1
    assert e[0].first_date == dates[after] and e[0].confirmed_index == after + 2


def test_baseline_restarts_after_a_change():
    dates = make_dates(n_years=4, seed=23)
    y = seasonal(dates, seed=24)
    s1 = first_index_after(dates, 1.3)
    s2 = first_index_after(dates, 2.8)  # > 1 year + k obs after s1
    permanent = y.copy()
    permanent[s1:] += 0.5
    # a permanent step fires once, not every k observations
    e = detect_changes(dates, permanent)
    assert [x.first_index for x in e] == [s1]
    # a second step later is a second event
    two = permanent.copy()
    two[s2:] -= 0.8
    e = detect_changes(dates, two)
    assert [x.first_index for x in e] == [s1, s2]
    assert [x.first_date for x in e] == [dates[s1], dates[s2]]
    assert [x.confirmed_index for x in e] == [s1 + 2, s2 + 2]
    # the second baseline started at the first change's first observation
    df = score_series(dates, two)
    rows = df.iloc[s1 + 3 :]
    first_scored = int(rows.index[rows["score"].notna()][0])
    t = to_decimal_years(dates)
    assert t[first_scored - 1] - t[s1] >= 1.0 > t[first_scored - 2] - t[s1]
    assert e[1].n_obs_baseline >= first_scored - s1  # and refitted as that segment grew
    assert detect_changes(dates, two, refit_growth=None)[1].n_obs_baseline == first_scored - s1


def test_restart_with_short_baselines_detects_close_steps():
    # no seasonality + n_harmonics=0: the baseline is just baseline_obs observations
    dates = make_dates(n_years=1.5, seed=25)
    rng = np.random.default_rng(26)
    y = 1.0 + rng.normal(0, SIGMA, len(dates))
    s1, s2 = 20, 40
    y[s1:] += 0.5
    y[s2:] += 0.5
    e = detect_changes(dates, y, n_harmonics=0, baseline_obs=6)
    assert [x.first_index for x in e] == [s1, s2]
    assert e[1].n_obs_baseline >= 6  # refitted as the segment grew
    assert detect_changes(dates, y, n_harmonics=0, baseline_obs=6, refit_growth=None)[1].n_obs_baseline == 6


def test_trend_option():
    dates = make_dates(n_years=3, seed=27)
    t = to_decimal_years(dates)
    y = seasonal(dates, seed=28) + 0.8 * (t - t[0])  # steady drift, 40 sd per year
    assert detect_changes(dates, y, trend=True) == []
    # a segment that refits keeps a significant slope too
    assert detect_changes(dates, y) == []
    assert len(detect_changes(dates, y, trend=False, refit_growth=None)) >= 1


def test_baseline_window_params():
    dates = make_dates(n_years=2, seed=29)
    y = seasonal(dates, seed=30)
    y[:5] += 3.0  # junk before the baseline window
    start, end = dates[5], dates[40]
    df = score_series(dates, y, baseline_start=start, baseline_end=end)
    assert not df["in_baseline"].iloc[:5].any() and df["score"].iloc[:5].isna().all()
    assert df["in_baseline"].iloc[5:41].all()
    assert df["score"].iloc[41:].notna().all()
    assert not df["change_flag"].any()
    # without the window the junk starts the baseline: the fit is dragged only a little
    # (robust), but monitoring starts after one year, not at dates[41]
    df2 = score_series(dates, y)
    assert df2["score"].iloc[41:45].isna().all()


def test_date_types_and_ordering():
    dates = make_dates(n_years=3, seed=31)
    y = seasonal(dates, seed=32)
    s = first_index_after(dates, 1.5)
    y[s:] += 0.5
    aware = [d.replace(tzinfo=timezone.utc) for d in dates]
    e = detect_changes(aware, y)
    assert e[0].first_date == aware[s] and e[0].first_date.tzinfo is not None
    as_np = np.array(dates, dtype="datetime64[us]")
    e_np = detect_changes(as_np, y)
    assert e_np[0].first_date == dates[s]
    e_iso = detect_changes([d.isoformat() for d in dates], y)
    assert e_iso == e_np
    assert to_datetime(date(2021, 5, 1)) == datetime(2021, 5, 1)
    with pytest.raises(ValueError, match="non-decreasing"):
        detect_changes(dates[::-1], y)


def test_params_validation():
    with pytest.raises(TypeError, match="unknown"):
        detect_changes(make_dates(n_years=1), np.zeros(len(make_dates(n_years=1))), treshold=3)
    with pytest.raises(ValueError):
        DetectorParams(k_consecutive=0)
    with pytest.raises(ValueError):
        DetectorParams(baseline_obs=2)
    assert DetectorParams().effective_baseline_years == 1.0
    assert DetectorParams(n_harmonics=0).effective_baseline_years == 0.0
    p = DetectorParams(baseline_end=date(2021, 1, 1), feature_names=["a", "b"])
    assert DetectorParams.from_dict(json.loads(json.dumps(p.to_dict()))) == p
    state, _, _ = update(None, START, [1.0, 2.0], threshold=3.0)
    with pytest.raises(ValueError, match="params differ"):
        update(state, START + timedelta(days=7), [1.0, 2.0], threshold=5.0)
    update(state, START + timedelta(days=7), [1.0, 2.0], threshold=3.0)  # same params: fine
    with pytest.raises(ValueError, match="features"):
        update(state, START + timedelta(days=14), [1.0, 2.0, 3.0])


# --------------------------------------------------------------------------------------
# incremental == batch


def _messy_series():
    """3 features, clouds (extreme, flagged), an unflagged spike, a gap and two steps."""
    rng = np.random.default_rng(33)
    dates = make_dates(n_years=4, seed=33, gap=(2.0, 2.2))
    y = seasonal(dates, n_features=3, seed=34)
    clear = rng.random(len(dates)) > 0.2
    y[~clear] = rng.uniform(5, 20, size=(int((~clear).sum()), 3))
    s1 = first_index_after(dates, 1.4)
    s2 = first_index_after(dates, 3.0)
    y[s1:, 0] += 0.6
    y[s2:, 2] -= 0.7
    spike = first_index_after(dates, 1.2)
    y[spike] += 5.0
    return dates, y, clear


def test_incremental_equals_batch_with_json_round_trips():
    dates, y, clear = _messy_series()
    params = dict(threshold=4.0, k_consecutive=3, feature_names=["pc1", "pc2", "pc3"])
    batch_state, batch_events, batch_scores = run_series(dates, y, clear, **params)
    assert len(batch_events) == 2  # the series is interesting enough
    assert detect_changes(dates, y, clear, **params) == batch_events

    state = None
    inc_events, inc_scores = [], []
    for i, (d, v, c) in enumerate(zip(dates, y, clear)):
        state, new, sc = update(state, d, v, clear=bool(c), **(params if i == 0 else {}))
        assert isinstance(sc, ObservationScore)
        inc_events.extend(new)
        inc_scores.append(sc)
        text = json.dumps(state.to_dict(), allow_nan=False)  # strict JSON
        state = ChangeState.from_dict(json.loads(text))

    assert inc_events == batch_events
    assert state.events == batch_events
    pd.testing.assert_frame_equal(
        pd.DataFrame([s.to_dict() for s in inc_scores]),
        pd.DataFrame([s.to_dict() for s in batch_scores]),
        check_exact=True,
    )
    assert json.dumps(state.to_dict()) == json.dumps(batch_state.to_dict())


def test_batch_can_continue_from_a_saved_state():
    dates, y, clear = _messy_series()
    full = detect_changes(dates, y, clear)
    h = len(dates) // 2
    state, ev1, _ = run_series(dates[:h], y[:h], clear[:h])
    state = ChangeState.from_dict(json.loads(json.dumps(state.to_dict())))
    state, ev2, _ = run_series(dates[h:], y[h:], clear[h:], state=state)
    assert ev1 + ev2 == full
    assert ev1 and ev2  # the split falls between the two events


# --------------------------------------------------------------------------------------
# score_series


def test_score_series_columns_and_flags():
    dates = make_dates(n_years=3, seed=35)
    y = seasonal(dates, n_features=2, seed=36)
    s = first_index_after(dates, 1.5)
    y[s:] += 0.5
    clear = np.ones(len(dates), dtype=bool)
    clear[3] = False
    df = score_series(dates, y, clear=clear)
    assert list(df.columns) == [
        "date", "index", "score", "residual_norm", "abs_deviation", "pct_deviation",
        "exceeds", "in_baseline", "clear", "change_flag", "change_onset",
    ]
    assert len(df) == len(dates) and df["index"].tolist() == list(range(len(dates)))
    assert df["change_flag"].to_numpy().nonzero()[0].tolist() == [s, s + 1, s + 2]
    assert df["change_onset"].to_numpy().nonzero()[0].tolist() == [s]
    assert df.attrs["events"][0].first_index == s
    assert not df["clear"].iloc[3] and df["in_baseline"].iloc[:3].all()
    mon = df[df["score"].notna()]
    assert (mon["residual_norm"] >= 0).all() and (mon["pct_deviation"] >= 0).all()
    # one feature: abs deviation is |residual| and score is |residual| / rmse
    df1 = score_series(dates, y[:, 0])
    m1 = df1[df1["score"].notna()]
    np.testing.assert_allclose(m1["abs_deviation"], m1["residual_norm"])


def _step3(dates, s, seed):
    y = seasonal(dates, n_features=3, seed=seed)
    y[s:, 0] += 0.5
    y[s:, 1] -= 0.4
    return y


def test_consistency_check_drops_an_outlier_pointing_away_just_before_a_step():
    dates = make_dates(n_years=3, seed=37)
    s = first_index_after(dates, 1.5)
    y = _step3(dates, s, 38)
    y[s - 1] += [-0.6, 0.5, 0.4]  # exceeds too, but points elsewhere (cloud-like)
    assert run_series(dates, y)[2][s - 1].exceeds
    e = detect_changes(dates, y)
    assert len(e) == 1
    assert (e[0].first_index, e[0].confirmed_index) == (s, s + 2)
    df = score_series(dates, y)
    assert df["change_flag"].to_numpy().nonzero()[0].tolist() == [s, s + 1, s + 2]
    # check disabled: the outlier starts the run, the change is dated one observation early
    off = detect_changes(dates, y, min_run_cosine=-1.0)
    assert (off[0].first_index, off[0].confirmed_index) == (s - 1, s + 1)
    # an outlier pointing the same way as the change cannot be told from its onset
    y2 = _step3(dates, s, 38)
    y2[s - 1] += [0.3, -0.2, 0.0]
    assert detect_changes(dates, y2)[0].first_index == s - 1
    # incremental with JSON round trips gives the same event
    state = None
    events = []
    for d, v in zip(dates, y):
        state, new, _ = update(state, d, v)
        events.extend(new)
        state = ChangeState.from_dict(json.loads(json.dumps(state.to_dict())))
    assert events == e


def test_consistency_check_skips_an_outlier_inside_a_run():
    dates = make_dates(n_years=3, seed=41)
    s = first_index_after(dates, 1.5)
    y = _step3(dates, s, 42)
    y[s + 1] += [-0.9, 0.9, 0.6]  # cloud inside the run: departs the other way
    e = detect_changes(dates, y)
    assert len(e) == 1
    assert (e[0].first_index, e[0].confirmed_index) == (s, s + 3)
    assert detect_changes(dates, y, min_run_cosine=-1.0)[0].confirmed_index == s + 2


def test_three_unrelated_outliers_in_a_row_do_not_fire():
    dates = make_dates(n_years=3, seed=43)
    y = seasonal(dates, n_features=3, seed=44)
    a = first_index_after(dates, 1.5)
    y[a : a + 3] += 0.6 * np.eye(3)  # haze, cloud, shadow: each exceeds, each its own way
    scores = run_series(dates, y)[2]
    assert all(scores[i].exceeds for i in range(a, a + 3))
    assert detect_changes(dates, y) == []
    assert len(detect_changes(dates, y, min_run_cosine=-1.0)) == 1  # control


def test_consistency_check_univariate_uses_the_sign():
    dates = make_dates(n_years=3, seed=39)
    y = seasonal(dates, seed=40)
    s = first_index_after(dates, 1.6)
    y[s:] -= 0.5
    y[s - 1] += 0.4  # opposite sign: removed
    assert detect_changes(dates, y)[0].first_index == s
    y[s - 1] -= 0.8  # now same sign (-0.4): it is the onset
    assert detect_changes(dates, y)[0].first_index == s - 1
    with pytest.raises(ValueError):
        DetectorParams(min_run_cosine=1.5)

"""Refitting a growing segment (``refit_growth``) and the variogram floor of the scale.

* a slow drift of a stable segment does not fire once the model refits (control: the
  first year extrapolated does fire);
* a clear step still fires on the day it starts with refits on;
* the stored segment stays bounded by ``refit_max_obs``, and incremental = batch (JSON state
  in between, and ``detect_many`` bit for bit);
* with ``variogram_floor`` the scale is at least the median step between consecutive
  observations, and a strong season whose timing varies from year to year stops firing
  (control: it fires without it); its cost, a subtle step under a strong weekly season, is
  kept visible too.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from clay_core.change import ChangeState, DetectorParams, detect_changes, detect_many, run_series
from clay_core.change.harmonic import fit_harmonic, variogram
from clay_core.change.timeutil import to_decimal_years
from tests.core.change.series import SIGMA, first_index_after, make_dates, seasonal

REFIT = {"refit_growth": 1.33}  # the default, spelled out: the controls switch it off


def _drifting(seed: int) -> tuple[list, np.ndarray]:
    """Four years whose level creeps up by 4 noise sd's a year (slow succession, sensor drift)."""
    dates = make_dates(n_years=4, seed=seed)
    t = to_decimal_years(dates)
    return dates, seasonal(dates, seed=seed + 1) + 4 * SIGMA * (t - t[0])


def test_a_slow_drift_does_not_fire_once_the_segment_refits():
    for seed in (1, 2, 3):
        dates, y = _drifting(seed)
        assert detect_changes(dates, y, **REFIT) == [], seed
        # control: the first year's model extrapolated for three more years calls the drift a change
        assert len(detect_changes(dates, y, refit_growth=None)) >= 1, seed


def test_a_clear_step_still_fires_and_is_dated_with_refits():
    for seed in (4, 5, 6):
        dates = make_dates(n_years=4, seed=seed)
        y = seasonal(dates, seed=seed + 1)
        s = first_index_after(dates, 2.5)  # after several refits
        y[s:] -= 8 * SIGMA
        events = detect_changes(dates, y, **REFIT)
        assert [e.first_index for e in events] == [s], seed


def test_the_stored_segment_is_bounded_and_incremental_equals_batch():
    dates = make_dates(n_years=6, seed=11)
    y = seasonal(dates, n_features=2, seed=12)
    s = first_index_after(dates, 4.0)
    y[s:] += 10 * SIGMA
    params = DetectorParams(refit_max_obs=60, **REFIT)
    state, events, _ = run_series(dates, y, params=params)
    assert [e.first_index for e in events] == [s]
    # the segment after the step holds ~90 clear observations: refitted up to the cap, then frozen
    assert state.fit.n_obs == params.refit_max_obs and state.buffer == []
    # one date at a time through JSON, as the pipeline stores it between runs
    st = ChangeState(params=params)
    for d, v in zip(dates, y):
        st = ChangeState.from_dict(json.loads(json.dumps(st.to_dict())))
        st, _, _ = run_series([d], v[None], state=st)
    assert st.events == events
    assert st.fit.n_obs == params.refit_max_obs and st.buffer == []


def test_detect_many_equals_detect_changes_with_refits_and_the_floor():
    dates = make_dates(n_years=4, seed=21)
    rng = np.random.default_rng(22)
    Y = np.stack([seasonal(dates, n_features=3, seed=30 + i) for i in range(10)])
    t = to_decimal_years(dates)
    s = first_index_after(dates, 2.2)
    Y[0, s:] += 10 * SIGMA
    Y[1, s:] -= 1.5 * SIGMA
    Y[2] += (4 * SIGMA * (t - t[0]))[:, None]
    Y[3, s : s + 3] = 50.0
    clear = rng.random(Y.shape[:2]) > 0.1
    params = DetectorParams(variogram_floor=True, **REFIT)
    many = detect_many(dates, Y, clear=clear, params=params)
    assert sum(map(len, many)) >= 2
    for i in range(len(Y)):
        assert many[i] == detect_changes(dates, Y[i], clear=clear[i], params=params), i


def _phenology(seed: int) -> tuple[list, np.ndarray]:
    """Four years, about every 14 days with 30 % missing, of a strong annual cycle (25 noise sd's)
    whose timing moves by ~11 days and whose amplitude by ~5 % from one year to the next, as
    real phenology does; no change."""
    rng = np.random.default_rng(seed)
    dates = make_dates(n_years=4, step=14, drop=0.3, seed=seed)
    t = to_decimal_years(dates)
    year = np.floor(t).astype(int) - int(np.floor(t[0]))
    shift, amp = rng.normal(0, 0.03, 5)[year], 1 + rng.normal(0, 0.05, 5)[year]
    return dates, 0.5 * amp * np.sin(2 * np.pi * (t + shift)) + rng.normal(0, SIGMA, t.size)


def test_the_variogram_floor_keeps_year_to_year_phenology_from_firing():
    series = [_phenology(200 + k) for k in range(30)]
    with_floor = sum(bool(detect_changes(d, y, variogram_floor=True)) for d, y in series)
    without = sum(bool(detect_changes(d, y, variogram_floor=False)) for d, y in series)
    assert with_floor <= 3  # measured 2 of 30
    assert without >= 10  # control (measured 14): a scale of the noise alone calls a late spring a change


def test_the_scale_is_at_least_the_variogram():
    dates, y = _phenology(31)
    t = to_decimal_years(dates)
    plain = fit_harmonic(t, y, robust=True)
    floored = fit_harmonic(t, y, robust=True, variogram_floor=True)
    v = float(variogram(y[None, :, None])[0, 0])
    assert floored.rmse[0] == pytest.approx(max(plain.rmse[0], v))
    assert v > plain.rmse[0]  # the floor is what sets this series' scale


@pytest.mark.parametrize("bad", [{"refit_growth": 1.0}, {"refit_growth": 0.5}, {"refit_max_obs": 5}])
def test_refit_settings_are_checked(bad):
    with pytest.raises(ValueError, match="refit"):
        DetectorParams(**bad)


def test_the_columnar_carry_stops_growing_at_refit_max_obs():
    from clay_core.change.batch_detector import _microseconds, detector_columns, step_detector
    from clay_core.change.carry import ChipTable

    dates = make_dates(n_years=5, seed=41)
    Y = np.stack([seasonal(dates, n_features=2, seed=50 + i) for i in range(6)])
    params = DetectorParams(refit_max_obs=80)  # more than the first year (~50): the first fit is not capped
    tab = ChipTable(np.array([], dtype=object), detector_columns(2, params))
    rows = tab.rows(np.array([f"c{i}" for i in range(6)], dtype=object))
    widest = 0
    for j, d in enumerate(dates):
        step_detector(tab, rows, np.full(6, _microseconds(d)), Y[:, j], params)
        widest = max(widest, tab["det_buf_value"].shape[1])
    assert widest <= params.refit_max_obs  # never more than the cap stored per chip
    assert (tab["det_fit_n"][rows] == params.refit_max_obs).all()  # refitted up to the cap...
    assert (tab["det_buf_n"][rows] == 0).all()  # ...then frozen, its observations dropped


def test_the_floor_costs_subtle_steps_under_a_strong_weekly_season():
    """The trade-off the variogram floor makes, kept visible: under an annual cycle of 25 noise
    sd's sampled weekly the floor is the season's weekly step, and a 1.5-sd step goes unseen;
    without the floor the CUSUM finds it."""
    found = {True: 0, False: 0}
    for seed in range(6):
        dates = make_dates(n_years=3, seed=10 + seed)
        y = seasonal(dates, seed=20 + seed)
        s = first_index_after(dates, 1.6)
        y[s:] -= 1.5 * SIGMA
        for floor in found:
            ev = detect_changes(dates, y, variogram_floor=floor)
            found[floor] += bool(ev and abs(ev[0].first_index - s) <= 2)
    assert found[False] >= 5 and found[True] <= 1  # measured 5 and 0 of 6

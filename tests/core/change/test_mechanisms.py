"""Each mechanism of the change detector, with a control that shows the test can fail.

* a recovery trend after a restart does not fire again (restart_trend; control: without it, it does);
* a subtle step of about 1.5 noise sd's fires and is dated (the CUSUM; control: without it, nothing)
  in a series with a mild season (a strong one floors the scale at its weekly step, see
  ``test_refit.py``);
* an outlier run with mixed directions does not fire (control: the same run in one direction does);
* the exceedance threshold widens for short baselines and far extrapolations;
* pure noise rarely fires; ``detect_many`` equals ``detect_changes`` bit for bit.
"""

from __future__ import annotations

import numpy as np

from clay_core.change import DetectorParams, detect_changes, detect_many
from clay_core.change.limits import cusum_limit, exceed_threshold, onset_position, run_support
from clay_core.change.timeutil import to_decimal_years
from tests.core.change.series import SIGMA, first_index_after, make_dates, seasonal


def _recovering(seed: int) -> tuple[list, np.ndarray, int]:
    """Stable 1.5 years, a drop of 20 sd's, then a linear recovery of 2/3 of it over 3 years."""
    dates = make_dates(n_years=4.5, seed=seed)
    y = seasonal(dates, seed=seed + 1)
    t = to_decimal_years(dates)
    s = first_index_after(dates, 1.5)
    drop = 20 * SIGMA
    y[s:] -= drop - (drop * 2 / 3) * (t[s:] - t[s]) / 3.0
    return dates, y, s


def test_a_recovery_trend_after_a_restart_does_not_fire_again():
    for seed in (1, 2, 3):
        dates, y, s = _recovering(seed)
        events = detect_changes(dates, y)
        assert [e.first_index for e in events] == [s], seed
        # control: a flat baseline after the restart takes the recovery for new changes
        assert len(detect_changes(dates, y, restart_trend=False)) >= 2, seed


def _mild_season(dates, seed: int) -> np.ndarray:
    """An annual cycle of 5 noise sd's (NDVI-like, as in nrt's simulator) plus noise."""
    t = to_decimal_years(dates)
    return 1.0 + 5 * SIGMA * np.sin(2 * np.pi * t) + np.random.default_rng(seed).normal(0, SIGMA, t.size)


def test_a_subtle_step_fires_and_is_dated():
    found = 0
    for seed in range(10):
        dates = make_dates(n_years=3, seed=10 + seed)
        y = _mild_season(dates, seed=20 + seed)
        s = first_index_after(dates, 1.6)
        y[s:] -= 1.5 * SIGMA  # well under any single-observation threshold
        events = detect_changes(dates, y)
        assert events and all(e.confirmed_index >= s for e in events), seed  # fires, never before the step
        if abs(events[0].first_index - s) <= 2:
            found += 1
        # control: the fixed-threshold persistence rule alone sees nothing
        assert detect_changes(dates, y, cusum=False) == [], seed
    assert found >= 6  # measured 7 of 10 dated within 2 observations (the rest 3-18 late)


def test_an_outlier_run_with_mixed_directions_does_not_fire():
    dates = make_dates(n_years=3, seed=41)
    rng = np.random.default_rng(43)
    for n_features in (1, 3):
        y = seasonal(dates, n_features=n_features, seed=42).reshape(len(dates), -1)
        s = first_index_after(dates, 1.6)
        d = rng.normal(size=n_features)
        d /= np.linalg.norm(d)
        directions = np.stack([d, -d, d, -d])  # four outliers, each opposite the last
        mixed = y.copy()
        mixed[s : s + 4] += 15 * SIGMA * directions
        assert detect_changes(dates, mixed) == [], n_features
        # control: the same run in one direction is a change
        same = y.copy()
        same[s : s + 4] += 15 * SIGMA * d
        assert len(detect_changes(dates, same)) >= 1, n_features


def test_threshold_widens_for_short_baselines_features_and_extrapolation():
    long_, short = exceed_threshold(100, 3, 1, 1e-4, np.array([0.03]))[0], exceed_threshold(12, 3, 1, 1e-4, np.array([0.25]))[0]
    assert 3.9 < long_ < 4.4 and short > 1.5 * long_
    # the RMS over more features needs a smaller RMS, but a larger sum of squares
    t1, t3 = exceed_threshold(60, 3, 1, 1e-4, np.array([0.05]))[0], exceed_threshold(60, 3, 3, 1e-4, np.array([0.05]))[0]
    assert t3 < t1 and 3 * t3**2 > t1**2
    near, far = exceed_threshold(60, 4, 1, 1e-4, np.array([0.05, 1.0]))
    assert far > 1.3 * near
    # the CUSUM limit grows with the features and the in-control run length asked for
    assert cusum_limit(3, 0.8, 20000.0, 3.0) > cusum_limit(1, 0.8, 20000.0, 3.0)
    assert cusum_limit(1, 0.8, 100000.0, 3.0) > cusum_limit(1, 0.8, 20000.0, 3.0)


def test_run_support_and_onset_of_a_cusum_run():
    rng = np.random.default_rng(5)
    shift = np.concatenate([rng.normal(0, 1, (6, 1)), rng.normal(1.5, 1, (10, 1))])
    assert onset_position(shift, 3.0) in (5, 6, 7)
    assert run_support(shift[6:], 3.0) > 1.2  # about the shift
    # noise plus three large outliers in their own directions: about the noise's own bias
    burst = np.concatenate([rng.normal(0, 1, (8, 2)), [[9.0, 0.0], [0.0, 9.0], [-9.0, 0.0]]])
    assert run_support(burst, 3.0) < 1.0


def test_pure_noise_rarely_fires():
    dates = make_dates(n_years=3, seed=7)
    Y = np.stack([seasonal(dates, seed=3000 + i) for i in range(200)])
    Y3 = np.stack([seasonal(dates, n_features=3, seed=4000 + i) for i in range(200)])
    assert sum(bool(e) for e in detect_many(dates, Y)) <= 4  # 2 %: measured 0.7 % over 300 series
    assert sum(bool(e) for e in detect_many(dates, Y3)) <= 4


def test_detect_many_equals_detect_changes_bit_for_bit():
    dates = make_dates(n_years=3.5, seed=61)
    rng = np.random.default_rng(62)
    Y = np.stack([seasonal(dates, n_features=2, seed=70 + i) for i in range(12)])
    s = first_index_after(dates, 1.6)
    Y[0, s:] += 10 * SIGMA  # a clear step
    Y[1, s:] -= 1.5 * SIGMA  # a subtle one
    Y[2, s:] += (to_decimal_years(dates)[s:] - to_decimal_years(dates)[s])[:, None] * 4 * SIGMA  # a drift
    Y[3, s : s + 3] = 50.0  # a burst
    clear = rng.random(Y.shape[:2]) > 0.1
    params = DetectorParams(baseline_end=dates[40])
    many = detect_many(dates, Y, clear=clear, params=params)
    assert sum(map(len, many)) >= 3
    for i in range(len(Y)):
        assert many[i] == detect_changes(dates, Y[i], clear=clear[i], params=params), i

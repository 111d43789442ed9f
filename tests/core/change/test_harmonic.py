"""Tests of clay_core.change.harmonic: design matrix and robust harmonic fits."""

from __future__ import annotations

import json

import numpy as np
import pytest

from clay_core.change.harmonic import HarmonicFit, fit_harmonic, harmonic_design
from clay_core.change.timeutil import to_decimal_years
from tests.core.change.series import make_dates


def test_harmonic_design_columns():
    t = np.array([2020.0, 2020.25, 2020.5])
    X = harmonic_design(t, n_harmonics=2, trend=True, t0=2020.25)
    assert X.shape == (3, 6)
    np.testing.assert_allclose(X[:, 0], 1.0)
    np.testing.assert_allclose(X[:, 1], [-0.25, 0.0, 0.25])
    np.testing.assert_allclose(X[:, 2], np.cos(2 * np.pi * t), atol=1e-9)
    np.testing.assert_allclose(X[:, 3], np.sin(2 * np.pi * t), atol=1e-9)
    np.testing.assert_allclose(X[:, 4], np.cos(4 * np.pi * t), atol=1e-9)
    np.testing.assert_allclose(X[:, 5], np.sin(4 * np.pi * t), atol=1e-9)
    assert harmonic_design(t, 0, False).shape == (3, 1)


def _truth(t):
    return 2.0 + 0.5 * np.cos(2 * np.pi * t) - 0.3 * np.sin(2 * np.pi * t)


def test_fit_harmonic_recovers_coefficients_on_clean_data():
    t = to_decimal_years(make_dates(n_years=2, seed=3))
    fit = fit_harmonic(t, _truth(t), n_harmonics=1, ridge=0.0)
    assert isinstance(fit, HarmonicFit)
    np.testing.assert_allclose(fit.coef[:, 0], [2.0, 0.5, -0.3], atol=1e-8)
    assert fit.n_obs == len(t) and fit.n_harmonics_used == 1 and not fit.trend
    assert fit.rmse.shape == (1,) and fit.rmse[0] == pytest.approx(1e-6)  # floor on clean data
    # default ridge shrinks by ~2 * ridge only
    fit_r = fit_harmonic(t, _truth(t))
    np.testing.assert_allclose(fit_r.coef[:, 0], [2.0, 0.5, -0.3], atol=5e-3)
    # univariate in -> univariate out; [T, F] -> [T, F]
    assert fit.predict(t[:4]).shape == (4,)
    Y = np.stack([_truth(t), -_truth(t)], axis=1)
    fit2 = fit_harmonic(t, Y, ridge=0.0)
    np.testing.assert_allclose(fit2.coef[:, 1], [-2.0, -0.5, 0.3], atol=1e-8)
    assert fit2.predict(t[:4]).shape == (4, 2)


def test_fit_harmonic_with_trend_and_two_harmonics():
    t = to_decimal_years(make_dates(n_years=3, seed=4))
    y = 1.0 + 0.2 * (t - t.mean()) + 0.4 * np.cos(2 * np.pi * t) + 0.1 * np.sin(4 * np.pi * t)
    fit = fit_harmonic(t, y, n_harmonics=2, trend=True, ridge=0.0)
    np.testing.assert_allclose(fit.coef[:, 0], [1.0, 0.2, 0.4, 0.0, 0.0, 0.1], atol=1e-8)
    np.testing.assert_allclose(fit.predict(t), y, atol=1e-8)


def test_fit_harmonic_resists_ten_percent_gross_outliers():
    rng = np.random.default_rng(7)
    t = to_decimal_years(make_dates(n_years=3, seed=5))
    y = _truth(t) + rng.normal(0, 0.05, t.size)
    bad = rng.choice(t.size, size=t.size // 10, replace=False)
    y_bad = y.copy()
    y_bad[bad] += rng.uniform(3.0, 6.0, bad.size)  # one-sided, like clouds
    robust = fit_harmonic(t, y_bad)
    clean = fit_harmonic(t, y)
    ols = fit_harmonic(t, y_bad, robust=False)
    np.testing.assert_allclose(robust.coef[:, 0], [2.0, 0.5, -0.3], atol=0.03)
    np.testing.assert_allclose(robust.coef, clean.coef, atol=0.03)
    assert robust.rmse[0] == pytest.approx(0.05, rel=0.3)
    # the non-robust fit is dragged (shows the test can fail)
    assert abs(ols.coef[0, 0] - 2.0) > 0.2
    assert ols.rmse[0] > 0.5


def test_fit_harmonic_degrades_gracefully():
    t = to_decimal_years(make_dates(n_years=1, seed=6))
    y = _truth(t)
    f = fit_harmonic(t[:9], y[:9], n_harmonics=1)  # 9 >= 3 * 3 coefficients
    assert (f.n_harmonics_used, f.trend) == (1, False)
    f = fit_harmonic(t[:8], y[:8], n_harmonics=2, trend=True)  # 8 < 9 -> trend only
    assert (f.n_harmonics_used, f.trend) == (0, True)
    f = fit_harmonic(t[:5], y[:5], n_harmonics=2, trend=True)  # 5 < 6 -> constant
    assert (f.n_harmonics_used, f.trend) == (0, False)
    assert f.coef.shape == (1, 1)
    f = fit_harmonic(t[:1], y[:1], n_harmonics=1)
    assert f.n_obs == 1 and f.coef[0, 0] == pytest.approx(y[0]) and f.rmse[0] == pytest.approx(1e-6)
    # non-finite rows are dropped
    y_nan = y.copy()
    y_nan[:3] = np.nan
    assert fit_harmonic(t, y_nan).n_obs == t.size - 3
    with pytest.raises(ValueError):
        fit_harmonic(t[:0], y[:0])


def test_harmonic_fit_round_trips_through_json():
    t = to_decimal_years(make_dates(n_years=1.5, seed=8))
    fit = fit_harmonic(t, np.stack([_truth(t), _truth(t) ** 2], 1), trend=True)
    back = HarmonicFit.from_dict(json.loads(json.dumps(fit.to_dict())))
    np.testing.assert_array_equal(back.coef, fit.coef)
    np.testing.assert_array_equal(back.rmse, fit.rmse)
    np.testing.assert_array_equal(back.predict(t), fit.predict(t))


def test_batched_fit_equals_fitting_each_series_alone_bit_for_bit():
    """The carried detector fits many chips' baselines at once; a chip must get exactly the
    coefficients the scalar detector computes for it alone, whatever else is in the batch."""
    from clay_core.change.harmonic import fit_harmonic_batch

    rng = np.random.default_rng(11)
    for n, F in ((3, 3), (12, 3), (14, 1)):
        t = 2024.0 + np.sort(rng.random((40, n)), axis=1) * 1.3
        Y = _truth(t)[..., None] + rng.standard_normal((40, n, F)) * 0.1
        Y[::7, 0] += 5.0  # gross outliers: the robust iterations run to different lengths
        batch = fit_harmonic_batch(t, Y)
        part = fit_harmonic_batch(t[5:17], Y[5:17])
        assert part.coef.tobytes() == batch.coef[5:17].tobytes()
        for i in (0, 7, 39):
            alone = fit_harmonic(t[i], Y[i])
            assert alone.coef.tobytes() == batch.coef[i].tobytes()
            assert alone.rmse.tobytes() == batch.rmse[i].tobytes() and alone.t0 == batch.t0[i]
        assert np.median(np.abs(batch.coef[:, 0, 0] - 2.0)) < 0.3  # and it is a fit

"""Harmonic (seasonal) regression: the design matrix and a robust per-feature fit.

The model is ``y(t) = a0 [+ a1 (t - t0)] + sum_k b_k cos(2 pi k t) + c_k sin(2 pi k t)`` with
``t`` in decimal years (see :mod:`clay_core.change.timeutil`). The fit is robust (iteratively
reweighted least squares: Huber, then Tukey bisquare weights), so a few undetected clouds or
glitches do not drag it, and every reduction is an explicit elementwise sum so identical
inputs give bit-identical coefficients however the arrays were made (batch or JSON state).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["BatchFit", "HarmonicFit", "design_times_coef", "leverage", "serial_factor", "fit_harmonic", "fit_harmonic_batch", "harmonic_design"]

_MAD_TO_SD = 1.4826  # median |N(0, 1)| -> sd
_HUBER_C = 1.345
_BISQUARE_C = 4.685
_N_HUBER = 5  # Huber iterations before switching to the bisquare
_WINSOR = 2.5  # residual scale: squared residuals capped at (2.5 robust sd's)^2 ...
_WINSOR_CONSISTENCY = 1.0 / math.sqrt(0.97754)  # ... E[min(Z^2, 2.5^2)] = 0.97754 for Gaussian Z
_WINSOR_MIN_DOF = 10  # ... with at least this many residual degrees of freedom (also: screened start)


def harmonic_design(
    t_years: np.ndarray, n_harmonics: int = 1, trend: bool = False, t0: float = 0.0
) -> np.ndarray:
    """Design matrix of the harmonic model, shape ``[T, 1 + trend + 2 * n_harmonics]``.

    Columns: ``1``, then ``t - t0`` if ``trend``, then ``cos(2 pi k t), sin(2 pi k t)`` for
    ``k = 1..n_harmonics`` (interleaved per k). ``t_years`` are decimal years; ``t0`` only
    shifts the trend column (centring it keeps the fit well conditioned), the harmonics use
    the absolute time so their phase is tied to the calendar.
    """
    t = np.asarray(t_years, dtype=np.float64).reshape(-1)
    if n_harmonics < 0:
        raise ValueError("n_harmonics must be >= 0")
    cols = [np.ones_like(t)]
    if trend:
        cols.append(t - t0)
    for k in range(1, int(n_harmonics) + 1):
        w = 2.0 * np.pi * k * t
        cols.append(np.cos(w))
        cols.append(np.sin(w))
    return np.stack(cols, axis=1)


def design_times_coef(X: np.ndarray, coef: np.ndarray) -> np.ndarray:
    """``X @ coef`` as an explicit sum over the (few) columns: deterministic rounding."""
    out = X[:, 0:1] * coef[0]
    for j in range(1, X.shape[1]):
        out = out + X[:, j : j + 1] * coef[j]
    return out


@dataclass(eq=False)
class HarmonicFit:
    """A fitted harmonic baseline, per feature.

    Attributes:
        coef: ``[n_coef, F]`` coefficients in :func:`harmonic_design` column order.
        rmse: ``[F]`` robust residual scale per feature (floored at ``min_rmse``); the unit of
            the detector's z-scores.
        n_obs: number of (finite) observations fitted.
        n_harmonics_used: harmonics actually used (may be fewer than requested, see
            :func:`fit_harmonic`).
        trend: whether a linear trend column was used.
        t0: reference time of the trend column (mean fitted time), decimal years.
        univariate: the fit was made on a 1-D ``y``; :meth:`predict` then returns 1-D.
        t_min, t_max: time span of the fitted observations.
    """

    coef: np.ndarray
    rmse: np.ndarray
    n_obs: int
    n_harmonics_used: int
    trend: bool
    t0: float
    univariate: bool = False
    t_min: float = float("nan")
    t_max: float = float("nan")
    cov: np.ndarray | None = None  # [n_coef, n_coef] (X'X)^-1 of the fitted dates (leverage of new dates)

    @property
    def n_features(self) -> int:
        return int(self.coef.shape[1])

    def design(self, t_years: np.ndarray) -> np.ndarray:
        """:func:`harmonic_design` with this fit's model (harmonics, trend, ``t0``)."""
        return harmonic_design(t_years, self.n_harmonics_used, self.trend, self.t0)

    def predict(self, t_years: np.ndarray) -> np.ndarray:
        """Model values at ``t_years``: ``[T]`` for a univariate fit, else ``[T, F]``."""
        out = design_times_coef(self.design(t_years), self.coef)
        return out[:, 0] if self.univariate else out

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (floats round-trip exactly through ``json``)."""
        return {
            "coef": self.coef.tolist(),
            "rmse": self.rmse.tolist(),
            "n_obs": int(self.n_obs),
            "n_harmonics_used": int(self.n_harmonics_used),
            "trend": bool(self.trend),
            "t0": float(self.t0),
            "univariate": bool(self.univariate),
            "t_min": float(self.t_min),
            "t_max": float(self.t_max),
            "cov": None if self.cov is None else self.cov.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HarmonicFit:
        return cls(
            coef=np.asarray(d["coef"], dtype=np.float64).reshape(-1, len(d["rmse"])),
            rmse=np.asarray(d["rmse"], dtype=np.float64),
            n_obs=int(d["n_obs"]),
            n_harmonics_used=int(d["n_harmonics_used"]),
            trend=bool(d["trend"]),
            t0=float(d["t0"]),
            univariate=bool(d.get("univariate", False)),
            t_min=float(d.get("t_min", float("nan"))),
            t_max=float(d.get("t_max", float("nan"))),
            cov=None if d.get("cov") is None else np.asarray(d["cov"], dtype=np.float64),
        )


def _choose_model(
    n: int, n_harmonics: int, trend: bool, min_obs_per_coef: float
) -> tuple[int, bool]:
    """Largest model with ``n >= min_obs_per_coef * n_coef``: fewer harmonics, then constant."""
    for h in range(int(n_harmonics), -1, -1):
        if n >= min_obs_per_coef * (1 + int(trend) + 2 * h):
            return h, bool(trend)
    return 0, False


_WLS_CHUNK = 4_000_000  # elements of the normal equations' products built at once


def _sum_axis1(a: np.ndarray) -> np.ndarray:
    """Sum over axis 1 with the same rounding whatever the array's shape, memory layout or batch
    size, so a chip fitted alone and the same chip fitted in a batch agree bit for bit: the
    summed axis is made the last, contiguous one, where numpy reduces each row on its own
    with the same (pairwise) order."""
    return np.ascontiguousarray(np.moveaxis(a, 1, -1)).sum(axis=-1)


def _design_batch(t: np.ndarray, h: int, trend: bool, t0: np.ndarray) -> np.ndarray:
    """:func:`harmonic_design` for a batch: ``t`` ``[C, n]``, ``t0`` ``[C]`` -> ``[C, n, p]``."""
    cols = [np.ones_like(t)]
    if trend:
        cols.append(t - t0[:, None])
    for k in range(1, int(h) + 1):
        w = 2.0 * np.pi * k * t
        cols.append(np.cos(w))
        cols.append(np.sin(w))
    return np.stack(cols, axis=-1)


def _predict_batch(X: np.ndarray, coef: np.ndarray) -> np.ndarray:
    """``X [C, n, p] @ coef [C, p, F]`` as an explicit sum over the (few) columns."""
    out = X[:, :, 0:1] * coef[:, None, 0]
    for j in range(1, X.shape[2]):
        out = out + X[:, :, j : j + 1] * coef[:, None, j]
    return out


def _wls(X: np.ndarray, Y: np.ndarray, W: np.ndarray, ridge: float) -> np.ndarray:
    """Weighted ridge least squares, one weight column per feature, for a batch of series:
    ``X [C, n, p]``, ``Y`` and ``W`` ``[C, n, F]``. Returns ``[C, p, F]``.

    The normal equations are accumulated with :func:`_sum_axis1` (no BLAS matmul or einsum,
    whose summation order depends on memory layout and batch size), and each ``p x p`` system is
    solved on its own, so a series gets bit-identical coefficients alone or in any batch.
    """
    C, n, p = X.shape
    F = Y.shape[2]
    A = np.empty((C, F, p, p))
    b = np.empty((C, F, p))
    step = max(1, _WLS_CHUNK // max(1, n * F * p * (p + 1)))  # bounds the products' memory
    for c in range(0, C, step):
        Xc, sl = X[c : c + step], slice(c, c + step)
        WX = W[sl][:, :, :, None] * Xc[:, :, None, :]  # [c, n, F, p]
        b[sl] = _sum_axis1(WX * Y[sl][:, :, :, None])
        A[sl] = _sum_axis1(WX[..., :, None] * Xc[:, :, None, None, :])
    penalty = np.eye(p)
    penalty[0, 0] = 0.0  # never shrink the level
    A = A + (ridge * _sum_axis1(W))[:, :, None, None] * penalty + 1e-12 * np.eye(p)
    return np.ascontiguousarray(np.swapaxes(np.linalg.solve(A, b[..., None])[..., 0], 1, 2))


def _robust_scale(R: np.ndarray, floor: float) -> np.ndarray:
    return np.maximum(_MAD_TO_SD * np.median(np.abs(R), axis=1), floor)


def _finite_rows(t_years: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """``(t, Y [T, F], univariate)`` with every row holding a non-finite value dropped."""
    t = np.asarray(t_years, dtype=np.float64).reshape(-1)
    Y = np.asarray(y, dtype=np.float64)
    univariate = Y.ndim == 1
    if univariate:
        Y = Y[:, None]
    if Y.ndim != 2 or Y.shape[0] != t.shape[0]:
        raise ValueError(f"y must be [T] or [T, F] with T={t.shape[0]}, got {Y.shape}")
    keep = np.isfinite(t) & np.all(np.isfinite(Y), axis=1)
    if not np.any(keep):
        raise ValueError("fit_harmonic needs at least one finite observation")
    return t[keep], Y[keep], univariate


def _irls(
    X: np.ndarray, Y: np.ndarray, coef: np.ndarray, ridge: float, min_rmse: float,
    max_iter: int, tol: float,
) -> np.ndarray:
    """Huber then Tukey-bisquare reweighting from the least-squares ``coef``, per feature, for
    a batch ``[C, ...]``; each series stops when its own coefficients converge."""
    p = X.shape[2]
    coef = coef.copy()
    active = np.arange(X.shape[0])
    for it in range(max_iter):
        Xa, Ya, ca = X[active], Y[active], coef[active]
        R = Ya - _predict_batch(Xa, ca)
        s = _robust_scale(R, max(min_rmse, 1e-12))[:, None, :]
        if it < _N_HUBER:
            W = np.minimum(1.0, _HUBER_C * s / np.maximum(np.abs(R), 1e-300))
        else:
            u = R / (_BISQUARE_C * s)
            W = np.where(np.abs(u) < 1.0, (1.0 - u**2) ** 2, 0.0)
        # a feature with (almost) all weights zero would be singular: fall back to OLS
        bad = _sum_axis1(W) < p
        W = np.where(bad[:, None, :], 1.0, W)
        new = _wls(Xa, Ya, W, ridge)
        delta = np.max(np.abs(new - ca), axis=(1, 2))
        coef[active] = new
        if it >= _N_HUBER:
            active = active[delta > tol * (1.0 + np.max(np.abs(new), axis=(1, 2)))]
            if not len(active):
                break
    return coef


def _residual_scale(R: np.ndarray, p: int, robust: bool, min_rmse: float) -> np.ndarray:
    """Per-feature scale of the final residuals ``[C, n, F]``, corrected for the fitted degrees
    of freedom."""
    n = R.shape[1]
    if robust and n - p < _WINSOR_MIN_DOF:
        # few residuals: a robust fit can pass through all but one of them, so only the
        # median absolute deviation is safe
        dof = math.sqrt(n / (n - p)) if n > p else 1.0
        scale = _MAD_TO_SD * np.median(np.abs(R), axis=1) * dof
    elif robust:
        # Winsorized RMS: residuals capped at 2.5 median-absolute-deviation sd's. About as
        # robust to a few outliers as the MAD, but about twice as efficient (a MAD from 50
        # residuals is off by ~16 %, this by ~11 %), which the CUSUM's false alarms depend on.
        mad = np.maximum(_MAD_TO_SD * np.median(np.abs(R), axis=1), 1e-300)
        capped = np.minimum(R * R, (_WINSOR * mad[:, None, :]) ** 2)
        scale = np.sqrt(_sum_axis1(capped) / (n - p)) * _WINSOR_CONSISTENCY
    else:
        scale = np.sqrt(_sum_axis1(R**2) / (n - p if n > p else n))
    return np.maximum(scale, min_rmse)


@dataclass(eq=False)
class BatchFit:
    """:func:`fit_harmonic_batch`'s result: one model for ``C`` series of ``n`` observations."""

    coef: np.ndarray  # [C, n_coef, F]
    rmse: np.ndarray  # [C, F]
    t0: np.ndarray  # [C]
    t_min: np.ndarray  # [C]
    t_max: np.ndarray  # [C]
    n_obs: int
    n_harmonics_used: int
    trend: bool
    cov: np.ndarray | None = None  # [C, n_coef, n_coef] (X'X)^-1, see _unscaled_cov

    def predict(self, t_years: np.ndarray) -> np.ndarray:
        """``[C, m, F]`` model values at ``t_years`` ``[C, m]``."""
        X = _design_batch(np.asarray(t_years, np.float64), self.n_harmonics_used, self.trend, self.t0)
        return _predict_batch(X, self.coef)


def fit_harmonic_batch(t_years: np.ndarray, Y: np.ndarray, *args: Any, **kwargs: Any) -> BatchFit:
    """:func:`fit_harmonic` of ``C`` series at once (same arguments): ``t_years`` ``[C, n]``,
    ``Y`` ``[C, n, F]``, all finite, the same number ``n`` of observations each (so one model).
    A series gets the same coefficients, bit for bit, in any batch: :func:`fit_harmonic` is
    this with ``C = 1``."""
    return _fit_batch(t_years, Y, *args, **kwargs)


_GROSS = 5.0  # sd's of the raw values (season included) beyond which a value is left out of the start fit


def _start_weights(Y: np.ndarray) -> np.ndarray:
    """Weights of the robust fit's least-squares start: 0 for gross outliers of the raw values.

    A least-squares start dragged by a burst of gross outliers (an unmasked cloud, a run of
    glitches at one end of a trend fit) can leave the reweighting in a wrong solution;
    values more than 5 robust sd's from the median (the season's spread included) start at
    weight 0. Without such values the start is plain least squares."""
    med = np.median(Y, axis=1, keepdims=True)
    spread = _MAD_TO_SD * np.median(np.abs(Y - med), axis=1, keepdims=True)
    return np.where(np.abs(Y - med) <= _GROSS * spread + 1e-12, 1.0, 0.0)


def serial_factor(R: np.ndarray, scale: np.ndarray, lags: int) -> np.ndarray:
    """``sqrt`` of the long-run over the one-step variance of residuals ``R [C, n, F]`` (time order).

    Bartlett-weighted autocorrelations up to ``lags`` (Newey-West) of the residuals capped at
    2.5 ``scale``, floored at 1: a model that misses part of the seasonal shape leaves runs of
    same-signed residuals, which add up in a CUSUM and fill a run of consecutive exceedances
    as a real change would. Dividing the residuals by this factor makes the detector judge a
    departure against the noise as it actually behaves over weeks, not over one observation.
    """
    n = R.shape[1]
    if lags <= 0 or n <= 2 * lags + 2:
        return np.ones_like(scale)
    cap = _WINSOR * scale[:, None, :]
    Rc = np.clip(R, -cap, cap)
    Rc = Rc - _sum_axis1(Rc)[:, None, :] / n
    var = _sum_axis1(Rc * Rc) / n
    total = np.zeros_like(scale)
    for lag in range(1, lags + 1):
        rho = _sum_axis1(Rc[:, lag:] * Rc[:, :-lag]) / n / np.maximum(var, 1e-300)
        total = total + 2.0 * (1.0 - lag / (lags + 1.0)) * rho
    return np.sqrt(np.maximum(1.0 + total, 1.0))


def _fit_model(t, Y, t0, h, tr, robust, ridge, min_rmse, max_iter, tol, serial_lags=0) -> tuple[np.ndarray, np.ndarray]:
    X = _design_batch(t, h, tr, t0)
    # too few observations to call any of them gross: the plain least-squares start
    screen = robust and t.shape[1] - X.shape[2] >= _WINSOR_MIN_DOF
    coef = _wls(X, Y, _start_weights(Y) if screen else np.ones_like(Y), ridge)
    if robust and t.shape[1] > X.shape[2]:
        coef = _irls(X, Y, coef, ridge, min_rmse, max_iter, tol)
    R = Y - _predict_batch(X, coef)
    scale = _residual_scale(R, X.shape[2], robust, min_rmse)
    return coef, scale * serial_factor(R, scale, serial_lags)


def variogram(Y: np.ndarray) -> np.ndarray:
    """Median absolute difference of consecutive observations ``Y [C, n, F]`` (time order), per
    feature: CCDC's and COLD's "adjusted RMSE". About 0.95 sd for white noise; more where the
    series is noisier from one observation to the next than its fitted residuals say (undetected
    clouds and haze that a robust fit weighs down but the next observation may repeat)."""
    return np.median(np.abs(np.diff(Y, axis=1)), axis=1)


def _unscaled_cov(t: np.ndarray, t0: np.ndarray, h: int, trend: bool) -> np.ndarray:
    """``(X'X)^-1`` per series ``[C, p, p]``: the coefficients' covariance in units of the
    scale squared. It gives the slope's standard error (over about one year a linear ramp is
    strongly correlated with the annual harmonic, so the slope is much less certain than
    ``1 / sqrt(sum (t - t0)^2)`` alone would say) and the leverage of a new date."""
    X = _design_batch(t, h, trend, t0)
    p = X.shape[2]
    A = np.empty((X.shape[0], p, p))
    for i in range(p):
        for j in range(i, p):
            A[:, i, j] = A[:, j, i] = _sum_axis1(X[:, :, i] * X[:, :, j])
    return np.linalg.inv(A + 1e-12 * np.eye(p))


def leverage(X: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """``x' cov x`` for rows ``X [m, p]`` and covariances ``cov [m, p, p]`` (explicit sums):
    the prediction variance at that date, in units of the scale squared, from the fit alone."""
    out = np.zeros(X.shape[0])
    for i in range(X.shape[1]):
        for j in range(X.shape[1]):
            out += X[:, i] * cov[:, i, j] * X[:, j]
    return np.maximum(out, 0.0)


def _drop_weak_trends(t, Y, t0, h, coef, rmse, cov, min_t, fit_args) -> None:
    """Zero the slope of every feature whose trend is not clearly there (``|t-stat| < min_t``),
    with that feature's other coefficients and scale from the fit without a trend (in place).

    A slope estimated from a year of data and extrapolated for years is off by about
    ``sd * sqrt(12 / n)`` per year or more: kept where it is not significant, it would turn a
    stable series into a false change."""
    se = np.sqrt(np.maximum(cov[:, 1, 1], 0.0))[:, None] * rmse
    weak = np.abs(coef[:, 1, :]) < min_t * se
    if not weak.any():
        return
    flat, flat_rmse = _fit_model(t, Y, t0, h, False, *fit_args)
    coef[:, 1, :] = np.where(weak, 0.0, coef[:, 1, :])
    coef[:, 0, :] = np.where(weak, flat[:, 0, :], coef[:, 0, :])
    coef[:, 2:, :] = np.where(weak[:, None, :], flat[:, 1:, :], coef[:, 2:, :])
    rmse[:] = np.where(weak, flat_rmse, rmse)
    # no slope left: the leverage of later dates is the flat model's (a zero slope adds no error)
    none_left = weak.all(axis=1)
    if none_left.any():
        flat_cov = np.zeros_like(cov)
        keep = [0] + list(range(2, cov.shape[1]))
        flat_cov[:, np.ix_(keep, keep)[0], np.ix_(keep, keep)[1]] = _unscaled_cov(t, t0, h, False)
        cov[none_left] = flat_cov[none_left]


def _fit_batch(
    t_years: np.ndarray, Y: np.ndarray, n_harmonics: int = 1, trend: bool = False, robust: bool = True,
    ridge: float = 1e-3, *, min_rmse: float = 1e-6, min_obs_per_coef: float = 3.0, max_iter: int = 50,
    tol: float = 1e-7, trend_min_t: float | None = None, serial_lags: int = 0, variogram_floor: bool = False,
) -> BatchFit:
    t = np.asarray(t_years, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    C, n = t.shape
    h, tr = _choose_model(n, n_harmonics, trend, min_obs_per_coef)
    t0 = _sum_axis1(t) / n
    fit_args = (robust, ridge, min_rmse, max_iter, tol, serial_lags)
    coef, rmse = _fit_model(t, Y, t0, h, tr, *fit_args)
    cov = _unscaled_cov(t, t0, h, tr)
    if tr and trend_min_t is not None:
        _drop_weak_trends(t, Y, t0, h, coef, rmse, cov, trend_min_t, fit_args)
    if variogram_floor and n > 1:
        # after the trend test: a slope is judged against the residuals' own scale; the floor
        # is the tolerance for what the model leaves out, not uncertainty of its coefficients
        rmse = np.maximum(rmse, variogram(Y))
    return BatchFit(coef, rmse, t0, t.min(axis=1), t.max(axis=1), int(n), int(h), bool(tr), cov)


def fit_harmonic(
    t_years: np.ndarray,
    y: np.ndarray,
    n_harmonics: int = 1,
    trend: bool = False,
    robust: bool = True,
    ridge: float = 1e-3,
    *,
    min_rmse: float = 1e-6,
    min_obs_per_coef: float = 3.0,
    max_iter: int = 50,
    tol: float = 1e-7,
    trend_min_t: float | None = None,
    serial_lags: int = 0,
    variogram_floor: bool = False,
) -> HarmonicFit:
    """Fit the harmonic model of :func:`harmonic_design` to ``y``, per feature.

    Args:
        t_years: ``[T]`` decimal years (see :func:`~clay_core.change.timeutil.to_decimal_years`).
        y: ``[T]`` or ``[T, F]``; rows with any non-finite value are dropped.
        n_harmonics: annual harmonics requested (1 = annual cycle, 2 adds the half-year one).
        trend: add a linear trend in ``t - t0`` (``t0`` = mean fitted time).
        robust: iteratively reweighted least squares, per feature: a few Huber iterations from
            the least-squares start, then Tukey bisquare (c = 4.685) until converged; weights
            use the current robust scale 1.4826 x median |residual|. Gross outliers (clouds,
            glitches: up to a sizeable fraction of the points) end with weight 0.
            ``False``: ordinary (ridge) least squares and an RMSE scale.
        ridge: ridge penalty on all but the intercept, relative to the total weight
            (``ridge * sum(w) * ||beta[1:]||^2``); stabilizes short or gappy windows and
            shrinks well-determined coefficients by only ~``2 * ridge``.
        min_rmse: absolute floor of the per-feature scale (a perfectly clean baseline would
            otherwise give infinite z-scores).
        min_obs_per_coef: graceful degradation: if ``T < min_obs_per_coef * n_coef`` the
            number of harmonics is reduced, then the trend dropped, down to a constant
            (CCDC uses 3 observations per coefficient). The model used is recorded in
            ``n_harmonics_used`` / ``trend``.
        max_iter, tol: IRLS iteration limit and relative coefficient convergence tolerance.
        trend_min_t: with a trend, keep a feature's slope only if its t-statistic (slope over
            ``scale / sqrt(sum (t - t0)^2)``) is at least this; other features get slope 0 and
            the coefficients and scale of the fit without a trend (``None``: keep every slope).
        serial_lags: multiply the scale by :func:`serial_factor` over this many lags (0 = off;
            the observations must be in time order).
        variogram_floor: the scale is at least :func:`variogram` of the observations (time
            order).

    Returns:
        :class:`HarmonicFit`; ``rmse`` is the robust residual scale (``robust=True``) or the
        RMSE (``robust=False``), both corrected by ``sqrt(n / (n - n_coef))`` for the fitted
        degrees of freedom, floored at ``min_rmse``.

    Raises:
        ValueError: no finite observation, or mismatched shapes.
    """
    t, Y, univariate = _finite_rows(t_years, y)
    b = fit_harmonic_batch(t[None], Y[None], n_harmonics, trend, robust, ridge, min_rmse=min_rmse,
                           min_obs_per_coef=min_obs_per_coef, max_iter=max_iter, tol=tol, trend_min_t=trend_min_t,
                           serial_lags=serial_lags, variogram_floor=variogram_floor)
    return HarmonicFit(
        coef=b.coef[0], rmse=b.rmse[0], n_obs=b.n_obs, n_harmonics_used=b.n_harmonics_used, trend=b.trend,
        t0=float(b.t0[0]), univariate=univariate, t_min=float(b.t_min[0]), t_max=float(b.t_max[0]),
        cov=None if b.cov is None else b.cov[0],
    )

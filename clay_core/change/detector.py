"""Dated, scored change events for one chip's time series (harmonic baseline + persistence).

Method
------
Every chip is a fixed ground cell observed on irregular dates (~5-daily to ~weekly, with
cloudy observations flagged). Each observation is a vector: a Clay embedding (192-1024-d),
its first few principal components, or any other per-date signals (one column each).

The detector is a small, CCDC-style monitor (Zhu & Woodcock 2014, "Continuous change
detection and classification"):

1. **Baseline.** The first clear observations of a segment are fitted, per feature, with a
   harmonic regression ``y(t) = a0 [+ a1 (t - t0)] + sum_k b_k cos(2 pi k t) + c_k sin(2 pi k t)``
   with ``t`` in decimal years (so irregular dates and gaps need no special handling and the
   seasonal phase is tied to the calendar). The fit is robust (iteratively reweighted least
   squares: Huber, then Tukey bisquare weights), so a few undetected clouds or glitches in
   the baseline do not drag it. Each feature's noise level ``rmse`` is a robust scale
   (1.4826 x median |residual|, corrected for the degrees of freedom) with a small floor.
2. **Scoring.** Every later clear observation gets a residual per feature,
   ``z_f = (y_f - yhat_f) / rmse_f`` and a standardized score ``score = sqrt(mean_f z_f**2)``:
   the RMS over features of the residual in robust-sd units (for one feature simply
   ``|residual| / rmse``). Under "no change" the score is about 1 whatever the number of
   features. An observation *exceeds* when ``score > threshold`` (and its mean absolute
   deviation is at least ``min_magnitude``).
3. **Persistence.** A change is confirmed after ``k_consecutive`` consecutive exceeding
   *clear* observations; a non-exceeding clear observation resets the run, cloudy ones are
   skipped entirely (they neither extend nor break a run). So a single outlier (or
   ``k_consecutive - 1`` in a row) never fires. The event is dated at the first observation of
   the run (``first_date``) and confirmed at the k-th (``confirmed_date``); its magnitude is
   the median score over the run and ``signals`` lists the features that carried it.
   *Consistency check:* a change is a persistent shift to a new state, so the observations
   confirming it must depart from the baseline in the same direction. Unflagged outliers
   (an undetected cloud or shadow, haze) depart in their own directions: one just before a
   change would start the run one observation early, and three different ones in a row
   would fire a false change. So when a run reaches ``k_consecutive`` observations, each
   member's standardized residual vector (``z``) is compared with the median ``z`` of the
   other members; if the lowest of these cosines is below ``min_run_cosine`` (default 0.5),
   that member (the earliest on ties) is removed from the run as an outlier (like a cloudy
   observation it neither breaks nor extends the run) and the run waits for one more
   exceeding observation.
4. **Restart.** After a confirmed change the baseline restarts on the new normal: a new
   baseline is fitted from the clear observations starting at the change's first observation
   (the confirming run itself is its first ``k_consecutive`` observations). A permanent step
   therefore fires once, and a later second change fires again.

Everything is driven by :func:`update`, which ingests ONE observation into a
:class:`ChangeState` (JSON-serializable through ``to_dict``/``from_dict``) and returns the
events it confirmed plus the observation's :class:`ObservationScore`. The batch functions
(:func:`run_series`, :func:`detect_changes`, :func:`score_series`) are loops over
:func:`update`, so processing a series incrementally (one new date at a time, with the state
stored as JSON in between) gives exactly the batch result.

Parameters (see :class:`ChangeParams` for the full list and defaults)
--------------------------------------------------------------------
``baseline_obs=12``
    clear observations needed before a baseline is fitted. 12 is CCDC's minimum: three
    observations per coefficient for one harmonic plus a trend; with 6 the level cannot be
    told apart from the season and the robust scale is off by ~30%.
``baseline_years=None`` (-> 1.0 when ``n_harmonics > 0``, else 0.0)
    the baseline must also span this many years: a seasonal cycle cannot be estimated from a
    few weeks of data and extrapolating such a fit fires on the next season. The price: the
    first year of a series, and the year after each change, are baseline (not monitored).
    With ``n_harmonics=0`` (no seasonality, e.g. deseasonalized inputs) only the count is used.
``baseline_start`` / ``baseline_end``
    optional date window for the *first* baseline (observations before ``baseline_start``
    are ignored; all clear observations up to ``baseline_end`` are the baseline, monitoring
    starts after it). Restarts after a change always use the count/span rule.
``n_harmonics=1``, ``trend=False``
    seasonal model. One annual harmonic captures most phenology; use ``trend=True`` for
    slowly drifting signals (the drift is then extrapolated instead of firing).
``threshold=4.0``
    exceedance level of the RMS robust z-score. Conservative on purpose: real residuals are
    heavier-tailed and autocorrelated (phenology anomalies, haze), the robust scale comes
    from ~12-50 baseline points, and land-cover changes such as clearing are many sd's
    large. For one Gaussian feature P(score > 4) ~ 6e-5 per observation. Lower it to ~3 for
    more sensitivity.
``k_consecutive=3``
    persistence: confirmed after 3 consecutive exceeding clear observations (2-3 weeks at
    weekly revisits); rejects isolated undetected clouds, shadows and glitches.
``min_magnitude=0.0``
    extra floor on the mean absolute deviation (value units) for an observation to exceed;
    0 disables it.
``min_run_cosine=0.5``
    consistency check of a confirming run (see 3. above); -1 disables it. With one feature
    the cosine is the sign agreement of the residuals: only an opposite-sign outlier is
    removed. On the synthetic benchmark (``benchmarks/change_eval.py``) genuine clearing runs
    have cosines >= 0.88 and runs of unrelated outliers have a member <= 0.24.

Public API
----------
:func:`harmonic_design`, :func:`fit_harmonic` / :class:`HarmonicFit`,
:class:`ChangeParams`, :class:`ChangeState`, :func:`update`, :class:`ChangeEvent`,
:class:`ObservationScore`, :func:`run_series`, :func:`detect_changes`,
:func:`score_series`, :func:`cosine_distance`, :func:`distances_to_baseline`,
:func:`distances_to_previous`, :func:`to_datetime`, :func:`to_decimal_years`.

Only numpy is needed (:func:`score_series` imports pandas lazily).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from datetime import date, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pandas is only needed by score_series (imported lazily)
    import pandas as pd

__all__ = [
    "ChangeEvent",
    "ChangeParams",
    "ChangeState",
    "HarmonicFit",
    "ObservationScore",
    "cosine_distance",
    "detect_changes",
    "distances_to_baseline",
    "distances_to_previous",
    "fit_harmonic",
    "harmonic_design",
    "run_series",
    "score_series",
    "to_datetime",
    "to_decimal_years",
    "update",
]

STATE_VERSION = 1
_EPOCH = datetime(1970, 1, 1)
_SECONDS_PER_YEAR = 365.2425 * 86400.0  # mean Gregorian year
_MAD_TO_SD = 1.4826  # median |N(0, 1)| -> sd
_HUBER_C = 1.345
_BISQUARE_C = 4.685
_MIN_BASELINE_OBS = 3


# --------------------------------------------------------------------------------------
# dates and time


def to_datetime(d: Any) -> datetime:
    """Normalize a date-like value to ``datetime.datetime`` (microsecond precision).

    Accepts ``datetime`` (incl. ``pandas.Timestamp``), ``date`` (-> midnight),
    ``numpy.datetime64`` (-> naive, UTC by convention) and ISO-8601 strings. Timezone-aware
    values are converted to UTC and stay aware; naive values are taken as UTC and stay naive.
    """
    if isinstance(d, np.datetime64):
        if np.isnat(d):
            raise ValueError("NaT is not a valid observation date")
        us = int(d.astype("datetime64[us]").astype(np.int64))
        return _EPOCH + timedelta(microseconds=us)
    if isinstance(d, datetime):
        aware = d.tzinfo is not None and d.utcoffset() is not None
        if aware:
            d = d.astimezone(timezone.utc)
        return datetime(
            d.year, d.month, d.day, d.hour, d.minute, d.second, d.microsecond,
            tzinfo=timezone.utc if aware else None,
        )
    if isinstance(d, date):
        return datetime(d.year, d.month, d.day)
    if isinstance(d, str):
        return to_datetime(datetime.fromisoformat(d))
    raise TypeError(f"not a date: {d!r} ({type(d).__name__})")


def _decimal_year(dt: datetime) -> float:
    naive = dt.replace(tzinfo=None)  # to_datetime() already put aware values in UTC
    return 1970.0 + (naive - _EPOCH).total_seconds() / _SECONDS_PER_YEAR


def to_decimal_years(dates: Iterable[Any]) -> np.ndarray:
    """Dates -> float decimal years (``1970 + seconds since epoch / mean Gregorian year``).

    This is the time axis of every fit: gaps and irregular sampling need no special care, and
    ``cos(2 pi t)`` has the same phase on the same calendar day every year (to within ~1 day).
    """
    return np.array([_decimal_year(to_datetime(d)) for d in dates], dtype=np.float64)


# --------------------------------------------------------------------------------------
# harmonic regression


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

    @property
    def n_features(self) -> int:
        return int(self.coef.shape[1])

    def predict(self, t_years: np.ndarray) -> np.ndarray:
        """Model values at ``t_years``: ``[T]`` for a univariate fit, else ``[T, F]``."""
        X = harmonic_design(t_years, self.n_harmonics_used, self.trend, self.t0)
        out = _design_times_coef(X, self.coef)
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
        )


def _choose_model(
    n: int, n_harmonics: int, trend: bool, min_obs_per_coef: float
) -> tuple[int, bool]:
    """Largest model with ``n >= min_obs_per_coef * n_coef``: fewer harmonics, then constant."""
    for h in range(int(n_harmonics), -1, -1):
        if n >= min_obs_per_coef * (1 + int(trend) + 2 * h):
            return h, bool(trend)
    return 0, False


def _wls(X: np.ndarray, Y: np.ndarray, W: np.ndarray, ridge: float) -> np.ndarray:
    """Weighted ridge least squares, one weight column per feature. Returns ``[p, F]``.

    The normal equations are accumulated with plain elementwise numpy reductions (no BLAS
    matmul/einsum, whose summation order can depend on memory layout), so identical inputs
    give bit-identical coefficients however the arrays were created (batch vs JSON state).
    """
    n, p = X.shape
    F = Y.shape[1]
    A = np.empty((F, p, p))
    b = np.empty((F, p))
    for i in range(p):
        WXi = W * X[:, i : i + 1]
        b[:, i] = np.sum(WXi * Y, axis=0)
        for j in range(i, p):
            A[:, i, j] = A[:, j, i] = np.sum(WXi * X[:, j : j + 1], axis=0)
    penalty = np.eye(p)
    penalty[0, 0] = 0.0  # never shrink the level
    A = A + (ridge * np.sum(W, axis=0))[:, None, None] * penalty + 1e-12 * np.eye(p)
    return np.ascontiguousarray(np.linalg.solve(A, b[..., None])[..., 0].T)


def _design_times_coef(X: np.ndarray, coef: np.ndarray) -> np.ndarray:
    """``X @ coef`` as an explicit sum over the (few) columns: deterministic rounding."""
    out = X[:, 0:1] * coef[0]
    for j in range(1, X.shape[1]):
        out = out + X[:, j : j + 1] * coef[j]
    return out


def _robust_scale(R: np.ndarray, floor: float) -> np.ndarray:
    return np.maximum(_MAD_TO_SD * np.median(np.abs(R), axis=0), floor)


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
    tol: float = 1e-10,
) -> HarmonicFit:
    """Fit the harmonic model of :func:`harmonic_design` to ``y``, per feature.

    Args:
        t_years: ``[T]`` decimal years (see :func:`to_decimal_years`).
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

    Returns:
        :class:`HarmonicFit`; ``rmse`` is the robust residual scale (``robust=True``) or the
        RMSE (``robust=False``), both corrected by ``sqrt(n / (n - n_coef))`` for the fitted
        degrees of freedom, floored at ``min_rmse``.

    Raises:
        ValueError: no finite observation, or mismatched shapes.
    """
    t = np.asarray(t_years, dtype=np.float64).reshape(-1)
    Y = np.asarray(y, dtype=np.float64)
    univariate = Y.ndim == 1
    if univariate:
        Y = Y[:, None]
    if Y.ndim != 2 or Y.shape[0] != t.shape[0]:
        raise ValueError(f"y must be [T] or [T, F] with T={t.shape[0]}, got {Y.shape}")
    keep = np.isfinite(t) & np.all(np.isfinite(Y), axis=1)
    t, Y = t[keep], Y[keep]
    n, F = Y.shape
    if n == 0:
        raise ValueError("fit_harmonic needs at least one finite observation")

    h, tr = _choose_model(n, n_harmonics, trend, min_obs_per_coef)
    t0 = float(np.mean(t))
    X = harmonic_design(t, h, tr, t0)
    p = X.shape[1]
    W = np.ones_like(Y)
    coef = _wls(X, Y, W, ridge)
    if robust and n > p:
        n_huber = 5
        for it in range(max_iter):
            R = Y - _design_times_coef(X, coef)
            s = _robust_scale(R, max(min_rmse, 1e-12))
            a = np.abs(R)
            if it < n_huber:
                W = np.minimum(1.0, _HUBER_C * s / np.maximum(a, 1e-300))
            else:
                u = R / (_BISQUARE_C * s)
                W = np.where(np.abs(u) < 1.0, (1.0 - u**2) ** 2, 0.0)
            # a feature with (almost) all weights zero would be singular: fall back to OLS
            bad = W.sum(axis=0) < p
            if np.any(bad):
                W[:, bad] = 1.0
            new = _wls(X, Y, W, ridge)
            delta = np.max(np.abs(new - coef))
            coef = new
            if it >= n_huber and delta <= tol * (1.0 + np.max(np.abs(coef))):
                break

    R = Y - _design_times_coef(X, coef)
    dof = math.sqrt(n / (n - p)) if n > p else 1.0
    if robust:
        scale = _MAD_TO_SD * np.median(np.abs(R), axis=0) * dof
    else:
        scale = np.sqrt(np.sum(R**2, axis=0) / (n - p if n > p else n))
    rmse = np.maximum(scale, min_rmse)
    return HarmonicFit(
        coef=coef, rmse=rmse, n_obs=int(n), n_harmonics_used=int(h), trend=bool(tr), t0=t0,
        univariate=univariate, t_min=float(t.min()), t_max=float(t.max()),
    )


# --------------------------------------------------------------------------------------
# parameters, events, scores


def _opt_datetime(d: Any) -> datetime | None:
    return None if d is None else to_datetime(d)


@dataclass(frozen=True)
class ChangeParams:
    """Parameters of the change detector (all keyword arguments of :func:`update` & co.).

    Attributes:
        baseline_obs: clear observations needed to fit a baseline (default 12; >= 3).
        baseline_years: minimum time span of a baseline in years; ``None`` = 1.0 when
            ``n_harmonics > 0`` (one seasonal cycle) else 0.0.
        baseline_start: first baseline only: ignore observations before this date.
        baseline_end: first baseline only: the baseline is every clear observation up to and
            including this date (needs >= 3 of them, otherwise the count rule applies).
        n_harmonics: annual harmonics of the baseline (default 1).
        trend: linear trend in the baseline (default False).
        threshold: an observation exceeds when its RMS robust z-score is above this
            (default 4.0).
        k_consecutive: consecutive exceeding clear observations that confirm a change
            (default 3).
        min_magnitude: an exceeding observation must also have a mean absolute deviation
            (value units) of at least this (default 0 = off).
        min_run_cosine: when a run reaches ``k_consecutive`` observations, the member whose
            standardized residual vector has the lowest cosine to the median standardized
            residual of the other members is removed from the run (and the run waits for
            another exceeding observation) if that cosine is below this (default 0.5; -1
            disables the check). Keeps unflagged outliers (clouds, haze) from starting a run
            early or adding up to a false change.
        robust: robust (IRLS) baseline fit (default True).
        ridge: ridge penalty of the baseline fit (default 1e-3).
        min_rmse: floor of the per-feature baseline scale (default 1e-6).
        feature_names: names used in ``ChangeEvent.signals``; default ``["value"]`` for one
            feature, else ``["f0", "f1", ...]``.
        max_signals: at most this many feature names per event (default 10).
    """

    baseline_obs: int = 12
    baseline_years: float | None = None
    baseline_start: datetime | None = None
    baseline_end: datetime | None = None
    n_harmonics: int = 1
    trend: bool = False
    threshold: float = 4.0
    k_consecutive: int = 3
    min_magnitude: float = 0.0
    min_run_cosine: float = 0.5
    robust: bool = True
    ridge: float = 1e-3
    min_rmse: float = 1e-6
    feature_names: tuple[str, ...] | None = None
    max_signals: int = 10

    def __post_init__(self) -> None:
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 (frozen dataclass)
        set_("baseline_start", _opt_datetime(self.baseline_start))
        set_("baseline_end", _opt_datetime(self.baseline_end))
        if self.feature_names is not None:
            set_("feature_names", tuple(str(n) for n in self.feature_names))
        if self.baseline_years is not None:
            set_("baseline_years", float(self.baseline_years))
        for k in ("threshold", "min_magnitude", "min_run_cosine", "ridge", "min_rmse"):
            set_(k, float(getattr(self, k)))
        for k in ("baseline_obs", "n_harmonics", "k_consecutive", "max_signals"):
            set_(k, int(getattr(self, k)))
        set_("trend", bool(self.trend))
        set_("robust", bool(self.robust))
        if self.baseline_obs < _MIN_BASELINE_OBS:
            raise ValueError(f"baseline_obs must be >= {_MIN_BASELINE_OBS}")
        if self.k_consecutive < 1:
            raise ValueError("k_consecutive must be >= 1")
        if self.n_harmonics < 0:
            raise ValueError("n_harmonics must be >= 0")
        if not self.threshold > 0:
            raise ValueError("threshold must be > 0")
        if self.min_magnitude < 0 or self.ridge < 0 or not self.min_rmse > 0:
            raise ValueError("min_magnitude and ridge must be >= 0, min_rmse > 0")
        if not -1.0 <= self.min_run_cosine <= 1.0:
            raise ValueError("min_run_cosine must be in [-1, 1]")
        if self.baseline_years is not None and self.baseline_years < 0:
            raise ValueError("baseline_years must be >= 0")
        if self.max_signals < 1:
            raise ValueError("max_signals must be >= 1")
        if (
            self.baseline_start is not None
            and self.baseline_end is not None
            and _decimal_year(self.baseline_end) < _decimal_year(self.baseline_start)
        ):
            raise ValueError("baseline_end is before baseline_start")

    @property
    def effective_baseline_years(self) -> float:
        if self.baseline_years is not None:
            return self.baseline_years
        return 1.0 if self.n_harmonics > 0 else 0.0

    def names_for(self, n_features: int) -> list[str]:
        if self.feature_names is not None:
            if len(self.feature_names) != n_features:
                raise ValueError(
                    f"{len(self.feature_names)} feature_names for {n_features} features"
                )
            return list(self.feature_names)
        return ["value"] if n_features == 1 else [f"f{i}" for i in range(n_features)]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (dates as ISO strings)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, datetime):
                v = v.isoformat()
            elif isinstance(v, tuple):
                v = list(v)
            out[f.name] = v
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ChangeParams:
        return cls.from_kwargs(**d)

    @classmethod
    def from_kwargs(cls, **params: Any) -> ChangeParams:
        """Build from keyword arguments; ``params=ChangeParams(...)`` is accepted as well."""
        if "params" in params:
            base = params.pop("params")
            if not isinstance(base, ChangeParams):
                raise TypeError("params= must be a ChangeParams")
            params = {**{f.name: getattr(base, f.name) for f in fields(base)}, **params}
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(params) - names)
        if unknown:
            raise TypeError(f"unknown change-detection parameter(s) {unknown}; valid: {sorted(names)}")
        return cls(**params)


@dataclass(frozen=True)
class ChangeEvent:
    """A confirmed change.

    Attributes:
        first_date: date of the first observation of the confirming run (the change date).
        confirmed_date: date of the ``k_consecutive``-th exceeding clear observation (when the
            change became known).
        magnitude: median score over the run (RMS robust z-score, baseline-sd units).
        signals: names of the features whose median ``|z|`` over the run exceeded the
            threshold, strongest first (at most ``max_signals``; the single strongest feature
            if none exceeded on its own, i.e. a diffuse change).
        first_index, confirmed_index: positions of those observations in the input series
            (counting every observation passed in, cloudy ones included).
        n_obs_baseline: number of observations of the baseline the change departed from.
    """

    first_date: datetime
    confirmed_date: datetime
    magnitude: float
    signals: list[str]
    first_index: int
    confirmed_index: int
    n_obs_baseline: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "first_date": self.first_date.isoformat(),
            "confirmed_date": self.confirmed_date.isoformat(),
            "magnitude": float(self.magnitude),
            "signals": list(self.signals),
            "first_index": int(self.first_index),
            "confirmed_index": int(self.confirmed_index),
            "n_obs_baseline": int(self.n_obs_baseline),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ChangeEvent:
        return cls(
            first_date=to_datetime(d["first_date"]),
            confirmed_date=to_datetime(d["confirmed_date"]),
            magnitude=float(d["magnitude"]),
            signals=[str(s) for s in d["signals"]],
            first_index=int(d["first_index"]),
            confirmed_index=int(d["confirmed_index"]),
            n_obs_baseline=int(d["n_obs_baseline"]),
        )


@dataclass(frozen=True)
class ObservationScore:
    """How one observation compared with the current baseline.

    Attributes:
        date: the observation date (normalized by :func:`to_datetime`).
        index: position in the series (every observation counted, cloudy ones included).
        score: RMS over features of ``residual / rmse`` (NaN when not scored: cloudy, part of a
            baseline being collected, or before ``baseline_start``).
        residual_norm: L2 norm of the residual vector (value units).
        abs_deviation: mean absolute residual over features (value units).
        pct_deviation: ``100 * residual_norm / ||prediction||`` (NaN if the prediction is ~0).
        exceeds: ``score > threshold`` (and ``abs_deviation >= min_magnitude``).
        in_baseline: the observation went into a baseline being collected.
        clear: usable observation (clear flag set and all values finite).
    """

    date: datetime
    index: int
    score: float
    residual_norm: float
    abs_deviation: float
    pct_deviation: float
    exceeds: bool
    in_baseline: bool
    clear: bool

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


_NAN = float("nan")


def _unscored(dt: datetime, index: int, *, in_baseline: bool, clear: bool) -> ObservationScore:
    return ObservationScore(dt, index, _NAN, _NAN, _NAN, _NAN, False, in_baseline, clear)


# --------------------------------------------------------------------------------------
# state and the incremental update


@dataclass(eq=False)
class _Obs:
    index: int
    date: datetime
    t: float
    value: np.ndarray
    score: float = _NAN

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "date": self.date.isoformat(),
            "t": self.t,
            "value": self.value.tolist(),
            "score": None if math.isnan(self.score) else self.score,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> _Obs:
        s = d.get("score")
        return cls(
            index=int(d["index"]),
            date=to_datetime(d["date"]),
            t=float(d["t"]),
            value=np.asarray(d["value"], dtype=np.float64),
            score=_NAN if s is None else float(s),
        )


@dataclass(eq=False)
class ChangeState:
    """Everything the detector needs to continue a series with the next observation.

    Holds the parameters, the current baseline fit (``None`` while a baseline is being
    collected), the clear observations collected for that baseline, the pending run of
    exceeding observations (kept whole: they seed the new baseline if the change is
    confirmed) and all events emitted so far. ``to_dict()`` gives plain JSON-safe data
    (lists, floats, ISO dates) and ``from_dict`` restores an identical state, so a pipeline
    can persist it per chip between runs.

    Size: while collecting a baseline the state holds up to a year of observation vectors
    (~50 x F floats); once fitted only ``(n_coef + 1) x F`` floats plus the pending run.
    """

    params: ChangeParams = field(default_factory=ChangeParams)
    n_seen: int = 0
    n_features: int | None = None
    last_t: float | None = None
    segment: int = 0
    fit: HarmonicFit | None = None
    buffer: list[_Obs] = field(default_factory=list)
    pending: list[_Obs] = field(default_factory=list)
    events: list[ChangeEvent] = field(default_factory=list)

    @classmethod
    def new(cls, **params: Any) -> ChangeState:
        """Empty state for the given parameters (see :class:`ChangeParams`)."""
        return cls(params=ChangeParams.from_kwargs(**params))

    @property
    def collecting_baseline(self) -> bool:
        return self.fit is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "params": self.params.to_dict(),
            "n_seen": self.n_seen,
            "n_features": self.n_features,
            "last_t": self.last_t,
            "segment": self.segment,
            "fit": None if self.fit is None else self.fit.to_dict(),
            "buffer": [o.to_dict() for o in self.buffer],
            "pending": [o.to_dict() for o in self.pending],
            "events": [e.to_dict() for e in self.events],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ChangeState:
        if d.get("version") != STATE_VERSION:
            raise ValueError(f"unsupported ChangeState version {d.get('version')!r}")
        return cls(
            params=ChangeParams.from_dict(d["params"]),
            n_seen=int(d["n_seen"]),
            n_features=None if d["n_features"] is None else int(d["n_features"]),
            last_t=None if d["last_t"] is None else float(d["last_t"]),
            segment=int(d["segment"]),
            fit=None if d["fit"] is None else HarmonicFit.from_dict(d["fit"]),
            buffer=[_Obs.from_dict(o) for o in d["buffer"]],
            pending=[_Obs.from_dict(o) for o in d["pending"]],
            events=[ChangeEvent.from_dict(e) for e in d["events"]],
        )


def _fit_baseline(state: ChangeState) -> None:
    p = state.params
    t = np.array([o.t for o in state.buffer])
    Y = np.stack([o.value for o in state.buffer])
    state.fit = fit_harmonic(
        t, Y, p.n_harmonics, p.trend, p.robust, p.ridge, min_rmse=p.min_rmse
    )
    state.buffer = []


def _baseline_complete(state: ChangeState) -> bool:
    b = state.buffer
    p = state.params
    return len(b) >= p.baseline_obs and (b[-1].t - b[0].t) >= p.effective_baseline_years


def _make_event(state: ChangeState) -> ChangeEvent:
    p, fit, run = state.params, state.fit, state.pending
    assert fit is not None
    t = np.array([o.t for o in run])
    V = np.stack([o.value for o in run])
    X = harmonic_design(t, fit.n_harmonics_used, fit.trend, fit.t0)
    Z = np.abs((V - _design_times_coef(X, fit.coef)) / fit.rmse)
    med = np.median(Z, axis=0)
    names = p.names_for(V.shape[1])
    order = np.argsort(-med, kind="stable")
    signals = [names[i] for i in order if med[i] > p.threshold][: p.max_signals]
    if not signals:
        signals = [names[order[0]]]
    return ChangeEvent(
        first_date=run[0].date,
        confirmed_date=run[-1].date,
        magnitude=float(np.median([o.score for o in run])),
        signals=signals,
        first_index=run[0].index,
        confirmed_index=run[-1].index,
        n_obs_baseline=fit.n_obs,
    )


def _cosine_det(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine of two vectors with BLAS-free sums (deterministic); NaN if either is zero."""
    na = math.sqrt(float(np.sum(a * a)))
    nb = math.sqrt(float(np.sum(b * b)))
    if na == 0.0 or nb == 0.0:
        return _NAN
    return float(np.sum(a * b)) / (na * nb)


def _inconsistent_member(state: ChangeState) -> int | None:
    """Position of the pending observation that departs least like the others, if too unlike.

    Cosine of each member's standardized residual with the median standardized residual of
    the other members; the lowest one (earliest on ties) if it is below ``min_run_cosine``.
    A zero vector (NaN cosine) is no evidence either way and never removed.
    """
    p, fit, run = state.params, state.fit, state.pending
    assert fit is not None
    if p.min_run_cosine <= -1.0 or len(run) < 2:
        return None
    t = np.array([o.t for o in run])
    V = np.stack([o.value for o in run])
    X = harmonic_design(t, fit.n_harmonics_used, fit.trend, fit.t0)
    Z = (V - _design_times_coef(X, fit.coef)) / fit.rmse
    worst, worst_cos = None, p.min_run_cosine
    for j in range(len(run)):
        others = np.concatenate([Z[:j], Z[j + 1 :]])
        cos = _cosine_det(Z[j], np.median(others, axis=0))
        if cos < worst_cos:
            worst, worst_cos = j, cos
    return worst


def _ingest(state: ChangeState, obs: _Obs) -> tuple[ObservationScore, list[ChangeEvent]]:
    """Process one clear observation (baseline collection or monitoring)."""
    p = state.params
    if state.fit is None:
        initial = state.segment == 0
        if initial and p.baseline_start is not None and obs.t < _decimal_year(p.baseline_start):
            return _unscored(obs.date, obs.index, in_baseline=False, clear=True), []
        window = initial and p.baseline_end is not None
        t_end = _decimal_year(p.baseline_end) if window else math.inf
        if window and obs.t > t_end and len(state.buffer) >= _MIN_BASELINE_OBS:
            _fit_baseline(state)  # window closed: fit it and score this observation below
        else:
            state.buffer.append(obs)
            if (not window or obs.t > t_end) and _baseline_complete(state):
                _fit_baseline(state)
            return _unscored(obs.date, obs.index, in_baseline=True, clear=True), []

    fit = state.fit
    X = harmonic_design(np.array([obs.t]), fit.n_harmonics_used, fit.trend, fit.t0)
    pred = _design_times_coef(X, fit.coef)[0]
    r = obs.value - pred
    score = float(np.sqrt(np.mean((r / fit.rmse) ** 2)))
    residual_norm = float(np.sqrt(np.sum(r * r)))  # not np.linalg.norm: BLAS-free, deterministic
    abs_dev = float(np.mean(np.abs(r)))
    pred_norm = float(np.sqrt(np.sum(pred * pred)))
    pct = 100.0 * residual_norm / pred_norm if pred_norm > 1e-12 else _NAN
    exceeds = score > p.threshold and abs_dev >= p.min_magnitude
    result = ObservationScore(
        obs.date, obs.index, score, residual_norm, abs_dev, pct, exceeds, False, True
    )
    if not exceeds:
        state.pending = []
        return result, []
    obs.score = score
    state.pending.append(obs)
    if len(state.pending) < p.k_consecutive:
        return result, []
    outlier = _inconsistent_member(state)
    if outlier is not None:
        del state.pending[outlier]  # departs in its own direction: not part of the change
        return result, []

    event = _make_event(state)
    state.events.append(event)
    run = state.pending
    # restart: the new baseline starts at the change's first observation
    state.pending, state.buffer, state.fit = [], [], None
    state.segment += 1
    for o in run:
        o.score = _NAN
        _ingest(state, o)
    return result, [event]


def update(
    state: ChangeState | None,
    date: Any,
    value: Any,
    clear: bool = True,
    **params: Any,
) -> tuple[ChangeState, list[ChangeEvent], ObservationScore]:
    """Ingest ONE observation; the building block of every batch function.

    Args:
        state: the chip's state, or ``None`` to start a new series (a fresh
            :class:`ChangeState` with ``params``). The state is updated IN PLACE and
            returned.
        date: observation date (datetime/date/np.datetime64/ISO string). Dates must be
            non-decreasing along a series.
        value: scalar or ``[F]`` vector (F fixed for the series). Non-finite values make the
            observation cloudy.
        clear: ``False`` = cloudy/unusable: the observation is skipped entirely (not fitted,
            not scored, does not extend or reset a pending run).
        **params: :class:`ChangeParams` fields (or ``params=ChangeParams(...)``). Only needed
            when ``state`` is ``None``; if given with an existing state they must equal the
            state's parameters.

    Returns:
        ``(state, new_events, score)``: the events confirmed by this observation (normally
        empty, at most one) and the observation's :class:`ObservationScore`.

    Raises:
        ValueError: date earlier than the previous one, changed feature count, or params
            that differ from the state's.
    """
    if state is None:
        state = ChangeState(params=ChangeParams.from_kwargs(**params))
    elif params and ChangeParams.from_kwargs(**params) != state.params:
        raise ValueError("params differ from the ones this ChangeState was created with")

    dt = to_datetime(date)
    t = _decimal_year(dt)
    v = np.asarray(value, dtype=np.float64)
    if v.ndim > 1:
        raise ValueError(f"value must be a scalar or a 1-D vector, got shape {v.shape}")
    v = v.reshape(-1).copy()
    if state.n_features is None:
        state.params.names_for(v.shape[0])  # validates feature_names early
        state.n_features = int(v.shape[0])
    elif v.shape[0] != state.n_features:
        raise ValueError(f"expected {state.n_features} features, got {v.shape[0]}")
    if state.last_t is not None and t < state.last_t:
        raise ValueError(f"dates must be non-decreasing: {dt.isoformat()} is before the previous one")
    state.last_t = t
    index = state.n_seen
    state.n_seen += 1

    if not (bool(clear) and bool(np.all(np.isfinite(v)))):
        return state, [], _unscored(dt, index, in_baseline=False, clear=False)
    score, events = _ingest(state, _Obs(index=index, date=dt, t=t, value=v))
    return state, events, score


# --------------------------------------------------------------------------------------
# batch wrappers


def _series_inputs(
    dates: Sequence[Any], values: Any, clear: Any
) -> tuple[list[Any], np.ndarray, np.ndarray]:
    dates = list(dates)
    V = np.asarray(values, dtype=np.float64)
    if V.ndim == 1:
        V = V[:, None]
    if V.ndim != 2 or V.shape[0] != len(dates):
        raise ValueError(f"values must be [T] or [T, F] with T={len(dates)}, got {np.shape(values)}")
    c = np.ones(len(dates), dtype=bool) if clear is None else np.asarray(clear, dtype=bool).reshape(-1)
    if c.shape[0] != len(dates):
        raise ValueError("clear must have one flag per date")
    return dates, V, c


def run_series(
    dates: Sequence[Any],
    values: Any,
    clear: Any = None,
    state: ChangeState | None = None,
    **params: Any,
) -> tuple[ChangeState, list[ChangeEvent], list[ObservationScore]]:
    """Feed a whole series through :func:`update` (optionally continuing ``state``).

    Args:
        dates: ``T`` observation dates, non-decreasing.
        values: ``[T]`` or ``[T, F]``.
        clear: optional ``[T]`` bool mask, ``False`` = cloudy (skipped).
        state: continue from this state (e.g. loaded from JSON); ``None`` starts fresh.
        **params: :class:`ChangeParams` fields.

    Returns:
        ``(state, events, scores)``: final state, the events confirmed during this call, one
        :class:`ObservationScore` per observation.
    """
    dates, V, c = _series_inputs(dates, values, clear)
    if state is None:
        state = ChangeState(params=ChangeParams.from_kwargs(**params))
        params = {}
    events: list[ChangeEvent] = []
    scores: list[ObservationScore] = []
    for d, v, ok in zip(dates, V, c):
        state, new, sc = update(state, d, v, bool(ok), **params)
        events.extend(new)
        scores.append(sc)
    return state, events, scores


def detect_changes(
    dates: Sequence[Any], values: Any, clear: Any = None, **params: Any
) -> list[ChangeEvent]:
    """Confirmed change events of one series (batch; identical to feeding :func:`update`).

    Args:
        dates: ``T`` dates (datetime, date, np.datetime64, ISO strings), non-decreasing;
            irregular spacing and gaps are fine.
        values: ``[T]`` or ``[T, F]`` (embeddings, principal components, any signals).
        clear: optional ``[T]`` bool mask; ``False`` (cloudy) observations are skipped.
        **params: :class:`ChangeParams` fields: ``baseline_obs=12``, ``baseline_years``
            (1 year with harmonics), ``baseline_start``/``baseline_end``, ``n_harmonics=1``,
            ``trend=False``, ``threshold=4.0``, ``k_consecutive=3``, ``min_magnitude=0``,
            ``min_run_cosine=0.5``, ``feature_names``...

    Returns:
        Events in date order; see :class:`ChangeEvent`.
    """
    return run_series(dates, values, clear, **params)[1]


def score_series(
    dates: Sequence[Any], values: Any, clear: Any = None, **params: Any
) -> pd.DataFrame:
    """Per-observation scores as a ``pandas.DataFrame`` (one row per input observation).

    Columns: the :class:`ObservationScore` fields (``date, index, score, residual_norm,
    abs_deviation, pct_deviation, exceeds, in_baseline, clear``) plus

    * ``change_flag``: True at the clear observations of a confirmed run (from an event's
      ``first_date`` to its ``confirmed_date``, including an outlier that the consistency
      check removed from inside the run);
    * ``change_onset``: True at each event's first observation.

    Parameters as in :func:`detect_changes`. ``df.attrs["events"]`` holds the events.
    """
    import pandas as pd

    _, events, scores = run_series(dates, values, clear, **params)
    df = pd.DataFrame([s.to_dict() for s in scores], columns=[f.name for f in fields(ObservationScore)])
    idx = df["index"].to_numpy()
    clear_col = df["clear"].to_numpy(dtype=bool)
    flag = np.zeros(len(df), dtype=bool)
    onset = np.zeros(len(df), dtype=bool)
    for e in events:
        flag |= (idx >= e.first_index) & (idx <= e.confirmed_index) & clear_col
        onset |= idx == e.first_index
    df["change_flag"] = flag
    df["change_onset"] = onset
    df.attrs["events"] = events
    return df


# --------------------------------------------------------------------------------------
# cosine distances


def cosine_distance(a: Any, b: Any) -> np.ndarray | float:
    """``1 - cos(a, b)`` along the last axis (broadcasting), in ``[0, 2]``.

    NaN where either vector is zero or non-finite. Returns a float for two vectors.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    na = np.linalg.norm(a, axis=-1)
    nb = np.linalg.norm(b, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.sum(a * b, axis=-1) / (na * nb)
    d = np.clip(1.0 - cos, 0.0, 2.0)
    d = np.where((na > 0) & (nb > 0) & np.isfinite(cos), d, np.nan)
    return float(d) if d.ndim == 0 else d


def _rows(values: Any, clear: Any) -> tuple[np.ndarray, np.ndarray]:
    V = np.asarray(values, dtype=np.float64)
    if V.ndim != 2:
        raise ValueError(f"values must be [T, F], got shape {V.shape}")
    ok = np.all(np.isfinite(V), axis=1)
    if clear is not None:
        c = np.asarray(clear, dtype=bool).reshape(-1)
        if c.shape[0] != V.shape[0]:
            raise ValueError("clear must have one flag per row")
        ok &= c
    return V, ok


def distances_to_baseline(values: Any, baseline_mask: Any, clear: Any = None) -> np.ndarray:
    """Cosine distance of every observation to the baseline-mean embedding, ``[T]``.

    The baseline embedding is the mean of the L2-normalized rows selected by
    ``baseline_mask`` (and ``clear``, if given); normalizing first keeps bright/dark scenes
    from dominating the direction. Rows that are not clear (or not finite) get NaN; all-NaN if
    the baseline selects no usable row.
    """
    V, ok = _rows(values, clear)
    m = np.asarray(baseline_mask, dtype=bool).reshape(-1)
    if m.shape[0] != V.shape[0]:
        raise ValueError("baseline_mask must have one flag per row")
    out = np.full(V.shape[0], np.nan)
    sel = m & ok
    norms = np.linalg.norm(V, axis=1)
    sel &= norms > 0
    if not np.any(sel):
        return out
    centroid = np.mean(V[sel] / norms[sel, None], axis=0)
    out[ok] = cosine_distance(V[ok], centroid)
    return out


def distances_to_previous(values: Any, clear: Any = None) -> np.ndarray:
    """Cosine distance of every clear observation to the previous clear one, ``[T]``.

    NaN for the first clear observation and for cloudy (or non-finite) rows; cloudy rows are
    skipped when looking for "previous".
    """
    V, ok = _rows(values, clear)
    T = V.shape[0]
    out = np.full(T, np.nan)
    if T == 0:
        return out
    last_ok = np.maximum.accumulate(np.where(ok, np.arange(T), -1))
    prev = np.concatenate([[-1], last_ok[:-1]])
    has = ok & (prev >= 0)
    out[has] = cosine_distance(V[has], V[prev[has]])
    return out

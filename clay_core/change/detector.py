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
   squares from a start that leaves gross outliers out: Huber, then Tukey bisquare weights),
   so a few undetected clouds or glitches in the baseline do not drag it. Each feature's noise
   level ``rmse`` is a robust scale (a winsorized RMS of the residuals, or their median
   absolute deviation for short baselines) times their serial-correlation factor
   (``serial_lags``), floored at the median step between consecutive observations
   (``variogram_floor``, CCDC's and COLD's adjusted RMSE).
2. **Scoring.** Every later clear observation gets a residual per feature,
   ``z_f = (y_f - yhat_f) / rmse_f`` and a standardized score ``score = sqrt(mean_f z_f**2)``
   (the RMS over features; about 1 under "no change" whatever the number of features). It
   *exceeds* when ``F * score**2`` passes the F-test of :func:`~clay_core.change.limits.exceed_threshold`
   at ``alpha`` (or ``score > threshold`` when a fixed threshold is set), and its mean absolute
   deviation is at least ``min_magnitude``.
3. **Strong changes: persistence.** A change is confirmed after ``k_consecutive`` consecutive
   exceeding *clear* observations; a non-exceeding clear observation resets the run, cloudy ones
   are skipped entirely. The event is dated at the run's first observation (``first_date``)
   and confirmed at the k-th (``confirmed_date``). *Consistency check:* a change is a
   persistent shift, so its observations depart the same way; when a run reaches
   ``k_consecutive``, the member whose ``z`` has the lowest cosine to the median ``z`` of the
   others is removed (it neither breaks nor extends the run) if that cosine is below
   ``min_run_cosine``, and the run waits for one more exceeding observation.
4. **Subtle changes: CUSUM.** Every scored observation also advances a multivariate CUSUM
   (Crosier 1988) of its ``z`` (shrunk to norm ``cusum_clip``, divided by the scale's
   uncertainty): ``S <- (S + z) (1 - k / |S + z|)``, restarting at 0 when ``|S + z| <= k``. The
   reference value ``k`` is half of ``cusum_shift`` plus the baseline's own prediction error
   at that date; a change is confirmed when ``|S|`` passes the limit calibrated to
   ``cusum_arl`` (:mod:`clay_core.change.limits`), no strong run is pending, and most of the
   run since the last restart supports the shift (outlier bursts do not). It is dated at the
   most likely start of the shift within that run.
5. **Restart.** After a confirmed change the baseline restarts on the new normal, from the
   change's first observation (the confirming run is the new baseline's start). A restarted
   baseline fits a linear trend where it is significant (``restart_trend``, ``trend_min_t``),
   so a recovery is extrapolated instead of firing again. A permanent step therefore fires
   once, and a later second change fires again.

Everything is driven by :func:`update`, which ingests ONE observation into a
:class:`ChangeState` (JSON-serializable through ``to_dict``/``from_dict``) and returns the
events it confirmed plus the observation's :class:`ObservationScore`. The batch functions
(:func:`run_series`, :func:`detect_changes`, :func:`score_series`) are loops over
:func:`update`, so processing a series incrementally (one new date at a time, with the state
stored as JSON in between) gives exactly the batch result.

Parameters
----------
Every parameter, its default and the reason for it is documented on
:class:`~clay_core.change.params.DetectorParams`; the defaults were checked on nrt's
simulator, the planted synthetic world and real Sentinel-2 pixels
(``benchmarks/change_eval.py``, results in ``docs/benchmarks_change.md``).

Public API
----------
:class:`~clay_core.change.params.DetectorParams` (parameters), :func:`update`,
:func:`run_series`, :func:`detect_changes`, :func:`score_series`; the state and result types
live in :mod:`clay_core.change.state`, the baseline fit in :mod:`clay_core.change.harmonic`.

Needs numpy, and scipy for the F and chi-square quantiles (:func:`score_series` imports pandas lazily).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import fields
from typing import TYPE_CHECKING, Any

import numpy as np

from clay_core.change.harmonic import HarmonicFit, design_times_coef, fit_harmonic, leverage
from clay_core.change.limits import (cusum_step, cusum_terms, exceed_threshold, feature_sum, onset_position,
                                     run_support)
from clay_core.change.params import MIN_BASELINE_OBS, DetectorParams
from clay_core.change.state import NAN, ChangeEvent, ChangeState, ObservationScore, SeriesObservation
from clay_core.change.timeutil import decimal_year, to_datetime

if TYPE_CHECKING:  # pandas is only needed by score_series (imported lazily)
    import pandas as pd

__all__ = ["detect_changes", "observation_threshold", "run_series", "score_series", "update"]


def _baseline_trend(state: ChangeState) -> bool:
    """A fit may have a (tested) trend after a restart, and in every segment that refits as it
    grows (its slope is corrected by the next refit if the first year got it wrong)."""
    p = state.params
    return p.trend or (p.restart_trend and (state.segment > 0 or p.refit_growth is not None))


def _fit_baseline(state: ChangeState) -> None:
    """Fit the segment's model to its buffered observations (kept when refits are on: they are
    the segment the next refit uses)."""
    p = state.params
    t = np.array([o.t for o in state.buffer])
    Y = np.stack([o.value for o in state.buffer])
    state.fit = fit_harmonic(
        t, Y, p.n_harmonics, _baseline_trend(state), p.robust, p.ridge, min_rmse=p.min_rmse,
        trend_min_t=None if p.trend else p.trend_min_t, serial_lags=p.serial_lags,
        variogram_floor=p.variogram_floor,
    )
    if p.refit_growth is None or state.fit.n_obs >= p.refit_max_obs:
        state.buffer = []  # no refit will need them


def _grow_segment(state: ChangeState, obs: SeriesObservation) -> None:
    """A clear observation that did not exceed joins the segment (up to ``refit_max_obs``); the
    model is refitted once the segment has grown ``refit_growth`` times and the CUSUM is at
    rest: while it adds up a departure, a refit would take in the departure it is weighing."""
    p, fit = state.params, state.fit
    if p.refit_growth is None or fit is None or fit.n_obs >= p.refit_max_obs:
        return
    if len(state.buffer) < p.refit_max_obs:
        state.buffer.append(obs)
    if len(state.buffer) >= min(math.ceil(p.refit_growth * fit.n_obs), p.refit_max_obs) and state.cusum is None:
        _fit_baseline(state)


def _baseline_complete(state: ChangeState) -> bool:
    b = state.buffer
    p = state.params
    return len(b) >= p.baseline_obs and (b[-1].t - b[0].t) >= p.effective_baseline_years


def _run_residuals(state: ChangeState, run: list[SeriesObservation]) -> tuple[np.ndarray, np.ndarray]:
    """``(values [k, F], standardized residuals z [k, F])`` of ``run``."""
    fit = state.fit
    assert fit is not None
    V = np.stack([o.value for o in run])
    X = fit.design(np.array([o.t for o in run]))
    return V, (V - design_times_coef(X, fit.coef)) / fit.rmse


def observation_threshold(params: DetectorParams, n_obs: int, n_coef: int, n_features: int,
                          lev: float | None = None) -> float:
    """The RMS z-score an observation must exceed against a baseline of ``n_obs`` observations
    (at leverage ``lev``; ``None`` = the fitted dates' average ``n_coef / n_obs``)."""
    if params.threshold is not None:
        return params.threshold
    lev_ = n_coef / max(n_obs, 1) if lev is None else lev
    return float(exceed_threshold(n_obs, n_coef, n_features, params.alpha, np.array([lev_]))[0])


def _fit_leverage(fit: HarmonicFit, X: np.ndarray) -> np.ndarray:
    if fit.cov is None:
        return np.full(X.shape[0], X.shape[1] / max(fit.n_obs, 1))
    return leverage(X, np.broadcast_to(fit.cov, (X.shape[0], *fit.cov.shape)))


def _make_event(state: ChangeState, run: list[SeriesObservation], confirmed: SeriesObservation) -> ChangeEvent:
    p, fit = state.params, state.fit
    assert fit is not None
    V, Z = _run_residuals(state, run)
    med = np.median(np.abs(Z), axis=0)
    names = p.names_for(V.shape[1])
    order = np.argsort(-med, kind="stable")
    thr = observation_threshold(p, fit.n_obs, fit.coef.shape[0], V.shape[1])  # at the average leverage
    signals = [names[i] for i in order if med[i] > thr][: p.max_signals]
    if not signals:
        signals = [names[order[0]]]
    return ChangeEvent(
        first_date=run[0].date,
        confirmed_date=confirmed.date,
        magnitude=float(np.median([o.score for o in run])),
        signals=signals,
        first_index=run[0].index,
        confirmed_index=confirmed.index,
        n_obs_baseline=fit.n_obs,
    )


def _cosine_det(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine of two vectors with BLAS-free sums (deterministic); NaN if either is zero."""
    na = math.sqrt(float(np.sum(a * a)))
    nb = math.sqrt(float(np.sum(b * b)))
    if na == 0.0 or nb == 0.0:
        return NAN
    return float(np.sum(a * b)) / (na * nb)


def _inconsistent_member(state: ChangeState) -> int | None:
    """Position of the pending observation that departs least like the others, if too unlike.

    Cosine of each member's standardized residual with the median standardized residual of
    the other members; the lowest one (earliest on ties) if it is below ``min_run_cosine``.
    A zero vector (NaN cosine) is no evidence either way and never removed.
    """
    p, run = state.params, state.pending
    if p.min_run_cosine <= -1.0 or len(run) < 2:
        return None
    _, Z = _run_residuals(state, run)
    worst, worst_cos = None, p.min_run_cosine
    for j in range(len(run)):
        others = np.concatenate([Z[:j], Z[j + 1 :]])
        cos = _cosine_det(Z[j], np.median(others, axis=0))
        if cos < worst_cos:
            worst, worst_cos = j, cos
    return worst


def _collect_baseline(state: ChangeState, obs: SeriesObservation) -> ObservationScore | None:
    """While no baseline is fitted: buffer ``obs`` (its unscored result), or ``None`` once the
    baseline window has closed and ``obs`` is the first observation to score against it."""
    p = state.params
    initial = state.segment == 0
    if initial and p.baseline_start is not None and obs.t < decimal_year(p.baseline_start):
        return ObservationScore.unscored(obs.date, obs.index, in_baseline=False, clear=True)
    window = initial and p.baseline_end is not None
    t_end = decimal_year(p.baseline_end) if window else math.inf
    if window and obs.t > t_end and len(state.buffer) >= MIN_BASELINE_OBS:
        _fit_baseline(state)  # window closed: fit it and score this observation
        return None
    state.buffer.append(obs)
    if (not window or obs.t > t_end) and _baseline_complete(state):
        _fit_baseline(state)
    return ObservationScore.unscored(obs.date, obs.index, in_baseline=True, clear=True)


def _score(state: ChangeState, obs: SeriesObservation) -> tuple[ObservationScore, np.ndarray, float]:
    """Compare ``obs`` with the fitted baseline: its score, standardized residuals ``z`` and the
    fit's leverage at its date."""
    p, fit = state.params, state.fit
    assert fit is not None
    X = fit.design(np.array([obs.t]))
    pred = design_times_coef(X, fit.coef)[0]
    lev = float(_fit_leverage(fit, X)[0])
    r = obs.value - pred
    z = r / fit.rmse
    F = z.shape[0]
    score = float(np.sqrt(feature_sum(z[None] * z[None]) / F)[0])
    residual_norm = float(np.sqrt(np.sum(r * r)))  # not np.linalg.norm: BLAS-free, deterministic
    abs_dev = float(np.mean(np.abs(r)))
    pred_norm = float(np.sqrt(np.sum(pred * pred)))
    pct = 100.0 * residual_norm / pred_norm if pred_norm > 1e-12 else NAN
    thr = observation_threshold(p, fit.n_obs, fit.coef.shape[0], F, lev)
    exceeds = score > thr and abs_dev >= p.min_magnitude
    return ObservationScore(obs.date, obs.index, score, residual_norm, abs_dev, pct, exceeds, False, True), z, lev


def _restart(state: ChangeState, event: ChangeEvent, run: list[SeriesObservation]) -> list[ChangeEvent]:
    """Record ``event`` and start a new segment whose baseline begins with ``run``."""
    state.events.append(event)
    state.pending, state.buffer, state.fit = [], [], None
    state.cusum, state.cusum_run = None, []
    state.segment += 1
    for o in run:
        o.score = NAN
        _ingest(state, o)
    return [event]


def _extend_run(state: ChangeState, obs: SeriesObservation, score: float) -> list[ChangeEvent]:
    """Add an exceeding observation to the pending run; confirm and restart when it is long
    and consistent enough."""
    obs.score = score
    state.pending.append(obs)
    if len(state.pending) < state.params.k_consecutive:
        return []
    outlier = _inconsistent_member(state)
    if outlier is not None:
        del state.pending[outlier]  # departs in its own direction: not part of the change
        return []
    run = state.pending
    return _restart(state, _make_event(state, run, run[-1]), run)


def _cusum_update(state: ChangeState, obs: SeriesObservation, z: np.ndarray, lev: float,
                  score: float) -> list[ChangeEvent]:
    """Advance the CUSUM with ``z``; confirm a subtle shift when it crosses its limit and most of
    its run supports it (then dated by :func:`onset_position` and restarted from there)."""
    p, fit = state.params, state.fit
    assert fit is not None
    F, n, P = z.shape[0], fit.n_obs, fit.coef.shape[0]
    ks, h, clip, inflation = cusum_terms(p.cusum_shift, p.cusum_arl, p.cusum_clip, p.k_consecutive, n, P, F,
                                         np.array([lev]))
    k = float(ks[0])
    S = np.zeros_like(z) if state.cusum is None else state.cusum
    S_new, reset = cusum_step(S[None], z[None] / inflation, ks, clip)
    if reset[0]:
        state.cusum, state.cusum_run = None, []
        return []
    state.cusum = S_new[0]
    state.cusum_run.append(SeriesObservation(obs.index, obs.date, obs.t, obs.value.copy(), score))
    if len(state.cusum_run) > p.max_run:
        del state.cusum_run[0]
    crossed = math.sqrt(float(feature_sum(S_new * S_new)[0])) > h
    # A departure strong enough to exceed is dated by its consecutive run (the fast path):
    # the CUSUM waits while such a run is pending.
    if not crossed or len(state.cusum_run) < p.k_consecutive or state.pending:
        return []
    _, Z = _run_residuals(state, state.cusum_run)
    if run_support(Z, clip) < k:  # carried by a few outliers: start over
        state.cusum, state.cusum_run = None, []
        return []
    run = state.cusum_run[onset_position(Z, p.cusum_clip):]
    return _restart(state, _make_event(state, run, run[-1]), run)


def _ingest(state: ChangeState, obs: SeriesObservation) -> tuple[ObservationScore, list[ChangeEvent]]:
    """Process one clear observation (baseline collection or monitoring)."""
    if state.fit is None:
        unscored = _collect_baseline(state, obs)
        if unscored is not None:
            return unscored, []
    result, z, lev = _score(state, obs)
    if result.exceeds:
        events = _extend_run(state, obs, result.score)
        if events:
            return result, events
    else:
        state.pending = []
    events = _cusum_update(state, obs, z, lev, result.score) if state.params.cusum else []
    if not result.exceeds and not events:
        _grow_segment(state, obs)
    return result, events


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
        **params: :class:`DetectorParams` fields (or ``params=DetectorParams(...)``). Only needed
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
        state = ChangeState(params=DetectorParams.from_kwargs(**params))
    elif params and DetectorParams.from_kwargs(**params) != state.params:
        raise ValueError("params differ from the ones this ChangeState was created with")

    dt = to_datetime(date)
    t = decimal_year(dt)
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
        return state, [], ObservationScore.unscored(dt, index, in_baseline=False, clear=False)
    score, events = _ingest(state, SeriesObservation(index=index, date=dt, t=t, value=v))
    return state, events, score


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
        **params: :class:`DetectorParams` fields.

    Returns:
        ``(state, events, scores)``: final state, the events confirmed during this call, one
        :class:`ObservationScore` per observation.
    """
    dates, V, c = _series_inputs(dates, values, clear)
    if state is None:
        state = ChangeState(params=DetectorParams.from_kwargs(**params))
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
        **params: :class:`DetectorParams` fields: ``baseline_obs=12``, ``baseline_years``
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

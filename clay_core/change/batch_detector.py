"""The persistent-change detector of :mod:`clay_core.change.detector`, advanced for every chip
of a window at once on columnar state (``det_`` columns of a :class:`ChipTable`).

The common steps are numpy over chips: collecting a baseline, fitting baselines (chips with
the same number of observations in one batched robust fit), scoring against a fitted
baseline, resetting or extending a pending run. The rare steps (a run reaching
``k_consecutive``, with its consistency check, event and restart; the first-baseline window
closing) go through :func:`~clay_core.change.detector.update` for those chips only, on a
:class:`ChangeState` built from their row and written back. Both use the same arithmetic
(the batched fit is the scalar fit with one series), so a chip gets the events
:func:`~clay_core.change.detector.detect_changes` gives its whole series.

Dates are stored as integer microseconds since 1970 (naive UTC).
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import numpy as np

from clay_core.change.carry import ChipTable
from clay_core.change.detector import update
from clay_core.change.harmonic import HarmonicFit, _design_batch, _predict_batch, fit_harmonic_batch, leverage
from clay_core.change.limits import cusum_step, cusum_terms, exceed_threshold, feature_sum
from clay_core.change.params import MIN_BASELINE_OBS, DetectorParams
from clay_core.change.state import ChangeEvent, ChangeState, SeriesObservation
from clay_core.change.timeutil import decimal_year, to_datetime

__all__ = ["detect_many", "detector_columns", "state_of", "step_detector", "years_of"]

_EPOCH = datetime(1970, 1, 1)
_SECONDS_PER_YEAR = 365.2425 * 86400.0
_FIELDS = ("index", "us", "t", "value", "score")
_LISTS = {"buf": _FIELDS, "pend": _FIELDS, "cus": _FIELDS}


def years_of(us: np.ndarray) -> np.ndarray:
    """Decimal years of microseconds since 1970; equal, bit for bit, to ``decimal_year``."""
    return 1970.0 + (np.asarray(us, np.int64) / 1e6) / _SECONDS_PER_YEAR


def _microseconds(dt: datetime) -> int:
    """Microseconds since 1970 of a (naive UTC or aware) datetime: the columns' time unit."""
    return (dt.replace(tzinfo=None) - _EPOCH) // timedelta(microseconds=1)


def detector_columns(n_features: int, params: DetectorParams) -> dict[str, np.ndarray]:
    """Empty ``det_`` columns for ``n_features`` watched values."""
    F, P = n_features, 1 + int(params.trend or params.restart_trend) + 2 * params.n_harmonics
    cols: dict[str, np.ndarray] = {}
    for k in ("n_seen", "segment", "n_events", "fit_h", "fit_n", "buf_n", "pend_n", "cus_n"):
        cols[f"det_{k}"] = np.zeros(0, np.int64)
    for k in ("last_t", "fit_t0", "fit_tmin", "fit_tmax"):
        cols[f"det_{k}"] = np.zeros(0, np.float64)
    cols["det_fit_ok"] = np.zeros(0, bool)
    cols["det_fit_trend"] = np.zeros(0, bool)
    cols["det_fit_coef"] = np.zeros((0, P, F))
    cols["det_fit_rmse"] = np.zeros((0, F))
    cols["det_fit_cov"] = np.zeros((0, P, P))
    cols["det_cus_S"] = np.zeros((0, F))
    for lst in _LISTS:
        cols[f"det_{lst}_index"] = np.zeros((0, 0), np.int64)
        cols[f"det_{lst}_us"] = np.zeros((0, 0), np.int64)
        cols[f"det_{lst}_t"] = np.zeros((0, 0))
        cols[f"det_{lst}_value"] = np.zeros((0, 0, F))
        cols[f"det_{lst}_score"] = np.zeros((0, 0))
    return cols


def _names(lst: str) -> list[str]:
    return [f"det_{lst}_{k}" for k in _LISTS[lst]]


def _obs_list(tab: ChipTable, lst: str, i: int) -> list[SeriesObservation]:
    n = int(tab[f"det_{lst}_n"][i])
    return [SeriesObservation(int(tab[f"det_{lst}_index"][i, j]),
                              _EPOCH + timedelta(microseconds=int(tab[f"det_{lst}_us"][i, j])),
                              float(tab[f"det_{lst}_t"][i, j]), tab[f"det_{lst}_value"][i, j].copy(),
                              float(tab[f"det_{lst}_score"][i, j])) for j in range(n)]


def state_of(tab: ChipTable, i: int, params: DetectorParams) -> ChangeState:
    """Row ``i`` as a :class:`ChangeState` (without past events: they are in events.parquet)."""
    fit = None
    if tab["det_fit_ok"][i]:
        h, trend = int(tab["det_fit_h"][i]), bool(tab["det_fit_trend"][i])
        P = 1 + int(trend) + 2 * h
        fit = HarmonicFit(tab["det_fit_coef"][i, :P].copy(), tab["det_fit_rmse"][i].copy(),
                          int(tab["det_fit_n"][i]), h, trend, float(tab["det_fit_t0"][i]), False,
                          float(tab["det_fit_tmin"][i]), float(tab["det_fit_tmax"][i]),
                          tab["det_fit_cov"][i, :P, :P].copy())
    last_t = float(tab["det_last_t"][i])
    n_seen = int(tab["det_n_seen"][i])
    return ChangeState(params=params, n_seen=n_seen, n_features=tab["det_fit_rmse"].shape[1] if n_seen else None,
                       last_t=None if math.isnan(last_t) else last_t, segment=int(tab["det_segment"][i]), fit=fit,
                       buffer=_obs_list(tab, "buf", i), pending=_obs_list(tab, "pend", i),
                       cusum=_cusum_of(tab, i), cusum_run=_obs_list(tab, "cus", i))


def _cusum_of(tab: ChipTable, i: int) -> np.ndarray | None:
    S = tab["det_cus_S"][i]
    return None if int(tab["det_cus_n"][i]) == 0 else S.copy()


def _put_list(tab: ChipTable, lst: str, i: int, obs: list[SeriesObservation]) -> None:
    tab.widen(_names(lst), len(obs))
    tab[f"det_{lst}_n"][i] = len(obs)
    for j, o in enumerate(obs):
        tab[f"det_{lst}_index"][i, j] = o.index
        tab[f"det_{lst}_us"][i, j] = _microseconds(o.date)
        tab[f"det_{lst}_t"][i, j] = o.t
        tab[f"det_{lst}_value"][i, j] = o.value
        tab[f"det_{lst}_score"][i, j] = o.score


def _put_state(tab: ChipTable, i: int, s: ChangeState) -> None:
    tab["det_n_seen"][i], tab["det_segment"][i] = s.n_seen, s.segment
    tab["det_last_t"][i] = np.nan if s.last_t is None else s.last_t
    tab["det_fit_ok"][i] = s.fit is not None
    if s.fit is not None:
        f = s.fit
        tab["det_fit_coef"][i] = 0.0
        tab["det_fit_coef"][i, : f.coef.shape[0]] = f.coef
        tab["det_fit_rmse"][i] = f.rmse
        tab["det_fit_cov"][i] = 0.0
        tab["det_fit_cov"][i, : f.cov.shape[0], : f.cov.shape[1]] = f.cov
        tab["det_fit_h"][i], tab["det_fit_trend"][i], tab["det_fit_n"][i] = f.n_harmonics_used, f.trend, f.n_obs
        tab["det_fit_t0"][i], tab["det_fit_tmin"][i], tab["det_fit_tmax"][i] = f.t0, f.t_min, f.t_max
    _put_list(tab, "buf", i, s.buffer)
    _put_list(tab, "pend", i, s.pending)
    _put_list(tab, "cus", i, s.cusum_run)
    tab["det_cus_S"][i] = 0.0 if s.cusum is None else s.cusum


def _append(tab: ChipTable, lst: str, rows: np.ndarray, index: np.ndarray, us: np.ndarray, t: np.ndarray,
            V: np.ndarray, score: np.ndarray) -> None:
    """Append one observation to the ``lst`` list of each of ``rows``."""
    if not len(rows):
        return
    pos = tab[f"det_{lst}_n"][rows]
    tab.widen(_names(lst), int(pos.max()) + 1)
    for k, v in zip(_LISTS[lst], (index, us, t, V, score)):
        tab[f"det_{lst}_{k}"][rows, pos] = v
    tab[f"det_{lst}_n"][rows] = pos + 1


def _fit_baselines(tab: ChipTable, rows: np.ndarray, p: DetectorParams) -> None:
    """Fit the collected baselines (or the grown segments, for refits) of ``rows``, batched by
    their number of observations and whether the model may have a trend."""
    n_of = tab["det_buf_n"][rows]
    trend_of = p.trend | (p.restart_trend & ((tab["det_segment"][rows] > 0) | (p.refit_growth is not None)))
    for key in np.unique(n_of * 2 + trend_of):
        n, trend = int(key // 2), bool(key % 2)
        g = rows[(n_of == n) & (trend_of == trend)]
        b = fit_harmonic_batch(tab["det_buf_t"][g, :n], tab["det_buf_value"][g, :n], p.n_harmonics, trend,
                               p.robust, p.ridge, min_rmse=p.min_rmse, trend_min_t=None if p.trend else p.trend_min_t,
                               serial_lags=p.serial_lags, variogram_floor=p.variogram_floor)
        P = b.coef.shape[1]
        tab["det_fit_coef"][g] = 0.0
        tab["det_fit_coef"][g, :P] = b.coef
        tab["det_fit_rmse"][g] = b.rmse
        tab["det_fit_cov"][g] = 0.0
        tab["det_fit_cov"][g, :P, :P] = b.cov
        tab["det_fit_h"][g], tab["det_fit_trend"][g], tab["det_fit_n"][g] = b.n_harmonics_used, b.trend, b.n_obs
        tab["det_fit_t0"][g], tab["det_fit_tmin"][g], tab["det_fit_tmax"][g] = b.t0, b.t_min, b.t_max
        tab["det_fit_ok"][g] = True
        if p.refit_growth is None or n >= p.refit_max_obs:
            tab["det_buf_n"][g] = 0  # no refit will need them


def _grow_segments(tab: ChipTable, rows: np.ndarray, index, us, t, V, p: DetectorParams) -> None:
    """The scalar detector's ``_grow_segment`` for ``rows`` (fitted, not exceeding, no event,
    the CUSUM already advanced)."""
    room = tab["det_fit_n"][rows] < p.refit_max_obs
    rows, index, us, t, V = rows[room], index[room], us[room], t[room], V[room]
    add = tab["det_buf_n"][rows] < p.refit_max_obs
    _append(tab, "buf", rows[add], index[add], us[add], t[add], V[add], np.full(int(add.sum()), np.nan))
    due = (tab["det_buf_n"][rows] >= np.minimum(np.ceil(p.refit_growth * tab["det_fit_n"][rows]), p.refit_max_obs)) \
        & (tab["det_cus_n"][rows] == 0)  # the CUSUM at rest
    if due.any():
        _fit_baselines(tab, rows[due], p)


def _scores(tab: ChipTable, rows: np.ndarray, t: np.ndarray, V: np.ndarray, p: DetectorParams):
    """``(score, exceeds, z, lev)`` of observations against the fitted baselines of ``rows``:
    the arithmetic of the scalar detector's scoring, one model group at a time."""
    m, F = V.shape
    score, lev = np.full(m, np.nan), np.full(m, np.nan)
    abs_dev, thr = np.full(m, np.nan), np.full(m, np.nan)
    z = np.full((m, F), np.nan)
    keys = tab["det_fit_h"][rows] * 2 + tab["det_fit_trend"][rows]
    for key in np.unique(keys):
        sel = keys == key
        g = rows[sel]
        h, trend = int(key // 2), bool(key % 2)
        X = _design_batch(t[sel][:, None], h, trend, tab["det_fit_t0"][g])
        P = X.shape[2]
        pred = _predict_batch(X, tab["det_fit_coef"][g, :P])[:, 0]
        r = V[sel] - pred
        z[sel] = r / tab["det_fit_rmse"][g]
        score[sel] = np.sqrt(feature_sum(z[sel] * z[sel]) / F)
        abs_dev[sel] = np.mean(np.abs(r), axis=1)
        lev[sel] = leverage(X[:, 0], tab["det_fit_cov"][g, :P, :P])
        n_of = tab["det_fit_n"][g]
        for n in np.unique(n_of):
            at = np.flatnonzero(sel)[n_of == n]
            thr[at] = p.threshold if p.threshold is not None else exceed_threshold(int(n), P, F, p.alpha, lev[at])
    return score, (score > thr) & (abs_dev >= p.min_magnitude), z, lev


def _cusum_candidates(tab: ChipTable, rows: np.ndarray, z: np.ndarray, lev: np.ndarray, p: DetectorParams):
    """The CUSUM step of the scalar detector for ``rows`` (all scored): ``(S_new, reset, crossed)``,
    ``crossed`` meaning the limit is passed with a run of at least ``k_consecutive``."""
    F = z.shape[1]
    n_of, P_of = tab["det_fit_n"][rows], 1 + tab["det_fit_trend"][rows] + 2 * tab["det_fit_h"][rows]
    k, h, clip, infl = (np.empty(len(rows)) for _ in range(4))
    for n, P in set(zip(n_of.tolist(), P_of.tolist())):
        at = (n_of == n) & (P_of == P)
        k[at], h[at], clip[at], infl[at] = cusum_terms(p.cusum_shift, p.cusum_arl, p.cusum_clip, p.k_consecutive,
                                                       n, P, F, lev[at])
    S = np.where(tab["det_cus_n"][rows, None] > 0, tab["det_cus_S"][rows], 0.0)  # new rows hold NaN
    S_new, reset = cusum_step(S, z / infl[:, None], k, clip)
    crossed = (np.sqrt(feature_sum(S_new * S_new)) > h) & (tab["det_cus_n"][rows] + 1 >= p.k_consecutive) & ~reset
    return S_new, reset, crossed


def _advance_cusum(tab: ChipTable, rows: np.ndarray, S_new: np.ndarray, reset: np.ndarray, index, us, t, V, score,
                   max_run: int) -> None:
    """Store the CUSUM step of ``rows``: restart (empty run) or append to the run (oldest dropped
    beyond ``max_run``)."""
    tab["det_cus_S"][rows] = np.where(reset[:, None], 0.0, S_new)
    tab["det_cus_n"][rows[reset]] = 0
    grow = ~reset
    full = rows[grow & (tab["det_cus_n"][rows] >= max_run)]
    if len(full):
        for k in _LISTS["cus"]:
            a = tab[f"det_cus_{k}"]
            a[full, :-1] = a[full, 1:].copy()
        tab["det_cus_n"][full] -= 1
    _append(tab, "cus", rows[grow], index[grow], us[grow], t[grow], V[grow], score[grow])


def step_detector(tab: ChipTable, rows: np.ndarray, us: np.ndarray, V: np.ndarray, p: DetectorParams):
    """Ingest one observation for each of ``rows`` (distinct chips): microseconds ``us``,
    values ``V [m, F]``. Returns ``(score, exceeds, in_baseline, events)`` with ``events`` a
    list of ``(position in rows, ChangeEvent)``."""
    V = np.asarray(V, np.float64)
    t = years_of(us)
    last = tab["det_last_t"][rows]
    if np.any(t < last):
        raise ValueError("dates must be non-decreasing: a window holds observations before the detector's last one")
    index = tab["det_n_seen"][rows].copy()
    finite = np.all(np.isfinite(V), axis=1)
    fitted = tab["det_fit_ok"][rows]
    initial = tab["det_segment"][rows] == 0
    t_start = decimal_year(p.baseline_start) if p.baseline_start is not None else -math.inf
    skip = finite & ~fitted & initial & (t < t_start)
    window = initial & (p.baseline_end is not None)
    t_end = decimal_year(p.baseline_end) if p.baseline_end is not None else math.inf
    bn = tab["det_buf_n"][rows]
    collect = finite & ~fitted & ~skip
    closing = collect & window & (t > t_end) & (bn >= MIN_BASELINE_OBS)
    first_t = np.where(bn > 0, tab["det_buf_t"][rows, 0] if tab["det_buf_t"].shape[1] else t, t)
    fit_now = collect & ~closing & (~window | (t > t_end)) & (bn + 1 >= p.baseline_obs) \
        & (t - first_t >= p.effective_baseline_years)
    if closing.any():  # the first-baseline window closed: fit it, then score this observation against it
        _fit_baselines(tab, rows[closing], p)
        fitted = fitted | closing
        collect = collect & ~closing
    m = len(rows)
    score, exceeds = np.full(m, np.nan), np.zeros(m, bool)
    z, lev = np.full((m, V.shape[1]), np.nan), np.full(m, np.nan)
    sc = finite & fitted
    if sc.any():
        score[sc], exceeds[sc], z[sc], lev[sc] = _scores(tab, rows[sc], t[sc], V[sc], p)
    S_new, reset, crossed = np.zeros_like(z), np.ones(m, bool), np.zeros(m, bool)
    if p.cusum and sc.any():
        S_new[sc], reset[sc], crossed[sc] = _cusum_candidates(tab, rows[sc], z[sc], lev[sc], p)
    slow = (sc & exceeds & (tab["det_pend_n"][rows] + 1 >= p.k_consecutive)) | (sc & ~exceeds & crossed)
    in_base = collect.copy()
    # the scalar detector for the rare steps, from the rows as they were before this observation
    events: list[tuple[int, ChangeEvent]] = []
    for j in np.flatnonzero(slow):
        state, new, res = update(state_of(tab, int(rows[j]), p), _EPOCH + timedelta(microseconds=int(us[j])), V[j])
        _put_state(tab, int(rows[j]), state)
        tab["det_n_events"][rows[j]] += len(new)
        score[j], exceeds[j], in_base[j] = res.score, res.exceeds, res.in_baseline
        events.extend((int(j), e) for e in new)
    fast = ~slow
    f_rows = rows[fast]
    tab["det_n_seen"][f_rows] += 1
    tab["det_last_t"][f_rows] = t[fast]
    add = fast & collect
    _append(tab, "buf", rows[add], index[add], us[add], t[add], V[add], np.full(add.sum(), np.nan))
    _fit_baselines(tab, rows[fast & fit_now], p)
    tab["det_pend_n"][rows[fast & sc & ~exceeds]] = 0
    ext = fast & sc & exceeds
    _append(tab, "pend", rows[ext], index[ext], us[ext], t[ext], V[ext], score[ext])
    cu = fast & sc if p.cusum else np.zeros(m, bool)
    if cu.any():
        _advance_cusum(tab, rows[cu], S_new[cu], reset[cu], index[cu], us[cu], t[cu], V[cu], score[cu], p.max_run)
    grow = fast & sc & ~exceeds
    if p.refit_growth is not None and grow.any():
        _grow_segments(tab, rows[grow], index[grow], us[grow], t[grow], V[grow], p)
    return score, exceeds, in_base, events


def detect_many(dates, values, clear=None, params: DetectorParams | None = None) -> list[list[ChangeEvent]]:
    """:func:`~clay_core.change.detector.detect_changes` for ``N`` series on shared dates, vectorized.

    Args:
        dates: ``T`` non-decreasing dates (datetime, ISO string or ``datetime64``).
        values: ``[N, T]`` or ``[N, T, F]``; non-finite values are missing (cloudy).
        clear: optional ``[N, T]`` bool mask, ``False`` = cloudy.
        params: detector parameters (default :class:`DetectorParams`).

    Returns:
        ``N`` lists of events, each identical to ``detect_changes`` on that series alone
        (``first_index``/``confirmed_index`` are positions in ``dates``).
    """
    p = params or DetectorParams()
    V = np.asarray(values, np.float64)
    if V.ndim == 2:
        V = V[..., None]
    if V.ndim != 3 or V.shape[1] != len(dates):
        raise ValueError(f"values must be [N, T] or [N, T, F] with T={len(dates)}, got {np.shape(values)}")
    if clear is not None:
        V = np.where(np.asarray(clear, bool)[..., None], V, np.nan)
    us = np.array([_microseconds(to_datetime(d)) for d in dates], dtype=np.int64)
    ids = np.array([f"{i:09d}" for i in range(V.shape[0])], dtype=object)
    tab = ChipTable(np.array([], dtype=object), detector_columns(V.shape[2], p))
    rows = tab.rows(ids)
    events: list[list[ChangeEvent]] = [[] for _ in range(V.shape[0])]
    for j in range(V.shape[1]):
        _, _, _, found = step_detector(tab, rows, np.full(len(rows), us[j]), V[:, j], p)
        for pos, e in found:
            events[pos].append(e)
    return events

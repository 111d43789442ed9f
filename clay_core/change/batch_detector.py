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
from clay_core.change.harmonic import HarmonicFit, _design_batch, _predict_batch, fit_harmonic_batch
from clay_core.change.params import MIN_BASELINE_OBS, DetectorParams
from clay_core.change.state import ChangeEvent, ChangeState, SeriesObservation
from clay_core.change.timeutil import decimal_year

__all__ = ["detector_columns", "state_of", "step_detector", "years_of"]

_EPOCH = datetime(1970, 1, 1)
_SECONDS_PER_YEAR = 365.2425 * 86400.0
_LISTS = {"buf": ("index", "us", "t", "value", "score"), "pend": ("index", "us", "t", "value", "score")}


def years_of(us: np.ndarray) -> np.ndarray:
    """Decimal years of microseconds since 1970; equal, bit for bit, to ``decimal_year``."""
    return 1970.0 + (np.asarray(us, np.int64) / 1e6) / _SECONDS_PER_YEAR


def detector_columns(n_features: int, params: DetectorParams) -> dict[str, np.ndarray]:
    """Empty ``det_`` columns for ``n_features`` watched values."""
    F, P = n_features, 1 + int(params.trend) + 2 * params.n_harmonics
    cols: dict[str, np.ndarray] = {}
    for k in ("n_seen", "segment", "n_events", "fit_h", "fit_n", "buf_n", "pend_n"):
        cols[f"det_{k}"] = np.zeros(0, np.int64)
    for k in ("last_t", "fit_t0", "fit_tmin", "fit_tmax"):
        cols[f"det_{k}"] = np.zeros(0, np.float64)
    cols["det_fit_ok"] = np.zeros(0, bool)
    cols["det_fit_trend"] = np.zeros(0, bool)
    cols["det_fit_coef"] = np.zeros((0, P, F))
    cols["det_fit_rmse"] = np.zeros((0, F))
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
        fit = HarmonicFit(tab["det_fit_coef"][i, : 1 + int(trend) + 2 * h].copy(), tab["det_fit_rmse"][i].copy(),
                          int(tab["det_fit_n"][i]), h, trend, float(tab["det_fit_t0"][i]), False,
                          float(tab["det_fit_tmin"][i]), float(tab["det_fit_tmax"][i]))
    last_t = float(tab["det_last_t"][i])
    n_seen = int(tab["det_n_seen"][i])
    return ChangeState(params=params, n_seen=n_seen, n_features=tab["det_fit_rmse"].shape[1] if n_seen else None,
                       last_t=None if math.isnan(last_t) else last_t, segment=int(tab["det_segment"][i]), fit=fit,
                       buffer=_obs_list(tab, "buf", i), pending=_obs_list(tab, "pend", i))


def _put_list(tab: ChipTable, lst: str, i: int, obs: list[SeriesObservation]) -> None:
    tab.widen(_names(lst), len(obs))
    tab[f"det_{lst}_n"][i] = len(obs)
    for j, o in enumerate(obs):
        tab[f"det_{lst}_index"][i, j] = o.index
        tab[f"det_{lst}_us"][i, j] = (o.date.replace(tzinfo=None) - _EPOCH) // timedelta(microseconds=1)
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
        tab["det_fit_h"][i], tab["det_fit_trend"][i], tab["det_fit_n"][i] = f.n_harmonics_used, f.trend, f.n_obs
        tab["det_fit_t0"][i], tab["det_fit_tmin"][i], tab["det_fit_tmax"][i] = f.t0, f.t_min, f.t_max
    _put_list(tab, "buf", i, s.buffer)
    _put_list(tab, "pend", i, s.pending)


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
    """Fit the collected baselines of ``rows`` (batched by their number of observations)."""
    n_of = tab["det_buf_n"][rows]
    for n in np.unique(n_of):
        g = rows[n_of == n]
        b = fit_harmonic_batch(tab["det_buf_t"][g, :n], tab["det_buf_value"][g, :n], p.n_harmonics, p.trend,
                               p.robust, p.ridge, min_rmse=p.min_rmse)
        tab["det_fit_coef"][g] = 0.0
        tab["det_fit_coef"][g, : b.coef.shape[1]] = b.coef
        tab["det_fit_rmse"][g] = b.rmse
        tab["det_fit_h"][g], tab["det_fit_trend"][g], tab["det_fit_n"][g] = b.n_harmonics_used, b.trend, b.n_obs
        tab["det_fit_t0"][g], tab["det_fit_tmin"][g], tab["det_fit_tmax"][g] = b.t0, b.t_min, b.t_max
        tab["det_fit_ok"][g] = True
        tab["det_buf_n"][g] = 0


def _scores(tab: ChipTable, rows: np.ndarray, t: np.ndarray, V: np.ndarray, p: DetectorParams):
    """``(score, exceeds)`` of observations against the fitted baselines of ``rows``: the
    arithmetic of the scalar detector's scoring, one model group at a time."""
    score = np.full(len(rows), np.nan)
    abs_dev = np.full(len(rows), np.nan)
    keys = tab["det_fit_h"][rows] * 2 + tab["det_fit_trend"][rows]
    for key in np.unique(keys):
        m = keys == key
        g = rows[m]
        h, trend = int(key // 2), bool(key % 2)
        X = _design_batch(t[m][:, None], h, trend, tab["det_fit_t0"][g])
        pred = _predict_batch(X, tab["det_fit_coef"][g, : X.shape[2]])[:, 0]
        r = V[m] - pred
        score[m] = np.sqrt(np.mean((r / tab["det_fit_rmse"][g]) ** 2, axis=1))
        abs_dev[m] = np.mean(np.abs(r), axis=1)
    return score, (score > p.threshold) & (abs_dev >= p.min_magnitude)


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
    score, exceeds = np.full(len(rows), np.nan), np.zeros(len(rows), bool)
    sc = finite & fitted
    if sc.any():
        score[sc], exceeds[sc] = _scores(tab, rows[sc], t[sc], V[sc], p)
    slow = closing | (sc & exceeds & (tab["det_pend_n"][rows] + 1 >= p.k_consecutive))
    in_base = collect & ~closing
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
    return score, exceeds, in_base, events

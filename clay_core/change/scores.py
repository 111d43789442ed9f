"""Per chip and date change scores for one tile x window partition.

For each chip observed in the window, its earlier clear observations (same chip id, earlier
windows) form a time series. Scores:

- ``cosine_to_baseline``: cosine distance from the chip's baseline embedding, the element-wise
  median of its first ``baseline_obs`` clear observations (a median, because one partly
  cloudy chip that passed the cloud filter would drag a mean far off);
- ``cosine_to_previous``: cosine distance from its previous clear observation;
- ``harmonic_deviation``: RMS over the first ``n_components`` principal components of the
  residual from a robust harmonic seasonal fit on the baseline, in units of the baseline
  residual scale (see ``clay_core.change.harmonic``);
- ``change_score``: robust z-score of ``cosine_to_baseline`` among the tile's chips on the same
  date, ``(d - median) / scale`` with ``scale = max(1.4826 * MAD, min_relative_scale * median)``:
  illumination and phenology shift every chip together, a clearing shifts a few; the
  relative floor keeps a near-uniform tile (tiny MAD) from turning small seasonal
  differences between land covers into huge scores;
- ``change_flag``: ``change_score > z_threshold`` and the distance is at least
  ``min_distance_factor`` times the typical scatter of baseline observations.

``clay_core.change.detector.detect_changes`` turns a chip's series into dated events with
persistence; this module gives the per-observation scores the vector table carries.

Everything a score needs from a chip's past is carried per chip in ``sc_`` columns of a
:class:`~clay_core.change.carry.ChipTable` (observation count, last observation, the baseline
summary: median embedding, baseline scatter, harmonic fit; the baseline observations
themselves only until a chip has ``baseline_obs`` of them), so :func:`score_window` reads no
earlier embeddings and runs in numpy over the window's chips.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from clay_core.change.carry import ChipTable
from clay_core.change.distances import cosine_distance
from clay_core.change.harmonic import _design_batch, _predict_batch, fit_harmonic_batch
from clay_core.change.params import ChangeParams
from clay_core.types import Observations

__all__ = ["COLUMNS", "score_columns", "score_window", "top_changed", "window_order"]

_BASE = ["sc_bvec", "sc_bns", "sc_bpc"]  # baseline observations of chips still collecting them


def _years(t: np.ndarray) -> np.ndarray:
    """Years since 1970 in Julian years (365.25 d): the time axis of the per-date harmonic fit."""
    return (t.astype("datetime64[s]").astype(np.int64) / (365.25 * 86400.0)).astype(np.float64)


COLUMNS = [
    "chip_id", "datetime", "n_history", "in_baseline", "cosine_to_baseline", "cosine_to_previous",
    "harmonic_deviation", "change_score", "change_flag",
]


def score_columns(dim: int, params: ChangeParams) -> dict[str, np.ndarray]:
    """Empty ``sc_`` columns for ``dim``-d embeddings."""
    K, P = params.n_components, 1 + 2 * params.n_harmonics
    return {
        "sc_n": np.zeros(0, np.int64), "sc_last": np.zeros((0, dim), np.float32),
        "sc_base_mean": np.zeros((0, dim), np.float32), "sc_scatter": np.zeros(0), "sc_h": np.zeros(0, np.int64),
        "sc_t0": np.zeros(0), "sc_coef": np.zeros((0, P, K)), "sc_rmse": np.zeros((0, K)),
        "sc_bvec": np.zeros((0, 0, dim), np.float32), "sc_bns": np.zeros((0, 0), np.int64),
        "sc_bpc": np.zeros((0, 0, K), np.float32),
    }


def window_order(obs: Observations) -> tuple[np.ndarray, np.ndarray]:
    """``(order, rank)``: the window's rows oldest first (stable), and each sorted row's
    position among its chip's rows in this window."""
    order = np.argsort(obs.datetime, kind="stable")
    ids = obs.chip_id[order].astype(str)
    by_chip = np.argsort(ids, kind="stable")
    rank = np.empty(len(ids), np.int64)
    first = np.r_[True, ids[by_chip][1:] != ids[by_chip][:-1]]
    starts = np.maximum.accumulate(np.where(first, np.arange(len(ids)), 0))
    rank[by_chip] = np.arange(len(ids)) - starts
    return order, rank


def _summarize(tab: ChipTable, rows: np.ndarray, vec: np.ndarray, ns: np.ndarray, pcs: np.ndarray,
               pos: np.ndarray, params: ChangeParams) -> None:
    """Baseline summaries of the window's chips that had fewer than ``baseline_obs``
    observations before it: their first ``baseline_obs`` observations, this window's included."""
    B, nb = params.baseline_obs, tab["sc_n"][rows]
    inc = np.unique(rows[nb < B])
    if not len(inc):
        return
    dim, K = vec.shape[1], pcs.shape[1]
    bv = np.zeros((len(inc), B, dim), np.float32)
    bt, bp = np.zeros((len(inc), B), np.int64), np.zeros((len(inc), B, K), np.float32)
    W = min(tab["sc_bvec"].shape[1], B)
    bv[:, :W], bt[:, :W], bp[:, :W] = tab["sc_bvec"][inc, :W], tab["sc_bns"][inc, :W], tab["sc_bpc"][inc, :W]
    take = (nb < B) & (pos < B)
    k = np.searchsorted(inc, rows[take])
    bv[k, pos[take]], bt[k, pos[take]], bp[k, pos[take]] = vec[take], ns[take], pcs[take]
    L = np.minimum(B, tab["sc_n"][inc] + np.bincount(k, minlength=len(inc)))
    for n in np.unique(L):
        g = np.flatnonzero(L == n)
        r = inc[g]
        mean = np.median(bv[g, :n], axis=1)
        tab["sc_base_mean"][r] = mean
        tab["sc_scatter"][r] = np.median(cosine_distance(bv[g, :n], mean[:, None]), axis=1) if n > 1 else np.nan
        fit = fit_harmonic_batch(_years(bt[g, :n].astype("datetime64[ns]")), bp[g, :n], params.n_harmonics)
        tab["sc_h"][r], tab["sc_t0"][r], tab["sc_rmse"][r] = fit.n_harmonics_used, fit.t0, fit.rmse
        tab["sc_coef"][r] = 0.0
        tab["sc_coef"][r, : fit.coef.shape[1]] = fit.coef
    still = L < B  # keep their observations for the next window; the others are summarized for good
    if still.any():
        width = int(L[still].max())
        tab.widen(_BASE, width)
        tab["sc_bvec"][inc[still], :width] = bv[still, :width]
        tab["sc_bns"][inc[still], :width] = bt[still, :width]
        tab["sc_bpc"][inc[still], :width] = bp[still, :width]


def _harmonic_deviation(tab: ChipTable, rows: np.ndarray, ns: np.ndarray, pcs: np.ndarray) -> np.ndarray:
    out = np.empty(len(rows))
    h_of = tab["sc_h"][rows]
    for h in np.unique(h_of):
        m = h_of == h
        g = rows[m]
        fit_coef = tab["sc_coef"][g, : 1 + 2 * int(h)]
        X = _design_batch(_years(ns[m].astype("datetime64[ns]"))[:, None], int(h), False, tab["sc_t0"][g])
        pred = _predict_batch(X, fit_coef)[:, 0]
        resid = (pcs[m] - pred) / np.maximum(tab["sc_rmse"][g], 1e-6)
        out[m] = np.sqrt(np.mean(resid**2, axis=1))
    return out


def score_window(tab: ChipTable, current: Observations, pcs: np.ndarray, params: ChangeParams) -> pd.DataFrame:
    """Scores of every observation in ``current`` (``pcs``: its first principal components,
    row-aligned) from the chips' carried ``sc_`` columns, which are advanced past the window.
    Rows come out in ``current``'s order."""
    order, rank = window_order(current)
    vec, ns, pc = current.vectors[order], current.datetime[order].astype(np.int64), pcs[order]
    rows = tab.rows(current.chip_id[order])
    pos = tab["sc_n"][rows] + rank
    _summarize(tab, rows, vec, ns, pc, pos, params)
    d_base = cosine_distance(vec, tab["sc_base_mean"][rows])
    prev = tab["sc_last"][rows].copy()
    by_chip = np.lexsort((rank, rows))  # a chip's observations of the window, oldest first
    later = by_chip[rank[by_chip] > 0]  # a second acquisition: its previous one is the first
    prev[later] = vec[by_chip[np.flatnonzero(rank[by_chip] > 0) - 1]]
    d_prev = cosine_distance(vec, prev)
    d_prev = np.where(pos > 0, d_prev, np.nan)
    dev = _harmonic_deviation(tab, rows, ns, pc)
    df = pd.DataFrame({"chip_id": current.chip_id[order].astype(str), "datetime": current.datetime[order],
                       "n_history": pos, "in_baseline": pos < params.baseline_obs, "cosine_to_baseline": d_base,
                       "cosine_to_previous": d_prev, "harmonic_deviation": dev})
    df["change_score"], df["change_flag"] = 0.0, False
    post = ~df["in_baseline"].to_numpy(bool)
    if post.sum() >= 3:
        scatter = tab["sc_scatter"][rows]
        scatter = scatter[~np.isnan(scatter)]
        d = d_base[post]
        med = np.median(d)
        mad = 1.4826 * np.median(np.abs(d - med))
        floor = params.min_distance_factor * (np.median(scatter) if len(scatter) else 0.0)
        z = (d - med) / max(mad, params.min_relative_scale * med, 1e-9)
        df.loc[post, "change_score"] = z
        df.loc[post, "change_flag"] = (z > params.z_threshold) & (d > floor)
    newest = by_chip[np.r_[rows[by_chip][1:] != rows[by_chip][:-1], True]]  # each chip's latest observation
    tab["sc_last"][rows[newest]] = vec[newest]
    np.add.at(tab["sc_n"], rows, 1)
    collecting = tab["sc_n"] < params.baseline_obs
    tab.narrow(_BASE, int(tab["sc_n"][collecting].max()) if collecting.any() else 0)
    out = df.iloc[np.argsort(order, kind="stable")].reset_index(drop=True)
    return out[COLUMNS]


def top_changed(scores: pd.DataFrame, n: int = 5) -> pd.DataFrame:
    """The ``n`` rows with the highest ``change_score``, highest first."""
    return scores.sort_values("change_score", ascending=False).head(n)

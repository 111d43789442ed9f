"""Shared pieces of ``change_eval.py``'s side-by-side arms: running our detector, scoring, the table.

Every arm reports :class:`Row`s with the same columns, so one table compares our detector with
nrt's monitors (EWMA, CuSum, MoSum, CCDC) and pyxccd's COLD.

Observation counts. All onset errors are in *observations of that series that are not missing*
(finite and clear): ``clear_index(valid)[i]`` is the number of valid observations before
position ``i``, so the error of a detection at ``d`` for an onset at ``o`` is
``clear_index[d] - clear_index[o]`` (a missing onset date counts as its next valid observation).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from clay_core.change import DetectorParams, detect_changes

try:  # the vectorized detector, when the installed clay_core has it
    from clay_core.change import detect_many as _detect_many  # type: ignore[attr-defined]
except ImportError:  # older clay_core: one series at a time
    _detect_many = None

__all__ = [
    "Row", "SimScore", "clear_index", "first_after", "format_table", "match_events", "ours_backend",
    "row_from_matches", "run_ours", "score_first_detection", "sim_row",
]


@dataclass
class Row:
    """One line of the side-by-side table (NaN = not applicable)."""

    arm: str
    config: str
    method: str
    n_series: int
    events: int
    tp: int
    fp: int
    fn: int
    precision: float
    recall: float
    f1: float
    err_median: float  # signed onset error, observations
    err_p90: float  # 90th percentile of |onset error|, observations
    fp_per_100: float  # false (or unconfirmed) events per 100 series
    s_per_1000: float  # seconds per 1,000 series
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


HEADER = ("arm", "config", "method", "n", "events", "prec", "recall", "F1", "err med", "err p90",
          "FP/100", "s/1000")


def _f(x: float, fmt: str) -> str:
    return "-" if x is None or not np.isfinite(x) else format(x, fmt)


def format_table(rows: Sequence[Row]) -> str:
    """Fixed-width text table of ``rows`` (one line each, notes below)."""
    cells = [HEADER] + [
        (r.arm, r.config, r.method, str(r.n_series), str(r.events), _f(r.precision, ".3f"), _f(r.recall, ".3f"),
         _f(r.f1, ".3f"), _f(r.err_median, ".1f"), _f(r.err_p90, ".1f"), _f(r.fp_per_100, ".1f"),
         _f(r.s_per_1000, ".2f"))
        for r in rows
    ]
    width = [max(len(c[i]) for c in cells) for i in range(len(HEADER))]
    lines = ["  ".join(c[i].ljust(width[i]) if i < 3 else c[i].rjust(width[i]) for i in range(len(c))) for c in cells]
    lines.insert(1, "-" * len(lines[0]))
    notes = [f"  [{r.arm} / {r.config} / {r.method}] {r.note}" for r in rows if r.note]
    return "\n".join(lines + (["notes:"] + notes if notes else []))


def _prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    p = tp / (tp + fp) if tp + fp else float("nan")
    r = tp / (tp + fn) if tp + fn else float("nan")
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")
    return p, r, f1


def _err_stats(errors: Sequence[int]) -> tuple[float, float]:
    if not len(errors):
        return float("nan"), float("nan")
    e = np.asarray(errors, dtype=float)
    return float(np.median(e)), float(np.quantile(np.abs(e), 0.9))


def clear_index(valid: np.ndarray) -> np.ndarray:
    """``[..., T]`` bool -> number of valid observations strictly before each position."""
    v = np.asarray(valid, dtype=np.int64)
    return np.cumsum(v, axis=-1) - v


# ------------------------------------------------------------------------------------------
# our detector


def ours_backend() -> str:
    return "detect_many" if _detect_many is not None else "detect_changes per series"


def run_ours(dates: Sequence[Any], values: np.ndarray, clear: np.ndarray | None,
             params: DetectorParams) -> tuple[list[list], float]:
    """Our detector on ``values`` [N, T] or [N, T, F] (NaN = missing): ``(events per series, seconds)``."""
    t0 = time.perf_counter()
    if _detect_many is not None:
        out = _detect_many(dates, values, clear=clear, params=params)
    else:
        out = [detect_changes(dates, values[i], None if clear is None else clear[i], params=params)
               for i in range(values.shape[0])]
    return [list(e) for e in out], time.perf_counter() - t0


def first_after(events: Sequence[Sequence[Any]], start: int) -> tuple[np.ndarray, np.ndarray]:
    """Per series, the first event dated at/after position ``start``: ``(confirmed_index,
    first_index)`` (-1 = none): when it was detected, and the onset it was dated to."""
    det = np.full(len(events), -1, dtype=np.int64)
    dated = np.full(len(events), -1, dtype=np.int64)
    for i, evs in enumerate(events):
        later = [e for e in evs if e.first_index >= start]
        if later:
            e = min(later, key=lambda e: e.first_index)
            det[i], dated[i] = e.confirmed_index, e.first_index
    return det, dated


# ------------------------------------------------------------------------------------------
# truth known: one onset (or none) per series, first detection counts


@dataclass
class SimScore:
    tp: int
    fp: int
    fn: int
    errors: list[int]
    fp_early: int = 0  # of fp: too early in an unstable series (the rest are in stable ones)


def score_first_detection(onset: np.ndarray, detected: np.ndarray, valid: np.ndarray, tol: int = 1,
                          dated: np.ndarray | None = None) -> SimScore:
    """Series-level scoring of each series' first detection in the monitoring period.

    Args:
        onset: [N] position of the first changed observation, -1 for a stable series.
        detected: [N] position of the method's first detection, -1 for none.
        valid: [N, T] non-missing observations (errors count these).
        tol: a detection up to ``tol`` valid observations before the onset still counts.
        dated: [N] the onset each detection was dated to, when the method dates onsets (ours:
            an event's ``first_index``; ``detected`` is then its ``confirmed_index``); the
            error is measured from it. Default: ``detected`` (nrt's monitors: their error is
            their detection delay).

    An unstable series is a TP if its first detection is at/after ``onset - tol`` valid
    observations (its signed error, from ``dated``, is then recorded); a detection in a stable
    series is a FP;
    a detection earlier than ``onset - tol`` in an unstable series is a FP *and* a FN (the
    change itself was not found: nrt's monitors stop at their first detection); no detection in
    an unstable series is a FN.
    """
    ci = clear_index(valid)
    dated = detected if dated is None else dated
    tp = fp = fn = early = 0
    errors: list[int] = []
    for i in range(len(onset)):
        o, d = int(onset[i]), int(detected[i])
        if o < 0:
            fp += d >= 0
            continue
        if d < 0:
            fn += 1
            continue
        if int(ci[i, d] - ci[i, o]) >= -tol:
            tp += 1
            errors.append(int(ci[i, int(dated[i])] - ci[i, o]))
        else:
            fp += 1
            fn += 1
            early += 1
    return SimScore(tp, fp, fn, errors, early)


def sim_row(arm: str, config: str, method: str, n: int, events: int, sc: SimScore, seconds: float,
            note: str = "") -> Row:
    p, r, f1 = _prf(sc.tp, sc.fp, sc.fn)
    med, p90 = _err_stats(sc.errors)
    if sc.fp:
        note = f"{note}; " * bool(note) + f"FP: {sc.fp - sc.fp_early} in stable series, {sc.fp_early} early"
    return Row(arm, config, method, n, events, sc.tp, sc.fp, sc.fn, p, r, f1, med, p90,
               100.0 * sc.fp / n if n else float("nan"), 1000.0 * seconds / n if n else float("nan"), note)


# ------------------------------------------------------------------------------------------
# reference events (COLD): many per series, matched one to one


def match_events(ref: Sequence[int], ours: Sequence[int], tol: int) -> list[tuple[int, int]]:
    """One-to-one matching of two sorted lists of clear-observation indices within ``+-tol``.

    Pairs are taken closest first (ties: earlier reference first). Returns ``(ref, ours)`` pairs.
    """
    cand = sorted((abs(o - r), r, o) for r in ref for o in ours if abs(o - r) <= tol)
    used_r: set[int] = set()
    used_o: set[int] = set()
    pairs = []
    for _, r, o in cand:
        if r not in used_r and o not in used_o:
            used_r.add(r)
            used_o.add(o)
            pairs.append((r, o))
    return sorted(pairs)


def row_from_matches(arm: str, config: str, method: str, ref: Sequence[Sequence[int]],
                     ours: Sequence[Sequence[int]], seconds: float, tol: int = 1, err_window: int = 6,
                     note: str = "") -> Row:
    """Our events vs reference events, per series (clear-observation indices).

    TP = reference events matched within ``+-tol``; precision = TP / our events, recall = TP /
    reference events, ``fp_per_100`` = our events the reference does not confirm per 100
    series. Onset errors (ours - reference) come from a second matching within
    ``+-err_window`` so that they say how far off the near misses are.
    """
    n = len(ref)
    tp = n_ref = n_ours = 0
    errors: list[int] = []
    for r, o in zip(ref, ours):
        n_ref += len(r)
        n_ours += len(o)
        tp += len(match_events(r, o, tol))
        errors.extend(b - a for a, b in match_events(r, o, err_window))
    p, rc, f1 = _prf(tp, n_ours - tp, n_ref - tp)
    med, p90 = _err_stats(errors)
    return Row(arm, config, method, n, n_ours, tp, n_ours - tp, n_ref - tp, p, rc, f1, med, p90,
               100.0 * (n_ours - tp) / n if n else float("nan"), 1000.0 * seconds / n if n else float("nan"), note)

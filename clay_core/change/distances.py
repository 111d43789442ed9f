"""Cosine distances between embeddings: to a baseline centroid and to the previous observation.

These are the simple, model-free companions of the harmonic detector: ``1 - cos`` is
insensitive to overall brightness, so illumination changes move it little.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["cosine_distance", "distances_to_baseline", "distances_to_previous"]


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

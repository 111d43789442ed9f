"""Integrity checks that refuse damaged data before it is trusted or replaces good data.

Damage rarely raises by itself: zarr reads a missing chunk as its fill value, and NaN
propagates through every later stage. These checks turn it into a :class:`DamagedDataError`
that names the file and says how to repair it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from clay_core.errors import ClayError

__all__ = ["DamagedDataError", "nonfinite_rows", "check_finite", "check_distinct"]


class DamagedDataError(ClayError):
    """Stored data is incomplete or corrupt (a missing chunk, a missing band, NaN vectors)."""


def nonfinite_rows(vectors: np.ndarray) -> np.ndarray:
    """Indexes of the rows of ``vectors`` [n, dim] holding a NaN or an infinity."""
    v = np.asarray(vectors)
    if v.ndim < 2:
        return np.flatnonzero(~np.isfinite(v))
    return np.flatnonzero(~np.isfinite(v.reshape(len(v), -1)).all(axis=1))


def check_finite(vectors: np.ndarray, ids: Sequence[str], where: str, fix: str) -> None:
    """DamagedDataError naming the first rows of ``vectors`` that are not finite."""
    bad = nonfinite_rows(vectors)
    if len(bad):
        names = [str(ids[i]) for i in bad[:5]]
        raise DamagedDataError(f"{where}: {len(bad)} of {len(vectors)} embeddings are not finite "
                               f"(NaN or inf), e.g. {names}; {fix}")


def check_distinct(vectors: np.ndarray, ids: Sequence[str], where: str, fix: str) -> None:
    """DamagedDataError when two rows of ``vectors`` are identical: different chips never embed
    to the same vector, the same input read twice (or a zero-filled read) does."""
    v = np.ascontiguousarray(np.asarray(vectors))
    if len(v) < 2:
        return
    _, first, counts = np.unique(v.reshape(len(v), -1), axis=0, return_index=True, return_counts=True)
    if (counts > 1).any():
        dup = first[counts > 1][0]
        same = [str(ids[i]) for i in range(len(v)) if np.array_equal(v[i], v[dup])]
        raise DamagedDataError(f"{where}: {int((counts - 1).sum())} embeddings duplicate another chip's "
                               f"exactly, e.g. {same[:5]}: the inputs were read wrongly; {fix}")

"""Scene-sized numpy arrays: allocation that avoids transparent-huge-page stalls, and a
cheap "does this value occur" test."""

from __future__ import annotations

import numpy as np

__all__ = ["LARGE_ARRAY_BYTES", "POPULATE", "large_empty", "has_value"]

#: Arrays at least this big are allocated with an anonymous ``mmap`` (see large_empty).
LARGE_ARRAY_BYTES = 32 << 20
#: Map the pages of large arrays up front (Linux MAP_POPULATE: one kernel pass instead of a
#: fault per 4 KiB page, about half the CPU time of touching them one by one).
POPULATE = True


def large_empty(shape, dtype) -> np.ndarray:
    """``np.empty`` for scene-sized arrays, backed by an anonymous ``mmap``.

    numpy asks for transparent huge pages on big allocations (``MADV_HUGEPAGE``); where
    the kernel then has to assemble and zero 2 MiB pages on first touch (THP
    ``defrag=madvise``, fragmented memory, VMs), filling a fresh 1 GB array took 1.5-3 s
    against ~0.4 s with ordinary pages (docs/chipping.md). The memory is returned when the
    array (its last view) goes away."""
    dt = np.dtype(dtype)
    n = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
    if n < LARGE_ARRAY_BYTES:
        return np.empty(shape, dt)
    import mmap

    kw = {}
    if hasattr(mmap, "MAP_PRIVATE"):  # private (not shared with forks), pages mapped up front
        kw["flags"] = mmap.MAP_PRIVATE | (getattr(mmap, "MAP_POPULATE", 0) if POPULATE else 0)
    return np.frombuffer(mmap.mmap(-1, n, **kw), dt).reshape(shape)


def has_value(a: np.ndarray, value: float | int) -> bool:
    """Whether any element of ``a`` equals ``value`` (a ``min`` pass for 0 in unsigned data,
    no boolean temporary)."""
    if a.size == 0:
        return False
    if a.dtype.kind == "u" and value == 0:
        return bool(a.min() == 0)
    return bool((a == value).any())

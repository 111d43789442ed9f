"""A rows frame and its embeddings, validated and turned into binary COPY columns.

Everything wrong with the input is a ConfigError raised before anything is sent: missing
required columns, NaN bounds, zero or non-finite embeddings (cosine similarity is undefined),
rows of another partition, (chip_id, acquired) pairs given twice, values halfvec cannot hold.
Missing ``lon``/``lat`` are the centre of the bounds.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from clay_core.errors import ConfigError
from clay_core.vectordb.pgcopy import CopyColumn
from clay_core.vectordb.rows import COLS, ROW_COLUMNS

__all__ = ["HALF_MAX", "copy_columns", "cosine_defined", "to_float16"]

HALF_MAX = 65504.0  # the largest finite float16


def copy_columns(partition_key: str, rows: pd.DataFrame, embeddings: np.ndarray,
                 dim: int, storage: str = "vector") -> list[CopyColumn]:
    """Validate the frame; return the COPY columns (ROW_COLUMNS, embedding), none for no rows."""
    emb = _checked_embeddings(partition_key, rows, embeddings, dim)
    if emb is None:
        return []
    if storage == "halfvec":
        _check_half_range(emb, rows)
    n = len(rows)
    cols = {name: _frame_column(rows, name, typ, required, n, partition_key)
            for name, typ, required in ROW_COLUMNS}
    _check_bounds_fill_centres(cols)
    _check_unique(cols, n)
    vec = CopyColumn("embedding", storage, to_float16(emb) if storage == "halfvec" else emb)
    return [cols[c] for c in COLS] + [vec]


def _checked_embeddings(partition_key: str, rows: pd.DataFrame, embeddings: np.ndarray,
                        dim: int) -> np.ndarray | None:
    """float32 [len(rows), dim] embeddings, every one finite and non-zero; None for no rows."""
    if not isinstance(partition_key, str) or not partition_key:
        raise ConfigError(f"partition_key must be a non-empty string, got {partition_key!r}")
    if not isinstance(rows, pd.DataFrame):
        raise ConfigError(f"rows must be a pandas DataFrame, got {type(rows).__name__}")
    emb = np.asarray(embeddings)
    n = len(rows)
    if n == 0 and emb.size == 0:
        return None
    if emb.ndim != 2 or emb.shape != (n, dim):
        raise ConfigError(
            f"embeddings must be float32 [len(rows), {dim}] = [{n}, {dim}], got shape "
            f"{tuple(emb.shape)}"
        )
    missing = [c for c, _, req in ROW_COLUMNS if req and c not in rows.columns]
    if missing:
        raise ConfigError(f"rows is missing required column(s) {missing}; has {list(rows.columns)}")
    emb = emb.astype(np.float32, copy=False)
    bad = np.flatnonzero(~cosine_defined(emb))
    if bad.size:
        ids = rows["chip_id"].iloc[bad[:5]].tolist()
        raise ConfigError(
            f"{bad.size} embedding(s) are zero, not finite, or too large or small for float32 "
            f"(cosine similarity is undefined), e.g. chips {ids}"
        )
    return emb


def cosine_defined(emb: np.ndarray) -> np.ndarray:
    """Per row of float32 ``emb`` [n, dim]: whether pgvector's cosine distance is a number.
    pgvector sums the squares in float32: a zero vector, or one whose squared norm under- or
    overflows float32 (|x| ~ 1e-23 or 1e19), gives NaN similarities."""
    emb = np.asarray(emb, dtype=np.float32).reshape(len(emb), -1)
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        sq = np.einsum("ij,ij->i", emb, emb, dtype=np.float32)
    return np.isfinite(emb).all(axis=1) & np.isfinite(sq) & (sq > 0)


def _check_half_range(emb: np.ndarray, rows: pd.DataFrame) -> None:
    if emb.max() > HALF_MAX or emb.min() < -HALF_MAX:
        big = np.flatnonzero(np.abs(emb).max(axis=1) > HALF_MAX)
        if big.size:
            raise ConfigError(
                f"{big.size} embedding(s) have values beyond the float16 range (|x| > 65504) "
                f"that halfvec storage cannot hold, e.g. chips "
                f"{rows['chip_id'].iloc[big[:5]].tolist()}; use storage='vector'"
            )


def _frame_column(rows: pd.DataFrame, name: str, typ: str, required: bool, n: int,
                  partition_key: str) -> CopyColumn:
    """Column ``name`` of ``rows`` converted to the COPY values of its postgres type ``typ``."""
    present = name in rows.columns
    s = rows[name] if present else None
    if name == "partition_key":
        if present:
            vals = _text_column(s, name, False)
            wrong = sorted({v for v in vals if v is not None and v != partition_key})
            if wrong:
                raise ConfigError(
                    f"rows.partition_key has {wrong[:3]} but partition {partition_key!r} is "
                    "being loaded; every row must belong to that partition"
                )
        values: Any = [partition_key] * n
    elif not present:  # optional column: all NULL (lon/lat are filled from the bounds)
        values = {"float8": np.full(n, np.nan), "timestamptz": np.full(n, "NaT", "datetime64[us]"),
                  "bool": np.zeros(n, bool)}.get(typ, [None] * n)
        return CopyColumn(name, typ, values, null=np.ones(n, bool) if typ == "bool" else None)
    elif typ == "text":
        values = _text_column(s, name, required)
    elif typ == "date":
        values = _date_array(s, name)
    elif typ == "timestamptz":
        try:
            t = pd.to_datetime(s, utc=True)  # naive values are taken as UTC
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"rows.{name} must hold timestamps: {exc}") from None
        values = t.dt.tz_localize(None).to_numpy(dtype="datetime64[us]")
    elif typ == "float8":
        values = _float_array(s, name)
        if required and not np.isfinite(values).all():
            raise ConfigError(f"rows.{name} must be finite numbers (chip bounds, WGS84)")
    elif typ == "bool" and s.dtype == bool:
        values = s.to_numpy()
    elif typ == "bool":
        isna = s.isna().to_numpy()
        return CopyColumn(name, typ, s.where(~isna, False).astype(bool).to_numpy(), null=isna)
    else:  # pragma: no cover - ROW_COLUMNS is fixed
        raise AssertionError(typ)
    return CopyColumn(name, typ, values)


def _check_bounds_fill_centres(cols: dict[str, CopyColumn]) -> None:
    """Bounds must be ordered; NULL lon/lat become the centre of the bounds."""
    w, so, e, no = (np.asarray(cols[c].values, dtype=np.float64)
                    for c in ("west", "south", "east", "north"))
    if (w > e).any() or (so > no).any():
        i = int(np.flatnonzero((w > e) | (so > no))[0])
        raise ConfigError(
            f"chip {cols['chip_id'].values[i]} has bounds west={w[i]} south={so[i]} east={e[i]} "
            f"north={no[i]}; need west <= east and south <= north"
        )
    for name, centre in (("lon", (w + e) / 2), ("lat", (so + no) / 2)):
        a = np.asarray(cols[name].values, dtype=np.float64)
        cols[name] = CopyColumn(name, "float8", np.where(np.isnan(a), centre, a))


def _check_unique(cols: dict[str, CopyColumn], n: int) -> None:
    """One row per (chip_id, acquired)."""
    codes, _ = pd.factorize(np.asarray(cols["chip_id"].values, dtype=object))
    days = cols["acquired"].values.astype(np.int64)
    pair = codes.astype(np.int64) * (1 << 32) + (days - days.min())
    if len(np.unique(pair)) < n:
        key = pd.DataFrame({"c": cols["chip_id"].values, "a": cols["acquired"].values})
        dup = key.duplicated(keep=False).to_numpy()
        ex = key[dup].head(3).astype(str).values.tolist()
        raise ConfigError(
            f"rows has {int(dup.sum())} rows sharing (chip_id, acquired), e.g. {ex}; one row per "
            "chip observation is allowed"
        )


def _text_column(s: pd.Series, name: str, required: bool) -> list:
    vals = s.tolist()
    if not s.hasnans:  # the common case, without a per-value NA test
        return vals if all(map(str.__instancecheck__, vals)) else list(map(str, vals))
    isna = s.isna().to_numpy()
    if required:
        raise ConfigError(f"rows.{name} has {int(isna.sum())} missing values; every row needs one")
    return [None if na else str(v) for v, na in zip(vals, isna)]


def _float_array(s: pd.Series, name: str) -> np.ndarray:
    if s.dtype == np.float64:
        return s.to_numpy()
    try:
        return pd.to_numeric(s, errors="raise").to_numpy(dtype=np.float64, na_value=np.nan)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"rows.{name} must be numeric: {exc}") from None


def _date_array(s: pd.Series, name: str) -> np.ndarray:
    vals = s.tolist()
    if vals and vals.count(vals[0]) == len(vals):  # one acquisition date: convert it once
        s = s.iloc[:1]
    try:
        d = pd.to_datetime(s)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"rows.{name} must hold dates: {exc}") from None
    if d.isna().any():
        raise ConfigError(f"rows.{name} has missing values; every row needs a date")
    if getattr(d.dt, "tz", None) is not None:
        d = d.dt.tz_localize(None)  # the local calendar date of an aware timestamp
    out = d.to_numpy(dtype="datetime64[D]")
    return np.repeat(out, len(vals)) if len(out) < len(vals) else out


def to_float16(a: np.ndarray) -> np.ndarray:
    """``a`` as float16, converted in blocks on this thread (see below)."""
    # numpy's float32 -> float16 cast is scalar code (~1.2 us per 768-d row); torch's is SIMD
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency of the package
        return a.astype(np.float16)
    src = torch.from_numpy(np.ascontiguousarray(a))
    out = np.empty(a.shape, np.float16)
    dst = torch.from_numpy(out)
    # blocks under torch's parallel grain size (32768 elements) run on this thread only: a
    # thread pool spinning up next to the COPY would take the CPU the server needs
    step = max(1, 32768 // max(1, a.shape[-1]))
    for i in range(0, len(a), step):
        dst[i:i + step].copy_(src[i:i + step])
    return out

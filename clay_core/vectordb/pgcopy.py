"""PostgreSQL binary ``COPY`` encoding for columnar data, built with numpy.

psycopg's ``Copy.write_row`` costs a few microseconds of Python per row and per field; a
768-d embedding row then spends more time in the client than in the server.  Here each
column is encoded for a whole chunk of rows at once: fixed-width columns (numbers, dates,
booleans, vectors) become one numpy structured array, text columns one list of
length-prefixed byte strings, and rows are stitched together by ``bytes.join`` in C.

Format reference: PostgreSQL docs, "COPY" -> "Binary Format"; pgvector's ``vector_recv`` /
``halfvec_recv`` (int16 dim, int16 unused, then dim big-endian float4 / float2).
"""

from __future__ import annotations

import codecs
import operator
import struct
from dataclasses import dataclass
from itertools import chain
from typing import Any, Iterator, Sequence

import numpy as np

HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
TRAILER = struct.pack(">h", -1)
_NULL = struct.pack(">i", -1)
_PACK_I4 = struct.Struct(">i").pack
_PG_EPOCH_DAYS = np.datetime64("2000-01-01", "D")
_PG_EPOCH_US = np.datetime64("2000-01-01T00:00:00", "us")

# fixed-width types: big-endian numpy dtype of the value
_FIXED = {
    "bool": np.dtype("u1"),
    "int2": np.dtype(">i2"),
    "int4": np.dtype(">i4"),
    "int8": np.dtype(">i8"),
    "float4": np.dtype(">f4"),
    "float8": np.dtype(">f8"),
    "date": np.dtype(">i4"),
    "timestamptz": np.dtype(">i8"),
}
_VECTORS = {"vector": np.dtype(">f4"), "halfvec": np.dtype(">f2")}
TYPES = frozenset(_FIXED) | frozenset(_VECTORS) | {"text"}


@dataclass(frozen=True)
class CopyColumn:
    """One column of a binary COPY.

    ``values``: a sequence of ``str``/``None`` for text; a 2-D float array for vector/halfvec;
    else a 1-D array (``date``: datetime64 or date objects, ``timestamptz``: UTC datetime64).
    ``null``: optional boolean mask of NULLs (NaN / NaT are NULL too).
    """

    name: str
    pgtype: str
    values: Any
    null: np.ndarray | None = None


class BinaryCopy:
    """Rows of ``columns`` as binary COPY data: ``names`` gives the COPY column list (fixed-width
    columns first, then text and nullable ones), ``chunks()`` the bytes to write."""

    def __init__(self, columns: Sequence[CopyColumn], encoding: str = "utf-8"):
        if not columns:
            raise ValueError("BinaryCopy needs at least one column")
        lengths = {c.name: len(c.values) for c in columns}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"columns differ in length: {lengths}")
        self.n = next(iter(lengths.values()))
        self.encoding = codecs.lookup(encoding).name  # the connection's client_encoding
        fixed, tails = [], []
        for c in columns:
            if c.pgtype not in TYPES:
                raise ValueError(f"column {c.name}: unsupported type {c.pgtype!r}; "
                                 f"supported: {sorted(TYPES)}")
            if c.pgtype == "text":
                values = list(c.values)
                enc = _uniform_text(values, encoding)
                if enc is None:
                    tails.append(CopyColumn(c.name, c.pgtype, values))
                else:  # every value has the same byte length: a fixed-width field
                    fixed.append((c, enc))
                continue
            arr, null = _fixed_values(c)
            if c.pgtype in _VECTORS and null is not None and null.any():
                raise ValueError(f"column {c.name}: {c.pgtype} values cannot be NULL")
            if null is not None and null.all():
                tails.append(CopyColumn(c.name, "null", None))
            elif null is not None and null.any():
                tails.append(CopyColumn(c.name, c.pgtype, arr, null))
            else:
                fixed.append((c, arr))
        self._fixed = fixed
        self._tails = tails
        self.names = [c.name for c, _ in fixed] + [c.name for c in tails]
        fields = [("nf", ">i2")]
        for i, (c, arr) in enumerate(fixed):
            fields.append((f"l{i}", ">i4"))
            if c.pgtype in _VECTORS:
                fields += [(f"d{i}", ">i2"), (f"u{i}", ">i2"),
                           (f"v{i}", _VECTORS[c.pgtype], (arr.shape[1],))]
            elif c.pgtype == "text":
                fields.append((f"v{i}", arr.dtype))
            else:
                fields.append((f"v{i}", _FIXED[c.pgtype]))
        self._dtype = np.dtype(fields)

    def chunks(self, rows_per_chunk: int = 2048) -> Iterator[bytes]:
        """The COPY stream: header + rows in chunks of ``rows_per_chunk`` + trailer."""
        yield HEADER
        for a in range(0, self.n, rows_per_chunk):
            yield self._encode(a, min(a + rows_per_chunk, self.n))
        yield TRAILER

    def to_bytes(self) -> bytes:
        return b"".join(self.chunks())

    def _encode(self, a: int, b: int) -> bytes:
        n = b - a
        rec = np.empty(n, self._dtype)
        rec["nf"] = len(self._fixed) + len(self._tails)
        for i, (c, arr) in enumerate(self._fixed):
            part = arr[a:b]
            if c.pgtype in _VECTORS:
                dim = arr.shape[1]
                rec[f"l{i}"] = 4 + dim * _VECTORS[c.pgtype].itemsize
                rec[f"d{i}"] = dim
                rec[f"u{i}"] = 0
            elif c.pgtype == "text":
                rec[f"l{i}"] = arr.dtype.itemsize
            else:
                rec[f"l{i}"] = _FIXED[c.pgtype].itemsize
            rec[f"v{i}"] = part
        if not self._tails:
            return rec.tobytes()
        width = self._dtype.itemsize
        pieces = [_split(rec.view(np.uint8), width, n)]
        pieces += [_tail(c, a, b, self.encoding) for c in self._tails]
        return b"".join(chain.from_iterable(zip(*pieces)))


def _uniform_text(vals: list, encoding: str) -> np.ndarray | None:
    """Encoded text values as a fixed-width bytes array when all have one byte length and none
    is NULL (chip ids, tile ids, partition keys usually do); else None."""
    if not vals or None in vals:
        return None
    if vals.count(vals[0]) == len(vals):
        e = _encode(vals[0], encoding)
        return np.full(len(vals), e, dtype=f"S{len(e)}") if e else None
    enc = [_encode(v, encoding) for v in vals] if encoding != "utf-8" else list(map(str.encode, vals))
    n = len(enc[0])
    if n == 0 or len(set(map(len, enc))) != 1:
        return None
    return np.array(enc, dtype=f"S{n}")


def _encode(v: str, encoding: str) -> bytes:
    try:
        return v.encode(encoding)
    except UnicodeEncodeError as exc:
        raise ValueError(f"text {v!r} cannot be sent in the connection's encoding {encoding}: "
                         f"{exc.reason}; use a UTF8 database") from None


def _fixed_values(c: CopyColumn) -> tuple[np.ndarray, np.ndarray | None]:
    """Column values in the wire representation (before the byte-order cast) + NULL mask."""
    null = None if c.null is None else np.asarray(c.null, dtype=bool)
    if c.pgtype in _VECTORS:
        arr = np.asarray(c.values)
        if arr.ndim != 2:
            raise ValueError(f"column {c.name}: {c.pgtype} values must be 2-D, got {arr.shape}")
        if arr.shape[1] > 16000:
            raise ValueError(f"column {c.name}: {arr.shape[1]} dimensions (max 16000)")
        return arr, null
    if c.pgtype == "date":
        d = np.asarray(c.values, dtype="datetime64[D]")
        nat = np.isnat(d)
        arr = (d - _PG_EPOCH_DAYS).astype(np.int64)
    elif c.pgtype == "timestamptz":
        t = np.asarray(c.values, dtype="datetime64[us]")
        nat = np.isnat(t)
        arr = (t - _PG_EPOCH_US).astype(np.int64)
    else:
        arr = np.asarray(c.values)
        nat = np.isnan(arr) if arr.dtype.kind == "f" else np.zeros(len(arr), bool)
        if c.pgtype == "bool":
            arr = arr.astype(bool)
        elif c.pgtype in ("int2", "int4", "int8") and arr.size:
            info = np.iinfo(_FIXED[c.pgtype].newbyteorder("="))
            if arr.dtype.kind not in "iub" or arr.min() < info.min or arr.max() > info.max:
                raise ValueError(f"column {c.name}: values do not fit {c.pgtype} "
                                 f"([{info.min}, {info.max}])")
    if nat.any():
        null = nat if null is None else (null | nat)
    if null is not None:
        arr = np.where(null, 0, arr)
    return arr, null


def _tail(c: CopyColumn, a: int, b: int, encoding: str = "utf-8") -> list:
    """Length-prefixed field bytes of rows a..b of a text, NULL or nullable column."""
    if c.pgtype == "null":
        return [_NULL] * (b - a)
    if c.pgtype == "text":
        vals = c.values[a:b]
        if not isinstance(vals, list):
            vals = list(vals)
        if vals and vals.count(vals[0]) == len(vals):  # constant column (tile, model id...)
            return [_text_field(vals[0], encoding)] * len(vals)
        if None in vals or encoding != "utf-8":
            return [_text_field(v, encoding) for v in vals]
        # map() over builtins keeps the per-row work in C
        enc = list(map(str.encode, vals))
        return list(map(operator.add, map(_PACK_I4, map(len, enc)), enc))
    dt = _FIXED[c.pgtype]
    rec = np.empty(b - a, np.dtype([("l", ">i4"), ("v", dt)]))
    rec["l"] = dt.itemsize
    rec["v"] = c.values[a:b]
    width = rec.dtype.itemsize
    rows = _split(rec.tobytes(), width, b - a)
    return [_NULL if m else r for r, m in zip(rows, c.null[a:b].tolist())]


def _text_field(v: str | None, encoding: str = "utf-8") -> bytes:
    if v is None:
        return _NULL
    e = _encode(v, encoding)
    return _PACK_I4(len(e)) + e


def _split(buf, width: int, n: int) -> list:
    """n memoryview slices of ``width`` bytes (slicing via map() runs in C)."""
    mv = memoryview(buf)
    return list(map(mv.__getitem__, map(slice, range(0, n * width, width),
                                        range(width, (n + 1) * width, width))))

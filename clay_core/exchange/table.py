"""The exchanged table: every column of ``clay.observations`` but ``loaded_at``, one row per chip
observation, plus its footprint and its embedding.

Read from the database over a binary cursor, so float8 values and vector/halfvec components
arrive as the server stores them (no decimal round trip); halfvec components are widened to
float32 exactly.  Rows are ordered by tile, chip_id, acquired.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np
import pandas as pd

from clay_core.errors import ConfigError
from clay_core.vectordb.rows import COLS, ROW_COLUMNS

if TYPE_CHECKING:
    from clay_core.vectordb.store import VectorStore

__all__ = ["COLUMNS", "KEY", "check_rows", "read_observations", "typed_frame"]

#: the exchanged columns besides geometry and embedding, in order (ROW_COLUMNS)
COLUMNS = list(COLS)
#: one row per chip observation
KEY = ["chip_id", "acquired"]
_TYPES = {c: t for c, t, _ in ROW_COLUMNS}


def read_observations(store: "VectorStore",
                      tiles: Sequence[str] | None = None) -> tuple[pd.DataFrame, np.ndarray]:
    """(rows with :data:`COLUMNS`, float32 embeddings [n, dim]) of ``clay.observations``,
    optionally only ``tiles``; ordered by tile, chip_id, acquired."""
    store._register_types()
    tiles = [tiles] if isinstance(tiles, str) else tiles
    where = "" if tiles is None else " WHERE tile = ANY(%s)"
    with store._errors("reading clay.observations for export"):
        cur = store._conn.cursor(binary=True)  # exact floats: no text round trip
        cur.execute(f"SELECT {', '.join(COLUMNS)}, embedding FROM clay.observations{where} "
                    "ORDER BY tile, chip_id, acquired",
                    None if tiles is None else ([str(t).strip().upper() for t in tiles],))
        rows = cur.fetchall()
    dim = store.table_dim() or store.dim
    emb = np.zeros((len(rows), dim), np.float32)
    for i, r in enumerate(rows):
        emb[i] = r[-1].to_numpy()  # Vector: float32; HalfVector: float16, widened exactly
    frame = pd.DataFrame([r[:-1] for r in rows], columns=COLUMNS)
    return typed_frame(frame), emb


def typed_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with each column in the pandas type that carries its Postgres type and NULLs:
    text -> object (None), date -> python dates, timestamptz -> datetime64[us, UTC] (NaT),
    float8 -> float64 (NaN), bool -> pandas ``boolean`` (NA)."""
    out = {}
    for c in COLUMNS:
        s = frame[c] if c in frame.columns else pd.Series([None] * len(frame), index=frame.index)
        t = _TYPES[c]
        if t == "text":
            out[c] = s.astype(object).where(s.notna(), None)
        elif t == "date":
            out[c] = pd.to_datetime(s).dt.date if len(s) else s.astype(object)
        elif t == "timestamptz":
            out[c] = pd.to_datetime(s, utc=True).astype("datetime64[us, UTC]")
        elif t == "float8":
            out[c] = pd.to_numeric(s, errors="coerce").astype(np.float64)
        else:
            out[c] = s.astype("boolean")
    return pd.DataFrame(out, index=frame.index)


def check_rows(frame: pd.DataFrame, emb: np.ndarray, where: str) -> None:
    """ConfigError unless ``frame``/``emb`` are an exchange table: the required columns, one
    row per (chip_id, acquired), a partition_key on every row, finite non-zero float32
    embeddings of one dimension.  ``where`` names the file in the message."""
    from clay_core.vectordb.columns import cosine_defined

    missing = [c for c, _, req in ROW_COLUMNS if (req or c == "partition_key") and c not in frame.columns]
    if missing:
        raise ConfigError(f"{where} lacks column(s) {missing}; it is not a clay-assets export "
                          "(clay-assets export writes them)")
    dup = frame.duplicated(KEY, keep=False).to_numpy()
    if dup.any():
        ex = frame.loc[dup, KEY].head(3).astype(str).values.tolist()
        raise ConfigError(f"{where} has {int(dup.sum())} rows sharing (chip_id, acquired), e.g. "
                          f"{ex}; an export holds one row per chip observation: remove the duplicates")
    if frame["partition_key"].isna().any():
        raise ConfigError(f"{where}: {int(frame['partition_key'].isna().sum())} rows have no "
                          "partition_key (tile x week, e.g. 2024-01-01|31UFU); every row needs one")
    if emb.ndim != 2 or len(emb) != len(frame):
        raise ConfigError(f"{where}: {len(frame)} rows but embeddings of shape {emb.shape}")
    bad = np.flatnonzero(~cosine_defined(emb)) if len(emb) else np.zeros(0, int)
    if bad.size:
        raise ConfigError(f"{where}: {bad.size} embedding(s) are zero or not finite, e.g. "
                          f"{frame['chip_id'].iloc[bad[:3]].tolist()}; refusing to import them")

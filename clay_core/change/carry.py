"""What a change partition carries to the next window: one row per chip, one array per column.

The per-date scores, the persistent-change detector and the PC1 plots each need a little per
chip from the chip's past (the detector's state, the baseline summary, the last clear
observation, a short PC1 series). :class:`ChipTable` holds it as plain numpy columns
(``[chip, ...]``, chips sorted by id) and is written as ``carry.npz`` inside the change
partition, in the same atomic directory as ``scores.parquet``, with ``carry.json`` naming
the PCA basis, the parameters and the window it includes. The next window reads only that
(never older embeddings), so scoring a partition costs the same at week 4 and week 104.

Columns are grouped by prefix: ``det_`` (:mod:`clay_core.change.batch_detector`), ``sc_``
(:mod:`clay_core.change.scores`), ``ser_`` (PC1 series for the plots). Variable-length
per-chip lists (a baseline being collected, a pending run) are padded columns with a count.
New rows get NaN (floats), 0 (integers) or False.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "CARRY_FILE", "CARRY_FORMAT", "CARRY_HEADER", "CarryHeader", "ChipTable", "load_carry", "read_header", "save_carry",
]

CARRY_FILE = "carry.npz"
CARRY_HEADER = "carry.json"
CARRY_FORMAT = 2  # bump when the columns change meaning: older carries are then replayed


def _blank(dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    if np.issubdtype(dtype, np.floating):
        return np.full(shape, np.nan, dtype)
    return np.zeros(shape, dtype)


class ChipTable:
    """Per-chip columns: ``chip_id [C]`` (sorted) and ``cols[name] [C, ...]``."""

    def __init__(self, chip_id: np.ndarray, cols: dict[str, np.ndarray]):
        self.chip_id = np.asarray(chip_id, dtype=object)
        self.cols = cols

    def __len__(self) -> int:
        return len(self.chip_id)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.cols[name]

    def __setitem__(self, name: str, value: np.ndarray) -> None:
        self.cols[name] = value

    def rows(self, chip_ids: np.ndarray) -> np.ndarray:
        """Row of each of ``chip_ids``, adding blank rows (kept sorted) for chips not seen yet."""
        ids = np.asarray(chip_ids).astype(str)
        new = np.setdiff1d(np.unique(ids), self.chip_id.astype(str))
        if len(new):
            ids_all = np.concatenate([self.chip_id.astype(str), new])
            order = np.argsort(ids_all, kind="stable")
            for k, a in self.cols.items():
                grown = np.concatenate([a, _blank(a.dtype, (len(new), *a.shape[1:]))])
                self.cols[k] = np.ascontiguousarray(grown[order])
            self.chip_id = ids_all[order].astype(object)
        return np.searchsorted(self.chip_id.astype(str), ids)

    def widen(self, names: list[str], width: int) -> None:
        """Pad axis 1 of ``names`` to at least ``width`` (blank-filled)."""
        for k in names:
            a = self.cols[k]
            if a.shape[1] < width:
                pad = _blank(a.dtype, (a.shape[0], width - a.shape[1], *a.shape[2:]))
                self.cols[k] = np.ascontiguousarray(np.concatenate([a, pad], axis=1))

    def narrow(self, names: list[str], width: int) -> None:
        """Cut axis 1 of ``names`` to ``width`` (entries beyond every chip's count)."""
        for k in names:
            self.cols[k] = np.ascontiguousarray(self.cols[k][:, :width])

    def copy(self) -> ChipTable:
        return ChipTable(self.chip_id.copy(), {k: v.copy() for k, v in self.cols.items()})

    def equals(self, other: ChipTable) -> bool:
        """Same chips and bit-identical columns (NaN equal to NaN)."""
        if list(self.chip_id) != list(other.chip_id) or set(self.cols) != set(other.cols):
            return False
        return all(self.cols[k].shape == other.cols[k].shape
                   and self.cols[k].tobytes() == other.cols[k].tobytes() for k in self.cols)


@dataclass(frozen=True)
class CarryHeader:
    """What a carry was made with: it is only continued under the same basis and parameters."""

    pca_version: int
    params: dict[str, Any]  # ChangeParams as JSON-safe data, detector included
    window: str  # the last window it includes
    windows_with_obs: int  # windows with observations it includes
    format: int = CARRY_FORMAT

    def continues(self, pca_version: int, params: dict[str, Any]) -> bool:
        return self.format == CARRY_FORMAT and self.pca_version == pca_version and self.params == params


def save_carry(directory: Path, table: ChipTable, header: CarryHeader) -> tuple[Path, Path]:
    """Write ``carry.npz`` (uncompressed: embeddings do not compress) and ``carry.json``."""
    directory = Path(directory)
    arrays = {f"col_{k}": v for k, v in table.cols.items()}
    with open(directory / CARRY_FILE, "wb") as f:
        np.savez(f, chip_id=table.chip_id.astype(str), **arrays)
    (directory / CARRY_HEADER).write_text(json.dumps(header.__dict__))
    return directory / CARRY_FILE, directory / CARRY_HEADER


def read_header(directory: Path) -> CarryHeader | None:
    path = Path(directory) / CARRY_HEADER
    if not path.is_file() or not (Path(directory) / CARRY_FILE).is_file():
        return None
    d = json.loads(path.read_text())
    return CarryHeader(int(d["pca_version"]), d["params"], str(d["window"]), int(d["windows_with_obs"]),
                       int(d.get("format", 0)))


def load_carry(directory: Path) -> ChipTable:
    """The table a change partition carries (arrays copied into memory, contiguous)."""
    with np.load(Path(directory) / CARRY_FILE, allow_pickle=False) as z:
        cols = {k[4:]: np.ascontiguousarray(z[k]) for k in z.files if k.startswith("col_")}
        return ChipTable(z["chip_id"].astype(object), cols)

"""Class areas of a partition's predictions: per acquisition date and class, pixels and m²."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import NamedTuple

import numpy as np
import pandas as pd

from clay_core.chips import ChipSet
from clay_core.types import PartitionId

__all__ = ["ClassArea", "class_areas", "class_areas_md"]


class ClassArea(NamedTuple):
    """One row of ``clay.class_areas`` (without the head and model ids)."""

    partition_key: str
    tile: str
    acquired: date
    class_name: str
    pixels: int
    area_m2: float


def class_areas(chips: ChipSet, pred: np.ndarray, kind: str, class_names: Sequence[str],
                pid: PartitionId) -> list[ClassArea]:
    """Every class on every acquisition date of ``chips`` (classes not predicted: 0 pixels).

    ``pred`` is a class map per chip (segmentation) or a class per chip (classification,
    which counts the whole chip). Areas use each chip's native bounds.
    """
    cs = chips.chip_size
    meta = chips.meta
    pixel_area = ((meta["x_max"] - meta["x_min"]).to_numpy(float) / cs) * \
        ((meta["y_max"] - meta["y_min"]).to_numpy(float) / cs)  # fmt: skip
    k = len(class_names)
    if kind == "classification":
        counts = np.zeros((len(chips), k), np.int64)
        counts[np.arange(len(chips)), pred.astype(np.int64)] = cs * cs
    else:
        counts = np.stack([np.bincount(m.ravel().astype(np.int64), minlength=k)[:k] for m in pred]) if len(chips) \
            else np.zeros((0, k), np.int64)
    acquired = pd.to_datetime(meta["datetime"], utc=True).dt.date.to_numpy()
    rows = []
    for day in sorted(set(acquired.tolist())):
        sel = acquired == day
        for c, name in enumerate(class_names):
            px = int(counts[sel, c].sum())
            rows.append(ClassArea(pid.key, pid.tile, day, name, px, float((counts[sel, c] * pixel_area[sel]).sum())))
    return rows


def class_areas_md(rows: Sequence[ClassArea]) -> str:
    """A Markdown table of the rows (areas in hectares)."""
    lines = ["| acquired | class | pixels | area (ha) |", "|---|---|---:|---:|"]
    for r in rows:
        lines.append(f"| {r.acquired} | {r.class_name} | {r.pixels} | {r.area_m2 / 1e4:.2f} |")
    return "\n".join(lines)

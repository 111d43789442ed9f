"""Metadata a person looks at: images embedded in markdown, small tables."""

from __future__ import annotations

import base64

import numpy as np
from dagster import MetadataValue

from clay_core.render import png_bytes


def image_md(img: np.ndarray | bytes, title: str) -> MetadataValue:
    """A PNG inline in markdown; Dagster has no image metadata type (keep images small)."""
    data = img if isinstance(img, bytes) else png_bytes(img)
    return MetadataValue.md(f"**{title}**\n\n![{title}](data:image/png;base64,{base64.b64encode(data).decode()})")


def histogram_md(values: np.ndarray, bins: int = 10, lo: float = 0.0, hi: float = 1.0, label: str = "value") -> MetadataValue:
    counts, edges = np.histogram(np.asarray(values, float), bins=bins, range=(lo, hi))
    peak = max(int(counts.max()), 1) if len(counts) else 1
    lines = [f"| {label} | count | |", "|---|---|---|"]
    for c, a, b in zip(counts, edges[:-1], edges[1:]):
        lines.append(f"| {a:.2f}–{b:.2f} | {int(c)} | {'█' * int(round(20 * c / peak))} |")
    return MetadataValue.md("\n".join(lines))

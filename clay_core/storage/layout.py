"""Where each stage keeps its per-partition files under one root, and atomic replacement.

Layout under ``root`` (``$CLAY_HOME/data`` by default)::

    raw/<tile>/<window>/manifest.json        scenes found for the tile x window
    chips/<tile>/<window>/cube.zarr          Zarr v3 chip cube (chip, band, y, x)
                         /index.parquet      GeoParquet chip index
                         /thumbs/*.png       RGB thumbnails, /mosaic.png
    embeddings/<tile>/<window>/embeddings.zarr
    pca/v<N>/basis.npz, pca/current.json
    change/<tile>/<window>/scores.parquet (+ intensity.png, chips.geojson)

Every partition directory is written under a temporary name beside its final place and
swapped in with ``os.replace``, so a crash never leaves a half-written partition that
looks complete, and re-running a partition replaces it instead of adding to it.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Layout:
    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    def partition(self, stage: str, tile: str, window: str) -> Path:
        return self.root / stage / tile / window

    def windows(self, stage: str, tile: str) -> list[str]:
        """Completed partitions (those with a manifest) of ``stage`` for ``tile``, oldest first."""
        d = self.root / stage / tile
        if not d.is_dir():
            return []
        return sorted(p.name for p in d.iterdir() if (p / MANIFEST).is_file() and not p.name.startswith("."))


@contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a fresh temporary directory that replaces ``final`` only if the block succeeds."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if final.exists():
        old = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_manifest(directory: Path, payload: dict) -> None:
    """Written last inside a partition directory: its presence marks the partition complete."""
    (Path(directory) / MANIFEST).write_text(json.dumps(payload, indent=2, default=str))


def read_manifest(directory: Path) -> dict:
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(
            f"partition {directory} has not been materialized (no {MANIFEST}); materialize the upstream asset first"
        )
    return json.loads(path.read_text())

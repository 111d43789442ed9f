"""Where each stage keeps its per-partition files under one root.

Layout under ``root`` (``<CLAY_HOME>/data`` in the Dagster app)::

    raw/<tile>/<window>/manifest.json        scenes found for the tile x window
    chips/<tile>/<window>/cube.zarr          Zarr v3 chip cube (chip, band, y, x)
                         /index.parquet      GeoParquet chip index
                         /thumbs/*.png       RGB thumbnails, /mosaic.png
    embeddings/<tile>/<window>/embeddings.zarr
    predictions/<tile>/<window>/predictions.zarr
    pca/v<N>/basis.npz, pca/current.json
    change/<tile>/<window>/scores.parquet (+ intensity.png, chips.geojson)

Partition directories are replaced whole (:func:`clay_core.storage.atomic.atomic_dir`) and
complete once their manifest is written (:mod:`clay_core.storage.manifest`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from clay_core.storage.atomic import atomic_dir
from clay_core.storage.manifest import MANIFEST, read_manifest, write_manifest
from clay_core.types import PartitionId

__all__ = ["Layout", "RAW", "CHIPS", "EMBEDDINGS", "PREDICTIONS", "CHANGE",
           # re-exported for callers that import them from here
           "MANIFEST", "atomic_dir", "read_manifest", "write_manifest"]  # fmt: skip

#: The per-partition stages (directory names under the root).
RAW, CHIPS, EMBEDDINGS, PREDICTIONS, CHANGE = "raw", "chips", "embeddings", "predictions", "change"


@dataclass(frozen=True)
class Layout:
    """The per-stage partition directories under ``root``."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    def partition(self, stage: str, tile: str, window: str) -> Path:
        """``<root>/<stage>/<tile>/<window>``."""
        return self.root / stage / tile / window

    def partition_dir(self, stage: str, pid: PartitionId) -> Path:
        """:meth:`partition` of a :class:`PartitionId`."""
        return self.partition(stage, pid.tile, pid.window)

    def windows(self, stage: str, tile: str) -> list[str]:
        """Completed partitions (those with a manifest) of ``stage`` for ``tile``, oldest first."""
        d = self.root / stage / tile
        if not d.is_dir():
            return []
        return sorted(p.name for p in d.iterdir() if (p / MANIFEST).is_file() and not p.name.startswith("."))

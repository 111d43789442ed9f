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

Partition directories are replaced whole (:func:`clay_core.storage.atomic.atomic_dir`: each
``<window>`` is a link to its current hidden version ``.<window>.v<N>``) and complete once
their manifest is written (:mod:`clay_core.storage.manifest`).

Files that point at other files (manifests, the chip index, database rows) store local
locations relative to ``root`` (:meth:`Layout.relative`) and readers resolve them against the
current root (:meth:`Layout.locate`), so a copied or moved root reads its own files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from clay_core.storage.atomic import atomic_dir
from clay_core.storage.manifest import MANIFEST, read_manifest, write_manifest
from clay_core.types import PartitionId

__all__ = ["Layout", "RAW", "CHIPS", "EMBEDDINGS", "PREDICTIONS", "CHANGE",
           # re-exported for callers that import them from here
           "MANIFEST", "atomic_dir", "read_manifest", "write_manifest", "is_remote"]  # fmt: skip

#: The per-partition stages (directory names under the root).
RAW, CHIPS, EMBEDDINGS, PREDICTIONS, CHANGE = "raw", "chips", "embeddings", "predictions", "change"


def is_remote(uri: str | Path | None) -> bool:
    """Whether ``uri`` names object storage (``s3://...``, any ``scheme://``) rather than a local path."""
    return isinstance(uri, str) and "://" in uri


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

    def relative(self, path: Path | str) -> str:
        """How a location is stored: a path under ``root`` relative to it (POSIX separators),
        anything else (an ``s3://`` URI, a path outside the root) unchanged."""
        if is_remote(path):
            return str(path)
        try:
            return Path(path).relative_to(self.root).as_posix()
        except ValueError:
            return str(path)

    def locate(self, stored: str | Path) -> str:
        """A stored location made usable: relative paths resolved against the current ``root``;
        URIs and absolute paths (as older manifests hold them) as they are."""
        if is_remote(stored) or Path(stored).is_absolute():
            return str(stored)
        return str(self.root / stored)

    def windows(self, stage: str, tile: str) -> list[str]:
        """Completed partitions (those with a manifest) of ``stage`` for ``tile``, oldest first."""
        d = self.root / stage / tile
        if not d.is_dir():
            return []
        return sorted(p.name for p in d.iterdir() if (p / MANIFEST).is_file() and not p.name.startswith("."))

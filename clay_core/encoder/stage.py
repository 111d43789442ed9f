"""The embeddings stage: one partition's chip cube -> its embedding store.

Reads the partition's chip cube lazily batch by batch, normalizes with the platform's band
statistics, encodes time and chip-centre lat/lon, and runs the encoder. Writes
``embeddings/<tile>/<window>/embeddings.zarr`` (class token [chip, dim] float32 and, when
enabled, patch tokens [chip, token, dim] float16) and the partition manifest, atomically.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clay_core.encoder.engine import embed_chips
from clay_core.encoder.model import LoadedEncoder
from clay_core.encoder.single import EmbeddingResult, Progress
from clay_core.encoder.store import write_embeddings
from clay_core.storage.layout import Layout, atomic_dir, read_manifest, write_manifest
from clay_core.types import PartitionId

__all__ = ["EmbedResult", "embed_partition"]

STORE = "embeddings.zarr"


@dataclass(frozen=True, eq=False)
class EmbedResult:
    """What :func:`embed_partition` wrote; ``embedding`` is None for a partition without chips."""

    partition: PartitionId
    chips: int
    dim: int
    store: Path
    embedding: EmbeddingResult | None

    @property
    def finite(self) -> bool:
        return bool(self.embedding is None or np.isfinite(self.embedding.cls).all())

    @property
    def shape_ok(self) -> bool:
        """Every chip has one class token of the model's dimension."""
        cls = None if self.embedding is None else self.embedding.cls
        return bool(cls is None or (cls.ndim == 2 and cls.shape == (self.chips, self.dim)))


def embed_partition(
    layout: Layout,
    pid: PartitionId,
    model: LoadedEncoder,
    *,
    open_cube: Callable[[str, str], Any],
    platform: str,
    batch_size: int,
    patch_tokens: bool = False,
    progress: Progress | None = None,
    scheduler_address: str | None = None,
) -> EmbedResult:
    """Embed every chip of ``pid`` (its ``chips`` partition must be materialized).

    ``open_cube(tile, window)`` opens the partition's chip cube lazily, wherever it is
    stored. ``scheduler_address`` names an existing Dask cluster for multi-GPU runs.
    """
    n = int(read_manifest(layout.partition("chips", pid.tile, pid.window))["chips"])
    dim = int(model.encoder.dim)
    final = layout.partition("embeddings", pid.tile, pid.window)
    result = None
    with atomic_dir(final) as tmp:
        if n:
            cube = open_cube(pid.tile, pid.window)
            result = embed_chips(
                model.encoder, cube["pixels"], platform=platform, bands=[str(b) for b in cube["band"].values],
                datetimes=cube["datetime"].values, lat=cube["lat"].values, lon=cube["lon"].values,
                batch_size=batch_size, device=model.device, patch_tokens=patch_tokens, progress=progress,
                scheduler_address=scheduler_address,
            )  # fmt: skip
            write_embeddings(
                tmp / STORE, cube["chip_id"].values, cube["datetime"].values, result.cls, result.patches,
                {"model_id": model.model_id, "preset": model.preset, "device": result.device, "dtype": result.dtype},
            )
        write_manifest(tmp, {"tile": pid.tile, "window": pid.window, "chips": n, "dim": dim,
                             "model_id": model.model_id})
    return EmbedResult(pid, n, dim, final / STORE, result)

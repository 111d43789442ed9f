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
from clay_core.storage import CHIPS, EMBEDDINGS, DamagedDataError, check_distinct, check_finite
from clay_core.storage.layout import Layout, atomic_dir, read_manifest, write_manifest
from clay_core.types import PartitionId

__all__ = ["EmbedResult", "embed_partition", "ZeroCheckedPixels"]

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
    stored (and should refuse an incomplete cube: ``ClayHome.open_cube`` does).
    ``scheduler_address`` names an existing Dask cluster for multi-GPU runs.

    Damaged input fails the partition with a DamagedDataError before anything is replaced,
    so the previous embeddings stay: a chip whose pixels are all exactly 0 (a zero-filled
    read; the chipper drops real nodata chips), embeddings that are not finite, or two
    chips with identical embeddings.
    """
    n = int(read_manifest(layout.partition(CHIPS, pid.tile, pid.window))["chips"])
    dim = int(model.encoder.dim)
    final = layout.partition(EMBEDDINGS, pid.tile, pid.window)
    result = cube = None
    if n:
        cube = open_cube(pid.tile, pid.window)
        ids = cube["chip_id"].values
        result = embed_chips(
            model.encoder, ZeroCheckedPixels(cube["pixels"], ids, f"chip cube of {pid.key}"), platform=platform,
            bands=[str(b) for b in cube["band"].values], datetimes=cube["datetime"].values, lat=cube["lat"].values,
            lon=cube["lon"].values, batch_size=batch_size, device=model.device, patch_tokens=patch_tokens,
            progress=progress, scheduler_address=scheduler_address,
        )  # fmt: skip
        where = f"embeddings of {pid.key}"
        fix = "the previous embeddings are kept; check the chip cube and the model weights, then re-materialize"
        check_finite(result.cls, ids, where, fix)
        check_distinct(result.cls, ids, where, fix)
    with atomic_dir(final) as tmp:
        if result is not None:
            write_embeddings(
                tmp / STORE, cube["chip_id"].values, cube["datetime"].values, result.cls, result.patches,
                {"model_id": model.model_id, "preset": model.preset, "device": result.device, "dtype": result.dtype},
            )
        write_manifest(tmp, {"tile": pid.tile, "window": pid.window, "chips": n, "dim": dim,
                             "model_id": model.model_id})
    return EmbedResult(pid, n, dim, final / STORE, result)


class ZeroCheckedPixels:
    """A lazy pixel array [chip, band, y, x] that refuses, when read, any chip whose values
    are all exactly 0 (DamagedDataError naming the chips): zarr reads a lost chunk as zeros."""

    def __init__(self, pixels: Any, chip_ids: Any, where: str) -> None:
        self.pixels, self.chip_ids, self.where = pixels, np.asarray(chip_ids, dtype=object), where

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.pixels.shape)

    @property
    def dtype(self) -> Any:
        return self.pixels.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows: Any) -> ZeroCheckedPixels:
        if isinstance(rows, tuple):
            raise TypeError("ZeroCheckedPixels selects whole chips only")
        return ZeroCheckedPixels(self.pixels[rows], self.chip_ids[rows], self.where)

    def isel(self, chip: Any = slice(None)) -> ZeroCheckedPixels:
        """Lazy selection of chips (so the multi-GPU path ships the selection, not the pixels)."""
        return self[chip]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        x = np.asarray(self.pixels)
        zero = ~x.reshape(len(x), -1).any(axis=1) if x.size else np.zeros(len(x), bool)
        if zero.any():
            names = [str(c) for c in self.chip_ids[zero][:5]]
            raise DamagedDataError(f"{self.where}: {int(zero.sum())} chip(s) read as all zeros, e.g. {names} "
                                   "(a lost or empty chunk); re-materialize chip_cubes for this partition")
        return x if dtype is None else x.astype(dtype)

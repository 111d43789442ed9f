"""Embedding engine: raw chips -> Clay class-token (and optionally patch) embeddings.

Chips are read batch by batch from any array-like (numpy, xarray, zarr), so a cube larger
than memory streams through. One device runs :func:`clay_core.encoder.single.embed_inputs`;
with CUDA and more than one visible GPU, batches fan out over a Dask cluster
(:mod:`clay_core.encoder.multigpu`).

Importing this module never imports ``dask_cuda``/``distributed`` (dask-cuda fails on
import on machines without CUDA); ``clay_core.encoder.multigpu`` is imported only when more than
one GPU is visible.
"""

from __future__ import annotations

from typing import Any

import torch

from clay_core.encoder.inputs import model_inputs
from clay_core.encoder.model import ClayEncoder
from clay_core.encoder.single import (
    EmbeddingResult,
    Progress,
    check_chip_shape,
    check_encoder,
    embed_inputs,
    resolve_device,
)
from clay_core.errors import ConfigError
from clay_core.platforms import Platform

__all__ = ["embed_chips"]


def embed_chips(
    encoder: ClayEncoder,
    pixels: Any,
    *,
    platform: str | Platform,
    bands: list[str],
    datetimes: Any,
    lat: Any,
    lon: Any,
    batch_size: int = 16,
    device: str = "cpu",
    patch_tokens: bool = False,
    progress: Progress | None = None,
    scheduler_address: str | None = None,
) -> EmbeddingResult:
    """Embed raw chips [N, C, H, W] (digital numbers) of ``platform``'s ``bands``.

    ``datetimes``, ``lat``, ``lon`` have one entry per chip (``None`` entries, or ``None``
    for the whole argument, mean unknown: zero metadata rows). ``device`` may be
    ``"auto"``. ``progress(done_chips, total_chips)`` is called after every batch.
    With ``device="cuda"`` and more than one visible GPU, batches fan out over a Dask
    CUDA cluster: the one at ``scheduler_address`` when given, else a local one.
    """
    check_encoder(encoder)
    inputs = model_inputs(pixels, platform=platform, bands=bands, datetimes=datetimes, lat=lat, lon=lon)
    check_chip_shape(inputs, encoder.patch_size)
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    dev = resolve_device(device)
    if dev == "cuda" and len(inputs) > 0 and torch.cuda.device_count() > 1:
        from clay_core.encoder.multigpu import embed_chips_multi_gpu  # heavy optional deps; see module docstring

        return embed_chips_multi_gpu(
            encoder, inputs, batch_size=batch_size, patch_tokens=patch_tokens, progress=progress,
            scheduler_address=scheduler_address,
        )  # fmt: skip
    return embed_inputs(encoder, inputs, batch_size=batch_size, device=dev, patch_tokens=patch_tokens,
                        progress=progress)

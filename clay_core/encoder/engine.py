"""Embedding engine: raw chips -> Clay class-token (and optionally patch) embeddings.

Chips are read batch by batch from any array-like (numpy, xarray, zarr), so a cube larger
than memory streams through. One device runs :func:`clay_core.encoder.single.embed_inputs`.
Given a Dask scheduler address, or with CUDA and more than one visible GPU, batches fan out
over a Dask cluster (:mod:`clay_core.encoder.dask_engine`) with the same results.

Importing this module never imports ``distributed``/``dask_cuda`` (dask-cuda fails on import
on machines without CUDA); the Dask engine is imported only when it is used.
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
    ``scheduler_address`` (a running Dask scheduler): batches fan out over its workers, each
    on its own CUDA device if it has one, else its CPU (``device`` then only says where the
    encoder lives here). Without one, ``device="cuda"`` with more than one visible GPU fans
    out over a local ``dask_cuda.LocalCUDACluster``. Either way the result is the one this
    process would compute on the workers' device (bit-identical on CPU workers).
    """
    check_encoder(encoder)
    inputs = model_inputs(pixels, platform=platform, bands=bands, datetimes=datetimes, lat=lat, lon=lon)
    check_chip_shape(inputs, encoder.patch_size)
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    dev = resolve_device(device)
    if len(inputs) > 0 and (scheduler_address or (dev == "cuda" and torch.cuda.device_count() > 1)):
        from clay_core.encoder.dask_engine import embed_on_cluster  # heavy optional deps; see module docstring

        return embed_on_cluster(
            encoder, inputs, batch_size=batch_size, patch_tokens=patch_tokens, progress=progress,
            scheduler_address=scheduler_address,
        )  # fmt: skip
    return embed_inputs(encoder, inputs, batch_size=batch_size, device=dev, patch_tokens=patch_tokens,
                        progress=progress)

"""Encoder features for the heads: the frozen encoder's tokens, computed once or on demand.

With ``cache_features`` the encoder output is computed once per chip (:class:`FeatureCache`)
and every epoch trains from the cache; otherwise :func:`encode_tokens` runs the encoder on
each batch.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from clay_core.encoder import ClayEncoder, ModelInputs

__all__ = ["encode_tokens", "FeatureCache"]


def encode_tokens(encoder: ClayEncoder, inputs: ModelInputs, idx: Sequence[int] | np.ndarray | None = None,
                  batch_size: int = 16, cls_only: bool = False) -> torch.Tensor:
    """Encoder output [n, 1 + L, dim] float32 (``[n, 1, dim]`` with ``cls_only``), no gradients.

    Computed with ``torch.no_grad`` (not ``inference_mode``: the result feeds a head that is
    trained with autograd).
    """
    rows = np.arange(len(inputs)) if idx is None else np.asarray(idx, dtype=np.int64)
    device = encoder.cls_token.device
    p = encoder.patch_size
    h, w = inputs.chip_shape
    out = []
    with torch.no_grad():
        kernel = encoder.patch_kernel(torch.from_numpy(inputs.waves))
        pos = encoder.position_encoding(h // p, w // p, inputs.gsd)
        for s in range(0, len(rows), max(1, batch_size)):
            sel = rows[s : s + batch_size]
            tok = encoder.forward_with_kernel(torch.from_numpy(inputs.batch(sel)).to(device),
                                              torch.from_numpy(inputs.time[sel]).to(device),
                                              torch.from_numpy(inputs.latlon[sel]).to(device), kernel, pos)
            out.append((tok[:, :1] if cls_only else tok).float().cpu())
    if not out:
        return torch.zeros((0, 1 if cls_only else 1 + (h // p) * (w // p), encoder.dim))
    return torch.cat(out)


class FeatureCache:
    """Encoder outputs computed once per chip, so epochs after the first skip the encoder."""

    def __init__(self, encoder: ClayEncoder, inputs: ModelInputs, batch_size: int = 16, cls_only: bool = False):
        t0 = time.perf_counter()
        self.tokens = encode_tokens(encoder, inputs, batch_size=batch_size, cls_only=cls_only)
        self.seconds = time.perf_counter() - t0

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    def __getitem__(self, idx: Any) -> torch.Tensor:
        return self.tokens[idx]

    def class_tokens(self) -> FeatureCache:
        """A view with only the class token (what a classification head reads)."""
        view = FeatureCache.__new__(FeatureCache)
        view.tokens, view.seconds = self.tokens[:, :1], self.seconds
        return view

    @property
    def nbytes(self) -> int:
        return self.tokens.numel() * self.tokens.element_size()

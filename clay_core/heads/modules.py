"""Task heads on a frozen Clay encoder: classification, segmentation, regression.

Every head takes the encoder output ``tokens`` [B, 1 + L, dim] (class token first, then the
L patch tokens of a gh x gw patch grid in row-major order) and first standardizes them with
:class:`TokenNorm` (statistics of the training set, saved with the head): a per-position mean
and a per-channel scale. With seeded random encoder weights more than 90% of a patch token's
variance is its position encoding, the same on every chip; subtracting it leaves the content.

- :class:`ClassificationHead` - an MLP on the class token -> logits [B, K].
- :class:`SegmentationHead` - Clay's segmentation recipe: the patch tokens reshaped to the
  patch grid [B, dim, gh, gw], two 3x3 conv + BatchNorm + ReLU blocks, ``PixelShuffle`` by the
  patch size (8) back to full chip resolution, and a 3x3 conv to per-pixel logits
  [B, K, H, W] (Clay uses hidden 512 / 64 channels; the defaults here are smaller so that
  training on a CPU stays quick: set ``hidden``/``channels`` to 512/64 for the published size).
- :class:`RegressionHead` - the same decoder with one output -> [B, H, W].

The encoder is never trained: :func:`freeze` turns off its gradients and puts it in eval mode,
and :class:`FrozenEncoderWithHead` keeps it there even when ``.train()`` is called on the
wrapper. :class:`HeadSpec` is the plain-dict description stored in head checkpoints.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from clay_core.errors import ConfigError
from clay_core.encoder.model import ClayEncoder

__all__ = [
    "HEAD_TYPES",
    "HeadSpec",
    "TokenNorm",
    "ClassificationHead",
    "SegmentationHead",
    "RegressionHead",
    "FrozenEncoderWithHead",
    "build_head",
    "freeze",
    "grid_shape",
]

HEAD_TYPES = ("segmentation", "classification", "regression")


def grid_shape(n_patches: int, grid: tuple[int, int] | None = None) -> tuple[int, int]:
    """The (gh, gw) patch grid of ``n_patches`` tokens; square unless ``grid`` says otherwise."""
    if grid is not None:
        gh, gw = int(grid[0]), int(grid[1])
        if gh * gw != n_patches:
            raise ConfigError(f"patch grid {gh}x{gw} does not hold {n_patches} patch tokens")
        return gh, gw
    side = math.isqrt(n_patches)
    if side * side != n_patches or side == 0:
        raise ConfigError(f"{n_patches} patch tokens are not a square grid; pass grid=(gh, gw)")
    return side, side


@dataclass(frozen=True)
class HeadSpec:
    """Everything needed to rebuild a head: stored as a plain dict in checkpoints."""

    kind: str  # one of HEAD_TYPES
    dim: int  # encoder width
    n_out: int  # classes (1 for regression)
    n_tokens: int = 1  # tokens the head reads: 1 (class token) or 1 + L (chip_size / patch_size)^2
    patch_size: int = 8
    hidden: int = 64  # classification MLP width / first decoder conv width
    channels: int = 16  # decoder channels per output pixel before PixelShuffle
    dropout: float = 0.1  # classification MLP only

    def __post_init__(self) -> None:
        if self.kind not in HEAD_TYPES:
            raise ConfigError(f"unknown head type {self.kind!r}; use one of {list(HEAD_TYPES)}")
        for name in ("dim", "n_out", "n_tokens", "patch_size", "hidden", "channels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"head {name}={value!r} must be a positive integer")
        if self.kind == "regression" and self.n_out != 1:
            raise ConfigError(f"a regression head has one output, got n_out={self.n_out}")
        if self.kind != "regression" and self.n_out < 2:
            raise ConfigError(f"a {self.kind} head needs at least 2 classes, got n_out={self.n_out}")
        if self.kind != "classification" and self.n_tokens < 2:
            raise ConfigError(f"a {self.kind} head reads patch tokens: n_tokens must be 1 + L, got {self.n_tokens}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ConfigError(f"head dropout={self.dropout} must be in [0, 1)")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HeadSpec:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"head spec has unknown keys {unknown}; known: {sorted(known)}")
        return cls(**data)


class TokenNorm(nn.Module):
    """``(tokens - mean[position]) / std[channel]`` with statistics fitted on training tokens.

    Buffers (saved in the state dict): ``mean`` [n_tokens, dim], ``std`` [dim]. Until
    :meth:`fit` is called it is the identity.
    """

    def __init__(self, n_tokens: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_tokens, dim))
        self.register_buffer("std", torch.ones(dim))

    @torch.no_grad()
    def fit(self, batches: Iterable[torch.Tensor], eps: float = 1e-6) -> TokenNorm:
        """Fit from batches of tokens [b, n_tokens, dim] (streamed; float64 sums)."""
        n, s, ss = 0, None, None
        for x in batches:
            x = x[:, : self.mean.shape[0]].double()
            s = x.sum(0) if s is None else s + x.sum(0)
            ss = (x * x).sum(dim=(0, 1)) if ss is None else ss + (x * x).sum(dim=(0, 1))
            n += x.shape[0]
        if not n:
            raise ConfigError("cannot fit token statistics on zero chips")
        mean = s / n  # [n_tokens, dim]
        var = (ss - n * (mean * mean).sum(0)) / (n * mean.shape[0])  # per channel, around the position means
        self.mean.copy_(mean.float())
        self.std.copy_(var.clamp_min(0).sqrt().clamp_min(eps).float())
        return self

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        n = self.mean.shape[0]
        if tokens.shape[1] < n or (n > 1 and tokens.shape[1] != n):
            raise ConfigError(f"head expects {n} tokens per chip, got {tokens.shape[1]}: it was trained on another "
                              "chip size")
        return (tokens[:, :n] - self.mean) / self.std


class ClassificationHead(nn.Module):
    """MLP on the class token: LayerNorm -> Linear -> GELU -> Dropout -> Linear."""

    def __init__(self, dim: int, n_classes: int, hidden: int = 64, dropout: float = 0.1) -> None:
        super().__init__()
        self.norm = TokenNorm(1, dim)
        self.net = nn.Sequential(
            nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, n_classes)
        )

    def forward(self, tokens: torch.Tensor, grid: tuple[int, int] | None = None) -> torch.Tensor:
        return self.net(self.norm(tokens[:, :1])[:, 0])


class SegmentationHead(nn.Module):
    """Clay's decoder: patch grid -> conv/BN/ReLU x2 -> PixelShuffle(patch_size) -> conv logits."""

    def __init__(self, dim: int, n_out: int, patch_size: int = 8, hidden: int = 64, channels: int = 16,
                 n_tokens: int = 65) -> None:
        super().__init__()
        r = patch_size
        self.patch_size = r
        self.norm = TokenNorm(n_tokens, dim)
        self.conv1 = nn.Conv2d(dim, hidden, kernel_size=3, padding=1)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.conv2 = nn.Conv2d(hidden, channels * r * r, kernel_size=3, padding=1)
        self.bn2 = nn.BatchNorm2d(channels * r * r)
        self.pixel_shuffle = nn.PixelShuffle(upscale_factor=r)
        self.conv_ps = nn.Conv2d(channels, n_out, kernel_size=3, padding=1)

    def forward(self, tokens: torch.Tensor, grid: tuple[int, int] | None = None) -> torch.Tensor:
        tokens = self.norm(tokens)
        b, n, d = tokens.shape
        gh, gw = grid_shape(n - 1, grid)
        x = tokens[:, 1:].transpose(1, 2).reshape(b, d, gh, gw)
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.conv_ps(self.pixel_shuffle(x))  # [B, n_out, gh * r, gw * r]


class RegressionHead(SegmentationHead):
    """The segmentation decoder with one output channel: a per-pixel value map [B, H, W]."""

    def __init__(self, dim: int, patch_size: int = 8, hidden: int = 64, channels: int = 16, n_tokens: int = 65) -> None:
        super().__init__(dim, 1, patch_size=patch_size, hidden=hidden, channels=channels, n_tokens=n_tokens)

    def forward(self, tokens: torch.Tensor, grid: tuple[int, int] | None = None) -> torch.Tensor:
        return super().forward(tokens, grid)[:, 0]


def build_head(spec: HeadSpec, seed: int | None = 0) -> nn.Module:
    """A freshly initialised head; identical for identical (spec, seed), caller's RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        if spec.kind == "classification":
            return ClassificationHead(spec.dim, spec.n_out, spec.hidden, spec.dropout)
        if spec.kind == "segmentation":
            return SegmentationHead(spec.dim, spec.n_out, spec.patch_size, spec.hidden, spec.channels, spec.n_tokens)
        return RegressionHead(spec.dim, spec.patch_size, spec.hidden, spec.channels, spec.n_tokens)


def freeze(encoder: nn.Module) -> nn.Module:
    """No gradients for any encoder parameter, and eval mode (no dropout/BN updates)."""
    for p in encoder.parameters():
        p.requires_grad_(False)
    return encoder.eval()


class FrozenEncoderWithHead(nn.Module):
    """Frozen Clay encoder + trainable head; ``forward`` takes normalized pixels.

    ``.train()`` only switches the head: the encoder stays in eval mode with no gradients,
    and its forward pass runs under ``torch.no_grad`` (no activations kept for backward).
    """

    def __init__(self, encoder: ClayEncoder, head: nn.Module) -> None:
        super().__init__()
        self.encoder = freeze(encoder)
        self.head = head

    def train(self, mode: bool = True) -> FrozenEncoderWithHead:
        self.training = mode
        self.head.train(mode)
        self.encoder.eval()
        return self

    def tokens(
        self, pixels: torch.Tensor, time: torch.Tensor, latlon: torch.Tensor, gsd: float, waves: torch.Tensor
    ) -> torch.Tensor:
        with torch.no_grad():
            return self.encoder(pixels, time, latlon, gsd, waves)

    def forward(
        self, pixels: torch.Tensor, time: torch.Tensor, latlon: torch.Tensor, gsd: float, waves: torch.Tensor
    ) -> torch.Tensor:
        return self.head(self.tokens(pixels, time, latlon, gsd, waves))

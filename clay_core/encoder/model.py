"""The Clay v1 / v1.5 encoder: a patch embedding whose kernel is generated from the bands'
wavelengths, then a ViT over the patch tokens; time and lat/lon enter through the last
channels of the position encoding.

Parameter names mirror the published checkpoints exactly so that ``load_encoder`` can read
``clay-v1.5.ckpt`` (preset "large") and ``clay-v1-base.ckpt`` (preset "base") without any
key renaming beyond stripping the Lightning ``model.encoder.`` prefix.

Importing this module changes no torch global state: the reference implementation lowers
``float32_matmul_precision`` on import, which would silently change every other float32
matmul in the process (and break the 1e-5 parity with the fixture).
"""

from __future__ import annotations

import hashlib
import json
import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from clay_core.errors import CheckpointError, ConfigError

__all__ = [
    "PRESETS",
    "ClayEncoder",
    "build_encoder",
    "load_encoder",
    "resolve_config",
    "preset_name",
    "file_sha256",
    "model_id",
    "count_parameters",
    "forward_flops",
    "load_weights_only",
    "LoadedEncoder",
]

PRESETS: dict[str, dict[str, int]] = {
    "large": {"patch_size": 8, "dim": 1024, "depth": 24, "heads": 16, "dim_head": 64, "mlp_ratio": 4},
    "base": {"patch_size": 8, "dim": 768, "depth": 12, "heads": 12, "dim_head": 64, "mlp_ratio": 4},
    "small": {"patch_size": 8, "dim": 384, "depth": 6, "heads": 6, "dim_head": 64, "mlp_ratio": 2},
    "tiny": {"patch_size": 8, "dim": 192, "depth": 6, "heads": 4, "dim_head": 48, "mlp_ratio": 2},
}

_CONFIG_KEYS = ("patch_size", "dim", "depth", "heads", "dim_head", "mlp_ratio")

# Fixed by the published architecture (not part of the presets): the wavelength
# embedding width, the number of learned weight tokens and the generator's FFN width.
WAVE_DIM = 128
NUM_WEIGHT_TOKENS = 128
GENERATOR_HEADS = 4
GENERATOR_FF = 2048
# The released model scales the generated conv kernel (not its bias) by this factor.
KERNEL_SCALE = 0.02
# time (4) + latlon (4) rows occupy the last 8 channels of every patch encoding.
META_DIM = 8

ConfigLike = str | Mapping[str, Any]


# --------------------------------------------------------------------------- config


def resolve_config(config: ConfigLike) -> dict[str, int]:
    """Return a full, validated encoder config from a preset name or a dict.

    A dict may name a base preset under ``"preset"`` and override some of its values.
    """
    if isinstance(config, str):
        if config not in PRESETS:
            raise ConfigError(f"unknown Clay preset {config!r}; known presets: {sorted(PRESETS)}")
        return dict(PRESETS[config])
    if not isinstance(config, Mapping):
        raise ConfigError(f"encoder config must be a preset name or a dict, got {type(config).__name__}")
    base: dict[str, Any] = {}
    if "preset" in config:
        base = resolve_config(str(config["preset"]))
    merged = {**base, **{k: v for k, v in config.items() if k != "preset"}}
    missing = [k for k in _CONFIG_KEYS if k not in merged]
    if missing:
        raise ConfigError(f"encoder config {dict(config)} lacks {missing}; needs {list(_CONFIG_KEYS)}")
    unknown = sorted(set(merged) - set(_CONFIG_KEYS))
    if unknown:
        raise ConfigError(f"encoder config has unknown keys {unknown}; valid keys: {list(_CONFIG_KEYS)}")
    out: dict[str, int] = {}
    for key in _CONFIG_KEYS:
        value = merged[key]
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ConfigError(f"encoder config {key}={value!r} must be a positive integer")
        out[key] = value
    if (out["dim"] - META_DIM) % 4 != 0 or out["dim"] <= META_DIM + 4:
        raise ConfigError(f"encoder dim={out['dim']} must be > 12 with (dim - 8) divisible by 4")
    return out


def preset_name(config: ConfigLike) -> str:
    """The preset a config equals, or ``custom-<8 hex>`` derived from its values."""
    resolved = resolve_config(config)
    for name, values in PRESETS.items():
        if values == resolved:
            return name
    digest = hashlib.sha256(json.dumps(resolved, sort_keys=True).encode()).hexdigest()[:8]
    return f"custom-{digest}"


# --------------------------------------------------------------------------- encodings


def posemb_sincos_1d(waves: torch.Tensor, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """Sin/cos embedding of wavelengths (µm): [C] -> [C, dim]."""
    half = dim // 2
    omega = torch.arange(half, device=waves.device, dtype=torch.float32) / (half - 1)
    omega = 1.0 / (temperature**omega)
    scaled = waves.to(torch.float32)[:, None] * omega[None, :]
    return torch.cat((scaled.sin(), scaled.cos()), dim=1)


def posemb_sincos_2d_with_gsd(
    grid_h: int, grid_w: int, dim: int, gsd: torch.Tensor, temperature: float = 10000.0
) -> torch.Tensor:
    """Patch-grid position embedding scaled by ground sample distance: -> [gh*gw, dim].

    The exponent ``2*k/(d/4-1)/d`` is what the released model was trained with (not the
    textbook ``k/(d/4)``); changing it would shift every embedding.
    """
    device = gsd.device
    y, x = torch.meshgrid(
        torch.arange(grid_h, device=device), torch.arange(grid_w, device=device), indexing="ij"
    )
    quarter = dim // 4
    omega = torch.arange(quarter, device=device) / (quarter - 1)
    omega = 1.0 / (temperature ** (2 * omega / dim)) * (gsd.to(torch.float32) / 1.0)
    y = y.flatten()[:, None] * omega[None, :]
    x = x.flatten()[:, None] * omega[None, :]
    return torch.cat((x.sin(), x.cos(), y.sin(), y.cos()), dim=1).to(torch.float32)


# --------------------------------------------------------------------------- modules


class FCResLayer(nn.Module):
    """Residual MLP applied to the wavelength embeddings."""

    def __init__(self, size: int = WAVE_DIM) -> None:
        super().__init__()
        self.l1 = nn.Linear(size, size)
        self.l2 = nn.Linear(size, size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + F.gelu(self.l2(F.gelu(self.l1(x))))


class WavesTransformer(nn.Module):
    """Generates per-band patch-embedding weights and a shared bias from wavelength tokens."""

    def __init__(self, wave_dim: int, out_weight: int, out_bias: int) -> None:
        super().__init__()
        self.weight_tokens = nn.Parameter(torch.empty(NUM_WEIGHT_TOKENS, wave_dim))
        self.bias_token = nn.Parameter(torch.empty(1, wave_dim))
        layer = nn.TransformerEncoderLayer(
            d_model=wave_dim,
            nhead=GENERATOR_HEADS,
            dim_feedforward=GENERATOR_FF,
            activation="gelu",
            dropout=0.0,
            norm_first=False,
            batch_first=True,
        )
        # enable_nested_tensor only matters for padded batches; off avoids a warning.
        self.encoder = nn.TransformerEncoder(layer, num_layers=1, enable_nested_tensor=False)
        self.fc_weight = nn.Linear(wave_dim, out_weight)
        self.fc_bias = nn.Linear(wave_dim, out_bias)
        nn.init.normal_(self.weight_tokens, std=0.02)
        nn.init.normal_(self.bias_token, std=0.02)

    def forward(self, waves_emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = torch.cat([self.weight_tokens, waves_emb, self.bias_token], dim=0)
        out = self.encoder(tokens)
        n = NUM_WEIGHT_TOKENS
        weights = self.fc_weight(out[n:-1] + tokens[n:-1])
        bias = self.fc_bias(out[-1])
        return weights, bias


class DynamicEmbedding(nn.Module):
    """Wavelength-conditioned patch embedding: any band set, one conv per batch."""

    def __init__(self, patch_size: int, dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.dim = dim
        self.weight_generator = WavesTransformer(WAVE_DIM, patch_size * patch_size * dim, dim)
        self.fclayer = FCResLayer(WAVE_DIM)

    def kernel(self, waves: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Conv kernel [dim, C, P, P] and bias [dim] for bands at ``waves`` (µm)."""
        emb = self.fclayer(posemb_sincos_1d(waves, WAVE_DIM))
        weights, bias = self.weight_generator(emb)
        p = self.patch_size
        # Generated rows are laid out (cout, k1, k2) per input band.
        kernel = weights.reshape(weights.shape[0], self.dim, p, p).permute(1, 0, 2, 3)
        return kernel * KERNEL_SCALE, bias

    def forward(self, pixels: torch.Tensor, waves: torch.Tensor) -> torch.Tensor:
        kernel, bias = self.kernel(waves)
        return self.apply_kernel(pixels, kernel, bias)

    def apply_kernel(self, pixels: torch.Tensor, kernel: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        out = F.conv2d(pixels, kernel.to(pixels.dtype), bias.to(pixels.dtype), stride=self.patch_size)
        return out.flatten(2).transpose(1, 2)  # [B, dim, gh, gw] -> [B, L, dim], row-major


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int) -> None:
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.norm = nn.LayerNorm(dim)
        self.to_qkv = nn.Linear(dim, inner * 3, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        qkv = self.to_qkv(self.norm(x))
        # [B, N, 3, H, Dh] -> three [B, H, N, Dh] views, no copies before the kernel.
        q, k, v = qkv.view(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        # Default scale is dim_head**-0.5, as in the reference model.
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1))


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Transformer(nn.Module):
    def __init__(self, dim: int, depth: int, heads: int, dim_head: int, mlp_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.layers = nn.ModuleList(
            nn.ModuleList([Attention(dim, heads, dim_head), FeedForward(dim, mlp_dim)]) for _ in range(depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for attn, ff in self.layers:
            x = attn(x) + x
            x = ff(x) + x
        return self.norm(x)


class ClayEncoder(nn.Module):
    """Clay encoder (mask ratio 0): ``forward(pixels, time, latlon, gsd, waves) -> [B, 1+L, dim]``.

    ``pixels`` [B, C, H, W] normalized, H and W multiples of the patch size; ``time`` and
    ``latlon`` [B, 4]; ``gsd`` metres per pixel (float or 0-d tensor); ``waves`` [C] in µm.
    """

    def __init__(self, config: ConfigLike = "tiny") -> None:
        super().__init__()
        cfg = resolve_config(config)
        self.config: dict[str, int] = cfg
        self.patch_size = cfg["patch_size"]
        self.dim = cfg["dim"]
        self.cls_token = nn.Parameter(torch.randn(1, 1, self.dim) * 0.02)
        self.patch_embedding = DynamicEmbedding(self.patch_size, self.dim)
        self.transformer = Transformer(
            self.dim, cfg["depth"], cfg["heads"], cfg["dim_head"], self.dim * cfg["mlp_ratio"]
        )

    # The forward pass is split so that the embedding engine can compute the
    # band-dependent conv kernel once per run instead of once per batch.
    def patch_kernel(self, waves: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Patch-embedding conv kernel and bias for these wavelengths (µm)."""
        return self.patch_embedding.kernel(waves.to(self.cls_token.device, torch.float32))

    def position_encoding(self, grid_h: int, grid_w: int, gsd: float | torch.Tensor) -> torch.Tensor:
        """[L, dim - 8] patch position encoding for a grid at this ground sample distance."""
        gsd_t = torch.as_tensor(gsd, dtype=torch.float32, device=self.cls_token.device)
        return posemb_sincos_2d_with_gsd(grid_h, grid_w, self.dim - META_DIM, gsd_t)

    def forward_with_kernel(
        self,
        pixels: torch.Tensor,
        time: torch.Tensor,
        latlon: torch.Tensor,
        kernel: tuple[torch.Tensor, torch.Tensor],
        pos: torch.Tensor,
    ) -> torch.Tensor:
        """Forward pass from a precomputed ``patch_kernel`` and ``position_encoding``."""
        self._check_pixels(pixels)
        patches = self.patch_embedding.apply_kernel(pixels, *kernel)  # [B, L, dim]
        b, length, _ = patches.shape
        if pos.shape[0] != length:
            raise ValueError(f"position encoding has {pos.shape[0]} rows for {length} patches")
        # The residual stream stays in the parameters' dtype: under bf16 autocast the conv
        # returns bf16, but sin/cos encodings and residual sums keep float32 precision
        # (as in the reference model, where float32 + bf16 promotes to float32).
        dtype = self.cls_token.dtype
        meta = torch.cat((time, latlon), dim=-1).to(dtype)  # [B, 8]
        encoding = torch.cat((pos.to(dtype).expand(b, -1, -1), meta[:, None, :].expand(-1, length, -1)), dim=-1)
        patches = patches.to(dtype) + encoding
        cls = self.cls_token.expand(b, -1, -1)
        return self.transformer(torch.cat((cls, patches), dim=1))

    def forward(
        self,
        pixels: torch.Tensor,
        time: torch.Tensor,
        latlon: torch.Tensor,
        gsd: float | torch.Tensor,
        waves: torch.Tensor,
    ) -> torch.Tensor:
        self._check_pixels(pixels, n_waves=int(waves.shape[0]))
        p = self.patch_size
        pos = self.position_encoding(pixels.shape[-2] // p, pixels.shape[-1] // p, gsd)
        return self.forward_with_kernel(pixels, time, latlon, self.patch_kernel(waves), pos)

    def _check_pixels(self, pixels: torch.Tensor, n_waves: int | None = None) -> None:
        if pixels.ndim != 4:
            raise ValueError(f"pixels must be [B, C, H, W], got shape {tuple(pixels.shape)}")
        h, w = pixels.shape[-2:]
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(f"chip {h}x{w} is not a multiple of the patch size {self.patch_size}")
        if n_waves is not None and n_waves != pixels.shape[1]:
            raise ValueError(f"{pixels.shape[1]} bands in pixels but {n_waves} wavelengths")


# --------------------------------------------------------------------------- build / load


def build_encoder(config: ConfigLike, seed: int = 0) -> ClayEncoder:
    """A randomly initialised encoder in eval mode, identical for identical (config, seed).

    The global RNG is forked so that building a model does not perturb the caller's
    random stream.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = ClayEncoder(config)
    return encoder.eval()


def _describe(config: ConfigLike) -> str:
    name = preset_name(config)
    return f"preset {name!r}" if name in PRESETS else f"custom config {resolve_config(config)}"


def _unpickler_detail(exc: Exception) -> str:
    """torch's one useful line (which global was refused), without its advice to unpickle."""
    for line in str(exc).splitlines():
        if "Unsupported global" in line or "WeightsUnpickler error" in line:
            return line.strip().split(". Please use")[0].rstrip(".") + "."
    return ""


def load_weights_only(path: Path) -> Any:
    """``torch.load`` with ``weights_only=True``, memory-mapped when the format allows.

    Memory-mapping means the decoder/teacher tensors of a training checkpoint are never
    read from disk; only the encoder tensors that get copied are.
    """
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # legacy (non-zip) serialization cannot be memory-mapped
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"refusing to load {path}: it contains pickled objects other than tensors and plain "
            f"containers, and unpickling them could execute arbitrary code (only weights_only=True "
            f"loading is allowed). Re-save just the state_dict with torch.save. {_unpickler_detail(exc)}"
        ) from exc
    except Exception as exc:  # a corrupt file can fail anywhere inside the unpickler
        raise CheckpointError(f"cannot read checkpoint {path}: {type(exc).__name__}: {exc}") from exc


def _encoder_state(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """The encoder tensors of a Lightning checkpoint (prefix stripped) or a plain state dict."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"checkpoint {path} holds a {type(obj).__name__}, not a state dict")
    state = obj["state_dict"] if "state_dict" in obj else obj
    if not isinstance(state, Mapping):
        raise CheckpointError(f"checkpoint {path}: 'state_dict' is a {type(state).__name__}, not a dict")
    prefix = "model.encoder."
    if any(isinstance(k, str) and k.startswith(prefix) for k in state):
        return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    return dict(state)


def _check_state(
    state: Mapping[str, Any], expected: Mapping[str, torch.Size], path: Path, config: ConfigLike
) -> None:
    problems: list[str] = []
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    not_tensor = [k for k in state if k in expected and not isinstance(state[k], torch.Tensor)]
    misshaped = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k])}"
        for k in expected
        if isinstance(state.get(k), torch.Tensor) and state[k].shape != expected[k]
    ]
    if missing:
        problems.append(
            f"missing tensors ({len(missing)}): "
            + ", ".join(f"{k} {tuple(expected[k])}" for k in missing[:10])
            + (" ..." if len(missing) > 10 else "")
        )
    if unexpected:
        problems.append(f"unexpected tensors ({len(unexpected)}): {', '.join(unexpected[:10])}")
    if not_tensor:
        problems.append(f"non-tensor values: {', '.join(not_tensor)}")
    if misshaped:
        problems.append("mis-shaped tensors: " + "; ".join(misshaped[:10]))
    if problems:
        raise CheckpointError(
            f"checkpoint {path} does not fit the Clay encoder ({_describe(config)}): " + " | ".join(problems)
        )


def load_encoder(path: str | PathLike[str], config: ConfigLike, device: str | torch.device = "cpu") -> ClayEncoder:
    """Load encoder weights (Lightning checkpoint or plain state dict) in eval mode.

    Only tensors and plain containers are unpickled (``weights_only=True``). In a
    Lightning checkpoint every key outside ``model.encoder.`` (decoder, teacher, proj...)
    is ignored; the encoder tensors must match the config exactly.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    cfg = resolve_config(config)
    state = _encoder_state(load_weights_only(path), path)
    # Build on the meta device: no memory is allocated and no random init is spent on
    # weights that are replaced right away (the large preset has 311 M parameters).
    with torch.device("meta"):
        encoder = ClayEncoder(cfg)
    expected = {k: v.shape for k, v in encoder.state_dict().items()}
    _check_state(state, expected, path, cfg)
    # A real copy: the model must not keep pages of the (memory-mapped) file alive.
    state = {k: v.to(torch.float32 if v.is_floating_point() else v.dtype, copy=True) for k, v in state.items()}
    encoder.load_state_dict(state, strict=True, assign=True)
    return encoder.to(device).eval()


# --------------------------------------------------------------------------- ids & accounting


@dataclass(frozen=True, eq=False)
class LoadedEncoder:
    """An encoder ready to run, with what identifies its weights (what stages record)."""

    encoder: ClayEncoder
    device: str
    model_id: str
    preset: str
    checkpoint_sha256: str | None = None  # None: seeded random weights


def file_sha256(path: str | PathLike[str], chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks (checkpoints are over a gigabyte)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def model_id(preset_or_config: ConfigLike, checkpoint_path: str | PathLike[str] | None, seed: int = 0) -> str:
    """Short stable id, e.g. ``tiny:random-seed0`` or ``large:sha256-0123456789ab``."""
    name = preset_name(preset_or_config)
    if checkpoint_path is None:
        return f"{name}:random-seed{seed}"
    return f"{name}:sha256-{file_sha256(checkpoint_path)[:12]}"


def count_parameters(module: nn.Module) -> int:
    """Number of parameter elements (works on meta-device modules)."""
    return sum(p.numel() for p in module.parameters())


def forward_flops(config: ConfigLike, chip_size: int, n_bands: int, batch_size: int = 1) -> float:
    """FLOPs of one forward pass per chip (a multiply-add counts 2).

    Counts every matmul: the wavelength MLP and weight-generator transformer (shared by a
    batch, hence divided by ``batch_size``), the patch conv, and per block the QKV, QK^T,
    AV, output and MLP projections. Norms, activations and softmax are ignored (<1%).
    """
    cfg = resolve_config(config)
    p, dim = cfg["patch_size"], cfg["dim"]
    if chip_size % p:
        raise ConfigError(f"chip_size {chip_size} is not a multiple of the patch size {p}")
    c, w = n_bands, WAVE_DIM
    seq = NUM_WEIGHT_TOKENS + c + 1
    generator = (
        2 * (2 * c * w * w)  # fclayer l1, l2
        + 2 * seq * w * 3 * w  # in_proj
        + 2 * (2 * seq * seq * w)  # QK^T and AV
        + 2 * seq * w * w  # out_proj
        + 2 * (2 * seq * w * GENERATOR_FF)  # linear1, linear2
        + 2 * c * w * (p * p * dim)  # fc_weight
        + 2 * w * dim  # fc_bias
    )
    length = (chip_size // p) ** 2
    n = length + 1
    inner = cfg["heads"] * cfg["dim_head"]
    hidden = dim * cfg["mlp_ratio"]
    block = (
        2 * n * dim * 3 * inner  # to_qkv
        + 2 * (2 * n * n * inner)  # QK^T and AV
        + 2 * n * inner * dim  # to_out
        + 2 * (2 * n * dim * hidden)  # MLP
    )
    conv = 2 * length * dim * c * p * p
    return float(conv + cfg["depth"] * block + generator / max(batch_size, 1))

"""Fine-tuning task heads on a frozen Clay encoder: data, training loop, metrics, checkpoints.

No Dagster here; the ``head_model`` / ``head_predictions`` assets call these functions.

- Data: :class:`ChipData` (raw chips + chip references) from chip cubes
  (:func:`read_cube_chips`) or straight from a scene source (:func:`source_chips`);
  :func:`make_targets` asks a :class:`~clay_core.heads.labels.LabelSource` for the truth.
- Split: :func:`split_by_tile` - validation tiles are disjoint from training tiles, so the
  validation score is on spatially held-out ground (chips of one tile on other dates are
  near-duplicates and would leak).
- Training: :func:`train_head`. The encoder is frozen; with ``cache_features`` its output is
  computed once per chip (:class:`FeatureCache`) and every epoch trains from the cache. The
  untrained head is scored first (epoch 0), then every epoch, on the validation tiles.
- Metrics: :class:`ClassMetrics` (torchmetrics ``JaccardIndex``, ``F1Score``,
  ``ConfusionMatrix``, accuracy) and :class:`ValueMetrics` (RMSE, MAE, R^2). Mean IoU and
  macro F1 average the per-class scores over the classes present in the labels or the
  predictions (a class absent from both has no score, not 0).
- Checkpoints: :func:`save_head` writes a plain dict of tensors and metadata (loadable with
  ``torch.load(weights_only=True)``) that names the encoder it was trained on;
  :func:`load_head` refuses a head trained on another encoder (``CheckpointError``).

Command line (trains on the synthetic world and prints the metric table)::

    python -m clay_core.heads.training --help
    python -m clay_core.heads.training                       # segmentation, default settings
    python -m clay_core.heads.training --head classification
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from clay_core.encoder.inputs import encode_latlon, encode_time, normalize, waves_for
from clay_core.errors import CheckpointError, ConfigError
from clay_core.heads.modules import HEAD_TYPES, HeadSpec, build_head, freeze
from clay_core.heads.labels import IGNORE, LabelSource, chip_refs
from clay_core.encoder.model import ClayEncoder, _torch_load
from clay_core.platforms import get_platform

__all__ = [
    "HEAD_FORMAT",
    "ChipData",
    "ClassMetrics",
    "ValueMetrics",
    "MetricReport",
    "ValueReport",
    "FeatureCache",
    "TrainConfig",
    "class_weights_from_counts",
    "TrainResult",
    "EpochLog",
    "LoadedHead",
    "encoder_identity",
    "read_cube_chips",
    "source_chips",
    "make_targets",
    "split_by_tile",
    "encode_tokens",
    "train_head",
    "predict",
    "save_head",
    "load_head",
    "check_encoder",
    "class_palette",
    "colorize",
    "preview_image",
    "main",
]

HEAD_FORMAT = "clay-head/1"
Log = Callable[[str], None]


# --------------------------------------------------------------------------- data


@dataclass
class ChipData:
    """Raw chips [N, C, H, W] (digital numbers) of ``platform``'s ``bands`` + one reference row each."""

    pixels: np.ndarray
    refs: pd.DataFrame  # clay_core.heads.labels.REF_COLUMNS + lat, lon
    bands: list[str]
    platform: str = "sentinel-2-l2a"

    def __post_init__(self) -> None:
        if self.pixels.ndim != 4 or self.pixels.shape[1] != len(self.bands):
            raise ConfigError(f"chip pixels {self.pixels.shape} must be [N, {len(self.bands)}, H, W]")
        if len(self.refs) != self.pixels.shape[0]:
            raise ConfigError(f"{self.pixels.shape[0]} chips but {len(self.refs)} chip references")
        self.refs = self.refs.reset_index(drop=True)

    def __len__(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def chip_size(self) -> int:
        return int(self.pixels.shape[-1])

    @property
    def tiles(self) -> np.ndarray:
        return self.refs["tile"].astype(str).to_numpy()

    def subset(self, idx: Sequence[int] | np.ndarray) -> ChipData:
        idx = np.asarray(idx, dtype=np.int64)
        return ChipData(self.pixels[idx], self.refs.iloc[idx], list(self.bands), self.platform)

    @staticmethod
    def concat(parts: Sequence[ChipData]) -> ChipData:
        parts = [p for p in parts if len(p)]
        if not parts:
            raise ConfigError("no chips to train on: materialize chip_cubes for some partitions first")
        bands, sizes = {tuple(p.bands) for p in parts}, {p.pixels.shape[1:] for p in parts}
        if len(bands) > 1 or len(sizes) > 1:
            raise ConfigError(f"chip cubes disagree on bands {sorted(bands)} or chip shape {sorted(sizes)}; "
                              "re-materialize chip_cubes with one chip size and band set")
        return ChipData(np.concatenate([p.pixels for p in parts]), pd.concat([p.refs for p in parts]),
                        list(parts[0].bands), parts[0].platform)

    def model_inputs(self) -> dict[str, Any]:
        """Normalized pixels and encoded metadata as tensors: what the encoder takes."""
        plat = get_platform(self.platform)
        when = pd.to_datetime(self.refs["datetime"], utc=True).dt.tz_localize(None).to_numpy()
        return {
            "pixels": torch.from_numpy(normalize(self.pixels, plat, self.bands)),
            "time": torch.from_numpy(encode_time(when, n=len(self))),
            "latlon": torch.from_numpy(encode_latlon(self.refs["lat"].to_numpy(float), self.refs["lon"].to_numpy(float),
                                                     n=len(self))),
            "waves": torch.from_numpy(waves_for(plat, self.bands)),
            "gsd": float(plat.gsd),
        }


def read_cube_chips(cube_path: Any, tile: str, platform: str = "sentinel-2-l2a") -> ChipData:
    """All chips of one partition's chip cube (a path, or an already opened Dataset), in memory."""
    from clay_core.chips import open_cube

    ds = cube_path if hasattr(cube_path, "data_vars") else open_cube(Path(cube_path))
    bands = [str(b) for b in ds["band"].values]
    return ChipData(np.asarray(ds["pixels"].values), chip_refs(ds, tile), bands, platform)


def source_chips(source: Any, tiles: Sequence[str], start: datetime, end: datetime, chip_size: int,
                 bands: Sequence[str] = ("blue", "green", "red", "nir"), max_cloud: float = 0.2) -> ChipData:
    """Chips of every acquisition of ``tiles`` in [start, end) straight from a scene source."""
    from clay_core.chips import ChipParams, ChipSet, chip_scene

    params = ChipParams(chip_size=chip_size, max_cloud=max_cloud)
    sets = [chip_scene(source.load_scene(ref, list(bands)), params)
            for tile in tiles for ref in source.list_scenes(tile, start, end)]
    chips = ChipSet.concat(sets, list(bands), chip_size)
    return ChipData(chips.pixels, chips.meta, list(bands), getattr(source, "platform", "sentinel-2-l2a"))


def make_targets(kind: str, labels: LabelSource, chips: ChipData) -> np.ndarray:
    """Truth for a head: int64 [N, H, W] (segmentation), int64 [N] (classification), float32 [N, H, W]."""
    if kind == "segmentation":
        if not labels.has_pixels:
            raise ConfigError(f"{labels.describe()} has no per-pixel labels; a segmentation head needs a label "
                              "raster or the synthetic source (or use head='classification')")
        return labels.pixel_labels(chips.refs, chips.chip_size).astype(np.int64)
    if kind == "classification":
        return labels.chip_classes(chips.refs, chips.chip_size).astype(np.int64)
    if kind == "regression":
        return labels.pixel_values(chips.refs, chips.chip_size).astype(np.float32)
    raise ConfigError(f"unknown head type {kind!r}; use one of {list(HEAD_TYPES)}")


def split_by_tile(tiles: Sequence[str], val_tiles: Sequence[str] | None = None, val_fraction: float = 0.34,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """(train index, val index, train tiles, val tiles): no tile is on both sides.

    ``val_tiles`` names the held-out tiles; otherwise ``round(val_fraction * n_tiles)`` (at
    least one) tiles are drawn with ``seed``.
    """
    tiles = np.asarray([str(t) for t in tiles])
    uniq = sorted(set(tiles.tolist()))
    if len(uniq) < 2:
        raise ConfigError(f"the validation split is by tile and needs chips of at least 2 tiles, got {uniq}: "
                          "materialize chip_cubes for another tile")
    if val_tiles:
        val = sorted({str(t).upper() for t in val_tiles})
        unknown = [t for t in val if t not in uniq]
        if unknown:
            raise ConfigError(f"validation tile(s) {unknown} have no chips; tiles with chips: {uniq}")
        if len(val) == len(uniq):
            raise ConfigError(f"every tile {uniq} is a validation tile: leave at least one for training")
    else:
        if not 0.0 < val_fraction < 1.0:
            raise ConfigError(f"val_fraction={val_fraction} must be in (0, 1)")
        n_val = min(len(uniq) - 1, max(1, round(val_fraction * len(uniq))))
        order = np.random.default_rng(seed).permutation(len(uniq))
        val = sorted(uniq[i] for i in order[:n_val])
    is_val = np.isin(tiles, val)
    train = sorted(set(uniq) - set(val))
    return np.flatnonzero(~is_val), np.flatnonzero(is_val), train, val


# --------------------------------------------------------------------------- features


def encode_tokens(encoder: ClayEncoder, inputs: dict[str, Any], idx: Sequence[int] | np.ndarray | None = None,
                  batch_size: int = 16, cls_only: bool = False) -> torch.Tensor:
    """Encoder output [n, 1 + L, dim] float32 (``[n, 1, dim]`` with ``cls_only``), no gradients.

    Computed with ``torch.no_grad`` (not ``inference_mode``: the result feeds a head that is
    trained with autograd).
    """
    n_all = inputs["pixels"].shape[0]
    idx_t = torch.arange(n_all) if idx is None else torch.as_tensor(np.asarray(idx, dtype=np.int64))
    device = encoder.cls_token.device
    p = encoder.patch_size
    h, w = inputs["pixels"].shape[-2:]
    out = []
    with torch.no_grad():
        kernel = encoder.patch_kernel(inputs["waves"])
        pos = encoder.position_encoding(h // p, w // p, inputs["gsd"])
        for s in range(0, len(idx_t), max(1, batch_size)):
            sel = idx_t[s : s + batch_size]
            tok = encoder.forward_with_kernel(inputs["pixels"][sel].to(device), inputs["time"][sel].to(device),
                                              inputs["latlon"][sel].to(device), kernel, pos)
            out.append((tok[:, :1] if cls_only else tok).float().cpu())
    if not out:
        return torch.zeros((0, 1 if cls_only else 1 + (h // p) * (w // p), encoder.dim))
    return torch.cat(out)


class FeatureCache:
    """Encoder outputs computed once per chip, so epochs after the first skip the encoder."""

    def __init__(self, encoder: ClayEncoder, inputs: dict[str, Any], batch_size: int = 16, cls_only: bool = False):
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


# --------------------------------------------------------------------------- metrics


@dataclass
class MetricReport:
    """Classification/segmentation scores. Per-class lists are NaN for classes absent from both sides."""

    class_names: list[str]
    per_class_iou: list[float]
    mean_iou: float
    per_class_f1: list[float]
    macro_f1: float
    accuracy: float
    confusion: np.ndarray  # [K, K] int64, rows = label, columns = prediction
    loss: float = float("nan")

    @property
    def headline(self) -> float:
        return self.mean_iou

    def to_dict(self) -> dict[str, Any]:
        return {
            "mean_iou": self.mean_iou, "macro_f1": self.macro_f1, "accuracy": self.accuracy, "loss": self.loss,
            "per_class_iou": dict(zip(self.class_names, self.per_class_iou)),
            "per_class_f1": dict(zip(self.class_names, self.per_class_f1)),
            "confusion": self.confusion.tolist(),
        }

    def summary(self) -> str:
        return f"mIoU {self.mean_iou:.3f}  F1 {self.macro_f1:.3f}  acc {self.accuracy:.3f}"

    def table_md(self) -> str:
        """Markdown: per-class IoU, F1 and support, then the averages."""
        support = self.confusion.sum(axis=1)
        lines = ["| class | IoU | F1 | label pixels/chips |", "|---|---:|---:|---:|"]
        for name, iou, f1, s in zip(self.class_names, self.per_class_iou, self.per_class_f1, support):
            lines.append(f"| {name} | {_fmt(iou)} | {_fmt(f1)} | {int(s)} |")
        lines.append(f"| **mean (present classes)** | **{_fmt(self.mean_iou)}** | **{_fmt(self.macro_f1)}** | "
                     f"{int(support.sum())} |")
        lines.append(f"| accuracy | {_fmt(self.accuracy)} | | |")
        return "\n".join(lines)

    def confusion_md(self) -> str:
        names = self.class_names
        lines = ["| label \\ predicted | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
        for name, row in zip(names, self.confusion):
            lines.append(f"| **{name}** | " + " | ".join(str(int(v)) for v in row) + " |")
        return "\n".join(lines)


@dataclass
class ValueReport:
    """Regression scores over pixels with a finite target."""

    rmse: float
    mae: float
    r2: float
    loss: float = float("nan")

    @property
    def headline(self) -> float:
        return self.r2

    def to_dict(self) -> dict[str, Any]:
        return {"rmse": self.rmse, "mae": self.mae, "r2": self.r2, "loss": self.loss}

    def summary(self) -> str:
        return f"RMSE {self.rmse:.4f}  MAE {self.mae:.4f}  R2 {self.r2:.3f}"

    def table_md(self) -> str:
        return "\n".join(["| metric | value |", "|---|---:|", f"| RMSE | {self.rmse:.4f} |",
                          f"| MAE | {self.mae:.4f} |", f"| R² | {self.r2:.4f} |"])


def _fmt(v: float) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


class ClassMetrics:
    """Accumulates predictions [N, ...] vs labels (``ignore_index`` skipped) with torchmetrics."""

    def __init__(self, class_names: Sequence[str], ignore_index: int = IGNORE) -> None:
        from torchmetrics import MetricCollection
        from torchmetrics.classification import (
            MulticlassAccuracy,
            MulticlassConfusionMatrix,
            MulticlassF1Score,
            MulticlassJaccardIndex,
        )

        self.class_names = list(class_names)
        k = len(self.class_names)
        ig = ignore_index if ignore_index is not None and ignore_index >= 0 else None
        # Per-class scores only: the means over present classes are taken in compute(), because
        # how torchmetrics' "macro" treats classes absent from both sides changed across versions.
        self.metrics = MetricCollection({
            "iou": MulticlassJaccardIndex(k, average="none", ignore_index=ig),
            "f1": MulticlassF1Score(k, average="none", ignore_index=ig),
            "accuracy": MulticlassAccuracy(k, average="micro", ignore_index=ig),
            "confusion": MulticlassConfusionMatrix(k, ignore_index=ig),
        })
        self._loss_sum, self._loss_n = 0.0, 0

    def update(self, preds: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray, loss: float | None = None,
               weight: int = 1) -> None:
        p = torch.as_tensor(np.asarray(preds) if isinstance(preds, np.ndarray) else preds).long().flatten()
        t = torch.as_tensor(np.asarray(target) if isinstance(target, np.ndarray) else target).long().flatten()
        self.metrics.update(p, t)
        if loss is not None:
            self._loss_sum += float(loss) * weight
            self._loss_n += weight

    def compute(self) -> MetricReport:
        r = self.metrics.compute()
        conf = r["confusion"].long().numpy()
        present = (conf.sum(0) + conf.sum(1)) > 0
        iou = [float(v) if ok else float("nan") for v, ok in zip(r["iou"].tolist(), present)]
        f1 = [float(v) if ok else float("nan") for v, ok in zip(r["f1"].tolist(), present)]
        miou = float(np.mean([v for v, ok in zip(iou, present) if ok])) if present.any() else float("nan")
        mf1 = float(np.mean([v for v, ok in zip(f1, present) if ok])) if present.any() else float("nan")
        return MetricReport(self.class_names, iou, miou, f1, mf1, float(r["accuracy"]),
                            conf, self._loss_sum / self._loss_n if self._loss_n else float("nan"))


class ValueMetrics:
    """RMSE, MAE and R^2 over finite targets (torchmetrics)."""

    def __init__(self) -> None:
        from torchmetrics import MeanAbsoluteError, MeanSquaredError, MetricCollection, R2Score

        self.metrics = MetricCollection({"rmse": MeanSquaredError(squared=False), "mae": MeanAbsoluteError(),
                                         "r2": R2Score()})
        self._loss_sum, self._loss_n = 0.0, 0

    def update(self, preds: torch.Tensor, target: torch.Tensor, loss: float | None = None, weight: int = 1) -> None:
        p, t = torch.as_tensor(preds).float().flatten(), torch.as_tensor(target).float().flatten()
        ok = torch.isfinite(t)
        if ok.any():
            self.metrics.update(p[ok], t[ok])
        if loss is not None:
            self._loss_sum += float(loss) * weight
            self._loss_n += weight

    def compute(self) -> ValueReport:
        r = self.metrics.compute()
        return ValueReport(float(r["rmse"]), float(r["mae"]), float(r["r2"]),
                           self._loss_sum / self._loss_n if self._loss_n else float("nan"))


# --------------------------------------------------------------------------- training


@dataclass
class TrainConfig:
    """Training settings (the ``head_model`` asset's Dagster config mirrors these)."""

    head: str = "segmentation"
    epochs: int = 12
    lr: float = 5e-3
    batch_size: int = 16
    weight_decay: float = 1e-4
    class_weights: list[float] | None = None  # one per class; overrides class_weighting
    class_weighting: str = "sqrt-inverse"  # from training label counts: "none", "inverse", "sqrt-inverse"
    val_tiles: list[str] | None = None
    val_fraction: float = 0.34
    seed: int = 0
    cache_features: bool = True
    hidden: int = 64  # Clay's published decoder: 512
    channels: int = 16  # Clay's published decoder: 64
    dropout: float = 0.1
    encode_batch_size: int = 16

    def __post_init__(self) -> None:
        if self.head not in HEAD_TYPES:
            raise ConfigError(f"unknown head type {self.head!r}; use one of {list(HEAD_TYPES)}")
        for name in ("epochs", "batch_size", "encode_batch_size"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name}={getattr(self, name)} must be >= 1")
        if not self.lr > 0:
            raise ConfigError(f"lr={self.lr} must be > 0")
        if self.class_weights is not None and any((not math.isfinite(w)) or w < 0 for w in self.class_weights):
            raise ConfigError(f"class_weights {self.class_weights} must be finite and >= 0")
        if self.class_weighting not in CLASS_WEIGHTINGS:
            raise ConfigError(f"class_weighting={self.class_weighting!r}: use one of {list(CLASS_WEIGHTINGS)}")


CLASS_WEIGHTINGS = ("none", "inverse", "sqrt-inverse")


def class_weights_from_counts(counts: Sequence[int], weighting: str = "sqrt-inverse") -> list[float]:
    """Loss weights ``(total / (K * count)) ** p`` (p = 1 or 1/2), mean 1 over present classes.

    Classes without training labels get weight 1 (they contribute no loss anyway).
    """
    if weighting not in CLASS_WEIGHTINGS:
        raise ConfigError(f"class_weighting={weighting!r}: use one of {list(CLASS_WEIGHTINGS)}")
    c = np.asarray(counts, dtype=np.float64)
    present = c > 0
    if weighting == "none" or not present.any():
        return [1.0] * len(c)
    w = np.ones_like(c)
    w[present] = (c[present].sum() / (present.sum() * c[present])) ** (1.0 if weighting == "inverse" else 0.5)
    w[present] /= w[present].mean()
    return [float(v) for v in w]


@dataclass
class EpochLog:
    epoch: int  # 0 = the untrained head
    train_loss: float
    val: MetricReport | ValueReport
    seconds: float  # training time of this epoch (0 for epoch 0)

    def line(self) -> str:
        tl = "   n/a " if math.isnan(self.train_loss) else f"{self.train_loss:7.4f}"
        return f"epoch {self.epoch:3d}  train loss {tl}  val loss {self.val.loss:7.4f}  {self.val.summary()}  " \
               f"({self.seconds:.2f} s)"


@dataclass
class TrainResult:
    head: nn.Module
    spec: HeadSpec
    config: TrainConfig
    class_names: list[str]
    history: list[EpochLog]
    train_tiles: list[str]
    val_tiles: list[str]
    n_train: int
    n_val: int
    cache_seconds: float
    val_index: np.ndarray
    val_predictions: np.ndarray
    val_targets: np.ndarray
    class_counts: list[int] = field(default_factory=list)
    class_weights: list[float] = field(default_factory=list)

    @property
    def untrained(self) -> MetricReport | ValueReport:
        return self.history[0].val

    @property
    def final(self) -> MetricReport | ValueReport:
        return self.history[-1].val

    @property
    def seconds_per_epoch(self) -> float:
        trained = [h.seconds for h in self.history[1:]]
        return float(np.mean(trained)) if trained else 0.0

    def history_md(self) -> str:
        head = self.spec.kind != "regression"
        cols = "| epoch | train loss | val loss | " + ("val mIoU | val F1 | val acc |" if head else "val RMSE | val R² |")
        lines = [cols + " s |", "|---:" * (6 if head else 5) + "|---:|"]
        for h in self.history:
            tl = "–" if math.isnan(h.train_loss) else f"{h.train_loss:.4f}"
            v = h.val
            vals = (f"{v.mean_iou:.3f} | {v.macro_f1:.3f} | {v.accuracy:.3f}" if isinstance(v, MetricReport)
                    else f"{v.rmse:.4f} | {v.r2:.3f}")
            lines.append(f"| {h.epoch} | {tl} | {v.loss:.4f} | {vals} | {h.seconds:.2f} |")
        return "\n".join(lines)


def _loss_fn(kind: str, class_weights: torch.Tensor | None) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if kind == "regression":
        def mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            ok = torch.isfinite(target)
            if not ok.any():
                return pred.sum() * 0.0
            return F.mse_loss(pred[ok], target[ok])
        return mse

    def ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if not (target != IGNORE).any():
            return logits.sum() * 0.0
        return F.cross_entropy(logits, target, weight=class_weights, ignore_index=IGNORE)
    return ce


def _prediction(kind: str, out: torch.Tensor) -> torch.Tensor:
    return out if kind == "regression" else out.argmax(dim=1)


class _Tokens:
    """Encoder outputs for a batch: from the cache, or by running the frozen encoder now."""

    def __init__(self, encoder: ClayEncoder, inputs: dict[str, Any], cache: FeatureCache | None, batch_size: int,
                 cls_only: bool):
        self.encoder, self.inputs, self.cache = encoder, inputs, cache
        self.batch_size, self.cls_only = batch_size, cls_only

    def __call__(self, idx: torch.Tensor) -> torch.Tensor:
        if self.cache is not None:
            return self.cache[idx]
        return encode_tokens(self.encoder, self.inputs, idx.numpy(), batch_size=self.batch_size, cls_only=self.cls_only)


def _evaluate(head: nn.Module, kind: str, tokens: _Tokens, idx: np.ndarray, targets: torch.Tensor,
              loss_fn: Callable, class_names: list[str], batch_size: int) -> tuple[MetricReport | ValueReport, np.ndarray]:
    metrics: ClassMetrics | ValueMetrics = ValueMetrics() if kind == "regression" else ClassMetrics(class_names)
    preds = []
    head.eval()
    with torch.no_grad():
        for s in range(0, len(idx), batch_size):
            sel = torch.as_tensor(idx[s : s + batch_size])
            out = head(tokens(sel))
            y = targets[sel]
            metrics.update(_prediction(kind, out), y, float(loss_fn(out, y)), len(sel))
            preds.append(_prediction(kind, out).numpy())
    pred = np.concatenate(preds) if preds else np.zeros((0,))
    return metrics.compute(), pred


def train_head(encoder: ClayEncoder, chips: ChipData, targets: np.ndarray, class_names: Sequence[str],
               config: TrainConfig | None = None, log: Log | None = None,
               split: tuple[np.ndarray, np.ndarray] | None = None,
               features: FeatureCache | None = None) -> TrainResult:
    """Train a ``config.head`` head on the frozen ``encoder``; validate on held-out tiles.

    ``targets`` come from :func:`make_targets`; ``split`` (train index, val index) overrides
    :func:`split_by_tile`; ``features`` is a ready :class:`FeatureCache` of these chips (one
    cache can serve several heads). Deterministic on the CPU for a given seed.
    """
    cfg = config or TrainConfig()
    log = log or (lambda _m: None)
    kind = cfg.head
    class_names = list(class_names) if kind != "regression" else ["value"]
    k = len(class_names)
    if len(targets) != len(chips):
        raise ConfigError(f"{len(targets)} targets for {len(chips)} chips")
    if cfg.class_weights is not None and kind != "regression" and len(cfg.class_weights) != k:
        raise ConfigError(f"class_weights has {len(cfg.class_weights)} values for {k} classes {class_names}")
    if split is None:
        train_idx, val_idx, train_tiles, val_tiles = split_by_tile(chips.tiles, cfg.val_tiles, cfg.val_fraction,
                                                                   cfg.seed)
    else:
        train_idx, val_idx = (np.asarray(s, dtype=np.int64) for s in split)
        train_tiles = sorted(set(chips.tiles[train_idx].tolist()))
        val_tiles = sorted(set(chips.tiles[val_idx].tolist()))
    if len(train_idx) == 0 or len(val_idx) == 0:
        raise ConfigError(f"empty split: {len(train_idx)} training and {len(val_idx)} validation chips")

    freeze(encoder)
    patch = encoder.patch_size
    if chips.chip_size % patch:
        raise ConfigError(f"chip size {chips.chip_size} is not a multiple of the patch size {patch}")
    cls_only = kind == "classification"
    n_tokens = 1 if cls_only else 1 + (chips.chip_size // patch) ** 2
    spec = HeadSpec(kind=kind, dim=int(encoder.dim), n_out=1 if kind == "regression" else k, n_tokens=n_tokens,
                    patch_size=patch, hidden=cfg.hidden, channels=cfg.channels, dropout=cfg.dropout)
    head = build_head(spec, seed=cfg.seed)
    inputs = chips.model_inputs()
    cache = None
    cache_seconds = 0.0
    if features is not None:
        if len(features) != len(chips) or (not cls_only and features.tokens.shape[1] != n_tokens):
            raise ConfigError(f"feature cache of shape {tuple(features.tokens.shape)} does not fit {len(chips)} chips "
                              f"with {n_tokens} tokens each")
        cache, cache_seconds = features, features.seconds
    elif cfg.cache_features:
        cache = FeatureCache(encoder, inputs, cfg.encode_batch_size, cls_only=cls_only)
        cache_seconds = cache.seconds
        log(f"encoded {len(cache)} chips once in {cache.seconds:.1f} s "
            f"({cache.nbytes / 2**20:.1f} MiB feature cache); epochs train from the cache")
    tokens = _Tokens(encoder, inputs, cache, cfg.encode_batch_size, cls_only)
    y_all = torch.from_numpy(np.ascontiguousarray(targets))
    counts: list[int] = []
    weights = None
    if kind != "regression":
        t = targets[train_idx].ravel()
        counts = np.bincount(t[t < k], minlength=k).tolist()
        cw = cfg.class_weights if cfg.class_weights is not None else class_weights_from_counts(counts, cfg.class_weighting)
        weights = torch.tensor(cw, dtype=torch.float32)
        log(f"training labels per class ({'pixels' if kind == 'segmentation' else 'chips'}): "
            + ", ".join(f"{n}={c}" for n, c in zip(class_names, counts))
            + "; loss weights " + ", ".join(f"{w:.2f}" for w in cw))
    loss_fn = _loss_fn(kind, weights)
    log(f"{kind} head on {len(train_idx)} chips of tiles {train_tiles}; validation: {len(val_idx)} chips of "
        f"held-out tiles {val_tiles}")

    bs = cfg.batch_size
    # Token statistics of the training chips only (the validation tiles stay unseen).
    head.norm.fit(tokens(torch.as_tensor(train_idx[s : s + bs])) for s in range(0, len(train_idx), bs))
    history: list[EpochLog] = []
    report, val_pred = _evaluate(head, kind, tokens, val_idx, y_all, loss_fn, class_names, bs)
    history.append(EpochLog(0, float("nan"), report, 0.0))
    log(history[-1].line() + "  <- untrained head")

    params = [p for p in head.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(train_idx) / bs)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch,
                                                pct_start=0.15)
    gen = torch.Generator().manual_seed(cfg.seed)
    train_t = torch.as_tensor(train_idx)
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        head.train()
        total, seen = 0.0, 0
        order = train_t[torch.randperm(len(train_t), generator=gen)]
        for s in range(0, len(order), bs):
            sel = order[s : s + bs]
            if len(sel) < 2 and kind != "classification" and len(order) > 1:
                continue  # BatchNorm statistics need more than one chip
            out = head(tokens(sel))
            loss = loss_fn(out, y_all[sel])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(sel)
            seen += len(sel)
        seconds = time.perf_counter() - t0
        report, val_pred = _evaluate(head, kind, tokens, val_idx, y_all, loss_fn, class_names, bs)
        history.append(EpochLog(epoch, total / max(seen, 1), report, seconds))
        log(history[-1].line())
    head.eval()
    return TrainResult(head, spec, cfg, class_names, history, train_tiles, val_tiles, len(train_idx), len(val_idx),
                       cache_seconds, val_idx, val_pred, targets[val_idx], counts,
                       [] if weights is None else weights.tolist())


def predict(encoder: ClayEncoder, head: nn.Module, spec: HeadSpec, chips: ChipData, batch_size: int = 16,
            with_confidence: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Class maps uint8 [N, H, W] (segmentation), classes uint8 [N] (classification) or float32 value maps.

    With ``with_confidence`` also the softmax probability of the predicted class (float16,
    same shape; NaN-free); for regression the second array is empty.
    """
    if len(chips) == 0:
        shape = (0,) if spec.kind == "classification" else (0, chips.chip_size, chips.chip_size)
        empty = np.zeros(shape, np.float32 if spec.kind == "regression" else np.uint8)
        return (empty, np.zeros(shape, np.float16)) if with_confidence else empty
    freeze(encoder)
    head.eval()
    inputs = chips.model_inputs()
    preds, confs = [], []
    with torch.no_grad():
        for s in range(0, len(chips), batch_size):
            idx = np.arange(s, min(s + batch_size, len(chips)))
            out = head(encode_tokens(encoder, inputs, idx, batch_size, cls_only=spec.kind == "classification"))
            if spec.kind == "regression":
                preds.append(out.numpy().astype(np.float32))
                confs.append(np.zeros((0,), np.float16))
            else:
                prob, cls = out.softmax(dim=1).max(dim=1)
                preds.append(cls.numpy().astype(np.uint8))
                confs.append(prob.numpy().astype(np.float16))
    pred = np.concatenate(preds)
    return (pred, np.concatenate(confs)) if with_confidence else pred


# --------------------------------------------------------------------------- checkpoints


def encoder_identity(encoder: ClayEncoder, preset: str, model_id: str, checkpoint_sha256: str | None) -> dict[str, Any]:
    """What a head checkpoint records about the encoder it was trained on."""
    return {"preset": str(preset), "model_id": str(model_id),
            "checkpoint_sha256": checkpoint_sha256 or None, "config": dict(encoder.config)}


def _describe_encoder(e: dict[str, Any]) -> str:
    sha = e.get("checkpoint_sha256")
    weights = f"checkpoint sha256 {sha[:12]}…" if sha else "seeded random weights"
    return f"{e.get('model_id')!r} (preset {e.get('preset')!r}, {weights})"


def check_encoder(trained: dict[str, Any], current: dict[str, Any], path: str | PathLike[str] = "head") -> None:
    """Raise ``CheckpointError`` unless ``current`` is the encoder the head was trained on."""
    same = (trained.get("preset") == current.get("preset")
            and trained.get("model_id") == current.get("model_id")
            and (trained.get("checkpoint_sha256") or None) == (current.get("checkpoint_sha256") or None)
            and dict(trained.get("config") or {}) == dict(current.get("config") or {}))
    if not same:
        raise CheckpointError(
            f"head checkpoint {path} was trained on encoder {_describe_encoder(trained)}, but the configured "
            f"encoder is {_describe_encoder(current)}; a head only works on the features of the encoder it was "
            "trained on: re-materialize head_model with this encoder, or configure the encoder above"
        )


def save_head(path: str | PathLike[str], result_or_head: TrainResult | nn.Module, *, encoder: dict[str, Any],
              spec: HeadSpec | None = None, class_names: Sequence[str] | None = None, chip_size: int,
              bands: Sequence[str], platform: str, extra: dict[str, Any] | None = None) -> Path:
    """Write a head checkpoint: a plain dict of tensors + metadata (``weights_only=True`` loadable)."""
    if isinstance(result_or_head, TrainResult):
        res = result_or_head
        head, spec, class_names = res.head, res.spec, res.class_names
        metrics = res.final.to_dict()
        metrics.pop("confusion", None)
        train = {**asdict(res.config), "train_tiles": res.train_tiles, "val_tiles": res.val_tiles,
                 "n_train": res.n_train, "n_val": res.n_val, "untrained_val": res.untrained.headline,
                 "val_metrics": metrics}
    else:
        head, train = result_or_head, {}
        if spec is None or class_names is None:
            raise ConfigError("save_head(head, ...) needs spec= and class_names=")
    payload = {
        "format": HEAD_FORMAT,
        "head": spec.to_dict(),
        "state_dict": {k: v.detach().cpu().clone() for k, v in head.state_dict().items()},
        "class_names": list(class_names),
        "encoder": dict(encoder),
        "chip_size": int(chip_size),
        "bands": [str(b) for b in bands],
        "platform": str(platform),
        "train": _plain(train),
        "saved_at": datetime.now(timezone.utc).isoformat(),
        **({"extra": _plain(extra)} if extra else {}),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, path)
    return path


def _plain(obj: Any) -> Any:
    """Only containers/scalars torch's weights-only unpickler accepts."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return str(obj)


@dataclass
class LoadedHead:
    head: nn.Module
    spec: HeadSpec
    class_names: list[str]
    meta: dict[str, Any]


def load_head(path: str | PathLike[str], encoder: dict[str, Any] | None = None) -> LoadedHead:
    """Load a head checkpoint (``weights_only=True``) in eval mode.

    With ``encoder`` (an :func:`encoder_identity`), a head trained on a different encoder
    preset, model id, checkpoint hash or config is refused with ``CheckpointError``.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"head checkpoint not found: {path}; materialize head_model first")
    obj = _torch_load(path)
    if not isinstance(obj, dict) or obj.get("format") != HEAD_FORMAT:
        fmt = obj.get("format") if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(f"{path} is not a Clay head checkpoint (format {fmt!r}, expected {HEAD_FORMAT!r})")
    if encoder is not None:
        check_encoder(obj.get("encoder") or {}, encoder, path)
    try:
        spec = HeadSpec.from_dict(dict(obj["head"]))
    except (KeyError, TypeError, ConfigError) as exc:
        raise CheckpointError(f"head checkpoint {path} has an invalid head spec: {exc}") from exc
    head = build_head(spec, seed=None)
    try:
        head.load_state_dict(obj["state_dict"], strict=True)
    except (RuntimeError, KeyError) as exc:
        raise CheckpointError(f"head checkpoint {path} does not fit a {spec.kind} head {spec.to_dict()}: {exc}") from exc
    meta = {k: v for k, v in obj.items() if k != "state_dict"}
    return LoadedHead(head.eval(), spec, list(obj.get("class_names") or []), meta)


# --------------------------------------------------------------------------- images

_PALETTE = {
    "forest": (34, 100, 34), "cropland": (200, 200, 70), "water": (40, 90, 200), "bare": (170, 130, 90),
    "cleared": (220, 60, 50),
}


def class_palette(class_names: Sequence[str]) -> np.ndarray:
    """uint8 [K + 1, 3] colours; the last row is for unlabelled pixels."""
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    rows = [_PALETTE.get(n, tuple(int(255 * c) for c in cmap(i % 10)[:3])) for i, n in enumerate(class_names)]
    return np.array(rows + [(0, 0, 0)], dtype=np.uint8)


def colorize(maps: np.ndarray, class_names: Sequence[str]) -> np.ndarray:
    """Class maps [..., H, W] -> RGB uint8 [..., H, W, 3] (unknown classes black)."""
    pal = class_palette(class_names)
    idx = np.where(np.asarray(maps) < len(class_names), maps, len(class_names)).astype(np.int64)
    return pal[idx]


def _values_rgb(v: np.ndarray, lo: float, hi: float) -> np.ndarray:
    import matplotlib

    x = np.clip((np.nan_to_num(v, nan=lo) - lo) / max(hi - lo, 1e-9), 0, 1)
    return (matplotlib.colormaps["viridis"](x)[..., :3] * 255).astype(np.uint8)


def preview_image(chips: ChipData, labels: np.ndarray, preds: np.ndarray, class_names: Sequence[str], kind: str,
                  n: int = 6, scale: int = 1) -> np.ndarray:
    """Rows of [RGB | label | prediction] for the first ``n`` chips (uint8 RGB image)."""
    from clay_core.chips import rgb_image

    n = min(n, len(chips))
    cs = chips.chip_size
    pad = 2
    out = np.full((n * (cs + pad) + pad, 3 * (cs + pad) + pad, 3), 24, np.uint8)
    if kind == "regression":
        finite = labels[np.isfinite(labels)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    for i in range(n):
        rgb = rgb_image(chips.pixels[i], chips.bands, size=None)
        if kind == "regression":
            lab, pre = _values_rgb(labels[i], lo, hi), _values_rgb(preds[i], lo, hi)
        elif kind == "classification":
            lab = np.broadcast_to(colorize(np.asarray(labels[i]), class_names), (cs, cs, 3))
            pre = np.broadcast_to(colorize(np.asarray(preds[i]), class_names), (cs, cs, 3))
        else:
            lab, pre = colorize(labels[i], class_names), colorize(preds[i], class_names)
        y = pad + i * (cs + pad)
        for j, img in enumerate((rgb, lab, pre)):
            x = pad + j * (cs + pad)
            out[y : y + cs, x : x + cs] = img[:cs, :cs]
    if scale > 1:
        out = out.repeat(scale, axis=0).repeat(scale, axis=1)
    return out


# --------------------------------------------------------------------------- command line


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m clay_core.heads.training",
        description="Train a head on a frozen Clay encoder over the synthetic world (spatial hold-out by tile) "
                    "and print per-epoch validation metrics and the final metric table.",
    )
    d = TrainConfig()
    ap.add_argument("--head", choices=HEAD_TYPES, default=d.head)
    ap.add_argument("--epochs", type=int, default=d.epochs)
    ap.add_argument("--lr", type=float, default=d.lr)
    ap.add_argument("--batch-size", type=int, default=d.batch_size)
    ap.add_argument("--hidden", type=int, default=d.hidden)
    ap.add_argument("--channels", type=int, default=d.channels)
    ap.add_argument("--class-weights", type=float, nargs="+", default=None, help="one loss weight per class")
    ap.add_argument("--class-weighting", choices=CLASS_WEIGHTINGS, default=d.class_weighting,
                    help="weights from training label counts (unless --class-weights)")
    ap.add_argument("--seed", type=int, default=d.seed, help="head initialisation and batch order")
    ap.add_argument("--world-seed", type=int, default=0, help="synthetic world seed")
    ap.add_argument("--no-cache", action="store_true", help="run the encoder in every epoch (no feature cache)")
    ap.add_argument("--preset", default="tiny", help="encoder preset (seeded random weights unless --checkpoint)")
    ap.add_argument("--checkpoint", default=None, help="encoder checkpoint file")
    ap.add_argument("--tiles", nargs="+", default=["31UFU", "32UNB", "31TCJ"])
    ap.add_argument("--val-tiles", nargs="+", default=["31TCJ"])
    ap.add_argument("--size", type=int, default=256, help="synthetic world size in px")
    ap.add_argument("--chip-size", type=int, default=64)
    ap.add_argument("--weeks", type=int, default=8, help="weekly acquisitions from 2024-01-01")
    ap.add_argument("--save", default=None, help="write the head checkpoint here")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    ap.add_argument("--json", action="store_true", help="also print one JSON line with the results")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from datetime import timedelta

    from clay_core.heads.labels import SyntheticLabels
    from clay_core.encoder.model import build_encoder, file_sha256, load_encoder, model_id
    from clay_core.sources.synthetic import SyntheticSceneSource, SyntheticWorld

    args = _parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    tiles = tuple(t.upper() for t in args.tiles)
    world = SyntheticWorld(tiles=tiles, size=args.size, seed=args.world_seed)
    source = SyntheticSceneSource(world)
    start = datetime(2024, 1, 1, tzinfo=timezone.utc)
    chips = source_chips(source, tiles, start, start + timedelta(weeks=args.weeks), args.chip_size)
    labels = SyntheticLabels(source)
    targets = make_targets(args.head, labels, chips)
    if args.checkpoint:
        encoder = load_encoder(args.checkpoint, args.preset)
        sha = file_sha256(args.checkpoint)
    else:
        encoder = build_encoder(args.preset, seed=0)
        sha = None
    mid = model_id(args.preset, args.checkpoint, 0)
    cfg = TrainConfig(head=args.head, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                      class_weights=args.class_weights, class_weighting=args.class_weighting, val_tiles=args.val_tiles, seed=args.seed,
                      cache_features=not args.no_cache, hidden=args.hidden, channels=args.channels)
    print(f"# {args.head} head on {mid}: {len(chips)} chips of {args.chip_size} px from {len(tiles)} tiles x "
          f"{args.weeks} weeks (synthetic world {args.size} px); torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; data prepared in {time.perf_counter() - t0:.1f} s", flush=True)
    res = train_head(encoder, chips, targets, labels.class_names, cfg, log=lambda m: print(m, flush=True))
    print()
    print(f"train tiles {res.train_tiles} ({res.n_train} chips), validation tiles {res.val_tiles} ({res.n_val} chips)")
    print(f"feature cache: {res.cache_seconds:.1f} s once; training: {res.seconds_per_epoch:.2f} s/epoch "
          f"(mean of {cfg.epochs})")
    print()
    print(res.history_md())
    print()
    print(f"final validation metrics (held-out tiles {res.val_tiles}):")
    print()
    print(res.final.table_md())
    if isinstance(res.final, MetricReport):
        print()
        print(res.final.confusion_md())
    if args.save:
        path = save_head(args.save, res, encoder=encoder_identity(encoder, args.preset, mid, sha),
                         chip_size=chips.chip_size, bands=chips.bands, platform=chips.platform)
        print(f"\nsaved {path}")
    if args.json:
        print(json.dumps({"head": args.head, "untrained": res.untrained.headline, "final": res.final.to_dict(),
                          "seconds_per_epoch": res.seconds_per_epoch, "cache_seconds": res.cache_seconds,
                          "n_train": res.n_train, "n_val": res.n_val, "total_seconds": time.perf_counter() - t0},
                         default=float))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

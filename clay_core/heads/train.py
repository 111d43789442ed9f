"""Training a head on the frozen Clay encoder: :func:`train_head`.

The encoder is frozen; with ``cache_features`` its output is computed once per chip
(:class:`~clay_core.heads.features.FeatureCache`) and every epoch trains from the cache. The
untrained head is scored first (epoch 0), then every epoch, on the validation tiles (disjoint
from the training tiles, :func:`~clay_core.heads.data.split_by_tile`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from clay_core.chips import ChipSet
from clay_core.encoder import ClayEncoder, ModelInputs
from clay_core.errors import ConfigError
from clay_core.heads.data import chip_inputs, split_by_tile
from clay_core.heads.features import FeatureCache, encode_tokens
from clay_core.heads.labels import IGNORE
from clay_core.heads.metrics import ClassMetrics, MetricReport, ValueMetrics, ValueReport
from clay_core.heads.modules import HEAD_TYPES, HeadSpec, build_head, freeze

__all__ = ["TrainConfig", "CLASS_WEIGHTINGS", "class_weights_from_counts", "EpochLog", "TrainResult", "Log",
           "train_head"]

Log = Callable[[str], None]


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

    def __init__(self, encoder: ClayEncoder, inputs: ModelInputs, cache: FeatureCache | None, batch_size: int,
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


def train_head(encoder: ClayEncoder, chips: ChipSet, targets: np.ndarray, class_names: Sequence[str],
               config: TrainConfig | None = None, log: Log | None = None,
               split: tuple[np.ndarray, np.ndarray] | None = None,
               features: FeatureCache | None = None) -> TrainResult:
    """Train a ``config.head`` head on the frozen ``encoder``; validate on held-out tiles.

    ``targets`` come from :func:`~clay_core.heads.data.make_targets`; ``split`` (train index,
    val index) overrides :func:`~clay_core.heads.data.split_by_tile`; ``features`` is a ready
    :class:`FeatureCache` of these chips (one cache can serve several heads). Deterministic on
    the CPU for a given seed.
    """
    cfg = config or TrainConfig()
    log = log or (lambda _m: None)
    kind = cfg.head
    class_names = list(class_names) if kind != "regression" else ["value"]
    if len(targets) != len(chips):
        raise ConfigError(f"{len(targets)} targets for {len(chips)} chips")
    if cfg.class_weights is not None and kind != "regression" and len(cfg.class_weights) != len(class_names):
        raise ConfigError(f"class_weights has {len(cfg.class_weights)} values for {len(class_names)} classes "
                          f"{class_names}")
    train_idx, val_idx, train_tiles, val_tiles = _split(chips, cfg, split)
    freeze(encoder)
    spec = _head_spec(encoder, chips.chip_size, cfg, len(class_names))
    head = build_head(spec, seed=cfg.seed)
    tokens, cache_seconds = _token_source(encoder, chips, spec, cfg, features, log)
    counts, weights = _loss_weights(kind, targets[train_idx], class_names, cfg, log)
    loss_fn = _loss_fn(kind, weights)
    log(f"{kind} head on {len(train_idx)} chips of tiles {train_tiles}; validation: {len(val_idx)} chips of "
        f"held-out tiles {val_tiles}")
    fit = _Fit(head, kind, tokens, torch.from_numpy(np.ascontiguousarray(targets)), loss_fn, class_names, cfg, log)
    history, val_pred = fit.run(train_idx, val_idx)
    head.eval()
    return TrainResult(head, spec, cfg, class_names, history, train_tiles, val_tiles, len(train_idx), len(val_idx),
                       cache_seconds, val_idx, val_pred, targets[val_idx], counts,
                       [] if weights is None else weights.tolist())


def _split(chips: ChipSet, cfg: TrainConfig,
           split: tuple[np.ndarray, np.ndarray] | None) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    if split is None:
        train_idx, val_idx, train_tiles, val_tiles = split_by_tile(chips.tiles, cfg.val_tiles, cfg.val_fraction,
                                                                   cfg.seed)
    else:
        train_idx, val_idx = (np.asarray(s, dtype=np.int64) for s in split)
        train_tiles = sorted(set(chips.tiles[train_idx].tolist()))
        val_tiles = sorted(set(chips.tiles[val_idx].tolist()))
    if len(train_idx) == 0 or len(val_idx) == 0:
        raise ConfigError(f"empty split: {len(train_idx)} training and {len(val_idx)} validation chips")
    return train_idx, val_idx, train_tiles, val_tiles


def _head_spec(encoder: ClayEncoder, chip_size: int, cfg: TrainConfig, k: int) -> HeadSpec:
    patch = encoder.patch_size
    if chip_size % patch:
        raise ConfigError(f"chip size {chip_size} is not a multiple of the patch size {patch}")
    n_tokens = 1 if cfg.head == "classification" else 1 + (chip_size // patch) ** 2
    return HeadSpec(kind=cfg.head, dim=int(encoder.dim), n_out=1 if cfg.head == "regression" else k,
                    n_tokens=n_tokens, patch_size=patch, hidden=cfg.hidden, channels=cfg.channels,
                    dropout=cfg.dropout)


def _token_source(encoder: ClayEncoder, chips: ChipSet, spec: HeadSpec, cfg: TrainConfig,
                  features: FeatureCache | None, log: Log) -> tuple[_Tokens, float]:
    """Where batches get their tokens (``features``, a new cache, or the encoder) + cache seconds."""
    cls_only = spec.kind == "classification"
    inputs = chip_inputs(chips)
    cache = None
    if features is not None:
        if len(features) != len(chips) or (not cls_only and features.tokens.shape[1] != spec.n_tokens):
            raise ConfigError(f"feature cache of shape {tuple(features.tokens.shape)} does not fit {len(chips)} chips "
                              f"with {spec.n_tokens} tokens each")
        cache = features
    elif cfg.cache_features:
        cache = FeatureCache(encoder, inputs, cfg.encode_batch_size, cls_only=cls_only)
        log(f"encoded {len(cache)} chips once in {cache.seconds:.1f} s "
            f"({cache.nbytes / 2**20:.1f} MiB feature cache); epochs train from the cache")
    return _Tokens(encoder, inputs, cache, cfg.encode_batch_size, cls_only), cache.seconds if cache is not None else 0.0


def _loss_weights(kind: str, train_targets: np.ndarray, class_names: list[str], cfg: TrainConfig,
                  log: Log) -> tuple[list[int], torch.Tensor | None]:
    """Training label counts per class and the class weights of the loss (none for regression)."""
    if kind == "regression":
        return [], None
    k = len(class_names)
    t = train_targets.ravel()
    counts = np.bincount(t[t < k], minlength=k).tolist()
    cw = cfg.class_weights if cfg.class_weights is not None else class_weights_from_counts(counts, cfg.class_weighting)
    log(f"training labels per class ({'pixels' if kind == 'segmentation' else 'chips'}): "
        + ", ".join(f"{n}={c}" for n, c in zip(class_names, counts))
        + "; loss weights " + ", ".join(f"{w:.2f}" for w in cw))
    return counts, torch.tensor(cw, dtype=torch.float32)


@dataclass
class _Fit:
    """The optimisation loop of :func:`train_head` (AdamW, one-cycle learning rate)."""

    head: nn.Module
    kind: str
    tokens: _Tokens
    y: torch.Tensor
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    class_names: list[str]
    cfg: TrainConfig
    log: Log

    def evaluate(self, val_idx: np.ndarray) -> tuple[MetricReport | ValueReport, np.ndarray]:
        return _evaluate(self.head, self.kind, self.tokens, val_idx, self.y, self.loss_fn, self.class_names,
                         self.cfg.batch_size)

    def run(self, train_idx: np.ndarray, val_idx: np.ndarray) -> tuple[list[EpochLog], np.ndarray]:
        cfg, bs = self.cfg, self.cfg.batch_size
        # Token statistics of the training chips only (the validation tiles stay unseen).
        self.head.norm.fit(self.tokens(torch.as_tensor(train_idx[s : s + bs])) for s in range(0, len(train_idx), bs))
        report, val_pred = self.evaluate(val_idx)
        history = [EpochLog(0, float("nan"), report, 0.0)]
        self.log(history[-1].line() + "  <- untrained head")
        params = [p for p in self.head.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, pct_start=0.15,
                                                    total_steps=cfg.epochs * math.ceil(len(train_idx) / bs))
        gen = torch.Generator().manual_seed(cfg.seed)
        train_t = torch.as_tensor(train_idx)
        for epoch in range(1, cfg.epochs + 1):
            t0 = time.perf_counter()
            loss = self.epoch(train_t[torch.randperm(len(train_t), generator=gen)], opt, sched)
            seconds = time.perf_counter() - t0
            report, val_pred = self.evaluate(val_idx)
            history.append(EpochLog(epoch, loss, report, seconds))
            self.log(history[-1].line())
        return history, val_pred

    def epoch(self, order: torch.Tensor, opt: torch.optim.Optimizer, sched: Any) -> float:
        """One pass over the training chips in ``order``; the mean training loss."""
        self.head.train()
        total, seen = 0.0, 0
        bs = self.cfg.batch_size
        for s in range(0, len(order), bs):
            sel = order[s : s + bs]
            if len(sel) < 2 and self.kind != "classification" and len(order) > 1:
                continue  # BatchNorm statistics need more than one chip
            out = self.head(self.tokens(sel))
            loss = self.loss_fn(out, self.y[sel])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(sel)
            seen += len(sel)
        return total / max(seen, 1)

"""Head metrics: :class:`ClassMetrics` (torchmetrics ``JaccardIndex``, ``F1Score``,
``ConfusionMatrix``, accuracy) and :class:`ValueMetrics` (RMSE, MAE, R^2), and their reports.

Mean IoU and macro F1 average the per-class scores over the classes present in the labels
or the predictions (a class absent from both has no score, not 0).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from clay_core.heads.labels import IGNORE

__all__ = ["MetricReport", "ValueReport", "ClassMetrics", "ValueMetrics"]


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

"""``head_model``: a task head (segmentation | classification | regression) trained on the frozen
Clay encoder over the chips of every materialized ``chip_cubes`` partition, with labels from the
``labels`` resource (synthetic land cover, label GeoTIFFs, or a chip -> class table) and
validation on held-out tiles. Writes ``heads/head_model/head.pt`` (a plain dict of tensors and
metadata that names the encoder it was trained on), a prediction-vs-label preview and the
metric tables.
"""

import time
from typing import List, Optional

import numpy as np
from dagster import AssetExecutionContext, Config, DataVersion, MaterializeResult, MetadataValue
from dagster import asset
from pydantic import Field

from clay_assets.metadata import image_md
from clay_assets.resources import ClayHome, ClayModel, LabelSettings, SceneSourceResource
from clay_core.heads import HeadModelResult, TrainConfig, train_head_stage

HEAD_MODEL_DESCRIPTION = (
    "Task head (segmentation | classification | regression) trained on the frozen Clay encoder over the chips of "
    "every materialized chip_cubes partition; labels from the `labels` resource; validation on held-out tiles. "
    "Writes heads/head_model/head.pt (weights_only-loadable) with the encoder preset, model id and checkpoint hash "
    "it was trained on, and per-class IoU / F1 / confusion matrix metadata."
)


class HeadTrainingConfig(Config):
    """Run config of ``head_model`` (defaults = clay_core.heads.TrainConfig)."""

    head: str = Field(default="segmentation", description="segmentation | classification | regression")
    epochs: int = 12
    lr: float = 5e-3
    batch_size: int = 16
    weight_decay: float = 1e-4
    class_weights: Optional[List[float]] = Field(default=None, description="one loss weight per class")
    class_weighting: str = Field(default="sqrt-inverse",
                                 description="weights from training label counts: none | inverse | sqrt-inverse")
    val_tiles: Optional[List[str]] = Field(default=None, description="held-out validation tiles")
    val_fraction: float = Field(default=0.34, description="share of tiles held out when val_tiles is not set")
    seed: int = 0
    cache_features: bool = Field(default=True, description="encode each chip once and train every epoch from the cache")
    hidden: int = 64
    channels: int = 16
    tiles: Optional[List[str]] = Field(default=None, description="train on these tiles only (default: all)")
    windows: Optional[List[str]] = Field(default=None, description="train on these weekly windows only (default: all)")

    def train_config(self) -> TrainConfig:
        return TrainConfig(
            head=self.head, epochs=self.epochs, lr=self.lr, batch_size=self.batch_size,
            weight_decay=self.weight_decay, class_weights=self.class_weights, class_weighting=self.class_weighting,
            val_tiles=self.val_tiles, val_fraction=self.val_fraction, seed=self.seed,
            cache_features=self.cache_features, hidden=self.hidden, channels=self.channels,
        )


@asset(deps=["chip_cubes"], group_name="clay", code_version="head-1", description=HEAD_MODEL_DESCRIPTION)
def head_model(
    context: AssetExecutionContext,
    config: HeadTrainingConfig,
    home: ClayHome,
    model: ClayModel,
    source: SceneSourceResource,
    labels: LabelSettings,
) -> MaterializeResult:
    t0 = time.perf_counter()
    loaded = model.load()
    out = train_head_stage(
        home.layout, loaded, labels.build(source.get_source()),
        config.train_config(), open_cube=home.open_cube, platform=model.platform, tiles=config.tiles,
        windows=config.windows, log=context.log.info,
    )  # fmt: skip
    return MaterializeResult(metadata=_metadata(out, t0), data_version=DataVersion(out.head_sha256[:16]))


def _metadata(out: HeadModelResult, t0: float) -> dict:
    res, cfg, f = out.train, out.train.config, out.train.final
    md = {
        "head": cfg.head,
        "checkpoint": MetadataValue.path(str(out.checkpoint)),
        "head_sha256": out.head_sha256,
        "encoder_preset": out.model.preset,
        "encoder_model_id": out.model.model_id,
        "encoder_checkpoint_sha256": out.model.checkpoint_sha256 or "none (seeded random weights)",
        "chips_train": res.n_train,
        "chips_val": res.n_val,
        "train_tiles": ", ".join(res.train_tiles),
        "val_tiles (held out)": ", ".join(res.val_tiles),
        "partitions": len(out.partitions),
        "labels": out.labels,
        "epochs": cfg.epochs,
        "seconds_per_epoch": round(res.seconds_per_epoch, 3),
        "feature_cache_seconds": round(res.cache_seconds, 3),
        "history": MetadataValue.md(res.history_md()),
        "prediction_vs_label": image_md(out.preview, "validation chips: RGB | label | prediction"),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    if cfg.head == "regression":
        md.update({"rmse": f.rmse, "mae": f.mae, "r2": f.r2, "untrained_r2": res.untrained.r2,
                   "metrics": MetadataValue.md(f.table_md())})
    else:
        md.update({
            "mean_iou": f.mean_iou, "untrained_mean_iou": res.untrained.mean_iou, "macro_f1": f.macro_f1,
            "accuracy": f.accuracy,
            "per_class_iou": MetadataValue.json({n: (None if np.isnan(v) else round(v, 4))
                                                 for n, v in zip(f.class_names, f.per_class_iou)}),
            "metrics": MetadataValue.md(f.table_md()),
            "confusion_matrix": MetadataValue.md(f.confusion_md()),
        })
    return md

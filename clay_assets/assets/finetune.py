"""Fine-tuned task heads on the frozen Clay encoder, and their per-partition predictions.

``head_model`` (unpartitioned) trains a segmentation, classification or regression head on
the chips of every materialized ``chip_cubes`` partition, with labels from the configured
label source (synthetic land cover, label GeoTIFFs, or a chip -> class table). Validation is
on held-out tiles. It writes ``heads/head_model/head.pt`` (a plain dict of tensors and
metadata that names the encoder it was trained on), a prediction-vs-label preview and the
metric tables.

``head_predictions`` (per tile x window) runs that head over the partition's chip cube:
class maps (or value maps) per chip in ``predictions.zarr``, and per-class pixel counts and
areas in Postgres ``clay.class_areas`` (the partition's rows replaced in one transaction).
A head trained on another encoder preset or checkpoint is refused.
"""


import hashlib
import json
import os
import time
from pathlib import Path
from typing import List, Optional

import numpy as np
import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    BackfillPolicy,
    Config,
    ConfigurableResource,
    DataVersion,
    MaterializeResult,
    MetadataValue,
    asset,
)
from pydantic import Field

from clay_assets.metadata import image_md
from clay_assets.partitions import scene_partitions, split_key
from clay_assets.resources import ClayHome, ClayModel, SceneSourceResource, VectorDB
from clay_core.vectordb import redact
from clay_core.errors import ConfigError
from clay_core.heads.training import (
    ChipData,
    TrainConfig,
    colorize,
    encoder_identity,
    load_head,
    make_targets,
    predict,
    preview_image,
    read_cube_chips,
    save_head,
    train_head,
)
from clay_core.heads.labels import LabelSource, RasterLabels, SyntheticLabels, TableLabels
from clay_core.vectordb.class_areas import CLASS_AREAS_TABLE, write_class_areas
from clay_core.storage.layout import atomic_dir, read_manifest, write_manifest

HEAD_DIR = ("heads", "head_model")

HEAD_MODEL_DESCRIPTION = (
    "Task head (segmentation | classification | regression) trained on the frozen Clay encoder over the chips of "
    "every materialized chip_cubes partition; labels from the `labels` resource; validation on held-out tiles. "
    "Writes heads/head_model/head.pt (weights_only-loadable) with the encoder preset, model id and checkpoint hash "
    "it was trained on, and per-class IoU / F1 / confusion matrix metadata."
)
HEAD_PREDICTIONS_DESCRIPTION = (
    "The head_model head applied to the partition's chips: class (or value) maps per chip in predictions.zarr, "
    "and per-class pixel counts and areas in Postgres clay.class_areas (partition rows replaced in one "
    "transaction). Refuses a head trained on another encoder."
)


# --------------------------------------------------------------------------- resources & config


class LabelSettings(ConfigurableResource):
    """Where labels come from.

    ``kind``: ``synthetic`` (land cover of the synthetic scene source), ``raster`` (label
    GeoTIFF(s) at ``path``, which may contain ``{tile}`` and ``{date}``; ``values=True`` for a
    continuous regression target) or ``table`` (CSV/Parquet ``chip_id -> class`` at ``path``).
    ``class_names`` maps raster values / table indices to names.
    """

    kind: str = "synthetic"
    path: Optional[str] = None
    class_names: Optional[List[str]] = None
    band: int = 1
    values: bool = False

    def build(self, scene_source) -> LabelSource:
        kind = self.kind.strip().lower()
        if kind == "synthetic":
            return SyntheticLabels(scene_source)
        if kind in ("raster", "table") and not self.path:
            raise ConfigError(f"label source kind={kind!r} needs a path (CLAY_LABELS_PATH)")
        if kind == "raster":
            return RasterLabels(self.path, self.class_names, band=self.band, kind="values" if self.values else "classes")
        if kind == "table":
            return TableLabels(self.path, self.class_names)
        raise ConfigError(f"unknown label source kind {self.kind!r}; use synthetic, raster or table")


def labels_from_env() -> LabelSettings:
    """``CLAY_LABELS`` (synthetic | raster | table), ``CLAY_LABELS_PATH``, ``CLAY_LABEL_CLASSES`` (a,b,c)."""
    classes = [c.strip() for c in os.environ.get("CLAY_LABEL_CLASSES", "").split(",") if c.strip()]
    return LabelSettings(
        kind=os.environ.get("CLAY_LABELS", "synthetic"),
        path=os.environ.get("CLAY_LABELS_PATH") or None,
        class_names=classes or None,
        values=os.environ.get("CLAY_LABELS_VALUES", "0") in ("1", "true", "yes"),
    )


class HeadTrainingConfig(Config):
    """Run config of ``head_model`` (defaults = clay_core.heads.training.TrainConfig)."""

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


# --------------------------------------------------------------------------- helpers


def head_dir(home: ClayHome) -> Path:
    return home.layout.root.joinpath(*HEAD_DIR)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _materialized_partitions(home: ClayHome, tiles: Optional[List[str]], windows: Optional[List[str]]) -> list:
    chips_root = home.layout.root / "chips"
    out = []
    if not chips_root.is_dir():
        return out
    for tile_dir in sorted(p for p in chips_root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        tile = tile_dir.name
        if tiles and tile not in {t.upper() for t in tiles}:
            continue
        for window in home.layout.windows("chips", tile):
            if windows and window not in windows:
                continue
            out.append((tile, window))
    return out


def _load_chips(home: ClayHome, parts: list, platform: str) -> ChipData:
    sets = []
    for tile, window in parts:
        d = home.layout.partition("chips", tile, window)
        if int(read_manifest(d)["chips"]) == 0:
            continue
        sets.append(read_cube_chips(home.open_cube(tile, window), tile, platform))
    return ChipData.concat(sets)


def _encoder(model: ClayModel):
    encoder, device, mid, sha = model.load()
    return encoder, mid, encoder_identity(encoder, model.preset, mid, sha)


def _class_areas(chips: ChipData, pred: np.ndarray, kind: str, class_names: List[str], tile: str, partition_key: str):
    """Rows (partition_key, tile, acquired, class, pixels, area_m2): every class on every acquisition date."""
    cs = chips.chip_size
    refs = chips.refs
    pixel_area = ((refs["x_max"] - refs["x_min"]).to_numpy(float) / cs) * ((refs["y_max"] - refs["y_min"]).to_numpy(float) / cs)
    k = len(class_names)
    if kind == "classification":
        counts = np.zeros((len(chips), k), np.int64)
        counts[np.arange(len(chips)), pred.astype(np.int64)] = cs * cs
    else:
        counts = np.stack([np.bincount(m.ravel().astype(np.int64), minlength=k)[:k] for m in pred]) if len(chips) \
            else np.zeros((0, k), np.int64)
    acquired = pd.to_datetime(refs["datetime"], utc=True).dt.date.to_numpy()
    rows = []
    for day in sorted(set(acquired.tolist())):
        sel = acquired == day
        for c, name in enumerate(class_names):
            px = int(counts[sel, c].sum())
            rows.append((partition_key, tile, day, name, px, float((counts[sel, c] * pixel_area[sel]).sum())))
    return rows


def _areas_md(rows: list) -> str:
    lines = ["| acquired | class | pixels | area (ha) |", "|---|---|---:|---:|"]
    for _, _, day, name, px, area in rows:
        lines.append(f"| {day} | {name} | {px} | {area / 1e4:.2f} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- assets


@asset(
    deps=["chip_cubes"],
    group_name="clay",
    code_version="head-1",
    description=HEAD_MODEL_DESCRIPTION,
)
def head_model(
    context: AssetExecutionContext,
    config: HeadTrainingConfig,
    home: ClayHome,
    model: ClayModel,
    source: SceneSourceResource,
    labels: LabelSettings,
) -> MaterializeResult:
    t0 = time.perf_counter()
    cfg = config.train_config()
    parts = _materialized_partitions(home, config.tiles, config.windows)
    if not parts:
        raise ConfigError(f"no materialized chip_cubes partitions under {home.layout.root / 'chips'}"
                          f"{' for tiles ' + str(config.tiles) if config.tiles else ''}"
                          f"{' in windows ' + str(config.windows) if config.windows else ''}: materialize chip_cubes first")
    chips = _load_chips(home, parts, model.platform)
    label_source = labels.build(source.get_source())
    context.log.info(f"{len(chips)} chips from {len(parts)} partitions; labels: {label_source.describe()}")
    targets = make_targets(cfg.head, label_source, chips)
    encoder, mid, ident = _encoder(model)
    res = train_head(encoder, chips, targets, label_source.class_names, cfg, log=context.log.info)

    final = head_dir(home)
    val_chips = chips.subset(res.val_index)
    preview = preview_image(val_chips, res.val_targets, res.val_predictions, res.class_names, cfg.head, n=6, scale=2)
    with atomic_dir(final) as tmp:
        save_head(tmp / "head.pt", res, encoder=ident, chip_size=chips.chip_size, bands=chips.bands,
                  platform=chips.platform, extra={"partitions": [f"{w}|{t}" for t, w in parts],
                                                  "labels": label_source.describe()})
        from clay_core.chips import png_bytes

        (tmp / "preview.png").write_bytes(png_bytes(preview))
        (tmp / "metrics.json").write_text(json.dumps(
            {"history": [{"epoch": h.epoch, "train_loss": h.train_loss, "seconds": h.seconds, **h.val.to_dict()}
                         for h in res.history]}, default=float, indent=1))
        sha = _sha256(tmp / "head.pt")
        write_manifest(tmp, {"head": cfg.head, "model_id": mid, "head_sha256": sha, "chips": len(chips),
                             "train_tiles": res.train_tiles, "val_tiles": res.val_tiles})
    f = res.final
    md = {
        "head": cfg.head,
        "checkpoint": MetadataValue.path(str(final / "head.pt")),
        "head_sha256": sha,
        "encoder_preset": model.preset,
        "encoder_model_id": mid,
        "encoder_checkpoint_sha256": ident["checkpoint_sha256"] or "none (seeded random weights)",
        "chips_train": res.n_train,
        "chips_val": res.n_val,
        "train_tiles": ", ".join(res.train_tiles),
        "val_tiles (held out)": ", ".join(res.val_tiles),
        "partitions": len(parts),
        "labels": label_source.describe(),
        "epochs": cfg.epochs,
        "seconds_per_epoch": round(res.seconds_per_epoch, 3),
        "feature_cache_seconds": round(res.cache_seconds, 3),
        "history": MetadataValue.md(res.history_md()),
        "prediction_vs_label": image_md(preview, "validation chips: RGB | label | prediction"),
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
    return MaterializeResult(metadata=md, data_version=DataVersion(sha[:16]))


@asset(
    partitions_def=scene_partitions,
    deps=["chip_cubes", "head_model"],
    group_name="clay",
    code_version="head-predictions-1",
    description=HEAD_PREDICTIONS_DESCRIPTION,
    backfill_policy=BackfillPolicy.multi_run(max_partitions_per_run=1),
    check_specs=[AssetCheckSpec("class_areas_cover_chips", asset="head_predictions", blocking=True,
                                description="the partition's clay.class_areas pixels add up to its chips' pixels")],
)
def head_predictions(
    context: AssetExecutionContext, home: ClayHome, model: ClayModel, vectordb: VectorDB
) -> MaterializeResult:
    import xarray as xr

    t0 = time.perf_counter()
    tile, window = split_key(context.partition_key)
    pkey = f"{window}|{tile}"
    encoder, mid, ident = _encoder(model)
    ckpt = head_dir(home) / "head.pt"
    loaded = load_head(ckpt, encoder=ident)  # CheckpointError if trained on another encoder
    head_sha = _sha256(ckpt)
    kind, names = loaded.spec.kind, loaded.class_names
    chips_dir = home.layout.partition("chips", tile, window)
    n = int(read_manifest(chips_dir)["chips"])
    final = home.layout.partition("predictions", tile, window)
    rows: list = []
    preview = None
    with atomic_dir(final) as tmp:
        if n:
            chips = read_cube_chips(home.open_cube(tile, window), tile, model.platform)
            if chips.chip_size != int(loaded.meta.get("chip_size", chips.chip_size)) or \
                    list(chips.bands) != list(loaded.meta.get("bands", chips.bands)):
                raise ConfigError(f"head {ckpt} was trained on {loaded.meta.get('chip_size')} px chips of bands "
                                  f"{loaded.meta.get('bands')}; partition {pkey} has {chips.chip_size} px chips of "
                                  f"{chips.bands}: re-materialize head_model")
            pred, conf = predict(encoder, loaded.head, loaded.spec, chips, batch_size=model.batch_size,
                                 with_confidence=True)
            dims = ("chip",) if kind == "classification" else ("chip", "y", "x")
            var = "value_map" if kind == "regression" else ("class" if kind == "classification" else "class_map")
            data_vars = {var: (dims, pred)}
            if kind != "regression":
                data_vars["confidence"] = (dims, conf)
            when = pd.to_datetime(chips.refs["datetime"], utc=True).dt.tz_localize(None).to_numpy()
            ds = xr.Dataset(data_vars, coords={
                "chip_id": ("chip", chips.refs["chip_id"].astype(str).to_numpy(dtype=object)),
                "datetime": ("chip", when.astype("datetime64[ns]")),
                "row": ("chip", chips.refs["row"].to_numpy("int32")),
                "col": ("chip", chips.refs["col"].to_numpy("int32")),
            })
            ds.attrs.update(head=kind, class_names=json.dumps(names), head_sha256=head_sha, model_id=mid,
                            chip_size=chips.chip_size)
            ds.to_zarr(tmp / "predictions.zarr", mode="w", zarr_format=3, consolidated=False)
            if kind != "regression":
                rows = _class_areas(chips, pred, kind, names, tile, pkey)
                maps = pred if kind == "segmentation" else np.broadcast_to(
                    pred[:, None, None], (len(pred), chips.chip_size, chips.chip_size))
                from clay_core.chips import mosaic, rgb_image

                tiles_img = []
                for i in range(min(len(chips), 16)):
                    tiles_img.append(rgb_image(chips.pixels[i], chips.bands, size=None))
                    tiles_img.append(colorize(maps[i], names))
                preview = mosaic(tiles_img, columns=8)
        write_manifest(tmp, {"tile": tile, "window": window, "chips": n, "head": kind, "head_sha256": head_sha,
                             "model_id": mid})
    url = vectordb.url()
    db_rows, db_pixels = (0, 0)
    if kind != "regression":
        db_rows, db_pixels = write_class_areas(url, pkey, rows, head_sha, mid)
    cs = int(loaded.meta.get("chip_size", 0))
    expected_px = n * cs * cs if kind != "regression" else 0
    check = AssetCheckResult(
        check_name="class_areas_cover_chips", passed=db_pixels == expected_px, severity=AssetCheckSeverity.ERROR,
        metadata={"db_pixels": db_pixels, "chip_pixels": expected_px, "rows": db_rows},
    )
    md = {
        "chips": n,
        "dagster/row_count": db_rows,
        "head": kind,
        "head_sha256": head_sha,
        "encoder_model_id": mid,
        "store": MetadataValue.path(str(final / "predictions.zarr")),
        "database": redact(url),
        "table": CLASS_AREAS_TABLE if kind != "regression" else "(regression: no class areas)",
        "seconds": round(time.perf_counter() - t0, 3),
    }
    if rows:
        md["class_areas"] = MetadataValue.md(_areas_md(rows))
    if preview is not None:
        md["class_maps"] = image_md(preview, f"{tile} {window}: RGB | predicted classes")
    return MaterializeResult(metadata=md, check_results=[check])


FINETUNE_ASSETS = [head_model, head_predictions]
FINETUNE_RESOURCES = {"labels": labels_from_env()}

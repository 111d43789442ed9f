"""The heads' stages: train a head on every materialized chip partition (``head_model``) and
run it over one partition (``head_predictions``).

``train_head_stage`` writes ``heads/head_model/`` under the layout root: ``head.pt`` (a plain
dict of tensors and metadata that names the encoder it was trained on), ``preview.png``
(validation chips: RGB | label | prediction), ``metrics.json`` (per-epoch history) and the
manifest. ``predict_partition`` writes ``predictions/<tile>/<window>/predictions.zarr`` (class
or value maps per chip, with the softmax confidence) and replaces the partition's rows of
``clay.class_areas``. A head trained on another encoder is refused (``CheckpointError``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from clay_core.chips import ChipSet
from clay_core.render import png_bytes
from clay_core.encoder import LoadedEncoder, file_sha256
from clay_core.errors import ConfigError
from clay_core.heads.areas import ClassArea, class_areas
from clay_core.heads.checkpoint import LoadedHead, load_head, loaded_identity, save_head
from clay_core.heads.data import make_targets, materialized_partitions, read_cube_chips, read_partitions
from clay_core.heads.labels import LabelSource
from clay_core.heads.predict import predict
from clay_core.heads.preview import class_map_preview, preview_image
from clay_core.heads.train import Log, TrainConfig, TrainResult, train_head
from clay_core.storage.layout import Layout, atomic_dir, read_manifest, write_manifest
from clay_core.types import PartitionId
from clay_core.vectordb import write_class_areas

__all__ = ["HeadModelResult", "PredictionResult", "head_dir", "train_head_stage", "predict_partition"]

OpenCube = Callable[[str, str], Any]  # (tile, window) -> the partition's chip cube, opened lazily
CHECKPOINT = "head.pt"
PREDICTIONS = "predictions.zarr"


def head_dir(layout: Layout) -> Path:
    """Where ``head_model`` keeps the trained head."""
    return layout.root / "heads" / "head_model"


@dataclass(frozen=True, eq=False)
class HeadModelResult:
    """A trained head as written by :func:`train_head_stage`."""

    train: TrainResult
    checkpoint: Path
    head_sha256: str
    partitions: tuple[PartitionId, ...]
    labels: str  # the label source, described
    model: LoadedEncoder
    preview: np.ndarray  # validation chips: RGB | label | prediction


@dataclass(frozen=True, eq=False)
class PredictionResult:
    """One partition's predictions as written by :func:`predict_partition`."""

    partition: PartitionId
    chips: int
    kind: str
    head_sha256: str
    store: Path
    areas: list[ClassArea]
    preview: np.ndarray | None  # RGB | predicted classes (classes only)
    db_rows: int  # clay.class_areas rows and pixels of the partition after the write
    db_pixels: int
    chip_pixels: int  # what db_pixels must equal: every pixel of every chip (0 for regression)


def train_head_stage(layout: Layout, model: LoadedEncoder, labels: LabelSource, config: TrainConfig, *,
                     open_cube: OpenCube, platform: str, tiles: list[str] | None = None,
                     windows: list[str] | None = None, log: Log | None = None) -> HeadModelResult:
    """Train ``config.head`` on the chips of every materialized partition (optionally only of
    ``tiles``/``windows``), validating on held-out tiles, and write the head."""
    log = log or (lambda _m: None)
    parts = materialized_partitions(layout, tiles, windows)
    if not parts:
        raise ConfigError(f"no materialized chip_cubes partitions under {layout.root / 'chips'}"
                          f"{' for tiles ' + str(tiles) if tiles else ''}"
                          f"{' in windows ' + str(windows) if windows else ''}: materialize chip_cubes first")
    chips = read_partitions(layout, parts, open_cube, platform)
    log(f"{len(chips)} chips from {len(parts)} partitions; labels: {labels.describe()}")
    res = train_head(model.encoder, chips, make_targets(config.head, labels, chips), labels.class_names, config,
                     log=log)
    preview = preview_image(chips.subset(res.val_index), res.val_targets, res.val_predictions, res.class_names,
                            config.head, n=6, scale=2)
    final = head_dir(layout)
    with atomic_dir(final) as tmp:
        save_head(tmp / CHECKPOINT, res, encoder=loaded_identity(model), chip_size=chips.chip_size, bands=chips.bands,
                  platform=chips.platform, extra={"partitions": [p.key for p in parts], "labels": labels.describe()})
        (tmp / "preview.png").write_bytes(png_bytes(preview))
        (tmp / "metrics.json").write_text(json.dumps(
            {"history": [{"epoch": h.epoch, "train_loss": h.train_loss, "seconds": h.seconds, **h.val.to_dict()}
                         for h in res.history]}, default=float, indent=1))
        sha = file_sha256(tmp / CHECKPOINT)
        write_manifest(tmp, {"head": config.head, "model_id": model.model_id, "head_sha256": sha, "chips": len(chips),
                             "train_tiles": res.train_tiles, "val_tiles": res.val_tiles})
    return HeadModelResult(res, final / CHECKPOINT, sha, tuple(parts), labels.describe(), model, preview)


def predict_partition(layout: Layout, pid: PartitionId, model: LoadedEncoder, *, open_cube: OpenCube,
                      platform: str, batch_size: int, database_url: str) -> PredictionResult:
    """Run the ``head_model`` head over ``pid``'s chips; write the maps and the class areas."""
    ckpt = head_dir(layout) / CHECKPOINT
    loaded = load_head(ckpt, encoder=loaded_identity(model))  # CheckpointError if trained on another encoder
    head_sha = file_sha256(ckpt)
    kind, names = loaded.spec.kind, loaded.class_names
    n = int(read_manifest(layout.partition("chips", pid.tile, pid.window))["chips"])
    final = layout.partition("predictions", pid.tile, pid.window)
    areas: list[ClassArea] = []
    preview = None
    with atomic_dir(final) as tmp:
        if n:
            chips = read_cube_chips(open_cube(pid.tile, pid.window), pid.tile, platform)
            _check_fits(loaded, chips, ckpt, pid)
            pred, conf = predict(model.encoder, loaded.head, loaded.spec, chips, batch_size=batch_size,
                                 with_confidence=True)
            _write_predictions(tmp / PREDICTIONS, chips, pred, conf, loaded, head_sha, model.model_id)
            if kind != "regression":
                areas = class_areas(chips, pred, kind, names, pid)
                preview = class_map_preview(chips, pred, kind, names)
        write_manifest(tmp, {"tile": pid.tile, "window": pid.window, "chips": n, "head": kind,
                             "head_sha256": head_sha, "model_id": model.model_id})
    db_rows, db_pixels = (0, 0)
    if kind != "regression":
        db_rows, db_pixels = write_class_areas(database_url, pid.key, areas, head_sha, model.model_id)
    cs = int(loaded.meta.get("chip_size", 0))
    return PredictionResult(pid, n, kind, head_sha, final / PREDICTIONS, areas, preview, db_rows, db_pixels,
                            n * cs * cs if kind != "regression" else 0)


def _check_fits(loaded: LoadedHead, chips: ChipSet, ckpt: Path, pid: PartitionId) -> None:
    """The head only fits chips of the size and bands it was trained on."""
    if chips.chip_size != int(loaded.meta.get("chip_size", chips.chip_size)) or \
            list(chips.bands) != list(loaded.meta.get("bands", chips.bands)):
        raise ConfigError(f"head {ckpt} was trained on {loaded.meta.get('chip_size')} px chips of bands "
                          f"{loaded.meta.get('bands')}; partition {pid.key} has {chips.chip_size} px chips of "
                          f"{chips.bands}: re-materialize head_model")


def _write_predictions(path: Path, chips: ChipSet, pred: np.ndarray, conf: np.ndarray, loaded: LoadedHead,
                       head_sha: str, model_id: str) -> None:
    """Class map (segmentation), class (classification) or value map (regression) per chip."""
    import xarray as xr

    kind = loaded.spec.kind
    dims = ("chip",) if kind == "classification" else ("chip", "y", "x")
    var = "value_map" if kind == "regression" else ("class" if kind == "classification" else "class_map")
    data_vars = {var: (dims, pred)}
    if kind != "regression":
        data_vars["confidence"] = (dims, conf)
    when = pd.to_datetime(chips.meta["datetime"], utc=True).dt.tz_localize(None).to_numpy()
    ds = xr.Dataset(data_vars, coords={
        "chip_id": ("chip", chips.meta["chip_id"].astype(str).to_numpy(dtype=object)),
        "datetime": ("chip", when.astype("datetime64[ns]")),
        "row": ("chip", chips.meta["row"].to_numpy("int32")),
        "col": ("chip", chips.meta["col"].to_numpy("int32")),
    })
    ds.attrs.update(head=kind, class_names=json.dumps(loaded.class_names), head_sha256=head_sha, model_id=model_id,
                    chip_size=chips.chip_size)
    ds.to_zarr(path, mode="w", zarr_format=3, consolidated=False)

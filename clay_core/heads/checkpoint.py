"""Head checkpoints: :func:`save_head` writes a plain dict of tensors and metadata (loadable
with ``torch.load(weights_only=True)``) that names the encoder it was trained on;
:func:`load_head` refuses a head trained on another encoder (``CheckpointError``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from clay_core.encoder import ClayEncoder, LoadedEncoder, load_weights_only
from clay_core.errors import CheckpointError, ConfigError
from clay_core.heads.modules import HeadSpec, build_head
from clay_core.heads.train import TrainResult

__all__ = ["HEAD_FORMAT", "LoadedHead", "encoder_identity", "loaded_identity", "check_encoder", "save_head",
           "load_head"]

HEAD_FORMAT = "clay-head/1"


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
    obj = load_weights_only(path)
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


def loaded_identity(model: LoadedEncoder) -> dict[str, Any]:
    """:func:`encoder_identity` of a loaded encoder."""
    return encoder_identity(model.encoder, model.preset, model.model_id, model.checkpoint_sha256)

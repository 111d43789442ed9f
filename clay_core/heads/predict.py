"""Running a trained head over chips: class maps, classes or value maps, with confidence."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from clay_core.chips import ChipSet
from clay_core.encoder import ClayEncoder
from clay_core.heads.data import chip_inputs
from clay_core.heads.features import encode_tokens
from clay_core.heads.modules import HeadSpec, freeze

__all__ = ["predict"]


def predict(encoder: ClayEncoder, head: nn.Module, spec: HeadSpec, chips: ChipSet, batch_size: int = 16,
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
    inputs = chip_inputs(chips)
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

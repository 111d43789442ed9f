"""Pictures of head outputs: class palettes, colourized class maps, prediction-vs-label previews."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from clay_core.chips import ChipSet
from clay_core.render import mosaic, rgb_image

__all__ = ["class_palette", "colorize", "preview_image", "class_map_preview"]

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


def preview_image(chips: ChipSet, labels: np.ndarray, preds: np.ndarray, class_names: Sequence[str], kind: str,
                  n: int = 6, scale: int = 1) -> np.ndarray:
    """Rows of [RGB | label | prediction] for the first ``n`` chips (uint8 RGB image)."""
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


def class_map_preview(chips: ChipSet, pred: np.ndarray, kind: str, class_names: Sequence[str],
                      n: int = 16) -> np.ndarray:
    """Pairs [RGB | predicted classes] of the first ``n`` chips, 8 images a row."""
    maps = pred if kind == "segmentation" else np.broadcast_to(
        pred[:, None, None], (len(pred), chips.chip_size, chips.chip_size))
    tiles = []
    for i in range(min(len(chips), n)):
        tiles.append(rgb_image(chips.pixels[i], chips.bands, size=None))
        tiles.append(colorize(maps[i], class_names))
    return mosaic(tiles, columns=8)

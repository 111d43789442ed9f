"""Pictures people look at before they read: chip thumbnails and mosaics, change-intensity
maps, and time-series plots, as uint8 RGB arrays or PNG bytes."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

__all__ = ["rgb_image", "png_bytes", "mosaic", "intensity_map", "series_plot"]


def rgb_image(pixels: np.ndarray, bands: list[str], rgb: tuple[str, str, str] = ("red", "green", "blue"),
              scale: float = 3000.0, size: int | None = 64) -> np.ndarray:
    """uint8 RGB [h, w, 3] of one chip, linear stretch 0..scale (reflectance x 10000)."""
    idx = [bands.index(b) for b in rgb if b in bands]
    if len(idx) != 3:
        idx = [0, 0, 0]
    img = np.clip(pixels[idx].astype(np.float32) / scale * 255.0, 0, 255).astype(np.uint8).transpose(1, 2, 0)
    if size and img.shape[0] > size:
        step = img.shape[0] // size
        img = img[::step, ::step]
    return img


def png_bytes(img: np.ndarray) -> bytes:
    """PNG of a uint8 image ([h, w, 3] RGB or [h, w] grey)."""
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def mosaic(images: list[np.ndarray], columns: int = 8, pad: int = 2, max_tiles: int = 64) -> np.ndarray:
    """Grid of thumbnails (first ``max_tiles``) on a dark background."""
    images = images[:max_tiles]
    if not images:
        return np.zeros((32, 32, 3), np.uint8)
    h, w, _ = images[0].shape
    cols = min(columns, len(images))
    rows = -(-len(images) // cols)
    out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), 24, np.uint8)
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        out[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + c * (w + pad) : pad + c * (w + pad) + w] = im
    return out


def intensity_map(rows: np.ndarray, cols: np.ndarray, score: np.ndarray, flag: np.ndarray,
                  cell: int = 16, vmax: float = 10.0) -> bytes:
    """One cell per chip on the tile's chip grid; colour = score (0..vmax, magma), flagged chips framed white."""
    from matplotlib import colormaps

    rows = np.asarray(rows, int)
    cols = np.asarray(cols, int)
    h, w = (rows.max() + 1, cols.max() + 1) if len(rows) else (1, 1)
    img = np.full((h * cell, w * cell, 3), 40, np.uint8)
    cmap = colormaps["magma"]
    for r, c, s, f in zip(rows, cols, np.nan_to_num(np.asarray(score, float)), np.asarray(flag, bool)):
        rgb = (np.array(cmap(float(np.clip(s / vmax, 0, 1)))[:3]) * 255).astype(np.uint8)
        block = img[r * cell : (r + 1) * cell, c * cell : (c + 1) * cell]
        block[:] = rgb
        if f:
            block[:2], block[-2:], block[:, :2], block[:, -2:] = 255, 255, 255, 255
    return png_bytes(img)


def series_plot(dates, values, flags, title: str, fit_dates=None, fit_values=None) -> bytes:
    """PC1 of one chip over time: observations, flagged ones in red, the harmonic baseline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.2, 2.2), dpi=80)
    ax.plot(dates, values, "o-", color="#2a6", ms=3, lw=1, label="PC1")
    flags = np.asarray(flags, bool)
    if flags.any():
        ax.plot(np.asarray(dates)[flags], np.asarray(values)[flags], "o", color="#d22", ms=5, label="flagged")
    if fit_dates is not None and len(fit_dates):
        ax.plot(fit_dates, fit_values, "--", color="#555", lw=1, label="baseline")
    ax.set_title(title, fontsize=8)
    ax.tick_params(labelsize=6)
    ax.legend(fontsize=6, loc="best")
    fig.autofmt_xdate()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()

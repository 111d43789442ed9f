"""Change-intensity maps: PNG grids of chip scores (people look before they read)."""

from __future__ import annotations

import numpy as np

from clay_core.chips import png_bytes


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
    import io

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

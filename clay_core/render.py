"""Pictures people look at before they read: chip thumbnails and mosaics, change-intensity
maps, and time-series plots, as uint8 RGB arrays or PNG bytes."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

__all__ = ["rgb_image", "stretch_limits", "png_bytes", "mosaic", "intensity_map", "series_plot"]

# Cyan stays visible on every colour of the magma map (white vanished on its bright end).
FLAG_COLOUR = "#00e5ff"


def _rgb_index(bands: list[str], rgb: tuple[str, str, str]) -> list[int]:
    idx = [bands.index(b) for b in rgb if b in bands]
    return idx if len(idx) == 3 else [0, 0, 0]


def stretch_limits(pixels: np.ndarray, bands: list[str], rgb: tuple[str, str, str] = ("red", "green", "blue"),
                   percentiles: tuple[float, float] = (2.0, 98.0), sample: int = 200_000) -> tuple[float, float]:
    """(low, high) for :func:`rgb_image`: the ``percentiles`` of the red/green/blue values of
    chips [n, band, y, x] (nodata zeros left out), from an even sample.

    One pair for a whole partition keeps chips comparable (water stays darker than bare soil)
    while a real scene of a few hundred DN still fills the range.
    """
    data = np.asarray(pixels)[:, _rgb_index(bands, rgb)].ravel()
    data = data[:: max(1, data.size // sample)].astype(np.float32)
    valid = data[np.isfinite(data) & (data > 0)]
    if not valid.size:
        return 0.0, 1.0
    lo, hi = np.percentile(valid, percentiles)
    return float(lo), max(float(hi), float(lo) + 1.0)


def rgb_image(pixels: np.ndarray, bands: list[str], rgb: tuple[str, str, str] = ("red", "green", "blue"),
              scale: float | None = None, size: int | None = 64, limits: tuple[float, float] | None = None
              ) -> np.ndarray:
    """uint8 RGB [h, w, 3] of one chip [band, y, x], stretched linearly between ``limits``.

    ``limits`` default to :func:`stretch_limits` of this chip alone (give a partition's to
    keep chips comparable); ``scale`` gives a fixed 0..scale stretch instead. A fixed 0..3000
    stretch left real scenes (dark forest, a few hundred DN) nearly black.
    """
    data = pixels[_rgb_index(bands, rgb)].astype(np.float32)
    if scale is not None:
        lo, hi = 0.0, float(scale)
    else:
        lo, hi = limits if limits is not None else stretch_limits(pixels[None], bands, rgb)
    img = np.clip((data - lo) / (hi - lo) * 255.0, 0, 255).astype(np.uint8).transpose(1, 2, 0)
    if size and img.shape[0] > size:
        step = img.shape[0] // size
        img = img[::step, ::step]
    return img


def png_bytes(img: np.ndarray) -> bytes:
    """PNG of a uint8 image ([h, w, 3] RGB or [h, w] grey)."""
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def mosaic(images: list[np.ndarray], columns: int = 8, pad: int = 2, max_tiles: int = 64,
           labels: list[str] | None = None, min_size: int = 96) -> np.ndarray:
    """Grid of thumbnails (first ``max_tiles``) on a dark background, each at least ``min_size``
    px (nearest-neighbour enlarged) with its label (chip id, cloud fraction…) under it."""
    images = images[:max_tiles]
    if not images:
        return np.zeros((32, 32, 3), np.uint8)
    zoom = max(1, -(-min_size // images[0].shape[0]))
    images = [np.repeat(np.repeat(im, zoom, axis=0), zoom, axis=1) for im in images]
    h, w, _ = images[0].shape
    text_h = 12 * max((len(str(s).splitlines()) for s in labels), default=0) if labels else 0
    cols = min(columns, len(images))
    rows = -(-len(images) // cols)
    cell_h = h + text_h + pad
    out = np.full((rows * cell_h + pad, cols * (w + pad) + pad, 3), 24, np.uint8)
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        y, x = pad + r * cell_h, pad + c * (w + pad)
        out[y : y + h, x : x + w] = im[:h, :w]
    if labels:
        from PIL import ImageDraw

        canvas = Image.fromarray(out)
        draw = ImageDraw.Draw(canvas)
        for i, label in enumerate(labels[: len(images)]):
            r, c = divmod(i, cols)
            draw.multiline_text((pad + c * (w + pad) + 2, pad + r * cell_h + h + 1), str(label),
                                fill=(230, 230, 230), spacing=1)
        out = np.asarray(canvas)
    return out


def intensity_map(rows: np.ndarray, cols: np.ndarray, score: np.ndarray, flag: np.ndarray,
                  cell: int = 16, vmax: float = 10.0, *, title: str = "change score",
                  chip_m: float | None = None, value_label: str = "change score", flag_label: str = "flagged chip",
                  missing_label: str = "no clear observation", nan_missing: bool = False) -> bytes:
    """The tile's chip grid, one cell per chip coloured by change score (0..vmax, magma) with a
    colour bar; flagged chips outlined in white (named in the legend); chip rows and columns on
    the axes, and a scale bar when ``chip_m`` (metres per chip) is known. ``value_label``,
    ``flag_label`` and ``missing_label`` name the colour bar, the outline and the grey cells
    (chips not in ``rows``/``cols``; NaN values too with ``nan_missing``, else they count as 0)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import PatchCollection
    from matplotlib.lines import Line2D
    from matplotlib.patches import Rectangle
    from matplotlib.ticker import MaxNLocator

    rows, cols = np.asarray(rows, int), np.asarray(cols, int)
    h, w = (rows.max() + 1, cols.max() + 1) if len(rows) else (1, 1)
    grid = np.full((h, w), np.nan)
    values = np.asarray(score, float)
    grid[rows, cols] = values if nan_missing else np.nan_to_num(values)
    side = max(3.0, min(8.0, 0.45 * max(h, w) + 2.0))
    fig, ax = plt.subplots(figsize=(side + 1.4, side), dpi=max(60, cell * 6))
    cmap = matplotlib.colormaps["magma"].with_extremes(bad="#d0d0d0")  # grey: chips not observed in the window
    im = ax.imshow(grid, cmap=cmap, vmin=0, vmax=vmax, interpolation="nearest")
    flagged = np.asarray(flag, bool)
    # One collection, not a patch per chip: a tile of 1,764 chips can flag hundreds.
    ax.add_collection(PatchCollection([Rectangle((c - 0.45, r - 0.45), 0.9, 0.9) for r, c in
                                       zip(rows[flagged], cols[flagged])], fc="none", ec=FLAG_COLOUR, lw=2.5))
    # A tick per chip is unreadable (and slow) on a 42 x 42 grid: integer ticks, about ten per axis.
    for axis, n in ((ax.xaxis, w), (ax.yaxis, h)):
        if n <= 10:  # small grids: one tick per chip (a locator would put ticks between chips)
            axis.set_ticks(range(n))
        else:
            axis.set_major_locator(MaxNLocator(nbins=10, integer=True))
    ax.set_xlabel("chip column")
    ax.set_ylabel("chip row")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label=f"{value_label} (0–{vmax:g}+)")
    handles = [Line2D([], [], marker="s", ls="", mfc="none", mec=FLAG_COLOUR, mew=2, ms=9, label=flag_label),
               Line2D([], [], marker="s", ls="", color="#d0d0d0", ms=9, label=missing_label)]
    # Below the axes, in a strip the layout keeps free, so it never covers the axis label.
    fig.legend(handles=handles, loc="lower center", ncol=2, fontsize=7, frameon=False)
    if chip_m:
        from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

        n = 1 if w < 4 else 2  # chips the bar spans
        ax.add_artist(AnchoredSizeBar(ax.transData, n, f"{n * chip_m / 1000:g} km", "lower left", pad=0.3,
                                      color="white", frameon=False, size_vertical=0.06, label_top=True,
                                      fontproperties={"size": 7}))
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


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
    ax.legend(fontsize=6, loc="upper left")  # "best" searches every point: slow on long series
    fig.autofmt_xdate()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()

"""Open rasters and read their bands onto a tile grid.

- :func:`open_raster`: ``rasterio.open`` that turns every GDAL failure (missing, truncated
  or corrupt file, unreachable URL, timeout) into a :class:`SceneError` that names the file
  (URLs redacted: no user info, no signatures / tokens).
- :func:`read_to_grid`: read bands of an open raster onto a target :class:`TileGrid`
  (same CRS, north-up) with windowed reads; a coarser band (20 m) is brought to the grid
  (10 m) with the requested resampling (bilinear for reflectance, nearest for
  classification bands). Parts of the grid the raster does not cover get ``fill``. A raster
  in a different CRS raises :class:`SceneError` naming both CRSs -- there is no silent
  reprojection.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from clay_core.errors import SceneError
from clay_core.sources.arrays import large_empty
from clay_core.sources.crs import crs_string, same_crs
from clay_core.sources.urls import redact
from clay_core.types import TileGrid

__all__ = ["open_raster", "read_to_grid", "check_on_grid", "STRIP_ROWS"]


@contextmanager
def open_raster(href: str, what: str = "", **options: Any) -> Iterator[rasterio.io.DatasetReader]:
    """``rasterio.open(href, **options)``; a GDAL failure -> SceneError naming the (redacted) file."""
    label = redact(href)
    try:
        src = rasterio.open(href, **options)
    except (RasterioError, OSError) as exc:
        raise SceneError(
            f"cannot open raster {label}{f' ({what})' if what else ''}: {redact(exc)} -- "
            "the file is missing, truncated, not a GeoTIFF/COG, or the server did not answer"
        ) from exc
    try:
        yield src
    finally:
        src.close()


def _snap(v: float, tol: float = 1e-6) -> float:
    r = round(v)
    return float(r) if abs(v - r) < tol else v


def read_to_grid(
    src: rasterio.io.DatasetReader,
    grid: TileGrid,
    indexes: int | Sequence[int] = 1,
    resampling: Resampling = Resampling.nearest,
    fill: float | int = 0,
    label: str | None = None,
    workers: int = 1,
    open_options: dict[str, Any] | None = None,
) -> np.ndarray:
    """Read band(s) ``indexes`` of ``src`` onto ``grid``; returns [y, x] or [band, y, x].

    A raster covering the whole grid is read in block-aligned strips straight into the
    result (one huge RasterIO call is slower than many small ones); ``workers`` > 1 reads
    the strips in threads, each with its own handle (``rasterio.open(src.name,
    **open_options)``, local files; GDAL releases the GIL while decoding).

    ``src`` must be in the grid's CRS (else SceneError naming both CRSs) and north-up.
    Same resolution and aligned -> plain windowed read (exact values); a different
    resolution -> windowed read with ``out_shape`` and ``resampling`` (pixel-centre
    correct, neighbours outside the window are used); grid pixels whose centre falls
    outside the raster get ``fill``, as do pixels equal to the raster's own nodata.
    """
    name = redact(label or src.name)
    check_on_grid(src, grid, name)
    return _read_onto_grid(src, grid, indexes, resampling, fill, name, workers, open_options)


def check_on_grid(src: rasterio.io.DatasetReader, grid: TileGrid, name: str) -> None:
    """SceneError unless ``src`` is in the grid's CRS and north-up (what read_to_grid needs)."""
    if src.crs is None or not same_crs(src.crs, grid.crs):
        raise SceneError(
            f"{name} is in {crs_string(src.crs) or 'no CRS'} but tile {grid.tile} is on a "
            f"{grid.crs} grid: sources do not reproject silently -- give this tile its own "
            "grid or reproject the file"
        )
    st, gt = src.transform, grid.transform
    if st.b != 0 or st.d != 0 or st.a <= 0 or st.e >= 0 or gt.b != 0 or gt.d != 0:
        raise SceneError(f"{name}: only north-up rasters are supported (transform {tuple(st)[:6]})")


def _read_onto_grid(src, grid, indexes, resampling, fill, name, workers=1, open_options=None) -> np.ndarray:
    """read_to_grid after check_on_grid (``name``: the redacted label for messages)."""
    st, gt = src.transform, grid.transform
    single = isinstance(indexes, int)
    idx = [indexes] if single else list(indexes)
    dtype = np.result_type(*[src.dtypes[i - 1] for i in idx])

    # grid pixel (col,row) -> source pixel: scale + offset only
    t = ~st @ gt
    sx, ox, sy, oy = _snap(t.a), _snap(t.c), _snap(t.e), _snap(t.f)
    # source extent in grid pixels; a grid pixel is covered when its centre is inside
    g0c, g1c = (0 - ox) / sx, (src.width - ox) / sx
    g0r, g1r = (0 - oy) / sy, (src.height - oy) / sy
    c0, c1 = max(0, math.ceil(_snap(g0c - 0.5))), min(grid.width, math.ceil(_snap(g1c - 0.5)))
    r0, r1 = max(0, math.ceil(_snap(g0r - 0.5))), min(grid.height, math.ceil(_snap(g1r - 0.5)))
    full = (r0, c0, r1, c1) == (0, 0, grid.height, grid.width)
    out = large_empty((len(idx), grid.height, grid.width), dtype)
    if not full:  # the common case (full) reads straight into the result, no fill, no copy
        out[...] = fill
    if c1 <= c0 or r1 <= r0:
        return out[0] if single else out
    win = Window(_snap(sx * c0 + ox), _snap(sy * r0 + oy), _snap(sx * (c1 - c0)), _snap(sy * (r1 - r0)))
    shape = (len(idx), r1 - r0, c1 - c0)
    inside = (win.col_off >= 0 and win.row_off >= 0 and win.col_off + win.width <= src.width
              and win.row_off + win.height <= src.height)  # fmt: skip
    try:
        if inside and full and out.dtype == np.dtype(src.dtypes[idx[0] - 1]) and len(set(src.dtypes)) == 1:
            part = _read_strips(src, idx, out, sx, ox, sy, oy, resampling, workers, open_options)
        elif inside:
            part = src.read(idx, window=win, out_shape=shape, resampling=resampling)
        else:  # grid edge not aligned with the raster edge: let the warper clip exactly
            sub = Affine(gt.a, 0, gt.c + c0 * gt.a, 0, gt.e, gt.f + r0 * gt.e)
            with WarpedVRT(src, crs=src.crs, transform=sub, width=c1 - c0, height=r1 - r0,
                           resampling=resampling, nodata=src.nodata if src.nodata is not None else fill,
                           ) as vrt:  # fmt: skip
                part = vrt.read(idx)
    except (RasterioError, OSError) as exc:
        raise SceneError(
            f"cannot read {name}: {redact(exc)} -- the file is truncated or corrupt, or the "
            "server stopped answering"
        ) from exc
    if src.nodata is not None and not (isinstance(src.nodata, float) and math.isnan(src.nodata)):
        if src.nodata != fill:
            part = np.where(part == np.asarray(src.nodata).astype(part.dtype), fill, part)
    elif src.nodata is not None and part.dtype.kind == "f":
        part = np.where(np.isnan(part), fill, part)
    if part is not out:
        out[:, r0:r1, c0:c1] = part
    return out[0] if single else out


#: Grid rows per strip of a full-grid read (rounded to whole source blocks).
STRIP_ROWS = 1024


def _read_strips(src, idx, out, sx, ox, sy, oy, resampling, workers, open_options) -> np.ndarray:
    """Fill ``out`` [band, H, W] (grid pixels) from ``src`` strip by strip."""
    height = out.shape[1]
    block_rows = max(1, src.block_shapes[0][0]) if src.block_shapes else 256
    src_rows = max(block_rows, int(math.ceil(STRIP_ROWS * abs(sy) / block_rows)) * block_rows)
    rows = max(1, int(round(src_rows / abs(sy))))  # grid rows per strip
    strips = [(r, min(height, r + rows)) for r in range(0, height, rows)]
    width_src = _snap(sx * out.shape[2])

    def read(ds, a: int, b: int) -> None:
        win = Window(_snap(ox), _snap(sy * a + oy), width_src, _snap(sy * (b - a)))
        ds.read(idx, window=win, out=out[:, a:b, :], resampling=resampling)

    if workers <= 1 or len(strips) < 2:
        for a, b in strips:
            read(src, a, b)
        return out
    from concurrent.futures import ThreadPoolExecutor

    chunks = [strips[i::workers] for i in range(min(workers, len(strips)))]

    def run(chunk) -> None:
        with rasterio.open(src.name, **(open_options or {})) as ds:
            for a, b in chunk:
                read(ds, a, b)

    with ThreadPoolExecutor(max_workers=len(chunks)) as pool:
        list(pool.map(run, chunks))
    return out

"""Chip footprints in WGS84: the chip's square on its tile grid, reprojected edge by edge.

``clay.observations`` keeps each chip's WGS84 *envelope* (west/south/east/north: the bounding
box of its four reprojected corners), its centre (lon/lat) and its native CRS.  The envelope is
not the chip: a UTM grid is rotated against the meridians, so the envelope's corners lie outside
the chip, and along a tile edge outside the tile.  The exact footprint is the axis-aligned
rectangle in the native CRS centred on the chip centre whose reprojected corners span that
envelope; its two half-sizes are solved for (Newton's method, a few steps, vectorised), then its
edges are densified in the native CRS and reprojected with pyproj.  The result contains the
chip's centre and lies in its tile to about a millimetre (UTM: nanometres; LAEA: ~1 mm, the
projection's own round-trip precision).

A row without a native CRS pyproj knows, or whose rectangle does not reproduce its envelope to
:data:`TOLERANCE_DEG`, keeps its envelope as footprint (counted by
:func:`footprints_with_fallbacks`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import shapely
from pyproj import CRS, Transformer
from pyproj.exceptions import CRSError

__all__ = ["DENSIFY", "TOLERANCE_DEG", "footprints", "footprints_with_fallbacks"]

DENSIFY = 8  # points per edge: UTM edges are slightly curved in degrees
TOLERANCE_DEG = 1e-7  # the solved rectangle reproduces the stored envelope to this (~1 cm)


def footprints(rows: pd.DataFrame) -> np.ndarray:
    """Polygons (shapely, WGS84 lon/lat) of the chips in ``rows`` (columns west, south, east,
    north, lon, lat, crs), in row order."""
    return footprints_with_fallbacks(rows)[0]


def footprints_with_fallbacks(rows: pd.DataFrame) -> tuple[np.ndarray, int]:
    """(:func:`footprints`, how many rows kept their envelope instead)."""
    bounds = rows[["west", "south", "east", "north"]].to_numpy(np.float64)
    out = shapely.box(bounds[:, 0], bounds[:, 1], bounds[:, 2], bounds[:, 3])
    crs = rows["crs"].astype(object).where(rows["crs"].notna(), None)
    exact = np.zeros(len(rows), bool)
    for code in sorted({c for c in crs if c}):
        idx = np.flatnonzero((crs == code).to_numpy())
        try:
            native = CRS.from_user_input(code)
        except CRSError:  # a CRS pyproj does not know: those rows keep their envelope
            continue
        polys, ok = _exact(native, bounds[idx], rows["lon"].to_numpy(np.float64)[idx],
                           rows["lat"].to_numpy(np.float64)[idx])
        out[idx[ok]] = polys[ok]
        exact[idx[ok]] = True
    return out, int((~exact).sum())


def _exact(native: CRS, env: np.ndarray, lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Footprints of chips in CRS ``native`` from their envelopes and centres; and which rows
    reproduce their envelope (the others must fall back)."""
    if native.is_geographic:  # a lon/lat grid: the envelope is the chip
        return shapely.box(env[:, 0], env[:, 1], env[:, 2], env[:, 3]), np.ones(len(env), bool)
    fwd = Transformer.from_crs(4326, native, always_xy=True)
    inv = Transformer.from_crs(native, 4326, always_xy=True)
    x, y = fwd.transform(lon, lat)
    h = _solve_half_sizes(inv, np.asarray(x), np.asarray(y), env)
    got = _envelope(inv, x, y, h[:, 0], h[:, 1])
    ok = np.isfinite(h).all(axis=1) & (np.abs(got - env).max(axis=1) <= TOLERANCE_DEG)
    ring_x, ring_y = _ring(np.asarray(x), np.asarray(y), np.where(ok[:, None], h, 1.0))
    rlon, rlat = inv.transform(ring_x, ring_y)
    coords = np.stack([np.asarray(rlon), np.asarray(rlat)], axis=-1)
    return shapely.polygons(coords), ok


def _envelope(inv: Transformer, x, y, hx, hy) -> np.ndarray:
    """[n, 4] west, south, east, north of the reprojected corners of the rectangles."""
    cx = np.stack([x - hx, x + hx, x - hx, x + hx])
    cy = np.stack([y - hy, y - hy, y + hy, y + hy])
    lon, lat = inv.transform(cx, cy)
    lon, lat = np.asarray(lon), np.asarray(lat)
    return np.stack([lon.min(0), lat.min(0), lon.max(0), lat.max(0)], axis=1)


def _solve_half_sizes(inv: Transformer, x: np.ndarray, y: np.ndarray, env: np.ndarray) -> np.ndarray:
    """[n, 2] half-width and half-height (native units) whose corners span each envelope."""
    want = np.stack([env[:, 2] - env[:, 0], env[:, 3] - env[:, 1]], axis=1)

    def spans(h: np.ndarray) -> np.ndarray:
        e = _envelope(inv, x, y, h[:, 0], h[:, 1])
        return np.stack([e[:, 2] - e[:, 0], e[:, 3] - e[:, 1]], axis=1)

    # start: the envelope's extent along the native axes through the centre
    fwd = lambda lon, lat: np.asarray(inv.transform(lon, lat, direction="INVERSE"))  # noqa: E731
    clon, clat = (np.asarray(v) for v in inv.transform(x, y))
    h = np.stack([(fwd(env[:, 2], clat)[0] - fwd(env[:, 0], clat)[0]) / 2,
                  (fwd(clon, env[:, 3])[1] - fwd(clon, env[:, 1])[1]) / 2], axis=1)
    with np.errstate(all="ignore"):
        for _ in range(8):
            f = spans(h) - want
            if np.nanmax(np.abs(f)) <= 1e-12:  # degrees: converged to the projection's precision
                break
            step = np.maximum(h * 1e-6, 1e-6)
            jx = (spans(h + np.stack([step[:, 0], np.zeros(len(h))], 1)) - spans(h)) / step[:, :1]
            jy = (spans(h + np.stack([np.zeros(len(h)), step[:, 1]], 1)) - spans(h)) / step[:, 1:]
            det = jx[:, 0] * jy[:, 1] - jy[:, 0] * jx[:, 1]
            dx = (f[:, 0] * jy[:, 1] - jy[:, 0] * f[:, 1]) / det
            dy = (jx[:, 0] * f[:, 1] - f[:, 0] * jx[:, 1]) / det
            h = h - np.stack([dx, dy], axis=1)
    return h


def _ring(x: np.ndarray, y: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[n, 4 * DENSIFY + 1] closed rings (counter-clockwise) of the native rectangles."""
    t = np.arange(DENSIFY) / DENSIFY
    # unit square edges: bottom (left->right), right (up), top (right->left), left (down)
    ux = np.concatenate([-1 + 2 * t, np.ones(DENSIFY), 1 - 2 * t, -np.ones(DENSIFY), [-1.0]])
    uy = np.concatenate([-np.ones(DENSIFY), -1 + 2 * t, np.ones(DENSIFY), 1 - 2 * t, [-1.0]])
    return x[:, None] + h[:, :1] * ux[None], y[:, None] + h[:, 1:] * uy[None]

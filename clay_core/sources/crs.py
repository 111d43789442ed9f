"""Coordinate reference systems: EPSG codes of WKT CRSs and CRS equality as coordinates.

CF ``spatial_ref`` WKT often carries a zero TOWGS84 or other names for a CRS that has an
EPSG code; these helpers see through that, so a grid check compares what the coordinates
mean rather than how the CRS is spelled.
"""

from __future__ import annotations

from typing import Any

from rasterio.crs import CRS

__all__ = ["epsg_code", "crs_string", "same_crs"]


def _pyproj_crs(crs: Any):
    """pyproj CRS of anything rasterio / pyproj accept; a BoundCRS whose TOWGS84 is all
    zeros (common in CF ``spatial_ref`` WKT, e.g. ETRS89 / LAEA) is its source CRS."""
    import pyproj

    pc = pyproj.CRS.from_user_input(crs.to_wkt() if isinstance(crs, CRS) else crs)
    if pc.is_bound:
        op = pc.coordinate_operation
        if op is not None and all(float(p.value) == 0.0 for p in op.params):
            pc = pc.source_crs
    return pc


def _same_coordinates(a: Any, b: Any) -> bool:
    """True when the a -> b transformation is the identity on points of b's area of use."""
    from pyproj import Transformer

    try:
        area = b.area_of_use
        w, s, e, n = area.bounds if area else (-10.0, -10.0, 10.0, 10.0)
        lons = [w + (e - w) * f for f in (0.3, 0.5, 0.7)]
        lats = [s + (n - s) * f for f in (0.3, 0.5, 0.7)]
        to_b = Transformer.from_crs("EPSG:4326", b, always_xy=True)
        a_to_b = Transformer.from_crs(a, b, always_xy=True)
        tol = 1e-9 if b.is_geographic else 1e-3
        for lon, lat in zip(lons, lats, strict=True):
            x, y = to_b.transform(lon, lat)
            x2, y2 = a_to_b.transform(x, y)
            if not (abs(x2 - x) <= tol and abs(y2 - y) <= tol):
                return False
        return True
    except Exception:  # noqa: BLE001 - no transformation: not the same
        return False


def epsg_code(crs: Any) -> int | None:
    """EPSG code of a CRS. A WKT that declares an EPSG id (or that PROJ matches with low
    confidence, e.g. a CF ``spatial_ref`` with TOWGS84 or other names) gets that code
    when it gives the same coordinates."""
    import pyproj

    pc = _pyproj_crs(crs)
    code = pc.to_epsg()
    if code:
        return int(code)
    candidates = []
    ident = pc.to_json_dict().get("id") or {}
    if str(ident.get("authority", "")).upper() == "EPSG":
        candidates.append(int(ident["code"]))
    low = pc.to_epsg(min_confidence=20)
    if low:
        candidates.append(int(low))
    for c in candidates:
        if _same_coordinates(pc, pyproj.CRS.from_epsg(c)):
            return c
    return None


def crs_string(crs: Any) -> str:
    """'EPSG:nnnn' when the CRS has an EPSG code, else its WKT."""
    if crs is None:
        return ""
    epsg = epsg_code(crs)
    return f"EPSG:{epsg}" if epsg else _pyproj_crs(crs).to_wkt()


def same_crs(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return False
    ca, cb = _pyproj_crs(a), _pyproj_crs(b)
    if ca == cb:
        return True
    ea, eb = epsg_code(ca), epsg_code(cb)
    return ea is not None and ea == eb

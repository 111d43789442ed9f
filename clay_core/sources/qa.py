"""QA bands as Sentinel-2-SCL-like ``uint8``: every source's ``Scene.qa`` speaks SCL classes,
whatever the provider's QA format (SCL, Landsat ``QA_PIXEL`` bits, or none at all)."""

from __future__ import annotations

import numpy as np

from clay_core.errors import ConfigError
from clay_core.sources.arrays import has_value

__all__ = [
    "SCL_NODATA", "SCL_DEFECTIVE", "SCL_SHADOW", "SCL_VEGETATION", "SCL_WATER", "SCL_UNCLASSIFIED",
    "SCL_CLOUD_MEDIUM", "SCL_CLOUD_HIGH", "SCL_CIRRUS", "SCL_SNOW", "QA_FORMATS",
    "landsat_qa_to_scl", "to_scl", "qa_fill", "synthetic_qa",
]  # fmt: skip

#: Sentinel-2 SCL classes used to describe QA of every source.
SCL_NODATA, SCL_DEFECTIVE, SCL_SHADOW, SCL_VEGETATION = 0, 1, 3, 4
SCL_WATER, SCL_UNCLASSIFIED, SCL_CLOUD_MEDIUM, SCL_CLOUD_HIGH = 6, 7, 8, 9
SCL_CIRRUS, SCL_SNOW = 10, 11
QA_FORMATS = ("scl", "landsat_qa_pixel")


def landsat_qa_to_scl(qa_pixel: np.ndarray) -> np.ndarray:
    """Landsat Collection 2 ``QA_PIXEL`` bit flags -> a Sentinel-2-SCL-like ``uint8`` array.

    Bits (USGS C2 L2): 0 fill, 1 dilated cloud, 2 cirrus, 3 cloud, 4 cloud shadow,
    5 snow, 6 clear, 7 water. Precedence (first match wins):

    ====================  ======================
    fill (bit 0)          0  no data
    cloud (bit 3)         9  cloud high prob.
    dilated cloud (bit 1) 8  cloud medium prob.
    cloud shadow (bit 4)  3  cloud shadow
    cirrus (bit 2)        10 thin cirrus
    snow (bit 5)          11 snow
    water (bit 7)         6  water
    anything else         4  clear (vegetation)
    ====================  ======================

    So the chipper's default cloud set {1, 3, 8, 9, 10} and nodata {0} mean the same
    thing for Landsat as for Sentinel-2.
    """
    q = np.asarray(qa_pixel)
    if q.dtype.kind not in "ui":
        if q.dtype.kind == "f":
            q = np.nan_to_num(q, nan=1.0)  # NaN -> fill
        q = q.astype(np.uint16)
    out = np.full(q.shape, SCL_VEGETATION, dtype=np.uint8)
    # apply lowest precedence first so later assignments win
    for bit, cls in ((7, SCL_WATER), (5, SCL_SNOW), (2, SCL_CIRRUS), (4, SCL_SHADOW),
                     (1, SCL_CLOUD_MEDIUM), (3, SCL_CLOUD_HIGH), (0, SCL_NODATA)):  # fmt: skip
        out[(q >> bit) & 1 == 1] = cls
    return out


def to_scl(qa: np.ndarray, qa_format: str = "scl") -> np.ndarray:
    """A QA band in ``qa_format`` -> SCL-like uint8 (NaN and out-of-range -> 0 nodata)."""
    if qa_format == "landsat_qa_pixel":
        return landsat_qa_to_scl(qa)
    if qa_format != "scl":
        raise ConfigError(f"unknown qa_format {qa_format!r}: expected one of {QA_FORMATS}")
    q = np.asarray(qa)
    if q.dtype == np.uint8:
        return q
    if q.dtype.kind == "f":
        q = np.where(np.isfinite(q), q, 0)
    return np.where((q >= 0) & (q <= 255), q, 0).astype(np.uint8)


def qa_fill(qa_format: str = "scl") -> int:
    """Raw QA value meaning "no data" in ``qa_format`` (SCL 0; Landsat QA_PIXEL 1 = fill bit)."""
    return 1 if qa_format == "landsat_qa_pixel" else 0


def synthetic_qa(data: np.ndarray, nodata: float | int | None) -> np.ndarray:
    """SCL-like QA for a source without a QA band: 0 (no data) where every band equals
    ``nodata``, else 7 (unclassified: neither cloud nor nodata for the chipper)."""
    qa = np.full(data.shape[1:], SCL_UNCLASSIFIED, dtype=np.uint8)
    if nodata is not None and data.shape[0]:
        for r in range(0, data.shape[1], 512):  # row chunks: no scene-sized temporaries
            if not has_value(data[0, r : r + 512], nodata):  # the common case: one cheap pass
                continue
            empty = data[0, r : r + 512] == nodata
            for b in range(1, data.shape[0]):
                empty &= data[b, r : r + 512] == nodata
            qa[r : r + 512][empty] = SCL_NODATA
    return qa

"""Model inputs from raw data: normalized pixels, time rows, lat/lon rows, wavelengths.

:func:`model_inputs` builds a :class:`ModelInputs` (what the encoder takes for N chips);
the embedding engine and the task heads both start from it.

Unknown metadata: any ``None`` (or NaT / NaN) date or coordinate gives a row of zeros,
which is what the Clay model saw for about 20% of its training samples when the
acquisition time or location was withheld. A whole argument may also be ``None`` when
the caller passes ``n`` (``encode_time(None, n=5)``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timezone
from typing import Any

import numpy as np

from clay_core.errors import ConfigError
from clay_core.platforms import Platform, get_platform

__all__ = ["ModelInputs", "model_inputs", "encode_time", "encode_latlon", "normalize", "waves_for", "band_stats"]

_TWO_PI = 2.0 * math.pi


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(value != value)  # NaN, NaT (numpy and pandas) are not equal to themselves
    except (TypeError, ValueError):
        return False


def _to_utc(value: Any) -> datetime | None:
    """A UTC datetime from datetime/date/np.datetime64/ISO string; ``None`` when unknown.

    Naive datetimes and strings without an offset are taken as UTC (STAC datetimes are).
    """
    if _is_missing(value):
        return None
    if isinstance(value, np.datetime64):
        value = value.astype("datetime64[us]").item()
    elif isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError as exc:
            raise ConfigError(f"cannot parse date {value!r} (expected ISO 8601)") from exc
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=timezone.utc)
    raise ConfigError(f"cannot use {value!r} ({type(value).__name__}) as an acquisition date")


def _as_list(values: Any, n: int | None, what: str) -> list[Any]:
    if values is None:
        if n is None:
            raise ConfigError(f"{what} is None: pass n= to get that many unknown (zero) rows")
        return [None] * n
    if isinstance(values, (str, datetime, date, np.datetime64)) or np.ndim(values) == 0:
        values = [values]
    out = list(values.tolist() if isinstance(values, np.ndarray) and values.dtype.kind != "M" else values)
    if n is not None and len(out) != n:
        raise ConfigError(f"{what} has {len(out)} entries, expected {n}")
    return out


def encode_time(datetimes: Iterable[Any] | Any, n: int | None = None) -> np.ndarray:
    """[B, 4] float32 rows ``[sin w, cos w, sin h, cos h]``.

    ``w = isoweek * 2π / 52`` and ``h = hour(UTC) * 2π / 24`` (whole hours, as in training).
    Unknown dates (``None``, NaT) give zero rows.
    """
    values = _as_list(datetimes, n, "datetimes")
    rows = np.zeros((len(values), 4), dtype=np.float64)
    for i, value in enumerate(values):
        dt = _to_utc(value)
        if dt is None:
            continue
        w = dt.isocalendar().week * _TWO_PI / 52
        h = dt.hour * _TWO_PI / 24
        rows[i] = (math.sin(w), math.cos(w), math.sin(h), math.cos(h))
    return rows.astype(np.float32)


def encode_latlon(lat_deg: Any, lon_deg: Any, n: int | None = None) -> np.ndarray:
    """[B, 4] float32 rows ``[sin lat, cos lat, sin lon, cos lon]`` (latitude first).

    Inputs in degrees (scalars or sequences). A row with an unknown (None/NaN) latitude or
    longitude is all zeros.
    """
    lat = np.array(_as_list(lat_deg, n, "lat"), dtype=np.float64)
    lon = np.array(_as_list(lon_deg, len(lat), "lon"), dtype=np.float64)
    bad = np.abs(lat[np.isfinite(lat)]) > 90
    if bad.any():
        raise ConfigError(f"latitude out of [-90, 90]: {lat[np.isfinite(lat)][bad][:5].tolist()} (lat/lon swapped?)")
    known = np.isfinite(lat) & np.isfinite(lon)
    lat_r = np.deg2rad(np.where(known, lat, 0.0))
    lon_r = np.deg2rad(np.where(known, lon, 0.0))
    rows = np.stack([np.sin(lat_r), np.cos(lat_r), np.sin(lon_r), np.cos(lon_r)], axis=-1)
    rows[~known] = 0.0
    return rows.astype(np.float32)


def band_stats(platform: str | Platform, bands: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per-band (mean, std) float32 arrays in the requested order."""
    selected = get_platform(platform).select(bands)
    mean = np.array([b.mean for b in selected], dtype=np.float32)
    std = np.array([b.std for b in selected], dtype=np.float32)
    return mean, std


def waves_for(platform: str | Platform, bands: Sequence[str]) -> np.ndarray:
    """Central wavelengths in micrometres, float32, in the requested band order."""
    return np.array([b.wavelength_um for b in get_platform(platform).select(bands)], dtype=np.float32)


def normalize(
    pixels: Any, platform: str | Platform, bands: Sequence[str], *, linear_backscatter: bool = True
) -> np.ndarray:
    """Z-score raw values per band: ``(x - mean) / std`` -> float32, same shape.

    ``pixels`` is [..., C, H, W] with C = len(bands). For platforms whose statistics are in
    dB (Sentinel-1 RTC), linear backscatter is converted with ``10*log10`` first; zero,
    negative or NaN backscatter (nodata) has no dB value and is set to the band mean, i.e.
    0 after normalization. Pass ``linear_backscatter=False`` if the input is already in dB.
    """
    plat = get_platform(platform)
    mean, std = band_stats(plat, bands)
    x = np.asarray(pixels)
    if x.ndim < 3 or x.shape[-3] != len(mean):
        raise ConfigError(
            f"pixels shape {x.shape} does not match {len(mean)} bands {list(bands)} (expected [..., C, H, W])"
        )
    x = x.astype(np.float32, copy=True)
    shape = (len(mean), 1, 1)
    if plat.units == "db":
        valid = np.isfinite(x) & (x > 0) if linear_backscatter else np.isfinite(x)
        if linear_backscatter:
            np.log10(x, out=x, where=valid)
            x *= 10.0
        x = np.where(valid, x, mean.reshape(shape))
    x -= mean.reshape(shape)
    x /= std.reshape(shape)
    return x


def pixel_shape(pixels: Any) -> tuple[int, ...]:
    """The shape of any array-like (numpy, xarray, zarr, or an object with ``shape``)."""
    shape = getattr(pixels, "shape", None)
    return tuple(int(s) for s in (shape if shape is not None else np.shape(pixels)))


@dataclass(frozen=True, eq=False)
class ModelInputs:
    """Everything the encoder takes for N chips besides its weights.

    ``pixels`` stay raw (digital numbers; numpy, xarray or zarr) and are normalized batch by
    batch (:meth:`batch`): a cube larger than memory streams through, and no normalized
    float32 copy of every chip is ever held.
    """

    pixels: Any  # [N, C, H, W] raw
    platform: Platform
    bands: tuple[str, ...]
    time: np.ndarray  # [N, 4] float32, see encode_time
    latlon: np.ndarray  # [N, 4] float32, see encode_latlon
    waves: np.ndarray  # [C] float32 micrometres
    gsd: float  # metres

    def __len__(self) -> int:
        return int(self.time.shape[0])

    @property
    def chip_shape(self) -> tuple[int, int]:
        h, w = pixel_shape(self.pixels)[-2:]
        return h, w

    def batch(self, rows: slice | np.ndarray) -> np.ndarray:
        """Normalized float32 pixels [n, C, H, W] of ``rows`` (a slice or an index array)."""
        return normalize(np.asarray(self.pixels[rows]), self.platform, self.bands)

    def rows(self, start: int, stop: int) -> ModelInputs:
        """The inputs of chips ``start:stop`` (pixels sliced lazily, metadata rows copied)."""
        return replace(self, pixels=self.pixels[start:stop], time=self.time[start:stop],
                       latlon=self.latlon[start:stop])


def model_inputs(pixels: Any, *, platform: str | Platform, bands: Sequence[str], datetimes: Any, lat: Any,
                 lon: Any) -> ModelInputs:
    """The encoder's inputs for raw chips [N, C, H, W] of ``platform``'s ``bands``.

    ``datetimes``, ``lat``, ``lon`` have one entry per chip; ``None`` entries (or ``None``
    for a whole argument) mean unknown and give zero rows. Unknown bands and a pixel array
    that is not [N, len(bands), H, W] fail here, before any pixel is read.
    """
    plat = get_platform(platform)
    plat.select(bands)
    shape = pixel_shape(pixels)
    if len(shape) != 4:
        raise ConfigError(f"pixels must be [N, C, H, W], got shape {shape}")
    if shape[1] != len(bands):
        raise ConfigError(f"pixels have {shape[1]} bands but {len(bands)} band names were given: {list(bands)}")
    n = shape[0]
    return ModelInputs(pixels, plat, tuple(str(b) for b in bands), encode_time(datetimes, n=n),
                       encode_latlon(lat, lon, n=n), waves_for(plat, bands), float(plat.gsd))

"""The detector's time axis: any date-like value to ``datetime`` and to decimal years.

Decimal years (``1970 + seconds since the epoch / mean Gregorian year``) let irregular dates
and gaps enter a harmonic fit with no special handling, and keep ``cos(2 pi t)`` on the same
phase on the same calendar day every year (to within ~1 day).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime, timedelta, timezone
from typing import Any

import numpy as np

__all__ = ["decimal_year", "to_datetime", "to_decimal_years"]

_EPOCH = datetime(1970, 1, 1)
_SECONDS_PER_YEAR = 365.2425 * 86400.0  # mean Gregorian year


def to_datetime(d: Any) -> datetime:
    """Normalize a date-like value to ``datetime.datetime`` (microsecond precision).

    Accepts ``datetime`` (incl. ``pandas.Timestamp``), ``date`` (-> midnight),
    ``numpy.datetime64`` (-> naive, UTC by convention) and ISO-8601 strings. Timezone-aware
    values are converted to UTC and stay aware; naive values are taken as UTC and stay naive.
    """
    if isinstance(d, np.datetime64):
        if np.isnat(d):
            raise ValueError("NaT is not a valid observation date")
        us = int(d.astype("datetime64[us]").astype(np.int64))
        return _EPOCH + timedelta(microseconds=us)
    if isinstance(d, datetime):
        aware = d.tzinfo is not None and d.utcoffset() is not None
        if aware:
            d = d.astimezone(timezone.utc)
        return datetime(
            d.year, d.month, d.day, d.hour, d.minute, d.second, d.microsecond,
            tzinfo=timezone.utc if aware else None,
        )
    if isinstance(d, date):
        return datetime(d.year, d.month, d.day)
    if isinstance(d, str):
        return to_datetime(datetime.fromisoformat(d))
    raise TypeError(f"not a date: {d!r} ({type(d).__name__})")


def decimal_year(dt: datetime) -> float:
    """One normalized ``datetime`` (see :func:`to_datetime`) as a decimal year."""
    naive = dt.replace(tzinfo=None)  # to_datetime() already put aware values in UTC
    return 1970.0 + (naive - _EPOCH).total_seconds() / _SECONDS_PER_YEAR


def to_decimal_years(dates: Iterable[Any]) -> np.ndarray:
    """Dates -> float decimal years, the time axis of every fit."""
    return np.array([decimal_year(to_datetime(d)) for d in dates], dtype=np.float64)

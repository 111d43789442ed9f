"""Synthetic series for the detector tests: ~weekly irregular dates and seasonal signals."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np

from clay_core.change import to_decimal_years

SIGMA = 0.02  # noise sd of the synthetic series
START = datetime(2020, 1, 3)


def make_dates(n_years=3.0, step=7, jitter=2, drop=0.1, seed=0, gap=None, start=START):
    """~weekly irregular dates: jittered, ~10% randomly missing, optional [gap) in years."""
    rng = np.random.default_rng(seed)
    days = np.arange(0, n_years * 365.25, step, dtype=float)
    days = days + rng.integers(-jitter, jitter + 1, size=days.size)
    days = days[rng.random(days.size) >= drop]
    if gap is not None:
        g0, g1 = gap
        days = days[(days < g0 * 365.25) | (days >= g1 * 365.25)]
    days = np.unique(days)
    return [start + timedelta(days=float(d)) for d in days]


def seasonal(dates, n_features=1, seed=1, sigma=SIGMA):
    """Annual sinusoid (different level/amplitude/phase per feature) + Gaussian noise."""
    rng = np.random.default_rng(seed)
    t = to_decimal_years(dates)
    level = np.linspace(1.0, -0.5, n_features)
    amp = np.linspace(0.5, 0.2, n_features)
    phase = np.linspace(0.0, 2.0, n_features)
    y = level + amp * np.sin(2 * np.pi * t[:, None] + phase) + rng.normal(0, sigma, (len(t), n_features))
    return y[:, 0] if n_features == 1 else y


def first_index_after(dates, years):
    t = to_decimal_years(dates)
    return int(np.argmax(t >= t[0] + years))

"""Environment-driven settings read once when the code location loads.

Everything lives under ``CLAY_HOME`` (default ``./.clay``): Dagster home, data, embedded
Postgres. Deleting that folder resets the platform.
"""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path

DEFAULT_TILES = ("31UFU", "32UNB")
DEFAULT_START = "2024-01-01"  # a Monday: windows run Monday..Sunday


def clay_home() -> Path:
    return Path(os.environ.get("CLAY_HOME", ".clay")).resolve()


def tiles() -> list[str]:
    raw = os.environ.get("CLAY_TILES", ",".join(DEFAULT_TILES))
    return [t.strip().upper() for t in raw.split(",") if t.strip()]


def start_date() -> str:
    value = os.environ.get("CLAY_START", DEFAULT_START)
    date.fromisoformat(value)  # fail at load time, naming the variable, rather than mid-run
    return value


def end_date() -> str | None:
    value = os.environ.get("CLAY_END") or None
    if value:
        date.fromisoformat(value)
    return value

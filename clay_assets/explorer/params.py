"""Server-side checks of every explorer request parameter.

Every value a page (or anyone else) sends is parsed here before it reaches a query: chip ids,
tiles and dates by pattern, numbers by range. A bad value raises :class:`BadRequest` (HTTP 400)
with one line that names the parameter, what it got and what it takes; SQL never sees it.
Queries bind values as parameters anyway: the checks are for clear messages and bounded work.
"""

from __future__ import annotations

import math
import re
from datetime import date, timedelta
from typing import Mapping

__all__ = ["BadRequest", "NotFound", "Observation", "MAX_K", "MAX_LABELS", "chip_id", "tiles", "day", "window",
           "integer", "number", "observations"]

MAX_K = 200  # results per search: a page shows a strip of thumbnails, not a table of thousands
MAX_LABELS = 100  # positives + negatives of one labelled search
MAX_TILES = 50
# MGRS tile (zone 1-60, latitude band C-X without I/O, 100 km square) and chip ids <tile>_r<row>c<col>
_TILE = re.compile(r"[0-9]{1,2}[C-HJ-NP-X][A-HJ-NP-Z]{2}")
_CHIP = re.compile(rf"({_TILE.pattern})_r[0-9]{{1,5}}c[0-9]{{1,5}}")
_SHOW = 60  # characters of a bad value repeated in a message


class BadRequest(ValueError):
    """A request parameter is invalid (HTTP 400)."""

    status = 400


class NotFound(LookupError):
    """A well-formed request names something the database does not hold (HTTP 404)."""

    status = 404


def _shown(value: str) -> str:
    return repr(value if len(value) <= _SHOW else value[:_SHOW] + "...")


def _one(q: Mapping[str, str], name: str) -> str | None:
    v = q.get(name)
    return None if v is None or v.strip() == "" else v.strip()


def chip_id(q: Mapping[str, str], name: str = "chip", required: bool = True) -> str | None:
    """A chip id like ``31UFU_r002c000``."""
    v = _one(q, name)
    if v is None:
        if required:
            raise BadRequest(f"{name} is required: a chip id like 31UFU_r002c000")
        return None
    return _check_chip(v, name)


def _check_chip(v: str, name: str) -> str:
    if not _CHIP.fullmatch(v):
        raise BadRequest(f"{name} {_shown(v)} is not a chip id; chip ids look like 31UFU_r002c000 "
                         "(MGRS tile, _r<row>c<col>)")
    return v


def tiles(q: Mapping[str, str], name: str = "tiles") -> list[str] | None:
    """Comma-separated MGRS tiles, e.g. ``31UFU,32UNB``; None when absent."""
    v = _one(q, name)
    if v is None:
        return None
    out = [t.strip().upper() for t in v.split(",") if t.strip()]
    if len(out) > MAX_TILES:
        raise BadRequest(f"{name}: at most {MAX_TILES} tiles, got {len(out)}")
    for t in out:
        if not _TILE.fullmatch(t):
            raise BadRequest(f"{name}: {_shown(t)} is not an MGRS tile; tiles look like 31UFU")
    return out or None


def day(q: Mapping[str, str], name: str) -> date | None:
    """An ISO date ``YYYY-MM-DD``; None when absent."""
    v = _one(q, name)
    if v is None:
        return None
    if not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", v):
        raise BadRequest(f"{name} {_shown(v)} is not a date; use YYYY-MM-DD")
    try:
        return date.fromisoformat(v)
    except ValueError:
        raise BadRequest(f"{name} {_shown(v)} is not a calendar date; use YYYY-MM-DD") from None


def window(q: Mapping[str, str], name: str = "window") -> date | None:
    """A weekly window: its Monday (any other day is refused, naming the Monday before it)."""
    d = day(q, name)
    if d is not None and d.weekday() != 0:
        monday = d - timedelta(days=d.weekday())
        raise BadRequest(f"{name} {d} is not a weekly window; windows start on Mondays (e.g. {monday})")
    return d


def integer(q: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    """An integer in [lo, hi]."""
    return _in_range(q, name, default, lo, hi, True)


def number(q: Mapping[str, str], name: str, default: float, lo: float, hi: float) -> float:
    """A finite number in [lo, hi]."""
    return _in_range(q, name, default, lo, hi, False)


def _in_range(q: Mapping[str, str], name: str, default, lo, hi, whole: bool):
    v = _one(q, name)
    if v is None:
        return default
    what = f"{name} must be an integer in {lo}..{hi}" if whole else f"{name} must be a number in [{lo:g}, {hi:g}]"
    try:
        if len(v) > 32 or (whole and not re.fullmatch(r"[+-]?[0-9]+", v)):
            raise ValueError(v)
        x = int(v) if whole else float(v)
    except ValueError:
        raise BadRequest(f"{what}, got {_shown(v)}") from None
    if not (math.isfinite(x) and lo <= x <= hi):
        raise BadRequest(f"{what}, got {x if whole else _shown(v)}")
    return x


class Observation(tuple):
    """(chip_id, acquired date): one observation of a chip, written ``CHIP@YYYY-MM-DD``."""

    __slots__ = ()

    def __new__(cls, chip: str, acquired: date):
        return super().__new__(cls, (chip, acquired))

    @property
    def chip(self) -> str:
        return self[0]

    @property
    def acquired(self) -> date:
        return self[1]

    def __str__(self) -> str:
        return f"{self.chip}@{self.acquired.isoformat()}"


def observations(q: Mapping[str, str], name: str) -> list[Observation]:
    """Comma-separated observations ``CHIP@YYYY-MM-DD`` (the labels a page marked)."""
    v = _one(q, name)
    if v is None:
        return []
    out = []
    for item in (s.strip() for s in v.split(",")):
        if not item:
            continue
        chip, sep, when = item.partition("@")
        if not sep:
            raise BadRequest(f"{name}: {_shown(item)} is not an observation; write CHIP@YYYY-MM-DD, "
                             "e.g. 31UFU_r002c000@2024-02-05")
        out.append(Observation(_check_chip(chip, name), day({name: when}, name)))
    if len(out) > MAX_LABELS:
        raise BadRequest(f"{name}: at most {MAX_LABELS} labelled observations, got {len(out)}")
    return list(dict.fromkeys(out))

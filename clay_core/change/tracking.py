"""Persistent change events carried from window to window: every chip's detector, advanced by
one window at a time on columnar state.

:func:`advance_events` feeds a window's observations (oldest first) to the detector columns
(``det_``) of a :class:`~clay_core.change.carry.ChipTable`: one vectorized step per
acquisition rank (a chip's first observation in the window, then its second...), so
processing windows one at a time gives the events a whole-series ``detect_changes`` would.
The table is saved with the window's change partition (``carry.npz``) and continued by the next.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from clay_core.change.batch_detector import detector_columns, step_detector
from clay_core.change.carry import ChipTable
from clay_core.change.params import DetectorParams
from clay_core.change.scores import window_order
from clay_core.types import Observations

__all__ = ["EVENT_COLUMNS", "SCORE_COLUMNS", "EventTracking", "advance_events", "new_detector_table"]

EVENT_COLUMNS = ["chip_id", "first_date", "confirmed_date", "magnitude", "signals", "n_obs_baseline"]
SCORE_COLUMNS = ["chip_id", "datetime", "detector_score", "detector_exceeds", "detector_in_baseline"]


@dataclass
class EventTracking:
    """The detector columns after one window, and what this window added."""

    states: ChipTable  # advanced in place
    events: pd.DataFrame  # events confirmed by this window's observations
    scores: pd.DataFrame  # chip_id, datetime, detector_score, detector_exceeds, detector_in_baseline


def new_detector_table(n_features: int, detector: DetectorParams) -> ChipTable:
    """A table with no chips and the detector's columns."""
    return ChipTable(np.array([], dtype=object), detector_columns(n_features, detector))


def advance_events(
    states: ChipTable, obs: Observations, values: np.ndarray, detector: DetectorParams
) -> EventTracking:
    """Feed one window's observations (oldest first) to each chip's detector (``states`` is
    advanced in place; chips seen for the first time start fresh).

    ``values`` are the series the detector watches (row-aligned with ``obs``; the first
    principal components in the pipeline).
    """
    order, rank = window_order(obs)
    rows = states.rows(obs.chip_id[order])
    us = obs.datetime[order].astype("datetime64[us]").astype(np.int64)
    vals = np.asarray(values, np.float64)[order]
    n = len(order)
    score, exceeds, in_base = np.full(n, np.nan), np.zeros(n, bool), np.zeros(n, bool)
    found: list[tuple[int, object]] = []
    for r in range(int(rank.max()) + 1 if n else 0):
        sel = np.flatnonzero(rank == r)
        s, e, b, ev = step_detector(states, rows[sel], us[sel], vals[sel], detector)
        score[sel], exceeds[sel], in_base[sel] = s, e, b
        found.extend((int(sel[j]), event) for j, event in ev)
    ids = obs.chip_id[order].astype(str)
    events = [(ids[j], e.first_date.date(), e.confirmed_date.date(), float(e.magnitude), list(e.signals),
               int(e.n_obs_baseline)) for j, e in sorted(found, key=lambda x: x[0])]
    scores = pd.DataFrame({"chip_id": ids, "datetime": obs.datetime[order], "detector_score": score,
                           "detector_exceeds": exceeds, "detector_in_baseline": in_base})
    return EventTracking(states, pd.DataFrame(events, columns=EVENT_COLUMNS), scores)

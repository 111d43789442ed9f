"""Persistent change events carried from window to window: per-chip detector states.

Each chip's :class:`~clay_core.change.state.ChangeState` is advanced one window at a time by
:func:`advance_events` and saved with the window's change partition (``detector_state.json``,
with the PCA version and the detector parameters it was made with). A later window starts
from the newest saved state made with the same basis and parameters and replays any earlier
windows scored since, so processing windows one at a time gives the events a whole-series
``detect_changes`` would.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from clay_core.change.detector import update
from clay_core.change.params import ChangeParams, DetectorParams
from clay_core.change.pca import PcaBasis
from clay_core.change.state import ChangeState
from clay_core.storage import CHANGE, Layout
from clay_core.types import Observations, PartitionId

__all__ = [
    "EVENT_COLUMNS", "STATE_FILE", "EventTracking", "advance_events", "previous_states", "replay_windows",
    "save_states",
]

STATE_FILE = "detector_state.json"
EVENT_COLUMNS = ["chip_id", "first_date", "confirmed_date", "magnitude", "signals", "n_obs_baseline"]
SCORE_COLUMNS = ["chip_id", "datetime", "detector_score", "detector_exceeds", "detector_in_baseline"]


@dataclass
class EventTracking:
    """Per-chip detector states after one window, and what this window added."""

    states: dict[str, dict]  # chip_id -> ChangeState.to_dict()
    events: pd.DataFrame  # events confirmed by this window's observations
    scores: pd.DataFrame  # chip_id, datetime, detector_score, detector_exceeds, detector_in_baseline


def advance_events(
    states: dict[str, dict], obs: Observations, values: np.ndarray, detector: DetectorParams
) -> EventTracking:
    """Feed one window's observations (oldest first) to each chip's detector state.

    ``values`` are the series the detector watches (row-aligned with ``obs``; the first
    principal components in the pipeline). A chip without a state starts one with
    ``detector``. States round-trip through JSON, so processing windows one at a time gives
    the events a whole-series ``detect_changes`` would (``tests/assets/test_change_pipeline.py``
    checks it on the pipeline's own data).
    """
    new_states = dict(states)
    events, scores = [], []
    for i in np.argsort(obs.datetime, kind="stable"):
        cid = str(obs.chip_id[i])
        when = pd.Timestamp(obs.datetime[i]).to_pydatetime()
        if cid in new_states:
            state, new, sc = update(ChangeState.from_dict(new_states[cid]), when, values[i], True)
        else:
            state, new, sc = update(None, when, values[i], True, params=detector)
        new_states[cid] = state.to_dict()
        for e in new:
            events.append((cid, e.first_date.date(), e.confirmed_date.date(), float(e.magnitude), list(e.signals),
                           int(e.n_obs_baseline)))
        scores.append((cid, obs.datetime[i], float(sc.score) if sc.score is not None else np.nan, bool(sc.exceeds),
                       bool(sc.in_baseline)))
    return EventTracking(
        new_states, pd.DataFrame(events, columns=EVENT_COLUMNS), pd.DataFrame(scores, columns=SCORE_COLUMNS)
    )


def previous_states(
    layout: Layout, pid: PartitionId, pca_version: int, detector: DetectorParams
) -> tuple[dict[str, dict], str | None]:
    """``(states, last window they include)`` from the newest earlier change partition of the
    tile, if it used the same PCA basis and detector parameters; ``({}, None)`` otherwise."""
    for w in reversed([w for w in layout.windows(CHANGE, pid.tile) if w < pid.window]):
        path = layout.partition(CHANGE, pid.tile, w) / STATE_FILE
        if path.is_file():
            saved = json.loads(path.read_text())
            if saved.get("pca_version") == pca_version and saved.get("detector") == detector.to_dict():
                return saved["states"], w
            return {}, None
    return {}, None


def replay_windows(
    states: dict[str, dict],
    windows: Mapping[str, Observations | None],
    upto: str | None,
    basis: PcaBasis,
    params: ChangeParams,
) -> tuple[dict[str, dict], int]:
    """Advance ``states`` through the ``windows`` (oldest first) after ``upto`` (all when
    ``None``); returns the states and how many windows with observations were replayed."""
    replayed = 0
    for w, obs in windows.items():
        if (upto is None or w > upto) and obs is not None:
            pcs = basis.transform(obs.vectors)[:, : params.n_components]
            states = advance_events(states, obs, pcs, params.detector).states
            replayed += 1
    return states, replayed


def save_states(directory: Path, pca_version: int, detector: DetectorParams, states: dict[str, dict]) -> Path:
    """Write the states, with what they were made with, into a change partition directory."""
    path = Path(directory) / STATE_FILE
    path.write_text(json.dumps({"pca_version": pca_version, "detector": detector.to_dict(), "states": states}))
    return path

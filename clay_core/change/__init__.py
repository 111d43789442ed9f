"""Change detection on embedding time series: PCA basis, per-date scores, persistent events.

Stages (framework-free, one per asset):

* :func:`fit_pca` -> :class:`PcaFit`: one PCA basis over every embedding partition, versioned.
* :func:`score_change` -> :class:`ChangeResult`: per chip and date scores, the CCDC-style
  detector advanced by the window, and the partition written atomically.

Parameters: :class:`ChangeParams` (per-date scores) holding :class:`DetectorParams` (the
detector). What a partition carries to the next window: :class:`ChipTable` (``carry.npz``),
advanced by :func:`step_window`, one window at a time for every chip at once. Building blocks:
:func:`detect_changes` / :func:`run_series` / :func:`update` on
one series, :func:`advance_events`, :func:`fit_harmonic`, cosine
distances, and the yardstick against planted changes (:func:`score_detections`).
"""

from clay_core.change.batch_detector import detect_many
from clay_core.change.detector import detect_changes, run_series, score_series, update
from clay_core.change.distances import cosine_distance, distances_to_baseline, distances_to_previous
from clay_core.change.evaluate import DetectionReport, score_detections, truth_chips
from clay_core.change.carry import CarryHeader, ChipTable
from clay_core.change.harmonic import HarmonicFit, fit_harmonic, fit_harmonic_batch, harmonic_design
from clay_core.change.params import ChangeParams, DetectorParams
from clay_core.change.pca import PcaBasis, fit_incremental, load_current, next_version, set_current
from clay_core.change.pixels import PixelParams
from clay_core.change.stage import ChangeResult, PcaFit, fit_pca, score_change, step_window
from clay_core.change.state import ChangeEvent, ChangeState, ObservationScore
from clay_core.change.timeutil import to_datetime, to_decimal_years
from clay_core.change.tracking import EventTracking, advance_events

__all__ = [
    "CarryHeader", "ChangeEvent", "ChangeParams", "ChangeResult", "ChangeState", "ChipTable", "DetectionReport",
    "DetectorParams", "EventTracking", "HarmonicFit", "ObservationScore", "PcaBasis", "PcaFit", "PixelParams", "advance_events",
    "cosine_distance", "detect_changes", "detect_many", "distances_to_baseline", "distances_to_previous", "fit_harmonic",
    "fit_harmonic_batch", "fit_incremental", "fit_pca", "harmonic_design", "load_current", "next_version",
    "run_series", "score_change", "score_detections", "score_series", "set_current",
    "step_window", "to_datetime", "to_decimal_years", "truth_chips", "update",
]

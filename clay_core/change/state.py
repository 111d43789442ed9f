"""What the detector keeps and emits: its per-chip state, confirmed events, per-date scores.

Everything here round-trips through plain JSON (``to_dict``/``from_dict``: lists, floats,
ISO dates), so a pipeline can persist a chip's :class:`ChangeState` between runs and continue
exactly where it stopped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

import numpy as np

from clay_core.change.harmonic import HarmonicFit
from clay_core.change.params import DetectorParams
from clay_core.change.timeutil import to_datetime

__all__ = ["STATE_VERSION", "ChangeEvent", "ChangeState", "ObservationScore", "SeriesObservation"]

STATE_VERSION = 2
NAN = float("nan")


@dataclass(frozen=True)
class ChangeEvent:
    """A confirmed change.

    Attributes:
        first_date: date of the first observation of the confirming run (the change date).
        confirmed_date: date of the observation that confirmed it (the ``k_consecutive``-th
            exceeding one, or the one that took the CUSUM over its limit): when it became known.
        magnitude: median score over the run (RMS robust z-score, baseline-sd units).
        signals: names of the features whose median ``|z|`` over the run exceeded the
            threshold, strongest first (at most ``max_signals``; the single strongest feature
            if none exceeded on its own, i.e. a diffuse change).
        first_index, confirmed_index: positions of those observations in the input series
            (counting every observation passed in, cloudy ones included).
        n_obs_baseline: number of observations of the baseline the change departed from.
    """

    first_date: datetime
    confirmed_date: datetime
    magnitude: float
    signals: list[str]
    first_index: int
    confirmed_index: int
    n_obs_baseline: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "first_date": self.first_date.isoformat(),
            "confirmed_date": self.confirmed_date.isoformat(),
            "magnitude": float(self.magnitude),
            "signals": list(self.signals),
            "first_index": int(self.first_index),
            "confirmed_index": int(self.confirmed_index),
            "n_obs_baseline": int(self.n_obs_baseline),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ChangeEvent:
        return cls(
            first_date=to_datetime(d["first_date"]),
            confirmed_date=to_datetime(d["confirmed_date"]),
            magnitude=float(d["magnitude"]),
            signals=[str(s) for s in d["signals"]],
            first_index=int(d["first_index"]),
            confirmed_index=int(d["confirmed_index"]),
            n_obs_baseline=int(d["n_obs_baseline"]),
        )


@dataclass(frozen=True)
class ObservationScore:
    """How one observation compared with the current baseline.

    Attributes:
        date: the observation date (normalized by :func:`~clay_core.change.timeutil.to_datetime`).
        index: position in the series (every observation counted, cloudy ones included).
        score: RMS over features of ``residual / rmse`` (NaN when not scored: cloudy, part of a
            baseline being collected, or before ``baseline_start``).
        residual_norm: L2 norm of the residual vector (value units).
        abs_deviation: mean absolute residual over features (value units).
        pct_deviation: ``100 * residual_norm / ||prediction||`` (NaN if the prediction is ~0).
        exceeds: ``score > threshold`` (and ``abs_deviation >= min_magnitude``).
        in_baseline: the observation went into a baseline being collected.
        clear: usable observation (clear flag set and all values finite).
    """

    date: datetime
    index: int
    score: float
    residual_norm: float
    abs_deviation: float
    pct_deviation: float
    exceeds: bool
    in_baseline: bool
    clear: bool

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def unscored(cls, dt: datetime, index: int, *, in_baseline: bool, clear: bool) -> ObservationScore:
        """An observation that got no score (cloudy, baseline, or before ``baseline_start``)."""
        return cls(dt, index, NAN, NAN, NAN, NAN, False, in_baseline, clear)


@dataclass(eq=False)
class SeriesObservation:
    """One clear observation the state keeps (baseline buffer or pending run)."""

    index: int
    date: datetime
    t: float
    value: np.ndarray
    score: float = NAN

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "date": self.date.isoformat(),
            "t": self.t,
            "value": self.value.tolist(),
            "score": None if math.isnan(self.score) else self.score,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SeriesObservation:
        s = d.get("score")
        return cls(
            index=int(d["index"]),
            date=to_datetime(d["date"]),
            t=float(d["t"]),
            value=np.asarray(d["value"], dtype=np.float64),
            score=NAN if s is None else float(s),
        )


@dataclass(eq=False)
class ChangeState:
    """Everything the detector needs to continue a series with the next observation.

    Holds the parameters, the current baseline fit (``None`` while a baseline is being
    collected), the clear observations collected for that baseline, the pending run of
    exceeding observations (kept whole: they seed the new baseline if the change is
    confirmed) and all events emitted so far. ``to_dict()`` gives plain JSON-safe data
    (lists, floats, ISO dates) and ``from_dict`` restores an identical state, so a pipeline
    can persist it per chip between runs.

    Size: the state holds the segment's observation vectors (~50 x F floats a year of weekly
    observations) while its model still refits (``refit_growth``), at most ``refit_max_obs``
    of them; then, or without refits, only ``(n_coef + 1) x F`` floats plus the pending run and
    the CUSUM's run (``max_run``).
    """

    params: DetectorParams = field(default_factory=DetectorParams)
    n_seen: int = 0
    n_features: int | None = None
    last_t: float | None = None
    segment: int = 0
    fit: HarmonicFit | None = None
    buffer: list[SeriesObservation] = field(default_factory=list)
    pending: list[SeriesObservation] = field(default_factory=list)
    events: list[ChangeEvent] = field(default_factory=list)
    cusum: np.ndarray | None = None  # the CUSUM statistic [F] (None = zero)
    cusum_run: list[SeriesObservation] = field(default_factory=list)  # observations since its last restart

    @classmethod
    def new(cls, **params: Any) -> ChangeState:
        """Empty state for the given parameters (see :class:`DetectorParams`)."""
        return cls(params=DetectorParams.from_kwargs(**params))

    @property
    def collecting_baseline(self) -> bool:
        return self.fit is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "params": self.params.to_dict(),
            "n_seen": self.n_seen,
            "n_features": self.n_features,
            "last_t": self.last_t,
            "segment": self.segment,
            "fit": None if self.fit is None else self.fit.to_dict(),
            "buffer": [o.to_dict() for o in self.buffer],
            "pending": [o.to_dict() for o in self.pending],
            "events": [e.to_dict() for e in self.events],
            "cusum": None if self.cusum is None else self.cusum.tolist(),
            "cusum_run": [o.to_dict() for o in self.cusum_run],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ChangeState:
        if d.get("version") != STATE_VERSION:
            raise ValueError(f"unsupported ChangeState version {d.get('version')!r}")
        return cls(
            params=DetectorParams.from_dict(d["params"]),
            n_seen=int(d["n_seen"]),
            n_features=None if d["n_features"] is None else int(d["n_features"]),
            last_t=None if d["last_t"] is None else float(d["last_t"]),
            segment=int(d["segment"]),
            fit=None if d["fit"] is None else HarmonicFit.from_dict(d["fit"]),
            buffer=[SeriesObservation.from_dict(o) for o in d["buffer"]],
            pending=[SeriesObservation.from_dict(o) for o in d["pending"]],
            events=[ChangeEvent.from_dict(e) for e in d["events"]],
            cusum=None if d.get("cusum") is None else np.asarray(d["cusum"], dtype=np.float64),
            cusum_run=[SeriesObservation.from_dict(o) for o in d.get("cusum_run", [])],
        )

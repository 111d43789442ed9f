"""The change stage's one parameter vocabulary: detector settings and per-date score settings.

:class:`DetectorParams` configures the persistent-change detector
(:mod:`clay_core.change.detector`); :class:`ChangeParams` configures the per-date scores
(:mod:`clay_core.change.scores`) and carries the detector's settings in ``detector``, so one
typed object goes from configuration to :func:`~clay_core.change.stage.score_change`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

from clay_core.change.timeutil import decimal_year, to_datetime
from clay_core.errors import ConfigError

__all__ = ["ChangeParams", "DetectorParams", "MIN_BASELINE_OBS"]

MIN_BASELINE_OBS = 3


def _opt_datetime(d: Any) -> datetime | None:
    return None if d is None else to_datetime(d)


@dataclass(frozen=True)
class DetectorParams:
    """Parameters of the change detector (all keyword arguments of ``update`` & co.).

    Attributes:
        baseline_obs: clear observations needed to fit a baseline (default 12; >= 3).
        baseline_years: minimum time span of a baseline in years; ``None`` = 1.0 when
            ``n_harmonics > 0`` (one seasonal cycle) else 0.0.
        baseline_start: first baseline only: ignore observations before this date.
        baseline_end: first baseline only: the baseline is every clear observation up to and
            including this date (needs >= 3 of them, otherwise the count rule applies).
        n_harmonics: annual harmonics of the baseline (default 1).
        trend: linear trend in the baseline (default False).
        restart_trend: baselines after a confirmed change (and every fit of a segment that
            refits, see ``refit_growth``) also fit a linear trend (default True): the new land
            cover is often a recovery (regrowth), which a flat model would flag again.
        trend_min_t: a restarted baseline keeps a feature's slope only when its t-statistic is
            at least this (default 3.0): a slope fitted to one year and extrapolated for years
            must be real, or it would itself look like a change.
        alpha: false-exceedance probability per observation of the fast test, were residuals
            Gaussian (default 1e-6: real residuals are heavier-tailed; at 1e-4 undetected haze
            on three embedding components in a row fired on the planted benchmark).
            An observation exceeds when its standardized residuals' sum of squares is above
            ``F * (1 + p / n) * f.ppf(1 - alpha, F, nu)``: an F-distribution quantile, so the
            threshold widens for many features ``F`` and for short baselines (``n`` clear
            observations, ``p`` coefficients, ``nu = n - p`` degrees of freedom of the
            scale).
        threshold: fixed RMS z-score threshold instead of ``alpha`` (default None = use ``alpha``).
        k_consecutive: consecutive exceeding clear observations that confirm a change
            (default 3).
        cusum: also run the multivariate CUSUM for subtle persistent shifts (default True).
        cusum_shift: the shift (baseline-sd units, norm over features) the CUSUM is tuned to
            detect fastest (default 1.0; its reference value is half of it).
        cusum_arl: in-control average run length (clear observations between false alarms on
            Gaussian noise) the CUSUM's decision limit is calibrated to (default 1e6: residuals
            are never quite Gaussian; at 2e4 the planted benchmark's 3 embedding components
            fired on stable chips 9 times, at 1e6 never, and nrt's simulator lost no F1).
        cusum_clip: standardized residual vectors are shrunk to this norm before they enter
            the CUSUM (default 3.0), so one outlier adds at most ``clip - shift / 2``.
        max_run: observations of a CUSUM run kept for dating and restarting (default 52).
        serial_lags: the baseline's noise scale includes its residuals' serial correlation up to
            this many lags (default 8, about two months of weekly observations; 0 = off): where the
            seasonal model misses part of the phenology, residuals come in same-signed runs
            that would otherwise read as a change.
        variogram_floor: each feature's scale is at least the median absolute difference of
            consecutive observations of its baseline (CCDC's and COLD's adjusted RMSE; default
            True). A robust fit's scale describes the clean core of the observations; real
            series also vary in ways the model leaves out (a spring a week late, a summer 5 %
            greener, undetected haze), and runs of those would otherwise read as changes. With
            ``refit_growth`` it cut the events COLD does not confirm on nrt's real Sentinel-2
            pixels from 84.9 to 50.3 per 100 pixel-series; on the planted world and nrt's
            simulator it cost nothing that matters (``docs/benchmarks_change.md``). It also
            dulls the detector on a strong season sampled weekly (a 1.5-sd step under a
            25-sd annual cycle goes unseen): the floor is then the season's weekly step.
        min_magnitude: an exceeding observation must also have a mean absolute deviation
            (value units) of at least this (default 0 = off).
        refit_growth: refit the segment's model as it grows (CCDC's and COLD's update rule):
            every clear observation that does not exceed joins the segment, and the model is
            fitted again on all of them once they number ``refit_growth`` times the last fit's
            count (default 1.33, CCDC's and COLD's value; None = the first fit is extrapolated
            for the whole segment), as soon as the CUSUM is at rest (a refit while it adds up
            a departure would take the departure in: subtle steps would go unseen). A
            refitting segment may keep a significant trend (``trend_min_t``) from its first fit
            on, and gains harmonics as observations allow (3 per coefficient, up to
            ``n_harmonics``), so it follows its own slow drift instead of extrapolating its
            first year: on the planted world this removed every false event of the held-out
            seed 2 (a tile-wide drift).
        refit_max_obs: a segment's last refit uses this many observations (default 150, about
            3 years of weekly clear observations); then its model is frozen and the stored
            observations are dropped, so a chip's state stays bounded however long its history
            (the first fit's own window, ``baseline_obs``/``baseline_years``/``baseline_end``,
            is not capped by it).
        robust: robust (IRLS) baseline fit (default True).
        ridge: ridge penalty of the baseline fit (default 1e-3).
        min_rmse: floor of the per-feature baseline scale (default 1e-6).
        feature_names: names used in ``ChangeEvent.signals``; default ``["value"]`` for one
            feature, else ``["f0", "f1", ...]``.
        max_signals: at most this many feature names per event (default 10).
    """

    baseline_obs: int = 12
    baseline_years: float | None = None
    baseline_start: datetime | None = None
    baseline_end: datetime | None = None
    n_harmonics: int = 1
    trend: bool = False
    restart_trend: bool = True
    trend_min_t: float = 3.0
    alpha: float = 1e-6
    threshold: float | None = None
    k_consecutive: int = 3
    cusum: bool = True
    cusum_shift: float = 1.0
    cusum_arl: float = 1e6
    cusum_clip: float = 3.0
    max_run: int = 52
    serial_lags: int = 8
    variogram_floor: bool = True
    min_magnitude: float = 0.0
    min_run_cosine: float = 0.5
    refit_growth: float | None = 1.33
    refit_max_obs: int = 150
    robust: bool = True
    ridge: float = 1e-3
    min_rmse: float = 1e-6
    feature_names: tuple[str, ...] | None = None
    max_signals: int = 10

    def __post_init__(self) -> None:
        self._normalize()
        self._validate()

    def _normalize(self) -> None:
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 (frozen dataclass)
        set_("baseline_start", _opt_datetime(self.baseline_start))
        set_("baseline_end", _opt_datetime(self.baseline_end))
        if self.feature_names is not None:
            set_("feature_names", tuple(str(n) for n in self.feature_names))
        if self.baseline_years is not None:
            set_("baseline_years", float(self.baseline_years))
        if self.threshold is not None:
            set_("threshold", float(self.threshold))
        if self.refit_growth is not None:
            set_("refit_growth", float(self.refit_growth))
        for k in ("alpha", "trend_min_t", "cusum_shift", "cusum_arl", "cusum_clip", "min_magnitude", "min_run_cosine", "ridge",
                  "min_rmse"):
            set_(k, float(getattr(self, k)))
        for k in ("baseline_obs", "n_harmonics", "k_consecutive", "max_signals", "max_run", "serial_lags", "refit_max_obs"):
            set_(k, int(getattr(self, k)))
        for k in ("trend", "restart_trend", "cusum", "robust", "variogram_floor"):
            set_(k, bool(getattr(self, k)))

    def _validate(self) -> None:
        if self.baseline_obs < MIN_BASELINE_OBS:
            raise ValueError(f"baseline_obs must be >= {MIN_BASELINE_OBS}")
        if self.k_consecutive < 1:
            raise ValueError("k_consecutive must be >= 1")
        if self.n_harmonics < 0:
            raise ValueError("n_harmonics must be >= 0")
        if self.threshold is not None and not self.threshold > 0:
            raise ValueError("threshold must be > 0 (or None to use alpha)")
        if not 0.0 < self.alpha < 0.5:
            raise ValueError("alpha must be in (0, 0.5)")
        if not (self.cusum_shift > 0 and self.cusum_clip > self.cusum_shift / 2 and self.cusum_arl >= 10):
            raise ValueError("cusum_shift must be > 0, cusum_clip > cusum_shift / 2, cusum_arl >= 10")
        if self.max_run < self.k_consecutive:
            raise ValueError("max_run must be >= k_consecutive")
        if self.min_magnitude < 0 or self.ridge < 0 or not self.min_rmse > 0:
            raise ValueError("min_magnitude and ridge must be >= 0, min_rmse > 0")
        if not -1.0 <= self.min_run_cosine <= 1.0:
            raise ValueError("min_run_cosine must be in [-1, 1]")
        if self.baseline_years is not None and self.baseline_years < 0:
            raise ValueError("baseline_years must be >= 0")
        if self.refit_growth is not None and not self.refit_growth > 1.0:
            raise ValueError("refit_growth must be > 1 (or None for no refits)")
        if self.refit_max_obs < self.baseline_obs:
            raise ValueError("refit_max_obs must be >= baseline_obs")
        if self.max_signals < 1:
            raise ValueError("max_signals must be >= 1")
        if (
            self.baseline_start is not None
            and self.baseline_end is not None
            and decimal_year(self.baseline_end) < decimal_year(self.baseline_start)
        ):
            raise ValueError("baseline_end is before baseline_start")

    @property
    def effective_baseline_years(self) -> float:
        if self.baseline_years is not None:
            return self.baseline_years
        return 1.0 if self.n_harmonics > 0 else 0.0

    def names_for(self, n_features: int) -> list[str]:
        if self.feature_names is not None:
            if len(self.feature_names) != n_features:
                raise ValueError(
                    f"{len(self.feature_names)} feature_names for {n_features} features"
                )
            return list(self.feature_names)
        return ["value"] if n_features == 1 else [f"f{i}" for i in range(n_features)]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (dates as ISO strings)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, datetime):
                v = v.isoformat()
            elif isinstance(v, tuple):
                v = list(v)
            out[f.name] = v
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DetectorParams:
        return cls.from_kwargs(**d)

    @classmethod
    def from_kwargs(cls, **params: Any) -> DetectorParams:
        """Build from keyword arguments; ``params=DetectorParams(...)`` is accepted as well."""
        if "params" in params:
            base = params.pop("params")
            if not isinstance(base, DetectorParams):
                raise TypeError("params= must be a DetectorParams")
            params = {**{f.name: getattr(base, f.name) for f in fields(base)}, **params}
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(params) - names)
        if unknown:
            raise TypeError(f"unknown change-detection parameter(s) {unknown}; valid: {sorted(names)}")
        return cls(**params)


@dataclass(frozen=True)
class ChangeParams:
    """Settings of the change stage: per-date scores plus the persistent-change detector.

    Attributes:
        baseline_obs: first clear observations of a chip whose median embedding is its
            baseline (default 3).
        z_threshold: flag when the robust z-score among the tile's chips exceeds this.
        min_distance_factor: a flagged distance must also exceed this many times the typical
            scatter of baseline observations.
        min_relative_scale: floor of the z-score's scale, relative to the median distance.
        n_components: principal components used by the harmonic deviation and watched by the
            detector.
        n_harmonics: annual harmonics of the per-date harmonic fit.
        detector: settings of the detector run on the first ``n_components`` components.
    """

    baseline_obs: int = 3
    z_threshold: float = 3.5
    min_distance_factor: float = 3.0
    min_relative_scale: float = 0.5
    n_components: int = 3
    n_harmonics: int = 1
    detector: DetectorParams = field(default_factory=DetectorParams)

    def __post_init__(self) -> None:
        if self.baseline_obs < 1:
            raise ConfigError("baseline_obs must be >= 1")
        if self.z_threshold <= 0:
            raise ConfigError("z_threshold must be > 0")

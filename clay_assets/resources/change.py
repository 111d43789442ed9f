"""Change-scoring and detector settings as a resource (the Dagster-config face of ``clay_core.change``).
"""

from __future__ import annotations

from typing import Optional

from dagster import ConfigurableResource

from clay_core.change import ChangeParams, DetectorParams, PixelParams


class ChangeSettings(ConfigurableResource):
    """Flat run config; :meth:`params` turns it into the typed :class:`ChangeParams`.

    The defaults are the dataclasses' own, so they are stated in one place.
    """

    baseline_obs: int = ChangeParams.baseline_obs
    z_threshold: float = ChangeParams.z_threshold
    min_distance_factor: float = ChangeParams.min_distance_factor
    min_relative_scale: float = ChangeParams.min_relative_scale
    n_components: int = ChangeParams.n_components
    n_harmonics: int = ChangeParams.n_harmonics
    # Persistent-change detector on the first principal components (clay_core.change.detector);
    # its own defaults: 12 clear observations spanning >= 1 year of baseline, an F-test at
    # alpha 1e-6 with 3 consecutive exceedances, a CUSUM for subtle persistent shifts, a model
    # that refits as its segment grows (by 1.33x, up to 150 observations) and a scale floored
    # at the variogram of its observations.
    detector_baseline_obs: int = DetectorParams.baseline_obs
    detector_alpha: float = DetectorParams.alpha
    detector_threshold: Optional[float] = None  # a fixed RMS z-score instead of the F-test at alpha
    detector_k: int = DetectorParams.k_consecutive
    detector_cusum: bool = DetectorParams.cusum
    detector_refit_growth: Optional[float] = DetectorParams.refit_growth  # None: never refit
    detector_variogram_floor: bool = DetectorParams.variogram_floor
    # The pixel path (clay_core.change.pixels: nrt's MoSum on chip-pixel NDVI); off saves its state
    # (tens of MB per tile and window at full size) and the chip-cube reads.
    pixels: bool = True
    pixel_sensitivity: float = PixelParams.sensitivity
    pixel_history_end: Optional[str] = None  # ISO date ending every chip's pixel history (default: its first year)

    def params(self) -> ChangeParams:
        """The scores' settings, with the detector watching the first ``n_components`` PCs."""
        detector = DetectorParams(
            baseline_obs=self.detector_baseline_obs,
            alpha=self.detector_alpha,
            threshold=self.detector_threshold,
            cusum=self.detector_cusum,
            refit_growth=self.detector_refit_growth,
            variogram_floor=self.detector_variogram_floor,
            k_consecutive=self.detector_k,
            n_harmonics=self.n_harmonics,
            feature_names=tuple(f"pc{i + 1}" for i in range(self.n_components)),
        )
        return ChangeParams(
            baseline_obs=self.baseline_obs,
            z_threshold=self.z_threshold,
            min_distance_factor=self.min_distance_factor,
            min_relative_scale=self.min_relative_scale,
            n_components=self.n_components,
            n_harmonics=self.n_harmonics,
            detector=detector,
        )

    def pixel_params(self) -> PixelParams | None:
        """The pixel path's settings, or ``None`` when it is switched off."""
        if not self.pixels:
            return None
        return PixelParams(sensitivity=self.pixel_sensitivity, history_end=self.pixel_history_end)

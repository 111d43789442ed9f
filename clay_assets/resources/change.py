"""Change-scoring and detector settings as a resource (the Dagster-config face of ``clay_core.change``).
"""

from __future__ import annotations

from dataclasses import fields

from dagster import ConfigurableResource

from clay_core.change.scores import ChangeParams


class ChangeSettings(ConfigurableResource):
    baseline_obs: int = 3
    z_threshold: float = 3.5
    min_distance_factor: float = 3.0
    min_relative_scale: float = 0.5
    n_components: int = 3
    n_harmonics: int = 1
    # Persistent-change detector on the first principal components (clay_core.change.detector);
    # its own defaults: 12 clear observations spanning >= 1 year of baseline, threshold 4, k 3.
    detector_baseline_obs: int = 12
    detector_threshold: float = 4.0
    detector_k: int = 3

    def detector_params(self) -> dict:
        return {
            "baseline_obs": self.detector_baseline_obs,
            "threshold": self.detector_threshold,
            "k_consecutive": self.detector_k,
            "n_harmonics": self.n_harmonics,
            "feature_names": [f"pc{i + 1}" for i in range(self.n_components)],
        }

    def params(self) -> ChangeParams:
        # The resource is the Dagster-config face of ChangeParams: same field names.
        return ChangeParams(**{f.name: getattr(self, f.name) for f in fields(ChangeParams)})

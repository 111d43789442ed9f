"""Fine-tuning resources: where labels come from (``CLAY_LABELS*``)."""

from __future__ import annotations

from typing import List, Optional

from dagster import ConfigurableResource

from clay_core.heads import LabelSource, label_source


class LabelSettings(ConfigurableResource):
    """Where labels come from: see :func:`clay_core.heads.label_source` (``class_names`` maps
    raster values / table indices to names; ``path`` may contain ``{tile}`` and ``{date}``)."""

    kind: str = "synthetic"
    path: Optional[str] = None
    class_names: Optional[List[str]] = None
    band: int = 1
    values: bool = False

    def build(self, scene_source) -> LabelSource:
        return label_source(self.kind, self.path, self.class_names, band=self.band, values=self.values,
                            scene_source=scene_source)


def heads_resources(cfg) -> dict:
    """The fine-tuning assets' resources from a ``clay_assets.config.ClayConfig``."""
    return {"labels": LabelSettings(kind=cfg.labels, path=cfg.labels_path,
                                    class_names=list(cfg.label_classes) or None, values=cfg.labels_values)}

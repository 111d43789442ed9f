"""Scene sources: where acquisitions come from (synthetic, local rasters, cubes, STAC)."""

from clay_core.sources.base import SceneSource

__all__ = ["SceneSource"]

"""Scene sources: where acquisitions come from (synthetic, local rasters, cubes, STAC)."""

from clay_core.sources.base import SceneSource

__all__ = ["SceneSource"]
# The concrete sources import rasterio/xarray/pystac lazily through their own modules:
# clay_core.sources.synthetic, .local, .cube, .stac.

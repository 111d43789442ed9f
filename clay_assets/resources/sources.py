"""Scene sources as resources: each builds a ``clay_core.sources`` SceneSource once per process.

``SceneSourceResource`` is abstract; the synthetic implementation is the offline default and the
real sources (STAC, local rasters, data cubes) plug in beside it. ``clay_assets.config`` chooses one.
"""

from __future__ import annotations

from abc import abstractmethod
from datetime import date
from typing import Optional

from dagster import ConfigurableResource
from pydantic import PrivateAttr

from clay_core.sources import SceneSource


class SceneSourceResource(ConfigurableResource):
    """A place scenes come from. Subclasses build a ``clay_core`` SceneSource."""

    bands: list[str] = ["blue", "green", "red", "nir"]

    _source = PrivateAttr(default=None)

    @abstractmethod
    def build(self) -> SceneSource: ...

    def get_source(self) -> SceneSource:
        # Built once per resource instance: real sources cache catalogue look-ups.
        if self._source is None:
            self._source = self.build()
        return self._source


class SyntheticSource(SceneSourceResource):
    """Deterministic Sentinel-2-like scenes with planted clearings (offline, no downloads)."""

    tiles: list[str] = ["31UFU", "32UNB"]
    size: int = 1024
    seed: int = 0
    epoch: str = "2024-01-01"
    revisit_days: int = 7
    clearings_per_tile: int = 2
    change_at: list[int] = [4, 5]
    cloud_every: int = 5
    outages: list[str] = []
    until: Optional[str] = None

    def build(self) -> SceneSource:
        from clay_core.sources import SyntheticSceneSource, SyntheticWorld

        return SyntheticSceneSource(
            SyntheticWorld(
                tiles=tuple(t.upper() for t in self.tiles),
                size=self.size,
                seed=self.seed,
                epoch=date.fromisoformat(self.epoch),
                revisit_days=self.revisit_days,
                clearings_per_tile=self.clearings_per_tile,
                change_at=tuple(self.change_at),
                cloud_every=self.cloud_every,
                outages=tuple(date.fromisoformat(d) for d in self.outages),
                until=date.fromisoformat(self.until) if self.until else None,
            )
        )


class LocalRasterSourceResource(SceneSourceResource):
    """A folder of GeoTIFF/COG files, one per band (or multi-band), named by ``pattern``."""

    root: str
    pattern: str = "{tile}_{date}_{band}.tif"
    platform: str = "sentinel-2-l2a"
    # "auto": the platform's QA band where a scene has one, nodata-only screening elsewhere
    qa_band: Optional[str] = "auto"
    band_names: Optional[list[str]] = None

    def build(self) -> SceneSource:
        from clay_core.sources import LocalRasterSource

        qa_format = "landsat_qa_pixel" if self.qa_band == "qa_pixel" else "scl"
        return LocalRasterSource(self.root, pattern=self.pattern, platform=self.platform,
                                 qa_band=self.qa_band, band_names=self.band_names, qa_format=qa_format)


class CubeSourceResource(SceneSourceResource):
    """An xarray-readable NetCDF/Zarr cube (x, y, time, one variable per band) for one tile.

    ``path="nrt:"`` is the real Sentinel-2 L2A cube shipped by the ``nrt`` package.
    """

    path: str
    tile: Optional[str] = None  # None: the MGRS tile of the cube's footprint
    platform: str = "sentinel-2-l2a"
    qa_var: Optional[str] = "SCL"

    def build(self) -> SceneSource:
        from clay_core.sources import CubeSource

        return CubeSource(self.path, self.tile, platform=self.platform, qa_var=self.qa_var)


class StacSourceResource(SceneSourceResource):
    """A STAC API or static catalogue (default Earth Search v1, Sentinel-2 L2A COGs on S3).

    Credentials for private buckets come from the usual AWS_* variables (GDAL reads them);
    ``aws_anonymous`` reads public buckets unsigned; ``s3_endpoint`` targets S3-compatible stores.
    """

    url: str = "https://earth-search.aws.element84.com/v1"
    collection: Optional[str] = None
    platform: str = "sentinel-2-l2a"
    max_cloud: Optional[float] = None
    selection: str = "clearest"
    s3_endpoint: Optional[str] = None
    aws_anonymous: bool = True
    requester_pays: bool = False
    timeout: float = 20.0

    def build(self) -> SceneSource:
        from clay_core.sources import StacSource

        return StacSource(
            url=self.url, collection=self.collection, platform=self.platform, max_cloud=self.max_cloud,
            selection=self.selection, s3_endpoint=self.s3_endpoint, aws_anonymous=self.aws_anonymous,
            requester_pays=self.requester_pays, timeout=self.timeout,
        )

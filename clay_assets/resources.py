"""Resources: the scene source, the Clay model, storage, chipping and change settings, Postgres.

``SceneSourceResource`` is abstract; the synthetic implementation is the offline default and
the real sources (STAC, local rasters, data cubes) plug in beside it. ``definitions.py``
chooses one in a single place from ``CLAY_SOURCE``.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import fields
from datetime import date
from pathlib import Path
from typing import Optional

from dagster import ConfigurableResource
from pydantic import PrivateAttr

from clay_core.change import ChangeParams
from clay_core.chips import ChipParams
from clay_core.sources.base import SceneSource
from clay_core.store import Layout


class ClayHome(ConfigurableResource):
    """Root of all platform state; data files go to ``<root>/data``.

    ``cubes_uri`` (``s3://bucket/prefix``) puts the Zarr chip cubes in object storage instead:
    each partition's cube is written under a fresh prefix and published atomically by a
    pointer object (``clay_core.chips.write_cube``). The client comes from dagster-aws's
    ``S3Resource`` (credentials from the usual AWS chain; ``s3_endpoint`` for S3-compatible
    stores). Indexes, thumbnails and manifests stay under ``root``.
    """

    root: str
    cubes_uri: Optional[str] = None
    s3_endpoint: Optional[str] = None
    s3_region: Optional[str] = None

    @property
    def layout(self) -> Layout:
        return Layout(Path(self.root) / "data")

    def storage_options(self) -> dict | None:
        if not self.cubes_uri:
            return None
        from dagster_aws.s3 import S3Resource

        return {"client": S3Resource(endpoint_url=self.s3_endpoint, region_name=self.s3_region).get_client()}

    def cube_location(self, tile: str, window: str) -> str:
        """Where a partition's cube is written: local under the partition, or under cubes_uri."""
        if self.cubes_uri:
            return f"{self.cubes_uri.rstrip('/')}/{tile}/{window}"
        return str(self.layout.partition("chips", tile, window) / "cube.zarr")

    def open_cube(self, tile: str, window: str):
        """The partition's chip cube, opened lazily wherever it is stored (see its manifest)."""
        from clay_core.chips import open_cube
        from clay_core.store import read_manifest

        man = read_manifest(self.layout.partition("chips", tile, window))
        uri = man.get("cube_uri") or str(self.layout.partition("chips", tile, window) / "cube.zarr")
        return open_cube(uri, self.storage_options() if uri.startswith("s3://") else None)


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
        from clay_core.sources.synthetic import SyntheticSceneSource, SyntheticWorld

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
    qa_band: Optional[str] = "scl"
    band_names: Optional[list[str]] = None

    def build(self) -> SceneSource:
        from clay_core.sources.local import LocalRasterSource

        return LocalRasterSource(self.root, pattern=self.pattern, platform=self.platform,
                                 qa_band=self.qa_band, band_names=self.band_names)


class CubeSourceResource(SceneSourceResource):
    """An xarray-readable NetCDF/Zarr cube (x, y, time, one variable per band) for one tile.

    ``path="nrt:"`` is the real Sentinel-2 L2A cube shipped by the ``nrt`` package.
    """

    path: str
    tile: str
    platform: str = "sentinel-2-l2a"
    qa_var: Optional[str] = "SCL"

    def build(self) -> SceneSource:
        from clay_core.sources.cube import CubeSource

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
        from clay_core.sources.stac import StacSource

        return StacSource(
            url=self.url, collection=self.collection, platform=self.platform, max_cloud=self.max_cloud,
            selection=self.selection, s3_endpoint=self.s3_endpoint, aws_anonymous=self.aws_anonymous,
            requester_pays=self.requester_pays, timeout=self.timeout,
        )


class ChipSettings(ConfigurableResource):
    """Chip geometry and filters; changing them changes every downstream partition."""

    chip_size: int = 256
    max_cloud: float = 0.2
    max_nodata: float = 0.1
    cloud_classes: list[int] = [1, 3, 8, 9, 10]
    nodata_classes: list[int] = [0]

    def params(self) -> ChipParams:
        return ChipParams(
            chip_size=self.chip_size,
            max_cloud=self.max_cloud,
            max_nodata=self.max_nodata,
            cloud_classes=tuple(self.cloud_classes),
            nodata_classes=tuple(self.nodata_classes),
        )


class ClayModel(ConfigurableResource):
    """The Clay encoder: a preset with seeded random weights, or a checkpoint file.

    ``device='auto'`` uses CUDA when present, else the CPU.
    """

    preset: str = "tiny"
    checkpoint: Optional[str] = None
    device: str = "auto"
    batch_size: int = 8
    patch_tokens: bool = False
    seed: int = 0
    platform: str = "sentinel-2-l2a"

    _encoder = PrivateAttr(default=None)

    def load(self):
        """(encoder, device, model_id, checkpoint sha256 or None); loaded once per process."""
        from clay_core import embed, model

        if self._encoder is None:
            device = embed.resolve_device(self.device)
            if self.checkpoint:
                enc = model.load_encoder(self.checkpoint, self.preset, device=device)
                sha = model.file_sha256(self.checkpoint)
            else:
                enc = model.build_encoder(self.preset, seed=self.seed).to(device)
                sha = None
            mid = model.model_id(self.preset, self.checkpoint, self.seed)
            self._encoder = (enc, device, mid, sha)
        return self._encoder


class VectorDB(ConfigurableResource):
    """Postgres + pgvector. Empty ``database_url`` means ``$DATABASE_URL`` or the embedded server.

    ``storage``: the embedding column type, ``"vector"`` (float32) or ``"halfvec"`` (float16,
    half the size; needs pgvector >= 0.7, e.g. the embedded server with
    ``CLAY_EMBEDDED_PG=pixeltable``). Unset (``CLAY_VECTOR_STORAGE``): keep the table's type,
    ``vector`` for a new table.  Set: a table stored the other way is converted in place (every
    row kept) the next time a store is opened.
    """

    database_url: Optional[str] = None
    clay_home: str = ".clay"
    storage: Optional[str] = None

    def url(self) -> str:
        from clay_core.db import database_url

        if self.database_url:
            return self.database_url
        return database_url(Path(self.clay_home))

    def store(self, dim: int):
        from clay_core.db import VectorStore

        store = VectorStore(self.url(), dim)
        store.ensure_schema(storage=self.storage)
        return store


class ChangeSettings(ConfigurableResource):
    baseline_obs: int = 3
    z_threshold: float = 3.5
    min_distance_factor: float = 3.0
    min_relative_scale: float = 0.5
    n_components: int = 3
    n_harmonics: int = 1
    # Persistent-change detector on the first principal components (clay_core.changepoint);
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

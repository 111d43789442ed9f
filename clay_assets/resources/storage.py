"""Where platform state lives (``ClayHome``) and how scenes are cut into chips (``ChipSettings``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from dagster import ConfigurableResource

from clay_assets.resources.dask import DaskClientHold
from clay_core.chips import ChipParams
from clay_core.storage import Layout


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
        """The partition's chip cube, opened lazily wherever it is stored (see its manifest).

        The manifest's location is resolved against this root (older manifests hold absolute
        paths, used as they are). Refuses a cube missing a stored object or holding other bands
        than the manifest lists (``DamagedDataError`` naming the cube and the file or band)."""
        from clay_core.chips import open_cube
        from clay_core.storage import read_manifest

        layout = self.layout
        man = read_manifest(layout.partition("chips", tile, window))
        uri = layout.locate(man.get("cube_uri") or layout.relative(layout.partition("chips", tile, window) / "cube.zarr"))
        return open_cube(uri, self.storage_options() if uri.startswith("s3://") else None, bands=man.get("bands"))


class ChipSettings(DaskClientHold, ConfigurableResource):
    """Chip geometry and filters; changing them changes every downstream partition.

    ``dask_scheduler`` is not part of that: it says where scenes are chipped (one task per
    scene on that Dask cluster), not what the chips are.
    """

    chip_size: int = 256
    max_cloud: float = 0.2
    max_nodata: float = 0.1
    cloud_classes: list[int] = [1, 3, 8, 9, 10]
    nodata_classes: list[int] = [0]
    dask_scheduler: Optional[str] = None

    def params(self) -> ChipParams:
        return ChipParams(
            chip_size=self.chip_size,
            max_cloud=self.max_cloud,
            max_nodata=self.max_nodata,
            cloud_classes=tuple(self.cloud_classes),
            nodata_classes=tuple(self.nodata_classes),
        )

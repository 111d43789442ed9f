"""Scene sources: where acquisitions come from (synthetic, local rasters, cubes, STAC).

Every source implements :class:`SceneSource`: ``grid(tile)``, ``list_scenes`` (catalogue
only) and ``load_scene`` (pixels on the tile's fixed grid, QA as Sentinel-2-SCL-like
``uint8``). The shared raster helpers live in one module each: :mod:`.bands` (band names),
:mod:`.qa` (QA conversions), :mod:`.arrays` (scene-sized arrays), :mod:`.urls`
(redaction), :mod:`.gdal` (remote-read configuration), :mod:`.crs`, :mod:`.grids`,
:mod:`.grid_read` (reading onto a grid) and :mod:`.chip_reader` (streaming chip rows).
:func:`record_partition_scenes` is the ``raw_scenes`` stage.
"""

from clay_core.sources.arrays import has_value, large_empty
from clay_core.sources.base import SceneSource, as_utc
from clay_core.sources.chip_reader import ChipBandFile, ChipQAFile, ChipRowReader
from clay_core.sources.cube import CubeSource, nrt_cube_path
from clay_core.sources.gdal import gdal_env, gdal_env_options
from clay_core.sources.grid_read import open_raster, read_to_grid
from clay_core.sources.local import LocalRasterSource
from clay_core.sources.qa import landsat_qa_to_scl, synthetic_qa, to_scl
from clay_core.sources.stac import StacSource
from clay_core.sources.stage import SceneListing, list_partition_scenes, read_partition_scenes, record_partition_scenes
from clay_core.sources.synthetic import CLASS_NAMES, SyntheticSceneSource, SyntheticWorld
from clay_core.sources.urls import redact

__all__ = [
    "SceneSource", "SyntheticSceneSource", "SyntheticWorld", "LocalRasterSource", "CubeSource", "StacSource",
    "CLASS_NAMES", "nrt_cube_path",
    "SceneListing", "list_partition_scenes", "record_partition_scenes", "read_partition_scenes",
    "ChipRowReader", "ChipBandFile", "ChipQAFile", "read_to_grid", "open_raster",
    "landsat_qa_to_scl", "to_scl", "synthetic_qa", "large_empty", "has_value",
    "as_utc", "redact", "gdal_env", "gdal_env_options",
]  # fmt: skip

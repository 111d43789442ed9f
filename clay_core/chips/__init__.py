"""Chips: scenes cut into fixed chips on the tile grid, stored as Zarr v3 chip cubes.

- :mod:`.chipset`: the vocabulary (:class:`ChipParams`, :class:`ChipSet`, :func:`chip_id`);
- :mod:`.chipper`: cutting scenes into chips with cloud and nodata filters;
- :mod:`.cube`: the cube as an xarray Dataset, written and opened as sharded Zarr v3;
- :mod:`.s3`: cubes on S3, published atomically through a pointer object;
- :mod:`.index`: the GeoParquet chip index;
- :mod:`.stage`: :func:`make_chip_cube`, the ``chip_cubes`` stage.
"""

from clay_core.chips.chipper import chip_raster_strips, chip_scene, chip_source_scene
from clay_core.chips.chipset import DEFAULT_CLOUD_CLASSES, DEFAULT_NODATA_CLASSES, ChipParams, ChipSet, chip_id
from clay_core.chips.cube import CUBE_CLEVEL, open_cube, to_dataset, write_cube
from clay_core.chips.index import thumb_name, write_index
from clay_core.chips.s3 import S3Store
from clay_core.chips.stage import ChipCubeResult, make_chip_cube

# Rendering moved to clay_core.render; re-exported for callers that still import it from here.
from clay_core.render import mosaic, png_bytes, rgb_image  # noqa: F401

__all__ = [
    "ChipParams", "ChipSet", "chip_id", "DEFAULT_CLOUD_CLASSES", "DEFAULT_NODATA_CLASSES",
    "chip_scene", "chip_raster_strips", "chip_source_scene",
    "to_dataset", "write_cube", "open_cube", "CUBE_CLEVEL", "S3Store",
    "write_index", "thumb_name",
    "ChipCubeResult", "make_chip_cube",
]  # fmt: skip

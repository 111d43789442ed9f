"""Open exchange of embeddings: export ``clay.observations`` for other tools, import it back.

- :mod:`.table`: the exchanged table (the rows of ``clay.observations``, read exactly);
- :mod:`.footprints`: each chip's exact WGS84 footprint (its square on the tile grid, reprojected);
- :mod:`.geoparquet` / :mod:`.zarr_export`: the table as GeoParquet (geopandas) or Zarr v3 (xarray);
- :mod:`.stac`: the STAC collection and per-tile items describing an export (Embedding extension);
- :mod:`.exporter`: :func:`export_embeddings`, the folder written atomically;
- :mod:`.importer`: :func:`read_export` (checked) and :func:`import_embeddings` into the database.

An export holds one row per chip observation (unique ``chip_id, acquired``); its rows and vectors
import back bit for bit (``loaded_at`` is the import's time).
"""

from clay_core.exchange.exporter import FORMATS, ExportResult, export_embeddings
from clay_core.exchange.footprints import footprints_with_fallbacks
from clay_core.exchange.importer import ExportData, ImportResult, import_embeddings, read_export
from clay_core.exchange.stac import EMBEDDING_EXTENSION, ExportInfo
from clay_core.exchange.table import COLUMNS, read_observations

__all__ = [
    "COLUMNS",
    "EMBEDDING_EXTENSION",
    "ExportData",
    "ExportInfo",
    "ExportResult",
    "FORMATS",
    "ImportResult",
    "export_embeddings",
    "footprints_with_fallbacks",
    "import_embeddings",
    "read_export",
    "read_observations",
]

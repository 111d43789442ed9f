"""The STAC collection and items that describe an export (written with pystac).

It follows the STAC *Embedding* extension (``emb:``, maturity "Proposal", v0.0.1, from the
geo-embeddings/embeddings-stac-specification repository): the collection carries ``emb:type``
(``chip``), ``emb:dimensions``, ``data_type`` (``float32``), ``gsd``, ``emb:chip_layout``, the
required ``emb:model`` and ``emb:source-data`` links and an ``embeddings`` entry in
``item_assets``; each item (one per MGRS tile) has the required ``embeddings`` asset.  Columns
are described with the Table extension (``table:columns``, ``table:row_count``,
``table:primary_geometry``).  What neither extension has a field for is under ``clay:``:

``clay:model``        ``{"model_ids": [...], "preset": ..., "architecture": ...,
                      "embedding": "class token"}``
``clay:input_bands``  the bands the encoder saw: ``[{"name", "eo:center_wavelength" (um),
                      "mean", "std"}]`` (the platform's normalisation statistics)
``clay:platform``     the sensor platform of the scenes (e.g. ``sentinel-2-l2a``)
``clay:footprints``   how ``geometry`` was made: ``exact`` (the chip's square on its tile grid,
                      reprojected) for every row, or how many rows fell back to their envelope
``clay:tile``         (items) the MGRS tile whose rows the item describes
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["EMBEDDING_EXTENSION", "TABLE_EXTENSION", "ExportInfo", "write_stac"]

EMBEDDING_EXTENSION = "https://stac-extensions.github.io/embeddings/v0.0.1/schema.json"
TABLE_EXTENSION = "https://stac-extensions.github.io/table/v1.2.0/schema.json"
CLAY_MODEL_HREF = "https://github.com/Clay-foundation/model"

_COLUMN_DOCS = {
    "chip_id": "fixed ground cell: <tile>_r<row>c<col> on the tile grid",
    "tile": "MGRS tile", "acquired": "acquisition date (UTC)",
    "acquired_at": "acquisition time", "partition_key": "Dagster partition: <week>|<tile>",
    "west": "WGS84 envelope of the chip (degrees)", "south": "WGS84 envelope",
    "east": "WGS84 envelope", "north": "WGS84 envelope",
    "lon": "chip centre longitude", "lat": "chip centre latitude",
    "crs": "native CRS of the chip grid", "cloud_fraction": "cloudy share of the chip's pixels",
    "nodata_fraction": "nodata share of the chip's pixels",
    "thumbnail_uri": "RGB thumbnail where it was made", "cube_uri": "chip cube where it was made",
    "model_id": "encoder that made the embedding",
    "cosine_to_baseline": "cosine distance to the chip's baseline",
    "harmonic_deviation": "deviation from the chip's harmonic model",
    "change_score": "robust z of the change signals", "change_flag": "flagged as changed",
    "geometry": "chip footprint, EPSG:4326", "embedding": "float32 class-token embedding",
}


@dataclass(frozen=True)
class ExportInfo:
    """What the STAC metadata says about the model and the data (the CLI fills it from the
    configuration)."""

    collection_id: str = "clay-embeddings"
    description: str = "Clay foundation-model embeddings of satellite image chips"
    preset: str | None = None
    platform: str | None = None
    bands: list[dict] = field(default_factory=list)  # clay:input_bands entries
    gsd: float | None = None  # metres per pixel of the chips
    chip_size: int | None = None  # pixels
    source_href: str = "urn:clay-assets:source"
    license: str = "other"


def write_stac(out: Path, rows: pd.DataFrame, geometry, dim: int, data_href: str,
               media_type: str, info: ExportInfo, fallbacks: int) -> Path:
    """collection.json and one item per tile under ``out`` (self-contained, relative links);
    each item's ``embeddings`` asset is ``data_href`` (relative to ``out``).  Returns the
    collection's path."""
    import pystac
    import shapely

    geoms = np.asarray(geometry)
    times = pd.to_datetime(rows["acquired_at"], utc=True)
    times = times.fillna(pd.to_datetime(rows["acquired"].astype(str), utc=True))
    bbox = list(shapely.total_bounds(geoms)) if len(geoms) else [-180.0, -90.0, 180.0, 90.0]
    start, end = (times.min(), times.max()) if len(times) else (None, None)
    collection = pystac.Collection(
        id=info.collection_id, description=info.description, license=info.license,
        extent=pystac.Extent(pystac.SpatialExtent([bbox]),
                             pystac.TemporalExtent([[_dt(start), _dt(end)]])),
        stac_extensions=[EMBEDDING_EXTENSION, TABLE_EXTENSION],
        extra_fields=_collection_fields(rows, dim, info, fallbacks),
    )
    collection.add_link(pystac.Link("emb:model", CLAY_MODEL_HREF, media_type="text/html",
                                    title=f"Clay encoder ({', '.join(_model_ids(rows)) or 'unknown'})"))
    collection.add_link(pystac.Link("emb:source-data", info.source_href,
                                    title=f"source scenes ({info.platform or 'unknown platform'})"))
    collection.extra_fields["item_assets"] = {"embeddings": {
        "type": media_type, "roles": ["data"], "title": "chip embeddings (all tiles)"}}
    for tile in sorted(rows["tile"].unique()):
        mask = (rows["tile"] == tile).to_numpy()
        collection.add_item(_item(info, tile, geoms[mask], times[mask], int(mask.sum()),
                                  data_href, media_type))
    # the trailing "/" says out is a folder (pystac takes a name with a suffix for a file)
    collection.normalize_hrefs(Path(out).resolve().as_posix() + "/")
    collection.save(pystac.CatalogType.SELF_CONTAINED)
    return out / "collection.json"


def _collection_fields(rows: pd.DataFrame, dim: int, info: ExportInfo, fallbacks: int) -> dict:
    fields = {
        "emb:type": "chip", "emb:dimensions": int(dim), "data_type": "float32",
        "emb:temporal_resolution": "single acquisition",
        "emb:fit_for_use": ["retrieval", "change_detection"],
        "table:row_count": int(len(rows)), "table:primary_geometry": "geometry",
        "table:columns": [{"name": c, "description": d} for c, d in _COLUMN_DOCS.items()],
        "clay:model": {"model_ids": _model_ids(rows), "preset": info.preset,
                       "architecture": "Clay v1.5 masked-autoencoder ViT encoder",
                       "embedding": "class token"},
        "clay:input_bands": list(info.bands),
        "clay:platform": info.platform,
        "clay:footprints": "exact" if fallbacks == 0 else f"{fallbacks} rows: WGS84 envelope",
    }
    if info.gsd is not None:
        fields["gsd"] = float(info.gsd) * (info.chip_size or 1)
    if info.chip_size is not None:
        fields["emb:chip_layout"] = {"layout_type": "regular_grid",
                                     "chip_size": [info.chip_size, info.chip_size],
                                     "stride": [info.chip_size, info.chip_size],
                                     "grid_id": "MGRS / Sentinel-2 tile grid"}
    return fields


def _item(info: ExportInfo, tile: str, geoms: np.ndarray, times: pd.Series, n: int,
          data_href: str, media_type: str):
    import pystac
    import shapely
    from shapely.geometry import mapping

    # on a 1e-9 degree grid (0.1 mm): neighbouring chips, reprojected one by one, share edges
    shape = shapely.union_all(geoms, grid_size=1e-9)
    item = pystac.Item(
        id=f"{info.collection_id}-{tile}", geometry=mapping(shape), bbox=list(shape.bounds),
        datetime=None, properties={"start_datetime": _dt(times.min()).isoformat(),
                                   "end_datetime": _dt(times.max()).isoformat(),
                                   "clay:tile": tile, "table:row_count": n},
        stac_extensions=[EMBEDDING_EXTENSION, TABLE_EXTENSION],
    )
    item.add_asset("embeddings", pystac.Asset(f"../{data_href}", media_type=media_type,
                                              roles=["data"],
                                              title=f"chip embeddings (rows with tile = {tile})"))
    return item


def _model_ids(rows: pd.DataFrame) -> list[str]:
    return sorted({str(m) for m in rows["model_id"].dropna()})


def _dt(t):
    return None if t is None or pd.isna(t) else pd.Timestamp(t).to_pydatetime()

"""Export similarity-search results for people: GeoJSON that opens in QGIS."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from shapely import wkt
from shapely.geometry import mapping


def results_geojson(results: pd.DataFrame, query: dict | None = None) -> dict:
    """A FeatureCollection: one polygon per result with rank, similarity, date and thumbnail."""
    features = []
    for rank, r in enumerate(results.itertuples(index=False), 1):
        geom = mapping(wkt.loads(r.geom_wkt)) if isinstance(getattr(r, "geom_wkt", None), str) else None
        features.append({
            "type": "Feature",
            "geometry": geom,
            "properties": {
                "rank": rank, "chip_id": r.chip_id, "tile": r.tile, "acquired": str(r.acquired),
                "similarity": float(r.similarity), "thumbnail": getattr(r, "thumbnail_uri", None),
                "cube": getattr(r, "cube_uri", None),
            },
        })
    return {"type": "FeatureCollection", "features": features, "query": query or {}}


def write_geojson(results: pd.DataFrame, path: str | Path, query: dict | None = None) -> Path:
    path = Path(path)
    path.write_text(json.dumps(results_geojson(results, query), indent=1))
    return path

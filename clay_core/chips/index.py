"""The GeoParquet chip index of a partition and its thumbnail names."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pandas as pd

from clay_core.chips.chipset import ChipSet

__all__ = ["write_index", "thumb_name"]


def write_index(chips: ChipSet, path: Path, thumbnails: list[str], cube_uri: str) -> None:
    """GeoParquet chip index: WGS84 polygons plus native bounds, stats and lineage hrefs.

    ``thumbnails`` and ``cube_uri`` are stored as given: the chips stage passes locations
    relative to the layout root (``Layout.locate`` resolves them)."""
    import geopandas as gpd
    from shapely import box

    m = chips.meta.copy()
    m["thumbnail"] = thumbnails
    m["cube_uri"] = cube_uri
    geom = [box(w, s, e, n) for w, s, e, n in zip(m["west"], m["south"], m["east"], m["north"])]
    gpd.GeoDataFrame(m, geometry=geom, crs="EPSG:4326").to_parquet(path)


def thumb_name(chip: str, when: datetime | pd.Timestamp) -> str:
    return f"{chip}_{pd.Timestamp(when):%Y%m%dT%H%M%S}.png"

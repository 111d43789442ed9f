"""Band names: provider band ids (``B02``, ``SR_B4``...) -> Clay band names, and the
resampling each band is read with."""

from __future__ import annotations

from collections.abc import Sequence

from rasterio.enums import Resampling

__all__ = ["S2_BAND_ALIASES", "LANDSAT_BAND_ALIASES", "PLATFORM_ALIASES", "canonical_band", "resampling_for"]

#: Sentinel-2 band ids (with and without the leading zero) -> the Clay band names.
S2_BAND_ALIASES: dict[str, str] = {
    "B01": "coastal", "B1": "coastal",
    "B02": "blue", "B2": "blue",
    "B03": "green", "B3": "green",
    "B04": "red", "B4": "red",
    "B05": "rededge1", "B5": "rededge1",
    "B06": "rededge2", "B6": "rededge2",
    "B07": "rededge3", "B7": "rededge3",
    "B08": "nir", "B8": "nir",
    "B8A": "nir08", "B08A": "nir08",
    "B09": "nir09", "B9": "nir09",
    "B11": "swir16",
    "B12": "swir22",
    "SCL": "scl",
}  # fmt: skip

#: Landsat Collection 2 band ids -> Clay band names (OLI numbering).
LANDSAT_BAND_ALIASES: dict[str, str] = {
    "SR_B1": "coastal", "SR_B2": "blue", "SR_B3": "green", "SR_B4": "red",
    "SR_B5": "nir08", "SR_B6": "swir16", "SR_B7": "swir22", "QA_PIXEL": "qa_pixel",
}  # fmt: skip

PLATFORM_ALIASES: dict[str, dict[str, str]] = {
    "sentinel-2-l2a": S2_BAND_ALIASES,
    "landsat-c2l2-sr": LANDSAT_BAND_ALIASES,
}


def canonical_band(name: str, platform: str, aliases: dict[str, str] | None = None) -> str:
    """The Clay band name of a file/variable/asset band token (case-insensitive aliases)."""
    table = {k.upper(): v for k, v in PLATFORM_ALIASES.get(platform, {}).items()}
    table.update({k.upper(): v for k, v in (aliases or {}).items()})
    canon = {v.upper(): v for v in table.values()}
    key = name.upper()
    return table.get(key) or canon.get(key) or name


def resampling_for(band: str, qa_band: str | None, nearest_bands: Sequence[str] = ()) -> Resampling:
    """Nearest for the QA band and classification bands, bilinear for reflectance."""
    if band == qa_band or band in nearest_bands:
        return Resampling.nearest
    return Resampling.bilinear

"""The chip vocabulary: chip geometry and filters (``ChipParams``), chip ids, and ``ChipSet``,
the kept chips of one or more scenes with their per-chip metadata."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from clay_core.errors import ConfigError
from clay_core.sources.rio import large_empty

DEFAULT_CLOUD_CLASSES = (1, 3, 8, 9, 10)
DEFAULT_NODATA_CLASSES = (0,)

@dataclass(frozen=True)
class ChipParams:
    chip_size: int = 256
    max_cloud: float = 0.2
    max_nodata: float = 0.1
    cloud_classes: tuple[int, ...] = DEFAULT_CLOUD_CLASSES
    nodata_classes: tuple[int, ...] = DEFAULT_NODATA_CLASSES

    def __post_init__(self) -> None:
        if not isinstance(self.chip_size, int) or self.chip_size <= 0 or self.chip_size % 8:
            raise ConfigError(
                f"chip_size={self.chip_size!r} is invalid: it must be a positive multiple of 8 "
                "(the Clay patch size), e.g. 256"
            )
        for name in ("max_cloud", "max_nodata"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"{name}={v} must be a fraction in [0, 1]")


def chip_id(tile: str, row: int, col: int) -> str:
    return f"{tile}_r{row:03d}c{col:03d}"


@dataclass
class ChipSet:
    """Kept chips of one or more scenes: pixels [n, band, y, x] plus per-chip metadata."""

    bands: list[str]
    pixels: np.ndarray
    meta: pd.DataFrame  # one row per chip, see _META_COLUMNS
    dropped: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.pixels.shape[0])

    @staticmethod
    def concat(sets: list["ChipSet"], bands: list[str], chip_size: int) -> "ChipSet":
        if not sets:
            return ChipSet(bands, np.zeros((0, len(bands), chip_size, chip_size), np.uint16), _empty_meta())
        dropped: dict[str, int] = {}
        for s in sets:
            for k, v in s.dropped.items():
                dropped[k] = dropped.get(k, 0) + v
        pixels = large_empty((sum(len(s) for s in sets), *sets[0].pixels.shape[1:]),
                             np.result_type(*[s.pixels.dtype for s in sets]))  # fmt: skip
        i = 0
        for s in sets:
            pixels[i : i + len(s)] = s.pixels
            i += len(s)
        return ChipSet(
            bands,
            pixels,
            pd.concat([s.meta for s in sets], ignore_index=True),
            dropped,
        )


_META_COLUMNS = {
    "chip_id": str, "tile": str, "row": "int32", "col": "int32", "scene_id": str,
    "datetime": "datetime64[ns, UTC]", "cloud_fraction": "float32", "nodata_fraction": "float32",
    "x_min": "float64", "y_min": "float64", "x_max": "float64", "y_max": "float64",
    "west": "float64", "south": "float64", "east": "float64", "north": "float64",
    "lat": "float64", "lon": "float64", "crs": str, "hrefs": str,
}


def _empty_meta() -> pd.DataFrame:
    return pd.DataFrame({k: pd.Series(dtype=v) for k, v in _META_COLUMNS.items()})

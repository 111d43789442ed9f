"""The chip vocabulary: chip geometry and filters (``ChipParams``), chip ids, and ``ChipSet``,
the kept chips of one or more scenes with their per-chip metadata."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from clay_core.errors import ConfigError
from clay_core.sources.arrays import large_empty

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


DEFAULT_PLATFORM = "sentinel-2-l2a"


@dataclass
class ChipSet:
    """Kept chips of one or more scenes: pixels [n, band, y, x] plus per-chip metadata.

    ``pixels`` are the platform's digital numbers. ``meta`` has one row per chip (the
    chipper fills every ``_META_COLUMNS`` column; chips read back from a cube carry at least
    ``chip_id, tile, row, col, datetime, x_min..y_max, crs, lat, lon``). ``dropped`` counts
    the chips the filters removed, by reason.
    """

    bands: list[str]
    pixels: np.ndarray
    meta: pd.DataFrame
    dropped: dict[str, int] = field(default_factory=dict)
    platform: str = DEFAULT_PLATFORM

    def __post_init__(self) -> None:
        if self.pixels.ndim != 4 or self.pixels.shape[1] != len(self.bands):
            raise ConfigError(f"chip pixels {self.pixels.shape} must be [N, {len(self.bands)}, H, W]")
        if len(self.meta) != self.pixels.shape[0]:
            raise ConfigError(f"{self.pixels.shape[0]} chips but {len(self.meta)} metadata rows")
        self.meta = self.meta.reset_index(drop=True)

    def __len__(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def chip_size(self) -> int:
        return int(self.pixels.shape[-1])

    @property
    def tiles(self) -> np.ndarray:
        """The tile of every chip, [n] str."""
        return self.meta["tile"].astype(str).to_numpy()

    def subset(self, idx: Sequence[int] | np.ndarray) -> "ChipSet":
        """The chips at positions ``idx``, in that order (no drop counts: they belong to the whole set)."""
        idx = np.asarray(idx, dtype=np.int64)
        return ChipSet(list(self.bands), self.pixels[idx], self.meta.iloc[idx], {}, self.platform)

    @staticmethod
    def concat(sets: Sequence["ChipSet"], bands: list[str] | None = None,
               chip_size: int | None = None) -> "ChipSet":
        """The chips of ``sets`` in order, with their drop counts summed.

        Sets with chips must agree on bands and chip shape. ``bands`` and ``chip_size`` give
        the shape of the result when no set has chips; without them that is an error.
        """
        parts = [s for s in sets if len(s)] or list(sets)
        if not parts:
            if bands is None or chip_size is None:
                raise ConfigError("no chips to concatenate")
            return ChipSet(list(bands), np.zeros((0, len(bands), chip_size, chip_size), np.uint16), _empty_meta())
        _check_agree([s for s in parts if len(s)])
        pixels = large_empty((sum(len(s) for s in parts), *parts[0].pixels.shape[1:]),
                             np.result_type(*[s.pixels.dtype for s in parts]))  # fmt: skip
        i = 0
        for s in parts:
            pixels[i : i + len(s)] = s.pixels
            i += len(s)
        return ChipSet(list(bands if bands is not None else parts[0].bands), pixels,
                       pd.concat([s.meta for s in parts], ignore_index=True), _sum_dropped(sets), parts[0].platform)


def _sum_dropped(sets: Sequence[ChipSet]) -> dict[str, int]:
    dropped: dict[str, int] = {}
    for s in sets:
        for k, v in s.dropped.items():
            dropped[k] = dropped.get(k, 0) + v
    return dropped


def _check_agree(sets: Sequence[ChipSet]) -> None:
    bands, shapes = {tuple(s.bands) for s in sets}, {s.pixels.shape[1:] for s in sets}
    if len(bands) > 1 or len(shapes) > 1:
        raise ConfigError(f"chip sets disagree on bands {sorted(bands)} or chip shape {sorted(shapes)}; "
                          "re-materialize chip_cubes with one chip size and band set")


_META_COLUMNS = {
    "chip_id": str, "tile": str, "row": "int32", "col": "int32", "scene_id": str,
    "datetime": "datetime64[ns, UTC]", "cloud_fraction": "float32", "nodata_fraction": "float32",
    "x_min": "float64", "y_min": "float64", "x_max": "float64", "y_max": "float64",
    "west": "float64", "south": "float64", "east": "float64", "north": "float64",
    "lat": "float64", "lon": "float64", "crs": str, "hrefs": str,
}


def _empty_meta() -> pd.DataFrame:
    return pd.DataFrame({k: pd.Series(dtype=v) for k, v in _META_COLUMNS.items()})

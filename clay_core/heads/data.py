"""Chips and truth for the heads: reading chip cubes into a ``ChipSet``, targets, the split.

- :func:`read_cube_chips` / :func:`read_partitions` - the chips of chip cubes, in memory;
  :func:`source_chips` - chips straight from a scene source (the command line, the tests).
- :func:`make_targets` asks a :class:`~clay_core.heads.labels.LabelSource` for the truth.
- :func:`split_by_tile` - validation tiles are disjoint from training tiles, so the
  validation score is on spatially held-out ground (chips of one tile on other dates are
  near-duplicates and would leak).
- :func:`chip_inputs` - the encoder's inputs for a ``ChipSet``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from clay_core.chips import ChipParams, ChipSet, chip_scene
from clay_core.chips import open_cube as open_cube_at
from clay_core.encoder import ModelInputs, model_inputs
from clay_core.errors import ConfigError
from clay_core.heads.labels import LabelSource, chip_refs
from clay_core.heads.modules import HEAD_TYPES
from clay_core.storage.layout import Layout, read_manifest
from clay_core.types import PartitionId

__all__ = [
    "read_cube_chips",
    "materialized_partitions",
    "read_partitions",
    "source_chips",
    "make_targets",
    "split_by_tile",
    "chip_inputs",
]


def read_cube_chips(cube: Any, tile: str, platform: str = "sentinel-2-l2a") -> ChipSet:
    """All chips of one partition's chip cube (a path, or an already opened Dataset), in memory."""
    ds = cube if hasattr(cube, "data_vars") else open_cube_at(Path(cube))
    bands = [str(b) for b in ds["band"].values]
    return ChipSet(bands, np.asarray(ds["pixels"].values), chip_refs(ds, tile), platform=platform)


def materialized_partitions(layout: Layout, tiles: Sequence[str] | None = None,
                            windows: Sequence[str] | None = None) -> list[PartitionId]:
    """Completed ``chips`` partitions, by tile then window; optionally only these tiles/windows."""
    chips_root = layout.root / "chips"
    if not chips_root.is_dir():
        return []
    wanted = {t.upper() for t in tiles} if tiles else None
    out = []
    for tile_dir in sorted(p for p in chips_root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if wanted and tile_dir.name not in wanted:
            continue
        out.extend(PartitionId(w, tile_dir.name) for w in layout.windows("chips", tile_dir.name)
                   if not windows or w in windows)
    return out


def read_partitions(layout: Layout, parts: Sequence[PartitionId], open_cube: Callable[[str, str], Any],
                    platform: str) -> ChipSet:
    """The chips of every partition in ``parts`` (``open_cube(tile, window)`` opens a cube)."""
    sets = [read_cube_chips(open_cube(p.tile, p.window), p.tile, platform) for p in parts
            if int(read_manifest(layout.partition("chips", p.tile, p.window))["chips"])]
    if not any(len(s) for s in sets):
        raise ConfigError("no chips to train on: materialize chip_cubes for some partitions first")
    return ChipSet.concat(sets)


def source_chips(source: Any, tiles: Sequence[str], start: datetime, end: datetime, chip_size: int,
                 bands: Sequence[str] = ("blue", "green", "red", "nir"), max_cloud: float = 0.2) -> ChipSet:
    """Chips of every acquisition of ``tiles`` in [start, end) straight from a scene source."""
    params = ChipParams(chip_size=chip_size, max_cloud=max_cloud)
    sets = [chip_scene(source.load_scene(ref, list(bands)), params)
            for tile in tiles for ref in source.list_scenes(tile, start, end)]
    chips = ChipSet.concat(sets, list(bands), chip_size)
    chips.platform = getattr(source, "platform", chips.platform)
    return chips


def make_targets(kind: str, labels: LabelSource, chips: ChipSet) -> np.ndarray:
    """Truth for a head: int64 [N, H, W] (segmentation), int64 [N] (classification), float32 [N, H, W]."""
    if kind == "segmentation":
        if not labels.has_pixels:
            raise ConfigError(f"{labels.describe()} has no per-pixel labels; a segmentation head needs a label "
                              "raster or the synthetic source (or use head='classification')")
        return labels.pixel_labels(chips.meta, chips.chip_size).astype(np.int64)
    if kind == "classification":
        return labels.chip_classes(chips.meta, chips.chip_size).astype(np.int64)
    if kind == "regression":
        return labels.pixel_values(chips.meta, chips.chip_size).astype(np.float32)
    raise ConfigError(f"unknown head type {kind!r}; use one of {list(HEAD_TYPES)}")


def split_by_tile(tiles: Sequence[str], val_tiles: Sequence[str] | None = None, val_fraction: float = 0.34,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """(train index, val index, train tiles, val tiles): no tile is on both sides.

    ``val_tiles`` names the held-out tiles; otherwise ``round(val_fraction * n_tiles)`` (at
    least one) tiles are drawn with ``seed``.
    """
    tiles = np.asarray([str(t) for t in tiles])
    uniq = sorted(set(tiles.tolist()))
    if len(uniq) < 2:
        raise ConfigError(f"the validation split is by tile and needs chips of at least 2 tiles, got {uniq}: "
                          "materialize chip_cubes for another tile")
    if val_tiles:
        val = sorted({str(t).upper() for t in val_tiles})
        unknown = [t for t in val if t not in uniq]
        if unknown:
            raise ConfigError(f"validation tile(s) {unknown} have no chips; tiles with chips: {uniq}")
        if len(val) == len(uniq):
            raise ConfigError(f"every tile {uniq} is a validation tile: leave at least one for training")
    else:
        if not 0.0 < val_fraction < 1.0:
            raise ConfigError(f"val_fraction={val_fraction} must be in (0, 1)")
        n_val = min(len(uniq) - 1, max(1, round(val_fraction * len(uniq))))
        order = np.random.default_rng(seed).permutation(len(uniq))
        val = sorted(uniq[i] for i in order[:n_val])
    is_val = np.isin(tiles, val)
    train = sorted(set(uniq) - set(val))
    return np.flatnonzero(~is_val), np.flatnonzero(is_val), train, val


def chip_inputs(chips: ChipSet) -> ModelInputs:
    """The encoder's inputs for ``chips`` (pixels normalized batch by batch when read)."""
    when = pd.to_datetime(chips.meta["datetime"], utc=True).dt.tz_localize(None).to_numpy()
    return model_inputs(chips.pixels, platform=chips.platform, bands=chips.bands, datetimes=when,
                        lat=chips.meta["lat"].to_numpy(float), lon=chips.meta["lon"].to_numpy(float))

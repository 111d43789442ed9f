"""A small planted world in the database without Dagster: the synthetic source's scenes, chipped
and embedded by the tiny encoder, loaded per (week x tile) partition as the ``vectors`` asset
loads them.  For tests of what reads ``clay.observations`` (changed_chips, export/import)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

import numpy as np
import pandas as pd

from clay_core.chips import ChipParams, chip_scene
from clay_core.encoder import build_encoder, embed_chips, model_id
from clay_core.sources.synthetic import BANDS, SyntheticSceneSource, SyntheticWorld
from clay_core.types import PartitionId, window_start

EPOCH = date(2024, 1, 1)
CHIP = 64


@dataclass(frozen=True)
class Planted:
    partitions: list[tuple[str, pd.DataFrame, np.ndarray]]  # (partition_key, rows, embeddings)
    cleared: dict[str, date]  # chip_id -> first acquisition that shows its clearing
    source: SyntheticSceneSource


def planted_world(tiles=("31UFU", "32UNB"), weeks: int = 8, size: int = 256) -> Planted:
    """``weeks`` weekly acquisitions of ``tiles`` (size x size px, 64-px chips: one clearing =
    one chip), clearings planted at acquisitions 4 and 5; acquisition 2 is cloudy (chips under
    clouds are dropped, as the chip filter drops them)."""
    world = SyntheticWorld(tiles=tuple(tiles), size=size, seed=0, epoch=EPOCH, clearings_per_tile=3,
                           change_at=(4, 5))
    src = SyntheticSceneSource(world)
    encoder = build_encoder("tiny", seed=0)
    mid = model_id("tiny", None)
    start = datetime(EPOCH.year, EPOCH.month, EPOCH.day, tzinfo=timezone.utc)
    parts = []
    for tile in tiles:
        for ref in src.list_scenes(tile, start, start + timedelta(weeks=weeks)):
            chips = chip_scene(src.load_scene(ref, BANDS), ChipParams(chip_size=CHIP))
            m = chips.meta
            res = embed_chips(encoder, chips.pixels, platform=src.platform, bands=BANDS,
                              datetimes=m["datetime"].values, lat=m["lat"].values, lon=m["lon"].values,
                              batch_size=16, device="cpu")
            key = PartitionId(window_start(ref.datetime), tile).key
            parts.append((key, _rows(m, key, mid), np.asarray(res.cls, np.float32)))
    cleared = {}
    for ch in src.planted_changes():
        cleared[f"{ch.tile}_r{ch.row0 // CHIP:03d}c{ch.col0 // CHIP:03d}"] = ch.acquired
    return Planted(parts, cleared, src)


def _rows(m: pd.DataFrame, key: str, mid: str) -> pd.DataFrame:
    at = pd.to_datetime(m["datetime"], utc=True)
    n = len(m)
    return pd.DataFrame({
        "chip_id": m["chip_id"].astype(str), "tile": m["tile"].astype(str), "acquired": at.dt.date,
        "acquired_at": at, "partition_key": key,
        "west": m["west"], "south": m["south"], "east": m["east"], "north": m["north"],
        "lon": m["lon"], "lat": m["lat"], "crs": m["crs"].astype(str),
        "cloud_fraction": m["cloud_fraction"].astype(float),
        "nodata_fraction": m["nodata_fraction"].astype(float),
        "thumbnail_uri": [f"thumbs/{c}.png" for c in m["chip_id"]], "cube_uri": None,
        "model_id": mid,
        "cosine_to_baseline": np.linspace(0, 1, n), "harmonic_deviation": np.nan,
        "change_score": np.where(np.arange(n) % 3 == 0, np.nan, np.arange(n) / 7.0),
        "change_flag": pd.array([None if i % 4 == 0 else bool(i % 2) for i in range(n)], dtype="boolean"),
    })


def load_world(store, planted: Planted) -> int:
    """Load every partition of ``planted`` into ``store``; returns the rows loaded."""
    return sum(store.load_partition(key, rows, emb).rows for key, rows, emb in planted.partitions)

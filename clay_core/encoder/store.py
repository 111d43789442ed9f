"""Per-partition embedding stores (Zarr v3): class tokens float32, optional patch tokens float16."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from clay_core.types import Observations


__all__ = ["write_embeddings", "open_embeddings", "read_observations"]


def write_embeddings(path: Path, chip_ids: Any, datetimes: Any, cls: np.ndarray, patches: np.ndarray | None,
                     attrs: dict) -> None:
    """One row per chip: ``embedding`` [chip, dim] (+ ``patches`` [chip, token, dim]), chip ids and times."""
    data = {"embedding": (("chip", "dim"), np.asarray(cls, np.float32))}
    encoding = {"embedding": {"chunks": (max(1, min(1024, cls.shape[0])), cls.shape[1])}}
    if patches is not None:
        data["patches"] = (("chip", "token", "dim"), np.asarray(patches, np.float16))
        # One chunk per chip: a segmentation head reads whole chips at a time.
        encoding["patches"] = {"chunks": (1, patches.shape[1], patches.shape[2])}
    ds = xr.Dataset(
        data,
        coords={
            "chip_id": ("chip", np.asarray(chip_ids, dtype=object)),
            "datetime": ("chip", np.asarray(datetimes, dtype="datetime64[ns]")),
        },
        attrs=attrs,
    )
    ds.to_zarr(path, mode="w", zarr_format=3, consolidated=False, encoding=encoding)


def open_embeddings(path: Path) -> xr.Dataset:
    """A partition's embedding store, opened lazily."""
    return xr.open_zarr(path, zarr_format=3, consolidated=False, chunks=None)


def read_observations(path: Path) -> Observations:
    """A partition's class-token embeddings in memory, row-aligned with chip ids and times."""
    ds = open_embeddings(path)
    return Observations(
        np.asarray(ds["chip_id"].values.tolist(), dtype=object),
        ds["datetime"].values.astype("datetime64[ns]"),
        ds["embedding"].values.astype(np.float32),
    )

"""A synthetic chip cube series for the pixel path: two 32 x 32 chips of forest NDVI, weekly
for 64 weeks; a 6 x 6 block of chip ``c000`` is cleared at window 58, chip ``c001`` never
changes but is partly under a cloud at window 60. Written as the chips stage leaves it (cube,
GeoParquet index, manifest), optionally with embeddings so the change stage can run on it."""

from __future__ import annotations

import numpy as np
import pandas as pd

from clay_core.chips import ChipSet, to_dataset, write_cube, write_index
from clay_core.storage import CHIPS, EMBEDDINGS, Layout, atomic_dir, write_manifest

TILE, CS = "31UFU", 32
START = pd.Timestamp("2024-01-01")  # a Monday (CLAY_START): window i starts START + i weeks
N_WINDOWS, CHANGE_AT, CLOUDY_AT = 64, 58, 60  # history: the first 365 days (windows 0..52)
BLOCK = (slice(10, 16), slice(10, 16))  # 6 x 6 of 32 x 32 pixels: 3.5% of the chip
CHANGED, STABLE = f"{TILE}_r000c000", f"{TILE}_r000c001"
DIM = 16


def window(i: int) -> str:
    return (START + pd.Timedelta(weeks=i)).strftime("%Y-%m-%d")


def _ndvi(i: int, rng: np.random.Generator) -> np.ndarray:
    """[2 chips, y, x] NDVI of window i: forest with an annual cycle and noise 0.03."""
    t = (START + pd.Timedelta(weeks=i)).dayofyear / 365.25
    nd = 0.75 + 0.08 * np.sin(2 * np.pi * t) + rng.normal(0, 0.03, (2, CS, CS))
    if i >= CHANGE_AT:
        nd[0][BLOCK] = 0.2 + rng.normal(0, 0.03, (6, 6))
    if i == CLOUDY_AT:
        nd[1, :8, :8] = 0.0
    return nd


def write_chips(layout: Layout, i: int, rng: np.random.Generator, embeddings: bool = False) -> None:
    """Window ``i``'s chip partition (and, with ``embeddings``, a random embeddings partition)."""
    nd = _ndvi(i, rng)
    red = np.full(nd.shape, 400.0)
    nir = red * (1 + nd) / (1 - nd)
    pixels = np.stack([red * 0.8, red, nir], axis=1).round().astype(np.uint16)
    when = (START + pd.Timedelta(weeks=i, hours=10)).tz_localize("UTC")
    meta = pd.DataFrame({
        "chip_id": [CHANGED, STABLE], "tile": TILE, "row": np.array([0, 0], "int32"),
        "col": np.array([0, 1], "int32"), "scene_id": f"s{i}", "datetime": [when, when],
        "cloud_fraction": np.array([0.0, 0.15 if i == CLOUDY_AT else 0.0], "float32"),
        "nodata_fraction": np.float32(0), "x_min": [600000.0, 600320.0], "y_min": 5700000.0,
        "x_max": [600320.0, 600640.0], "y_max": 5700320.0, "west": [3.0, 3.005], "south": 51.0,
        "east": [3.005, 3.01], "north": 51.003, "lat": 51.0015, "lon": [3.0025, 3.0075], "crs": "EPSG:32631",
        "hrefs": "{}",
    })
    chips = ChipSet(["green", "red", "nir"], pixels, meta)
    d = layout.partition(CHIPS, TILE, window(i))
    with atomic_dir(d) as tmp:
        write_cube(to_dataset(chips, CS), tmp / "cube.zarr")
        cube = layout.relative(d / "cube.zarr")
        write_index(chips, tmp / "index.parquet", [f"thumbs/{c}.png" for c in meta["chip_id"]], cube)
        write_manifest(tmp, {"chips": 2, "cube_uri": cube, "bands": chips.bands, "chip_size": CS})
    if embeddings:
        from clay_core.encoder.store import write_embeddings

        d = layout.partition(EMBEDDINGS, TILE, window(i))
        with atomic_dir(d) as tmp:
            vec = rng.normal(size=(2, DIM)).astype(np.float32)
            write_embeddings(tmp / "embeddings.zarr", meta["chip_id"].to_numpy(object),
                             meta["datetime"].dt.tz_localize(None).to_numpy("datetime64[ns]"), vec, None, {})
            write_manifest(tmp, {"chips": 2, "dim": DIM, "model_id": "test"})

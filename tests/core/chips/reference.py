"""A naive per-chip reference chipper (loops, one chip at a time) and random test scenes,
shared by the chipper and cube tests."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import numpy as np
import pandas as pd
from pyproj import Transformer
from rasterio.transform import from_origin

from clay_core.chips import ChipParams, ChipSet, chip_id
from clay_core.types import Scene, SceneRef, TileGrid

UTC = timezone.utc
CRS = "EPSG:32631"
X0, Y0 = 600000.0, 5800020.0
REF = SceneRef("31UFU_20230105", "31UFU", "sentinel-2-l2a", datetime(2023, 1, 5, 10, 30, tzinfo=UTC),
               {"red": "/data/red.tif", "blue": "/data/blue.tif"})  # fmt: skip


# --------------------------------------------------------------------------- reference


def naive_chips(data: np.ndarray, qa: np.ndarray, nodata, grid: TileGrid, p: ChipParams) -> dict:
    """Chip by chip, with Python sets and loops: what the chipper must return."""
    cs, n = p.chip_size, p.chip_size**2
    nb, h, w = data.shape
    to_wgs = Transformer.from_crs(grid.crs, 4326, always_xy=True)
    kept, dropped = [], {"cloudy": 0, "nodata": 0}
    for r in range(h // cs):
        for c in range(w // cs):
            q = qa[r * cs : (r + 1) * cs, c * cs : (c + 1) * cs]
            d = data[:, r * cs : (r + 1) * cs, c * cs : (c + 1) * cs]
            cloud = sum(int((q == k).sum()) for k in set(p.cloud_classes)) / n
            qa_nodata = sum(int((q == k).sum()) for k in set(p.nodata_classes)) / n
            empty = np.ones((cs, cs), bool)
            for b in range(nb):
                empty &= d[b] == nodata
            nod = max(qa_nodata, int(empty.sum()) / n)
            if nod > p.max_nodata:
                dropped["nodata"] += 1
                continue
            if cloud > p.max_cloud:
                dropped["cloudy"] += 1
                continue
            t = grid.transform
            x_min, y_max = t.c + c * cs * t.a, t.f + r * cs * t.e
            x_max, y_min = x_min + cs * t.a, y_max + cs * t.e
            lons, lats = zip(*[to_wgs.transform(x, y) for x, y in
                               ((x_min, y_min), (x_max, y_min), (x_min, y_max), (x_max, y_max))])  # fmt: skip
            lon, lat = to_wgs.transform((x_min + x_max) / 2, (y_min + y_max) / 2)
            kept.append({
                "row": r, "col": c, "cloud": cloud, "nodata": nod, "pixels": d.copy(),
                "native": (x_min, y_min, x_max, y_max),
                "wgs84": (min(lons), min(lats), max(lons), max(lats)), "lat": lat, "lon": lon,
            })  # fmt: skip
    return {"kept": kept, "dropped": dropped}


def assert_matches_reference(cs_: ChipSet, ref: dict, scene_ref: SceneRef = REF) -> None:
    kept = ref["kept"]
    m = cs_.meta
    assert len(cs_) == len(kept) == len(m)
    assert cs_.dropped == ref["dropped"]
    assert list(zip(m["row"], m["col"])) == [(k["row"], k["col"]) for k in kept]
    assert list(m["chip_id"]) == [chip_id(scene_ref.tile, k["row"], k["col"]) for k in kept]
    # fractions are exact: count / chip_size**2, stored as float32
    np.testing.assert_array_equal(m["cloud_fraction"].to_numpy(), np.float32([k["cloud"] for k in kept]))
    np.testing.assert_array_equal(m["nodata_fraction"].to_numpy(), np.float32([k["nodata"] for k in kept]))
    for i, k in enumerate(kept):
        np.testing.assert_array_equal(cs_.pixels[i], k["pixels"])
    if kept:
        np.testing.assert_array_equal(m[["x_min", "y_min", "x_max", "y_max"]].to_numpy(), [k["native"] for k in kept])
        np.testing.assert_allclose(m[["west", "south", "east", "north"]].to_numpy(), [k["wgs84"] for k in kept],
                                   rtol=0, atol=1e-9)  # fmt: skip
        np.testing.assert_allclose(m["lat"], [k["lat"] for k in kept], rtol=0, atol=1e-9)
        np.testing.assert_allclose(m["lon"], [k["lon"] for k in kept], rtol=0, atol=1e-9)
        assert (m["scene_id"] == scene_ref.scene_id).all() and (m["tile"] == scene_ref.tile).all()
        assert (m["datetime"] == pd.Timestamp(scene_ref.datetime)).all()
        assert json.loads(m["hrefs"].iloc[0]) == scene_ref.hrefs


# --------------------------------------------------------------------------- random scenes


def random_scene(seed: int, cs: int, nb: int = 3, qa_dtype=np.uint8, nodata=0) -> tuple[np.ndarray, np.ndarray]:
    """Clear land with cloud / shadow / nodata rectangles, salt noise of every class, pixels
    empty in every band (count as nodata) and in only some bands (do not)."""
    rng = np.random.default_rng(seed)
    h, w = 5 * cs + int(rng.integers(0, cs)), 7 * cs + int(rng.integers(0, cs))  # ragged edges are dropped
    qa = np.full((h, w), 4, np.int64)
    for _ in range(12):
        y, x = int(rng.integers(0, h)), int(rng.integers(0, w))
        qa[y : y + int(rng.integers(1, 2 * cs)), x : x + int(rng.integers(1, 2 * cs))] = rng.choice([0, 1, 3, 8, 9, 10, 6])
    salt = rng.random((h, w)) < 0.05
    qa[salt] = rng.integers(0, 12, int(salt.sum()))
    data = rng.integers(1, 12000, (nb, h, w)).astype(np.uint16)
    for _ in range(6):
        y, x = int(rng.integers(0, h)), int(rng.integers(0, w))
        data[:, y : y + int(rng.integers(1, 2 * cs)), x : x + int(rng.integers(1, 2 * cs))] = nodata
    partial = rng.random((h, w)) < 0.2
    data[0][partial] = nodata  # one band only: not nodata
    return data, qa.astype(qa_dtype)


def make_scene(data, qa, nodata=0, ref=REF) -> Scene:
    grid = TileGrid("31UFU", CRS, from_origin(X0, Y0, 10, 10), data.shape[1], data.shape[2])
    return Scene(ref=ref, grid=grid, bands=[f"b{i}" for i in range(data.shape[0])], data=data, qa=qa, nodata=nodata)


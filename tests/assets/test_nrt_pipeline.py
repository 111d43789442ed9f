"""The real Sentinel-2 L2A cube shipped by nrt==0.2.1 through the whole asset graph.

Checked independently of the pipeline: chip centres against the cube's own x/y coordinates
projected with pyproj, cloud fractions against its SCL band, rows in Postgres.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import psycopg
import pytest
import xarray as xr
from pyproj import Transformer

from clay_core.chips import open_cube
from clay_core.sources import nrt_cube_path
from clay_core.storage import Layout

ROOT = Path(__file__).resolve().parents[2]
CHIP = 32


@pytest.fixture(scope="module")
def nrt_run(tmp_path_factory, pg_url):
    base = tmp_path_factory.mktemp("nrt")
    (base / "dagster").mkdir()
    env = dict(os.environ, CLAY_HOME=str(base / "clay"), DAGSTER_HOME=str(base / "dagster"), DATABASE_URL=pg_url,
               CLAY_SOURCE="cube", CLAY_CUBE_PATH="nrt:", CLAY_CHIP_SIZE=str(CHIP), PYTHONPATH=str(ROOT))
    # As the README says: CLAY_SOURCE=cube alone; tile (34TER) and weeks come from the cube.
    for name in ("CLAY_TILES", "CLAY_AREA", "CLAY_START", "CLAY_END"):
        env.pop(name, None)
    out = base / "result.json"
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "support" / "nrt_run.py"), str(out), "6"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(out.read_text())
    result["layout"] = Layout(base / "clay" / "data")
    return result


def test_graph_succeeds_on_real_cube(nrt_run):
    assert nrt_run["failures"] == []
    assert len(nrt_run["windows"]) == 6


def test_chip_georeferencing_and_cloud_fractions_match_the_cube(nrt_run):
    ds = xr.open_dataset(nrt_cube_path(), mask_and_scale=False)
    x, y = ds["x"].values, ds["y"].values
    to_ll = Transformer.from_crs(3035, 4326, always_xy=True)
    times = ds["time"].values.astype("datetime64[D]")
    checked = 0
    kept_total = 0
    for w in nrt_run["windows"]:
        d = nrt_run["layout"].partition("chips", "34TER", w)
        if not (d / "cube.zarr").exists():
            continue
        cube = open_cube(d / "cube.zarr")
        kept_total += cube.sizes["chip"]
        for i in range(cube.sizes["chip"]):
            r, c = int(cube["row"].values[i]), int(cube["col"].values[i])
            # centre of the chip from the cube's pixel-centre coordinates
            cx = (x[c * CHIP] + x[c * CHIP + CHIP - 1]) / 2
            cy = (y[r * CHIP] + y[r * CHIP + CHIP - 1]) / 2
            lon, lat = to_ll.transform(cx, cy)
            assert abs(cube["lat"].values[i] - lat) < 1e-7 and abs(cube["lon"].values[i] - lon) < 1e-7
            assert 45.1 < lat < 45.3 and 22.0 < lon < 22.3  # the Romanian Carpathians site
            t = np.datetime64(cube["datetime"].values[i], "D")
            scl = ds["SCL"].values[int(np.flatnonzero(times == t)[0]), r * CHIP : (r + 1) * CHIP, c * CHIP : (c + 1) * CHIP]
            expected = np.isin(scl, [1, 3, 8, 9, 10]).mean()
            assert abs(float(cube["cloud_fraction"].values[i]) - expected) < 1e-6
            assert np.array_equal(cube["pixels"].values[i][2], ds["B4"].values[int(np.flatnonzero(times == t)[0]),
                                  r * CHIP : (r + 1) * CHIP, c * CHIP : (c + 1) * CHIP])
            checked += 1
    assert checked >= 9, "expected at least one clear acquisition's 3x3 chips"
    assert kept_total == checked


def test_real_cube_rows_reach_postgres(nrt_run, pg_url):
    with psycopg.connect(pg_url) as conn:
        (n,) = conn.execute("SELECT count(*) FROM clay.chips WHERE tile = '34TER'").fetchone()
        (nan,) = conn.execute("SELECT count(*) FROM clay.chips WHERE tile = '34TER' AND lat = 'NaN'").fetchone()
    kept = sum(open_cube(nrt_run["layout"].partition("chips", "34TER", w) / "cube.zarr").sizes["chip"]
               for w in nrt_run["windows"] if (nrt_run["layout"].partition("chips", "34TER", w) / "cube.zarr").exists())
    assert n == kept > 0 and nan == 0

"""A newcomer's own data: plain 4-band GeoTIFFs, as people have them, through the whole graph.

The files have no band descriptions, no QA band and no tile in their names: one GeoTIFF per
date in a temp folder, in UTM 31N inside MGRS tile 31UFU (north of Amsterdam). The platform
is configured only through environment variables (as a user would), materialized with
`clay-assets run --area … --from … --to …`, and checked independently: chip ids carry the tile, chip centres lie inside
the tile's footprint (computed here with pyproj from the tile's own grid), the partition is
recorded without cloud screening, and a similarity search in Postgres returns the chips.
"""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pytest
import rasterio
from pyproj import Transformer
from rasterio.transform import from_origin

from clay_assets import config
from clay_assets.partitions import register_tiles, window_partitions
from clay_core.errors import ConfigError, UnknownTileError
from clay_core.sources import CubeSource
from clay_assets.resources.build import build_resources
from clay_core.chips import open_cube
from clay_core.encoder.model import PRESETS
from clay_core.tiles import s2_tile_grid
from clay_core.vectordb import VectorStore

TILE = "31UFU"
X0, Y0 = 640_000.0, 5_850_000.0  # UTM 31N, inside 31UFU (x 600-709.8 km, y 5790.2-5900 km)
N = 256  # 10 m pixels: 4 x 4 chips of 64
DATES = {"2024-01-03": 1, "2024-01-10": 2}  # two weekly windows: 2024-01-01 and 2024-01-08
WINDOWS = ["2024-01-01", "2024-01-08"]


def _write_plain_geotiff(path, seed: int) -> None:
    """A 4-band uint16 GeoTIFF as a GIS export leaves it: no descriptions, no QA, no tags."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:N, 0:N]
    fields = []
    for b in range(4):  # smooth fields with a different pattern per quadrant, plus noise
        base = 1500 + 800 * np.sin(xx / (9 + 3 * b)) * np.cos(yy / (13 + b)) + 600 * ((xx // 128) + 2 * (yy // 128))
        fields.append(base + rng.normal(0, 40, (N, N)))
    data = np.clip(np.stack(fields), 1, 10000).astype(np.uint16)
    with rasterio.open(path, "w", driver="GTiff", height=N, width=N, count=4, dtype="uint16", crs="EPSG:32631",
                       transform=from_origin(X0, Y0, 10, 10), nodata=0) as dst:
        dst.write(data)


@pytest.fixture(scope="module")
def newcomer(tmp_path_factory, pg_url):
    base = tmp_path_factory.mktemp("newcomer")
    folder = base / "my_rasters"
    folder.mkdir()
    for day, seed in DATES.items():
        _write_plain_geotiff(folder / f"S2_{day}.tif", seed)
    with rasterio.open(folder / "S2_2024-01-03.tif") as ds:  # the premise: nothing but pixels and a CRS
        assert ds.count == 4 and not any(ds.descriptions) and "TIFFTAG_DATETIME" not in ds.tags()
    # An area around the data instead of a tile list: the platform finds the tile.
    to_ll = Transformer.from_crs(32631, 4326, always_xy=True)
    w, s = to_ll.transform(X0 + 200, Y0 - N * 10 + 200)
    e, n = to_ll.transform(X0 + N * 10 - 200, Y0 - 200)
    env = {"CLAY_HOME": str(base / "clay"), "CLAY_SOURCE": "local", "CLAY_SOURCE_ROOT": str(folder),
           "CLAY_SOURCE_PATTERN": "S2_{date}.tif", "CLAY_AREA": f"{w},{s},{e},{n}", "CLAY_CHIP_SIZE": "64",
           "CLAY_DEVICE": "cpu", "DATABASE_URL": pg_url, "DAGSTER_HOME": str(base / "dagster")}
    cfg = config.load(env)
    assert cfg.tiles == (TILE,)
    # The newcomer's command, as the README gives it: the area's windows, oldest first.
    from clay_assets import cli

    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        code = cli.main(["run", "--area", f"{w},{s},{e},{n}", "--from", "2024-01-01", "--to", "2024-01-14",
                         "--quiet"])
        resources = build_resources(cfg=config.current())
    from dagster import DagsterInstance

    instance = DagsterInstance.from_config(str(base / "dagster"))
    yield {"code": code, "resources": resources, "instance": instance, "pg_url": pg_url}
    instance.dispose()


def test_the_graph_runs_on_plain_geotiffs(newcomer):
    assert newcomer["code"] == 0  # clay-assets run: every run succeeded
    assert newcomer["instance"].get_dynamic_partitions("tiles") == [TILE]  # registered by the runner
    # no QA band anywhere: nodata-only screening, and the source says so
    assert newcomer["resources"]["source"].get_source().cloud_screening == "off"
    from clay_core.storage import read_manifest

    layout = newcomer["resources"]["home"].layout
    for w in WINDOWS:  # and every chips partition records it, for whoever reads the data later
        assert read_manifest(layout.partition("chips", TILE, w))["cloud_screening"] == "off"


def test_chips_carry_the_tile_and_lie_inside_it(newcomer):
    layout = newcomer["resources"]["home"].layout
    grid = s2_tile_grid(TILE)
    to_utm = Transformer.from_crs(4326, grid.crs, always_xy=True)
    left, top = grid.transform.c, grid.transform.f
    right, bottom = left + grid.width * grid.transform.a, top + grid.height * grid.transform.e
    total = 0
    for w in WINDOWS:
        cube = open_cube(layout.partition("chips", TILE, w) / "cube.zarr")
        ids = [str(c) for c in cube["chip_id"].values]
        assert len(ids) == 16 and all(c.startswith(f"{TILE}_r") for c in ids)
        for lon, lat in zip(cube["lon"].values, cube["lat"].values):
            x, y = to_utm.transform(float(lon), float(lat))
            assert left <= x <= right and bottom <= y <= top
            assert X0 < x < X0 + N * 10 and Y0 - N * 10 < y < Y0  # and inside the files written
        total += len(ids)
    assert total == 32


def test_a_search_returns_the_newcomers_chips(newcomer):
    with VectorStore(newcomer["pg_url"], PRESETS["tiny"]["dim"]) as store:
        hits = store.similar_chips(f"{TILE}_r000c000", k=5)
    assert len(hits) == 5 and set(hits["tile"]) == {TILE}
    assert all(c.startswith(f"{TILE}_r") and c != f"{TILE}_r000c000" for c in hits["chip_id"])


def test_the_real_cube_names_its_own_tile_and_dates():
    """CLAY_SOURCE=cube alone: the nrt cube's tile (34TER) and its weeks, not 31UFU and 2024 onwards."""
    cfg = config.load({"CLAY_SOURCE": "cube"})
    assert cfg.tiles == ("34TER",) and (cfg.start, cfg.end) == ("2015-07-27", "2021-01-04")
    assert build_resources(cfg=cfg)["source"].get_source().grid("34TER").width == 100


def test_the_cube_asked_for_the_wrong_tile_refuses_and_names_34TER():
    with pytest.raises(ConfigError, match=r"34TER.*set CLAY_TILES=34TER"):
        config.load({"CLAY_SOURCE": "cube", "CLAY_TILES": "31UFU"})
    with pytest.raises(ConfigError, match=r"tile 34TER, not any of 31UFU,32UNB.*CLAY_TILES=34TER"):
        config.load({"CLAY_SOURCE": "cube", "CLAY_TILES": "31UFU,32UNB"})
    with pytest.raises(UnknownTileError, match=r"in MGRS tile 34TER.*not in 31UFU; set CLAY_TILES=34TER"):
        CubeSource("nrt:", tile="31UFU").list_scenes("31UFU", datetime(2015, 1, 1), datetime(2022, 1, 1))


def test_windows_end_at_the_last_complete_week_even_with_a_far_CLAY_END():
    sunday = datetime(2026, 11, 29, 17, 0, tzinfo=timezone.utc)  # inside the week of Monday 2026-11-23
    for end in (None, "2030-01-07"):
        keys = window_partitions("2026-10-05", end).get_partition_keys(current_time=sunday)
        assert keys[0] == "2026-10-05" and keys[-1] == "2026-11-16" and len(keys) == 7
    # once the week is over it becomes a partition
    monday = datetime(2026, 11, 30, 0, 1, tzinfo=timezone.utc)
    assert window_partitions("2026-10-05", None).get_partition_keys(current_time=monday)[-1] == "2026-11-23"


def test_tiles_are_registered_at_run_time_without_a_code_reload(instance, monkeypatch):
    from dagster import build_sensor_context

    from clay_assets.automation import newest_window_schedule, tiles_sensor

    assert register_tiles(instance, ["34ter", "34TER"]) == ["34TER"]
    assert register_tiles(instance, ["34TER"]) == []  # idempotent
    with pytest.raises(UnknownTileError, match="ZZZ"):
        register_tiles(instance, ["ZZZ"])
    # the configured area's tiles: the running sensor registers them
    monkeypatch.setenv("CLAY_AREA", "4.85,52.35,4.95,52.40")
    monkeypatch.setenv("CLAY_TILES", "32UNB")
    instance.delete_dynamic_partition("tiles", "31UFU")
    result = tiles_sensor(build_sensor_context(instance=instance))
    (request,) = result.dynamic_partitions_requests
    assert request.partitions_def_name == "tiles" and list(request.partition_keys) == ["31UFU"]
    instance.add_dynamic_partitions("tiles", list(request.partition_keys))
    assert tiles_sensor(build_sensor_context(instance=instance)).skip_reason
    # the schedule covers every registered tile, the ones added at run time too
    from dagster import build_schedule_context

    ctx = build_schedule_context(instance=instance, scheduled_execution_time=datetime(2024, 1, 15, 6, tzinfo=timezone.utc))
    keys = {r.partition_key for r in newest_window_schedule(ctx)}
    assert keys == {f"2024-01-08|{t}" for t in ("31UFU", "32UNB", "34TER")}

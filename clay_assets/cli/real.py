"""`clay-assets demo --real`: the real Sentinel-2 L2A cube shipped by ``nrt==0.2.1`` (MGRS
34TER, Romanian Carpathians, 100 x 100 px at 10 m, 140 dates 2015-08 .. 2021-01, forest with
real clear-cuts) through the whole graph, then a similarity search and a change report beside
a pixel-level reference: ``nrt``'s EWMA and CuSum monitors on the NDVI of the same pixels
(nrt's own example setup), summarised per chip.
"""

from __future__ import annotations

import argparse
from datetime import datetime

from clay_assets.cli.common import load_config, load_events, materialize, query_store, read_partitions, ui_hint

# The cube's tile and dates, and a chip size that gives it 3 x 3 chips (the 4 edge pixels that
# do not fill a chip are dropped).
REAL_SETTINGS = {"CLAY_SOURCE": "cube", "CLAY_CUBE_PATH": "nrt:", "CLAY_TILES": "34TER", "CLAY_CHIP_SIZE": "32",
                 "CLAY_START": "2015-07-27", "CLAY_END": "2021-01-11"}
# nrt's example: the history it fits on, and the SCL classes it treats as clear.
HISTORY_END = "2018-12-31"
NRT_CLEAR_SCL = (4, 5, 7)
FOREST_COVER = 30  # percent tree cover density (2018) for a pixel to be monitored, as in nrt's example
FOREST_FILE = "tree_cover_density_2018_romania.tif"


def _require_nrt() -> None:
    from clay_core.errors import ConfigError

    try:
        import nrt.monitor.ewma  # noqa: F401
    except ImportError:
        raise ConfigError("demo --real needs the nrt package (it ships the real cube and the reference monitors); "
                          "install the project's dependencies with `make install` or `.venv/bin/pip install nrt==0.2.1`"
                          ) from None


def configure_real(home) -> object:
    """Switch this process to the real cube, in its own home ``<CLAY_HOME>/real`` (its tile,
    dates and chips must not mix with the synthetic demo's PCA basis and tables)."""
    import sys

    from clay_assets import config
    from clay_core.errors import ConfigError

    if "clay_assets.partitions" in sys.modules:
        raise ConfigError("demo --real must run in a fresh process (the code location already loaded "
                          "other settings)")
    real = home / "real"
    return config.override({**REAL_SETTINGS, "CLAY_HOME": str(real), "DAGSTER_HOME": str(real / "dagster")})


def clear_weeks(cube_path: str, chip: int) -> tuple[list[str], int]:
    """Weeks whose acquisition has at least one chip that ``chip_cubes`` would keep (by its
    SCL, with the chipper's default cloud and nodata limits), and the number of acquisitions.

    The other weeks would give empty partitions; skipping them halves the runs."""
    import numpy as np
    import xarray as xr

    from clay_core.chips import ChipParams
    from clay_core.types import window_start

    p = ChipParams(chip_size=chip)
    with xr.open_dataset(cube_path) as ds:
        scl, times = ds["SCL"].values, ds["time"].values.astype("datetime64[s]").astype(datetime)
    n = scl.shape[1] // chip
    blocks = scl[:, : n * chip, : n * chip].reshape(len(times), n, chip, n, chip)
    cloud = np.isin(blocks, p.cloud_classes).mean(axis=(2, 4))
    nodata = np.isin(blocks, p.nodata_classes).mean(axis=(2, 4))
    keep = ((cloud <= p.max_cloud) & (nodata <= p.max_nodata)).any(axis=(1, 2))
    return sorted({window_start(t) for t, k in zip(times, keep) if k}), len(times)


# Two of nrt's monitors, set up as in nrt's own example (no trend, forest mask): they disagree
# a lot on this cube (EWMA flags most forest pixels, CuSum a fraction), so both are shown.
NRT_MONITORS = ("EWMA", "CuSum")


def _run_monitor(name: str, ndvi, forest):
    """(confirmed-break mask, detection dates as days since 1970) of one nrt monitor."""
    import numpy as np
    from nrt.monitor.cusum import CuSum
    from nrt.monitor.ewma import EWMA

    monitor = {"EWMA": EWMA, "CuSum": CuSum}[name](trend=False, mask=forest.copy())
    monitor.fit(dataarray=ndvi.sel(time=slice(None, HISTORY_END)))
    monitoring = ndvi.sel(time=slice(f"{int(HISTORY_END[:4]) + 1}-01-01", None))
    for array, when in zip(monitoring.values, monitoring.time.values.astype("datetime64[s]").astype(datetime)):
        monitor.monitor(array=array, date=when)
    # nrt's mask: 1 monitored, 2 unstable history, 3 confirmed break, 4 too few observations
    return monitor.mask == 3, np.asarray(monitor.detection_date, dtype="int64")


def _forest_cover():
    """nrt's 2018 tree-cover layer, read from the file nrt ships. Not ``nrt.data``'s loader:
    with the nrt-data package installed (a dev dependency: nrt's simulator) that loader
    downloads the file instead, which fails offline."""
    from importlib import resources

    import rasterio

    from clay_core.errors import ConfigError

    path = resources.files("nrt.data").joinpath(FOREST_FILE)
    if not path.is_file():
        raise ConfigError(f"demo --real needs nrt's tree-cover layer {FOREST_FILE}, shipped with nrt==0.2.1; "
                          "reinstall it with `.venv/bin/pip install --force-reinstall nrt==0.2.1`")
    with rasterio.open(str(path)) as src:
        return src.read(1)


def nrt_reference(cube_path: str, chip: int, tile: str):
    """Per chip: forest pixels, and per nrt monitor on NDVI (fitted on the history up to 2018,
    monitoring from 2019) the fraction of them with a confirmed break and their median date."""
    import numpy as np
    import pandas as pd
    import xarray as xr

    from clay_core.chips import chip_id

    with xr.open_dataset(cube_path) as ds:
        ndvi = ((ds["B8"] - ds["B4"]) / (ds["B8"] + ds["B4"])).where(ds["SCL"].isin(NRT_CLEAR_SCL)).load()
    # nrt's tree-cover layer is on the 20 m grid of the same extent: each cell is 2 x 2 pixels here.
    forest = np.kron((_forest_cover() > FOREST_COVER).astype(np.uint8), np.ones((2, 2), np.uint8))
    results = {name: _run_monitor(name, ndvi, forest) for name in NRT_MONITORS}
    rows, n = [], forest.shape[0] // chip
    for r in range(n):
        for c in range(n):
            win = (slice(r * chip, (r + 1) * chip), slice(c * chip, (c + 1) * chip))
            f = int(forest[win].sum())
            row = {"chip_id": chip_id(tile, r, c), "forest_px": f}
            for name, (broken, days) in results.items():
                b = broken[win]
                row[f"{name}_fraction"] = b.sum() / f if f else 0.0
                row[f"{name}_date"] = str(np.datetime64("1970-01-01") + int(np.median(days[win][b]))) if b.any() else "-"
            rows.append(row)
    return pd.DataFrame(rows)


def clay_per_chip(layout, tile: str, windows: list[str]):
    """Per chip from the stored change partitions: clear observations, flags since 2019, the
    first of them, and the detector's confirmed events (first date -> confirmed date)."""
    import pandas as pd

    # every column: the pixel path's too, where it ran
    scores, events = read_partitions(layout, [tile], windows, "scores.parquet"), load_events(layout, [tile], windows)
    since = pd.Timestamp(f"{int(HISTORY_END[:4]) + 1}-01-01", tz="UTC")
    t = pd.to_datetime(scores["datetime"], utc=True)
    out = {}
    for cid, g in scores.assign(t=t).groupby("chip_id"):
        late = g[(g["t"] >= since) & g["change_flag"].astype(bool)]
        ev = events[events["chip_id"] == cid] if len(events) else events
        out[cid] = {"clear_obs": len(g), "flags_2019+": len(late),
                    "first_flag_2019+": str(late["t"].min().date()) if len(late) else "-",
                    "events": "; ".join(f"{e.first_date}->{e.confirmed_date}" for e in ev.itertuples()) or "-",
                    **_pixel_path(g)}
    return out


def _pixel_path(g) -> dict:
    """The chip's latest pixel-path share and date (``-`` while its history is collected)."""
    import pandas as pd

    if "pixel_change_fraction" not in g or not g["pixel_change_fraction"].notna().any():
        return {"pixels": "-", "pixel_date": "-"}
    last = g[g["pixel_change_fraction"].notna()].sort_values("t").iloc[-1]
    date = pd.Timestamp(last["pixel_change_date"]).date() if pd.notna(last["pixel_change_date"]) else "-"
    return {"pixels": f"{last['pixel_change_fraction']:.0%}", "pixel_date": str(date)}


def print_real_report(resources: dict, cfg, tile: str, windows: list[str], cube_path: str) -> None:
    ref = nrt_reference(cube_path, cfg.chip_size, tile)
    ours = clay_per_chip(resources["home"].layout, tile, windows)
    print(f"\nChange report, chip level (clay change scores + detector) beside nrt's pixel-level monitors on NDVI "
          f"(history to {HISTORY_END}; share of forest pixels, tree cover > {FOREST_COVER} %, with a confirmed "
          "break, and their median date):")
    refs = "".join(f"{m + ' break':>12} {m + ' date':<11}" for m in NRT_MONITORS)
    print(f"(pixel path: change_scores' own pixel monitor, nrt's MoSum on the NDVI of every chip pixel, forest or not, history to {HISTORY_END}: "
          "at the last window, the date most of them broke and the share that broke within 45 days of it)")
    print(f"{'chip_id':<16} {'forest px':>9}{refs} {'pixel path':>10} {'pixel date':<11} {'clear obs':>9} "
          f"{'flags 2019+':>11} {'first flag':<11} events (first->confirmed)")
    for r in ref.to_dict("records"):
        o = ours.get(r["chip_id"], {"clear_obs": 0, "flags_2019+": 0, "first_flag_2019+": "-", "events": "-",
                                    "pixels": "-", "pixel_date": "-"})
        cells = "".join(f"{r[m + '_fraction']:>12.0%} {r[m + '_date']:<11}" for m in NRT_MONITORS)
        print(f"{r['chip_id']:<16} {r['forest_px']:>9}{cells} {o['pixels']:>10} {o['pixel_date']:<11} "
              f"{o['clear_obs']:>9} {o['flags_2019+']:>11} {o['first_flag_2019+']:<11} {o['events']}")
    query = ref.sort_values(f"{NRT_MONITORS[-1]}_fraction", ascending=False).iloc[0]["chip_id"]
    _print_real_search(resources, cfg, query)


def _print_real_search(resources: dict, cfg, query: str) -> None:
    store = query_store(resources["vectordb"].url(), cfg)
    try:
        tile = cfg.tiles[0]
        print(f"\nPostgres: {store.count(tile=tile)} chip observations of tile {tile} in clay.chips")
        print(f"\nSimilarity search: observations most like {query} (most CuSum breaks), latest observation")
        print(f"  SQL: SELECT * FROM clay.similar_chips_filtered('{query}', 8, 0, ARRAY['{tile}'], NULL, NULL, NULL);")
        for r in store.similar_chips_filtered(query, k=8, tiles=[tile]).itertuples():
            print(f"  {r.chip_id:<16} {r.tile:<6} {r.acquired}  {r.similarity:.4f}")
    finally:
        store.close()


def cmd_demo_real(args: argparse.Namespace) -> int:
    from clay_assets.resources import ChangeSettings
    from clay_assets.resources.build import build_resources
    from clay_core.sources import nrt_cube_path

    _require_nrt()
    cfg = configure_real(load_config().home)
    cube_path = nrt_cube_path()
    windows, n_dates = clear_weeks(cube_path, cfg.chip_size)
    if args.windows:
        windows = windows[: args.windows]
    print(f"real Sentinel-2 L2A cube {cube_path} (nrt==0.2.1): tile {cfg.tiles[0]}, {n_dates} acquisitions; "
          f"{len(windows)} weeks have a chip clear enough to keep (the others would be empty partitions)")
    # the pixel path's history ends where the nrt reference's does, so the two columns compare
    resources = {**build_resources(cfg=cfg), "change_settings": ChangeSettings(pixel_history_end=HISTORY_END)}
    summary = materialize(cfg, list(cfg.tiles), windows, resources, quiet=args.quiet, verbose=args.verbose)
    print_real_report(resources, cfg, cfg.tiles[0], windows, cube_path)
    print("\n" + ui_hint(cfg, REAL_SETTINGS))
    print(f"Query it: CLAY_HOME={cfg.home} .venv/bin/clay-assets search --chip {cfg.tiles[0]}_r001c001 --k 5")
    return 1 if summary.failures else 0

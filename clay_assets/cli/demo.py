"""`clay-assets demo` and `clay-assets report`: the whole graph on embedded defaults, and the
change report against the synthetic source's planted truth."""

from __future__ import annotations

import argparse
import sys
import time

from clay_assets.cli.common import load_config as _config
from clay_assets.cli.common import default_windows
from clay_assets.cli.common import query_store as _query_store


def cmd_demo(args: argparse.Namespace) -> int:
    from dagster import DagsterInstance
    from tqdm import tqdm

    from clay_assets import config
    from clay_assets.resources.build import build_resources
    from clay_assets.runner import materialize_graph

    cfg = _config()
    home, dagster_home = cfg.home, config.dagster_home(cfg)
    tiles = list(cfg.tiles)
    windows = default_windows(args.windows)
    resources = build_resources(cfg=cfg)
    instance = DagsterInstance.get()
    total = 2 * len(tiles) * len(windows) + 1
    print(f"CLAY_HOME={home}\nmaterializing {len(tiles)} tiles x {len(windows)} weekly windows "
          f"({windows[0]} .. {windows[-1]}) = {total} runs")
    t0 = time.perf_counter()
    with tqdm(total=total, unit="run", file=sys.stderr, disable=args.quiet) as bar:
        def log(msg: str) -> None:
            bar.set_description(msg.split(":")[0][-40:])
            bar.update(1)

        summary = materialize_graph(tiles, windows, resources, instance, log=log,
                                    console_log_level="DEBUG" if args.verbose else "WARNING")
    print(f"done: {summary.runs} runs in {time.perf_counter() - t0:.1f}s")
    _print_demo_results(resources, tiles, windows, cfg)
    print("\nOpen the UI on these materializations:\n"
          f"  DAGSTER_HOME={dagster_home} CLAY_HOME={home} .venv/bin/dagster dev -w workspace.yaml")
    return 0


def _load_all_scores(layout, tiles, windows):
    import pandas as pd

    frames = []
    for tile in tiles:
        for w in windows:
            p = layout.partition("change", tile, w) / "scores.parquet"
            if p.is_file():
                frames.append(pd.read_parquet(p, columns=["chip_id", "datetime", "change_flag", "change_score"]))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["chip_id", "datetime", "change_flag"])


def change_report(resources: dict, tiles: list[str], windows: list[str]):
    """DetectionReport of the stored change flags against the synthetic source's planted changes."""
    from clay_core.change import score_detections, truth_chips

    src = resources["source"].get_source()
    if not hasattr(src, "planted_changes"):
        return None
    cs = resources["chip_settings"].chip_size
    grid = src.grid(tiles[0])
    truth = truth_chips(src.planted_changes(tiles), cs, grid.height // cs, grid.width // cs)
    return score_detections(_load_all_scores(resources["home"].layout, tiles, windows), truth)


def _print_demo_results(resources, tiles, windows, cfg) -> None:
    report = change_report(resources, tiles, windows)
    url = resources["vectordb"].url()
    detected = [r["chip_id"] for r in (report.rows if report else []) if r["verdict"] == "detected"]
    planted = [r["chip_id"] for r in (report.rows if report else []) if r["planted"]]
    query = (detected or planted or [None])[0]
    store = _query_store(url, cfg)
    try:
        print(f"\nPostgres: {store.count()} chip observations in clay.chips "
              f"({', '.join(f'{t}: {store.count(tile=t)}' for t in tiles)})")
        if query:
            print(f"\nSimilarity search: chips most like {query} (a planted clearing), latest observation")
            print(f"  SQL: SELECT * FROM clay.similar_chips('{query}', 8);")
            res = store.similar_chips(query, k=8)
            for r in res.itertuples():
                tag = " <- planted clearing" if r.chip_id in planted else ""
                print(f"  {r.chip_id:<16} {r.tile:<6} {r.acquired}  {r.similarity:.4f}{tag}")
    finally:
        store.close()
    if report:
        print("\nChange report (flags vs planted clearings):")
        print(report.table())


def cmd_report(args: argparse.Namespace) -> int:
    from clay_assets.resources.build import build_resources

    cfg = _config()
    resources = build_resources(cfg=cfg)
    report = change_report(resources, list(cfg.tiles), default_windows(args.windows))
    if report is None:
        print("the configured scene source has no planted truth to score against")
        return 1
    print(report.table())
    return 0


def add_parsers(sub) -> None:
    d = sub.add_parser("demo", help="materialize the whole graph on embedded defaults")
    d.add_argument("--windows", type=int, default=8, help="weekly windows from CLAY_START (default 8)")
    d.add_argument("--quiet", action="store_true", help="no progress bar")
    d.add_argument("--verbose", action="store_true", help="print every Dagster event (they are in the UI either way)")
    d.set_defaults(fn=cmd_demo)
    r = sub.add_parser("report", help="score change flags against the synthetic truth")
    r.add_argument("--windows", type=int, default=8)
    r.set_defaults(fn=cmd_report)

"""`clay-assets demo` and `clay-assets report`: the whole graph on embedded defaults, and the
change flags and confirmed events against the synthetic source's planted truth.
`demo --real` runs the real nrt cube instead (:mod:`clay_assets.cli.real`)."""

from __future__ import annotations

import argparse

from clay_assets.cli.common import (check_windows, default_windows, load_events, load_scores, materialize,
                                    require_platform, ui_hint)
from clay_assets.cli.common import load_config as _config
from clay_assets.cli.common import query_store as _query_store

DEMO_WINDOWS = 10
# Ten winter weeks hold no seasonal cycle and too few observations for the detector's default
# baseline (12 clear observations spanning a year), so the demo's detector fits a flat
# baseline (no harmonics; the per-date harmonic deviation then uses a mean too) on the first 3
# observations. A baseline that short has a rough scale, so a departure must be stronger to
# count (threshold 12 instead of 4). The code location keeps the defaults for real series.
DEMO_CHANGE = {"n_harmonics": 0, "detector_baseline_obs": 3, "detector_threshold": 12.0}


def demo_resources(cfg) -> dict:
    """The code location's resources with the demo's detector settings."""
    from clay_assets.resources.build import build_resources
    from clay_assets.resources.change import ChangeSettings

    return dict(build_resources(cfg=cfg), change_settings=ChangeSettings(**DEMO_CHANGE))


def cmd_demo(args: argparse.Namespace) -> int:
    if args.real:
        from clay_assets.cli.real import cmd_demo_real

        return cmd_demo_real(args)
    cfg = _config()
    tiles, windows = list(cfg.tiles), check_windows(default_windows(args.windows or DEMO_WINDOWS))
    resources = demo_resources(cfg)
    summary = materialize(cfg, tiles, windows, resources, quiet=args.quiet, verbose=args.verbose)
    _print_demo_results(resources, tiles, windows, cfg)
    print("\n" + ui_hint(cfg))
    return 1 if summary.failures else 0


def _truth(resources: dict, tiles: list[str]):
    from clay_core.change import truth_chips

    src = resources["source"].get_source()
    if not hasattr(src, "planted_changes"):
        return None
    cs = resources["chip_settings"].chip_size
    grid = src.grid(tiles[0])
    return truth_chips(src.planted_changes(tiles), cs, grid.height // cs, grid.width // cs)


def change_report(resources: dict, tiles: list[str], windows: list[str]):
    """DetectionReport of the stored change flags against the synthetic source's planted changes."""
    from clay_core.change import score_detections

    truth = _truth(resources, tiles)
    if truth is None:
        return None
    return score_detections(load_scores(resources["home"].layout, tiles, windows), truth)


def event_report(resources: dict, tiles: list[str], windows: list[str]):
    """DetectionReport of the confirmed events (their first dates) against the planted changes."""
    import pandas as pd

    from clay_core.change import score_detections

    truth = _truth(resources, tiles)
    if truth is None:
        return None
    ev = load_events(resources["home"].layout, tiles, windows)
    as_flags = pd.DataFrame({"chip_id": ev.get("chip_id", pd.Series(dtype=str)),
                             "datetime": pd.to_datetime(ev.get("first_date", pd.Series(dtype=str)), utc=True),
                             "change_flag": True})
    return score_detections(as_flags, truth)


def no_events_reason(resources: dict, tiles: list[str], windows: list[str]) -> str:
    """Why no event was confirmed: what the detector needs against what the chips have."""
    p = resources["change_settings"].params().detector
    scores = load_scores(resources["home"].layout, tiles, windows)
    most = int(scores.groupby("chip_id").size().max()) if len(scores) else 0
    span = f" spanning >= {p.effective_baseline_years:g} year" if p.effective_baseline_years else ""
    return (f"no change event confirmed: the detector needs a baseline of {p.baseline_obs} clear observations{span}, "
            f"then {p.k_consecutive} consecutive departures; the chips here have at most {most} clear observations "
            f"in {len(windows)} weekly windows (materialize a longer history, or see `demo`'s detector settings)")


def _print_search(store, query, planted) -> None:
    print(f"\nSimilarity search: chips most like {query} (a planted clearing), latest observation")
    print(f"  SQL: SELECT * FROM clay.similar_chips('{query}', 8);")
    for r in store.similar_chips(query, k=8).itertuples():
        tag = " <- planted clearing" if r.chip_id in planted else ""
        print(f"  {r.chip_id:<16} {r.tile:<6} {r.acquired}  {r.similarity:.4f}{tag}")


def _print_demo_results(resources, tiles, windows, cfg) -> None:
    report = change_report(resources, tiles, windows)
    detected = [r["chip_id"] for r in (report.rows if report else []) if r["verdict"] == "detected"]
    planted = [r["chip_id"] for r in (report.rows if report else []) if r["planted"]]
    query = (detected or planted or [None])[0]
    store = _query_store(resources["vectordb"].url(), cfg)
    try:
        print(f"\nPostgres: {store.count()} chip observations in clay.chips "
              f"({', '.join(f'{t}: {store.count(tile=t)}' for t in tiles)})")
        if query:
            _print_search(store, query, planted)
    finally:
        store.close()
    if report:
        print("\nChange report (per-date flags vs planted clearings):")
        print(report.table())
    print_events(resources, tiles, windows)


def print_events(resources, tiles, windows) -> None:
    events = load_events(resources["home"].layout, tiles, windows)
    if events.empty:
        print("\n" + no_events_reason(resources, tiles, windows))
        return
    print(f"\nConfirmed change events (clay.change_events: {len(events)}):")
    for e in events.sort_values(["first_date", "chip_id"]).itertuples():
        print(f"  {e.chip_id:<16} first {e.first_date}  confirmed {e.confirmed_date}  magnitude {e.magnitude:.1f}")
    scored = event_report(resources, tiles, windows)
    if scored:
        print("Events vs planted clearings:")
        print(scored.table().replace("first flag", "event date").replace("flagged chips", "chips with events"))


def stored_windows(layout, tiles) -> list[str]:
    """Every window with a stored change partition for any of ``tiles``, oldest first."""
    return sorted({w for t in tiles for w in layout.windows("change", t)})


def cmd_report(args: argparse.Namespace) -> int:
    from clay_assets.resources.build import build_resources

    cfg = _config()
    require_platform(cfg, "data")
    resources = build_resources(cfg=cfg)
    tiles = list(cfg.tiles)
    windows = default_windows(args.windows) if args.windows else stored_windows(resources["home"].layout, tiles)
    report = change_report(resources, tiles, windows)
    if report is None:
        print("the configured scene source has no planted truth to score against")
        return 1
    print(f"{len(windows)} weekly windows with change scores; per-date flags vs planted clearings:")
    print(report.table())
    print_events(resources, tiles, windows)
    return 0


def add_parsers(sub) -> None:
    d = sub.add_parser("demo", help="materialize the whole graph on embedded defaults")
    d.add_argument("--windows", type=int, default=None,
                   help=f"weekly windows from CLAY_START (default {DEMO_WINDOWS}; with --real: the first N clear weeks)")
    d.add_argument("--real", action="store_true",
                   help="the real Sentinel-2 cube of nrt==0.2.1 (tile 34TER) instead of the synthetic source")
    d.add_argument("--quiet", action="store_true", help="no progress bar")
    d.add_argument("--verbose", action="store_true", help="print every Dagster event (they are in the UI either way)")
    d.set_defaults(fn=cmd_demo)
    r = sub.add_parser("report", help="score change flags and events against the synthetic truth")
    r.add_argument("--windows", type=int, default=None, help="the first N windows from CLAY_START (default: all stored)")
    r.set_defaults(fn=cmd_report)

"""`clay-assets`: the small command line around the platform.

    clay-assets db-url                 connection URI (starts the embedded Postgres if needed)
    clay-assets demo                   materialize the whole graph, print a search and a change report
    clay-assets search --chip ID       chips most similar to ID's latest observation
    clay-assets report                 change detections against the synthetic source's planted truth
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import date


def _config():
    from clay_assets import config

    return config.current()


def _database_url(cfg) -> str:
    """DATABASE_URL, or the embedded server under CLAY_HOME (started if needed)."""
    from clay_assets.resources.build import vector_db

    return vector_db(cfg, cfg.home).url()


def _query_store(url: str, cfg):
    """A VectorStore for queries only (the dimension matters for loads, not searches)."""
    from clay_core.encoder import resolve_config
    from clay_core.vectordb import VectorStore

    return VectorStore(url, resolve_config(cfg.preset)["dim"])


def cmd_db_url(args: argparse.Namespace) -> int:
    print(_database_url(_config()))
    return 0


def default_windows(n: int) -> list[str]:
    from clay_core.types import weekly_windows

    return weekly_windows(_config().start, n)


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


def _parse_date(value: str | None, flag: str) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise SystemExit(f"clay-assets: error: {flag} {value!r} is not a date (YYYY-MM-DD)") from None


def run_search(store, args: argparse.Namespace):
    """(query description, results with geometry and thumbnails) for the search arguments."""
    from clay_core.errors import ConfigError

    tiles = [t.strip().upper() for t in args.tiles.split(",")] if args.tiles else None
    bbox = [float(v) for v in args.bbox.split(",")] if args.bbox else None
    if bbox is not None and len(bbox) != 4:
        raise ConfigError("--bbox takes west,south,east,north in degrees")
    filters = dict(tiles=tiles, date_from=_parse_date(args.date_from, "--from"),
                   date_to=_parse_date(args.date_to, "--to"), bbox=bbox)
    on = _parse_date(args.date, "--date")
    if args.chips:
        ids = [c.strip() for c in args.chips.split(",") if c.strip()]
        res = store.similar_to_chips(ids, k=args.k, min_similarity=args.min_similarity, **filters)
        query = {"chips": ids}
    else:
        chip = args.chip
        if chip is None:
            if args.lat is None or args.lon is None:
                raise ConfigError("give --chip ID, --chips A,B,C, or --lat and --lon")
            chip = store.chip_at(args.lon, args.lat, on)
            if chip is None:
                raise ConfigError(f"no stored chip covers lat {args.lat}, lon {args.lon}"
                                  + (f" on {on}" if on else "") + "; check the coordinates or materialize that area")
        res = store.similar_chips_filtered(chip, k=args.k, min_similarity=args.min_similarity, acquired=on, **filters)
        query = {"chip": chip, "acquired": str(on) if on else "latest"}
    query.update({k: v if isinstance(v, list) or v is None else str(v) for k, v in filters.items()})
    return query, store.describe(res)


def cmd_search(args: argparse.Namespace) -> int:
    from clay_core.vectordb import write_geojson

    cfg = _config()
    store = _query_store(_database_url(cfg), cfg)
    try:
        query, res = run_search(store, args)
    finally:
        store.close()
    print(f"query: {query}")
    if res.empty:
        print("no results")
    for r in res.itertuples():
        print(f"{r.chip_id}\t{r.tile}\t{r.acquired}\t{r.similarity:.4f}\t{r.thumbnail_uri}")
    if args.geojson:
        print(f"wrote {write_geojson(res, args.geojson, query)}")
    return 0


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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="clay-assets", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("db-url", help="print the database URI (starts the embedded server)").set_defaults(fn=cmd_db_url)
    d = sub.add_parser("demo", help="materialize the whole graph on embedded defaults")
    d.add_argument("--windows", type=int, default=8, help="weekly windows from CLAY_START (default 8)")
    d.add_argument("--quiet", action="store_true", help="no progress bar")
    d.add_argument("--verbose", action="store_true", help="print every Dagster event (they are in the UI either way)")
    d.set_defaults(fn=cmd_demo)
    s = sub.add_parser("search", help="similarity search by chip id, location or several reference chips")
    q = s.add_mutually_exclusive_group(required=True)
    q.add_argument("--chip", help="chip id, e.g. 31UFU_r002c000")
    q.add_argument("--chips", help="comma-separated chip ids: search with the mean of their embeddings")
    q.add_argument("--lat", type=float, help="latitude of the query point (with --lon)")
    s.add_argument("--lon", type=float, help="longitude of the query point")
    s.add_argument("--date", help="use the query chip's observation on this date (default: latest)")
    s.add_argument("--k", type=int, default=10)
    s.add_argument("--min-similarity", type=float, default=0.0)
    s.add_argument("--tiles", help="only these tiles, comma-separated")
    s.add_argument("--from", dest="date_from", help="only observations on or after this date")
    s.add_argument("--to", dest="date_to", help="only observations on or before this date")
    s.add_argument("--bbox", help="only chips intersecting west,south,east,north (degrees)")
    s.add_argument("--geojson", help="also write the results as GeoJSON to this file")
    s.set_defaults(fn=cmd_search)
    r = sub.add_parser("report", help="score change flags against the synthetic truth")
    r.add_argument("--windows", type=int, default=8)
    r.set_defaults(fn=cmd_report)
    return p


def main(argv: list[str] | None = None) -> int:
    from clay_core.errors import ClayError

    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except ClayError as exc:
        print(f"clay-assets: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""`clay-assets run` and `clay-assets status`: materialize chosen windows of the configured
source, and what the Dagster instance holds (materialized and stale partitions)."""

from __future__ import annotations

import argparse

from clay_assets.cli.common import (check_windows, load_config, materialize, parse_date, require_platform, ui_hint,
                                    windows_between)

# Sources that serve only the tiles they were configured with (the synthetic world's tiles, a
# cube's one tile); STAC and local rasters serve any MGRS tile.
_FIXED_TILE_SOURCES = ("synthetic", "cube")


def chosen_tiles(args: argparse.Namespace, cfg) -> list[str]:
    """``--tiles`` or the MGRS tiles of ``--area``, checked against what the source can serve."""
    from clay_core.areas import tiles_for_area
    from clay_core.errors import ConfigError
    from clay_core.tiles import parse_tile

    if args.area:
        try:
            tiles = tiles_for_area(args.area)
        except ConfigError as exc:
            raise ConfigError(f"--area {args.area}: {exc}") from None
    else:
        tiles = [t.strip().upper() for t in args.tiles.split(",") if t.strip()]
    for t in tiles:
        try:
            parse_tile(t)
        except Exception as exc:  # noqa: BLE001 - re-raised naming the flag
            raise ConfigError(f"--tiles: {exc}") from None
    other = [t for t in tiles if t not in cfg.tiles]
    if other and cfg.source in _FIXED_TILE_SOURCES:
        raise ConfigError(f"tile(s) {','.join(other)} are not served by CLAY_SOURCE={cfg.source} (configured: "
                          f"{','.join(cfg.tiles)}); add them to CLAY_TILES or CLAY_AREA")
    if not tiles:
        raise ConfigError("no tiles: give --tiles A,B or --area FILE")
    return tiles


def chosen_windows(args: argparse.Namespace) -> list[str]:
    """The weekly windows of ``--from`` .. ``--to``, each one a partition of the date dimension."""
    from clay_core.errors import ConfigError

    first, last = parse_date(args.date_from, "--from"), parse_date(args.date_to, "--to")
    if last < first:
        raise ConfigError(f"--to {last} is before --from {first}")
    return check_windows(windows_between(first, last))


def cmd_run(args: argparse.Namespace) -> int:
    from clay_assets.resources.build import build_resources

    cfg = load_config()
    tiles, windows = chosen_tiles(args, cfg), chosen_windows(args)
    summary = materialize(cfg, tiles, windows, build_resources(cfg=cfg), quiet=args.quiet, verbose=args.verbose)
    print(ui_hint(cfg))
    return 1 if summary.failures else 0


def _stale_finder(instance):
    """``(asset key, partitions) -> the stale ones``: code or upstream data changed since made.

    Dagster has no public Python API for stale status (the UI reads it over GraphQL); its test
    utility builds the same resolver the UI uses, as tests/assets/test_incremental.py does.
    """
    from dagster._core.definitions.data_version import StaleStatus
    from dagster._utils.test.data_versions import get_stale_status_resolver

    from clay_assets.definitions import ALL_ASSETS

    resolver = get_stale_status_resolver(instance, ALL_ASSETS)
    return lambda key, parts: [p for p in parts if resolver.get_status(key, p) == StaleStatus.STALE]


def status_lines(instance) -> list[str]:
    """Per asset: materialized partitions of the total, and the stale ones."""
    from clay_assets.definitions import ALL_ASSETS
    from clay_assets.partitions import TILES_DIMENSION, date_partitions

    stale_of = _stale_finder(instance)
    tiles = instance.get_dynamic_partitions(TILES_DIMENSION)
    weeks = len(date_partitions.get_partition_keys())
    total = len(tiles) * weeks
    lines = [f"tiles: {','.join(tiles) or '-'}; weekly windows: {weeks}; partitions per asset: {total}"]
    for asset in ALL_ASSETS:
        key = asset.key
        if asset.partitions_def is None:
            event = instance.get_latest_materialization_event(key)
            when = event.timestamp if event else None
            stale = stale_of(key, [None]) if event else []
            lines.append(f"{key.to_user_string():<18} " + ("materialized" if event else "not materialized")
                         + (f" (at {_iso(when)})" if when else "") + ("; STALE" if stale else ""))
            continue
        done = sorted(instance.get_materialized_partitions(key))
        stale = stale_of(key, done)
        lines.append(f"{key.to_user_string():<18} {len(done)}/{total} partitions materialized; {len(stale)} stale"
                     + (f": {', '.join(stale[:5])}{' ...' if len(stale) > 5 else ''}" if stale else ""))
    return lines


def _iso(ts: float) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def cmd_status(args: argparse.Namespace) -> int:
    from dagster import DagsterInstance

    from clay_assets import config

    cfg = load_config()
    require_platform(cfg, "dagster")
    config.dagster_home(cfg)
    instance = DagsterInstance.get()
    try:
        print(f"CLAY_HOME={cfg.home}")
        print("\n".join(status_lines(instance)))
    finally:
        instance.dispose()
    return 0


def add_parsers(sub) -> None:
    r = sub.add_parser("run", help="materialize chosen tiles x weekly windows of the configured source")
    where = r.add_mutually_exclusive_group(required=True)
    where.add_argument("--tiles", help="MGRS tiles, comma-separated")
    where.add_argument("--area", help="a GeoJSON file or west,south,east,north (degrees): its MGRS tiles")
    r.add_argument("--from", dest="date_from", required=True, help="first date (its week is the first window)")
    r.add_argument("--to", dest="date_to", required=True, help="last date (its week is the last window)")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    r.add_argument("--verbose", action="store_true", help="print every Dagster event")
    r.set_defaults(fn=cmd_run)
    s = sub.add_parser("status", help="materialized and stale partitions per asset")
    s.set_defaults(fn=cmd_status)

"""`clay-assets changes`: chips whose embeddings moved between two dates (``clay.changed_chips``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from clay_assets.cli.common import database_url as _database_url
from clay_assets.cli.common import load_config as _config
from clay_assets.cli.common import parse_date as _parse_date
from clay_assets.cli.common import query_store as _query_store


def cmd_changes(args: argparse.Namespace) -> int:
    from clay_core.errors import ConfigError
    from clay_core.vectordb import changed_chips, changed_chips_geojson

    date_a, date_b = _parse_date(args.date_from, "--from"), _parse_date(args.date_to, "--to")
    if date_a >= date_b:
        raise ConfigError(f"--from {date_a} must be before --to {date_b}")
    tiles = [t.strip().upper() for t in args.tiles.split(",")] if args.tiles else None
    bbox = [float(v) for v in args.bbox.split(",")] if args.bbox else None
    if bbox is not None and len(bbox) != 4:
        raise ConfigError("--bbox takes west,south,east,north in degrees")
    cfg = _config()
    store = _query_store(_database_url(cfg), cfg)
    try:
        res = changed_chips(store, date_a, date_b, args.min_distance, max_gap_days=args.max_gap_days,
                            max_cloud=args.max_cloud, tiles=tiles, bbox=bbox)
    finally:
        store.close()
    query = {"from": str(date_a), "to": str(date_b), "min_distance": args.min_distance,
             "max_gap_days": args.max_gap_days, "max_cloud": args.max_cloud, "tiles": tiles, "bbox": bbox}
    print(f"{len(res)} chip(s) changed by cosine distance >= {args.min_distance} between their clear "
          f"observations nearest to {date_a} and {date_b}")
    for r in res.itertuples():
        print(f"{r.chip_id}\t{r.tile}\t{r.acquired_a} -> {r.acquired_b}\t{r.distance:.4f}")
    if args.geojson:
        Path(args.geojson).write_text(json.dumps(changed_chips_geojson(res, query), indent=1))
        print(f"wrote {args.geojson}")
    return 0


def add_parsers(sub) -> None:
    s = sub.add_parser("changes", help="chips whose embeddings changed between two dates (clay.changed_chips)")
    s.add_argument("--from", dest="date_from", required=True, help="date A (YYYY-MM-DD)")
    s.add_argument("--to", dest="date_to", required=True, help="date B, after date A")
    s.add_argument("--min-distance", type=float, default=0.05,
                   help="report chips whose cosine distance is at least this (default 0.05)")
    s.add_argument("--max-gap-days", type=int, default=None,
                   help="ignore observations more than this many days from their date (default: any)")
    s.add_argument("--max-cloud", type=float, default=0.0,
                   help="a clear observation has cloud_fraction <= this (default 0)")
    s.add_argument("--tiles", help="only these tiles, comma-separated")
    s.add_argument("--bbox", help="only chips intersecting west,south,east,north (degrees)")
    s.add_argument("--geojson", help="also write the changed chips' footprints as GeoJSON to this file")
    s.set_defaults(fn=cmd_changes)

"""`clay-assets search` and `clay-assets db-url`: queries against the vector database."""

from __future__ import annotations

import argparse

from clay_assets.cli.common import load_config as _config
from clay_assets.cli.common import database_url as _database_url
from clay_assets.cli.common import parse_date as _parse_date
from clay_assets.cli.common import query_store as _query_store


def cmd_db_url(args: argparse.Namespace) -> int:
    print(_database_url(_config()))
    return 0


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
    if args.negative and not args.positive:
        raise ConfigError("--negative needs --positive: the labelled query is 2·mean(positives) − mean(negatives)")
    if args.positive:
        from clay_assets.cli.label import split_ids

        pos, neg = split_ids(args.positive), split_ids(args.negative)
        res = store.search_labeled(pos, neg, k=args.k, min_similarity=args.min_similarity, **filters)
        query = {"positives": pos, "negatives": neg}
    elif args.chips:
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


def add_parsers(sub) -> None:
    sub.add_parser("db-url", help="print the database URI (starts the embedded server)").set_defaults(fn=cmd_db_url)
    s = sub.add_parser("search", help="similarity search by chip id, location, reference chips or labelled examples")
    q = s.add_mutually_exclusive_group(required=True)
    q.add_argument("--chip", help="chip id, e.g. 31UFU_r002c000")
    q.add_argument("--chips", help="comma-separated chip ids: search with the mean of their embeddings")
    q.add_argument("--lat", type=float, help="latitude of the query point (with --lon)")
    q.add_argument("--positive", nargs="+", help="labelled search: observation ids like the wanted ones "
                   "(chip_id@YYYY-MM-DD, or chip_id for its latest); query = 2·mean(positives) − mean(negatives)")
    s.add_argument("--negative", nargs="+", help="labelled search: observation ids unlike the wanted ones")
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

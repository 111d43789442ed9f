"""`clay-assets`: the small command line around the platform.

    clay-assets db-url                 connection URI (starts the embedded Postgres if needed)
    clay-assets db stop                stop the embedded Postgres of this CLAY_HOME
    clay-assets demo [--real]          materialize the whole graph, print a search and a change report
    clay-assets run --tiles T --from D --to D    materialize chosen windows of the configured source
    clay-assets status                 materialized and stale partitions per asset
    clay-assets search --chip ID       chips most similar to ID's latest observation
    clay-assets report                 change detections against the synthetic source's planted truth
    clay-assets runs list|clear        runs in progress, pool slots held; clear a run whose worker died
    clay-assets label add|list|remove|score|detections   label sets, the probe's detections
    clay-assets explore [--port N]     a local map page: change scores, similar chips, labels, timelines
    clay-assets changes --from D --to D   chips whose embeddings changed between two dates
    clay-assets export --out DIR | import PATH   embeddings as GeoParquet/Zarr + STAC, and back
"""

from __future__ import annotations

import argparse
import sys

from clay_assets.cli import db, demo, materialize, runs, search, explore, label
from clay_assets.cli import changes, export
from clay_assets.cli.demo import change_report

__all__ = ["main", "build_parser", "change_report"]

# Each command module adds its sub-commands; a new command is a new module listed here.
COMMANDS = [search, demo, materialize, db, runs, explore, label, changes, export]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="clay-assets", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for module in COMMANDS:
        module.add_parsers(sub)
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

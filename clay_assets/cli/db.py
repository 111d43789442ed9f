"""`clay-assets db stop`: stop the embedded Postgres of this `CLAY_HOME`."""

from __future__ import annotations

import argparse

from clay_assets.cli.common import load_config


def cmd_db_stop(args: argparse.Namespace) -> int:
    from clay_core.vectordb import stop_embedded

    cfg = load_config()
    pgdata = cfg.home / "pg"
    note = " (DATABASE_URL is set: the platform uses that server, not this one)" if cfg.has_database_url else ""
    if pgdata.is_dir() and stop_embedded(pgdata):
        print(f"stopped the embedded Postgres of {pgdata}{note}")
    else:
        print(f"no embedded Postgres running for {pgdata}{note}")
    return 0


def add_parsers(sub) -> None:
    db = sub.add_parser("db", help="the embedded Postgres of this CLAY_HOME")
    ops = db.add_subparsers(dest="db_cmd", required=True)
    ops.add_parser("stop", help="stop the embedded server (data is kept; the next query starts it)").set_defaults(
        fn=cmd_db_stop)

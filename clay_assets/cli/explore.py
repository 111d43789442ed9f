"""`clay-assets explore`: serve the explorer page on this machine, reading as a read-only role."""

from __future__ import annotations

import argparse

from clay_assets.cli.common import database_url, load_config, query_store


def serve_app(args: argparse.Namespace):
    """(app, reader role) for ``args``: the owner (re)creates the read-only role ``clay_explorer``
    with a fresh password, and the app connects as that role only."""
    from clay_assets.explorer.app import create_app
    from clay_assets.explorer.queries import Explorer, reader_url

    cfg = load_config()
    with query_store(database_url(cfg), cfg) as owner:
        url = reader_url(owner)
    data = cfg.home / "data"  # thumbnails and change series; without it the page shows scores only
    explorer = Explorer(url, data if data.is_dir() else None)
    hosts = None if args.host in ("127.0.0.1", "localhost", "::1") else [args.host]
    return create_app(explorer, hosts), explorer.current_user()


def cmd_explore(args: argparse.Namespace) -> int:
    import uvicorn

    from clay_core.errors import ConfigError

    if not 1 <= args.port <= 65535:
        raise ConfigError(f"--port must be in 1..65535, got {args.port}")
    app, role = serve_app(args)
    print(f"explorer: http://{args.host}:{args.port}/  (reading as role {role}; Ctrl-C stops it)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def add_parsers(sub) -> None:
    from clay_assets.explorer.links import DEFAULT_HOST, DEFAULT_PORT

    e = sub.add_parser("explore", help="serve a local map page: change scores, similar chips, labels, timelines")
    e.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port to serve on (default {DEFAULT_PORT})")
    e.add_argument("--host", default=DEFAULT_HOST,
                   help=f"address to listen on (default {DEFAULT_HOST}: this machine only)")
    e.set_defaults(fn=cmd_explore)

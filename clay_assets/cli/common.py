"""What every command shares: the configuration, the platform-data check, the database URL,
a query store, window ranges and the materialization progress bar."""

from __future__ import annotations

import sys
import time
from datetime import date
from pathlib import Path


def load_config():
    """The configuration every command uses: ``CLAY_HOME`` and the rest, from ``clay_assets.config``."""
    from clay_assets import config

    return config.current()


def require_platform(cfg, what: str) -> None:
    """Refuse a query on a ``CLAY_HOME`` without platform data, creating nothing.

    ``what``: ``"database"`` (the embedded Postgres, unless ``DATABASE_URL`` is set),
    ``"dagster"`` (the Dagster instance) or ``"data"`` (the partition files).
    """
    from clay_core.errors import ConfigError

    if what == "database" and cfg.has_database_url:
        return
    needed: dict[str, Path] = {"database": cfg.home / "pg", "dagster": cfg.dagster_home, "data": cfg.home / "data"}
    if not needed[what].is_dir():
        raise ConfigError(f"no platform data under {cfg.home} (no {needed[what].name}/): run `clay-assets demo` "
                          "or `clay-assets run` first, or set CLAY_HOME to the folder that holds it")


def database_url(cfg) -> str:
    """DATABASE_URL, or the embedded server under CLAY_HOME (started if needed, never created)."""
    from clay_assets.resources.build import vector_db

    require_platform(cfg, "database")
    return vector_db(cfg, cfg.home).url()


def query_store(url: str, cfg):
    """A VectorStore for queries only (the dimension matters for loads, not searches)."""
    from clay_core.encoder import resolve_config
    from clay_core.vectordb import VectorStore

    return VectorStore(url, resolve_config(cfg.preset)["dim"])


def default_windows(n: int) -> list[str]:
    from clay_core.types import weekly_windows

    return weekly_windows(load_config().start, n)


def windows_between(first: date, last: date) -> list[str]:
    """The weekly windows (Mondays) that overlap ``first`` .. ``last``, oldest first."""
    from clay_core.types import weekly_windows, window_start

    start = date.fromisoformat(window_start(first))
    return weekly_windows(start, (last - start).days // 7 + 1)


def check_windows(windows: list[str]) -> list[str]:
    """``windows``, refused unless each is a partition of the date dimension (the code location's)."""
    from clay_assets.partitions import date_partitions
    from clay_core.errors import ConfigError

    known = date_partitions.get_partition_keys()
    outside = [w for w in windows if w not in set(known)]
    if outside:
        span = f"{known[0]} .. {known[-1]}" if known else "none yet"
        raise ConfigError(f"window(s) {outside[0]}{' ..' if len(outside) > 1 else ''} are not partitions (windows: "
                          f"{span}; CLAY_START / CLAY_END set the range, and a week is one once it has ended)")
    return windows


def parse_date(value: str | None, flag: str) -> date | None:
    from clay_core.errors import ConfigError

    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"{flag} {value!r} is not a date; use YYYY-MM-DD") from None


def materialize(cfg, tiles: list[str], windows: list[str], resources: dict, quiet: bool = False,
                verbose: bool = False):
    """The runner over ``tiles`` x ``windows`` on the instance in ``$CLAY_HOME/dagster``, with a
    progress bar on stderr and a one-line summary; returns the runner's summary."""
    from dagster import DagsterInstance
    from tqdm import tqdm

    from clay_assets import config
    from clay_assets.runner import materialize_graph

    config.dagster_home(cfg)
    instance = DagsterInstance.get()
    total = 2 * len(tiles) * len(windows) + 1
    print(f"CLAY_HOME={cfg.home}\nmaterializing {len(tiles)} tile(s) x {len(windows)} weekly windows "
          f"({windows[0]} .. {windows[-1]}) = {total} runs", flush=True)
    t0 = time.perf_counter()
    try:
        with tqdm(total=total, unit="run", file=sys.stderr, disable=quiet) as bar:
            def log(msg: str) -> None:
                bar.set_description(msg.split(":")[0][-40:])
                bar.update(1)

            summary = materialize_graph(tiles, windows, resources, instance, log=log, raise_on_error=False,
                                        console_log_level="DEBUG" if verbose else "WARNING")
    finally:
        instance.dispose()
    failed = f"; FAILED: {', '.join(summary.failures)} (see the runs in the UI)" if summary.failures else ""
    print(f"done: {summary.runs} runs in {time.perf_counter() - t0:.1f}s{failed}", flush=True)
    return summary


def ui_hint(cfg, settings: dict[str, str] | None = None) -> str:
    """How to open the UI on what a command materialized (the same settings, the same instance)."""
    env = {"CLAY_HOME": str(cfg.home), "DAGSTER_HOME": str(cfg.dagster_home), **(settings or {})}
    return ("Open the UI on these materializations:\n  " + " ".join(f"{k}={v}" for k, v in env.items())
            + " .venv/bin/dagster dev -w workspace.yaml")


def read_partitions(layout, tiles, windows, name: str, columns=None):
    """A file of every stored change partition of ``tiles`` x ``windows``, concatenated."""
    import pandas as pd

    frames = []
    for tile in tiles:
        for w in windows:
            p = layout.partition("change", tile, w) / name
            if p.is_file():
                frames.append(pd.read_parquet(p, columns=columns))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns or [])


def load_scores(layout, tiles, windows):
    """chip_id, datetime, change_flag, change_score of every stored change partition."""
    return read_partitions(layout, tiles, windows, "scores.parquet",
                            ["chip_id", "datetime", "change_flag", "change_score"])


def load_events(layout, tiles, windows):
    """The detector's confirmed events (the rows of ``clay.change_events``) of those partitions."""
    return read_partitions(layout, tiles, windows, "events.parquet")

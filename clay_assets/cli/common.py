"""What every command shares: the configuration, the database URL, a query store."""

from __future__ import annotations

from datetime import date


def load_config():
    from clay_assets import config

    return config.current()


def database_url(cfg) -> str:
    """DATABASE_URL, or the embedded server under CLAY_HOME (started if needed)."""
    from clay_assets.resources.build import vector_db

    return vector_db(cfg, cfg.home).url()


def query_store(url: str, cfg):
    """A VectorStore for queries only (the dimension matters for loads, not searches)."""
    from clay_core.encoder import resolve_config
    from clay_core.vectordb import VectorStore

    return VectorStore(url, resolve_config(cfg.preset)["dim"])


def default_windows(n: int) -> list[str]:
    from clay_core.types import weekly_windows

    return weekly_windows(load_config().start, n)


def parse_date(value: str | None, flag: str) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise SystemExit(f"clay-assets: error: {flag} {value!r} is not a date (YYYY-MM-DD)") from None

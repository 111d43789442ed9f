"""Links into the explorer page (for Dagster metadata): no web framework is imported here."""

from __future__ import annotations

from urllib.parse import urlencode

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "explorer_url"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765


def explorer_url(partition, base: str | None = None, chip: str | None = None) -> str:
    """The explorer view of one tile x week partition: ``partition`` is a
    :class:`clay_core.types.PartitionId` or its key (``2024-01-29|31UFU``); ``base`` is where
    ``clay-assets explore`` serves (default ``http://127.0.0.1:8765``); ``chip`` opens that
    chip's similar search and timeline."""
    from clay_core.types import PartitionId

    pid = partition if isinstance(partition, PartitionId) else PartitionId.parse(str(partition))
    query = {"tiles": pid.tile, "window": pid.window}
    if chip:
        query["chip"] = chip
    return f"{(base or f'http://{DEFAULT_HOST}:{DEFAULT_PORT}').rstrip('/')}/?{urlencode(query)}"

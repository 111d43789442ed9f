"""The one interface every scene source implements, and its UTC convention (:func:`as_utc`)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import datetime, timezone
from typing import Any

from clay_core.types import Scene, SceneRef, TileGrid

__all__ = ["SceneSource", "as_utc"]


def as_utc(dt: Any) -> Any:
    """A timezone-aware UTC datetime (naive input is taken to be UTC)."""
    if dt.tzinfo is None:
        return dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc)


class SceneSource(ABC):
    """Lists and loads acquisitions for a tile.

    ``list_scenes`` is cheap (catalogue only) so sensors can poll it; ``load_scene`` reads
    pixels onto the tile's fixed grid (``grid(tile)``), so a chip id means the same ground
    on every date.
    """

    platform: str = "sentinel-2-l2a"

    @property
    def cloud_screening(self) -> str:
        """What screens clouds: the QA format read (``"scl"``, ``"landsat_qa_pixel"``), or
        ``"off"`` for a source without a QA band (only nodata pixels are masked then)."""
        qa_format = getattr(self, "qa_format", "scl")
        has_qa = getattr(self, "qa_band", getattr(self, "qa_var", "scl"))
        return qa_format if has_qa else "off"

    def cloud_screening_of(self, ref: SceneRef) -> str:
        """What screens the clouds of one scene (a source whose QA varies by scene overrides it)."""
        return self.cloud_screening

    @abstractmethod
    def grid(self, tile: str) -> TileGrid:
        """The tile's pixel grid; raises UnknownTileError for a tile the source does not serve."""

    @abstractmethod
    def list_scenes(self, tile: str, start: datetime, end: datetime) -> list[SceneRef]:
        """Acquisitions of ``tile`` with ``start <= datetime < end`` (UTC), oldest first."""

    @abstractmethod
    def load_scene(self, ref: SceneRef, bands: list[str]) -> Scene:
        """Pixels of ``bands`` (in that order) plus the QA band, on ``grid(ref.tile)``."""

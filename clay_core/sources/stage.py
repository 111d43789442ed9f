"""The ``raw_scenes`` stage: the acquisitions of one tile x window, recorded as a manifest.

The manifest keeps each scene's id, time, platform and hrefs (lineage to the raw data);
pixels are read later, by the chipper, straight from the source, so large rasters are never
copied. A window without acquisitions is an empty partition, not a failure.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from clay_core.sources.base import SceneSource
from clay_core.storage import RAW, Layout, atomic_dir, read_manifest, write_manifest
from clay_core.types import PartitionId, SceneRef

__all__ = ["SceneListing", "list_partition_scenes", "record_partition_scenes", "read_partition_scenes"]


@dataclass(frozen=True)
class SceneListing:
    """The acquisitions a source lists for one partition, oldest first."""

    pid: PartitionId
    platform: str  # the source's platform
    crs: str  # the tile grid's CRS
    refs: tuple[SceneRef, ...]

    @property
    def empty(self) -> bool:
        return not self.refs

    @property
    def scene_ids(self) -> list[str]:
        return [r.scene_id for r in self.refs]

    @property
    def hrefs(self) -> list[dict[str, str]]:
        return [r.hrefs for r in self.refs]

    def manifest(self) -> dict[str, Any]:
        """The partition's raw manifest (JSON-able)."""
        return {"tile": self.pid.tile, "window": self.pid.window, "crs": self.crs,
                "scenes": [_scene_record(r) for r in self.refs]}  # fmt: skip


def _scene_record(ref: SceneRef) -> dict[str, Any]:
    return {"scene_id": ref.scene_id, "tile": ref.tile, "platform": ref.platform,
            "datetime": ref.datetime.isoformat(), "hrefs": ref.hrefs, "cloud_cover": ref.cloud_cover}  # fmt: skip


def _scene_ref(record: dict[str, Any]) -> SceneRef:
    return SceneRef(record["scene_id"], record["tile"], record["platform"], datetime.fromisoformat(record["datetime"]),
                    record["hrefs"], record["cloud_cover"])  # fmt: skip


def list_partition_scenes(source: SceneSource, pid: PartitionId) -> SceneListing:
    """The acquisitions of ``pid.tile`` within the window ``pid.bounds()`` (catalogue only).

    The tile's grid is looked up first, so a tile the source does not serve fails with
    UnknownTileError before any catalogue search.
    """
    grid = source.grid(pid.tile)
    start, end = pid.bounds()
    refs = source.list_scenes(pid.tile, start, end)
    return SceneListing(pid=pid, platform=source.platform, crs=grid.crs, refs=tuple(refs))


def record_partition_scenes(layout: Layout, pid: PartitionId, source: SceneSource) -> SceneListing:
    """List the partition's acquisitions and write them as its raw manifest (atomically)."""
    listing = list_partition_scenes(source, pid)
    with atomic_dir(layout.partition_dir(RAW, pid)) as tmp:
        write_manifest(tmp, listing.manifest())
    return listing


def read_partition_scenes(layout: Layout, pid: PartitionId) -> list[SceneRef]:
    """The scenes recorded by :func:`record_partition_scenes` (FileNotFoundError before that)."""
    return [_scene_ref(s) for s in read_manifest(layout.partition_dir(RAW, pid))["scenes"]]

"""The raw_scenes stage: listing a partition's acquisitions and recording them as its manifest."""

from __future__ import annotations

from datetime import date

import pytest

from clay_core.errors import UnknownTileError
from clay_core.sources import SyntheticSceneSource, SyntheticWorld, list_partition_scenes, read_partition_scenes, record_partition_scenes
from clay_core.storage import RAW, Layout, read_manifest
from clay_core.types import PartitionId

SOURCE = SyntheticSceneSource(SyntheticWorld(tiles=("31UFU",), size=64, seed=1, revisit_days=3))
UNTIL_2025 = SyntheticSceneSource(SyntheticWorld(tiles=("31UFU",), size=64, until=date(2025, 1, 1)))


def test_listing_is_the_window_of_the_partition():
    pid = PartitionId("2024-01-08", "31UFU")
    listing = list_partition_scenes(SOURCE, pid)
    start, end = pid.bounds()
    assert listing.refs and all(start <= r.datetime < end for r in listing.refs)
    assert listing.refs == tuple(SOURCE.list_scenes("31UFU", start, end))
    assert listing.platform == SOURCE.platform and listing.crs == SOURCE.grid("31UFU").crs
    assert listing.scene_ids == [r.scene_id for r in listing.refs] and not listing.empty
    with pytest.raises(UnknownTileError):
        list_partition_scenes(SOURCE, PartitionId("2024-01-08", "32UNB"))


def test_record_writes_the_manifest_and_reads_back_the_refs(tmp_path):
    layout = Layout(tmp_path)
    pid = PartitionId("2024-01-08", "31UFU")
    listing = record_partition_scenes(layout, pid, SOURCE)
    man = read_manifest(layout.partition_dir(RAW, pid))
    assert man["tile"] == "31UFU" and man["window"] == "2024-01-08" and man["crs"] == listing.crs
    assert [s["scene_id"] for s in man["scenes"]] == listing.scene_ids
    assert read_partition_scenes(layout, pid) == list(listing.refs)
    assert layout.windows(RAW, "31UFU") == ["2024-01-08"]

    empty = record_partition_scenes(layout, PartitionId("2030-01-07", "31UFU"), UNTIL_2025)
    assert empty.empty and read_partition_scenes(layout, PartitionId("2030-01-07", "31UFU")) == []
    with pytest.raises(FileNotFoundError, match="materialize"):
        read_partition_scenes(layout, PartitionId("2024-01-15", "31UFU"))

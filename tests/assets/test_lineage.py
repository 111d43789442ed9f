"""Order dependence as lineage: a window's change scores read the earlier windows of its tile.

``change_scores`` depends on its own previous window (same tile) and on the embeddings of the
preceding windows, so re-running an old window marks every later window of that tile stale,
and a backfill runs the windows oldest first.
"""

from __future__ import annotations

from dagster import AssetKey, materialize, partition_loading_context
# Dagster has no public Python API for an asset partition's stale status (the UI reads it over
# GraphQL); these two private imports are the documented exception (as in test_incremental.py).
from dagster._core.definitions.data_version import StaleStatus
from dagster._utils.test.data_versions import get_stale_status_resolver

from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from clay_assets.definitions import ALL_ASSETS, PER_SCENE_UPSTREAM, defs, pca
from clay_assets.partitions import make_key
from tests.support.pipeline import WINDOWS, small_resources

TILE = "31UFU"


def test_change_scores_depend_on_previous_window_of_same_tile(instance):
    graph = defs.resolve_asset_graph()
    key = AssetKey("change_scores")
    assert key in graph.get(key).parent_keys  # the self-dependency

    def upstream(window: str) -> list[str]:
        with partition_loading_context(dynamic_partitions_store=instance):
            result = graph.get_parent_partition_keys_for_child(str(make_key(TILE, window)), key, key)
        return sorted(str(k) for k in result.partitions_subset.get_partition_keys())

    assert upstream(WINDOWS[3]) == [str(make_key(TILE, WINDOWS[2]))]
    assert upstream(WINDOWS[0]) == []  # the first window has no upstream window


def test_rerunning_window_3_of_6_marks_later_windows_stale(tmp_path, pg_url, instance):
    res = small_resources(tmp_path / "clay", pg_url)
    for w in WINDOWS:
        assert materialize(ALL_ASSETS, selection=PER_SCENE_UPSTREAM, partition_key=make_key(TILE, w), resources=res,
                           instance=instance).success
    assert materialize(ALL_ASSETS, selection=[pca], resources=res, instance=instance).success
    # All six windows' change scores in one run, as a backfill batches them.
    span = {ASSET_PARTITION_RANGE_START_TAG: str(make_key(TILE, WINDOWS[0])),
            ASSET_PARTITION_RANGE_END_TAG: str(make_key(TILE, WINDOWS[-1]))}
    assert materialize(ALL_ASSETS, selection=["change_scores"], tags=span, resources=res, instance=instance).success
    recs = instance.fetch_materializations(AssetKey("change_scores"), limit=100).records
    assert sorted(r.partition_key for r in recs) == [str(make_key(TILE, w)) for w in WINDOWS]
    # oldest first: every window started from the previous window's saved detector state
    assert [r.asset_materialization.metadata["detector_windows_replayed"].value for r in recs] == [0] * 6

    def statuses():
        resolver = get_stale_status_resolver(instance, ALL_ASSETS)
        return [resolver.get_status(AssetKey("change_scores"), str(make_key(TILE, w))) for w in WINDOWS]

    assert statuses() == [StaleStatus.FRESH] * 6
    # Window 3 is re-chipped and re-embedded with other settings (a new data version, as a late
    # acquisition or a parameter change gives): its change scores and every later window's read it.
    other = small_resources(tmp_path / "clay", pg_url, chip_size=32)
    assert materialize(ALL_ASSETS, selection=["chip_cubes", "embeddings"], partition_key=make_key(TILE, WINDOWS[2]),
                       resources=other, instance=instance).success
    assert statuses() == [StaleStatus.FRESH] * 2 + [StaleStatus.STALE] * 4

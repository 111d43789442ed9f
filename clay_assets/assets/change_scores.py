"""Per chip and date change scores, and dated change events that persist across windows.

For each chip in the window: cosine distance to its baseline and to its previous clear
observation, deviation of its first principal components from a robust harmonic seasonal fit,
a robust z-score among the tile's chips on that date, and a per-date change flag (see
``clay_core.change.scores``). A CCDC-style detector (``clay_core.change.detector``) also follows each
chip's principal components from window to window: its state is saved with the partition, so
a new window updates it incrementally instead of recomputing history, and confirmed changes
(first date, confirmation date, magnitude) are written to ``events.parquet`` and, by
``vectors``, to ``clay.change_events``. Windows are scored oldest first. A pixel path
(``clay_core.change.pixels``: nrt's MoSum on the NDVI of the chip cube's pixels, carried the
same way) adds per chip the share of pixels that changed together and its date, which
``vectors`` loads into ``clay.pixel_changes``. Metadata: a change-intensity map, a GeoJSON grid of chip scores, PC1
time series of the most-changed chips, and the chips whose changed-pixel share exceeds 2%.
"""

from dagster import AssetDep, AssetExecutionContext, BackfillPolicy, MaterializeResult, MetadataValue, asset

from clay_assets.batching import PartitionOutcome, for_each_partition
from clay_assets.metadata import image_md
from clay_assets.partitions import history_mapping, previous_window_mapping, scene_partitions
from clay_assets.resources import ChangeSettings, ClayHome
from clay_assets.versions import CHANGE_LOGIC
from clay_core.change import ChangeResult, load_current, score_change
from clay_core.change.stage import PIXEL_MAP
from clay_core.types import PartitionId

TOP_COLUMNS = ["chip_id", "cosine_to_baseline", "change_score", "change_flag"]
PIXEL_REPORT_SHARE = 0.02  # metadata counts chips above this share of changed pixels (false alarms: ~1%)
PIXEL_TOP = ["chip_id", "pixel_change_fraction", "pixel_change_date", "pixels_monitored"]


@asset(
    partitions_def=scene_partitions,
    code_version=CHANGE_LOGIC,
    group_name="clay",
    # The detector state of a window is the previous window's, carried forward: a self-dependency
    # on the same tile's previous window (lineage in the UI; a backfill never splits a tile's
    # windows out of order). Dagster ignores a self-dependency for staleness once the asset has
    # >= 100 partitions, so the embeddings of the preceding windows are declared too: re-running an
    # old window marks the later ones stale.
    # The pixel path reads the window's chip cube (earlier ones only to replay a missing state).
    deps=[AssetDep("embeddings", partition_mapping=history_mapping()), "pca", "chip_cubes",
          AssetDep("change_scores", partition_mapping=previous_window_mapping())],
    description=__doc__,
    # single_run, not batched_policy(): for a self-dependent multi-partitioned asset, Dagster 1.13
    # picks a multi_run backfill's "first N" partitions in no set order and launches them together
    # (a tile's July ran beside its January). A single run per selection (Dagster splits a
    # non-rectangular one per tile) scores each tile's windows oldest first, in one process.
    backfill_policy=BackfillPolicy.single_run(),
)
def change_scores(context: AssetExecutionContext, home: ClayHome, change_settings: ChangeSettings) -> MaterializeResult:
    layout = home.layout
    basis, params = load_current(layout.root / "pca"), change_settings.params()
    pixels = change_settings.pixel_params()

    def one(pid: PartitionId) -> PartitionOutcome:
        result = score_change(layout, pid, basis, params, pixels=pixels, open_cube=home.open_cube)
        if result.replayed_windows:
            why = f" ({result.replay_reason})" if result.replay_reason else ""
            context.log.info(f"{pid.tile} {pid.window}: replayed {result.replayed_windows} earlier window(s) "
                             f"into the detector state{why}")
        if len(result.scores):
            context.log.info(f"{pid.tile} {pid.window}: {result.flagged} of {len(result.scores)} chips flagged, "
                             f"{len(result.events)} event(s) confirmed")
        return PartitionOutcome(metadata=_metadata(result))

    return for_each_partition(context, one)


def _metadata(result: ChangeResult) -> dict:
    pid = result.partition
    md = {
        "chips": int(len(result.scores)),
        "dagster/row_count": int(len(result.scores)),
        "pca_version": result.pca_version,
        "flagged": result.flagged,
        "events_confirmed": int(len(result.events)),
        "history_windows": result.history_windows,
        "detector_windows_replayed": result.replayed_windows,
        "grid_geojson": MetadataValue.path(str(result.geojson_path)),
    }
    if len(result.scores):
        md["top_chips"] = MetadataValue.md(result.top_chips()[TOP_COLUMNS].to_markdown(index=False))
        md["intensity_map"] = image_md(result.intensity_png, f"change intensity {pid.tile} {pid.window}")
        md["most_changed_series"] = MetadataValue.md(
            "\n\n".join(image_md(png, cid).value for cid, png in result.series_pngs)
        )
        if len(result.events):
            md["events"] = MetadataValue.md(result.events.to_markdown(index=False))
    return {**md, **_pixel_metadata(result)}


def _pixel_metadata(result: ChangeResult) -> dict:
    px, scores = result.pixels, result.scores
    if px is None:
        return {}
    md = {"pixel_windows_replayed": px.replayed_windows}
    png = result.directory / PIXEL_MAP
    if png.is_file():
        md["pixel_map"] = image_md(png.read_bytes(), f"changed pixels {result.partition.tile} {result.partition.window}")
    if px.skipped:
        md["pixel_skipped"] = px.skipped
    if "pixels_monitored" in scores:
        changed = scores[scores["pixel_change_fraction"] > PIXEL_REPORT_SHARE]
        md["pixel_chips_monitored"] = int((scores["pixels_monitored"] > 0).sum())
        md["pixel_chips_changed"] = int(changed["chip_id"].nunique())
        if len(changed):
            top = changed.sort_values("pixel_change_fraction", ascending=False).head(10)[PIXEL_TOP]
            md["pixel_changes"] = MetadataValue.md(top.to_markdown(index=False))
    return md

"""Per chip and date change scores, and dated change events that persist across windows.

For each chip in the window: cosine distance to its baseline and to its previous clear
observation, deviation of its first principal components from a robust harmonic seasonal fit,
a robust z-score among the tile's chips on that date, and a per-date change flag (see
``clay_core.change.scores``). A CCDC-style detector (``clay_core.change.detector``) also follows each
chip's principal components from window to window: its state is saved with the partition, so
a new window updates it incrementally instead of recomputing history, and confirmed changes
(first date, confirmation date, magnitude) are written to ``events.parquet`` and, by
``vectors``, to ``clay.change_events``. Windows are scored oldest first. Metadata: a
change-intensity map, a GeoJSON grid of chip scores and PC1 time series of the most-changed chips.
"""

from dagster import AssetExecutionContext, BackfillPolicy, MaterializeResult, MetadataValue, asset

from clay_assets.metadata import image_md
from clay_assets.partitions import scene_partitions
from clay_assets.resources import ChangeSettings, ClayHome
from clay_assets.versions import CHANGE_LOGIC
from clay_core.change import ChangeResult, load_current, score_change
from clay_core.types import PartitionId

TOP_COLUMNS = ["chip_id", "cosine_to_baseline", "change_score", "change_flag"]


@asset(
    partitions_def=scene_partitions,
    code_version=CHANGE_LOGIC,
    group_name="clay",
    deps=["embeddings", "pca"],
    description=__doc__,
    backfill_policy=BackfillPolicy.multi_run(max_partitions_per_run=1),
)
def change_scores(context: AssetExecutionContext, home: ClayHome, change_settings: ChangeSettings) -> MaterializeResult:
    pid = PartitionId.parse(context.partition_key)
    layout = home.layout
    result = score_change(layout, pid, load_current(layout.root / "pca"), change_settings.params())
    if result.replayed_windows:
        context.log.info(
            f"{pid.tile} {pid.window}: replayed {result.replayed_windows} earlier window(s) into the detector state"
        )
    md = _metadata(result)
    if len(result.scores):
        context.log.info(f"{pid.tile} {pid.window}: {result.flagged} of {len(result.scores)} chips flagged, "
                         f"{len(result.events)} event(s) confirmed")
    return MaterializeResult(metadata=md)


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
    return md

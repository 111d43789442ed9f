"""``head_predictions`` (per tile x window): the ``head_model`` head run over the partition's chip
cube: class maps (or value maps) per chip in ``predictions.zarr``, and per-class pixel counts and
areas in Postgres ``clay.class_areas`` (the partition's rows replaced in one transaction). A head
trained on another encoder preset or checkpoint is refused.
"""

import time

from dagster import AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, AssetExecutionContext
from dagster import MaterializeResult, MetadataValue, asset

from clay_assets.batching import PartitionOutcome, batched_policy, for_each_partition
from clay_assets.metadata import image_md
from clay_assets.partitions import scene_partitions
from clay_assets.resources import ClayHome, ClayModel, VectorDB
from clay_core.heads import class_areas_md, predict_partition
from clay_core.types import PartitionId
from clay_core.vectordb import redact
from clay_core.vectordb import CLASS_AREAS_TABLE

HEAD_PREDICTIONS_DESCRIPTION = (
    "The head_model head applied to the partition's chips: class (or value) maps per chip in predictions.zarr, "
    "and per-class pixel counts and areas in Postgres clay.class_areas (partition rows replaced in one "
    "transaction). Refuses a head trained on another encoder."
)


@asset(
    partitions_def=scene_partitions, deps=["chip_cubes", "head_model"], group_name="clay",
    code_version="head-predictions-1", description=HEAD_PREDICTIONS_DESCRIPTION,
    backfill_policy=batched_policy(),
    check_specs=[AssetCheckSpec("class_areas_cover_chips", asset="head_predictions", blocking=True,
                                description="the partition's clay.class_areas pixels add up to its chips' pixels")],
)  # fmt: skip
def head_predictions(context: AssetExecutionContext, home: ClayHome, model: ClayModel,
                     vectordb: VectorDB) -> MaterializeResult:
    loaded, url = model.load(), vectordb.url()
    return for_each_partition(context, lambda pid: _predict(home, model, loaded, url, pid))


def _predict(home: ClayHome, model: ClayModel, loaded, url: str, pid: PartitionId) -> PartitionOutcome:
    t0 = time.perf_counter()
    res = predict_partition(
        home.layout, pid, loaded, open_cube=home.open_cube,
        platform=model.platform, batch_size=model.batch_size, database_url=url,
    )  # fmt: skip
    check = AssetCheckResult(
        check_name="class_areas_cover_chips", passed=res.db_pixels == res.chip_pixels,
        severity=AssetCheckSeverity.ERROR,
        metadata={"db_pixels": res.db_pixels, "chip_pixels": res.chip_pixels, "rows": res.db_rows},
    )
    md = {
        "chips": res.chips,
        "dagster/row_count": res.db_rows,
        "head": res.kind,
        "head_sha256": res.head_sha256,
        "encoder_model_id": loaded.model_id,
        "store": MetadataValue.path(str(res.store)),
        "database": redact(url),
        "table": CLASS_AREAS_TABLE if res.kind != "regression" else "(regression: no class areas)",
        "seconds": round(time.perf_counter() - t0, 3),
    }
    if res.areas:
        md["class_areas"] = MetadataValue.md(class_areas_md(res.areas))
    if res.preview is not None:
        md["class_maps"] = image_md(res.preview, f"{pid.tile} {pid.window}: RGB | predicted classes")
    return PartitionOutcome(metadata=md, checks=[check])

"""Clay encoder embeddings of every chip: the class token (and optionally patch tokens).

Reads the partition's chip cube lazily batch by batch, normalizes with the platform's band
statistics, encodes time and chip-centre lat/lon, and runs the encoder on CUDA when present
(bf16 autocast) or the CPU (fp32, deterministic). Writes ``embeddings.zarr`` with the class
token [chip, dim] float32 and, when enabled, patch tokens [chip, token, dim] float16.
Damaged input fails the partition before anything is replaced (the previous embeddings stay):
a cube missing a stored shard or a band, a chip read as all zeros, or embeddings that are not
finite or that duplicate another chip's.
"""


import time

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    MaterializeResult,
    MetadataValue,
    asset,
)

from clay_assets.batching import PartitionOutcome, batched_policy, for_each_partition
from clay_assets.partitions import scene_partitions
from clay_assets.resources import ClayHome, ClayModel
from clay_assets.versions import embeddings_code_version
from clay_core.encoder import embed_partition
from clay_core.types import PartitionId


@asset(
    partitions_def=scene_partitions,
    code_version=embeddings_code_version(),
    group_name="clay",
    deps=["chip_cubes"],
    description=__doc__,
    backfill_policy=batched_policy(),
    # One encoder at a time per GPU: dagster.yaml gives every pool a default limit of 1.
    pool="gpu",
    check_specs=[AssetCheckSpec("embeddings_finite_with_dim", asset="embeddings", blocking=True,
                                description="every class-token embedding is finite and has the model's dimension")],
)
def embeddings(context: AssetExecutionContext, home: ClayHome, model: ClayModel) -> MaterializeResult:
    loaded = model.load()  # once per run: a batched run loads the encoder once for all its partitions
    return for_each_partition(context, lambda pid: _embed(context, home, model, loaded, pid))


def _embed(context, home: ClayHome, model: ClayModel, loaded, pid: PartitionId) -> PartitionOutcome:
    t0 = time.perf_counter()

    def progress(done: int, total: int) -> None:
        context.log.info(f"{pid.tile} {pid.window}: embedded {done}/{total} chips")

    res = embed_partition(
        home.layout, pid, loaded, open_cube=home.open_cube,
        platform=model.platform, batch_size=model.batch_size, patch_tokens=model.patch_tokens, progress=progress,
        scheduler_address=model.dask_scheduler,
    )  # fmt: skip
    emb = res.embedding
    check = AssetCheckResult(
        check_name="embeddings_finite_with_dim", passed=res.finite and res.shape_ok, severity=AssetCheckSeverity.ERROR,
        metadata={"finite": res.finite, "expected_dim": res.dim, "shape": str(None if emb is None else emb.cls.shape)},
    )
    return PartitionOutcome(
        checks=[check],
        metadata={
            "chips": res.chips,
            "dagster/row_count": res.chips,
            "dim": res.dim,
            "preset": model.preset,
            "model_id": loaded.model_id,
            "checkpoint_sha256": loaded.checkpoint_sha256 or "none (seeded random weights)",
            "device": emb.device if emb else loaded.device,
            "dtype": emb.dtype if emb else "n/a",
            "chips_per_s": round(emb.chips_per_s, 2) if emb else 0.0,
            "patch_tokens": model.patch_tokens,
            "all_finite": res.finite,
            "store": MetadataValue.path(str(res.store)),
            "seconds": round(time.perf_counter() - t0, 3),
        }
    )

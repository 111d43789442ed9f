"""Clay encoder embeddings of every chip: the class token (and optionally patch tokens).

Reads the partition's chip cube lazily batch by batch, normalizes with the platform's band
statistics, encodes time and chip-centre lat/lon, and runs the encoder on CUDA when present
(bf16 autocast) or the CPU (fp32, deterministic). Writes ``embeddings.zarr`` with the class
token [chip, dim] float32 and, when enabled, patch tokens [chip, token, dim] float16.
"""


import time

import numpy as np
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    BackfillPolicy,
    MaterializeResult,
    MetadataValue,
    asset,
)

from clay_assets.partitions import scene_partitions, split_key
from clay_assets.resources import ClayHome, ClayModel
from clay_assets.versions import embeddings_code_version
from clay_core.encoder.engine import embed_chips
from clay_core.encoder.store import write_embeddings
from clay_core.storage.layout import atomic_dir, read_manifest, write_manifest


@asset(
    partitions_def=scene_partitions,
    code_version=embeddings_code_version(),
    group_name="clay",
    deps=["chip_cubes"],
    description=__doc__,
    backfill_policy=BackfillPolicy.multi_run(max_partitions_per_run=1),
    # One encoder at a time per GPU: dagster.yaml gives every pool a default limit of 1.
    pool="gpu",
    check_specs=[AssetCheckSpec("embeddings_finite_with_dim", asset="embeddings", blocking=True,
                                description="every class-token embedding is finite and has the model's dimension")],
)
def embeddings(context: AssetExecutionContext, home: ClayHome, model: ClayModel) -> MaterializeResult:
    t0 = time.perf_counter()
    tile, window = split_key(context.partition_key)
    layout = home.layout
    chips_dir = layout.partition("chips", tile, window)
    man = read_manifest(chips_dir)
    encoder, device, mid, sha = model.load()
    dim = int(encoder.dim)
    n = int(man["chips"])
    final = layout.partition("embeddings", tile, window)
    result = None
    with atomic_dir(final) as tmp:
        if n:
            cube = home.open_cube(tile, window)

            def progress(done: int, total: int) -> None:
                context.log.info(f"{tile} {window}: embedded {done}/{total} chips")

            result = embed_chips(
                encoder,
                cube["pixels"],
                platform=model.platform,
                bands=[str(b) for b in cube["band"].values],
                datetimes=cube["datetime"].values,
                lat=cube["lat"].values,
                lon=cube["lon"].values,
                batch_size=model.batch_size,
                device=device,
                patch_tokens=model.patch_tokens,
                progress=progress,
            )
            write_embeddings(
                tmp / "embeddings.zarr", cube["chip_id"].values, cube["datetime"].values, result.cls, result.patches,
                {"model_id": mid, "preset": model.preset, "device": result.device, "dtype": result.dtype},
            )
        write_manifest(tmp, {"tile": tile, "window": window, "chips": n, "dim": dim, "model_id": mid})
    finite = bool(result is None or np.isfinite(result.cls).all())
    dim_ok = bool(result is None or (result.cls.ndim == 2 and result.cls.shape == (n, dim)))
    check = AssetCheckResult(
        check_name="embeddings_finite_with_dim", passed=finite and dim_ok, severity=AssetCheckSeverity.ERROR,
        metadata={"finite": finite, "expected_dim": dim, "shape": str(None if result is None else result.cls.shape)},
    )
    return MaterializeResult(
        check_results=[check],
        metadata={
            "chips": n,
            "dagster/row_count": n,
            "dim": dim,
            "preset": model.preset,
            "model_id": mid,
            "checkpoint_sha256": sha or "none (seeded random weights)",
            "device": result.device if result else device,
            "dtype": result.dtype if result else "n/a",
            "chips_per_s": round(result.chips_per_s, 2) if result else 0.0,
            "patch_tokens": model.patch_tokens,
            "all_finite": finite,
            "store": MetadataValue.path(str(final / "embeddings.zarr")),
            "seconds": round(time.perf_counter() - t0, 3),
        }
    )

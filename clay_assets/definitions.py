"""The code location: assets, resources (chosen here, in one place), jobs, schedules.

Environment (all optional): ``CLAY_HOME`` (state root, default ./.clay), ``CLAY_TILES``,
``CLAY_START``/``CLAY_END`` (weekly windows), ``CLAY_SOURCE`` (``synthetic``), ``CLAY_PRESET``,
``CLAY_CHECKPOINT``, ``CLAY_DEVICE``, ``CLAY_BATCH_SIZE``, ``CLAY_PATCH_TOKENS``,
``CLAY_CHIP_SIZE``, ``CLAY_SYNTHETIC_SIZE``, ``DATABASE_URL``.
"""

from __future__ import annotations

import os
from pathlib import Path

from dagster import AssetSelection, Definitions, define_asset_job, multiprocess_executor

from clay_assets import settings
from clay_assets.assets.change_scores import change_scores
from clay_assets.assets.chip_cubes import chip_cubes
from clay_assets.assets.embeddings import embeddings
from clay_assets.assets.finetune import FINETUNE_ASSETS, FINETUNE_RESOURCES, head_model, head_predictions
from clay_assets.assets.pca import pca
from clay_assets.assets.raw_scenes import raw_scenes
from clay_assets.assets.vectors import vectors
from clay_assets.automation import incremental_job, new_scenes_sensor, newest_window_schedule
from clay_assets.partitions import scene_partitions
from clay_assets.resources import (
    ChangeSettings,
    ChipSettings,
    ClayHome,
    ClayModel,
    CubeSourceResource,
    LocalRasterSourceResource,
    SceneSourceResource,
    StacSourceResource,
    SyntheticSource,
    VectorDB,
)
from clay_core.errors import ConfigError

ALL_ASSETS = [raw_scenes, chip_cubes, embeddings, pca, change_scores, vectors, *FINETUNE_ASSETS]
PER_SCENE_UPSTREAM = [raw_scenes, chip_cubes, embeddings]
PER_SCENE_DOWNSTREAM = [change_scores, vectors]


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} must be an integer") from None


def scene_source_from_env() -> SceneSourceResource:
    kind = os.environ.get("CLAY_SOURCE", "synthetic").lower()
    if kind == "synthetic":
        return SyntheticSource(
            tiles=settings.tiles(),
            size=_env_int("CLAY_SYNTHETIC_SIZE", 1024),
            epoch=settings.start_date(),
        )
    env = os.environ.get
    if kind == "local":
        if not env("CLAY_SOURCE_ROOT"):
            raise ConfigError("CLAY_SOURCE=local needs CLAY_SOURCE_ROOT (the folder of GeoTIFFs)")
        return LocalRasterSourceResource(root=env("CLAY_SOURCE_ROOT"),
                                         pattern=env("CLAY_SOURCE_PATTERN", "{tile}_{date}_{band}.tif"))
    if kind == "cube":
        tiles = settings.tiles()
        return CubeSourceResource(path=env("CLAY_CUBE_PATH", "nrt:"), tile=tiles[0])
    if kind == "stac":
        max_cloud = env("CLAY_STAC_MAX_CLOUD")
        return StacSourceResource(
            url=env("CLAY_STAC_URL", StacSourceResource.model_fields["url"].default),
            collection=env("CLAY_STAC_COLLECTION") or None,
            platform=env("CLAY_PLATFORM", "sentinel-2-l2a"),
            max_cloud=float(max_cloud) if max_cloud else None,
            s3_endpoint=env("CLAY_S3_ENDPOINT") or None,
            aws_anonymous=env("CLAY_AWS_ANONYMOUS", "1") in ("1", "true", "yes"),
            requester_pays=env("CLAY_REQUESTER_PAYS", "0") in ("1", "true", "yes"),
        )
    raise ConfigError(f"CLAY_SOURCE={kind!r} is not a known scene source; use one of: synthetic, local, cube, stac")


def build_resources(
    home: str | Path | None = None,
    source: SceneSourceResource | None = None,
    chip_size: int | None = None,
    model: ClayModel | None = None,
    database_url: str | None = None,
) -> dict:
    """Resources for the code location and for tests (which pass temp paths and small sizes)."""
    root = str(Path(home).resolve()) if home else str(settings.clay_home())
    return {
        "home": ClayHome(root=root, cubes_uri=os.environ.get("CLAY_CUBES_URI") or None,
                         s3_endpoint=os.environ.get("CLAY_S3_ENDPOINT") or None),
        "source": source or scene_source_from_env(),
        "chip_settings": ChipSettings(chip_size=chip_size or _env_int("CLAY_CHIP_SIZE", 256)),
        "model": model
        or ClayModel(
            preset=os.environ.get("CLAY_PRESET", "tiny"),
            checkpoint=os.environ.get("CLAY_CHECKPOINT") or None,
            device=os.environ.get("CLAY_DEVICE", "auto"),
            batch_size=_env_int("CLAY_BATCH_SIZE", 8),
            patch_tokens=os.environ.get("CLAY_PATCH_TOKENS", "0") in ("1", "true", "yes"),
        ),
        "vectordb": VectorDB(database_url=database_url or os.environ.get("DATABASE_URL") or None,
                             clay_home=root, storage=os.environ.get("CLAY_VECTOR_STORAGE") or None),
        "change_settings": ChangeSettings(),
        **FINETUNE_RESOURCES,
    }


scenes_job = define_asset_job(
    "scenes_to_embeddings", AssetSelection.assets(*PER_SCENE_UPSTREAM), partitions_def=scene_partitions,
    description="Per tile x window: list scenes, chip them, embed the chips.",
)
serving_job = define_asset_job(
    "change_and_vectors", AssetSelection.assets(*PER_SCENE_DOWNSTREAM), partitions_def=scene_partitions,
    description="Per tile x window: change scores and pgvector rows (run after `pca`).",
)
pca_job = define_asset_job("refit_pca", AssetSelection.assets(pca), description="Fit a new PCA basis version.")
finetune_job = define_asset_job("train_head", AssetSelection.assets(head_model),
                                description="Train the task head on every materialized chip partition.")
predictions_job = define_asset_job("predict_with_head", AssetSelection.assets(head_predictions),
                                   partitions_def=scene_partitions,
                                   description="Per tile x window: class maps and clay.class_areas.")

defs = Definitions(
    assets=ALL_ASSETS,
    resources=build_resources(),
    jobs=[scenes_job, serving_job, pca_job, incremental_job, finetune_job, predictions_job],
    sensors=[new_scenes_sensor],
    schedules=[newest_window_schedule],
    # Steps of one run in parallel processes, bounded: a 2-core laptop should not thrash.
    executor=multiprocess_executor.configured({"max_concurrent": _env_int("CLAY_MAX_CONCURRENT", 2)}),
)

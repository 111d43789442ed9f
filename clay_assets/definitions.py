"""The code location: assets, resources (chosen here, once, from ``clay_assets.config``), jobs,
sensors and schedules. Every setting and its environment variable is listed in
``clay_assets.config.SETTINGS`` (and the README's table).
"""

from __future__ import annotations

from dagster import AssetSelection, Definitions, define_asset_job, multiprocess_executor

from clay_assets import config
from clay_core.errors import ConfigError

# Settings first: a bad value fails the load with its one-line message, before any asset
# module is imported (and without a stack of our own modules above it).
try:
    CONFIG = config.current()
except ConfigError as exc:
    raise ConfigError(str(exc)) from None

from clay_assets.assets.change_scores import change_scores  # noqa: E402
from clay_assets.assets.chip_cubes import chip_cubes  # noqa: E402
from clay_assets.assets.detections import detections  # noqa: E402
from clay_assets.assets.embeddings import embeddings  # noqa: E402
from clay_assets.assets.head_model import head_model  # noqa: E402
from clay_assets.assets.head_predictions import head_predictions  # noqa: E402
from clay_assets.assets.pca import pca  # noqa: E402
from clay_assets.assets.raw_scenes import raw_scenes  # noqa: E402
from clay_assets.assets.vectors import vectors  # noqa: E402
from clay_assets.automation import SENSORS, incremental_job, newest_window_schedule  # noqa: E402
from clay_assets.partitions import scene_partitions  # noqa: E402
from clay_assets.resources import SceneSourceResource  # noqa: E402
from clay_assets.resources.build import build_resources, scene_source  # noqa: E402

__all__ = ["defs", "ALL_ASSETS", "PER_SCENE_UPSTREAM", "PER_SCENE_DOWNSTREAM", "build_resources",
           "scene_source_from_env", "pca"]

ALL_ASSETS = [raw_scenes, chip_cubes, embeddings, pca, change_scores, vectors, head_model, head_predictions,
              detections]
PER_SCENE_UPSTREAM = [raw_scenes, chip_cubes, embeddings]
PER_SCENE_DOWNSTREAM = [change_scores, vectors]


def scene_source_from_env() -> SceneSourceResource:
    """The scene source of this process's configuration (``CLAY_SOURCE`` and its settings)."""
    return scene_source(config.current())


# Every process that loads the code location (run workers too) sees the same sensor registry.
config.configure_process(CONFIG)

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
detections_job = define_asset_job("score_detections", AssetSelection.assets(detections),
                                  partitions_def=scene_partitions,
                                  description="Per tile x window: linear-probe scores per label set in clay.detections.")

defs = Definitions(
    assets=ALL_ASSETS,
    resources=build_resources(cfg=CONFIG),
    jobs=[scenes_job, serving_job, pca_job, incremental_job, finetune_job, predictions_job, detections_job],
    sensors=SENSORS,  # new_scenes_sensor, tiles_sensor (registers the configured tiles)
    schedules=[newest_window_schedule],
    # Steps of one run in parallel processes, bounded: a 2-core laptop should not thrash.
    executor=multiprocess_executor.configured({"max_concurrent": CONFIG.max_concurrent}),
)

"""Resources: chosen once, in ``clay_assets.definitions``, from ``clay_assets.config``."""

from clay_assets.resources.change import ChangeSettings
from clay_assets.resources.heads import LabelSettings
from clay_assets.resources.model import ClayModel
from clay_assets.resources.sources import (
    CubeSourceResource,
    LocalRasterSourceResource,
    SceneSourceResource,
    StacSourceResource,
    SyntheticSource,
)
from clay_assets.resources.storage import ChipSettings, ClayHome
from clay_assets.resources.vectordb import VectorDB

__all__ = [
    "ChangeSettings", "ChipSettings", "ClayHome", "ClayModel", "CubeSourceResource", "LabelSettings",
    "LocalRasterSourceResource",
    "SceneSourceResource", "StacSourceResource", "SyntheticSource", "VectorDB",
]

"""Resources chosen once, from :class:`clay_assets.config.ClayConfig`.

The code location calls :func:`build_resources` with the environment's configuration; tests
call it with temp homes, small sources and a test database. Secrets stay ``EnvVar``
references so Dagster never records them as literals.
"""

from __future__ import annotations

from pathlib import Path

from dagster import EnvVar

from clay_assets.config import ClayConfig, current
from clay_assets.resources.change import ChangeSettings
from clay_assets.resources.heads import heads_resources
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

__all__ = ["build_resources", "scene_source", "vector_db"]


def scene_source(cfg: ClayConfig) -> SceneSourceResource:
    """The scene source ``CLAY_SOURCE`` names, with its settings."""
    if cfg.source == "synthetic":
        return SyntheticSource(tiles=list(cfg.tiles), size=cfg.synthetic_size, epoch=cfg.start)
    if cfg.source == "local":
        qa = cfg.source_qa_band
        # unset: the QA band where a scene has one ("auto"); none/off: nodata-only screening
        qa_band = "auto" if qa is None else None if qa.lower() in ("none", "off", "0") else qa
        return LocalRasterSourceResource(root=cfg.source_root, pattern=cfg.source_pattern, platform=cfg.platform,
                                         qa_band=qa_band, band_names=list(cfg.source_bands) or None)
    if cfg.source == "cube":
        # config checked at load that the cube lies in this tile (CLAY_TILES unset: the cube's own)
        return CubeSourceResource(path=cfg.cube_path, tile=cfg.tiles[0])
    return StacSourceResource(
        url=cfg.stac_url, collection=cfg.stac_collection, platform=cfg.platform, max_cloud=cfg.stac_max_cloud,
        s3_endpoint=cfg.s3_endpoint, aws_anonymous=cfg.aws_anonymous, requester_pays=cfg.requester_pays,
    )


def vector_db(cfg: ClayConfig, home: Path, database_url: str | None = None) -> VectorDB:
    """Postgres: ``database_url`` (tests), else ``DATABASE_URL`` as an ``EnvVar``, else embedded."""
    url = database_url or (EnvVar("DATABASE_URL") if cfg.has_database_url else None)
    return VectorDB(database_url=url, clay_home=str(home), storage=cfg.vector_storage,
                    embedded_flavour=cfg.embedded_pg)


def build_resources(
    home: str | Path | None = None,
    source: SceneSourceResource | None = None,
    chip_size: int | None = None,
    model: ClayModel | None = None,
    database_url: str | None = None,
    cfg: ClayConfig | None = None,
) -> dict:
    """Every resource of the code location; arguments override the configuration (tests)."""
    cfg = cfg or current()
    root = Path(home).resolve() if home else cfg.home
    return {
        "home": ClayHome(root=str(root), cubes_uri=cfg.cubes_uri, s3_endpoint=cfg.s3_endpoint),
        "source": source or scene_source(cfg),
        "chip_settings": ChipSettings(chip_size=chip_size or cfg.chip_size, dask_scheduler=cfg.dask_scheduler),
        "model": model or ClayModel(preset=cfg.preset, checkpoint=cfg.checkpoint, device=cfg.device,
                                    batch_size=cfg.batch_size, patch_tokens=cfg.patch_tokens,
                                    dask_scheduler=cfg.dask_scheduler),
        "vectordb": vector_db(cfg, root, database_url),
        "change_settings": ChangeSettings(),
        **heads_resources(cfg),
    }

"""Building blocks for tests that materialize the real asset graph on temp state."""

from __future__ import annotations

from pathlib import Path

from clay_assets.definitions import build_resources
from clay_assets.resources import ClayModel, SyntheticSource

TILES = ["31UFU", "32UNB"]
WINDOWS = ["2024-01-01", "2024-01-08", "2024-01-15", "2024-01-22", "2024-01-29", "2024-02-05"]
CHIP = 64


def small_source(**kw) -> SyntheticSource:
    args = dict(tiles=TILES, size=256, seed=0, epoch="2024-01-01", clearings_per_tile=3, change_at=[4, 5])
    args.update(kw)
    return SyntheticSource(**args)


def small_resources(home: Path, pg_url: str, source: SyntheticSource | None = None, chip_size: int = CHIP, **model_kw) -> dict:
    model = ClayModel(preset="tiny", device="cpu", batch_size=8, **model_kw)
    return build_resources(home=home, source=source or small_source(), chip_size=chip_size, model=model,
                           database_url=pg_url)


class _Damaged:
    """Wraps a synthetic source: ``corrupt`` raises like a truncated raster, ``nodata`` returns an
    all-nodata scene (SCL 0, pixels 0)."""

    def __init__(self, inner, mode: str):
        self.inner, self.mode = inner, mode
        self.platform = inner.platform

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def load_scene(self, ref, bands):
        from clay_core.errors import SceneError

        scene = self.inner.load_scene(ref, bands)
        if self.mode == "corrupt":
            raise SceneError(f"scene {ref.scene_id}: band file is truncated (TIFFReadEncodedTile failed)")
        scene.data[:] = 0
        scene.qa[:] = 0
        return scene


class DamagedSource(SyntheticSource):
    mode: str = "corrupt"

    def build(self):
        return _Damaged(super().build(), self.mode)

"""Deterministic Sentinel-2-L2A-like scenes with planted changes, for demos and tests.

Each tile gets a fixed land-cover map (forest, cropland, water, bare soil) on the upper-left
``size`` x ``size`` pixels of its real UTM grid. Every ``revisit_days`` there is an
acquisition whose reflectances follow a seasonal vegetation cycle, with per-date noise,
clouds (SCL 8/9, with shadows SCL 3) on some dates, and forest clearings that appear at
known acquisitions in known blocks. ``planted_changes`` lists them so that the demo and
tests can score detection against the truth.

Everything is a pure function of (seed, tile, date): two processes produce identical
pixels, so re-materializing a partition reproduces it exactly.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

import numpy as np

from clay_core.errors import ConfigError, SceneError, UnknownTileError
from clay_core.sources.base import SceneSource
from clay_core.tiles import parse_tile, s2_tile_grid, subgrid
from clay_core.types import Scene, SceneRef, TileGrid

BANDS = ["blue", "green", "red", "nir"]

# Land-cover classes of the synthetic world; also the labels the fine-tuning heads learn.
FOREST, CROP, WATER, BARE, CLEARED = 0, 1, 2, 3, 4
CLASS_NAMES = ["forest", "cropland", "water", "bare", "cleared"]

# Surface reflectance x 10000 (blue, green, red, nir) at the seasonal mean, and the
# seasonal amplitude (vegetation greens up in summer: red down, nir up).
_SPECTRA = {
    FOREST: ([350, 600, 400, 2900], [-40, 60, -120, 700]),
    CROP: ([600, 900, 900, 2300], [-150, 150, -450, 1300]),
    WATER: ([700, 600, 350, 150], [0, 0, 0, 0]),
    BARE: ([1300, 1600, 1900, 2400], [0, 0, 0, 0]),
    CLEARED: ([1150, 1450, 1750, 2050], [0, 20, -30, 60]),
}
_SCL_OF_CLASS = {FOREST: 4, CROP: 4, WATER: 6, BARE: 5, CLEARED: 5}
SCL_CLOUD_MED, SCL_CLOUD_HIGH, SCL_SHADOW, SCL_NODATA = 8, 9, 3, 0


@dataclass(frozen=True)
class PlantedChange:
    """A forest clearing that first shows on ``acquired`` in pixel rows/cols [r0:r1, c0:c1]."""

    tile: str
    acquired: date
    row0: int
    col0: int
    row1: int
    col1: int
    kind: str = "clearing"

    def chip_fraction(self, row: int, col: int, chip_size: int) -> float:
        """Fraction of chip (row, col) that the clearing covers."""
        r0, c0 = row * chip_size, col * chip_size
        dr = max(0, min(self.row1, r0 + chip_size) - max(self.row0, r0))
        dc = max(0, min(self.col1, c0 + chip_size) - max(self.col0, c0))
        return dr * dc / float(chip_size * chip_size)


def _rng(*parts: object) -> np.random.Generator:
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _smooth_field(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """A smooth random field in [0, 1]: bilinear upsampling of a coarse random grid."""
    coarse = rng.random((cells + 1, cells + 1))
    pos = np.linspace(0, cells, size, endpoint=False)
    i = pos.astype(int)
    f = pos - i
    a = coarse[i][:, i] * (1 - f)[None, :] + coarse[i][:, i + 1] * f[None, :]
    b = coarse[i + 1][:, i] * (1 - f)[None, :] + coarse[i + 1][:, i + 1] * f[None, :]
    return a * (1 - f)[:, None] + b * f[:, None]


@dataclass
class SyntheticWorld:
    """Parameters of the synthetic scene generator (see the module docstring)."""

    tiles: tuple[str, ...] = ("31UFU", "32UNB")
    size: int = 1024
    seed: int = 0
    epoch: date = date(2024, 1, 1)
    revisit_days: int = 7
    blocks: int = 4
    cloud_every: int = 5
    clearings_per_tile: int = 2
    change_at: tuple[int, ...] = (4, 5)
    outages: tuple[date, ...] = ()
    noise: float = 0.03
    # Acquisitions on or after ``until`` do not exist yet: stands in for "now", so tests can
    # make a new acquisition appear.
    until: date | None = None

    def __post_init__(self) -> None:
        if self.size % self.blocks:
            raise ConfigError(f"synthetic size {self.size} must be a multiple of blocks={self.blocks}")
        if self.revisit_days < 1:
            raise ConfigError("synthetic revisit_days must be >= 1")
        for t in self.tiles:
            parse_tile(t)

    @property
    def block(self) -> int:
        return self.size // self.blocks

    def acquisition_dates(self, tile: str, start: date, end: date) -> list[datetime]:
        """Acquisition times in [start, end): every revisit_days from the epoch, 10:30 UTC."""
        first = max(0, -(-(start - self.epoch).days // self.revisit_days))
        out = []
        n = first
        while True:
            d = self.epoch + timedelta(days=n * self.revisit_days)
            if d >= end or (self.until is not None and d >= self.until):
                break
            if d >= start and d not in self.outages:
                out.append(datetime(d.year, d.month, d.day, 10, 30, tzinfo=timezone.utc))
            n += 1
        return out

    def acquisition_index(self, day: date) -> int:
        return (day - self.epoch).days // self.revisit_days

    def landcover(self, tile: str) -> np.ndarray:
        """Fixed land cover [size, size] before any clearing: mostly forest, blocks of other classes."""
        rng = _rng(self.seed, tile, "landcover")
        b = self.block
        per_block = rng.choice([FOREST, FOREST, FOREST, CROP, CROP, WATER, BARE], size=(self.blocks, self.blocks))
        # Keep forest blocks for the clearings to happen in.
        for r, c in self._clearing_blocks(tile):
            per_block[r, c] = FOREST
        lc = np.kron(per_block, np.ones((b, b), dtype=np.int64)).astype(np.uint8)
        # Irregular patches inside blocks so chips are not perfectly uniform.
        blob = _smooth_field(rng, self.size, max(2, self.size // 48)) > 0.8
        lc[blob & (lc == FOREST)] = CROP
        return lc

    def _clearing_blocks(self, tile: str) -> list[tuple[int, int]]:
        rng = _rng(self.seed, tile, "clearings")
        cells = [(r, c) for r in range(self.blocks) for c in range(self.blocks)]
        picks = rng.choice(len(cells), size=min(self.clearings_per_tile, len(cells)), replace=False)
        return [cells[i] for i in sorted(picks)]

    def planted(self, tile: str) -> list[PlantedChange]:
        out = []
        b = self.block
        for i, (r, c) in enumerate(self._clearing_blocks(tile)):
            idx = self.change_at[i % len(self.change_at)]
            day = self.epoch + timedelta(days=idx * self.revisit_days)
            out.append(PlantedChange(tile, day, r * b, c * b, (r + 1) * b, (c + 1) * b))
        return out

    def render(self, tile: str, when: datetime) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(data [4, size, size] uint16, scl [size, size] uint8, landcover labels) for one acquisition."""
        day = when.date()
        lc = self.landcover(tile).copy()
        for ch in self.planted(tile):
            if day >= ch.acquired:
                lc[ch.row0 : ch.row1, ch.col0 : ch.col1] = CLEARED
        phase = np.sin(2 * np.pi * (day.timetuple().tm_yday - 110) / 365.25)
        texture = _smooth_field(_rng(self.seed, tile, "texture"), self.size, self.size // 16)
        rng = _rng(self.seed, tile, day.isoformat(), "noise")
        data = np.empty((len(BANDS), self.size, self.size), dtype=np.float32)
        for cls, (mean, amp) in _SPECTRA.items():
            mask = lc == cls
            if not mask.any():
                continue
            for bi in range(len(BANDS)):
                data[bi][mask] = mean[bi] + amp[bi] * phase
        data *= (0.85 + 0.3 * texture)[None]
        data *= 1.0 + self.noise * rng.standard_normal(data.shape, dtype=np.float32)
        scl = np.vectorize(_SCL_OF_CLASS.get, otypes=[np.uint8])(lc)

        n = self.acquisition_index(day)
        if self.cloud_every and n % self.cloud_every == 2:
            cloud = _smooth_field(_rng(self.seed, tile, day.isoformat(), "cloud"), self.size, 4)
            thick = cloud > 0.55
            data[:, thick] = (6500 + 800 * cloud[thick])[None]
            scl[thick] = np.where(cloud[thick] > 0.7, SCL_CLOUD_HIGH, SCL_CLOUD_MED)
            shadow = np.roll(thick, (self.size // 32, self.size // 32), axis=(0, 1)) & ~thick
            data[:, shadow] *= 0.35
            scl[shadow] = SCL_SHADOW
        data = np.clip(data, 1, 10000).astype(np.uint16)
        return data, scl, lc


class SyntheticSceneSource(SceneSource):
    """Scene source over a :class:`SyntheticWorld` (offline default of the platform)."""

    platform = "sentinel-2-l2a"

    def __init__(self, world: SyntheticWorld | None = None) -> None:
        self.world = world or SyntheticWorld()

    def _check(self, tile: str) -> str:
        parse_tile(tile)
        tile = tile.strip().upper()
        if tile not in self.world.tiles:
            raise UnknownTileError(
                f"unknown tile {tile!r}: the synthetic source serves {list(self.world.tiles)}; "
                "add it to the configured tiles (CLAY_TILES) or use another scene source"
            )
        return tile

    def grid(self, tile: str) -> TileGrid:
        tile = self._check(tile)
        return subgrid(s2_tile_grid(tile), self.world.size, self.world.size)

    def list_scenes(self, tile: str, start: datetime, end: datetime) -> list[SceneRef]:
        tile = self._check(tile)
        return [
            SceneRef(
                scene_id=f"SYN_{tile}_{t:%Y%m%dT%H%M%S}",
                tile=tile,
                platform=self.platform,
                datetime=t,
                hrefs={"synthetic": f"synthetic://{tile}/{t:%Y-%m-%d}?seed={self.world.seed}"},
                cloud_cover=None,
            )
            for t in self.world.acquisition_dates(tile, start.date(), end.date())
        ]

    def load_scene(self, ref: SceneRef, bands: list[str]) -> Scene:
        tile = self._check(ref.tile)
        missing = [b for b in bands if b not in BANDS]
        if missing:
            raise SceneError(
                f"scene {ref.scene_id}: band(s) {missing} not available; the synthetic source has {BANDS}"
            )
        data, scl, _ = self.world.render(tile, ref.datetime)
        idx = [BANDS.index(b) for b in bands]
        return Scene(ref=ref, grid=self.grid(tile), bands=list(bands), data=data[idx], qa=scl)

    def labels(self, tile: str, when: datetime) -> np.ndarray:
        """Land-cover labels (see CLASS_NAMES) of the acquisition at ``when``."""
        return self.world.render(self._check(tile), when)[2]

    def planted_changes(self, tiles: list[str] | None = None) -> list[PlantedChange]:
        return [c for t in (tiles or self.world.tiles) for c in self.world.planted(self._check(t))]

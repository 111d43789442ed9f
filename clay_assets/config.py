"""Every setting the platform reads from the environment, in one place.

This module is the only reader of ``CLAY_*``, ``DATABASE_URL``, ``DAGSTER_HOME`` and
``DASK_SCHEDULER_ADDRESS``: ``clay_core`` takes explicit parameters and the resources take
their values from :class:`ClayConfig`. Each variable is declared once in :data:`SETTINGS`
with its default and a one-line doc; the README's variable table is checked against it by a
test. Values are parsed and validated when the code location loads, and an error names the
variable, its value and the fix.

Secrets (``DATABASE_URL``) reach Dagster as ``EnvVar`` references, never as literals, so they
are not recorded in run or resource snapshots.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from clay_core.errors import ConfigError
from clay_core.tiles import parse_tile

__all__ = ["Setting", "SETTINGS", "ClayConfig", "load", "current", "configure_process", "dagster_home", "override",
           "TRUE_VALUES"]

TRUE_VALUES = ("1", "true", "yes", "on")
FALSE_VALUES = ("0", "false", "no", "off", "")


@dataclass(frozen=True)
class Setting:
    """One environment variable: its name, default (``None``: unset) and what it does."""

    name: str
    default: str | None
    doc: str
    secret: bool = False


_DECLARED = [
    # where state lives
    Setting("CLAY_HOME", ".clay", "root of all state: Dagster home, data, embedded Postgres"),
    Setting("DAGSTER_HOME", None, "Dagster's instance folder (default `$CLAY_HOME/dagster`)"),
    # what to process
    Setting("CLAY_TILES", "31UFU,32UNB", "MGRS tiles, comma-separated (validated at load)"),
    Setting("CLAY_AREA", None, "an area: a GeoJSON file or `west,south,east,north` (degrees); adds its MGRS tiles"),
    Setting("CLAY_START", "2024-01-01", "first weekly window (a Monday)"),
    Setting("CLAY_END", None, "end of the weekly partitions (default: open)"),
    # where scenes come from
    Setting("CLAY_SOURCE", "synthetic", "scene source: `synthetic`, `stac`, `local` or `cube`"),
    Setting("CLAY_SYNTHETIC_SIZE", "1024", "synthetic scenes' size in pixels"),
    Setting("CLAY_SOURCE_ROOT", None, "`local`: the folder of GeoTIFF/COG files"),
    Setting("CLAY_SOURCE_PATTERN", "{tile}_{date}_{band}.tif", "`local`: file-name pattern under the root"),
    Setting("CLAY_SOURCE_BANDS", None, "`local`: band names of multi-band files, in file order"),
    Setting("CLAY_SOURCE_QA_BAND", None, "`local`: QA band (`scl`, `qa_pixel`), `none`; unset: used where present"),
    Setting("CLAY_CUBE_PATH", "nrt:", "`cube`: a NetCDF/Zarr cube; `nrt:` is the real Sentinel-2 cube of `nrt==0.2.1`"),
    Setting("CLAY_STAC_URL", "https://earth-search.aws.element84.com/v1", "`stac`: STAC API or static catalogue"),
    Setting("CLAY_STAC_COLLECTION", None, "`stac`: collection (default: the platform's)"),
    Setting("CLAY_STAC_MAX_CLOUD", None, "`stac`: skip scenes above this cloud cover (%)"),
    Setting("CLAY_PLATFORM", "sentinel-2-l2a", "`stac`, `local`: sensor platform of the scenes"),
    Setting("CLAY_PLATFORMS_FILE", None, "YAML adding or overriding sensor platforms (bands, wavelengths, mean/std, gsd)"),
    Setting("CLAY_S3_ENDPOINT", None, "S3-compatible endpoint for COG reads and `CLAY_CUBES_URI`"),
    Setting("CLAY_AWS_ANONYMOUS", "1", "read public buckets unsigned"),
    Setting("CLAY_REQUESTER_PAYS", "0", "requester-pays buckets"),
    # chips and cubes
    Setting("CLAY_CHIP_SIZE", "256", "chip size in pixels, a multiple of 8"),
    Setting("CLAY_CUBES_URI", None, "`s3://bucket/prefix`: write chip cubes to object storage"),
    # the encoder
    Setting("CLAY_PRESET", "tiny", "encoder size: `tiny`, `small`, `base`, `large`"),
    Setting("CLAY_CHECKPOINT", None, "a local Clay checkpoint; without one the preset gets seeded random weights"),
    Setting("CLAY_DEVICE", "auto", "`auto` (CUDA when present), `cuda` or `cpu`"),
    Setting("CLAY_BATCH_SIZE", "8", "encoder batch size"),
    Setting("CLAY_PATCH_TOKENS", "0", "also store patch tokens"),
    Setting("DASK_SCHEDULER_ADDRESS", None, "a running Dask scheduler (`tcp://host:port`): chipping and embedding "
            "fan out to its workers"),
    # serving
    Setting("DATABASE_URL", None, "an external Postgres with pgvector instead of the embedded one", secret=True),
    # No default value: unset keeps the flavour an existing data dir was created with.
    Setting("CLAY_EMBEDDED_PG", None, "embedded server: `pixeltable` (pgvector 0.8.5) or `pgserver` (0.6.2); "
            "unset: `pixeltable`, upgrading a stopped `pgserver` data dir in place"),
    Setting("CLAY_VECTOR_STORAGE", None, "`vector` (float32) or `halfvec` (float16); unset keeps the table's "
            "(a new one: `halfvec` on pgvector >= 0.7)"),
    # execution
    Setting("CLAY_MAX_CONCURRENT", "2", "steps of one run in parallel processes"),
    Setting("CLAY_PARTITIONS_PER_RUN", "13", "tile x window partitions per backfill run (1: one run per partition)"),
    Setting("CLAY_DAGSTER_PG_URL", None, "Dagster's own storage in Postgres (read by `dagster.yaml`, see `deploy/`)",
            secret=True),
    # fine-tuning labels
    Setting("CLAY_LABELS", "synthetic", "label source: `synthetic`, `raster` or `table`"),
    Setting("CLAY_LABELS_PATH", None, "`raster`/`table`: the label file (may contain `{tile}`, `{date}`)"),
    Setting("CLAY_LABEL_CLASSES", None, "class names, comma-separated, for raster values / table indices"),
    Setting("CLAY_LABELS_VALUES", "0", "`raster`: continuous values (a regression target)"),
]
SETTINGS: dict[str, Setting] = {s.name: s for s in _DECLARED}


class _Reader:
    """Typed reads of the declared variables; every error names the variable."""

    def __init__(self, environ: Mapping[str, str]):
        self.environ = environ

    def text(self, name: str) -> str | None:
        raw = self.environ.get(name)
        value = raw.strip() if raw is not None else None
        return value if value else SETTINGS[name].default

    def integer(self, name: str, minimum: int | None = None) -> int:
        raw = self.text(name)
        try:
            value = int(raw)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise ConfigError(f"{name}={raw!r} must be an integer; unset it for the default "
                              f"{SETTINGS[name].default}") from None
        if minimum is not None and value < minimum:
            raise ConfigError(f"{name}={value} must be >= {minimum}")
        return value

    def number(self, name: str) -> float | None:
        raw = self.text(name)
        if raw is None:
            return None
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(f"{name}={raw!r} must be a number") from None

    def flag(self, name: str) -> bool:
        raw = (self.text(name) or "").lower()
        if raw in TRUE_VALUES:
            return True
        if raw in FALSE_VALUES:
            return False
        raise ConfigError(f"{name}={raw!r} must be 1/true/yes or 0/false/no")

    def day(self, name: str) -> str | None:
        raw = self.text(name)
        if raw is None:
            return None
        try:
            date.fromisoformat(raw)
        except ValueError:
            raise ConfigError(f"{name}={raw!r} is not a date; use YYYY-MM-DD") from None
        return raw

    def given(self, name: str) -> bool:
        """Whether the variable is set (non-empty), rather than left at its default."""
        return bool((self.environ.get(name) or "").strip())

    def names(self, name: str) -> tuple[str, ...]:
        return tuple(v.strip() for v in (self.text(name) or "").split(",") if v.strip())


def _tiles(r: _Reader) -> tuple[str, ...]:
    """``CLAY_TILES`` plus the tiles of ``CLAY_AREA``; with neither set, the ``CLAY_TILES``
    default. A cube source is one tile: the MGRS tile of its footprint (see :func:`_cube_tile`)."""
    from clay_core.areas import tiles_for_area

    tiles = [t.upper() for t in r.names("CLAY_TILES")] if r.given("CLAY_TILES") else []
    if r.given("CLAY_AREA"):
        try:
            tiles += [t for t in tiles_for_area(r.text("CLAY_AREA")) if t not in tiles]
        except ConfigError as exc:
            raise ConfigError(f"CLAY_AREA: {exc}") from None
    if (r.text("CLAY_SOURCE") or "").lower() == "cube":
        return _cube_tile(r, tiles)
    return tuple(tiles) or tuple(t.upper() for t in r.names("CLAY_TILES"))


def _cube_tile(r: _Reader, asked: list[str]) -> tuple[str, ...]:
    """The cube's own tile when nothing or a list holding it is asked for; a single other tile
    only if its Sentinel-2 extent holds the cube (the overlap strip); anything else refused."""
    from clay_core.sources.cube import CubeSource

    path = r.text("CLAY_CUBE_PATH")
    try:
        own = CubeSource(path).tile  # type: ignore[arg-type]
        if not asked or own in asked:
            return (own,)
        if len(asked) == 1:
            CubeSource(path, tile=asked[0]).grid(asked[0])  # type: ignore[arg-type]
            return (asked[0],)
    except Exception as exc:  # noqa: BLE001 - re-raised naming the variables
        raise ConfigError(f"CLAY_SOURCE=cube, CLAY_CUBE_PATH={path!r}: {exc}") from None
    raise ConfigError(f"CLAY_SOURCE=cube: the cube {path!r} is tile {own}, not any of {','.join(asked)} "
                      f"(CLAY_TILES / CLAY_AREA); set CLAY_TILES={own} or leave CLAY_TILES unset")


def _cube_dates(r: _Reader) -> tuple[str, str | None] | None:
    """A cube source's windows when ``CLAY_START`` / ``CLAY_END`` are unset: from the week of
    its first acquisition to the end of the week of its last (the nrt cube: 2015-07-27 to
    2021-01-04), so its partitions are the weeks it has data for, not 2024 to today."""
    if (r.text("CLAY_SOURCE") or "").lower() != "cube" or (r.given("CLAY_START") and r.given("CLAY_END")):
        return None
    from datetime import timedelta

    from clay_core.sources.cube import CubeSource
    from clay_core.types import window_start

    first, last = CubeSource(r.text("CLAY_CUBE_PATH")).time_range()  # type: ignore[arg-type]
    end = (date.fromisoformat(window_start(last)) + timedelta(days=7)).isoformat()
    return (r.day("CLAY_START") if r.given("CLAY_START") else window_start(first),
            r.day("CLAY_END") if r.given("CLAY_END") else end)


@dataclass(frozen=True)
class ClayConfig:
    """The platform's settings, read and validated once (see :data:`SETTINGS`)."""

    home: Path
    dagster_home: Path
    tiles: tuple[str, ...]
    start: str
    end: str | None
    source: str
    synthetic_size: int
    source_root: str | None
    source_pattern: str
    cube_path: str
    stac_url: str
    stac_collection: str | None
    stac_max_cloud: float | None
    platform: str
    platforms_file: str | None
    s3_endpoint: str | None
    aws_anonymous: bool
    requester_pays: bool
    chip_size: int
    cubes_uri: str | None
    preset: str
    checkpoint: str | None
    device: str
    batch_size: int
    patch_tokens: bool
    dask_scheduler: str | None
    # repr=False: the URL carries a password and a config object ends up in logs and tracebacks
    database_url: str | None = field(repr=False)
    embedded_pg: str | None
    vector_storage: str | None
    max_concurrent: int
    labels: str
    labels_path: str | None
    label_classes: tuple[str, ...]
    labels_values: bool
    area: str | None = None
    source_bands: tuple[str, ...] = ()
    partitions_per_run: int = 13
    source_qa_band: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ClayConfig:
        r = _Reader(os.environ if environ is None else environ)
        home = Path(r.text("CLAY_HOME")).expanduser().resolve()  # type: ignore[arg-type]
        dagster = r.text("DAGSTER_HOME")
        tiles = _tiles(r)
        if not tiles:
            raise ConfigError("CLAY_TILES is empty; give MGRS tiles, e.g. CLAY_TILES=31UFU,32UNB")
        for t in tiles:
            try:
                parse_tile(t)
            except Exception as exc:  # noqa: BLE001 - re-raised naming the variable
                raise ConfigError(f"CLAY_TILES: {exc}") from None
        source = (r.text("CLAY_SOURCE") or "").lower()
        if source not in ("synthetic", "local", "cube", "stac"):
            raise ConfigError(f"CLAY_SOURCE={source!r} is not a known scene source; "
                              "use one of: synthetic, local, cube, stac")
        if source == "local" and not r.text("CLAY_SOURCE_ROOT"):
            raise ConfigError("CLAY_SOURCE=local needs CLAY_SOURCE_ROOT (the folder of GeoTIFFs)")
        cube_dates = _cube_dates(r)
        cfg = cls(
            home=home,
            dagster_home=Path(dagster).expanduser().resolve() if dagster else home / "dagster",
            tiles=tiles,
            start=cube_dates[0] if cube_dates else r.day("CLAY_START"),  # type: ignore[arg-type]
            end=cube_dates[1] if cube_dates else r.day("CLAY_END"),
            source=source,
            synthetic_size=r.integer("CLAY_SYNTHETIC_SIZE", minimum=1),
            source_root=r.text("CLAY_SOURCE_ROOT"),
            source_pattern=r.text("CLAY_SOURCE_PATTERN"),  # type: ignore[arg-type]
            cube_path=r.text("CLAY_CUBE_PATH"),  # type: ignore[arg-type]
            stac_url=r.text("CLAY_STAC_URL"),  # type: ignore[arg-type]
            stac_collection=r.text("CLAY_STAC_COLLECTION"),
            stac_max_cloud=r.number("CLAY_STAC_MAX_CLOUD"),
            platform=r.text("CLAY_PLATFORM"),  # type: ignore[arg-type]
            platforms_file=r.text("CLAY_PLATFORMS_FILE"),
            s3_endpoint=r.text("CLAY_S3_ENDPOINT"),
            aws_anonymous=r.flag("CLAY_AWS_ANONYMOUS"),
            requester_pays=r.flag("CLAY_REQUESTER_PAYS"),
            chip_size=r.integer("CLAY_CHIP_SIZE"),
            cubes_uri=r.text("CLAY_CUBES_URI"),
            preset=r.text("CLAY_PRESET"),  # type: ignore[arg-type]
            checkpoint=r.text("CLAY_CHECKPOINT"),
            device=r.text("CLAY_DEVICE"),  # type: ignore[arg-type]
            batch_size=r.integer("CLAY_BATCH_SIZE", minimum=1),
            patch_tokens=r.flag("CLAY_PATCH_TOKENS"),
            dask_scheduler=r.text("DASK_SCHEDULER_ADDRESS"),
            database_url=r.text("DATABASE_URL"),
            embedded_pg=r.text("CLAY_EMBEDDED_PG"),
            vector_storage=r.text("CLAY_VECTOR_STORAGE"),
            max_concurrent=r.integer("CLAY_MAX_CONCURRENT", minimum=1),
            partitions_per_run=r.integer("CLAY_PARTITIONS_PER_RUN", minimum=1),
            labels=r.text("CLAY_LABELS"),  # type: ignore[arg-type]
            labels_path=r.text("CLAY_LABELS_PATH"),
            label_classes=r.names("CLAY_LABEL_CLASSES"),
            labels_values=r.flag("CLAY_LABELS_VALUES"),
            area=r.text("CLAY_AREA"),
            source_bands=r.names("CLAY_SOURCE_BANDS"),
            source_qa_band=r.text("CLAY_SOURCE_QA_BAND"),
        )
        cfg.check()
        return cfg

    def check(self) -> None:
        """Refuse values that would only fail mid-run, naming the variable and the fix."""
        from clay_core.encoder.model import PRESETS
        from clay_core.vectordb.migrations import STORAGES
        from clay_core.vectordb.server import EMBEDDED_FLAVOURS

        if self.chip_size <= 0 or self.chip_size % 8:
            raise ConfigError(f"CLAY_CHIP_SIZE={self.chip_size} must be a positive multiple of 8 (the Clay patch "
                              "size), e.g. 256")
        choices = {"CLAY_PRESET": (self.preset, tuple(PRESETS)),
                   "CLAY_VECTOR_STORAGE": (self.vector_storage, STORAGES),
                   "CLAY_EMBEDDED_PG": (self.embedded_pg, EMBEDDED_FLAVOURS),
                   "CLAY_LABELS": (self.labels, ("synthetic", "raster", "table"))}
        for name, (value, allowed) in choices.items():
            if value is not None and value not in allowed:
                raise ConfigError(f"{name}={value!r} is not one of {', '.join(allowed)}")
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            raise ConfigError(f"CLAY_DEVICE={self.device!r} must be auto, cpu, cuda or cuda:N")
        if self.checkpoint and not Path(self.checkpoint).expanduser().is_file():
            raise ConfigError(f"CLAY_CHECKPOINT={self.checkpoint!r} is not a file; give the path of a downloaded "
                              "Clay checkpoint, or unset it for seeded random weights")
        if self.dask_scheduler:
            from clay_core.dask_cluster import check_address

            check_address(self.dask_scheduler)
        if self.labels in ("raster", "table") and not self.labels_path:
            raise ConfigError(f"CLAY_LABELS={self.labels} needs CLAY_LABELS_PATH (the label file)")

    @property
    def has_database_url(self) -> bool:
        return self.database_url is not None


def load(environ: Mapping[str, str] | None = None) -> ClayConfig:
    """The settings of this process's environment (or of ``environ``), validated."""
    return ClayConfig.from_env(environ)


_cache: dict[tuple, ClayConfig] = {}


def current() -> ClayConfig:
    """:func:`load` of this process's environment, parsed once per distinct set of values.

    Module-level definitions (partitions, code versions) and ``build_resources`` all ask for
    it; a test that changes a variable gets the new values on its next call.
    """
    key = tuple(os.environ.get(name) for name in SETTINGS)
    if key not in _cache:
        _cache.clear()
        _cache[key] = load()
    return _cache[key]


def override(values: Mapping[str, str]) -> ClayConfig:
    """Set declared variables for this process and return the resulting :func:`current`.

    For commands that choose their own settings (``clay-assets demo --real``) before the code
    location loads: partitions are fixed at import, so this must run before that.
    """
    unknown = sorted(set(values) - set(SETTINGS))
    if unknown:
        raise ConfigError(f"not platform settings: {', '.join(unknown)}")
    os.environ.update({k: str(v) for k, v in values.items()})
    return current()


def configure_process(cfg: ClayConfig) -> None:
    """Apply the process-wide parts of the configuration (the sensor registry's user file).

    Called where the code location loads, so every run worker process does it too.
    """
    from clay_core.platforms import configure_platforms

    try:
        configure_platforms(cfg.platforms_file)
    except ConfigError as exc:
        raise ConfigError(f"CLAY_PLATFORMS_FILE={cfg.platforms_file!r}: {exc}") from None


def dagster_home(cfg: ClayConfig, project_root: Path | None = None) -> Path:
    """Create ``cfg.dagster_home`` with the project's ``dagster.yaml`` and point Dagster at it.

    Dagster finds its instance through ``DAGSTER_HOME`` only, and needs an absolute path that
    exists; the CLI sets it for its own process so `dagster dev` later sees the same runs.
    """
    dh = cfg.dagster_home
    dh.mkdir(parents=True, exist_ok=True)
    yaml = (project_root or Path(__file__).resolve().parent.parent) / "dagster.yaml"
    if yaml.is_file() and not (dh / "dagster.yaml").exists():
        shutil.copy(yaml, dh / "dagster.yaml")
    os.environ["DAGSTER_HOME"] = str(dh)
    return dh

"""Sensor registry: band order, wavelengths and normalization statistics per platform.

The built-in table ships as package data (``clay_core/data/platforms.yaml``). Users add
or override platforms with a YAML file of the same layout: the application's one file
(``configure_platforms``, which the Dagster app calls with ``CLAY_PLATFORMS_FILE``) and any
number of files registered programmatically (``register_platforms_from_yaml``); a user
platform with a built-in name replaces the built-in one entirely. Nothing here reads the
environment.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from os import PathLike
from pathlib import Path
from typing import Any, Literal

import yaml

from clay_core.errors import ConfigError, UnknownPlatformError

__all__ = [
    "Band",
    "Platform",
    "configure_platforms",
    "get_platform",
    "known_platforms",
    "load_platforms",
    "register_platforms_from_yaml",
    "reset_platforms",
    "parse_platforms",
]

Units = Literal["reflectance", "db"]
_UNITS: tuple[str, ...] = ("reflectance", "db")


@dataclass(frozen=True)
class Band:
    """One band: central wavelength in micrometres and z-score statistics."""

    name: str
    wavelength_um: float
    mean: float
    std: float


@dataclass(frozen=True)
class Platform:
    """A sensor/product. ``bands`` is ordered as the provider delivers them.

    ``units`` says what the statistics are expressed in: ``"reflectance"`` (the raw values
    as delivered) or ``"db"`` (raw linear backscatter must be converted to decibels first).
    """

    name: str
    gsd: float
    bands: dict[str, Band]
    rgb: tuple[str, str, str]
    units: Units = "reflectance"

    @property
    def band_names(self) -> list[str]:
        return list(self.bands)

    def select(self, bands: Sequence[str] | None = None) -> list[Band]:
        """The requested bands in the requested order (all bands when ``None``)."""
        if bands is None:
            return list(self.bands.values())
        if isinstance(bands, str):
            raise ConfigError(f"bands must be a list of band names, not the string {bands!r}")
        unknown = [b for b in bands if b not in self.bands]
        if unknown:
            raise ConfigError(
                f"unknown band(s) {unknown} for platform {self.name!r}; valid bands: {self.band_names}"
            )
        if len(set(bands)) != len(bands):
            raise ConfigError(f"duplicate bands in {list(bands)} for platform {self.name!r}")
        if not bands:
            raise ConfigError(f"no bands selected for platform {self.name!r}")
        return [self.bands[b] for b in bands]


# --------------------------------------------------------------------------- parsing


def _number(value: Any, what: str, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{what} must be a number, got {value!r}")
    if positive and not value > 0:
        raise ConfigError(f"{what} must be > 0, got {value!r}")
    return float(value)


def _parse_bands(raw: Any, platform: str, source: str) -> dict[str, Band]:
    if isinstance(raw, Mapping):  # also accept {name: {wavelength_um, mean, std}}
        raw = [{"name": name, **(fields or {})} for name, fields in raw.items()]
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{source}: platform {platform!r} needs a non-empty 'bands' list")
    bands: dict[str, Band] = {}
    for entry in raw:
        if not isinstance(entry, Mapping) or "name" not in entry:
            raise ConfigError(f"{source}: platform {platform!r} has a band without a name: {entry!r}")
        name = str(entry["name"])
        where = f"{source}: {platform}.{name}"
        missing = [k for k in ("wavelength_um", "mean", "std") if k not in entry]
        if missing:
            raise ConfigError(f"{where} lacks {missing}")
        if name in bands:
            raise ConfigError(f"{where} is listed twice")
        bands[name] = Band(
            name=name,
            wavelength_um=_number(entry["wavelength_um"], f"{where}.wavelength_um", positive=True),
            mean=_number(entry["mean"], f"{where}.mean"),
            std=_number(entry["std"], f"{where}.std", positive=True),
        )
    return bands


def _default_rgb(bands: Mapping[str, Band]) -> tuple[str, str, str]:
    if all(b in bands for b in ("red", "green", "blue")):
        return ("red", "green", "blue")
    names = list(bands)
    return (names[0], names[min(1, len(names) - 1)], names[min(2, len(names) - 1)])


def _parse_platform(name: str, raw: Any, source: str) -> Platform:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: platform {name!r} must be a mapping, got {raw!r}")
    if "gsd" not in raw:
        raise ConfigError(f"{source}: platform {name!r} lacks 'gsd' (metres per pixel)")
    bands = _parse_bands(raw.get("bands"), name, source)
    units = str(raw.get("units", "reflectance")).lower()
    if units not in _UNITS:
        raise ConfigError(f"{source}: platform {name!r} units {units!r} must be one of {list(_UNITS)}")
    rgb_raw = raw.get("rgb")
    rgb = _default_rgb(bands) if rgb_raw is None else tuple(str(b) for b in rgb_raw)
    if len(rgb) != 3 or any(b not in bands for b in rgb):
        raise ConfigError(f"{source}: platform {name!r} rgb {list(rgb)} must be 3 of its bands {list(bands)}")
    return Platform(
        name=name,
        gsd=_number(raw["gsd"], f"{source}: {name}.gsd", positive=True),
        bands=bands,
        rgb=rgb,  # type: ignore[arg-type]
        units=units,  # type: ignore[arg-type]
    )


def parse_platforms(text: str, source: str = "<yaml>") -> dict[str, Platform]:
    """Parse registry YAML: ``{platforms: {name: {...}}}`` or the inner mapping directly."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: invalid YAML: {exc}") from exc
    if isinstance(doc, Mapping) and "platforms" in doc:
        doc = doc["platforms"]
    if not isinstance(doc, Mapping) or not doc:
        raise ConfigError(f"{source}: expected a mapping of platform name -> definition")
    parsed = {}
    for name, raw in doc.items():
        key = str(name).strip().lower()  # lookups are case-insensitive
        parsed[key] = _parse_platform(key, raw, source)
    return parsed


def _read_yaml(path: str | PathLike[str]) -> dict[str, Platform]:
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"platforms file not found: {p}")
    return parse_platforms(p.read_text(encoding="utf-8"), source=str(p))


@lru_cache(maxsize=1)
def _builtin() -> dict[str, Platform]:
    text = resources.files("clay_core").joinpath("data", "platforms.yaml").read_text(encoding="utf-8")
    return parse_platforms(text, source="clay_core/data/platforms.yaml")


# --------------------------------------------------------------------------- registry

# The file given to configure_platforms (None: built-ins only).
_CONFIGURED: Path | None = None
# Files registered in this process, re-applied (in order) whenever the registry is rebuilt.
_USER_FILES: list[Path] = []
_cache: dict[str, Platform] | None = None


def configure_platforms(extra_yaml: str | PathLike[str] | None) -> None:
    """Set the process's platforms file (None: none), read before registered files.

    The file is validated now (ConfigError for a missing or malformed file) and replaces any
    earlier configured one; platforms from ``register_platforms_from_yaml`` are kept.
    """
    global _CONFIGURED, _cache
    path = None if extra_yaml is None or str(extra_yaml) == "" else Path(extra_yaml).expanduser()
    if path is not None:
        _read_yaml(path)
    _CONFIGURED = path
    _cache = None


def load_platforms(extra_yaml: str | PathLike[str] | None = None) -> dict[str, Platform]:
    """Built-in platforms, then the configured file, then ``extra_yaml`` (later wins).

    Returns a new dict; the process-wide registry used by ``get_platform`` is unchanged.
    """
    platforms = dict(_builtin())
    if _CONFIGURED is not None:
        platforms.update(_read_yaml(_CONFIGURED))
    if extra_yaml is not None:
        platforms.update(_read_yaml(extra_yaml))
    return platforms


def _registry() -> dict[str, Platform]:
    """The process-wide registry, rebuilt after ``configure_platforms`` / ``reset_platforms``."""
    global _cache
    if _cache is None:
        platforms = load_platforms()
        for path in _USER_FILES:
            platforms.update(_read_yaml(path))
        _cache = platforms
    return _cache


def register_platforms_from_yaml(path: str | PathLike[str]) -> list[str]:
    """Add/override platforms from a user YAML file for this process; returns their names."""
    added = _read_yaml(path)  # validate before touching the registry
    _USER_FILES.append(Path(path).expanduser())
    _registry().update(added)
    return sorted(added)


def reset_platforms() -> None:
    """Forget platforms registered with ``register_platforms_from_yaml`` (tests use this); the
    ``configure_platforms`` file stays."""
    global _cache
    _USER_FILES.clear()
    _cache = None


def known_platforms() -> list[str]:
    return sorted(_registry())


def get_platform(name: str | Platform) -> Platform:
    """Look a platform up by name (case-insensitive); a ``Platform`` is returned as is."""
    if isinstance(name, Platform):
        return name
    registry = _registry()
    key = str(name).strip().lower()
    if key not in registry:
        raise UnknownPlatformError(
            f"unknown platform {name!r}; known platforms: {', '.join(sorted(registry))}. "
            "Add one with configure_platforms() (the app's CLAY_PLATFORMS_FILE) or register_platforms_from_yaml()."
        )
    return registry[key]


def iter_platforms() -> Iterable[Platform]:
    return iter(_registry().values())

"""Scenes from a directory of GeoTIFF / COG files.

Two layouts, chosen by the file-name ``pattern`` (relative to ``root``; may contain ``/``):

- one file per band: the pattern has ``{band}``, e.g. ``{tile}_{date}_{band}.tif`` ->
  ``31UFU_20230105_blue.tif``, ``31UFU_20230105_B11.tif``, ``31UFU_20230105_SCL.tif``.
  Band tokens are mapped to Clay names with the platform's aliases (Sentinel-2:
  ``B02``/``B2`` -> ``blue`` ... ``B8A`` -> ``nir08``, ``B11`` -> ``swir16``,
  ``SCL`` -> ``scl``; case-insensitive) plus ``band_aliases``.
- multi-band files: the pattern has no ``{band}``, e.g. ``{tile}/{date}.tif``; the
  bands are named by ``band_names`` (in file order; ``CLAY_SOURCE_BANDS``), else by the
  file's band descriptions, else -- a plain GeoTIFF without descriptions -- by the
  platform's preset: a 4-band file is blue, green, red, near-infrared (Sentinel-2 B02,
  B03, B04, B08: its 10 m bands; ``nir08`` for Landsat), a file with as many bands as the
  platform has is in the platform's band order; any other count is refused, naming
  ``CLAY_SOURCE_BANDS``.

Pattern fields: ``{tile}``, ``{date}`` (``YYYYMMDD``, ``YYYY-MM-DD``, optionally with a
time ``THHMMSS`` / ``THH:MM:SS[.f][Z|+hh:mm]``; no zone = UTC), ``{band}``; ``*``
matches anything but ``/``. A scene is one (tile, date) pair. Without ``{tile}`` a file's
tile is the MGRS tile of its footprint's centre; without ``{date}`` its date is the
TIFF tag ``TIFFTAG_DATETIME`` (``YYYY:MM:DD HH:MM:SS``, UTC). Whatever names a file's
tile, its footprint must lie in that tile (:func:`clay_core.sources.grids.check_grid_tile`):
a file named for the wrong tile is refused, naming the tile it is in.

QA is optional: ``qa_band="auto"`` uses the platform's QA band (``scl``) where a scene
has one and screens nodata only where it has none (``cloud_screening`` says ``"off"``).

The tile grid is ``grids[tile]`` (or ``grids["*"]``) when given, else the grid of the
finest-resolution band file of the tile's oldest scene (cached per source instance).
Every band is read onto that grid: a coarser band (20 m) is resampled bilinearly
(reflectance) or with nearest (the QA band and ``nearest_bands``); a file in another
CRS is refused (SceneError naming both CRSs). ``Scene.qa`` is SCL-like uint8: the
``qa_band`` read as ``qa_format`` (``"scl"`` or ``"landsat_qa_pixel"``), or, when
``qa_band`` is None, 0 where every band is ``nodata`` and 7 (unclassified) elsewhere.

``chip_reader(ref, bands, chip_size)`` streams the same pixels chip row by chip row straight
into chip layout (:class:`clay_core.sources.chip_reader.ChipRowReader`, used by
:func:`clay_core.chips.chip_source_scene`) instead of one ``[band, y, x]`` scene array.
"""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.enums import Resampling

from clay_core.errors import ConfigError, SceneError, UnknownTileError
from clay_core.sources.arrays import large_empty
from clay_core.sources.bands import canonical_band, resampling_for
from clay_core.sources.base import SceneSource, as_utc
from clay_core.sources.chip_reader import ChipBandFile, ChipQAFile, ChipRowReader
from clay_core.sources.grid_read import open_raster, read_to_grid
from clay_core.sources.grids import check_grid_tile, grid_from_dict, grid_of, grid_tile
from clay_core.sources.qa import QA_FORMATS, qa_fill, synthetic_qa, to_scl
from clay_core.types import Scene, SceneRef, TileGrid

DATE_RE = (
    r"\d{4}-?\d{2}-?\d{2}"
    r"(?:T\d{2}:?\d{2}(?::?\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?"
)
_FIELD_RE = {"tile": r"[^/]+?", "date": DATE_RE, "band": r"[^/]+?"}
_DEFAULT_QA = {"scl": "scl", "landsat_qa_pixel": "qa_pixel"}


def parse_date(text: str) -> datetime:
    """``20230105``, ``2023-01-05``, ``20230105T103021``, ``2023-01-05T10:30:21Z`` -> aware UTC."""
    m = re.fullmatch(
        r"(\d{4})-?(\d{2})-?(\d{2})(?:T(\d{2}):?(\d{2})(?::?(\d{2})(\.\d+)?)?"
        r"(Z|[+-]\d{2}:?\d{2})?)?",
        text,
    )
    if not m:
        raise ValueError(f"not a date: {text!r}")
    y, mo, d, hh, mm, ss, frac, tz = m.groups()
    dt = datetime(int(y), int(mo), int(d), int(hh or 0), int(mm or 0), int(ss or 0),
                  int(round(float(frac) * 1e6)) if frac else 0)  # fmt: skip
    if tz and tz != "Z":
        sign = 1 if tz[0] == "+" else -1
        hours, minutes = int(tz[1:3]), int(tz[-2:])
        from datetime import timedelta

        dt = dt.replace(tzinfo=timezone(sign * timedelta(hours=hours, minutes=minutes)))
    return as_utc(dt)


def pattern_regex(pattern: str) -> re.Pattern[str]:
    """Compile a ``{tile}_{date}_{band}.tif`` pattern into an anchored regex."""
    out, pos, seen = [], 0, set()
    for m in re.finditer(r"\{(\w+)\}|\*", pattern):
        out.append(re.escape(pattern[pos : m.start()]))
        if m.group(0) == "*":
            out.append(r"[^/]*")
        else:
            name = m.group(1)
            if name not in _FIELD_RE:
                raise ConfigError(
                    f"pattern {pattern!r}: unknown field {{{name}}}; use {{tile}}, {{date}}, "
                    "{band} and * only"
                )
            if name in seen:
                raise ConfigError(f"pattern {pattern!r}: field {{{name}}} appears twice")
            seen.add(name)
            out.append(f"(?P<{name}>{_FIELD_RE[name]})")
        pos = m.end()
    out.append(re.escape(pattern[pos:]))
    # No {tile}: the footprint says it. No {date}: the TIFF tags say it (see the module doc).
    return re.compile("".join(out) + r"\Z")


@dataclass
class _SceneFiles:
    tile: str
    date_token: str
    datetime: datetime
    files: dict[str, str] = field(default_factory=dict)  # band -> path (multi-band: "*")


class LocalRasterSource(SceneSource):
    """Sentinel-2 (or Landsat, or any) scenes stored as GeoTIFF/COG files under ``root``.

    Args:
        root: directory scanned (recursively) on every ``list_scenes`` call.
        pattern: file-name pattern relative to ``root`` (see the module docstring).
        platform: platform id recorded in every SceneRef (band aliases follow it).
        qa_band: Clay name of the QA band (``"scl"``; ``"qa_pixel"`` for Landsat), None
            for none (nodata-only screening), or ``"auto"``: the QA band where a scene has it.
        band_names: band names of multi-band files, in file order (default: the file's
            band descriptions, else the platform preset, see the module docstring).
        grids: explicit tile grids, ``{tile or "*": {"crs", "transform", "height", "width"}}``.
        band_aliases: extra file token -> band name mapping (``{"B8": "nir"}``).
        qa_format: ``"scl"`` or ``"landsat_qa_pixel"`` (converted by ``landsat_qa_to_scl``).
        nodata: DN value meaning "no data" in every band (0 for S2 L2A and Landsat C2).
        nearest_bands: more bands resampled with nearest (classification layers).
        max_workers: threads per scene: band files read in parallel (one file per band),
            or strips of a multi-band file read in parallel.
        num_threads: GDAL ``NUM_THREADS`` open option (multi-threaded block decoding of
            one read), ``"ALL_CPUS"``, an int, or None.
    """

    def __init__(
        self,
        root: str,
        pattern: str = "{tile}_{date}_{band}.tif",
        platform: str = "sentinel-2-l2a",
        qa_band: str | None = "scl",
        band_names: list[str] | None = None,
        grids: dict[str, dict[str, Any]] | None = None,
        band_aliases: dict[str, str] | None = None,
        qa_format: str = "scl",
        nodata: int = 0,
        nearest_bands: list[str] | None = None,
        max_workers: int = 4,
        num_threads: int | str | None = "ALL_CPUS",
    ) -> None:
        if qa_format not in QA_FORMATS:
            raise ConfigError(f"unknown qa_format {qa_format!r}: expected one of {QA_FORMATS}")
        self.root = str(root)
        self.pattern = pattern
        self.platform = platform
        self.qa_band = qa_band
        # the QA band's name where "auto" finds one (and for nearest resampling)
        self._qa_name = _DEFAULT_QA[qa_format] if qa_band == "auto" else qa_band
        self.band_names = list(band_names) if band_names else None
        self.grids = dict(grids or {})
        self.band_aliases = dict(band_aliases or {})
        self.qa_format = qa_format
        self.nodata = nodata
        self.nearest_bands = list(nearest_bands or [])
        self._regex = pattern_regex(pattern)
        self.multiband = "band" not in self._regex.groupindex
        self.max_workers = max(1, int(max_workers))
        self.num_threads = num_threads
        self._grid_cache: dict[str, TileGrid] = {}
        self._file_info: dict[tuple[str, float, int], tuple[str, str | None]] = {}

    @property
    def _open_options(self) -> dict[str, Any]:
        return {"num_threads": str(self.num_threads)} if self.num_threads else {}

    def __repr__(self) -> str:
        return f"LocalRasterSource(root={self.root!r}, pattern={self.pattern!r})"

    # ------------------------------------------------------------------ scanning

    def _scan(self) -> dict[tuple[str, str], _SceneFiles]:
        root = Path(self.root)
        if not root.is_dir():
            raise ConfigError(f"LocalRasterSource root {self.root!r} is not a directory")
        scenes: dict[tuple[str, str], _SceneFiles] = {}
        for dirpath, _dirs, names in os.walk(root, followlinks=True):
            for fname in names:
                full = os.path.join(dirpath, fname)
                rel = os.path.relpath(full, root).replace(os.sep, "/")
                m = self._regex.match(rel)
                if not m:
                    continue
                fields = m.groupdict()
                if "tile" not in fields or "date" not in fields:
                    tag_tile, tag_date = self._file_tile_date(full)
                    fields.setdefault("tile", tag_tile)
                    fields.setdefault("date", tag_date)
                try:
                    dt = parse_date(fields["date"])
                except ValueError:
                    continue
                tile = fields["tile"]
                token = re.sub(r"[-:]", "", fields["date"])
                key = (tile.upper(), token)
                sc = scenes.setdefault(key, _SceneFiles(tile, token, dt))
                band = "*" if self.multiband else canonical_band(m["band"], self.platform, self.band_aliases)
                if band not in sc.files or full < sc.files[band]:  # deterministic choice
                    sc.files[band] = full
        return scenes

    def _file_tile_date(self, path: str) -> tuple[str, str]:
        """A file's tile (its footprint's MGRS tile) and date (``TIFFTAG_DATETIME``), for
        patterns without ``{tile}`` / ``{date}``; cached per file version."""
        st = os.stat(path)
        key = (path, st.st_mtime, st.st_size)
        if key not in self._file_info:
            with open_raster(path, f"file {path}") as src:
                tile = grid_tile(grid_of(src, ""))
                stamp = src.tags().get("TIFFTAG_DATETIME")
            self._file_info[key] = (tile, stamp)
        tile, stamp = self._file_info[key]
        if "date" not in self._regex.groupindex:
            m = re.fullmatch(r"(\d{4}):(\d{2}):(\d{2})[ T](\d{2}):(\d{2}):(\d{2})", (stamp or "").strip())
            if not m:
                raise ConfigError(
                    f"{path}: CLAY_SOURCE_PATTERN {self.pattern!r} has no {{date}} and the file has no "
                    f"TIFFTAG_DATETIME tag (YYYY:MM:DD HH:MM:SS) to date it (got {stamp!r}); put the date in "
                    "the file name and {date} in CLAY_SOURCE_PATTERN, e.g. '{date}.tif'"
                )
            return tile, "{}-{}-{}T{}:{}:{}".format(*m.groups())
        return tile, ""

    def _tile_scenes(self, tile: str) -> list[_SceneFiles]:
        t = tile.strip().upper()
        return sorted(
            (s for (k, _), s in self._scan().items() if k == t),
            key=lambda s: (s.datetime, s.date_token),
        )

    def _hrefs(self, sc: _SceneFiles) -> dict[str, str]:
        if not self.multiband:
            return dict(sorted(sc.files.items()))
        path = sc.files["*"]
        if self.band_names:
            return {b: path for b in self.band_names}
        return {"*": path}

    # ------------------------------------------------------------------ interface

    def grid(self, tile: str) -> TileGrid:
        key = tile.strip().upper()
        if key in self._grid_cache:
            return self._grid_cache[key]
        spec = self.grids.get(tile) or self.grids.get(key) or self.grids.get("*")
        if spec is not None:
            g = grid_from_dict(tile.strip(), spec)
        else:
            scenes = self._tile_scenes(tile)
            if not scenes:
                raise UnknownTileError(
                    f"tile {tile!r} is not served by {self!r}: no file matches the pattern for "
                    f"it; tiles found: {self.tiles() or 'none'}"
                )
            first = scenes[0]
            best: TileGrid | None = None
            for band, path in sorted(first.files.items(), key=lambda kv: (kv[0] == self._qa_name, kv[0])):
                with open_raster(path, f"band {band} of scene {tile}_{first.date_token}") as src:
                    g = grid_of(src, tile.strip())
                if best is None or abs(g.transform.a) < abs(best.transform.a) - 1e-9:
                    best = g
            assert best is not None
            g = best
        check_grid_tile(tile, g, f"the files of tile {tile.strip()} under {self.root}")
        self._grid_cache[key] = g
        return g

    def tiles(self) -> list[str]:
        """Tile ids with at least one file (as spelled in the file names)."""
        return sorted({s.tile for s in self._scan().values()})

    def list_scenes(self, tile: str, start: datetime, end: datetime) -> list[SceneRef]:
        start, end = as_utc(start), as_utc(end)
        return [
            SceneRef(
                scene_id=f"{sc.tile}_{sc.date_token}",
                tile=tile.strip(),
                platform=self.platform,
                datetime=sc.datetime,
                hrefs=self._hrefs(sc),
            )
            for sc in self._tile_scenes(tile)
            if start <= sc.datetime < end
        ]

    def _files_for(self, ref: SceneRef) -> dict[str, str]:
        if ref.hrefs:
            return dict(ref.hrefs)
        for sc in self._tile_scenes(ref.tile):
            if f"{sc.tile}_{sc.date_token}" == ref.scene_id:
                return self._hrefs(sc)
        raise SceneError(f"scene {ref.scene_id} has no files under {self.root} (pattern {self.pattern!r})")

    def load_scene(self, ref: SceneRef, bands: list[str]) -> Scene:
        grid = self.grid(ref.tile)
        files = self._files_for(ref)
        if self.multiband:
            data, qa = self._load_multiband(ref, bands, files, grid)
        else:
            data, qa = self._load_per_band(ref, bands, files, grid)
        return Scene(ref=ref, grid=grid, bands=list(bands), data=data, qa=qa, nodata=self.nodata)

    def chip_reader(self, ref: SceneRef, bands: list[str], chip_size: int, workers: int | None = None) -> ChipRowReader:
        """A :class:`ChipRowReader` for ``bands`` of ``ref``: the scene read chip row by chip
        row, straight into chip layout, in ``workers`` threads (default: ``max_workers``
        capped at the CPU count) -- pixels and QA exactly as ``load_scene`` gives them.
        Used by :func:`clay_core.chips.chip_source_scene`."""
        grid = self.grid(ref.tile)
        files = self._files_for(ref)
        specs: list[ChipBandFile] = []
        qa: ChipQAFile | None = None
        if self.multiband:
            path = next(iter(files.values()))
            with open_raster(path, f"scene {ref.scene_id}", **self._open_options) as src:
                names = self._multiband_names(ref, src, path, bands)
            specs.append(ChipBandFile(path, f"scene {ref.scene_id}", [names.index(b) + 1 for b in bands],
                                      list(range(len(bands))), [self._resampling(b) for b in bands]))  # fmt: skip
            qa_band = self._qa_for(names)
            if qa_band:
                qa = ChipQAFile(path, f"scene {ref.scene_id}", names.index(qa_band) + 1, self.qa_format)
        else:
            qa_band = self._check_per_band(ref, bands, files)
            specs = [ChipBandFile(files[b], f"band {b} of scene {ref.scene_id}", [1], [i], [self._resampling(b)])
                     for i, b in enumerate(bands)]  # fmt: skip
            if qa_band:
                qa = ChipQAFile(files[qa_band], f"QA band {qa_band} of scene {ref.scene_id}", 1,
                                self.qa_format)  # fmt: skip
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        n = workers if workers is not None else min(self.max_workers, cpus)
        return ChipRowReader(grid, chip_size, specs, qa, nodata=self.nodata, workers=n,
                             open_options=self._open_options, bands=bands)  # fmt: skip

    def _multiband_names(self, ref: SceneRef, src: Any, path: str, bands: list[str]) -> list[str]:
        if self.band_names:
            names = list(self.band_names)
        elif any(src.descriptions):
            names = [canonical_band(d, self.platform, self.band_aliases) if d else "" for d in src.descriptions]
        else:  # a plain GeoTIFF: the platform preset names its bands
            names = self._preset_names(src.count, path)
        if len(names) != src.count:
            raise SceneError(f"{path}: has {src.count} bands but CLAY_SOURCE_BANDS (band_names) lists "
                             f"{len(names)} ({','.join(names)}); list one name per band, in file order")
        wanted = list(bands) + ([self.qa_band] if self.qa_band and self.qa_band != "auto" else [])
        for b in wanted:
            if b not in names:
                raise SceneError(
                    f"scene {ref.scene_id}: band {b!r} is missing from {path}, whose bands are "
                    f"{names}; set CLAY_SOURCE_BANDS (band_names) to the file's bands in order, or write "
                    "band descriptions into the file"
                    + ("; or unset CLAY_SOURCE_QA_BAND for nodata-only screening" if b == self.qa_band else "")
                )
        return names

    def _preset_names(self, count: int, path: str) -> list[str]:
        """Band names of a file without descriptions: 4 bands are blue, green, red, NIR (the
        Sentinel-2 10 m bands); as many as the platform has are in its order; else refused."""
        from clay_core.platforms import get_platform

        known = get_platform(self.platform).band_names
        if count == len(known):
            return list(known)
        nir = next((b for b in ("nir", "nir08") if b in known), None)
        if count == 4 and nir and all(b in known for b in ("blue", "green", "red")):
            return ["blue", "green", "red", nir]
        raise SceneError(
            f"{path}: {count} bands without band descriptions, and {self.platform} has no preset for "
            f"{count} bands; set CLAY_SOURCE_BANDS (band_names) to their names in file order, e.g. "
            f"{','.join(known[:count])} (the {self.platform} bands are {','.join(known)})"
        )

    def _qa_for(self, available) -> str | None:
        """The QA band used for a scene whose bands are ``available`` (``auto``: if present)."""
        qa = self.qa_band
        if qa == "auto":
            qa = self._qa_name if self._qa_name in available else None
        return qa

    @property
    def cloud_screening(self) -> str:
        """The QA format, or ``"off"`` without a QA band; with ``qa_band="auto"``, from the
        files: ``"partial"`` when only some scenes have one (see :meth:`cloud_screening_of`)."""
        if self.qa_band != "auto":
            return self.qa_format if self.qa_band else "off"
        seen = {self.cloud_screening_of(SceneRef(f"{sc.tile}_{sc.date_token}", sc.tile, self.platform, sc.datetime,
                                                 self._hrefs(sc))) for sc in self._scan().values()}
        return seen.pop() if len(seen) == 1 else "partial" if seen else "off"

    def cloud_screening_of(self, ref: SceneRef) -> str:
        """What screens the clouds of one scene: the QA format, or ``"off"`` (nodata only)."""
        if self.qa_band != "auto":
            return self.cloud_screening
        files = self._files_for(ref)
        if not self.multiband:
            return self.qa_format if self._qa_name in files else "off"
        path = next(iter(files.values()))
        with open_raster(path, f"scene {ref.scene_id}") as src:
            names = self._multiband_names(ref, src, path, [])
        return self.qa_format if self._qa_name in names else "off"

    def _check_per_band(self, ref: SceneRef, bands: list[str], files: dict[str, str]) -> str | None:
        for b in bands:
            if b not in files:
                raise self._missing(ref, b, files)
        if self.qa_band and self.qa_band != "auto" and self.qa_band not in files:
            raise self._missing(ref, self.qa_band, files, qa=True)
        return self._qa_for(files)

    # ------------------------------------------------------------------ loading

    def _missing(self, ref: SceneRef, band: str, files: dict[str, str], qa: bool = False) -> SceneError:
        found = sorted({os.path.basename(p) for p in files.values()})
        return SceneError(
            f"scene {ref.scene_id}: {'QA ' if qa else ''}band {band!r} is missing -- no file for it "
            f"under {self.root} matching {self.pattern!r}; files found for the scene: {found} "
            f"(bands {sorted(files)}); add the file or fix CLAY_SOURCE_PATTERN"
            + (", or unset CLAY_SOURCE_QA_BAND (nodata-only screening)" if qa else "")
        )

    def _resampling(self, band: str) -> Resampling:
        return resampling_for(band, self._qa_name, self.nearest_bands)

    def _load_per_band(self, ref, bands, files, grid):
        qa_band = self._check_per_band(ref, bands, files)

        def read(b: str) -> np.ndarray:
            with open_raster(files[b], f"band {b} of scene {ref.scene_id}", **self._open_options) as src:
                return read_to_grid(src, grid, 1, self._resampling(b), self.nodata, files[b])

        if self.max_workers > 1 and len(bands) > 1:  # GDAL releases the GIL while decoding
            with ThreadPoolExecutor(max_workers=min(self.max_workers, len(bands))) as pool:
                arrays = list(pool.map(read, bands))
        else:
            arrays = [read(b) for b in bands]
        dtype = np.result_type(*[a.dtype for a in arrays]) if arrays else np.uint16
        if arrays:
            data = large_empty((len(arrays), grid.height, grid.width), dtype)
            for i, a in enumerate(arrays):
                data[i] = a
        else:
            data = np.zeros((0, grid.height, grid.width), dtype)
        if qa_band:
            path = files[qa_band]
            with open_raster(path, f"QA band {qa_band} of scene {ref.scene_id}") as src:
                raw = read_to_grid(src, grid, 1, Resampling.nearest, qa_fill(self.qa_format), path)
                qa = to_scl(raw, self.qa_format)
        else:
            qa = synthetic_qa(data, self.nodata)
        return data, qa

    def _load_multiband(self, ref, bands, files, grid):
        path = next(iter(files.values()))
        with open_raster(path, f"scene {ref.scene_id}", **self._open_options) as src:
            names = self._multiband_names(ref, src, path, bands)
            groups: dict[Resampling, list[int]] = {}
            for i, b in enumerate(bands):  # one read per resampling: each block decoded once
                groups.setdefault(self._resampling(b), []).append(i)
            parts = {
                r: read_to_grid(src, grid, [names.index(bands[i]) + 1 for i in pos], r, self.nodata, path,
                                workers=self.max_workers, open_options=self._open_options)
                for r, pos in groups.items()
            }  # fmt: skip
            if not bands:
                data = np.zeros((0, grid.height, grid.width), src.dtypes[0])
            elif len(parts) == 1:
                data = next(iter(parts.values()))
            else:
                dtype = np.result_type(*[p.dtype for p in parts.values()])
                data = large_empty((len(bands), grid.height, grid.width), dtype)
                for r, pos in groups.items():
                    data[pos] = parts[r]
            qa_band = self._qa_for(names)
            if qa_band:
                raw = read_to_grid(src, grid, names.index(qa_band) + 1, Resampling.nearest,
                                   qa_fill(self.qa_format), path)  # fmt: skip
                qa = to_scl(raw, self.qa_format)
            else:
                qa = synthetic_qa(data, self.nodata)
        return data, qa

"""Scenes from an xarray-readable data cube (NetCDF or Zarr) with x / y / time and one
variable per band.

The reference cube is the real Sentinel-2 L2A subset shipped by ``nrt==0.2.1``
(``nrt/data/sentinel2_cube_subset_romania_10m.nc``; :func:`nrt_cube_path` finds it).
Inspected with ``xarray.open_dataset(..., mask_and_scale=False)`` it holds:

- dimensions ``time: 140, y: 100, x: 100``; 10 m pixels; 1 km x 1 km of forest in the
  Romanian Carpathians around 45.205 N, 22.152 E (inside MGRS tile 34TER);
- coordinates: ``time`` datetime64 (``days since 2015-08-01``) from 2015-08-01 to
  2021-01-01, 140 distinct dates, 5 to 200 days apart, all at 00:00 (date only);
  ``x`` 5271987.58 ... 5272977.58 and ``y`` 2532999.21 ... 2532009.21 (descending), both
  pixel *centres*, spacing exactly +10 / -10 m;
- data variables ``B2, B3, B4, B8`` (blue, green, red, nir -- named without the leading
  zero) and ``SCL`` (scene classification), each ``(time, y, x)`` stored as ``uint16``
  with ``_FillValue = 0`` (xarray's default decoding turns them into float32 with NaN;
  this source opens the file with ``mask_and_scale=False`` to keep the DN). Reflectance
  DN range 1..18224 (x 10000), no zero (nodata) pixels; SCL classes 2..11 all occur
  (4 vegetation dominates; 8/9/10 clouds in many dates; about half of the dates are
  less than 20 % cloudy);
- ``spatial_ref`` (int32 scalar) whose ``spatial_ref`` attribute is the WKT of
  ETRS89 / LAEA Europe (EPSG:3035) -- the CF ``grid_mapping`` of every band variable.
  There is no affine transform in the file: it is built from the x / y coordinate
  arrays (upper-left corner = first centre - half a pixel; y descending -> negative e).

Other cubes work the same way: CRS from ``crs`` (argument) or the grid-mapping
variable's ``crs_wkt`` / ``spatial_ref`` attribute (or a ``crs`` / ``spatial_ref``
variable, or a ``crs`` dataset attribute); a cube with ascending y is flipped to
north-up on load. Variables are mapped to Clay band names with the platform's aliases
(``B02``/``B2`` -> ``blue``, ``B03``/``B3`` -> ``green``, ``B04``/``B4`` -> ``red``,
``B08``/``B8`` -> ``nir``, ``B8A`` -> ``nir08``, ``B11`` -> ``swir16``, ...) updated by
``band_map`` (variable -> band).

The cube serves exactly one tile id. ``tile=None`` takes it from the data: the MGRS square
holding the footprint's centre (34TER for the nrt cube). A cube asked for an MGRS tile
whose Sentinel-2 extent does not hold that centre is refused, naming its real tile.
"""

from __future__ import annotations

import os
import re
import warnings
from datetime import datetime
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
from affine import Affine

from clay_core.errors import ConfigError, SceneError, UnknownTileError
from clay_core.sources.bands import canonical_band
from clay_core.sources.base import SceneSource, as_utc
from clay_core.sources.crs import crs_string
from clay_core.sources.grids import check_grid_tile, grid_tile
from clay_core.sources.qa import QA_FORMATS, qa_fill, synthetic_qa, to_scl
from clay_core.types import Scene, SceneRef, TileGrid

NRT_ROMANIA_10M = "sentinel2_cube_subset_romania_10m.nc"


def nrt_cube_path(name: str = NRT_ROMANIA_10M) -> str:
    """Path of a cube shipped in the ``nrt`` package's data folder (dev dependency)."""
    from importlib import resources

    try:
        path = resources.files("nrt.data").joinpath(name)
    except ModuleNotFoundError as exc:
        raise ConfigError("the 'nrt' package is not installed (pip install nrt==0.2.1)") from exc
    if not path.is_file():
        raise ConfigError(f"nrt ships no data file {name!r}")
    return str(path)


def _resolve_path(path: str) -> str:
    if path.startswith("nrt:"):
        return nrt_cube_path(path[4:] or NRT_ROMANIA_10M)
    return os.path.expanduser(path)


class CubeSource(SceneSource):
    """One tile's scenes from a NetCDF / Zarr cube (``time`` x ``y`` x ``x`` per band).

    Args:
        path: the cube file (``.nc``) or Zarr store (directory); ``"nrt:"`` or
            ``"nrt:<file>"`` picks a cube shipped with the ``nrt`` package.
        tile: the tile id this cube is: an MGRS id that must hold the cube's centre, a
            free-form site name, or None for the MGRS tile of the cube's footprint.
        platform: platform id recorded in every SceneRef.
        band_map: variable -> Clay band name, on top of the platform aliases.
        qa_var: the QA variable (``"SCL"``), or None for a cube without one (then QA is
            synthesised: 0 where every band is nodata, 7 elsewhere).
        time_dim, x_dim, y_dim: dimension names.
        crs: CRS of the cube when the file does not say it.
        nodata: DN meaning no data (float NaN is turned into it).
        qa_format: ``"scl"`` or ``"landsat_qa_pixel"``.
        engine: xarray engine (default: guessed; a directory is read as Zarr).
    """

    def __init__(
        self,
        path: str,
        tile: str | None = None,
        platform: str = "sentinel-2-l2a",
        band_map: dict[str, str] | None = None,
        qa_var: str | None = "SCL",
        time_dim: str = "time",
        x_dim: str = "x",
        y_dim: str = "y",
        crs: str | None = None,
        nodata: int = 0,
        qa_format: str = "scl",
        engine: str | None = None,
    ) -> None:
        if qa_format not in QA_FORMATS:
            raise ConfigError(f"unknown qa_format {qa_format!r}: expected one of {QA_FORMATS}")
        self.path = _resolve_path(str(path))
        self._tile = tile.strip() if tile else None
        self.platform = platform
        self.band_map = dict(band_map or {})
        self.qa_var = qa_var
        self.time_dim, self.x_dim, self.y_dim = time_dim, x_dim, y_dim
        self.crs = crs
        self.nodata = nodata
        self.qa_format = qa_format
        self.engine = engine

    def __repr__(self) -> str:
        return f"CubeSource(path={self.path!r}, tile={self._tile or '(from footprint)'!r})"

    @property
    def tile(self) -> str:
        """The tile id served: the one given, or the MGRS tile of the cube's footprint."""
        return self._tile or self._layout["footprint_tile"]

    @property
    def footprint(self):
        """The cube's extent as a WGS84 lon/lat polygon (shapely)."""
        from clay_core.areas import footprint_lonlat

        g = self._layout["grid"]
        t = g.transform
        return footprint_lonlat(g.crs, (t.c, t.f + g.height * t.e, t.c + g.width * t.a, t.f))

    def time_range(self) -> tuple[datetime, datetime]:
        """The first and last acquisition times (UTC)."""
        with self._open() as ds:
            times = self._times(ds)
        return min(times), max(times)

    # ------------------------------------------------------------------ opening

    def _open(self):
        import xarray as xr

        if not os.path.exists(self.path):
            raise ConfigError(f"cube {self.path!r} does not exist")
        engine = self.engine
        if engine is None and os.path.isdir(self.path):
            engine = "zarr"
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*consolidated metadata.*")
                return xr.open_dataset(self.path, engine=engine, mask_and_scale=False)
        except Exception as exc:  # noqa: BLE001 - every backend raises its own types
            raise SceneError(f"cannot open cube {self.path}: {type(exc).__name__}: {exc}") from exc

    def _check_tile(self, tile: str) -> None:
        if tile.strip().upper() != self.tile.upper():
            raise UnknownTileError(
                f"tile {tile!r} is not served by {self!r}: this cube is tile {self.tile!r}; "
                f"set CLAY_TILES={self.tile}"
            )

    @cached_property
    def _layout(self) -> dict[str, Any]:
        """Band variables, grid and y orientation (read once)."""
        with self._open() as ds:
            for d in (self.time_dim, self.x_dim, self.y_dim):
                if d not in ds.dims:
                    raise ConfigError(
                        f"cube {self.path} has no dimension {d!r} (dimensions: {list(ds.dims)}); "
                        "set time_dim / x_dim / y_dim"
                    )
            want = {self.time_dim, self.x_dim, self.y_dim}
            variables = [v for v, da in ds.data_vars.items() if set(da.dims) == want]
            if self.qa_var and self.qa_var not in variables:
                raise ConfigError(
                    f"cube {self.path} has no QA variable {self.qa_var!r} (variables: {variables}); "
                    "set qa_var, or qa_var=None"
                )
            bands: dict[str, str] = {}  # band -> variable
            for v in variables:
                if v == self.qa_var:
                    continue
                b = self.band_map.get(v) or canonical_band(v, self.platform)
                bands.setdefault(b, v)
            grid, flip = self._grid(ds, variables)
        own = grid_tile(grid)
        if self._tile:  # a cube named for a tile it is not in is refused (names its real tile)
            check_grid_tile(self._tile, grid, f"cube {self.path}")
        grid = TileGrid(self._tile or own, grid.crs, grid.transform, grid.height, grid.width)
        return {"bands": bands, "grid": grid, "flip": flip, "variables": variables, "footprint_tile": own}

    def _crs(self, ds, variables: list[str]) -> str:
        if self.crs:
            return crs_string(self.crs)
        candidates = []
        for v in variables:
            gm = ds[v].attrs.get("grid_mapping") or ds[v].encoding.get("grid_mapping")
            if gm and gm in ds.variables:
                candidates.append(ds[gm].attrs)
        for name in ("spatial_ref", "crs"):
            if name in ds.variables:
                candidates.append(ds[name].attrs)
        candidates.append(ds.attrs)
        for attrs in candidates:
            for key in ("crs_wkt", "spatial_ref", "crs", "proj4", "proj4text"):
                val = attrs.get(key)
                if isinstance(val, str) and val.strip():
                    try:
                        return crs_string(val)
                    except Exception:  # noqa: BLE001
                        continue
            if "epsg_code" in attrs:
                return crs_string(f"EPSG:{str(attrs['epsg_code']).split(':')[-1]}")
        raise ConfigError(
            f"cube {self.path} does not say its CRS (no grid_mapping variable with crs_wkt / "
            "spatial_ref, no crs attribute): pass crs='EPSG:...'"
        )

    def _grid(self, ds, variables: list[str]) -> tuple[TileGrid, bool]:
        x = np.asarray(ds[self.x_dim].values, dtype="float64")
        y = np.asarray(ds[self.y_dim].values, dtype="float64")
        if x.size < 2 or y.size < 2:
            raise ConfigError(f"cube {self.path}: need at least 2 x and 2 y coordinates to know the pixel size")
        dx, dy = np.diff(x), np.diff(y)
        for name, d in (("x", dx), ("y", dy)):
            if not np.allclose(d, d[0], rtol=1e-6, atol=1e-6 * abs(d[0])) or d[0] == 0:
                raise ConfigError(f"cube {self.path}: {name} coordinates are not regularly spaced")
        resx, resy = float(dx.mean()), float(abs(dy.mean()))
        if resx < 0:
            raise ConfigError(f"cube {self.path}: x coordinates decrease; only north-up, west-to-east cubes are supported")
        flip = bool(dy[0] > 0)  # ascending y: flip rows to north-up
        top = float(y.max()) + resy / 2
        left = float(x[0]) - resx / 2
        transform = Affine(resx, 0.0, left, 0.0, -resy, top)
        return TileGrid(self._tile or "", self._crs(ds, variables), transform, int(y.size), int(x.size)), flip

    # ------------------------------------------------------------------ interface

    @property
    def bands(self) -> dict[str, str]:
        """Clay band name -> cube variable."""
        return dict(self._layout["bands"])

    def grid(self, tile: str) -> TileGrid:
        self._check_tile(tile)
        return self._layout["grid"]

    def _times(self, ds) -> list[datetime]:
        idx = pd.DatetimeIndex(ds[self.time_dim].values)
        idx = idx.tz_localize("UTC") if idx.tz is None else idx.tz_convert("UTC")
        return [t.to_pydatetime() for t in idx]

    def _href(self, var: str, i: int) -> str:
        return f"{self.path}#{var}[{self.time_dim}={i}]"

    def list_scenes(self, tile: str, start: datetime, end: datetime) -> list[SceneRef]:
        self._check_tile(tile)
        start, end = as_utc(start), as_utc(end)
        layout = self._layout
        with self._open() as ds:
            times = self._times(ds)
        refs = []
        for i, t in enumerate(times):
            if not start <= t < end:
                continue
            hrefs = {b: self._href(v, i) for b, v in layout["bands"].items()}
            if self.qa_var:
                hrefs[canonical_band(self.qa_var, self.platform)] = self._href(self.qa_var, i)
            refs.append(SceneRef(
                scene_id=f"{self.tile}_{t:%Y%m%dT%H%M%S}", tile=self.tile, platform=self.platform,
                datetime=t, hrefs=hrefs,
            ))  # fmt: skip
        return sorted(refs, key=lambda r: r.datetime)

    def _time_index(self, ref: SceneRef, times: list[datetime]) -> int:
        want = as_utc(ref.datetime)
        for href in ref.hrefs.values():
            m = re.search(rf"\[{re.escape(self.time_dim)}=(\d+)\]$", href)
            if m and int(m[1]) < len(times) and times[int(m[1])] == want:
                return int(m[1])
        for i, t in enumerate(times):
            if t == want:
                return i
        raise SceneError(f"scene {ref.scene_id}: no {self.time_dim} {want.isoformat()} in cube {self.path}")

    def _pixels(self, ds, var: str, i: int, fill: int) -> np.ndarray:
        da = ds[var].isel({self.time_dim: i}).transpose(self.y_dim, self.x_dim)
        try:
            a = np.asarray(da.values)
        except Exception as exc:  # noqa: BLE001
            raise SceneError(f"cannot read {var} at {self.time_dim}={i} from cube {self.path}: {exc}") from exc
        if self._layout["flip"]:
            a = a[::-1]
        if a.dtype.kind == "f":
            a = np.where(np.isfinite(a), a, fill).astype(a.dtype)
        fv = ds[var].attrs.get("_FillValue", ds[var].encoding.get("_FillValue"))
        if fv is not None and np.isfinite(fv) and fv != fill and a.dtype.kind != "f":
            a = np.where(a == fv, fill, a)
        return np.ascontiguousarray(a)

    def load_scene(self, ref: SceneRef, bands: list[str]) -> Scene:
        self._check_tile(ref.tile)
        layout = self._layout
        missing = [b for b in bands if b not in layout["bands"]]
        if missing:
            raise SceneError(
                f"scene {ref.scene_id}: band(s) {missing} are not in cube {self.path}; it has "
                f"{layout['bands']} (band -> variable); map variables with band_map"
            )
        with self._open() as ds:
            i = self._time_index(ref, self._times(ds))
            arrays = [self._pixels(ds, layout["bands"][b], i, self.nodata) for b in bands]
            g = layout["grid"]
            data = np.stack(arrays) if arrays else np.zeros((0, g.height, g.width), np.uint16)
            if self.qa_var:
                qa = to_scl(self._pixels(ds, self.qa_var, i, qa_fill(self.qa_format)), self.qa_format)
            else:
                qa = synthetic_qa(data, self.nodata)
        return Scene(ref=ref, grid=layout["grid"], bands=list(bands), data=data, qa=qa, nodata=self.nodata)

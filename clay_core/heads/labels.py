"""Labels for chips: where the fine-tuning heads get their truth.

A chip is identified by a *chip reference*: one row of a DataFrame with ``chip_id``, ``tile``,
``row``, ``col``, ``datetime`` (UTC) and its native bounds ``x_min, y_min, x_max, y_max`` in
``crs`` (a ``ChipSet``'s ``meta`` frame; ``chip_refs`` builds it from a chip cube). Every
:class:`LabelSource` answers, for a frame of chip references and the chip size:

- ``pixel_labels``  -> uint8 [n, cs, cs] class indices per pixel (``IGNORE`` = unknown);
- ``chip_classes``  -> int64 [n] one class per chip (``IGNORE`` = unknown); by default the
  majority class of the chip's pixel labels;
- ``pixel_values``  -> float32 [n, cs, cs] a continuous target (NaN = unknown), for regression.

Sources:

- :class:`RasterLabels` - label GeoTIFFs aligned to the chip grid, read window by window
  (``rasterio`` windowed reads from each chip's native bounds; only the chip's window is
  decoded). The path may contain ``{tile}`` and ``{date}`` (acquisition date, YYYY-MM-DD).
- :class:`TableLabels` - a CSV or Parquet table ``chip_id -> class`` (optionally per
  acquisition date): per-chip labels only, for classification heads.
- :class:`SyntheticLabels` - the synthetic world's land cover (``CLASS_NAMES``), exactly the
  map the scenes were drawn from, including clearings from the date they appear; its
  continuous target is the scene's NDVI.

:func:`label_source` builds one from plain settings (what the ``labels`` resource holds).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import OrderedDict
from datetime import datetime
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from clay_core.errors import ConfigError

__all__ = [
    "IGNORE",
    "REF_COLUMNS",
    "LabelSource",
    "RasterLabels",
    "TableLabels",
    "SyntheticLabels",
    "chip_refs",
    "majority_class",
    "label_source",
]

IGNORE = 255  # "no label" in pixel label maps and chip classes
REF_COLUMNS = ("chip_id", "tile", "row", "col", "datetime", "x_min", "y_min", "x_max", "y_max", "crs")


def chip_refs(ds: Any, tile: str) -> pd.DataFrame:
    """Chip references of a chip cube (``clay_core.chips.open_cube``) of ``tile``."""
    nb = np.asarray(ds["native_bounds"].values, dtype=float).reshape(-1, 4)
    return pd.DataFrame(
        {
            "chip_id": [str(c) for c in ds["chip_id"].values],
            "tile": tile,
            "row": np.asarray(ds["row"].values, dtype="int64"),
            "col": np.asarray(ds["col"].values, dtype="int64"),
            "datetime": pd.to_datetime(ds["datetime"].values).tz_localize("UTC"),
            "x_min": nb[:, 0], "y_min": nb[:, 1], "x_max": nb[:, 2], "y_max": nb[:, 3],
            "crs": str(ds.attrs.get("crs", "")),
            "lat": np.asarray(ds["lat"].values, dtype=float),
            "lon": np.asarray(ds["lon"].values, dtype=float),
        }
    )


def _check_refs(refs: pd.DataFrame, needed: tuple[str, ...]) -> None:
    missing = [c for c in needed if c not in refs.columns]
    if missing:
        raise ConfigError(f"chip references lack columns {missing}; build them with clay_core.heads.labels.chip_refs")


def majority_class(pixel_labels: np.ndarray, n_classes: int, min_fraction: float = 0.0) -> np.ndarray:
    """Per chip, the most frequent labelled class ([n, cs, cs] -> [n]); IGNORE if none qualifies."""
    n = pixel_labels.shape[0]
    flat = pixel_labels.reshape(n, -1).astype(np.int64)
    out = np.full(n, IGNORE, dtype=np.int64)
    for i in range(n):
        valid = flat[i][flat[i] < n_classes]
        if valid.size == 0:
            continue
        counts = np.bincount(valid, minlength=n_classes)
        best = int(counts.argmax())
        if counts[best] >= min_fraction * flat.shape[1]:
            out[i] = best
    return out


class LabelSource(ABC):
    """Truth for chips; see the module docstring."""

    class_names: list[str]

    #: whether ``pixel_labels`` is available (segmentation heads need it)
    has_pixels: bool = True

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @abstractmethod
    def pixel_labels(self, refs: pd.DataFrame, chip_size: int) -> np.ndarray:
        """uint8 [n, cs, cs] class index per pixel, ``IGNORE`` where unknown."""

    def chip_classes(self, refs: pd.DataFrame, chip_size: int) -> np.ndarray:
        """int64 [n]: the majority class of each chip's labelled pixels."""
        return majority_class(self.pixel_labels(refs, chip_size), self.n_classes)

    def pixel_values(self, refs: pd.DataFrame, chip_size: int) -> np.ndarray:
        """float32 [n, cs, cs] continuous target, NaN where unknown (regression heads)."""
        raise ConfigError(f"{type(self).__name__} has no continuous per-pixel target; use a classification "
                          "or segmentation head, or a float label raster (RasterLabels(kind='values'))")

    def describe(self) -> str:
        return type(self).__name__


# --------------------------------------------------------------------------- rasters


class RasterLabels(LabelSource):
    """Label GeoTIFF(s) on (or overlapping) the tile grid, read one chip window at a time.

    ``path`` may contain ``{tile}`` and ``{date}`` placeholders (``labels/{tile}.tif``,
    ``labels/{tile}_{date}.tif``). Each chip's window comes from its native bounds, so the
    raster may cover a larger or offset area than the chip grid; pixels outside the raster,
    equal to its nodata value, or outside ``[0, len(class_names))`` are ``IGNORE``. The raster
    must be in the chips' CRS (no reprojection is done: label pixels must not be resampled
    across CRSs silently). With ``kind='values'`` the band is a continuous target instead.
    """

    def __init__(self, path: str | PathLike[str], class_names: list[str] | None = None, band: int = 1,
                 kind: str = "classes") -> None:
        if kind not in ("classes", "values"):
            raise ConfigError(f"RasterLabels kind={kind!r}: use 'classes' or 'values'")
        if kind == "classes" and not class_names:
            raise ConfigError("RasterLabels(kind='classes') needs class_names (index -> name)")
        self.path = str(path)
        self.class_names = list(class_names or ["value"])
        self.band = int(band)
        self.kind = kind
        self.has_pixels = True

    def describe(self) -> str:
        return f"raster {self.path} ({self.kind})"

    def _file(self, tile: str, when: pd.Timestamp) -> Path:
        try:
            p = Path(self.path.format(tile=tile, date=pd.Timestamp(when).strftime("%Y-%m-%d")))
        except (KeyError, IndexError) as exc:
            raise ConfigError(f"label path {self.path!r}: only {{tile}} and {{date}} placeholders are known") from exc
        if not p.is_file():
            raise ConfigError(f"label raster {p} not found (from template {self.path!r}, tile {tile}, date {when:%Y-%m-%d})")
        return p

    def _read(self, refs: pd.DataFrame, chip_size: int, dtype: Any, fill: float) -> np.ndarray:
        import rasterio
        from rasterio.enums import Resampling
        from rasterio.windows import from_bounds

        _check_refs(refs, REF_COLUMNS)
        out = np.full((len(refs), chip_size, chip_size), fill, dtype=dtype)
        by_file: dict[Path, list[int]] = {}
        for i, (tile, when) in enumerate(zip(refs["tile"], refs["datetime"])):
            by_file.setdefault(self._file(str(tile), when), []).append(i)
        for path, rows in by_file.items():
            with rasterio.open(path) as src:
                if self.band < 1 or self.band > src.count:
                    raise ConfigError(f"label raster {path} has {src.count} band(s); band={self.band} requested")
                for i in rows:
                    r = refs.iloc[i]
                    if src.crs is not None and r["crs"] and src.crs != rasterio.crs.CRS.from_user_input(r["crs"]):
                        raise ConfigError(f"label raster {path} is in {src.crs}, chips of tile {r['tile']} in "
                                          f"{r['crs']}: reproject the labels to the chip grid's CRS first")
                    win = from_bounds(r["x_min"], r["y_min"], r["x_max"], r["y_max"], src.transform)
                    win = win.round_offsets().round_lengths()
                    inside = (win.col_off >= 0 and win.row_off >= 0 and win.col_off + win.width <= src.width
                              and win.row_off + win.height <= src.height)
                    data = src.read(
                        self.band, window=win, out_shape=(chip_size, chip_size), boundless=not inside,
                        fill_value=src.nodata if src.nodata is not None else fill, resampling=Resampling.nearest,
                    )
                    if self.kind == "values":
                        data = data.astype(np.float32)
                        if src.nodata is not None:
                            data[data == src.nodata] = np.nan
                        out[i] = data
                    else:
                        data = data.astype(np.int64)
                        bad = (data < 0) | (data >= self.n_classes)
                        if src.nodata is not None:
                            bad |= data == src.nodata
                        out[i] = np.where(bad, IGNORE, data).astype(np.uint8)
        return out

    def pixel_labels(self, refs: pd.DataFrame, chip_size: int) -> np.ndarray:
        if self.kind != "classes":
            raise ConfigError(f"label raster {self.path} holds continuous values (kind='values'); use a regression head")
        return self._read(refs, chip_size, np.uint8, IGNORE)

    def pixel_values(self, refs: pd.DataFrame, chip_size: int) -> np.ndarray:
        if self.kind != "values":
            raise ConfigError(f"label raster {self.path} holds classes (kind='classes'); use a segmentation or "
                              "classification head")
        return self._read(refs, chip_size, np.float32, np.nan)


# --------------------------------------------------------------------------- tables


class TableLabels(LabelSource):
    """Per-chip classes from a CSV or Parquet table with columns ``chip_id`` and ``class``.

    ``class`` holds class names (or integer indices into ``class_names``). With a column
    ``acquired`` (date) or ``datetime``, rows apply to that acquisition date only; otherwise a
    chip's class holds on every date. Chips missing from the table are ``IGNORE``.
    """

    has_pixels = False

    def __init__(self, path: str | PathLike[str], class_names: list[str] | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ConfigError(f"label table {self.path} not found")
        if self.path.suffix.lower() in (".parquet", ".pq"):
            df = pd.read_parquet(self.path)
        elif self.path.suffix.lower() in (".csv", ".txt"):
            df = pd.read_csv(self.path)
        else:
            raise ConfigError(f"label table {self.path}: use a .csv or .parquet file")
        missing = [c for c in ("chip_id", "class") if c not in df.columns]
        if missing:
            raise ConfigError(f"label table {self.path} lacks column(s) {missing}; it has {list(df.columns)}")
        raw = df["class"]
        if pd.api.types.is_integer_dtype(raw):
            if not class_names:
                raise ConfigError(f"label table {self.path} has integer classes: pass class_names")
            idx = raw.to_numpy(np.int64)
            if ((idx < 0) | (idx >= len(class_names))).any():
                raise ConfigError(f"label table {self.path}: class indices outside 0..{len(class_names) - 1}")
        else:
            names = raw.astype(str)
            class_names = list(class_names) if class_names else sorted(names.unique())
            unknown = sorted(set(names) - set(class_names))
            if unknown:
                raise ConfigError(f"label table {self.path}: unknown class names {unknown}; known {class_names}")
            idx = names.map({n: i for i, n in enumerate(class_names)}).to_numpy(np.int64)
        self.class_names = list(class_names)
        date_col = "acquired" if "acquired" in df.columns else ("datetime" if "datetime" in df.columns else None)
        keys = df["chip_id"].astype(str)
        if date_col:
            days = pd.to_datetime(df[date_col], utc=True).dt.strftime("%Y-%m-%d")
            self._by_date = dict(zip(zip(keys, days), idx))
            self._any: dict[str, int] = {}
        else:
            self._by_date = {}
            self._any = dict(zip(keys, idx))

    def describe(self) -> str:
        return f"table {self.path}"

    def chip_classes(self, refs: pd.DataFrame, chip_size: int) -> np.ndarray:
        _check_refs(refs, ("chip_id", "datetime"))
        days = pd.to_datetime(refs["datetime"], utc=True).dt.strftime("%Y-%m-%d")
        out = np.full(len(refs), IGNORE, dtype=np.int64)
        for i, (cid, day) in enumerate(zip(refs["chip_id"].astype(str), days)):
            if (cid, day) in self._by_date:
                out[i] = self._by_date[(cid, day)]
            elif cid in self._any:
                out[i] = self._any[cid]
        return out

    def pixel_labels(self, refs: pd.DataFrame, chip_size: int) -> np.ndarray:
        raise ConfigError(f"label table {self.path} has one class per chip, no per-pixel labels: use "
                          "head='classification', or a label raster (RasterLabels) for segmentation")


# --------------------------------------------------------------------------- synthetic


class SyntheticLabels(LabelSource):
    """Land cover of a :class:`~clay_core.sources.synthetic.SyntheticSceneSource`: the truth it drew."""

    def __init__(self, source: Any, cache_size: int = 8) -> None:
        from clay_core.sources.synthetic import CLASS_NAMES

        if not hasattr(source, "world") or not hasattr(source, "labels"):
            raise ConfigError(f"synthetic labels need a SyntheticSceneSource, got {type(source).__name__}")
        self.source = source
        self.class_names = list(CLASS_NAMES)
        self._cache: OrderedDict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._cache_size = cache_size

    def describe(self) -> str:
        w = self.source.world
        return f"synthetic land cover (seed {w.seed}, {w.size} px)"

    def _render(self, tile: str, when: pd.Timestamp) -> tuple[np.ndarray, np.ndarray]:
        when_dt: datetime = pd.Timestamp(when).tz_convert("UTC").to_pydatetime()
        key = (tile, when_dt.isoformat())
        if key not in self._cache:
            data, _, lc = self.source.world.render(self.source._check(tile), when_dt)
            red, nir = data[2].astype(np.float32), data[3].astype(np.float32)
            ndvi = (nir - red) / np.maximum(nir + red, 1.0)
            self._cache[key] = (lc, ndvi)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        self._cache.move_to_end(key)
        return self._cache[key]

    def _cut(self, refs: pd.DataFrame, chip_size: int, which: int, dtype: Any) -> np.ndarray:
        _check_refs(refs, ("tile", "row", "col", "datetime"))
        out = np.empty((len(refs), chip_size, chip_size), dtype=dtype)
        cs = chip_size
        for i, (tile, r, c, when) in enumerate(zip(refs["tile"], refs["row"], refs["col"], refs["datetime"])):
            arr = self._render(str(tile), when)[which]
            r0, c0 = int(r) * cs, int(c) * cs
            if r0 + cs > arr.shape[0] or c0 + cs > arr.shape[1]:
                raise ConfigError(f"chip {tile} r{r} c{c} (size {cs}) lies outside the synthetic world "
                                  f"({arr.shape[0]} px): the chip cube and the label source disagree")
            out[i] = arr[r0 : r0 + cs, c0 : c0 + cs]
        return out

    def pixel_labels(self, refs: pd.DataFrame, chip_size: int) -> np.ndarray:
        return self._cut(refs, chip_size, 0, np.uint8)

    def pixel_values(self, refs: pd.DataFrame, chip_size: int) -> np.ndarray:
        return self._cut(refs, chip_size, 1, np.float32)


def label_source(kind: str, path: str | PathLike[str] | None = None, class_names: list[str] | None = None, *,
                 band: int = 1, values: bool = False, scene_source: Any = None) -> LabelSource:
    """``kind``: ``synthetic`` (the land cover of ``scene_source``, a synthetic scene source),
    ``raster`` (label GeoTIFF(s) at ``path``; ``values=True`` for a continuous target) or
    ``table`` (CSV/Parquet ``chip_id -> class`` at ``path``)."""
    k = kind.strip().lower()
    if k == "synthetic":
        return SyntheticLabels(scene_source)
    if k in ("raster", "table") and not path:
        raise ConfigError(f"label source kind={k!r} needs a path (CLAY_LABELS_PATH)")
    if k == "raster":
        return RasterLabels(path, class_names, band=band, kind="values" if values else "classes")
    if k == "table":
        return TableLabels(path, class_names)
    raise ConfigError(f"unknown label source kind {kind!r}; use synthetic, raster or table")

"""Cut scenes into fixed chips on the tile grid and store them as Zarr v3 chip cubes.

Chips are ``chip_size`` x ``chip_size`` windows of the tile grid starting at its upper-left
corner, so chip ``<tile>_r<row>c<col>`` is the same ground on every date. Edge pixels that
do not fill a whole chip are dropped (no padding: a padded chip would carry nodata the
encoder never saw in training). Cloud and nodata fractions come from the SCL-like QA band;
chips above the configured thresholds are filtered out.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
from PIL import Image
from pyproj import Transformer

from clay_core.errors import ConfigError
from clay_core.types import Scene

DEFAULT_CLOUD_CLASSES = (1, 3, 8, 9, 10)
DEFAULT_NODATA_CLASSES = (0,)


@dataclass(frozen=True)
class ChipParams:
    chip_size: int = 256
    max_cloud: float = 0.2
    max_nodata: float = 0.1
    cloud_classes: tuple[int, ...] = DEFAULT_CLOUD_CLASSES
    nodata_classes: tuple[int, ...] = DEFAULT_NODATA_CLASSES

    def __post_init__(self) -> None:
        if not isinstance(self.chip_size, int) or self.chip_size <= 0 or self.chip_size % 8:
            raise ConfigError(
                f"chip_size={self.chip_size!r} is invalid: it must be a positive multiple of 8 "
                "(the Clay patch size), e.g. 256"
            )
        for name in ("max_cloud", "max_nodata"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"{name}={v} must be a fraction in [0, 1]")


def chip_id(tile: str, row: int, col: int) -> str:
    return f"{tile}_r{row:03d}c{col:03d}"


@dataclass
class ChipSet:
    """Kept chips of one or more scenes: pixels [n, band, y, x] plus per-chip metadata."""

    bands: list[str]
    pixels: np.ndarray
    meta: pd.DataFrame  # one row per chip, see _META_COLUMNS
    dropped: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.pixels.shape[0])

    @staticmethod
    def concat(sets: list["ChipSet"], bands: list[str], chip_size: int) -> "ChipSet":
        if not sets:
            return ChipSet(bands, np.zeros((0, len(bands), chip_size, chip_size), np.uint16), _empty_meta())
        dropped: dict[str, int] = {}
        for s in sets:
            for k, v in s.dropped.items():
                dropped[k] = dropped.get(k, 0) + v
        return ChipSet(
            bands,
            np.concatenate([s.pixels for s in sets]),
            pd.concat([s.meta for s in sets], ignore_index=True),
            dropped,
        )


_META_COLUMNS = {
    "chip_id": str, "tile": str, "row": "int32", "col": "int32", "scene_id": str,
    "datetime": "datetime64[ns, UTC]", "cloud_fraction": "float32", "nodata_fraction": "float32",
    "x_min": "float64", "y_min": "float64", "x_max": "float64", "y_max": "float64",
    "west": "float64", "south": "float64", "east": "float64", "north": "float64",
    "lat": "float64", "lon": "float64", "crs": str, "hrefs": str,
}


def _empty_meta() -> pd.DataFrame:
    return pd.DataFrame({k: pd.Series(dtype=v) for k, v in _META_COLUMNS.items()})


def chip_scene(scene: Scene, params: ChipParams) -> ChipSet:
    """Cut ``scene`` into chips; keep those under the cloud and nodata thresholds."""
    cs = params.chip_size
    _, h, w = scene.data.shape
    nr, nc = h // cs, w // cs
    if nr == 0 or nc == 0:
        raise ConfigError(
            f"chip_size={cs} is larger than scene {scene.ref.scene_id} ({h}x{w} px); use a smaller chip size"
        )
    qa = scene.qa[: nr * cs, : nc * cs].reshape(nr, cs, nc, cs)
    cloud = np.isin(qa, params.cloud_classes).mean(axis=(1, 3))
    nodata = np.isin(qa, params.nodata_classes).mean(axis=(1, 3))
    # Pixels equal to the nodata value count too: some products leave SCL valid there.
    nodata = np.maximum(nodata, (scene.data[:, : nr * cs, : nc * cs] == scene.nodata).all(axis=0)
                        .reshape(nr, cs, nc, cs).mean(axis=(1, 3)))
    keep = (cloud <= params.max_cloud) & (nodata <= params.max_nodata)
    rows, cols = np.nonzero(keep)
    dropped = {
        "cloudy": int(((cloud > params.max_cloud) & (nodata <= params.max_nodata)).sum()),
        "nodata": int((nodata > params.max_nodata).sum()),
    }
    pixels = (
        scene.data[:, : nr * cs, : nc * cs]
        .reshape(len(scene.bands), nr, cs, nc, cs)
        .transpose(1, 3, 0, 2, 4)[rows, cols]
    )
    pixels = np.ascontiguousarray(pixels)

    t = scene.grid.transform
    x_min = t.c + cols * cs * t.a
    x_max = x_min + cs * t.a
    y_max = t.f + rows * cs * t.e
    y_min = y_max + cs * t.e
    to_wgs84 = Transformer.from_crs(scene.grid.crs, 4326, always_xy=True)
    corners_x = np.stack([x_min, x_max, x_min, x_max])
    corners_y = np.stack([y_min, y_min, y_max, y_max])
    lon_c, lat_c = to_wgs84.transform(corners_x, corners_y)
    lon, lat = to_wgs84.transform((x_min + x_max) / 2, (y_min + y_max) / 2)
    tile = scene.ref.tile
    meta = pd.DataFrame(
        {
            "chip_id": [chip_id(tile, int(r), int(c)) for r, c in zip(rows, cols)],
            "tile": tile,
            "row": rows.astype("int32"),
            "col": cols.astype("int32"),
            "scene_id": scene.ref.scene_id,
            "datetime": pd.Timestamp(scene.ref.datetime).tz_convert("UTC"),
            "cloud_fraction": cloud[rows, cols].astype("float32"),
            "nodata_fraction": nodata[rows, cols].astype("float32"),
            "x_min": x_min, "y_min": y_min, "x_max": x_max, "y_max": y_max,
            "west": np.asarray(lon_c).min(axis=0) if len(rows) else [],
            "south": np.asarray(lat_c).min(axis=0) if len(rows) else [],
            "east": np.asarray(lon_c).max(axis=0) if len(rows) else [],
            "north": np.asarray(lat_c).max(axis=0) if len(rows) else [],
            "lat": lat, "lon": lon,
            "crs": scene.grid.crs,
            "hrefs": json.dumps(scene.ref.hrefs, sort_keys=True),
        }
    )
    if not len(rows):
        meta = _empty_meta()
    return ChipSet(list(scene.bands), pixels, meta, dropped)


def to_dataset(chips: ChipSet, chip_size: int) -> xr.Dataset:
    """The chip cube as an xarray Dataset (dims chip, band, y, x) with per-chip coordinates."""
    m = chips.meta
    coords = {
        "chip_id": ("chip", m["chip_id"].astype(str).to_numpy(dtype=object)),
        "datetime": ("chip", m["datetime"].dt.tz_localize(None).to_numpy().astype("datetime64[ns]")),
        "band": ("band", np.asarray(chips.bands, dtype=object)),
        "lat": ("chip", m["lat"].to_numpy(float)),
        "lon": ("chip", m["lon"].to_numpy(float)),
        "row": ("chip", m["row"].to_numpy("int32")),
        "col": ("chip", m["col"].to_numpy("int32")),
        "cloud_fraction": ("chip", m["cloud_fraction"].to_numpy("float32")),
        "nodata_fraction": ("chip", m["nodata_fraction"].to_numpy("float32")),
        "bounds": (("chip", "corner"), m[["west", "south", "east", "north"]].to_numpy(float).reshape(-1, 4)),
        "native_bounds": (("chip", "corner"), m[["x_min", "y_min", "x_max", "y_max"]].to_numpy(float).reshape(-1, 4)),
    }
    ds = xr.Dataset({"pixels": (("chip", "band", "y", "x"), chips.pixels)}, coords=coords)
    # Variable-length strings: zarr v3 has no stable spec for fixed-width unicode.
    ds = ds.assign_coords(corner=np.array(["west|x_min", "south|y_min", "east|x_max", "north|y_max"], dtype=object))
    ds.attrs.update(chip_size=chip_size, crs=str(m["crs"].iloc[0]) if len(m) else "", time_zone="UTC")
    return ds


def write_cube(ds: xr.Dataset, path: Path, shard_chips: int = 16) -> None:
    """Zarr v3: one chunk per chip (all bands), ``shard_chips`` chips per stored object, zstd."""
    from zarr.codecs import BloscCodec

    n, c, h, w = ds["pixels"].shape
    chunk = (1, max(c, 1), max(h, 1), max(w, 1))
    shard = (max(1, min(shard_chips, n)), *chunk[1:])
    encoding = {
        "pixels": {
            "chunks": chunk,
            "shards": shard,
            "compressors": [BloscCodec(cname="zstd", clevel=5, shuffle="bitshuffle")],
        }
    }
    ds.to_zarr(path, mode="w", zarr_format=3, consolidated=False, encoding=encoding)


def open_cube(path: Path) -> xr.Dataset:
    """Open a chip cube lazily (pixels stay on disk until indexed)."""
    return xr.open_zarr(path, zarr_format=3, consolidated=False, chunks=None)


def rgb_image(pixels: np.ndarray, bands: list[str], rgb: tuple[str, str, str] = ("red", "green", "blue"),
              scale: float = 3000.0, size: int | None = 64) -> np.ndarray:
    """uint8 RGB [h, w, 3] of one chip, linear stretch 0..scale (reflectance x 10000)."""
    idx = [bands.index(b) for b in rgb if b in bands]
    if len(idx) != 3:
        idx = [0, 0, 0]
    img = np.clip(pixels[idx].astype(np.float32) / scale * 255.0, 0, 255).astype(np.uint8).transpose(1, 2, 0)
    if size and img.shape[0] > size:
        step = img.shape[0] // size
        img = img[::step, ::step]
    return img


def png_bytes(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def mosaic(images: list[np.ndarray], columns: int = 8, pad: int = 2, max_tiles: int = 64) -> np.ndarray:
    """Grid of thumbnails (first ``max_tiles``) on a dark background."""
    images = images[:max_tiles]
    if not images:
        return np.zeros((32, 32, 3), np.uint8)
    h, w, _ = images[0].shape
    cols = min(columns, len(images))
    rows = -(-len(images) // cols)
    out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), 24, np.uint8)
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        out[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + c * (w + pad) : pad + c * (w + pad) + w] = im
    return out


def write_index(chips: ChipSet, path: Path, thumbnails: list[str], cube_uri: str) -> None:
    """GeoParquet chip index: WGS84 polygons plus native bounds, stats and lineage hrefs."""
    import geopandas as gpd
    from shapely import box

    m = chips.meta.copy()
    m["thumbnail"] = thumbnails
    m["cube_uri"] = cube_uri
    geom = [box(w, s, e, n) for w, s, e, n in zip(m["west"], m["south"], m["east"], m["north"])]
    gpd.GeoDataFrame(m, geometry=geom, crs="EPSG:4326").to_parquet(path)


def thumb_name(chip: str, when: datetime | pd.Timestamp) -> str:
    return f"{chip}_{pd.Timestamp(when):%Y%m%dT%H%M%S}.png"

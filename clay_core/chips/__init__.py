"""Cut scenes into fixed chips on the tile grid and store them as Zarr v3 chip cubes.

Chips are ``chip_size`` x ``chip_size`` windows of the tile grid starting at its upper-left
corner, so chip ``<tile>_r<row>c<col>`` is the same ground on every date. Edge pixels that
do not fill a whole chip are dropped (no padding: a padded chip would carry nodata the
encoder never saw in training). Cloud and nodata fractions come from the SCL-like QA band;
chips above the configured thresholds are filtered out.
"""

from __future__ import annotations

import contextlib
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
from clay_core.types import Scene, SceneRef, TileGrid
from clay_core.chips.chipset import (  # noqa: F401  (the package face, until split)
    DEFAULT_CLOUD_CLASSES, DEFAULT_NODATA_CLASSES, _META_COLUMNS, ChipParams, ChipSet, _empty_meta, chip_id,
)

# The classes of clay_core.sources.rio.synthetic_qa (a source without a QA band).
SCL_NODATA, SCL_UNCLASSIFIED = 0, 7


# Scene-sized outputs are allocated like the sources' reads (see clay_core.sources.rio.large_empty).
from clay_core.sources.rio import large_empty  # noqa: E402


def has_value(a: np.ndarray, value: float | int) -> bool:
    """Whether any element of ``a`` equals ``value`` (for 0 in unsigned data: one ``min``
    pass, no boolean temporary)."""
    if a.size == 0:
        return False
    if a.dtype.kind == "u" and value == 0:
        return bool(a.min() == 0)
    return bool((a == value).any())


class _ClassCounter:
    """Per-chip counts of QA pixels whose class is in ``classes`` (uint8 SCL-like QA).

    Runs of consecutive classes are tested with one or two vectorised comparisons into
    reused chip-row-sized buffers (``{1, 3, 8, 9, 10}`` -> ``==1``, ``==3``, ``8<=q<=10``);
    many scattered classes use a 256-entry lookup table. Other QA dtypes fall back to
    ``np.isin``."""

    def __init__(self, classes: tuple[int, ...]) -> None:
        self.classes = tuple(int(c) for c in classes)
        vals = sorted({c for c in self.classes if 0 <= c <= 255})
        runs: list[list[int]] = []
        for v in vals:
            if runs and v == runs[-1][1] + 1:
                runs[-1][1] = v
            else:
                runs.append([v, v])
        self.runs = [(lo, hi) for lo, hi in runs]
        self.lut = np.zeros(256, np.uint8)
        self.lut[vals] = 1

    def mask(self, q: np.ndarray, out: np.ndarray, tmp: np.ndarray, tmp8: np.ndarray) -> np.ndarray:
        """bool mask of ``q`` (uint8) written into ``out``; returns ``out`` viewed as uint8."""
        if len(self.runs) > 6:
            np.take(self.lut, q, out=out.view(np.uint8))
            return out.view(np.uint8)
        for i, (lo, hi) in enumerate(self.runs):
            dst = out if i == 0 else tmp
            if lo == hi:
                np.equal(q, lo, out=dst)
            elif lo == 0:
                np.less_equal(q, hi, out=dst)
            else:
                np.subtract(q, np.uint8(lo), out=tmp8)  # wraps below lo: one comparison per run
                np.less_equal(tmp8, hi - lo, out=dst)
            if i:
                out |= tmp
        return out.view(np.uint8)

    def counts(self, qa: np.ndarray, cs: int) -> np.ndarray:
        """Counts per chip ``[rows, cols]`` of a QA strip ``[rows * cs, cols * cs]``."""
        h, w = qa.shape
        nr, nc = h // cs, w // cs
        res = np.zeros((nr, nc), np.int64)
        if not self.classes or nr == 0 or nc == 0:
            return res
        if qa.dtype != np.uint8:
            for r in range(nr):
                m = np.isin(qa[r * cs : (r + 1) * cs], self.classes)
                res[r] = np.add.reduce(m.view(np.uint8), axis=0, dtype=np.uint32).reshape(nc, cs).sum(1)
            return res
        if not self.runs:
            return res
        out = np.empty((cs, w), bool)
        tmp = np.empty((cs, w), bool)
        tmp8 = np.empty((cs, w), np.uint8)
        for r in range(nr):
            m8 = self.mask(qa[r * cs : (r + 1) * cs], out, tmp, tmp8)
            res[r] = np.add.reduce(m8, axis=0, dtype=np.uint32).reshape(nc, cs).sum(1)
        return res


class _ChipCounter:
    """Exact per-chip pixel counts behind the cloud and nodata fractions: QA pixels in the
    cloud classes, QA pixels in the nodata classes, and pixels equal to ``nodata`` in every
    band. Fractions are ``count / chip_size**2`` in float64, the very value ``mean`` of the
    boolean masks gives."""

    def __init__(self, params: ChipParams, nodata: int | float | None) -> None:
        self.params = params
        self.cs = params.chip_size
        self.n = self.cs * self.cs
        self.cloud = _ClassCounter(params.cloud_classes)
        self.nod = _ClassCounter(params.nodata_classes)
        self.nodata = nodata

    def qa_counts(self, qa: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.cloud.counts(qa, self.cs), self.nod.counts(qa, self.cs)

    def _all_bands_nodata(self, d: np.ndarray) -> int:
        """Pixels of one chip ``[band, cs, cs]`` equal to nodata in every band."""
        e = d[0] == self.nodata
        for b in range(1, d.shape[0]):
            e &= d[b] == self.nodata
        return int(np.count_nonzero(e))

    def data_nodata_chips(self, pix: np.ndarray, which: np.ndarray | None = None) -> np.ndarray:
        """Counts for chips ``pix[i]`` (``[chip, band, cs, cs]``), only those in ``which``."""
        m, nb = pix.shape[0], pix.shape[1]
        idx = np.arange(m) if which is None else np.asarray(which)
        res = np.zeros(m, np.int64)
        if nb == 0:  # all() over no bands is True
            res[idx] = self.n
            return res
        if self.nodata is None or not len(idx):
            return res
        for i in idx.tolist():
            if has_value(pix[i, 0], self.nodata):  # one pass over band 0; usually no hit
                res[i] = self._all_bands_nodata(pix[i])
        return res

    def data_nodata_strip(self, d: np.ndarray) -> np.ndarray:
        """Counts per chip of one chip row of a scene, ``[band, cs, cols * cs]``."""
        nb, _, w = d.shape
        nc = w // self.cs
        if nb == 0:
            return np.full(nc, self.n, np.int64)
        if self.nodata is None or not has_value(d[0], self.nodata):
            return np.zeros(nc, np.int64)
        e = d[0] == self.nodata
        for b in range(1, nb):
            e &= d[b] == self.nodata
        return np.add.reduce(e.view(np.uint8), axis=0, dtype=np.uint32).reshape(nc, self.cs).sum(1).astype(np.int64)

    def synthetic_qa_counts(self, dn: np.ndarray, n_bands: int) -> tuple[np.ndarray, np.ndarray]:
        """Cloud and QA-nodata counts for the QA that ``synthetic_qa`` would give: class 0
        where every band is nodata (``dn`` pixels), class 7 elsewhere."""
        q0 = dn if (self.nodata is not None and n_bands) else np.zeros_like(dn)
        q7 = self.n - q0
        p = self.params
        c0, c7 = int(SCL_NODATA in p.cloud_classes), int(SCL_UNCLASSIFIED in p.cloud_classes)
        n0, n7 = int(SCL_NODATA in p.nodata_classes), int(SCL_UNCLASSIFIED in p.nodata_classes)
        return c0 * q0 + c7 * q7, n0 * q0 + n7 * q7

    def fractions(self, cloud: np.ndarray, qa_nodata: np.ndarray, data_nodata: np.ndarray):
        cf = cloud / self.n
        nf = np.maximum(qa_nodata / self.n, data_nodata / self.n)
        return cf, nf

    def keep(self, cf: np.ndarray, nf: np.ndarray) -> tuple[np.ndarray, int, int]:
        p = self.params
        keep = (cf <= p.max_cloud) & (nf <= p.max_nodata)
        cloudy = int(((cf > p.max_cloud) & (nf <= p.max_nodata)).sum())
        return keep, cloudy, int((nf > p.max_nodata).sum())


def _too_small(scene_id: str, cs: int, h: int, w: int) -> ConfigError:
    return ConfigError(f"chip_size={cs} is larger than scene {scene_id} ({h}x{w} px); use a smaller chip size")


def chip_scene(scene: Scene, params: ChipParams) -> ChipSet:
    """Cut ``scene`` into chips; keep those under the cloud and nodata thresholds.

    Works chip row by chip row (no scene-sized temporaries): per-chip counts of QA
    classes (vectorised comparisons on uint8) and of pixels that are nodata in every band
    (skipped after one pass over band 0 when there are none), then one copy of each kept
    chip into the ``[chip, band, y, x]`` result.
    """
    cs = params.chip_size
    nb, h, w = scene.data.shape
    nr, nc = h // cs, w // cs
    if nr == 0 or nc == 0:
        raise _too_small(scene.ref.scene_id, cs, h, w)
    cnt = _ChipCounter(params, scene.nodata)
    cloud = np.zeros((nr, nc), np.int64)
    qnod = np.zeros((nr, nc), np.int64)
    dn = np.zeros((nr, nc), np.int64)
    for r in range(nr):
        ys = slice(r * cs, (r + 1) * cs)
        c, n = cnt.qa_counts(scene.qa[ys, : nc * cs])
        cloud[r], qnod[r] = c[0], n[0]
        dn[r] = cnt.data_nodata_strip(scene.data[:, ys, : nc * cs])
    cf, nf = cnt.fractions(cloud, qnod, dn)
    keep, cloudy, nodata = cnt.keep(cf, nf)
    rows, cols = np.nonzero(keep)
    pixels = large_empty((len(rows), nb, cs, cs), scene.data.dtype)
    for i, (r, c) in enumerate(zip(rows.tolist(), cols.tolist())):
        pixels[i] = scene.data[:, r * cs : (r + 1) * cs, c * cs : (c + 1) * cs]
    meta = _chips_meta(scene.ref, scene.grid, rows, cols, cf[rows, cols], nf[rows, cols], cs)
    return ChipSet(list(scene.bands), pixels, meta, {"cloudy": cloudy, "nodata": nodata})


def chip_raster_strips(reader, ref: SceneRef, params: ChipParams) -> ChipSet:
    """Read and chip one scene chip row by chip row: ``chip_scene(load_scene(...))`` without
    the ``[band, y, x]`` scene array, reading overlapped with chipping.

    ``reader`` is a :class:`clay_core.sources.rio.ChipRowReader` (or anything with its
    ``grid``, ``bands``, ``dtype``, ``nodata``, ``chip_size``, ``n_rows``, ``n_cols`` and
    ``read_into``), e.g. ``LocalRasterSource.chip_reader(ref, bands, chip_size)``. Chips
    are read straight into one ``[chip, band, y, x]`` buffer; per-chip counts run in the
    reader threads as soon as a unit of chip rows is in; kept chips are packed to the
    front of the buffer in order. Chips whose QA alone puts them over ``max_nodata`` are
    not read at all. Same chips, fractions, metadata and ``dropped`` as ``chip_scene``.
    """
    cs = params.chip_size
    if reader.chip_size != cs:
        raise ValueError(f"reader chips are {reader.chip_size} px, params.chip_size is {cs}")
    grid = reader.grid
    nr, nc, nb = reader.n_rows, reader.n_cols, len(reader.bands)
    if nr == 0 or nc == 0:
        raise _too_small(ref.scene_id, cs, grid.height, grid.width)
    cnt = _ChipCounter(params, reader.nodata)
    out = large_empty((nr * nc, nb, cs, cs), reader.dtype)

    def analyse(r0: int, r1: int, qa: np.ndarray | None, read):
        if qa is None:
            view = read(None)
            dn = cnt.data_nodata_chips(view).reshape(r1 - r0, nc)
            cloud, qnod = cnt.synthetic_qa_counts(dn, nb)
            return cloud, qnod, dn
        cloud, qnod = cnt.qa_counts(qa)
        need = qnod / cnt.n <= params.max_nodata  # else dropped as nodata whatever the pixels say
        view = read(None if need.all() else need)
        dn = cnt.data_nodata_chips(view, np.flatnonzero(need)).reshape(r1 - r0, nc)
        return cloud, qnod, dn

    k = 0
    rows_l, cols_l, cf_l, nf_l = [], [], [], []
    cloudy = nodata = 0
    for r0, _r1, (cloud, qnod, dn) in reader.read_into(out, analyse):
        cf, nf = cnt.fractions(cloud, qnod, dn)
        keep, dc, dnod = cnt.keep(cf, nf)
        cloudy, nodata = cloudy + dc, nodata + dnod
        rr, cc = np.nonzero(keep)
        rows_l.append(rr + r0)
        cols_l.append(cc)
        cf_l.append(cf[rr, cc])
        nf_l.append(nf[rr, cc])
        for s in ((rr + r0) * nc + cc).tolist():  # pack kept chips to the front, in order
            if s != k:
                out[k] = out[s]
            k += 1
    pixels = out[:k]
    if k < 0.75 * len(out):  # do not hold on to the dropped chips' memory
        pixels = large_empty(pixels.shape, pixels.dtype)
        pixels[...] = out[:k]
    del out
    rows = np.concatenate(rows_l) if rows_l else np.zeros(0, np.int64)
    cols = np.concatenate(cols_l) if cols_l else np.zeros(0, np.int64)
    cf = np.concatenate(cf_l) if cf_l else np.zeros(0)
    nf = np.concatenate(nf_l) if nf_l else np.zeros(0)
    meta = _chips_meta(ref, grid, rows, cols, cf, nf, cs)
    return ChipSet(list(reader.bands), pixels, meta, {"cloudy": cloudy, "nodata": nodata})


def chip_source_scene(source, ref: SceneRef, bands: list[str], params: ChipParams,
                      workers: int | None = None) -> ChipSet:  # fmt: skip
    """Load and chip one scene of ``source``: streamed chip row by chip row through
    :func:`chip_raster_strips` when the source has a ``chip_reader`` (LocalRasterSource),
    else ``chip_scene(source.load_scene(ref, bands), params)``. Same result either way."""
    make = getattr(source, "chip_reader", None)
    if make is None:
        return chip_scene(source.load_scene(ref, list(bands)), params)
    kw = {} if workers is None else {"workers": workers}
    return chip_raster_strips(make(ref, list(bands), params.chip_size, **kw), ref, params)


def _chips_meta(ref: SceneRef, grid: TileGrid, rows: np.ndarray, cols: np.ndarray, cloud: np.ndarray,
                nodata: np.ndarray, cs: int) -> pd.DataFrame:  # fmt: skip
    """One row per kept chip (see _META_COLUMNS): ids, native and WGS84 bounds, centre, stats."""
    if not len(rows):
        return _empty_meta()
    t = grid.transform
    x_min = t.c + cols * cs * t.a
    x_max = x_min + cs * t.a
    y_max = t.f + rows * cs * t.e
    y_min = y_max + cs * t.e
    to_wgs84 = Transformer.from_crs(grid.crs, 4326, always_xy=True)
    corners_x = np.stack([x_min, x_max, x_min, x_max])
    corners_y = np.stack([y_min, y_min, y_max, y_max])
    lon_c, lat_c = to_wgs84.transform(corners_x, corners_y)
    lon, lat = to_wgs84.transform((x_min + x_max) / 2, (y_min + y_max) / 2)
    tile = ref.tile
    return pd.DataFrame(
        {
            "chip_id": [chip_id(tile, r, c) for r, c in zip(rows.tolist(), cols.tolist())],
            "tile": tile,
            "row": rows.astype("int32"),
            "col": cols.astype("int32"),
            "scene_id": ref.scene_id,
            "datetime": pd.Timestamp(ref.datetime).tz_convert("UTC"),
            "cloud_fraction": np.asarray(cloud).astype("float32"),
            "nodata_fraction": np.asarray(nodata).astype("float32"),
            "x_min": x_min, "y_min": y_min, "x_max": x_max, "y_max": y_max,
            "west": np.asarray(lon_c).min(axis=0),
            "south": np.asarray(lat_c).min(axis=0),
            "east": np.asarray(lon_c).max(axis=0),
            "north": np.asarray(lat_c).max(axis=0),
            "lat": lat, "lon": lon,
            "crs": grid.crs,
            "hrefs": json.dumps(ref.hrefs, sort_keys=True),
        }
    )  # fmt: skip


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


#: zstd level of the cube's BloscCodec (bitshuffle). 3 writes a full Sentinel-2 tile's chips
#: about 25-30% faster than 5 for ~2% more bytes (docs/chipping.md).
CUBE_CLEVEL = 3
#: The object that publishes an S3 cube (see write_cube).
POINTER_NAME = "pointer.json"
POINTER_FORMAT = "clay-cube-pointer/1"


def _cube_encoding(ds: xr.Dataset, shard_chips: int, clevel: int) -> dict:
    from zarr.codecs import BloscCodec

    n, c, h, w = ds["pixels"].shape
    chunk = (1, max(c, 1), max(h, 1), max(w, 1))
    shard = (max(1, min(shard_chips, n)), *chunk[1:])
    return {
        "pixels": {
            "chunks": chunk,
            "shards": shard,
            "compressors": [BloscCodec(cname="zstd", clevel=clevel, shuffle="bitshuffle")],
        }
    }


def write_cube(ds: xr.Dataset, path: Path | str, shard_chips: int = 16, *, clevel: int = CUBE_CLEVEL,
               storage_options: dict | None = None) -> str:  # fmt: skip
    """Zarr v3: one chunk per chip (all bands), ``shard_chips`` chips per stored object, zstd
    (BloscCodec, bitshuffle, level ``clevel``). Returns the cube's URI.

    ``path`` is a local directory (replaced; the caller's ``atomic_dir`` makes the switch
    atomic) or ``s3://bucket/key``: the cube is written under the fresh prefix
    ``key.v-<uuid>/`` and published by writing ``key/pointer.json`` last (one PUT: readers
    see the old cube or the new one, never a half-written one); the cube the previous
    pointer named is then deleted. ``storage_options``: ``{"client": <boto3 S3 client>}``
    or ``boto3.client("s3", ...)`` keyword arguments (``endpoint_url``, ``region_name``,
    credentials). :func:`open_cube` follows the pointer.
    """
    encoding = _cube_encoding(ds, shard_chips, clevel)
    if isinstance(path, str) and path.startswith("s3://"):
        return _write_cube_s3(ds, path, encoding, storage_options or {})
    ds.to_zarr(path, mode="w", zarr_format=3, consolidated=False, encoding=encoding)
    return str(path)


def open_cube(path: Path | str, storage_options: dict | None = None) -> xr.Dataset:
    """Open a chip cube lazily (pixels stay on disk until indexed); ``s3://`` through its pointer."""
    if isinstance(path, str) and path.startswith("s3://"):
        client = _s3_client(storage_options or {})
        bucket, key = _split_s3(path)
        target = _read_pointer(client, bucket, key)
        if target is None:
            raise FileNotFoundError(f"no chip cube at {path}: {key}/{POINTER_NAME} does not exist (not published)")
        store = S3Store(client, bucket, target["prefix"], read_only=True)
        return xr.open_zarr(store, zarr_format=3, consolidated=False, chunks=None)
    return xr.open_zarr(path, zarr_format=3, consolidated=False, chunks=None)


# --------------------------------------------------------------------------- S3 cubes


def _split_s3(url: str) -> tuple[str, str]:
    rest = url[len("s3://") :]
    bucket, _, key = rest.partition("/")
    key = key.strip("/")
    if not bucket or not key:
        raise ConfigError(f"{url!r} is not an s3://bucket/key URI for a chip cube")
    return bucket, key


def _s3_client(options: dict):
    if options.get("client") is not None:
        return options["client"]
    import boto3

    return boto3.client("s3", **{k: v for k, v in options.items() if k != "client"})


def _read_pointer(client, bucket: str, key: str) -> dict | None:
    try:
        body = client.get_object(Bucket=bucket, Key=f"{key}/{POINTER_NAME}")["Body"].read()
    except client.exceptions.NoSuchKey:
        return None
    except Exception as exc:  # noqa: BLE001 - a 404 on some S3-compatible stores
        if getattr(exc, "response", {}).get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return None
        raise
    ptr = json.loads(body)
    if ptr.get("format") != POINTER_FORMAT or not str(ptr.get("prefix", "")).startswith(f"{key}.v-"):
        raise ValueError(f"s3://{bucket}/{key}/{POINTER_NAME} is not a chip cube pointer: {ptr!r}")
    return ptr


def _delete_prefix(client, bucket: str, prefix: str) -> None:
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        for i in range(0, len(keys), 1000):
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys[i : i + 1000], "Quiet": True})


def _write_cube_s3(ds: xr.Dataset, url: str, encoding: dict, options: dict) -> str:
    import uuid

    client = _s3_client(options)
    bucket, key = _split_s3(url)
    version = f"{key}.v-{pd.Timestamp.now('UTC'):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    store = S3Store(client, bucket, version)
    try:
        ds.to_zarr(store, mode="w", zarr_format=3, consolidated=False, encoding=encoding)
    except BaseException:
        store.abort_writes()  # zarr's other write tasks may still be running
        with contextlib.suppress(Exception):  # best effort: nothing points at it anyway
            _delete_prefix(client, bucket, version + "/")
        raise
    old = _read_pointer(client, bucket, key)
    pointer = {"format": POINTER_FORMAT, "prefix": version, "chips": int(ds.sizes.get("chip", 0)),
               "written": pd.Timestamp.now("UTC").isoformat()}  # fmt: skip
    client.put_object(Bucket=bucket, Key=f"{key}/{POINTER_NAME}", Body=json.dumps(pointer).encode(),
                      ContentType="application/json")  # fmt: skip
    if old is not None and old["prefix"] != version:
        _delete_prefix(client, bucket, old["prefix"] + "/")
    return url


class _WriteGate:
    """Counts writes in flight; once aborted, refuses new ones."""

    def __init__(self) -> None:
        import threading

        self._cond = threading.Condition()
        self._pending = 0
        self._aborted = False

    def run(self, where: str, fn, *args, **kwargs):
        with self._cond:
            if self._aborted:
                raise OSError(f"writes to {where} were aborted after an earlier failure")
            self._pending += 1
        try:
            return fn(*args, **kwargs)
        finally:
            with self._cond:
                self._pending -= 1
                self._cond.notify_all()

    def abort(self, timeout: float) -> bool:
        with self._cond:
            self._aborted = True
            return self._cond.wait_for(lambda: self._pending == 0, timeout)


try:
    from zarr.abc.store import OffsetByteRequest, RangeByteRequest, Store, SuffixByteRequest
except ImportError:  # pragma: no cover - zarr 2
    Store = object  # type: ignore[assignment,misc]


class S3Store(Store):  # type: ignore[misc,valid-type]
    """A zarr v3 store on one S3 prefix through a boto3 client (thread-safe; calls run in
    threads). Whole-object PUTs (zarr writes each shard in one piece), ranged GETs for
    shard indexes and chunks, listing with ``list_objects_v2``."""

    supports_writes = True
    supports_deletes = True
    supports_listing = True
    supports_partial_writes = False

    def __init__(self, client, bucket: str, prefix: str, *, read_only: bool = False,
                 _gate: "_WriteGate | None" = None) -> None:
        super().__init__(read_only=read_only)
        self.client, self.bucket, self.prefix = client, bucket, prefix.strip("/")
        self._gate = _gate or _WriteGate()  # shared with with_read_only() copies

    def with_read_only(self, read_only: bool = False) -> "S3Store":
        return type(self)(self.client, self.bucket, self.prefix, read_only=read_only, _gate=self._gate)

    def abort_writes(self, timeout: float = 120.0) -> bool:
        """Refuse further writes and wait for the PUTs in flight.  After a failed write zarr's
        other write tasks keep running, so cleaning up before they finish would leave debris."""
        return self._gate.abort(timeout)

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, S3Store) and (self.bucket, self.prefix, self.read_only)
                == (other.bucket, other.prefix, other.read_only))  # fmt: skip

    def __repr__(self) -> str:
        return f"S3Store('s3://{self.bucket}/{self.prefix}')"

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if key else self.prefix

    @staticmethod
    def _range(byte_range) -> str | None:
        if byte_range is None:
            return None
        if isinstance(byte_range, RangeByteRequest):
            return f"bytes={byte_range.start}-{byte_range.end - 1}"
        if isinstance(byte_range, OffsetByteRequest):
            return f"bytes={byte_range.offset}-"
        if isinstance(byte_range, SuffixByteRequest):
            return f"bytes=-{byte_range.suffix}"
        raise TypeError(f"unexpected byte range {byte_range!r}")

    def _get(self, key: str, byte_range) -> bytes | None:
        kw = {"Bucket": self.bucket, "Key": self._key(key)}
        rng = self._range(byte_range)
        if rng is not None:
            if isinstance(byte_range, RangeByteRequest) and byte_range.end <= byte_range.start:
                return b""
            kw["Range"] = rng
        try:
            return self.client.get_object(**kw)["Body"].read()
        except Exception as exc:  # noqa: BLE001
            code = getattr(exc, "response", {}).get("Error", {}).get("Code")
            if code in ("NoSuchKey", "404", "NotFound"):
                return None
            raise

    async def get(self, key: str, prototype=None, byte_range=None):
        import asyncio

        from zarr.core.buffer.core import default_buffer_prototype

        prototype = prototype or default_buffer_prototype()
        data = await asyncio.to_thread(self._get, key, byte_range)
        return None if data is None else prototype.buffer.from_bytes(data)

    async def get_partial_values(self, prototype, key_ranges):
        import asyncio

        return list(await asyncio.gather(*[self.get(k, prototype, r) for k, r in key_ranges]))

    async def exists(self, key: str) -> bool:
        import asyncio

        def head() -> bool:
            try:
                self.client.head_object(Bucket=self.bucket, Key=self._key(key))
                return True
            except Exception as exc:  # noqa: BLE001
                if getattr(exc, "response", {}).get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                    return False
                raise

        return await asyncio.to_thread(head)

    async def set(self, key: str, value) -> None:
        import asyncio

        self._check_writable()
        body = value.to_bytes()
        await asyncio.to_thread(self._gate.run, f"s3://{self.bucket}/{self.prefix}",
                                self.client.put_object, Bucket=self.bucket, Key=self._key(key), Body=body)

    async def delete(self, key: str) -> None:
        import asyncio

        self._check_writable()
        await asyncio.to_thread(self.client.delete_object, Bucket=self.bucket, Key=self._key(key))

    def _list(self, prefix: str, delimiter: bool) -> list[str]:
        base = self.prefix + "/"
        full = base + prefix
        kw = {"Bucket": self.bucket, "Prefix": full}
        if delimiter:
            kw["Delimiter"] = "/"
        out = []
        for page in self.client.get_paginator("list_objects_v2").paginate(**kw):
            out += [o["Key"][len(base) :] for o in page.get("Contents", [])]
            out += [p["Prefix"][len(base) :] for p in page.get("CommonPrefixes", [])]
        return out

    async def list(self):
        import asyncio

        for k in await asyncio.to_thread(self._list, "", False):
            yield k

    async def list_prefix(self, prefix: str):
        import asyncio

        for k in await asyncio.to_thread(self._list, prefix, False):
            yield k

    async def list_dir(self, prefix: str):
        import asyncio

        prefix = prefix.rstrip("/")
        pre = f"{prefix}/" if prefix else ""
        seen = set()
        for k in await asyncio.to_thread(self._list, pre, True):
            name = k[len(pre) :].rstrip("/").split("/")[0]
            if name and name not in seen:
                seen.add(name)
                yield name


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

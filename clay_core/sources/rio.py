"""Shared raster helpers for the scene sources.

- :func:`gdal_env_options` / :func:`gdal_env`: the GDAL configuration used for every remote
  read (``https://`` and ``s3://``), including a local S3-compatible endpoint
  (``AWS_S3_ENDPOINT`` + ``AWS_HTTPS=NO`` + ``AWS_VIRTUAL_HOSTING=FALSE``), anonymous
  access (``AWS_NO_SIGN_REQUEST=YES``) and requester-pays buckets
  (``AWS_REQUEST_PAYER=requester``). Credentials are never put in the options: when a
  request must be signed GDAL takes them from the usual ``AWS_*`` environment variables
  or ``~/.aws`` files.
- :func:`read_to_grid`: read bands of an open raster onto a target :class:`TileGrid`
  (same CRS, north-up) with windowed reads; a coarser band (20 m) is brought to the
  grid (10 m) with the requested resampling (bilinear for reflectance, nearest for
  classification bands). Parts of the grid the raster does not cover get ``fill``.
  A raster in a different CRS raises :class:`SceneError` naming both CRSs -- there is no
  silent reprojection.
- :func:`open_raster`: ``rasterio.open`` that turns every GDAL failure (missing,
  truncated or corrupt file, unreachable URL, timeout) into a :class:`SceneError` that
  names the file (URLs redacted: no user info, no signatures / tokens).
- Sentinel-2 band-name aliases and QA helpers (``landsat_qa_to_scl``,
  ``synthetic_qa``) so that ``Scene.qa`` is always a Sentinel-2-SCL-like ``uint8`` array.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from clay_core.errors import ConfigError, SceneError
from clay_core.types import TileGrid

# --------------------------------------------------------------------------- names

#: Sentinel-2 band ids (with and without the leading zero) -> the Clay band names.
S2_BAND_ALIASES: dict[str, str] = {
    "B01": "coastal", "B1": "coastal",
    "B02": "blue", "B2": "blue",
    "B03": "green", "B3": "green",
    "B04": "red", "B4": "red",
    "B05": "rededge1", "B5": "rededge1",
    "B06": "rededge2", "B6": "rededge2",
    "B07": "rededge3", "B7": "rededge3",
    "B08": "nir", "B8": "nir",
    "B8A": "nir08", "B08A": "nir08",
    "B09": "nir09", "B9": "nir09",
    "B11": "swir16",
    "B12": "swir22",
    "SCL": "scl",
}  # fmt: skip

#: Landsat Collection 2 band ids -> Clay band names (OLI numbering).
LANDSAT_BAND_ALIASES: dict[str, str] = {
    "SR_B1": "coastal", "SR_B2": "blue", "SR_B3": "green", "SR_B4": "red",
    "SR_B5": "nir08", "SR_B6": "swir16", "SR_B7": "swir22", "QA_PIXEL": "qa_pixel",
}  # fmt: skip

PLATFORM_ALIASES: dict[str, dict[str, str]] = {
    "sentinel-2-l2a": S2_BAND_ALIASES,
    "landsat-c2l2-sr": LANDSAT_BAND_ALIASES,
}


def canonical_band(name: str, platform: str, aliases: dict[str, str] | None = None) -> str:
    """The Clay band name of a file/variable/asset band token (case-insensitive aliases)."""
    table = {k.upper(): v for k, v in PLATFORM_ALIASES.get(platform, {}).items()}
    table.update({k.upper(): v for k, v in (aliases or {}).items()})
    canon = {v.upper(): v for v in table.values()}
    key = name.upper()
    return table.get(key) or canon.get(key) or name


# --------------------------------------------------------------------------- QA

#: Sentinel-2 SCL classes used to describe QA of every source.
SCL_NODATA, SCL_DEFECTIVE, SCL_SHADOW, SCL_VEGETATION = 0, 1, 3, 4
SCL_WATER, SCL_UNCLASSIFIED, SCL_CLOUD_MEDIUM, SCL_CLOUD_HIGH = 6, 7, 8, 9
SCL_CIRRUS, SCL_SNOW = 10, 11
QA_FORMATS = ("scl", "landsat_qa_pixel")


def landsat_qa_to_scl(qa_pixel: np.ndarray) -> np.ndarray:
    """Landsat Collection 2 ``QA_PIXEL`` bit flags -> a Sentinel-2-SCL-like ``uint8`` array.

    Bits (USGS C2 L2): 0 fill, 1 dilated cloud, 2 cirrus, 3 cloud, 4 cloud shadow,
    5 snow, 6 clear, 7 water. Precedence (first match wins):

    ====================  ======================
    fill (bit 0)          0  no data
    cloud (bit 3)         9  cloud high prob.
    dilated cloud (bit 1) 8  cloud medium prob.
    cloud shadow (bit 4)  3  cloud shadow
    cirrus (bit 2)        10 thin cirrus
    snow (bit 5)          11 snow
    water (bit 7)         6  water
    anything else         4  clear (vegetation)
    ====================  ======================

    So the chipper's default cloud set {1, 3, 8, 9, 10} and nodata {0} mean the same
    thing for Landsat as for Sentinel-2.
    """
    q = np.asarray(qa_pixel)
    if q.dtype.kind not in "ui":
        if q.dtype.kind == "f":
            q = np.nan_to_num(q, nan=1.0)  # NaN -> fill
        q = q.astype(np.uint16)
    out = np.full(q.shape, SCL_VEGETATION, dtype=np.uint8)
    # apply lowest precedence first so later assignments win
    for bit, cls in ((7, SCL_WATER), (5, SCL_SNOW), (2, SCL_CIRRUS), (4, SCL_SHADOW),
                     (1, SCL_CLOUD_MEDIUM), (3, SCL_CLOUD_HIGH), (0, SCL_NODATA)):  # fmt: skip
        out[(q >> bit) & 1 == 1] = cls
    return out


def to_scl(qa: np.ndarray, qa_format: str = "scl") -> np.ndarray:
    """A QA band in ``qa_format`` -> SCL-like uint8 (NaN and out-of-range -> 0 nodata)."""
    if qa_format == "landsat_qa_pixel":
        return landsat_qa_to_scl(qa)
    if qa_format != "scl":
        raise ConfigError(f"unknown qa_format {qa_format!r}: expected one of {QA_FORMATS}")
    q = np.asarray(qa)
    if q.dtype == np.uint8:
        return q
    if q.dtype.kind == "f":
        q = np.where(np.isfinite(q), q, 0)
    return np.where((q >= 0) & (q <= 255), q, 0).astype(np.uint8)


def qa_fill(qa_format: str = "scl") -> int:
    """Raw QA value meaning "no data" in ``qa_format`` (SCL 0; Landsat QA_PIXEL 1 = fill bit)."""
    return 1 if qa_format == "landsat_qa_pixel" else 0


#: Arrays at least this big are allocated with an anonymous ``mmap`` (see large_empty).
LARGE_ARRAY_BYTES = 32 << 20
#: Map the pages of large arrays up front (Linux MAP_POPULATE: one kernel pass instead of a
#: fault per 4 KiB page, about half the CPU time of touching them one by one).
POPULATE = True


def large_empty(shape, dtype) -> np.ndarray:
    """``np.empty`` for scene-sized arrays, backed by an anonymous ``mmap``.

    numpy asks for transparent huge pages on big allocations (``MADV_HUGEPAGE``); where
    the kernel then has to assemble and zero 2 MiB pages on first touch (THP
    ``defrag=madvise``, fragmented memory, VMs), filling a fresh 1 GB array took 1.5-3 s
    against ~0.4 s with ordinary pages (docs/chipping.md). The memory is returned when the
    array (its last view) goes away."""
    dt = np.dtype(dtype)
    n = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
    if n < LARGE_ARRAY_BYTES:
        return np.empty(shape, dt)
    import mmap

    kw = {}
    if hasattr(mmap, "MAP_PRIVATE"):  # private (not shared with forks), pages mapped up front
        kw["flags"] = mmap.MAP_PRIVATE | (getattr(mmap, "MAP_POPULATE", 0) if POPULATE else 0)
    return np.frombuffer(mmap.mmap(-1, n, **kw), dt).reshape(shape)


def synthetic_qa(data: np.ndarray, nodata: float | int | None) -> np.ndarray:
    """SCL-like QA for a source without a QA band: 0 (no data) where every band equals
    ``nodata``, else 7 (unclassified: neither cloud nor nodata for the chipper)."""
    qa = np.full(data.shape[1:], SCL_UNCLASSIFIED, dtype=np.uint8)
    if nodata is not None and data.shape[0]:
        for r in range(0, data.shape[1], 512):  # row chunks: no scene-sized temporaries
            if not has_value(data[0, r : r + 512], nodata):  # the common case: one cheap pass
                continue
            empty = data[0, r : r + 512] == nodata
            for b in range(1, data.shape[0]):
                empty &= data[b, r : r + 512] == nodata
            qa[r : r + 512][empty] = SCL_NODATA
    return qa


def has_value(a: np.ndarray, value: float | int) -> bool:
    """Whether any element of ``a`` equals ``value`` (a ``min`` pass for 0 in unsigned data,
    no boolean temporary)."""
    if a.size == 0:
        return False
    if a.dtype.kind == "u" and value == 0:
        return bool(a.min() == 0)
    return bool((a == value).any())


# --------------------------------------------------------------------------- redaction

_SECRET_QS = re.compile(
    r"(?i)\b((?:x-amz-)?(?:signature|security-token|credential|token|sig|se|sv|skoid|sktid|"
    r"skt|ske|sks|skv|key|apikey|api_key|access_token|password|secret))=[^&\s'\"]+"
)
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s'\"]+@")


def redact(text: str) -> str:
    """Remove user info and signature/token query values from URLs inside ``text``."""
    return _SECRET_QS.sub(r"\1=***", _USERINFO.sub(r"\1", str(text)))


# --------------------------------------------------------------------------- GDAL env


def _split_endpoint(endpoint: str) -> tuple[str, bool]:
    parts = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(
            f"s3_endpoint {redact(endpoint)!r} is not a URL such as 'http://127.0.0.1:9000' "
            "or 'https://s3.example.com'"
        )
    host = parts.netloc.rsplit("@", 1)[-1]
    return host + parts.path.rstrip("/"), parts.scheme == "https"


def gdal_env_options(
    s3_endpoint: str | None = None,
    aws_anonymous: bool = True,
    requester_pays: bool = False,
    timeout: float = 20,
    aws_region: str | None = None,
    max_retry: int = 2,
) -> dict[str, Any]:
    """GDAL config options for reading COGs over ``https://`` and ``s3://``."""
    t = max(1, int(math.ceil(float(timeout))))
    opts: dict[str, Any] = {
        "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",  # no directory listing per file
        "GDAL_HTTP_TIMEOUT": t,
        "GDAL_HTTP_CONNECTTIMEOUT": t,
        "GDAL_HTTP_MAX_RETRY": int(max_retry),  # retried on 429/5xx only
        "GDAL_HTTP_RETRY_DELAY": 0.5,
        "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
        "GDAL_HTTP_MULTIPLEX": "YES",
        "VSI_CACHE": "TRUE",
        # no cross-open cache of remote files: a failed (e.g. unsigned) attempt or a
        # re-uploaded object must not be remembered for the life of the process
        "CPL_VSIL_CURL_NON_CACHED": "/vsis3/:/vsicurl/:/vsigs/:/vsiaz/",
    }
    if s3_endpoint:
        host, https = _split_endpoint(s3_endpoint)
        opts["AWS_S3_ENDPOINT"] = host
        opts["AWS_HTTPS"] = "YES" if https else "NO"
        opts["AWS_VIRTUAL_HOSTING"] = "FALSE"  # path-style: http://host/bucket/key
    if aws_anonymous:
        opts["AWS_NO_SIGN_REQUEST"] = "YES"
    else:
        opts["AWS_NO_SIGN_REQUEST"] = "NO"
    if requester_pays:
        opts["AWS_REQUEST_PAYER"] = "requester"
    if aws_region:
        opts["AWS_REGION"] = aws_region
    return opts


@contextmanager
def gdal_env(**kwargs: Any) -> Iterator[rasterio.Env]:
    """``rasterio.Env`` with :func:`gdal_env_options` (no boto3 session lookups)."""
    from rasterio.session import DummySession

    with rasterio.Env(session=DummySession(), **gdal_env_options(**kwargs)) as env:
        yield env


# --------------------------------------------------------------------------- open / read


@contextmanager
def open_raster(href: str, what: str = "", **options: Any) -> Iterator[rasterio.io.DatasetReader]:
    """``rasterio.open(href, **options)``; a GDAL failure -> SceneError naming the (redacted) file."""
    label = redact(href)
    try:
        src = rasterio.open(href, **options)
    except (RasterioError, OSError) as exc:
        raise SceneError(
            f"cannot open raster {label}{f' ({what})' if what else ''}: {redact(exc)} -- "
            "the file is missing, truncated, not a GeoTIFF/COG, or the server did not answer"
        ) from exc
    try:
        yield src
    finally:
        src.close()


def grid_of(src: rasterio.io.DatasetReader, tile: str) -> TileGrid:
    """The pixel grid of an open raster as a TileGrid for ``tile``."""
    return TileGrid(tile=tile, crs=crs_string(src.crs), transform=src.transform,
                    height=src.height, width=src.width)  # fmt: skip


def _pyproj_crs(crs: Any):
    """pyproj CRS of anything rasterio / pyproj accept; a BoundCRS whose TOWGS84 is all
    zeros (common in CF ``spatial_ref`` WKT, e.g. ETRS89 / LAEA) is its source CRS."""
    import pyproj

    pc = pyproj.CRS.from_user_input(crs.to_wkt() if isinstance(crs, CRS) else crs)
    if pc.is_bound:
        op = pc.coordinate_operation
        if op is not None and all(float(p.value) == 0.0 for p in op.params):
            pc = pc.source_crs
    return pc


def _same_coordinates(a: Any, b: Any) -> bool:
    """True when the a -> b transformation is the identity on points of b's area of use."""
    from pyproj import Transformer

    try:
        area = b.area_of_use
        w, s, e, n = area.bounds if area else (-10.0, -10.0, 10.0, 10.0)
        lons = [w + (e - w) * f for f in (0.3, 0.5, 0.7)]
        lats = [s + (n - s) * f for f in (0.3, 0.5, 0.7)]
        to_b = Transformer.from_crs("EPSG:4326", b, always_xy=True)
        a_to_b = Transformer.from_crs(a, b, always_xy=True)
        tol = 1e-9 if b.is_geographic else 1e-3
        for lon, lat in zip(lons, lats, strict=True):
            x, y = to_b.transform(lon, lat)
            x2, y2 = a_to_b.transform(x, y)
            if not (abs(x2 - x) <= tol and abs(y2 - y) <= tol):
                return False
        return True
    except Exception:  # noqa: BLE001 - no transformation: not the same
        return False


def epsg_code(crs: Any) -> int | None:
    """EPSG code of a CRS. A WKT that declares an EPSG id (or that PROJ matches with low
    confidence, e.g. a CF ``spatial_ref`` with TOWGS84 or other names) gets that code
    when it gives the same coordinates."""
    import pyproj

    pc = _pyproj_crs(crs)
    code = pc.to_epsg()
    if code:
        return int(code)
    candidates = []
    ident = pc.to_json_dict().get("id") or {}
    if str(ident.get("authority", "")).upper() == "EPSG":
        candidates.append(int(ident["code"]))
    low = pc.to_epsg(min_confidence=20)
    if low:
        candidates.append(int(low))
    for c in candidates:
        if _same_coordinates(pc, pyproj.CRS.from_epsg(c)):
            return c
    return None


def crs_string(crs: Any) -> str:
    """'EPSG:nnnn' when the CRS has an EPSG code, else its WKT."""
    if crs is None:
        return ""
    epsg = epsg_code(crs)
    return f"EPSG:{epsg}" if epsg else _pyproj_crs(crs).to_wkt()


def same_crs(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return False
    ca, cb = _pyproj_crs(a), _pyproj_crs(b)
    if ca == cb:
        return True
    ea, eb = epsg_code(ca), epsg_code(cb)
    return ea is not None and ea == eb


def _snap(v: float, tol: float = 1e-6) -> float:
    r = round(v)
    return float(r) if abs(v - r) < tol else v


def read_to_grid(
    src: rasterio.io.DatasetReader,
    grid: TileGrid,
    indexes: int | Sequence[int] = 1,
    resampling: Resampling = Resampling.nearest,
    fill: float | int = 0,
    label: str | None = None,
    workers: int = 1,
    open_options: dict[str, Any] | None = None,
) -> np.ndarray:
    """Read band(s) ``indexes`` of ``src`` onto ``grid``; returns [y, x] or [band, y, x].

    A raster covering the whole grid is read in block-aligned strips straight into the
    result (one huge RasterIO call is slower than many small ones); ``workers`` > 1 reads
    the strips in threads, each with its own handle (``rasterio.open(src.name,
    **open_options)``, local files; GDAL releases the GIL while decoding).

    ``src`` must be in the grid's CRS (else SceneError naming both CRSs) and north-up.
    Same resolution and aligned -> plain windowed read (exact values); a different
    resolution -> windowed read with ``out_shape`` and ``resampling`` (pixel-centre
    correct, neighbours outside the window are used); grid pixels whose centre falls
    outside the raster get ``fill``, as do pixels equal to the raster's own nodata.
    """
    name = redact(label or src.name)
    check_on_grid(src, grid, name)
    return _read_onto_grid(src, grid, indexes, resampling, fill, name, workers, open_options)


def check_on_grid(src: rasterio.io.DatasetReader, grid: TileGrid, name: str) -> None:
    """SceneError unless ``src`` is in the grid's CRS and north-up (what read_to_grid needs)."""
    if src.crs is None or not same_crs(src.crs, grid.crs):
        raise SceneError(
            f"{name} is in {crs_string(src.crs) or 'no CRS'} but tile {grid.tile} is on a "
            f"{grid.crs} grid: sources do not reproject silently -- give this tile its own "
            "grid or reproject the file"
        )
    st, gt = src.transform, grid.transform
    if st.b != 0 or st.d != 0 or st.a <= 0 or st.e >= 0 or gt.b != 0 or gt.d != 0:
        raise SceneError(f"{name}: only north-up rasters are supported (transform {tuple(st)[:6]})")


def _read_onto_grid(src, grid, indexes, resampling, fill, name, workers=1, open_options=None) -> np.ndarray:
    """read_to_grid after check_on_grid (``name``: the redacted label for messages)."""
    st, gt = src.transform, grid.transform
    single = isinstance(indexes, int)
    idx = [indexes] if single else list(indexes)
    dtype = np.result_type(*[src.dtypes[i - 1] for i in idx])

    # grid pixel (col,row) -> source pixel: scale + offset only
    t = ~st @ gt
    sx, ox, sy, oy = _snap(t.a), _snap(t.c), _snap(t.e), _snap(t.f)
    # source extent in grid pixels; a grid pixel is covered when its centre is inside
    g0c, g1c = (0 - ox) / sx, (src.width - ox) / sx
    g0r, g1r = (0 - oy) / sy, (src.height - oy) / sy
    c0, c1 = max(0, math.ceil(_snap(g0c - 0.5))), min(grid.width, math.ceil(_snap(g1c - 0.5)))
    r0, r1 = max(0, math.ceil(_snap(g0r - 0.5))), min(grid.height, math.ceil(_snap(g1r - 0.5)))
    full = (r0, c0, r1, c1) == (0, 0, grid.height, grid.width)
    out = large_empty((len(idx), grid.height, grid.width), dtype)
    if not full:  # the common case (full) reads straight into the result, no fill, no copy
        out[...] = fill
    if c1 <= c0 or r1 <= r0:
        return out[0] if single else out
    win = Window(_snap(sx * c0 + ox), _snap(sy * r0 + oy), _snap(sx * (c1 - c0)), _snap(sy * (r1 - r0)))
    shape = (len(idx), r1 - r0, c1 - c0)
    inside = (win.col_off >= 0 and win.row_off >= 0 and win.col_off + win.width <= src.width
              and win.row_off + win.height <= src.height)  # fmt: skip
    try:
        if inside and full and out.dtype == np.dtype(src.dtypes[idx[0] - 1]) and len(set(src.dtypes)) == 1:
            part = _read_strips(src, idx, out, sx, ox, sy, oy, resampling, workers, open_options)
        elif inside:
            part = src.read(idx, window=win, out_shape=shape, resampling=resampling)
        else:  # grid edge not aligned with the raster edge: let the warper clip exactly
            sub = Affine(gt.a, 0, gt.c + c0 * gt.a, 0, gt.e, gt.f + r0 * gt.e)
            with WarpedVRT(src, crs=src.crs, transform=sub, width=c1 - c0, height=r1 - r0,
                           resampling=resampling, nodata=src.nodata if src.nodata is not None else fill,
                           ) as vrt:  # fmt: skip
                part = vrt.read(idx)
    except (RasterioError, OSError) as exc:
        raise SceneError(
            f"cannot read {name}: {redact(exc)} -- the file is truncated or corrupt, or the "
            "server stopped answering"
        ) from exc
    if src.nodata is not None and not (isinstance(src.nodata, float) and math.isnan(src.nodata)):
        if src.nodata != fill:
            part = np.where(part == np.asarray(src.nodata).astype(part.dtype), fill, part)
    elif src.nodata is not None and part.dtype.kind == "f":
        part = np.where(np.isnan(part), fill, part)
    if part is not out:
        out[:, r0:r1, c0:c1] = part
    return out[0] if single else out


#: Grid rows per strip of a full-grid read (rounded to whole source blocks).
STRIP_ROWS = 1024


def _read_strips(src, idx, out, sx, ox, sy, oy, resampling, workers, open_options) -> np.ndarray:
    """Fill ``out`` [band, H, W] (grid pixels) from ``src`` strip by strip."""
    height = out.shape[1]
    block_rows = max(1, src.block_shapes[0][0]) if src.block_shapes else 256
    src_rows = max(block_rows, int(math.ceil(STRIP_ROWS * abs(sy) / block_rows)) * block_rows)
    rows = max(1, int(round(src_rows / abs(sy))))  # grid rows per strip
    strips = [(r, min(height, r + rows)) for r in range(0, height, rows)]
    width_src = _snap(sx * out.shape[2])

    def read(ds, a: int, b: int) -> None:
        win = Window(_snap(ox), _snap(sy * a + oy), width_src, _snap(sy * (b - a)))
        ds.read(idx, window=win, out=out[:, a:b, :], resampling=resampling)

    if workers <= 1 or len(strips) < 2:
        for a, b in strips:
            read(src, a, b)
        return out
    from concurrent.futures import ThreadPoolExecutor

    chunks = [strips[i::workers] for i in range(min(workers, len(strips)))]

    def run(chunk) -> None:
        with rasterio.open(src.name, **(open_options or {})) as ds:
            for a, b in chunk:
                read(ds, a, b)

    with ThreadPoolExecutor(max_workers=len(chunks)) as pool:
        list(pool.map(run, chunks))
    return out


# --------------------------------------------------------------------------- chip rows


@dataclass
class ChipBandFile:
    """Bands of one file that a :class:`ChipRowReader` reads: file band ``indexes`` (1-based)
    go to output band ``positions``, each with its ``resamplings`` entry; ``what`` names
    the file in messages (e.g. "band red of scene X")."""

    href: str
    what: str
    indexes: list[int]
    positions: list[int]
    resamplings: list[Resampling]


@dataclass
class ChipQAFile:
    href: str
    what: str
    index: int
    qa_format: str = "scl"


@dataclass
class _Opened:
    spec: ChipBandFile
    name: str
    dtype: np.dtype
    direct: tuple[int, int] | None  # (col, row) offset of grid pixel (0, 0) for exact reads
    block: tuple[int, int]


class ChipRowReader:
    """Read a scene chip row by chip row, straight into chip layout -- the streaming
    counterpart of ``load_scene`` + cutting the ``[band, y, x]`` array into chips.

    ``read_into(out, analyse)`` fills ``out`` (``[n_rows * n_cols, band, chip, chip]``; chip
    ``r * n_cols + c`` is grid rows ``r*chip..``, columns ``c*chip..``) in units of whole
    chip rows (about one GeoTIFF block row each, so no block is decoded twice), in
    ``workers`` threads with their own file handles (GDAL releases the GIL while
    decoding), and yields ``(row0, row1, analyse(...))`` for the units in order, so the
    caller works on chip rows ``< row1`` while later ones are still being read.

    A band file exactly on the grid (same resolution, whole-pixel offset, covering every
    chip, same dtype, no nodata rewrite) is read chip window by chip window straight into
    ``out`` (block column by block column: a decoded block is used up while it is cached).
    Any other file (a 20 m band, partial or misaligned coverage) goes through
    :func:`read_to_grid` on the unit's strip of the grid and is copied into chip layout,
    so the pixels are exactly those of ``load_scene``. The QA band (read with nearest and
    converted with :func:`to_scl`) is read first, so ``analyse`` can skip chips:

    ``analyse(row0, row1, qa, read)``: ``qa`` is the SCL-like ``uint8`` strip
    ``[(row1 - row0) * chip, n_cols * chip]`` or None (no QA band); ``read(need=None)``
    reads the unit's chips (only those where the bool ``need[row1 - row0, n_cols]`` is
    True) and returns ``out[row0 * n_cols : row1 * n_cols]``; chips not needed are left
    unread (garbage).
    """

    def __init__(
        self,
        grid: TileGrid,
        chip_size: int,
        files: Sequence[ChipBandFile],
        qa: ChipQAFile | None = None,
        nodata: int | float | None = 0,
        workers: int = 2,
        open_options: dict[str, Any] | None = None,
        bands: Sequence[str] | None = None,
    ) -> None:
        self.grid = grid
        self.chip_size = cs = int(chip_size)
        self.n_rows, self.n_cols = grid.height // cs, grid.width // cs
        self.n_bands = sum(len(f.positions) for f in files)
        self.bands = list(bands) if bands is not None else [str(i) for i in range(self.n_bands)]
        self.qa = qa
        self.nodata = nodata
        self.workers = max(1, int(workers))
        self.open_options = dict(open_options or {})
        self._files: list[_Opened] = []
        dtypes = []
        for f in files:
            name = redact(f.href)
            with open_raster(f.href, f.what, **self.open_options) as src:
                check_on_grid(src, grid, name)
                dt = np.result_type(*[src.dtypes[i - 1] for i in f.indexes])
                dtypes.append(dt)
                direct = self._direct_offset(src, f)
                bh, bw = src.block_shapes[0] if src.block_shapes else (256, 256)
                self._files.append(_Opened(f, name, np.dtype(dt), direct, (int(bh), int(bw))))
        if qa is not None:
            with open_raster(qa.href, qa.what) as src:
                check_on_grid(src, grid, redact(qa.href))
        self.dtype = np.dtype(np.result_type(*dtypes)) if dtypes else np.dtype(np.uint16)
        self._files = [
            o if o.direct is None or o.dtype == self.dtype else _Opened(o.spec, o.name, o.dtype, None, o.block)
            for o in self._files
        ]
        block_h = max((o.block[0] for o in self._files), default=cs)
        self.unit_rows = max(1, int(round(block_h / cs)))  # chip rows per unit of work

    def _direct_offset(self, src, f: ChipBandFile) -> tuple[int, int] | None:
        """(col, row) of grid pixel (0, 0) in ``src`` when plain chip windows of ``src`` give
        exactly what read_to_grid would: same resolution, whole-pixel offset, every chip
        inside the raster, no nodata value to rewrite."""
        t = ~src.transform @ self.grid.transform
        sx, ox, sy, oy = _snap(t.a), _snap(t.c), _snap(t.e), _snap(t.f)
        if sx != 1 or sy != 1 or ox != int(ox) or oy != int(oy):
            return None
        ox, oy = int(ox), int(oy)
        cs = self.chip_size
        if ox < 0 or oy < 0 or ox + self.n_cols * cs > src.width or oy + self.n_rows * cs > src.height:
            return None
        nd = src.nodata
        if nd is not None and (isinstance(nd, float) and math.isnan(nd) or nd != self.nodata):
            return None
        return ox, oy

    @property
    def direct(self) -> list[bool]:
        """Per band file: whether it is read chip window by chip window (no resampling)."""
        return [o.direct is not None for o in self._files]

    # ------------------------------------------------------------------ reading

    def _strip_grid(self, r0: int, r1: int) -> TileGrid:
        cs, gt = self.chip_size, self.grid.transform
        return TileGrid(tile=self.grid.tile, crs=self.grid.crs,
                        transform=Affine(gt.a, 0, gt.c, 0, gt.e, gt.f + r0 * cs * gt.e),
                        height=(r1 - r0) * cs, width=self.n_cols * cs)  # fmt: skip

    def _read_unit(self, handle, out, r0: int, r1: int, analyse):
        cs, nc = self.chip_size, self.n_cols
        view = out[r0 * nc : r1 * nc]
        qa = None
        if self.qa is not None:
            q = self.qa
            src = handle(q.href, q.what, {})
            raw = _read_onto_grid(src, self._strip_grid(r0, r1), q.index, Resampling.nearest,
                                  qa_fill(q.qa_format), redact(q.href))  # fmt: skip
            qa = to_scl(raw, q.qa_format)

        def read(need: np.ndarray | None = None) -> np.ndarray:
            for o in self._files:
                src = handle(o.spec.href, o.spec.what, self.open_options)
                if o.direct is not None:
                    self._read_direct(src, o, view, r0, r1, need)
                else:
                    self._read_resampled(src, o, view, r0, r1)
            return view

        return analyse(r0, r1, qa, read)

    def _read_direct(self, src, o: _Opened, view, r0: int, r1: int, need) -> None:
        cs, nc = self.chip_size, self.n_cols
        ox, oy = o.direct
        pos = o.spec.positions
        idx = o.spec.indexes
        lo = pos[0]
        consecutive = pos == list(range(lo, lo + len(pos)))
        bw = max(1, o.block[1])
        chips = [(r, c) for r in range(r1 - r0) for c in range(nc) if need is None or need[r, c]]
        chips.sort(key=lambda rc: ((ox + rc[1] * cs) // bw, rc[0], rc[1]))  # block column by block column
        try:
            for r, c in chips:
                win = Window(ox + c * cs, oy + (r0 + r) * cs, cs, cs)
                dst = view[r * nc + c]
                if len(idx) == 1:
                    src.read(idx[0], window=win, out=dst[pos[0]])
                elif consecutive:
                    src.read(idx, window=win, out=dst[lo : lo + len(pos)])
                else:
                    dst[pos] = src.read(idx, window=win)
        except (RasterioError, OSError) as exc:
            raise SceneError(
                f"cannot read {o.name}: {redact(exc)} -- the file is truncated or corrupt, or the "
                "server stopped answering"
            ) from exc

    def _read_resampled(self, src, o: _Opened, view, r0: int, r1: int) -> None:
        cs, nc = self.chip_size, self.n_cols
        sub = self._strip_grid(r0, r1)
        groups: dict[Resampling, list[int]] = {}
        for j, rs in enumerate(o.spec.resamplings):
            groups.setdefault(rs, []).append(j)
        for rs, js in groups.items():
            part = _read_onto_grid(src, sub, [o.spec.indexes[j] for j in js], rs, self.nodata, o.name)
            n = len(js)
            chips = part.reshape(n, r1 - r0, cs, nc, cs).transpose(1, 3, 0, 2, 4).reshape(-1, n, cs, cs)
            pos = [o.spec.positions[j] for j in js]
            if n == 1:
                view[:, pos[0]] = chips[:, 0]
            else:
                for k, p in enumerate(pos):
                    view[:, p] = chips[:, k]

    def read_into(self, out: np.ndarray, analyse) -> Iterator[tuple[int, int, Any]]:
        """Fill ``out`` unit by unit; yield ``(row0, row1, analyse(row0, row1, qa, read))`` in order."""
        expect = (self.n_rows * self.n_cols, self.n_bands, self.chip_size, self.chip_size)
        if tuple(out.shape) != expect:
            raise ValueError(f"out has shape {out.shape}, expected {expect}")
        units = [(r, min(self.n_rows, r + self.unit_rows)) for r in range(0, self.n_rows, self.unit_rows)]
        opened: list[Any] = []
        lock = threading.Lock()
        local = threading.local()

        def handle(href: str, what: str, options: dict[str, Any]):
            cache = getattr(local, "cache", None)
            if cache is None:
                cache = local.cache = {}
            key = (href, tuple(sorted(options.items())))
            if key not in cache:
                cm = open_raster(href, what, **options)
                src = cm.__enter__()
                with lock:
                    opened.append(cm)
                cache[key] = src
            return cache[key]

        def run(unit):
            return self._read_unit(handle, out, unit[0], unit[1], analyse)

        try:
            if self.workers <= 1 or len(units) < 2:
                for u in units:
                    yield u[0], u[1], run(u)
                return
            from concurrent.futures import ThreadPoolExecutor

            pool = ThreadPoolExecutor(max_workers=min(self.workers, len(units)), thread_name_prefix="chip-rows")
            futures = [pool.submit(run, u) for u in units]
            try:
                for u, fut in zip(units, futures):
                    yield u[0], u[1], fut.result()
            finally:
                for fut in futures:
                    fut.cancel()
                pool.shutdown(wait=True)
        finally:
            for cm in opened:
                cm.__exit__(None, None, None)


def resampling_for(band: str, qa_band: str | None, nearest_bands: Sequence[str] = ()) -> Resampling:
    """Nearest for the QA band and classification bands, bilinear for reflectance."""
    if band == qa_band or band in nearest_bands:
        return Resampling.nearest
    return Resampling.bilinear


def grid_from_dict(tile: str, spec: dict[str, Any]) -> TileGrid:
    """A TileGrid from a JSON-able dict ``{"crs", "transform": [a,b,c,d,e,f], "height", "width"}``."""
    try:
        tr = list(spec["transform"])[:6]
        return TileGrid(tile=tile, crs=crs_string(spec["crs"]), transform=Affine(*map(float, tr)),
                        height=int(spec["height"]), width=int(spec["width"]))  # fmt: skip
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(
            f"grid for tile {tile!r} must be a dict with crs, transform [a,b,c,d,e,f], height "
            f"and width; got {spec!r} ({exc})"
        ) from exc


def strip_url(url: str) -> str:
    """URL without user info, query or fragment (for messages and ids)."""
    p = urlsplit(url)
    return urlunsplit((p.scheme, p.netloc.rsplit("@", 1)[-1], p.path, "", ""))


def as_utc(dt: Any) -> Any:
    """A timezone-aware UTC datetime (naive input is taken to be UTC)."""
    from datetime import timezone

    if dt.tzinfo is None:
        return dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc)

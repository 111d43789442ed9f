"""Cut scenes into fixed chips on the tile grid and keep those under the cloud and nodata
thresholds.

Chips are ``chip_size`` x ``chip_size`` windows of the tile grid starting at its upper-left
corner, so chip ``<tile>_r<row>c<col>`` is the same ground on every date. Edge pixels that
do not fill a whole chip are dropped (no padding: a padded chip would carry nodata the
encoder never saw in training). Cloud and nodata fractions come from the SCL-like QA band;
chips above the configured thresholds are filtered out.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from pyproj import Transformer

from clay_core.chips.chipset import ChipParams, ChipSet, _empty_meta, chip_id
from clay_core.errors import ConfigError
# Scene-sized outputs are allocated like the sources' reads; the synthetic QA classes are
# those of clay_core.sources.qa.synthetic_qa (a source without a QA band).
from clay_core.sources.arrays import has_value, large_empty
from clay_core.sources.qa import SCL_NODATA, SCL_UNCLASSIFIED
from clay_core.types import Scene, SceneRef, TileGrid

__all__ = ["chip_scene", "chip_raster_strips", "chip_source_scene"]


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

    ``reader`` is a :class:`clay_core.sources.chip_reader.ChipRowReader` (or anything with its
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

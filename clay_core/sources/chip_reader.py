"""Read a scene chip row by chip row straight into chip layout (:class:`ChipRowReader`),
the streaming counterpart of ``load_scene`` + cutting the scene array into chips."""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from affine import Affine
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.windows import Window

from clay_core.errors import SceneError
from clay_core.sources.grid_read import _read_onto_grid, _snap, check_on_grid, open_raster
from clay_core.sources.qa import qa_fill, to_scl
from clay_core.sources.urls import redact
from clay_core.types import TileGrid

__all__ = ["ChipBandFile", "ChipQAFile", "ChipRowReader"]


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
        nc = self.n_cols
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

"""Pixel-level change inside chips: nrt's MoSum monitor on the NDVI of each chip pixel.

A chip embedding summarises its whole chip (2.5 km at 256 px of 10 m), so a clearing of a
few hectares moves it too little for the chip-level detector. This path watches the pixels
themselves: per tile x window it computes the NDVI of the chip pixels of that window's chip
cube, feeds them to one of ``nrt``'s monitors and reports per chip observation:

* ``pixels_monitored``: pixels of the chip with a fitted, stable history (nrt mask 1 or 3);
* ``pixel_change_date``: the date on which most of the chip's broken pixels were confirmed
  (the modal detection date; ties go to the earliest). Not the median: false alarms are
  scattered over the whole monitoring period and pull a median away from the clearing, while
  the pixels of one clearing break on the same one or two acquisitions;
* ``pixel_change_fraction``: share of the monitored pixels whose break was confirmed within
  ``burst_days`` (45) of that date (NaN while the chip's history is still being collected).
  Counting every broken pixel instead would add up MoSum's scattered false alarms, about 2 %
  of unchanged pixels a year, more than a 6 x 6-pixel clearing's 3.5 % of a 32 x 32 chip.

**The monitor.** :class:`nrt.monitor.mosum.MoSum` (moving sums of the normalised residuals
of a harmonic fit, as bfastmonitor): it scored best of nrt's monitors on nrt's own simulator
in an earlier measurement, its boundary is a significance level rather than a tuned
multiple of sigma, and its state is a handful of per-pixel arrays, so it carries cheaply.
Its defaults are not nrt's: on 1,024 unchanged pixels (weekly NDVI, annual cycle, noise
0.03; one year of history, ROC) nrt's ``harmonic_order=2, sensitivity=0.05`` had flagged 3.5%
of them 21 weeks into monitoring, ``1, 0.01`` 0.6%, while a drop of 0.5 is still confirmed at
its first acquisition. False alarms still accumulate with time, which is why the fraction
counts only the chip's burst of breaks (above).

**History.** Each chip's observations are collected until its history ends: at
``history_end`` when set (the stage passes ``ChangeParams.detector.baseline_end``), else
``history_days`` after the chip's first usable observation, and a history with fewer than
``min_history_obs`` usable observations goes on until it has them (so a chip first seen after
``history_end`` gets a short history of its own). At the chip's first observation after
that, the monitor is fitted on the collected history (pixels with fewer than
``min_history_obs`` valid values, or an unstable history under ROC, are not monitored) and
monitoring starts with that observation.

**Missing pixels.** The chip cube holds no per-pixel cloud mask (only per-chip cloud and
nodata fractions), so a chip observation whose ``cloud_fraction`` exceeds ``max_chip_cloud``
(default 0: any cloudy pixel) is left out whole: one cloudy observation is enough for MoSum
to confirm a break. Within a used observation a pixel is missing where red or NIR is not
finite or not positive (the sources' nodata DN is 0).

**State.** Per chip (one row of a :class:`~clay_core.change.carry.ChipTable`, columns
``px_*``): the history being collected, or MoSum's fitted arrays (mask, coefficients, sigma,
history and window sizes, the residual window, boundary, detection dates). It is written as
``pixels.npz`` + ``pixels.json`` in the change partition's atomic directory; the next window
reads only that and its own chip cube. Histories are kept as float16 (NDVI to about 0.001):
they are most of the state until the fit. Without a usable state (none, other parameters, an
unreadable file, chip windows not covered) earlier windows are replayed from their chip
cubes, and the step says how many and why. To bound memory, pixels are sampled with a stride
so that at most ``max_side`` x ``max_side`` are watched per chip (every 8th pixel of a
256-px chip: a 4-ha clearing still covers about 6 of them).
"""

from __future__ import annotations

import json
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from clay_core.change.carry import ChipTable
from clay_core.change.timeutil import to_datetime
from clay_core.errors import ConfigError
from clay_core.storage import CHANGE, CHIPS, Layout, read_manifest
from clay_core.types import PartitionId

__all__ = [
    "PIXEL_COLUMNS", "PIXEL_FORMAT", "PIXEL_HEADER", "PIXEL_STATE", "PixelObs", "PixelParams", "PixelStep",
    "advance_pixels", "load_pixel_state", "new_pixel_table", "pixel_obs", "save_pixel_state", "step_pixels",
]

PIXEL_STATE = "pixels.npz"
PIXEL_HEADER = "pixels.json"
PIXEL_FORMAT = 1  # bump when the px_ columns change meaning: older states are then replayed
#: the columns this path adds to ``scores.parquet``
PIXEL_COLUMNS = ["pixel_change_fraction", "pixel_change_date", "pixels_monitored"]
_DAY = np.timedelta64(1, "D")


@dataclass(frozen=True)
class PixelParams:
    """Settings of the pixel path (a state is continued only under equal settings).

    Attributes:
        red_band: the chip cube's red band (default ``"red"``).
        nir_bands: near-infrared band names, the first present is used (default ``nir``, then
            ``nir08``). A cube without red or NIR gets NaN pixel columns.
        max_side: at most this many pixels per chip side are watched (stride
            ``ceil(chip_size / max_side)``; default 32: every pixel of a 32-px chip).
        max_chip_cloud: chip observations with a larger cloud fraction are left out (default 0).
        history_end: every chip's history ends on this date (default None: see history_days).
        history_days: without history_end, a chip's history is the days after its first usable
            observation (default 365: one seasonal cycle for the harmonic fit).
        min_history_obs: a pixel needs this many valid history values to be monitored (default 8).
        harmonic_order: annual harmonics of the fit (default 1; nrt's 2 doubles the false alarms
            on a year of history, see below).
        trend: a linear trend in the fit (default False: one year cannot separate it from season).
        sensitivity: MoSum's significance level; lower = fewer false alarms (default 0.01; nrt's
            0.05 flags several % of unchanged pixels within months, see below).
        h: moving window relative to the history length, 0.25, 0.5 or 1 (default 0.25, nrt's).
        fit_method: ``"ROC"`` (stable history, nrt's default for MoSum) or ``"OLS"``.
        alpha: significance level of the ROC stability test (default 0.05).
        burst_days: a chip's ``pixel_change_fraction`` counts the pixels whose break was
            confirmed within this many days of its ``pixel_change_date`` (default 45): the
            pixels of one clearing break together, while MoSum's false alarms accumulate
            evenly (about 2 % of unchanged pixels in the first year of monitoring, 4 % after two
            on a perfect seasonal model: ``benchmarks/_scale_pixels.py``) and would otherwise
            outgrow a small clearing's share.
    """

    red_band: str = "red"
    nir_bands: tuple[str, ...] = ("nir", "nir08")
    max_side: int = 32
    max_chip_cloud: float = 0.0
    history_end: datetime | None = None
    history_days: float = 365.0
    min_history_obs: int = 8
    harmonic_order: int = 1
    trend: bool = False
    sensitivity: float = 0.01
    h: float = 0.25
    fit_method: str = "ROC"
    alpha: float = 0.05
    burst_days: float = 45.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "nir_bands", tuple(str(b) for b in self.nir_bands))
        if self.history_end is not None:
            object.__setattr__(self, "history_end", to_datetime(self.history_end))
        if self.h not in (0.25, 0.5, 1.0):
            raise ConfigError(f"pixel monitor h={self.h} must be 0.25, 0.5 or 1 (MoSum's tabulated windows)")
        if self.fit_method not in ("ROC", "OLS"):
            raise ConfigError(f"pixel monitor fit_method={self.fit_method!r} must be 'ROC' or 'OLS'")
        if self.max_side < 1 or self.min_history_obs < 1 or self.history_days <= 0 or self.burst_days < 0:
            raise ConfigError("pixel monitor max_side, min_history_obs and history_days must be positive, "
                              "burst_days not negative")
        if not 0.0 <= self.max_chip_cloud <= 1.0 or not 0.0 < self.sensitivity < 1.0:
            raise ConfigError("pixel monitor max_chip_cloud must be in [0, 1] and sensitivity in (0, 1)")

    def record(self) -> dict[str, Any]:
        """JSON-safe settings (the state header compares them)."""
        d = asdict(self)
        d["nir_bands"] = list(self.nir_bands)
        d["history_end"] = self.history_end.isoformat() if self.history_end else None
        return d


@dataclass(frozen=True, eq=False)
class PixelObs:
    """One window's chip observations as NDVI: ``ndvi [obs, pixels]`` (NaN = missing)."""

    chip_id: np.ndarray  # [obs] str
    datetime: np.ndarray  # [obs] datetime64[ns]
    ndvi: np.ndarray  # [obs, pixels] float32
    usable: np.ndarray  # [obs] bool: cloud fraction within max_chip_cloud


@dataclass(frozen=True, eq=False)
class PixelStep:
    """A window's pixel path: per observation values, the advanced state, and how it was made."""

    scores: pd.DataFrame  # chip_id, datetime + PIXEL_COLUMNS, one row per observation
    table: ChipTable  # the state after the window (what pixels.npz holds)
    header: dict[str, Any]
    replayed_windows: int = 0  # earlier chip windows replayed from their cubes
    replay_reason: str | None = None
    skipped: str | None = None  # why this window gave the path nothing (no cube, no red/NIR band)


def new_pixel_table() -> ChipTable:
    """An empty state: no chips; the pixel (``P``), history (``T``), window (``W``) and
    coefficient (``K``) widths are set or grown on first use.

    Columns: ``px_first`` day of the first usable observation, ``px_fitted``, the history
    being collected (``px_hn`` values, ``px_hday [C, T]`` days, ``px_hist [C, T, P]`` NDVI), and
    MoSum's arrays in nrt's dtypes (``px_mask``, ``px_beta [C, K, P]``, ``px_sigma``,
    ``px_histsize``, ``px_winsize``, ``px_n``, ``px_window [C, W, P]``, ``px_boundary``,
    ``px_ddate`` detection day)."""
    f, u16 = np.float32, np.uint16
    cols = {"px_first": np.zeros(0), "px_fitted": np.zeros(0, bool), "px_hn": np.zeros(0, np.int32),
            "px_hday": np.zeros((0, 0)), "px_hist": np.zeros((0, 0, 0), np.float16),
            "px_mask": np.zeros((0, 0), np.uint8), "px_beta": np.zeros((0, 0, 0), f), "px_sigma": np.zeros((0, 0), f),
            "px_histsize": np.zeros((0, 0), u16), "px_winsize": np.zeros((0, 0), np.int16),
            "px_n": np.zeros((0, 0), u16), "px_window": np.zeros((0, 0, 0), f), "px_boundary": np.zeros((0, 0), f),
            "px_ddate": np.zeros((0, 0), u16)}
    return ChipTable(np.array([], dtype=object), cols)


def _shape(tab: ChipTable, n_pix: int, k: int) -> None:
    """Give a fresh table its pixel (and coefficient) widths; a table keeps them for good."""
    if tab["px_mask"].shape[1] == 0:
        c = len(tab)
        for name in ("px_mask", "px_sigma", "px_histsize", "px_winsize", "px_n", "px_boundary", "px_ddate"):
            tab[name] = np.zeros((c, n_pix), tab[name].dtype)
        tab["px_hist"] = np.full((c, 0, n_pix), np.nan, np.float16)
        tab["px_window"] = np.zeros((c, 0, n_pix), np.float32)
        tab["px_beta"] = np.zeros((c, k, n_pix), np.float32)
    elif tab["px_mask"].shape[1] != n_pix:
        raise ValueError(f"pixel state watches {tab['px_mask'].shape[1]} pixels per chip, this cube {n_pix}")


# -- reading a window ---------------------------------------------------------------------


def _stride(chip_size: int, params: PixelParams) -> int:
    return -(-chip_size // params.max_side)


def pixel_obs(cube: Any, params: PixelParams) -> PixelObs | None:
    """NDVI of a chip cube's (strided) pixels; ``None`` when it has no red or NIR band."""
    bands = [str(b) for b in cube["band"].values]
    nir = next((b for b in params.nir_bands if b in bands), None)
    if params.red_band not in bands or nir is None:
        return None
    s = _stride(int(cube["pixels"].shape[-1]), params)
    red = np.asarray(cube["pixels"][:, bands.index(params.red_band), ::s, ::s].values, np.float64)
    nirv = np.asarray(cube["pixels"][:, bands.index(nir), ::s, ::s].values, np.float64)
    ok = np.isfinite(red) & np.isfinite(nirv) & (red > 0) & (nirv > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        ndvi = np.where(ok, (nirv - red) / (nirv + red), np.nan).astype(np.float32)
    n = ndvi.shape[0]
    usable = np.asarray(cube["cloud_fraction"].values, np.float64) <= params.max_chip_cloud
    ids = np.array([str(c) for c in cube["chip_id"].values.tolist()])  # zarr v3 strings are StringDType
    return PixelObs(ids, np.asarray(cube["datetime"].values, "datetime64[ns]"), ndvi.reshape(n, -1), usable)


# -- one window, every chip at once ---------------------------------------------------------


def _day(t: np.datetime64) -> int:
    return int(np.datetime64(t, "D").astype(np.int64))


def _monitor(params: PixelParams, mask: np.ndarray | None = None, **state: Any):
    from nrt.monitor.mosum import MoSum

    return MoSum(trend=params.trend, harmonic_order=params.harmonic_order, sensitivity=params.sensitivity,
                 mask=mask, h=params.h, **state)


def _collect(tab: ChipTable, rows: np.ndarray, day: int, ndvi: np.ndarray) -> None:
    """Append one observation to the histories of chips ``rows``."""
    n = tab["px_hn"][rows]
    tab.widen(["px_hist", "px_hday"], int(n.max()) + 1)
    tab["px_hist"][rows, n] = ndvi
    tab["px_hday"][rows, n] = day
    tab["px_hn"][rows] = n + 1


def _fit(tab: ChipTable, rows: np.ndarray, params: PixelParams) -> None:
    """Fit MoSum on the collected histories of chips ``rows`` (one nrt call, their union of
    dates as the time axis), store its arrays and drop the histories."""
    import xarray as xr

    n_pix, hn = tab["px_mask"].shape[1], tab["px_hn"][rows]
    days = np.unique(tab["px_hday"][rows][np.isfinite(tab["px_hday"][rows])]).astype(np.int64)
    data = np.full((len(days), len(rows) * n_pix), np.nan, np.float32)
    for j, (r, n) in enumerate(zip(rows, hn)):
        at = np.searchsorted(days, tab["px_hday"][r, :n].astype(np.int64))
        data[at, j * n_pix:(j + 1) * n_pix] = tab["px_hist"][r, :n]
    mask = (np.isfinite(data).sum(0) >= params.min_history_obs).astype(np.uint8)[:, None]
    tab["px_fitted"][rows] = True
    tab["px_hn"][rows] = 0
    tab["px_hist"][rows] = np.nan
    tab["px_hday"][rows] = np.nan
    if not mask.any():
        tab["px_mask"][rows] = 0
        return
    times = days.astype("datetime64[D]").astype("datetime64[ns]")
    da = xr.DataArray(data[:, :, None], dims=("time", "y", "x"),
                      coords={"time": times, "y": np.arange(data.shape[1]), "x": np.arange(1)})
    m = _monitor(params, mask)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            m.fit(dataarray=da, method=params.fit_method, alpha=params.alpha)
        except ValueError:  # nrt: no pixel has enough data points for its design matrix
            tab["px_mask"][rows] = 0
            return
    # nrt's [lead, pixel, 1] -> [lead, chip, pixel]
    per_chip = lambda a: np.asarray(a).reshape(-1, len(rows), n_pix)  # noqa: E731
    tab.widen(["px_window"], int(m.window.shape[0]))
    tab["px_beta"][rows] = per_chip(m.beta).transpose(1, 0, 2)
    win = np.zeros((len(rows), tab["px_window"].shape[1], n_pix), np.float32)
    win[:, : m.window.shape[0]] = per_chip(m.window).transpose(1, 0, 2)
    tab["px_window"][rows] = win
    for col, a in (("px_mask", m.mask), ("px_sigma", m.sigma), ("px_histsize", m.histsize),
                   ("px_winsize", m.winsize), ("px_n", m.n), ("px_boundary", m.boundary)):
        tab[col][rows] = per_chip(a)[0]
    tab["px_ddate"][rows] = 0


_STATE = {"px_mask": "mask", "px_sigma": "sigma", "px_histsize": "histsize", "px_winsize": "winsize",
          "px_n": "n", "px_boundary": "boundary", "px_ddate": "detection_date"}


def _advance(tab: ChipTable, rows: np.ndarray, when: datetime, ndvi: np.ndarray, params: PixelParams) -> None:
    """One acquisition of the fitted chips ``rows`` through nrt's ``MoSum.monitor``."""
    flat = lambda a: np.ascontiguousarray(a).reshape(-1, 1)  # noqa: E731 ([chip, pixel] -> nrt's [y, x])
    lead = lambda a: np.ascontiguousarray(a.transpose(1, 0, 2)).reshape(a.shape[1], -1, 1)  # noqa: E731
    kw = {v: flat(tab[k][rows]) for k, v in _STATE.items() if k != "px_mask"}
    n = len(rows) * tab["px_mask"].shape[1]
    m = _monitor(params, flat(tab["px_mask"][rows]), beta=lead(tab["px_beta"][rows]),
                 window=lead(tab["px_window"][rows]).astype(np.float64), x_coords=np.arange(1), y_coords=np.arange(n),
                 **kw)  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m.monitor(flat(ndvi).astype(np.float64), when)
    back = lambda a: np.asarray(a).reshape(len(rows), -1)  # noqa: E731
    for k, v in _STATE.items():
        tab[k][rows] = back(getattr(m, v)).astype(tab[k].dtype)
    tab["px_window"][rows] = np.asarray(m.window).reshape(m.window.shape[0], len(rows), -1).transpose(1, 0, 2)


def _summary(tab: ChipTable, rows: np.ndarray, burst_days: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(fraction, modal detection date, monitored pixels)`` of chips ``rows``: the fraction
    counts the broken pixels confirmed within ``burst_days`` of the modal date."""
    mask, ddate = tab["px_mask"][rows], tab["px_ddate"][rows]
    monitored = ((mask == 1) | (mask == 3)).sum(1)
    broken = mask == 3
    in_burst = np.zeros(len(rows), np.int64)
    dates = np.full(len(rows), np.datetime64("NaT"), "datetime64[ns]")
    for i in np.flatnonzero(broken.any(1)):
        days = ddate[i][broken[i]].astype(np.int64)
        vals, counts = np.unique(days, return_counts=True)
        mode = int(vals[np.argmax(counts)])
        dates[i] = np.datetime64(mode, "D")
        in_burst[i] = int(np.sum(np.abs(days - mode) <= burst_days))
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(monitored > 0, in_burst / np.maximum(monitored, 1), np.nan)
    return frac, dates, monitored.astype(np.int64)


def step_pixels(tab: ChipTable, obs: PixelObs, params: PixelParams) -> pd.DataFrame:
    """Advance ``tab`` by one window's observations, acquisition by acquisition; the pixel
    columns of each observation (its chip's state after its acquisition). A replay is this,
    window after window."""
    k = 1 + int(params.trend) + 2 * params.harmonic_order
    _shape(tab, obs.ndvi.shape[1], k)
    frac = np.full(len(obs.chip_id), np.nan)
    dates = np.full(len(obs.chip_id), np.datetime64("NaT"), "datetime64[ns]")
    monitored = np.zeros(len(obs.chip_id), np.int64)
    end = _day(np.datetime64(params.history_end.replace(tzinfo=None))) if params.history_end else None
    for t in np.unique(obs.datetime):
        at = np.flatnonzero(obs.datetime == t)
        rows = tab.rows(obs.chip_id[at])
        day, use = _day(t), obs.usable[at]
        first = tab["px_first"][rows]
        tab["px_first"][rows] = np.where(np.isnan(first) & use, day, first)
        chip_end = np.full(len(rows), end, float) if end is not None else tab["px_first"][rows] + params.history_days
        # a history with too few usable observations goes on collecting past its end
        short = tab["px_hn"][rows] < params.min_history_obs
        in_history = use & ~tab["px_fitted"][rows] & ((day <= chip_end) | short)
        if in_history.any():
            _collect(tab, rows[in_history], day, obs.ndvi[at[in_history]])
        due = use & ~tab["px_fitted"][rows] & ~in_history
        if due.any():
            _fit(tab, rows[due], params)
        live = use & tab["px_fitted"][rows] & ((tab["px_mask"][rows] == 1).any(1))
        if live.any():
            when = pd.Timestamp(t).to_pydatetime()
            _advance(tab, rows[live], when, obs.ndvi[at[live]], params)
        frac[at], dates[at], monitored[at] = _summary(tab, rows, params.burst_days)
    tab.narrow(["px_hist", "px_hday"], int(tab["px_hn"].max()) if len(tab) else 0)
    return pd.DataFrame({"chip_id": obs.chip_id, "datetime": obs.datetime, "pixel_change_fraction": frac,
                         "pixel_change_date": dates, "pixels_monitored": monitored})


# -- state files and the window stage -----------------------------------------------------


def save_pixel_state(directory: Path, tab: ChipTable, header: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``pixels.npz`` (the px_ columns) and ``pixels.json`` (settings, window, format)."""
    directory = Path(directory)
    with open(directory / PIXEL_STATE, "wb") as f:
        np.savez(f, chip_id=tab.chip_id.astype(str), **{f"col_{k}": v for k, v in tab.cols.items()})
    (directory / PIXEL_HEADER).write_text(json.dumps(header))
    return directory / PIXEL_STATE, directory / PIXEL_HEADER


def load_pixel_state(directory: Path) -> tuple[ChipTable, dict[str, Any]]:
    """The state a change partition carries; OSError/ValueError/KeyError when unusable."""
    header = json.loads((Path(directory) / PIXEL_HEADER).read_text())
    with np.load(Path(directory) / PIXEL_STATE, allow_pickle=False) as z:
        cols = {k[4:]: np.ascontiguousarray(z[k]) for k in z.files if k.startswith("col_")}
        tab = ChipTable(z["chip_id"].astype(object), cols)
    if set(tab.cols) != set(new_pixel_table().cols):
        raise KeyError("pixel state columns differ from this version's")
    return tab, header


def _header(params: PixelParams, window: str) -> dict[str, Any]:
    return {"format": PIXEL_FORMAT, "params": params.record(), "window": window}


def _open_local(layout: Layout) -> Callable[[str, str], Any]:
    def open_(tile: str, window: str) -> Any:
        from clay_core.chips import open_cube

        man = read_manifest(layout.partition(CHIPS, tile, window))
        return open_cube(layout.locate(man["cube_uri"]), bands=man.get("bands"))

    return open_


def _window_obs(layout: Layout, tile: str, window: str, params: PixelParams,
                open_cube: Callable[[str, str], Any]) -> tuple[PixelObs | None, str | None]:
    """``(observations, why the window has none to give)`` of a chip partition; a window
    without chips gives ``(None, None)``."""
    man = read_manifest(layout.partition(CHIPS, tile, window))
    if not man.get("chips"):
        return None, None
    if "cube_uri" not in man:  # a chip index without a cube (benchmarks that fake the chips stage)
        return None, f"chip partition {window} has no cube"
    obs = pixel_obs(open_cube(tile, window), params)
    if obs is None:
        return None, f"the chip cube has no {params.red_band!r} and NIR ({'/'.join(params.nir_bands)}) band"
    return obs, None


def _previous(layout: Layout, pid: PartitionId, params: PixelParams) -> tuple[ChipTable | None, str | None, str]:
    """``(state, its window, why not)`` of the newest earlier change partition."""
    earlier = [w for w in layout.windows(CHANGE, pid.tile) if w < pid.window]
    if not earlier:
        return None, None, "no earlier change partition"
    d = layout.partition(CHANGE, pid.tile, earlier[-1])
    if not (d / PIXEL_STATE).is_file():
        return None, None, f"change partition {earlier[-1]} has no pixel state"
    try:
        tab, header = load_pixel_state(d)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
        return None, None, f"the pixel state of {earlier[-1]} is unreadable ({type(e).__name__}: {e})"
    if header.get("format") != PIXEL_FORMAT or header.get("params") != params.record():
        return None, None, f"the pixel state of {earlier[-1]} was made with other pixel settings"
    return tab, str(header["window"]), ""


def advance_pixels(layout: Layout, pid: PartitionId, params: PixelParams,
                   open_cube: Callable[[str, str], Any] | None = None) -> PixelStep:
    """The pixel path of one tile x window: the previous change partition's pixel state
    advanced by this window's chip cube (earlier chip windows replayed when that state is
    missing or unusable). ``open_cube(tile, window)`` opens a chip cube (default: local cubes
    through the chips manifest); nothing is written (:func:`save_pixel_state` does)."""
    open_cube = open_cube or _open_local(layout)
    tab, start, reason = _previous(layout, pid, params)
    todo = [w for w in layout.windows(CHIPS, pid.tile) if w < pid.window and (start is None or w > start)]
    if start is not None and todo:
        reason = f"chip window(s) {todo[0]}..{todo[-1]} were not scored since {start}"
    tab = tab if tab is not None else new_pixel_table()
    replayed = 0
    for w in todo:
        obs, _ = _window_obs(layout, pid.tile, w, params, open_cube)
        if obs is not None:
            step_pixels(tab, obs, params)
            replayed += 1
    obs, skipped = _window_obs(layout, pid.tile, pid.window, params, open_cube)
    scores = step_pixels(tab, obs, params) if obs is not None else pd.DataFrame(columns=["chip_id", "datetime",
                                                                                           *PIXEL_COLUMNS])
    return PixelStep(scores, tab, _header(params, pid.window), replayed, reason if replayed else None, skipped)

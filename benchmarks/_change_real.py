"""Real-pixel arm of ``change_eval.py``: nrt's Sentinel-2 cube over Romania, pixel by pixel.

Data: ``sentinel2_cube_subset_romania_10m.nc`` (B2, B3, B4, B8, SCL; 100 x 100 px at 10 m)
and ``..._20m.nc`` (B3, B4, B8A, B11, SCL; 50 x 50 px at 20 m) from the nrt package, the same
140 dates 2015-08-01 .. 2021-01-01, EPSG:3035. The 20 m grid is aligned with the 10 m one
(its pixel centres sit 5 m right/down of the first 10 m centre), so B11 is upsampled to 10 m
by nearest neighbour (each 20 m pixel feeds its 2 x 2 block). A pixel-series has 5 bands
(B2, B3, B4, B8, B11, reflectance x 10,000).

Clear observations: finite in every band and SCL in {4 vegetation, 5 bare, 6 water,
7 unclassified}; masked: 0 nodata, 1 saturated, 2 dark/shadow, 3 cloud shadow, 8-10 cloud
and cirrus, 11 snow (nrt's own CCDC example keeps {4, 5, 7}).

Methods:

* pyxccd ``cold_detect_flex`` (COLD, flexible-band mode; ``lam=20`` as its docstring suggests
  for 0-10,000 reflectance, defaults otherwise: ``p_cg=0.99``, ``conse=6``; Tmask on green
  (B3) and SWIR (B11)); masked observations get qa 4 (cloud). Its breaks are the
  ``t_break`` of its segments with ``change_prob`` 100 (confirmed): the reference. (A segment
  ending in a partial run at the end of the series has ``change_prob`` 16-50 and is not a break.)
* pyxccd COLD again, with one random clear observation per series masked (``mask_one``), scored
  against COLD: how much of the reference a method can be expected to reproduce at all (a
  slightly different cloud mask moves or removes about a tenth of COLD's breaks).
* ours: our detector on the same 5 bands, clear observations only, default ``DetectorParams``
  (first baseline by count and span, as COLD initializes; ``--set`` overrides apply); and
  again with COLD's decision rule (``COLD_LIKE``: 6 consecutive exceedances at 0.01, no CUSUM)
  to separate the rule from the model.
* nrt ``CCDC`` on NDVI ((B8 - B4) / (B8 + B4)), second reference as in nrt's own example:
  history up to 2018-12-31 fitted with CCDC-stable and CCDC_RIRLS screening (green B3, SWIR
  B11, scaling 10,000), monitoring 2019-01-01 onward; its onset is its detection date.

Events are compared in clear-observation indices of the pixel-series (see ``_change_refs``).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._change_refs import Row, clear_index, row_from_matches, run_ours
from clay_core.change import DetectorParams

__all__ = ["RealPixels", "cold_breaks", "load_pixels", "mask_one", "nrt_ccdc", "run_real"]

BANDS_10M = ("B2", "B3", "B4", "B8")
CLEAR_SCL = (4, 5, 6, 7)
MONITOR_START = datetime(2019, 1, 1)  # nrt CCDC: history before, monitoring from
COLD_LIKE = {"k_consecutive": 6, "alpha": 0.01, "cusum": False}


@dataclass
class RealPixels:
    dates: list[datetime]
    values: np.ndarray  # [N, T, 5] B2 B3 B4 B8 B11, NaN where not clear
    clear: np.ndarray  # [N, T]
    pixels: np.ndarray  # [N] flat index into the 100 x 100 grid


def _nrt_data_dir() -> Path:
    import nrt.data

    return Path(nrt.data.__file__).resolve().parent


def load_pixels(n_pixels: int = 0, seed: int = 0, data_dir: Path | None = None) -> RealPixels:
    """Every pixel (``n_pixels`` 0) or a fixed random subset of ``n_pixels`` of the 10 m grid."""
    import xarray as xr

    d = data_dir or _nrt_data_dir()
    with xr.open_dataset(d / "sentinel2_cube_subset_romania_10m.nc") as a, \
            xr.open_dataset(d / "sentinel2_cube_subset_romania_20m.nc") as b:
        a, b = a.load(), b.load()
    if not np.array_equal(a["time"].to_numpy(), b["time"].to_numpy()):
        raise SystemExit("nrt's 10 m and 20 m cubes have different dates; cannot stack their bands")
    b11 = b["B11"].to_numpy().repeat(2, axis=1).repeat(2, axis=2)  # nearest 20 m -> 10 m
    x = np.stack([a[v].to_numpy() for v in BANDS_10M] + [b11], axis=-1)  # [T, y, x, 5]
    scl = np.nan_to_num(a["SCL"].to_numpy(), nan=0)
    T, ny, nx, F = x.shape
    clear = np.isin(scl, CLEAR_SCL) & np.isfinite(x).all(-1)
    x = np.where(clear[..., None], x, np.nan).reshape(T, ny * nx, F).transpose(1, 0, 2)
    clear = clear.reshape(T, ny * nx).T
    pixels = np.arange(ny * nx)
    if 0 < n_pixels < pixels.size:
        pixels = np.sort(np.random.default_rng(seed).choice(pixels.size, n_pixels, replace=False))
    dates = [datetime.fromisoformat(str(t)[:19]) for t in a["time"].to_numpy()]
    return RealPixels(dates, x[pixels].astype(np.float64), clear[pixels], pixels)


def cold_breaks(px: RealPixels, clear: np.ndarray | None = None, lam: float = 20,
                **cold: Any) -> tuple[list[list[int]], float]:
    """pyxccd COLD per pixel: (break positions in the T dates per series, seconds); ``clear``
    replaces the pixels' clear mask (a perturbation of the input), ``lam`` and ``cold``
    (``conse``, ``p_cg``) its settings."""
    import pyxccd

    ordinal = np.array([d.toordinal() for d in px.dates], dtype=np.int64)
    clear = px.clear if clear is None else clear
    out: list[list[int]] = []
    t0 = time.perf_counter()
    for i in range(px.values.shape[0]):
        ts = np.nan_to_num(np.where(clear[i][:, None], px.values[i], np.nan), nan=0.0).astype(np.int64)
        qa = np.where(clear[i], 0, 4).astype(np.int64)
        rec = pyxccd.cold_detect_flex(ordinal, ts, qa, lam=lam, tmask_b1_index=2, tmask_b2_index=5, **cold)
        tb = np.asarray(rec["t_break"], dtype=np.int64)
        # change_prob is in percent: 100 = a confirmed break (conse anomalies in a row); below,
        # the series ended partway through a run, which COLD records but does not confirm
        confirmed = (tb > 0) & (np.asarray(rec["change_prob"], dtype=np.float64) >= 100.0)
        out.append(sorted(int(np.searchsorted(ordinal, t)) for t in tb[confirmed]))
    return out, time.perf_counter() - t0


def nrt_ccdc(px: RealPixels) -> tuple[np.ndarray, float, int]:
    """nrt CCDC on NDVI: (first detection position per series or -1, seconds, first monitored position)."""
    import xarray as xr
    from nrt.monitor.ccdc import CCDC

    times = np.array(px.dates, dtype="datetime64[ns]")
    start = int(np.searchsorted(times, np.datetime64(MONITOR_START)))

    def cube(a: np.ndarray) -> xr.DataArray:  # [n, T] -> (time, y=1, x=n)
        return xr.DataArray(a.T[:, None, :], dims=("time", "y", "x"),
                            coords={"time": times, "y": [0.0], "x": np.arange(a.shape[0], dtype=float)})

    v = px.values
    with np.errstate(invalid="ignore", divide="ignore"):
        ndvi = (v[..., 3] - v[..., 2]) / (v[..., 3] + v[..., 2])

    def run(sel: slice) -> tuple[CCDC, float]:
        t0 = time.perf_counter()
        mon, hist = CCDC(), slice(0, start)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mon.fit(cube(ndvi[sel]).isel(time=hist), green=cube(v[sel, :, 1]).isel(time=hist),
                    swir=cube(v[sel, :, 4]).isel(time=hist), scaling_factor=10000)
            for t in range(start, len(times)):
                mon.monitor(ndvi[sel, t][None, :], px.dates[t])
        return mon, time.perf_counter() - t0

    run(slice(0, 4))  # numba JIT warm-up, not timed
    mon, seconds = run(slice(None))
    days = np.asarray(mon.detection_date, dtype=np.int64).ravel()
    epoch_days = times.astype("datetime64[D]").astype(np.int64)
    return np.where(days > 0, np.searchsorted(epoch_days, days), -1), seconds, start


def mask_one(clear: np.ndarray, seed: int = 1) -> np.ndarray:
    """``clear`` with one random clear observation per series masked (as a slightly different
    cloud mask would): the perturbation that measures the reference's own reproducibility."""
    rng = np.random.default_rng(seed)
    out = clear.copy()
    for i in range(out.shape[0]):
        out[i, rng.choice(np.flatnonzero(out[i]))] = False
    return out


def _to_clear(pos: list[list[int]], ci: np.ndarray, lo: int = 0) -> list[list[int]]:
    return [[int(ci[i, p]) for p in ps if p >= lo] for i, ps in enumerate(pos)]


def run_real(n_pixels: int = 0, seed: int = 0, tol: int = 1, err_window: int = 6, log=print,
             overrides: dict | None = None) -> list[Row]:
    t0 = time.perf_counter()
    px = load_pixels(n_pixels, seed)
    n = px.values.shape[0]
    ci = clear_index(px.clear)
    cold, t_cold = cold_breaks(px)
    # COLD against itself with one clear observation masked per series: how much of the
    # reference a method can be expected to reproduce at all
    cold_1, t_cold_1 = cold_breaks(px, mask_one(px.clear))
    overrides = overrides or {}
    events, t_ours = run_ours(px.dates, px.values, px.clear, DetectorParams(**overrides))
    ours = [sorted(e.first_index for e in evs) for evs in events]
    # COLD's own decision rule (6 in a row at chi-square 0.99, nothing cumulative) on our model
    like, t_like = run_ours(px.dates, px.values, px.clear, DetectorParams(**{**overrides, **COLD_LIKE}))
    like_pos = [sorted(e.first_index for e in evs) for evs in like]
    ccdc_first, t_ccdc, start = nrt_ccdc(px)
    ccdc = [[int(p)] if p >= 0 else [] for p in ccdc_first]
    cfg = f"10m+20m px, {len(px.dates)} dates"
    cfg_m = f"COLD breaks >= {px.dates[start]:%Y-%m-%d}"
    cold_c, ours_c = _to_clear(cold, ci), _to_clear(ours, ci)
    n_cold = sum(map(len, cold))
    rows = [
        Row("real", cfg, "pyxccd COLD (reference)", n, n_cold, n_cold, 0, 0, *(float("nan"),) * 6,
            1000.0 * t_cold / n, "its breaks are the truth of the rows below"),
        row_from_matches("real", cfg, "COLD, 1 clear obs masked, vs COLD", cold_c, _to_clear(cold_1, ci), t_cold_1,
                         tol, err_window, note="pyxccd COLD again with one random clear observation per series "
                                               "masked: the reference's own reproducibility"),
        row_from_matches("real", cfg, "ours vs COLD", cold_c, ours_c, t_ours, tol, err_window,
                         note=f"5 bands, DetectorParams {overrides or 'defaults'}; TP = within +-{tol} clear obs; "
                              f"errors from matches within +-{err_window}"),
        row_from_matches("real", cfg, "ours, COLD's rule, vs COLD", cold_c, _to_clear(like_pos, ci), t_like, tol,
                         err_window, note="k_consecutive 6, alpha 0.01, no CUSUM (COLD's conse and p_cg)"),
        row_from_matches("real", cfg_m, "ours vs COLD", _to_clear(cold, ci, start), _to_clear(ours, ci, start),
                         t_ours, tol, err_window, note="same run, events on/after CCDC's monitoring start"),
        row_from_matches("real", cfg_m, "nrt CCDC (NDVI) vs COLD", _to_clear(cold, ci, start),
                         _to_clear(ccdc, ci, start), t_ccdc, tol, err_window,
                         note="nrt CCDC flags at confirmation: its errors are delays"),
    ]
    log(f"   real pixels: {n} series ({'all' if n_pixels <= 0 or n_pixels >= 10000 else 'random subset'}), "
        f"clear obs per series {int(px.clear.sum(1).min())}-{int(px.clear.sum(1).max())}; COLD {t_cold:.0f} s, "
        f"ours {t_ours:.0f} s, nrt CCDC {t_ccdc:.0f} s; {time.perf_counter() - t0:.0f} s in all")
    return rows

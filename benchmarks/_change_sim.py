"""Simulator arm of ``change_eval.py``: nrt's synthetic NDVI cubes, ours vs nrt's monitors.

Cubes come from ``nrt.data.simulate`` (``make_cube_parameters`` + ``make_cube``, nrt's own
defaults except the break magnitude and noise intervals, and 2018-2019 kept stable). Weekly
dates 2018-01-01 .. 2022-06-15; breaks fall from the first 2020 date to 20 observations before
the end; half the series are stable; outliers (value 0.1) and NaNs 0-4 per series. ``make_ts``
lowers the values from ``break_idx + 1`` on, so the truth onset is ``break_idx + 1``.

Methods, all fitted on 2018-2019 and monitoring from 2020-01-01:

* ours: ``DetectorParams(baseline_end=<last 2019 date>)``, everything else default;
* nrt ``EWMA``, ``CuSum``, ``MoSum``, ``CCDC``: constructor defaults, default fit methods
  (EWMA: OLS + Shewhart screening; CuSum/MoSum: ROC; CCDC: CCDC-stable without outlier
  screening since its CCDC_RIRLS screening needs green and SWIR bands the simulator has not),
  then ``monitor`` date by date. Their onset is their detection date, so their onset errors are
  detection delays (reported as is).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from benchmarks._change_refs import Row, first_after, run_ours, score_first_detection, sim_row
from clay_core.change import DetectorParams

__all__ = ["NRT_METHODS", "SimConfig", "SimCube", "nrt_first_detection", "run_sim", "simulate", "sim_configs"]

MAGNITUDES = ((0.03, 0.08), (0.08, 0.12), (0.12, 0.2), (0.2, 0.3))
NOISES = ((0.02, 0.03), (0.03, 0.04))
NRT_METHODS = ("EWMA", "CuSum", "MoSum", "CCDC")
MONITOR_START = np.datetime64("2020-01-01")


@dataclass(frozen=True)
class SimConfig:
    magnitude: tuple[float, float]
    noise: tuple[float, float]
    size: int  # the cube is size x size series
    seed: int

    @property
    def label(self) -> str:
        return f"mag {self.magnitude[0]:g}-{self.magnitude[1]:g}, noise {self.noise[0]:g}-{self.noise[1]:g}"


@dataclass
class SimCube:
    cube: object  # xarray.DataArray (time, y, x)
    dates: np.ndarray  # datetime64[D]
    values: np.ndarray  # [N, T]
    onset: np.ndarray  # [N] first lowered observation, -1 = stable
    start: int  # first monitoring position


def _pairs(s: str) -> tuple[tuple[float, float], ...]:
    out = []
    for part in s.split(";"):
        if part.strip():
            lo, hi = (float(x) for x in part.split(","))
            out.append((lo, hi))
    return tuple(out)


def sim_configs(magnitudes: str, noises: str, size: int, seed: int) -> list[SimConfig]:
    """``"0.03,0.08;0.08,0.12"``-style interval lists -> one config per (magnitude, noise), own seed each."""
    mags, nois = _pairs(magnitudes), _pairs(noises)
    return [SimConfig(m, n, size, seed + 100 * i + j) for i, m in enumerate(mags) for j, n in enumerate(nois)]


def simulate(cfg: SimConfig) -> SimCube:
    from nrt.data import simulate as nsim

    dates = np.arange("2018-01-01", "2022-06-15", dtype="datetime64[W]").astype("datetime64[D]")
    start = int(np.searchsorted(dates, MONITOR_START))
    np.random.seed(cfg.seed)  # nrt's simulator draws from numpy's global state
    params = nsim.make_cube_parameters(
        shape=(cfg.size, cfg.size), break_idx_interval=(start, dates.size - 20),
        magnitude_interval=cfg.magnitude, sigma_noise_interval=cfg.noise,
        n_outliers_interval=(0, 5), n_nan_interval=(0, 5), unstable_proportion=0.5,
    )  # fmt: skip
    cube = nsim.make_cube(dates, params)
    values = cube.to_numpy().reshape(dates.size, -1).T.copy()
    b = params.break_idx.to_numpy().ravel()
    onset = np.where(b >= 0, b + 1, -1)
    return SimCube(cube, dates, values, onset, start)


def _make_monitor(name: str):
    from nrt.monitor.ccdc import CCDC
    from nrt.monitor.cusum import CuSum
    from nrt.monitor.ewma import EWMA
    from nrt.monitor.mosum import MoSum

    return {"EWMA": EWMA, "CuSum": CuSum, "MoSum": MoSum, "CCDC": CCDC}[name]()


def nrt_first_detection(name: str, cube, start: int) -> tuple[np.ndarray, float]:
    """Fit nrt's ``name`` on ``cube[:start]``, monitor the rest: (first detection position per series, s)."""
    dates = cube["time"].to_numpy().astype("datetime64[D]")
    data = cube.to_numpy()
    t0 = time.perf_counter()
    mon = _make_monitor(name)
    kw = {"screen_outliers": None} if name == "CCDC" else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # all-NaN slices and the like in nrt's fits
        mon.fit(cube.isel(time=slice(0, start)), **kw)
        for t in range(start, dates.size):
            mon.monitor(data[t], datetime.fromisoformat(str(dates[t])))
    seconds = time.perf_counter() - t0
    days = np.asarray(mon.detection_date, dtype=np.int64).ravel()
    pos = np.searchsorted(dates.astype(np.int64), days)
    return np.where(days > 0, pos, -1), seconds


def warm_up() -> None:
    """nrt's numba kernels compile on first use; compile them outside the timed runs."""
    cube = simulate(SimConfig((0.2, 0.3), (0.02, 0.03), 4, 0)).cube
    start = int(np.searchsorted(cube["time"].to_numpy(), MONITOR_START))
    for name in NRT_METHODS:
        nrt_first_detection(name, cube, start)


def run_sim(configs: list[SimConfig], log=print, overrides: dict | None = None) -> list[Row]:
    warm_up()
    rows: list[Row] = []
    for cfg in configs:
        t0 = time.perf_counter()
        sc = simulate(cfg)
        n = sc.values.shape[0]
        valid = np.isfinite(sc.values)
        dt = [datetime.fromisoformat(str(d)) for d in sc.dates]
        params = DetectorParams(**{**(overrides or {}), "baseline_end": dt[sc.start - 1]})
        events, secs = run_ours(dt, sc.values, None, params)
        det, dated = first_after(events, sc.start)
        cfg_label = f"{cfg.label} (seed {cfg.seed})"
        rows.append(sim_row("sim", cfg_label, "ours", n, int((det >= 0).sum()),
                            score_first_detection(sc.onset, det, valid, dated=dated), secs))
        for name in NRT_METHODS:
            det, secs = nrt_first_detection(name, sc.cube, sc.start)
            rows.append(sim_row("sim", cfg_label, f"nrt {name}", n, int((det >= 0).sum()),
                                score_first_detection(sc.onset, det, valid), secs))
        log(f"   sim {cfg_label}: {n} series, {int((sc.onset >= 0).sum())} with a break "
            f"({time.perf_counter() - t0:.0f} s)")
    return rows

"""Change-detection evaluation: ours vs nrt's monitors and COLD, simulated, planted and real.

One run, four parts (``--parts``), then ONE side-by-side table (arm, config, method, series,
events, precision, recall, F1, onset error median / p90, false events per 100 series, seconds
per 1,000 series); method and definitions in ``docs/benchmarks_change.md``.

* ``sim``: nrt's simulator (``_change_sim``): ours vs nrt EWMA, CuSum, MoSum, CCDC at four
  break magnitudes x two noise levels.
* ``planted``: part 1 below (Clay embeddings of the synthetic world, planted clearings).
* ``real``: nrt's real Sentinel-2 cube pixel by pixel (``_change_real``): ours and nrt CCDC vs
  pyxccd's COLD as the reference.
* ``chips``: part 2 below (the same cube in 32 px chips through Clay embeddings).

Part 1, synthetic (truth known). ``SyntheticWorld`` tiles with a weekly revisit over ~2.5
years (seasonal cycle, clouds on every 5th acquisition, per-pixel noise) and forest
clearings planted after the first year. Scenes are chipped (64 px, chips with > 20 % cloud
dropped, so a chip's series has missing dates as in real data), embedded with the tiny
Clay encoder on the CPU, projected on ONE PCA basis fitted over all embeddings, and every
chip's series goes through ``clay_core.change.detect_changes`` on its first PCs.

Two scenarios run on the same world and clearings:

* ``clouds``: the synthetic source as is;
* ``clouds+haze``: harder; every scene also gets a per-band radiometric gain error (sd
  ``--gain-sd``) and, on a random ``--haze-prob`` of the acquisitions, undetected thin haze
  (additive, spatially smooth, strongest in blue, not flagged in the SCL band, so those
  chips are kept). This is the residual atmosphere a real L2A series carries.

Scoring (event level). A truth chip is >= 50 % covered by a clearing (with the default
geometry a clearing covers exactly one chip). An event is a true positive if its chip is a
truth chip and its ``first_date`` is within ``--tolerance`` (1) CLEAR observations of that
chip's first clear observation on/after the planted date; each truth chip matches at most
one event; every other event is a false positive. Date error = (clear-observation index of
the event) - (index of the first clear observation on/after the planted date).

Baseline in the same run: ``1 - cosine`` between a chip's embedding and its previous clear
observation's, flagged where it exceeds a fixed threshold; consecutive flagged observations
are merged into one event dated at the first. It is reported at several fixed thresholds
(``--baseline-thresholds``; the first, 0.02, is the designated one, picked once in a pilot
run on seed 0 as a round value just below most clearing distances, i.e. in the baseline's
favour) and, as an upper bound, at the threshold that maximizes its F1 on the truth
("oracle", searched over 80 log-spaced values in [0.001, 0.3]).

Part 2, real data: the ``nrt`` package's Sentinel-2 cube over a Romanian forest (100 x 100
px, 10 m, EPSG:3035, 140 dates 2015-2021, real forest loss), chipped 32 px (3 x 3 chips),
SCL cloud classes {1, 3, 8, 9, 10} and nodata {0}, chips with > 20 % cloud dropped. There
are no reference dates, so every flagged event is reported against the chip's NDVI series.

    .venv/bin/python benchmarks/change_eval.py                 # every part
    .venv/bin/python benchmarks/change_eval.py --parts sim,real   # the reference comparisons only
    .venv/bin/python benchmarks/change_eval.py --quick            # small sizes (smoke test)
    .venv/bin/python benchmarks/change_eval.py --json results.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
import warnings
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._change_refs import Row, format_table, ours_backend  # noqa: E402
from clay_core.change import DetectorParams, detect_changes, distances_to_previous, fit_incremental  # noqa: E402
from clay_core.chips import ChipParams, ChipSet, chip_id, chip_scene  # noqa: E402
from clay_core.encoder.engine import embed_chips  # noqa: E402
from clay_core.encoder.model import build_encoder  # noqa: E402
from clay_core.sources.synthetic import SyntheticSceneSource, SyntheticWorld  # noqa: E402
from clay_core.types import Scene, SceneRef, TileGrid  # noqa: E402

PLATFORM = "sentinel-2-l2a"
BANDS = ["blue", "green", "red", "nir"]
HAZE_BAND_WEIGHT = np.array([1.0, 0.8, 0.6, 0.35], dtype=np.float32)  # scattering ~ 1/lambda
NRT_FILE = "sentinel2_cube_subset_romania_10m.nc"
NRT_BANDS = {"blue": "B2", "green": "B3", "red": "B4", "nir": "B8"}  # B02/B03/B04/B08


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    g = ap.add_argument_group("synthetic world")
    g.add_argument("--tiles", default="31UFU,32UNB")
    g.add_argument("--size", type=int, default=384, help="tile size in px (multiple of --chip-size)")
    g.add_argument("--chip-size", type=int, default=64)
    g.add_argument("--weeks", type=int, default=130, help="weekly acquisitions (130 = 2.5 years)")
    g.add_argument("--clearings-per-tile", type=int, default=6)
    g.add_argument("--change-at", default="62,67,72,77,83,88,94,99,105,110",
                   help="acquisition indices of the clearings (cycled over a tile's clearings)")
    g.add_argument("--noise", type=float, default=0.03, help="per-pixel multiplicative noise sd")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--scenarios", default="clouds,clouds+haze")
    g.add_argument("--gain-sd", type=float, default=0.03, help="clouds+haze: per-scene per-band gain sd")
    g.add_argument("--haze-prob", type=float, default=0.15, help="clouds+haze: share of hazy acquisitions")
    g.add_argument("--haze-dn", type=float, default=400.0, help="clouds+haze: max haze in blue (DN)")
    d = ap.add_argument_group("detector")
    d.add_argument("--pcs", type=int, default=8, help="principal components fed to detect_changes")
    d.add_argument("--threshold", type=float, default=None,
                   help="fixed RMS z-score threshold (default: the detector's F-test at its alpha)")
    d.add_argument("--k-consecutive", type=int, default=3)
    d.add_argument("--n-harmonics", type=int, default=1)
    d.add_argument("--min-run-cosine", type=float, default=DetectorParams().min_run_cosine,
                   help="run consistency check of detect_changes (-1 disables it)")
    d.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one of our DetectorParams in every arm (repeatable), e.g. --set refit_growth=1.33")
    d.add_argument("--tolerance", type=int, default=1, help="max |date error| of a true positive (clear obs)")
    d.add_argument("--baseline-thresholds", default="0.02,0.005,0.01,0.04,0.08",
                   help="1 - cosine thresholds of the baseline; the first is the designated one")
    r = ap.add_argument_group("real data")
    r.add_argument("--nrt-path", default=None, help=f"default: <site-packages>/nrt/data/{NRT_FILE}")
    r.add_argument("--nrt-chip-size", type=int, default=32)
    r.add_argument("--nrt-extra-mask", default="", help="extra SCL classes to mask, e.g. 11 (snow)")
    m = ap.add_argument_group("simulator (nrt.data.simulate)")
    m.add_argument("--sim-size", type=int, default=20, help="each config is a size x size cube of series")
    m.add_argument("--sim-magnitudes", default="0.03,0.08;0.08,0.12;0.12,0.2;0.2,0.3",
                   help="break magnitude intervals, 'lo,hi;lo,hi'")
    m.add_argument("--sim-noises", default="0.02,0.03;0.03,0.04", help="noise sd intervals, 'lo,hi;lo,hi'")
    m.add_argument("--sim-seed", type=int, default=1, help="config i,j uses seed + 100 i + j")
    x = ap.add_argument_group("real pixels (COLD reference)")
    x.add_argument("--real-pixels", type=int, default=2000, help="random subset of the 100 x 100 pixels (0 = all)")
    x.add_argument("--real-seed", type=int, default=0)
    x.add_argument("--real-err-window", type=int, default=6,
                   help="onset errors vs COLD come from matches within +- this many clear obs")
    ap.add_argument("--parts", default="sim,planted,real,chips", help="any of sim, planted, real, chips")
    ap.add_argument("--quick", action="store_true", help="small sizes for a smoke test (~2 min)")
    ap.add_argument("--skip-synthetic", action="store_true", help="same as leaving planted out of --parts")
    ap.add_argument("--skip-nrt", action="store_true", help="same as leaving chips out of --parts")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--json", type=Path, default=None, help="write all results as JSON here")
    ap.add_argument("--verbose", action="store_true", help="also list every event")
    return ap.parse_args(argv)


def _floats(s: str) -> list[float]:
    return [float(x) for x in s.split(",") if x.strip()]


# The synthetic world's own deterministic noise and smooth fields, so haze patterns look alike.
from clay_core.sources.synthetic import _rng, _smooth_field as _smooth  # noqa: E402


# --------------------------------------------------------------------------------------
# shared: chips -> embeddings -> per-chip series


@dataclass
class Series:
    """One chip's clear observations, in date order."""

    chip: str
    dates: list[datetime]
    rows: np.ndarray  # row indices into the embedding matrix


def embed(chips: ChipSet, encoder, batch_size: int) -> tuple[np.ndarray, float]:
    t0 = time.perf_counter()
    res = embed_chips(
        encoder, chips.pixels, platform=PLATFORM, bands=chips.bands,
        datetimes=list(chips.meta["datetime"]), lat=chips.meta["lat"].to_numpy(),
        lon=chips.meta["lon"].to_numpy(), batch_size=batch_size, device="cpu",
    )  # fmt: skip
    return res.cls.astype(np.float64), time.perf_counter() - t0


def chip_series(meta: pd.DataFrame) -> list[Series]:
    out = []
    for cid, g in meta.groupby("chip_id", sort=True):
        g = g.sort_values("datetime", kind="stable")
        out.append(Series(str(cid), [ts.to_pydatetime() for ts in g["datetime"]], g.index.to_numpy()))
    return out


@dataclass
class Event:
    chip: str
    obs: int  # index of first_date in the chip's clear series
    first_date: datetime
    confirmed_date: datetime | None = None
    magnitude: float = float("nan")


def detector_events(series: list[Series], X: np.ndarray, params: DetectorParams) -> list[Event]:
    events = []
    for s in series:
        pos = {d: i for i, d in enumerate(s.dates)}
        for e in detect_changes(s.dates, X[s.rows], params=params):
            events.append(Event(s.chip, pos[e.first_date], e.first_date, e.confirmed_date, e.magnitude))
    return events


def baseline_events(series: list[Series], dist: dict[str, np.ndarray], threshold: float) -> list[Event]:
    """``1 - cos`` to the previous clear observation > threshold; runs merged, dated at start.

    ``dist``: chip -> :func:`distances_to_previous` of its clear series.
    """
    events = []
    for s in series:
        d = dist[s.chip]
        flag = np.nan_to_num(d, nan=0.0) > threshold
        for i in np.nonzero(flag)[0]:
            if i == 0 or not flag[i - 1]:
                events.append(Event(s.chip, int(i), s.dates[i], None, float(d[i])))
    return events


# --------------------------------------------------------------------------------------
# part 1: synthetic


@dataclass
class Score:
    method: str
    setting: str
    precision: float
    recall: float
    f1: float
    events: int
    tp: int
    fp: int
    fn: int
    mean_abs_err: float
    max_abs_err: float
    errors: list[int] = field(default_factory=list)
    truth_any: int = 0  # truth chips with an event at any date

    def row(self) -> str:
        err = "-" if not self.errors else f"{self.mean_abs_err:.2f}"
        mx = "-" if not self.errors else f"{self.max_abs_err:.0f}"
        return (
            f"{self.method:<40} {self.setting:<12} {self.events:>6} {self.tp:>4} {self.fp:>4} {self.fn:>4} "
            f"{self.precision:>6.3f} {self.recall:>6.3f} {self.f1:>6.3f} {err:>9} {mx:>8}"
        )


SCORE_HEADER = (
    f"{'method':<40} {'setting':<12} {'events':>6} {'TP':>4} {'FP':>4} {'FN':>4} "
    f"{'prec':>6} {'recall':>6} {'F1':>6} {'mean|err|':>9} {'max|err|':>8}"
)


def score_events(method: str, setting: str, events: list[Event], truth: dict[str, int], tol: int) -> Score:
    """Event-level scoring; ``truth``: chip -> clear-obs index of the first obs on/after the planted date."""
    by_chip: dict[str, list[Event]] = {}
    for e in events:
        by_chip.setdefault(e.chip, []).append(e)
    tp, errors, any_hit = 0, [], 0
    for chip, ref in truth.items():
        evs = by_chip.get(chip, [])
        any_hit += bool(evs)
        best = min(evs, key=lambda e: abs(e.obs - ref), default=None)
        if best is not None and abs(best.obs - ref) <= tol:
            tp += 1
            errors.append(best.obs - ref)
    n = len(events)
    fp, fn = n - tp, len(truth) - tp
    p = tp / n if n else 0.0
    r = tp / len(truth) if truth else 0.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    abs_err = [abs(x) for x in errors]
    return Score(method, setting, p, r, f1, n, tp, fp, fn,
                 float(np.mean(abs_err)) if abs_err else float("nan"),
                 float(max(abs_err)) if abs_err else float("nan"), errors, any_hit)


class HazySource(SyntheticSceneSource):
    """The synthetic source plus per-scene gain errors and undetected thin haze."""

    def __init__(self, world: SyntheticWorld, gain_sd: float, haze_prob: float, haze_dn: float):
        super().__init__(world)
        self.gain_sd, self.haze_prob, self.haze_dn = gain_sd, haze_prob, haze_dn

    def load_scene(self, ref: SceneRef, bands: list[str]) -> Scene:
        scene = super().load_scene(ref, bands)
        day = ref.datetime.date().isoformat()
        rng = _rng(self.world.seed, ref.tile, day, "atmosphere")
        idx = [BANDS.index(b) for b in bands]
        data = scene.data.astype(np.float32)
        gain = 1.0 + self.gain_sd * rng.standard_normal(len(BANDS)).astype(np.float32)
        data *= gain[idx, None, None]
        if rng.random() < self.haze_prob:
            amount = self.haze_dn * rng.uniform(0.3, 1.0)
            thick = _smooth(rng, data.shape[-1], 3).astype(np.float32)  # varies between chips
            data += amount * HAZE_BAND_WEIGHT[idx, None, None] * thick[None]
        cloudy = np.isin(scene.qa, (8, 9))  # keep opaque cloud pixels as rendered
        data = np.where(cloudy[None], scene.data, np.clip(data, 1, 10000))
        return replace(scene, data=data.astype(np.uint16))


def synthetic_world(args: argparse.Namespace) -> SyntheticWorld:
    if args.size % args.chip_size:
        raise SystemExit(f"--size {args.size} must be a multiple of --chip-size {args.chip_size}")
    return SyntheticWorld(
        tiles=tuple(t.strip() for t in args.tiles.split(",") if t.strip()),
        size=args.size,
        blocks=args.size // args.chip_size,  # one clearing = one chip
        seed=args.seed,
        clearings_per_tile=args.clearings_per_tile,
        change_at=tuple(int(x) for x in args.change_at.split(",")),
        noise=args.noise,
    )


def _truth_dates(planted, n_grid: int, chip_size: int) -> dict[str, date]:
    """Truth chip (>= 50 % covered by a clearing) -> its earliest planted date."""
    truth_date: dict[str, date] = {}
    for p in planted:
        for r in range(n_grid):
            for c in range(n_grid):
                if p.chip_fraction(r, c, chip_size) >= 0.5:
                    cid = chip_id(p.tile, r, c)
                    truth_date[cid] = min(truth_date.get(cid, p.acquired), p.acquired)
    return truth_date


def _chip_scenario(world, scenario: str, args: argparse.Namespace, start, end, cp) -> tuple[ChipSet, int]:
    """Every scene of the scenario's source, chipped: ``(chips, number of scenes)``."""
    if scenario == "clouds":
        src = SyntheticSceneSource(world)
    elif scenario == "clouds+haze":
        src = HazySource(world, args.gain_sd, args.haze_prob, args.haze_dn)
    else:
        raise SystemExit(f"unknown scenario {scenario!r}; use clouds, clouds+haze")
    sets, n_scenes = [], 0
    for tile in world.tiles:
        for ref in src.list_scenes(tile, start, end):
            sets.append(chip_scene(src.load_scene(ref, BANDS), cp))
            n_scenes += 1
    return ChipSet.concat(sets, BANDS, args.chip_size), n_scenes


def _baseline_scores(series, dist, truth: dict[str, int], args: argparse.Namespace) -> list[Score]:
    """The 1-cos-to-previous baseline at each fixed threshold, then at the oracle threshold."""
    scores = []
    thresholds = _floats(args.baseline_thresholds)
    for thr in thresholds:
        label = f"thr={thr:g}" + ("*" if thr == thresholds[0] else "")
        scores.append(score_events("baseline: 1-cos to previous", label,
                                   baseline_events(series, dist, thr), truth, args.tolerance))
    oracle = max(
        (score_events("baseline, oracle thr (tuned on truth)", f"thr={thr:.4f}",
                      baseline_events(series, dist, thr), truth, args.tolerance)
         for thr in np.geomspace(1e-3, 0.3, 80)),
        key=lambda sc: sc.f1,
    )
    scores.append(oracle)
    return scores


def _setting(params: DetectorParams) -> str:
    return f"thr={params.threshold:g}" if params.threshold is not None else f"alpha={params.alpha:g}"


def run_synthetic(args: argparse.Namespace, encoder) -> dict:
    world = synthetic_world(args)
    start = datetime.combine(world.epoch, datetime.min.time(), timezone.utc)
    end = start + timedelta(days=world.revisit_days * args.weeks)
    cp = ChipParams(chip_size=args.chip_size)
    planted = [p for t in world.tiles for p in world.planted(t)]
    truth_date = _truth_dates(planted, args.size // args.chip_size, args.chip_size)
    params = DetectorParams(**{"threshold": args.threshold, "k_consecutive": args.k_consecutive,
                               "n_harmonics": args.n_harmonics, "min_run_cosine": args.min_run_cosine,
                               **args.overrides})
    print(f"\n== synthetic: {len(world.tiles)} tiles x {args.size} px, {args.weeks} weekly acquisitions "
          f"({world.epoch} .. {(end - timedelta(days=1)).date()}), chip {args.chip_size} px, "
          f"{len(planted)} clearings at acquisitions {sorted({world.acquisition_index(p.acquired) for p in planted})}, "
          f"{len(truth_date)} truth chips")
    print(f"   detector: detect_changes on the first {args.pcs} PCs (one basis over all embeddings), "
          f"{_setting(params)}, k_consecutive={args.k_consecutive}, n_harmonics={args.n_harmonics}, "
          f"min_run_cosine={args.min_run_cosine}, 1-year baseline; TP tolerance +-{args.tolerance} clear obs")
    results: dict = {"world": {"tiles": list(world.tiles), "size": args.size, "weeks": args.weeks,
                               "chip_size": args.chip_size, "clearings": len(planted),
                               "truth_chips": len(truth_date), "noise": args.noise},
                     "scenarios": {}}
    all_scores: list[tuple[str, Score]] = []
    for scenario in [s.strip() for s in args.scenarios.split(",") if s.strip()]:
        t0 = time.perf_counter()
        chips, n_scenes = _chip_scenario(world, scenario, args, start, end, cp)
        t_chip = time.perf_counter() - t0
        E, t_embed = embed(chips, encoder, args.batch_size)
        t1 = time.perf_counter()
        basis = fit_incremental([E], n_components=max(args.pcs, 1), version=1)
        X = basis.transform(E).astype(np.float64)[:, : args.pcs]
        series = chip_series(chips.meta)
        truth: dict[str, int] = {}
        for s in series:
            if s.chip in truth_date:
                after = [i for i, d in enumerate(s.dates) if d.date() >= truth_date[s.chip]]
                if after:
                    truth[s.chip] = after[0]
        t_det = time.perf_counter()
        events = detector_events(series, X, params)
        t_det = time.perf_counter() - t_det
        scores = [score_events(f"changepoint ({args.pcs} PCs)", _setting(params), events, truth, args.tolerance)]
        if params.min_run_cosine > -1.0:  # ablation: the same detector without the run consistency check
            plain = replace(params, min_run_cosine=-1.0)
            scores.append(score_events("changepoint, no consistency check", _setting(plain),
                                       detector_events(series, X, plain), truth, args.tolerance))
        if params.cusum:  # ablation: the persistence rule alone (the detector before the CUSUM)
            plain = replace(params, cusum=False)
            scores.append(score_events("changepoint, no CUSUM", _setting(plain),
                                       detector_events(series, X, plain), truth, args.tolerance))
        dist = {s.chip: distances_to_previous(E[s.rows]) for s in series}
        scores.extend(_baseline_scores(series, dist, truth, args))
        t_detect = time.perf_counter() - t1
        n_obs = np.array([len(s.dates) for s in series])
        d_prev = np.concatenate([dist[s.chip] for s in series if s.chip not in truth_date])
        d_prev = d_prev[np.isfinite(d_prev)]
        d_truth = sorted(float(dist[c][i]) for c, i in truth.items())
        print(f"\n-- scenario {scenario}: {n_scenes} scenes -> {len(chips)} clear chips "
              f"({chips.dropped.get('cloudy', 0)} cloudy chips dropped), {len(series)} chip series with "
              f"{n_obs.min()}-{n_obs.max()} clear obs; PCA explained variance of {args.pcs} PCs "
              f"{basis.explained_variance_ratio[: args.pcs].sum():.3f}")
        print(f"   time: render+chip {t_chip:.1f} s, embed {t_embed:.1f} s ({len(chips) / t_embed:.0f} chips/s), "
              f"PCA+detect+score {t_detect:.1f} s")
        print(f"   1-cos to previous: unchanged chips median {np.median(d_prev):.4f}, "
              f"p99 {np.quantile(d_prev, 0.99):.4f}, max {d_prev.max():.4f}; at the planted dates "
              f"{d_truth[0]:.4f} .. {d_truth[-1]:.4f} (median {np.median(d_truth):.4f})")
        print(SCORE_HEADER)
        for sc in scores:
            print(sc.row())
            all_scores.append((scenario, sc))
        det = scores[0]  # the detector as configured
        print(f"   changepoint date errors (clear obs) of the TPs: {sorted(det.errors)}; "
              f"truth chips with an event at any date: {det.truth_any}/{len(truth)}")
        if args.verbose or det.fp or det.fn:
            _print_event_details(events, truth, series, args.tolerance)
        results.setdefault("rows", []).extend(_planted_rows(scenario, scores, len(series), t_det))
        results["scenarios"][scenario] = {
            "chips": len(chips), "series": len(series), "seconds_embed": t_embed,
            "seconds_chip": t_chip, "scores": [sc.__dict__ for sc in scores],
        }
    results["summary"] = [{"scenario": s, **sc.__dict__} for s, sc in all_scores]
    return results


def _planted_rows(scenario: str, scores: list[Score], n_series: int, t_detect: float) -> list[Row]:
    """The detector, its ablation and the designated and oracle baselines as summary rows."""
    keep = [sc for sc in scores if not sc.method.startswith("baseline:") or sc.setting.endswith("*")]
    rows = []
    for sc in keep:
        err = np.asarray(sc.errors, dtype=float)
        rows.append(Row(
            "planted", f"{scenario}, {sc.setting}", "ours" if sc is scores[0] else sc.method, n_series, sc.events,
            sc.tp, sc.fp, sc.fn, sc.precision, sc.recall, sc.f1,
            float(np.median(err)) if err.size else float("nan"),
            float(np.quantile(np.abs(err), 0.9)) if err.size else float("nan"),
            100.0 * sc.fp / n_series, 1000.0 * t_detect / n_series if sc is scores[0] else float("nan"),
            "chip series of Clay embeddings (first PCs); s/1000 = detector only, embedding excluded"
            if sc is scores[0] else "",
        ))  # fmt: skip
    return rows


def _print_event_details(events: list[Event], truth: dict[str, int], series: list[Series], tol: int) -> None:
    dates = {s.chip: s.dates for s in series}
    for e in sorted(events, key=lambda e: (e.chip, e.obs)):
        ref = truth.get(e.chip)
        verdict = "TP" if ref is not None and abs(e.obs - ref) <= tol else "FP"
        planted = dates[e.chip][ref].date() if ref is not None else "-"
        print(f"     {verdict} {e.chip} first {e.first_date.date()} (obs {e.obs}) magnitude {e.magnitude:.1f} "
              f"planted(first clear) {planted}")
    hit = {e.chip for e in events}
    for chip, ref in sorted(truth.items()):
        if chip not in hit:
            print(f"     FN {chip} planted(first clear) {dates[chip][ref].date()}: no event")


# --------------------------------------------------------------------------------------
# part 2: the nrt cube


def nrt_path(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    import nrt.data

    return Path(nrt.data.__file__).resolve().parent / NRT_FILE


def load_nrt(
    path: Path, chip_size: int, cloud_classes: tuple[int, ...]
) -> tuple[ChipSet, pd.DataFrame, dict[str, dict[int, float]]]:
    """Chips of every date, per chip and date the NDVI of its clear pixels, and pixel loss.

    Pixel loss (a where-and-when reference for forest loss): per chip and year Y, the % of its
    pixels whose May-Sep median NDVI is at least 0.2 below that pixel's 2016 May-Sep median
    in Y and in every later year of the cube (persistent loss; the last year cannot be
    checked for persistence).
    """
    import xarray as xr
    from affine import Affine

    with xr.open_dataset(path) as ds:
        ds = ds.load()
    x, y = ds["x"].to_numpy(), ds["y"].to_numpy()
    res_x, res_y = float(x[1] - x[0]), float(y[1] - y[0])  # coordinates are pixel centres
    transform = Affine(res_x, 0.0, float(x[0]) - res_x / 2, 0.0, res_y, float(y[0]) - res_y / 2)
    grid = TileGrid("nrt", "EPSG:3035", transform, len(y), len(x))
    data_all = np.stack([ds[NRT_BANDS[b]].to_numpy() for b in BANDS], axis=1)  # [T, 4, y, x]
    scl_all = np.nan_to_num(ds["SCL"].to_numpy(), nan=0).astype(np.uint8)
    cp = ChipParams(chip_size=chip_size, cloud_classes=cloud_classes, nodata_classes=(0,))
    sets, ndvi_rows = [], []
    n = chip_size
    nr, nc = len(y) // n, len(x) // n
    for ti, t in enumerate(pd.to_datetime(ds["time"].to_numpy())):
        when = t.to_pydatetime().replace(tzinfo=timezone.utc)
        data = np.clip(np.nan_to_num(data_all[ti], nan=0), 0, 65535).astype(np.uint16)
        ref = SceneRef(f"nrt_{when:%Y%m%d}", "nrt", PLATFORM, when)
        sets.append(chip_scene(Scene(ref, grid, list(BANDS), data, scl_all[ti]), cp))
        red, nir = data_all[ti, 2].astype(np.float64), data_all[ti, 3].astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            ndvi = (nir - red) / (nir + red)
        ok = ~np.isin(scl_all[ti], cloud_classes + (0,)) & np.isfinite(ndvi)
        for r in range(nr):
            for c in range(nc):
                win = (slice(r * n, (r + 1) * n), slice(c * n, (c + 1) * n))
                m = ok[win]
                ndvi_rows.append({
                    "chip_id": chip_id("nrt", r, c), "datetime": pd.Timestamp(when),
                    "clear_fraction": float(m.mean()),
                    "ndvi": float(ndvi[win][m].mean()) if m.any() else float("nan"),
                })
    times = pd.to_datetime(ds["time"].to_numpy())
    with np.errstate(invalid="ignore", divide="ignore"):
        ndvi_all = (data_all[:, 3] - data_all[:, 2]) / (data_all[:, 3] + data_all[:, 2])
    ok_all = ~np.isin(scl_all, cloud_classes + (0,)) & np.isfinite(ndvi_all)
    summer = {}
    for yv in sorted(set(times.year)):
        sel = np.asarray((times.year == yv) & (times.month >= 5) & (times.month <= 9))
        if sel.any():
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels (always cloudy)
                summer[yv] = np.nanmedian(np.where(ok_all[sel], ndvi_all[sel], np.nan), axis=0)
    ref_year = 2016 if 2016 in summer else min(summer)
    loss: dict[str, dict[int, float]] = {}
    for r in range(nr):
        for c in range(nc):
            win = (slice(r * n, (r + 1) * n), slice(c * n, (c + 1) * n))
            ref_v = summer[ref_year][win]
            below = {yv: np.nan_to_num(ref_v - v[win], nan=0.0) >= 0.2 for yv, v in summer.items() if yv > ref_year}
            loss[chip_id("nrt", r, c)] = {
                yv: float(100.0 * np.mean(np.all([below[z] for z in below if z >= yv], axis=0)))
                for yv in below
            }
    return ChipSet.concat(sets, BANDS, chip_size), pd.DataFrame(ndvi_rows), loss


def ndvi_drop(dates: list[datetime], ndvi: np.ndarray, window: int = 3) -> tuple[datetime | None, float]:
    """Date of the steepest NDVI step down in the growing season (May-Sep obs only).

    For every growing-season observation ``i``: median of it and the next ``window - 1`` minus
    the median of the ``window`` before; returns the most negative step and its date.
    Restricting to May-Sep keeps leaf-off and snow from looking like loss.
    """
    keep = [i for i, d in enumerate(dates) if 5 <= d.month <= 9 and np.isfinite(ndvi[i])]
    v = ndvi[keep]
    best, when = 0.0, None
    for j in range(window, len(keep) - window + 1):
        step = float(np.median(v[j : j + window]) - np.median(v[j - window : j]))
        if step < best:
            best, when = step, dates[keep[j]]
    return when, best


def _mean_in(dates: list[datetime], v: np.ndarray, lo: datetime, hi: datetime) -> float:
    """Mean of growing-season (May-Sep) values with lo <= date < hi."""
    sel = [i for i, d in enumerate(dates) if lo <= d < hi and 5 <= d.month <= 9 and np.isfinite(v[i])]
    return float(np.mean(v[sel])) if sel else float("nan")


def run_nrt(args: argparse.Namespace, encoder) -> dict:
    path = nrt_path(args.nrt_path)
    extra = tuple(int(x) for x in args.nrt_extra_mask.split(",") if x.strip())
    cloud_classes = (1, 3, 8, 9, 10) + extra
    t0 = time.perf_counter()
    chips, ndvi, loss = load_nrt(path, args.nrt_chip_size, cloud_classes)
    E, t_embed = embed(chips, encoder, args.batch_size)
    basis = fit_incremental([E], n_components=max(args.pcs, 1), version=1)
    X = basis.transform(E).astype(np.float64)[:, : args.pcs]
    params = DetectorParams(**{"threshold": args.threshold, "k_consecutive": args.k_consecutive,
                               "n_harmonics": args.n_harmonics, "min_run_cosine": args.min_run_cosine,
                               **args.overrides})
    series = chip_series(chips.meta)
    n_dates = ndvi["datetime"].nunique()
    print(f"\n== nrt cube {path.name}: {n_dates} dates "
          f"{ndvi['datetime'].min():%Y-%m-%d} .. {ndvi['datetime'].max():%Y-%m-%d}, chip {args.nrt_chip_size} px, "
          f"SCL masked {list(cloud_classes)} + nodata [0], chips with > 20% cloud dropped: {len(chips)} clear chips "
          f"in {len(series)} series ({time.perf_counter() - t0:.1f} s, embed {t_embed:.1f} s)")
    print(f"   detector as above (first {args.pcs} PCs of a basis fitted on this cube's embeddings); "
          f"NDVI = mean over the chip's clear pixels; before/after = mean May-Sep NDVI in the year before the "
          f"event's first date / in the year from it; steepest drop = May-Sep step of 3-obs medians")
    years = sorted({d.year for d in ndvi["datetime"] if 5 <= d.month <= 9})
    hdr = (f"{'chip':<14} {'obs':>4} {'first date':<11} {'confirmed':<11} {'magn':>6} {'NDVI before':>11} "
           f"{'NDVI after':>10} {'steepest NDVI drop':>19}  " + " ".join(f"{y:>5}" for y in years))
    print("   (last columns: median May-Sep NDVI per year)")
    print(hdr)
    rows, t_det = [], 0.0
    for s in series:
        g = ndvi[(ndvi["chip_id"] == s.chip) & (ndvi["datetime"].isin(chips.meta.loc[s.rows, "datetime"]))]
        g = g.sort_values("datetime")
        nd_dates = [ts.to_pydatetime() for ts in g["datetime"]]
        nd = g["ndvi"].to_numpy()
        drop_date, drop = ndvi_drop(nd_dates, nd)
        per_year = []
        for yv in years:
            sel = [v for d, v in zip(nd_dates, nd) if d.year == yv and 5 <= d.month <= 9 and np.isfinite(v)]
            per_year.append(float(np.median(sel)) if sel else float("nan"))
        t1 = time.perf_counter()
        evs = detect_changes(s.dates, X[s.rows], params=params)
        t_det += time.perf_counter() - t1
        drop_s = f"{drop_date:%Y-%m-%d} {drop:+.2f}" if drop_date else "-"
        yr_s = " ".join(f"{v:>5.2f}" if np.isfinite(v) else f"{'-':>5}" for v in per_year)
        for e in evs or [None]:
            if e is None:
                before = after = float("nan")
                print(f"{s.chip:<14} {len(s.dates):>4} {'-':<11} {'-':<11} {'-':>6} {'-':>11} {'-':>10} "
                      f"{drop_s:>19}  {yr_s}")
            else:
                fd = e.first_date
                before = _mean_in(nd_dates, nd, fd - timedelta(days=365), fd)
                after = _mean_in(nd_dates, nd, fd, fd + timedelta(days=365))
                print(f"{s.chip:<14} {len(s.dates):>4} {fd:%Y-%m-%d}  {e.confirmed_date:%Y-%m-%d}  "
                      f"{e.magnitude:>6.1f} {before:>11.2f} {after:>10.2f} {drop_s:>19}  {yr_s}")
            rows.append({
                "chip": s.chip, "clear_obs": len(s.dates),
                "first_date": None if e is None else e.first_date.date().isoformat(),
                "confirmed_date": None if e is None else e.confirmed_date.date().isoformat(),
                "magnitude": None if e is None else e.magnitude,
                "ndvi_before": before, "ndvi_after": after,
                "ndvi_drop_date": drop_date.date().isoformat() if drop_date else None, "ndvi_drop": drop,
                "summer_ndvi_by_year": dict(zip(map(str, years), per_year)),
            })
    loss_years = sorted({yv for v in loss.values() for yv in v})
    print("\n   pixel loss reference (where and when forest was lost): % of the chip's pixels whose May-Sep "
          "median NDVI is >= 0.2 below their 2016 May-Sep median in that year and every later year")
    print(f"{'chip':<14} " + " ".join(f"{y:>6}" for y in loss_years) + "   events (first date)")
    ev_by_chip: dict[str, list[str]] = {}
    for r in rows:
        if r["first_date"]:
            ev_by_chip.setdefault(r["chip"], []).append(r["first_date"])
    for chip in sorted(loss):
        print(f"{chip:<14} " + " ".join(f"{loss[chip][y]:>6.1f}" for y in loss_years)
              + "   " + (", ".join(ev_by_chip.get(chip, [])) or "-"))
    n_ev = sum(r["first_date"] is not None for r in rows)
    summary = Row("real", f"chips {args.nrt_chip_size} px of the same cube", "ours (Clay PCs)", len(series), n_ev,
                  0, 0, 0, *(float("nan"),) * 6, 1000.0 * t_det / max(len(series), 1),
                  "no reference dates: events listed above against NDVI and the pixel-loss table")
    return {"file": str(path), "cloud_classes": list(cloud_classes), "chips": len(chips), "events": rows,
            "rows": [summary],
            "pixel_loss_pct": {k: {str(y): v for y, v in d.items()} for k, d in loss.items()}}


PARTS = ("sim", "planted", "real", "chips")


def _parts(args: argparse.Namespace) -> list[str]:
    """``--parts`` (minus the ``--skip-*`` ones); ``--quick`` shrinks every part's size."""
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    bad = sorted(set(parts) - set(PARTS))
    if bad:
        raise SystemExit(f"--parts: unknown {bad}; use any of {', '.join(PARTS)}")
    parts = [p for p in parts if not (p == "planted" and args.skip_synthetic) and not (p == "chips" and args.skip_nrt)]
    if args.quick:
        args.sim_size, args.real_pixels = 6, 100
        args.sim_magnitudes = ";".join(args.sim_magnitudes.split(";")[::3])  # smallest and largest
        args.sim_noises = args.sim_noises.split(";")[0]
        args.tiles, args.size, args.scenarios = args.tiles.split(",")[0], 256, "clouds"
    return parts


def _overrides(pairs: list[str]) -> dict:
    """``--set KEY=VALUE`` pairs as DetectorParams keyword arguments (values parsed as JSON when
    they can be: numbers, true/false, null), checked by building the parameters once."""
    out: dict = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep:
            raise SystemExit(f"--set {pair!r}: expected KEY=VALUE, e.g. --set refit_growth=1.33")
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw
    try:
        DetectorParams(**out)
    except (TypeError, ValueError) as e:
        raise SystemExit(f"--set: {e}") from None
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.overrides = _overrides(args.set)
    if args.threads:
        torch.set_num_threads(args.threads)
    parts = _parts(args)
    t0 = time.perf_counter()
    print(f"change_eval: parts {', '.join(parts)}; our detector through {ours_backend()}"
          + (f"; DetectorParams overrides {args.overrides}" if args.overrides else ""))
    out: dict = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    rows: list[Row] = []
    if "sim" in parts:
        from benchmarks._change_sim import run_sim, sim_configs

        print("\n== simulator: nrt.data.simulate cubes, ours vs nrt EWMA / CuSum / MoSum / CCDC")
        rows += run_sim(sim_configs(args.sim_magnitudes, args.sim_noises, args.sim_size, args.sim_seed),
                        overrides=args.overrides)
    encoder = None
    if "planted" in parts or "chips" in parts:
        encoder = build_encoder("tiny", seed=0)
        print(f"\ntiny Clay encoder (seed 0) on CPU, {torch.get_num_threads()} torch threads")
    if "planted" in parts:
        out["synthetic"] = run_synthetic(args, encoder)
        rows += out["synthetic"].get("rows", [])
    if "real" in parts:
        from benchmarks._change_real import run_real

        print("\n== real pixels: nrt's Sentinel-2 cube, ours and nrt CCDC vs pyxccd COLD")
        rows += run_real(args.real_pixels, args.real_seed, args.tolerance, args.real_err_window,
                         overrides=args.overrides)
    if "chips" in parts:
        out["nrt"] = run_nrt(args, encoder)
        rows += out["nrt"]["rows"]
    out["seconds"] = time.perf_counter() - t0
    out["summary_rows"] = [r.to_dict() for r in rows]
    print(f"\n== summary (our detector as of this run, via {ours_backend()}); err = onset error in "
          "observations (median signed, p90 of |err|); s/1000 = seconds per 1,000 series\n" + format_table(rows))
    print(f"\ntotal {out['seconds']:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=str, allow_nan=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The side-by-side change benchmark's scoring on hand-made cases, and one tiny simulator run."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks._change_refs import (
    Row, clear_index, format_table, match_events, row_from_matches, score_first_detection, sim_row,
)
from benchmarks._change_sim import SimConfig, nrt_first_detection, sim_configs, simulate


def test_first_detection_scoring_counts_tp_fp_fn_and_errors_in_valid_observations():
    valid = np.ones((5, 10), dtype=bool)
    valid[1, 5] = False  # series 1 misses one observation between its onset and detection
    onset = np.array([4, 4, 4, 6, -1])
    detected = np.array([5, 7, 3, 2, 8])
    sc = score_first_detection(onset, detected, valid, tol=1)
    # 0: +1 obs, TP; 1: positions 4, 6 valid before 7 -> +2 obs, TP; 2: -1 obs (within tol), TP;
    # 3: 4 obs early -> FP and FN; 4: stable series with a detection -> FP
    assert (sc.tp, sc.fp, sc.fn, sc.fp_early) == (3, 2, 1, 1)
    assert sc.errors == [1, 2, -1]
    row = sim_row("sim", "c", "m", 5, 5, sc, seconds=0.5)
    assert row.precision == pytest.approx(3 / 5) and row.recall == pytest.approx(3 / 4)
    assert row.f1 == pytest.approx(2 * 3 / (2 * 3 + 2 + 1))
    assert row.err_median == 1.0 and row.err_p90 == pytest.approx(np.quantile([1, 2, 1], 0.9))
    assert row.s_per_1000 == pytest.approx(100.0) and row.fp_per_100 == pytest.approx(40.0)
    assert "1 in stable series, 1 early" in row.note


def test_no_detection_in_unstable_series_is_a_false_negative_only():
    sc = score_first_detection(np.array([3, -1]), np.array([-1, -1]), np.ones((2, 6), bool))
    assert (sc.tp, sc.fp, sc.fn, sc.errors) == (0, 0, 1, [])


def test_clear_index_counts_valid_observations_before_each_position():
    assert clear_index(np.array([True, False, True, True])).tolist() == [0, 1, 1, 2]


def test_reference_matching_is_one_to_one_within_tolerance():
    assert match_events([10, 20], [11, 12, 30], tol=1) == [(10, 11)]
    assert match_events([10, 11], [11], tol=1) == [(11, 11)]  # the exact match wins
    row = row_from_matches("real", "c", "m", ref=[[10, 20], [5]], ours=[[11, 24, 40], []], seconds=2.0,
                           tol=1, err_window=6)
    assert (row.tp, row.fp, row.fn, row.events) == (1, 2, 2, 3)
    assert row.precision == pytest.approx(1 / 3) and row.recall == pytest.approx(1 / 3)
    assert row.err_median == pytest.approx(2.5)  # errors +1 and +4 (24 vs 20 within the window)
    assert row.fp_per_100 == pytest.approx(100.0) and row.s_per_1000 == pytest.approx(1000.0)
    table = format_table([row, Row("real", "c", "ref", 2, 3, 3, 0, 0, *(float("nan"),) * 6, 1.0)])
    assert "0.333" in table and table.count("\n") >= 3


def test_tiny_simulator_config_end_to_end():
    (cfg,) = sim_configs("0.2,0.3", "0.02,0.03", size=4, seed=3)
    assert cfg == SimConfig((0.2, 0.3), (0.02, 0.03), 4, 3)
    sc = simulate(cfg)
    n, t = sc.values.shape
    assert n == 16 and t == sc.dates.size and (sc.onset >= 0).sum() == 8
    assert sc.dates[sc.start] >= np.datetime64("2020-01-01") > sc.dates[sc.start - 1]
    broken = np.flatnonzero(sc.onset >= 0)
    assert np.all(sc.onset[broken] > sc.start) and np.all(sc.onset[broken] < t - 18)
    step = sc.values[broken, sc.onset[broken] - 1] - sc.values[broken, sc.onset[broken]]
    assert np.nanmedian(step) > 0.1  # the onset is the first lowered value (make_ts: break_idx + 1)
    assert np.array_equal(simulate(cfg).values, sc.values, equal_nan=True)  # seeded: same cube
    det, secs = nrt_first_detection("CCDC", sc.cube, sc.start)
    assert det.shape == (16,) and secs > 0 and np.all((det == -1) | (det >= sc.start))
    score = score_first_detection(sc.onset, det, np.isfinite(sc.values))
    assert score.tp + score.fn == 8  # every broken series is found or missed, once


def test_a_dated_detection_counts_by_when_it_was_detected_and_errs_by_its_date():
    valid = np.ones((3, 12), bool)
    onset = np.array([5, 5, -1])
    detected = np.array([8, 3, 9])  # confirmations: after the onset, before it, in a stable series
    dated = np.array([4, 2, 7])  # the onsets they were dated to
    sc = score_first_detection(onset, detected, valid, tol=1, dated=dated)
    assert (sc.tp, sc.fp, sc.fn, sc.fp_early) == (1, 2, 1, 1)
    assert sc.errors == [-1]  # from the dated onset, not the confirmation (+3)
    plain = score_first_detection(onset, detected, valid, tol=1)
    assert plain.errors == [3]


def test_mask_one_masks_exactly_one_clear_observation_per_series():
    from benchmarks._change_real import mask_one

    clear = np.random.default_rng(3).random((50, 30)) > 0.3
    out = mask_one(clear, seed=1)
    assert np.array_equal(clear.sum(1) - out.sum(1), np.ones(50))
    assert not (out & ~clear).any()  # nothing unmasked
    assert np.array_equal(out, mask_one(clear, seed=1))  # seeded


def test_set_overrides_parse_and_bad_ones_stop_the_run():
    from benchmarks.change_eval import _overrides

    assert _overrides(["refit_growth=null", "k_consecutive=6", "variogram_floor=false"]) == {
        "refit_growth": None, "k_consecutive": 6, "variogram_floor": False}
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        _overrides(["alpha"])
    with pytest.raises(SystemExit, match="refit_growth"):
        _overrides(["refit_growth=0.5"])
    with pytest.raises(SystemExit, match="no_such"):
        _overrides(["no_such=1"])

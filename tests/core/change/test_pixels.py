"""The pixel path: nrt's MoSum on the NDVI of chip pixels finds and dates a clearing of a few
percent of a chip, leaves an unchanged chip near 0, and its carried state equals a replay."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from clay_core.change.pixels import (PIXEL_STATE, PixelParams, advance_pixels, load_pixel_state,
                                     save_pixel_state)
from clay_core.storage import CHANGE, CHIPS, Layout, atomic_dir, write_manifest
from clay_core.types import PartitionId
from tests.support.pixels import CHANGE_AT, CLOUDY_AT, CS, N_WINDOWS, START, TILE, window, write_chips

PARAMS = PixelParams()


def _score(layout: Layout, i: int, params: PixelParams = PARAMS):
    """What the change stage does with the pixel path: advance, then publish the state."""
    pid = PartitionId(window=window(i), tile=TILE)
    step = advance_pixels(layout, pid, params)
    with atomic_dir(layout.partition_dir(CHANGE, pid)) as tmp:
        save_pixel_state(tmp, step.table, step.header)
        write_manifest(tmp, {"chips": len(step.scores)})
    return step


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Every window scored in order, each from the previous window's state."""
    layout = Layout(tmp_path_factory.mktemp("pixels"))
    rng = np.random.default_rng(7)
    for i in range(N_WINDOWS):
        write_chips(layout, i, rng)
    steps = [_score(layout, i) for i in range(N_WINDOWS)]
    frame = pd.concat([s.scores.assign(window=i) for i, s in enumerate(steps)], ignore_index=True)
    return layout, steps, frame


def test_a_six_by_six_clearing_is_found_and_dated(run):
    _, steps, frame = run
    a = frame[frame["chip_id"].str.endswith("c000")].set_index("window")
    assert a.loc[: 52, "pixel_change_fraction"].isna().all()  # the first year only collects history
    assert (a.loc[53:, "pixels_monitored"] > 0.9 * CS * CS).all()
    assert a.loc[CHANGE_AT - 1, "pixel_change_fraction"] < 0.005
    last = a.loc[N_WINDOWS - 1]
    assert abs(last["pixel_change_fraction"] - 36 / last["pixels_monitored"]) < 0.01, last
    assert abs(last["pixel_change_date"] - (START + pd.Timedelta(weeks=CHANGE_AT))) <= pd.Timedelta(days=7)
    assert all(s.replayed_windows == 0 for s in steps[1:])  # each window continued the previous state


def test_an_unchanged_chip_stays_near_zero_through_a_cloudy_observation(run):
    _, _, frame = run
    b = frame[frame["chip_id"].str.endswith("c001")].set_index("window")
    assert b.loc[N_WINDOWS - 1, "pixel_change_fraction"] < 0.01
    # the cloudy observation (cloud_fraction 0.15 > max_chip_cloud 0) was left out; fed to the
    # monitor, its 8 x 8 patch of NDVI 0 is confirmed as a break at once
    loose = PixelParams(max_chip_cloud=0.2)
    layout, _, _ = run
    stepped = advance_pixels(layout, PartitionId(window=window(CLOUDY_AT), tile=TILE), loose)
    got = stepped.scores.set_index("chip_id")["pixel_change_fraction"]
    assert got[f"{TILE}_r000c001"] > 0.05 and stepped.replayed_windows == CLOUDY_AT


def test_incremental_state_equals_a_replay_from_the_chip_cubes(run, tmp_path):
    layout, steps, _ = run
    last = N_WINDOWS - 1
    fresh = Layout(tmp_path)
    (fresh.root / CHIPS).symlink_to(layout.root / CHIPS)  # the same cubes, no change partitions
    replay = advance_pixels(fresh, PartitionId(window=window(last), tile=TILE), PARAMS)
    assert replay.replayed_windows == last and replay.replay_reason == "no earlier change partition"
    assert replay.table.equals(steps[last].table)
    pd.testing.assert_frame_equal(replay.scores, steps[last].scores)


def test_an_unusable_state_is_replayed_and_says_why(run, tmp_path):
    layout, steps, _ = run
    i = N_WINDOWS - 1
    prev = layout.partition(CHANGE, TILE, window(i - 1))
    saved = (prev / PIXEL_STATE).read_bytes()
    try:
        (prev / PIXEL_STATE).write_bytes(saved[: len(saved) // 2])
        broken = advance_pixels(layout, PartitionId(window=window(i), tile=TILE), PARAMS)
    finally:
        (prev / PIXEL_STATE).write_bytes(saved)
    other = advance_pixels(layout, PartitionId(window=window(i), tile=TILE), PixelParams(sensitivity=0.05))
    assert broken.replayed_windows == i and "unreadable" in broken.replay_reason
    assert broken.table.equals(steps[i].table)
    assert other.replayed_windows == i and "other pixel settings" in other.replay_reason
    tab, header = load_pixel_state(prev)
    assert header["window"] == window(i - 1) and tab.equals(steps[i - 1].table)


def test_bad_settings_name_the_parameter():
    from clay_core.errors import ConfigError

    with pytest.raises(ConfigError, match="h=0.3"):
        PixelParams(h=0.3)
    with pytest.raises(ConfigError, match="fit_method"):
        PixelParams(fit_method="LASSO")


def test_a_chip_first_seen_after_the_history_end_collects_its_own_history():
    """With ``history_end`` set, a chip that appears later is monitored once it has
    ``min_history_obs`` usable observations, not never."""
    from clay_core.change.pixels import PixelObs, new_pixel_table, step_pixels

    params = PixelParams(history_end=START + pd.Timedelta(weeks=10), fit_method="OLS")
    rng, tab, seen = np.random.default_rng(3), new_pixel_table(), {}
    for i in range(30):
        ids = np.array(["a", "late"] if i >= 15 else ["a"])
        when = np.full(len(ids), np.datetime64(START + pd.Timedelta(weeks=i), "ns"))
        ndvi = (0.8 + rng.normal(0, 0.03, (len(ids), 64))).astype(np.float32)
        out = step_pixels(tab, PixelObs(ids, when, ndvi, np.ones(len(ids), bool)), params)
        seen.update({(c, i): m for c, m in zip(out["chip_id"], out["pixels_monitored"])})
    assert seen[("a", 10)] == 0 and seen[("a", 11)] == 64  # fitted at its first week after history_end
    assert seen[("late", 22)] == 0 and seen[("late", 23)] == 64  # weeks 15..22 are its 8 history values


def test_scattered_false_alarms_do_not_add_up_in_the_fraction():
    """Two years of monitoring unchanged chips: MoSum's false alarms accumulate (the control:
    every broken pixel counted), the burst the fraction counts does not; a clearing stands out."""
    from benchmarks._scale_pixels import window_obs
    from clay_core.change.pixels import new_pixel_table, step_pixels

    ids = np.array([f"c{i}" for i in range(12)], dtype=object)
    rng, tab = np.random.default_rng(0), new_pixel_table()
    for i in range(157):  # history to week ~52, a 6 x 6 clearing in chip 3 from week 70
        scores = step_pixels(tab, window_obs(ids, i, 1024, np.array([3]), rng), PARAMS)
    frac = scores["pixel_change_fraction"].to_numpy()
    every_break = (tab["px_mask"][tab.rows(ids)] == 3).mean(1)
    stable = np.arange(12) != 3
    assert every_break[stable].min() > 0.03  # control: counted whole, noise outgrows the clearing
    assert frac[stable].max() < 0.015
    assert frac[3] >= 36 / 1024
    assert str(scores["pixel_change_date"].to_numpy()[3])[:10] in ("2023-05-10", "2023-05-17")  # week 70 or 71

"""The change stage's incremental path: each window continues the previous partition's carry,
reads no earlier embeddings, and gives bit for bit what a full replay of history gives."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from benchmarks._scale_change import TILE, World, window_name
from clay_core.change import ChangeParams, DetectorParams, PcaBasis, score_change
from clay_core.change import stage as stage_module
from clay_core.change.carry import load_carry
from clay_core.storage import CHANGE, Layout
from clay_core.types import PartitionId

N = 20  # windows of history before the compared one
PARAMS = ChangeParams(detector=DetectorParams(baseline_obs=4, n_harmonics=0, k_consecutive=2,
                                              feature_names=("pc1", "pc2", "pc3")))


def _pid(i: int) -> PartitionId:
    return PartitionId(window=window_name(i), tile=TILE)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """21 weekly windows of 36 chips (32-d), some chips observed twice a week, steps at 10."""
    w = World(side=6, dim=32, step_at=10)
    layout = Layout(tmp_path_factory.mktemp("incremental"))
    for i in range(N + 1):
        w.write(layout, i, w.window(i, extra=3 if i % 4 == 1 else 0))
    return w, layout


@pytest.fixture(autouse=True)
def no_pngs(monkeypatch):
    """PNG rendering (matplotlib) is most of a partition's time and not what these tests are
    about; tests/assets/test_pipeline.py checks the maps and series plots."""
    from clay_core.change import series_plots

    monkeypatch.setattr(stage_module, "intensity_map", lambda *a, **k: b"png")
    monkeypatch.setattr(series_plots, "series_plot", lambda *a, **k: b"png")


@pytest.fixture
def reads(monkeypatch):
    """Every embedding store the change stage opens."""
    seen: list[str] = []
    real = stage_module._read_observations

    def spy(store):
        seen.append(store.parent.name)
        return real(store)

    monkeypatch.setattr(stage_module, "_read_observations", spy)
    return seen


def _partition(layout: Layout, i: int) -> tuple[pd.DataFrame, pd.DataFrame, object]:
    d = layout.partition(CHANGE, TILE, window_name(i))
    return pd.read_parquet(d / "scores.parquet"), pd.read_parquet(d / "events.parquet"), load_carry(d)


def _same_frames(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    """Same columns, and every column's values bit for bit (NaN where NaN)."""
    if list(a.columns) != list(b.columns) or len(a) != len(b):
        return False
    for c in a.columns:
        x, y = a[c].to_numpy(), b[c].to_numpy()
        if x.dtype.kind in "fiub M" and x.dtype.kind != "O":
            if x.tobytes() != y.tobytes():
                return False
        elif [repr(v) for v in x] != [repr(v) for v in y]:
            return False
    return True


def test_incremental_after_20_windows_equals_a_full_replay_bit_for_bit(world, reads):
    w, layout = world
    basis = w.basis()
    events = 0
    for i in range(N + 1):
        reads.clear()
        res = score_change(layout, _pid(i), basis, PARAMS)
        assert reads == [window_name(i)]  # only this window's embeddings: no earlier store
        assert res.replayed_windows == 0 and res.replay_reason is None and res.history_windows == i
        events += len(res.events)
    assert events > 0  # the detector confirmed changes, so events are compared too
    incremental = _partition(layout, N)
    assert incremental[0]["change_flag"].any()

    shutil.rmtree(layout.root / CHANGE)  # no carry anywhere: window N replays all of history
    reads.clear()
    res = score_change(layout, _pid(N), basis, PARAMS)
    assert sorted(reads) == [window_name(i) for i in range(N + 1)]
    assert res.replayed_windows == N and res.replay_reason == "no earlier change partition"
    replayed = _partition(layout, N)
    assert _same_frames(incremental[0], replayed[0])
    assert _same_frames(incremental[1], replayed[1])
    assert incremental[2].equals(replayed[2])  # every carried column, bit for bit


def test_scores_follow_each_chips_own_history(world):
    """cosine_to_baseline / _previous recomputed from the raw series of a chip seen twice in a week."""
    w, layout = world
    basis = w.basis()
    for i in range(6):
        score_change(layout, _pid(i), basis, PARAMS)
    obs = [w.window(i, extra=3 if i % 4 == 1 else 0) for i in range(6)]
    scores = pd.read_parquet(layout.partition(CHANGE, TILE, window_name(5)) / "scores.parquet")
    twice = obs[5].chip_id[len(w.ids):]  # chips with a second acquisition in window 5
    for cid in [w.ids[0], *twice]:
        vec = np.concatenate([o.vectors[o.chip_id == cid] for o in obs]).astype(np.float64)
        base = np.median(vec[: PARAMS.baseline_obs], axis=0)
        cos = lambda a, b: 1 - a @ b / np.linalg.norm(a) / np.linalg.norm(b)  # noqa: E731
        mine = scores[scores["chip_id"] == cid].sort_values("datetime")
        n_before = len(vec) - len(mine)
        for k, row in enumerate(mine.itertuples()):
            j = n_before + k
            assert row.n_history == j
            assert row.cosine_to_baseline == pytest.approx(cos(vec[j], base), abs=1e-6)
            assert row.cosine_to_previous == pytest.approx(cos(vec[j], vec[j - 1]), abs=1e-6)


def test_a_new_basis_or_an_unscored_window_replays_and_says_why(world, reads):
    w, layout = world
    basis = w.basis()
    for i in range(4):
        score_change(layout, _pid(i), basis, PARAMS)
    # window 4 was never scored: window 5 continues window 3's carry and replays window 4 only
    shutil.rmtree(layout.partition(CHANGE, TILE, window_name(4)), ignore_errors=True)
    for d in (layout.root / CHANGE / TILE).glob(f".{window_name(4)}*"):
        shutil.rmtree(d)
    reads.clear()
    res = score_change(layout, _pid(5), basis, PARAMS)
    assert reads == [window_name(5), window_name(4)] and res.replayed_windows == 1
    assert window_name(4) in res.replay_reason and res.history_windows == 5
    # a refitted basis: window 6 cannot continue window 5's carry
    refit = PcaBasis(2, basis.mean, basis.components, basis.explained_variance_ratio, basis.n_samples)
    res = score_change(layout, _pid(6), refit, PARAMS)
    assert res.replayed_windows == 6 and "PCA v1 (now v2)" in res.replay_reason
    assert score_change(layout, _pid(7), refit, PARAMS).replayed_windows == 0
    # a damaged carry is not continued: history is rebuilt from the embeddings
    carry = layout.partition(CHANGE, TILE, window_name(7)) / "carry.npz"
    carry.write_bytes(carry.read_bytes()[:1000])
    res = score_change(layout, _pid(8), refit, PARAMS)
    assert res.replayed_windows == 8 and "unreadable" in res.replay_reason


@pytest.mark.parametrize("crs", ["EPSG:32631", "EPSG:4326"])
def test_chip_grid_geojson_is_what_geopandas_writes(crs):
    import json

    import geopandas as gpd
    from shapely.geometry import box

    from clay_core.change.stage import feature_collection

    gdf = gpd.GeoDataFrame({"chip_id": ["a", "b", "c"], "change_score": [np.nan, 0.25, -1e-9],
                            "change_flag": [True, False, False], "n_history": [1, 2, 3]},
                           geometry=[box(600000.1, 5e6, 600640.0, 5000640.123), box(0, 0, 1, 1),
                                     box(1.0 / 3, 2, 3, 4)], crs=crs)
    assert json.loads(feature_collection(gdf)) == json.loads(gdf.to_json(na="null"))

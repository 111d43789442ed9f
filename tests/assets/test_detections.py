"""Labelled search and the probe's detections on the planted world, through the CLI and Dagster.

`clay-assets run` materializes 2 tiles x 3 weekly windows of the small synthetic world (16
chips a tile, 2 planted clearings a tile). Labels come from tile 31UFU only (its cleared
observations positive, every other observation negative); tile 32UNB is held out: labelled
search must rank its cleared observations above its stable chips (AUC), and the probe's
detections must recover its clearings (precision and recall), through `label add`, `label
score` (the `detections` asset) and `clay.detections`.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import psycopg
import pytest
from dagster import AssetKey, DagsterInstance
from sklearn.metrics import roc_auc_score

from clay_assets import cli
from clay_core.sources.synthetic import SyntheticWorld
from clay_core.vectordb import VectorStore

CHIP = 64
TRAIN, HELD_OUT = "31UFU", "32UNB"


def _cli(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def _cleared(chip_id: str, acquired: date) -> bool:
    tile, rc = chip_id.split("_")
    row, col = int(rc[1:4]), int(rc[5:8])
    return any(p.acquired <= acquired and p.chip_fraction(row, col, CHIP) > 0.5
               for p in SyntheticWorld(size=256).planted(tile))


@pytest.fixture(scope="module")
def world(tmp_path_factory, pg_url):
    mp = pytest.MonkeyPatch()
    home = tmp_path_factory.mktemp("detections") / "clay"
    for k, v in {"CLAY_HOME": str(home), "DAGSTER_HOME": str(home / "dagster"), "CLAY_SYNTHETIC_SIZE": "256",
                 "CLAY_CHIP_SIZE": str(CHIP), "DATABASE_URL": pg_url}.items():
        mp.setenv(k, v)
    assert cli.main(["run", "--tiles", f"{TRAIN},{HELD_OUT}", "--from", "2024-01-29", "--to", "2024-02-18",
                     "--quiet"]) == 0
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute("SELECT chip_id, tile, acquired FROM clay.chips ORDER BY 1, 3").fetchall()
    obs = [(c, t, a, _cleared(c, a)) for c, t, a in rows]
    yield {"url": pg_url, "obs": obs, "mp": mp}
    mp.undo()


def _ids(world, tile, cleared):
    return [f"{c}@{a}" for c, t, a, y in world["obs"] if t == tile and y == cleared]


def _held_out_auc(world, scores: dict) -> float:
    """AUC of ``scores`` ((chip_id, acquired) -> score) on the held-out tile: cleared
    observations against the observations of chips that never clear."""
    ever = {c for c, t, a, y in world["obs"] if y}
    truth, s = [], []
    for c, t, a, y in world["obs"]:
        if t == HELD_OUT and (y or c not in ever):
            truth.append(y)
            s.append(scores[(c, a)])
    return roc_auc_score(truth, s)


def test_labelled_search_ranks_held_out_clearings_above_stable_chips(world):
    """The analyst's loop: search with the positives, mark the first wrong hits negative, search
    again. Scored on the held-out tile; the AUC of other choices of negatives is printed."""
    pos, every_neg = _ids(world, TRAIN, True), _ids(world, TRAIN, False)
    assert len(pos) == 5 and len(every_neg) == 43  # 2 clearings: 3 + 2 cleared weeks; 48 observations
    n_held = sum(t == HELD_OUT for _, t, _, _ in world["obs"])
    with VectorStore(world["url"], 192) as store:
        first = store.search_labeled(pos, k=10, tiles=[TRAIN])
        hard_neg = [f"{r.chip_id}@{r.acquired}" for r in first.itertuples() if not _cleared(r.chip_id, r.acquired)][:3]
        runs = {name: store.search_labeled(pos, neg, k=n_held, tiles=[HELD_OUT])
                for name, neg in (("positives only", []), ("3 marked wrong hits", hard_neg),
                                  ("every other observation", every_neg))}
    assert all(len(r) == n_held for r in runs.values())
    auc = {name: _held_out_auc(world, {(r.chip_id, r.acquired): r.similarity for r in res.itertuples()})
           for name, res in runs.items()}
    print("\nheld-out AUC of clay.search_labeled, negatives = " + "; ".join(f"{k}: {v:.3f}" for k, v in auc.items()))
    assert auc["3 marked wrong hits"] >= 0.95, auc
    top = runs["3 marked wrong hits"].head(3)
    assert all(_cleared(r.chip_id, r.acquired) for r in top.itertuples()), top


def test_probe_detections_recover_the_held_out_clearings(world, capsys):
    pos, neg = _ids(world, TRAIN, True), _ids(world, TRAIN, False)
    code, out, err = _cli(capsys, "label", "add", "--set", "clearings", "--positive", *pos, "--negative", ",".join(neg))
    assert code == 0, err
    assert "label set clearings: 5 positive, 43 negative observations" in out
    code, out, err = _cli(capsys, "label", "score")
    assert code == 0, err
    assert "scored 6 partition(s)" in out and "clearings\t5 positive\t43 negative\t96 detections" in out
    # twice: each partition's rows are replaced, never duplicated
    code, out, _ = _cli(capsys, "label", "score", "--tiles", HELD_OUT)
    assert code == 0 and "scored 3 partition(s)" in out and "96 detections" in out

    with VectorStore(world["url"], 192) as store:
        det = store.detections("clearings", 0.0)
    assert len(det) == len(world["obs"]) and det["model_version"].nunique() == 1
    held = det[det["tile"] == HELD_OUT]
    hit = {(r.chip_id, r.acquired) for r in held.itertuples() if r.score >= 0.5}
    truth = {(c, a) for c, t, a, y in world["obs"] if t == HELD_OUT and y}
    tp = len(hit & truth)
    precision, recall = tp / max(len(hit), 1), tp / len(truth)
    auc = _held_out_auc(world, {(r.chip_id, r.acquired): r.score for r in held.itertuples()})
    with capsys.disabled():  # the measured numbers, visible with -s
        print(f"\nprobe on {HELD_OUT}: precision {precision:.2f}, recall {recall:.2f} at 0.5 "
              f"({len(hit)} detections, {len(truth)} cleared), AUC {auc:.3f}")
    assert recall >= 0.8 and precision >= 0.8, (sorted(hit), sorted(truth))

    code, out, _ = _cli(capsys, "label", "detections", "--set", "clearings")
    assert code == 0 and out.count("\tprobe-") == len(det[det["score"] >= 0.5]) > 0, out
    # metadata: held-out precision/recall/AUC of the probe (grouped by chip: 2 folds here)
    md = DagsterInstance.get().get_latest_materialization_event(AssetKey("detections")).asset_materialization.metadata
    assert md["clearings/heldout_folds"].value == 2
    assert {"clearings/precision", "clearings/recall", "clearings/auc"} <= set(md)
    assert md["clearings/model_version"].value == det["model_version"].iloc[0]
    assert "| clearings | 5/43 |" in md["label_sets"].value


def test_cli_names_unknown_ids_and_bad_usage_in_one_line(world, capsys):
    cases = [
        (["label", "add", "--set", "c2", "--positive", "31UFU_r000c000", "31UFU_r009c009"],
         "observation(s) not found in clay.chips: 31UFU_r009c009"),
        (["label", "add", "--set", "c2", "--positive", "31UFU_r000c000@2023-01-02"],
         "not found in clay.chips: 31UFU_r000c000@2023-01-02"),
        (["label", "add", "--set", "bad set", "--positive", "31UFU_r000c000"], "label set 'bad set'"),
        (["search", "--positive", "nope_r1c1"], "not found in clay.chips: nope_r1c1"),
        (["search", "--chip", "31UFU_r000c000", "--negative", "31UFU_r000c001"], "--negative needs --positive"),
        (["label", "remove", "--set", "clearings"], "or --all"),
        (["label", "detections", "--set", "nothing"], "label set 'nothing' has no labels and no detections"),
    ]
    for argv, expect in cases:
        code, out, err = _cli(capsys, *argv)
        assert code == 2 and err.count("\n") == 1 and expect in err, (argv, out, err)
    code, out, _ = _cli(capsys, "label", "list", "--set", "c2")
    assert "label set c2 has no labels" in out  # nothing written by the refused adds
    code, out, err = _cli(capsys, "search", "--positive", *_ids(world, TRAIN, True)[:2], "--negative",
                          _ids(world, TRAIN, False)[0], "--k", "3", "--tiles", HELD_OUT)
    assert code == 0 and len([l for l in out.splitlines() if l.startswith(HELD_OUT)]) == 3, out + err


@pytest.mark.parametrize("argv", [["label", "list"], ["label", "add", "--set", "s", "--positive", "31UFU_r000c000"],
                                  ["search", "--positive", "31UFU_r000c000"]])
def test_label_commands_refuse_a_home_without_platform_data(argv, tmp_path, monkeypatch, capsys):
    home = tmp_path / "nothing-here" / ".clay"
    monkeypatch.setenv("CLAY_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    code, out, err = _cli(capsys, *argv)
    assert code == 2 and err.count("\n") == 1 and f"no platform data under {home}" in err
    assert not (tmp_path / "nothing-here").exists()

"""The whole asset graph, materialized for real: 2 tiles x 6 weekly windows.

Temp DAGSTER_HOME (a real SQLite-backed instance), temp Zarr root, real embedded Postgres.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg
import pytest
from dagster import DagsterInstance, materialize

from clay_assets.definitions import ALL_ASSETS, PER_SCENE_DOWNSTREAM, PER_SCENE_UPSTREAM
from clay_assets.partitions import make_key
from clay_assets.runner import materialize_graph
from clay_assets.cli import change_report
from clay_core.chips import open_cube
from clay_core.encoder.store import open_embeddings
from clay_core.encoder.model import PRESETS
from clay_core.sources.synthetic import CLEARED, FOREST
from tests.support.pipeline import CHIP, TILES, WINDOWS, small_resources

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def graph(tmp_path_factory, pg_url):
    base = tmp_path_factory.mktemp("graph")
    dagster_home = base / "dagster"
    dagster_home.mkdir()
    os.environ["DAGSTER_HOME"] = str(dagster_home)
    instance = DagsterInstance.get()
    resources = small_resources(base / "clay", pg_url)
    summary = materialize_graph(TILES, WINDOWS, resources, instance)
    yield {"instance": instance, "resources": resources, "summary": summary, "base": base, "pg_url": pg_url}
    instance.dispose()


def _layout(graph):
    return graph["resources"]["home"].layout


def _db_rows(pg_url: str, sql: str, *params):
    with psycopg.connect(pg_url) as conn:
        return conn.execute(sql, params).fetchall()


def test_every_run_succeeded_and_instance_records_materializations(graph):
    s = graph["summary"]
    assert s.failures == []
    assert s.runs == 2 * len(TILES) * len(WINDOWS) + 1
    inst = graph["instance"]
    from dagster import AssetKey

    for name in ("raw_scenes", "chip_cubes", "embeddings", "change_scores", "vectors"):
        keys = inst.get_materialized_partitions(AssetKey(name))
        assert len(keys) == len(TILES) * len(WINDOWS), name


def test_zarr_cubes_have_shapes_and_coordinates(graph):
    layout = _layout(graph)
    src = graph["resources"]["source"].get_source()
    for tile in TILES:
        grid = src.grid(tile)
        for w in WINDOWS:
            ds = open_cube(layout.partition("chips", tile, w) / "cube.zarr")
            n = ds.sizes["chip"]
            assert ds["pixels"].dims == ("chip", "band", "y", "x")
            assert ds["pixels"].shape[1:] == (4, CHIP, CHIP)
            assert ds["pixels"].dtype == np.uint16
            assert list(ds["band"].values) == ["blue", "green", "red", "nir"]
            assert 0 < n <= (256 // CHIP) ** 2
            assert ds["cloud_fraction"].values.max() <= 0.2
            # chip ids anchor to the tile grid: row/col in the id match the coords
            for cid, r, c in zip(ds["chip_id"].values, ds["row"].values, ds["col"].values):
                assert cid == f"{tile}_r{r:03d}c{c:03d}"
            # centre lat/lon lie inside the WGS84 bounds, and agree with the native grid
            b = ds["bounds"].values
            assert np.all((b[:, 0] < ds["lon"].values) & (ds["lon"].values < b[:, 2]))
            assert np.all((b[:, 1] < ds["lat"].values) & (ds["lat"].values < b[:, 3]))
            nb = ds["native_bounds"].values
            assert np.allclose(nb[:, 0], grid.transform.c + ds["col"].values * CHIP * 10.0)
            assert np.allclose(nb[:, 3], grid.transform.f - ds["row"].values * CHIP * 10.0)
            # the stored pixels are the source's pixels
            scene_t = pd.Timestamp(ds["datetime"].values[0]).to_pydatetime().replace(tzinfo=__import__("datetime").timezone.utc)
            data, _, _ = src.world.render(tile, scene_t)
            r0, c0 = int(ds["row"].values[0]) * CHIP, int(ds["col"].values[0]) * CHIP
            assert np.array_equal(ds["pixels"].values[0], data[:, r0 : r0 + CHIP, c0 : c0 + CHIP])


def test_cloudy_window_drops_cloudy_chips(graph):
    layout = _layout(graph)
    # acquisition index 2 is the synthetic world's cloudy date
    n_cloudy = open_cube(layout.partition("chips", "31UFU", WINDOWS[2]) / "cube.zarr").sizes["chip"]
    n_clear = open_cube(layout.partition("chips", "31UFU", WINDOWS[1]) / "cube.zarr").sizes["chip"]
    assert n_cloudy < n_clear == 16


def test_embeddings_finite_with_configured_dimension(graph):
    layout = _layout(graph)
    dim = PRESETS["tiny"]["dim"]
    for tile in TILES:
        for w in WINDOWS:
            ds = open_embeddings(layout.partition("embeddings", tile, w) / "embeddings.zarr")
            emb = ds["embedding"].values
            assert emb.shape[1] == dim
            assert np.isfinite(emb).all()
            cube = open_cube(layout.partition("chips", tile, w) / "cube.zarr")
            assert list(ds["chip_id"].values) == list(cube["chip_id"].values)


def test_postgres_rows_equal_kept_chips_and_no_nan(graph):
    layout = _layout(graph)
    kept = sum(
        open_cube(layout.partition("chips", t, w) / "cube.zarr").sizes["chip"] for t in TILES for w in WINDOWS
    )
    (count,) = _db_rows(graph["pg_url"], "SELECT count(*) FROM clay.chips")[0]
    assert count == kept
    (dups,) = _db_rows(graph["pg_url"], "SELECT count(*) FROM (SELECT chip_id, acquired FROM clay.chips GROUP BY 1, 2 HAVING count(*) > 1) d")[0]
    assert dups == 0
    (nans,) = _db_rows(
        graph["pg_url"],
        "SELECT count(*) FROM clay.chips WHERE cosine_to_baseline = 'NaN' OR harmonic_deviation = 'NaN' "
        "OR change_score = 'NaN' OR cloud_fraction = 'NaN' OR lat = 'NaN' OR lon = 'NaN'",
    )[0]
    assert nans == 0
    for t in TILES:
        for w in WINDOWS:
            scores = pd.read_parquet(layout.partition("change", t, w) / "scores.parquet")
            # NaN is legitimate only where the quantity is undefined: no previous observation yet,
            # or the persistent-change detector is still collecting its baseline.
            must = ["cosine_to_baseline", "harmonic_deviation", "change_score", "pc1", "pc2", "pc3"]
            assert not scores[must].isna().to_numpy().any()
            undefined = scores["detector_score"].isna()
            assert (undefined == scores["detector_in_baseline"]).all()


def test_planted_changes_are_flagged(graph):
    report = change_report(graph["resources"], TILES, WINDOWS)
    assert report.truth_chips == 6
    assert report.recall >= 0.8, report.table()


def test_similar_chips_ranks_planted_siblings_above_unrelated(graph):
    src = graph["resources"]["source"].get_source()
    planted = src.planted_changes(TILES)
    cleared = {f"{p.tile}_r{p.row0 // CHIP:03d}c{p.col0 // CHIP:03d}": p.acquired for p in planted}
    query = sorted(cleared)[0]
    rows = _db_rows(graph["pg_url"], "SELECT chip_id, tile, acquired, similarity FROM clay.similar_chips(%s, 1000)", query)
    assert rows, "similar_chips returned nothing"
    assert all(r[0] != query for r in rows)
    sims = [r[3] for r in rows]
    assert sims == sorted(sims, reverse=True)
    # Siblings: other clearings, observed after they were cleared. Unrelated: chips that are
    # forest on every date.
    forest = set()
    for tile in TILES:
        lc = src.world.landcover(tile)
        for r in range(256 // CHIP):
            for c in range(256 // CHIP):
                cid = f"{tile}_r{r:03d}c{c:03d}"
                if (lc[r * CHIP : (r + 1) * CHIP, c * CHIP : (c + 1) * CHIP] == FOREST).mean() > 0.9 and cid not in cleared:
                    forest.add(cid)
    sib_rank = [i for i, r in enumerate(rows) if r[0] in cleared and r[2] >= cleared[r[0]]]
    forest_rank = [i for i, r in enumerate(rows) if r[0] in forest]
    assert sib_rank and forest_rank
    assert max(sib_rank) < min(forest_rank), (sib_rank, forest_rank[:5])


def test_rematerializing_a_partition_replaces_not_duplicates(graph):
    layout = _layout(graph)
    res, inst = graph["resources"], graph["instance"]
    tile, w = "31UFU", WINDOWS[3]
    cube = layout.partition("chips", tile, w)
    (cube / "stale-marker").write_text("from the previous run")
    before = _db_rows(graph["pg_url"], "SELECT count(*) FROM clay.chips")[0][0]
    part = _db_rows(graph["pg_url"], "SELECT count(*) FROM clay.chips WHERE tile=%s AND partition_key=%s", tile, f"{w}|{tile}")[0][0]
    key = make_key(tile, w)
    assert materialize(ALL_ASSETS, selection=PER_SCENE_UPSTREAM, partition_key=key, resources=res, instance=inst).success
    assert materialize(ALL_ASSETS, selection=PER_SCENE_DOWNSTREAM, partition_key=key, resources=res, instance=inst).success
    assert not (cube / "stale-marker").exists()
    assert open_cube(cube / "cube.zarr").sizes["chip"] == part
    after = _db_rows(graph["pg_url"], "SELECT count(*) FROM clay.chips")[0][0]
    assert after == before
    assert not list(cube.parent.glob(".*tmp-*")) and not list(cube.parent.glob(".*old-*"))


def test_definitions_validate():
    env = dict(os.environ)
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _cli(monkeypatch, capsys, graph, *argv) -> tuple[int, str, str]:
    from clay_assets import cli

    monkeypatch.setenv("DATABASE_URL", graph["pg_url"])
    code = cli.main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_search_by_chip_writes_geojson_with_thumbnails(graph, monkeypatch, capsys, tmp_path):
    import json as _json

    query = "31UFU_r002c000"
    code, out, _ = _cli(monkeypatch, capsys, graph, "search", "--chip", query, "--k", "5", "--geojson", str(tmp_path / "r.geojson"))
    assert code == 0
    fc = _json.loads((tmp_path / "r.geojson").read_text())
    feats = fc["features"]
    assert len(feats) == 5 and fc["query"]["chip"] == query
    sims = [f["properties"]["similarity"] for f in feats]
    assert sims == sorted(sims, reverse=True)
    for f in feats:
        assert f["properties"]["chip_id"] != query
        assert Path(f["properties"]["thumbnail"]).is_file()
        ring = f["geometry"]["coordinates"][0]
        assert len(ring) == 5 and f["geometry"]["type"] == "Polygon"
    # same ranking as the SQL function
    rows = _db_rows(graph["pg_url"], "SELECT chip_id FROM clay.similar_chips(%s, 5)", query)
    assert [f["properties"]["chip_id"] for f in feats] == [r[0] for r in rows]


def test_cli_search_by_location_and_filters(graph, monkeypatch, capsys):
    (lon, lat) = _db_rows(graph["pg_url"], "SELECT lon, lat FROM clay.chips WHERE chip_id = '32UNB_r001c002' LIMIT 1")[0]
    code, out, _ = _cli(monkeypatch, capsys, graph, "search", "--lat", str(lat), "--lon", str(lon), "--k", "4",
                        "--tiles", "31UFU", "--from", "2024-01-29")
    assert code == 0
    assert "'chip': '32UNB_r001c002'" in out
    lines = [l for l in out.splitlines() if l.startswith(("31UFU", "32UNB"))]
    assert len(lines) == 4
    assert all(l.split("\t")[1] == "31UFU" and l.split("\t")[2] >= "2024-01-29" for l in lines)


def test_cli_and_sql_resist_injection(graph, monkeypatch, capsys):
    before = _db_rows(graph["pg_url"], "SELECT count(*) FROM clay.chips")[0][0]
    evil = "x'); DROP TABLE clay.observations; --"
    code, _, err = _cli(monkeypatch, capsys, graph, "search", "--chip", evil)
    assert code == 2 and "not found" in err
    code, out, _ = _cli(monkeypatch, capsys, graph, "search", "--chip", "31UFU_r002c000", "--tiles", evil)
    assert code == 0 and "no results" in out
    code, _, err = _cli(monkeypatch, capsys, graph, "search", "--chips", f"31UFU_r002c000,{evil}")
    assert _db_rows(graph["pg_url"], "SELECT count(*) FROM clay.chips")[0][0] == before


def test_cli_db_url_is_connectable(graph, monkeypatch, capsys):
    code, out, _ = _cli(monkeypatch, capsys, graph, "db-url")
    assert code == 0
    with psycopg.connect(out.strip()) as conn:
        assert conn.execute("SELECT count(*) FROM clay.chips").fetchone()[0] > 0

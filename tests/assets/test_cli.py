"""The command line: `run`, `status`, `report`, `db stop`, query commands on a home without
platform data, one-line configuration errors, and `demo --real` on the real nrt cube.

In-process commands get their settings from the environment (monkeypatched), as the CLI does;
`demo --real` and the other-folder case run `clay-assets` as a subprocess, as a user would.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from dagster import AssetKey, DagsterInstance, materialize

from clay_assets import cli
from clay_assets.definitions import ALL_ASSETS, PER_SCENE_UPSTREAM
from clay_assets.partitions import make_key
from clay_assets.resources.build import build_resources

ROOT = Path(__file__).resolve().parents[2]
CLAY = str(Path(sys.executable).parent / "clay-assets")


def _cli(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def _small_env(monkeypatch, home: Path, pg_url: str | None) -> None:
    """A small synthetic world (256 px, 64 px chips: 16 chips a tile) in ``home``."""
    monkeypatch.setenv("CLAY_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    monkeypatch.setenv("CLAY_SYNTHETIC_SIZE", "256")
    monkeypatch.setenv("CLAY_CHIP_SIZE", "64")
    if pg_url:
        monkeypatch.setenv("DATABASE_URL", pg_url)
    else:
        monkeypatch.delenv("DATABASE_URL", raising=False)


@pytest.mark.parametrize("argv", [["search", "--chip", "31UFU_r000c000"], ["report"], ["status"], ["db-url"]])
def test_query_commands_refuse_a_home_without_platform_data(argv, tmp_path, monkeypatch, capsys):
    home = tmp_path / "nothing-here" / ".clay"
    _small_env(monkeypatch, home, None)
    code, out, err = _cli(capsys, *argv)
    assert code == 2
    assert err.count("\n") == 1 and f"no platform data under {home}" in err and "clay-assets demo" in err
    assert not (tmp_path / "nothing-here").exists(), "a query command created state"


def test_search_from_another_folder_creates_nothing(tmp_path):
    """The reported bug: run from another folder, `search` made ./.clay with its own Postgres."""
    env = {k: v for k, v in os.environ.items() if k not in ("CLAY_HOME", "DAGSTER_HOME", "DATABASE_URL")}
    proc = subprocess.run([CLAY, "search", "--chip", "31UFU_r002c000"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "no platform data under" in proc.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv,env,expect", [
    (["run", "--tiles", "31UFU", "--from", "2024-13-01", "--to", "2024-01-10"], {}, "--from '2024-13-01' is not a date"),
    (["run", "--tiles", "34TER", "--from", "2024-01-01", "--to", "2024-01-10"], {}, "add them to CLAY_TILES"),
    (["run", "--tiles", "XX", "--from", "2024-01-01", "--to", "2024-01-10"], {}, "--tiles"),
    (["run", "--tiles", "31UFU", "--from", "2023-06-01", "--to", "2024-01-10"], {}, "CLAY_START"),
    (["run", "--tiles", "31UFU", "--from", "2024-02-01", "--to", "2024-01-10"], {}, "before --from"),
    (["run", "--area", "no-such-area.geojson", "--from", "2024-01-01", "--to", "2024-01-10"], {}, "--area"),
    (["status"], {"CLAY_CHIP_SIZE": "13"}, "CLAY_CHIP_SIZE=13"),
    (["demo"], {"CLAY_SOURCE": "nope"}, "CLAY_SOURCE='nope'"),
    (["demo", "--windows", "2000"], {}, "are not partitions"),  # 2000 weeks from 2024: in the future
])
def test_configuration_errors_are_one_line_and_exit_2(argv, env, expect, tmp_path, monkeypatch, capsys):
    _small_env(monkeypatch, tmp_path / "clay", None)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    code, out, err = _cli(capsys, *argv)
    assert code == 2, out + err
    assert err.count("\n") == 1 and err.startswith("clay-assets: error: ") and expect in err, err
    assert not (tmp_path / "clay" / "pg").exists()


@pytest.fixture(scope="module")
def ran(tmp_path_factory, pg_url):
    """`clay-assets run --tiles 31UFU --from 2024-01-01 --to 2024-01-14` on a small world."""
    mp = pytest.MonkeyPatch()
    home = tmp_path_factory.mktemp("cli-run") / "clay"
    _small_env(mp, home, pg_url)
    code = cli.main(["run", "--tiles", "31UFU", "--from", "2024-01-01", "--to", "2024-01-14", "--quiet"])
    yield {"code": code, "home": home, "mp": mp}
    mp.undo()


def test_run_materializes_the_chosen_windows_oldest_first(ran, pg_url, capsys):
    assert ran["code"] == 0
    instance = DagsterInstance.get()
    for name in ("raw_scenes", "chip_cubes", "embeddings", "change_scores", "vectors"):
        keys = sorted(instance.get_materialized_partitions(AssetKey(name)))
        assert keys == ["2024-01-01|31UFU", "2024-01-08|31UFU"], name
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute("SELECT DISTINCT tile, partition_key FROM clay.chips ORDER BY 2").fetchall()
    assert rows == [("31UFU", "2024-01-01|31UFU"), ("31UFU", "2024-01-08|31UFU")]
    # oldest first: the change scores of the second window read the first as history
    runs = instance.get_run_records()
    order = [r.dagster_run.tags.get("dagster/partition") for r in sorted(runs, key=lambda r: r.create_timestamp)]
    assert [k for k in order if k][:2] == ["2024-01-01|31UFU", "2024-01-08|31UFU"]


def test_status_counts_materialized_and_stale_partitions(ran, capsys):
    code, out, _ = _cli(capsys, "status")
    assert code == 0
    lines = {l.split()[0]: l for l in out.splitlines() if l and not l.startswith(("CLAY_HOME", "tiles"))}
    assert "2/" in lines["embeddings"] and "0 stale" in lines["embeddings"]
    assert lines["pca"].split()[1] == "materialized"
    # re-chip one partition with another chip size: its embeddings are now stale (new data version)
    instance = DagsterInstance.get()
    res = build_resources(chip_size=32)
    assert materialize(ALL_ASSETS, selection=[PER_SCENE_UPSTREAM[1]], partition_key=make_key("31UFU", "2024-01-08"),
                       resources=res, instance=instance).success
    code, out, _ = _cli(capsys, "status")
    emb = next(l for l in out.splitlines() if l.startswith("embeddings"))
    assert "1 stale: 2024-01-08|31UFU" in emb, out


def test_report_says_why_there_are_no_events(ran, capsys):
    code, out, _ = _cli(capsys, "report")
    assert code == 0
    assert "2 weekly windows with change scores" in out
    assert "no change event confirmed: the detector needs a baseline of 12 clear observations spanning >= 1 year" in out


def test_db_stop_stops_this_homes_embedded_server(tmp_path, monkeypatch, capsys):
    from clay_core.vectordb import start_embedded

    base = Path(os.environ.get("TMPDIR", "/tmp")) / f"clay-cli-db-{os.getpid()}"
    base.mkdir(mode=0o755, exist_ok=True)  # postgres runs unprivileged when we are root
    _small_env(monkeypatch, base / "clay", None)
    url = start_embedded(base / "clay" / "pg")
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    code, out, _ = _cli(capsys, "db", "stop")
    assert code == 0 and "stopped the embedded Postgres" in out
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(url, connect_timeout=3).close()
    code, out, _ = _cli(capsys, "db", "stop")
    assert code == 0 and "no embedded Postgres running" in out
    import shutil

    shutil.rmtree(base, ignore_errors=True)


def test_demo_real_prints_a_search_and_a_change_report_beside_nrt(tmp_path_factory, pg_url):
    """`demo --real` on its first 16 clear weeks (the full run is the README's; this keeps the
    suite short): the real cube's chips, a similarity search and the nrt reference per chip."""
    base = tmp_path_factory.mktemp("real")
    env = dict(os.environ, CLAY_HOME=str(base / "clay"), DATABASE_URL=pg_url)
    env.pop("DAGSTER_HOME", None)
    proc = subprocess.run([CLAY, "demo", "--real", "--windows", "16", "--quiet"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "tile 34TER, 140 acquisitions" in out and "done: 33 runs" in out
    assert "beside nrt's pixel-level monitors on NDVI" in out
    table = [l for l in out.splitlines() if l.startswith("34TER_r")]
    chips = {l.split()[0] for l in table}
    assert chips >= {f"34TER_r{r:03d}c{c:03d}" for r in range(3) for c in range(3)}
    assert "Similarity search: observations most like 34TER_r" in out
    assert sum(l.strip().startswith("34TER_r") and l.strip().split()[1] == "34TER" for l in out.splitlines()) == 8
    # its own home: the synthetic demo's state is not touched
    assert (base / "clay" / "real" / "data" / "chips" / "34TER").is_dir()
    assert not (base / "clay" / "data").exists()

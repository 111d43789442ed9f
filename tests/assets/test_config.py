"""clay_assets.config: the one reader of the environment, checked against the README."""

import re
from pathlib import Path

import pytest
from dagster import EnvVar

from clay_assets import config
from clay_assets.resources.build import build_resources
from clay_core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def _readme_variables() -> set[str]:
    """Variable names in the first column of the README's configuration table."""
    names = set()
    for line in (ROOT / "README.md").read_text().splitlines():
        if line.startswith("| `"):
            first = line.split("|")[1]
            names |= set(re.findall(r"`([A-Z][A-Z0-9_]+)`", first))
    return names


def test_readme_table_lists_exactly_the_declared_variables():
    declared = set(config.SETTINGS)
    documented = _readme_variables()
    assert documented == declared, (f"missing from README: {sorted(declared - documented)}; "
                                    f"not declared in config: {sorted(documented - declared)}")


def test_readme_defaults_match_the_declared_ones():
    """Where the README's table states a default in backticks, it is the declared one."""
    for line in (ROOT / "README.md").read_text().splitlines():
        if not line.startswith("| `"):
            continue
        cells = [c.strip() for c in line.split("|")[1:-1]]
        names = re.findall(r"`([A-Z][A-Z0-9_]+)`", cells[0])
        defaults = re.findall(r"`([^`]*)`", cells[1])
        if len(names) == 1 and len(defaults) == 1 and config.SETTINGS[names[0]].default is not None:
            want = config.SETTINGS[names[0]].default
            assert defaults[0] in (want, f"./{want}"), f"{names[0]}: README says {defaults[0]!r}, config {want!r}"


def test_defaults_without_any_variable(tmp_path):
    cfg = config.load({"CLAY_HOME": str(tmp_path)})
    assert cfg.home == tmp_path.resolve() and cfg.dagster_home == tmp_path.resolve() / "dagster"
    assert cfg.tiles == ("31UFU", "32UNB") and cfg.start == "2024-01-01" and cfg.end is None
    assert cfg.source == "synthetic" and cfg.chip_size == 256 and cfg.preset == "tiny"
    assert cfg.batch_size == 8 and cfg.patch_tokens is False and cfg.aws_anonymous is True
    assert cfg.database_url is None and cfg.embedded_pg is None and cfg.max_concurrent == 2


def test_relative_homes_become_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = config.load({"CLAY_HOME": "state", "DAGSTER_HOME": "dh"})
    assert cfg.home == tmp_path / "state" and cfg.dagster_home == tmp_path / "dh"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"CLAY_CHIP_SIZE": "big"}, "CLAY_CHIP_SIZE"),
        ({"CLAY_BATCH_SIZE": "0"}, "CLAY_BATCH_SIZE"),
        ({"CLAY_TILES": "31UFU,NOPE"}, "CLAY_TILES"),
        ({"CLAY_TILES": " , "}, "CLAY_TILES"),
        ({"CLAY_START": "2024-13-01"}, "CLAY_START"),
        ({"CLAY_END": "soon"}, "CLAY_END"),
        ({"CLAY_SOURCE": "ftp"}, "CLAY_SOURCE"),
        ({"CLAY_SOURCE": "local"}, "CLAY_SOURCE_ROOT"),
        ({"CLAY_PATCH_TOKENS": "maybe"}, "CLAY_PATCH_TOKENS"),
        ({"CLAY_STAC_MAX_CLOUD": "ten"}, "CLAY_STAC_MAX_CLOUD"),
        ({"CLAY_CHIP_SIZE": "100"}, "CLAY_CHIP_SIZE=100 must be a positive multiple of 8"),
        ({"CLAY_PRESET": "huge"}, "CLAY_PRESET='huge' is not one of"),
        ({"CLAY_CHECKPOINT": "/nonexistent/clay-v1.5.ckpt"}, "CLAY_CHECKPOINT=.* is not a file"),
        ({"CLAY_DEVICE": "gpu"}, "CLAY_DEVICE"),
        ({"CLAY_VECTOR_STORAGE": "float16"}, "CLAY_VECTOR_STORAGE"),
        ({"CLAY_EMBEDDED_PG": "postgres18"}, "CLAY_EMBEDDED_PG"),
        ({"CLAY_LABELS": "raster"}, "CLAY_LABELS_PATH"),
    ],
)
def test_bad_values_name_the_variable(env, named):
    with pytest.raises(ConfigError, match=named):
        config.load(env)


def test_database_url_is_an_env_var_reference_not_a_literal(tmp_path, monkeypatch):
    secret = "postgresql://clay:s3cret-pw@127.0.0.1:1/clay"
    monkeypatch.setenv("DATABASE_URL", secret)
    monkeypatch.setenv("CLAY_HOME", str(tmp_path))
    cfg = config.current()
    assert cfg.database_url == secret and "s3cret" not in repr(cfg)
    db = build_resources(cfg=cfg)["vectordb"]
    assert isinstance(db.database_url, EnvVar) and db.database_url.env_var_name == "DATABASE_URL"
    assert "s3cret" not in repr(db)
    assert db.url() == secret


def test_bad_value_fails_definitions_validate(tmp_path):
    """Checked when the code location loads, so `dagster definitions validate` refuses it."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "CLAY_HOME": str(tmp_path), "CLAY_CHIP_SIZE": "100"}
    proc = subprocess.run([str(Path(sys.executable).parent / "dagster"), "definitions", "validate", "-w",
                           "workspace.yaml"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "CLAY_CHIP_SIZE=100 must be a positive multiple of 8" in proc.stdout + proc.stderr


def test_current_follows_the_environment(monkeypatch):
    monkeypatch.setenv("CLAY_TILES", "33UUP")
    assert config.current().tiles == ("33UUP",)
    monkeypatch.setenv("CLAY_TILES", "31UFU")
    assert config.current().tiles == ("31UFU",)


def test_settings_reach_the_resources(tmp_path):
    env = {"CLAY_HOME": str(tmp_path), "CLAY_PRESET": "small", "CLAY_DEVICE": "cpu", "CLAY_BATCH_SIZE": "3",
           "CLAY_PATCH_TOKENS": "yes", "CLAY_CHIP_SIZE": "128", "CLAY_VECTOR_STORAGE": "halfvec",
           "CLAY_SOURCE": "stac", "CLAY_STAC_URL": "http://127.0.0.1:9/stac", "CLAY_STAC_MAX_CLOUD": "30",
           "CLAY_REQUESTER_PAYS": "1"}
    res = build_resources(cfg=config.load(env))
    m = res["model"]
    assert (m.preset, m.device, m.batch_size, m.patch_tokens) == ("small", "cpu", 3, True)
    assert res["chip_settings"].chip_size == 128 and res["vectordb"].storage == "halfvec"
    src = res["source"]
    assert (src.url, src.max_cloud, src.requester_pays) == ("http://127.0.0.1:9/stac", 30.0, True)
    assert res["vectordb"].database_url is None and res["home"].root == str(tmp_path.resolve())


def test_platforms_file_reaches_the_code_location(tmp_path):
    """CLAY_PLATFORMS_FILE is applied when the code location loads (so in every run worker);
    a missing file fails the load naming the variable."""
    import subprocess
    import sys

    yaml = tmp_path / "p.yaml"
    yaml.write_text("platforms:\n  my-sensor:\n    gsd: 3\n    bands:\n"
                    "      - {name: red, wavelength_um: 0.65, mean: 1000, std: 500}\n")
    code = ("import clay_assets.definitions; from clay_core.platforms import get_platform; "
            "print(get_platform('my-sensor').band_names)")
    env = {"PATH": "/usr/bin:/bin", "CLAY_HOME": str(tmp_path / "home"), "CLAY_PLATFORMS_FILE": str(yaml)}
    ok = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == "['red']"
    env["CLAY_PLATFORMS_FILE"] = str(tmp_path / "missing.yaml")
    bad = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert bad.returncode != 0 and "CLAY_PLATFORMS_FILE" in bad.stderr


def test_cli_reports_a_bad_setting_in_one_line(monkeypatch, capsys):
    from clay_assets import cli

    monkeypatch.setenv("CLAY_CHIP_SIZE", "big")
    assert cli.main(["report"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("clay-assets: error: CLAY_CHIP_SIZE='big' must be an integer")

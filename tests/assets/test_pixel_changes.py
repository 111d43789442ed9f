"""The pixel path through the ``change_scores`` asset into Postgres: one Dagster run scores the
last of 64 windows of a synthetic chip cube series (replaying the earlier ones from their
cubes), its metadata names the cleared chip, and ``load_vectors`` puts the share of changed
pixels and its date into ``clay.pixel_changes``, once, however often it runs."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import psycopg
import pytest
from dagster import DagsterInstance, materialize

from clay_assets.assets.change_scores import change_scores
from clay_assets.partitions import make_key
from clay_assets.resources import ChangeSettings, ClayHome
from clay_core.change import ChangeParams, fit_pca
from clay_core.types import PartitionId
from clay_core.vectordb import VectorStore, load_vectors
from tests.support.pixels import CHANGE_AT, CHANGED, DIM, N_WINDOWS, STABLE, START, TILE, window, write_chips

LAST = N_WINDOWS - 1


@pytest.fixture(scope="module")
def scored(tmp_path_factory, pg_url):
    home = ClayHome(root=str(tmp_path_factory.mktemp("pixel-asset")))
    rng = np.random.default_rng(7)
    for i in range(N_WINDOWS):
        write_chips(home.layout, i, rng, embeddings=True)
    fit_pca(home.layout, ChangeParams())
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("tiles", [TILE])
    settings = ChangeSettings(detector_threshold=4.0)  # a fixed threshold: the detector is not under test
    result = materialize([change_scores], partition_key=make_key(TILE, window(LAST)), instance=instance,
                         resources={"home": home, "change_settings": settings})
    assert result.success
    md = result.asset_materializations_for_node("change_scores")[0].metadata
    pid = PartitionId(window=window(LAST), tile=TILE)
    loads = [load_vectors(home.layout, pid, lambda dim: _store(pg_url, dim)) for _ in range(2)]
    yield {"md": md, "home": home, "url": pg_url, "loads": loads}
    instance.dispose()


def _store(url: str, dim: int) -> VectorStore:
    store = VectorStore(url, dim)
    store.ensure_schema()
    return store


def test_asset_metadata_counts_the_cleared_chip(scored):
    md = scored["md"]
    assert md["pixel_chips_monitored"].value == 2
    assert md["pixel_chips_changed"].value == 1  # the cleared chip; the stable one stays under 2%
    assert md["pixel_windows_replayed"].value == LAST  # no earlier change partition: replayed from the cubes
    assert CHANGED in md["pixel_changes"].value and STABLE not in md["pixel_changes"].value
    assert "changed pixels" in md["pixel_map"].value and "data:image/png;base64," in md["pixel_map"].value


def test_the_pixel_map_colours_the_cleared_chip(scored, tmp_path):
    import io

    import matplotlib
    from PIL import Image

    d = scored["home"].layout.partition("change", TILE, window(LAST))
    png = (d / "pixels.png").read_bytes()
    (tmp_path / "pixels.png").write_bytes(png)  # kept for a look: pytest's tmp dir
    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=float)
    share = pd.read_parquet(d / "scores.parquet").set_index("chip_id")["pixel_change_fraction"]
    # the colour bar spans 0-10 %: each chip's cell is painted with magma at its share
    def painted(fraction: float) -> int:
        rgb = 255 * np.asarray(matplotlib.colormaps["magma"](min(100 * fraction / 10.0, 1.0))[:3])
        return int((np.abs(img - rgb).max(axis=2) < 6).sum())

    assert painted(float(share[CHANGED])) > 2000  # the cleared chip's cell (~3 %: purple)
    assert painted(float(share[STABLE])) > 2000  # the unchanged one's (~0 %: black)


def test_scores_parquet_holds_the_pixel_columns(scored):
    layout = scored["home"].layout
    s = pd.read_parquet(layout.partition("change", TILE, window(LAST)) / "scores.parquet").set_index("chip_id")
    assert abs(s.loc[CHANGED, "pixel_change_fraction"] - 36 / s.loc[CHANGED, "pixels_monitored"]) < 0.01
    assert abs(s.loc[CHANGED, "pixel_change_date"] - (START + pd.Timedelta(weeks=CHANGE_AT))) <= pd.Timedelta(days=7)
    assert s.loc[STABLE, "pixel_change_fraction"] < 0.01
    assert "change_score" in s  # the embedding scores are still there, one row per chip
    assert len(s) == 2


def test_pixel_changes_reach_postgres_once(scored):
    assert [ld.pixel_changes for ld in scored["loads"]] == [2, 2]
    with psycopg.connect(scored["url"]) as conn:
        rows = conn.execute("SELECT chip_id, pixel_change_fraction, pixel_change_date, pixels_monitored "
                            "FROM clay.pixel_changes WHERE tile = %s ORDER BY chip_id", (TILE,)).fetchall()
    assert [r[0] for r in rows] == [CHANGED, STABLE]  # loaded twice, stored once
    (cid, frac, day, monitored), stable = rows
    assert abs(frac - 36 / monitored) < 0.01 and stable[1] < 0.01
    assert abs((pd.Timestamp(day) - (START + pd.Timedelta(weeks=CHANGE_AT))).days) <= 7


def test_readme_pixel_query_finds_the_clearing(scored):
    """The README's pixel-change SQL example, as written there."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = re.search(r"```sql\n(-- chips where a share of the pixels changed.*?)```", readme, re.S)
    assert block, "the README's pixel-change SQL block"
    with psycopg.connect(scored["url"]) as conn:
        rows = conn.execute(block.group(1).split(";")[0]).fetchall()
    assert [r[0] for r in rows] == [CHANGED]


def test_the_pixel_path_can_be_switched_off(scored, tmp_path):
    import shutil

    assert ChangeSettings().pixel_params().sensitivity == 0.01
    assert ChangeSettings(pixel_sensitivity=0.001).pixel_params().sensitivity == 0.001
    home = ClayHome(root=str(tmp_path / "home"))
    shutil.copytree(scored["home"].layout.root, home.layout.root)
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("tiles", [TILE])
    result = materialize([change_scores], partition_key=make_key(TILE, window(LAST)), instance=instance,
                         resources={"home": home, "change_settings": ChangeSettings(detector_threshold=4.0, pixels=False)})
    assert result.success
    md = result.asset_materializations_for_node("change_scores")[0].metadata
    assert not any(k.startswith("pixel") for k in md)
    d = home.layout.partition("change", TILE, window(LAST))
    assert "pixel_change_fraction" not in pd.read_parquet(d / "scores.parquet").columns
    assert not (d / "pixels.npz").exists()
    instance.dispose()

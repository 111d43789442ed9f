"""Export -> import of clay.observations through GeoParquet and Zarr (+ STAC), on a planted world
in a real Postgres + pgvector (halfvec, the default storage).

"Bit for bit" is checked on the server: the md5 of every row's text (all columns but loaded_at,
the embedding included; float8 and halfvec print their exact shortest form) is the same in the
database exported from and in a fresh one imported into.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import psycopg
import pystac
import pytest
import shapely
import xarray as xr
from pyproj import Transformer

from clay_core.encoder import resolve_config
from clay_core.errors import ConfigError
from clay_core.exchange import (EMBEDDING_EXTENSION, export_embeddings, footprints_with_fallbacks,
                                import_embeddings, read_observations)
from clay_core.tiles import s2_tile_grid
from clay_core.vectordb import ROW_COLUMNS, VectorStore

from tests.core.vectordb.test_store import db_url  # noqa: F401 - the fixture: a fresh database per test
from tests.support.planted import load_world, planted_world

DIM = resolve_config("tiny")["dim"]
COLS = ", ".join(c for c, _, _ in ROW_COLUMNS)


@pytest.fixture(scope="module")
def source(pg_url):
    """A planted world (2 tiles x 4 weeks) loaded into the module's database."""
    with VectorStore(pg_url, DIM) as st:
        st.ensure_schema()
        load_world(st, planted_world(weeks=4))
        yield st


def digest(url: str) -> tuple[int, str]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            f"SELECT count(*), md5(string_agg(t::text, E'\\n' ORDER BY t.chip_id, t.acquired)) "
            f"FROM (SELECT {COLS}, embedding FROM clay.observations) t").fetchone()


@pytest.fixture(scope="module")
def parquet_export(source, tmp_path_factory):
    out = tmp_path_factory.mktemp("exports") / "gp"
    return export_embeddings(source, out, "geoparquet")


def test_geoparquet_round_trips_every_row_and_vector_bit_for_bit(source, parquet_export, db_url):
    n, want = digest(source.url)
    res = import_embeddings(db_url, parquet_export.out)
    assert res.rows == n == parquet_export.rows
    assert digest(db_url) == (n, want)
    # and client-side: the float32 vectors read back are the same bytes
    with VectorStore(db_url, DIM) as st:
        rows_b, emb_b = read_observations(st)
    rows_a, emb_a = read_observations(source)
    assert emb_a.tobytes() == emb_b.tobytes()
    assert rows_a.equals(rows_b)


def test_zarr_round_trips_bit_for_bit_and_opens_with_xarray(source, tmp_path, db_url):
    res = export_embeddings(source, tmp_path / "z", "zarr")
    ds = xr.open_zarr(res.data)
    n, want = digest(source.url)
    assert ds.sizes == {"obs": n, "dim": DIM}
    assert ds["spatial_ref"].attrs["epsg"] == 4326 and ds["geometry"].attrs["grid_mapping"] == "spatial_ref"
    assert import_embeddings(db_url, res.out).rows == n
    assert digest(db_url) == (n, want)


def test_geoparquet_is_valid_wgs84_one_row_per_observation(source, parquet_export):
    gdf = gpd.read_parquet(parquet_export.data)
    assert gdf.crs.to_epsg() == 4326
    import pyarrow.parquet as pq

    assert b"geo" in pq.read_schema(parquet_export.data).metadata  # GeoParquet metadata
    assert len(gdf) == source.count() and not gdf.duplicated(["chip_id", "acquired"]).any()
    assert gdf.geometry.is_valid.all() and (gdf.geometry.geom_type == "Polygon").all()
    assert {len(v) for v in gdf["embedding"]} == {DIM}


def test_footprints_contain_their_centres_and_lie_in_their_tiles(parquet_export):
    gdf = gpd.read_parquet(parquet_export.data)
    assert shapely.contains_xy(gdf.geometry.values, gdf["lon"], gdf["lat"]).all()
    outside_by_envelope = 0
    for tile, part in gdf.groupby("tile"):
        grid = s2_tile_grid(tile)
        t = grid.transform
        tile_box = shapely.box(t.c, t.f - grid.height * t.a, t.c + grid.width * t.a, t.f).buffer(1e-3)
        to_native = Transformer.from_crs(4326, grid.crs, always_xy=True)
        native = [shapely.transform(g, lambda xy: np.column_stack(to_native.transform(xy[:, 0], xy[:, 1])))
                  for g in part.geometry]
        assert all(tile_box.contains(g) for g in native), tile
        envelopes = shapely.box(part["west"], part["south"], part["east"], part["north"])
        outside_by_envelope += sum(not tile_box.contains(shapely.transform(
            e, lambda xy: np.column_stack(to_native.transform(xy[:, 0], xy[:, 1])))) for e in envelopes)
    # the stored WGS84 envelopes (what a bbox polygon would publish) stick out of the tile
    assert outside_by_envelope > 0


def test_stac_collection_follows_the_embedding_extension(parquet_export):
    col = pystac.Collection.from_file(str(parquet_export.collection))
    assert EMBEDDING_EXTENSION in col.stac_extensions
    f = col.extra_fields
    assert (f["emb:type"], f["emb:dimensions"], f["data_type"]) == ("chip", DIM, "float32")
    assert f["table:row_count"] == parquet_export.rows
    assert {link.rel for link in col.links} >= {"emb:model", "emb:source-data"}
    assert f["clay:model"]["model_ids"] == ["tiny:random-seed0"]
    items = list(col.get_items())
    assert sorted(i.properties["clay:tile"] for i in items) == ["31UFU", "32UNB"]
    gdf = gpd.read_parquet(parquet_export.data)
    for item in items:
        href = Path(item.assets["embeddings"].get_absolute_href()).resolve()
        assert href == parquet_export.data.resolve()
        mine = gdf[gdf["tile"] == item.properties["clay:tile"]]
        assert item.properties["table:row_count"] == len(mine)
        assert shapely.geometry.shape(item.geometry).buffer(1e-9).contains(shapely.union_all(mine.geometry.values))


def test_reimport_replaces_and_never_duplicates(source, parquet_export):
    n, want = digest(source.url)
    import_embeddings(source.url, parquet_export.out)  # into the database it came from
    import_embeddings(source.url, parquet_export.data)  # the .parquet file itself
    assert digest(source.url) == (n, want)
    assert source.duplicate_observations() == 0


def test_damaged_or_foreign_files_are_refused_before_anything_is_written(parquet_export, tmp_path, db_url):
    gdf = gpd.read_parquet(parquet_export.data)
    cases = {
        "duplicated": (gpd.GeoDataFrame(pd_concat(gdf, gdf.iloc[:2])), "sharing \\(chip_id, acquired\\)"),
        "mercator": (gdf.to_crs(3857), "not EPSG:4326"),
        "nan": (gdf.assign(embedding=[np.full(DIM, np.nan, np.float32)] + list(gdf["embedding"][1:])),
                "zero or not finite"),
        "swapped": (gdf.set_geometry(shapely.transform(gdf.geometry.values, lambda xy: xy[:, ::-1])),
                    "do not contain their chip centre"),
    }
    for name, (frame, message) in cases.items():
        path = tmp_path / f"{name}.parquet"
        frame.to_parquet(path)
        with pytest.raises(ConfigError, match=message):
            import_embeddings(db_url, path)
    import json
    import shutil

    lying = tmp_path / "lying"  # a collection that declares another dimension than its data has
    shutil.copytree(parquet_export.out, lying)
    doc = json.loads((lying / "collection.json").read_text())
    (lying / "collection.json").write_text(json.dumps({**doc, "emb:dimensions": DIM + 1}))
    with pytest.raises(ConfigError, match=f"declares emb:dimensions = {DIM + 1}"):
        import_embeddings(db_url, lying)
    with VectorStore(db_url, DIM + 1) as st:  # a database of another model
        st.ensure_schema()
    with pytest.raises(ConfigError, match=f"holds {DIM}-dimensional embeddings; clay.observations .* stores {DIM + 1}"):
        import_embeddings(db_url, parquet_export.data)
    with pytest.raises(ConfigError, match="model makes 768-dimensional"):
        import_embeddings(db_url, parquet_export.data, expect_dim=768)
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM clay.observations").fetchone()[0] == 0


def test_export_refuses_an_existing_folder(source, parquet_export):
    with pytest.raises(ConfigError, match="already exists"):
        export_embeddings(source, parquet_export.out)
    assert not [p for p in parquet_export.out.parent.iterdir() if "-tmp-" in p.name]


def test_cli_export_then_import(source, tmp_path, monkeypatch, capsys, db_url):
    from clay_assets.cli import main

    monkeypatch.setenv("CLAY_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DATABASE_URL", source.url)
    monkeypatch.chdir(tmp_path)  # a relative folder whose name has a dot, as people name them
    assert main(["export", "--format", "zarr", "--tiles", "32unb", "--out", "exports/v1.0"]) == 0
    out = capsys.readouterr().out
    assert "exported" in out and "footprints exact" in out
    assert sorted(p.name for p in (tmp_path / "exports").iterdir()) == ["v1.0"]
    col = pystac.Collection.from_file(str(tmp_path / "exports" / "v1.0" / "collection.json"))
    assert [b["name"] for b in col.extra_fields["clay:input_bands"]]  # the platform's bands, described
    monkeypatch.setenv("DATABASE_URL", db_url)
    assert main(["import", "exports/v1.0"]) == 0
    with psycopg.connect(db_url) as conn:
        tiles = conn.execute("SELECT DISTINCT tile FROM clay.chips").fetchall()
    assert tiles == [("32UNB",)]
    assert main(["import", str(tmp_path / "nowhere")]) == 2


def test_cli_import_into_a_new_clay_home(parquet_export, monkeypatch):
    """Without DATABASE_URL, import creates the new CLAY_HOME's embedded server."""
    from clay_assets.cli import main
    from clay_core.vectordb import stop_embedded

    import shutil
    import tempfile

    # as root, postgres runs unprivileged and must reach the data directory (see conftest)
    base = Path(tempfile.mkdtemp(prefix="clay-import-home-"))
    base.chmod(0o755)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("CLAY_HOME", str(base / "home"))
    try:
        assert main(["import", str(parquet_export.data)]) == 0
        assert main(["changes", "--from", "2024-01-15", "--to", "2024-02-19", "--min-distance", "0.03"]) == 0
    finally:
        stop_embedded(base / "home" / "pg")
        shutil.rmtree(base, ignore_errors=True)


def pd_concat(a, b):
    import pandas as pd

    return pd.concat([a, b], ignore_index=True)


def test_footprints_of_rows_without_a_crs_are_their_envelopes():
    import pandas as pd

    rows = pd.DataFrame({"west": [1.0] * 3, "south": [2.0] * 3, "east": [1.5] * 3, "north": [2.5] * 3,
                         "lon": [1.25] * 3, "lat": [2.25] * 3, "crs": [None, "", "EPSG:999999"]})
    geoms, fallbacks = footprints_with_fallbacks(rows)
    assert fallbacks == 3 and all(g.equals(shapely.box(1.0, 2.0, 1.5, 2.5)) for g in geoms)

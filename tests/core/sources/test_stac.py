"""StacSource against local servers only: a STAC API and static catalogues served on
127.0.0.1, COGs over HTTP with range requests and over a moto S3 server."""

from __future__ import annotations

import time
from datetime import datetime, timezone

import numpy as np
import pytest
from affine import Affine
from rasterio.transform import from_origin


from tests.support.servers import StacApi, free_port, http_server, moto_s3, stac_item, write_cog, write_static_catalog  # noqa: E402

from clay_core.errors import ConfigError, SceneError, UnknownTileError  # noqa: E402
from clay_core.sources.base import SceneSource  # noqa: E402
from clay_core.sources.gdal import gdal_env_options  # noqa: E402
from clay_core.sources.urls import redact  # noqa: E402
from clay_core.sources.stac import StacSource, item_tile, landsat_qa_to_scl  # noqa: E402
from clay_core.types import SceneRef  # noqa: E402

UTC = timezone.utc
CRS = "EPSG:32631"
X0, Y0, N = 600000.0, 5700000.0, 512
T10 = from_origin(X0, Y0, 10, 10)
T20 = from_origin(X0, Y0, 20, 20)
BANDS10 = ("blue", "green", "red", "nir")
JAN, MAR = datetime(2023, 1, 1, tzinfo=UTC), datetime(2023, 3, 1, tzinfo=UTC)
COG_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"

# (item id, date, cloud cover, tile, processing baseline, collection)
SCENES = [
    ("S2B_31UFU_20230105_0_L2A", datetime(2023, 1, 5, 10, 37, 21, tzinfo=UTC), 40.0, "31UFU", "05.09", "sentinel-2-l2a"),
    ("S2A_31UFU_20230115_0_L2A", datetime(2023, 1, 15, 10, 37, 19, tzinfo=UTC), 5.0, "31UFU", "05.00", "sentinel-2-l2a"),
    ("S2A_31UFU_20230115_1_L2A", datetime(2023, 1, 15, 10, 37, 19, tzinfo=UTC), 5.5, "31UFU", "05.09", "sentinel-2-l2a"),
    ("S2B_31UFU_20230125_0_L2A", datetime(2023, 1, 25, 10, 37, 20, tzinfo=UTC), 60.0, "31UFU", "05.09", "sentinel-2-l2a"),
    ("S2A_31UFU_20230204_0_L2A", datetime(2023, 2, 4, 10, 37, 18, tzinfo=UTC), 10.0, "31UFU", "05.09", "sentinel-2-l2a"),
    ("S2A_32ULC_20230115_0_L2A", datetime(2023, 1, 15, 10, 37, 19, tzinfo=UTC), 1.0, "32ULC", "05.09", "sentinel-2-l2a"),
    ("S2A_31UFU_20230116_0_L1C", datetime(2023, 1, 16, 10, 37, 19, tzinfo=UTC), 0.0, "31UFU", "05.09", "sentinel-2-l1c"),
]


def scene_pixels(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    px = {b: rng.integers(1, 12000, (N, N), dtype=np.uint16) for b in BANDS10}
    jj, ii = np.meshgrid(np.arange(N // 2), np.arange(N // 2))
    px["swir16"] = (2000 + 6 * jj + 2 * ii).astype(np.uint16)
    px["scl"] = rng.integers(0, 12, (N // 2, N // 2), dtype=np.uint8)
    return px


def s2_assets(href_of, crs: str = CRS, proj: bool = True) -> dict[str, dict]:
    assets = {}
    for b in (*BANDS10, "swir16", "scl"):
        res, n = (10, N) if b in BANDS10 else (20, N // 2)
        a = {"href": href_of(b), "type": COG_TYPE, "roles": ["data"]}
        if proj:
            a |= {"proj:shape": [n, n], "proj:transform": [res, 0, X0, 0, -res, Y0, 0, 0, 1], "proj:code": crs}
        assets[b] = a
    assets["thumbnail"] = {"href": href_of("thumb").replace(".tif", ".jpg"), "type": "image/jpeg", "roles": ["thumbnail"]}
    return assets


def s2_props(tile: str, cloud: float, baseline: str, offset_applied: bool | None = True) -> dict:
    p = {"grid:code": f"MGRS-{tile}", "mgrs:utm_zone": int(tile[:2]), "mgrs:latitude_band": tile[2],
         "mgrs:grid_square": tile[3:], "eo:cloud_cover": cloud, "s2:processing_baseline": baseline,
         "platform": "sentinel-2b", "proj:epsg": 32631}  # fmt: skip
    if offset_applied is not None:  # Earth Search: the +1000 DN offset was already removed
        p["earthsearch:boa_offset_applied"] = offset_applied
    return p


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """COGs on disk for every scene + the truth, served over HTTP (+ a STAC API)."""
    root = tmp_path_factory.mktemp("stac")
    truth = {}
    for k, (sid, *_rest) in enumerate(SCENES):
        px = scene_pixels(k)
        truth[sid] = px
        for b, arr in px.items():
            write_cog(root / "cogs" / sid / f"{b}.tif", arr, CRS, T10 if arr.shape[0] == N else T20)
    api = StacApi(collections=["sentinel-2-l2a", "sentinel-2-l1c"])
    with http_server(root, routes={"/api": api}) as srv:
        api.items[:] = [
            stac_item(sid, dt, s2_assets(lambda b, sid=sid: f"{srv.url}/cogs/{sid}/{b}.tif"),
                      s2_props(tile, cc, pb), collection=coll)
            for sid, dt, cc, tile, pb, coll in SCENES
        ]  # fmt: skip
        yield {"root": root, "truth": truth, "srv": srv, "api": api, "url": f"{srv.url}/api"}


def ids(refs):
    return [r.scene_id for r in refs]


# --------------------------------------------------------------------------- API search


def test_api_search_filters_dedupes_and_selects(world):
    api = world["api"]
    src = StacSource(world["url"], selection="all", timeout=5)
    assert isinstance(src, SceneSource) and src.is_api
    refs = src.list_scenes("31UFU", JAN, MAR)
    # other tile and other collection excluded; the 0115 reprocessing keeps baseline 05.09
    assert ids(refs) == ["S2B_31UFU_20230105_0_L2A", "S2A_31UFU_20230115_1_L2A",
                         "S2B_31UFU_20230125_0_L2A", "S2A_31UFU_20230204_0_L2A"]  # fmt: skip
    search = api.searches[-1]
    assert search["collections"] == ["sentinel-2-l2a"]
    assert search["query"] == {"grid:code": {"eq": "MGRS-31UFU"}}
    assert search["datetime"] == "2023-01-01T00:00:00Z/2023-03-01T00:00:00Z"
    r = refs[1]
    assert r.datetime == SCENES[2][1] and r.cloud_cover == 5.5 and r.tile == "31UFU" and r.platform == "sentinel-2-l2a"
    assert set(r.hrefs) == {"blue", "green", "red", "nir", "swir16", "scl"}  # no jpeg thumbnail
    assert r.hrefs["red"] == f"{world['srv'].url}/cogs/{r.scene_id}/red.tif"
    # end exclusive
    assert ids(src.list_scenes("31UFU", JAN, SCENES[3][1])) == ids(refs[:2])
    # clearest per window / per month / per ISO week (default); max_cloud goes to the server too
    assert ids(StacSource(world["url"], clearest_per="window").list_scenes("31UFU", JAN, MAR)) == [
        "S2A_31UFU_20230115_1_L2A"
    ]
    assert ids(StacSource(world["url"]).list_scenes("31UFU", JAN, MAR)) == ids(refs)  # 4 different weeks
    per_month = StacSource(world["url"], clearest_per="month").list_scenes("31UFU", JAN, MAR)
    assert ids(per_month) == ["S2A_31UFU_20230115_1_L2A", "S2A_31UFU_20230204_0_L2A"]
    low = StacSource(world["url"], selection="all", max_cloud=20).list_scenes("31UFU", JAN, MAR)
    assert ids(low) == ["S2A_31UFU_20230115_1_L2A", "S2A_31UFU_20230204_0_L2A"]
    assert api.searches[-1]["query"]["eo:cloud_cover"] == {"lte": 20.0}
    # paging through next links, and the mgrs:* form of the tile query
    n0 = len(api.searches)
    paged = StacSource(world["url"], selection="all", page_size=1, tile_query="mgrs").list_scenes("31UFU", JAN, MAR)
    assert ids(paged) == ids(refs) and len(api.searches) - n0 >= 5
    assert api.searches[n0]["query"] == {"mgrs:utm_zone": {"eq": 31}, "mgrs:latitude_band": {"eq": "U"},
                                         "mgrs:grid_square": {"eq": "FU"}}  # fmt: skip
    assert src.list_scenes("31UFU", datetime(2022, 1, 1), datetime(2022, 6, 1)) == []
    with pytest.raises(UnknownTileError):
        src.list_scenes("99ZZZ", JAN, MAR)


def test_clearest_per_iso_week_is_the_default(tmp_path):
    mk = lambda i, d, cc: stac_item(i, d, s2_assets(lambda b: f"./{b}.tif"), s2_props("31UFU", cc, "05.09"))  # noqa: E731
    cat = write_static_catalog(tmp_path, [
        mk("mon", datetime(2023, 1, 9, 10, tzinfo=UTC), 30.0),    # week 2
        mk("thu", datetime(2023, 1, 12, 10, tzinfo=UTC), 10.0),   # week 2, clearest
        mk("sun", datetime(2023, 1, 15, 10, tzinfo=UTC), None),   # week 2, unknown cloud: last
        mk("mon2", datetime(2023, 1, 16, 10, tzinfo=UTC), 50.0),  # week 3
    ])  # fmt: skip
    assert ids(StacSource(str(cat)).list_scenes("31UFU", JAN, MAR)) == ["thu", "mon2"]
    assert ids(StacSource(str(cat), clearest_per="day").list_scenes("31UFU", JAN, MAR)) == ["mon", "thu", "sun", "mon2"]
    assert ids(StacSource(str(cat), max_cloud=40).list_scenes("31UFU", JAN, MAR)) == ["thu"]


def test_load_over_http_with_range_requests(world):
    srv, truth = world["srv"], world["truth"]
    src = StacSource(world["url"], selection="all", timeout=5)
    g = src.grid("31UFU")
    assert g.crs == CRS and g.transform == T10 and (g.height, g.width) == (N, N)
    ref = src.list_scenes("31UFU", JAN, MAR)[2]
    n0 = len(srv.requests)
    bands = ["red", "green", "blue", "nir", "swir16"]
    scene = src.load_scene(ref, bands)
    t = truth[ref.scene_id]
    assert scene.data.shape == (5, N, N) and scene.data.dtype == np.uint16 and scene.grid == g
    for i, b in enumerate(bands[:4]):
        np.testing.assert_array_equal(scene.data[i], t[b])
    jj, ii = np.meshgrid(np.arange(N), np.arange(N))
    expected = 2000 + 6 * ((jj + 0.5) / 2 - 0.5) + 2 * ((ii + 0.5) / 2 - 0.5)  # bilinear 20 m -> 10 m
    np.testing.assert_allclose(scene.data[4, 2:-2, 2:-2], expected[2:-2, 2:-2], atol=0.51)
    np.testing.assert_array_equal(scene.qa, np.repeat(np.repeat(t["scl"], 2, 0), 2, 1))  # SCL nearest
    cog_gets = [r for r in srv.requests[n0:] if r.method == "GET" and r.path.startswith("/cogs/")]
    assert cog_gets and all(r.status == 206 and r.range for r in cog_gets)  # only range requests


def test_static_catalog_over_http_with_s3_assets(world, tmp_path):
    truth = world["truth"]
    sid, dt, cc, tile, pb, coll = SCENES[4]
    with moto_s3() as s3:
        hrefs = {b: s3.upload(world["root"] / "cogs" / sid / f"{b}.tif", f"tiles/{sid}/{b}.tif")
                 for b in (*BANDS10, "swir16", "scl")}  # fmt: skip
        item = stac_item(sid, dt, s2_assets(lambda b: hrefs.get(b, f"s3://{s3.bucket}/x.tif")), s2_props(tile, cc, pb))
        cat = write_static_catalog(tmp_path / "static", [item])
        assert (tmp_path / "static" / "sentinel-2-l2a" / "collection.json").exists()
        with http_server(tmp_path) as srv:
            src = StacSource(f"{srv.url}/static/catalog.json", s3_endpoint=s3.endpoint, timeout=5)
            assert not src.is_api
            (ref,) = src.list_scenes("31UFU", JAN, MAR)
            assert ref.scene_id == sid and ref.hrefs["nir"] == f"s3://{s3.bucket}/tiles/{sid}/nir.tif"
            scene = src.load_scene(ref, ["nir", "swir16"])
            np.testing.assert_array_equal(scene.data[0], truth[sid]["nir"])
            assert scene.data.shape == (2, N, N)
            np.testing.assert_array_equal(scene.qa, np.repeat(np.repeat(truth[sid]["scl"], 2, 0), 2, 1))
            assert src.list_scenes("31UFU", datetime(2023, 3, 1), datetime(2023, 4, 1)) == []
        # the same catalogue read from disk (a local path, not a URL)
        (ref2,) = StacSource(str(cat), s3_endpoint=s3.endpoint).list_scenes("31UFU", JAN, MAR)
        assert ref2.hrefs == ref.hrefs


def test_static_catalog_relative_hrefs_and_grid_from_raster(world, tmp_path):
    """Assets next to the items (relative hrefs) and no proj:* -> grid from the COG header."""
    sid, dt, cc, tile, pb, _ = SCENES[0]
    d = tmp_path / "cat"
    item = stac_item(sid, dt, s2_assets(lambda b: f"./{b}.tif", proj=False), s2_props(tile, cc, pb))
    write_static_catalog(d, [item])
    item_dir = d / "sentinel-2-l2a" / sid
    for b in (*BANDS10, "swir16", "scl"):
        (item_dir / f"{b}.tif").write_bytes((world["root"] / "cogs" / sid / f"{b}.tif").read_bytes())
    with http_server(d) as srv:
        src = StacSource(f"{srv.url}/catalog.json", timeout=5)
        g = src.grid("31UFU")
        assert g.transform == T10 and g.crs == CRS and g.width == N
        (ref,) = src.list_scenes("31UFU", JAN, MAR)
        assert ref.hrefs["blue"] == f"{srv.url}/sentinel-2-l2a/{sid}/blue.tif"
        np.testing.assert_array_equal(src.load_scene(ref, ["blue"]).data[0], world["truth"][sid]["blue"])


def test_s2_boa_offset_harmonisation(world, tmp_path):
    """Baseline >= 04.00 without ``earthsearch:boa_offset_applied`` -> DN - 1000 (clipped at 1)."""
    sid, dt, cc, tile, _, _ = SCENES[0]
    truth = world["truth"][sid]
    href = lambda b: f"{world['srv'].url}/cogs/{sid}/{b}.tif"  # noqa: E731
    items = [
        stac_item("raw_0400", dt, s2_assets(href), s2_props(tile, cc, "04.00", offset_applied=None)),
        stac_item("old_0311", datetime(2021, 6, 1, tzinfo=UTC), s2_assets(href), s2_props(tile, cc, "03.01", None)),
    ]
    cat = write_static_catalog(tmp_path, items)
    src = StacSource(str(cat), selection="all")
    refs = {r.scene_id: r for r in src.list_scenes("31UFU", datetime(2021, 1, 1), MAR)}
    new, old = refs["raw_0400"], refs["old_0311"]
    assert StacSource.boa_offset(items[0]["properties"]) == -1000 and StacSource.boa_offset(items[1]["properties"]) == 0
    s_new = src.load_scene(new, ["red", "swir16"])
    expected = np.maximum(truth["red"].astype(int) - 1000, 1)
    np.testing.assert_array_equal(s_new.data[0], expected)
    np.testing.assert_array_equal(s_new.qa, np.repeat(np.repeat(truth["scl"], 2, 0), 2, 1))  # QA untouched
    np.testing.assert_array_equal(src.load_scene(old, ["red"]).data[0], truth["red"])
    # a ref rebuilt in another process (offset unknown) asks the catalogue for the item
    fresh = StacSource(str(cat), selection="all")
    np.testing.assert_array_equal(fresh.load_scene(new, ["red"]).data[0], expected)
    off = StacSource(str(cat), selection="all", harmonize=False)
    np.testing.assert_array_equal(off.load_scene(new, ["red"]).data[0], truth["red"])


# --------------------------------------------------------------------------- bad input


def test_stac_timeout_is_a_quick_scene_error():
    api = StacApi([])
    with http_server(routes={"/api": api}, delays={"/api": 5}) as srv:
        t0 = time.monotonic()
        with pytest.raises(SceneError) as ei:
            StacSource(f"{srv.url}/api", timeout=0.5).list_scenes("31UFU", JAN, MAR)
        assert time.monotonic() - t0 < 3
    msg = str(ei.value)
    assert f"{srv.url}/api" in msg and "timeout" in msg


def test_unreachable_endpoint_names_url_without_credentials():
    url = f"http://alice:s3cr3t@127.0.0.1:{free_port()}/v1?token=abc123"
    t0 = time.monotonic()
    with pytest.raises(SceneError) as ei:
        StacSource(url, timeout=2).list_scenes("31UFU", JAN, MAR)
    assert time.monotonic() - t0 < 5
    msg = str(ei.value)
    assert "127.0.0.1" in msg and "/v1" in msg
    assert "s3cr3t" not in msg and "alice" not in msg and "abc123" not in msg


def test_asset_timeout_and_corrupt_cog(world, tmp_path):
    sid, dt, cc, tile, pb, _ = SCENES[1]
    (tmp_path / "slow").mkdir()
    (tmp_path / "bad").mkdir()
    for b in (*BANDS10, "swir16", "scl"):
        raw = (world["root"] / "cogs" / sid / f"{b}.tif").read_bytes()
        (tmp_path / "slow" / f"{b}.tif").write_bytes(raw)
        (tmp_path / "bad" / f"{b}.tif").write_bytes(raw[: len(raw) // 3])
    with http_server(tmp_path, delays={"/slow/": 4}) as srv:
        for kind in ("slow", "bad"):
            item = stac_item(sid, dt, s2_assets(lambda b, k=kind: f"{srv.url}/{k}/{b}.tif"), s2_props(tile, cc, pb))
            write_static_catalog(tmp_path / f"cat_{kind}", [item])
        src = StacSource(f"{srv.url}/cat_slow/catalog.json", timeout=1, max_workers=1, max_retries=0)
        (ref,) = src.list_scenes("31UFU", JAN, MAR)
        t0 = time.monotonic()
        with pytest.raises(SceneError) as ei:
            src.load_scene(ref, ["blue"])
        assert time.monotonic() - t0 < 3.5
        assert f"{srv.url}/slow/blue.tif" in str(ei.value)
        src = StacSource(f"{srv.url}/cat_bad/catalog.json", timeout=5)
        (ref,) = src.list_scenes("31UFU", JAN, MAR)
        with pytest.raises(SceneError) as ei:
            src.load_scene(ref, ["green"])
        assert "/bad/" in str(ei.value) and ".tif" in str(ei.value)


def test_missing_band_and_unexpected_crs(world, tmp_path):
    sid, dt, cc, tile, pb, _ = SCENES[0]
    src = StacSource(world["url"], selection="all")
    ref = src.list_scenes("31UFU", JAN, MAR)[0]
    with pytest.raises(SceneError) as ei:
        src.load_scene(ref, ["blue", "rededge2"])
    assert "rededge2" in str(ei.value) and ref.scene_id in str(ei.value) and "swir16" in str(ei.value)
    # a second item whose COGs are in UTM 32N while the tile grid (first item) is 31N
    d = tmp_path / "cogs32"
    for b, arr in world["truth"][sid].items():
        write_cog(d / f"{b}.tif", arr, "EPSG:32632", T10 if arr.shape[0] == N else T20)
    with http_server(tmp_path) as srv:
        good = stac_item(sid, dt, s2_assets(lambda b: f"{world['srv'].url}/cogs/{sid}/{b}.tif"), s2_props(tile, cc, pb))
        bad = stac_item("S2B_31UFU_20230110_0_L2A", datetime(2023, 1, 10, tzinfo=UTC),
                        s2_assets(lambda b: f"{srv.url}/cogs32/{b}.tif", crs="EPSG:32632"), s2_props(tile, 3.0, pb))  # fmt: skip
        write_static_catalog(tmp_path / "cat", [good, bad])
        src = StacSource(f"{srv.url}/cat/catalog.json", selection="all")
        assert src.grid("31UFU").crs == CRS
        refs = src.list_scenes("31UFU", JAN, MAR)
        assert ids(refs) == [sid, "S2B_31UFU_20230110_0_L2A"]
        with pytest.raises(SceneError) as ei:
            src.load_scene(refs[1], ["blue"])
        assert "EPSG:32632" in str(ei.value) and "EPSG:32631" in str(ei.value)


def test_all_nodata_scene_loads(tmp_path):
    for b in (*BANDS10, "swir16", "scl"):
        n = N if b in BANDS10 else N // 2
        write_cog(tmp_path / "c" / f"{b}.tif", np.zeros((n, n), np.uint8 if b == "scl" else np.uint16),
                  CRS, T10 if n == N else T20)  # fmt: skip
    item = stac_item("S2A_31UFU_20230301_0_L2A", datetime(2023, 3, 1, tzinfo=UTC),
                     s2_assets(lambda b: f"../../c/{b}.tif"), s2_props("31UFU", 0.0, "05.09"))  # fmt: skip
    cat = write_static_catalog(tmp_path, [item])
    src = StacSource(str(cat))
    (ref,) = src.list_scenes("31UFU", datetime(2023, 3, 1), datetime(2023, 3, 2))
    scene = src.load_scene(ref, ["red", "nir"])
    assert scene.data.shape == (2, N, N) and not scene.data.any() and not scene.qa.any()


# --------------------------------------------------------------------------- S3 options


def test_s3_private_object_needs_credentials_and_they_never_leak(world, monkeypatch):
    sid = SCENES[0][0]
    with moto_s3() as s3:
        href = s3.upload(world["root"] / "cogs" / sid / "blue.tif", "private/blue.tif", public=False)
        s3.upload(world["root"] / "cogs" / sid / "scl.tif", "private/scl.tif", public=False)
        grid = {"crs": CRS, "transform": list(T10)[:6], "height": N, "width": N}
        ref = SceneRef(sid, "31UFU", "sentinel-2-l2a", datetime(2023, 1, 5, tzinfo=UTC),
                       {"blue": href, "scl": href.replace("blue", "scl")})  # fmt: skip
        anon = StacSource("unused", s3_endpoint=s3.endpoint, grids={"31UFU": grid}, timeout=5, harmonize=False)
        with pytest.raises(SceneError) as ei:
            anon.load_scene(ref, ["blue"])
        assert href in str(ei.value)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIATESTKEY")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "very-secret-value")
        signed = StacSource("unused", s3_endpoint=s3.endpoint, aws_anonymous=False, grids={"31UFU": grid}, timeout=5,
                            harmonize=False)
        scene = signed.load_scene(ref, ["blue"])
        np.testing.assert_array_equal(scene.data[0], world["truth"][sid]["blue"])
        missing = SceneRef(sid, "31UFU", "sentinel-2-l2a", ref.datetime,
                           {"blue": href.replace("blue", "nope"), "scl": ref.hrefs["scl"]})  # fmt: skip
        with pytest.raises(SceneError) as ei:
            signed.load_scene(missing, ["blue"])
        assert "nope.tif" in str(ei.value) and "very-secret-value" not in str(ei.value)


def test_requester_pays_header_reaches_the_endpoint(world, tmp_path):
    """A path-style S3 endpoint that is just our range server: see what GDAL sends."""
    sid = SCENES[0][0]
    (tmp_path / "bucket").mkdir()
    for b in ("blue", "scl"):
        (tmp_path / "bucket" / f"{b}.tif").write_bytes((world["root"] / "cogs" / sid / f"{b}.tif").read_bytes())
    grid = {"crs": CRS, "transform": list(T10)[:6], "height": N, "width": N}
    ref = SceneRef(sid, "31UFU", "sentinel-2-l2a", datetime(2023, 1, 5, tzinfo=UTC),
                   {"blue": "s3://bucket/blue.tif", "scl": "s3://bucket/scl.tif"})  # fmt: skip
    with http_server(tmp_path) as srv:
        src = StacSource("unused", s3_endpoint=srv.url, requester_pays=True, grids={"31UFU": grid}, timeout=5,
                         harmonize=False)
        scene = src.load_scene(ref, ["blue"])
        np.testing.assert_array_equal(scene.data[0], world["truth"][sid]["blue"])
        gets = [r for r in srv.requests if r.method == "GET"]
        assert gets and all(r.path.startswith("/bucket/") for r in gets)
        assert all(r.headers.get("x-amz-request-payer") == "requester" for r in gets)


def test_gdal_env_options_and_redaction():
    o = gdal_env_options(s3_endpoint="http://127.0.0.1:9000", aws_anonymous=True, requester_pays=True, timeout=2.5)
    assert o["AWS_S3_ENDPOINT"] == "127.0.0.1:9000" and o["AWS_HTTPS"] == "NO" and o["AWS_VIRTUAL_HOSTING"] == "FALSE"
    assert o["AWS_NO_SIGN_REQUEST"] == "YES" and o["AWS_REQUEST_PAYER"] == "requester" and o["GDAL_HTTP_TIMEOUT"] == 3
    o = gdal_env_options(s3_endpoint="https://minio.example.com", aws_anonymous=False)
    assert o["AWS_HTTPS"] == "YES" and o["AWS_NO_SIGN_REQUEST"] == "NO" and "AWS_REQUEST_PAYER" not in o
    assert "AWS_S3_ENDPOINT" not in gdal_env_options()
    with pytest.raises(ConfigError):
        gdal_env_options(s3_endpoint="ftp://x")
    s = redact("GET https://u:pw@host/a.tif?X-Amz-Signature=abcd&X-Amz-Credential=AKIA/x&band=1 failed")
    assert "pw" not in s and "abcd" not in s and "AKIA" not in s and "band=1" in s and "https://host/a.tif" in s


def test_config_errors():
    for kwargs in ({"selection": "best"}, {"clearest_per": "year"}, {"platform": "modis"}, {"max_cloud": 150},
                   {"tile_query": "bbox"}, {"timeout": 0}):  # fmt: skip
        with pytest.raises(ConfigError):
            StacSource("http://127.0.0.1:1/api", **kwargs)


# --------------------------------------------------------------------------- Landsat


def test_landsat_qa_to_scl_bits():
    b = lambda *bits: sum(1 << i for i in bits)  # noqa: E731
    qa = np.array([
        b(0), b(0, 3),            # fill wins over everything
        b(3), b(3, 4), b(1, 3),   # cloud (high) wins over shadow / dilated
        b(1), b(1, 4),            # dilated cloud -> 8, wins over shadow
        b(4), b(4, 2),            # shadow -> 3, wins over cirrus
        b(2), b(2, 6),            # cirrus -> 10
        b(5, 6), b(7, 6), b(6), 0,  # snow 11, water 6, clear 4, no flag 4
        21824, 21952, 22280, 23888, 1,  # L8/9 values: clear land, water, high-conf cloud, shadow, fill
    ], dtype=np.uint16)  # fmt: skip
    out = landsat_qa_to_scl(qa)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out[:15], [0, 0, 9, 9, 9, 8, 8, 3, 3, 10, 10, 11, 6, 4, 4])
    np.testing.assert_array_equal(out[15:], [4, 6, 9, 3, 0])
    assert landsat_qa_to_scl(qa.reshape(4, 5)).shape == (4, 5)


def test_landsat_platform_via_api(tmp_path):
    t30 = from_origin(500000, 4200000, 30, 30)
    rng = np.random.default_rng(9)
    red = rng.integers(7000, 20000, (64, 64), dtype=np.uint16)
    qa = np.full((64, 64), 21824, np.uint16)
    qa[:8] = 1  # fill
    qa[8:16] = 22280  # cloud
    write_cog(tmp_path / "red.tif", red, "EPSG:32610", t30)
    write_cog(tmp_path / "qa_pixel.tif", qa, "EPSG:32610", t30, nodata=1)
    # a later scene covering only the east half of the first scene's grid (Landsat frames move)
    write_cog(tmp_path / "red2.tif", red[:, 32:], "EPSG:32610", t30 @ Affine.translation(32, 0))
    write_cog(tmp_path / "qa_pixel2.tif", qa[:, 32:], "EPSG:32610", t30 @ Affine.translation(32, 0), nodata=1)
    api = StacApi(collections=["landsat-c2-l2"])
    with http_server(tmp_path, routes={"/api": api}) as srv:
        assets = {k: {"href": f"{srv.url}/{k}.tif", "type": COG_TYPE, "roles": ["data"], "proj:shape": [64, 64],
                      "proj:transform": list(t30)[:6], "proj:epsg": 32610} for k in ("red", "qa_pixel")}  # fmt: skip
        props = {"landsat:wrs_path": "044", "landsat:wrs_row": "034", "eo:cloud_cover": 12.0}
        api.items.append(stac_item("LC09_L2SP_044034_20230105_02_T1", datetime(2023, 1, 5, 18, 40, tzinfo=UTC),
                                   assets, props, collection="landsat-c2-l2"))  # fmt: skip
        assets2 = {k: {"href": f"{srv.url}/{k}2.tif", "type": COG_TYPE, "roles": ["data"], "proj:shape": [64, 32],
                       "proj:transform": list(t30 @ Affine.translation(32, 0))[:6], "proj:epsg": 32610}
                   for k in ("red", "qa_pixel")}  # fmt: skip
        api.items.append(stac_item("LC08_L2SP_044034_20230113_02_T1", datetime(2023, 1, 13, 18, 40, tzinfo=UTC),
                                   assets2, {**props, "eo:cloud_cover": 30.0}, collection="landsat-c2-l2"))  # fmt: skip
        src = StacSource(f"{srv.url}/api", platform="landsat-c2l2-sr", clearest_per="window")
        (ref,) = src.list_scenes("044034", JAN, MAR)  # clearest of the window
        assert api.searches[-1]["query"] == {"landsat:wrs_path": {"eq": "044"}, "landsat:wrs_row": {"eq": "034"}}
        assert api.searches[-1]["collections"] == ["landsat-c2-l2"] and ref.platform == "landsat-c2l2-sr"
        g = src.grid("044034")
        assert g.resolution == 30 and g.crs == "EPSG:32610"
        scene = src.load_scene(ref, ["red"])
        np.testing.assert_array_equal(scene.data[0], red)
        assert (scene.qa[:8] == 0).all() and (scene.qa[8:16] == 9).all() and (scene.qa[16:] == 4).all()
        # the second frame only covers the east half of the grid: the rest is nodata / fill
        ref2 = StacSource(f"{srv.url}/api", platform="landsat-c2l2-sr", selection="all").list_scenes("044034", JAN, MAR)[1]
        s2 = src.load_scene(ref2, ["red"])
        assert s2.data.shape == (1, 64, 64) and not s2.data[0, :, :32].any() and not s2.qa[:, :32].any()
        np.testing.assert_array_equal(s2.data[0, :, 32:], red[:, 32:])
        np.testing.assert_array_equal(s2.qa[:, 32:], scene.qa[:, 32:])
        with pytest.raises(UnknownTileError):
            src.list_scenes("31UFU", JAN, MAR)


def test_item_tile_forms():
    assert item_tile({"grid:code": "MGRS-31UFU"}) == "31UFU"
    assert item_tile({"mgrs:utm_zone": 1, "mgrs:latitude_band": "C", "mgrs:grid_square": "AB"}) == "01CAB"
    assert item_tile({"s2:mgrs_tile": "20lpp"}) == "20LPP"
    assert item_tile({"landsat:wrs_path": "44", "landsat:wrs_row": 34}) == "044034"
    assert item_tile({}) is None

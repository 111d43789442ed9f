"""The chipper against a naive per-chip reference implementation (loops, one chip at a time).

Random scenes with cloud / nodata patches, pixels that are nodata in only some bands, chips
exactly at the thresholds, odd QA dtypes; the streaming path (``chip_source_scene`` ->
``LocalRasterSource.chip_reader`` -> ``chip_raster_strips``) against ``chip_scene(load_scene())``
on real tiled GeoTIFFs (exact windows, 20 m bilinear and nearest bands, partial coverage,
threads); cube writing locally and on S3 (moto) with an atomic pointer switch.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from affine import Affine
from pyproj import Transformer
from rasterio.transform import from_origin


from tests.support.servers import moto_s3, write_cog  # noqa: E402

from clay_core import chips as chips_mod  # noqa: E402
from clay_core.chips import (  # noqa: E402
    ChipParams,
    ChipSet,
    chip_id,
    chip_raster_strips,
    chip_scene,
    chip_source_scene,
    open_cube,
    to_dataset,
    write_cube,
)
from clay_core.errors import ConfigError  # noqa: E402
from clay_core.sources.local import LocalRasterSource  # noqa: E402
from clay_core.types import Scene, SceneRef, TileGrid  # noqa: E402

UTC = timezone.utc
CRS = "EPSG:32631"
X0, Y0 = 600000.0, 5800020.0
REF = SceneRef("31UFU_20230105", "31UFU", "sentinel-2-l2a", datetime(2023, 1, 5, 10, 30, tzinfo=UTC),
               {"red": "/data/red.tif", "blue": "/data/blue.tif"})  # fmt: skip


# --------------------------------------------------------------------------- reference


def naive_chips(data: np.ndarray, qa: np.ndarray, nodata, grid: TileGrid, p: ChipParams) -> dict:
    """Chip by chip, with Python sets and loops: what the chipper must return."""
    cs, n = p.chip_size, p.chip_size**2
    nb, h, w = data.shape
    to_wgs = Transformer.from_crs(grid.crs, 4326, always_xy=True)
    kept, dropped = [], {"cloudy": 0, "nodata": 0}
    for r in range(h // cs):
        for c in range(w // cs):
            q = qa[r * cs : (r + 1) * cs, c * cs : (c + 1) * cs]
            d = data[:, r * cs : (r + 1) * cs, c * cs : (c + 1) * cs]
            cloud = sum(int((q == k).sum()) for k in set(p.cloud_classes)) / n
            qa_nodata = sum(int((q == k).sum()) for k in set(p.nodata_classes)) / n
            empty = np.ones((cs, cs), bool)
            for b in range(nb):
                empty &= d[b] == nodata
            nod = max(qa_nodata, int(empty.sum()) / n)
            if nod > p.max_nodata:
                dropped["nodata"] += 1
                continue
            if cloud > p.max_cloud:
                dropped["cloudy"] += 1
                continue
            t = grid.transform
            x_min, y_max = t.c + c * cs * t.a, t.f + r * cs * t.e
            x_max, y_min = x_min + cs * t.a, y_max + cs * t.e
            lons, lats = zip(*[to_wgs.transform(x, y) for x, y in
                               ((x_min, y_min), (x_max, y_min), (x_min, y_max), (x_max, y_max))])  # fmt: skip
            lon, lat = to_wgs.transform((x_min + x_max) / 2, (y_min + y_max) / 2)
            kept.append({
                "row": r, "col": c, "cloud": cloud, "nodata": nod, "pixels": d.copy(),
                "native": (x_min, y_min, x_max, y_max),
                "wgs84": (min(lons), min(lats), max(lons), max(lats)), "lat": lat, "lon": lon,
            })  # fmt: skip
    return {"kept": kept, "dropped": dropped}


def assert_matches_reference(cs_: ChipSet, ref: dict, scene_ref: SceneRef = REF) -> None:
    kept = ref["kept"]
    m = cs_.meta
    assert len(cs_) == len(kept) == len(m)
    assert cs_.dropped == ref["dropped"]
    assert list(zip(m["row"], m["col"])) == [(k["row"], k["col"]) for k in kept]
    assert list(m["chip_id"]) == [chip_id(scene_ref.tile, k["row"], k["col"]) for k in kept]
    # fractions are exact: count / chip_size**2, stored as float32
    np.testing.assert_array_equal(m["cloud_fraction"].to_numpy(), np.float32([k["cloud"] for k in kept]))
    np.testing.assert_array_equal(m["nodata_fraction"].to_numpy(), np.float32([k["nodata"] for k in kept]))
    for i, k in enumerate(kept):
        np.testing.assert_array_equal(cs_.pixels[i], k["pixels"])
    if kept:
        np.testing.assert_array_equal(m[["x_min", "y_min", "x_max", "y_max"]].to_numpy(), [k["native"] for k in kept])
        np.testing.assert_allclose(m[["west", "south", "east", "north"]].to_numpy(), [k["wgs84"] for k in kept],
                                   rtol=0, atol=1e-9)  # fmt: skip
        np.testing.assert_allclose(m["lat"], [k["lat"] for k in kept], rtol=0, atol=1e-9)
        np.testing.assert_allclose(m["lon"], [k["lon"] for k in kept], rtol=0, atol=1e-9)
        assert (m["scene_id"] == scene_ref.scene_id).all() and (m["tile"] == scene_ref.tile).all()
        assert (m["datetime"] == pd.Timestamp(scene_ref.datetime)).all()
        assert json.loads(m["hrefs"].iloc[0]) == scene_ref.hrefs


# --------------------------------------------------------------------------- random scenes


def random_scene(seed: int, cs: int, nb: int = 3, qa_dtype=np.uint8, nodata=0) -> tuple[np.ndarray, np.ndarray]:
    """Clear land with cloud / shadow / nodata rectangles, salt noise of every class, pixels
    empty in every band (count as nodata) and in only some bands (do not)."""
    rng = np.random.default_rng(seed)
    h, w = 5 * cs + int(rng.integers(0, cs)), 7 * cs + int(rng.integers(0, cs))  # ragged edges are dropped
    qa = np.full((h, w), 4, np.int64)
    for _ in range(12):
        y, x = int(rng.integers(0, h)), int(rng.integers(0, w))
        qa[y : y + int(rng.integers(1, 2 * cs)), x : x + int(rng.integers(1, 2 * cs))] = rng.choice([0, 1, 3, 8, 9, 10, 6])
    salt = rng.random((h, w)) < 0.05
    qa[salt] = rng.integers(0, 12, int(salt.sum()))
    data = rng.integers(1, 12000, (nb, h, w)).astype(np.uint16)
    for _ in range(6):
        y, x = int(rng.integers(0, h)), int(rng.integers(0, w))
        data[:, y : y + int(rng.integers(1, 2 * cs)), x : x + int(rng.integers(1, 2 * cs))] = nodata
    partial = rng.random((h, w)) < 0.2
    data[0][partial] = nodata  # one band only: not nodata
    return data, qa.astype(qa_dtype)


def make_scene(data, qa, nodata=0, ref=REF) -> Scene:
    grid = TileGrid("31UFU", CRS, from_origin(X0, Y0, 10, 10), data.shape[1], data.shape[2])
    return Scene(ref=ref, grid=grid, bands=[f"b{i}" for i in range(data.shape[0])], data=data, qa=qa, nodata=nodata)


@pytest.mark.parametrize(
    "seed,params",
    [
        (0, ChipParams(chip_size=16, max_cloud=0.2, max_nodata=0.1)),
        (1, ChipParams(chip_size=32, max_cloud=0.3, max_nodata=0.05)),
        (2, ChipParams(chip_size=16, max_cloud=0.5, max_nodata=0.2, cloud_classes=(8, 9), nodata_classes=(0, 1))),
        (3, ChipParams(chip_size=24, max_cloud=0.1, max_nodata=0.1)),
    ],
)
def test_chip_scene_matches_naive_reference(seed, params):
    data, qa = random_scene(seed, params.chip_size)
    scene = make_scene(data, qa)
    ref = naive_chips(data, qa, 0, scene.grid, params)
    # the scene exercises every branch, so a wrong filter cannot pass
    assert ref["kept"] and ref["dropped"]["cloudy"] and ref["dropped"]["nodata"], ref["dropped"]
    out = chip_scene(scene, params)
    assert_matches_reference(out, ref)
    assert out.pixels.dtype == np.uint16 and out.pixels.flags.c_contiguous
    assert out.bands == scene.bands


def test_thresholds_are_inclusive_and_fractions_exact():
    cs, n = 16, 256
    data = np.full((2, cs, 4 * cs), 500, np.uint16)
    qa = np.full((cs, 4 * cs), 4, np.uint8)
    chip0 = np.full(n, 4, np.uint8)
    chip0[:64] = 9  # exactly 0.25 cloud -> kept at max_cloud=0.25
    qa[:, 0:cs] = chip0.reshape(cs, cs)
    chip1 = np.full(n, 4, np.uint8)
    chip1[:65] = 8  # 65/256 > 0.25 -> cloudy
    qa[:, cs : 2 * cs] = chip1.reshape(cs, cs)
    data[:, :2, 2 * cs : 3 * cs] = 0  # 32/256 = 0.125 all-band nodata -> kept at max_nodata=0.125
    data[:, :3, 3 * cs : 4 * cs] = 0  # 48/256 > 0.125 -> nodata
    p = ChipParams(chip_size=cs, max_cloud=0.25, max_nodata=0.125)
    out = chip_scene(make_scene(data, qa), p)
    assert list(out.meta["col"]) == [0, 2]
    assert out.dropped == {"cloudy": 1, "nodata": 1}
    assert list(out.meta["cloud_fraction"]) == [0.25, 0.0]
    assert list(out.meta["nodata_fraction"]) == [0.0, 0.125]


def test_cloudy_and_empty_chip_counts_as_nodata_and_one_band_zeros_do_not():
    cs = 8
    data = np.full((3, cs, 3 * cs), 7, np.uint16)
    qa = np.full((cs, 3 * cs), 4, np.uint8)
    qa[:, :cs] = 9  # all cloud ...
    data[:, :, :cs] = 0  # ... and all empty: dropped as nodata, not cloudy
    data[1, :, cs : 2 * cs] = 0  # empty in one band only: a valid chip
    data[:, :, 2 * cs :] = 0
    qa[:, 2 * cs :] = 0  # QA nodata
    out = chip_scene(make_scene(data, qa), ChipParams(chip_size=cs, max_cloud=0.5, max_nodata=0.5))
    assert list(out.meta["col"]) == [1] and out.dropped == {"cloudy": 0, "nodata": 2}
    assert out.meta["nodata_fraction"].iloc[0] == 0.0


@pytest.mark.parametrize("qa_dtype", [np.int16, np.uint16, np.float32])
def test_other_qa_dtypes_and_classes_outside_uint8(qa_dtype):
    data, qa = random_scene(7, 16)
    qa = qa.astype(qa_dtype)
    if qa_dtype is np.int16:
        qa[qa == 6] = -3
    if qa_dtype is np.uint16:
        qa[qa == 6] = 300
    p = ChipParams(chip_size=16, max_cloud=0.2, max_nodata=0.1, cloud_classes=(1, 3, 8, 9, 10, 300, -3))
    scene = make_scene(data, qa)
    assert_matches_reference(chip_scene(scene, p), naive_chips(data, qa, 0, scene.grid, p))


def test_many_scattered_classes_use_the_lookup_table():
    data, qa = random_scene(8, 16)
    rng = np.random.default_rng(8)
    qa[rng.random(qa.shape) < 0.1] = 200
    qa[rng.random(qa.shape) < 0.05] = 14
    qa[16:48, 16:40] = 200
    classes = (1, 3, 5, 8, 10, 12, 14, 200)  # 8 runs: the 256-entry lookup table path
    p = ChipParams(chip_size=16, max_cloud=0.6, max_nodata=0.1, cloud_classes=classes)
    assert len(chips_mod._ClassCounter(classes).runs) > 6
    scene = make_scene(data, qa)
    ref = naive_chips(data, qa, 0, scene.grid, p)
    assert ref["kept"] and ref["dropped"]["cloudy"]
    assert_matches_reference(chip_scene(scene, p), ref)


@pytest.mark.parametrize("nodata", [5, None, -1])
def test_other_nodata_values(nodata):
    data, qa = random_scene(9, 16, nodata=5 if nodata == 5 else 0)
    scene = make_scene(data, qa, nodata=nodata)
    p = ChipParams(chip_size=16, max_cloud=0.3, max_nodata=0.1)
    ref = naive_chips(data, qa, nodata, scene.grid, p)
    assert_matches_reference(chip_scene(scene, p), ref)


def test_no_chip_kept_and_too_small_scene():
    data = np.zeros((2, 32, 32), np.uint16)
    qa = np.zeros((32, 32), np.uint8)
    out = chip_scene(make_scene(data, qa), ChipParams(chip_size=16))
    assert len(out) == 0 and out.pixels.shape == (0, 2, 16, 16) and list(out.meta.columns) == list(chips_mod._META_COLUMNS)
    assert out.dropped == {"cloudy": 0, "nodata": 4}
    with pytest.raises(ConfigError, match="larger than scene"):
        chip_scene(make_scene(data[:, :8], qa[:8]), ChipParams(chip_size=16))


def test_chipset_concat_keeps_order_and_counts():
    d1, q1 = random_scene(1, 16)
    d2, q2 = random_scene(2, 16)
    p = ChipParams(chip_size=16, max_cloud=0.3, max_nodata=0.1)
    a, b = chip_scene(make_scene(d1, q1), p), chip_scene(make_scene(d2, q2), p)
    c = ChipSet.concat([a, b], a.bands, 16)
    assert len(c) == len(a) + len(b)
    np.testing.assert_array_equal(c.pixels, np.concatenate([a.pixels, b.pixels]))
    assert c.dropped == {k: a.dropped[k] + b.dropped[k] for k in a.dropped}
    assert list(c.meta["chip_id"]) == list(a.meta["chip_id"]) + list(b.meta["chip_id"])
    assert len(ChipSet.concat([], ["x"], 16)) == 0


# --------------------------------------------------------------------------- streaming from files

N10 = 7 * 32 + 5  # 10 m pixels per side: 7 chips of 32 and a ragged edge
T10 = from_origin(X0, Y0, 10, 10)
T20 = from_origin(X0, Y0, 20, 20)


@pytest.fixture(scope="module")
def per_band_dir(tmp_path_factory):
    """S2-like files, one per band: 10 m bands on the grid (read chip by chip), a 20 m band
    (bilinear) and a 20 m SCL (nearest) with clouds and a nodata swath edge, 64 px blocks."""
    root = tmp_path_factory.mktemp("chips-per-band")
    rng = np.random.default_rng(11)
    yy, xx = np.mgrid[0:N10, 0:N10]
    edge = xx + yy < 90  # swath edge: every band 0 there
    for b in ("B02", "B03", "B04"):
        a = rng.integers(1, 12000, (N10, N10)).astype(np.uint16)
        a[edge] = 0
        write_cog(root / f"31UFU_20230105_{b}.tif", a, CRS, T10, blocksize=64)
    n20 = (N10 + 1) // 2
    sw = (1000 + 8 * np.arange(n20)[None, :] + 4 * np.arange(n20)[:, None]).astype(np.uint16)
    write_cog(root / "31UFU_20230105_B11.tif", sw, CRS, T20, blocksize=64)
    scl = np.full((n20, n20), 4, np.uint8)
    scl[10:40, 60:100] = 9
    scl[70:90, 5:30] = 8
    scl[(np.arange(n20)[None, :] + np.arange(n20)[:, None]) < 45] = 0
    scl[rng.random((n20, n20)) < 0.03] = 3
    write_cog(root / "31UFU_20230105_SCL.tif", scl, CRS, T20, blocksize=64)
    return root


def assert_same_chips(a: ChipSet, b: ChipSet) -> None:
    assert a.bands == b.bands and a.dropped == b.dropped
    assert a.pixels.dtype == b.pixels.dtype and a.pixels.shape == b.pixels.shape
    np.testing.assert_array_equal(a.pixels, b.pixels)
    pd.testing.assert_frame_equal(a.meta, b.meta)


@pytest.mark.parametrize("workers", [1, 3])
def test_stream_equals_load_scene_then_chip_scene_per_band_files(per_band_dir, workers):
    src = LocalRasterSource(str(per_band_dir), max_workers=workers)
    (ref,) = src.list_scenes("31UFU", datetime(2023, 1, 1), datetime(2024, 1, 1))
    bands = ["red", "swir16", "blue", "green"]
    p = ChipParams(chip_size=32, max_cloud=0.2, max_nodata=0.1)
    scene = src.load_scene(ref, bands)
    expected = chip_scene(scene, p)
    ref_chips = naive_chips(scene.data, scene.qa, 0, scene.grid, p)
    assert ref_chips["kept"] and ref_chips["dropped"]["cloudy"] and ref_chips["dropped"]["nodata"]
    assert_matches_reference(expected, ref_chips, ref)
    reader = src.chip_reader(ref, bands, 32, workers=workers)
    assert reader.direct == [True, False, True, True]  # 10 m windows; 20 m through read_to_grid
    assert reader.unit_rows == 2  # 64 px blocks / 32 px chips: no block decoded twice
    assert_same_chips(chip_raster_strips(reader, ref, p), expected)
    assert_same_chips(chip_source_scene(src, ref, bands, p), expected)


def test_stream_skips_chips_whose_qa_is_nodata(per_band_dir, monkeypatch):
    import clay_core.sources.rio as rio

    src = LocalRasterSource(str(per_band_dir), max_workers=1)
    (ref,) = src.list_scenes("31UFU", datetime(2023, 1, 1), datetime(2024, 1, 1))
    p = ChipParams(chip_size=32, max_cloud=1.0, max_nodata=0.1)
    expected = chip_scene(src.load_scene(ref, ["blue"]), p)
    reads = []
    real = rio.ChipRowReader._read_direct

    def spy(self, src_, o, view, r0, r1, need):
        reads.append(np.ones((r1 - r0, self.n_cols), bool) if need is None else need.copy())
        return real(self, src_, o, view, r0, r1, need)

    monkeypatch.setattr(rio.ChipRowReader, "_read_direct", spy)
    got = chip_source_scene(src, ref, ["blue"], p)
    assert_same_chips(got, expected)
    n_read = int(sum(r.sum() for r in reads))
    assert 0 < n_read < 49 and expected.dropped["nodata"] >= 49 - n_read > 0


def test_stream_multiband_synthetic_qa_and_partial_grid(tmp_path):
    rng = np.random.default_rng(5)
    data = rng.integers(1, 9000, (3, 150, 170)).astype(np.uint16)
    data[:, :40, :50] = 0  # empty in every band
    data[1, 60:, 100:] = 0  # empty in one band only
    write_cog(tmp_path / "m" / "31UFU_20230105.tif", data, CRS, T10, blocksize=32, descriptions=["B02", "B03", "B04"])
    write_cog(tmp_path / "o" / "31UFU_20230105.tif", data, CRS, from_origin(X0 + 64 * 10, Y0 - 32 * 10, 10, 10),
              blocksize=32, descriptions=["B02", "B03", "B04"])  # fmt: skip
    grid = {"crs": CRS, "transform": list(T10)[:6], "height": 200, "width": 250}
    for sub, kw in (("m", {}), ("o", {"grids": {"*": grid}})):  # exact grid / grid larger than the file
        src = LocalRasterSource(str(tmp_path / sub), pattern="{tile}_{date}.tif", qa_band=None, max_workers=2, **kw)
        (ref,) = src.list_scenes("31UFU", datetime(2023, 1, 1), datetime(2024, 1, 1))
        for p in (ChipParams(chip_size=16, max_cloud=0.0, max_nodata=0.3),
                  ChipParams(chip_size=16, max_cloud=0.5, max_nodata=0.9, cloud_classes=(7,)),  # synthetic 7 = cloud
                  ChipParams(chip_size=24, max_cloud=1.0, max_nodata=0.0, nodata_classes=())):  # fmt: skip
            scene = src.load_scene(ref, ["green", "blue"])
            expected = chip_scene(scene, p)
            assert_matches_reference(expected, naive_chips(scene.data, scene.qa, 0, scene.grid, p), ref)
            reader = src.chip_reader(ref, ["green", "blue"], p.chip_size)
            assert reader.direct == [sub == "m"]
            assert_same_chips(chip_raster_strips(reader, ref, p), expected)
        assert expected.dropped["nodata"] > 0 and len(expected) > 0


def test_chip_source_scene_without_chip_reader_and_too_small():
    data, qa = random_scene(3, 16)

    class Plain:  # a source with load_scene only
        def load_scene(self, ref, bands):
            return make_scene(data, qa, ref=ref)

    p = ChipParams(chip_size=16, max_cloud=0.2, max_nodata=0.1)
    assert_same_chips(chip_source_scene(Plain(), REF, ["b0", "b1", "b2"], p), chip_scene(make_scene(data, qa), p))


def test_stream_too_small_scene_is_a_config_error(tmp_path):
    write_cog(tmp_path / "31UFU_20230105.tif", np.ones((2, 20, 20), np.uint16), CRS, T10)
    src = LocalRasterSource(str(tmp_path), pattern="{tile}_{date}.tif", band_names=["a", "b"], qa_band=None)
    (ref,) = src.list_scenes("31UFU", datetime(2023, 1, 1), datetime(2024, 1, 1))
    with pytest.raises(ConfigError, match="larger than scene"):
        chip_source_scene(src, ref, ["a"], ChipParams(chip_size=32))


# --------------------------------------------------------------------------- cubes


def _chips_for_cube(n_seed=4) -> ChipSet:
    data, qa = random_scene(n_seed, 16)
    return chip_scene(make_scene(data, qa), ChipParams(chip_size=16, max_cloud=0.6, max_nodata=0.5))


def assert_cube_equals(ds, cs_: ChipSet) -> None:
    assert ds["pixels"].dims == ("chip", "band", "y", "x") and ds.sizes["chip"] == len(cs_)
    np.testing.assert_array_equal(ds["pixels"].values, cs_.pixels)
    assert list(ds["chip_id"].values) == list(cs_.meta["chip_id"])
    np.testing.assert_array_equal(ds["cloud_fraction"].values, cs_.meta["cloud_fraction"].to_numpy())
    np.testing.assert_array_equal(ds["row"].values, cs_.meta["row"].to_numpy())
    assert list(ds["band"].values) == cs_.bands and ds.attrs["chip_size"] == 16


def test_write_cube_local_sharded_zstd(tmp_path):
    import zarr

    cs_ = _chips_for_cube()
    assert len(cs_) > 20
    uri = write_cube(to_dataset(cs_, 16), tmp_path / "cube.zarr", shard_chips=8)
    assert uri == str(tmp_path / "cube.zarr")
    arr = zarr.open_array(tmp_path / "cube.zarr" / "pixels", mode="r")
    assert arr.shards == (8, 3, 16, 16) and arr.chunks == (1, 3, 16, 16)
    blosc = json.dumps(arr.metadata.to_dict()["codecs"])
    assert '"zstd"' in blosc and "bitshuffle" in blosc
    assert_cube_equals(open_cube(tmp_path / "cube.zarr"), cs_)


def _objects(m) -> list[str]:
    out = []
    for page in m.client.get_paginator("list_objects_v2").paginate(Bucket=m.bucket):
        out += [o["Key"] for o in page.get("Contents", [])]
    return out


def test_write_cube_s3_publishes_atomically_through_a_pointer(monkeypatch):
    a, b = _chips_for_cube(4), _chips_for_cube(5)
    with moto_s3() as m:
        opts = {"endpoint_url": m.endpoint, "region_name": "us-east-1",
                "aws_access_key_id": "testing", "aws_secret_access_key": "testing"}  # fmt: skip
        url = f"s3://{m.bucket}/chips/31UFU/2023-01/cube.zarr"
        with pytest.raises(FileNotFoundError, match="not published"):
            open_cube(url, opts)
        assert write_cube(to_dataset(a, 16), url, shard_chips=4, storage_options=opts) == url
        keys = _objects(m)
        pointer = json.loads(m.client.get_object(Bucket=m.bucket, Key="chips/31UFU/2023-01/cube.zarr/pointer.json")["Body"].read())
        assert pointer["format"] == "clay-cube-pointer/1" and pointer["chips"] == len(a)
        v1 = pointer["prefix"]
        assert v1.startswith("chips/31UFU/2023-01/cube.zarr.v-")
        assert all(k.startswith(v1 + "/") for k in keys if not k.endswith("pointer.json"))
        assert_cube_equals(open_cube(url, {"client": m.client}), a)

        # a write that fails half-way leaves the published cube alone and no debris behind
        real_set = chips_mod.S3Store.set

        async def flaky_set(self, key, value):
            if key.startswith("pixels/c/") and not key.startswith("pixels/c/0/"):
                raise OSError("connection reset")
            return await real_set(self, key, value)

        real_client = chips_mod._s3_client

        def slow_client(options):
            # the first shard's PUT is still running in its thread when another shard fails
            # (zarr does not wait for it): it must not land after the cleanup
            client = real_client(options)
            put = client.put_object

            def put_object(**kw):
                if "/pixels/c/0/" in kw["Key"]:
                    time.sleep(0.5)
                return put(**kw)

            client.put_object = put_object
            return client

        monkeypatch.setattr(chips_mod, "_s3_client", slow_client)
        monkeypatch.setattr(chips_mod.S3Store, "set", flaky_set)
        with pytest.raises(OSError, match="connection reset"):
            write_cube(to_dataset(b, 16), url, shard_chips=4, storage_options=opts)
        monkeypatch.setattr(chips_mod, "_s3_client", real_client)
        monkeypatch.setattr(chips_mod.S3Store, "set", real_set)
        time.sleep(0.8)  # a straggling PUT would have landed by now
        assert sorted(_objects(m)) == sorted(keys)
        assert_cube_equals(open_cube(url, opts), a)

        # a second write switches the pointer, then deletes the old version
        write_cube(to_dataset(b, 16), url, shard_chips=4, storage_options={"client": m.client})
        pointer2 = json.loads(m.client.get_object(Bucket=m.bucket, Key="chips/31UFU/2023-01/cube.zarr/pointer.json")["Body"].read())
        assert pointer2["prefix"] != v1
        assert not [k for k in _objects(m) if k.startswith(v1 + "/")]
        assert_cube_equals(open_cube(url, opts), b)


def test_s3_uri_needs_bucket_and_key():
    with pytest.raises(ConfigError, match="s3://bucket/key"):
        write_cube(to_dataset(_chips_for_cube(), 16), "s3://only-bucket", storage_options={"client": object()})


def test_affine_of_grid_is_used_for_bounds():
    # a grid with another origin and 20 m pixels: bounds follow the transform, not constants
    data, qa = random_scene(12, 16, nb=1)
    grid = TileGrid("31UFU", CRS, Affine(20, 0, 500000, 0, -20, 4000000), data.shape[1], data.shape[2])
    scene = Scene(REF, grid, ["b0"], data, qa, 0)
    p = ChipParams(chip_size=16, max_cloud=0.6, max_nodata=0.5)
    out = chip_scene(scene, p)
    assert_matches_reference(out, naive_chips(data, qa, 0, grid, p))
    r, c = int(out.meta["row"].iloc[0]), int(out.meta["col"].iloc[0])
    assert out.meta["x_min"].iloc[0] == 500000 + c * 16 * 20 and out.meta["y_max"].iloc[0] == 4000000 - r * 16 * 20


def test_stream_multiband_with_qa_band_reads_chips_at_the_nodata_threshold(tmp_path, monkeypatch):
    """QA in the same file: a chip whose QA nodata is exactly max_nodata is read and kept, one
    pixel more and it is dropped without being read."""
    import clay_core.sources.rio as rio

    rng = np.random.default_rng(21)
    cs = 16
    data = rng.integers(1, 9000, (3, 3 * cs, 4 * cs)).astype(np.uint16)
    scl = np.full((3 * cs, 4 * cs), 4, np.uint8)
    scl[0:2, 0:cs] = 0  # chip (0, 0): 32 / 256 = 0.125 -> kept at max_nodata=0.125
    scl[0:2, cs : 2 * cs] = 0
    scl[2, cs] = 0  # chip (0, 1): 33 / 256 -> dropped, never read
    scl[cs : 2 * cs, 2 * cs : 3 * cs] = 9  # chip (1, 2): cloudy -> read (its nodata decides the reason)
    stack = np.concatenate([data, scl[None].astype(np.uint16)])
    write_cog(tmp_path / "31UFU_20230105.tif", stack, CRS, T10, blocksize=16,
              descriptions=["B02", "B03", "B04", "SCL"], nodata=None)  # fmt: skip
    src = LocalRasterSource(str(tmp_path), pattern="{tile}_{date}.tif", max_workers=1)
    (ref,) = src.list_scenes("31UFU", datetime(2023, 1, 1), datetime(2024, 1, 1))
    p = ChipParams(chip_size=cs, max_cloud=0.2, max_nodata=0.125)
    scene = src.load_scene(ref, ["blue", "red"])
    expected = chip_scene(scene, p)
    assert_matches_reference(expected, naive_chips(scene.data, scene.qa, 0, scene.grid, p), ref)
    assert (0, 0) in set(zip(expected.meta["row"], expected.meta["col"]))
    assert expected.dropped == {"cloudy": 1, "nodata": 1}
    read = []
    real = rio.ChipRowReader._read_direct
    monkeypatch.setattr(rio.ChipRowReader, "_read_direct",
                        lambda self, s, o, v, r0, r1, need: read.append((r0, need)) or real(self, s, o, v, r0, r1, need))  # fmt: skip
    assert_same_chips(chip_source_scene(src, ref, ["blue", "red"], p), expected)
    needs = {r0: need for r0, need in read}
    assert needs[0] is not None and needs[0][0].tolist() == [True, False, True, True]

"""Chip cubes: written locally (sharded, zstd) and on S3 (moto) with an atomic pointer
switch; a failed S3 write leaves the published cube alone and no debris behind."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from clay_core.chips import ChipParams, ChipSet, chip_scene, open_cube, to_dataset, write_cube
from clay_core.chips import s3 as s3_mod
from clay_core.errors import ConfigError
from tests.core.chips.reference import make_scene, random_scene
from tests.support.servers import moto_s3


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
        real_set = s3_mod.S3Store.set

        async def flaky_set(self, key, value):
            if key.startswith("pixels/c/") and not key.startswith("pixels/c/0/"):
                raise OSError("connection reset")
            return await real_set(self, key, value)

        real_client = s3_mod._s3_client

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

        monkeypatch.setattr(s3_mod, "_s3_client", slow_client)
        monkeypatch.setattr(s3_mod.S3Store, "set", flaky_set)
        with pytest.raises(OSError, match="connection reset"):
            write_cube(to_dataset(b, 16), url, shard_chips=4, storage_options=opts)
        monkeypatch.setattr(s3_mod, "_s3_client", real_client)
        monkeypatch.setattr(s3_mod.S3Store, "set", real_set)
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



# -- integrity: zarr reads a missing object as zeros, open_cube refuses it ---------------------


def test_open_cube_refuses_a_missing_shard_or_chunk_naming_it(tmp_path):
    from clay_core.storage import DamagedDataError

    cs_ = _chips_for_cube()
    path = tmp_path / "cube.zarr"
    write_cube(to_dataset(cs_, 16), path, shard_chips=8)
    (path / "pixels" / "c" / "1" / "0" / "0" / "0").unlink()
    with pytest.raises(DamagedDataError, match=r"cube\.zarr is damaged: pixels/c/1/0/0/0 is missing"):
        open_cube(path)
    write_cube(to_dataset(cs_, 16), path, shard_chips=8)
    (path / "lat" / "c" / "0").unlink()  # a coordinate chunk: the chips' latitudes would read as NaN
    with pytest.raises(DamagedDataError, match="lat/c/0 is missing"):
        open_cube(path)


def test_an_all_zero_coordinate_chunk_is_stored_not_mistaken_for_damage(tmp_path):
    cs_ = _chips_for_cube()
    cs_.meta["cloud_fraction"] = 0.0  # equal to the fill value: zarr skips such chunks by default
    path = tmp_path / "cube.zarr"
    write_cube(to_dataset(cs_, 16), path, shard_chips=8)
    assert (path / "cloud_fraction" / "c" / "0").is_file()
    assert (open_cube(path)["cloud_fraction"].values == 0).all()


def test_open_cube_refuses_other_bands_than_expected(tmp_path):
    from clay_core.storage import DamagedDataError

    cs_ = _chips_for_cube()
    path = tmp_path / "cube.zarr"
    write_cube(to_dataset(cs_, 16).isel(band=[0, 2]), path)
    assert list(open_cube(path, bands=[cs_.bands[0], cs_.bands[2]])["band"].values) == [cs_.bands[0], cs_.bands[2]]
    with pytest.raises(DamagedDataError, match=rf"cube\.zarr holds bands .*band\(s\) \['{cs_.bands[1]}'\] missing"):
        open_cube(path, bands=cs_.bands)


def test_open_cube_refuses_a_missing_shard_on_s3():
    from clay_core.storage import DamagedDataError

    with moto_s3() as m:
        url = f"s3://{m.bucket}/chips/31UFU/2023-01/cube.zarr"
        write_cube(to_dataset(_chips_for_cube(), 16), url, shard_chips=8, storage_options={"client": m.client})
        assert open_cube(url, {"client": m.client}).sizes["chip"] > 8
        (shard,) = [k for k in _objects(m) if k.endswith("/pixels/c/1/0/0/0")]
        m.client.delete_object(Bucket=m.bucket, Key=shard)
        with pytest.raises(DamagedDataError, match=r"2023-01/cube\.zarr is damaged: pixels/c/1/0/0/0 is missing"):
            open_cube(url, {"client": m.client})

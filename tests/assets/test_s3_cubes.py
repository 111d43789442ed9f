"""Chip cubes in object storage: the graph writes them to a local S3 endpoint (moto server
mode) through dagster-aws's S3Resource, and downstream assets read them back from there."""

from __future__ import annotations

import os

import numpy as np
import psycopg
from dagster import DagsterInstance

from clay_assets.resources import ClayHome
from clay_assets.runner import materialize_graph
from clay_core.chips import open_cube
from clay_core.storage import read_manifest
from tests.support.pipeline import small_resources, small_source
from tests.support.servers import moto_s3

WINDOWS = ["2024-01-01", "2024-01-08", "2024-01-15"]


def test_graph_with_cubes_on_s3(tmp_path, pg_url, monkeypatch):
    (tmp_path / "dagster").mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    with moto_s3() as m:
        # dagster-aws's S3Resource takes credentials from the usual AWS environment
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        res = small_resources(tmp_path / "clay", pg_url, source=small_source(tiles=["31UFU"]))
        home = ClayHome(root=res["home"].root, cubes_uri=f"s3://{m.bucket}/cubes", s3_endpoint=m.endpoint)
        res["home"] = home
        inst = DagsterInstance.get()
        try:
            assert not materialize_graph(["31UFU"], WINDOWS, res, inst).failures
        finally:
            inst.dispose()
        keys = [o["Key"] for o in m.client.list_objects_v2(Bucket=m.bucket).get("Contents", [])]
        for w in WINDOWS:
            part = home.layout.partition("chips", "31UFU", w)
            man = read_manifest(part)
            assert man["cube_uri"] == f"s3://{m.bucket}/cubes/31UFU/{w}"
            assert f"cubes/31UFU/{w}/pointer.json" in keys
            assert not (part / "cube.zarr").exists()  # nothing written locally
            cube = open_cube(man["cube_uri"], {"client": m.client})
            assert cube.sizes["chip"] == man["chips"] and cube["pixels"].dtype == np.uint16
    with psycopg.connect(pg_url) as conn:
        n, uri = conn.execute("SELECT count(*), min(cube_uri) FROM clay.chips").fetchone()
    assert n == sum(read_manifest(home.layout.partition("chips", "31UFU", w))["chips"] for w in WINDOWS)
    assert uri.startswith(f"s3://{m.bucket}/cubes/31UFU/")

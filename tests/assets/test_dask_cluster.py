"""The `embeddings` asset on a real Dask cluster named by DASK_SCHEDULER_ADDRESS: a scheduler
and two CPU workers, each its own process on 127.0.0.1. The resource holds the client for the
step and closes it after; the partition's embeddings equal those of a run without a cluster."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from dagster import materialize
from distributed import Client

from clay_assets import config
from clay_assets.definitions import ALL_ASSETS, PER_SCENE_UPSTREAM
from clay_assets.partitions import make_key
from clay_core import dask_cluster
from clay_core.dask_cluster import LoopbackCluster
from clay_core.encoder import read_observations
from clay_core.encoder.dask_engine import _WORKER_MODELS
from clay_core.errors import ConfigError
from tests.support.pipeline import small_resources

TILE, WINDOW = "31UFU", "2024-01-01"


def _models_here() -> list[str]:
    return sorted(_WORKER_MODELS)


def test_embeddings_asset_runs_on_the_cluster_the_platform_reads(tmp_path, instance, monkeypatch):
    key = make_key(TILE, WINDOW)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the workers' thread count: float32 results bit for bit
    try:
        local = small_resources(tmp_path / "local", None)  # type: ignore[arg-type]  (no vectors step: no Postgres)
        assert materialize(ALL_ASSETS, selection=PER_SCENE_UPSTREAM, partition_key=key, resources=local,
                           instance=instance).success
        shutil.copytree(tmp_path / "local", tmp_path / "dask", symlinks=True)  # the same chip cube, no embeddings
        done = local["home"].layout.partition("embeddings", TILE, WINDOW).relative_to(tmp_path / "local")
        shutil.rmtree((tmp_path / "dask" / done).parent.parent)  # <root>/embeddings
        with LoopbackCluster(2, memory_limit="1.5GiB") as cluster:
            monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", cluster.address)
            cfg = config.current()
            assert cfg.dask_scheduler == cluster.address
            remote = small_resources(tmp_path / "dask", None,  # type: ignore[arg-type]
                                     dask_scheduler=cfg.dask_scheduler)
            assert remote["chip_settings"].dask_scheduler == cluster.address
            # chipped again and embedded through the cluster: equal embeddings mean equal chips too
            assert materialize(ALL_ASSETS, selection=["chip_cubes", "embeddings"], partition_key=key,
                               resources=remote, instance=instance).success
            assert cluster.address not in dask_cluster._clients  # the resource closed its client when the step ended
            with Client(cluster.address, set_as_default=False) as client:
                built = client.run(_models_here)
                prefixes = client.run_on_scheduler(lambda dask_scheduler: sorted(dask_scheduler.task_prefixes))
    finally:
        torch.set_num_threads(threads)
    vectors = {name: read_observations(res["home"].layout.partition("embeddings", TILE, WINDOW)
                                       / "embeddings.zarr").vectors for name, res in (("local", local),
                                                                                     ("dask", remote))}
    assert len(vectors["local"]) > 4
    assert np.array_equal(vectors["dask"], vectors["local"])
    assert len(built) == 2 and any(built.values())  # the model ran on the workers, not here
    assert "chip_source_scene" in prefixes, prefixes  # chip_cubes chipped its scenes on the workers


def test_a_malformed_scheduler_address_fails_when_the_code_location_loads():
    with pytest.raises(ConfigError, match=r"DASK_SCHEDULER_ADDRESS.*give the address `dask scheduler` prints"):
        config.load({"DASK_SCHEDULER_ADDRESS": "scheduler.internal"})
    assert config.load({"DASK_SCHEDULER_ADDRESS": "tcp://10.0.0.5:8786"}).dask_scheduler == "tcp://10.0.0.5:8786"

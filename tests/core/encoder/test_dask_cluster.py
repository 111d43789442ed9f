"""Embedding on a real Dask cluster: a scheduler and two CPU workers, each its own process on
127.0.0.1. The cluster's embeddings are bit-identical to one process's, a partition's store is
the same, and a worker killed (SIGKILL) mid-partition costs time, not data.

The workers run torch on one thread (``LoopbackCluster(threads=1)``), and the local references
are computed on one thread too: for some shapes (16-px chips in batches of 2) float32 results
differ in the last bits between 1 and 2 threads, in one process as on the cluster.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time

import numpy as np
import pytest
import torch

from clay_core import dask_cluster
from clay_core.chips import ChipParams, make_chip_cube, open_cube
from clay_core.dask_cluster import LoopbackCluster, client_for, fan_out_ordered, waiter
from clay_core.encoder import LoadedEncoder, build_encoder, embed_chips, embed_partition, read_observations
from clay_core.encoder.dask_engine import _WORKER_MODELS, PLUGIN_PREFIX, weights_token
from clay_core.errors import ConfigError
from clay_core.sources import SyntheticSceneSource, SyntheticWorld, record_partition_scenes
from clay_core.storage import CHIPS, DamagedDataError, Layout
from clay_core.types import PartitionId

S2 = "sentinel-2-l2a"
BANDS = ["blue", "green", "red", "nir"]
CHIP = 32


@pytest.fixture(scope="module")
def cluster():
    with LoopbackCluster(2, memory_limit="1.5GiB") as c:
        yield c


@pytest.fixture(scope="module")
def encoder():
    return build_encoder("tiny", seed=0)


@contextlib.contextmanager
def one_thread():
    """Local references on the workers' torch thread count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _chips(n: int, seed: int = 42) -> tuple[np.ndarray, dict]:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(1, 8000, size=(n, len(BANDS), CHIP, CHIP), dtype=np.uint16)
    dates = np.array([np.datetime64("2024-01-01T10:00") + np.timedelta64(3 * i, "D") for i in range(n)])
    return pixels, {"datetimes": dates, "lat": np.linspace(40, 50, n), "lon": np.linspace(-5, 5, n)}


def _embed(encoder, pixels, meta, **kw):
    return embed_chips(encoder, pixels, platform=S2, bands=BANDS, **meta, batch_size=3, patch_tokens=True, **kw)


def _models_here(dask_worker) -> tuple[list[str], list[str]]:
    """Runs on a worker (by reference: this module is importable there): the models it built
    and the encoder weights it holds."""
    return sorted(_WORKER_MODELS), sorted(n for n in dask_worker.plugins if n.startswith(PLUGIN_PREFIX))


def _on_workers(client) -> dict:
    return client.run(_models_here)


def _on_scheduler(client) -> list[str]:
    return client.run_on_scheduler(lambda dask_scheduler: sorted(
        n for n in dask_scheduler.worker_plugins if n.startswith(PLUGIN_PREFIX)))


def test_cluster_embeddings_are_bit_identical_to_one_process(cluster, encoder):
    pixels, meta = _chips(40)
    with one_thread():
        local = _embed(encoder, pixels, meta)
    calls: list[tuple[int, int]] = []
    remote = _embed(encoder, pixels, meta, scheduler_address=cluster.address,
                    progress=lambda d, t: calls.append((d, t)))
    assert np.array_equal(remote.cls, local.cls)
    assert np.array_equal(remote.patches, local.patches)
    assert (remote.device, remote.dtype) == ("cpu", "float32")
    # 40 chips in tasks of 4 batches of 3: 4 tasks, each reported once, in any order
    assert sorted(d for d, _ in calls) == [d for d, _ in calls] and calls[-1] == (40, 40) and len(calls) == 4

    client = client_for(cluster.address)
    name = PLUGIN_PREFIX + weights_token(encoder)
    # both workers built the model from the weights they received once, as a plugin
    assert {w: v for w, v in _on_workers(client).items()} == {
        w: ([f"{weights_token(encoder)}@cpu"], [name]) for w in client.scheduler_info()["workers"]}
    assert _on_scheduler(client) == [name]  # a worker joining later gets them too
    again = _embed(encoder, pixels[:7], {k: v[:7] for k, v in meta.items()}, scheduler_address=cluster.address)
    assert np.array_equal(again.cls, local.cls[:7])
    assert _on_scheduler(client) == [name]


def test_changed_weights_reach_the_workers(cluster):
    enc = build_encoder("tiny", seed=5)
    pixels, meta = _chips(9, seed=3)
    before = _embed(enc, pixels, meta, scheduler_address=cluster.address)
    old = weights_token(enc)
    with torch.no_grad():
        enc.transformer.norm.weight.mul_(2.0)  # edited in place: the workers must not keep the old model
    after = _embed(enc, pixels, meta, scheduler_address=cluster.address)
    assert np.abs(after.cls - before.cls).max() > 1e-4
    with one_thread():
        assert np.array_equal(after.cls, _embed(enc, pixels, meta).cls)
    held = _on_scheduler(client_for(cluster.address))
    assert PLUGIN_PREFIX + weights_token(enc) in held and PLUGIN_PREFIX + old not in held  # the old ones are freed


PID = PartitionId("2024-01-08", "31UFU")
SOURCE = SyntheticSceneSource(SyntheticWorld(tiles=("31UFU",), size=64, seed=1, revisit_days=3))


def test_a_partition_embedded_on_the_cluster_equals_the_local_one(cluster, tmp_path, encoder):
    model = LoadedEncoder(encoder, "cpu", "tiny-seed0", "tiny", None)
    stores = []
    for sub, address in (("local", None), ("dask", cluster.address)):
        layout = Layout(tmp_path / sub)
        record_partition_scenes(layout, PID, SOURCE)
        make_chip_cube(layout, PID, SOURCE, ChipParams(chip_size=16, max_cloud=0.5, max_nodata=0.1), BANDS)
        with one_thread():
            res = embed_partition(layout, PID, model, platform=S2, batch_size=2, scheduler_address=address,
                                  open_cube=lambda t, w, lay=layout: open_cube(lay.partition_dir(CHIPS, PID)
                                                                               / "cube.zarr"))
        stores.append(read_observations(res.store))
    assert len(stores[0].vectors) > 8
    np.testing.assert_array_equal(stores[1].vectors, stores[0].vectors)
    np.testing.assert_array_equal(stores[1].chip_id, stores[0].chip_id)

    def zeroed(tile, window):  # what zarr returns for a lost chunk: refused here, before anything is sent
        ds = open_cube(layout.partition_dir(CHIPS, PID) / "cube.zarr").load()
        ds["pixels"][5] = 0
        return ds

    with pytest.raises(DamagedDataError, match=r"1 chip\(s\) read as all zeros"):
        embed_partition(layout, PID, model, platform=S2, batch_size=2, scheduler_address=cluster.address,
                        open_cube=zeroed)
    np.testing.assert_array_equal(read_observations(res.store).vectors, stores[0].vectors)  # the old store stays


def test_a_failing_task_fails_the_fan_out_and_cancels_the_rest(cluster):
    client = client_for(cluster.address)

    def task(i: int) -> int:
        if i == 2:
            raise ValueError(f"task {i} failed")
        time.sleep(0.2)
        return i

    got = []
    with pytest.raises(ValueError, match="task 2 failed"):
        for i, r in fan_out_ordered(lambda i: client.submit(task, i, pure=False), 20, waiter(client), window=4):
            got.append(r)
    assert len(got) < 20


def test_fan_out_keeps_a_bounded_window_and_yields_every_index():
    import concurrent.futures
    import threading

    running, peak, lock = [0], [0], threading.Lock()

    def task(i: int) -> int:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.01)
        with lock:
            running[0] -= 1
        return i * i

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        got = dict(fan_out_ordered(lambda i: pool.submit(task, i), 30, concurrent.futures.wait, window=3))
    assert got == {i: i * i for i in range(30)} and peak[0] <= 3


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_bad_or_unreachable_scheduler_is_a_clear_error(monkeypatch, encoder):
    pixels, meta = _chips(2)
    with pytest.raises(ConfigError, match=r"'localhost' is not HOST:PORT.*DASK_SCHEDULER_ADDRESS"):
        _embed(encoder, pixels, meta, scheduler_address="localhost")
    monkeypatch.setattr(dask_cluster, "CONNECT_TIMEOUT_S", 1.0)
    address = f"tcp://127.0.0.1:{_closed_port()}"
    with pytest.raises(ConfigError, match=rf"cannot reach the Dask scheduler at {address} \(DASK_SCHEDULER_ADDRESS\)"):
        _embed(encoder, pixels, meta, scheduler_address=address)


def test_a_worker_killed_mid_partition_costs_time_not_data(cluster, encoder):
    """Then a replacement worker joins: the scheduler gives it the weights, and it embeds."""
    pixels, meta = _chips(96, seed=7)
    with one_thread():
        local = embed_chips(encoder, pixels, platform=S2, bands=BANDS, **meta, batch_size=1)
    client = client_for(cluster.address)
    pids = client.run(os.getpid)  # worker address -> its process id
    killed: list[tuple[str, list]] = []

    def kill_a_busy_worker(done: int, total: int) -> None:
        if killed:
            return
        busy = {w: keys for w, keys in client.processing().items() if keys}
        if not busy:
            return
        address, keys = next(iter(busy.items()))
        os.kill(pids[address], signal.SIGKILL)
        killed.append((address, list(keys)))

    # 96 chips in tasks of 4 batches of 1: 24 tasks, at most 4 in flight
    res = embed_chips(encoder, pixels, platform=S2, bands=BANDS, **meta, batch_size=1,
                      scheduler_address=cluster.address, progress=kill_a_busy_worker)
    assert killed and killed[0][1], "no worker held a task when the first result came back"
    assert sum(p.poll() == -signal.SIGKILL for p in cluster.workers) == 1
    assert np.array_equal(res.cls, local.cls)  # every chip, in order, as one process computes it

    cluster.start_worker("w-replacement")
    client.wait_for_workers(2, timeout=60)
    (new,) = set(client.scheduler_info()["workers"]) - set(pids)
    assert _on_workers(client)[new][1] == [PLUGIN_PREFIX + weights_token(encoder)]  # before any task of it ran

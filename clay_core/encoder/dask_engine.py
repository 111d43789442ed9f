"""Embedding on a Dask cluster: CPU or GPU workers, the same embeddings as one process.

The chips are cut into tasks of ``BATCHES_PER_TASK`` batches whose boundaries are those of the
local loop (task starts are multiples of ``batch_size``), and every worker runs
:func:`clay_core.encoder.single.embed_inputs` on its slice. On CPU workers the embeddings are
therefore bit-identical to :func:`clay_core.encoder.embed_chips` in one process
(``tests/core/encoder/test_dask_cluster.py``).

- The weights reach each worker once, in a worker plugin (:class:`EncoderWeightsPlugin`,
  named by the SHA-256 of the weights): the scheduler installs it on every worker, including
  workers that join later, and later calls and steps with the same weights reuse it. Each
  worker builds its model on first use and keeps it.
- Chips travel as numpy arrays of raw values, read here one task at a time (at most two tasks
  per worker in flight), so a cube larger than memory streams through and workers need no
  access to the chip store. A chip read as all zeros is refused here, before it is sent.
- A task travels with its inputs: when a worker dies, the scheduler reruns its tasks on the
  others and the results are still placed by chip index.
- Each worker embeds on its own CUDA device when it has one, else on its CPU.

Where the cluster comes from: the scheduler at ``scheduler_address`` (``DASK_SCHEDULER_ADDRESS``)
or, with several local GPUs and no address, a ``dask_cuda.LocalCUDACluster`` (the ``gpu``
extra; dask-cuda fails on import without CUDA, so it is imported only then).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time as _time
import weakref
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import dask
import numpy as np
import torch
from distributed import WorkerPlugin, get_worker

from clay_core.dask_cluster import client_for, fan_out_ordered, use_worker_threads, wait_for_workers, waiter
from clay_core.encoder.inputs import ModelInputs
from clay_core.encoder.model import ClayEncoder
from clay_core.encoder.single import EmbeddingResult, Progress, embed_inputs, resolve_device
from clay_core.errors import ConfigError

__all__ = ["get_client", "close_client", "embed_on_cluster", "fan_out", "ship_weights", "weights_token",
           "EncoderWeights", "EncoderWeightsPlugin", "BATCHES_PER_TASK"]
# Batches per task: several batches per task let each worker pipeline its own batches
# (prefetch, pinned copies) while keeping per-task scheduling overhead small.
BATCHES_PER_TASK = 4

_lock = threading.Lock()
_cuda_client: Any = None
_cuda_cluster: Any = None


def _optional(module: str, name: str, fix: str) -> Any:
    """``module.name`` of the optional 'gpu' extra, or a ConfigError that says how to get it."""
    import importlib

    try:
        return getattr(importlib.import_module(module), name)
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ConfigError(f"multi-GPU embedding needs {module} (the 'gpu' extra): {fix}") from exc


def get_client(scheduler_address: str | None = None) -> Any:
    """The client of the scheduler at ``scheduler_address`` or, without one, of a process-wide
    ``dask_cuda.LocalCUDACluster`` (one single-threaded worker per visible GPU)."""
    global _cuda_client, _cuda_cluster
    if scheduler_address:
        return client_for(scheduler_address)
    with _lock:
        if _cuda_client is None:
            LocalCUDACluster = _optional("dask_cuda", "LocalCUDACluster", "pip install 'clay-assets[gpu]', give the "
                                         "address of an existing cluster (DASK_SCHEDULER_ADDRESS), or pass "
                                         "device='cuda:0'")
            from distributed import Client

            # A GPU runs one task at a time; each worker sees only its own GPU as cuda:0.
            _cuda_cluster = LocalCUDACluster(threads_per_worker=1)
            _cuda_client = Client(_cuda_cluster, set_as_default=False)
        return _cuda_client


def close_client() -> None:
    """Close the local CUDA cluster this module started (if any)."""
    global _cuda_client, _cuda_cluster
    with _lock:
        if _cuda_client is not None:
            _cuda_client.close()
        if _cuda_cluster is not None:
            _cuda_cluster.close()
        _cuda_client = _cuda_cluster = None


class EncoderWeights:
    """What a worker needs to rebuild the encoder: config, CPU state dict, and a token that
    is the SHA-256 of both (the same weights in any process get the same token)."""

    def __init__(self, token: str, config: dict[str, int], state: dict[str, torch.Tensor]) -> None:
        self.token, self.config, self.state = token, config, state


PLUGIN_PREFIX = "clay-encoder-"


class EncoderWeightsPlugin(WorkerPlugin):
    """Carries one encoder's weights to every worker of the cluster, present and future.

    Not scattered data: Dask's active memory manager keeps a single replica of scattered
    data nobody waits on, and a worker killed with that replica would take the weights with
    it. A worker plugin is kept by the scheduler and installed on each worker when it joins,
    so a replacement worker has the weights too. Idempotent: registering weights a cluster
    already has (another step of the same model) changes nothing.
    """

    idempotent = True

    def __init__(self, weights: EncoderWeights) -> None:
        self.weights = weights
        self.name = PLUGIN_PREFIX + weights.token


_WORKER_MODELS: dict[str, ClayEncoder] = {}
_WORKER_LOCK = threading.Lock()


def _worker_encoder(token: str, device: str) -> ClayEncoder:
    """The encoder with weights ``token`` on this worker, built on first use only."""
    with _WORKER_LOCK:
        key = f"{token}@{device}"
        encoder = _WORKER_MODELS.get(key)
        if encoder is None:
            plugin = get_worker().plugins.get(PLUGIN_PREFIX + token)
            if plugin is None:
                raise RuntimeError(f"this Dask worker has no encoder weights {token[:12]}; the client registers "
                                   "them before submitting (were the cluster's plugins removed?)")
            weights = plugin.weights
            with torch.device("meta"):
                encoder = ClayEncoder(weights.config)
            encoder.load_state_dict(weights.state, strict=True, assign=True)
            encoder = encoder.to(device).eval()
            _WORKER_MODELS.clear()  # one model per worker: free the previous one's memory
            _WORKER_MODELS[key] = encoder
        return encoder


def _embed_task(
    token: str,
    inputs: ModelInputs,
    start: int,
    batch_size: int,
    patch_tokens: bool,
    device: str,
) -> tuple[int, np.ndarray, np.ndarray | None, str, str]:
    """Runs on a worker: embed one slice of chips; returns (start, cls, patches, device, dtype)."""
    use_worker_threads()
    dev = resolve_device(device)
    encoder = _worker_encoder(token, dev)
    res = embed_inputs(encoder, inputs, batch_size=batch_size, device=dev, patch_tokens=patch_tokens)
    return start, res.cls, res.patches, res.device, res.dtype


def _task_input(inputs: ModelInputs, start: int, stop: int) -> ModelInputs:
    """The slice a task receives, with its raw pixels read into a numpy array here."""
    part = inputs.rows(start, stop)
    return replace(part, pixels=np.ascontiguousarray(np.asarray(part.pixels)))


def weights_token(encoder: ClayEncoder) -> str:
    """SHA-256 of the encoder's config and tensors; recomputed only after an in-place edit
    (a tensor's ``_version`` grows with every in-place change, e.g. ``load_state_dict``)."""
    state = encoder.state_dict()
    edits = sum(int(t._version) for t in state.values())
    cached = getattr(encoder, "_clay_weights_token", None)
    if cached is not None and cached[0] == edits:
        return cached[1]
    digest = hashlib.sha256(json.dumps(encoder.config, sort_keys=True).encode())
    for name, tensor in state.items():
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    token = digest.hexdigest()
    encoder._clay_weights_token = (edits, token)  # type: ignore[attr-defined]
    return token


def _encoder_weights(encoder: ClayEncoder, token: str) -> EncoderWeights:
    state = {k: v.detach().to("cpu") for k, v in encoder.state_dict().items()}
    return EncoderWeights(token=token, config=dict(encoder.config), state=state)


# Per client: the weights token it last registered, so a partition per call does not send the
# weights (1.2 GB for the large preset) again. Weak keys: a dropped client leaves nothing.
_registered: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


def ship_weights(client: Any, encoder: ClayEncoder) -> str:
    """Make ``encoder``'s weights available on every worker of ``client``'s cluster; the token."""
    token = weights_token(encoder)
    previous = _registered.get(client)
    if previous != token:
        client.register_plugin(EncoderWeightsPlugin(_encoder_weights(encoder, token)))
        if previous is not None:  # this process moved on to other weights: free the old ones
            client.unregister_worker_plugin(PLUGIN_PREFIX + previous)
        _registered[client] = token
    return token


def fan_out(
    client: Any,
    wait: Callable[..., Any],
    encoder: ClayEncoder,
    inputs: ModelInputs,
    *,
    batch_size: int,
    patch_tokens: bool,
    progress: Progress | None,
    n_workers: int,
    worker_device: str = "auto",
) -> tuple[np.ndarray, np.ndarray | None, set[tuple[str, str]]]:
    """Submit chip slices to ``client`` and place the results in chip order.

    ``client`` is a ``distributed.Client``; ``wait`` is :func:`clay_core.dask_cluster.waiter`'s. At most two tasks per
    worker are in flight. Returns (cls, patches, the (device, dtype) pairs the workers used).
    """
    n = len(inputs)
    dim, p = encoder.dim, encoder.patch_size
    h, w = inputs.chip_shape
    cls_out = np.empty((n, dim), dtype=np.float32)
    patch_out = np.empty((n, (h // p) * (w // p), dim), dtype=np.float16) if patch_tokens else None
    token = ship_weights(client, encoder)
    step = batch_size * BATCHES_PER_TASK  # a multiple of batch_size: the local loop's batch boundaries
    ranges = [(s, min(s + step, n)) for s in range(0, n, step)]
    used: set[tuple[str, str]] = set()
    done_chips = 0

    def submit(i: int) -> Any:
        start, stop = ranges[i]
        # The chips travel inside the task on purpose (the scheduler can rerun it elsewhere), so
        # Dask's "large graph" warning (10 MB) would fire for every task of 256-px chips.
        # pure=False: no hashing of the pixels to name the task (a token would only save reruns).
        with dask.config.set({"distributed.admin.large-graph-warning-threshold": "4GiB"}):
            return client.submit(_embed_task, token, _task_input(inputs, start, stop), start, batch_size,
                                 patch_tokens, worker_device, pure=False)  # fmt: skip

    for _, (start, cls, patches, device, dtype) in fan_out_ordered(submit, len(ranges), wait,
                                                                   window=2 * n_workers):
        cls_out[start : start + len(cls)] = cls
        if patch_out is not None and patches is not None:
            patch_out[start : start + len(cls)] = patches
        used.add((device, dtype))
        done_chips += len(cls)
        if progress is not None:
            progress(done_chips, n)
    return cls_out, patch_out, used


def embed_on_cluster(
    encoder: ClayEncoder,
    inputs: ModelInputs,
    *,
    batch_size: int,
    patch_tokens: bool,
    progress: Progress | None,
    scheduler_address: str | None = None,
) -> EmbeddingResult:
    """``embed_inputs`` spread over the Dask cluster (see the module docstring); same result
    layout. ``progress`` is called after each task (``BATCHES_PER_TASK`` batches). The
    result's ``device``/``dtype`` are the workers' (``+``-joined if they differ)."""
    client = get_client(scheduler_address)
    n_workers = wait_for_workers(client)
    t0 = _time.perf_counter()
    cls, patches, used = fan_out(client, waiter(client), encoder, inputs, batch_size=batch_size,
                                 patch_tokens=patch_tokens, progress=progress, n_workers=n_workers)  # fmt: skip
    seconds = _time.perf_counter() - t0
    device = "+".join(sorted({d for d, _ in used})) or "cpu"
    dtype = "+".join(sorted({t for _, t in used})) or "float32"
    n = len(cls)
    return EmbeddingResult(cls, patches, device, dtype, seconds, n / seconds if seconds > 0 else float("inf"))

"""Fan embedding batches over several GPUs with Dask.

``dask_cuda.LocalCUDACluster`` starts one worker per visible GPU (each worker sees only
its own GPU as ``cuda:0``); given a scheduler address, an existing cluster of GPU workers is
used instead. The encoder weights are scattered once to every worker and
each worker builds its model once, then keeps it for later tasks.

``dask_cuda`` and ``distributed`` are imported only inside ``get_client`` (called only
when CUDA with more than one GPU is present): dask-cuda fails on import on CPU-only
machines, and ``clay_core.encoder.engine`` must stay importable there. They come with the
``gpu`` extra (``pip install clay-assets[gpu]``).
"""

from __future__ import annotations

import atexit
import threading
import time as _time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from clay_core.encoder.inputs import ModelInputs
from clay_core.encoder.model import ClayEncoder
from clay_core.encoder.single import EmbeddingResult, Progress, embed_inputs
from clay_core.errors import ConfigError

__all__ = ["get_client", "close_client", "embed_chips_multi_gpu", "fan_out"]
# Chunks per task: several batches per task let each worker pipeline its own batches
# (prefetch, pinned copies) while keeping per-task scheduling overhead small.
BATCHES_PER_TASK = 4

_lock = threading.Lock()
_client: Any = None
_cluster: Any = None


def _optional(module: str, name: str, fix: str) -> Any:
    """``module.name`` of the optional 'gpu' extra, or a ConfigError that says how to get it."""
    import importlib

    try:
        return getattr(importlib.import_module(module), name)
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ConfigError(f"multi-GPU embedding needs {module} (the 'gpu' extra): {fix}") from exc


def get_client(scheduler_address: str | None = None) -> Any:
    """A process-wide ``distributed.Client``: the scheduler at ``scheduler_address`` (the
    deployment's ``DASK_SCHEDULER_ADDRESS``) or, without one, a LocalCUDACluster."""
    global _client, _cluster
    with _lock:
        if _client is not None:
            return _client
        Client = _optional("distributed", "Client", "pip install 'clay-assets[gpu]', or pass device='cuda:0' to use "
                           "one GPU")
        if scheduler_address:
            _client = Client(scheduler_address)
        else:
            LocalCUDACluster = _optional("dask_cuda", "LocalCUDACluster", "pip install 'clay-assets[gpu]', give the "
                                         "address of an existing cluster (DASK_SCHEDULER_ADDRESS), or pass "
                                         "device='cuda:0'")
            # One single-threaded worker per GPU: a GPU runs one task at a time.
            _cluster = LocalCUDACluster(threads_per_worker=1)
            _client = Client(_cluster)
        atexit.register(close_client)
        return _client


def close_client() -> None:
    """Close the client and the local cluster this module started (if any)."""
    global _client, _cluster, _scattered
    with _lock:
        if _client is not None:
            _client.close()
        if _cluster is not None:
            _cluster.close()
        _client = _cluster = None
        _scattered = None


@dataclass
class EncoderWeights:
    """What a worker needs to rebuild the encoder: config, CPU state dict, cache token."""

    token: str
    config: dict[str, int]
    state: dict[str, torch.Tensor]


_WORKER_MODELS: dict[str, ClayEncoder] = {}
_WORKER_LOCK = threading.Lock()


def _worker_encoder(weights: EncoderWeights, device: str) -> ClayEncoder:
    """The encoder for ``weights`` on this worker, built on first use only."""
    with _WORKER_LOCK:
        key = f"{weights.token}@{device}"
        encoder = _WORKER_MODELS.get(key)
        if encoder is None:
            with torch.device("meta"):
                encoder = ClayEncoder(weights.config)
            encoder.load_state_dict(weights.state, strict=True, assign=True)
            encoder = encoder.to(device).eval()
            _WORKER_MODELS.clear()  # one model per worker: free the previous one's memory
            _WORKER_MODELS[key] = encoder
        return encoder


def _embed_task(
    weights: EncoderWeights,
    inputs: ModelInputs,
    start: int,
    batch_size: int,
    patch_tokens: bool,
    device: str,
) -> tuple[int, np.ndarray, np.ndarray | None]:
    """Runs on a worker: embed one slice of chips; returns (start, cls, patches)."""
    encoder = _worker_encoder(weights, device)
    res = embed_inputs(encoder, inputs, batch_size=batch_size, device=device, patch_tokens=patch_tokens)
    return start, res.cls, res.patches


def _task_input(inputs: ModelInputs, start: int, stop: int) -> ModelInputs:
    """The slice a task receives: lazy for xarray (the worker reads it), else materialized."""
    part = inputs.rows(start, stop)
    if hasattr(part.pixels, "isel"):  # xarray: ship the lazy selection, not the pixels
        return part
    return replace(part, pixels=np.ascontiguousarray(np.asarray(part.pixels)))


def _weights_token(encoder: ClayEncoder) -> str:
    """Identifies this encoder's current weights: the object, plus in-place edit counters
    (a tensor's ``_version`` grows with every in-place change, e.g. ``load_state_dict``)."""
    base = getattr(encoder, "_clay_multigpu_token", None)
    if base is None:
        base = uuid.uuid4().hex
        encoder._clay_multigpu_token = base  # type: ignore[attr-defined]
    edits = sum(int(t._version) for t in encoder.state_dict().values())
    return f"{base}-{edits}"


def _encoder_weights(encoder: ClayEncoder, token: str) -> EncoderWeights:
    state = {k: v.detach().to("cpu") for k, v in encoder.state_dict().items()}
    return EncoderWeights(token=token, config=dict(encoder.config), state=state)


# The most recent scatter, reused across calls: a partition per call would otherwise
# ship the weights (1.2 GB for the large preset) to every worker each time.
_scattered: tuple[int, str, Any] | None = None


def _scatter_weights(client: Any, encoder: ClayEncoder) -> Any:
    global _scattered
    token = _weights_token(encoder)
    if _scattered is not None and _scattered[0] == id(client) and _scattered[1] == token:
        return _scattered[2]
    future = client.scatter(_encoder_weights(encoder, token), broadcast=True)
    _scattered = (id(client), token, future)
    return future


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
    worker_device: str = "cuda",
) -> tuple[np.ndarray, np.ndarray | None]:
    """Submit chip slices to ``client`` and gather results in order.

    ``client`` needs ``scatter(obj, broadcast=True)`` and ``submit(fn, *args, pure=False)``;
    ``wait(futures, return_when="FIRST_COMPLETED")`` returns ``(done, not_done)``
    (``distributed.wait`` or ``concurrent.futures.wait``). At most two tasks per worker
    are in flight, so only that many slices are held in memory at once.
    """
    n = len(inputs)
    dim = encoder.dim
    p = encoder.patch_size
    h, w = inputs.chip_shape
    cls_out = np.empty((n, dim), dtype=np.float32)
    patch_out = np.empty((n, (h // p) * (w // p), dim), dtype=np.float16) if patch_tokens else None
    weights = _scatter_weights(client, encoder)
    step = batch_size * BATCHES_PER_TASK
    ranges = [(s, min(s + step, n)) for s in range(0, n, step)]
    window = max(2 * n_workers, 1)
    pending: set[Any] = set()
    done_chips = 0
    next_range = 0

    def submit(start: int, stop: int) -> Any:
        return client.submit(_embed_task, weights, _task_input(inputs, start, stop), start, batch_size, patch_tokens,
                             worker_device, pure=False)  # fmt: skip

    while next_range < len(ranges) or pending:
        while next_range < len(ranges) and len(pending) < window:
            pending.add(submit(*ranges[next_range]))
            next_range += 1
        finished, _ = wait(list(pending), return_when="FIRST_COMPLETED")
        for future in finished:
            pending.discard(future)
            start, cls, patches = future.result()
            stop = start + len(cls)
            cls_out[start:stop] = cls
            if patch_out is not None and patches is not None:
                patch_out[start:stop] = patches
            done_chips += len(cls)
            if progress is not None:
                progress(done_chips, n)
    return cls_out, patch_out


def embed_chips_multi_gpu(
    encoder: ClayEncoder,
    inputs: ModelInputs,
    *,
    batch_size: int,
    patch_tokens: bool,
    progress: Progress | None,
    scheduler_address: str | None = None,
) -> EmbeddingResult:
    """``embed_chips`` over all GPUs of the Dask cluster; same result layout.

    ``progress`` is called after each task (``BATCHES_PER_TASK`` batches).
    """
    from distributed import wait

    client = get_client(scheduler_address)
    n_workers = max(len(client.scheduler_info().get("workers", {})), 1)
    t0 = _time.perf_counter()
    cls, patches = fan_out(client, wait, encoder, inputs, batch_size=batch_size, patch_tokens=patch_tokens,
                           progress=progress, n_workers=n_workers)  # fmt: skip
    seconds = _time.perf_counter() - t0
    n = len(cls)
    return EmbeddingResult(cls, patches, "cuda", "bfloat16", seconds, n / seconds if seconds > 0 else float("inf"))

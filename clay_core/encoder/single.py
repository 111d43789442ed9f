"""Embedding on one device: the CPU loop and the pipelined single-GPU loop.

On CUDA the loop keeps the GPU busy: a worker thread reads and normalizes batch i+1
while batch i runs; the normalized batch goes into pinned host memory and is copied with
``non_blocking=True`` on a side stream; results come back through pinned buffers and are
collected one batch late, so the host never waits on a batch it has just launched. The
model runs under bf16 autocast (the residual stream stays float32). On the CPU everything
is float32 and deterministic: the same input gives bit-identical output.

Both :mod:`clay_core.encoder.engine` (one device) and :mod:`clay_core.encoder.dask_engine`
(each Dask worker) run :func:`embed_inputs`.
"""

from __future__ import annotations

import time as _time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from clay_core.encoder.inputs import ModelInputs, pixel_shape
from clay_core.encoder.model import ClayEncoder
from clay_core.errors import ConfigError

__all__ = ["EmbeddingResult", "Progress", "embed_inputs", "resolve_device", "check_encoder", "check_chip_shape"]

Progress = Callable[[int, int], None]


def resolve_device(requested: str = "auto") -> str:
    """``"auto"`` -> ``"cuda"`` when available else ``"cpu"``; ``"cuda[:k]"`` needs CUDA."""
    req = str(requested).strip().lower()
    if req == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if req == "cpu":
        return "cpu"
    if req == "cuda" or req.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device {requested!r} requested but CUDA is not available "
                f"(torch {torch.__version__}); use device='auto' or 'cpu'"
            )
        if ":" in req:
            suffix = req.split(":", 1)[1]
            if not suffix.isdigit():
                raise ConfigError(f"unknown device {requested!r}; use 'cuda:N' with N a GPU index")
            if int(suffix) >= torch.cuda.device_count():
                raise ConfigError(f"device {requested!r}: only {torch.cuda.device_count()} GPU(s) visible")
        return req
    raise ConfigError(f"unknown device {requested!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'")


@dataclass(frozen=True, eq=False)
class EmbeddingResult:
    """Embeddings of N chips. ``cls`` [N, dim] float32; ``patches`` [N, L, dim] float16 or None."""

    cls: np.ndarray
    patches: np.ndarray | None
    device: str
    dtype: str  # compute dtype: "float32" on CPU, "bfloat16" (autocast) on CUDA
    seconds: float
    chips_per_s: float


def check_encoder(encoder: ClayEncoder) -> None:
    if not isinstance(encoder, ClayEncoder):
        raise ConfigError(f"encoder must be a ClayEncoder, got {type(encoder).__name__}")
    if encoder.cls_token.is_meta:
        raise ConfigError("encoder has no weights (meta device); use build_encoder or load_encoder")


def check_chip_shape(inputs: ModelInputs, patch_size: int) -> tuple[int, int, int]:
    """(n, h, w) of the inputs' chips; fails unless the chips tile into whole patches."""
    n, _, h, w = pixel_shape(inputs.pixels)
    if n != len(inputs):
        raise ConfigError(f"{n} chips but {len(inputs)} time/latlon rows")
    if h % patch_size or w % patch_size or h == 0 or w == 0:
        raise ConfigError(f"chip size {h}x{w} must be a positive multiple of the patch size {patch_size}")
    return n, h, w


class _HostBatches:
    """Reads and normalizes batches in a worker thread, one batch ahead of the consumer.

    Reading (zarr decompression, xarray loading) and numpy normalization release the GIL,
    so they overlap the model running in the main thread.
    """

    def __init__(self, inputs: ModelInputs, ranges: list[tuple[int, int]]):
        self._inputs = inputs
        self.ranges = ranges
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clay-prefetch")
        self._next: Future[np.ndarray] | None = None
        self._index = 0

    def _load(self, start: int, stop: int) -> np.ndarray:
        return self._inputs.batch(slice(start, stop))

    def __enter__(self) -> _HostBatches:
        if self.ranges:
            self._next = self._pool.submit(self._load, *self.ranges[0])
        return self

    def __exit__(self, *exc: object) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def take(self) -> tuple[int, int, np.ndarray]:
        """The next (start, stop, normalized batch); starts reading the one after."""
        if self._next is None:
            raise IndexError("no batches left")
        batch = self._next.result()
        start, stop = self.ranges[self._index]
        self._index += 1
        more = self._index < len(self.ranges)
        self._next = self._pool.submit(self._load, *self.ranges[self._index]) if more else None
        return start, stop, batch


@dataclass
class _Run:
    """One embedding run: the per-run constants and the output arrays the loops fill."""

    encoder: ClayEncoder
    kernel: tuple[torch.Tensor, torch.Tensor]
    pos: torch.Tensor
    times: torch.Tensor
    latlon: torch.Tensor
    cls_out: np.ndarray
    patch_out: np.ndarray | None
    progress: Progress | None

    def forward(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        rows = slice(start, stop)
        return self.encoder.forward_with_kernel(x, self.times[rows], self.latlon[rows], self.kernel, self.pos)


def embed_inputs(encoder: ClayEncoder, inputs: ModelInputs, *, batch_size: int = 16, device: str = "cpu",
                 patch_tokens: bool = False, progress: Progress | None = None) -> EmbeddingResult:
    """Embed ``inputs`` on one device (``"cpu"``, ``"cuda"`` or ``"cuda:N"``, already resolved)."""
    check_encoder(encoder)
    n, h, w = check_chip_shape(inputs, encoder.patch_size)
    p = encoder.patch_size
    length, dim = (h // p) * (w // p), encoder.dim
    on_cuda = device.startswith("cuda")
    dtype_name = "bfloat16" if on_cuda else "float32"

    cls_out = np.empty((n, dim), dtype=np.float32)
    patch_out = np.empty((n, length, dim), dtype=np.float16) if patch_tokens else None
    t0 = _time.perf_counter()
    if n == 0:
        return EmbeddingResult(cls_out, patch_out, device, dtype_name, 0.0, 0.0)

    encoder = encoder.to(device).eval()
    ranges = [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    with torch.inference_mode():
        # The band-dependent kernel and the position encoding are the same for every
        # batch of a run: compute them once, in float32, outside autocast.
        run = _Run(encoder, encoder.patch_kernel(torch.from_numpy(inputs.waves)),
                   encoder.position_encoding(h // p, w // p, inputs.gsd),
                   torch.from_numpy(inputs.time).to(device), torch.from_numpy(inputs.latlon).to(device),
                   cls_out, patch_out, progress)  # fmt: skip
        with _HostBatches(inputs, ranges) as batches:
            if on_cuda:
                _CudaPipeline(run, batches).run()
            else:
                _cpu_loop(run, batches)
    seconds = _time.perf_counter() - t0
    rate = n / seconds if seconds > 0 else float("inf")
    return EmbeddingResult(cls_out, patch_out, device, dtype_name, seconds, rate)


def _cpu_loop(run: _Run, batches: _HostBatches) -> None:
    n = run.cls_out.shape[0]
    for _ in batches.ranges:
        start, stop, x = batches.take()
        out = run.forward(torch.from_numpy(x), start, stop)
        run.cls_out[start:stop] = out[:, 0].numpy()
        if run.patch_out is not None:
            run.patch_out[start:stop] = out[:, 1:].to(torch.float16).numpy()
        if run.progress is not None:
            run.progress(stop, n)


@dataclass
class _Staged:
    """A batch whose host->device copy has been queued on the copy stream."""

    start: int
    stop: int
    x: torch.Tensor
    ready: torch.cuda.Event


@dataclass
class _InFlight:
    """A batch whose results are being copied into pinned output slot ``slot``."""

    start: int
    stop: int
    slot: int
    done: torch.cuda.Event


class _CudaPipeline:
    """The single-GPU loop: two pinned slots for inputs and two for outputs; a slot is
    refilled only after the event guarding its previous transfer has fired."""

    def __init__(self, run: _Run, batches: _HostBatches) -> None:
        self.r, self.batches = run, batches
        self.device = run.times.device
        dim = run.cls_out.shape[1]
        self.bs = max(stop - start for start, stop in batches.ranges)
        self.compute = torch.cuda.current_stream(self.device)
        self.copier = torch.cuda.Stream(self.device)
        self.h_in: list[torch.Tensor | None] = [None, None]
        self.in_ready: list[torch.cuda.Event | None] = [None, None]
        self.h_cls = [torch.empty((self.bs, dim), dtype=torch.float32, pin_memory=True) for _ in range(2)]
        self.h_patch = (
            [torch.empty((self.bs, *run.patch_out.shape[1:]), dtype=torch.float16, pin_memory=True) for _ in range(2)]
            if run.patch_out is not None
            else []
        )

    def stage(self, slot: int) -> _Staged:
        start, stop, x = self.batches.take()
        buf = self.h_in[slot]
        if buf is None:
            buf = self.h_in[slot] = torch.empty((self.bs, *x.shape[1:]), dtype=torch.float32, pin_memory=True)
        event = self.in_ready[slot]
        if event is not None:
            event.synchronize()
        host = buf[: stop - start]
        host.copy_(torch.from_numpy(x))
        with torch.cuda.stream(self.copier):
            dev = host.to(self.device, non_blocking=True)
            ready = torch.cuda.Event()
            ready.record(self.copier)
        self.in_ready[slot] = ready
        return _Staged(start, stop, dev, ready)

    def launch(self, cur: _Staged, slot: int) -> _InFlight:
        """Queue the model on ``cur`` and the copy of its results into output slot ``slot``."""
        self.compute.wait_event(cur.ready)
        cur.x.record_stream(self.compute)  # allocated on the copy stream, consumed on this one
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = self.r.forward(cur.x, cur.start, cur.stop)
        k = cur.stop - cur.start
        self.h_cls[slot][:k].copy_(out[:, 0].float(), non_blocking=True)
        if self.r.patch_out is not None:
            self.h_patch[slot][:k].copy_(out[:, 1:].to(torch.float16), non_blocking=True)
        done = torch.cuda.Event()
        done.record(self.compute)
        return _InFlight(cur.start, cur.stop, slot, done)

    def collect(self, job: _InFlight) -> None:
        job.done.synchronize()
        k = job.stop - job.start
        self.r.cls_out[job.start : job.stop] = self.h_cls[job.slot][:k].numpy()
        if self.r.patch_out is not None:
            self.r.patch_out[job.start : job.stop] = self.h_patch[job.slot][:k].numpy()
        if self.r.progress is not None:
            self.r.progress(job.stop, self.r.cls_out.shape[0])

    def run(self) -> None:
        n_batches = len(self.batches.ranges)
        pending: _InFlight | None = None
        staged = self.stage(0)
        for b in range(n_batches):
            launched = self.launch(staged, b % 2)
            # Host work for the next batch overlaps the GPU work just queued; the previous
            # batch is collected afterwards, so the GPU always has queued work.
            if b + 1 < n_batches:
                staged = self.stage((b + 1) % 2)
            if pending is not None:
                self.collect(pending)
            pending = launched
        if pending is not None:
            self.collect(pending)

"""Embedding engine: raw chips -> Clay class-token (and optionally patch) embeddings.

This is what the Dagster ``embeddings`` asset calls. Chips are read batch by batch from
any array-like (numpy, xarray, zarr), so a cube larger than memory streams through.

On CUDA the loop keeps the GPU busy: a worker thread reads and normalizes batch i+1
while batch i runs; the normalized batch goes into pinned host memory and is copied with
``non_blocking=True`` on a side stream; results come back through pinned buffers and are
collected one batch late, so the host never waits on a batch it has just launched. The
model runs under bf16 autocast (the residual stream stays float32). On the CPU everything
is float32 and deterministic: the same input gives bit-identical output.

Importing this module never imports ``dask_cuda``/``distributed`` (dask-cuda fails on
import on machines without CUDA); ``clay_core.encoder.multigpu`` is imported only when more than
one GPU is visible.
"""

from __future__ import annotations

import time as _time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from clay_core.encoder.inputs import encode_latlon, encode_time, normalize, waves_for
from clay_core.errors import ConfigError
from clay_core.encoder.model import ClayEncoder
from clay_core.platforms import Platform, get_platform

__all__ = ["EmbeddingResult", "embed_chips", "embed_prepared", "resolve_device", "Progress"]

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


@dataclass
class EmbeddingResult:
    """Embeddings of N chips. ``cls`` [N, dim] float32; ``patches`` [N, L, dim] float16 or None."""

    cls: np.ndarray
    patches: np.ndarray | None
    device: str
    dtype: str  # compute dtype: "float32" on CPU, "bfloat16" (autocast) on CUDA
    seconds: float
    chips_per_s: float


def _shape(pixels: Any) -> tuple[int, ...]:
    shape = getattr(pixels, "shape", None)
    return tuple(int(s) for s in (shape if shape is not None else np.shape(pixels)))


def _check_pixels(pixels: Any, bands: Sequence[str], patch_size: int) -> tuple[int, int, int, int]:
    shape = _shape(pixels)
    if len(shape) != 4:
        raise ConfigError(f"pixels must be [N, C, H, W], got shape {shape}")
    n, c, h, w = shape
    if c != len(bands):
        raise ConfigError(f"pixels have {c} bands but {len(bands)} band names were given: {list(bands)}")
    if h % patch_size or w % patch_size or h == 0 or w == 0:
        raise ConfigError(f"chip size {h}x{w} must be a positive multiple of the patch size {patch_size}")
    return n, c, h, w


def _check_encoder(encoder: ClayEncoder) -> None:
    if not isinstance(encoder, ClayEncoder):
        raise ConfigError(f"encoder must be a ClayEncoder, got {type(encoder).__name__}")
    if encoder.cls_token.is_meta:
        raise ConfigError("encoder has no weights (meta device); use build_encoder or load_encoder")


def embed_chips(
    encoder: ClayEncoder,
    pixels: Any,
    *,
    platform: str | Platform,
    bands: list[str],
    datetimes: Any,
    lat: Any,
    lon: Any,
    batch_size: int = 16,
    device: str = "cpu",
    patch_tokens: bool = False,
    progress: Progress | None = None,
) -> EmbeddingResult:
    """Embed raw chips [N, C, H, W] (digital numbers) of ``platform``'s ``bands``.

    ``datetimes``, ``lat``, ``lon`` have one entry per chip (``None`` entries, or ``None``
    for the whole argument, mean unknown: zero metadata rows). ``device`` may be
    ``"auto"``. ``progress(done_chips, total_chips)`` is called after every batch.
    With ``device="cuda"`` and more than one visible GPU, batches fan out over a Dask
    CUDA cluster (``clay_core.encoder.multigpu``).
    """
    _check_encoder(encoder)
    plat = get_platform(platform)
    plat.select(bands)  # unknown bands fail here, before any pixel is read
    n = _check_pixels(pixels, bands, encoder.patch_size)[0]
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    times = encode_time(datetimes, n=n)
    latlon = encode_latlon(lat, lon, n=n)
    dev = resolve_device(device)
    if dev == "cuda" and n > 0 and torch.cuda.device_count() > 1:
        from clay_core.encoder import multigpu  # heavy optional deps; see module docstring

        return multigpu.embed_chips_multi_gpu(
            encoder, pixels, platform=plat, bands=list(bands), times=times, latlon=latlon,
            batch_size=batch_size, patch_tokens=patch_tokens, progress=progress,
        )  # fmt: skip
    return embed_prepared(
        encoder, pixels, platform=plat, bands=list(bands), times=times, latlon=latlon,
        batch_size=batch_size, device=dev, patch_tokens=patch_tokens, progress=progress,
    )  # fmt: skip


class _HostBatches:
    """Reads and normalizes batches in a worker thread, one batch ahead of the consumer.

    Reading (zarr decompression, xarray loading) and numpy normalization release the GIL,
    so they overlap the model running in the main thread.
    """

    def __init__(self, pixels: Any, plat: Platform, bands: Sequence[str], ranges: list[tuple[int, int]]):
        self._pixels = pixels
        self._plat = plat
        self._bands = list(bands)
        self.ranges = ranges
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clay-prefetch")
        self._next: Future[np.ndarray] | None = None
        self._index = 0

    def _load(self, start: int, stop: int) -> np.ndarray:
        return normalize(np.asarray(self._pixels[start:stop]), self._plat, self._bands)

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


def embed_prepared(
    encoder: ClayEncoder,
    pixels: Any,
    *,
    platform: str | Platform,
    bands: list[str],
    times: np.ndarray,
    latlon: np.ndarray,
    batch_size: int = 16,
    device: str = "cpu",
    patch_tokens: bool = False,
    progress: Progress | None = None,
) -> EmbeddingResult:
    """``embed_chips`` on one device, with time/latlon rows already encoded ([N, 4] each)."""
    _check_encoder(encoder)
    plat = get_platform(platform)
    n, _, h, w = _check_pixels(pixels, bands, encoder.patch_size)
    if times.shape != (n, 4) or latlon.shape != (n, 4):
        raise ConfigError(f"times {times.shape} and latlon {latlon.shape} must both be ({n}, 4)")
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
        kernel = encoder.patch_kernel(torch.from_numpy(waves_for(plat, bands)))
        pos = encoder.position_encoding(h // p, w // p, plat.gsd)
        meta_t = torch.from_numpy(times).to(device)
        meta_ll = torch.from_numpy(latlon).to(device)
        with _HostBatches(pixels, plat, bands, ranges) as batches:
            loop = _cuda_loop if on_cuda else _cpu_loop
            loop(encoder, batches, kernel, pos, meta_t, meta_ll, cls_out, patch_out, progress)
    seconds = _time.perf_counter() - t0
    rate = n / seconds if seconds > 0 else float("inf")
    return EmbeddingResult(cls_out, patch_out, device, dtype_name, seconds, rate)


def _cpu_loop(
    encoder: ClayEncoder,
    batches: _HostBatches,
    kernel: tuple[torch.Tensor, torch.Tensor],
    pos: torch.Tensor,
    times: torch.Tensor,
    latlon: torch.Tensor,
    cls_out: np.ndarray,
    patch_out: np.ndarray | None,
    progress: Progress | None,
) -> None:
    n = cls_out.shape[0]
    for _ in batches.ranges:
        start, stop, x = batches.take()
        out = encoder.forward_with_kernel(torch.from_numpy(x), times[start:stop], latlon[start:stop], kernel, pos)
        cls_out[start:stop] = out[:, 0].numpy()
        if patch_out is not None:
            patch_out[start:stop] = out[:, 1:].to(torch.float16).numpy()
        if progress is not None:
            progress(stop, n)


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


def _cuda_loop(
    encoder: ClayEncoder,
    batches: _HostBatches,
    kernel: tuple[torch.Tensor, torch.Tensor],
    pos: torch.Tensor,
    times: torch.Tensor,
    latlon: torch.Tensor,
    cls_out: np.ndarray,
    patch_out: np.ndarray | None,
    progress: Progress | None,
) -> None:
    device = times.device
    n, dim = cls_out.shape
    bs = max(stop - start for start, stop in batches.ranges)
    compute = torch.cuda.current_stream(device)
    copier = torch.cuda.Stream(device)
    # Two pinned slots for inputs and two for outputs: a slot is refilled only after the
    # event guarding its previous transfer has fired.
    h_in: list[torch.Tensor | None] = [None, None]
    in_ready: list[torch.cuda.Event | None] = [None, None]
    h_cls = [torch.empty((bs, dim), dtype=torch.float32, pin_memory=True) for _ in range(2)]
    h_patch = (
        [torch.empty((bs, *patch_out.shape[1:]), dtype=torch.float16, pin_memory=True) for _ in range(2)]
        if patch_out is not None
        else []
    )

    def stage(slot: int) -> _Staged:
        start, stop, x = batches.take()
        buf = h_in[slot]
        if buf is None:
            buf = h_in[slot] = torch.empty((bs, *x.shape[1:]), dtype=torch.float32, pin_memory=True)
        event = in_ready[slot]
        if event is not None:
            event.synchronize()
        host = buf[: stop - start]
        host.copy_(torch.from_numpy(x))
        with torch.cuda.stream(copier):
            dev = host.to(device, non_blocking=True)
            ready = torch.cuda.Event()
            ready.record(copier)
        in_ready[slot] = ready
        return _Staged(start, stop, dev, ready)

    def collect(job: _InFlight) -> None:
        job.done.synchronize()
        k = job.stop - job.start
        cls_out[job.start : job.stop] = h_cls[job.slot][:k].numpy()
        if patch_out is not None:
            patch_out[job.start : job.stop] = h_patch[job.slot][:k].numpy()
        if progress is not None:
            progress(job.stop, n)

    n_batches = len(batches.ranges)
    pending: _InFlight | None = None
    staged = stage(0)
    for b in range(n_batches):
        slot = b % 2
        cur = staged
        compute.wait_event(cur.ready)
        cur.x.record_stream(compute)  # allocated on the copy stream, consumed on this one
        with torch.autocast("cuda", dtype=torch.bfloat16):
            rows = slice(cur.start, cur.stop)
            out = encoder.forward_with_kernel(cur.x, times[rows], latlon[rows], kernel, pos)
        k = cur.stop - cur.start
        h_cls[slot][:k].copy_(out[:, 0].float(), non_blocking=True)
        if patch_out is not None:
            h_patch[slot][:k].copy_(out[:, 1:].to(torch.float16), non_blocking=True)
        done = torch.cuda.Event()
        done.record(compute)
        # Host work for the next batch overlaps the GPU work just queued; the previous
        # batch is collected afterwards, so the GPU always has queued work.
        if b + 1 < n_batches:
            staged = stage((b + 1) % 2)
        if pending is not None:
            collect(pending)
        pending = _InFlight(cur.start, cur.stop, slot, done)
    if pending is not None:
        collect(pending)

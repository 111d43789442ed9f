"""Dask clusters for the heavy steps: clients, an ordered bounded fan-out, a loopback cluster.

Chipping (:func:`clay_core.chips.make_chip_cube`) and embedding
(:func:`clay_core.encoder.embed_chips`) fan out to the Dask cluster whose scheduler address
they are given. This module holds what both share:

- :func:`client_for`: one ``distributed.Client`` per scheduler address and process, reused by
  every call (so the encoder weights scattered to the workers stay there between
  partitions); :func:`hold` / :func:`release` let an owner (a Dagster resource) open it when a
  step starts and close it when the step ends. Clients are created with
  ``set_as_default=False``: xarray/dask computations elsewhere in the process keep running
  locally instead of silently moving to the cluster.
- :func:`fan_out_ordered`: submit N tasks with a bounded number in flight and hand back each
  result with its index, so callers place results in order whichever worker finished first.
  A task whose worker dies is rerun by the scheduler on another worker (its inputs travel
  inside the task, never only on one worker), so a killed worker costs time, not data.
- :class:`LoopbackCluster`: a scheduler and N workers as separate processes on 127.0.0.1
  (``dask scheduler`` / ``dask worker``), for tests, benchmarks and one-machine runs.

``distributed`` is imported lazily: importing ``clay_core`` stays light.
"""

from __future__ import annotations

import atexit
import json
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from clay_core.errors import ConfigError

__all__ = ["check_address", "client_for", "hold", "release", "forget", "close_all", "worker_count",
           "wait_for_workers", "waiter", "fan_out_ordered", "LoopbackCluster", "dask_setup",
           "use_worker_threads",
           "CONNECT_TIMEOUT_S", "WORKER_TIMEOUT_S"]

CONNECT_TIMEOUT_S = 10.0
# How long a fan-out waits for the cluster to have a worker before failing the step.
WORKER_TIMEOUT_S = 60.0
_WHERE = "the Dask scheduler at {address} (DASK_SCHEDULER_ADDRESS)"

_lock = threading.Lock()
_clients: dict[str, Any] = {}
_holds: dict[str, int] = {}


def check_address(address: str) -> str:
    """``address`` stripped, or a ConfigError unless it is HOST:PORT or SCHEME://HOST:PORT."""
    address = str(address).strip()
    host_port = address.split("://", 1)[-1]
    if not address or ":" not in host_port or not host_port.rsplit(":", 1)[1].isdigit():
        raise ConfigError(f"Dask scheduler address {address!r} is not HOST:PORT or tcp://HOST:PORT "
                          "(DASK_SCHEDULER_ADDRESS); give the address `dask scheduler` prints")
    return address


def client_for(address: str) -> Any:
    """The process's client of the scheduler at ``address``, connecting on first use.

    Fails with a ConfigError naming the address when the scheduler cannot be reached.
    """
    address = check_address(address)
    with _lock:
        client = _clients.get(address)
        if client is not None and client.status in ("running", "connecting"):
            return client
        from distributed import Client

        try:
            client = Client(address, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise ConfigError(f"cannot reach {_WHERE.format(address=address)} within {CONNECT_TIMEOUT_S:g} s: "
                              f"{exc}; start the scheduler or unset the variable to run locally") from None
        _clients[address] = client
        return client


def hold(address: str) -> Any:
    """:func:`client_for`, kept open until the matching :func:`release`."""
    client = client_for(address)
    key = check_address(address)
    with _lock:
        _holds[key] = _holds.get(key, 0) + 1
    return client


def release(address: str) -> None:
    """Undo one :func:`hold`; the last one closes the client."""
    address = check_address(address)
    with _lock:
        left = _holds.get(address, 0) - 1
        if left > 0:
            _holds[address] = left
            return
        _holds.pop(address, None)
        client = _clients.pop(address, None)
    if client is not None:
        client.close()


def forget(address: str) -> None:
    """Close this process's client of ``address`` whatever its holds (its cluster is gone)."""
    address = check_address(address)
    with _lock:
        _holds.pop(address, None)
        client = _clients.pop(address, None)
    if client is not None:
        client.close()


def close_all() -> None:
    """Close every client this module opened (registered with ``atexit``)."""
    with _lock:
        clients = list(_clients.values())
        _clients.clear()
        _holds.clear()
    for client in clients:
        client.close()


atexit.register(close_all)


def waiter(client: Any) -> Callable[..., Any]:
    """``distributed.wait`` bound to ``client`` (ours are never the process's default client)."""
    from distributed import wait

    def wait_on(futures: list[Any], return_when: str = "ALL_COMPLETED") -> Any:
        with client.as_current():
            return wait(futures, return_when=return_when)

    return wait_on


def worker_count(client: Any) -> int:
    return len(client.scheduler_info().get("workers", {}))


def wait_for_workers(client: Any, timeout: float = WORKER_TIMEOUT_S) -> int:
    """The number of workers, waiting up to ``timeout`` s for a first one."""
    n = worker_count(client)
    if n:
        return n
    try:
        client.wait_for_workers(1, timeout=timeout)
    except TimeoutError:
        address = client.scheduler.address
        raise ConfigError(f"{_WHERE.format(address=address)} has no workers after {timeout:g} s; "
                          f"start some with `dask worker {address}`") from None
    return max(worker_count(client), 1)


def fan_out_ordered(
    submit: Callable[[int], Any],
    count: int,
    wait: Callable[..., Any],
    *,
    window: int,
) -> Iterator[tuple[int, Any]]:
    """Run ``submit(i)`` for i in ``range(count)`` with at most ``window`` futures in flight;
    yield ``(i, result)`` as tasks finish (callers place results by ``i``).

    ``wait(futures, return_when="FIRST_COMPLETED")`` returns ``(done, not_done)``
    (``distributed.wait`` or ``concurrent.futures.wait``). A failed task raises here; the
    futures still in flight are cancelled.
    """
    pending: dict[Any, int] = {}
    nxt = 0
    try:
        while nxt < count or pending:
            while nxt < count and len(pending) < max(window, 1):
                pending[submit(nxt)] = nxt
                nxt += 1
            finished, _ = wait(list(pending), return_when="FIRST_COMPLETED")
            # In submission order: results of tasks finished together arrive in index order.
            for future in sorted(finished, key=pending.__getitem__):
                i = pending.pop(future)
                yield i, future.result()
    finally:
        for future in pending:
            future.cancel()


_torch_threads: int | None = None


def dask_setup(worker: Any) -> None:
    """Worker preload (``dask worker --preload clay_core.dask_cluster``): torch computes on as
    many threads as the worker runs tasks (:func:`use_worker_threads`), so workers sharing a
    machine never oversubscribe its cores. Without it a worker keeps torch's default: every
    core, or ``OMP_NUM_THREADS`` (a nanny sets 1)."""
    global _torch_threads
    _torch_threads = max(int(worker.state.nthreads), 1)


def use_worker_threads() -> None:
    """In a task: apply :func:`dask_setup`'s thread count to torch in this thread (OpenMP
    keeps the count per thread, so setting it once at worker start misses the task threads)."""
    if _torch_threads is not None:
        import torch

        if torch.get_num_threads() != _torch_threads:
            torch.set_num_threads(_torch_threads)


class LoopbackCluster:
    """A Dask scheduler and ``n_workers`` workers, each its own process, on 127.0.0.1.

    Workers run without a nanny (a killed worker stays dead, as a lost machine would), with
    ``threads`` task threads each and torch on as many threads (:func:`dask_setup`), so N
    workers of one thread never oversubscribe N cores.
    Use as a context manager; :attr:`address` is the scheduler's ``tcp://`` address and
    :attr:`workers` the worker processes.
    """

    def __init__(self, n_workers: int = 2, *, threads: int = 1, memory_limit: str = "2GiB",
                 start_timeout: float = 60.0) -> None:
        self.n_workers, self.threads, self.memory_limit = n_workers, threads, memory_limit
        self.start_timeout = start_timeout
        self._tmp = tempfile.TemporaryDirectory(prefix="clay-dask-")
        self.scheduler: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []
        self.address = ""

    def _spawn(self, module: str, *args: str, log: str) -> subprocess.Popen:
        out = open(Path(self._tmp.name) / log, "wb")  # noqa: SIM115 - kept open for the process's life
        return subprocess.Popen([sys.executable, "-m", f"distributed.cli.{module}", *args], stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)

    def _wait_address(self, sched_file: Path) -> str:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.scheduler is not None and self.scheduler.poll() is not None:
                break
            if sched_file.exists():
                try:
                    return json.loads(sched_file.read_text())["address"]
                except (ValueError, KeyError):
                    pass  # written but not complete yet
            time.sleep(0.1)
        raise RuntimeError(f"the Dask scheduler did not start; its log: {self.log('scheduler')[-2000:]}")

    def log(self, name: str) -> str:
        path = Path(self._tmp.name) / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start_worker(self, name: str) -> subprocess.Popen:
        proc = self._spawn("dask_worker", self.address, "--nthreads", str(self.threads), "--memory-limit",
                           self.memory_limit, "--no-nanny", "--no-dashboard", "--name", name, "--local-directory",
                           self._tmp.name, "--death-timeout", "30", "--preload", __name__,
                           log=name + ".log")  # fmt: skip
        self.workers.append(proc)
        return proc

    def __enter__(self) -> LoopbackCluster:
        sched_file = Path(self._tmp.name) / "scheduler.json"
        self.scheduler = self._spawn("dask_scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                                     "--scheduler-file", str(sched_file), log="scheduler.log")  # fmt: skip
        try:
            self.address = self._wait_address(sched_file)
            for i in range(self.n_workers):
                self.start_worker(f"w{i}")
            from distributed import Client

            with Client(self.address, timeout=self.start_timeout, set_as_default=False) as client:
                client.wait_for_workers(self.n_workers, timeout=self.start_timeout)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the workers, then the scheduler (a worker closing says goodbye to it): SIGTERM,
        and SIGKILL to a process still running 5 s later."""
        if self.address:
            forget(self.address)  # else the client would keep trying to reconnect
        for group in (self.workers, [self.scheduler] if self.scheduler else []):
            for proc in group:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 5
            for proc in group:
                try:
                    proc.wait(timeout=max(deadline - time.monotonic(), 0.01))
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self._tmp.cleanup()

"""Finding the PostgreSQL server that runs on a data directory, from its ``postmaster.pid``.

The embedded server outlives the Python process that started it, so every start first looks
for one already running: the pid file gives the pid, port and socket directory, and the pid is
checked to really be a postgres of that directory (after a crash or a reboot the pid may belong
to another process).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import time
from pathlib import Path
from typing import Iterator
from urllib.parse import quote

import psycopg

__all__ = ["file_lock", "is_postgres", "read_pidfile", "remove_stale_pidfile", "running_url"]

_log = logging.getLogger(__name__)


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (created if missing) for the block."""
    with open(path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def read_pidfile(pgdata: Path) -> dict | None:
    """pid, port, socket_dir, host and status from ``pgdata/postmaster.pid``; None without one."""
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return None
    if not lines or not lines[0].strip().isdigit():
        return None
    lines += [""] * (8 - len(lines))
    return {
        "pid": int(lines[0].strip()),
        "port": int(lines[3].strip()) if lines[3].strip().isdigit() else 5432,
        "socket_dir": lines[4].strip(),
        "host": lines[5].strip(),
        "status": lines[7].strip(),
    }


def is_postgres(pid: int, pgdata: Path) -> bool:
    """Whether ``pid`` is a postgres serving ``pgdata``."""
    import psutil

    try:
        proc = psutil.Process(pid)
        name = proc.name()
        cmd = " ".join(proc.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False
    return "postgres" in name and str(pgdata) in cmd  # postmaster runs as postgres -D <pgdata>


def _uri(info: dict, extra: str) -> str:
    tail = f"&{extra}" if extra else ""
    if info["socket_dir"]:
        host = quote(info["socket_dir"], safe="/")
        return f"postgresql://postgres@/postgres?host={host}&port={info['port']}{tail}"
    host = info["host"] if info["host"] and info["host"] != "*" else "127.0.0.1"
    return f"postgresql://postgres@{host}:{info['port']}/postgres" + (f"?{extra}" if extra else "")


def running_url(pgdata: Path, wait: float = 0.0, *, extra: str = "") -> str | None:
    """URI of the server running on ``pgdata`` if it accepts connections, else None.

    With ``wait`` > 0, waits that long for a server that is starting up (or recovering).
    ``extra``: URI parameters to add (``passfile=...``).
    """
    deadline = time.monotonic() + wait
    while True:
        info = read_pidfile(pgdata)
        if info is None or not is_postgres(info["pid"], pgdata):
            return None
        if info["status"] == "ready":
            url = _uri(info, extra)
            try:
                with psycopg.connect(url, connect_timeout=3) as conn:
                    conn.execute("SELECT 1")
                return url
            except psycopg.Error:
                pass
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.2)


def remove_stale_pidfile(pgdata: Path) -> None:
    """Delete a ``postmaster.pid`` whose pid is not a postgres of ``pgdata``."""
    info = read_pidfile(pgdata)
    if info is not None and not is_postgres(info["pid"], pgdata):
        _log.warning("removing stale %s (pid %s is not a postgres)", pgdata / "postmaster.pid",
                     info["pid"])
        (pgdata / "postmaster.pid").unlink(missing_ok=True)

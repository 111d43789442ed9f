"""Atomic partition directories: every write is a new version, published by one rename.

``<parent>/<name>`` is a symbolic link to a version directory ``.<name>.v<N>`` beside it. A
write goes to a fresh ``.<name>.tmp-<id>`` directory; when the block succeeds that directory
becomes the next version and a new link replaces ``<name>`` with ``os.replace`` (a single
rename on POSIX). A reader resolving ``<name>`` therefore sees the previous version or the new
one, never a missing or half-written partition, and re-running a partition replaces it
instead of adding to it. (Swapping two directories by two renames left a moment in which the
partition did not exist at all.) Link targets are relative, so a copied root keeps working.

Each write of a partition then collects its garbage: versions older than the previous one
that were superseded over a minute ago (the previous one always stays: a reader may have
resolved the link just before the swap), and ``.tmp-*`` directories whose writer is gone. A live writer holds a ``flock`` on its temporary
directory; a crashed one's lock died with its process, so its directory is removed on the next
write. A directory written by the old two-rename scheme (a plain directory at ``<name>``) is
moved to version 0 on its next write.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

__all__ = ["atomic_dir", "collect_garbage", "STALE_AFTER_S"]

#: A temporary directory younger than this is never collected, even unlocked: it covers the
#: moment between its ``mkdir`` and its writer's ``flock``.
STALE_AFTER_S = 60.0


def _version_re(name: str) -> re.Pattern:
    return re.compile(rf"\.{re.escape(name)}\.v(\d+)")


def _versions(parent: Path, name: str) -> dict[int, Path]:
    pat = _version_re(name)
    found = {}
    for entry in os.scandir(parent):
        m = pat.fullmatch(entry.name)
        if m:
            found[int(m.group(1))] = Path(entry.path)
    return found


def _lock(path: Path, blocking: bool) -> int | None:
    """An exclusive ``flock`` on directory ``path``: its fd, or None when another process holds it."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


@contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a fresh temporary directory that replaces ``final`` only if the block succeeds."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    fd = _lock(tmp, blocking=True)
    try:
        try:
            yield tmp
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        current, previous = _publish(tmp, final)
    finally:
        os.close(fd)  # type: ignore[arg-type]
    collect_garbage(final, keep=(current, previous))


def _publish(tmp: Path, final: Path) -> tuple[str, str | None]:
    """Rename ``tmp`` to the next version and point ``final`` at it; (new, previous) version names."""
    parent, name = final.parent, final.name
    previous = os.readlink(final) if final.is_symlink() else None
    if previous is None and final.exists():
        # A partition written before versioning: it becomes version 0 (one non-atomic move, once).
        previous = f".{name}.v0" if not (parent / f".{name}.v0").exists() else f".{name}.legacy-{uuid.uuid4().hex[:8]}"
        os.rename(final, parent / previous)
    n = max(_versions(parent, name), default=0) + 1
    while (parent / f".{name}.v{n}").exists():
        n += 1
    current = f".{name}.v{n}"
    os.rename(tmp, parent / current)
    os.utime(parent / current)  # its mtime is when it superseded the previous version (see collect_garbage)
    link = parent / f".{name}.link-{uuid.uuid4().hex[:8]}"
    os.symlink(current, link)
    os.replace(link, final)
    return current, previous


def collect_garbage(final: Path, keep: tuple[str | None, ...] = ()) -> list[Path]:
    """Remove ``final``'s old versions and its abandoned temporary entries; returns what was removed.

    A version goes when it is not in ``keep``, is older than the newest kept one, and was
    superseded (its successor published) at least :data:`STALE_AFTER_S` ago: a reader that
    resolved the link just before a few quick rewrites still finds its files.
    """
    parent, name = Path(final).parent, Path(final).name
    versions = _versions(parent, name)
    kept = {n for n, p in versions.items() if p.name in keep}
    newest_kept = max(kept, default=0)
    now = time.time()
    order = sorted(versions)
    removed = [versions[n] for n, successor in zip(order, order[1:])
               if n not in kept and n < newest_kept
               and now - versions[successor].stat(follow_symlinks=False).st_mtime >= STALE_AFTER_S]
    debris = re.compile(rf"\.{re.escape(name)}\.(tmp|link|old|legacy)-[0-9a-f]+")
    for entry in os.scandir(parent):
        m = debris.fullmatch(entry.name)
        if not m or entry.name in keep or now - entry.stat(follow_symlinks=False).st_mtime < STALE_AFTER_S:
            continue
        removed.append(Path(entry.path))
    out = []
    for path in removed:
        if path.is_symlink() or not path.is_dir():
            path.unlink(missing_ok=True)
            out.append(path)
            continue
        fd = _lock(path, blocking=False)
        if fd is None:  # a live writer's temporary directory
            continue
        try:
            shutil.rmtree(path, ignore_errors=True)
        finally:
            os.close(fd)
        out.append(path)
    return out

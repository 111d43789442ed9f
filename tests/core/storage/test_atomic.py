"""Partition directories are swapped in atomically (a reader never finds one missing or half
written), old versions and a crashed writer's temporary directory are collected, and stored
locations are relative to the layout root."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from clay_core.storage import Layout, atomic_dir, read_manifest, write_manifest

ROOT = Path(__file__).resolve().parents[3]
FILES = ["a.bin", "b.bin", "manifest.json"]


def _write(final: Path, i: int) -> None:
    with atomic_dir(final) as tmp:
        (tmp / "a.bin").write_bytes(bytes([i % 256]) * 64)
        (tmp / "b.bin").write_bytes(b"b")
        write_manifest(tmp, {"i": i})


def _hidden(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_a_reader_never_finds_the_partition_missing_or_incomplete(tmp_path):
    final = tmp_path / "chips" / "31UFU" / "2024-01-01"
    _write(final, 0)
    stop, misses, reads = threading.Event(), [], [0]

    def reader() -> None:
        while not stop.is_set():
            try:
                names = sorted(os.listdir(final))
                json.loads((final / "manifest.json").read_text())
            except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError) as exc:
                misses.append(repr(exc))
                continue
            if names != FILES:
                misses.append(names)
            reads[0] += 1

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for i in range(1, 301):
        _write(final, i)
    stop.set()
    for t in threads:
        t.join()
    assert reads[0] > 0
    assert misses == [], f"{len(misses)} reads found the partition missing or incomplete, e.g. {misses[:3]}"
    assert read_manifest(final) == {"i": 300}
    assert final.is_symlink() and os.readlink(final) == ".2024-01-01.v301"
    # versions superseded less than a minute ago stay (a slow reader may be in one); no debris
    left = _hidden(final.parent)
    assert len(left) == 301 and all(re.fullmatch(r"\.2024-01-01\.v\d+", n) for n in left)
    # once superseded long enough, the next write keeps only the previous and the new version
    for p in final.parent.iterdir():
        _age(p)
    _write(final, 301)
    assert _hidden(final.parent) == [".2024-01-01.v301", ".2024-01-01.v302"]


def test_a_failed_write_keeps_the_partition_and_leaves_nothing(tmp_path):
    final = tmp_path / "p"
    _write(final, 1)
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_dir(final) as tmp:
            (tmp / "a.bin").write_bytes(b"half")
            raise RuntimeError("boom")
    assert read_manifest(final) == {"i": 1} and (final / "a.bin").read_bytes() == bytes([1]) * 64
    assert _hidden(tmp_path) == [".p.v1"]


def _age(path: Path, seconds: float = 3600) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then), follow_symlinks=False)


def test_a_crashed_writers_temporary_directory_is_collected_by_the_next_write(tmp_path):
    final = tmp_path / "embeddings" / "31UFU" / "2024-01-01"
    _write(final, 1)
    # a writer process killed half-way through its partition
    code = ("import os, sys; from pathlib import Path; from clay_core.storage import atomic_dir\n"
            "with atomic_dir(Path(sys.argv[1])) as tmp:\n"
            "    (tmp / 'a.bin').write_bytes(b'half'); os._exit(9)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(final)], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 9, proc.stderr
    (crashed,) = [p for p in final.parent.iterdir() if ".tmp-" in p.name]
    assert read_manifest(final) == {"i": 1}  # the crash did not touch the partition
    _age(crashed)
    _write(final, 2)
    assert not crashed.exists()
    assert _hidden(final.parent) == [".2024-01-01.v1", ".2024-01-01.v2"]


def test_a_live_writers_temporary_directory_is_kept_however_old(tmp_path):
    final = tmp_path / "p"
    _write(final, 1)
    with atomic_dir(final) as live:
        (live / "a.bin").write_bytes(b"slow")
        _age(live)
        _write(final, 2)  # another write of the same partition collects garbage meanwhile
        assert (live / "a.bin").read_bytes() == b"slow"
        for p in tmp_path.iterdir():
            _age(p)
        write_manifest(live, {"i": 3})
    assert read_manifest(final) == {"i": 3}
    assert _hidden(tmp_path) == [".p.v2", ".p.v3"]


def test_a_partition_written_before_versioning_is_replaced(tmp_path):
    final = tmp_path / "p"
    final.mkdir()
    write_manifest(final, {"i": "legacy"})
    _write(final, 1)
    assert final.is_symlink() and read_manifest(final) == {"i": 1}
    assert _hidden(tmp_path) == [".p.v0", ".p.v1"]  # the legacy directory is the previous version
    for p in tmp_path.iterdir():
        _age(p)
    _write(final, 2)
    assert _hidden(tmp_path) == [".p.v1", ".p.v2"]


def test_windows_lists_partitions_not_their_versions(tmp_path):
    layout = Layout(tmp_path)
    for w in ["2024-01-08", "2024-01-01"]:
        for i in range(2):
            _write(layout.partition("chips", "31UFU", w), i)
    assert layout.windows("chips", "31UFU") == ["2024-01-01", "2024-01-08"]


def test_locations_are_stored_relative_to_the_root_and_resolved_against_the_current_one(tmp_path):
    layout = Layout(tmp_path / "data")
    cube = layout.partition("chips", "31UFU", "2024-01-01") / "cube.zarr"
    assert layout.relative(cube) == "chips/31UFU/2024-01-01/cube.zarr"
    assert layout.relative("s3://bucket/cubes/31UFU/2024-01-01") == "s3://bucket/cubes/31UFU/2024-01-01"
    moved = Layout(tmp_path / "elsewhere")
    assert moved.locate(layout.relative(cube)) == str(tmp_path / "elsewhere" / "chips/31UFU/2024-01-01/cube.zarr")
    # URIs and the absolute paths older manifests hold are used as they are
    assert moved.locate("s3://bucket/k") == "s3://bucket/k"
    assert moved.locate(str(cube)) == str(cube)

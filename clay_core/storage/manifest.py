"""Partition manifests: ``manifest.json``, written last, marks a partition complete."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["MANIFEST", "write_manifest", "read_manifest"]

MANIFEST = "manifest.json"


def write_manifest(directory: Path, payload: dict) -> None:
    """Written last inside a partition directory: its presence marks the partition complete."""
    (Path(directory) / MANIFEST).write_text(json.dumps(payload, indent=2, default=str))


def read_manifest(directory: Path) -> dict:
    """The manifest of a completed partition; FileNotFoundError (saying what to run) otherwise."""
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(
            f"partition {directory} has not been materialized (no {MANIFEST}); materialize the upstream asset first"
        )
    return json.loads(path.read_text())

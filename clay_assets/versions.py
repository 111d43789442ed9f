"""Code versions and data versions: what makes Dagster mark partitions stale.

The logic version of a stage plus the settings that change its output (chip geometry and
filters; encoder preset and weights) form its code version, read from the same ``clay_assets.config``
the resources are built from. Changing ``CLAY_CHIP_SIZE`` therefore marks every
``chip_cubes`` partition (and all downstream) stale in the UI; materializations also record a
data version computed from the parameters actually used, so re-running with unchanged
inputs leaves downstream fresh while a changed chip size makes it stale.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from clay_assets import config

CHIPPER_LOGIC = "chips-1"
ENCODER_LOGIC = "embed-1"
CHANGE_LOGIC = "change-6"


def digest(payload: object, n: int = 12) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:n]


def chips_code_version(cfg: config.ClayConfig | None = None) -> str:
    cfg = cfg or config.current()
    return f"{CHIPPER_LOGIC}-size{cfg.chip_size}"


def embeddings_code_version(cfg: config.ClayConfig | None = None) -> str:
    cfg = cfg or config.current()
    preset, ckpt = cfg.preset, cfg.checkpoint
    # Hashing a 1.25 GB checkpoint at every code-location load is too slow; path, size and
    # mtime identify it here, and each materialization records the real SHA-256.
    if ckpt and Path(ckpt).is_file():
        st = Path(ckpt).stat()
        weights = digest([str(Path(ckpt).resolve()), st.st_size, int(st.st_mtime)], 8)
    else:
        weights = "random"
    return f"{ENCODER_LOGIC}-{preset}-{weights}"

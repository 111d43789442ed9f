"""Per-partition storage: the typed per-stage layout, atomic partition directories, manifests."""

from clay_core.storage.atomic import atomic_dir, collect_garbage
from clay_core.storage.integrity import DamagedDataError, check_distinct, check_finite, nonfinite_rows
from clay_core.storage.layout import CHANGE, CHIPS, EMBEDDINGS, PREDICTIONS, RAW, Layout, is_remote
from clay_core.storage.manifest import MANIFEST, read_manifest, write_manifest

__all__ = [
    "Layout", "RAW", "CHIPS", "EMBEDDINGS", "PREDICTIONS", "CHANGE",
    "atomic_dir", "collect_garbage", "MANIFEST", "read_manifest", "write_manifest", "is_remote",
    "DamagedDataError", "check_finite", "check_distinct", "nonfinite_rows",
]  # fmt: skip

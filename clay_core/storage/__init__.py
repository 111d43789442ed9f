"""Per-partition storage: the typed per-stage layout, atomic partition directories, manifests."""

from clay_core.storage.atomic import atomic_dir
from clay_core.storage.layout import CHANGE, CHIPS, EMBEDDINGS, PREDICTIONS, RAW, Layout
from clay_core.storage.manifest import MANIFEST, read_manifest, write_manifest

__all__ = [
    "Layout", "RAW", "CHIPS", "EMBEDDINGS", "PREDICTIONS", "CHANGE",
    "atomic_dir", "MANIFEST", "read_manifest", "write_manifest",
]  # fmt: skip

"""One PCA basis for all partitions, fitted incrementally and stored as a versioned artifact.

Fitting per shard (as the public pipeline does) makes components incomparable across
shards; here one ``IncrementalPCA`` sees every partition in turn, so memory stays bounded
by one partition, and every projection records which basis version made it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

import numpy as np

if TYPE_CHECKING:  # sklearn is only needed to fit (imported lazily): projecting needs numpy alone
    from sklearn.decomposition import IncrementalPCA

__all__ = ["PcaBasis", "fit_incremental", "load_current", "next_version", "set_current"]


@dataclass
class PcaBasis:
    """A fitted basis: ``transform`` projects [n, dim] embeddings to [n, k] components."""

    version: int
    mean: np.ndarray  # [dim]
    components: np.ndarray  # [k, dim]
    explained_variance_ratio: np.ndarray  # [k]
    n_samples: int

    def transform(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.shape[0] == 0:
            return np.zeros((0, self.components.shape[0]), np.float32)
        return ((x - self.mean) @ self.components.T).astype(np.float32)

    def save(self, directory: Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "basis.npz"
        np.savez(path, version=self.version, mean=self.mean, components=self.components,
                 explained_variance_ratio=self.explained_variance_ratio, n_samples=self.n_samples)
        return path

    @staticmethod
    def load(path: Path) -> "PcaBasis":
        z = np.load(path)
        return PcaBasis(int(z["version"]), z["mean"], z["components"], z["explained_variance_ratio"], int(z["n_samples"]))


def fit_incremental(batches: Iterable[np.ndarray], n_components: int, version: int) -> PcaBasis:
    """Fit on an iterable of [n_i, dim] arrays without holding them all in memory.

    Batches smaller than ``n_components`` are buffered until large enough (IncrementalPCA
    needs at least that many rows per partial fit).
    """
    from sklearn.decomposition import IncrementalPCA

    ipca: IncrementalPCA | None = None
    pending: list[np.ndarray] = []
    total = 0
    k = n_components
    for b in batches:
        b = np.asarray(b, dtype=np.float64)
        if b.shape[0] == 0:
            continue
        pending.append(b)
        if sum(p.shape[0] for p in pending) >= k:
            chunk = np.concatenate(pending)
            pending = []
            if ipca is None:
                k = min(k, chunk.shape[1])
                ipca = IncrementalPCA(n_components=k)
            ipca.partial_fit(chunk)
            total += chunk.shape[0]
    if pending and ipca is not None and sum(p.shape[0] for p in pending) >= ipca.n_components:
        chunk = np.concatenate(pending)
        ipca.partial_fit(chunk)
        total += chunk.shape[0]
    if ipca is None:
        raise ValueError(
            f"PCA needs at least {n_components} embeddings across partitions; materialize more embeddings first"
        )
    return PcaBasis(version, ipca.mean_, ipca.components_, ipca.explained_variance_ratio_, total)


def next_version(root: Path) -> int:
    """One more than the highest ``v<N>`` directory under ``root`` (1 when there is none)."""
    root = Path(root)
    versions = [int(p.name[1:]) for p in root.glob("v*") if p.name[1:].isdigit()] if root.is_dir() else []
    return max(versions, default=0) + 1


def set_current(root: Path, version: int) -> None:
    """Name ``version`` the current basis (atomic rename, so readers never see half a file)."""
    tmp = Path(root) / ".current.json.tmp"
    tmp.write_text(json.dumps({"version": version}))
    tmp.replace(Path(root) / "current.json")


def load_current(root: Path) -> PcaBasis:
    """The basis ``current.json`` names; FileNotFoundError when none was fitted yet."""
    cur = Path(root) / "current.json"
    if not cur.is_file():
        raise FileNotFoundError(f"no PCA basis under {root}: materialize the `pca` asset first")
    v = json.loads(cur.read_text())["version"]
    return PcaBasis.load(Path(root) / f"v{v}" / "basis.npz")

"""One PCA basis over the class-token embeddings of every materialized partition.

Fitted incrementally (one partition in memory at a time) and stored as a new version under
``pca/v<N>``; ``pca/current.json`` names the version ``change_scores`` projects with, and each
score row records it. Metadata shows the explained variance per component.
"""


import io

import numpy as np
from dagster import AssetExecutionContext, DataVersion, MaterializeResult, MetadataValue, asset

from clay_assets.metadata import image_md
from clay_assets.resources import ChangeSettings, ClayHome
from clay_core.encoder.store import read_observations
from clay_core.change.pca import fit_incremental, next_version, set_current
from clay_core.storage.layout import read_manifest


def _explained_variance_png(ratio: np.ndarray) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 2.4), dpi=80)
    ax.bar(np.arange(1, len(ratio) + 1), ratio, color="#4a7")
    ax.plot(np.arange(1, len(ratio) + 1), np.cumsum(ratio), "k.-", lw=1)
    ax.set_xlabel("component")
    ax.set_ylabel("explained variance")
    ax.set_ylim(0, 1)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


@asset(code_version="pca-1", group_name="clay", deps=["embeddings"], description=__doc__)
def pca(context: AssetExecutionContext, home: ClayHome, change_settings: ChangeSettings) -> MaterializeResult:
    layout = home.layout
    root = layout.root / "embeddings"
    parts = []
    for tile_dir in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        for window in layout.windows("embeddings", tile_dir.name):
            d = layout.partition("embeddings", tile_dir.name, window)
            if read_manifest(d)["chips"]:
                parts.append(d / "embeddings.zarr")
    context.log.info(f"fitting PCA over {len(parts)} embedding partitions")

    def batches():
        for i, p in enumerate(parts, 1):
            yield read_observations(p).vectors
            if i % 10 == 0 or i == len(parts):
                context.log.info(f"PCA: read {i}/{len(parts)} partitions")

    n_comp = max(8, change_settings.params().n_components)
    version = next_version(layout.root / "pca")
    basis = fit_incremental(batches(), n_comp, version)
    basis.save(layout.root / "pca" / f"v{version}")
    set_current(layout.root / "pca", version)
    evr = basis.explained_variance_ratio
    return MaterializeResult(
        data_version=DataVersion(f"v{version}"),
        metadata={
            "version": version,
            "n_samples": basis.n_samples,
            "partitions": len(parts),
            "n_components": int(len(evr)),
            "explained_variance_ratio": MetadataValue.json([round(float(v), 4) for v in evr]),
            "explained_variance_plot": image_md(_explained_variance_png(evr), "explained variance"),
        }
    )

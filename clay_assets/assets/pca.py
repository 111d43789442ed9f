"""One PCA basis over the class-token embeddings of every materialized partition.

Fitted incrementally (one partition in memory at a time) and stored as a new version under
``pca/v<N>``; ``pca/current.json`` names the version ``change_scores`` projects with, and each
score row records it. Metadata shows the explained variance per component. A partition whose
embeddings are not finite is skipped (logged, listed in ``skipped_partitions``) instead of
failing the fit.
"""

import io

import numpy as np
from dagster import AssetExecutionContext, DataVersion, MaterializeResult, MetadataValue, asset

from clay_assets.metadata import image_md
from clay_assets.resources import ChangeSettings, ClayHome
from clay_core.change import fit_pca


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
    fitted = fit_pca(home.layout, change_settings.params(), log=context.log.info)
    evr = fitted.basis.explained_variance_ratio
    return MaterializeResult(
        data_version=DataVersion(f"v{fitted.version}"),
        metadata={
            "version": fitted.version,
            "n_samples": fitted.basis.n_samples,
            "partitions": fitted.partitions,
            # partitions left out because their embeddings are not finite (the run log names them)
            "skipped_partitions": MetadataValue.json(list(fitted.skipped)),
            "n_components": int(len(evr)),
            "explained_variance_ratio": MetadataValue.json([round(float(v), 4) for v in evr]),
            "explained_variance_plot": image_md(_explained_variance_png(evr), "explained variance"),
        }
    )

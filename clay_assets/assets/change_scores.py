"""Per chip and date change scores against each chip's own baseline.

For each chip in the window: cosine distance to its baseline mean embedding and to its
previous clear observation, deviation of its first principal components from a robust
harmonic seasonal fit, a robust z-score among the tile's chips on that date, and a change
flag (see ``clay_core.change``). Reads earlier windows of the same tile as history, so
windows are scored oldest first. Metadata carries a change-intensity map of the tile.
"""


import numpy as np
import pandas as pd
from dagster import AssetExecutionContext, BackfillPolicy, MaterializeResult, MetadataValue, asset

from clay_assets.metadata import image_md
from clay_assets.partitions import scene_partitions, split_key
from clay_assets.resources import ChangeSettings, ClayHome
from clay_assets.versions import CHANGE_LOGIC
from clay_core.change import Observations, score_partition
from clay_core.embed_store import read_observations
from clay_core.maps import intensity_map
from clay_core.pca import load_current
from clay_core.store import atomic_dir, read_manifest, write_manifest


@asset(
    partitions_def=scene_partitions,
    code_version=CHANGE_LOGIC,
    group_name="clay",
    deps=["embeddings", "pca"],
    description=__doc__,
    backfill_policy=BackfillPolicy.multi_run(max_partitions_per_run=1),
)
def change_scores(context: AssetExecutionContext, home: ClayHome, change_settings: ChangeSettings) -> MaterializeResult:
    tile, window = split_key(context.partition_key)
    layout = home.layout
    params = change_settings.params()
    man = read_manifest(layout.partition("embeddings", tile, window))
    basis = load_current(layout.root / "pca")
    final = layout.partition("change", tile, window)
    scores = pd.DataFrame()
    with atomic_dir(final) as tmp:
        if man["chips"]:
            current = read_observations(layout.partition("embeddings", tile, window) / "embeddings.zarr")
            history = []
            for w in layout.windows("embeddings", tile):
                if w < window and read_manifest(layout.partition("embeddings", tile, w))["chips"]:
                    history.append(read_observations(layout.partition("embeddings", tile, w) / "embeddings.zarr"))
            hist = Observations.concat(history, current.vectors.shape[1])
            scores = score_partition(current, hist, basis.transform, params)
            pcs = basis.transform(current.vectors)[:, :3]
            for k in range(pcs.shape[1]):
                scores[f"pc{k + 1}"] = pcs[:, k]
            scores["pca_version"] = basis.version
            scores.to_parquet(tmp / "scores.parquet")
            cube_meta = pd.read_parquet(layout.partition("chips", tile, window) / "index.parquet", columns=["chip_id", "row", "col"])
            merged = scores.merge(cube_meta.drop_duplicates("chip_id"), on="chip_id")
            png = intensity_map(merged["row"].to_numpy(), merged["col"].to_numpy(), merged["change_score"].to_numpy(),
                                merged["change_flag"].to_numpy())
            (tmp / "intensity.png").write_bytes(png)
        write_manifest(tmp, {"tile": tile, "window": window, "chips": int(len(scores)), "pca_version": basis.version,
                             "flagged": int(scores["change_flag"].sum()) if len(scores) else 0})
    md = {
        "chips": int(len(scores)),
        "dagster/row_count": int(len(scores)),
        "pca_version": basis.version,
        "flagged": int(scores["change_flag"].sum()) if len(scores) else 0,
        "history_windows": int(scores["n_history"].max()) if len(scores) else 0,
    }
    if len(scores):
        top = scores.sort_values("change_score", ascending=False).head(5)
        md["top_chips"] = MetadataValue.md(top[["chip_id", "cosine_to_baseline", "change_score", "change_flag"]].to_markdown(index=False))
        md["intensity_map"] = image_md(png, f"change intensity {tile} {window}")
        context.log.info(f"{tile} {window}: {md['flagged']} of {len(scores)} chips flagged")
    return MaterializeResult(metadata=md)

"""Per chip and date change scores, and dated change events that persist across windows.

For each chip in the window: cosine distance to its baseline and to its previous clear
observation, deviation of its first principal components from a robust harmonic seasonal fit,
a robust z-score among the tile's chips on that date, and a per-date change flag (see
``clay_core.change.scores``). A CCDC-style detector (``clay_core.change.detector``) also follows each
chip's principal components from window to window: its state is saved with the partition, so
a new window updates it incrementally instead of recomputing history, and confirmed changes
(first date, confirmation date, magnitude) are written to ``events.parquet`` and, by
``vectors``, to ``clay.change_events``. Windows are scored oldest first. Metadata: a
change-intensity map, a GeoJSON grid of chip scores and PC1 time series of the most-changed chips.
"""

import json

import numpy as np
import pandas as pd
from dagster import AssetExecutionContext, BackfillPolicy, MaterializeResult, MetadataValue, asset

from clay_assets.metadata import image_md
from clay_assets.partitions import scene_partitions, split_key
from clay_assets.resources import ChangeSettings, ClayHome
from clay_assets.versions import CHANGE_LOGIC
from clay_core.change.scores import Observations, advance_events, score_partition
from clay_core.encoder.store import read_observations
from clay_core.render import intensity_map, series_plot
from clay_core.change.pca import load_current
from clay_core.storage.layout import atomic_dir, read_manifest, write_manifest

STATE_FILE = "detector_state.json"


def _observations(layout, tile: str, window: str) -> Observations | None:
    d = layout.partition("embeddings", tile, window)
    if not read_manifest(d)["chips"]:
        return None
    return read_observations(d / "embeddings.zarr")


def _previous_states(layout, tile: str, window: str, pca_version: int, detector: dict):
    """(states, last window they include) from the newest earlier change partition that used
    the same PCA basis and detector settings; ({}, None) when none did."""
    for w in reversed([w for w in layout.windows("change", tile) if w < window]):
        path = layout.partition("change", tile, w) / STATE_FILE
        if path.is_file():
            saved = json.loads(path.read_text())
            if saved.get("pca_version") == pca_version and saved.get("detector") == detector:
                return saved["states"], w
            return {}, None
    return {}, None


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
    detector = change_settings.detector_params()
    k = params.n_components
    basis = load_current(layout.root / "pca")
    earlier = [w for w in layout.windows("embeddings", tile) if w < window]
    by_window = {w: _observations(layout, tile, w) for w in earlier}  # read each store once
    history = [o for o in by_window.values() if o is not None]
    current = _observations(layout, tile, window)

    # The detector state of the previous window, brought up to date by replaying any earlier
    # windows scored since (or all of history after a PCA refit).
    states, upto = _previous_states(layout, tile, window, basis.version, detector)
    replayed = 0
    for w in earlier:
        if upto is None or w > upto:
            obs = by_window[w]
            if obs is not None:
                states = advance_events(states, obs, basis.transform(obs.vectors)[:, :k], detector).states
                replayed += 1
    if replayed:
        context.log.info(f"{tile} {window}: replayed {replayed} earlier window(s) into the detector state")

    final = layout.partition("change", tile, window)
    scores, events = pd.DataFrame(), pd.DataFrame()
    png = geojson = None
    with atomic_dir(final) as tmp:
        if current is not None:
            hist = Observations.concat(history, current.vectors.shape[1])
            scores = score_partition(current, hist, basis.transform, params)
            pcs = basis.transform(current.vectors)[:, :k]
            tracked = advance_events(states, current, pcs, detector)
            states, events = tracked.states, tracked.events
            scores = scores.merge(tracked.scores.drop(columns=["datetime"]), on="chip_id", how="left")
            for i in range(min(3, pcs.shape[1])):
                scores[f"pc{i + 1}"] = pcs[:, i]
            scores["pca_version"] = basis.version
            scores.to_parquet(tmp / "scores.parquet")
            events.assign(tile=tile).to_parquet(tmp / "events.parquet")
            import geopandas as gpd

            index = gpd.read_parquet(layout.partition("chips", tile, window) / "index.parquet")
            merged = pd.DataFrame(index[["chip_id", "row", "col"]]).drop_duplicates("chip_id").merge(scores, on="chip_id")
            png = intensity_map(merged["row"].to_numpy(), merged["col"].to_numpy(), merged["change_score"].to_numpy(),
                                merged["change_flag"].to_numpy())
            (tmp / "intensity.png").write_bytes(png)
            geojson = _grid_geojson(index, scores)
            (tmp / "chips.geojson").write_text(geojson)
        (tmp / STATE_FILE).write_text(json.dumps({"pca_version": basis.version, "detector": detector, "states": states}))
        write_manifest(tmp, {"tile": tile, "window": window, "chips": int(len(scores)), "pca_version": basis.version,
                             "flagged": int(scores["change_flag"].sum()) if len(scores) else 0,
                             "events": int(len(events))})
    md = {
        "chips": int(len(scores)),
        "dagster/row_count": int(len(scores)),
        "pca_version": basis.version,
        "flagged": int(scores["change_flag"].sum()) if len(scores) else 0,
        "events_confirmed": int(len(events)),
        "history_windows": len(history),
        "detector_windows_replayed": replayed,
        "grid_geojson": MetadataValue.path(str(final / "chips.geojson")),
    }
    if len(scores):
        top = scores.sort_values("change_score", ascending=False).head(5)
        md["top_chips"] = MetadataValue.md(top[["chip_id", "cosine_to_baseline", "change_score", "change_flag"]].to_markdown(index=False))
        md["intensity_map"] = image_md(png, f"change intensity {tile} {window}")
        md["most_changed_series"] = _series_md(layout, tile, window, top.head(3)["chip_id"].tolist(), history, current,
                                               basis, k, states, scores)
        if len(events):
            md["events"] = MetadataValue.md(events.to_markdown(index=False))
        context.log.info(f"{tile} {window}: {md['flagged']} of {len(scores)} chips flagged, {len(events)} event(s) confirmed")
    return MaterializeResult(metadata=md)


def _grid_geojson(index: pd.DataFrame, scores: pd.DataFrame) -> str:
    """Chip polygons (EPSG:4326) with their scores; opens in QGIS."""
    cols = ["chip_id", "cosine_to_baseline", "cosine_to_previous", "harmonic_deviation", "change_score", "change_flag"]
    gdf = index[["chip_id", "geometry"]].drop_duplicates("chip_id")
    return gdf.merge(scores[cols], on="chip_id").to_json(na="null")


def _series_md(layout, tile, window, chip_ids, history, current, basis, k, states, scores) -> MetadataValue:
    """PC1 over time for the given chips: flagged observations in red, the detector's fitted
    harmonic baseline dashed (once the chip has one)."""
    from clay_core.change.detector import ChangeState, to_decimal_years

    all_obs = Observations.concat([*history, current], current.vectors.shape[1])
    pc1 = basis.transform(all_obs.vectors)[:, 0]
    flagged = set()
    for w in layout.windows("change", tile):
        p = layout.partition("change", tile, w) / "scores.parquet"
        if w < window and p.is_file():
            f = pd.read_parquet(p, columns=["chip_id", "datetime", "change_flag"])
            flagged |= {(c, np.datetime64(t, "ns")) for c, t in zip(f["chip_id"], f["datetime"][f["change_flag"]])}
    flagged |= {(c, np.datetime64(t, "ns")) for c, t, fl in zip(scores["chip_id"], scores["datetime"], scores["change_flag"]) if fl}
    parts = []
    for cid in chip_ids:
        m = all_obs.chip_id == cid
        order = np.argsort(all_obs.datetime[m])
        dates = all_obs.datetime[m][order]
        flags = np.array([(cid, np.datetime64(t, "ns")) in flagged for t in dates])
        fit_values = None
        fit = ChangeState.from_dict(states[cid]).fit if cid in states else None
        if fit is not None:
            fit_values = fit.predict(to_decimal_years(list(pd.to_datetime(dates).to_pydatetime())))
            fit_values = np.asarray(fit_values).reshape(len(dates), -1)[:, 0]
        png = series_plot(dates, pc1[m][order], flags, f"{cid} PC1", dates if fit_values is not None else None, fit_values)
        parts.append(image_md(png, cid).value)
    return MetadataValue.md("\n\n".join(parts))

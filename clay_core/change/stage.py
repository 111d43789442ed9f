"""The change package's stages: fit the PCA basis, and score one tile x window partition.

:func:`fit_pca` fits one basis over every materialized embedding partition and stores it as
a new version. :func:`score_change` scores a partition's observations against the tile's
history (:mod:`clay_core.change.scores`), advances each chip's persistent-change detector
(:mod:`clay_core.change.tracking`), and writes the partition atomically::

    change/<tile>/<window>/scores.parquet     per chip and date scores (+ detector columns, pc1-3)
                          /events.parquet     events confirmed by this window
                          /intensity.png      change-intensity map of the chip grid
                          /pixels.png         share of pixels that changed together, per chip (pixel path)
                          /chips.geojson      chip polygons with their scores
                          /carry.npz          per chip what the next window needs (carry.py)
                          /carry.json         the basis, parameters and window it was made with
                          /pixels.npz, .json  the pixel path's per chip state (pixels.py)
                          /manifest.json

The incremental path reads the current window's embeddings and the previous change
partition's carry, nothing older. Without a usable carry (none yet, another PCA version or
other parameters, or embedding windows scored since) the earlier windows are replayed from
their embeddings with the same per-window step, and the result says how many and why.

The pixel path (:mod:`clay_core.change.pixels`) runs beside it on the window's chip cube:
``scores.parquet`` gains ``pixel_change_fraction``, ``pixel_change_date`` and
``pixels_monitored``, and its state is carried and replayed the same way (from chip cubes).
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from clay_core.change.batch_detector import detector_columns
from clay_core.change.carry import CarryHeader, ChipTable, load_carry, read_header, save_carry
from clay_core.change.params import ChangeParams
from clay_core.change.pca import PcaBasis, fit_incremental, next_version, set_current
from clay_core.change.pixels import PixelParams, PixelStep, advance_pixels, save_pixel_state
from clay_core.change.scores import score_columns, score_window, top_changed, window_order
from clay_core.change.series_plots import append_series, pc1_series_pngs, series_columns
from clay_core.change.tracking import advance_events
from clay_core.render import intensity_map
from clay_core.storage import (CHANGE, CHIPS, EMBEDDINGS, Layout, atomic_dir, check_finite, nonfinite_rows,
                                read_manifest, write_manifest)
from clay_core.types import Observations, PartitionId

__all__ = ["ChangeResult", "PcaFit", "fit_pca", "new_table", "pixel_params", "previous_carry", "read_window",
           "score_change", "step_window"]

MIN_PCA_COMPONENTS = 8  # fitted whatever number of components the scores use
SERIES_PLOTS = 3  # most-changed chips whose PC1 series are drawn
PIXEL_MAP = "pixels.png"  # the share of each chip's pixels with a confirmed break, as a map
PIXEL_MAP_FLAG_PCT = 2.0  # outlined above this share (false alarms on unchanged pixels: ~1 %)
GEOJSON_COLUMNS = ["chip_id", "cosine_to_baseline", "cosine_to_previous", "harmonic_deviation", "change_score",
                   "change_flag"]


def _read_observations(store: Path) -> Observations:
    # Imported here: the encoder package imports torch, which nothing else in this package needs.
    from clay_core.encoder.store import read_observations

    return read_observations(store)


def read_window(layout: Layout, tile: str, window: str) -> Observations | None:
    """A materialized embedding partition's observations; ``None`` when it holds no chips."""
    d = layout.partition(EMBEDDINGS, tile, window)
    if not read_manifest(d)["chips"]:
        return None
    return _read_observations(d / "embeddings.zarr")


# -- PCA ----------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class PcaFit:
    """A newly fitted and stored basis (now the current one)."""

    basis: PcaBasis
    partitions: int  # embedding partitions it was fitted over
    path: Path  # the stored basis.npz
    skipped: tuple[str, ...] = ()  # embedding stores left out: their embeddings are not finite

    @property
    def version(self) -> int:
        return self.basis.version


def embedding_partitions(layout: Layout) -> list[Path]:
    """Embedding stores of every materialized partition with chips, by tile then window."""
    root = layout.root / EMBEDDINGS
    parts = []
    for tile_dir in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        for window in layout.windows(EMBEDDINGS, tile_dir.name):
            d = layout.partition(EMBEDDINGS, tile_dir.name, window)
            if read_manifest(d)["chips"]:
                parts.append(d / "embeddings.zarr")
    return parts


def fit_pca(layout: Layout, params: ChangeParams, log: Callable[[str], None] | None = None) -> PcaFit:
    """Fit a new basis version over every embedding partition (one in memory at a time), store
    it under ``pca/v<N>`` and make it current; ``log`` receives progress lines."""
    log = log or (lambda _msg: None)
    parts = embedding_partitions(layout)
    log(f"fitting PCA over {len(parts)} embedding partitions")
    skipped: list[str] = []

    def batches() -> Iterator:
        for i, p in enumerate(parts, 1):
            vectors = _read_observations(p).vectors
            bad = nonfinite_rows(vectors)
            if len(bad):  # one damaged partition must not stop the basis for every other one
                skipped.append(layout.relative(p))
                log(f"PCA: skipped {p}: {len(bad)} of {len(vectors)} embeddings are not finite; "
                    "re-materialize that embeddings partition")
            else:
                yield vectors
            if i % 10 == 0 or i == len(parts):
                log(f"PCA: read {i}/{len(parts)} partitions")

    root = layout.root / "pca"
    version = next_version(root)
    basis = fit_incremental(batches(), max(MIN_PCA_COMPONENTS, params.n_components), version)
    path = basis.save(root / f"v{version}")
    set_current(root, version)
    return PcaFit(basis, len(parts) - len(skipped), path, tuple(skipped))


# -- change scores ------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ChangeResult:
    """What :func:`score_change` wrote for one partition (empty frames when it had no chips)."""

    partition: PartitionId
    directory: Path  # the change partition
    files: tuple[Path, ...]  # every file written in it
    scores: pd.DataFrame  # one row per observation of the window
    events: pd.DataFrame  # events confirmed by this window
    flagged: int  # observations with change_flag
    pca_version: int
    history_windows: int  # earlier windows with observations
    replayed_windows: int  # earlier windows replayed into the detector state
    intensity_png: bytes | None = None
    geojson: str | None = None
    series_pngs: tuple[tuple[str, bytes], ...] = ()  # (chip id, PC1 series PNG), most changed first
    replay_reason: str | None = None  # why earlier windows were replayed from their embeddings
    pixels: PixelStep | None = None  # the pixel path's window (None: switched off)

    @property
    def geojson_path(self) -> Path:
        return self.directory / "chips.geojson"

    def top_chips(self, n: int = 5) -> pd.DataFrame:
        """The ``n`` most changed observations (highest ``change_score`` first)."""
        return top_changed(self.scores, n)


def params_record(params: ChangeParams) -> dict[str, Any]:
    """``params`` as JSON-safe data: a carry is continued only under equal records."""
    rec = {f.name: getattr(params, f.name) for f in fields(params) if f.name != "detector"}
    return {**rec, "detector": params.detector.to_dict()}


def new_table(dim: int, params: ChangeParams) -> ChipTable:
    """An empty carry: no chips, every column."""
    cols = {**score_columns(dim, params), **detector_columns(params.n_components, params.detector),
            **series_columns()}
    return ChipTable(np.array([], dtype=object), cols)


def step_window(
    tab: ChipTable, current: Observations, basis: PcaBasis, params: ChangeParams
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One window: per-date scores joined with the detector's, and the events it confirmed;
    ``tab`` is advanced past the window. A replay is this, window after window."""
    pcs = basis.transform(current.vectors)[:, : params.n_components]
    scores = score_window(tab, current, pcs, params)
    tracked = advance_events(tab, current, pcs, params.detector)
    # one row per chip observation: a window with two acquisitions has two rows per chip
    scores = scores.merge(tracked.scores, on=["chip_id", "datetime"], how="left")
    for i in range(min(3, pcs.shape[1])):
        scores[f"pc{i + 1}"] = pcs[:, i]
    scores["pca_version"] = basis.version
    order, rank = window_order(current)
    append_series(tab, tab.rows(current.chip_id[order]), rank, current.datetime[order].astype(np.int64),
                  pcs[order, 0], scores["change_flag"].to_numpy(bool)[order])
    return scores, tracked.events


def previous_carry(
    layout: Layout, pid: PartitionId, pca_version: int, params: ChangeParams
) -> tuple[ChipTable | None, CarryHeader | None, str | None]:
    """``(table, header, None)`` from the newest earlier change partition of the tile when its
    carry continues under this basis and these parameters, else ``(None, None, why not)``."""
    earlier = [w for w in layout.windows(CHANGE, pid.tile) if w < pid.window]
    if not earlier:
        return None, None, "no earlier change partition"
    d = layout.partition(CHANGE, pid.tile, earlier[-1])
    try:
        header = read_header(d)
        if header is None:
            return None, None, f"change partition {earlier[-1]} has no carry"
        if not header.continues(pca_version, params_record(params)):
            return None, None, (f"the carry of {earlier[-1]} was made with PCA v{header.pca_version} "
                                f"(now v{pca_version}) or other change parameters")
        return load_carry(d), header, None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:  # damaged: rebuilt from the embeddings
        return None, None, f"the carry of {earlier[-1]} is unreadable ({type(e).__name__}: {e})"


def _write_maps(tmp: Path, layout: Layout, pid: PartitionId, scores: pd.DataFrame) -> tuple[bytes, str]:
    """The change-intensity PNG and the chip-grid GeoJSON (EPSG:4326, opens in QGIS)."""
    import geopandas as gpd

    index = gpd.read_parquet(layout.partition_dir(CHIPS, pid) / "index.parquet")
    merged = pd.DataFrame(index[["chip_id", "row", "col"]]).drop_duplicates("chip_id").merge(scores, on="chip_id")
    chip_m = float(index["x_max"].iloc[0] - index["x_min"].iloc[0]) if {"x_min", "x_max"} <= set(index) and len(index) \
        else None  # native units: metres for the UTM / LAEA grids the sources produce
    png = intensity_map(merged["row"].to_numpy(), merged["col"].to_numpy(), merged["change_score"].to_numpy(),
                        merged["change_flag"].to_numpy(), title=f"change score {pid.tile} {pid.window}", chip_m=chip_m)
    (tmp / "intensity.png").write_bytes(png)
    if "pixel_change_fraction" in merged and merged["pixel_change_fraction"].notna().any():
        share = 100.0 * merged["pixel_change_fraction"].to_numpy(dtype=float)
        (tmp / PIXEL_MAP).write_bytes(intensity_map(
            merged["row"].to_numpy(), merged["col"].to_numpy(), share, np.nan_to_num(share) > PIXEL_MAP_FLAG_PCT,
            vmax=10.0, title=f"changed pixels (one burst) {pid.tile} {pid.window}", chip_m=chip_m,
            value_label="changed together, %",
            flag_label=f"> {PIXEL_MAP_FLAG_PCT:g} % of its pixels", missing_label="history or no view", nan_missing=True))
    grid = index[["chip_id", "geometry"]].drop_duplicates("chip_id")
    geojson = feature_collection(grid.merge(scores[GEOJSON_COLUMNS], on="chip_id"))
    (tmp / "chips.geojson").write_text(geojson)
    return png, geojson


def feature_collection(gdf) -> str:
    """``gdf.to_json(na="null")``'s GeoJSON, with the geometries written by shapely in one
    vectorized call (geopandas builds a Python dict per feature: half a partition's time at
    1,764 chips)."""
    import shapely

    props = gdf.drop(columns="geometry").astype(object)
    props = props.where(props.notna(), None).to_dict(orient="records")
    geoms = shapely.to_geojson(gdf.geometry.values)
    features = ", ".join(f'{{"id": {json.dumps(str(i))}, "type": "Feature", "properties": {json.dumps(p)}, '
                         f'"geometry": {g}}}' for i, p, g in zip(gdf.index, props, geoms))
    crs = json.loads(gdf.iloc[:0].to_json()).get("crs")  # geopandas' rule: named unless EPSG:4326
    tail = f', "crs": {json.dumps(crs)}' if crs else ""
    return f'{{"type": "FeatureCollection", "features": [{features}]{tail}}}'


def _history(
    layout: Layout, pid: PartitionId, basis: PcaBasis, params: ChangeParams, dim: int
) -> tuple[ChipTable, int, int, str | None]:
    """The carry continued up to the window: ``(table, windows with observations, replayed
    windows, why a replay was needed)``. Reads earlier embeddings only to replay them."""
    tab, header, reason = previous_carry(layout, pid, basis.version, params)
    start = header.window if header else None
    todo = [w for w in layout.windows(EMBEDDINGS, pid.tile) if w < pid.window and (start is None or w > start)]
    if header is not None and todo:
        reason = f"embedding window(s) {todo[0]}..{todo[-1]} were not scored since {start}"
    tab = tab if tab is not None else new_table(dim, params)
    with_obs, replayed = header.windows_with_obs if header else 0, 0
    for w in todo:
        obs = read_window(layout, pid.tile, w)
        if obs is None:
            continue
        check_finite(obs.vectors, obs.chip_id, f"change scores of {pid.key}: embeddings of {pid.tile} {w}",
                     f"re-materialize embeddings for {w}|{pid.tile}")
        step_window(tab, obs, basis, params)
        with_obs, replayed = with_obs + 1, replayed + 1
    return tab, with_obs, replayed, reason if replayed else None


def pixel_params(params: ChangeParams, pixels: PixelParams) -> PixelParams:
    """``pixels`` with the detector's ``baseline_end`` as the history end when it sets none."""
    if pixels.history_end is None and params.detector.baseline_end is not None:
        return replace(pixels, history_end=params.detector.baseline_end)
    return pixels


def _with_pixels(scores: pd.DataFrame, step: PixelStep) -> pd.DataFrame:
    px = step.scores.assign(datetime=pd.to_datetime(step.scores["datetime"]).astype("datetime64[ns]"))
    out = scores.merge(px, on=["chip_id", "datetime"], how="left")
    out["pixels_monitored"] = out["pixels_monitored"].fillna(0).astype("int64")
    out["pixel_change_fraction"] = out["pixel_change_fraction"].astype("float64")
    out["pixel_change_date"] = pd.to_datetime(out["pixel_change_date"]).astype("datetime64[ns]")
    return out


def score_change(layout: Layout, pid: PartitionId, basis: PcaBasis, params: ChangeParams, *,
                 pixels: PixelParams | None = PixelParams(), open_cube: Callable[[str, str], Any] | None = None,
                 ) -> ChangeResult:  # fmt: skip
    """Score one tile x window partition and write it atomically (see the module docstring).

    Continues the carry of the newest earlier change partition when it was made with the same
    basis and parameters; otherwise, and for embedding windows not scored since, replays
    earlier windows from their embeddings (``replayed_windows``, ``replay_reason``).
    ``pixels``: the pixel path's settings (None: off); ``open_cube(tile, window)`` opens a
    chip cube for it (default: local cubes).
    """
    current = read_window(layout, pid.tile, pid.window)
    if current is not None:  # NaN would become NaN scores and a poisoned detector state
        check_finite(current.vectors, current.chip_id, f"change scores of {pid.key}: embeddings of {pid.tile} "
                     f"{pid.window}", f"re-materialize embeddings for {pid.window}|{pid.tile}")
    dim = current.vectors.shape[1] if current is not None else len(basis.mean)
    tab, history, replayed, reason = _history(layout, pid, basis, params, dim)
    px = advance_pixels(layout, pid, pixel_params(params, pixels), open_cube) if pixels is not None else None

    final = layout.partition_dir(CHANGE, pid)
    scores, events = pd.DataFrame(), pd.DataFrame()
    png = geojson = None
    with atomic_dir(final) as tmp:
        if current is not None:
            scores, events = step_window(tab, current, basis, params)
            scores = _with_pixels(scores, px) if px is not None else scores
            scores.to_parquet(tmp / "scores.parquet")
            events.assign(tile=pid.tile).to_parquet(tmp / "events.parquet")
            png, geojson = _write_maps(tmp, layout, pid, scores)
        header = CarryHeader(basis.version, params_record(params), pid.window, history + int(current is not None))
        save_carry(tmp, tab, header)
        if px is not None:
            save_pixel_state(tmp, px.table, px.header)
        flagged = int(scores["change_flag"].sum()) if len(scores) else 0
        write_manifest(tmp, {"tile": pid.tile, "window": pid.window, "chips": int(len(scores)),
                             "pca_version": basis.version, "flagged": flagged, "events": int(len(events)),
                             "replayed_windows": replayed, "replay_reason": reason,
                             **(_pixel_manifest(px, scores) if px is not None else {})})
        files = tuple(final / p.relative_to(tmp) for p in sorted(tmp.rglob("*")) if p.is_file())

    series: list[tuple[str, bytes]] = []
    if len(scores):
        series = pc1_series_pngs(tab, top_changed(scores, SERIES_PLOTS)["chip_id"].tolist(), params.detector)
    return ChangeResult(pid, final, files, scores, events, flagged, basis.version, history, replayed,
                        png, geojson, tuple(series), reason, px)


def _pixel_manifest(px: PixelStep, scores: pd.DataFrame) -> dict[str, Any]:
    monitored = int((scores["pixels_monitored"] > 0).sum()) if "pixels_monitored" in scores else 0
    return {"pixel_chips_monitored": monitored, "pixel_replayed_windows": px.replayed_windows,
            "pixel_replay_reason": px.replay_reason, "pixel_skipped": px.skipped}

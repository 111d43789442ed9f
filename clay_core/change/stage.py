"""The change package's stages: fit the PCA basis, and score one tile x window partition.

:func:`fit_pca` fits one basis over every materialized embedding partition and stores it as
a new version. :func:`score_change` scores a partition's observations against the tile's
history (:mod:`clay_core.change.scores`), advances each chip's persistent-change detector
(:mod:`clay_core.change.tracking`), and writes the partition atomically::

    change/<tile>/<window>/scores.parquet     per chip and date scores (+ detector columns, pc1-3)
                          /events.parquet     events confirmed by this window
                          /intensity.png      change-intensity map of the chip grid
                          /chips.geojson      chip polygons with their scores
                          /detector_state.json
                          /manifest.json
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from clay_core.change.params import ChangeParams
from clay_core.change.pca import PcaBasis, fit_incremental, next_version, set_current
from clay_core.change.scores import score_partition, top_changed
from clay_core.change.series_plots import pc1_series_pngs
from clay_core.change.tracking import EventTracking, advance_events, previous_states, replay_windows, save_states
from clay_core.render import intensity_map
from clay_core.storage import (CHANGE, CHIPS, EMBEDDINGS, Layout, atomic_dir, check_finite, nonfinite_rows,
                                read_manifest, write_manifest)
from clay_core.types import Observations, PartitionId

__all__ = ["ChangeResult", "PcaFit", "fit_pca", "read_window", "score_change"]

MIN_PCA_COMPONENTS = 8  # fitted whatever number of components the scores use
SERIES_PLOTS = 3  # most-changed chips whose PC1 series are drawn
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

    @property
    def geojson_path(self) -> Path:
        return self.directory / "chips.geojson"

    def top_chips(self, n: int = 5) -> pd.DataFrame:
        """The ``n`` most changed observations (highest ``change_score`` first)."""
        return top_changed(self.scores, n)


def _score_window(
    current: Observations, history: list[Observations], states: dict[str, dict], basis: PcaBasis,
    params: ChangeParams,
) -> tuple[pd.DataFrame, EventTracking]:
    """Per-date scores joined with the detector's, and the detector advanced by the window."""
    hist = Observations.concat(history, current.vectors.shape[1])
    scores = score_partition(current, hist, basis.transform, params)
    pcs = basis.transform(current.vectors)[:, : params.n_components]
    tracked = advance_events(states, current, pcs, params.detector)
    # one row per chip observation: a window with two acquisitions has two rows per chip
    scores = scores.merge(tracked.scores, on=["chip_id", "datetime"], how="left")
    for i in range(min(3, pcs.shape[1])):
        scores[f"pc{i + 1}"] = pcs[:, i]
    scores["pca_version"] = basis.version
    return scores, tracked


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
    grid = index[["chip_id", "geometry"]].drop_duplicates("chip_id")
    geojson = grid.merge(scores[GEOJSON_COLUMNS], on="chip_id").to_json(na="null")
    (tmp / "chips.geojson").write_text(geojson)
    return png, geojson


def score_change(layout: Layout, pid: PartitionId, basis: PcaBasis, params: ChangeParams) -> ChangeResult:
    """Score one tile x window partition and write it atomically (see the module docstring).

    The detector starts from the state saved with the newest earlier change partition made
    with the same basis and detector parameters, and replays the earlier windows scored
    since (all of history after a PCA refit or a parameter change).
    """
    earlier = [w for w in layout.windows(EMBEDDINGS, pid.tile) if w < pid.window]
    by_window = {w: read_window(layout, pid.tile, w) for w in earlier}  # read each store once
    history = [o for o in by_window.values() if o is not None]
    current = read_window(layout, pid.tile, pid.window)
    for w, obs in [*by_window.items(), (pid.window, current)]:
        if obs is not None:  # NaN would become NaN scores and a poisoned detector state
            check_finite(obs.vectors, obs.chip_id, f"change scores of {pid.key}: embeddings of {pid.tile} {w}",
                         f"re-materialize embeddings for {w}|{pid.tile}")
    states, upto = previous_states(layout, pid, basis.version, params.detector)
    states, replayed = replay_windows(states, by_window, upto, basis, params)

    final = layout.partition_dir(CHANGE, pid)
    scores, events = pd.DataFrame(), pd.DataFrame()
    png = geojson = None
    with atomic_dir(final) as tmp:
        if current is not None:
            scores, tracked = _score_window(current, history, states, basis, params)
            states, events = tracked.states, tracked.events
            scores.to_parquet(tmp / "scores.parquet")
            events.assign(tile=pid.tile).to_parquet(tmp / "events.parquet")
            png, geojson = _write_maps(tmp, layout, pid, scores)
        save_states(tmp, basis.version, params.detector, states)
        flagged = int(scores["change_flag"].sum()) if len(scores) else 0
        write_manifest(tmp, {"tile": pid.tile, "window": pid.window, "chips": int(len(scores)),
                             "pca_version": basis.version, "flagged": flagged, "events": int(len(events))})
        files = tuple(final / p.relative_to(tmp) for p in sorted(tmp.rglob("*")) if p.is_file())

    series: list[tuple[str, bytes]] = []
    if len(scores):
        top = top_changed(scores, SERIES_PLOTS)["chip_id"].tolist()
        everything = Observations.concat([*history, current], current.vectors.shape[1])
        series = pc1_series_pngs(layout, pid, top, everything, basis, states, scores)
    return ChangeResult(pid, final, files, scores, events, flagged, basis.version, len(history), replayed,
                        png, geojson, tuple(series))

"""Per chip and date change scores for one tile x window partition.

For each chip observed in the window, its earlier clear observations (same chip id, earlier
windows) form a time series. Scores:

- ``cosine_to_baseline``: cosine distance from the chip's baseline embedding, the element-wise
  median of its first ``baseline_obs`` clear observations (a median, because one partly
  cloudy chip that passed the cloud filter would drag a mean far off);
- ``cosine_to_previous``: cosine distance from its previous clear observation;
- ``harmonic_deviation``: RMS over the first ``n_components`` principal components of the
  residual from a robust harmonic seasonal fit on the baseline, in units of the baseline
  residual scale (see ``clay_core.change.harmonic``);
- ``change_score``: robust z-score of ``cosine_to_baseline`` among the tile's chips on the same
  date, ``(d - median) / scale`` with ``scale = max(1.4826 * MAD, min_relative_scale * median)``:
  illumination and phenology shift every chip together, a clearing shifts a few; the
  relative floor keeps a near-uniform tile (tiny MAD) from turning small seasonal
  differences between land covers into huge scores;
- ``change_flag``: ``change_score > z_threshold`` and the distance is at least
  ``min_distance_factor`` times the typical scatter of baseline observations.

``clay_core.change.detector.detect_changes`` turns a chip's series into dated events with
persistence; this module gives the per-observation scores the vector table carries.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from clay_core.change.distances import cosine_distance
from clay_core.change.harmonic import fit_harmonic
from clay_core.change.params import ChangeParams
from clay_core.types import Observations

__all__ = ["COLUMNS", "score_partition", "top_changed"]


def _years(t: np.ndarray) -> np.ndarray:
    """Years since 1970 in Julian years (365.25 d): the time axis of the per-date harmonic fit."""
    return (t.astype("datetime64[s]").astype(np.int64) / (365.25 * 86400.0)).astype(np.float64)


COLUMNS = [
    "chip_id", "datetime", "n_history", "in_baseline", "cosine_to_baseline", "cosine_to_previous",
    "harmonic_deviation", "change_score", "change_flag",
]


def score_partition(
    current: Observations,
    history: Observations,
    project: Callable[[np.ndarray], np.ndarray],
    params: ChangeParams,
) -> pd.DataFrame:
    """Scores for every observation in ``current`` given the earlier ``history``.

    ``project`` maps [n, dim] embeddings to principal components ([n, k]).
    """
    rows = []
    all_obs = Observations.concat([history, current], current.vectors.shape[1])
    order = np.argsort(all_obs.datetime, kind="stable")
    by_chip: dict[str, list[int]] = {}
    for i in order:
        by_chip.setdefault(str(all_obs.chip_id[i]), []).append(int(i))
    pcs_all = project(all_obs.vectors) if len(all_obs.chip_id) else np.zeros((0, params.n_components))
    pcs_all = pcs_all[:, : params.n_components]
    offset = len(history.chip_id)
    scatter = []
    for j in range(len(current.chip_id)):
        gi = offset + j
        series = by_chip[str(current.chip_id[j])]
        pos = series.index(gi)
        base_idx = series[: params.baseline_obs]
        base_mean = np.median(all_obs.vectors[base_idx], axis=0)
        d_base = float(cosine_distance(all_obs.vectors[gi], base_mean))
        d_prev = float(cosine_distance(all_obs.vectors[gi], all_obs.vectors[series[pos - 1]])) if pos > 0 else np.nan
        if len(base_idx) > 1:
            scatter.append(float(np.median(cosine_distance(all_obs.vectors[base_idx], base_mean))))
        in_base = pos < params.baseline_obs
        t = _years(all_obs.datetime[base_idx])
        fit = fit_harmonic(t, pcs_all[base_idx], n_harmonics=params.n_harmonics)
        resid = (pcs_all[gi] - fit.predict(_years(all_obs.datetime[[gi]]))[0]) / np.maximum(fit.rmse, 1e-6)
        rows.append(
            (str(current.chip_id[j]), current.datetime[j], pos, in_base, d_base, d_prev,
             float(np.sqrt(np.mean(resid**2))))
        )
    df = pd.DataFrame(rows, columns=COLUMNS[:7])
    df["change_score"] = 0.0
    df["change_flag"] = False
    post = ~df["in_baseline"].to_numpy(bool)
    if post.sum() >= 3:
        d = df.loc[post, "cosine_to_baseline"].to_numpy()
        med = np.median(d)
        mad = 1.4826 * np.median(np.abs(d - med))
        floor = params.min_distance_factor * (np.median(scatter) if scatter else 0.0)
        z = (d - med) / max(mad, params.min_relative_scale * med, 1e-9)
        df.loc[post, "change_score"] = z
        df.loc[post, "change_flag"] = (z > params.z_threshold) & (d > floor)
    return df[COLUMNS]


def top_changed(scores: pd.DataFrame, n: int = 5) -> pd.DataFrame:
    """The ``n`` rows with the highest ``change_score``, highest first."""
    return scores.sort_values("change_score", ascending=False).head(n)

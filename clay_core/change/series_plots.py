"""PC1 time series of single chips, as PNGs: what a person checks a flagged chip against.

Each plot shows the chip's first principal component over every window so far, the
observations flagged in any window (earlier change partitions and the current scores) in
red, and the detector's fitted harmonic baseline dashed once the chip has one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from clay_core.change.pca import PcaBasis
from clay_core.change.state import ChangeState
from clay_core.change.timeutil import to_decimal_years
from clay_core.render import series_plot
from clay_core.storage import CHANGE, Layout
from clay_core.types import Observations, PartitionId

__all__ = ["pc1_series_pngs"]


def _flagged(layout: Layout, pid: PartitionId, scores: pd.DataFrame) -> set[tuple[str, np.datetime64]]:
    """(chip id, date) of every flagged observation in earlier change partitions and ``scores``."""
    flagged = set()
    for w in layout.windows(CHANGE, pid.tile):
        p = layout.partition(CHANGE, pid.tile, w) / "scores.parquet"
        if w < pid.window and p.is_file():
            f = pd.read_parquet(p, columns=["chip_id", "datetime", "change_flag"])
            flagged |= {(c, np.datetime64(t, "ns")) for c, t in zip(f["chip_id"], f["datetime"][f["change_flag"]])}
    flagged |= {(c, np.datetime64(t, "ns")) for c, t, fl in zip(scores["chip_id"], scores["datetime"], scores["change_flag"])
                if fl}
    return flagged


def _baseline(state: dict | None, dates: np.ndarray) -> np.ndarray | None:
    """The detector's fitted baseline of the first feature at ``dates``, if it has one."""
    fit = ChangeState.from_dict(state).fit if state is not None else None
    if fit is None:
        return None
    values = fit.predict(to_decimal_years(list(pd.to_datetime(dates).to_pydatetime())))
    return np.asarray(values).reshape(len(dates), -1)[:, 0]


def pc1_series_pngs(
    layout: Layout,
    pid: PartitionId,
    chip_ids: Sequence[str],
    observations: Observations,
    basis: PcaBasis,
    states: dict[str, dict],
    scores: pd.DataFrame,
) -> list[tuple[str, bytes]]:
    """``(chip id, PNG)`` for each of ``chip_ids``; ``observations`` hold the tile's history up
    to and including the window, ``states`` the detector states after it."""
    pc1 = basis.transform(observations.vectors)[:, 0]
    flagged = _flagged(layout, pid, scores)
    out = []
    for cid in chip_ids:
        m = observations.chip_id == cid
        order = np.argsort(observations.datetime[m])
        dates = observations.datetime[m][order]
        flags = np.array([(cid, np.datetime64(t, "ns")) in flagged for t in dates])
        fit_values = _baseline(states.get(cid), dates)
        png = series_plot(dates, pc1[m][order], flags, f"{cid} PC1", dates if fit_values is not None else None,
                          fit_values)
        out.append((cid, png))
    return out

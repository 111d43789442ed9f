"""PC1 time series of single chips, as PNGs: what a person checks a flagged chip against.

Each plot shows the chip's first principal component over its last ``SERIES_KEEP``
observations, the observations flagged in their window in red, and the detector's fitted
harmonic baseline dashed once the chip has one. The series is carried per chip (``ser_``
columns of the change partition's :class:`~clay_core.change.carry.ChipTable`), so drawing it
reads no earlier partition.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from clay_core.change.batch_detector import state_of
from clay_core.change.carry import ChipTable
from clay_core.change.params import DetectorParams
from clay_core.change.timeutil import to_decimal_years
from clay_core.render import series_plot

__all__ = ["SERIES_KEEP", "append_series", "pc1_series_pngs", "series_columns"]

SERIES_KEEP = 156  # observations per chip drawn: three years of weekly windows
_SER = ["ser_ns", "ser_pc1", "ser_flag"]


def series_columns() -> dict[str, np.ndarray]:
    return {"ser_n": np.zeros(0, np.int64), "ser_ns": np.zeros((0, 0), np.int64),
            "ser_pc1": np.zeros((0, 0), np.float32), "ser_flag": np.zeros((0, 0), bool)}


def append_series(tab: ChipTable, rows: np.ndarray, rank: np.ndarray, ns: np.ndarray, pc1: np.ndarray,
                  flag: np.ndarray) -> None:
    """Append the window's observations (oldest first; ``rank``: position among the chip's
    observations in the window), dropping a chip's oldest beyond ``SERIES_KEEP``."""
    for r in range(int(rank.max()) + 1 if len(rank) else 0):
        sel = np.flatnonzero(rank == r)
        g = rows[sel]
        full = g[tab["ser_n"][g] >= SERIES_KEEP]
        for k in _SER:
            tab[k][full, :-1] = tab[k][full, 1:]
        tab["ser_n"][full] -= 1
        pos = tab["ser_n"][g]
        tab.widen(_SER, int(pos.max()) + 1)
        tab["ser_ns"][g, pos], tab["ser_pc1"][g, pos], tab["ser_flag"][g, pos] = ns[sel], pc1[sel], flag[sel]
        tab["ser_n"][g] = pos + 1


def pc1_series_pngs(tab: ChipTable, chip_ids: Sequence[str], detector: DetectorParams) -> list[tuple[str, bytes]]:
    """``(chip id, PNG)`` for each of ``chip_ids``, from the carried series and detector state."""
    out = []
    for cid in chip_ids:
        i = int(np.searchsorted(tab.chip_id.astype(str), cid))
        n = int(tab["ser_n"][i])
        dates = tab["ser_ns"][i, :n].astype("datetime64[ns]")
        fit = state_of(tab, i, detector).fit
        fit_values = None
        if fit is not None:
            values = fit.predict(to_decimal_years(list(dates.astype("datetime64[us]").tolist())))
            fit_values = np.asarray(values).reshape(n, -1)[:, 0]
        png = series_plot(dates, tab["ser_pc1"][i, :n], tab["ser_flag"][i, :n], f"{cid} PC1",
                          dates if fit_values is not None else None, fit_values)
        out.append((cid, png))
    return out

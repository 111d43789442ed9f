"""Score change flags against planted (known) changes: the demo's and the tests' yardstick."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

import pandas as pd

from clay_core.chips import chip_id

__all__ = ["DetectionReport", "score_detections", "truth_chips"]


@dataclass
class DetectionReport:
    """Chip-level precision, recall and delay of the first flags against the planted truth."""

    truth_chips: int
    flagged_chips: int
    true_positives: int
    precision: float
    recall: float
    f1: float
    mean_delay_days: float
    rows: list[dict] = field(default_factory=list)

    def table(self) -> str:
        lines = [f"{'chip_id':<16} {'planted':<11} {'first flag':<11} {'verdict'}"]
        for r in self.rows:
            lines.append(f"{r['chip_id']:<16} {r['planted'] or '-':<11} {r['first_flag'] or '-':<11} {r['verdict']}")
        lines.append(
            f"truth chips {self.truth_chips}, flagged chips {self.flagged_chips}, true positives {self.true_positives}: "
            f"precision {self.precision:.2f}, recall {self.recall:.2f}, F1 {self.f1:.2f}, mean delay {self.mean_delay_days:.1f} d"
        )
        return "\n".join(lines)


def truth_chips(planted, chip_size: int, grid_rows: int, grid_cols: int, min_cover: float = 0.5) -> dict[str, object]:
    """chip id -> planted date for chips at least ``min_cover`` covered by a planted change."""
    out = {}
    for ch in planted:
        for r in range(grid_rows):
            for c in range(grid_cols):
                if ch.chip_fraction(r, c, chip_size) >= min_cover:
                    cid = chip_id(ch.tile, r, c)
                    out[cid] = min(out.get(cid, ch.acquired), ch.acquired)
    return out


def score_detections(scores: pd.DataFrame, truth: dict[str, object], max_delay_days: int = 14) -> DetectionReport:
    """``scores``: chip_id, datetime, change_flag for every scored observation.

    A truth chip is detected when its first flag falls on or after the planted date and within
    ``max_delay_days`` (one missed cloudy revisit); a flag on any other chip, or before the
    planted date, counts against precision.
    """
    flagged = scores[scores["change_flag"].astype(bool)]
    first = flagged.groupby("chip_id")["datetime"].min()
    rows, tp, delays = [], 0, []
    for cid in sorted(set(truth) | set(first.index)):
        planted = truth.get(cid)
        ff = first.get(cid)
        ff_date = pd.Timestamp(ff).date() if ff is not None else None
        if planted is not None and ff_date is not None and planted <= ff_date <= planted + timedelta(days=max_delay_days):
            verdict = "detected"
            tp += 1
            delays.append((ff_date - planted).days)
        elif planted is not None:
            verdict = "missed" if ff_date is None else "mistimed"
        else:
            verdict = "false alarm"
        rows.append({"chip_id": cid, "planted": str(planted) if planted else None,
                     "first_flag": str(ff_date) if ff_date else None, "verdict": verdict})
    n_truth, n_flag = len(truth), len(first)
    precision = tp / n_flag if n_flag else 0.0
    recall = tp / n_truth if n_truth else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return DetectionReport(n_truth, n_flag, tp, precision, recall, f1,
                           sum(delays) / len(delays) if delays else 0.0, rows)

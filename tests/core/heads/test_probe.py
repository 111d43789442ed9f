"""The linear probe: held-out metrics grouped by chip, a version that follows the labels, refusals."""

from __future__ import annotations

import numpy as np
import pytest

from clay_core.errors import ConfigError
from clay_core.heads import fit_probe


def _labelled(n_chips: int, per_chip: int = 3, seed: int = 0):
    """Chips of two kinds in 16 dims (positives shifted along one axis), a few dates each."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(n_chips) % 3 == 0, per_chip)
    groups = np.repeat([f"T_r000c{i:03d}" for i in range(n_chips)], per_chip)
    emb = rng.normal(size=(len(y), 16)) + 5.0
    emb[y, 0] += 6.0
    return emb.astype(np.float32), y, groups


def test_probe_scores_and_held_out_metrics():
    emb, y, groups = _labelled(12)
    probe = fit_probe("s", emb, y, groups)
    assert (probe.positives, probe.negatives, probe.folds) == (12, 24, 4)  # 4 positive chips
    assert probe.auc == 1.0 and probe.precision == 1.0 and probe.recall == 1.0
    test, ty, _ = _labelled(6, seed=1)
    s = probe.score(test)
    assert s.shape == (18,) and ((s >= 0.5) == ty).all()
    # deterministic: the same labels give the same version and scores; other labels another
    again = fit_probe("s", emb, y, groups)
    assert again.model_version == probe.model_version and np.array_equal(again.score(test), s)
    flipped = y.copy()
    flipped[0] = ~flipped[0]
    assert fit_probe("s", emb, flipped, groups).model_version != probe.model_version


def test_too_few_chips_for_held_out_metrics_and_one_class_refused():
    emb, y, groups = _labelled(4)  # 2 positive chips, but only chips 0 and 3 positive
    few = fit_probe("s", emb[:6], y[:6], groups[:6])  # chip 0 positive, chip 1 negative
    assert few.folds == 0 and few.auc is None and few.precision is None
    with pytest.raises(ConfigError, match="label set 's' has 0 positive and 6 negative labels"):
        fit_probe("s", emb[3:9], y[3:9], groups[3:9])

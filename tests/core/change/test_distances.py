"""Tests of clay_core.change.distances: cosine distances to the baseline and the previous observation."""

from __future__ import annotations

import numpy as np
import pytest

from clay_core.change.distances import cosine_distance, distances_to_baseline, distances_to_previous


def test_cosine_distance_helpers():
    assert cosine_distance([1, 0], [0, 1]) == pytest.approx(1.0)
    assert cosine_distance([1, 0], [2, 0]) == pytest.approx(0.0)
    assert cosine_distance([1, 0], [-1, 0]) == pytest.approx(2.0)
    assert np.isnan(cosine_distance([0, 0], [1, 0]))
    np.testing.assert_allclose(cosine_distance(np.eye(3), [1, 0, 0]), [0, 1, 1])

    V = np.array([[1, 0], [2, 0], [0, 1], [5, 5], [0, 3]], dtype=float)
    clear = np.array([True, True, True, False, True])
    prev = distances_to_previous(V, clear)
    assert np.isnan(prev[0]) and np.isnan(prev[3])
    np.testing.assert_allclose(prev[[1, 2, 4]], [0.0, 1.0, 0.0], atol=1e-12)  # row 4 vs row 2
    base = distances_to_baseline(V, [True, True, False, False, False], clear)
    np.testing.assert_allclose(base[[0, 1, 2, 4]], [0.0, 0.0, 1.0, 1.0], atol=1e-12)
    assert np.isnan(base[3])
    assert np.isnan(distances_to_baseline(V, np.zeros(5, bool))).all()

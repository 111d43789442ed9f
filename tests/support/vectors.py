"""Ground truth for the similarity-search tests: exact cosine search in numpy (float64)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def exact_search(frame: pd.DataFrame, emb: np.ndarray, q: np.ndarray, k: int,
                 min_similarity: float = 0.0, exclude=(), mask=None) -> pd.DataFrame:
    """The k most similar rows of ``frame``/``emb`` to ``q``; ties by chip_id then acquired."""
    e = emb.astype(np.float64)
    q = np.asarray(q, np.float64)
    sims = e @ q / (np.linalg.norm(e, axis=1) * np.linalg.norm(q))
    ok = ~frame["chip_id"].isin(list(exclude)).to_numpy() & (sims >= min_similarity)
    if mask is not None:
        ok &= np.asarray(mask)
    out = frame.loc[ok, ["chip_id", "tile", "acquired"]].copy()
    out["similarity"] = sims[ok]
    out = out.sort_values(["similarity", "chip_id", "acquired"], ascending=[False, True, True])
    return out.head(k).reset_index(drop=True)


def assert_same_result(got: pd.DataFrame, want: pd.DataFrame, atol: float = 1e-5) -> None:
    """A search function's result equals the exact one: same rows, order and similarities."""
    assert list(got.columns) == ["chip_id", "tile", "acquired", "similarity"]
    assert len(got) == len(want), (got, want)
    assert got["chip_id"].tolist() == want["chip_id"].tolist(), (got, want)
    assert list(got["acquired"]) == list(want["acquired"]), (got, want)
    np.testing.assert_allclose(got["similarity"].to_numpy(float),
                               want["similarity"].to_numpy(float), atol=atol)

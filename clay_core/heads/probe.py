"""Linear probe: a logistic regression on labelled chip observations, scoring every embedding.

For each label set in ``clay.labels`` the probe is fitted on the embeddings of its labelled
observations (scikit-learn: unit-normalise, standardise, ``LogisticRegression``, L2, C = 1,
no class weights), then scores the observations of one tile x week partition; the scores
(P(positive)) replace that partition's rows of ``clay.detections``.

- **Fitted at run time, deterministically.** The fit takes milliseconds for hundreds of labels,
  so each partition's run fits again instead of reading a stored model.  ``model_version`` is a
  digest of what the fit saw (the labels, their embeddings, the probe's parameters and the
  scikit-learn version): partitions scored from the same labels carry the same version, and a
  partition scored before the labels changed shows an older one.
- **Held-out metrics.** Precision, recall (at ``threshold``) and ROC AUC come from
  out-of-fold predictions of a grouped, stratified k-fold (``StratifiedGroupKFold``, groups =
  chips, so a chip's other dates never sit on both sides).  They need >= 2 labelled chips per
  class; with fewer they are ``None``.  The scores come from the model refitted on every label.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

from clay_core.errors import ConfigError
from clay_core.storage import EMBEDDINGS, Layout, read_manifest
from clay_core.types import PartitionId

__all__ = ["PROBE_PARAMS", "DetectionsResult", "Probe", "fit_probe", "score_detections"]

# No class weighting: the scores keep the labels' own prior.  Balanced weights (a 50 % prior)
# lift land cover the labels never showed over the threshold: trained on 4 weeks of the planted
# world's tile 31UFU, they flagged the 3 bare-soil chips of tile 32UNB as clearings (precision
# 0.62 at 0.5 instead of 1.0; AUC 1.0 either way).
PROBE_PARAMS = {"C": 1.0, "class_weight": None, "max_iter": 2000, "threshold": 0.5, "max_folds": 5}


@dataclass
class Probe:
    """A fitted probe of one label set and its held-out metrics (``None`` when too few labels)."""

    label_set: str
    model_version: str
    positives: int
    negatives: int
    model: object = field(repr=False)
    precision: float | None = None
    recall: float | None = None
    auc: float | None = None
    folds: int = 0

    def score(self, emb: np.ndarray) -> np.ndarray:
        """P(positive) per row of ``emb`` (float64 in [0, 1])."""
        if len(emb) == 0:
            return np.zeros(0)
        return self.model.predict_proba(np.asarray(emb, np.float64))[:, 1]

    def metrics(self) -> dict:
        return {"positives": self.positives, "negatives": self.negatives, "model_version": self.model_version,
                "heldout_folds": self.folds, "precision": self.precision, "recall": self.recall, "auc": self.auc}


def _pipeline():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import Normalizer, StandardScaler

    # unit vectors first: the geometry the cosine search uses; then per-dimension scaling
    return make_pipeline(Normalizer(), StandardScaler(),
                         LogisticRegression(C=PROBE_PARAMS["C"], class_weight=PROBE_PARAMS["class_weight"],
                                            max_iter=PROBE_PARAMS["max_iter"]))


def _version(label_set: str, emb: np.ndarray, y: np.ndarray, groups: np.ndarray) -> str:
    import sklearn

    h = hashlib.sha256()
    h.update(f"{label_set}|{sorted(PROBE_PARAMS.items())}|sklearn {sklearn.__version__}".encode())
    h.update(np.ascontiguousarray(emb, np.float32).tobytes())
    h.update(y.astype(np.uint8).tobytes())
    h.update("\n".join(map(str, groups)).encode())
    return "probe-" + h.hexdigest()[:12]


def fit_probe(label_set: str, emb: np.ndarray, labels: np.ndarray, groups: np.ndarray) -> Probe:
    """Fit the probe on ``emb`` [n, dim] with boolean ``labels``; ``groups`` (chip ids) keep a
    chip's observations in one fold of the held-out evaluation."""
    from sklearn.metrics import precision_score, recall_score, roc_auc_score
    from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict

    x = np.asarray(emb, np.float64)
    y = np.asarray(labels, bool)
    groups = np.asarray(groups)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ConfigError(f"label set {label_set!r} has {n_pos} positive and {n_neg} negative labels in clay.chips: "
                          "the probe needs both (clay-assets label add --set NAME --positive ID --negative ID)")
    probe = Probe(label_set, _version(label_set, x, y, groups), n_pos, n_neg, _pipeline().fit(x, y))
    folds = min(PROBE_PARAMS["max_folds"], len(set(groups[y])), len(set(groups[~y])))
    if folds >= 2:
        p = cross_val_predict(_pipeline(), x, y, groups=groups, cv=StratifiedGroupKFold(folds),
                              method="predict_proba")[:, 1]
        hit = p >= PROBE_PARAMS["threshold"]
        probe.precision = round(float(precision_score(y, hit, zero_division=0)), 4)
        probe.recall = round(float(recall_score(y, hit, zero_division=0)), 4)
        probe.auc = round(float(roc_auc_score(y, p)), 4)
        probe.folds = folds
    return probe


@dataclass
class DetectionsResult:
    """What scoring one partition did: rows stored, per label set its probe and detections."""

    partition: PartitionId
    observations: int
    rows: int
    probes: list[Probe]
    detected: dict[str, int]  # label set -> observations with score >= threshold
    skipped: dict[str, str]  # label set -> why it was not scored


def score_detections(layout: Layout, pid: PartitionId, open_store: Callable[[int], object]) -> DetectionsResult:
    """Score partition ``pid``'s observations in ``clay.chips`` with a probe per label set of
    ``clay.labels`` and replace its ``clay.detections`` rows (all label sets) in one
    transaction.  ``open_store(dim)`` opens the store (the dimension comes from the partition's
    embeddings manifest, as for ``load_vectors``).  A label set with positives or negatives
    missing is skipped (named in ``skipped``), not an error."""
    store = open_store(int(read_manifest(layout.partition_dir(EMBEDDINGS, pid))["dim"]))
    try:
        frame, emb = store.partition_embeddings(pid.key)
        probes, detected, skipped, out = [], {}, {}, []
        for name in store.label_set_names():  # a set only left in clay.detections loses its rows here
            lab, lemb = store.labelled_embeddings(name)
            y = lab["label"].to_numpy(bool)
            if not y.any() or y.all():
                skipped[name] = f"{int(y.sum())} positive, {int((~y).sum())} negative labels in clay.chips"
                continue
            probe = fit_probe(name, lemb, y, lab["chip_id"].to_numpy())
            scores = probe.score(emb)
            probes.append(probe)
            detected[name] = int((scores >= PROBE_PARAMS["threshold"]).sum())
            out.append(frame.assign(label_set=name, score=scores, model_version=probe.model_version))
        rows = (pd.concat(out, ignore_index=True) if out else
                pd.DataFrame(columns=["label_set", "chip_id", "tile", "acquired", "score", "model_version"]))
        stored = store.write_detections(pid.key, rows)
    finally:
        store.close()
    return DetectionsResult(pid, len(frame), stored, probes, detected, skipped)

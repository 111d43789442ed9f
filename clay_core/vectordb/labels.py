"""Label sets, labelled search and probe detections in the ``clay`` schema.

A mixin of ``VectorStore`` (it uses the store's connection and error handling).

An *observation id* is ``chip_id@YYYY-MM-DD`` (the chip's observation on that date) or a bare
``chip_id`` (its latest observation, as ``similar_chips`` uses).  A label names an observation,
not a chip: a chip cleared in March is forest in January.  ``add_labels`` resolves every id
before it writes anything, so a label always stores a concrete ``(chip_id, acquired)``.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Sequence

import numpy as np
import pandas as pd

from clay_core.errors import ConfigError
from clay_core.vectordb.migrations import DETECTIONS_TABLE, LABELS_TABLE

__all__ = ["DETECTION_COLUMNS", "LabelsMixin", "check_label_set"]

#: the columns of a detections frame given to ``write_detections``
DETECTION_COLUMNS = ("label_set", "chip_id", "tile", "acquired", "score", "model_version")
_SET_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def check_label_set(name: str) -> str:
    """``name`` when it is a valid label-set name; ConfigError naming the rule otherwise."""
    if not isinstance(name, str) or not _SET_NAME.fullmatch(name):
        raise ConfigError(f"label set {name!r}: use 1-64 letters, digits, '_', '.' or '-' (e.g. --set clearings)")
    return name


def _ids(values: Sequence[str] | str | None) -> list[str]:
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    return [str(v).strip() for v in values]


class LabelsMixin:
    """Label sets, labelled search and detections of ``VectorStore``."""

    def resolve_observations(self, ids: Sequence[str]) -> pd.DataFrame:
        """``clay.resolve_observations``: (id, chip_id, acquired) per id; an unknown id is a
        ``ChipNotFoundError`` naming every unknown one, a malformed one a DatabaseError."""
        with self._errors("resolving observation ids"):
            rows = self._cursor().execute("SELECT * FROM clay.resolve_observations(%s::text[])",
                                          (_ids(ids),)).fetchall()
        return pd.DataFrame(rows, columns=["id", "chip_id", "acquired"])

    def add_labels(self, label_set: str, positives: Sequence[str] = (),
                   negatives: Sequence[str] = ()) -> pd.DataFrame:
        """Label observations of ``label_set`` (upsert: labelling one again changes its label).
        Every id is resolved first; one unknown id writes nothing.  An id given as both positive
        and negative is refused.  Returns the stored (chip_id, acquired, label) rows."""
        check_label_set(label_set)
        pos, neg = _ids(positives), _ids(negatives)
        if not pos and not neg:
            raise ConfigError("give at least one --positive or --negative observation id")
        both = sorted(set(pos) & set(neg))
        if both:
            raise ConfigError(f"{', '.join(both)}: given as both positive and negative")
        with self._errors(f"adding labels to {label_set!r}"), self._conn.transaction():
            cur = self._cursor()
            cur.execute(
                f"INSERT INTO {LABELS_TABLE} AS l (label_set, chip_id, acquired, label) "
                "SELECT %s, r.chip_id, r.acquired, bool_or(r.id = ANY(%s::text[])) "
                "FROM clay.resolve_observations(%s::text[]) r GROUP BY r.chip_id, r.acquired "
                "ON CONFLICT (label_set, chip_id, acquired) DO UPDATE SET label = excluded.label, "
                "added_at = now(), added_by = current_user RETURNING chip_id, acquired, label",
                (label_set, pos, pos + neg),
            )
            rows = cur.fetchall()
        return pd.DataFrame(rows, columns=["chip_id", "acquired", "label"]).sort_values(
            ["chip_id", "acquired"], ignore_index=True)

    def remove_labels(self, label_set: str, ids: Sequence[str] | None = None) -> int:
        """Remove the labels of ``ids`` from ``label_set`` (all of them when ``ids`` is None),
        and the set's detections when the set becomes empty.  Returns the labels removed."""
        check_label_set(label_set)
        with self._errors(f"removing labels from {label_set!r}"), self._conn.transaction():
            cur = self._cursor()
            if ids is None:
                cur.execute(f"DELETE FROM {LABELS_TABLE} WHERE label_set = %s", (label_set,))
            else:
                cur.execute(f"DELETE FROM {LABELS_TABLE} l USING clay.resolve_observations(%s::text[]) r "
                            "WHERE l.label_set = %s AND l.chip_id = r.chip_id AND l.acquired = r.acquired",
                            (_ids(ids), label_set))
            n = cur.rowcount
            cur.execute(f"DELETE FROM {DETECTIONS_TABLE} d WHERE d.label_set = %s AND NOT EXISTS "
                        f"(SELECT 1 FROM {LABELS_TABLE} l WHERE l.label_set = %s)", (label_set, label_set))
        return int(n)

    def labels(self, label_set: str | None = None) -> pd.DataFrame:
        """(label_set, chip_id, acquired, label, tile) rows, ordered; ``tile`` is None for a label
        whose observation is no longer in clay.chips."""
        with self._errors("reading labels"):
            rows = self._cursor().execute(
                f"SELECT l.label_set, l.chip_id, l.acquired, l.label, o.tile FROM {LABELS_TABLE} l "
                "LEFT JOIN clay.observations o USING (chip_id, acquired) "
                "WHERE %s::text IS NULL OR l.label_set = %s ORDER BY 1, 2, 3", (label_set, label_set),
            ).fetchall()
        return pd.DataFrame(rows, columns=["label_set", "chip_id", "acquired", "label", "tile"])

    def label_set_names(self) -> list[str]:
        """The label sets of ``clay.labels`` (a small table: no scan of ``clay.detections``)."""
        with self._errors("reading label sets"):
            rows = self._cursor().execute(f"SELECT DISTINCT label_set FROM {LABELS_TABLE} ORDER BY 1").fetchall()
        return [r[0] for r in rows]

    def label_sets(self) -> pd.DataFrame:
        """Per label set: positives, negatives, and detections stored (rows, model versions)."""
        with self._errors("reading label sets"):
            rows = self._cursor().execute(
                f"SELECT s.label_set, coalesce(l.pos, 0), coalesce(l.neg, 0), coalesce(d.n, 0), "
                f"coalesce(d.versions, '') FROM (SELECT label_set FROM {LABELS_TABLE} UNION "
                f"SELECT label_set FROM {DETECTIONS_TABLE}) s "
                f"LEFT JOIN (SELECT label_set, count(*) FILTER (WHERE label) AS pos, "
                f"count(*) FILTER (WHERE NOT label) AS neg FROM {LABELS_TABLE} GROUP BY 1) l USING (label_set) "
                f"LEFT JOIN (SELECT label_set, count(*) AS n, string_agg(DISTINCT model_version, ',') AS versions "
                f"FROM {DETECTIONS_TABLE} GROUP BY 1) d USING (label_set) ORDER BY 1"
            ).fetchall()
        return pd.DataFrame(rows, columns=["label_set", "positives", "negatives", "detections", "model_versions"])

    def labelled_embeddings(self, label_set: str) -> tuple[pd.DataFrame, np.ndarray]:
        """(chip_id, acquired, label frame, float32 [n, dim]) of the set's labelled observations
        still in clay.chips, ordered by chip_id, acquired."""
        return self._with_embeddings(
            "reading labelled embeddings", ["chip_id", "acquired", "label"],
            f"SELECT l.chip_id, l.acquired, l.label, o.embedding FROM {LABELS_TABLE} l "
            "JOIN clay.observations o USING (chip_id, acquired) WHERE l.label_set = %s ORDER BY 1, 2",
            (label_set,))

    def partition_embeddings(self, partition_key: str) -> tuple[pd.DataFrame, np.ndarray]:
        """(chip_id, tile, acquired frame, float32 [n, dim]) of one partition's observations."""
        return self._with_embeddings(
            "reading a partition's embeddings", ["chip_id", "tile", "acquired"],
            "SELECT chip_id, tile, acquired, embedding FROM clay.observations WHERE partition_key = %s "
            "ORDER BY 1, 3", (partition_key,))

    def _with_embeddings(self, action, columns, query, params) -> tuple[pd.DataFrame, np.ndarray]:
        self._register_types()
        with self._errors(action):
            rows = self._cursor().execute(query, params).fetchall()
        frame = pd.DataFrame([r[:-1] for r in rows], columns=columns)
        # halfvec reads back as float16: every reader gets the same float32 values
        emb = (np.stack([np.asarray(getattr(r[-1], "to_numpy", lambda v=r[-1]: v)(), np.float32) for r in rows])
               if rows else np.zeros((0, self.dim), np.float32))
        return frame, emb

    def write_detections(self, partition_key: str, rows: pd.DataFrame) -> int:
        """Replace every ``clay.detections`` row of ``partition_key`` (all label sets) by
        ``rows`` (:data:`DETECTION_COLUMNS`), in one transaction; returns the rows now stored."""
        missing = [c for c in DETECTION_COLUMNS if c not in rows.columns]
        if missing:
            raise ConfigError(f"detections frame lacks columns {missing}")
        scores = rows["score"].to_numpy(float)
        if len(scores) and not (np.isfinite(scores).all() and scores.min() >= 0 and scores.max() <= 1):
            raise ConfigError("detection scores must be probabilities in [0, 1]")
        values = [(r.label_set, r.chip_id, r.tile, r.acquired, float(r.score), partition_key, r.model_version)
                  for r in rows[list(DETECTION_COLUMNS)].itertuples(index=False)]
        with self._errors(f"writing detections of {partition_key}"), self._conn.transaction():
            cur = self._cursor()
            cur.execute(f"DELETE FROM {DETECTIONS_TABLE} WHERE partition_key = %s", (partition_key,))
            cur.executemany(
                f"INSERT INTO {DETECTIONS_TABLE} (label_set, chip_id, tile, acquired, score, partition_key, "
                "model_version) VALUES (%s, %s, %s, %s, %s, %s, %s)", values)
            cur.execute(f"SELECT count(*) FROM {DETECTIONS_TABLE} WHERE partition_key = %s", (partition_key,))
            return int(cur.fetchone()[0])

    def search_labeled(self, positives: Sequence[str], negatives: Sequence[str] | None = None, k: int = 10,
                       min_similarity: float = 0.0, *, tiles: Sequence[str] | None = None,
                       date_from: date | None = None, date_to: date | None = None,
                       bbox: Sequence[float] | None = None, ef_search: int | None = None) -> pd.DataFrame:
        """``clay.search_labeled``: query = 2·mean(positives) − mean(negatives) of the unit
        embeddings; the labelled chips are excluded.  Unknown ids -> ``ChipNotFoundError``."""
        from clay_core.vectordb.search import _opt_list

        return self._search(
            "search_labeled",
            "SELECT * FROM clay.search_labeled(%s::text[], %s::text[], %s::integer, %s::float8, "
            "%s::text[], %s::date, %s::date, %s::float8[])",
            (_ids(positives), _ids(negatives), int(k), float(min_similarity), _opt_list(tiles, str),
             date_from, date_to, _opt_list(bbox, float)),
            ef_search,
        )

    def detections(self, label_set: str, min_score: float = 0.5) -> pd.DataFrame:
        """``clay.detections``: (chip_id, tile, acquired, score, model_version), best first."""
        check_label_set(label_set)
        with self._errors(f"reading detections of {label_set!r}"):
            rows = self._cursor().execute("SELECT * FROM clay.detections(%s::text, %s::float8)",
                                          (label_set, float(min_score))).fetchall()
        return pd.DataFrame(rows, columns=["chip_id", "tile", "acquired", "score", "model_version"])

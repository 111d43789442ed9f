"""Reading embeddings back and similarity search through the ``clay`` SQL functions.

A mixin of ``VectorStore`` (it uses the store's connection and error handling).
"""

from __future__ import annotations

from datetime import date
from typing import Any, Sequence

import numpy as np
import pandas as pd

from clay_core.errors import ConfigError
from clay_core.vectordb.columns import cosine_defined

__all__ = ["SearchMixin"]


class SearchMixin:
    """Reads and searches of ``VectorStore``."""

    def embeddings(self, chip_ids: Sequence[str] | None = None) -> tuple[pd.DataFrame, np.ndarray]:
        """(chip_id, tile, acquired frame, float32 [n, dim]) ordered by chip_id, acquired."""
        self._register_types()
        with self._errors("reading embeddings"):
            cur = self._cursor()
            if chip_ids is None:
                cur.execute("SELECT chip_id, tile, acquired, embedding FROM clay.observations "
                            "ORDER BY chip_id, acquired")
            else:
                cur.execute("SELECT chip_id, tile, acquired, embedding FROM clay.observations "
                            "WHERE chip_id = ANY(%s) ORDER BY chip_id, acquired", (list(chip_ids),))
            rows = cur.fetchall()
        frame = pd.DataFrame([r[:3] for r in rows], columns=["chip_id", "tile", "acquired"])
        emb = (np.stack([np.asarray(getattr(r[3], "to_numpy", lambda v=r[3]: v)(), np.float32)
                         for r in rows]) if rows
               else np.zeros((0, self.dim), np.float32))
        return frame, emb

    def _search(self, action: str, query: str, params: Sequence[Any],
                ef_search: int | None) -> pd.DataFrame:
        self._register_types()
        with self._errors(action), self._conn.transaction():
            cur = self._cursor()
            if ef_search is not None:
                if not 1 <= int(ef_search) <= 1000:
                    raise ConfigError(f"ef_search must be in [1, 1000], got {ef_search}")
                cur.execute("SELECT set_config('clay.ef_search', %s, true)", (str(int(ef_search)),))
            cur.execute(query, params, prepare=True)
            rows = cur.fetchall()
        return pd.DataFrame(rows, columns=["chip_id", "tile", "acquired", "similarity"])

    def similar_chips(self, chip_id: str, k: int = 10, min_similarity: float = 0.0,
                      acquired: date | None = None, *, ef_search: int | None = None) -> pd.DataFrame:
        """``clay.similar_chips``: k most similar observations of other chips.

        Columns chip_id, tile, acquired, similarity; most similar first.  Unknown chip ->
        ``ChipNotFoundError`` (a DatabaseError).
        """
        return self._search(
            f"similar_chips({chip_id!r})",
            "SELECT * FROM clay.similar_chips(%s::text, %s::integer, %s::float8, %s::date)",
            (chip_id, int(k), float(min_similarity), acquired), ef_search,
        )

    def similar_chips_filtered(self, chip_id: str, k: int = 10, min_similarity: float = 0.0, *,
                               tiles: Sequence[str] | None = None, date_from: date | None = None,
                               date_to: date | None = None,
                               bbox: Sequence[float] | None = None, acquired: date | None = None,
                               ef_search: int | None = None) -> pd.DataFrame:
        """``clay.similar_chips_filtered``: like similar_chips, restricted to tiles / dates /
        bbox (west, south, east, north; chips whose bounds intersect it)."""
        return self._search(
            f"similar_chips_filtered({chip_id!r})",
            "SELECT * FROM clay.similar_chips_filtered(%s::text, %s::integer, %s::float8, "
            "%s::text[], %s::date, %s::date, %s::float8[], %s::date)",
            (chip_id, int(k), float(min_similarity), _opt_list(tiles, str), date_from, date_to,
             _opt_list(bbox, float), acquired),
            ef_search,
        )

    def similar_to_chips(self, chip_ids: Sequence[str], k: int = 10, min_similarity: float = 0.0,
                         *, tiles: Sequence[str] | None = None, date_from: date | None = None,
                         date_to: date | None = None, bbox: Sequence[float] | None = None,
                         ef_search: int | None = None) -> pd.DataFrame:
        """``clay.similar_to_chips``: query = mean of the reference chips' latest embeddings;
        the reference chips are excluded from the result."""
        if isinstance(chip_ids, str):
            chip_ids = [chip_ids]
        return self._search(
            "similar_to_chips",
            "SELECT * FROM clay.similar_to_chips(%s::text[], %s::integer, %s::float8, "
            "%s::text[], %s::date, %s::date, %s::float8[])",
            (list(map(str, chip_ids)), int(k), float(min_similarity), _opt_list(tiles, str),
             date_from, date_to, _opt_list(bbox, float)),
            ef_search,
        )

    def similar_to_vector(self, vector: np.ndarray, k: int = 10, min_similarity: float = 0.0, *,
                          tiles: Sequence[str] | None = None, date_from: date | None = None,
                          date_to: date | None = None, bbox: Sequence[float] | None = None,
                          ef_search: int | None = None) -> pd.DataFrame:
        """``clay.similar_to_vector``: k observations most similar to an embedding."""
        v = np.asarray(vector, dtype=np.float32).reshape(-1)
        if v.shape[0] != self.dim:
            raise ConfigError(f"query vector has {v.shape[0]} dims, the store has {self.dim}")
        if not cosine_defined(v[None])[0]:
            raise ConfigError("the query vector is zero, not finite, or too large or small for "
                              "float32: its cosine similarity to anything is undefined (NaN)")
        from pgvector import Vector

        return self._search(
            "similar_to_vector",
            "SELECT * FROM clay.similar_to_vector(%s::vector, %s::integer, %s::float8, "
            "%s::text[], %s::date, %s::date, %s::float8[])",
            (Vector(v), int(k), float(min_similarity), _opt_list(tiles, str), date_from, date_to,
             _opt_list(bbox, float)),
            ef_search,
        )

    def chip_at(self, lon: float, lat: float, acquired: date | None = None) -> str | None:
        """Id of the chip whose WGS84 bounds contain (lon, lat): observed on ``acquired`` if
        given, else the latest observation; None when no stored chip covers the point."""
        with self._errors("looking up the chip at a point"):
            cur = self._cursor()
            cur.execute(
                "SELECT chip_id FROM clay.observations WHERE west <= %s AND %s <= east "
                "AND south <= %s AND %s <= north AND (%s::date IS NULL OR acquired = %s::date) "
                "ORDER BY acquired DESC, chip_id LIMIT 1",
                (float(lon), float(lon), float(lat), float(lat), acquired, acquired),
            )
            row = cur.fetchone()
            return None if row is None else str(row[0])

    def describe(self, results: pd.DataFrame) -> pd.DataFrame:
        """``results`` (chip_id, acquired, ...) joined with each observation's geometry (WKT),
        centre, cloud fraction, thumbnail and cube URIs, in the same order."""
        if results.empty:
            return results.assign(geom_wkt=[], lon=[], lat=[], cloud_fraction=[], thumbnail_uri=[], cube_uri=[])
        with self._errors("describing search results"):
            cur = self._cursor()
            cur.execute(
                "SELECT o.chip_id, o.acquired, o.geom_wkt, o.lon, o.lat, o.cloud_fraction, o.thumbnail_uri, "
                "o.cube_uri FROM clay.chips o JOIN unnest(%s::text[], %s::date[]) AS q(chip_id, acquired) "
                "USING (chip_id, acquired)",
                (results["chip_id"].astype(str).tolist(), list(results["acquired"])),
            )
            extra = pd.DataFrame(cur.fetchall(), columns=["chip_id", "acquired", "geom_wkt", "lon", "lat",
                                                          "cloud_fraction", "thumbnail_uri", "cube_uri"])
        return results.merge(extra, on=["chip_id", "acquired"], how="left")


def _opt_list(values, cast) -> list | None:
    if values is None:
        return None
    if isinstance(values, str):
        values = [values]
    return [cast(v) for v in values]

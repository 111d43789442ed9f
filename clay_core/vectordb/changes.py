"""Change between two dates by embeddings: ``clay.changed_chips`` (schema migration 7).

The AlphaEarth/TESSERA-style comparison: for every chip, take its clear observation nearest to
``date_a`` and its clear observation nearest to ``date_b``, and report the cosine distance
between their embeddings::

    clay.changed_chips(date_a, date_b, min_distance, max_gap_days, max_cloud, tiles, bbox)
      -> TABLE(chip_id, tile, acquired_a, acquired_b, distance, geom_wkt)

``min_distance`` keeps chips whose distance is at least that (0: every chip with two distinct
observations).  ``max_gap_days`` (default: none) ignores observations farther than that many days
from their date, so a chip without a clear view near a date is left out instead of being compared
across a season.  A *clear* observation has ``cloud_fraction <= max_cloud`` (default 0: not one
cloudy pixel; NULL: every stored observation, which already passed the chip filter's
``max_cloud``).  Partly cloudy chips move in embedding space as much as a clearing does, so the
default compares clear views only.  Ties in "nearest"
go to the earlier observation for ``date_a`` and the later one for ``date_b``; a chip whose two
nearest observations are the same one (or in the wrong order) has no comparison and is left out.
Rows come most changed first.  ``geom_wkt`` is the chip's WGS84 bounds (as in ``clay.chips``);
:func:`changed_chips` adds the chip's exact footprint for GeoJSON.

The function is ``LANGUAGE plpgsql`` with a fixed ``search_path`` (pg_catalog, the schema of
the vector extension, pg_temp), so a caller's search_path cannot redirect ``<=>``.  It reads
``clay.observations`` only: the reader role (``create_reader_role``) may EXECUTE it.
"""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING, Sequence

import pandas as pd

from clay_core.errors import ConfigError
from clay_core.vectordb.functions import BBOX_CHECK_SQL

if TYPE_CHECKING:
    from clay_core.vectordb.store import VectorStore

__all__ = ["CHANGED_CHIPS_COLUMNS", "changed_chips", "changed_chips_geojson", "migration_7"]

#: the columns of clay.changed_chips
CHANGED_CHIPS_COLUMNS = ["chip_id", "tile", "acquired_a", "acquired_b", "distance", "geom_wkt"]

_BODY = r"""
BEGIN
  IF date_a IS NULL OR date_b IS NULL THEN
    RAISE EXCEPTION 'date_a and date_b must be dates, got % and %', date_a, date_b
      USING ERRCODE = 'null_value_not_allowed';
  END IF;
  IF date_a >= date_b THEN
    RAISE EXCEPTION 'date_a (%) must be before date_b (%)', date_a, date_b
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF min_distance IS NULL OR min_distance = 'NaN'::float8 THEN
    RAISE EXCEPTION 'min_distance must be a number in [0, 2] (cosine distance)'
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF max_gap_days IS NOT NULL AND max_gap_days < 0 THEN
    RAISE EXCEPTION 'max_gap_days must be >= 0 days, got %', max_gap_days
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF max_cloud IS NOT NULL AND NOT (max_cloud >= 0 AND max_cloud <= 1) THEN
    RAISE EXCEPTION 'max_cloud must be a fraction in [0, 1], got %', max_cloud
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
{bbox_check}
  RETURN QUERY
  WITH clear AS (
    SELECT o.chip_id, o.tile, o.acquired, o.embedding, o.west, o.south, o.east, o.north
      FROM clay.observations o
     WHERE (tiles IS NULL OR o.tile = ANY(tiles))
       AND (bbox IS NULL OR box(point(o.west, o.south), point(o.east, o.north))
                            && box(point(bbox[1], bbox[2]), point(bbox[3], bbox[4])))
       AND (max_cloud IS NULL OR o.cloud_fraction <= max_cloud)
  ), a AS (
    SELECT DISTINCT ON (c.chip_id) c.chip_id, c.tile, c.acquired, c.embedding
      FROM clear c
     WHERE max_gap_days IS NULL OR abs(c.acquired - date_a) <= max_gap_days
     ORDER BY c.chip_id, abs(c.acquired - date_a), c.acquired
  ), b AS (
    SELECT DISTINCT ON (c.chip_id) c.chip_id, c.acquired, c.embedding,
           c.west, c.south, c.east, c.north
      FROM clear c
     WHERE max_gap_days IS NULL OR abs(c.acquired - date_b) <= max_gap_days
     ORDER BY c.chip_id, abs(c.acquired - date_b), c.acquired DESC
  ), d AS (
    SELECT a.chip_id, a.tile, a.acquired AS acquired_a, b.acquired AS acquired_b,
           (a.embedding <=> b.embedding)::float8 AS distance, b.west, b.south, b.east, b.north
      FROM a JOIN b ON b.chip_id = a.chip_id
     WHERE a.acquired < b.acquired
  )
  SELECT d.chip_id, d.tile, d.acquired_a, d.acquired_b, d.distance,
         format('POLYGON((%s %s, %s %s, %s %s, %s %s, %s %s))', d.west, d.south, d.east, d.south,
                d.east, d.north, d.west, d.north, d.west, d.south)
    FROM d
   WHERE d.distance >= min_distance
   ORDER BY d.distance DESC, d.chip_id;
END
"""

_SIGNATURE = ("clay.changed_chips(date_a date, date_b date, min_distance double precision DEFAULT 0, "
              "max_gap_days integer DEFAULT NULL, max_cloud double precision DEFAULT 0, "
              "tiles text[] DEFAULT NULL, bbox double precision[] DEFAULT NULL)")
_RETURNS = ("TABLE(chip_id text, tile text, acquired_a date, acquired_b date, "
            "distance double precision, geom_wkt text)")


def migration_7(dim: int, m: int, ef_construction: int, create_index: bool) -> list[str]:
    """clay.changed_chips.  The vector extension's schema is looked up on the server (a DO
    block), so the function's search_path names it as the search functions' does."""
    create = (f"CREATE OR REPLACE FUNCTION {_SIGNATURE}\nRETURNS {_RETURNS} LANGUAGE plpgsql STABLE\n"
              "SET search_path = pg_catalog, {ext}, pg_temp\nAS $fn$"
              + _BODY.replace("{bbox_check}", BBOX_CHECK_SQL) + "$fn$")
    return [
        "DO $do$ BEGIN EXECUTE format(" + _literal(create) + ", (SELECT n.nspname FROM "
        "pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'vector')); "
        "END $do$",
        "COMMENT ON FUNCTION clay.changed_chips(date, date, double precision, integer, "
        "double precision, text[], double precision[]) IS 'Per chip: cosine distance between its "
        "clear observations nearest to date_a and to date_b; rows with distance >= min_distance, "
        "most changed first.'",
    ]


def _literal(text: str) -> str:
    """``text`` as the SQL string literal of a format() pattern: every ``%`` doubled, then
    ``{ext}`` becomes ``%I`` (the extension's schema, quoted as an identifier)."""
    return "'" + text.replace("%", "%%").replace("{ext}", "%I").replace("'", "''") + "'"


def changed_chips(store: "VectorStore", date_a: date, date_b: date, min_distance: float = 0.0, *,
                  max_gap_days: int | None = None, max_cloud: float | None = 0.0,
                  tiles: Sequence[str] | None = None,
                  bbox: Sequence[float] | None = None) -> pd.DataFrame:
    """``clay.changed_chips`` through ``store``: one row per chip that changed by at least
    ``min_distance`` (cosine distance) between its clear observations nearest to ``date_a`` and
    ``date_b``, most changed first, with the chip's centre, native CRS and bounds (for
    :func:`changed_chips_geojson`)."""
    if not isinstance(date_a, date) or not isinstance(date_b, date):
        raise ConfigError(f"date_a and date_b must be dates, got {date_a!r} and {date_b!r}")
    tiles = [tiles] if isinstance(tiles, str) else tiles
    with store._errors(f"clay.changed_chips({date_a}, {date_b})"):
        cur = store._cursor()
        cur.execute(
            "SELECT c.chip_id, c.tile, c.acquired_a, c.acquired_b, c.distance, c.geom_wkt, "
            "o.west, o.south, o.east, o.north, o.lon, o.lat, o.crs, o.thumbnail_uri "
            "FROM clay.changed_chips(%s::date, %s::date, %s::float8, %s::integer, %s::float8, "
            "%s::text[], %s::float8[]) WITH ORDINALITY AS c(chip_id, tile, acquired_a, acquired_b, "
            "distance, geom_wkt, n) JOIN clay.observations o ON o.chip_id = c.chip_id "
            "AND o.acquired = c.acquired_b ORDER BY c.n",
            (date_a, date_b, float(min_distance), max_gap_days,
             None if max_cloud is None else float(max_cloud),
             None if tiles is None else [str(t).strip().upper() for t in tiles],
             None if bbox is None else [float(v) for v in bbox]),
        )
        rows = cur.fetchall()
    return pd.DataFrame(rows, columns=CHANGED_CHIPS_COLUMNS + [
        "west", "south", "east", "north", "lon", "lat", "crs", "thumbnail_uri"])


def changed_chips_geojson(changes: pd.DataFrame, query: dict | None = None) -> dict:
    """A FeatureCollection: one feature per changed chip, its exact WGS84 footprint (see
    :func:`clay_core.exchange.footprints`), rank, distance and the two dates compared."""
    from shapely.geometry import mapping

    from clay_core.exchange.footprints import footprints

    geoms = footprints(changes) if len(changes) else []
    features = [{
        "type": "Feature",
        "geometry": mapping(g),
        "properties": {
            "rank": i, "chip_id": r.chip_id, "tile": r.tile, "acquired_a": str(r.acquired_a),
            "acquired_b": str(r.acquired_b), "distance": float(r.distance),
            "thumbnail": r.thumbnail_uri,
        },
    } for i, (r, g) in enumerate(zip(changes.itertuples(index=False), geoms), 1)]
    return {"type": "FeatureCollection", "features": features, "query": query or {}}

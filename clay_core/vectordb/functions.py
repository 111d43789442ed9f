"""The SQL search functions of schema ``clay`` (stable names; call them from psql).

::

    clay.similar_chips(query_chip_id, k, min_similarity, query_acquired)
    clay.similar_chips_filtered(query_chip_id, k, min_similarity, tiles, date_from, date_to, bbox,
                                query_acquired)
    clay.similar_to_chips(chip_ids, k, min_similarity, tiles, date_from, date_to, bbox)
    clay.similar_to_vector(query, k, min_similarity, tiles, date_from, date_to, bbox)
    clay.search_labeled(positives, negatives, k, min_similarity, tiles, date_from, date_to, bbox)
    clay.search_label_set(label_set, k, min_similarity, tiles, date_from, date_to, bbox)

All return ``TABLE(chip_id text, tile text, acquired date, similarity float8)``, most
similar first.  Similarity is ``1 - cosine distance``.  They use the HNSW index and fall back to
an exact scan whenever the index returned fewer than ``k`` rows (a selective filter, or the query
chip's own observations eating the candidate list), so ``k`` rows come back whenever ``k``
qualifying rows exist.  ``min_similarity`` is applied to the k nearest found (rows below it are
dropped, never replaced by farther ones).  Session knob: ``SET clay.ef_search = 200`` (base
``hnsw.ef_search``, default 100).  Filtered queries use iterative index scans on pgvector >=
0.8; on older pgvector they raise ef_search to ``clay.filter_oversample`` (default 4) x k /
selectivity, the selectivity being the planner's estimate.
``k`` + the query chip's observations above 1000 (pgvector's ef_search limit) -> exact search.

Labelled search identifies observations by text ids: ``chip_id@YYYY-MM-DD`` is the chip's
observation on that date, a bare ``chip_id`` its latest (as in ``similar_chips``).
``clay.resolve_observations(ids)`` returns ``(id, chip_id, acquired)`` and names every id that is
not in clay.chips.  The labelled query is ``q = 2·mean(p̂) − mean(n̂)`` over the unit-normalised
embeddings p̂ of the positives and n̂ of the negatives (geovibes' formula; without negatives
q = mean(p̂)): the positives' centroid moved once more along the direction from the
negatives' centroid to it.  The labelled chips are excluded from the results, as in
``similar_to_chips``.  ``clay.detections(label_set, min_score)`` returns the linear probe's
scores (``clay.detections`` table, written by the ``detections`` asset).

``VectorStore.ensure_schema`` re-creates them whenever their text (dimension, storage, pgvector
features) changes.
"""

from __future__ import annotations

__all__ = ["BQ_INDEX", "DEFAULT_EF_SEARCH", "FILTER_SAFETY", "functions_sql"]

#: optional Hamming HNSW index over the sign bits of the embeddings (binary quantization), built
#: by VectorStore.build_binary_index; the functions search it in sessions that set
#: clay.rerank_candidates and re-rank those candidates by exact cosine
BQ_INDEX = "observations_embedding_bq_idx"

DEFAULT_EF_SEARCH = 100  # base hnsw.ef_search used by the SQL functions (override: clay.ef_search)
FILTER_SAFETY = 4.0  # ef_search ~ FILTER_SAFETY * k / selectivity for filtered queries

_OUT = "TABLE(chip_id text, tile text, acquired date, similarity double precision)"

# The bbox argument check every search function shares (and clay.changed_chips).
BBOX_CHECK_SQL = r"""  IF bbox IS NOT NULL AND (cardinality(bbox) <> 4 OR array_position(bbox, NULL) IS NOT NULL
                           OR bbox[1] > bbox[3] OR bbox[2] > bbox[4]) THEN
    RAISE EXCEPTION 'bbox must be [west, south, east, north] with west <= east and south <= north, got %',
      bbox USING ERRCODE = 'invalid_parameter_value';
  END IF;"""

_KNN_BODY = r"""
DECLARE
  base_ef  integer := coalesce(nullif(current_setting('clay.ef_search', true), '')::integer,
                               {default_ef});
  oversample double precision := coalesce(
      nullif(current_setting('clay.filter_oversample', true), '')::float8, {filter_safety});
  filter_sql text := '';
  filtered boolean := false;
  n_excl   bigint := 0;
  need     bigint;
  ef       double precision;
  total    double precision;
  est      double precision;
  plan     json;
  n_ann    bigint;
  a_chip   text[];
  a_tile   text[];
  a_acq    date[];
  a_sim    double precision[];{rerank_decl}
BEGIN
  IF query IS NULL THEN
    RAISE EXCEPTION 'query vector must not be NULL' USING ERRCODE = 'null_value_not_allowed';
  END IF;
  IF vector_dims(query) <> {dim} THEN
    RAISE EXCEPTION 'query vector has % dimensions, clay.observations.embedding has {dim}',
      vector_dims(query) USING ERRCODE = 'invalid_parameter_value';
  END IF;
  -- pgvector gives NaN for a zero vector or one whose squared norm over/underflows float32
  IF (query <=> query) = 'NaN'::float8 OR ({qv} <=> {qv}) = 'NaN'::float8 THEN
    RAISE EXCEPTION 'query vector is zero or too large or small: cosine similarity is undefined'
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF k IS NULL OR k < 1 THEN
    RAISE EXCEPTION 'k must be a positive integer, got %', coalesce(k::text, 'NULL')
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF min_similarity IS NULL OR min_similarity = 'NaN'::float8 THEN
    RAISE EXCEPTION 'min_similarity must be a number in [-1, 1]'
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
{bbox_check}
  IF date_from IS NOT NULL AND date_to IS NOT NULL AND date_from > date_to THEN
    RAISE EXCEPTION 'date_from % is after date_to %', date_from, date_to
      USING ERRCODE = 'invalid_parameter_value';
  END IF;

  -- every value reaches the queries as a bound parameter ($1..$8); only fixed text is appended
  IF tiles IS NOT NULL THEN
    filter_sql := filter_sql || ' AND o.tile = ANY($5)';  filtered := true;
  END IF;
  IF date_from IS NOT NULL THEN
    filter_sql := filter_sql || ' AND o.acquired >= $6';  filtered := true;
  END IF;
  IF date_to IS NOT NULL THEN
    filter_sql := filter_sql || ' AND o.acquired <= $7';  filtered := true;
  END IF;
  IF bbox IS NOT NULL THEN
    filter_sql := filter_sql
      || ' AND box(point(o.west, o.south), point(o.east, o.north)) && box(point($8[1], $8[2]), point($8[3], $8[4]))';
    filtered := true;
  END IF;
  IF exclude_chips IS NOT NULL AND cardinality(exclude_chips) > 0 THEN
    SELECT count(*) INTO n_excl FROM clay.observations o WHERE o.chip_id = ANY(exclude_chips);
    filter_sql := filter_sql || ' AND o.chip_id <> ALL($4)';
  END IF;

  need := k + n_excl;
  ef := greatest(base_ef, need);
  IF filtered THEN
    -- planner estimate of the selectivity: cheap, and only steers ef_search / exact choice
    EXECUTE 'EXPLAIN (FORMAT JSON) SELECT 1 FROM clay.observations o WHERE true' || filter_sql
      INTO plan USING query, k, min_similarity, exclude_chips, tiles, date_from, date_to, bbox;
    est := greatest((plan->0->'Plan'->>'Plan Rows')::float8, 1);
    EXECUTE 'EXPLAIN (FORMAT JSON) SELECT 1 FROM clay.observations o' INTO plan;
    total := greatest((plan->0->'Plan'->>'Plan Rows')::float8, 1);
    IF est * 1000 < oversample * k * total THEN
      ef := 1e9;  -- too selective for the index: exact search over the (small) filtered set
    ELSIF NOT {iterative} THEN
      ef := greatest(ef, ceil(oversample * k * total / est) + n_excl);
    END IF;
  END IF;

{rerank}  IF ef <= 1000 AND NOT filtered THEN
    -- no tile/date/bbox filter: static SQL, so the plan is cached for the session instead of
    -- planned again on every call
    PERFORM set_config('hnsw.ef_search', ef::integer::text, true);
    IF {iterative} AND n_excl > 0 THEN
      PERFORM set_config('hnsw.iterative_scan', 'relaxed_order', true);
    END IF;
{agg}
      FROM (SELECT o.chip_id, o.tile, o.acquired, o.embedding <=> {qv} AS dist
              FROM clay.observations o
             WHERE n_excl = 0 OR o.chip_id <> ALL(exclude_chips)
             ORDER BY o.embedding <=> {qv} LIMIT k) s;
{return_k}
  ELSIF ef <= 1000 THEN
    PERFORM set_config('hnsw.ef_search', ef::integer::text, true);
    IF {iterative} AND (filtered OR n_excl > 0) THEN
      PERFORM set_config('hnsw.iterative_scan', 'relaxed_order', true);
    END IF;
    EXECUTE
      'SELECT count(*),'
      || ' array_agg(s.chip_id ORDER BY s.dist, s.chip_id, s.acquired) FILTER (WHERE 1 - s.dist >= $3),'
      || ' array_agg(s.tile ORDER BY s.dist, s.chip_id, s.acquired) FILTER (WHERE 1 - s.dist >= $3),'
      || ' array_agg(s.acquired ORDER BY s.dist, s.chip_id, s.acquired) FILTER (WHERE 1 - s.dist >= $3),'
      || ' array_agg(1 - s.dist ORDER BY s.dist, s.chip_id, s.acquired) FILTER (WHERE 1 - s.dist >= $3)'
      || ' FROM (SELECT o.chip_id, o.tile, o.acquired, o.embedding <=> {q} AS dist'
      || ' FROM clay.observations o WHERE true' || filter_sql
      || ' ORDER BY o.embedding <=> {q} LIMIT $2) s'
      INTO n_ann, a_chip, a_tile, a_acq, a_sim
      USING query, k, min_similarity, exclude_chips, tiles, date_from, date_to, bbox;
    IF n_ann >= k THEN
      -- the index delivered k candidates: the answer is those above min_similarity
      RETURN QUERY SELECT u.c, u.t, u.a, u.s FROM unnest(a_chip, a_tile, a_acq, a_sim) AS u(c, t, a, s);
      RETURN;
    END IF;
  END IF;

  -- exact search: the ORDER BY expression cannot use the HNSW index
  RETURN QUERY EXECUTE
    'SELECT o.chip_id, o.tile, o.acquired, 1 - (o.embedding <=> {q}) AS similarity'
    || ' FROM clay.observations o WHERE 1 - (o.embedding <=> {q}) >= $3' || filter_sql
    || ' ORDER BY 1 - (o.embedding <=> {q}) DESC, o.chip_id, o.acquired LIMIT $2'
    USING query, k, min_similarity, exclude_chips, tiles, date_from, date_to, bbox;
END
"""

# pgvector >= 0.8, unfiltered searches, session knob clay.rerank_candidates = N (> 0): the N
# nearest by Hamming distance in the binary-quantized index (index.BQ_INDEX, same expression),
# re-ranked by exact cosine; fewer than k found -> the exact search below, as everywhere
_RERANK_DECL = r"""
  rerank   integer := coalesce(nullif(current_setting('clay.rerank_candidates', true), '')::integer, 0);"""
_RERANK = r"""
  IF rerank > 0 AND NOT filtered AND greatest(rerank, need) <= 1000 THEN
    IF to_regclass('clay.{bq_index}') IS NULL THEN
      RAISE EXCEPTION 'clay.rerank_candidates is % but clay.observations has no binary-quantized index',
        rerank USING ERRCODE = 'undefined_object',
        HINT = 'build it with VectorStore.build_binary_index(), or RESET clay.rerank_candidates';
    END IF;
    rerank := greatest(rerank, need);
    PERFORM set_config('hnsw.ef_search', greatest(rerank, base_ef)::integer::text, true);
{agg}
      FROM (SELECT c.chip_id, c.tile, c.acquired, c.embedding <=> {qv} AS dist
              FROM (SELECT o.chip_id, o.tile, o.acquired, o.embedding FROM clay.observations o
                     WHERE n_excl = 0 OR o.chip_id <> ALL(exclude_chips)
                     ORDER BY binary_quantize(o.embedding)::bit({dim}) <~> binary_quantize({qv})::bit({dim})
                     LIMIT rerank) c
             ORDER BY c.embedding <=> {qv} LIMIT k) s;
{return_k}
  END IF;
"""

# the static (unfiltered) paths: the k rows found, most similar first, as arrays ...
_AGG = r"""    SELECT count(*),
           array_agg(s.chip_id ORDER BY s.dist, s.chip_id, s.acquired) FILTER (WHERE 1 - s.dist >= min_similarity),
           array_agg(s.tile ORDER BY s.dist, s.chip_id, s.acquired) FILTER (WHERE 1 - s.dist >= min_similarity),
           array_agg(s.acquired ORDER BY s.dist, s.chip_id, s.acquired) FILTER (WHERE 1 - s.dist >= min_similarity),
           array_agg(1 - s.dist ORDER BY s.dist, s.chip_id, s.acquired) FILTER (WHERE 1 - s.dist >= min_similarity)
      INTO n_ann, a_chip, a_tile, a_acq, a_sim"""
# ... returned when there are k of them (else the exact search at the end)
_RETURN_K = r"""    IF n_ann >= k THEN
      RETURN QUERY SELECT u.c, u.t, u.a, u.s FROM unnest(a_chip, a_tile, a_acq, a_sim) AS u(c, t, a, s);
      RETURN;
    END IF;"""

_QUERY_EMBEDDING_TEMPLATE = r"""
  IF query_chip_id IS NULL THEN
    RAISE EXCEPTION 'chip_id must not be NULL' USING ERRCODE = 'null_value_not_allowed';
  END IF;
  SELECT o.embedding{as_vector} INTO q FROM clay.observations o
   WHERE o.chip_id = query_chip_id AND (query_acquired IS NULL OR o.acquired = query_acquired)
   ORDER BY o.acquired DESC LIMIT 1;
  IF NOT FOUND THEN
    IF query_acquired IS NULL THEN
      RAISE EXCEPTION 'chip % not found in clay.chips', quote_literal(query_chip_id)
        USING ERRCODE = 'no_data_found', HINT = 'chip ids look like TILE_rRRcCC, e.g. 31UFQ_r03c07';
    ELSE
      RAISE EXCEPTION 'chip % has no observation on % in clay.chips', quote_literal(query_chip_id),
        query_acquired USING ERRCODE = 'no_data_found';
    END IF;
  END IF;
"""


def functions_sql(dim: int, ext_schema: str, iterative: bool,
                  storage: str = "vector") -> list[str]:
    """The SQL functions for an embedding column of type ``storage``(dim).  Their signatures
    take ``vector`` whatever the storage; for halfvec the query is cast to halfvec(dim) where it
    meets the column (so the HNSW halfvec_cosine_ops index serves it) and stored embeddings are
    read back (and averaged) as vector."""
    half = storage == "halfvec"
    as_vector = "::vector" if half else ""
    path = f"SET search_path = pg_catalog, {_ident(ext_schema)}, pg_temp"
    sets = f"{path}\nSET hnsw.ef_search = 40" + ("\nSET hnsw.iterative_scan = off" if iterative else "")
    body = (_KNN_BODY.replace("{rerank_decl}", _RERANK_DECL if iterative else "")
            .replace("{rerank}", _RERANK.replace("{bq_index}", BQ_INDEX) if iterative else "")
            .replace("{bbox_check}", BBOX_CHECK_SQL).replace("{agg}", _AGG).replace("{return_k}", _RETURN_K)
            .replace("{default_ef}", str(DEFAULT_EF_SEARCH))
            .replace("{dim}", str(dim))
            .replace("{filter_safety}", repr(FILTER_SAFETY))
            .replace("{iterative}", "true" if iterative else "false")
            .replace("{q}", f"$1::halfvec({dim})" if half else "$1")
            .replace("{qv}", f"query::halfvec({dim})" if half else "query"))
    query_embedding = _QUERY_EMBEDDING_TEMPLATE.replace("{as_vector}", as_vector)
    return [
        f"""CREATE OR REPLACE FUNCTION clay._knn(query vector, k integer, min_similarity double precision,
    exclude_chips text[], tiles text[], date_from date, date_to date, bbox double precision[])
RETURNS {_OUT} LANGUAGE plpgsql VOLATILE  -- VOLATILE: it runs EXPLAIN for selectivity
{sets}
AS $fn${body}$fn$""",
        f"""CREATE OR REPLACE FUNCTION clay.similar_to_vector(query vector, k integer DEFAULT 10,
    min_similarity double precision DEFAULT 0, {_FILTER_ARGS})
RETURNS {_OUT} LANGUAGE sql STABLE {path}
AS $fn$ SELECT * FROM clay._knn(query, k, min_similarity, NULL, tiles, date_from, date_to, bbox) $fn$""",
        *_chip_query_functions(path, query_embedding),
        _similar_to_chips_sql(path, as_vector),
        _resolve_sql(path),
        _search_labeled_sql(path, as_vector),
        *_label_set_sql(path),
        "COMMENT ON FUNCTION clay.similar_chips(text, integer, double precision, date) IS "
        "'k most similar observations of other chips (cosine), most similar first. "
        "Query = the chip''s observation on query_acquired (default: its latest).'",
    ]


_FILTER_ARGS = ("tiles text[] DEFAULT NULL, date_from date DEFAULT NULL, date_to date DEFAULT NULL, "
                "bbox double precision[] DEFAULT NULL")


def _chip_query_functions(path: str, query_embedding: str) -> list[str]:
    """clay.similar_chips and clay.similar_chips_filtered: the query is a stored observation."""
    plain = ("similar_chips(query_chip_id text, k integer DEFAULT 10,\n"
             "    min_similarity double precision DEFAULT 0, query_acquired date DEFAULT NULL)",
             "NULL, NULL, NULL, NULL")
    filtered = ("similar_chips_filtered(query_chip_id text,\n"
                "    k integer DEFAULT 10, min_similarity double precision DEFAULT 0, "
                f"{_FILTER_ARGS},\n    query_acquired date DEFAULT NULL)",
                "tiles, date_from, date_to, bbox")
    return [f"""CREATE OR REPLACE FUNCTION clay.{signature}
RETURNS {_OUT} LANGUAGE plpgsql STABLE {path}
AS $fn$
DECLARE q vector;
BEGIN
{query_embedding}
  RETURN QUERY SELECT * FROM clay._knn(q, k, min_similarity, ARRAY[query_chip_id],
                                       {filters});
END
$fn$""" for signature, filters in (plain, filtered)]


def _similar_to_chips_sql(path: str, as_vector: str) -> str:
    """clay.similar_to_chips: the query is the mean of reference chips' latest embeddings."""
    return f"""CREATE OR REPLACE FUNCTION clay.similar_to_chips(chip_ids text[], k integer DEFAULT 10,
    min_similarity double precision DEFAULT 0, {_FILTER_ARGS})
RETURNS {_OUT} LANGUAGE plpgsql STABLE {path}
AS $fn$
DECLARE
  q vector;
  found text[];
  missing text[];
BEGIN
  IF chip_ids IS NULL OR cardinality(chip_ids) = 0 OR array_position(chip_ids, NULL) IS NOT NULL THEN
    RAISE EXCEPTION 'chip_ids must be a non-empty array of chip ids'
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  -- query = mean of the reference chips' latest embeddings
  SELECT avg(e.embedding{as_vector}), array_agg(e.chip_id) INTO q, found
    FROM (SELECT DISTINCT ON (o.chip_id) o.chip_id, o.embedding FROM clay.observations o
           WHERE o.chip_id = ANY(chip_ids) ORDER BY o.chip_id, o.acquired DESC) e;
  missing := ARRAY(SELECT DISTINCT x FROM unnest(chip_ids) AS x
                    WHERE found IS NULL OR NOT x = ANY(found) ORDER BY x);
  IF cardinality(missing) > 0 THEN
    RAISE EXCEPTION 'chip(s) not found in clay.chips: %', array_to_string(missing, ', ')
      USING ERRCODE = 'no_data_found';
  END IF;
  RETURN QUERY SELECT * FROM clay._knn(q, k, min_similarity, chip_ids,
                                       tiles, date_from, date_to, bbox);
END
$fn$"""


_OBS_OUT = "TABLE(id text, chip_id text, acquired date)"
_DETECTIONS_OUT = ("TABLE(chip_id text, tile text, acquired date, score double precision, "
                   "model_version text)")


def _resolve_sql(path: str) -> str:
    """clay.resolve_observations: observation ids -> (id, chip_id, acquired); unknown ids named."""
    return f"""CREATE OR REPLACE FUNCTION clay.resolve_observations(ids text[])
RETURNS {_OBS_OUT} LANGUAGE plpgsql STABLE {path}
AS $fn$
DECLARE
  bad text;
  missing text[];
BEGIN
  SELECT x INTO bad FROM unnest(ids) AS x
   WHERE x IS NULL OR x !~ '^[^@[:space:]]+(@[0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}})?$' LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION 'observation id % is not chip_id or chip_id@YYYY-MM-DD',
      coalesce(quote_literal(bad), 'NULL') USING ERRCODE = 'invalid_parameter_value';
  END IF;
  RETURN QUERY
    SELECT DISTINCT ON (r.x) r.x, o.chip_id, o.acquired
      FROM (SELECT x, split_part(x, '@', 1) AS chip,
                   nullif(split_part(x, '@', 2), '')::date AS day FROM unnest(ids) AS x) r
      JOIN clay.observations o ON o.chip_id = r.chip AND (r.day IS NULL OR o.acquired = r.day)
     ORDER BY r.x, o.acquired DESC;
  missing := ARRAY(SELECT DISTINCT x FROM unnest(ids) AS x
                    WHERE NOT EXISTS (SELECT 1 FROM clay.observations o
                                       WHERE o.chip_id = split_part(x, '@', 1)
                                         AND (x NOT LIKE '%@%' OR o.acquired
                                              = nullif(split_part(x, '@', 2), '')::date))
                    ORDER BY x);
  IF cardinality(missing) > 0 THEN
    RAISE EXCEPTION 'observation(s) not found in clay.chips: %', array_to_string(missing, ', ')
      USING ERRCODE = 'no_data_found',
            HINT = 'ids are chip_id (its latest observation) or chip_id@YYYY-MM-DD';
  END IF;
END
$fn$"""


def _search_labeled_sql(path: str, as_vector: str) -> str:
    """clay.search_labeled: query = 2 mean(unit positives) - mean(unit negatives)."""
    return f"""CREATE OR REPLACE FUNCTION clay.search_labeled(positives text[], negatives text[] DEFAULT NULL,
    k integer DEFAULT 10, min_similarity double precision DEFAULT 0, {_FILTER_ARGS})
RETURNS {_OUT} LANGUAGE plpgsql STABLE {path}
AS $fn$
DECLARE
  q vector;
  chips text[];
BEGIN
  IF positives IS NULL OR cardinality(positives) = 0 THEN
    RAISE EXCEPTION 'positives must be a non-empty array of observation ids (chip_id or chip_id@YYYY-MM-DD)'
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  -- each reference once, weighted so that q = 2 mean(p) - mean(n) over unit vectors (no temp
  -- table: readers may not create one)
  WITH p AS (SELECT DISTINCT o.chip_id, o.acquired FROM clay.resolve_observations(positives) o),
       n AS (SELECT DISTINCT o.chip_id, o.acquired FROM clay.resolve_observations(negatives) o),
       r AS (SELECT p.chip_id, p.acquired, 2.0 / (SELECT count(*) FROM p) AS w FROM p
             UNION ALL SELECT n.chip_id, n.acquired, -1.0 / (SELECT count(*) FROM n) FROM n),
       e AS (SELECT r.chip_id, r.w / nullif(vector_norm(o.embedding{as_vector}), 0) AS w,
                    o.embedding{as_vector} AS v
               FROM r JOIN clay.observations o ON o.chip_id = r.chip_id AND o.acquired = r.acquired)
  SELECT (SELECT array_agg(t.v ORDER BY t.i)::real[]::vector
            FROM (SELECT u.i, sum(u.x::float8 * e.w) AS v
                    FROM e, unnest(e.v::real[]) WITH ORDINALITY AS u(x, i)
                   WHERE e.w IS NOT NULL GROUP BY u.i) t),
         ARRAY(SELECT DISTINCT e.chip_id FROM e ORDER BY 1)
    INTO q, chips;
  RETURN QUERY SELECT * FROM clay._knn(q, k, min_similarity, chips, tiles, date_from, date_to, bbox);
END
$fn$"""


def _label_set_sql(path: str) -> list[str]:
    """clay.search_label_set (labelled search from clay.labels) and clay.detections."""
    return [f"""CREATE OR REPLACE FUNCTION clay.search_label_set(label_set text, k integer DEFAULT 10,
    min_similarity double precision DEFAULT 0, {_FILTER_ARGS})
RETURNS {_OUT} LANGUAGE plpgsql STABLE {path}
AS $fn$
DECLARE
  pos text[];
  neg text[];
BEGIN
  SELECT array_agg(l.chip_id || '@' || l.acquired) FILTER (WHERE l.label),
         array_agg(l.chip_id || '@' || l.acquired) FILTER (WHERE NOT l.label)
    INTO pos, neg FROM clay.labels l WHERE l.label_set = search_label_set.label_set;
  IF pos IS NULL THEN
    RAISE EXCEPTION 'label set % has no positive labels', quote_literal(label_set)
      USING ERRCODE = 'no_data_found', HINT = 'add some: clay-assets label add --set NAME --positive ID';
  END IF;
  RETURN QUERY SELECT * FROM clay.search_labeled(pos, neg, k, min_similarity, tiles, date_from,
                                                 date_to, bbox);
END
$fn$""",
            f"""CREATE OR REPLACE FUNCTION clay.detections(label_set text, min_score double precision DEFAULT 0.5)
RETURNS {_DETECTIONS_OUT} LANGUAGE plpgsql STABLE {path}
AS $fn$
BEGIN
  IF min_score IS NULL OR min_score = 'NaN'::float8 THEN
    RAISE EXCEPTION 'min_score must be a number in [0, 1]' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF NOT EXISTS (SELECT 1 FROM clay.labels l WHERE l.label_set = detections.label_set)
     AND NOT EXISTS (SELECT 1 FROM clay.detections d WHERE d.label_set = detections.label_set) THEN
    RAISE EXCEPTION 'label set % has no labels and no detections', quote_literal(label_set)
      USING ERRCODE = 'no_data_found',
            HINT = 'clay-assets label list shows the label sets; clay-assets label add creates one';
  END IF;
  RETURN QUERY SELECT d.chip_id, d.tile, d.acquired, d.score, d.model_version
    FROM clay.detections d WHERE d.label_set = detections.label_set AND d.score >= min_score
   ORDER BY d.score DESC, d.chip_id, d.acquired;
END
$fn$""",
            "COMMENT ON FUNCTION clay.search_labeled(text[], text[], integer, double precision, text[], "
            "date, date, double precision[]) IS 'k observations most like the positives and unlike the "
            "negatives: query = 2 mean(positives) - mean(negatives) of unit embeddings; ids are "
            "chip_id (latest) or chip_id@YYYY-MM-DD; labelled chips are excluded.'"]


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'

"""Postgres + pgvector store for chip embeddings, with SQL similarity search.

Modules, one thing each:

``server``       the embedded PostgreSQL server (start/stop, flavours, tuning, psql)
``cluster``      its owner-only access: service user, private socket, SCRAM password file
``postmaster``   finding a running server from its ``postmaster.pid``
``urls``         connection strings: password redaction, parsing, SQLAlchemy URLs
``migrations``   the ``clay`` schema version by version (incl. ``clay.class_areas``)
``functions``    the SQL search functions (``clay.similar_chips`` ...)
``rows``         the row schema and the rows of one partition built from its files
``columns``      a rows frame validated and turned into binary COPY columns
``pgcopy``       the binary COPY encoder
``store``        :class:`VectorStore`: connection, schema, counts, roles
``index``        the HNSW index and bulk loads (a mixin of VectorStore)
``loading``      partition loads and change events (a mixin of VectorStore)
``search``       similarity search and reads (a mixin of VectorStore)
``labels``       label sets, labelled search, probe detections (a mixin of VectorStore)
``stage``        :func:`load_vectors`, the framework-free "vectors" stage
``class_areas``  the writer of ``clay.class_areas``
``export``       GeoJSON of search results
``changes``      ``clay.changed_chips``: change between two dates by embeddings (migration 7)

Nothing here reads the environment: ``DATABASE_URL`` and ``CLAY_EMBEDDED_PG`` come in as the
``database_url=`` and ``flavour=`` parameters of :func:`database_url` / :func:`start_embedded`.
"""

from __future__ import annotations

from clay_core.vectordb.changes import changed_chips, changed_chips_geojson
from clay_core.vectordb.class_areas import write_class_areas
from clay_core.vectordb.export import results_geojson, write_geojson
from clay_core.vectordb.functions import DEFAULT_EF_SEARCH, FILTER_SAFETY
from clay_core.vectordb.labels import DETECTION_COLUMNS, check_label_set
from clay_core.vectordb.loading import LoadStats
from clay_core.vectordb.migrations import (
    CLASS_AREAS_TABLE,
    DETECTIONS_TABLE,
    HNSW_INDEX,
    HNSW_MAX_DIM,
    HNSW_MAX_DIM_HALFVEC,
    LABELS_TABLE,
    MIGRATIONS,
    SCHEMA,
    STORAGES,
    TABLE,
)
from clay_core.vectordb.rows import ROW_COLUMNS, partition_rows
from clay_core.vectordb.server import (
    EMBEDDED_FLAVOURS,
    database_url,
    embedded_flavour,
    embedded_psql,
    start_embedded,
    stop_embedded,
)
from clay_core.vectordb.stage import VectorLoad, load_vectors
from clay_core.vectordb.store import ChipNotFoundError, VectorStore
from clay_core.vectordb.urls import redact, sqlalchemy_url

__all__ = [
    "CLASS_AREAS_TABLE",
    "ChipNotFoundError",
    "DEFAULT_EF_SEARCH",
    "DETECTIONS_TABLE",
    "DETECTION_COLUMNS",
    "EMBEDDED_FLAVOURS",
    "FILTER_SAFETY",
    "HNSW_INDEX",
    "HNSW_MAX_DIM",
    "HNSW_MAX_DIM_HALFVEC",
    "LABELS_TABLE",
    "LoadStats",
    "MIGRATIONS",
    "ROW_COLUMNS",
    "SCHEMA",
    "STORAGES",
    "TABLE",
    "VectorLoad",
    "VectorStore",
    "check_label_set",
    "changed_chips",
    "changed_chips_geojson",
    "database_url",
    "embedded_flavour",
    "embedded_psql",
    "load_vectors",
    "partition_rows",
    "redact",
    "results_geojson",
    "sqlalchemy_url",
    "start_embedded",
    "stop_embedded",
    "write_class_areas",
    "write_geojson",
]

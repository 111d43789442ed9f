"""Postgres + pgvector as a resource: the embedded server by default, or ``DATABASE_URL``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from dagster import ConfigurableResource, EnvVar


class VectorDB(ConfigurableResource):
    """Postgres + pgvector. No ``database_url`` means the embedded server under ``clay_home``.

    ``database_url`` is given as ``EnvVar("DATABASE_URL")`` by the code location, so the
    password is never recorded in Dagster's run or resource snapshots.

    ``storage``: the embedding column type, ``"vector"`` (float32) or ``"halfvec"`` (float16,
    half the size; needs pgvector >= 0.7, e.g. the embedded server with
    ``CLAY_EMBEDDED_PG=pixeltable``). Unset (``CLAY_VECTOR_STORAGE``): keep the table's type,
    ``vector`` for a new table.  Set: a table stored the other way is converted in place (every
    row kept) the next time a store is opened.

    ``embedded_flavour`` (``CLAY_EMBEDDED_PG``): ``pgserver`` or ``pixeltable``; unset keeps the
    data dir's own.
    """

    database_url: Optional[str] = None
    clay_home: str = ".clay"
    storage: Optional[str] = None
    embedded_flavour: Optional[str] = None

    def url(self) -> str:
        from clay_core.vectordb import database_url

        given = self.database_url
        if isinstance(given, EnvVar):  # outside a run Dagster has not resolved it yet
            given = given.get_value()
        return database_url(Path(self.clay_home), database_url=given, flavour=self.embedded_flavour,
                            flavour_source="CLAY_EMBEDDED_PG")

    def store(self, dim: int):
        from clay_core.vectordb import VectorStore

        store = VectorStore(self.url(), dim)
        store.ensure_schema(storage=self.storage)
        return store

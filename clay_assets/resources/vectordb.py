"""Postgres + pgvector as a resource: the embedded server by default, or ``DATABASE_URL``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from dagster import ConfigurableResource


class VectorDB(ConfigurableResource):
    """Postgres + pgvector. Empty ``database_url`` means ``$DATABASE_URL`` or the embedded server.

    ``storage``: the embedding column type, ``"vector"`` (float32) or ``"halfvec"`` (float16,
    half the size; needs pgvector >= 0.7, e.g. the embedded server with
    ``CLAY_EMBEDDED_PG=pixeltable``). Unset (``CLAY_VECTOR_STORAGE``): keep the table's type,
    ``vector`` for a new table.  Set: a table stored the other way is converted in place (every
    row kept) the next time a store is opened.
    """

    database_url: Optional[str] = None
    clay_home: str = ".clay"
    storage: Optional[str] = None

    def url(self) -> str:
        from clay_core.vectordb import database_url

        if self.database_url:
            return self.database_url
        return database_url(Path(self.clay_home))

    def store(self, dim: int):
        from clay_core.vectordb import VectorStore

        store = VectorStore(self.url(), dim)
        store.ensure_schema(storage=self.storage)
        return store

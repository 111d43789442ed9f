"""A Dask cluster held for the length of a step, by the resources whose work fans out to it.

A resource with a ``dask_scheduler`` address connects when a step that uses it starts
(``setup_for_execution``: an unreachable scheduler fails the step at once, naming
``DASK_SCHEDULER_ADDRESS``) and closes the connection when the step ends
(``teardown_after_execution``). ``clay_core`` reuses the same client for every call in
between (:func:`clay_core.dask_cluster.client_for`), so the encoder weights reach the
workers once per step, not once per partition.
"""

from __future__ import annotations

from typing import Optional

from clay_core.dask_cluster import hold, release


class DaskClientHold:
    """Mixin for a ``ConfigurableResource`` with a ``dask_scheduler`` field."""

    dask_scheduler: Optional[str]

    def setup_for_execution(self, context) -> None:  # noqa: ARG002 - Dagster's hook signature
        if self.dask_scheduler:
            hold(self.dask_scheduler)

    def teardown_after_execution(self, context) -> None:  # noqa: ARG002
        if self.dask_scheduler:
            release(self.dask_scheduler)

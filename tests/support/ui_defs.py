"""Code location for the UI/backfill tests: the real definitions, with one flaky scene read.

``FlakySyntheticSource`` fails the first time it loads the scene of ``CLAY_FLAKY_PARTITION``
(a marker file under CLAY_HOME remembers that it did), like a transient network error.
"""

import os
from pathlib import Path

from dagster import Definitions

import clay_assets.definitions as _project
from clay_assets.resources import SyntheticSource
from clay_core.sources.synthetic import SyntheticSceneSource


class _Flaky(SyntheticSceneSource):
    def load_scene(self, ref, bands):
        target = os.environ.get("CLAY_FLAKY_PARTITION", "")
        marker = Path(os.environ["CLAY_HOME"]) / "flaky-failed-once"
        tile, _, day = target.partition("|")
        if ref.tile == tile and ref.datetime.date().isoformat() == day and not marker.exists():
            marker.write_text(ref.scene_id)
            raise ConnectionError(f"simulated transient read error for {ref.scene_id}")
        return super().load_scene(ref, bands)


class FlakySyntheticSource(SyntheticSource):
    def build(self):
        return _Flaky(super().build().world)


def _build() -> Definitions:
    # Only one Definitions object may live at module scope, so the project's stays inside.
    project = _project.defs
    resources = dict(project.resources)
    resources["source"] = FlakySyntheticSource(**_project.scene_source_from_env().model_dump())
    return Definitions(
        assets=list(project.assets),
        resources=resources,
        jobs=list(project.jobs),
        sensors=list(project.sensors),
        schedules=list(project.schedules),
        executor=project.executor,
    )


defs = _build()

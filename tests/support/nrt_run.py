"""Run the whole asset graph on the real nrt Sentinel-2 cube (executed in a subprocess by
test_nrt_pipeline.py, because tiles and dates are fixed when the code location loads)."""

import json
import os
import sys
from datetime import datetime, timedelta, timezone

from dagster import DagsterInstance

from clay_assets.definitions import build_resources, scene_source_from_env
from clay_assets.runner import materialize_graph


def main(out_path: str, n_windows: int) -> None:
    from clay_assets import config

    cfg = config.current()
    assert cfg.tiles == ("34TER",) and (cfg.start, cfg.end) == ("2015-07-27", "2021-01-04"), cfg
    source = scene_source_from_env()
    src = source.get_source()
    refs = src.list_scenes("34TER", datetime(2015, 1, 1, tzinfo=timezone.utc), datetime(2022, 1, 1, tzinfo=timezone.utc))
    windows = []
    for r in refs:
        d = r.datetime.date()
        w = (d - timedelta(days=d.weekday())).isoformat()
        if w not in windows:
            windows.append(w)
    windows = windows[:n_windows]
    resources = build_resources(home=os.environ["CLAY_HOME"], source=source, chip_size=32)
    summary = materialize_graph(["34TER"], windows, resources, DagsterInstance.get())
    json.dump({"windows": windows, "failures": summary.failures, "runs": summary.runs}, open(out_path, "w"))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))

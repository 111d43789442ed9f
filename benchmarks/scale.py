"""Scale benchmark of issue #15, in one run: change scoring vs history length, Dagster with the
full partition space on SQLite and Postgres, batched backfills, embedding throughput local vs Dask.

    nice -n 10 .venv/bin/python benchmarks/scale.py            # table
    .venv/bin/python benchmarks/scale.py --json [--quick]      # one JSON object (--quick: small sizes)
    ... [--only=dagster] [--sizes=EVENTS,BACKFILL,ITERATE,WINDOWS]   # one part; Dagster part's sizes

Parts (each its own module with ``run(quick) -> dict``): ``_scale_change`` (change-partition time
and peak memory at window 4 vs 104), ``_scale_dagster`` (500 tiles x 261 weeks, 30,000
materializations, SQLite vs Postgres; 52-window backfill per partition vs batched) and
``_scale_dask`` (chips/s local vs a loopback Dask cluster). A part that fails is reported as its
error, and the others still run.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PARTS = {"change": "_scale_change", "dagster": "_scale_dagster", "dask": "_scale_dask"}


def run_all(quick: bool, only: list[str] | None = None, sizes: tuple | None = None) -> dict:
    out: dict = {"quick": quick}
    for name, module in PARTS.items():
        if only and name not in only:
            continue
        t0 = time.perf_counter()
        try:
            mod = importlib.import_module(module)
            out[name] = mod.run(quick, sizes=sizes) if name == "dagster" and sizes else mod.run(quick)
        except Exception as exc:  # noqa: BLE001 - one part's failure is reported, the rest still run
            out[name] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-2000:]}
        out[name]["part_s"] = round(time.perf_counter() - t0, 1)
    return out


def _fmt(v) -> str:
    return "–" if v is None else (f"{v:,}" if isinstance(v, int) else str(v))


def table(r: dict) -> str:
    lines = ["| measurement | value |", "|---|---|"]

    def add(label, value):
        lines.append(f"| {label} | {_fmt(value)} |")

    for name in PARTS:
        part = r.get(name)
        if part is None:
            continue
        if "error" in part:
            add(f"{name}: error", part["error"].splitlines()[0])
            continue
        if name == "dagster":
            for storage in ("sqlite", "postgres"):
                s = part.get(storage, {})
                for key in ("partitions", "materialized", "events_per_s", "event_write_s", "definitions_load_s",
                            "sensor_tick_s", "materialized_query_s", "backfill_partitions", "backfill_submit_s",
                            "iteration_partitions", "iteration_s", "iteration_runs_queued",
                            "graphql_partition_stats_s", "partitions_page_s"):
                    add(f"dagster {storage}: {key}", s.get(key))
            for mode in ("per_partition", "batched"):
                b = part.get(f"backfill_{mode}", {})
                add(f"backfill of {b.get('partitions')} windows, {mode}: runs / wall s",
                    f"{b.get('runs')} / {b.get('wall_s')}")
            add("backfill runs, per partition ÷ batched", part.get("backfill_run_ratio"))
        else:
            for key, value in part.items():
                if not isinstance(value, (dict, list)):
                    add(f"{name}: {key}", value)
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    quick = "--quick" in argv
    only = [a.split("=", 1)[1] for a in argv if a.startswith("--only=")]
    sizes = next((tuple(int(x) for x in a.split("=", 1)[1].split(",")) for a in argv if a.startswith("--sizes=")), None)
    result = run_all(quick, only or None, sizes)
    print(json.dumps(result) if "--json" in argv else table(result))
    return 1 if any(isinstance(v, dict) and "error" in v for v in result.values()) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""`clay-assets label`: named label sets of chip observations, and the probe's detections.

    clay-assets label add --set NAME --positive ID... [--negative ID...]
    clay-assets label list [--set NAME]
    clay-assets label remove --set NAME (ID... | --all)
    clay-assets label score [--tiles T,U]     materialize `detections` for the stored partitions
    clay-assets label detections --set NAME [--min-score 0.5]

An observation id is ``chip_id@YYYY-MM-DD`` (that date's observation) or ``chip_id`` (its
latest); ``add`` stores the resolved date, so a label always names one observation.
"""

from __future__ import annotations

import argparse

from clay_assets.cli.common import database_url as _database_url
from clay_assets.cli.common import load_config as _config
from clay_assets.cli.common import query_store as _query_store


def split_ids(values: list[str] | None) -> list[str]:
    """IDs given space- or comma-separated (``--positive A B`` or ``--positive A,B``)."""
    return [v.strip() for arg in (values or []) for v in arg.split(",") if v.strip()]


def _store(write: bool = False):
    cfg = _config()
    store = _query_store(_database_url(cfg), cfg)
    if write:
        try:
            store.ensure_schema()  # an older database gets clay.labels (migration 6) first
        except BaseException:
            store.close()
            raise
    return store


def cmd_add(args: argparse.Namespace) -> int:
    store = _store(write=True)
    try:
        added = store.add_labels(args.set, split_ids(args.positive), split_ids(args.negative))
        sets = store.label_sets().set_index("label_set")
    finally:
        store.close()
    for r in added.itertuples():
        print(f"{'+' if r.label else '-'} {r.chip_id}@{r.acquired}")
    s = sets.loc[args.set]
    print(f"label set {args.set}: {s.positives} positive, {s.negatives} negative observations")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    store = _store()
    try:
        if args.set:
            rows = store.labels(args.set)
            for r in rows.itertuples():
                print(f"{'+' if r.label else '-'} {r.chip_id}@{r.acquired}" + ("" if r.tile else "  (no longer in clay.chips)"))
            if rows.empty:
                print(f"label set {args.set} has no labels")
            return 0
        sets = store.label_sets()
    finally:
        store.close()
    if sets.empty:
        print("no label sets yet: clay-assets label add --set NAME --positive ID --negative ID")
    for r in sets.itertuples():
        print(f"{r.label_set}\t{r.positives} positive\t{r.negatives} negative\t{r.detections} detections"
              + (f"\t{r.model_versions}" if r.model_versions else ""))
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    from clay_core.errors import ConfigError

    ids = split_ids(args.ids)
    if bool(ids) == bool(args.all):
        raise ConfigError("label remove: give the observation ids to unlabel, or --all to remove the whole set")
    store = _store(write=True)
    try:
        n = store.remove_labels(args.set, None if args.all else ids)
    finally:
        store.close()
    print(f"removed {n} label(s) from {args.set}")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    """Materialize `detections` for every partition with rows in clay.chips (one run each, on
    this CLAY_HOME's Dagster instance, so the runs and their metadata show in the UI)."""
    from dagster import DagsterInstance, materialize

    from clay_assets import config
    from clay_assets.definitions import ALL_ASSETS
    from clay_assets.partitions import make_key
    from clay_assets.resources.build import build_resources
    from clay_core.types import PartitionId

    cfg = _config()
    store = _store()
    try:
        keys = sorted(store.partition_chip_count())
    finally:
        store.close()
    tiles = {t.strip().upper() for t in args.tiles.split(",")} if args.tiles else None
    pids = [p for p in map(PartitionId.parse, keys) if tiles is None or p.tile in tiles]
    config.dagster_home(cfg)
    instance = DagsterInstance.get()
    resources = build_resources(cfg=cfg)
    failed = []
    try:
        from clay_assets.assets.detections import detections

        for pid in pids:
            res = materialize(ALL_ASSETS, selection=[detections], partition_key=make_key(pid.tile, pid.window),
                              resources=resources, instance=instance, raise_on_error=False)
            if not res.success:
                failed.append(pid.key)
    finally:
        instance.dispose()
    print(f"scored {len(pids) - len(failed)} partition(s)" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return cmd_list(argparse.Namespace(set=None)) or (1 if failed else 0)


def cmd_detections(args: argparse.Namespace) -> int:
    store = _store()
    try:
        rows = store.detections(args.set, args.min_score)
    finally:
        store.close()
    if rows.empty:
        print(f"no detections of {args.set} with score >= {args.min_score}")
    for r in rows.itertuples():
        print(f"{r.chip_id}\t{r.tile}\t{r.acquired}\t{r.score:.4f}\t{r.model_version}")
    return 0


def add_parsers(sub) -> None:
    lab = sub.add_parser("label", help="label sets of chip observations; the probe's detections")
    cmds = lab.add_subparsers(dest="label_cmd", required=True)
    a = cmds.add_parser("add", help="label observations positive or negative in a named set")
    a.add_argument("--set", required=True, help="label set name, e.g. clearings")
    a.add_argument("--positive", nargs="+", help="observation ids: chip_id@YYYY-MM-DD, or chip_id (its latest)")
    a.add_argument("--negative", nargs="+", help="observation ids, as for --positive")
    a.set_defaults(fn=cmd_add)
    ls = cmds.add_parser("list", help="label sets with their counts, or one set's labels")
    ls.add_argument("--set", help="list this set's labels")
    ls.set_defaults(fn=cmd_list)
    rm = cmds.add_parser("remove", help="unlabel observations, or remove a whole set")
    rm.add_argument("--set", required=True)
    rm.add_argument("ids", nargs="*", help="observation ids to unlabel")
    rm.add_argument("--all", action="store_true", help="remove every label of the set (and its detections)")
    rm.set_defaults(fn=cmd_remove)
    sc = cmds.add_parser("score", help="materialize `detections` (the probe per label set) for the stored partitions")
    sc.add_argument("--tiles", help="only these tiles, comma-separated")
    sc.set_defaults(fn=cmd_score)
    d = cmds.add_parser("detections", help="the probe's detections of a label set, best first")
    d.add_argument("--set", required=True)
    d.add_argument("--min-score", type=float, default=0.5)
    d.set_defaults(fn=cmd_detections)

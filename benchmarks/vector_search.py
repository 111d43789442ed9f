"""Benchmark: loading and searching chip embeddings in Postgres/pgvector (clay_core.vectordb).

One run measures, on synthetic Clay-like embeddings (dim 768, Gaussian mixture with ~1000
centres, queries are fresh draws never in the table), for several server configurations
(``--configs flavour:storage``, each in its own throw-away embedded server):

* **load**: rows/s and CPU per row of the SQLAlchemy ORM (``session.add_all`` on a subset,
  ``--orm-rows``, extrapolated; the baseline, per config so the ratio is against the same
  server) vs ``VectorStore.load_partition`` on one connection (table with its filter indexes, no
  HNSW index; direct and ``staging=True``) vs the **bulk backfill**
  ``with store.bulk_load(): store.load_partitions(parts, workers=W)`` for each ``--workers``
  (rows/s of the loads inside the block only; total CPU of this process + every process of that
  postgres); replacing 10 existing partitions; replacing one with the HNSW index in place.
  Partitions are (date, tile) groups of ~``--chips-per-partition`` chips.
* **index build**: the (re)builds at the exit of ``bulk_load()`` (filter indexes + HNSW, timed
  separately), vs faiss ``IndexHNSWFlat`` (same m / efConstruction) in-process.
* **queries**: per-query latency p50/p95 (client side, prepared statements) and recall@10
  against exact numpy search, unfiltered (``clay.similar_to_vector`` and the bare
  ``ORDER BY embedding <=> q LIMIT k``, interleaved query by query, for each ``--ef-search``),
  and with each tile/date filter of ``--filters`` (default 10% and 1% of the rows), through
  the function (pgvector >= 0.8: iterative index scan, or exact below 4% selectivity; 0.6: each
  ``--oversample``) and, on 0.8, the bare ``WHERE .. ORDER BY .. LIMIT`` with
  ``hnsw.iterative_scan = relaxed_order`` (custom plans), for each ``--filter-ef``; the
  **SQL-function overhead** = function p50 / bare p50 at the same ef_search and filter (target
  <= 1.2x); a server-side-only cost at ``--server-ef`` (all queries in one statement,
  ``LATERAL``, divided by the number of queries: the search without client round trips).  With
  ``--binary``: the Hamming HNSW index over ``binary_quantize(embedding)`` (build time, size) and
  queries taking ``--rerank`` candidates from it, re-ranked by exact cosine.  faiss HNSW (1
  thread per query, filtered with ``IDSelectorBatch``) once per run as the in-process reference.
* a summary: one markdown table per section across configs, and the issue's **targets**
  (>= 100k rows/s and >= 10x ORM; p50 <= 5 ms at recall@10 >= 0.98 and within 3x of faiss at
  equal recall; filtered recall@10 >= 0.95), each marked met / missed.

    .venv/bin/python benchmarks/vector_search.py                      # N=100k, 3 configs, ~10 min on 2 cores
    nice -n 10 .venv/bin/python benchmarks/vector_search.py --n 1000000 --configs pixeltable:halfvec \\
        --loads bulk --workers 2 --parallel-workers 1 --binary --ef-search 40 100 200 400 \\
        --rerank 100 200 400 1000                                    # N=1M: one config, one build
    .venv/bin/python benchmarks/vector_search.py --n 10000 --queries 50 --orm-rows 500   # quick
    .venv/bin/python benchmarks/vector_search.py --configs pgserver:vector --no-faiss
    .venv/bin/python benchmarks/vector_search.py --url "$DATABASE_URL" --storage halfvec

Configs (default ``pgserver:vector pixeltable:vector pixeltable:halfvec``): ``pgserver`` =
PostgreSQL 16.2 + pgvector 0.6.2, ``pixeltable`` = PostgreSQL 16.14 + pgvector 0.8.5; storage
``vector`` (float32) or ``halfvec`` (float16, pgvector >= 0.7).  A config whose package is not
installed (or halfvec on pgvector < 0.7) is skipped with a note.  Each embedded server lives in
a temp dir under /tmp and is stopped and removed afterwards.  ``--url`` benchmarks that server
instead (one config, ``--storage``; a database ``clay_bench`` is created there and dropped).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import math
import os
import shutil
import sys
import tempfile
import time
import traceback
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from clay_core.vectordb import STORAGES, VectorStore, redact, start_embedded, stop_embedded  # noqa: E402
from clay_core.vectordb.functions import FILTER_SAFETY  # noqa: E402
from clay_core.vectordb.server import FLAVOUR_MODULES  # noqa: E402
from clay_core.vectordb.index import DEFAULT_EF_CONSTRUCTION, DEFAULT_M  # noqa: E402
DEFAULT_CONFIGS = ["pgserver:vector", "pixeltable:vector", "pixeltable:halfvec"]
TARGET_ROWS_S = 100_000
TARGET_VS_ORM = 10.0
TARGET_P50_MS = 5.0
TARGET_RECALL = 0.98
TARGET_RECALL_FILTERED = 0.95
TARGET_VS_FAISS = 3.0
TARGET_OVERHEAD = 1.2  # clay.similar_* p50 / the bare ORDER BY .. LIMIT p50, same ef_search


# ------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------


def mixture(n: int, dim: int, centres: int, spread: float, rank: int, seed: int) -> tuple[np.ndarray, dict]:
    """n draws of a Gaussian mixture: centre ~ N(0, I) + spread * N(0, I) (+ optional low-rank
    within-cluster variation).  spread 0.5 puts same-cluster cosine similarity near 0.8."""
    rng = np.random.default_rng(seed)
    model = {
        "c": rng.normal(size=(centres, dim)).astype(np.float32),
        "spread": spread,
        "basis": rng.normal(size=(rank, dim)).astype(np.float32) if rank else None,
    }
    return draw(model, n, rng), model


def draw(model: dict, n: int, rng: np.random.Generator) -> np.ndarray:
    c = model["c"]
    x = c[rng.integers(0, len(c), n)]
    x = x + model["spread"] * rng.normal(size=x.shape).astype(np.float32)
    if model["basis"] is not None:
        x += rng.normal(size=(n, len(model["basis"]))).astype(np.float32) @ model["basis"]
    return x


def tile_name(t: int) -> str:
    """MGRS-like tile ids, distinct for t < 500 (the first 50 as in earlier runs)."""
    if t < 500:
        return f"3{t % 10}U{'FGHJK'[t // 10 % 5]}{'QRSTUVWXYZ'[t // 50]}"
    return f"T{t:06d}"


def layout(n: int, chips_per_partition: int, dates: list[date]) -> tuple[pd.DataFrame, int, int]:
    """Chip rows in partitions (date, tile) of ~chips_per_partition chips: as many tiles as
    needed for n rows over all dates (every date gets rows, so partitions are smaller when n is
    small).  Returns (frame, tiles, chips per partition)."""
    tiles = max(1, math.ceil(n / (chips_per_partition * len(dates))))
    per = math.ceil(n / (tiles * len(dates)))
    side = int(np.ceil(np.sqrt(per)))
    rows = []
    i = 0
    for d in dates:
        for t in range(tiles):
            tile = tile_name(t)
            m = min(per, n - i)
            if m <= 0:
                break
            k = np.arange(m)
            r, c = k // side, k % side
            west = 2.0 + (t % 100) * 1.5 + c * 0.035
            south = 45.0 - (t // 100) * 1.0 + r * 0.023
            rows.append(pd.DataFrame({
                "chip_id": [f"{tile}_r{a:02d}c{b:02d}" for a, b in zip(r, c)],
                "tile": tile, "acquired": d,
                "acquired_at": pd.Timestamp(d, tz="UTC") + pd.Timedelta(hours=10, minutes=40),
                "partition_key": f"{d.isoformat()}|{tile}",
                "west": west, "south": south, "east": west + 0.035, "north": south + 0.023,
                "crs": "EPSG:32631", "cloud_fraction": 0.05, "nodata_fraction": 0.0,
                "thumbnail_uri": [f"s3://bucket/thumbs/{tile}/{d}/{x}.png" for x in k],
                "cube_uri": f"s3://bucket/cubes/{tile}/{d}.zarr", "model_id": "clay-v1.5-bench",
                "cosine_to_baseline": 0.9, "harmonic_deviation": 0.1, "change_score": 1.0,
                "change_flag": False,
            }))
            i += m
    return pd.concat(rows, ignore_index=True), tiles, per


def exact_topk(xn: np.ndarray, qn: np.ndarray, k: int, masks: dict | None = None) -> dict:
    """Exact cosine top-k of normalised queries over normalised rows: {None: unfiltered, name:
    within masks[name] for each mask}; one pass over the rows for all of them."""
    masks = {None: None, **(masks or {})}
    out = {name: np.empty((len(qn), k), np.int64) for name in masks}
    for s in range(0, len(qn), 64):
        sims_all = qn[s:s + 64] @ xn.T
        for name, mask in masks.items():
            sims = sims_all if mask is None else np.where(mask, sims_all, -np.inf)
            part = np.argpartition(-sims, k, axis=1)[:, :k]
            order = np.argsort(-np.take_along_axis(sims, part, 1), axis=1)
            out[name][s:s + 64] = np.take_along_axis(part, order, 1)
    return out


def make_filter(frame: pd.DataFrame, dates: list[date], tiles: int, fraction: float) -> dict:
    """A tile/date filter keeping about ``fraction`` of the rows, as the product's filters do: a
    window of round(fraction * dates) dates over all tiles, or (below one date's share) one date
    and round(fraction * dates * tiles) of the tiles."""
    nd = len(dates)
    if fraction * nd >= 1:
        w, tile_list = int(round(fraction * nd)), None
    else:
        w = 1
        tile_list = [tile_name(t) for t in range(max(1, int(round(fraction * nd * tiles))))]
    d_from, d_to = dates[nd // 2], dates[nd // 2 + w - 1]
    acq = frame["acquired"]
    mask = ((acq >= d_from) & (acq <= d_to)).to_numpy()
    if tile_list is not None:
        mask = mask & frame["tile"].isin(tile_list).to_numpy()
    what = f"{w} of {nd} dates" + ("" if tile_list is None else f", {len(tile_list)} of {tiles} tiles")
    return {"name": f"{fraction:.0%}", "tiles": tile_list, "d_from": d_from, "d_to": d_to,
            "mask": mask, "fraction": float(mask.mean()), "what": what}


def recall(found: list[list[int]], truth: np.ndarray) -> float:
    k = truth.shape[1]
    return float(np.mean([len(set(f) & set(t)) / k for f, t in zip(found, truth)]))


class Data:
    """Everything every config shares: rows, vectors, queries, ground truth."""

    def __init__(self, args):
        self.x, model = mixture(args.n, args.dim, args.centres, args.spread, args.rank, args.seed)
        self.dates = [date(2024, 3, 1) + timedelta(days=5 * i) for i in range(args.dates)]
        self.frame, self.tiles, self.per = layout(args.n, args.chips_per_partition, self.dates)
        # rows are stored normalised: cosine search is unchanged, and one copy of the vectors
        # (3 GB at 1M x 768) serves the loads, FAISS and the ground truth
        self.x = self.x[: len(self.frame)]
        self.x /= np.linalg.norm(self.x, axis=1, keepdims=True)
        self.xn = self.x
        rng = np.random.default_rng(args.seed + 1)
        self.q = draw(model, args.queries, rng)
        self.qn = self.q / np.linalg.norm(self.q, axis=1, keepdims=True)
        self.filters = [make_filter(self.frame, self.dates, self.tiles, f) for f in args.filters]
        truth = exact_topk(self.xn, self.qn, args.k, {f["name"]: f["mask"] for f in self.filters})
        self.truth = truth[None]
        for f in self.filters:
            f["truth"] = truth[f["name"]]
        self.nn_cosine_p50 = float(np.median([(self.qn[i] @ self.xn[self.truth[i, 0]])
                                              for i in range(len(self.qn))]))
        self.groups = list(self.frame.groupby("partition_key", sort=False).indices.items())
        self.row_index = {(c, a): i for i, (c, a) in
                          enumerate(zip(self.frame["chip_id"], self.frame["acquired"]))}

        # each partition's rows and embeddings, sliced once: the load paths (ORM included) are
        # timed from rows in memory, not from slicing the big frame
        # (a partition's rows are contiguous: a slice is a view, no second copy of the vectors)
        self._parts = {key: (self.frame.iloc[idx].reset_index(drop=True),
                             self.x[idx[0]: idx[-1] + 1] if idx[-1] - idx[0] + 1 == len(idx) else self.x[idx])
                       for key, idx in self.groups}

    def parts(self, only=None):
        """(partition_key, rows, embeddings) of every partition (or of ``only``'s keys)."""
        for key, _ in (only or self.groups):
            yield (key, *self._parts[key])


# ------------------------------------------------------------------------------------------
# CPU meters
# ------------------------------------------------------------------------------------------


def postmaster_of(backend_pid: int | None):
    """psutil.Process of the postmaster that forked ``backend_pid``; None for a remote server or
    without permission."""
    if backend_pid is None:
        return None
    try:
        import psutil

        pm = psutil.Process(backend_pid).parent()
        if pm is None or "postgres" not in pm.name():
            return None
        server_cpu(pm)
        return pm
    except Exception:  # noqa: BLE001 - remote server, no permission, no psutil
        return None


def server_cpu(pm) -> float:
    """CPU seconds of a postmaster and all its processes, live (backends, walwriter,
    checkpointer, parallel workers) and exited (reaped: counted in the postmaster's
    children_user/system), so backends that come and go during a measurement count."""
    import psutil

    t = pm.cpu_times()
    total = t.user + t.system + t.children_user + t.children_system
    for c in pm.children():
        try:
            ct = c.cpu_times()
            total += ct.user + ct.system
        except psutil.Error:
            pass
    return total


class Meter:
    """Wall time, CPU of this process (the client, all threads), of one server backend and of
    every process of the server (psutil; only when the server runs on this machine).  CPU per
    row does not depend on what else the machine is doing, wall time does."""

    def __init__(self, backend_pid: int | None = None, postmaster=None):
        self.proc = None
        self.pm = postmaster
        if backend_pid is not None:
            try:
                import psutil

                self.proc = psutil.Process(backend_pid)
                self.proc.cpu_times()
            except Exception:  # noqa: BLE001 - remote server or no permission
                self.proc = None

    def _backend(self) -> float:
        if self.proc is None:
            return float("nan")
        t = self.proc.cpu_times()
        return t.user + t.system

    def _all(self) -> float:
        return float("nan") if self.pm is None else server_cpu(self.pm)

    def start(self) -> "Meter":
        self.w0, self.c0, self.b0, self.a0 = (time.perf_counter(), time.process_time(),
                                              self._backend(), self._all())
        return self

    def stop(self) -> "Meter":
        self.wall = time.perf_counter() - self.w0
        self.client = time.process_time() - self.c0
        self.backend = self._backend() - self.b0
        self.server = self._all() - self.a0
        return self

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def record(res: dict, key: str, rows: int, m: Meter, **extra) -> dict:
    r = res[key] = {
        "rows": rows, "wall_s": m.wall, "rows_per_s": rows / m.wall,
        "client_us_per_row": m.client / rows * 1e6,
        "backend_us_per_row": m.backend / rows * 1e6,  # the one connection's backend (single loads)
        "server_us_per_row": m.server / rows * 1e6,  # every process of the server
        **extra,
    }
    backend = ("" if not math.isfinite(r["backend_us_per_row"])
               else f" (its backend {r['backend_us_per_row']:.0f} us)")
    print(f"  {key}: {rows} rows, {m.wall:.2f}s = {r['rows_per_s']:,.0f} rows/s; CPU per row: "
          f"client {r['client_us_per_row']:.0f} us + server {fmt(r['server_us_per_row'], '.0f')} us"
          f"{backend}", flush=True)
    return r


def fmt(v, spec: str = ".2f", na: str = "n/a") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return na
    return format(v, spec)


def backend_pid(conn) -> int:
    return conn.execute("SELECT pg_backend_pid()").fetchone()[0]


def reset_table(url: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as c:
        c.execute("TRUNCATE clay.observations")
        c.execute("CHECKPOINT")


# ------------------------------------------------------------------------------------------
# loads
# ------------------------------------------------------------------------------------------


def load_orm(url: str, frame: pd.DataFrame, x: np.ndarray, dim: int, storage: str) -> Meter:
    """SQLAlchemy ORM: one mapped object per row, session.add_all + commit (batched
    insertmanyvalues, the ORM's fast path).  The mapped class has the table's columns as they
    are on the server (reflected names, so it follows schema migrations)."""
    from pgvector.sqlalchemy import HALFVEC, VECTOR
    from sqlalchemy import Boolean, Date, DateTime, Float, Text, create_engine, text
    from sqlalchemy.orm import DeclarativeBase, Session, mapped_column

    from clay_core.vectordb.urls import sqlalchemy_url

    types = {
        "chip_id": Text, "acquired": Date, "tile": Text, "acquired_at": DateTime(timezone=True),
        "partition_key": Text, "west": Float, "south": Float, "east": Float, "north": Float,
        "lon": Float, "lat": Float, "crs": Text, "cloud_fraction": Float, "nodata_fraction": Float,
        "thumbnail_uri": Text, "cube_uri": Text, "model_id": Text, "cosine_to_baseline": Float,
        "harmonic_deviation": Float, "change_score": Float, "change_flag": Boolean,
        "geom_wkt": Text, "embedding": HALFVEC(dim) if storage == "halfvec" else VECTOR(dim),
    }
    engine = create_engine(sqlalchemy_url(url))
    with engine.connect() as c:  # pool of one: the session below reuses this backend
        pid = c.execute(text("SELECT pg_backend_pid()")).scalar()
        have = set(c.execute(text(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = 'clay' "
            "AND table_name = 'observations'")).scalars())
    unknown = have - set(types) - {"loaded_at"}
    if unknown:
        raise RuntimeError(f"load_orm does not know the column(s) {sorted(unknown)} of clay.observations")
    cols = [c for c in types if c in have]

    class Base(DeclarativeBase):
        pass

    Observation = type("Observation", (Base,), {
        "__tablename__": "observations", "__table_args__": {"schema": "clay"},
        **{c: mapped_column(types[c], primary_key=c in ("chip_id", "acquired")) for c in cols},
    })
    recs = frame.to_dict("records")
    meter = Meter(pid, postmaster_of(pid))
    with meter, Session(engine) as session:
        objs = []
        for r, v in zip(recs, x):
            w, s, e, n = r["west"], r["south"], r["east"], r["north"]
            vals = {**r, "acquired_at": r["acquired_at"].to_pydatetime(), "lon": (w + e) / 2,
                    "lat": (s + n) / 2, "embedding": v,
                    "geom_wkt": f"POLYGON(({w} {s}, {e} {s}, {e} {n}, {w} {n}, {w} {s}))"}
            objs.append(Observation(**{c: vals[c] for c in cols}))
        session.add_all(objs)
        session.commit()
    engine.dispose()
    return meter


def run_loads(args, data: Data, url: str, store: VectorStore, res: dict) -> None:
    import psycopg

    frame, x = data.frame, data.x
    load = res["load"] = {}
    pid = backend_pid(store._conn)
    pm = postmaster_of(pid)

    keys = data.groups[:10]
    if args.loads == "all":  # the comparisons; "bulk" = only the backfill + build (1M)
        # ORM subset first (separate partition keys / chip ids; deleted afterwards)
        orm_n = min(args.orm_rows, len(frame))
        orm_frame = frame.iloc[:orm_n].copy()
        orm_frame["chip_id"] = "orm_" + orm_frame["chip_id"]
        orm_frame["partition_key"] = "orm|" + orm_frame["partition_key"]
        m = load_orm(url, orm_frame, x[:orm_n], args.dim, res["storage"])
        with psycopg.connect(url, autocommit=True) as c:
            c.execute("DELETE FROM clay.observations WHERE partition_key LIKE 'orm|%'")
            c.execute("VACUUM clay.observations")
        record(load, "orm", orm_n, m)

        # one connection, into the table with its filter indexes (no HNSW index)
        for staging, key in ((False, "copy_direct"), (True, "copy_staging")):
            reset_table(url)
            with Meter(pid, pm) as m:
                for k, rows, emb in data.parts():
                    store.load_partition(k, rows, emb, staging=staging)
            record(load, key, len(frame), m)

        # replacing existing partitions (DELETE + INSERT of the same keys), modes interleaved
        nre = sum(len(i) for _, i in keys)
        meters = {True: [], False: []}
        for _ in range(2):
            for staging in (True, False):
                with Meter(pid, pm) as m:
                    for k, rows, emb in data.parts(keys):
                        store.load_partition(k, rows, emb, staging=staging)
                meters[staging].append(m)
        for staging, key in ((False, "replace_direct"), (True, "replace_staging")):
            record(load, key, nre, min(meters[staging], key=lambda mm: mm.wall))

    # bulk backfill: bulk_load() drops HNSW + filter indexes, load_partitions over W connections,
    # indexes rebuilt at exit (= the index build time)
    res["build"] = []
    for workers in args.workers:
        reset_table(url)
        hnsw_s: list[float] = []
        orig = store.rebuild_index

        def timed_rebuild(*a, **kw):
            s = orig(*a, **kw)
            hnsw_s.append(s)
            return s

        store.rebuild_index = timed_rebuild  # what bulk_load's exit calls; timed separately
        load_m, build_m = Meter(None, pm), Meter(None, pm)
        try:
            with store.bulk_load(m=args.m, ef_construction=args.ef_construction,
                                 parallel_workers=args.parallel_workers,
                                 maintenance_work_mem=args.maintenance_work_mem):
                with load_m:
                    stats = store.load_partitions(data.parts(), workers=workers)
                print(f"  loaded {stats.rows:,} rows with W={workers} in {load_m.wall:.0f}s; "
                      "building the indexes ...", flush=True)
                build_m.start()
                progress = BuildProgress(url).start()
            progress.stop()
            build_m.stop()
        finally:
            del store.rebuild_index
        assert stats.rows == len(frame), (stats.rows, len(frame))
        record(load, f"bulk_w{workers}", stats.rows, load_m, workers=workers)
        b = {"workers": workers, "total_s": build_m.wall, "hnsw_s": hnsw_s[0] if hnsw_s else float("nan"),
             "cpu_s": build_m.server + build_m.client}
        b["filter_s"] = b["total_s"] - b["hnsw_s"]
        res["build"].append(b)
        print(f"  index (re)build at bulk_load exit after W={workers}: filter indexes "
              f"{b['filter_s']:.1f}s + HNSW (m={args.m}, ef_construction={args.ef_construction}) "
              f"{b['hnsw_s']:.1f}s = {b['total_s']:.1f}s wall, {fmt(b['cpu_s'], '.1f')}s CPU", flush=True)

    with psycopg.connect(url, autocommit=True) as c:
        c.execute("VACUUM ANALYZE clay.observations")
        res["table_mb"] = c.execute("SELECT pg_table_size('clay.observations') / 2^20").fetchone()[0]
        res["index_mb"] = c.execute(
            "SELECT pg_relation_size('clay.observations_embedding_hnsw_idx') / 2^20").fetchone()[0]
        c.execute("SELECT count(*) FROM clay.observations")  # warm the heap a little
    res["partitions"] = len(data.groups)

    if args.binary:
        build_binary(args, url, res)
    if args.loads == "all":
        # incremental load with the HNSW index in place (Dagster re-materialising a partition)
        key, idx = keys[0]
        with Meter(pid, pm) as m:
            store.load_partition(key, frame.iloc[idx], x[idx])
        record(load, "replace_with_hnsw", len(idx), m)


BQ_INDEX = "observations_embedding_bq_idx"


def build_binary(args, url: str, res: dict) -> None:
    """The Hamming HNSW index over binary_quantize(embedding) (same m, ef_construction)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as c:
        if args.parallel_workers is not None:
            c.execute(f"SET max_parallel_maintenance_workers = {int(args.parallel_workers)}")
        c.execute(f"SET maintenance_work_mem = '{args.maintenance_work_mem or '1GB'}'")
        print("  building the binary-quantized HNSW index ...", flush=True)
        progress = BuildProgress(url).start()
        t0 = time.perf_counter()
        c.execute(f"CREATE INDEX {BQ_INDEX} ON clay.observations USING hnsw "
                  f"((binary_quantize(embedding)::bit({args.dim})) bit_hamming_ops) "
                  f"WITH (m = {int(args.m)}, ef_construction = {int(args.ef_construction)})")
        res["bq_build_s"], res["binary"] = time.perf_counter() - t0, True
        progress.stop()
        res["bq_index_mb"] = c.execute(f"SELECT pg_relation_size('clay.{BQ_INDEX}') / 2^20").fetchone()[0]
    print(f"  binary-quantized HNSW: {res['bq_build_s']:.1f}s, {res['bq_index_mb']:.0f} MB", flush=True)


class BuildProgress:
    """Prints pg_stat_progress_create_index every ``every`` seconds from a thread (a 1M-row HNSW
    build takes many minutes)."""

    def __init__(self, url: str, every: float = 30.0):
        import threading

        self.url, self.every, self.stop_ev = url, every, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "BuildProgress":
        self.t0 = time.perf_counter()
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stop_ev.set()
        self.thread.join(5)

    def _run(self) -> None:
        import psycopg

        try:
            with psycopg.connect(self.url, autocommit=True) as c:
                while not self.stop_ev.wait(self.every):
                    for rel, phase, done, total in c.execute(
                            "SELECT i.relname, p.phase, p.tuples_done, p.tuples_total "
                            "FROM pg_stat_progress_create_index p "
                            "LEFT JOIN pg_class i ON i.oid = p.index_relid").fetchall():
                        print(f"    [{time.perf_counter() - self.t0:5.0f}s] building {rel}: {phase}"
                              f" {done:,}/{total:,} tuples", flush=True)
        except Exception as exc:  # noqa: BLE001 - progress is best effort
            print(f"    (build progress unavailable: {exc})", flush=True)


# ------------------------------------------------------------------------------------------
# queries
# ------------------------------------------------------------------------------------------


def timed_queries(conn, sql: str, params_list, row_index: dict, setup: list[str] = ()) -> tuple[np.ndarray, list]:
    lat, found = [], []
    with conn.cursor() as cur:
        for s in setup:
            cur.execute(s)
        for p in params_list[: min(20, len(params_list))]:  # warm-up (prepare + cache)
            cur.execute(sql, p, prepare=True)
            cur.fetchall()
        for p in params_list:
            t0 = time.perf_counter()
            cur.execute(sql, p, prepare=True)
            rows = cur.fetchall()
            lat.append(time.perf_counter() - t0)
            found.append([row_index[(r[0], r[1])] for r in rows])
    return np.asarray(lat) * 1000, found


def timed_interleaved(conn, arms: list[tuple[str, list]], row_index: dict,
                      setup: list[str] = ()) -> list[tuple[np.ndarray, list]]:
    """Like timed_queries for several (sql, params_list) arms over the same queries, run in turn
    (arm 1, arm 2, arm 1, ...) so that a load spike from the machine's other work hits every arm
    alike.  Arm a starts its queries a/len(arms) of the way through the list, so consecutive
    statements never search for the same vector (the second would find the first's pages in
    the CPU caches)."""
    n, na = len(arms[0][1]), len(arms)
    lat = [[] for _ in arms]
    found = [[None] * n for _ in arms]
    with conn.cursor() as cur:
        for s in setup:
            cur.execute(s)
        for j in list(range(min(20, n))) + list(range(n)):  # 20 warm-up rounds, then n timed
            timed = len(lat[0]) + 1 > min(20, n)
            for a, (sql, params) in enumerate(arms):
                i = (j + a * n // na) % n
                t0 = time.perf_counter()
                cur.execute(sql, params[i], prepare=True)
                rows = cur.fetchall()
                lat[a].append(time.perf_counter() - t0)
                if timed:
                    found[a][i] = [row_index[(r[0], r[1])] for r in rows]
    w = min(20, n)
    return [(np.asarray(lat[a][w:]) * 1000, found[a]) for a in range(na)]


def pct(a: np.ndarray, p: float) -> float:
    return float(np.percentile(a, p))


def qrow(engine: str, filt: str, ef: int | None, label: str, lat: np.ndarray, rec: float, **extra) -> dict:
    return {"engine": engine, "filter": filt, "ef_search": ef, "label": label,
            "p50_ms": pct(lat, 50), "p95_ms": pct(lat, 95), "recall_at_k": rec, **extra}


def server_side(conn, args, data: Data, storage: str, pg_cast: str) -> dict:
    """All queries in one statement (temp table of query vectors + LATERAL): search cost
    without client round trips, per query; best of 3 runs."""
    from pgvector import Vector

    k, ef = args.k, args.server_ef
    out = {"ef_search": ef}
    conn.execute("DROP TABLE IF EXISTS pg_temp.bench_q")
    conn.execute(f"CREATE TEMP TABLE bench_q (i integer PRIMARY KEY, v vector({args.dim}))")
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO bench_q VALUES (%s, %s)",
                        [(i, Vector(v)) for i, v in enumerate(data.q)])
    conn.execute("ANALYZE bench_q")
    statements = {
        "ORDER BY <=> LIMIT": (
            f"SET hnsw.ef_search = {int(ef)}",
            "SELECT q.i, s.chip_id, s.acquired FROM bench_q q CROSS JOIN LATERAL "
            f"(SELECT o.chip_id, o.acquired FROM clay.observations o ORDER BY o.embedding <=> "
            f"q.v{pg_cast} LIMIT {int(k)}) s"),
        "similar_to_vector": (
            f"SET clay.ef_search = {int(ef)}",
            "SELECT q.i, s.chip_id, s.acquired FROM bench_q q CROSS JOIN LATERAL "
            f"clay.similar_to_vector(q.v, {int(k)}, -1) s"),
    }
    for engine, (setup, stmt) in statements.items():
        conn.execute(setup)
        if engine.startswith("ORDER"):
            plan = conn.execute("EXPLAIN (FORMAT JSON) " + stmt).fetchone()[0]
            if "observations_embedding_hnsw_idx" not in json.dumps(plan):
                print(f"  WARNING: the server-side {engine} statement does not use the HNSW index",
                      flush=True)
                out["no_index"] = True
        best, rows = float("inf"), []
        for _ in range(3):
            t0 = time.perf_counter()
            rows = conn.execute(stmt).fetchall()
            best = min(best, time.perf_counter() - t0)
        found = [[] for _ in range(len(data.q))]
        for i, c, a in rows:
            found[i].append(data.row_index[(c, a)])
        out[engine] = {"ms_per_query": best * 1000 / len(data.q), "recall_at_k": recall(found, data.truth)}
    conn.execute("DROP TABLE pg_temp.bench_q")
    return out


def run_filtered(conn, args, data: Data, res: dict, f: dict, qv: list, pg_cast: str) -> None:
    """One tile/date filter: through clay.similar_to_vector (the product's path: iterative scan
    on pgvector >= 0.8, oversampling before, exact below ~4% selectivity) for each --filter-ef,
    and the bare ``WHERE .. ORDER BY <=> LIMIT`` with hnsw.iterative_scan = relaxed_order."""
    k, rows = args.k, res["queries"]
    fn_f = "SELECT chip_id, acquired FROM clay.similar_to_vector(%s, %s, -1, %s, %s, %s)"
    fparams = [(v, k, f["tiles"], f["d_from"], f["d_to"]) for v in qv]
    if not res["iterative"]:
        for os_ in args.oversample:
            ef = args.filter_ef[0]
            label = f"~{max(ef, int(np.ceil(os_ * k / f['fraction'])))} (oversample {os_:g})"
            lat, found = timed_queries(conn, fn_f, fparams, data.row_index,
                                       [f"SET clay.ef_search = {int(ef)}",
                                        f"SET clay.filter_oversample = {float(os_)}"])
            rows.append(qrow("similar_to_vector", f["name"], ef, label, lat, recall(found, f["truth"]),
                             oversample=os_))
            print(f"  filter {f['name']} ({f['what']}) {label}: p50 {rows[-1]['p50_ms']:.2f} ms recall "
                  f"{rows[-1]['recall_at_k']:.3f}", flush=True)
        conn.execute("RESET clay.filter_oversample")
        return
    # pgvector >= 0.8: the function and the bare query with an iterative scan, interleaved
    tile_sql = "" if f["tiles"] is None else "tile = ANY(%s) AND "
    raw = (f"SELECT chip_id, acquired FROM clay.observations WHERE {tile_sql}acquired >= %s AND "
           f"acquired <= %s ORDER BY embedding <=> %s{pg_cast} LIMIT %s")
    params = [((f["tiles"],) if f["tiles"] is not None else ()) + (f["d_from"], f["d_to"], v, k) for v in qv]
    # the function's own choice (functions.py): exact search below FILTER_SAFETY * k / 1000 of the rows
    fn_path = "exact (selective filter)" if f["fraction"] * 1000 < FILTER_SAFETY * k else "iterative scan"
    for ef in args.filter_ef:
        # custom plans: the planner sees the filter's values (a prepared statement's generic
        # plan guesses range selectivity and may skip the index), as the function's EXECUTE does
        setup = [f"SET clay.ef_search = {int(ef)}", f"SET hnsw.ef_search = {int(ef)}",
                 "SET hnsw.iterative_scan = relaxed_order", "SET plan_cache_mode = force_custom_plan"]
        for stmt in setup:
            conn.execute(stmt)
        plan = json.dumps(conn.execute("EXPLAIN (FORMAT JSON) " + raw, params[0]).fetchone()[0])
        bare_path = "iterative scan" if "hnsw_idx" in plan else "planner: no HNSW"
        (lat, found), (lat_b, found_b) = timed_interleaved(
            conn, [(fn_f, fparams), (raw, params)], data.row_index, setup)
        rows.append(qrow("similar_to_vector", f["name"], ef, f"{ef}, {fn_path}", lat,
                         recall(found, f["truth"])))
        rows.append(qrow("ORDER BY <=> LIMIT", f["name"], ef, f"{ef}, {bare_path}", lat_b,
                         recall(found_b, f["truth"])))
        print(f"  filter {f['name']} ({f['what']}), ef {ef}: similar_to_vector ({fn_path}) p50 "
              f"{rows[-2]['p50_ms']:.2f} ms recall {rows[-2]['recall_at_k']:.3f}; bare ORDER BY "
              f"({bare_path}) p50 {rows[-1]['p50_ms']:.2f} ms recall {rows[-1]['recall_at_k']:.3f}",
              flush=True)
    conn.execute("RESET hnsw.iterative_scan")
    conn.execute("RESET plan_cache_mode")


def run_binary(conn, args, data: Data, res: dict, qv: list, pg_cast: str) -> None:
    """Binary quantization + re-ranking: the HNSW index over binary_quantize(embedding) (Hamming)
    gives ``cand`` candidates, re-ranked by exact cosine on the stored embedding."""
    dim, k, rows = args.dim, args.k, res["queries"]
    sql = (f"SELECT chip_id, acquired FROM (SELECT chip_id, acquired, embedding FROM clay.observations "
           f"ORDER BY binary_quantize(embedding)::bit({dim}) <~> binary_quantize(%s{pg_cast})::bit({dim}) "
           f"LIMIT %s) c ORDER BY c.embedding <=> %s{pg_cast} LIMIT %s")
    for cand in args.rerank:
        lat, found = timed_queries(conn, sql, [(v, cand, v, k) for v in qv], data.row_index,
                                   [f"SET hnsw.ef_search = {min(1000, max(int(cand), 40))}"])
        rows.append(qrow("binary_quantize + re-rank", "none", cand, f"{cand} candidates", lat,
                         recall(found, data.truth)))
        print(f"  binary quantization, {cand} candidates re-ranked: p50 {rows[-1]['p50_ms']:.2f} ms "
              f"recall {rows[-1]['recall_at_k']:.3f}", flush=True)


def run_queries(args, data: Data, url: str, res: dict) -> None:
    import psycopg
    from pgvector import Vector
    from pgvector.psycopg import register_vector

    storage, k = res["storage"], args.k
    pg_cast = f"::halfvec({args.dim})" if storage == "halfvec" else ""
    conn = psycopg.connect(url, autocommit=True)
    try:
        register_vector(conn)
        qv = [Vector(v) for v in data.q]
        fn = "SELECT chip_id, acquired FROM clay.similar_to_vector(%s, %s, -1)"
        raw = f"SELECT chip_id, acquired FROM clay.observations ORDER BY embedding <=> %s{pg_cast} LIMIT %s"
        rows = res["queries"] = []
        for ef in args.ef_search:  # function and bare query interleaved, same ef_search
            params = [(v, k) for v in qv]
            (lat, found), (lat_b, found_b) = timed_interleaved(
                conn, [(fn, params), (raw, params)], data.row_index,
                [f"SET clay.ef_search = {int(ef)}", f"SET hnsw.ef_search = {int(ef)}"])
            rows.append(qrow("similar_to_vector", "none", ef, str(ef), lat, recall(found, data.truth)))
            rows.append(qrow("ORDER BY <=> LIMIT", "none", ef, str(ef), lat_b, recall(found_b, data.truth)))
            print(f"  ef_search={ef}: similar_to_vector p50 {rows[-2]['p50_ms']:.2f} ms recall "
                  f"{rows[-2]['recall_at_k']:.3f}; ORDER BY p50 {rows[-1]['p50_ms']:.2f} ms recall "
                  f"{rows[-1]['recall_at_k']:.3f}", flush=True)
        for f in data.filters:
            run_filtered(conn, args, data, res, f, qv, pg_cast)
        if res.get("binary"):
            run_binary(conn, args, data, res, qv, pg_cast)
        ss = res["server_side"] = server_side(conn, args, data, storage, pg_cast)
        for engine in ("similar_to_vector", "ORDER BY <=> LIMIT"):
            client = next((r for r in rows if r["engine"] == engine and r["filter"] == "none"
                           and r["ef_search"] == args.server_ef), None)
            if client is not None:
                client["server_ms_per_query"] = ss[engine]["ms_per_query"]
            print(f"  server-side only, {engine}, ef {args.server_ef}: {ss[engine]['ms_per_query']:.2f} "
                  f"ms/query (recall {ss[engine]['recall_at_k']:.3f}); client p50 "
                  f"{fmt(client and client['p50_ms'])} ms", flush=True)
    finally:
        conn.close()


# ------------------------------------------------------------------------------------------
# one config
# ------------------------------------------------------------------------------------------


@contextlib.contextmanager
def server(args, flavour: str):
    """Admin URL of the server for ``flavour``: --url, or a throw-away embedded cluster in a
    temp dir that is stopped and removed afterwards (also on error)."""
    if flavour == "url":
        yield args.url
        return
    tmp = Path(tempfile.mkdtemp(prefix=f"clay-bench-{flavour}-", dir="/tmp"))
    tmp.chmod(0o755)  # postgres runs as an unprivileged user when we are root
    try:
        yield start_embedded(tmp / "pg", flavour=flavour)
    finally:
        try:
            stop_embedded(tmp / "pg")
        except Exception as exc:  # noqa: BLE001 - report, still remove the directory
            print(f"  note: stopping the server in {tmp} failed: {exc}", flush=True)
        shutil.rmtree(tmp, ignore_errors=True)


def run_config(args, data: Data, flavour: str, storage: str) -> dict:
    import psycopg

    name = f"{flavour}:{storage}"
    res: dict = {"config": name, "flavour": flavour, "storage": storage}
    print(f"\n# config {name}", flush=True)
    if flavour != "url" and importlib.util.find_spec(FLAVOUR_MODULES[flavour]) is None:
        res["skipped"] = f"package {FLAVOUR_MODULES[flavour]} is not installed"
        print(f"  skipped: {res['skipped']}", flush=True)
        return res
    t0 = time.perf_counter()
    try:
        with server(args, flavour) as admin:
            params = psycopg.conninfo.conninfo_to_dict(admin)
            params["dbname"] = "clay_bench"
            url = psycopg.conninfo.make_conninfo(**params)
            with psycopg.connect(admin, autocommit=True) as c:
                avail = c.execute("SELECT default_version FROM pg_available_extensions "
                                  "WHERE name = 'vector'").fetchone()
                res["server"] = c.execute("SELECT version()").fetchone()[0].split(" on ")[0]
                res["shared_buffers"] = c.execute("SHOW shared_buffers").fetchone()[0]
                if storage == "halfvec" and (not avail or _version(avail[0]) < (0, 7)):
                    res["skipped"] = (f"halfvec needs pgvector >= 0.7, this server has "
                                      f"{avail[0] if avail else 'none'}")
                    print(f"  skipped: {res['skipped']}", flush=True)
                    return res
                c.execute("DROP DATABASE IF EXISTS clay_bench WITH (FORCE)")
                c.execute("CREATE DATABASE clay_bench")
            try:
                store = VectorStore(url, args.dim)
                try:
                    store.ensure_schema(storage=storage, create_index=False)
                    res["pgvector"] = store.pgvector_version()
                    res["iterative"] = _version(res["pgvector"]) >= (0, 8)
                    print(f"  server: {redact(url)} ({res['server']}, pgvector {res['pgvector']}, "
                          f"shared_buffers {res['shared_buffers']}, storage {store.storage})", flush=True)
                    run_loads(args, data, url, store, res)
                finally:
                    store.close()
                run_queries(args, data, url, res)
            finally:
                with psycopg.connect(admin, autocommit=True) as c:
                    c.execute("DROP DATABASE IF EXISTS clay_bench WITH (FORCE)")
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - report it, go on with the next config
        res["error"] = f"{type(exc).__name__}: {exc}"
        print(f"  ERROR in config {name}: {res['error']}", flush=True)
        traceback.print_exc()
    res["seconds"] = time.perf_counter() - t0
    print(f"  config {name} took {res['seconds']:.0f}s", flush=True)
    return res


def _version(v: str | None) -> tuple[int, ...]:
    import re

    return tuple(int(p) for p in re.findall(r"\d+", v or "0")[:3])


# ------------------------------------------------------------------------------------------
# faiss
# ------------------------------------------------------------------------------------------


def run_faiss(args, data: Data) -> dict:
    import faiss

    out: dict = {}
    xb = np.ascontiguousarray(data.xn, dtype=np.float32)
    qn = np.ascontiguousarray(data.qn, dtype=np.float32)
    index = faiss.IndexHNSWFlat(args.dim, args.m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = args.ef_construction
    threads = faiss.omp_get_max_threads()
    t0 = time.perf_counter()
    index.add(xb)
    out["build_s"] = time.perf_counter() - t0
    out["build_threads"] = threads
    # vectors (float32) + neighbour lists (int32)
    out["index_mb"] = (index.ntotal * args.dim * 4 + index.hnsw.neighbors.size() * 4) / 2**20
    print(f"faiss HNSW build: {out['build_s']:.1f}s ({threads} threads), ~{out['index_mb']:.0f} MB",
          flush=True)
    faiss.omp_set_num_threads(1)  # per-query latency, like one SQL query on one backend
    try:
        sels = {f["name"]: (faiss.IDSelectorBatch(np.flatnonzero(f["mask"]).astype(np.int64)), f["truth"])
                for f in data.filters}
        rows = out["queries"] = []
        for ef in args.ef_search:
            for filt, (sel, truth) in {"none": (None, data.truth), **sels}.items():
                p = faiss.SearchParametersHNSW(efSearch=int(ef))
                if sel is not None:
                    p.sel = sel
                for i in range(min(20, len(qn))):  # warm-up
                    index.search(qn[i: i + 1], args.k, params=p)
                lat, found = [], []
                for i in range(len(qn)):
                    t0 = time.perf_counter()
                    _, ids = index.search(qn[i: i + 1], args.k, params=p)
                    lat.append(time.perf_counter() - t0)
                    found.append([j for j in ids[0].tolist() if j >= 0])
                rows.append(qrow("faiss IndexHNSWFlat", filt, ef, str(ef), np.asarray(lat) * 1000,
                                 recall(found, truth)))
            print(f"  faiss ef {ef}: " + "; ".join(
                f"{r['filter']} p50 {r['p50_ms']:.2f} ms recall {r['recall_at_k']:.3f}"
                for r in rows[-1 - len(sels):]), flush=True)
    finally:
        faiss.omp_set_num_threads(threads)
    return out


# ------------------------------------------------------------------------------------------
# report
# ------------------------------------------------------------------------------------------

LOAD_LABELS = {
    "orm": "SQLAlchemy ORM add_all + commit (subset, extrapolated)",
    "copy_direct": "load_partition, 1 connection: DELETE + COPY into the table (filter indexes, no HNSW)",
    "copy_staging": "load_partition(staging=True), 1 connection: COPY -> temp -> INSERT SELECT",
    "replace_direct": "replacing 10 existing partitions (direct)",
    "replace_staging": "replacing 10 existing partitions (staging)",
    "replace_with_hnsw": "replacing 1 partition with the HNSW index in place (direct)",
}


def bulk_label(w: int) -> str:
    return f"bulk_load() + load_partitions(workers={w}): loads only, indexes dropped"


def smallest_ef(rows: list[dict], engine: str, target: float) -> tuple[dict | None, bool]:
    """Unfiltered row of ``engine`` at the smallest ef reaching ``target`` recall; else the
    highest-recall row (False)."""
    cand = sorted((r for r in rows if r["engine"] == engine and r["filter"] == "none"),
                  key=lambda r: r["ef_search"])
    for r in cand:
        if r["recall_at_k"] >= target:
            return r, True
    return (max(cand, key=lambda r: r["recall_at_k"]) if cand else None), False


def mark(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "**missed**")


def summary(args, data: Data, configs: list[dict], faiss_res: dict | None, res: dict) -> None:
    ok = [c for c in configs if c.get("load")]  # (a failed config: what it has)
    names = [c["config"] for c in ok]
    print()
    for c in configs:
        if "skipped" in c:
            print(f"note: config {c['config']} skipped: {c['skipped']}")
        if "error" in c:
            print(f"note: config {c['config']} failed: {c['error']}")
    print(f"\n## Load ({len(data.frame):,} rows of dim {args.dim}, {len(data.groups)} partitions of "
          f"~{data.per} chips; rows/s wall clock, x = vs the ORM on the same server)\n")
    print("| path | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    keys = [key for key in ["orm", "copy_direct", "copy_staging"] + [f"bulk_w{w}" for w in args.workers]
            + ["replace_direct", "replace_staging", "replace_with_hnsw"]
            if any(key in c["load"] for c in ok)]
    for key in keys:
        label = LOAD_LABELS.get(key) or bulk_label(int(key[6:]))
        cells = []
        for c in ok:
            r, orm = c["load"].get(key), c["load"].get("orm")
            cells.append("" if r is None else f"{r['rows_per_s']:,.0f}" + (
                "" if orm is None else f" ({r['rows_per_s'] / orm['rows_per_s']:.1f}x)"))
        print(f"| {label} | " + " | ".join(cells) + " |")
    print("\nCPU per row, us (client = this process, all threads; server = every process of that "
          "postgres: backends, walwriter, checkpointer; x = total vs ORM):\n")
    print("| path | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for key in keys:
        label = LOAD_LABELS.get(key) or bulk_label(int(key[6:]))
        cells = []
        for c in ok:
            r, orm = c["load"].get(key), c["load"].get("orm")
            if r is None or not math.isfinite(r["server_us_per_row"]):
                cells.append("" if r is None else f"{r['client_us_per_row']:.0f} + n/a")
                continue
            tot = r["client_us_per_row"] + r["server_us_per_row"]
            cells.append(f"{r['client_us_per_row']:.0f} + {r['server_us_per_row']:.0f} = {tot:.0f}" + (
                "" if orm is None or not math.isfinite(orm["server_us_per_row"]) else
                f" ({(orm['client_us_per_row'] + orm['server_us_per_row']) / tot:.1f}x)"))
        print(f"| {label} | " + " | ".join(cells) + " |")

    print(f"\n## Index build (at the exit of bulk_load(); HNSW m={args.m}, "
          f"ef_construction={args.ef_construction})\n")
    print("| engine | after loads with | filter indexes s | HNSW s | total s | CPU s | table MB | HNSW index MB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for c in ok:
        for b in c.get("build", []):
            print(f"| {c['config']} (pgvector {c['pgvector']}) | W={b['workers']} | {b['filter_s']:.1f} | "
                  f"{b['hnsw_s']:.1f} | {b['total_s']:.1f} | {fmt(b['cpu_s'], '.1f')} | "
                  f"{c.get('table_mb', float('nan')):.0f} | {c.get('index_mb', float('nan')):.0f} |")
        if "bq_build_s" in c:
            print(f"| {c['config']}: binary_quantize(embedding)::bit({args.dim}) bit_hamming_ops | | | "
                  f"{c['bq_build_s']:.1f} | | | | {c['bq_index_mb']:.0f} |")
    if faiss_res:
        print(f"| faiss IndexHNSWFlat (same m, efConstruction) | {faiss_res['build_threads']} threads | | "
              f"{faiss_res['build_s']:.1f} | {faiss_res['build_s']:.1f} | | | ~{faiss_res['index_mb']:.0f} (in RAM) |")

    filters = "; ".join(f"{f['name']} = {f['what']} ({f['fraction']:.2%} of rows)" for f in data.filters)
    print(f"\n## Queries (k={args.k}, {args.queries} fresh queries; filters: {filters}; latency per "
          f"query on the client; server-only = all queries in one LATERAL statement / n; x faiss = "
          f"p50 / faiss p50 at the same ef and filter)\n")
    print("| config | query | filter | ef_search | p50 ms | p95 ms | recall@10 | server-only ms/q | p50 x faiss |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    fq = (faiss_res or {}).get("queries", [])
    ref = {(r["filter"], r["ef_search"]): r["p50_ms"] for r in fq}
    for r in fq:
        print(f"| faiss (in-process, 1 thread) | IndexHNSWFlat | {r['filter']} | {r['label']} | "
              f"{r['p50_ms']:.2f} | {r['p95_ms']:.2f} | {r['recall_at_k']:.3f} | | 1.0x |")
    for c in ok:
        for r in c.get("queries", []):
            f_ef = ref.get((r["filter"], r["ef_search"]))
            ratio = f"{r['p50_ms'] / f_ef:.1f}x" if f_ef else ""
            print(f"| {c['config']} | {r['engine']} | {r['filter']} | {r['label']} | {r['p50_ms']:.2f} | "
                  f"{r['p95_ms']:.2f} | {r['recall_at_k']:.3f} | {fmt(r.get('server_ms_per_query'), '.2f', '')} "
                  f"| {ratio} |")

    # targets -----------------------------------------------------------------------------
    f_row, f_ok = smallest_ef(fq, "faiss IndexHNSWFlat", TARGET_RECALL) if fq else (None, False)
    print(f"\n## Targets (load >= {TARGET_ROWS_S:,} rows/s and >= {TARGET_VS_ORM:.0f}x ORM; "
          f"p50 <= {TARGET_P50_MS:g} ms at recall@10 >= {TARGET_RECALL}; <= {TARGET_VS_FAISS:g}x faiss "
          f"at equal recall; filtered recall@10 >= {TARGET_RECALL_FILTERED})\n")
    if f_row is not None:
        print(f"faiss reference: p50 {f_row['p50_ms']:.2f} ms at ef {f_row['ef_search']} (recall "
              f"{f_row['recall_at_k']:.3f}{'' if f_ok else ', below ' + str(TARGET_RECALL)})\n")
    print("| config | load rows/s (best bulk) | >= 100k/s | vs ORM | >= 10x | unfiltered p50 ms (ef, recall) "
          "| <= 5 ms at >= 0.98 | vs faiss | <= 3x | bare ORDER BY p50 ms (ef) vs faiss "
          "| filtered recall (p50) | >= 0.95 |")
    print("|---|---:|---|---:|---|---:|---|---:|---|---:|---:|---|")
    targets = res["targets"] = {}
    for c in ok:
        bulk = [c["load"][f"bulk_w{w}"] for w in args.workers if f"bulk_w{w}" in c["load"]]
        best = max(bulk, key=lambda r: r["rows_per_s"]) if bulk else None
        orm = c["load"].get("orm", {}).get("rows_per_s")
        t = targets[c["config"]] = {}
        if best:
            t["load_rows_per_s"], t["load_workers"] = best["rows_per_s"], best["workers"]
            if orm:
                t["load_vs_orm"] = best["rows_per_s"] / orm
        row, rec_ok = smallest_ef(c.get("queries", []), "similar_to_vector", TARGET_RECALL)
        if row is not None:
            t["p50_ms"], t["p50_ef"], t["p50_recall"] = row["p50_ms"], row["ef_search"], row["recall_at_k"]
            t["p50_met"] = rec_ok and row["p50_ms"] <= TARGET_P50_MS
            if f_row is not None:
                t["vs_faiss"] = row["p50_ms"] / f_row["p50_ms"]
        bare, bare_ok = smallest_ef(c.get("queries", []), "ORDER BY <=> LIMIT", TARGET_RECALL)
        if bare is not None and f_row is not None:
            t["bare_p50_ms"], t["bare_ef"] = bare["p50_ms"], bare["ef_search"]
            t["bare_vs_faiss"] = bare["p50_ms"] / f_row["p50_ms"]
        frow = None
        t["filtered"] = {}
        for f in data.filters:  # the function at the default --filter-ef (else oversample 4)
            cand = [r for r in c.get("queries", []) if r["filter"] == f["name"]
                    and r["engine"] == "similar_to_vector"]
            if cand:
                fr = next((r for r in cand if r.get("oversample") in (None, 4.0)), cand[0])
                t["filtered"][f["name"]] = {"recall": fr["recall_at_k"], "p50_ms": fr["p50_ms"],
                                            "setting": fr["label"]}
                if frow is None or fr["recall_at_k"] < frow["recall_at_k"]:
                    frow = fr  # the worst filter decides the target
        print("| " + " | ".join([
            c["config"],
            f"{t['load_rows_per_s']:,.0f} (W={t['load_workers']})" if best else "",
            mark(best and t["load_rows_per_s"] >= TARGET_ROWS_S),
            f"{t['load_vs_orm']:.1f}x" if "load_vs_orm" in t else "",
            mark(t["load_vs_orm"] >= TARGET_VS_ORM if "load_vs_orm" in t else None),
            f"{row['p50_ms']:.2f} (ef {row['ef_search']}, {row['recall_at_k']:.3f})" if row else "",
            mark(t.get("p50_met") if row else None),
            f"{t['vs_faiss']:.1f}x" if "vs_faiss" in t else "",
            mark(t["vs_faiss"] <= TARGET_VS_FAISS if "vs_faiss" in t else None),
            (f"{t['bare_p50_ms']:.2f} (ef {t['bare_ef']}) = {t['bare_vs_faiss']:.1f}x"
             if "bare_vs_faiss" in t else ""),
            ", ".join(f"{name}: {v['recall']:.3f} ({v['p50_ms']:.1f} ms)" for name, v in t["filtered"].items()),
            mark(frow["recall_at_k"] >= TARGET_RECALL_FILTERED if frow else None),
        ]) + " |")
    for c in ok:
        if c.get("queries") and not smallest_ef(c["queries"], "similar_to_vector", TARGET_RECALL)[1]:
            print(f"note: {c['config']} never reached recall {TARGET_RECALL} unfiltered; its best is shown")
    overhead_table(ok, targets)


def overhead_table(ok: list[dict], targets: dict) -> None:
    """clay.similar_to_vector vs the bare ``ORDER BY embedding <=> q LIMIT k`` at the same
    ef_search (and filter): p50 ratio, target <= TARGET_OVERHEAD."""
    print(f"\n## SQL-function overhead (p50 of clay.similar_to_vector / p50 of the bare query at the "
          f"same ef_search and filter; target <= {TARGET_OVERHEAD:g}x)\n")
    print("| config | filter | ef_search | function p50 ms | bare p50 ms | ratio | function recall | bare recall |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for c in ok:
        q = c.get("queries", [])
        bare = {(r["filter"], r["ef_search"]): r for r in q if r["engine"] == "ORDER BY <=> LIMIT"}
        for r in q:
            b = bare.get((r["filter"], r["ef_search"]))
            if r["engine"] != "similar_to_vector" or b is None:
                continue
            ratio = r["p50_ms"] / b["p50_ms"]
            same = r["label"] == b["label"]  # else a different search (e.g. exact vs index scan)
            if same:
                targets[c["config"]].setdefault("overhead", {})[f"{r['filter']}@{r['ef_search']}"] = ratio
            verdict = mark(ratio <= TARGET_OVERHEAD) if same else (
                f"not overhead: function {r['label'].split(', ', 1)[-1]}, bare {b['label'].split(', ', 1)[-1]}")
            print(f"| {c['config']} | {r['filter']} | {r['ef_search']} | {r['p50_ms']:.2f} | {b['p50_ms']:.2f} "
                  f"| {ratio:.2f}x {verdict} | {r['recall_at_k']:.3f} | {b['recall_at_k']:.3f} |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000, help="vectors in the table (default 100000)")
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--centres", type=int, default=1000)
    ap.add_argument("--spread", type=float, default=0.5, help="within-cluster std (centres have std 1)")
    ap.add_argument("--rank", type=int, default=0,
                    help="extra low-rank within-cluster variation (harder for HNSW; 0 = none)")
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--dates", type=int, default=20, help="acquisition dates (date filter = 2 of them)")
    ap.add_argument("--chips-per-partition", type=int, default=1764,
                    help="chips per (date, tile) partition (default 1764: one Sentinel-2 tile of "
                         "256-px chips, 42 x 42, what a platform partition holds); "
                         "tiles = n / (this * dates)")
    ap.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS, metavar="FLAVOUR:STORAGE",
                    help="embedded servers to compare, flavour pgserver|pixeltable, storage "
                         f"vector|halfvec (default: {' '.join(DEFAULT_CONFIGS)})")
    ap.add_argument("--url", help="benchmark this server instead of embedded ones (--storage)")
    ap.add_argument("--storage", choices=STORAGES, default="vector", help="embedding type with --url")
    ap.add_argument("--orm-rows", type=int, default=3000)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2],
                    help="connections of the bulk backfill (load_partitions), one run each")
    # the product's defaults (a new clay.observations index is built with these)
    ap.add_argument("--m", type=int, default=DEFAULT_M)
    ap.add_argument("--ef-construction", type=int, default=DEFAULT_EF_CONSTRUCTION)
    ap.add_argument("--ef-search", type=int, nargs="+", default=[20, 40, 64, 100, 200])
    ap.add_argument("--filter-ef", type=int, nargs="+", default=[100, 200],
                    help="clay.ef_search / hnsw.ef_search values of the filtered queries (100 = the "
                         "function's default)")
    ap.add_argument("--filters", type=float, nargs="+", default=[0.10, 0.01],
                    help="fractions of rows kept by the tile/date filters (default 0.10 0.01)")
    ap.add_argument("--loads", choices=["all", "bulk"], default="all",
                    help="all: ORM, per-partition and replacement loads too; bulk: only the "
                         "bulk backfill and the index build (what --n 1000000 needs)")
    ap.add_argument("--parallel-workers", type=int,
                    help="max_parallel_maintenance_workers of the index builds (default: server's)")
    ap.add_argument("--maintenance-work-mem",
                    help="maintenance_work_mem of the HNSW build (default: sized to the graph)")
    ap.add_argument("--binary", action="store_true",
                    help="also build the binary_quantize Hamming HNSW index and query it with exact "
                         "re-ranking of --rerank candidates")
    ap.add_argument("--rerank", type=int, nargs="+", default=[40, 100, 200, 400],
                    help="candidates re-ranked by exact cosine with --binary")
    ap.add_argument("--oversample", type=float, nargs="+", default=[2, 4],
                    help="clay.filter_oversample values for the date-filtered queries (pgvector < 0.8)")
    ap.add_argument("--server-ef", type=int, default=40,
                    help="ef_search of the server-side-only measurement")
    ap.add_argument("--no-faiss", action="store_true")
    ap.add_argument("--json", help="also write the results as JSON here")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    if args.url:
        configs = [("url", args.storage)]
    else:
        configs = []
        for spec in args.configs:
            flavour, _, storage = spec.partition(":")
            storage = storage or "vector"
            if flavour not in FLAVOUR_MODULES or storage not in STORAGES:
                ap.error(f"--configs: {spec!r} is not flavour:storage with flavour in "
                         f"{'|'.join(FLAVOUR_MODULES)} and storage in {'|'.join(STORAGES)}")
            configs.append((flavour, storage))
    if min(args.workers) < 1:
        ap.error("--workers must be positive")
    args.workers = list(dict.fromkeys(args.workers))  # one run per distinct value

    T0 = time.perf_counter()
    res: dict = {"n": args.n, "dim": args.dim, "cpus": os.cpu_count(), "k": args.k,
                 "command": " ".join([Path(sys.executable).name, *sys.argv]), "args": vars(args)}
    print(f"# vector_search benchmark: n={args.n} dim={args.dim} centres={args.centres} "
          f"spread={args.spread} rank={args.rank} cpus={os.cpu_count()} "
          f"configs={' '.join(f'{f}:{s}' for f, s in configs)}", flush=True)
    print("# command: " + res["command"], flush=True)

    data = Data(args)
    if any(c.endswith(":halfvec") for c in (args.configs or [])) or args.storage == "halfvec":
        import torch  # noqa: F401 - halfvec loads convert with torch: import it before any timing
    res.update(nn_cosine_p50=data.nn_cosine_p50, rows=len(data.frame), partitions=len(data.groups),
               chips_per_partition=data.per, tiles=data.tiles,
               filters={f["name"]: {"what": f["what"], "fraction": f["fraction"]} for f in data.filters})
    print(f"data ready ({time.perf_counter() - T0:.0f}s): {len(data.frame):,} rows in "
          f"{len(data.groups)} partitions ({data.tiles} tiles x {args.dates} dates, ~{data.per} chips); "
          f"query nearest-neighbour cosine p50 {data.nn_cosine_p50:.2f}; filters: "
          + "; ".join(f"{f['name']} = {f['what']} ({f['fraction']:.2%})" for f in data.filters), flush=True)

    faiss_res = None
    if not args.no_faiss:
        faiss_res = res["faiss"] = run_faiss(args, data)

    results = res["configs"] = []
    for flavour, storage in configs:
        results.append(run_config(args, data, flavour, storage))

    res["total_s"] = time.perf_counter() - T0
    summary(args, data, results, faiss_res, res)
    print(f"\ntotal {res['total_s']:.0f}s")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2, default=str))
    return 1 if any("error" in c for c in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark: loading and searching chip embeddings in Postgres/pgvector (clay_core.db).

One run measures, on synthetic Clay-like embeddings (dim 768, Gaussian mixture with ~1000
centres and low-rank within-cluster spread, the way real embeddings cluster by land cover):

* load rate of ``VectorStore.load_partition`` (binary COPY -> staging -> DELETE + INSERT, one
  transaction per partition of ~1000 chips) vs SQLAlchemy ORM inserts (on a subset,
  rows/s extrapolated);
* HNSW index build time (``VectorStore.rebuild_index``), vs faiss IndexHNSWFlat (same m,
  ef_construction) as an in-process reference;
* per-query latency p50/p95 and recall@10 against exact numpy search, for unfiltered and
  date-filtered queries (fresh draws from the mixture, never in the table), through the SQL
  functions ``clay.similar_to_vector`` (what users call) and the bare ``ORDER BY <=> LIMIT``.

    .venv/bin/python benchmarks/vector_search.py            # N = 100k, ~5 min on 2 cores
    .venv/bin/python benchmarks/vector_search.py --n 20000  # quick

Uses a throw-away embedded server (pgserver) in a temp dir unless --url is given (a database
``clay_bench`` is created there and dropped afterwards).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from clay_core.db import VectorStore, redact, start_embedded, stop_embedded  # noqa: E402


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


def layout(n: int, tiles: int, dates: list[date]) -> pd.DataFrame:
    """Chip rows: partitions (date, tile) of ~n / (tiles * dates) chips each."""
    per = int(np.ceil(n / (tiles * len(dates))))
    side = int(np.ceil(np.sqrt(per)))
    rows = []
    i = 0
    for d in dates:
        for t in range(tiles):
            tile = f"3{t % 10}U{'FGHJK'[t // 10 % 5]}Q"
            m = min(per, n - i)
            if m <= 0:
                break
            k = np.arange(m)
            r, c = k // side, k % side
            west = 2.0 + t * 1.5 + c * 0.035
            south = 45.0 + r * 0.023
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
    return pd.concat(rows, ignore_index=True)


def exact_topk(x: np.ndarray, q: np.ndarray, k: int, mask: np.ndarray | None = None) -> np.ndarray:
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    out = np.empty((len(q), k), np.int64)
    for s in range(0, len(q), 64):
        sims = qn[s:s + 64] @ xn.T
        if mask is not None:
            sims[:, ~mask] = -np.inf
        part = np.argpartition(-sims, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sims, part, 1), axis=1)
        out[s:s + 64] = np.take_along_axis(part, order, 1)
    return out


def recall(found: list[list[int]], truth: np.ndarray) -> float:
    k = truth.shape[1]
    return float(np.mean([len(set(f) & set(t)) / k for f, t in zip(found, truth)]))


# ------------------------------------------------------------------------------------------
# loads
# ------------------------------------------------------------------------------------------


class Meter:
    """Wall time plus CPU of this process (the client) and of one server backend (psutil; only
    when the server runs on this machine).  CPU per row does not depend on what else the
    machine is doing, wall time does."""

    def __init__(self, backend_pid: int | None):
        self.proc = None
        if backend_pid is not None:
            try:
                import psutil

                self.proc = psutil.Process(backend_pid)
                self.proc.cpu_times()
            except Exception:  # noqa: BLE001 - remote server or no permission
                self.proc = None

    def _server(self) -> float:
        if self.proc is None:
            return float("nan")
        t = self.proc.cpu_times()
        return t.user + t.system

    def __enter__(self):
        self.w0, self.c0, self.s0 = time.perf_counter(), time.process_time(), self._server()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.w0
        self.client = time.process_time() - self.c0
        self.server = self._server() - self.s0


def record(res: dict, key: str, rows: int, m: Meter) -> None:
    res[key] = {"rows": rows, "wall_s": m.wall, "rows_per_s": rows / m.wall,
                "client_us_per_row": m.client / rows * 1e6, "server_us_per_row": m.server / rows * 1e6}
    r = res[key]
    print(f"{key}: {rows} rows, {m.wall:.1f}s = {r['rows_per_s']:,.0f} rows/s; CPU per row: client "
          f"{r['client_us_per_row']:.0f} us + server {r['server_us_per_row']:.0f} us", flush=True)


def backend_pid(conn) -> int:
    return conn.execute("SELECT pg_backend_pid()").fetchone()[0]


def load_copy(store: VectorStore, frame: pd.DataFrame, x: np.ndarray, staging: bool = True,
              only: list | None = None) -> int:
    parts = 0
    for key, idx in (only or frame.groupby("partition_key", sort=False).indices.items()):
        store.load_partition(key, frame.iloc[idx], x[idx], staging=staging)
        parts += 1
    return parts


def load_orm(url: str, frame: pd.DataFrame, x: np.ndarray, dim: int) -> Meter:
    """SQLAlchemy ORM: one mapped object per row, session.add_all + commit (batched
    insertmanyvalues, the ORM's fast path)."""
    from pgvector.sqlalchemy import Vector
    from sqlalchemy import Boolean, Date, DateTime, Float, Text, create_engine
    from sqlalchemy.orm import DeclarativeBase, Session, mapped_column

    from clay_core.db import sqlalchemy_url

    class Base(DeclarativeBase):
        pass

    class Observation(Base):
        __tablename__ = "observations"
        __table_args__ = {"schema": "clay"}
        chip_id = mapped_column(Text, primary_key=True)
        acquired = mapped_column(Date, primary_key=True)
        tile = mapped_column(Text)
        acquired_at = mapped_column(DateTime(timezone=True))
        partition_key = mapped_column(Text)
        west = mapped_column(Float)
        south = mapped_column(Float)
        east = mapped_column(Float)
        north = mapped_column(Float)
        lon = mapped_column(Float)
        lat = mapped_column(Float)
        crs = mapped_column(Text)
        cloud_fraction = mapped_column(Float)
        nodata_fraction = mapped_column(Float)
        thumbnail_uri = mapped_column(Text)
        cube_uri = mapped_column(Text)
        model_id = mapped_column(Text)
        cosine_to_baseline = mapped_column(Float)
        harmonic_deviation = mapped_column(Float)
        change_score = mapped_column(Float)
        change_flag = mapped_column(Boolean)
        geom_wkt = mapped_column(Text)
        embedding = mapped_column(Vector(dim))

    engine = create_engine(sqlalchemy_url(url))
    recs = frame.to_dict("records")
    with engine.connect() as c:  # pool of one: the session below reuses this backend
        from sqlalchemy import text

        pid = c.execute(text("SELECT pg_backend_pid()")).scalar()
    meter = Meter(pid)
    with meter, Session(engine) as session:
        objs = []
        for r, v in zip(recs, x):
            w, s, e, n = r["west"], r["south"], r["east"], r["north"]
            objs.append(Observation(
                **{k: r[k] for k in ("chip_id", "acquired", "tile", "partition_key", "west", "south",
                                     "east", "north", "crs", "cloud_fraction", "nodata_fraction",
                                     "thumbnail_uri", "cube_uri", "model_id", "cosine_to_baseline",
                                     "harmonic_deviation", "change_score", "change_flag")},
                acquired_at=r["acquired_at"].to_pydatetime(), lon=(w + e) / 2, lat=(s + n) / 2,
                geom_wkt=f"POLYGON(({w} {s}, {e} {s}, {e} {n}, {w} {n}, {w} {s}))", embedding=v,
            ))
        session.add_all(objs)
        session.commit()
    engine.dispose()
    return meter


# ------------------------------------------------------------------------------------------
# queries
# ------------------------------------------------------------------------------------------


def timed_queries(conn, sql: str, params_list, row_index: dict, setup: list[str] = ()) -> tuple[np.ndarray, list]:
    lat, found = [], []
    with conn.cursor() as cur:
        for p in params_list[: min(20, len(params_list))]:  # warm-up (prepare + cache)
            for s in setup:
                cur.execute(s)
            cur.execute(sql, p, prepare=True)
            cur.fetchall()
        for p in params_list:
            for s in setup:
                cur.execute(s)
            t0 = time.perf_counter()
            cur.execute(sql, p, prepare=True)
            rows = cur.fetchall()
            lat.append(time.perf_counter() - t0)
            found.append([row_index[(r[0], r[1])] for r in rows])
    return np.asarray(lat) * 1000, found


def pct(a: np.ndarray, p: float) -> float:
    return float(np.percentile(a, p))


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
    ap.add_argument("--tiles", type=int, default=5)
    ap.add_argument("--dates", type=int, default=20, help="acquisition dates (date filter = 2 of them)")
    ap.add_argument("--orm-rows", type=int, default=3000)
    ap.add_argument("--m", type=int, default=16)
    ap.add_argument("--ef-construction", type=int, default=64)
    ap.add_argument("--ef-search", type=int, nargs="+", default=[40, 100, 200])
    ap.add_argument("--oversample", type=float, nargs="+", default=[2, 4],
                    help="clay.filter_oversample values for the date-filtered queries")
    ap.add_argument("--no-faiss", action="store_true")
    ap.add_argument("--url", help="use this server instead of a throw-away embedded one")
    ap.add_argument("--json", help="also write the results as JSON here")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    T0 = time.perf_counter()
    res: dict = {"n": args.n, "dim": args.dim, "cpus": os.cpu_count(), "k": args.k}
    print(f"# vector_search benchmark: n={args.n} dim={args.dim} centres={args.centres} "
          f"spread={args.spread} rank={args.rank} cpus={os.cpu_count()}", flush=True)
    print("# command: " + " ".join([Path(sys.executable).name, *sys.argv]), flush=True)

    # data ---------------------------------------------------------------------------------
    x, model = mixture(args.n, args.dim, args.centres, args.spread, args.rank, args.seed)
    dates = [date(2024, 3, 1) + timedelta(days=5 * i) for i in range(args.dates)]
    frame = layout(args.n, args.tiles, dates)
    x = x[: len(frame)]
    rng = np.random.default_rng(args.seed + 1)
    q = draw(model, args.queries, rng)
    d_from, d_to = dates[len(dates) // 2], dates[len(dates) // 2 + 1]
    dmask = ((frame["acquired"] >= d_from) & (frame["acquired"] <= d_to)).to_numpy()
    truth = exact_topk(x, q, args.k)
    truth_f = exact_topk(x, q, args.k, dmask)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    in_sims = ((q / np.linalg.norm(q, axis=1, keepdims=True)) @ xn.T).max(axis=1)
    res["nn_cosine_p50"] = float(np.median(in_sims))
    print(f"data ready ({time.perf_counter() - T0:.0f}s): query nearest-neighbour cosine p50 "
          f"{np.median(in_sims):.2f}, date filter keeps {dmask.mean():.0%}", flush=True)

    # server -------------------------------------------------------------------------------
    import psycopg

    tmp = None
    if args.url:
        admin = args.url
    else:
        tmp = Path(tempfile.mkdtemp(prefix="clay-bench-"))
        tmp.chmod(0o755)
        admin = start_embedded(tmp / "pg")
    params = psycopg.conninfo.conninfo_to_dict(admin)
    params["dbname"] = "clay_bench"
    url = psycopg.conninfo.make_conninfo(**params)
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute("DROP DATABASE IF EXISTS clay_bench WITH (FORCE)")
        c.execute("CREATE DATABASE clay_bench")
        res["server"] = c.execute("SELECT version()").fetchone()[0].split(" on ")[0]
        res["shared_buffers"] = c.execute("SHOW shared_buffers").fetchone()[0]
    print(f"server: {redact(url)} ({res['server']}, shared_buffers {res['shared_buffers']})", flush=True)

    try:
        store = VectorStore(url, args.dim)
        store.ensure_schema(create_index=False)  # bulk load: index built once afterwards
        res["pgvector"] = store.pgvector_version()

        # ORM subset first (separate partition keys / chip ids; deleted afterwards)
        orm_n = min(args.orm_rows, len(frame))
        orm_frame = frame.iloc[:orm_n].copy()
        orm_frame["chip_id"] = "orm_" + orm_frame["chip_id"]
        orm_frame["partition_key"] = "orm|" + orm_frame["partition_key"]
        m = load_orm(url, orm_frame, x[:orm_n], args.dim)
        with psycopg.connect(url, autocommit=True) as c:
            c.execute("DELETE FROM clay.observations WHERE partition_key LIKE 'orm|%'")
            c.execute("VACUUM clay.observations")
        record(res, "orm", orm_n, m)

        pid = backend_pid(store._conn)
        for staging, key in ((False, "copy_direct"), (True, "copy_staging")):
            with psycopg.connect(url, autocommit=True) as c:
                c.execute("TRUNCATE clay.observations")
                c.execute("CHECKPOINT")
            with Meter(pid) as m:
                parts = load_copy(store, frame, x, staging=staging)
            record(res, key, len(frame), m)
        res["partitions"] = parts
        # replacing existing partitions (DELETE + INSERT of the same keys), modes interleaved
        keys = list(frame.groupby("partition_key", sort=False).indices.items())[:10]
        nre = sum(len(i) for _, i in keys)
        meters = {True: [], False: []}
        for rep in range(2):
            for staging in (True, False):
                with Meter(pid) as m:
                    load_copy(store, frame, x, staging=staging, only=keys)
                meters[staging].append(m)
        for staging, key in ((True, "replace_staging"), (False, "replace_direct")):
            m = min(meters[staging], key=lambda mm: mm.wall)
            record(res, key, nre, m)

        build_s = store.rebuild_index(args.m, args.ef_construction)
        res["pg_build_s"] = build_s
        print(f"pgvector HNSW build (m={args.m}, ef_construction={args.ef_construction}): "
              f"{build_s:.1f}s", flush=True)
        with psycopg.connect(url, autocommit=True) as c:
            c.execute("VACUUM ANALYZE clay.observations")
            res["table_mb"] = c.execute("SELECT pg_table_size('clay.observations') / 2^20").fetchone()[0]
            res["index_mb"] = c.execute(
                "SELECT pg_relation_size('clay.observations_embedding_hnsw_idx') / 2^20").fetchone()[0]
            c.execute("SELECT count(*) FROM clay.observations")  # warm the heap a little
        # incremental load with the HNSW index in place (Dagster re-materialising a partition)
        key, idx = keys[0]
        with Meter(pid) as m:
            store.load_partition(key, frame.iloc[idx], x[idx])
        record(res, "replace_with_hnsw", len(idx), m)

        # queries -------------------------------------------------------------------------
        from pgvector import Vector
        from pgvector.psycopg import register_vector

        row_index = {(c, a): i for i, (c, a) in enumerate(zip(frame["chip_id"], frame["acquired"]))}
        conn = psycopg.connect(url, autocommit=True)
        register_vector(conn)
        qv = [Vector(v) for v in q]
        fn = "SELECT chip_id, acquired FROM clay.similar_to_vector(%s, %s, -1)"
        fn_f = "SELECT chip_id, acquired FROM clay.similar_to_vector(%s, %s, -1, NULL, %s, %s)"
        raw = ("SELECT chip_id, acquired FROM clay.observations ORDER BY embedding <=> %s LIMIT %s")
        rows = []
        for ef in args.ef_search:
            setup = [f"SET clay.ef_search = {int(ef)}", f"SET hnsw.ef_search = {int(ef)}"]
            lat, found = timed_queries(conn, fn, [(v, args.k) for v in qv], row_index, setup[:1])
            rows.append(("pgvector similar_to_vector", "none", str(ef), lat, recall(found, truth)))
            lat, found = timed_queries(conn, raw, [(v, args.k) for v in qv], row_index, setup[1:])
            rows.append(("pgvector ORDER BY <=> LIMIT", "none", str(ef), lat, recall(found, truth)))
            print(f"  pgvector ef_search={ef} done", flush=True)
        sel = dmask.mean()
        for os_ in args.oversample:
            setup = ["SET clay.ef_search = 100", f"SET clay.filter_oversample = {float(os_)}"]
            lat, found = timed_queries(conn, fn_f, [(v, args.k, d_from, d_to) for v in qv], row_index,
                                       setup)
            eff = max(100, int(np.ceil(os_ * args.k / sel)))
            rows.append(("pgvector similar_to_vector", "date", f"{eff} (oversample {os_:g})", lat,
                         recall(found, truth_f)))
            print(f"  pgvector date filter, oversample={os_} done", flush=True)
        conn.close()
        store.close()
    finally:
        with psycopg.connect(admin, autocommit=True) as c:
            c.execute("DROP DATABASE IF EXISTS clay_bench WITH (FORCE)")
        if tmp is not None:
            stop_embedded(tmp / "pg")
            shutil.rmtree(tmp, ignore_errors=True)

    # faiss ------------------------------------------------------------------------------------
    if not args.no_faiss:
        import faiss

        xb = np.ascontiguousarray(xn, dtype=np.float32)
        qn = np.ascontiguousarray(q / np.linalg.norm(q, axis=1, keepdims=True), dtype=np.float32)
        index = faiss.IndexHNSWFlat(args.dim, args.m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = args.ef_construction
        t0 = time.perf_counter()
        index.add(xb)
        res["faiss_build_s"] = time.perf_counter() - t0
        print(f"faiss HNSW build: {res['faiss_build_s']:.1f}s ({faiss.omp_get_max_threads()} threads)",
              flush=True)
        faiss.omp_set_num_threads(1)  # per-query latency, like one SQL query on one backend
        sel = faiss.IDSelectorBatch(np.flatnonzero(dmask).astype(np.int64))
        for ef in args.ef_search:
            for filt in ("none", "date"):
                p = faiss.SearchParametersHNSW(efSearch=int(ef))
                if filt == "date":
                    p.sel = sel
                lat, found = [], []
                for i in range(len(qn)):
                    t0 = time.perf_counter()
                    _, ids = index.search(qn[i: i + 1], args.k, params=p)
                    lat.append(time.perf_counter() - t0)
                    found.append([j for j in ids[0].tolist() if j >= 0])
                rows.append(("faiss IndexHNSWFlat", filt, str(ef), np.asarray(lat) * 1000,
                             recall(found, truth if filt == "none" else truth_f)))

    # report -----------------------------------------------------------------------------------
    res["queries"] = [
        {"engine": e, "filter": f, "ef_search": ef, "p50_ms": pct(l, 50), "p95_ms": pct(l, 95),
         "recall_at_k": r} for e, f, ef, l, r in rows
    ]
    res["total_s"] = time.perf_counter() - T0
    print()
    print("## Load")
    print()
    print("| path | rows/s (wall) | vs ORM | CPU us/row client + server | CPU vs ORM |")
    print("|---|---:|---:|---:|---:|")
    orm = res["orm"]
    orm_cpu = orm["client_us_per_row"] + orm["server_us_per_row"]
    labels = {
        "orm": f"SQLAlchemy ORM add_all + commit ({orm['rows']} rows, extrapolated)",
        "copy_staging": "load_partition (default): COPY -> temp staging -> DELETE + INSERT SELECT",
        "copy_direct": "load_partition(staging=False): DELETE + COPY into the table",
        "replace_staging": "replacing existing partitions, staging",
        "replace_direct": "replacing existing partitions, staging=False",
        "replace_with_hnsw": "replacing one partition with the HNSW index in place (staging)",
    }
    for key, label in labels.items():
        r = res[key]
        cpu = r["client_us_per_row"] + r["server_us_per_row"]
        print(f"| {label} | {r['rows_per_s']:,.0f} | {r['rows_per_s'] / orm['rows_per_s']:.1f}x | "
              f"{r['client_us_per_row']:.0f} + {r['server_us_per_row']:.0f} = {cpu:.0f} | "
              f"{orm_cpu / cpu:.1f}x |")
    print()
    print("## Index build")
    print()
    print(f"| engine | seconds | table | index |")
    print("|---|---:|---:|---:|")
    print(f"| pgvector {res.get('pgvector')} HNSW (m={args.m}, ef_construction={args.ef_construction}) "
          f"| {res['pg_build_s']:.1f} | {res['table_mb']:.0f} MB | {res['index_mb']:.0f} MB |")
    if "faiss_build_s" in res:
        print(f"| faiss IndexHNSWFlat (same params) | {res['faiss_build_s']:.1f} | | "
              f"(pgvector / faiss = {res['pg_build_s'] / res['faiss_build_s']:.1f}x) |")
    print()
    print(f"## Queries (k={args.k}, {args.queries} fresh queries, date filter keeps {dmask.mean():.0%})")
    print()
    print("| engine | filter | ef_search | p50 ms | p95 ms | recall@10 | p50 vs faiss |")
    print("|---|---|---:|---:|---:|---:|---:|")
    ref = {(f, ef.split()[0]): pct(l, 50) for e, f, ef, l, r in rows if e.startswith("faiss")}
    for e, f, ef, l, r in rows:
        key = (f, ef.split()[0])
        ratio = f"{pct(l, 50) / ref[key]:.1f}x" if key in ref else ""
        print(f"| {e} | {f} | {ef} | {pct(l, 50):.2f} | {pct(l, 95):.2f} | {r:.3f} | {ratio} |")
    print()
    print(f"total {res['total_s']:.0f}s")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

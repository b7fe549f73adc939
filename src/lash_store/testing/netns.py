"""Several "hosts" on one machine: Linux network namespaces joined by a bridge on 127.213.0.0/24.

The PostgreSQL backend has to be tested the way it is deployed - a database
host and several worker hosts, with a network between them that can fail.
:class:`Topology` builds that from network namespaces (root only)::

    namespace <prefix>-db:  br0 127.213.0.1/24, the PostgreSQL server listens here
        |-- w1-br  <veth>  w1-in 127.213.0.11/24   namespace <prefix>-w1
        |-- w2-br  <veth>  w2-in 127.213.0.12/24   namespace <prefix>-w2
        ...

Why loopback addresses: in the root namespace the whole of 127.0.0.0/8 is
local (``ip route get 127.213.0.1`` says ``dev lo``), so a client that misses
its ``ip netns exec`` talks to this machine and nothing else.  A private or
public range would send that stray traffic out of the default route.  The
harness asserts the ``dev lo`` route before any traffic.  Inside the
namespaces ``lo`` keeps only 127.0.0.1/32 and ``route_localnet=1`` lets
127.213.0.0/24 travel over the veths instead of being dropped as martian.

Nothing is attached to the root namespace, every name carries a per-run
prefix (``lash`` + 4 hex digits), and teardown (``finally``, ``atexit``, and
a sweep at the next run for prefixes whose owner process is gone) deletes
the namespaces and everything running in them.

Usage::

    if not netns.available(): ...
    with Topology(workers=2) as net:
        pg = net.start_postgres()
        net.run_in(net.worker(1), [sys.executable, "-c", "..."], timeout=30)
        net.partition(1); ...; net.heal(1)
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from lash_store.testing._proc import owner_alive, owner_token, terminate
from lash_store.testing.pgserver import PostgresServer

__all__ = [
    "NETWORK",
    "PREFIX",
    "SERVER_ADDRESS",
    "NetnsError",
    "Topology",
    "available",
    "list_namespaces",
    "new_prefix",
    "popen_in",
    "route_device",
    "run_in",
    "sweep_stale_namespaces",
]

#: The test network.  Loopback on purpose: see the module docstring.
NETWORK = ipaddress.ip_network("127.213.0.0/24")
#: The ``db`` namespace's bridge address, where the server listens.
SERVER_ADDRESS = "127.213.0.1"
#: Every namespace this project creates is named ``lash<4 hex>-<role>``.
PREFIX = "lash"
_NAME = re.compile(rf"{PREFIX}[0-9a-f]{{4}}-[a-z0-9]+")
_MAX_WORKERS = 64
_IP_TIMEOUT = 10.0


class NetnsError(RuntimeError):
    """A namespace command failed, or a routing safety check did not hold."""


def new_prefix() -> str:
    """A fresh per-run prefix, ``lash`` + 4 hex digits."""
    return f"{PREFIX}{secrets.token_hex(2)}"


def _owner_dir() -> Path:
    # One file per live prefix, holding its owner's pid and start time, so the sweep can tell
    # a concurrent run's namespaces (keep) from a dead run's (delete).
    return Path(tempfile.gettempdir()) / "lash-netns"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(
            ["ip", *args], capture_output=True, text=True, timeout=_IP_TIMEOUT, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        raise NetnsError(f"ip {' '.join(args)} did not finish within {_IP_TIMEOUT:.0f} s") from None
    if check and proc.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)} failed: {proc.stderr.strip() or proc.returncode}")
    return proc


def available() -> bool:
    """Whether this process can build namespaces: root, ``ip`` present, and ``ip netns add`` works."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return False
    probe = f"{new_prefix()}-probe"
    try:
        ok = _ip("netns", "add", probe, check=False).returncode == 0
    except NetnsError:
        return False
    if ok:
        _ip("netns", "del", probe, check=False)
    return ok


def list_namespaces() -> list[str]:
    """The names of all network namespaces (``ip netns list`` prints "name" or "name (id: N)")."""
    out = _ip("netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _delete_namespace(name: str) -> None:
    """Kill whatever runs in namespace ``name``, then delete it.

    ``ip netns del`` only removes the name: a namespace with processes still in
    it lives on, unnamed and unreachable, until they exit.
    """
    pids = [int(p) for p in _ip("netns", "pids", name, check=False).stdout.split() if p.isdigit()]
    terminate(pids, signal.SIGKILL, 5.0)
    _ip("netns", "del", name, check=False)


def sweep_stale_namespaces(keep: str | None = None) -> list[str]:
    """Delete ``lash<hex>-*`` namespaces whose owning process is gone; return their names.

    ``keep`` is a prefix never to touch (the caller's own).
    """
    removed = []
    for name in list_namespaces():
        if not _NAME.fullmatch(name):
            continue
        prefix = name.split("-", 1)[0]
        if prefix == keep:
            continue
        marker = _owner_dir() / prefix
        try:
            if owner_alive(marker.read_text()):
                continue
        except OSError:
            pass  # No marker: a probe or a run that died before writing one.
        _delete_namespace(name)
        removed.append(name)
    # Markers whose namespaces are all gone.
    with contextlib.suppress(FileNotFoundError):
        for marker in _owner_dir().iterdir():
            with contextlib.suppress(OSError):
                if marker.name != keep and not owner_alive(marker.read_text(errors="replace")):
                    marker.unlink(missing_ok=True)
    return removed


def route_device(address: str, netns: str | None = None) -> str:
    """The device ``ip route get address`` picks, in ``netns`` or (None) the root namespace."""
    args = ["-n", netns] if netns is not None else []
    out = _ip(*args, "route", "get", address).stdout.split()
    if "dev" not in out:
        raise NetnsError(f"ip route get {address} printed no device: {' '.join(out)}")
    return out[out.index("dev") + 1]


def _check_loopback(address: str) -> None:
    if ipaddress.ip_address(address) not in ipaddress.ip_network("127.0.0.0/8"):
        raise NetnsError(f"{address} is not in 127.0.0.0/8: test hosts use loopback addresses only")


def run_in(
    netns: str,
    argv: Sequence[str],
    timeout: float,
    *,
    env: Mapping[str, str] | None = None,
    check: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` inside ``netns`` (``ip netns exec``), capturing text output, killed after ``timeout`` s.

    ``ip netns exec`` only switches the network namespace: files, processes and
    the environment are shared, so results can be exchanged through files.
    """
    return subprocess.run(
        ["ip", "netns", "exec", netns, *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=None if env is None else dict(env),
        stdin=subprocess.DEVNULL,
        check=check,
    )


def popen_in(netns: str, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[str]:
    """Start ``argv`` inside ``netns``; ``kwargs`` go to :class:`subprocess.Popen` (text mode).

    The caller owns the process and must bound it (``wait(timeout=...)``);
    teardown kills whatever is still running in the topology's namespaces.
    """
    kwargs.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.Popen(["ip", "netns", "exec", netns, *argv], text=True, **kwargs)


_LIVE: set[Topology] = set()


@atexit.register
def _teardown_live_topologies() -> None:
    # Safety net for a run that ends without reaching its finally blocks.
    for topology in list(_LIVE):
        with contextlib.suppress(Exception):
            topology.teardown()


class Topology:
    """A ``db`` namespace with a bridge and ``workers`` worker namespaces wired to it.

    ``setup()`` (or entering the context manager) builds it; ``teardown()``
    (or leaving it) stops the servers started with :meth:`start_postgres`,
    kills what runs in the namespaces and deletes them.  Workers are numbered
    from 1.
    """

    def __init__(self, workers: int = 2, *, prefix: str | None = None) -> None:
        if not 1 <= workers <= _MAX_WORKERS:
            raise ValueError(f"workers must be between 1 and {_MAX_WORKERS}")
        self.prefix = new_prefix() if prefix is None else prefix
        if not _NAME.fullmatch(f"{self.prefix}-db"):
            raise ValueError(f"prefix {self.prefix!r} must be {PREFIX} + 4 hex digits")
        self.workers = workers
        self.db = f"{self.prefix}-db"
        self.server_address = SERVER_ADDRESS
        self._created: list[str] = []
        self._servers: list[PostgresServer] = []
        self._torn_down = False

    def worker(self, i: int) -> str:
        """The namespace name of worker ``i`` (1-based)."""
        self._check_worker(i)
        return f"{self.prefix}-w{i}"

    def worker_address(self, i: int) -> str:
        """Worker ``i``'s address: 127.213.0.(10 + i)."""
        self._check_worker(i)
        return str(NETWORK.network_address + 10 + i)

    def _check_worker(self, i: int) -> None:
        if not 1 <= i <= self.workers:
            raise ValueError(f"worker {i} does not exist (1..{self.workers})")

    def _worker_link(self, i: int) -> str:
        return f"w{i}-in"

    # ----------------------------------------------------------------- build

    def setup(self) -> Topology:
        """Build the namespaces and links, after checking that 127.213.0.0/24 is local to the root namespace."""
        if self._torn_down:
            raise NetnsError("this topology was torn down; create a new one")
        _owner_dir().mkdir(parents=True, exist_ok=True)
        (_owner_dir() / self.prefix).write_text(owner_token())
        _LIVE.add(self)
        try:
            sweep_stale_namespaces(keep=self.prefix)
            self.check_root_routes()
            for ns in [self.db, *(self.worker(i) for i in range(1, self.workers + 1))]:
                _ip("netns", "add", ns)
                self._created.append(ns)
                self._prepare_namespace(ns)
            bridge_address = f"{self.server_address}/{NETWORK.prefixlen}"
            _ip("-n", self.db, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.db, "addr", "add", bridge_address, "dev", "br0")
            _ip("-n", self.db, "link", "set", "br0", "up")
            for i in range(1, self.workers + 1):
                self._wire_worker(i)
            self.check_root_routes()  # Nothing above may have touched the root namespace's routing.
            for i in range(1, self.workers + 1):
                dev = route_device(self.server_address, self.worker(i))
                if dev != self._worker_link(i):
                    raise NetnsError(f"{self.worker(i)} routes {self.server_address} via {dev}, not its veth")
        except BaseException:
            self.teardown()
            raise
        return self

    def check_root_routes(self) -> None:
        """Assert that, from the root namespace, the server and every worker address route to ``dev lo``.

        So a connection that forgot its ``ip netns exec`` stays on this machine.
        """
        for address in [self.server_address, *(self.worker_address(i) for i in range(1, self.workers + 1))]:
            _check_loopback(address)
            dev = route_device(address)
            if dev != "lo":
                raise NetnsError(f"from the root namespace {address} routes via {dev}, not lo: refusing to go on")

    def _prepare_namespace(self, ns: str) -> None:
        # route_localnet before any interface exists, so "default" covers the ones created later;
        # "all" is OR-ed with the per-interface value for this setting.
        sysctl = "; ".join(f"echo 1 > /proc/sys/net/ipv4/conf/{scope}/route_localnet" for scope in ("all", "default"))
        proc = run_in(ns, ["sh", "-c", sysctl], _IP_TIMEOUT)
        if proc.returncode != 0:
            raise NetnsError(f"setting route_localnet in {ns} failed: {proc.stderr.strip()}")
        # Bringing lo up adds 127.0.0.1/8, which would make all of 127/8 local here too;
        # narrowing it to /32 leaves 127.213.0.0/24 to the veth and bridge routes.
        _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", ns, "addr", "del", "127.0.0.1/8", "dev", "lo", check=False)
        _ip("-n", ns, "addr", "replace", "127.0.0.1/32", "dev", "lo")

    def _wire_worker(self, i: int) -> None:
        ns, inner, outer = self.worker(i), self._worker_link(i), f"w{i}-br"
        address = self.worker_address(i)
        _check_loopback(address)
        # Created inside db with its peer moved straight into the worker: no end ever sits in the root namespace.
        _ip("-n", self.db, "link", "add", outer, "type", "veth", "peer", "name", inner, "netns", ns)
        _ip("-n", self.db, "link", "set", outer, "master", "br0")
        _ip("-n", self.db, "link", "set", outer, "up")
        _ip("-n", ns, "addr", "add", f"{address}/{NETWORK.prefixlen}", "dev", inner)
        _ip("-n", ns, "link", "set", inner, "up")

    # ------------------------------------------------------------------- use

    def start_postgres(self, *, fsync: bool = False, port: int = 5432, **kwargs: Any) -> PostgresServer:
        """Start a PostgresServer inside ``db`` listening on the bridge address; torn down with the topology.

        The server's unix socket (its ``dsn``) is reachable from the root
        namespace too - unix sockets are files, not network - which is how the
        test harness itself talks to it.  Workers use ``dsn_for(db, tcp=True)``.
        """
        server = PostgresServer(host=self.server_address, port=port, netns=self.db, fsync=fsync, **kwargs)
        self._servers.append(server)
        return server.start()

    def run_in(
        self, netns: str, argv: Sequence[str], timeout: float, **kwargs: Any
    ) -> subprocess.CompletedProcess[str]:
        """:func:`run_in`, for one of this topology's namespaces."""
        self._check_own(netns)
        return run_in(netns, argv, timeout, **kwargs)

    def popen_in(self, netns: str, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[str]:
        """:func:`popen_in`, for one of this topology's namespaces."""
        self._check_own(netns)
        return popen_in(netns, argv, **kwargs)

    def _check_own(self, netns: str) -> None:
        if netns not in self._created:
            raise ValueError(f"{netns} is not a namespace of this topology")

    def partition(self, i: int) -> None:
        """Cut worker ``i`` off: its link goes down, so connecting fails with "Network is unreachable"."""
        _ip("-n", self.worker(i), "link", "set", self._worker_link(i), "down")

    def heal(self, i: int) -> None:
        """Reconnect worker ``i`` (link up; the kernel restores its route to the bridge)."""
        _ip("-n", self.worker(i), "link", "set", self._worker_link(i), "up")
        dev = route_device(self.server_address, self.worker(i))
        if dev != self._worker_link(i):
            raise NetnsError(f"after heal, {self.worker(i)} routes {self.server_address} via {dev}")

    # -------------------------------------------------------------- teardown

    def teardown(self) -> None:
        """Stop servers, kill what runs in the namespaces, delete them.  Idempotent; tries every step."""
        if self._torn_down:
            return
        self._torn_down = True
        errors: list[str] = []
        try:
            for server in self._servers:
                try:
                    server.stop("immediate")  # Throwaway data: no need for a shutdown checkpoint.
                    server.cleanup()
                except Exception as exc:
                    errors.append(f"stopping {server!r}: {exc}")
            for ns in reversed(self._created):
                try:
                    _delete_namespace(ns)
                except Exception as exc:
                    errors.append(f"deleting {ns}: {exc}")
            left = [ns for ns in list_namespaces() if ns.startswith(f"{self.prefix}-")]
            if left:
                errors.append(f"namespaces still present: {', '.join(left)}")
        finally:
            (_owner_dir() / self.prefix).unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                _owner_dir().rmdir()  # Only succeeds once no other run holds a marker.
            _LIVE.discard(self)
        if errors:
            raise NetnsError("teardown incomplete: " + "; ".join(errors))

    def __enter__(self) -> Topology:
        return self.setup()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self.teardown()
        except NetnsError as teardown_error:
            if exc is None:
                raise
            # Do not mask the test's own failure with a teardown complaint; attach it instead.
            exc.add_note(str(teardown_error))

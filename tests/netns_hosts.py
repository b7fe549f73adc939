"""The test side of the network-namespace tests: the hosts' network, a database per test, worker processes.

Workers run as ``ip netns exec <worker ns> python -m <worker module> ...``
(modules built on :mod:`lash_store.testing.netns_host`) and reach the
PostgreSQL server in the ``db`` namespace over the test network, exactly as
separate machines would.  The test itself talks to the server through its unix
socket.  Results come back through files (``ip netns exec`` shares the file
system) and every worker is bounded by a deadline.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lash_store.postgres import close_shared_pools, setup
from lash_store.testing import netns
from lash_store.testing.netns import Topology
from lash_store.testing.pgserver import PostgresServer, PostgresUnavailable
from tests.pg import postgres_unavailable
from tests.test_netns import require_netns

# Fail fast when cut off: no connect waits longer than 3 s, and unacknowledged data (or dead keepalives)
# abort an established connection within seconds instead of TCP's minutes of retransmissions.
NET_OPTIONS = (
    "connect_timeout=3 tcp_user_timeout=3000 keepalives=1 keepalives_idle=1 keepalives_interval=1 keepalives_count=2"
)


def network(hosts: int) -> Iterator[tuple[Topology, PostgresServer]]:
    """The body of a module's ``hosts`` fixture: ``hosts`` worker namespaces and a server in ``db``."""
    require_netns()
    with Topology(workers=hosts) as net:
        # A client that forgot its "ip netns exec" would stay on this machine: the test network is local here.
        assert netns.route_device(net.server_address) == "lo"
        try:
            # Connections are logged, so a test can tell which addresses the work came from.
            server = net.start_postgres(settings={"log_connections": True})
        except PostgresUnavailable as exc:
            postgres_unavailable(exc)
        yield net, server
        close_shared_pools()


def database(server: PostgresServer, name: str) -> tuple[str, str]:
    """A fresh database with the schema set up: (the test's unix-socket DSN, the workers' TCP DSN)."""
    local = server.create_database(name)
    setup(local)
    return local, f"{server.dsn_for(name, tcp=True)} {NET_OPTIONS}"


class Workers:
    """Worker processes in the hosts' namespaces, by name, and what they reported."""

    def __init__(self, net: Topology, module: str, dsn: str, out_dir: Path, budget_s: float) -> None:
        self.net, self.module, self.dsn, self.out_dir = net, module, dsn, out_dir
        self.control = out_dir / "control"
        self.control.mkdir()
        self.deadline = time.time() + budget_s
        self.procs: dict[str, subprocess.Popen[str]] = {}

    def start(self, name: str, host: int, mode: str, *extra: str) -> None:
        argv = [sys.executable, "-m", self.module, mode, "--dsn", self.dsn]
        argv += ["--name", name, "--out", str(self.out(name)), "--deadline", str(self.deadline)]
        argv += ["--control", str(self.control), *extra]
        self.procs[name] = self.net.popen_in(
            self.net.worker(host), argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )

    def out(self, name: str) -> Path:
        return self.out_dir / f"{name}.jsonl"

    def events(self, name: str, kind: str | None = None) -> list[dict[str, Any]]:
        try:
            lines = self.out(name).read_text().splitlines()
        except FileNotFoundError:
            return []
        found = [json.loads(line) for line in lines if line.strip()]
        return [event for event in found if kind is None or event["ev"] == kind]

    def wait_for(self, name: str, kind: str, timeout_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while not (found := self.events(name, kind)):
            assert not self.events(name, "error"), self.events(name, "error")
            proc = self.procs[name]
            if proc.poll() is not None:
                _, err = proc.communicate()
                pytest.fail(f"{name} exited ({proc.returncode}) before reporting {kind!r}: {err[-2000:]}")
            assert time.monotonic() < deadline, f"{name} did not report {kind!r} within {timeout_s} s"
            time.sleep(0.02)
        return found[0]

    def signal(self, name: str) -> None:
        (self.control / name).touch()

    def finish(self, name: str, timeout_s: float) -> None:
        proc = self.procs[name]
        try:
            _, err = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate(timeout=10)
            pytest.fail(f"{name} did not finish within {timeout_s} s: {err[-2000:]}")
        assert proc.returncode == 0, f"{name} failed: {self.events(name, 'error')} {err[-2000:]}"

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.communicate(timeout=10)


def workers_factory(net: Topology, module: str, out_dir: Path, budget_s: float) -> Iterator[Callable[[str], Workers]]:
    """The body of a ``make_workers`` fixture: makes :class:`Workers` on a DSN, stops them all at teardown."""
    made: list[Workers] = []

    def make(dsn: str) -> Workers:
        made.append(Workers(net, module, dsn, out_dir, budget_s))
        return made[-1]

    yield make
    for workers in made:
        workers.stop_all()
    close_shared_pools()

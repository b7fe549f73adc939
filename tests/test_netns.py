"""Several hosts on one machine: workers in network namespaces reach PostgreSQL in the db namespace.

Needs root (CI runs as root).  Without it these tests fail, unless
``LASH_ALLOW_NO_NETNS=1`` says this machine knowingly cannot build namespaces.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import psycopg
import pytest

from lash_store.testing import netns
from lash_store.testing.netns import Topology
from lash_store.testing.pgserver import PostgresServer, PostgresUnavailable
from tests.pg import postgres_unavailable

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(60)]

# One connection from inside a worker namespace: record who we are and the address the server saw.
WORKER = """
import sys, psycopg
dsn, name = sys.argv[1], sys.argv[2]
with psycopg.connect(dsn, connect_timeout=3) as conn:
    conn.execute("INSERT INTO hosts (worker, addr) VALUES (%s, host(inet_client_addr()))", (name,))
"""


def require_netns() -> None:
    """Fail (or, with ``LASH_ALLOW_NO_NETNS=1``, skip) unless namespaces can be built here."""
    if netns.available():
        return
    reason = "network namespaces unavailable (needs root, 'ip', and a working 'ip netns add')"
    if os.environ.get("LASH_ALLOW_NO_NETNS") == "1":
        pytest.skip(reason)
    pytest.fail(f"{reason}; set LASH_ALLOW_NO_NETNS=1 to skip instead", pytrace=False)


@pytest.fixture
def topology() -> Iterator[Topology]:
    require_netns()
    with Topology(workers=2) as net:
        yield net


def start_postgres(net: Topology) -> PostgresServer:
    try:
        return net.start_postgres()
    except PostgresUnavailable as exc:
        postgres_unavailable(exc)


def hosts(server: PostgresServer) -> list[tuple[str, str]]:
    with psycopg.connect(server.dsn_for("hosts")) as conn:
        return conn.execute("SELECT worker, addr FROM hosts ORDER BY worker").fetchall()


def test_workers_connect_from_their_addresses_and_survive_a_partition(topology: Topology) -> None:
    started = time.monotonic()
    server = start_postgres(topology)
    # The harness talks to the server over its unix socket, from the root namespace.
    with psycopg.connect(server.create_database("hosts")) as conn:
        conn.execute("CREATE TABLE hosts (worker text, addr text)")
    tcp = server.dsn_for("hosts", tcp=True)
    assert tcp.startswith("host=127.213.0.1 ")

    workers = [
        topology.popen_in(
            topology.worker(i),
            [sys.executable, "-c", WORKER, tcp, f"w{i}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for i in (1, 2)
    ]
    for proc in workers:
        _, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
    assert hosts(server) == [("w1", "127.213.0.11"), ("w2", "127.213.0.12")]

    topology.partition(1)
    cut_at = time.monotonic()
    cut = topology.run_in(topology.worker(1), [sys.executable, "-c", WORKER, tcp, "w1-cut"], timeout=20)
    assert cut.returncode != 0
    assert "unreachable" in cut.stderr.lower(), cut.stderr
    assert time.monotonic() - cut_at < 5, "a partitioned connect must fail fast, not hang"
    other = topology.run_in(topology.worker(2), [sys.executable, "-c", WORKER, tcp, "w2-during-cut"], timeout=20)
    assert other.returncode == 0, other.stderr

    topology.heal(1)
    healed = topology.run_in(topology.worker(1), [sys.executable, "-c", WORKER, tcp, "w1-healed"], timeout=20)
    assert healed.returncode == 0, healed.stderr
    assert hosts(server) == [
        ("w1", "127.213.0.11"),
        ("w1-healed", "127.213.0.11"),
        ("w2", "127.213.0.12"),
        ("w2-during-cut", "127.213.0.12"),
    ]
    assert time.monotonic() - started < 45


def test_the_test_network_is_local_from_the_root_namespace(topology: Topology) -> None:
    # A client that forgot its "ip netns exec" would land on this machine's lo, never on a real network.
    for address in ["127.213.0.1", topology.worker_address(1), topology.worker_address(2)]:
        assert netns.route_device(address) == "lo"
    assert netns.route_device(topology.server_address, topology.worker(2)) == "w2-in"


def test_teardown_leaves_no_namespaces_or_servers() -> None:
    require_netns()
    with Topology(workers=1) as net:
        server = start_postgres(net)
        base = server.base_dir
        sleeper = net.popen_in(net.worker(1), ["sleep", "60"])
        assert server.running
    assert sleeper.wait(timeout=10) != 0, "teardown kills what still runs in the namespaces"
    assert not server.running and not base.exists()
    assert not [ns for ns in netns.list_namespaces() if ns.startswith(net.prefix)]


def test_stale_namespaces_of_a_dead_run_are_swept() -> None:
    require_netns()
    stale = f"{netns.new_prefix()}-w1"  # No owner marker: as if its run had been SIGKILLed.
    subprocess.run(["ip", "netns", "add", stale], check=True, timeout=10)
    try:
        assert stale in netns.sweep_stale_namespaces()
        assert stale not in netns.list_namespaces()
    finally:
        subprocess.run(["ip", "netns", "del", stale], capture_output=True, timeout=10)


def test_only_loopback_addresses() -> None:
    assert netns.NETWORK.subnet_of(ipaddress.ip_network("127.0.0.0/8"))
    with pytest.raises(ValueError):
        Topology(workers=0)
    with pytest.raises(ValueError):
        Topology(prefix="prod")

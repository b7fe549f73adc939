"""Several hosts share sessions on one PostgreSQL server, over a network that can fail (design note §5.4).

The server runs inside the ``db`` network namespace on 127.213.0.1; workers
run as ``ip netns exec <worker ns> python -m lash_store.testing.netns_worker``
in their own namespaces and reach it over the test network, exactly as
separate machines would.  The test itself talks to the server through its
unix socket.  Results come back through files (``ip netns exec`` shares the
file system), every worker is bounded by a deadline, and the workers' DSN
carries ``connect_timeout``, ``tcp_user_timeout`` and keepalives so a
partitioned worker fails fast instead of hanging.

* three hosts commit to one session with compare-and-set and drain one
  shared queue: no lost or doubled work;
* a partition during a lease: w1 claims with a 3 s lease and is cut off; w2
  reclaims after the expiry (larger fence) and completes; w1's renew fails
  fast with a typed error; after the heal w1's commit carrying its stale
  completion fails with ``QueuedWorkClaimExpired`` and nothing of it persists.

Needs root (CI runs as root); see ``tests/test_netns.py`` for the skip rule.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from lash_store.model import SessionReadScope, TokenLedgerEntry, TokenUsage
from lash_store.postgres import PostgresStore, close_shared_pools, setup
from lash_store.testing import netns
from lash_store.testing.netns import Topology
from lash_store.testing.netns_worker import USAGE, decode_claim, turn
from lash_store.testing.pgserver import PostgresServer, PostgresUnavailable
from tests.helpers import draft
from tests.pg import postgres_unavailable
from tests.test_netns import require_netns

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(90)]

WORKERS = 3
WORKER_BUDGET_S = 45.0
# Fail fast when cut off: no connect waits longer than 3 s, and unacknowledged data (or dead keepalives)
# abort an established connection within seconds instead of TCP's minutes of retransmissions.
NET_OPTIONS = (
    "connect_timeout=3 tcp_user_timeout=3000 keepalives=1 keepalives_idle=1 keepalives_interval=1 keepalives_count=2"
)


@pytest.fixture(scope="module")
def hosts() -> Iterator[tuple[Topology, PostgresServer]]:
    require_netns()
    with Topology(workers=WORKERS) as net:
        # A client that forgot its "ip netns exec" would stay on this machine: the test network is local here.
        assert netns.route_device(net.server_address) == "lo"
        try:
            # Connections are logged, so the test can tell which addresses the work came from.
            server = net.start_postgres(settings={"log_connections": True})
        except PostgresUnavailable as exc:
            postgres_unavailable(exc)
        yield net, server
        close_shared_pools()


def _database(server: PostgresServer, name: str) -> tuple[str, str]:
    """A fresh database with the schema set up: (the test's unix-socket DSN, the workers' TCP DSN)."""
    local = server.create_database(name)
    setup(local)
    return local, f"{server.dsn_for(name, tcp=True)} {NET_OPTIONS}"


class Hosts:
    """Starts workers in their namespaces and reads what they reported."""

    def __init__(self, net: Topology, tcp_dsn: str, out_dir: Path) -> None:
        self.net = net
        self.dsn = tcp_dsn
        self.out_dir = out_dir
        self.control = out_dir / "control"
        self.control.mkdir()
        self.deadline = time.time() + WORKER_BUDGET_S
        self.procs: dict[int, subprocess.Popen[str]] = {}

    def out(self, i: int) -> Path:
        return self.out_dir / f"w{i}.jsonl"

    def start(self, i: int, mode: str, session: str, *extra: str) -> None:
        argv = [sys.executable, "-m", "lash_store.testing.netns_worker", mode, "--dsn", self.dsn]
        argv += ["--session", session, "--name", f"w{i}", "--out", str(self.out(i)), "--deadline", str(self.deadline)]
        argv += ["--control", str(self.control), *extra]
        self.procs[i] = self.net.popen_in(self.net.worker(i), argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def events(self, i: int, kind: str | None = None) -> list[dict[str, Any]]:
        try:
            lines = self.out(i).read_text().splitlines()
        except FileNotFoundError:
            return []
        events = [json.loads(line) for line in lines if line.strip()]
        return [e for e in events if kind is None or e["ev"] == kind]

    def wait_for(self, i: int, kind: str, timeout_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while not (found := self.events(i, kind)):
            errors = self.events(i, "error")
            assert not errors, errors
            proc = self.procs[i]
            if proc.poll() is not None:
                _, err = proc.communicate()
                pytest.fail(f"w{i} exited ({proc.returncode}) before reporting {kind!r}: {err[-2000:]}")
            assert time.monotonic() < deadline, f"w{i} did not report {kind!r} within {timeout_s} s"
            time.sleep(0.02)
        return found[0]

    def signal(self, name: str) -> None:
        (self.control / name).touch()

    def finish(self, i: int, timeout_s: float) -> None:
        proc = self.procs[i]
        try:
            _, err = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate(timeout=10)
            pytest.fail(f"w{i} did not finish within {timeout_s} s: {err[-2000:]}")
        assert proc.returncode == 0, f"w{i} failed: {self.events(i, 'error')} {err[-2000:]}"

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.communicate(timeout=10)


@pytest.fixture
def make_hosts(hosts: tuple[Topology, PostgresServer], tmp_path: Path) -> Iterator[Any]:
    made: list[Hosts] = []

    def make(tcp_dsn: str) -> Hosts:
        made.append(Hosts(hosts[0], tcp_dsn, tmp_path))
        return made[-1]

    yield make
    for h in made:
        h.stop_all()
    close_shared_pools()


def _times(n: int) -> TokenUsage:
    return TokenUsage(
        input_tokens=USAGE.input_tokens * n,
        output_tokens=USAGE.output_tokens * n,
        cached_input_tokens=USAGE.cached_input_tokens * n,
        reasoning_tokens=USAGE.reasoning_tokens * n,
    )


def _stamps(dsn: str, sid: str) -> list[str]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute("SELECT turn_id FROM lash.turn_commits WHERE session_id = %s", (sid,)).fetchall()
    return sorted(r[0] for r in rows)


def test_hosts_share_a_session_and_a_queue(hosts: tuple[Topology, PostgresServer], make_hosts: Any) -> None:
    started = time.monotonic()
    net, server = hosts
    local, tcp = _database(server, "shared_hosts")
    sid, turns, batch_count = "shared", 20, 60
    with PostgresStore.open(local, sid) as store:
        batches = [store.enqueue_queued_work(draft(sid, f"work {i}")).batch_id for i in range(batch_count)]

    h = make_hosts(tcp)
    for i in range(1, WORKERS + 1):
        h.start(i, "shared", sid, "--turns", str(turns))
    for i in range(1, WORKERS + 1):
        h.finish(i, WORKER_BUDGET_S + 5)

    acks = [e for i in range(1, WORKERS + 1) for e in h.events(i, "ack")]
    claims = [e for i in range(1, WORKERS + 1) for e in h.events(i, "claim")]
    completed = [e for i in range(1, WORKERS + 1) for e in h.events(i, "completed")]
    conflicts = sum(e["conflicts"] for i in range(1, WORKERS + 1) for e in h.events(i, "cas-done"))
    total = WORKERS * turns + batch_count

    # CAS: every host's turns landed, each at its own revision; the queue: every batch once, under its own fence.
    assert len(acks) == WORKERS * turns
    assert sorted(e["batch"] for e in claims) == sorted(batches), "a batch was lost or claimed twice"
    assert len({e["fence"] for e in claims}) == batch_count
    assert sorted(e["batch"] for e in completed) == sorted(batches)
    revisions = [e["revision"] for e in acks] + [e["revision"] for e in completed]
    assert sorted(revisions) == list(range(1, total + 1)), "revisions are not 1..N, each acknowledged once"

    expected_names = sorted([e["turn"] for e in acks] + [f"done-{b}" for b in batches])
    with PostgresStore.open(local, sid, create=False) as store:
        read = store.load_session(SessionReadScope.full_graph())
        assert read is not None and read.head_revision == total
        assert sorted(n.node_id for n in read.graph.nodes) == expected_names
        assert read.token_ledger == [TokenLedgerEntry(source="netns", model="netns-model", usage=_times(total))]
        assert store.list_queued_work(sid) == []
    assert _stamps(local, sid) == expected_names
    # The work really came over the test network, from every worker's own address.
    log = server.log_path.read_text(errors="replace")
    for i in range(1, WORKERS + 1):
        assert f"connection received: host={net.worker_address(i)} " in log, f"no connection from w{i}"
    print(f"{total} commits from {WORKERS} hosts ({conflicts} CAS conflicts) in {time.monotonic() - started:.1f} s")


def test_partition_during_a_lease_fences_out_the_cut_off_host(
    hosts: tuple[Topology, PostgresServer], make_hosts: Any
) -> None:
    started = time.monotonic()
    net, server = hosts
    local, tcp = _database(server, "partition_hosts")
    sid = "leased"
    with PostgresStore.open(local, sid) as store:
        store.commit_runtime_state(turn(sid, "seed", 0))
        batch = store.enqueue_queued_work(draft(sid, "work")).batch_id

    h = make_hosts(tcp)
    try:
        h.start(2, "reclaim", sid)  # started first: connected and waiting before w1's lease starts to run
        h.wait_for(2, "ready", 20)
        h.start(1, "hold", sid, "--lease-ms", "3000")
        claim_w1 = decode_claim(h.wait_for(1, "claimed", 20)["claim"])
        assert claim_w1.batch_ids == [batch]

        net.partition(1)
        h.signal("renew")  # w1 tries to keep its lease while cut off
        h.signal("reclaim")  # w2 claims until w1's lease has run out
        claimed_w2 = h.wait_for(2, "claimed", 25)
        claim_w2 = decode_claim(claimed_w2["claim"])
        h.finish(2, 20)
        renew = h.wait_for(1, "renew", 25)
    finally:
        net.heal(1)
    h.signal("commit")
    h.finish(1, 30)

    # w2 got the batch only after w1's lease ran out on the database clock, under a larger fence.
    assert claim_w2.batch_ids == [batch]
    assert claim_w2.claimed_at_epoch_ms >= claim_w1.expires_at_epoch_ms
    assert claim_w2.fencing_token > claim_w1.fencing_token
    assert claimed_w2["attempts"] > 0, "w2 should have found the batch held while w1's lease ran"
    assert h.events(2, "completed") == [{"ev": "completed", "worker": "w2", "revision": 2}]

    # While cut off, w1's renew failed with the store's typed error, and in bounded time.
    assert renew["outcome"] in ("BackendError", "StoreBusy"), renew
    assert renew["seconds"] < 15, renew

    # After the heal, w1's commit carrying its stale completion is refused and changes nothing.
    (commit,) = h.events(1, "commit")
    assert commit["outcome"] == "expired" and commit["claim_id"] == claim_w1.claim_id, commit
    assert commit["before"] == commit["after"]
    assert commit["after"]["revision"] == 2 and commit["after"]["nodes"] == ["seed", "w2-reclaimed"]

    with PostgresStore.open(local, sid, create=False) as store:
        read = store.load_session(SessionReadScope.full_graph())
        assert read is not None and read.head_revision == 2
        assert [n.node_id for n in read.graph.nodes] == ["seed", "w2-reclaimed"]
        assert read.token_ledger == [TokenLedgerEntry(source="netns", model="netns-model", usage=_times(2))]
        assert store.list_queued_work(sid) == []
    assert _stamps(local, sid) == ["seed", "w2-reclaimed"]
    print(
        f"partition scenario: renew gave {renew['outcome']} after {renew['seconds']:.1f} s; "
        f"{time.monotonic() - started:.1f} s in all"
    )

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

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from lash_store.model import SessionReadScope, TokenLedgerEntry, TokenUsage
from lash_store.postgres import PostgresStore
from lash_store.testing.netns import Topology
from lash_store.testing.netns_worker import USAGE, decode_claim, turn
from lash_store.testing.pgserver import PostgresServer
from tests.helpers import draft
from tests.netns_hosts import Workers, database, network, workers_factory

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(90)]

WORKERS = 3
WORKER_BUDGET_S = 45.0


@pytest.fixture(scope="module")
def hosts() -> Iterator[tuple[Topology, PostgresServer]]:
    yield from network(WORKERS)


@pytest.fixture
def make_hosts(hosts: tuple[Topology, PostgresServer], tmp_path: Path) -> Iterator[Callable[[str], Workers]]:
    yield from workers_factory(hosts[0], "lash_store.testing.netns_worker", tmp_path, WORKER_BUDGET_S)


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
    local, tcp = database(server, "shared_hosts")
    sid, turns, batch_count = "shared", 20, 60
    with PostgresStore.open(local, sid) as store:
        batches = [store.enqueue_queued_work(draft(sid, f"work {i}")).batch_id for i in range(batch_count)]

    h = make_hosts(tcp)
    for i in range(1, WORKERS + 1):
        h.start(f"w{i}", i, "shared", "--session", sid, "--turns", str(turns))
    for i in range(1, WORKERS + 1):
        h.finish(f"w{i}", WORKER_BUDGET_S + 5)

    acks = [e for i in range(1, WORKERS + 1) for e in h.events(f"w{i}", "ack")]
    claims = [e for i in range(1, WORKERS + 1) for e in h.events(f"w{i}", "claim")]
    completed = [e for i in range(1, WORKERS + 1) for e in h.events(f"w{i}", "completed")]
    conflicts = sum(e["conflicts"] for i in range(1, WORKERS + 1) for e in h.events(f"w{i}", "cas-done"))
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
    local, tcp = database(server, "partition_hosts")
    sid = "leased"
    with PostgresStore.open(local, sid) as store:
        store.commit_runtime_state(turn(sid, "seed", 0))
        batch = store.enqueue_queued_work(draft(sid, "work")).batch_id

    h = make_hosts(tcp)
    try:
        h.start(
            "w2", 2, "reclaim", "--session", sid
        )  # started first: connected and waiting before w1's lease starts to run
        h.wait_for("w2", "ready", 20)
        h.start("w1", 1, "hold", "--session", sid, "--lease-ms", "3000")
        claim_w1 = decode_claim(h.wait_for("w1", "claimed", 20)["claim"])
        assert claim_w1.batch_ids == [batch]

        net.partition(1)
        h.signal("renew")  # w1 tries to keep its lease while cut off
        h.signal("reclaim")  # w2 claims until w1's lease has run out
        claimed_w2 = h.wait_for("w2", "claimed", 25)
        claim_w2 = decode_claim(claimed_w2["claim"])
        h.finish("w2", 20)
        renew = h.wait_for("w1", "renew", 25)
    finally:
        net.heal(1)
    h.signal("commit")
    h.finish("w1", 30)

    # w2 got the batch only after w1's lease ran out on the database clock, under a larger fence.
    assert claim_w2.batch_ids == [batch]
    assert claim_w2.claimed_at_epoch_ms >= claim_w1.expires_at_epoch_ms
    assert claim_w2.fencing_token > claim_w1.fencing_token
    assert claimed_w2["attempts"] > 0, "w2 should have found the batch held while w1's lease ran"
    assert h.events("w2", "completed") == [{"ev": "completed", "worker": "w2", "revision": 2}]

    # While cut off, w1's renew failed with the store's typed error, and in bounded time.
    assert renew["outcome"] in ("BackendError", "StoreBusy"), renew
    assert renew["seconds"] < 15, renew

    # After the heal, w1's commit carrying its stale completion is refused and changes nothing.
    (commit,) = h.events("w1", "commit")
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

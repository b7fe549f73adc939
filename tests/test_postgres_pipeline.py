"""The PostgreSQL backend's pipelining and plans: what it may defer, what a commit costs, failures stay clean.

The backend queues what the service sends (``Tx.send``: locks and plain writes)
without waiting for it.  These tests check the behaviour the pipelining must not change: a
lock that is not granted is ``StoreBusy``, a failed compare-and-set leaves the
store usable, a server restart is survived by the retry of a transaction the
server never answered -- and they pin the round trips of a commit, and that
the node-state lookup of a commit is never stuck with a generic plan.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from lash_store.bench.commit import Workload
from lash_store.errors import HeadRevisionConflict, StoreBusy
from lash_store.options import StoreOptions
from lash_store.postgres import PostgresStore, close_shared_pools
from lash_store.postgres.backend import queries
from lash_store.testing.pgserver import PostgresServer, PostgresUnavailable
from tests.pg import count_round_trips, postgres_unavailable

pytestmark_pg = pytest.mark.postgres


@pytest.fixture
def dsn(pg_dsn: str) -> Iterator[str]:
    yield pg_dsn
    close_shared_pools()


def _turn(workload: Workload, index: int, revision: int | None) -> Any:
    return workload.commit(workload.turn(index), revision)


@pytestmark_pg
def test_a_commit_costs_two_round_trips(dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """BEGIN + lock + clock + every read the checks need; blobs + nodes + head + stamp + COMMIT: two waits.

    One statement at a time it was nine (BEGIN, lock, head, clock, blobs, node
    states, nodes, head, COMMIT).
    """
    workload = Workload(3)
    with PostgresStore.open(dsn, "rt") as store:
        revision = store.commit_runtime_state(_turn(workload, 1, 0)).head_revision
        waits = count_round_trips(monkeypatch)
        store.commit_runtime_state(_turn(workload, 2, revision))
        assert waits == ["sync", "fetch"]
        monkeypatch.undo()
        read = store.load_session()
    assert read is not None and read.head_revision == 2 and len(read.graph.nodes) == 4


@pytestmark_pg
def test_a_lock_not_granted_is_store_busy_and_the_store_recovers(dsn: str) -> None:
    workload = Workload(4)
    with PostgresStore.open(dsn, "busy", StoreOptions(busy_timeout_ms=200)) as store:
        revision = store.commit_runtime_state(_turn(workload, 1, 0)).head_revision
        with psycopg.connect(dsn) as holder:  # a transaction that holds the session's row lock
            holder.execute("SELECT 1 FROM lash.sessions WHERE session_id = 'busy' FOR UPDATE")
            with pytest.raises(StoreBusy):
                store.commit_runtime_state(_turn(workload, 2, revision))
            holder.rollback()
        assert store.commit_runtime_state(_turn(workload, 2, revision)).head_revision == 2
        with pytest.raises(HeadRevisionConflict):
            store.commit_runtime_state(_turn(workload, 3, 1))  # stale expected revision: rolled back
        assert store.commit_runtime_state(_turn(workload, 3, 2)).head_revision == 3
        read = store.load_session()
    assert read is not None and read.head_revision == 3 and len(read.graph.nodes) == 6


@pytestmark_pg
def test_a_server_restart_is_survived_by_the_retry() -> None:
    """Pooled connections die with the server; the next transaction fails before any answer and is retried."""
    server = PostgresServer()
    try:
        server.start()
    except PostgresUnavailable as exc:
        postgres_unavailable(exc)
    try:
        workload = Workload(5)
        with PostgresStore.open(server.dsn, "restart") as store:
            revision = store.commit_runtime_state(_turn(workload, 1, 0)).head_revision
            server.restart("immediate")
            assert store.commit_runtime_state(_turn(workload, 2, revision)).head_revision == 2
            read = store.load_session()
        assert read is not None and read.head_revision == 2
    finally:
        close_shared_pools()
        server.cleanup()


@pytestmark_pg
def test_primary_key_lookups_are_never_a_cached_generic_plan(dsn: str) -> None:
    """The lookups of ``_UNPREPARED`` are planned with their values every time; everything else is prepared.

    A generic plan made while the tables were small scanned whole sessions
    (node states) and whole queues (per-batch claim updates).
    """
    from lash_store.bench.queue import claim_loop
    from lash_store.model import DeliveryPolicy, QueuedWorkBatchDraft, QueuedWorkPayload, SlotPolicy, TurnInput
    from lash_store.postgres import shared_pool
    from lash_store.postgres.backend import _UNPREPARED

    workload = Workload(6, session_id="plans")
    revision = 0
    with PostgresStore.open(dsn, "plans") as store:
        for index in range(1, 13):  # more than psycopg's five executions before it prepares a statement
            revision = store.commit_runtime_state(_turn(workload, index, revision)).head_revision
        for number in range(8):
            payload = QueuedWorkPayload.turn_input(TurnInput.text(f"input {number}"))
            draft = QueuedWorkBatchDraft.new(
                "plans", DeliveryPolicy.AFTER_CURRENT_TURN_COMMIT, SlotPolicy.EXCLUSIVE, [payload]
            )
            store.enqueue_queued_work(draft)
        result: dict[str, Any] = {"claimed": [], "completed": [], "claim_ns": [], "commit_ns": []}
        result.update(empty_polls=0, missed_free_work=0)
        claim_loop(store, "plans", "worker")(result)
        assert len(result["completed"]) == 8
        with shared_pool(dsn).connection() as conn:
            prepared = [row[0] for row in conn.execute("SELECT statement FROM pg_prepared_statements").fetchall()]
    assert any("INSERT INTO lash.graph_nodes" in statement for statement in prepared)  # the others are prepared
    assert {name for name in _UNPREPARED if _as_prepared(name) in prepared} == set()
    assert _as_prepared("upsert_node") in prepared  # the comparison does find prepared statements


def _as_prepared(name: str) -> str:
    """A named query as PostgreSQL records it when psycopg prepares it: ``%(name)s`` numbered in order."""
    (statement,) = queries("lash")[name]
    numbers: dict[str, int] = {}

    def number(match: re.Match[str]) -> str:
        return f"${numbers.setdefault(match.group(1), len(numbers) + 1)}"

    return re.sub(r"%\((\w+)\)s", number, statement)

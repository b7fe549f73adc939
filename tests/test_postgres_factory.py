"""``PostgresSessionStoreFactory.list_sessions``: keyset pages, and a page deep into the listing reads one page.

The listing joins session metadata with the session rows; the keyset bound must
reach both sides of the join, or a page far into the listing scans every
session before it (seen with 10,000 sessions: the middle page cost 20x the first).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from lash_store.bench.commit import Workload
from lash_store.postgres import PostgresSessionStoreFactory, close_shared_pools
from lash_store.postgres.backend import queries

pytestmark = pytest.mark.postgres


@pytest.fixture
def dsn(pg_dsn: str) -> Iterator[str]:
    yield pg_dsn
    close_shared_pools()


def test_pages_cover_every_session_once_in_order(dsn: str) -> None:
    factory = PostgresSessionStoreFactory(dsn)
    ids = [f"s{n:03d}" for n in range(23)]
    for number, session_id in enumerate(ids):
        with factory.create_store(session_id, model="m") as store:
            if number % 2 == 0:  # half of them have a committed turn (picker text and count)
                workload = Workload(1, session_id=session_id)
                store.commit_runtime_state(workload.commit(workload.turn(1), 0))
    seen: list[str] = []
    after: str | None = None
    while True:
        page = factory.list_sessions(limit=5, after=after)
        seen += [info.session_id for info in page]
        if len(page) < 5:
            break
        after = page[-1].session_id
    assert seen == ids
    everything = {info.session_id: info for info in factory.list_sessions()}
    assert everything["s000"].user_message_count == 1 and everything["s000"].first_user_message
    assert everything["s001"].user_message_count == 0 and everything["s001"].first_user_message == ""
    assert [info.session_id for info in factory.list_sessions(limit=3, after="s010")] == ["s011", "s012", "s013"]


def test_a_page_deep_into_the_listing_reads_about_one_page_of_sessions(dsn: str) -> None:
    factory = PostgresSessionStoreFactory(dsn)
    for number in range(300):
        factory.create_store(f"s{number:04d}").close()
    (statement,) = queries("lash")["list_sessions"]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("ANALYZE lash.sessions, lash.session_meta")
        plan: Any = conn.execute(
            "EXPLAIN (ANALYZE, FORMAT JSON) " + statement,
            {"after": "s0249", "limit": 10, "sid": ""},
        ).fetchone()
    rows_read: list[int] = []

    def walk(node: dict[str, Any]) -> None:
        if node.get("Relation Name") in ("sessions", "session_meta"):
            rows_read.append(int(node["Actual Rows"]) * int(node["Actual Loops"]))
        for child in node.get("Plans", []):
            walk(child)

    walk(plan[0][0]["Plan"])
    assert rows_read and max(rows_read) <= 20, rows_read  # not the 250 sessions before the page


def _full_session(store: Any, session_id: str) -> None:
    """Something in every table a session owns: the command tests' session plus the adapters' capabilities."""
    from lash_store.model import GraphDelta, NewBlob, RuntimeCommit, SessionNode, StagedWrite
    from tests.test_cli import _build_session

    _build_session(store, session_id)
    child = store.put_blob(b"child chunk")  # a BlobRef's text is its hash
    indexed = SessionNode(
        node_id="indexed", parent_node_id="a2", lane="l", sort_key="k1", tags={"run_id": "r1"}, blob_refs=[child]
    )
    store.commit_runtime_state(
        RuntimeCommit(
            session_id=session_id,
            expected_head_revision=2,
            graph=GraphDelta.append([indexed], "indexed"),
            new_blobs=[NewBlob(content=b"parent", children=[child])],
        )
    )
    store.put_staged_writes([StagedWrite(anchor_id="indexed", task_id="t", idx=0, channel="c", value=1)])


def _rows_per_table(dsn: str, session_id: str) -> dict[str, int]:
    """Rows of ``session_id`` in every table of the schema that has a session_id column.

    The process registry's tables are left out: they are deployment-wide, and a session's handles to
    processes go with ``delete_session_process_state`` (which also cancels the processes nobody else
    holds), not with the session's own data; a session's trigger subscriptions likewise belong to the
    host-event store (deployment-wide), which a runtime disables or deletes on its own.
    """
    with psycopg.connect(dsn) as conn:
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT table_name FROM information_schema.columns"
                " WHERE table_schema = 'lash' AND column_name = 'session_id'"
            )
            if not row[0].startswith(("process", "host_event"))  # deployment-wide: see the docstring
        ]
        return {
            table: conn.execute(f"SELECT count(*) FROM lash.{table} WHERE session_id = %s", (session_id,)).fetchone()[0]  # type: ignore[index]
            for table in tables
        }


def test_delete_session_leaves_no_row_in_any_table(dsn: str) -> None:
    """Every table with a session_id column, found from the catalog, so a table added later is covered too."""
    factory = PostgresSessionStoreFactory(dsn)
    for session_id in ("doomed", "kept"):
        with factory.create_store(session_id) as store:
            _full_session(store, session_id)
    before = _rows_per_table(dsn, "doomed")
    empty = sorted(table for table, count in before.items() if count == 0)
    assert empty == [], f"the fixture leaves these tables empty, so the test would not see them: {empty}"
    kept = _rows_per_table(dsn, "kept")
    factory.delete_session("doomed")
    assert _rows_per_table(dsn, "doomed") == dict.fromkeys(before, 0)
    assert _rows_per_table(dsn, "kept") == kept


def test_pruning_an_idle_session_leaves_no_row_in_any_table(dsn: str) -> None:
    import time

    factory = PostgresSessionStoreFactory(dsn)
    with factory.create_store("idle") as store:
        _full_session(store, "idle")
        for batch in store.list_queued_work("idle"):
            store.cancel_queued_work_batch("idle", batch.batch_id)
    with psycopg.connect(dsn) as conn:  # finish the claimed batch behind the store's back: no queued work left
        conn.execute("DELETE FROM lash.queued_work_batches WHERE session_id = 'idle'")
    time.sleep(0.05)
    assert factory.prune_idle_sessions(1) == ["idle"]
    assert set(_rows_per_table(dsn, "idle").values()) == {0}

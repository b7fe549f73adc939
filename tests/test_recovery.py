"""SPEC decision 8: any exception inside an operation rolls back and leaves the store usable; fork safety."""

from __future__ import annotations

import os
import sqlite3
import threading
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import msgspec
import pytest

from lash_store import Store, StoreOptions
from lash_store.errors import BackendError, HeadRevisionConflict, InvalidInput, StoreBusy
from lash_store.model import (
    AttachmentIntent,
    GraphDelta,
    QueuedWorkClaimBoundary,
    RuntimeCommit,
    SessionGraph,
    TokenLedgerEntry,
    TokenUsage,
    TurnCommitStamp,
)
from lash_store.service import commit as service_commit
from tests.helpers import commit_at, draft, message

START_MS = 1_700_000_000_000


class ArmedClock:
    """A clock that raises ``exc`` on its next call once armed; it records whether the write lock was held then."""

    def __init__(self, path: Path | None) -> None:
        self.now = START_MS
        self.armed: BaseException | None = None
        self.path = path
        self.lock_was_held: bool | None = None

    def __call__(self) -> int:
        if self.armed is not None:
            exc, self.armed = self.armed, None
            if self.path is not None:
                self.lock_was_held = _write_lock_is_held(self.path)
            raise exc
        self.now += 1
        return self.now


def _write_lock_is_held(path: Path) -> bool:
    probe = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        probe.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError:
        return True
    else:
        probe.execute("ROLLBACK")
        return False
    finally:
        probe.close()


def snapshot(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


def rich_commit(expected: int | None, tag: str) -> RuntimeCommit:
    """A commit that touches every table a commit writes: blobs, usage, graph, head, attachments, turn stamp."""
    base = commit_at(
        "root",
        expected,
        turn_state={"tag": tag},
        tool_state_snapshot={"tool": tag},
        execution_state_snapshot=f"exec-{tag}".encode(),
    )
    node = message(f"node-{tag}", "user", f"text {tag}")
    return msgspec.structs.replace(
        base,
        graph=GraphDelta.append([node], node.node_id),
        usage_deltas=[TokenLedgerEntry(source="main", model="m", usage=TokenUsage(input_tokens=5, output_tokens=7))],
        turn_commit=TurnCommitStamp(session_id="root", turn_id=f"turn-{tag}", turn_commit_hash=f"hash-{tag}"),
        committed_attachment_ids=[f"att-{tag}"],
    )


@pytest.fixture
def armed(db_path: Path) -> Iterator[tuple[Store, ArmedClock]]:
    clock = ArmedClock(db_path)
    with Store.open(db_path, StoreOptions(clock=clock)) as store:
        for tag in ("first", "second"):
            store.record_intent(
                AttachmentIntent(
                    attachment_id=f"att-{tag}", session_id="root", canonical_uri=f"u:{tag}", intent_at_epoch_ms=1
                )
            )
        store.commit_runtime_state(rich_commit(0, "first"))
        yield store, clock


def assert_usable_after_failure(store: Store, db_path: Path, before: list[str]) -> None:
    """Nothing was written, no transaction or lock is left behind, and the next commit succeeds in full."""
    assert snapshot(db_path) == before
    assert store._db._conn is not None and not store._db._conn.in_transaction
    assert not _write_lock_is_held(db_path)
    read = store.load_session()
    assert read is not None and read.head_revision == 1
    assert store.load_node("node-second") is None
    assert [e.attachment_id for e in store.list_uncommitted(START_MS * 2)] == ["att-second"]
    result = store.commit_runtime_state(rich_commit(1, "second"))
    assert result.head_revision == 2
    read = store.load_session()
    assert read is not None and read.head_revision == 2
    assert [n.node_id for n in read.graph.nodes] == ["node-first", "node-second"]
    assert read.token_ledger[0].usage.input_tokens == 10
    assert read.checkpoint is not None and read.checkpoint.tool_state == {"tool": "second"}
    assert store.list_uncommitted(START_MS * 2) == []


# ---------------------------------------------------------------------------
# exceptions raised by the store's own clock, inside the write transaction


@pytest.mark.parametrize("exc_type", [RuntimeError, KeyboardInterrupt, SystemExit, MemoryError])
def test_clock_exception_inside_commit_rolls_back(
    armed: tuple[Store, ArmedClock], db_path: Path, exc_type: type[BaseException]
) -> None:
    store, clock = armed
    before = snapshot(db_path)
    clock.armed = exc_type("injected")
    # A failing clock is an invalid option (its exception chained); interrupts and MemoryError pass unchanged.
    expected = InvalidInput if exc_type is RuntimeError else exc_type
    with pytest.raises(expected, match="injected") as raised:
        store.commit_runtime_state(rich_commit(1, "second"))
    if expected is InvalidInput:
        assert isinstance(raised.value.__cause__, RuntimeError)
    assert clock.lock_was_held is True, "the clock was expected to run inside the write transaction"
    assert_usable_after_failure(store, db_path, before)


OPERATIONS_READING_THE_CLOCK: dict[str, Callable[[Store], object]] = {
    "put_blob": lambda s: s.put_blob(b"fresh bytes"),
    "put_module_artifact": lambda s: s.put_module_artifact("mod:x", b"module"),
    "enqueue_queued_work": lambda s: s.enqueue_queued_work(draft("root", "work")),
    "commit_refs": lambda s: s.commit_refs("root", ["att-second"]),
    "gc_unreachable": lambda s: s.gc_unreachable(),
    "claim_ready_queued_work": lambda s: s.claim_ready_queued_work(
        "root", "owner", QueuedWorkClaimBoundary.IDLE, 60_000, 5
    ),
}


@pytest.mark.parametrize("operation", OPERATIONS_READING_THE_CLOCK.values(), ids=OPERATIONS_READING_THE_CLOCK.keys())
def test_keyboard_interrupt_inside_other_writes_rolls_back(
    armed: tuple[Store, ArmedClock], db_path: Path, operation: Callable[[Store], object]
) -> None:
    store, clock = armed
    store.enqueue_queued_work(draft("root", "already queued"))
    before = snapshot(db_path)
    clock.armed = KeyboardInterrupt("injected")
    with pytest.raises(KeyboardInterrupt):
        operation(store)
    assert clock.lock_was_held is True
    assert_usable_after_failure(store, db_path, before)
    operation(store)  # and the interrupted operation itself works now


# ---------------------------------------------------------------------------
# exceptions after rows were written, before COMMIT


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, RuntimeError])
def test_exception_after_the_head_write_rolls_everything_back(
    armed: tuple[Store, ArmedClock], db_path: Path, exc_type: type[BaseException], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception raised inside the transaction after the head row was written (attachment stamping is the
    last step but one) leaves no trace.  Caller-supplied collections are consumed before the lock, so the
    interruption is injected at the stamping step itself."""
    store, _clock = armed
    before = snapshot(db_path)
    seen: dict[str, Any] = {}

    def interrupted_stamp(*args: Any) -> Any:
        conn = store._db._conn
        assert conn is not None
        seen["in_transaction"] = conn.in_transaction
        seen["uncommitted_revision"] = conn.execute("SELECT head_revision FROM session_head").fetchone()[0]
        seen["uncommitted_node"] = conn.execute(
            "SELECT count(*) FROM graph_nodes WHERE node_id = 'node-second'"
        ).fetchone()[0]
        raise exc_type("after the head write")

    monkeypatch.setattr(service_commit, "stamp_params", interrupted_stamp)
    with pytest.raises(exc_type, match="after the head write"):
        store.commit_runtime_state(rich_commit(1, "second"))
    monkeypatch.undo()
    assert seen == {"in_transaction": True, "uncommitted_revision": 2, "uncommitted_node": 1}, (
        "the exception was meant to fire after the head write, inside the transaction"
    )
    assert_usable_after_failure(store, db_path, before)


def test_a_generator_of_attachment_ids_is_consumed_once_and_applied(armed: tuple[Store, ArmedClock]) -> None:
    """A one-shot iterable must not be used up by validation and then seen empty by the write."""
    store, _clock = armed
    commit = msgspec.structs.replace(rich_commit(1, "second"), committed_attachment_ids=iter(["att-second"]))
    store.commit_runtime_state(commit)
    assert store.list_uncommitted(START_MS * 2) == []


def test_sqlite_failure_at_the_last_statement_rolls_back(armed: tuple[Store, ArmedClock], db_path: Path) -> None:
    store, _clock = armed
    other = sqlite3.connect(db_path, isolation_level=None)
    other.execute(
        "CREATE TRIGGER refuse_stamp BEFORE INSERT ON runtime_turn_commits "
        "BEGIN SELECT RAISE(ABORT, 'injected constraint failure'); END"
    )
    before = snapshot(db_path)
    with pytest.raises(BackendError, match="injected constraint failure") as info:
        store.commit_runtime_state(rich_commit(1, "second"))
    assert not isinstance(info.value, sqlite3.Error)
    assert isinstance(info.value.__cause__, sqlite3.Error)
    assert snapshot(db_path) == before
    other.execute("DROP TRIGGER refuse_stamp")
    other.close()
    assert_usable_after_failure(store, db_path, snapshot(db_path))


# ---------------------------------------------------------------------------
# a busy database


def test_busy_database_is_a_typed_error_and_recovers(db_path: Path) -> None:
    with Store.open(db_path, StoreOptions(busy_timeout_ms=100)) as store:
        store.commit_runtime_state(rich_commit(0, "first"))
        holder = sqlite3.connect(db_path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            before = snapshot(db_path)
            for operation in (
                lambda: store.commit_runtime_state(rich_commit(1, "second")),
                lambda: store.put_blob(b"bytes"),
                lambda: store.enqueue_queued_work(draft("root", "w")),
                lambda: store.tombstone_nodes(["node-first"]),
            ):
                with pytest.raises(StoreBusy) as info:
                    operation()
                assert isinstance(info.value, BackendError)
                assert not isinstance(info.value, sqlite3.Error)
                assert isinstance(info.value.__cause__, sqlite3.OperationalError)
            # readers are not blocked by a writer in WAL mode
            read = store.load_session()
            assert read is not None and read.head_revision == 1
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert snapshot(db_path) == before
        assert store.commit_runtime_state(rich_commit(1, "second")).head_revision == 2
        assert store.put_blob(b"bytes")


# ---------------------------------------------------------------------------
# fork


def _in_child(report: Path, body: Callable[[], None]) -> int:
    """Fork; run ``body`` in the child and exit 0 on success; return the child's exit status in the parent."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            body()
            code = 0
        except BaseException:
            report.write_text(traceback.format_exc())
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_store_used_after_fork_reconnects_in_the_child(db_path: Path, tmp_path: Path) -> None:
    report = tmp_path / "child-report.txt"
    with Store.open(db_path) as store:
        store.commit_runtime_state(rich_commit(0, "first"))
        parent_conn = store._db._conn
        assert parent_conn is not None

        def child() -> None:
            read = store.load_session()
            assert read is not None and read.head_revision == 1
            assert store._db._conn is not parent_conn, "the child must not use the parent's connection"
            assert store.commit_runtime_state(rich_commit(1, "child")).head_revision == 2
            read = store.load_session()
            assert read is not None and read.head_revision == 2
            assert store.load_node("node-child") is not None
            store.close()

        code = _in_child(report, child)
        assert code == 0, report.read_text() if report.exists() else f"child exited with {code}"
        # the parent sees the child's commit through its own, still working connection
        assert store._db._conn is parent_conn
        read = store.load_session()
        assert read is not None and read.head_revision == 2
        assert [n.node_id for n in read.graph.nodes] == ["node-first", "node-child"]
        assert store.commit_runtime_state(rich_commit(2, "parent")).head_revision == 3
    with Store.open(db_path) as reopened:
        read = reopened.load_session()
        assert read is not None and read.head_revision == 3


def test_child_closing_an_unused_store_does_not_disturb_the_parent(db_path: Path, tmp_path: Path) -> None:
    report = tmp_path / "child-report.txt"
    with Store.open(db_path) as store:
        store.commit_runtime_state(rich_commit(0, "first"))
        code = _in_child(report, store.close)
        assert code == 0, report.read_text() if report.exists() else f"child exited with {code}"
        read = store.load_session()
        assert read is not None and read.head_revision == 1
        assert store.commit_runtime_state(rich_commit(1, "second")).head_revision == 2


def test_parent_and_forked_children_commit_concurrently(db_path: Path, tmp_path: Path) -> None:
    per_process = 10
    with Store.open(db_path) as store:
        store.commit_runtime_state(commit_at("root", 0))

        def commit_with_retries(tag: str) -> None:
            done = 0
            while done < per_process:
                read = store.load_session()
                assert read is not None
                node = message(f"{tag}-{done}", "user", tag)
                commit = msgspec.structs.replace(
                    commit_at("root", read.head_revision), graph=GraphDelta.append([node], node.node_id)
                )
                try:
                    store.commit_runtime_state(commit)
                except HeadRevisionConflict:
                    continue
                done += 1

        pids = []
        for index in range(3):
            pid = os.fork()
            if pid == 0:  # pragma: no cover - runs in the child
                code = 1
                try:
                    commit_with_retries(f"child{index}")
                    code = 0
                except BaseException:
                    (tmp_path / f"child{index}.txt").write_text(traceback.format_exc())
                finally:
                    os._exit(code)
            pids.append(pid)
        commit_with_retries("parent")
        codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]
        reports = [p.read_text() for p in tmp_path.glob("child*.txt")]
        assert codes == [0, 0, 0], reports
        read = store.load_session()
        assert read is not None
        assert read.head_revision == 1 + 4 * per_process
        assert len(read.graph.nodes) == 4 * per_process


# ---------------------------------------------------------------------------
# one store shared by many threads


def test_threads_sharing_one_store_with_cas_retries(db_path: Path) -> None:
    threads, per_thread = 8, 12
    with Store.open(db_path) as store:
        barrier = threading.Barrier(threads)
        conflicts = [0] * threads

        def worker(index: int) -> int:
            barrier.wait()
            done = 0
            while done < per_thread:
                read = store.load_session()
                revision = read.head_revision if read is not None else 0
                node = message(f"t{index}-{done}", "user", f"thread {index}")
                commit = msgspec.structs.replace(
                    commit_at("root", revision, turn_state={"thread": index, "n": done}),
                    graph=GraphDelta.append([node], node.node_id),
                    usage_deltas=[TokenLedgerEntry(source="s", model="m", usage=TokenUsage(input_tokens=1))],
                )
                try:
                    result = store.commit_runtime_state(commit)
                except HeadRevisionConflict as exc:
                    assert exc.expected == revision and exc.actual > revision
                    conflicts[index] += 1
                    continue
                assert result.head_revision == revision + 1
                done += 1
            return done

        with ThreadPoolExecutor(max_workers=threads) as pool:
            successes = sum(pool.map(worker, range(threads)))
        assert successes == threads * per_thread
        read = store.load_session()
        assert read is not None
        assert read.head_revision == successes
        assert len(read.graph.nodes) == successes
        assert len({n.node_id for n in read.graph.nodes}) == successes
        assert read.token_ledger[0].usage.input_tokens == successes
        assert read.graph.leaf_node_id in {n.node_id for n in read.graph.nodes}


def test_failures_in_one_thread_do_not_break_the_others(db_path: Path) -> None:
    clock_calls = {"n": 0}
    lock = threading.Lock()

    def flaky_clock() -> int:
        with lock:
            clock_calls["n"] += 1
            if clock_calls["n"] % 3 == 0:
                raise RuntimeError("flaky clock")
            return START_MS + clock_calls["n"]

    with Store.open(db_path, StoreOptions(clock=flaky_clock)) as store:

        def worker(index: int) -> tuple[int, int]:
            ok = failed = 0
            for n in range(10):
                try:
                    store.put_blob(f"{index}-{n}".encode())
                    ok += 1
                except InvalidInput as exc:
                    assert isinstance(exc.__cause__, RuntimeError)
                    failed += 1
            return ok, failed

        with ThreadPoolExecutor(max_workers=6) as pool:
            results = list(pool.map(worker, range(6)))
        ok = sum(r[0] for r in results)
        assert ok + sum(r[1] for r in results) == 60
        assert 0 < ok < 60
        assert store._db._conn is not None and not store._db._conn.in_transaction
        conn = sqlite3.connect(db_path)
        try:
            assert conn.execute("SELECT count(*) FROM blobs").fetchone()[0] == ok
        finally:
            conn.close()
        graph = SessionGraph(nodes=[message("u", "user", "still fine")], leaf_node_id="u")
        clock_calls["n"] = 0  # the next call is the first of a new cycle
        assert store.commit_runtime_state(commit_at("root", 0, session_graph=graph)).head_revision == 1

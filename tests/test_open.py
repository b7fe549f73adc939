"""Opening files: the open matrix of SPEC decision 4, options, file modes, read-only opens, lifecycle."""

from __future__ import annotations

import os
import random
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lash_store import Durability, Store, StoreOptions
from lash_store.errors import (
    BackendError,
    NotAStoreDatabase,
    StoreBusy,
    StoreClosed,
    StoreError,
    StoreNotFound,
    UnsupportedSchemaVersion,
)
from lash_store.model import (
    AttachmentIntent,
    BlobArtifactDescriptor,
    DurabilityTier,
    HydratedCheckpoint,
    QueuedWorkClaimBoundary,
    SessionGraph,
    SessionMeta,
    SessionReadScope,
)
from lash_store.sqlite.schema import APPLICATION_ID, EXPECTED_TABLES
from tests.helpers import commit_at, draft, message

SIDECARS = ("-wal", "-shm", "-journal")


# ---------------------------------------------------------------------------
# helpers


def raw_pragma(path: Path, name: str) -> Any:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(f"PRAGMA {name}").fetchone()[0]
    finally:
        conn.close()


def raw_tables(path: Path) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        conn.close()


def make_sqlite_file(path: Path, *, user_version: int, application_id: int | None = None, tables: bool = False) -> None:
    """A raw SQLite file in rollback-journal mode with the given header fields."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        if tables:
            conn.execute("CREATE TABLE legacy (id INTEGER PRIMARY KEY, note TEXT)")
            conn.execute("INSERT INTO legacy (note) VALUES ('keep me')")
        if application_id is not None:
            conn.execute(f"PRAGMA application_id = {application_id}")
        conn.execute(f"PRAGMA user_version = {user_version}")
    finally:
        conn.close()
    assert path.stat().st_size > 0


def fingerprint(path: Path) -> tuple[bytes, int, int]:
    st = path.stat()
    return path.read_bytes(), st.st_mtime_ns, stat.S_IMODE(st.st_mode)


def sidecars(path: Path) -> list[str]:
    return [suffix for suffix in SIDECARS if Path(f"{path}{suffix}").exists()]


def assert_untouched(path: Path, before: tuple[bytes, int, int]) -> None:
    after = fingerprint(path)
    assert after[0] == before[0], "a rejected file was modified"
    assert after[1] == before[1], "a rejected file's mtime changed"
    assert after[2] == before[2], "a rejected file's mode changed"
    assert sidecars(path) == [], "opening a rejected file left sidecar files behind"


@pytest.fixture
def private_umask() -> Iterator[None]:
    """Run with umask 0 so that only the store itself can make files private."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


# ---------------------------------------------------------------------------
# files that are initialised or opened


def assert_initialised(path: Path) -> None:
    assert raw_pragma(path, "user_version") == 3
    assert raw_pragma(path, "application_id") == APPLICATION_ID
    assert raw_pragma(path, "journal_mode") == "wal"
    assert raw_tables(path) >= EXPECTED_TABLES


def test_missing_file_is_created_and_initialised(db_path: Path) -> None:
    assert not db_path.exists()
    with Store.open(db_path) as store:
        assert store.load_session() is None
        assert store.durability_tier is DurabilityTier.DURABLE
    assert_initialised(db_path)


def test_empty_file_is_initialised(db_path: Path) -> None:
    db_path.write_bytes(b"")
    with Store.open(db_path) as store:
        assert store.commit_runtime_state(commit_at("root", 0)).head_revision == 1
    assert_initialised(db_path)


def test_missing_parent_directory_is_a_typed_error(tmp_path: Path) -> None:
    target = tmp_path / "no" / "such" / "dir" / "session.db"
    with pytest.raises(StoreError):
        Store.open(target)
    assert not target.parent.exists()


def test_own_file_reopens_and_keeps_data(db_path: Path) -> None:
    graph = SessionGraph(nodes=[message("u1", "user", "hello")], leaf_node_id="u1")
    with Store.open(db_path) as store:
        store.commit_runtime_state(commit_at("root", 0, session_graph=graph, turn_state={"turn": 1}))
        ref = store.put_blob(b"kept bytes")
    for _ in range(2):
        with Store.open(db_path) as store:
            read = store.load_session()
            assert read is not None
            assert read.head_revision == 1
            assert [node.node_id for node in read.graph.nodes] == ["u1"]
            assert read.checkpoint is not None and read.checkpoint.turn_state == {"turn": 1}
            assert store.get_blob(ref) == b"kept bytes"
    assert_initialised(db_path)


def test_own_file_missing_tables_gets_them_recreated(db_path: Path) -> None:
    with Store.open(db_path) as store:
        store.commit_runtime_state(commit_at("root", 0))
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("DROP TABLE artifact_refs")
    conn.execute("DROP TABLE attachment_manifest")
    conn.close()
    assert "artifact_refs" not in raw_tables(db_path)
    with Store.open(db_path) as store:
        store.put_module_artifact("mod:a", b"module bytes")
        assert store.get_module_artifact("mod:a") == b"module bytes"
        store.record_intent(
            AttachmentIntent(attachment_id="att", session_id="root", canonical_uri="file:///x", intent_at_epoch_ms=5)
        )
        assert [e.attachment_id for e in store.list_uncommitted(10)] == ["att"]
        read = store.load_session()
        assert read is not None and read.head_revision == 1  # existing data survives
    assert raw_tables(db_path) >= EXPECTED_TABLES


def test_version_three_with_our_identity_and_no_tables_is_initialised(db_path: Path) -> None:
    make_sqlite_file(db_path, user_version=3, application_id=APPLICATION_ID)
    with Store.open(db_path) as store:
        assert store.commit_runtime_state(commit_at("root", 0)).head_revision == 1
    assert_initialised(db_path)


def test_concurrent_first_opens_all_succeed(db_path: Path) -> None:
    barrier = threading.Barrier(12)
    errors: list[BaseException] = []

    def opener() -> None:
        try:
            barrier.wait()
            with Store.open(db_path) as store:
                store.load_session()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=opener) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert_initialised(db_path)


# ---------------------------------------------------------------------------
# files that are rejected, untouched


def _random_bytes(path: Path) -> None:
    data = random.Random(7).randbytes(8192)
    assert not data.startswith(b"SQLite format 3\x00")
    path.write_bytes(data)


FOREIGN_FILES: dict[str, Callable[[Path], None]] = {
    "random-bytes": _random_bytes,
    "text-file": lambda p: p.write_text("just some notes\nnot a database at all\n" * 20),
    "short-text-file": lambda p: p.write_text("hello world\n"),
    "one-newline": lambda p: p.write_bytes(b"\n"),
    "one-byte": lambda p: p.write_bytes(b"x"),
    "json-file": lambda p: p.write_text('{"session": "root", "revision": 3}'),
    "sqlite-header-then-garbage": lambda p: p.write_bytes(b"SQLite format 3\x00" + b"\xff" * 200),
}


@pytest.mark.parametrize("make", FOREIGN_FILES.values(), ids=FOREIGN_FILES.keys())
def test_non_sqlite_file_is_rejected_untouched(db_path: Path, make: Callable[[Path], None]) -> None:
    make(db_path)
    before = fingerprint(db_path)
    with pytest.raises(NotAStoreDatabase) as info:
        Store.open(db_path)
    assert str(db_path) in str(info.value)
    assert isinstance(info.value, StoreError)
    assert_untouched(db_path, before)


UNSUPPORTED = [
    pytest.param(99, False, None, id="v99-empty"),
    pytest.param(99, True, None, id="v99-tables"),
    pytest.param(99, False, APPLICATION_ID, id="v99-ours-empty"),
    pytest.param(99, True, APPLICATION_ID, id="v99-ours-tables"),
    pytest.param(99, True, 0x0BADF00D, id="v99-other-app"),
    pytest.param(2, True, APPLICATION_ID, id="v2-ours"),
    pytest.param(2, False, None, id="v2-empty"),
    pytest.param(4, True, APPLICATION_ID, id="v4-ours"),
    pytest.param(4, False, None, id="v4-empty"),
    pytest.param(1, True, None, id="v1-tables"),
]


@pytest.mark.parametrize(("version", "tables", "app_id"), UNSUPPORTED)
def test_unsupported_version_is_rejected_untouched(
    db_path: Path, version: int, tables: bool, app_id: int | None
) -> None:
    make_sqlite_file(db_path, user_version=version, application_id=app_id, tables=tables)
    before = fingerprint(db_path)
    with pytest.raises(UnsupportedSchemaVersion) as info:
        Store.open(db_path)
    err = info.value
    assert (err.expected, err.found) == (3, version)
    assert err.kind == "session"
    text = str(err)
    assert "version 3" in text
    assert f"version {version}" in text
    assert "version 1 only" not in text
    assert_untouched(db_path, before)
    assert raw_pragma(db_path, "user_version") == version


FOREIGN_SQLITE = [
    pytest.param(0, True, None, id="v0-with-table"),
    pytest.param(0, True, APPLICATION_ID, id="v0-ours-with-table"),
    pytest.param(3, False, None, id="v3-no-identity"),
    pytest.param(3, True, None, id="v3-no-identity-tables"),
    pytest.param(3, True, 0x12345678, id="v3-other-app"),
    pytest.param(3, False, 0x12345678, id="v3-other-app-empty"),
]


@pytest.mark.parametrize(("version", "tables", "app_id"), FOREIGN_SQLITE)
def test_foreign_sqlite_file_is_rejected_untouched(
    db_path: Path, version: int, tables: bool, app_id: int | None
) -> None:
    make_sqlite_file(db_path, user_version=version, application_id=app_id, tables=tables)
    if version == 0 and app_id is None:
        assert raw_pragma(db_path, "user_version") == 0
    before = fingerprint(db_path)
    with pytest.raises(NotAStoreDatabase):
        Store.open(db_path)
    assert_untouched(db_path, before)


def test_foreign_wal_file_keeps_its_journal_mode(db_path: Path) -> None:
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("CREATE TABLE t (x)")
    conn.execute("PRAGMA user_version = 0")
    conn.close()
    assert raw_pragma(db_path, "journal_mode") == "delete"
    with pytest.raises(NotAStoreDatabase):
        Store.open(db_path)
    assert raw_pragma(db_path, "journal_mode") == "delete"


# ---------------------------------------------------------------------------
# options


def test_durability_full_sets_synchronous_full(db_path: Path) -> None:
    with Store.open(db_path, StoreOptions(durability=Durability.FULL)) as store:
        assert store._db._conn is not None
        assert store._db._conn.execute("PRAGMA synchronous").fetchone()[0] == 2
        store.commit_runtime_state(commit_at("root", 0))
        assert store._db._conn.execute("PRAGMA synchronous").fetchone()[0] == 2


def test_durability_normal_is_the_default(db_path: Path) -> None:
    with Store.open(db_path) as store:
        assert store._db._conn is not None
        assert store._db._conn.execute("PRAGMA synchronous").fetchone()[0] == 1
    with Store.memory(StoreOptions(durability=Durability.FULL)) as store:
        assert store._db._conn is not None
        assert store._db._conn.execute("PRAGMA synchronous").fetchone()[0] == 2


def _hold_write_lock(path: Path) -> sqlite3.Connection:
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    return holder


def test_busy_timeout_is_honoured(db_path: Path) -> None:
    with Store.open(db_path, StoreOptions(busy_timeout_ms=250)) as store:
        holder = _hold_write_lock(db_path)
        try:
            started = time.monotonic()
            with pytest.raises(StoreBusy) as info:
                store.commit_runtime_state(commit_at("root", 0))
            waited = time.monotonic() - started
            assert isinstance(info.value, BackendError)
            assert isinstance(info.value.__cause__, sqlite3.Error)
            assert 0.2 <= waited < 5.0, waited
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert store.commit_runtime_state(commit_at("root", 0)).head_revision == 1


def test_long_busy_timeout_waits_for_the_lock(db_path: Path) -> None:
    with Store.open(db_path, StoreOptions(busy_timeout_ms=10_000)) as store:
        holder = _hold_write_lock(db_path)
        release = threading.Timer(0.3, lambda: (holder.execute("ROLLBACK"), holder.close()))
        started = time.monotonic()
        release.start()
        try:
            assert store.commit_runtime_state(commit_at("root", 0)).head_revision == 1
        finally:
            release.join()
        assert time.monotonic() - started >= 0.25


# ---------------------------------------------------------------------------
# file modes


def test_new_database_files_are_private(db_path: Path, private_umask: None) -> None:
    with Store.open(db_path) as store:
        store.commit_runtime_state(commit_at("root", 0))
        store.put_blob(b"secret conversation")
        for suffix in ("", "-wal", "-shm"):
            file = Path(f"{db_path}{suffix}")
            assert file.exists(), suffix
            assert stat.S_IMODE(file.stat().st_mode) == 0o600, (suffix, oct(file.stat().st_mode))


def test_reopening_keeps_files_private(db_path: Path, private_umask: None) -> None:
    with Store.open(db_path) as store:
        store.commit_runtime_state(commit_at("root", 0))
    with Store.open(db_path) as store:
        store.commit_runtime_state(commit_at("root", 1))
        for suffix in ("", "-wal", "-shm"):
            assert stat.S_IMODE(Path(f"{db_path}{suffix}").stat().st_mode) == 0o600, suffix


# ---------------------------------------------------------------------------
# read-only opens


def test_readonly_missing_path_raises_store_not_found(tmp_path: Path) -> None:
    target = tmp_path / "absent.db"
    with pytest.raises(StoreNotFound) as info:
        Store.open_readonly(target)
    assert isinstance(info.value, FileNotFoundError)
    assert isinstance(info.value, StoreError)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(FileNotFoundError):
        Store.open_readonly(tmp_path / "missing-dir" / "absent.db")
    assert list(tmp_path.iterdir()) == []


def test_readonly_rejects_unsupported_version(db_path: Path) -> None:
    make_sqlite_file(db_path, user_version=99, application_id=APPLICATION_ID, tables=True)
    before = fingerprint(db_path)
    with pytest.raises(UnsupportedSchemaVersion) as info:
        Store.open_readonly(db_path)
    assert (info.value.expected, info.value.found) == (3, 99)
    assert_untouched(db_path, before)


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda p: p.write_text("plain text, not sqlite\n" * 10), id="text"),
        pytest.param(lambda p: make_sqlite_file(p, user_version=0, tables=True), id="sqlite-v0-table"),
        pytest.param(lambda p: make_sqlite_file(p, user_version=3, application_id=7, tables=True), id="v3-other"),
    ],
)
def test_readonly_rejects_foreign_file(db_path: Path, make: Callable[[Path], None]) -> None:
    make(db_path)
    before = fingerprint(db_path)
    with pytest.raises(NotAStoreDatabase):
        Store.open_readonly(db_path)
    assert_untouched(db_path, before)


def test_readonly_reads_data_of_a_read_write_store(db_path: Path) -> None:
    graph = SessionGraph(nodes=[message("u1", "user", "hi"), message("a1", "assistant", "yo", "u1")], leaf_node_id="a1")
    with Store.open(db_path) as writer:
        writer.commit_runtime_state(commit_at("root", 0, session_graph=graph, turn_state={"k": "v"}))
        ref = writer.put_blob(b"blob")
        writer.put_module_artifact("mod", b"module")
        # while the writer is open
        with Store.open_readonly(db_path) as reader:
            read = reader.load_session()
            assert read is not None and read.head_revision == 1
            assert reader.get_blob(ref) == b"blob"
        writer.commit_runtime_state(commit_at("root", 1, session_graph=graph))
    # after the writer closed
    with Store.open_readonly(db_path) as reader:
        read = reader.load_session(SessionReadScope.active_path())
        assert read is not None and read.head_revision == 2
        assert [n.node_id for n in read.graph.nodes] == ["u1", "a1"]
        assert reader.get_blob(ref) == b"blob"
        assert reader.get_module_artifact("mod") == b"module"
        assert reader.load_node("a1") is not None


def _readonly_writes() -> list[Any]:
    meta = SessionMeta(session_id="root", session_name="n", created_at="2024-01-01T00:00:00+00:00", model="m")
    intent = AttachmentIntent(attachment_id="a", session_id="root", canonical_uri="u", intent_at_epoch_ms=1)
    writes: dict[str, Callable[[Store], object]] = {
        "commit_runtime_state": lambda s: s.commit_runtime_state(commit_at("root", 1)),
        "put_blob": lambda s: s.put_blob(b"new"),
        "put_artifact_blob": lambda s: s.put_artifact_blob(BlobArtifactDescriptor.tool_state_snapshot(), b"t"),
        "put_checkpoint": lambda s: s.put_checkpoint(HydratedCheckpoint(turn_state={"x": 1})),
        "save_session_meta": lambda s: s.save_session_meta(meta),
        "tombstone_nodes": lambda s: s.tombstone_nodes(["u1"]),
        "vacuum": lambda s: s.vacuum(),
        "gc_unreachable": lambda s: s.gc_unreachable(),
        "record_intent": lambda s: s.record_intent(intent),
        "commit_refs": lambda s: s.commit_refs("root", ["a"]),
        "forget": lambda s: s.forget("a"),
        "put_module_artifact": lambda s: s.put_module_artifact("m2", b"x"),
        "forget_module_artifact": lambda s: s.forget_module_artifact("mod"),
        "enqueue_queued_work": lambda s: s.enqueue_queued_work(draft("root", "hi")),
        "claim_ready_queued_work": lambda s: s.claim_ready_queued_work(
            "root", "owner", QueuedWorkClaimBoundary.IDLE, 1000, 1
        ),
        "cancel_queued_work_batch": lambda s: s.cancel_queued_work_batch(
            "root", s.list_queued_work("root")[0].batch_id
        ),
        "copy_session_into": lambda s: Store.memory().copy_session_into(s),
    }
    return [pytest.param(fn, id=name) for name, fn in writes.items()]


@pytest.mark.parametrize("write", _readonly_writes())
def test_readonly_store_refuses_every_write(db_path: Path, write: Callable[[Store], object]) -> None:
    graph = SessionGraph(nodes=[message("u1", "user", "hi")], leaf_node_id="u1")
    with Store.open(db_path) as writer:
        writer.commit_runtime_state(commit_at("root", 0, session_graph=graph))
        writer.put_module_artifact("mod", b"module")
        writer.enqueue_queued_work(draft("root", "queued"))
        writer.record_intent(
            AttachmentIntent(attachment_id="a", session_id="root", canonical_uri="u", intent_at_epoch_ms=1)
        )
    with Store.open_readonly(db_path) as reader:
        before = fingerprint(db_path)
        with pytest.raises(StoreError):
            write(reader)
        assert fingerprint(db_path) == before
        read = reader.load_session()  # the reader is still usable
        assert read is not None and read.head_revision == 1
    with Store.open(db_path) as writer:
        read = writer.load_session()
        assert read is not None and read.head_revision == 1
        assert writer.load_node("u1") is not None
        assert writer.get_module_artifact("mod") == b"module"
        assert len(writer.list_queued_work("root")) == 1


def test_readonly_write_error_is_a_backend_error(db_path: Path) -> None:
    with Store.open(db_path) as writer:
        writer.commit_runtime_state(commit_at("root", 0))
    with Store.open_readonly(db_path) as reader:
        before = db_path.read_bytes()
        with pytest.raises(BackendError, match="read-only"):
            reader.put_blob(b"x")
        assert db_path.read_bytes() == before


# ---------------------------------------------------------------------------
# tiers and lifecycle


def test_durability_tiers(db_path: Path) -> None:
    with Store.memory() as store:
        assert store.durability_tier is DurabilityTier.INLINE
    with Store.open(db_path) as store:
        assert store.durability_tier is DurabilityTier.DURABLE
    with Store.open_readonly(db_path) as store:
        assert store.durability_tier is DurabilityTier.DURABLE


CALLS_AFTER_CLOSE: dict[str, Callable[[Store], object]] = {
    "load_session": lambda s: s.load_session(),
    "load_node": lambda s: s.load_node("n"),
    "commit_runtime_state": lambda s: s.commit_runtime_state(commit_at("root", 0)),
    "put_blob": lambda s: s.put_blob(b"x"),
    "get_blob": lambda s: s.get_blob("0" * 64),
    "put_checkpoint": lambda s: s.put_checkpoint(HydratedCheckpoint()),
    "load_session_meta": lambda s: s.load_session_meta(),
    "load_picker_info": lambda s: s.load_picker_info(),
    "tombstone_nodes": lambda s: s.tombstone_nodes(["n"]),
    "vacuum": lambda s: s.vacuum(),
    "gc_unreachable": lambda s: s.gc_unreachable(),
    "list_uncommitted": lambda s: s.list_uncommitted(0),
    "put_module_artifact": lambda s: s.put_module_artifact("m", b"x"),
    "enqueue_queued_work": lambda s: s.enqueue_queued_work(draft("root", "x")),
    "list_queued_work": lambda s: s.list_queued_work("root"),
}


@pytest.mark.parametrize("call", CALLS_AFTER_CLOSE.values(), ids=CALLS_AFTER_CLOSE.keys())
@pytest.mark.parametrize("kind", ["memory", "file"])
def test_calls_after_close_raise_store_closed(db_path: Path, kind: str, call: Callable[[Store], object]) -> None:
    store = Store.memory() if kind == "memory" else Store.open(db_path)
    store.commit_runtime_state(commit_at("root", 0))
    store.close()
    with pytest.raises(StoreClosed):
        call(store)
    store.close()  # closing twice is harmless
    with pytest.raises(StoreClosed):
        call(store)


def test_context_manager_closes(db_path: Path) -> None:
    with Store.open(db_path) as store:
        store.commit_runtime_state(commit_at("root", 0))
        assert Path(f"{db_path}-wal").exists()
    with pytest.raises(StoreClosed):
        store.load_session()
    # the last connection is gone: SQLite checkpointed and removed the WAL
    assert not Path(f"{db_path}-wal").exists()
    with pytest.raises(RuntimeError), Store.memory() as mem:
        raise RuntimeError("boom")
    with pytest.raises(StoreClosed):
        mem.load_session()

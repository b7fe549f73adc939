"""Damaged files and hostile stored bytes: a typed error or a documented outcome, never a crash, hang or silent loss.

Every case damages a real database file with a raw ``sqlite3`` connection (or
by cutting/overwriting bytes), then drives the public API.  The rule (SPEC §4,
§5 decisions 1, 2, 4, 10): stored bytes that do not decode raise
``CorruptData`` naming what is broken; a file that is not ours raises
``NotAStoreDatabase`` and stays byte-identical; an unknown schema version
raises ``UnsupportedSchemaVersion``; GC refuses to delete anything when it
cannot prove what is live; a read never writes, and a failed write leaves no trace.
"""

from __future__ import annotations

import logging
import os
import random
import sqlite3
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import msgspec
import pytest
import zstandard

from lash_store import GcPolicy, SqliteSessionStoreFactory, Store, StoreOptions
from lash_store.errors import (
    CorruptData,
    NotAStoreDatabase,
    SessionsUnreadable,
    StoreError,
    UnsupportedSchemaVersion,
)
from lash_store.model import (
    BlobArtifactDescriptor,
    DeliveryPolicy,
    GraphDelta,
    HydratedCheckpoint,
    QueuedWorkClaimBoundary,
    RuntimeCommit,
    SessionMeta,
    SessionNode,
    SessionReadScope,
    SessionRelation,
    SlotPolicy,
    TokenLedgerEntry,
    TokenUsage,
    TurnCommitStamp,
)
from tests.helpers import draft, message

SESSION = "chat-1"
SIDECARS = ("-wal", "-shm", "-journal")
# Grace 0: a healthy GC deletes an orphan at once, so "deleted nothing" below is a real refusal.
OPTIONS = StoreOptions(gc_policy=GcPolicy(grace_ms=0))


# ---------------------------------------------------------------------------
# A populated session file


@dataclass
class Populated:
    """A closed session file with two turns, session metadata, loose blobs and a replayable stamped commit."""

    path: Path
    refs: dict[str, str]
    turn_two: RuntimeCommit
    head_revision: int


def _node(node_id: str, role: str, text: str, parent: str | None) -> SessionNode:
    return message(node_id, role, text, parent)


def populate(path: Path, *, bulk_turns: int = 0) -> Populated:
    """Two stamped turns (plus ``bulk_turns`` more, to spread the file over many pages)."""
    with Store.open(path, OPTIONS) as store:
        store.save_session_meta(
            SessionMeta(
                session_id=SESSION,
                session_name="damaged",
                created_at="2025-01-01T00:00:00+00:00",
                model="m",
                relation=SessionRelation.child("parent-session", caused_by={"tool": "spawn"}),
            )
        )
        one = RuntimeCommit(
            session_id=SESSION,
            expected_head_revision=0,
            graph=GraphDelta.append(
                [_node("u1", "user", "first question", None), _node("a1", "assistant", "first answer", "u1")], "a1"
            ),
            checkpoint=HydratedCheckpoint(turn_state={"turn": 1}, tool_state={"turn": 1}),
            usage_deltas=[TokenLedgerEntry(source="turn", model="m", usage=TokenUsage(input_tokens=10))],
        ).with_turn_commit(TurnCommitStamp(session_id=SESSION, turn_id="turn-1", turn_commit_hash="h1"))
        store.commit_runtime_state(one)
        two = RuntimeCommit(
            session_id=SESSION,
            expected_head_revision=1,
            graph=GraphDelta.append(
                [_node("u2", "user", "second question", "a1"), _node("a2", "assistant", "second answer", "u2")], "a2"
            ),
            checkpoint=HydratedCheckpoint(
                turn_state={"turn": 2},
                tool_state={"log": [f"tool call {i}: ok" for i in range(400)]},  # > 4 KiB: stored zstd
                plugin_snapshot={"plugin": "state"},
                plugin_snapshot_revision=3,
                execution_state=b"\x01\x02\x03 execution state",
            ),
            usage_deltas=[TokenLedgerEntry(source="turn", model="m", usage=TokenUsage(input_tokens=20))],
        ).with_turn_commit(TurnCommitStamp(session_id=SESSION, turn_id="turn-2", turn_commit_hash="h2"))
        result = store.commit_runtime_state(two)
        manifest = result.manifest
        assert manifest.tool_state_ref and manifest.plugin_snapshot_ref and manifest.execution_state_ref
        refs = {
            "manifest": result.checkpoint_ref,
            "tool_state": manifest.tool_state_ref,
            "plugin_snapshot": manifest.plugin_snapshot_ref,
            "execution_state": manifest.execution_state_ref,
            "plain": store.put_blob(b"plain loose bytes"),
            "artifact": store.put_artifact_blob(
                BlobArtifactDescriptor.plugin_session_snapshot(), b"compressible artifact " * 400
            ),
        }
        revision = 2
        for n in range(3, 3 + bulk_turns):
            commit = RuntimeCommit(
                session_id=SESSION,
                expected_head_revision=revision,
                graph=GraphDelta.append(
                    [_node(f"u{n}", "user", "bulk " * 200, f"u{n - 1}" if n > 3 else "a2")], f"u{n}"
                ),
                checkpoint=HydratedCheckpoint(turn_state={"turn": n}, tool_state={"bulk": os.urandom(600).hex()}),
            )
            revision = store.commit_runtime_state(commit).head_revision
    for suffix in SIDECARS:
        assert not Path(f"{path}{suffix}").exists(), "closing the last connection checkpoints and removes the WAL"
    return Populated(path=path, refs=refs, turn_two=two, head_revision=revision)


@pytest.fixture
def populated(tmp_path: Path) -> Populated:
    return populate(tmp_path / "session.db")


def execute(path: Path, sql: str, *params: object) -> None:
    """Damage rows through a raw sqlite3 connection, bypassing the store."""
    conn = sqlite3.connect(path)
    try:
        with conn:
            conn.execute(sql, params)
    finally:
        conn.close()


def query(path: Path, sql: str, *params: object) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def blob_row(path: Path, ref: str) -> tuple[str, bytes]:
    [(encoding, content)] = query(path, "SELECT encoding, content FROM blobs WHERE hash = ?", ref)
    assert isinstance(encoding, str) and isinstance(content, bytes)
    return encoding, content


def blob_count(path: Path) -> int:
    [(count,)] = query(path, "SELECT count(*) FROM blobs")
    assert isinstance(count, int)
    return count


class Observer:
    """``PRAGMA data_version`` of a separate connection moves exactly when someone else commits a change."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.start = self.version()

    def version(self) -> int:
        return int(self.conn.execute("PRAGMA data_version").fetchone()[0])

    def unchanged(self) -> bool:
        return self.version() == self.start


@pytest.fixture
def observe() -> Iterator[Callable[[Path], Observer]]:
    observers: list[Observer] = []

    def make(path: Path) -> Observer:
        observer = Observer(path)
        observers.append(observer)
        return observer

    yield make
    for observer in observers:
        observer.conn.close()


def file_state(path: Path) -> tuple[bytes, list[str]]:
    """The database bytes and which sidecar files exist."""
    return path.read_bytes(), [suffix for suffix in SIDECARS if Path(f"{path}{suffix}").exists()]


def assert_untouched(path: Path, content: bytes, opener: Callable[[Path], Store]) -> None:
    """The rejected file is byte-identical and nothing was written next to it.

    ``Store.open`` leaves no sidecar at all.  ``Store.open_readonly`` on a
    WAL-mode file may leave the empty ``-wal`` / ``-shm`` that every SQLite
    WAL reader creates (a read-only connection cannot remove them); the
    ``-wal`` must then hold no frames, i.e. nothing was written.
    """
    assert path.read_bytes() == content, "a rejected file is never modified"
    sidecars = [suffix for suffix in SIDECARS if Path(f"{path}{suffix}").exists()]
    if opener == Store.open:
        assert sidecars == []
    else:
        assert set(sidecars) <= {"-wal", "-shm"}
        assert "-wal" not in sidecars or Path(f"{path}-wal").stat().st_size == 0


# ---------------------------------------------------------------------------
# Whole files: truncated, foreign, newer


def read_everything(store: Store, refs: dict[str, str]) -> None:
    """Every read the public API offers (none of them may write)."""
    store.load_session(SessionReadScope.full_graph())
    store.load_session(SessionReadScope.active_path())
    store.load_session_meta()
    store.load_picker_info()
    store.graph_node_count()
    for ref in refs.values():
        store.get_blob(ref)
    store.get_checkpoint(refs["manifest"])
    store.list_queued_work(SESSION)
    store.list_uncommitted(2**63 - 1)


TRUNCATIONS = [
    pytest.param(lambda size, page: 10, id="10-bytes-inside-the-magic"),
    pytest.param(lambda size, page: 50, id="50-bytes-partial-header"),
    pytest.param(lambda size, page: 100, id="100-bytes-header-only"),
    pytest.param(lambda size, page: page, id="first-page-only"),
    pytest.param(lambda size, page: size // 2, id="half"),
    pytest.param(lambda size, page: size - page, id="all-but-the-last-page"),
]


@pytest.mark.parametrize("cut", TRUNCATIONS)
@pytest.mark.parametrize("opener", [Store.open, Store.open_readonly], ids=["open", "open_readonly"])
def test_truncated_database_file_is_a_typed_error(
    tmp_path: Path, cut: Callable[[int, int], int], opener: Callable[[Path], Store]
) -> None:
    populated = populate(tmp_path / "session.db", bulk_turns=40)
    data = populated.path.read_bytes()
    page = int.from_bytes(data[16:18], "big")
    assert len(data) > 20 * page, "the file spans many pages"
    damaged = data[: cut(len(data), page)]
    populated.path.write_bytes(damaged)
    # Never a raw sqlite3 error: opening (or, failing that, reading) raises a typed error.
    with pytest.raises((NotAStoreDatabase, CorruptData)) as raised, opener(populated.path) as store:
        read_everything(store, populated.refs)
    assert isinstance(raised.value, StoreError)
    assert_untouched(populated.path, damaged, opener)


def test_empty_file_is_a_new_store(tmp_path: Path) -> None:
    """Documented outcome (README, opening files): a zero-byte file is initialised as a new, empty session."""
    path = tmp_path / "session.db"
    path.write_bytes(b"")
    with Store.open(path) as store:
        assert store.load_session() is None
        assert store.load_session_meta() is None


FOREIGN_FILES = [
    pytest.param(random.Random(7).randbytes(8192), id="random-bytes"),
    pytest.param(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + random.Random(8).randbytes(2000), id="png"),
    pytest.param(b'{"session": "chat-1", "turns": [1, 2, 3]}\n', id="json-text"),
    pytest.param(b"x", id="one-byte"),
    pytest.param(b"SQLite format 3\x00" + random.Random(9).randbytes(4080), id="sqlite-magic-then-garbage"),
]


@pytest.mark.parametrize("content", FOREIGN_FILES)
@pytest.mark.parametrize("opener", [Store.open, Store.open_readonly], ids=["open", "open_readonly"])
def test_foreign_file_is_not_a_store_database_and_untouched(
    tmp_path: Path, content: bytes, opener: Callable[[Path], Store]
) -> None:
    path = tmp_path / "session.db"
    path.write_bytes(content)
    with pytest.raises(NotAStoreDatabase) as raised:
        opener(path)
    assert raised.value.path == str(path)
    assert file_state(path) == (content, []), "byte-identical, no sidecar files"


def test_sqlite_magic_with_a_garbage_header_is_a_typed_error(tmp_path: Path) -> None:
    """A plausible SQLite header (page size 4096) over garbage pages: typed, file untouched."""
    header = b"SQLite format 3\x00" + bytes.fromhex("1000 0101 0040 2020") + bytes(76)
    content = header + random.Random(10).randbytes(4096 * 3 - len(header))
    path = tmp_path / "session.db"
    path.write_bytes(content)
    with pytest.raises((NotAStoreDatabase, CorruptData)), Store.open(path) as store:
        store.load_session()
    assert file_state(path) == (content, [])


@pytest.mark.parametrize("version", [1, 2, 4, 99, 2**31 - 1, -1])
def test_other_schema_version_is_unsupported_and_untouched(populated: Populated, version: int) -> None:
    execute(populated.path, f"PRAGMA user_version = {version}")
    content = populated.path.read_bytes()
    for opener in (Store.open, Store.open_readonly):
        with pytest.raises(UnsupportedSchemaVersion) as raised:
            opener(populated.path)
        assert (raised.value.expected, raised.value.found) == (3, version)
        assert "3" in str(raised.value) and str(version) in str(raised.value)
        assert_untouched(populated.path, content, opener)


# ---------------------------------------------------------------------------
# Blob rows


def flip(index: Callable[[int], int]) -> Callable[[str, bytes], tuple[str, object]]:
    def mutate(encoding: str, content: bytes) -> tuple[str, object]:
        at = index(len(content))
        return encoding, content[:at] + bytes([content[at] ^ 0x01]) + content[at + 1 :]

    return mutate


def declared_huge_frame(encoding: str, content: bytes) -> tuple[str, object]:
    """A zstd frame whose header declares 4 EiB of content, followed by a one-byte raw block."""
    descriptor = (3 << 6) | (1 << 5)  # 8-byte content size, single segment
    block = (1 | (0 << 1) | (1 << 3)).to_bytes(3, "little") + b"x"  # last block, raw, 1 byte
    return "zstd", struct.pack("<I", 0xFD2FB528) + bytes([descriptor]) + struct.pack("<Q", 1 << 62) + block


def other_zstd_frame(encoding: str, content: bytes) -> tuple[str, object]:
    """A well-formed zstd frame of other bytes: it decompresses, but not to the blob's address."""
    return "zstd", zstandard.ZstdCompressor().compress(b"someone else's bytes")


BLOB_MUTATIONS: dict[str, Callable[[str, bytes], tuple[str, object]]] = {
    "flip-first-byte": flip(lambda n: 0),
    "flip-middle-byte": flip(lambda n: n // 2),
    "flip-last-byte": flip(lambda n: n - 1),
    "truncated-to-half": lambda encoding, content: (encoding, content[: len(content) // 2]),
    "empty-content": lambda encoding, content: (encoding, b""),
    "unknown-encoding": lambda encoding, content: ("brotli", content),
    "encoding-in-upper-case": lambda encoding, content: (encoding.upper(), content),
    "encoding-swapped": lambda encoding, content: ("raw" if encoding == "zstd" else "zstd", content),
    "valid-zstd-frame-of-other-bytes": other_zstd_frame,
    "zstd-frame-declaring-4-EiB": declared_huge_frame,
    "content-stored-as-sqlite-text": lambda encoding, content: (encoding, "text, not a blob"),
}

BLOB_TARGETS = {
    "tool_state": "zstd",
    "manifest": "raw",
    "execution_state": "raw",
    "plugin_snapshot": "raw",
    "plain": "raw",
    "artifact": "zstd",
}
CHECKPOINT_PARTS = {"tool_state", "manifest", "execution_state", "plugin_snapshot"}


@pytest.mark.parametrize("mutation", list(BLOB_MUTATIONS))
@pytest.mark.parametrize("target", list(BLOB_TARGETS))
def test_damaged_blob_row_raises_corrupt_data(
    populated: Populated, observe: Callable[[Path], Observer], target: str, mutation: str
) -> None:
    ref = populated.refs[target]
    encoding, content = blob_row(populated.path, ref)
    assert encoding == BLOB_TARGETS[target]
    new_encoding, new_content = BLOB_MUTATIONS[mutation](encoding, content)
    execute(populated.path, "UPDATE blobs SET encoding = ?, content = ? WHERE hash = ?", new_encoding, new_content, ref)
    observer = observe(populated.path)
    with Store.open(populated.path, OPTIONS) as store:
        with pytest.raises(CorruptData) as raised:
            store.get_blob(ref)
        assert ref in raised.value.what
        if target in CHECKPOINT_PARTS:
            with pytest.raises(CorruptData):
                store.get_checkpoint(populated.refs["manifest"])
            for scope in (SessionReadScope.full_graph(), SessionReadScope.active_path()):
                with pytest.raises(CorruptData):
                    store.load_session(scope)
        else:  # a damaged loose blob does not take the session down with it
            read = store.load_session()
            assert read is not None and read.checkpoint is not None
            assert read.checkpoint.execution_state == b"\x01\x02\x03 execution state"
    assert observer.unchanged(), "reads never write"


def test_gc_refuses_when_the_rooted_manifest_is_damaged(populated: Populated) -> None:
    """GC cannot prove what is live: it deletes nothing (not even true orphans) and says why."""
    manifest = populated.refs["manifest"]
    _, content = blob_row(populated.path, manifest)
    execute(populated.path, "UPDATE blobs SET content = ? WHERE hash = ?", content[:-3], manifest)
    count = blob_count(populated.path)
    with Store.open(populated.path, OPTIONS) as store:
        report = store.gc_unreachable()
    assert report.skipped_reason is not None and manifest in report.skipped_reason
    assert report.deleted_blob_count == 0
    assert blob_count(populated.path) == count
    # Control: with the manifest repaired, the same GC does delete the orphans.
    execute(populated.path, "UPDATE blobs SET content = ? WHERE hash = ?", content, manifest)
    with Store.open(populated.path, OPTIONS) as store:
        report = store.gc_unreachable()
        assert report.skipped_reason is None and report.deleted_blob_count > 0
        assert store.get_blob(populated.refs["plain"]) is None


def test_gc_keeps_a_damaged_live_snapshot(populated: Populated) -> None:
    """Damage inside a live child blob is reported on read, and GC (which marks by ref) never deletes the row."""
    ref = populated.refs["tool_state"]
    execute(populated.path, "UPDATE blobs SET content = substr(content, 1, 10) WHERE hash = ?", ref)
    with Store.open(populated.path, OPTIONS) as store:
        report = store.gc_unreachable()
        assert report.skipped_reason is None
        assert report.deleted_blob_count > 0  # the true orphans went
        with pytest.raises(CorruptData):
            store.get_blob(ref)
    assert query(populated.path, "SELECT count(*) FROM blobs WHERE hash = ?", ref) == [(1,)]


# ---------------------------------------------------------------------------
# Rows holding msgpack records


def truncated(original: bytes) -> bytes:
    return original[: len(original) // 2]


RECORD_DAMAGE: dict[str, Callable[[bytes], object]] = {
    "invalid-msgpack-opcode": lambda original: b"\xc1",
    "truncated-record": truncated,
    "wrong-shape-an-integer": lambda original: msgspec.msgpack.encode(7),
    "wrong-shape-a-list": lambda original: msgspec.msgpack.encode(["not", "a", "record"]),
    "empty-bytes": lambda original: b"",
    "trailing-garbage": lambda original: original + b"\xc1\xc1",
    "length-claims-4-GiB": lambda original: b"\xdb\xff\xff\xff\xff" + b"x" * 10,
    "nested-a-million-deep": lambda original: b"\x81\xa6config" + b"\x91" * 1_000_000 + b"\xc0",
    "sqlite-text-not-blob": lambda original: "text, not bytes",
}


@pytest.mark.parametrize("damage", list(RECORD_DAMAGE))
def test_undecodable_head_body(populated: Populated, observe: Callable[[Path], Observer], damage: str) -> None:
    """load_session raises CorruptData; gc_unreachable returns a skipped report and deletes nothing."""
    [(original,)] = query(populated.path, "SELECT body FROM session_head")
    assert isinstance(original, bytes)
    execute(populated.path, "UPDATE session_head SET body = ?", RECORD_DAMAGE[damage](original))
    count = blob_count(populated.path)
    observer = observe(populated.path)
    with Store.open(populated.path, OPTIONS) as store:
        for scope in (SessionReadScope.full_graph(), SessionReadScope.active_path()):
            with pytest.raises(CorruptData) as raised:
                store.load_session(scope)
            assert raised.value.what == "session head"
        assert observer.unchanged()
        report = store.gc_unreachable()
        assert report.skipped_reason is not None and "head" in report.skipped_reason
        assert report.deleted_blob_count == 0
        with pytest.raises(CorruptData):  # a fork copies only what it can prove live
            store.copy_session_into(Store.memory())
    assert blob_count(populated.path) == count, "nothing deleted, although orphans older than the grace exist"
    execute(populated.path, "UPDATE session_head SET body = ?", original)
    with Store.open(populated.path, OPTIONS) as store:
        assert store.gc_unreachable().deleted_blob_count > 0  # control: a decodable head lets GC sweep


GRAPH_DAMAGE = {name: RECORD_DAMAGE[name] for name in RECORD_DAMAGE if name != "nested-a-million-deep"}
GRAPH_DAMAGE["wrong-shape-node-without-id"] = lambda original: msgspec.msgpack.encode({"kind": "message"})


@pytest.mark.parametrize("damage", list(GRAPH_DAMAGE))
def test_undecodable_graph_node_names_the_node(populated: Populated, damage: str) -> None:
    [(original,)] = query(populated.path, "SELECT body FROM graph_nodes WHERE node_id = 'a1'")
    assert isinstance(original, bytes)
    execute(populated.path, "UPDATE graph_nodes SET body = ? WHERE node_id = 'a1'", GRAPH_DAMAGE[damage](original))
    with Store.open(populated.path, OPTIONS) as store:
        # a1 is in the full graph and on the active path a2 -> u2 -> a1 -> u1.
        for scope in (SessionReadScope.full_graph(), SessionReadScope.active_path()):
            with pytest.raises(CorruptData) as raised:
                store.load_session(scope)
            assert "'a1'" in raised.value.what
        with pytest.raises(CorruptData, match="'a1'"):
            store.load_node("a1")
        # Isolation: other nodes, the picker (maintained columns) and a path around a1 still read.
        assert store.load_node("u2") is not None
        info = store.load_picker_info()
        assert info is not None and (info.first_user_message, info.user_message_count) == ("first question", 2)
        path = store.load_session(SessionReadScope.active_path("u1"))
        assert path is not None and [node.node_id for node in path.graph.nodes] == ["u1"]


META_DAMAGE = {name: RECORD_DAMAGE[name] for name in RECORD_DAMAGE if name != "nested-a-million-deep"}
META_DAMAGE["unknown-relation-kind"] = lambda original: msgspec.msgpack.encode({"kind": "grandchild"})


@pytest.mark.parametrize("damage", list(META_DAMAGE))
def test_undecodable_session_meta_relation(populated: Populated, damage: str) -> None:
    [(original,)] = query(populated.path, "SELECT relation FROM session_meta")
    assert isinstance(original, bytes)
    execute(populated.path, "UPDATE session_meta SET relation = ?", META_DAMAGE[damage](original))
    with Store.open(populated.path, OPTIONS) as store:
        with pytest.raises(CorruptData) as raised:
            store.load_session_meta()
        assert raised.value.what == "session meta relation"
        with pytest.raises(CorruptData):
            store.load_picker_info()
        read = store.load_session()  # the session itself is unaffected
        assert read is not None and read.head_revision == 2


def test_session_list_reports_a_damaged_session_and_keeps_the_others(tmp_path: Path) -> None:
    """factory.list_sessions: a damaged session is reported (never silently left out) and blocks no other."""
    factory = SqliteSessionStoreFactory(tmp_path)
    factory.create_store("good").close()
    factory.create_store("bad").close()
    execute(factory.path_for_session("bad"), "UPDATE session_meta SET relation = x'c1'")
    with pytest.raises(SessionsUnreadable) as raised:
        factory.list_sessions()
    assert [info.session_id for info in raised.value.sessions] == ["good"]  # type: ignore[attr-defined]
    [(where, error)] = raised.value.failures
    assert where == str(factory.path_for_session("bad")) and isinstance(error, CorruptData)


TURN_RECORD_DAMAGE = {name: RECORD_DAMAGE[name] for name in RECORD_DAMAGE if name != "nested-a-million-deep"}
TURN_RECORD_DAMAGE["record-without-result"] = lambda original: msgspec.msgpack.encode({"turn_commit_hash": "h2"})


@pytest.mark.parametrize("damage", list(TURN_RECORD_DAMAGE))
def test_damaged_turn_commit_record(populated: Populated, observe: Callable[[Path], Observer], damage: str) -> None:
    """Replaying the stamped turn raises CorruptData naming it, and writes nothing; other turns still commit."""
    [(original,)] = query(populated.path, "SELECT record FROM runtime_turn_commits WHERE turn_id = 'turn-2'")
    assert isinstance(original, bytes)
    execute(
        populated.path,
        "UPDATE runtime_turn_commits SET record = ? WHERE turn_id = 'turn-2'",
        TURN_RECORD_DAMAGE[damage](original),
    )
    observer = observe(populated.path)
    with Store.open(populated.path, OPTIONS) as store:
        with pytest.raises(CorruptData, match="turn-2"):
            store.commit_runtime_state(populated.turn_two)
        assert observer.unchanged(), "a failed replay leaves no trace"
        read = store.load_session()
        assert read is not None and read.head_revision == 2
        later = RuntimeCommit(session_id=SESSION, expected_head_revision=2).with_turn_commit(
            TurnCommitStamp(session_id=SESSION, turn_id="turn-3", turn_commit_hash="h3")
        )
        assert store.commit_runtime_state(later).head_revision == 3


# ---------------------------------------------------------------------------
# Queue rows, graph shape, WAL, type confusion


QUEUE_DAMAGE = {
    "payloads-invalid-msgpack": ("payloads", b"\xc1"),
    "payloads-wrong-shape": ("payloads", msgspec.msgpack.encode({"kind": "teleport"})),
    "unknown-delivery-policy": ("delivery_policy", "whenever"),
    "unknown-slot-policy": ("slot_policy", "crowded"),
    "garbage-merge-key": ("merge_key", "\x00\x01 not a merge key"),
}


@pytest.mark.parametrize("damage", list(QUEUE_DAMAGE))
def test_undecodable_queued_row(populated: Populated, caplog: pytest.LogCaptureFixture, damage: str) -> None:
    """Documented outcome (SPEC §6): lists and claims log and skip the row; naming it raises CorruptData."""
    with Store.open(populated.path, OPTIONS) as store:
        bad = store.enqueue_queued_work(draft(SESSION, "bad", DeliveryPolicy.EARLIEST_SAFE_BOUNDARY, SlotPolicy.JOIN))
        good = store.enqueue_queued_work(draft(SESSION, "good"))
    column, value = QUEUE_DAMAGE[damage]
    execute(populated.path, f"UPDATE queued_work_batches SET {column} = ? WHERE batch_id = ?", value, bad.batch_id)
    with Store.open(populated.path, OPTIONS) as store, caplog.at_level(logging.ERROR, logger="lash_store"):
        assert [batch.batch_id for batch in store.list_queued_work(SESSION)] == [good.batch_id]
        assert [batch.batch_id for batch in store.list_pending_queued_work(SESSION)] == [good.batch_id]
        claim = store.claim_ready_queued_work(SESSION, "worker", QueuedWorkClaimBoundary.IDLE, 30_000, 8)
        assert claim is not None and claim.batch_ids == [good.batch_id], "a bad row blocks nobody"
        with pytest.raises(CorruptData, match=bad.batch_id):
            store.cancel_queued_work_batch(SESSION, bad.batch_id)
        with pytest.raises(CorruptData, match=bad.batch_id):
            store.claim_ready_queued_work_by_batch_ids(
                SESSION, "worker", QueuedWorkClaimBoundary.IDLE, 30_000, [bad.batch_id]
            )
    assert bad.batch_id in caplog.text, "skipping is logged, never silent"
    assert query(populated.path, "SELECT count(*) FROM queued_work_batches WHERE batch_id = ?", bad.batch_id) == [
        (1,)
    ], "the damaged row is kept for inspection"


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "edge",
    [
        pytest.param(("u1", "a2"), id="root-points-at-the-leaf"),
        pytest.param(("a2", "a2"), id="leaf-is-its-own-parent"),
        pytest.param(("u2", "a2"), id="two-node-cycle"),
    ],
)
def test_parent_cycle_in_stored_graph_does_not_hang(populated: Populated, edge: tuple[str, str]) -> None:
    """Documented outcome (README, reads): the active-path walk is cycle-guarded; each node appears once."""
    node, parent = edge
    execute(populated.path, "UPDATE graph_nodes SET parent_node_id = ? WHERE node_id = ?", parent, node)
    with Store.open(populated.path, OPTIONS) as store:
        path = store.load_session(SessionReadScope.active_path())
        assert path is not None
        ids = [n.node_id for n in path.graph.nodes]
        assert ids and ids[-1] == "a2" and len(ids) == len(set(ids)) <= 4
        full = store.load_session()
        assert full is not None and len(full.graph.nodes) == 4


@pytest.mark.parametrize("fraction", [0.0, 0.2, 0.45, 0.7, 0.95])
def test_torn_wal_tail_recovers_a_prefix_of_whole_commits(tmp_path: Path, fraction: float) -> None:
    """Documented outcome (README: NORMAL durability): a WAL cut anywhere loses a suffix of commits, never half one."""
    live = tmp_path / "live.db"
    store = Store.open(live, OPTIONS)
    try:
        for n in range(1, 16):
            store.commit_runtime_state(
                RuntimeCommit(
                    session_id=SESSION,
                    expected_head_revision=n - 1,
                    graph=GraphDelta.append(
                        [_node(f"n{n}", "user", f"message {n}", f"n{n - 1}" if n > 1 else None)], f"n{n}"
                    ),
                    checkpoint=HydratedCheckpoint(turn_state={"turn": n}, tool_state={"turn": n}),
                    usage_deltas=[TokenLedgerEntry(source="turn", model="m", usage=TokenUsage(input_tokens=1))],
                ).with_turn_commit(TurnCommitStamp(session_id=SESSION, turn_id=f"turn-{n}", turn_commit_hash="h"))
            )
        db, wal = live.read_bytes(), Path(f"{live}-wal").read_bytes()  # copied while the WAL holds everything
    finally:
        store.close()
    torn = tmp_path / "torn.db"
    torn.write_bytes(db)
    Path(f"{torn}-wal").write_bytes(wal[: 32 + int((len(wal) - 32) * fraction)])
    with Store.open(torn, OPTIONS) as recovered:
        read = recovered.load_session()
        head = 0 if read is None else read.head_revision
        if read is not None:
            assert [node.node_id for node in read.graph.nodes] == [f"n{n}" for n in range(1, head + 1)]
            assert read.checkpoint is not None and read.checkpoint.tool_state == {"turn": head}
            assert read.token_ledger[0].usage.input_tokens == head
        assert query(torn, "SELECT count(*) FROM runtime_turn_commits") == [(head,)]
        assert query(torn, "PRAGMA integrity_check") == [("ok",)]
        assert (
            recovered.commit_runtime_state(RuntimeCommit(session_id=SESSION, expected_head_revision=head)).head_revision
            == head + 1
        )


TYPE_CONFUSION = [
    pytest.param("UPDATE session_head SET head_revision = 'two'", id="head-revision-as-text"),
    pytest.param("UPDATE session_head SET head_revision = 2.5", id="head-revision-as-real"),
    pytest.param("UPDATE session_head SET usage_ledger = 'lots'", id="usage-ledger-as-text"),
    pytest.param("UPDATE session_head SET usage_ledger = x'00'", id="usage-ledger-not-a-list"),
    pytest.param("UPDATE session_head SET usage_ledger = 7", id="usage-ledger-as-integer"),
]


@pytest.mark.parametrize("damage", TYPE_CONFUSION)
def test_type_confused_integer_columns_raise_corrupt_data(populated: Populated, damage: str) -> None:
    """An integer column holding text/real/blob is undecodable stored data: CorruptData, not a wrong value."""
    execute(populated.path, damage)
    with Store.open(populated.path, OPTIONS) as store, pytest.raises(CorruptData):
        store.load_session()


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param("UPDATE session_head SET node_count = 'many'", id="node-count-as-text"),
        pytest.param("UPDATE session_head SET user_message_count = 1.5", id="user-count-as-real"),
    ],
)
def test_type_confused_graph_counters_raise_corrupt_data(populated: Populated, damage: str) -> None:
    """The maintained counters feed the picker, the node count and the active-path depth cap."""
    execute(populated.path, damage)
    with Store.open(populated.path, OPTIONS) as store:
        for read in (store.graph_node_count, store.load_picker_info):
            with pytest.raises(CorruptData, match="graph counters"):
                read()
        with pytest.raises(CorruptData, match="graph counters"):
            store.load_session(SessionReadScope.active_path())


def test_a_missing_head_row_is_corrupt_data_and_blocks_commits(populated: Populated) -> None:
    """The head row exists from creation on: losing it is damage, never an empty session to commit into."""
    execute(populated.path, "DELETE FROM session_head")
    before = query(populated.path, "SELECT count(*) FROM graph_nodes UNION ALL SELECT count(*) FROM blobs")
    with Store.open(populated.path, OPTIONS) as store:
        for read in (store.load_session, store.graph_node_count, store.load_picker_info):
            with pytest.raises(CorruptData, match="head row is missing"):
                read()
        commit = RuntimeCommit(
            session_id=SESSION,
            expected_head_revision=None,
            graph=GraphDelta.append([_node("u9", "user", "late", None)], "u9"),
            usage_deltas=[TokenLedgerEntry(source="turn", model="m", usage=TokenUsage(input_tokens=1))],
        )
        with pytest.raises(CorruptData, match="head row is missing"):
            store.commit_runtime_state(commit)
    assert query(populated.path, "SELECT count(*) FROM graph_nodes UNION ALL SELECT count(*) FROM blobs") == before
    assert query(populated.path, "SELECT count(*) FROM session_head") == [(0,)]


@pytest.mark.parametrize("column", ["event_ty", "input_template", "process_name"])
def test_a_damaged_subscription_column_is_corrupt_data_naming_it(tmp_path: Path, column: str) -> None:
    """An opaque subscription column that is no JSON: listing it raises CorruptData naming the subscription and
    the column, and routing an occurrence that matches it writes nothing."""
    import sqlite3

    from lash_store.host_events import HostEventOccurrenceRequest, TriggerSubscriptionDraft
    from lash_store.sqlite.host_events import HostEventStore

    path = tmp_path / "deployment.lash"
    with HostEventStore.open(path) as store:
        draft = TriggerSubscriptionDraft(session_id="s", source_type="t", source_key="k", process_name="p")
        record = store.register_subscription(draft)
    with sqlite3.connect(path) as raw:
        raw.execute(f"UPDATE host_event_subscriptions SET {column} = '{{oops'")
    with HostEventStore.open(path) as store:
        with pytest.raises(CorruptData) as raised:
            store.list_subscriptions()
        assert record.subscription_id in str(raised.value) and column in str(raised.value)
        request = HostEventOccurrenceRequest(source_type="t", source_key="k", idempotency_key="i", payload=None)
        with pytest.raises(CorruptData):
            store.record_and_reserve(request)
        assert store.list_occurrences() == []

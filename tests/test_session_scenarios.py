"""Acceptance scenarios of ``reference/session-store.md`` section 8, adapted to the SPEC decisions.

A-1/A-2/A-5/A-6 live in ``test_seed_ports.py``; E-11 and the queue part of
E-9 belong to the queue suites.  Sections below follow the scenario letters,
then the SPEC decisions that change or extend them (usage ledger, graph
upserts, cycles, picker info, fork, read snapshots).
"""

from __future__ import annotations

import datetime
import hashlib
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import msgspec
import pytest

from lash_store import BlobProfile, GcPolicy, SqliteSessionStoreFactory, Store, StoreOptions
from lash_store.errors import (
    BackendError,
    CorruptData,
    HeadRevisionConflict,
    InvalidInput,
    NotAStoreDatabase,
    RuntimeTurnCommitConflict,
    SessionBindingMismatch,
    StoreError,
    UnsupportedSchemaVersion,
)
from lash_store.model import (
    ArtifactKind,
    AttachmentIntent,
    BlobArtifactDescriptor,
    DurabilityTier,
    GraphDelta,
    HydratedCheckpoint,
    PersistedSessionRead,
    RuntimeCommit,
    SessionGraph,
    SessionMeta,
    SessionNode,
    SessionReadScope,
    SessionRelation,
    StorageHint,
    TokenLedgerEntry,
    TokenUsage,
    TurnCommitStamp,
)
from tests.helpers import ManualClock, commit_at, message

GRACE0 = StoreOptions(gc_policy=GcPolicy(grace_ms=0))
STORE_APPLICATION_ID = 0x4C415348
MODEL_CONFIG = {"provider_id": "openai-compatible", "model": {"id": "gpt-5.4-mini", "context_window": 200_000}}


# ---------------------------------------------------------------------------
# Helpers


@contextmanager
def raw_ro(path: Path) -> Iterator[sqlite3.Connection]:
    """A read-only plain sqlite3 connection (never modifies the file)."""
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        yield conn


@contextmanager
def raw_rw(path: Path) -> Iterator[sqlite3.Connection]:
    """A plain autocommit sqlite3 connection used to tamper with a file behind the store's back."""
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        yield conn


def raw_scalar(path: Path, sql: str, params: tuple[Any, ...] = ()) -> Any:
    with raw_ro(path) as conn:
        row = conn.execute(sql, params).fetchone()
    return None if row is None else row[0]


def blob_row(path: Path, ref: str) -> tuple[str, str | None, int, int] | None:
    """``(encoding, kind, raw_size, stored length)`` of a blob row."""
    with raw_ro(path) as conn:
        row = conn.execute(
            "SELECT encoding, kind, raw_size, length(content) FROM blobs WHERE hash = ?", (ref,)
        ).fetchone()
    return None if row is None else (row[0], row[1], row[2], row[3])


def blob_hashes(path: Path) -> set[str]:
    with raw_ro(path) as conn:
        return {row[0] for row in conn.execute("SELECT hash FROM blobs")}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def node(node_id: str, parent: str | None = None, role: str = "assistant", text: str | None = None) -> SessionNode:
    return message(node_id, role, text if text is not None else f"text of {node_id}", parent)


def user_node(node_id: str, parts: list[dict[str, Any]], parent: str | None = None) -> SessionNode:
    return SessionNode(node_id=node_id, parent_node_id=parent, payload={"role": "user", "parts": parts})


def replace_commit(
    expected: int | None, nodes: list[SessionNode], leaf: str | None, session_id: str = "root", **state: Any
) -> RuntimeCommit:
    return commit_at(session_id, expected, session_graph=SessionGraph(nodes=nodes, leaf_node_id=leaf), **state)


def append_commit(
    expected: int | None, nodes: list[SessionNode], leaf: str | None, session_id: str = "root", **state: Any
) -> RuntimeCommit:
    return msgspec.structs.replace(commit_at(session_id, expected, **state), graph=GraphDelta.append(nodes, leaf))


def with_usage(commit: RuntimeCommit, *entries: tuple[str, str, int, int, int, int]) -> RuntimeCommit:
    return msgspec.structs.replace(
        commit,
        usage_deltas=[
            TokenLedgerEntry(
                source=source,
                model=model,
                usage=TokenUsage(input_tokens=i, output_tokens=o, cached_input_tokens=c, reasoning_tokens=r),
            )
            for source, model, i, o, c, r in entries
        ],
    )


def load(store: Store, scope: SessionReadScope | None = None) -> PersistedSessionRead:
    read = store.load_session(scope)
    assert read is not None, "the store has no head"
    return read


def ids(read: PersistedSessionRead) -> list[str]:
    return [n.node_id for n in read.graph.nodes]


def meta(session_id: str = "root", **fields: Any) -> SessionMeta:
    values: dict[str, Any] = {
        "session_name": "A session",
        "created_at": "2024-05-01T12:00:00+00:00",
        "model": "gpt-5.4-mini",
        "cwd": "/work/project",
    }
    values.update(fields)
    return SessionMeta(session_id=session_id, **values)


def run_with_timeout(fn: Callable[[], Any], timeout_s: float = 20.0) -> Any:
    """Run ``fn`` in a daemon thread; fail (rather than hang the suite) if it does not return in time."""
    outcome: list[Any] = []

    def target() -> None:
        try:
            outcome.append(("ok", fn()))
        except BaseException as exc:
            outcome.append(("error", exc))

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout_s)
    assert outcome, f"call did not return within {timeout_s}s (deadlock or endless loop)"
    kind, value = outcome[0]
    if kind == "error":
        raise value
    return value


# ---------------------------------------------------------------------------
# B. GC and factory (tests/store_gc.rs)


def test_b1_gc_keeps_rooted_checkpoint_blobs(memory_store: Store) -> None:
    store = memory_store
    turn_state = {"turn_index": 1, "token_usage": {"input_tokens": 0, "output_tokens": 0}}
    checkpoint_ref, manifest = store.put_checkpoint(
        HydratedCheckpoint(
            turn_state=turn_state,
            tool_state={"generation": 7, "tools": []},
            plugin_snapshot={"plugins": {}},
            plugin_snapshot_revision=11,
        )
    )
    assert manifest.execution_state_ref is None
    assert manifest.tool_state_ref is not None and manifest.plugin_snapshot_ref is not None

    # Point the head at the stored checkpoint: a manifest with the same refs has the same address.
    commit = msgspec.structs.replace(
        commit_at("root", 0, config=MODEL_CONFIG),
        checkpoint=HydratedCheckpoint(
            turn_state=turn_state,
            tool_state_ref=manifest.tool_state_ref,
            plugin_snapshot_ref=manifest.plugin_snapshot_ref,
            plugin_snapshot_revision=11,
        ),
    )
    assert store.commit_runtime_state(commit).checkpoint_ref == checkpoint_ref
    orphan = store.put_artifact_blob(BlobArtifactDescriptor.plugin_session_snapshot(), b"orphan")

    report = store.gc_unreachable()

    assert report.deleted_blob_count == 1
    assert report.skipped_reason is None
    for ref in (checkpoint_ref, manifest.tool_state_ref, manifest.plugin_snapshot_ref):
        assert store.get_blob(ref) is not None
    assert store.get_blob(orphan) is None
    hydrated = store.get_checkpoint(checkpoint_ref)
    assert hydrated is not None
    assert hydrated.tool_state == {"generation": 7, "tools": []}
    assert hydrated.plugin_snapshot_revision == 11
    assert load(store).config == MODEL_CONFIG


def test_b2_auto_gc_after_commit_does_not_deadlock() -> None:
    options = StoreOptions(blob_profile=BlobProfile.LOW_LATENCY, gc_policy=GcPolicy(auto_run_every_commits=1))
    with Store.memory(options) as store:
        orphan = store.put_artifact_blob(BlobArtifactDescriptor.plugin_session_snapshot(), b"orphan")

        result = run_with_timeout(lambda: store.commit_runtime_state(commit_at("auto-gc", None)))

        assert result.head_revision == 1
        assert store.get_blob(orphan) is None
        assert store.get_blob(result.checkpoint_ref) is not None


def test_auto_gc_counter_counts_successful_commits_only() -> None:
    with Store.memory(StoreOptions(gc_policy=GcPolicy(auto_run_every_commits=2))) as store:
        orphan = store.put_blob(b"orphan")
        store.commit_runtime_state(commit_at("root", 0))
        assert store.get_blob(orphan) == b"orphan", "one commit is below the interval"
        with pytest.raises(HeadRevisionConflict):
            store.commit_runtime_state(commit_at("root", 0))
        store.put_blob(b"another write that is not a commit")
        assert store.get_blob(orphan) == b"orphan", "failed commits and blob writes do not count"
        store.commit_runtime_state(commit_at("root", 1))
        assert store.get_blob(orphan) is None, "the second successful commit runs GC"


def test_b3_deterministic_safe_paths(tmp_path: Path) -> None:
    factory = SqliteSessionStoreFactory(tmp_path / "sessions")
    first = factory.path_for_session("../weird/session")
    second = factory.path_for_session("../weird/session")
    assert first == second
    assert first.parent == tmp_path / "sessions"
    assert first.name.endswith(".db")
    assert "/" not in first.name and ".." not in first.name
    assert first.name == "weird_session-7a2d2bada3f30bfe.db"


def test_b4_metadata_created_once_and_preserved(tmp_path: Path) -> None:
    factory = SqliteSessionStoreFactory(tmp_path / "sessions")
    with factory.create_store("chat/alpha", model="first-model", relation=SessionRelation.child("parent")) as store:
        created = store.load_session_meta()
        assert created is not None
        assert created.session_id == "chat/alpha"
        assert created.session_name == "chat/alpha"
        assert created.model == "first-model"
        assert created.relation == SessionRelation.child("parent")
        stamp = datetime.datetime.fromisoformat(created.created_at)  # RFC 3339 (decision 9)
        assert stamp.tzinfo is not None
        store.save_session_meta(
            SessionMeta(
                session_id="chat/alpha",
                session_name="Renamed",
                created_at="original",
                model="preserved-model",
                cwd="/tmp/original",
                relation=SessionRelation.child("parent"),
            )
        )

    with factory.create_store("chat/alpha", model="second-model") as store:
        kept = store.load_session_meta()
    assert kept is not None
    assert (kept.session_name, kept.model, kept.created_at, kept.cwd) == (
        "Renamed",
        "preserved-model",
        "original",
        "/tmp/original",
    )


def test_b5_factory_store_is_usable(tmp_path: Path) -> None:
    factory = SqliteSessionStoreFactory(tmp_path)
    assert factory.durability_tier is DurabilityTier.DURABLE
    with factory.create_store("explicit", model="model", relation=SessionRelation.root()) as store:
        stored = store.load_session_meta()
        assert stored is not None and stored.model == "model"
        assert store.commit_runtime_state(commit_at("explicit", 0)).head_revision == 1
        assert store.durability_tier is DurabilityTier.DURABLE
    assert factory.path_for_session("explicit").is_file()


def test_b6_delete_session_removes_db_and_sidecars_idempotently(tmp_path: Path) -> None:
    factory = SqliteSessionStoreFactory(tmp_path)
    path = factory.path_for_session("delete/me")
    assert path.name == "delete_me-cc812727fc741128.db"
    files = [path, Path(f"{path}-wal"), Path(f"{path}-shm")]
    for file in files:
        file.write_bytes(b"dummy")

    factory.delete_session("delete/me")
    factory.delete_session("delete/me")

    assert [f.exists() for f in files] == [False, False, False]


# ---------------------------------------------------------------------------
# C. Module artifacts


def test_c1_module_artifact_round_trip_and_gc_root(memory_store: Store) -> None:
    store = memory_store
    data = bytes(range(256)) * 8
    ref = store.put_module_artifact("lashlang:scan@1", data)
    assert ref == sha256(data)
    assert store.get_module_artifact("lashlang:scan@1") == data
    assert store.get_module_artifact("lashlang:unknown") is None

    report = store.gc_unreachable()  # no head at all: the pinned module is still a root
    assert report.deleted_blob_count == 0
    assert store.get_module_artifact("lashlang:scan@1") == data

    store.forget_module_artifact("lashlang:scan@1")
    assert store.get_module_artifact("lashlang:scan@1") is None
    assert store.gc_unreachable().deleted_blob_count == 1
    assert store.get_blob(ref) is None


# ---------------------------------------------------------------------------
# D-1 / D-2. GC never deletes live data


def _commit_with_snapshots(store: Store, expected: int = 0) -> Any:
    return store.commit_runtime_state(
        commit_at(
            "root",
            expected,
            turn_state={"turn_index": 4},
            tool_state_snapshot={"generation": 2},
            execution_state_snapshot=b"vm",
        )
    )


@pytest.mark.parametrize("corruption", ["tampered_manifest_bytes", "head_points_at_garbage_blob"])
def test_d1_corrupt_rooted_manifest_makes_gc_delete_nothing(db_path: Path, corruption: str) -> None:
    with Store.open(db_path, GRACE0) as store:
        result = _commit_with_snapshots(store)
        orphan = store.put_blob(b"orphan")
        if corruption == "tampered_manifest_bytes":
            # Keep the address, replace the bytes: the row no longer matches its hash.
            with raw_rw(db_path) as conn:
                conn.execute(
                    "UPDATE blobs SET content = ?, encoding = 'raw' WHERE hash = ?", (b"garbage", result.checkpoint_ref)
                )
            rooted = result.checkpoint_ref
        else:
            # A correctly addressed blob that is not a manifest, made the head's checkpoint.
            rooted = store.put_blob(b"garbage")
            with raw_rw(db_path) as conn:
                conn.execute("UPDATE session_head SET checkpoint_ref = ?", (rooted,))
        before = blob_hashes(db_path)

        report = store.gc_unreachable()

        assert report.skipped_reason is not None
        assert report.deleted_blob_count == 0
        assert blob_hashes(db_path) == before
        assert {rooted, orphan} <= before
        assert store.get_blob(orphan) == b"orphan"
        with pytest.raises(CorruptData):
            store.load_session()  # the damage is reported, never skipped silently


def test_undecodable_head_makes_gc_delete_nothing(db_path: Path) -> None:
    with Store.open(db_path, GRACE0) as store:
        _commit_with_snapshots(store)
        orphan = store.put_blob(b"orphan")
        with raw_rw(db_path) as conn:
            conn.execute("UPDATE session_head SET body = ?", (b"\xc1\xc1not msgpack",))
        before = blob_hashes(db_path)

        report = store.gc_unreachable()

        assert report.skipped_reason is not None
        assert report.deleted_blob_count == 0
        assert blob_hashes(db_path) == before
        assert store.get_blob(orphan) == b"orphan"
        with pytest.raises(CorruptData):
            store.load_session()


def test_d2_missing_rooted_manifest_still_sweeps(db_path: Path) -> None:
    with Store.open(db_path, GRACE0) as store:
        result = _commit_with_snapshots(store)
        orphan = store.put_blob(b"orphan")
        with raw_rw(db_path) as conn:
            conn.execute("DELETE FROM blobs WHERE hash = ?", (result.checkpoint_ref,))

        report = store.gc_unreachable()

        assert report.skipped_reason is None
        assert store.get_blob(orphan) is None
        assert report.deleted_blob_count >= 1
        read = load(store)
        assert read.checkpoint_ref == result.checkpoint_ref
        assert read.checkpoint is None


def test_grace_period_protects_fresh_unreachable_blobs(clocked_store: Store, clock: ManualClock) -> None:
    store = clocked_store  # a file store: default grace 600,000 ms
    orphan = store.put_blob(b"fresh orphan")
    checkpoint_ref, _ = store.put_checkpoint(HydratedCheckpoint(turn_state={"t": 1}, tool_state={"g": 1}))

    assert store.gc_unreachable().deleted_blob_count == 0
    clock.advance(599_999)
    assert store.gc_unreachable().deleted_blob_count == 0
    assert store.get_blob(orphan) == b"fresh orphan"
    assert store.get_checkpoint(checkpoint_ref) is not None

    clock.advance(1)
    report = store.gc_unreachable()
    assert report.deleted_blob_count == 3  # orphan, tool state, manifest
    assert store.get_blob(orphan) is None
    assert store.get_checkpoint(checkpoint_ref) is None


def test_re_putting_a_blob_restarts_its_grace_period(clocked_store: Store, clock: ManualClock) -> None:
    store = clocked_store
    ref = store.put_blob(b"re-uploaded")
    clock.advance(500_000)
    assert store.put_blob(b"re-uploaded") == ref
    clock.advance(200_000)  # 700 s after the first put, 200 s after the second
    assert store.gc_unreachable().deleted_blob_count == 0
    assert store.get_blob(ref) == b"re-uploaded"
    clock.advance(400_000)
    assert store.gc_unreachable().deleted_blob_count == 1


def test_agent_frame_execution_refs_are_gc_roots(memory_store: Store) -> None:
    store = memory_store
    frame_vm = store.put_artifact_blob(BlobArtifactDescriptor.execution_state_snapshot(), b"suspended frame vm")
    store.commit_runtime_state(commit_at("root", 0, agent_frames=[{"frame_id": "f1", "execution_state_ref": frame_vm}]))
    assert store.gc_unreachable().deleted_blob_count == 0
    assert store.get_blob(frame_vm) == b"suspended frame vm"

    store.commit_runtime_state(commit_at("root", 1, agent_frames=[{"frame_id": "f1"}]))
    store.gc_unreachable()
    assert store.get_blob(frame_vm) is None


# ---------------------------------------------------------------------------
# D-3. Recovery after a failed operation


def _state_snapshot(store: Store, path: Path) -> tuple[Any, ...]:
    read = load(store)
    with raw_ro(path) as conn:
        tables = tuple(
            conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("blobs", "graph_nodes", "runtime_turn_commits", "attachment_manifest")
        )
        stats = conn.execute("SELECT * FROM session_head").fetchone()
    return (read, tables, tuple(stats))


def _base_session(store: Store) -> None:
    store.commit_runtime_state(
        with_usage(replace_commit(0, [node("n1", role="user")], "n1"), ("turn", "m", 1, 1, 0, 0))
    )


def _ambitious_commit(expected: int) -> RuntimeCommit:
    """A commit that writes blobs, usage and nodes before its head write."""
    commit = append_commit(
        expected,
        [node("n2", "n1", role="user"), node("n3", "n2")],
        "n3",
        tool_state_snapshot={"big": "x" * 5000},
        execution_state_snapshot=b"vm-bytes",
    )
    return with_usage(commit, ("turn", "m", 5, 5, 5, 5), ("sub", "m2", 1, 0, 0, 0))


def test_d3_invalid_delta_is_rejected_before_anything_is_written(db_path: Path) -> None:
    with Store.open(db_path) as store:
        _base_session(store)
        before = _state_snapshot(store, db_path)

        duplicate = append_commit(1, [node("dup", "n1"), node("dup", "n1")], "dup")
        with pytest.raises(InvalidInput) as caught:
            store.commit_runtime_state(duplicate)
        assert isinstance(caught.value, ValueError)
        assert "node_id" in caught.value.what
        unencodable = append_commit(1, [SessionNode(node_id="bad", payload={"x": object()})], "bad")
        with pytest.raises(InvalidInput):
            store.commit_runtime_state(unencodable)

        assert _state_snapshot(store, db_path) == before
        assert store.commit_runtime_state(_ambitious_commit(1)).head_revision == 2
        assert ids(load(store)) == ["n1", "n2", "n3"]


def test_d3_failure_inside_the_transaction_rolls_everything_back(db_path: Path) -> None:
    with Store.open(db_path) as store:
        _base_session(store)
        # Make the head write (the last write of a commit) fail inside the transaction.
        with raw_rw(db_path) as conn:
            conn.executescript(
                """
                CREATE TABLE fail_switch (armed INTEGER);
                INSERT INTO fail_switch VALUES (1);
                CREATE TRIGGER fail_head_write BEFORE UPDATE OF head_revision ON session_head
                WHEN EXISTS (SELECT 1 FROM fail_switch)
                BEGIN SELECT RAISE(ABORT, 'injected failure'); END;
                """
            )
        before = _state_snapshot(store, db_path)

        with pytest.raises(BackendError, match="injected failure"):
            store.commit_runtime_state(_ambitious_commit(1))

        assert _state_snapshot(store, db_path) == before, "a failed commit left partial rows behind"
        with raw_rw(db_path) as conn:
            conn.execute("DELETE FROM fail_switch")
        result = store.commit_runtime_state(_ambitious_commit(1))
        assert result.head_revision == 2
        read = load(store)
        assert ids(read) == ["n1", "n2", "n3"]
        assert read.checkpoint is not None and read.checkpoint.execution_state == b"vm-bytes"
        assert store.graph_node_count() == 3


def test_d3_rejected_turn_stamp_writes_nothing(db_path: Path) -> None:
    with Store.open(db_path) as store:
        stamp = TurnCommitStamp(session_id="root", turn_id="turn-1", turn_commit_hash="hash-a")
        store.commit_runtime_state(replace_commit(0, [node("n1", role="user")], "n1").with_turn_commit(stamp))
        before = _state_snapshot(store, db_path)

        other_hash = msgspec.structs.replace(stamp, turn_commit_hash="hash-b")
        with pytest.raises(RuntimeTurnCommitConflict):
            store.commit_runtime_state(_ambitious_commit(1).with_turn_commit(other_hash))

        assert _state_snapshot(store, db_path) == before
        assert store.commit_runtime_state(_ambitious_commit(1)).head_revision == 2


class InterruptingClock(ManualClock):
    """A clock that raises ``KeyboardInterrupt`` once when armed (the store reads it under the write lock)."""

    armed = False

    def __call__(self) -> int:
        if self.armed:
            self.armed = False
            raise KeyboardInterrupt
        return super().__call__()


def test_d3_keyboard_interrupt_mid_commit_leaves_the_store_usable(db_path: Path) -> None:
    clock = InterruptingClock(1_700_000_000_000)
    options = StoreOptions(clock=clock, busy_timeout_ms=500)
    with Store.open(db_path, options) as store, Store.open(db_path, StoreOptions(busy_timeout_ms=500)) as other:
        _base_session(store)
        clock.armed = True
        with pytest.raises(KeyboardInterrupt):
            store.commit_runtime_state(_ambitious_commit(1))

        # The write lock was released (another connection can commit) ...
        assert other.commit_runtime_state(append_commit(1, [node("o1", "n1")], "o1")).head_revision == 2
        # ... and the interrupted store has no transaction left open.
        assert store.commit_runtime_state(append_commit(2, [node("s1", "o1")], "s1")).head_revision == 3
        assert ids(load(store)) == ["n1", "o1", "s1"]


# ---------------------------------------------------------------------------
# D-4 / D-5. Blob encoding (explicit encoding column, zstd kept only when smaller)

_COMPRESSIBLE = BlobArtifactDescriptor.checkpoint_manifest()
_NOT_COMPRESSIBLE = BlobArtifactDescriptor(
    kind=ArtifactKind.GENERIC_BLOB, hints=frozenset({StorageHint.LARGE_PAYLOAD, StorageHint.INLINE_PREFERRED})
)
_INCOMPRESSIBLE = hashlib.shake_256(b"lash-store incompressible payload").digest(8192)


@pytest.mark.parametrize(
    ("profile", "descriptor", "payload", "expected_encoding"),
    [
        (BlobProfile.BALANCED, _COMPRESSIBLE, b"a" * 4095, "raw"),
        (BlobProfile.BALANCED, _COMPRESSIBLE, b"a" * 4096, "zstd"),
        (BlobProfile.COMPACT, _COMPRESSIBLE, b"b" * 1023, "raw"),
        (BlobProfile.COMPACT, _COMPRESSIBLE, b"b" * 1024, "zstd"),
        (BlobProfile.LOW_LATENCY, _COMPRESSIBLE, b"c" * 100_000, "raw"),
        (BlobProfile.BALANCED, _NOT_COMPRESSIBLE, b"d" * 100_000, "raw"),
        (BlobProfile.COMPACT, BlobArtifactDescriptor.tool_state_snapshot(), b"e" * 2048, "zstd"),
        (BlobProfile.COMPACT, _COMPRESSIBLE, _INCOMPRESSIBLE, "raw"),  # zstd would not shrink it
        (BlobProfile.COMPACT, None, b"f" * 100_000, "raw"),  # put_blob never compresses
    ],
)
def test_d4_compression_thresholds(
    tmp_path: Path,
    profile: BlobProfile,
    descriptor: BlobArtifactDescriptor | None,
    payload: bytes,
    expected_encoding: str,
) -> None:
    path = tmp_path / "blobs.db"
    with Store.open(path, StoreOptions(blob_profile=profile)) as store:
        ref = store.put_blob(payload) if descriptor is None else store.put_artifact_blob(descriptor, payload)
        assert ref == sha256(payload)
        assert store.get_blob(ref) == payload
        row = blob_row(path, ref)
        assert row is not None
        encoding, kind, raw_size, stored = row
        assert encoding == expected_encoding
        assert raw_size == len(payload)
        assert kind == (None if descriptor is None else descriptor.kind.value)
        if expected_encoding == "zstd":
            assert stored < len(payload)
        else:
            assert stored == len(payload)
    with Store.open_readonly(path) as reader:
        assert reader.get_blob(ref) == payload


def test_d4_commit_path_blobs_are_compressed_and_hydrate(db_path: Path) -> None:
    tool_state = {"rows": ["the same line of tool output"] * 400}
    with Store.open(db_path) as store:
        result = store.commit_runtime_state(commit_at("root", 0, tool_state_snapshot=tool_state))
        ref = result.manifest.tool_state_ref
        assert ref is not None
        row = blob_row(db_path, ref)
        assert row is not None and row[0] == "zstd" and row[3] < row[2]
    with Store.open(db_path) as store:
        checkpoint = load(store).checkpoint
        assert checkpoint is not None and checkpoint.tool_state == tool_state


def test_memory_store_defaults_to_low_latency() -> None:
    with Store.memory() as store:
        assert store.options.blob_profile is BlobProfile.LOW_LATENCY
        assert store.durability_tier is DurabilityTier.INLINE


@pytest.mark.parametrize("first", ["raw", "artifact"])
def test_d5_first_writer_wins(db_path: Path, first: str) -> None:
    payload = b"first writer wins " * 512
    with Store.open(db_path, StoreOptions(blob_profile=BlobProfile.COMPACT)) as store:
        expected: tuple[str, str | None]
        if first == "raw":
            ref_a = store.put_blob(payload)
            ref_b = store.put_artifact_blob(_COMPRESSIBLE, payload)
            expected = ("raw", None)
        else:
            ref_a = store.put_artifact_blob(_COMPRESSIBLE, payload)
            ref_b = store.put_blob(payload)
            expected = ("zstd", ArtifactKind.CHECKPOINT_MANIFEST.value)
        assert ref_a == ref_b == sha256(payload)
        row = blob_row(db_path, ref_a)
        assert row is not None and row[:2] == expected
        assert store.get_blob(ref_a) == payload


def test_get_blob_rejects_tampered_content(db_path: Path) -> None:
    with Store.open(db_path) as store:
        ref = store.put_blob(b"honest bytes")
        with raw_rw(db_path) as conn:
            conn.execute("UPDATE blobs SET content = ? WHERE hash = ?", (b"forged bytes", ref))
        with pytest.raises(CorruptData):
            store.get_blob(ref)


# ---------------------------------------------------------------------------
# D-6 / D-7 / E-10. Turn commits and compare-and-set


def test_d6_turn_commit_replay_returns_the_original_result(memory_store: Store) -> None:
    store = memory_store
    stamp = TurnCommitStamp(session_id="root", turn_id="turn-T", turn_commit_hash="H")
    first = store.commit_runtime_state(commit_at("root", 0, turn_state={"turn": 1}).with_turn_commit(stamp))
    assert first.head_revision == 1
    second = store.commit_runtime_state(commit_at("root", 1, turn_state={"turn": 2}))
    assert second.head_revision == 2

    replay = store.commit_runtime_state(commit_at("root", 0, turn_state={"turn": 1}).with_turn_commit(stamp))

    assert replay == first
    read = load(store)
    assert read.head_revision == 2, "a replay writes nothing"
    assert read.checkpoint_ref == second.checkpoint_ref


def test_e10_final_commit_stamp_is_idempotent(db_path: Path) -> None:
    stamp = TurnCommitStamp(session_id="root", turn_id="provider-turn", turn_commit_hash="H")
    commit = commit_at("root", 0, turn_state={"answer": 42}).with_turn_commit(stamp)
    with Store.open(db_path) as store:
        first = store.commit_runtime_state(commit)
        assert store.commit_runtime_state(commit) == first
    with Store.open(db_path) as store:  # the stamp is durable
        retry = store.commit_runtime_state(commit)
        assert (retry.head_revision, retry.checkpoint_ref) == (first.head_revision, first.checkpoint_ref)
        with pytest.raises(RuntimeTurnCommitConflict) as caught:
            store.commit_runtime_state(
                commit.with_turn_commit(msgspec.structs.replace(stamp, turn_commit_hash="H-prime"))
            )
        assert (caught.value.session_id, caught.value.turn_id) == ("root", "provider-turn")
        with pytest.raises(RuntimeTurnCommitConflict):  # the stamp names another session
            store.commit_runtime_state(
                commit_at("root", 1).with_turn_commit(msgspec.structs.replace(stamp, session_id="elsewhere"))
            )
        assert load(store).head_revision == 1


def test_d7_unconditional_commit(memory_store: Store) -> None:
    store = memory_store
    assert store.commit_runtime_state(commit_at("root", None)).head_revision == 1
    for revision in range(1, 5):
        store.commit_runtime_state(commit_at("root", revision))
    assert load(store).head_revision == 5

    assert store.commit_runtime_state(commit_at("root", None)).head_revision == 6
    with pytest.raises(HeadRevisionConflict) as caught:
        store.commit_runtime_state(commit_at("root", 3))
    assert (caught.value.expected, caught.value.actual) == (3, 6)
    assert load(store).head_revision == 6


# ---------------------------------------------------------------------------
# D-8 / E-6. Attachment write-ahead manifest


def _committed_at(path: Path, attachment_id: str) -> Any:
    return raw_scalar(path, "SELECT committed_at_ms FROM attachment_manifest WHERE attachment_id = ?", (attachment_id,))


def test_d8_attachment_stamp_is_first_wins(clocked_store: Store, clock: ManualClock, db_path: Path) -> None:
    store = clocked_store
    for attachment_id, session_id in (("att-1", "root"), ("att-2", "root"), ("att-3", "root")):
        store.record_intent(
            AttachmentIntent(
                attachment_id=attachment_id,
                session_id=session_id,
                canonical_uri=f"sha256:{attachment_id}",
                intent_at_epoch_ms=100,
            )
        )
    first_stamp = clock()
    assert store.commit_refs("root", ["att-1"]) == 1
    clock.advance(5_000)
    assert store.commit_refs("root", ["att-1"]) == 0
    assert _committed_at(db_path, "att-1") == first_stamp

    assert store.commit_refs("other-session", ["att-2"]) == 0
    assert _committed_at(db_path, "att-2") is None
    assert store.commit_refs("root", ["never-recorded"]) == 0
    assert raw_scalar(db_path, "SELECT count(*) FROM attachment_manifest") == 3

    clock.advance(5_000)
    commit_stamp = clock()
    store.commit_runtime_state(commit_at("root", 0).with_committed_attachments(["att-3", "att-1"]))
    assert _committed_at(db_path, "att-3") == commit_stamp
    assert _committed_at(db_path, "att-1") == first_stamp
    assert [e.attachment_id for e in store.list_uncommitted(1_000)] == ["att-2"]


def test_e6_attachment_manifest(memory_store: Store) -> None:
    store = memory_store
    for attachment_id in ("manual", "runtime", "orphan"):
        store.record_intent(
            AttachmentIntent(
                attachment_id=attachment_id,
                session_id="root",
                canonical_uri=f"sha256:{attachment_id}",
                intent_at_epoch_ms=100,
            )
        )
    assert len(store.list_uncommitted(200)) == 3
    assert len(store.list_uncommitted(100)) == 3  # inclusive bound
    assert store.list_uncommitted(99) == []

    store.commit_refs("root", ["manual"])
    store.commit_runtime_state(commit_at("root", 0).with_committed_attachments(["runtime"]))

    remaining = store.list_uncommitted(200)
    assert [e.attachment_id for e in remaining] == ["orphan"]
    assert remaining[0].committed_at_epoch_ms is None
    assert remaining[0].canonical_uri == "sha256:orphan"
    assert remaining[0].intent_at_epoch_ms == 100
    store.forget("orphan")
    assert store.list_uncommitted(200) == []


# ---------------------------------------------------------------------------
# D-9 / D-10. Factory names and the schema initialisation matrix


@pytest.mark.parametrize(
    ("session_id", "file_name"),
    [
        ("../weird/session", "weird_session-7a2d2bada3f30bfe.db"),
        ("chat/alpha", "chat_alpha-d8d20168f855065d.db"),
        ("root", "root-4813494d137e1631.db"),
        ("", "session-e3b0c44298fc1c14.db"),
        ("___", "session-bda251550bf0478f.db"),
        ("héllo wörld", "h_llo_w_rld-a1003f7d04a41157.db"),
        ("delete/me", "delete_me-cc812727fc741128.db"),
        ("a" * 100, "a" * 80 + "-2816597888e4a0d3.db"),
    ],
)
def test_d9_factory_name_vectors(tmp_path: Path, session_id: str, file_name: str) -> None:
    assert SqliteSessionStoreFactory(tmp_path).path_for_session(session_id) == tmp_path / file_name


def _assert_is_store_file(path: Path) -> None:
    assert raw_scalar(path, "PRAGMA user_version") == 3
    assert raw_scalar(path, "PRAGMA application_id") == STORE_APPLICATION_ID


@pytest.mark.parametrize("how", ["zero_byte_file", "sqlite_without_objects"])
def test_d10_empty_file_is_initialised(db_path: Path, how: str) -> None:
    if how == "zero_byte_file":
        db_path.write_bytes(b"")
    else:
        with closing(sqlite3.connect(db_path)) as conn:
            conn.execute("PRAGMA user_version = 0")
    with Store.open(db_path) as store:
        assert store.commit_runtime_state(commit_at("root", 0)).head_revision == 1
    _assert_is_store_file(db_path)


def test_d10_version_3_file_missing_a_table_is_repaired(db_path: Path) -> None:
    with Store.open(db_path) as store:
        store.commit_runtime_state(replace_commit(0, [node("n1")], "n1"))
    with raw_rw(db_path) as conn:
        conn.execute("DROP TABLE artifact_refs")

    with Store.open(db_path) as store:
        assert store.put_module_artifact("mod", b"module bytes") == sha256(b"module bytes")
        assert store.get_module_artifact("mod") == b"module bytes"
        read = load(store)
        assert (read.head_revision, ids(read)) == (1, ["n1"])


def _foreign_file(path: Path, user_version: int, *, table: bool = True, application_id: int = 0) -> bytes:
    with closing(sqlite3.connect(path)) as conn:
        if table:
            conn.execute("CREATE TABLE foreign_data (id INTEGER PRIMARY KEY, note TEXT)")
            conn.execute("INSERT INTO foreign_data (note) VALUES ('keep me')")
            conn.commit()
        conn.execute(f"PRAGMA user_version = {user_version}")
        conn.execute(f"PRAGMA application_id = {application_id}")
    return path.read_bytes()


def _assert_untouched(path: Path, original: bytes) -> None:
    assert path.read_bytes() == original, "a rejected file must not be modified"
    for suffix in ("-wal", "-shm", "-journal"):
        assert not Path(f"{path}{suffix}").exists(), f"a rejected file got a {suffix} sidecar"


@pytest.mark.parametrize(
    ("user_version", "table", "application_id", "error", "found"),
    [
        (0, True, 0, NotAStoreDatabase, None),  # someone else's tables
        (2, True, 0, UnsupportedSchemaVersion, 2),
        (4, True, 0, UnsupportedSchemaVersion, 4),
        (4, False, STORE_APPLICATION_ID, UnsupportedSchemaVersion, 4),  # whatever the identity
        (3, True, 0x12345678, NotAStoreDatabase, None),  # version 3 of another application
    ],
)
def test_d10_foreign_and_unsupported_files_are_rejected_untouched(
    db_path: Path, user_version: int, table: bool, application_id: int, error: type[StoreError], found: int | None
) -> None:
    original = _foreign_file(db_path, user_version, table=table, application_id=application_id)

    with pytest.raises(error) as caught:
        Store.open(db_path)

    if found is not None:
        assert isinstance(caught.value, UnsupportedSchemaVersion)
        assert (caught.value.expected, caught.value.found) == (3, found)
        assert str(found) in str(caught.value) and "version 3" in str(caught.value)
    _assert_untouched(db_path, original)
    with pytest.raises(error):
        Store.open_readonly(db_path)
    _assert_untouched(db_path, original)


def test_d10_non_sqlite_file_is_rejected_untouched(db_path: Path) -> None:
    original = b"this is a text file, certainly not an SQLite database\n" * 100
    db_path.write_bytes(original)
    with pytest.raises(NotAStoreDatabase):
        Store.open(db_path)
    _assert_untouched(db_path, original)


# ---------------------------------------------------------------------------
# E. Conformance items


def test_e1_declared_durability(db_path: Path) -> None:
    with Store.open(db_path) as store:
        assert store.durability_tier is DurabilityTier.DURABLE
    with Store.memory() as store:
        assert store.durability_tier is DurabilityTier.INLINE


def test_e2_commit_round_trips_agent_frames(db_path: Path) -> None:
    frames = [
        {"frame_id": "frame-1", "session_id": "root", "status": "active", "reason": "initial"},
        {
            "frame_id": "frame-2",
            "session_id": "root",
            "status": "active",
            "reason": {"custom": "plan_mode"},
            "execution_state_snapshot": b"frame-vm",
        },
    ]
    with Store.open(db_path) as store:
        store.commit_runtime_state(
            commit_at(
                "root", 0, agent_frames=frames, current_agent_frame_id="frame-2", execution_state_snapshot=b"frame-vm"
            )
        )
    with Store.open(db_path) as store:
        read = load(store)
    assert read.current_agent_frame_id == "frame-2"
    assert len(read.agent_frames) == 2
    assert read.agent_frames[1]["reason"] == {"custom": "plan_mode"}
    assert read.agent_frames[1]["execution_state_snapshot"] == b"frame-vm"
    assert read.agent_frames == frames
    assert read.checkpoint is not None and read.checkpoint.execution_state == b"frame-vm"


def test_e3_commit_for_a_different_session_is_rejected(memory_store: Store) -> None:
    store = memory_store
    store.commit_runtime_state(commit_at("alpha", 0))
    with pytest.raises(SessionBindingMismatch) as caught:
        store.commit_runtime_state(commit_at("beta", 1))
    assert (caught.value.bound_session_id, caught.value.attempted_session_id) == ("alpha", "beta")
    with pytest.raises(SessionBindingMismatch):
        store.commit_runtime_state(commit_at("beta", None))
    read = load(store)
    assert (read.session_id, read.head_revision) == ("alpha", 1)


def test_e4_load_hydrates_checkpoint_and_usage(memory_store: Store) -> None:
    store = memory_store
    commit = commit_at(
        "hydrated",
        0,
        tool_state_snapshot={"generation": 9, "tools": []},
        plugin_snapshot={"plugins": {}},
        plugin_snapshot_revision=12,
    )
    store.commit_runtime_state(with_usage(commit, ("turn", "gpt", 11, 7, 3, 5)))
    read = load(store)
    assert read.session_id == "hydrated"
    assert read.checkpoint is not None
    assert read.checkpoint.tool_state["generation"] == 9
    assert read.checkpoint.plugin_snapshot_revision == 12
    assert read.token_ledger == [
        TokenLedgerEntry(
            source="turn",
            model="gpt",
            usage=TokenUsage(input_tokens=11, output_tokens=7, cached_input_tokens=3, reasoning_tokens=5),
        )
    ]


def _branchy_graph(store: Store) -> None:
    store.commit_runtime_state(
        replace_commit(
            0,
            [
                node("root-node", role="user"),
                node("left-node", "root-node"),
                node("left-leaf", "left-node", role="user"),
                node("right-leaf", "root-node", role="user"),
            ],
            "left-leaf",
        )
    )


def test_e5_active_path_scope(memory_store: Store) -> None:
    store = memory_store
    _branchy_graph(store)

    full = load(store, SessionReadScope.full_graph())
    assert ids(full) == ["root-node", "left-node", "left-leaf", "right-leaf"]
    assert full.graph.leaf_node_id == "left-leaf"

    active = load(store, SessionReadScope.active_path())
    assert ids(active) == ["root-node", "left-node", "left-leaf"]
    assert active.graph.leaf_node_id == "left-leaf"

    right = load(store, SessionReadScope.active_path("right-leaf"))
    assert ids(right) == ["root-node", "right-leaf"]
    assert right.graph.leaf_node_id == "right-leaf"

    ghost = load(store, SessionReadScope.active_path("ghost"))
    assert ids(ghost) == []
    assert ghost.graph.leaf_node_id == "ghost"


def test_active_path_stops_at_a_tombstoned_ancestor_and_a_tombstoned_leaf_reads_as_none(
    memory_store: Store,
) -> None:
    store = memory_store
    _branchy_graph(store)
    store.tombstone_nodes(["left-node"])
    assert ids(load(store, SessionReadScope.active_path())) == ["left-leaf"]

    store.tombstone_nodes(["left-leaf"])
    full = load(store)
    assert full.graph.leaf_node_id is None
    assert ids(full) == ["root-node", "right-leaf"]
    active = load(store, SessionReadScope.active_path())
    assert (ids(active), active.graph.leaf_node_id) == ([], None)
    explicit = load(store, SessionReadScope.active_path("left-leaf"))
    assert (ids(explicit), explicit.graph.leaf_node_id) == ([], None)


def test_e7_session_metadata_round_trip(db_path: Path) -> None:
    root_meta = meta(session_name="Root chat", created_at="2024-05-01T12:00:00Z", model="m-1", cwd="/home/u/p")
    with Store.open(db_path) as store:
        assert store.load_session_meta() is None
        store.save_session_meta(root_meta)
    with Store.open(db_path) as store:
        assert store.load_session_meta() == root_meta
        child = meta(cwd=None, relation=SessionRelation.child("parent-1", caused_by={"tool_call": "c-7"}))
        store.save_session_meta(child)
        assert store.load_session_meta() == child


def test_e8_tombstone_vacuum_gc(memory_store: Store) -> None:
    store = memory_store
    store.commit_runtime_state(replace_commit(0, [node("node-live"), node("node-delete", "node-live")], "node-delete"))
    assert store.load_node("node-delete") == node("node-delete", "node-live")

    assert store.tombstone_nodes(["node-delete", "never-existed"]) == 1
    assert store.load_node("node-delete") is None
    read = load(store)
    assert ids(read) == ["node-live"]
    assert read.graph.leaf_node_id is None, "a tombstoned leaf reads as no leaf"
    assert store.graph_node_count() == 1

    assert store.vacuum().removed_node_count == 1
    assert store.vacuum().removed_node_count == 0
    assert store.gc_unreachable().skipped_reason is None
    assert ids(load(store)) == ["node-live"]


def test_e9_survives_reopen(db_path: Path) -> None:
    with Store.open(db_path) as store:
        store.save_session_meta(meta(session_name="Persistent"))
        store.commit_runtime_state(commit_at("root", 0, tool_state_snapshot={"generation": 77}))
        store.record_intent(
            AttachmentIntent(attachment_id="att", session_id="root", canonical_uri="sha256:att", intent_at_epoch_ms=5)
        )
        # A second store on the same file sees it all while the first is still open ...
        with Store.open(db_path) as second:
            _assert_persistent_state(second)
    # ... and so does a read-only store after both closed.
    with Store.open_readonly(db_path) as reader:
        _assert_persistent_state(reader)


def _assert_persistent_state(store: Store) -> None:
    stored_meta = store.load_session_meta()
    assert stored_meta is not None and stored_meta.session_name == "Persistent"
    checkpoint = load(store).checkpoint
    assert checkpoint is not None and checkpoint.tool_state == {"generation": 77}
    assert [e.attachment_id for e in store.list_uncommitted(10)] == ["att"]


def test_e12_schema_content(db_path: Path) -> None:
    Store.open(db_path).close()
    with raw_ro(db_path) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "runtime_turn_commits" in tables
    assert "runtime_turn_checkpoints" not in tables
    assert "runtime_effect_journal" not in tables


# ---------------------------------------------------------------------------
# Decision 6: the usage ledger


def test_usage_ledger_drops_only_all_zero_entries_and_totals_in_first_appearance_order(db_path: Path) -> None:
    with Store.open(db_path) as store:
        store.commit_runtime_state(
            with_usage(
                commit_at("root", 0),
                ("turn", "m1", 1, 2, 0, 0),
                ("turn", "m2", 0, 0, 5, 0),  # cached input only: kept
                ("sub", "m1", 0, 0, 0, 0),  # all four zero: dropped
            )
        )
        store.commit_runtime_state(
            with_usage(commit_at("root", 1), ("sub", "m1", 3, 0, 0, 1), ("turn", "m1", 10, 0, 0, 0))
        )
    with Store.open(db_path) as store:
        ledger = load(store).token_ledger
    assert [(e.source, e.model) for e in ledger] == [("turn", "m1"), ("turn", "m2"), ("sub", "m1")]
    assert [e.usage for e in ledger] == [
        TokenUsage(input_tokens=11, output_tokens=2),
        TokenUsage(cached_input_tokens=5),
        TokenUsage(input_tokens=3, reasoning_tokens=1),
    ]


# ---------------------------------------------------------------------------
# Decision 7: graph upserts and the cycle guard


def test_re_appending_a_node_replaces_it_and_clears_its_tombstone_in_place(memory_store: Store) -> None:
    store = memory_store
    store.commit_runtime_state(replace_commit(0, [node("n1", text="original"), node("n2", "n1")], "n2"))
    store.tombstone_nodes(["n1"])
    assert store.graph_node_count() == 1

    store.commit_runtime_state(append_commit(1, [node("n1", text="replaced"), node("n3", "n2")], "n3"))

    read = load(store)
    assert ids(read) == ["n1", "n2", "n3"], "the re-appended node keeps its position"
    assert read.graph.nodes[0].payload["parts"][0]["text"] == "replaced"
    assert store.load_node("n1") == node("n1", text="replaced")
    assert store.graph_node_count() == 3
    assert ids(load(store, SessionReadScope.active_path())) == ["n1", "n2", "n3"]


def test_active_path_walk_terminates_on_parent_cycles(memory_store: Store) -> None:
    store = memory_store
    store.commit_runtime_state(replace_commit(0, [node("a"), node("b", "a"), node("c", "b")], "c"))
    # Re-append "a" with "c" as its parent: a -> c -> b -> a.
    store.commit_runtime_state(append_commit(1, [node("a", "c")], "c"))

    read = run_with_timeout(lambda: load(store, SessionReadScope.active_path()))
    walked = ids(read)
    assert sorted(walked) == ["a", "b", "c"], "each node of the cycle appears exactly once"
    assert walked[-1] == "c"

    store.commit_runtime_state(append_commit(2, [node("self", "self")], "self"))
    assert ids(run_with_timeout(lambda: load(store, SessionReadScope.active_path()))) == ["self"]


# ---------------------------------------------------------------------------
# Picker info (maintained incrementally)


def _first_user_parts() -> list[dict[str, Any]]:
    return [
        {"type": "text", "text": "   "},
        {"type": "text", "text": "Hello"},
        {"type": "tool_call", "name": "search", "arguments": {"q": "x"}},
        {"type": "image", "blob_ref": "img-1"},
        {"type": "text", "text": "World"},
        {"type": "tool_result", "text": "tool output must not show"},
    ]


def test_picker_info_first_user_message_and_count(db_path: Path) -> None:
    with Store.open(db_path) as store:
        store.commit_runtime_state(
            replace_commit(
                0,
                [
                    node("s1", role="system", text="system prompt"),
                    node("a1", "s1", text="assistant greeting"),
                    user_node("u1", _first_user_parts(), "a1"),
                    node("u2", "u1", role="user", text="second question"),
                ],
                "u2",
            )
        )
        assert store.load_picker_info() is None, "no picker info without session metadata"
        store.save_session_meta(meta(cwd="/w", relation=SessionRelation.child("p")))

        info = store.load_picker_info()
        assert info is not None
        assert info.first_user_message == "Hello\n\n[Image attached]\n\nWorld"
        assert info.user_message_count == 2
        assert (info.session_id, info.cwd, info.relation) == ("root", "/w", SessionRelation.child("p"))

        store.tombstone_nodes(["u1"])
        info = store.load_picker_info()
        assert info is not None and (info.first_user_message, info.user_message_count) == ("second question", 1)

        store.commit_runtime_state(append_commit(1, [node("u1", "a1", role="user", text="Hello again")], "u2"))
        info = store.load_picker_info()
        assert info is not None and (info.first_user_message, info.user_message_count) == ("Hello again", 2)

        store.commit_runtime_state(append_commit(2, [node("u2", "u1", role="assistant", text="now a reply")], "u2"))
        info = store.load_picker_info()
        assert info is not None and (info.first_user_message, info.user_message_count) == ("Hello again", 1)

        store.commit_runtime_state(
            replace_commit(
                3,
                [
                    node("x1", text="assistant first"),
                    node("x2", "x1", role="user", text="fresh start"),
                    node("x3", "x2", role="user", text="more"),
                ],
                "x3",
            )
        )
        store.vacuum()
    with Store.open_readonly(db_path) as reader:
        info = reader.load_picker_info()
    assert info is not None and (info.first_user_message, info.user_message_count) == ("fresh start", 2)


# ---------------------------------------------------------------------------
# copy_session_into (fork)


def _rich_source(store: Store) -> dict[str, str]:
    first = store.commit_runtime_state(
        with_usage(
            replace_commit(
                0,
                [node("u1", role="user", text="question"), node("a1", "u1"), node("t1", "a1")],
                "a1",
                config=MODEL_CONFIG,
                tool_state_snapshot={"generation": 1},
            ),
            ("turn", "m", 5, 6, 7, 8),
        )
    )
    store.tombstone_nodes(["t1"])
    second = store.commit_runtime_state(
        with_usage(
            append_commit(
                1,
                [node("u2", "a1", role="user", text="follow-up")],
                "u2",
                config=MODEL_CONFIG,
                agent_frames=[{"frame_id": "f1"}],
                current_agent_frame_id="f1",
                tool_state_snapshot={"generation": 2},
                plugin_snapshot={"plugins": {"p": 1}},
                plugin_snapshot_revision=3,
                execution_state_snapshot=b"exec",
            ),
            ("turn", "m", 1, 1, 1, 1),
            ("sub", "m", 2, 0, 0, 0),
        )
    )
    store.put_module_artifact("mod:a", b"module a")
    orphan = store.put_blob(b"not live")
    return {"old_checkpoint": first.checkpoint_ref, "checkpoint": second.checkpoint_ref, "orphan": orphan}


def test_copy_session_into_forks_head_graph_usage_and_live_blobs(tmp_path: Path) -> None:
    with Store.open(tmp_path / "source.db") as source, Store.open(tmp_path / "fork.db", GRACE0) as target:
        refs = _rich_source(source)
        source_read = load(source)

        source.copy_session_into(target)

        assert load(target) == source_read
        for scope in (SessionReadScope.active_path(), SessionReadScope.active_path("a1")):
            assert load(target, scope) == load(source, scope)
        assert target.graph_node_count() == source.graph_node_count() == 3
        assert target.load_node("t1") is None, "tombstoned nodes stay tombstoned"
        assert target.get_module_artifact("mod:a") == b"module a"
        assert target.get_blob(refs["orphan"]) is None
        assert target.get_blob(refs["old_checkpoint"]) is None

        # Every copied blob is live in the target: GC (grace 0) deletes nothing and the head still hydrates.
        assert target.gc_unreachable().deleted_blob_count == 0
        assert load(target) == source_read
        target.save_session_meta(meta())
        info = target.load_picker_info()
        assert info is not None and (info.first_user_message, info.user_message_count) == ("question", 2)

        # The fork continues independently.
        assert target.commit_runtime_state(commit_at("root", 2)).head_revision == 3
        assert load(source) == source_read


def test_copy_session_into_rebinds_and_refuses_a_non_empty_target(tmp_path: Path) -> None:
    with (
        Store.open(tmp_path / "source.db") as source,
        Store.open(tmp_path / "fork.db") as target,
        Store.open(tmp_path / "busy.db") as busy,
    ):
        _rich_source(source)
        source.copy_session_into(target, session_id="forked")
        read = load(target)
        assert (read.session_id, read.head_revision) == ("forked", 2)
        with pytest.raises(SessionBindingMismatch):
            target.commit_runtime_state(commit_at("root", 2))
        assert target.commit_runtime_state(commit_at("forked", 2)).head_revision == 3

        busy.commit_runtime_state(replace_commit(0, [node("mine")], "mine"))
        before = load(busy)
        with pytest.raises(InvalidInput):
            source.copy_session_into(busy)
        assert load(busy) == before

    with Store.memory() as empty, Store.memory() as other, pytest.raises(InvalidInput):
        empty.copy_session_into(other)


# ---------------------------------------------------------------------------
# Decision 3: load_session reads one snapshot


def test_load_session_reads_one_snapshot_while_another_connection_commits(db_path: Path) -> None:
    min_commits, max_commits, wanted_overlap = 100, 3000, 25
    stop = threading.Event()
    problems: list[str] = []
    seen_revisions: set[int] = set()

    def write() -> int:
        """Commit one node (and one usage unit) per revision until the reader has watched enough of them."""
        revision = 0
        with Store.open(db_path) as writer:
            while revision < max_commits and (revision < min_commits or len(seen_revisions) < wanted_overlap):
                revision += 1
                new = node(f"n{revision}", f"n{revision - 1}" if revision > 1 else None)
                if revision == 1:
                    commit = replace_commit(0, [new], "n1", turn_state={"turn": 1})
                else:
                    commit = append_commit(revision - 1, [new], new.node_id, turn_state={"turn": revision})
                writer.commit_runtime_state(with_usage(commit, ("turn", "m", 1, 0, 0, 0)))
        return revision

    def read() -> None:
        with Store.open(db_path) as reader:
            while not stop.is_set():
                for scope in (SessionReadScope.full_graph(), SessionReadScope.active_path()):
                    got = reader.load_session(scope)
                    if got is None:
                        continue
                    revision = got.head_revision
                    seen_revisions.add(revision)
                    checkpoint_turn = got.checkpoint.turn_state if got.checkpoint else None
                    observed = (
                        len(got.graph.nodes),
                        got.graph.leaf_node_id,
                        checkpoint_turn,
                        got.token_ledger[0].usage.input_tokens if got.token_ledger else 0,
                    )
                    expected = (revision, f"n{revision}", {"turn": revision}, revision)
                    if observed != expected:
                        problems.append(f"{scope.kind} at revision {revision}: {observed} != {expected}")

    Store.open(db_path).close()  # create the file before the race
    reader_thread = threading.Thread(target=read)
    reader_thread.start()
    try:
        commits = write()
    finally:
        stop.set()
        reader_thread.join(timeout=30)
    assert not reader_thread.is_alive()
    assert problems == [], "torn reads:\n" + "\n".join(problems[:10])
    assert len(seen_revisions) >= wanted_overlap, f"the reader barely overlapped the writer: {sorted(seen_revisions)}"
    with Store.open(db_path) as store:
        assert len(load(store).graph.nodes) == commits


def test_file_store_files_are_private(db_path: Path) -> None:
    previous = os.umask(0o022)  # a permissive umask: privacy must come from the store itself
    try:
        with Store.open(db_path) as store:
            store.commit_runtime_state(commit_at("root", 0))
            for path in (db_path, Path(f"{db_path}-wal"), Path(f"{db_path}-shm")):
                assert path.exists()
                assert os.stat(path).st_mode & 0o077 == 0, f"{path.name} is accessible to others"
    finally:
        os.umask(previous)

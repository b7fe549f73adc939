"""Hostile inputs: every one is a typed InvalidInput naming the field, and nothing is written."""

from __future__ import annotations

import sqlite3
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from lash_store import Store
from lash_store.errors import InvalidInput, StoreError
from lash_store.model import (
    AttachmentIntent,
    BlobArtifactDescriptor,
    GraphDelta,
    HydratedCheckpoint,
    QueuedWorkClaimBoundary,
    QueuedWorkCompletion,
    RuntimeCommit,
    SessionGraph,
    SessionMeta,
    SessionNode,
    TokenLedgerEntry,
    TokenUsage,
    TurnCommitStamp,
)
from tests.helpers import commit_at, draft, message

MAX_I64 = 2**63 - 1


# ---------------------------------------------------------------------------
# a seeded file store and a full snapshot of its database


def snapshot(path: Path) -> list[str]:
    """Every schema object and row of the database, through an independent connection."""
    conn = sqlite3.connect(path)
    try:
        dump = list(conn.iterdump())
        dump.append(f"user_version={conn.execute('PRAGMA user_version').fetchone()[0]}")
        return dump
    finally:
        conn.close()


@pytest.fixture
def seeded(db_path: Path) -> Iterator[Store]:
    """A file store with a head at revision 1, a blob, an intent, a module artifact and a queued batch."""
    with Store.open(db_path) as store:
        graph = SessionGraph(nodes=[message("u1", "user", "hello")], leaf_node_id="u1")
        store.commit_runtime_state(commit_at("root", 0, session_graph=graph, turn_state={"turn": 1}))
        store.put_blob(b"existing blob")
        store.record_intent(
            AttachmentIntent(attachment_id="att-1", session_id="root", canonical_uri="file:///a", intent_at_epoch_ms=10)
        )
        store.put_module_artifact("mod:1", b"module")
        store.enqueue_queued_work(draft("root", "queued"))
        store.save_session_meta(
            SessionMeta(session_id="root", session_name="root", created_at="2024-01-01T00:00:00+00:00", model="m")
        )
        yield store


def append(*nodes: SessionNode, leaf: str | None = None) -> RuntimeCommit:
    """A CAS commit on top of revision 1 that appends ``nodes``."""
    delta = GraphDelta.append(list(nodes), leaf if leaf is not None else (nodes[-1].node_id if nodes else None))
    return msgspec.structs.replace(commit_at("root", 1), graph=delta)


def with_fields(**fields: Any) -> RuntimeCommit:
    return msgspec.structs.replace(commit_at("root", 1), **fields)


def node(node_id: Any, payload: Any = None, **extra: Any) -> SessionNode:
    return SessionNode(node_id=node_id, payload=payload if payload is not None else {"role": "user"}, **extra)


def nested_lists(depth: int) -> Any:
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value


def list_depth(value: Any) -> int:
    """How many single-element lists wrap an empty list (the shape ``nested_lists`` builds)."""
    depth = 0
    while value != []:
        assert isinstance(value, list) and len(value) == 1
        value, depth = value[0], depth + 1
    return depth


def nested_dicts(depth: int) -> Any:
    value: Any = {}
    for _ in range(depth):
        value = {"k": value}
    return value


def completion(**fields: Any) -> QueuedWorkCompletion:
    base: dict[str, Any] = {
        "session_id": "root",
        "claim_id": "qwc:1",
        "lease_token": "token",
        "batch_ids": ["qwb:1"],
        "fencing_token": 1,
    }
    return QueuedWorkCompletion(**{**base, **fields})


def intent(**fields: Any) -> AttachmentIntent:
    base: dict[str, Any] = {
        "attachment_id": "att-2",
        "session_id": "root",
        "canonical_uri": "file:///b",
        "intent_at_epoch_ms": 20,
    }
    return AttachmentIntent(**{**base, **fields})


def meta(**fields: Any) -> SessionMeta:
    base: dict[str, Any] = {
        "session_id": "root",
        "session_name": "name",
        "created_at": "2024-01-01T00:00:00+00:00",
        "model": "m",
    }
    return SessionMeta(**{**base, **fields})


def usage(**counters: int) -> RuntimeCommit:
    entry = TokenLedgerEntry(source="s", model="m", usage=TokenUsage(**counters))
    return with_fields(usage_deltas=[entry])


# ---------------------------------------------------------------------------
# the table: (id, operation, substring the error's ``what`` must contain)

Op = Callable[[Store], object]

CASES: list[tuple[str, Op, str]] = [
    # graph nodes
    ("node-id-empty", lambda s: s.commit_runtime_state(append(node(""))), "node_id"),
    ("node-id-int", lambda s: s.commit_runtime_state(append(node(42), leaf="x")), "node_id"),
    ("node-id-none", lambda s: s.commit_runtime_state(append(node(None), leaf="x")), "node_id"),
    ("node-id-bytes", lambda s: s.commit_runtime_state(append(node(b"n1"), leaf="x")), "node_id"),
    ("node-id-lone-surrogate", lambda s: s.commit_runtime_state(append(node("\ud800"), leaf="x")), "node_id"),
    ("node-id-nul", lambda s: s.commit_runtime_state(append(node("a\x00b"), leaf="x")), "node_id"),
    ("parent-id-surrogate", lambda s: s.commit_runtime_state(append(node("n1", parent_node_id="\udfff"))), "parent"),
    ("parent-id-empty", lambda s: s.commit_runtime_state(append(node("n1", parent_node_id=""))), "parent"),
    ("duplicate-node-in-append", lambda s: s.commit_runtime_state(append(node("d1"), node("d1"))), "node_id"),
    (
        "duplicate-node-in-replace",
        lambda s: s.commit_runtime_state(
            with_fields(graph=GraphDelta.replace_full(SessionGraph(nodes=[node("r"), node("r")], leaf_node_id="r")))
        ),
        "node_id",
    ),
    ("payload-object", lambda s: s.commit_runtime_state(append(node("p1", payload=object()))), "payload"),
    ("payload-function", lambda s: s.commit_runtime_state(append(node("p1", payload={"f": len}))), "payload"),
    ("payload-int-too-big", lambda s: s.commit_runtime_state(append(node("p1", payload={"n": 2**70}))), "payload"),
    ("node-not-a-node", lambda s: s.commit_runtime_state(append({"node_id": "x"}, leaf="x")), "nodes"),  # type: ignore[arg-type]
    ("graph-kind-unknown", lambda s: s.commit_runtime_state(with_fields(graph=GraphDelta(kind="weird"))), "graph"),  # type: ignore[arg-type]
    ("leaf-empty", lambda s: s.commit_runtime_state(with_fields(graph=GraphDelta.unchanged(""))), "leaf"),
    ("graph-not-a-delta", lambda s: s.commit_runtime_state(with_fields(graph="append")), "graph"),
    # commit fields
    ("session-id-empty", lambda s: s.commit_runtime_state(commit_at("", 1)), "session_id"),
    ("session-id-int", lambda s: s.commit_runtime_state(with_fields(session_id=7)), "session_id"),
    ("revision-negative", lambda s: s.commit_runtime_state(commit_at("root", -1)), "expected_head_revision"),
    ("revision-bool", lambda s: s.commit_runtime_state(commit_at("root", True)), "expected_head_revision"),  # type: ignore[arg-type]
    ("revision-float", lambda s: s.commit_runtime_state(commit_at("root", 1.0)), "expected_head_revision"),  # type: ignore[arg-type]
    ("revision-str", lambda s: s.commit_runtime_state(commit_at("root", "1")), "expected_head_revision"),  # type: ignore[arg-type]
    ("revision-too-big", lambda s: s.commit_runtime_state(commit_at("root", 2**63)), "expected_head_revision"),
    ("config-unencodable", lambda s: s.commit_runtime_state(with_fields(config={"x": object()})), "config"),
    (
        "turn-state-unencodable",
        lambda s: s.commit_runtime_state(commit_at("root", 1, turn_state=object())),
        "turn_state",
    ),
    (
        "tool-state-unencodable",
        lambda s: s.commit_runtime_state(commit_at("root", 1, tool_state_snapshot={"s": object()})),
        "tool_state",
    ),
    (
        "execution-state-not-bytes",
        lambda s: s.commit_runtime_state(commit_at("root", 1, execution_state_snapshot="text")),  # type: ignore[arg-type]
        "execution_state",
    ),
    (
        "plugin-revision-negative",
        lambda s: s.commit_runtime_state(commit_at("root", 1, plugin_snapshot_revision=-3)),
        "plugin_snapshot_revision",
    ),
    ("usage-too-big", lambda s: s.commit_runtime_state(usage(input_tokens=2**63)), "input_tokens"),
    ("usage-too-small", lambda s: s.commit_runtime_state(usage(output_tokens=-(2**63) - 1)), "output_tokens"),
    ("usage-float", lambda s: s.commit_runtime_state(usage(reasoning_tokens=1.5)), "reasoning_tokens"),  # type: ignore[arg-type]
    (
        "usage-source-not-str",
        lambda s: s.commit_runtime_state(
            with_fields(usage_deltas=[TokenLedgerEntry(source=3, model="m", usage=TokenUsage(input_tokens=1))])  # type: ignore[arg-type]
        ),
        "source",
    ),
    (
        "stamp-turn-id-empty",
        lambda s: s.commit_runtime_state(
            commit_at("root", 1).with_turn_commit(TurnCommitStamp(session_id="root", turn_id="", turn_commit_hash="h"))
        ),
        "turn_id",
    ),
    (
        "stamp-session-empty",
        lambda s: s.commit_runtime_state(
            commit_at("root", 1).with_turn_commit(TurnCommitStamp(session_id="", turn_id="t", turn_commit_hash="h"))
        ),
        "session_id",
    ),
    (
        "completion-batch-ids-empty",
        lambda s: s.commit_runtime_state(commit_at("root", 1).completing_queue_claim(completion(batch_ids=[]))),
        "batch_ids",
    ),
    (
        "completion-batch-id-empty",
        lambda s: s.commit_runtime_state(commit_at("root", 1).completing_queue_claim(completion(batch_ids=[""]))),
        "batch_ids",
    ),
    (
        "completion-claim-id-empty",
        lambda s: s.commit_runtime_state(commit_at("root", 1).completing_queue_claim(completion(claim_id=""))),
        "claim_id",
    ),
    (
        "completion-fence-negative",
        lambda s: s.commit_runtime_state(commit_at("root", 1).completing_queue_claim(completion(fencing_token=-1))),
        "fencing_token",
    ),
    (
        "commit-attachment-id-empty",
        lambda s: s.commit_runtime_state(commit_at("root", 1).with_committed_attachments([""])),
        "committed_attachment_ids",
    ),
    ("commit-not-a-commit", lambda s: s.commit_runtime_state({"session_id": "root"}), "commit"),  # type: ignore[arg-type]
    # blobs and checkpoints
    (
        "descriptor-unknown-kind",
        lambda s: s.put_artifact_blob(BlobArtifactDescriptor(kind="nope"), b"x"),  # type: ignore[arg-type]
        "descriptor",
    ),
    ("descriptor-not-a-descriptor", lambda s: s.put_artifact_blob("tool_state", b"x"), "descriptor"),  # type: ignore[arg-type]
    ("put-blob-str", lambda s: s.put_blob("not bytes"), "content"),  # type: ignore[arg-type]
    ("put-blob-int", lambda s: s.put_blob(12), "content"),  # type: ignore[arg-type]
    ("put-blob-list", lambda s: s.put_blob([1, 2, 3]), "content"),  # type: ignore[arg-type]
    (
        "artifact-blob-str",
        lambda s: s.put_artifact_blob(BlobArtifactDescriptor.tool_state_snapshot(), "text"),  # type: ignore[arg-type]
        "content",
    ),
    ("get-blob-empty-ref", lambda s: s.get_blob(""), "ref"),
    (
        "put-checkpoint-unencodable",
        lambda s: s.put_checkpoint(HydratedCheckpoint(turn_state={1: object()})),
        "turn_state",
    ),
    (
        "put-checkpoint-bad-exec",
        lambda s: s.put_checkpoint(HydratedCheckpoint(execution_state=[1, 2])),  # type: ignore[arg-type]
        "execution_state",
    ),
    ("put-checkpoint-not-hydrated", lambda s: s.put_checkpoint({"turn_state": 1}), "hydrated"),  # type: ignore[arg-type]
    # attachment manifest
    ("list-uncommitted-negative", lambda s: s.list_uncommitted(-1), "older_than_epoch_ms"),
    ("list-uncommitted-too-big", lambda s: s.list_uncommitted(2**63), "older_than_epoch_ms"),
    ("list-uncommitted-bool", lambda s: s.list_uncommitted(False), "older_than_epoch_ms"),
    ("intent-time-negative", lambda s: s.record_intent(intent(intent_at_epoch_ms=-5)), "intent_at_epoch_ms"),
    ("intent-time-too-big", lambda s: s.record_intent(intent(intent_at_epoch_ms=2**63)), "intent_at_epoch_ms"),
    ("intent-time-float", lambda s: s.record_intent(intent(intent_at_epoch_ms=1.5)), "intent_at_epoch_ms"),
    ("intent-attachment-id-empty", lambda s: s.record_intent(intent(attachment_id="")), "attachment_id"),
    ("intent-session-id-empty", lambda s: s.record_intent(intent(session_id="")), "session_id"),
    ("commit-refs-empty-id", lambda s: s.commit_refs("root", ["att-1", ""]), "attachment_ids"),
    ("commit-refs-string", lambda s: s.commit_refs("root", "att-1"), "attachment_ids"),
    ("commit-refs-empty-session", lambda s: s.commit_refs("", ["att-1"]), "session_id"),
    ("forget-empty", lambda s: s.forget(""), "attachment_id"),
    # module artifacts
    ("module-ref-empty", lambda s: s.put_module_artifact("", b"code"), "module_ref"),
    ("module-ref-int", lambda s: s.put_module_artifact(5, b"code"), "module_ref"),  # type: ignore[arg-type]
    ("module-data-str", lambda s: s.put_module_artifact("mod:2", "code"), "content"),  # type: ignore[arg-type]
    ("get-module-ref-empty", lambda s: s.get_module_artifact(""), "module_ref"),
    ("forget-module-ref-empty", lambda s: s.forget_module_artifact(""), "module_ref"),
    # metadata
    ("meta-session-id-empty", lambda s: s.save_session_meta(meta(session_id="")), "session_id"),
    ("meta-name-not-str", lambda s: s.save_session_meta(meta(session_name=None)), "session_name"),
    ("meta-relation-wrong", lambda s: s.save_session_meta(meta(relation="root")), "relation"),
    ("meta-not-a-meta", lambda s: s.save_session_meta({"session_id": "root"}), "meta"),  # type: ignore[arg-type]
    # graph maintenance
    ("tombstone-plain-string", lambda s: s.tombstone_nodes("u1"), "node_ids"),
    ("tombstone-empty-id", lambda s: s.tombstone_nodes(["u1", ""]), "node_ids"),
    ("tombstone-int-id", lambda s: s.tombstone_nodes(["u1", 3]), "node_ids"),
    ("load-node-empty", lambda s: s.load_node(""), "node_id"),
    # queue
    (
        "claim-ttl-negative",
        lambda s: s.claim_ready_queued_work("root", "owner", QueuedWorkClaimBoundary.IDLE, -1, 1),
        "lease_ttl_ms",
    ),
    (
        "claim-ttl-too-big",
        lambda s: s.claim_ready_queued_work("root", "owner", QueuedWorkClaimBoundary.IDLE, 2**63, 1),
        "lease_ttl_ms",
    ),
    (
        "claim-max-negative",
        lambda s: s.claim_ready_queued_work("root", "owner", QueuedWorkClaimBoundary.IDLE, 1000, -1),
        "max_batches",
    ),
    (
        "claim-owner-empty",
        lambda s: s.claim_ready_queued_work("root", "", QueuedWorkClaimBoundary.IDLE, 1000, 1),
        "owner_id",
    ),
    (
        "claim-by-ids-string",
        lambda s: s.claim_ready_queued_work_by_batch_ids("root", "o", QueuedWorkClaimBoundary.IDLE, 1000, "qwb:1"),
        "batch_ids",
    ),
    ("enqueue-empty-session", lambda s: s.enqueue_queued_work(draft("", "hi")), "session_id"),
    (
        "enqueue-available-negative",
        lambda s: s.enqueue_queued_work(draft("root", "hi").with_available_at_ms(-1)),
        "available_at_ms",
    ),
    ("cancel-empty-batch", lambda s: s.cancel_queued_work_batch("root", ""), "batch_id"),
    ("list-queue-empty-session", lambda s: s.list_queued_work(""), "session_id"),
]


@pytest.mark.parametrize(("operation", "field"), [pytest.param(op, f, id=i) for i, op, f in CASES])
def test_bad_input_is_rejected_and_nothing_is_written(seeded: Store, db_path: Path, operation: Op, field: str) -> None:
    before = snapshot(db_path)
    read_before = seeded.load_session()
    with pytest.raises(InvalidInput) as info:
        operation(seeded)
    err = info.value
    assert isinstance(err, ValueError)
    assert isinstance(err, StoreError)
    assert field in err.what, f"error names {err.what!r}, expected it to name {field!r}"
    assert err.what in str(err)
    assert snapshot(db_path) == before
    assert seeded.load_session() == read_before
    # the store is still usable afterwards
    assert seeded.commit_runtime_state(commit_at("root", 1)).head_revision == 2


REQUIRED = {
    "node-id-empty",
    "node-id-int",
    "node-id-lone-surrogate",
    "revision-negative",
    "revision-bool",
    "payload-object",
    "duplicate-node-in-append",
    "graph-kind-unknown",
    "descriptor-unknown-kind",
    "put-blob-str",
    "session-id-empty",
    "usage-too-big",
    "stamp-turn-id-empty",
    "completion-batch-ids-empty",
    "list-uncommitted-negative",
    "list-uncommitted-too-big",
    "intent-time-negative",
    "intent-time-too-big",
    "intent-attachment-id-empty",
    "commit-refs-empty-id",
    "module-ref-empty",
    "meta-session-id-empty",
    "tombstone-plain-string",
}


def test_table_covers_the_required_inputs() -> None:
    ids = [case[0] for case in CASES]
    assert len(set(ids)) == len(ids), "duplicate case ids"
    assert set(ids) >= REQUIRED


# ---------------------------------------------------------------------------
# inputs that are legal and must round-trip instead of failing


def test_set_payload_is_encodable_and_stored_as_a_list(seeded: Store) -> None:
    seeded.commit_runtime_state(append(node("s1", payload={"tags": {3}})))
    stored = seeded.load_node("s1")
    assert stored is not None
    assert stored.payload == {"tags": [3]}


DEEP_PAYLOADS = {
    "lists-10000": lambda: nested_lists(10_000),
    "lists-200000": lambda: nested_lists(200_000),
    "dicts-50000": lambda: nested_dicts(50_000),
}


@pytest.mark.parametrize("make", DEEP_PAYLOADS.values(), ids=DEEP_PAYLOADS.keys())
def test_deeply_nested_payload_is_a_typed_error_or_stored(
    seeded: Store, db_path: Path, make: Callable[[], Any]
) -> None:
    payload = make()
    before = snapshot(db_path)
    try:
        seeded.commit_runtime_state(append(node("deep", payload=payload)))
    except InvalidInput as exc:
        assert "payload" in exc.what
        assert snapshot(db_path) == before
        read = seeded.load_session()
        assert read is not None and read.head_revision == 1
    else:
        loaded = seeded.load_node("deep")
        assert loaded is not None and loaded.payload == payload
    unconditional = msgspec.structs.replace(commit_at("root", None), graph=GraphDelta.unchanged("u1"))
    assert seeded.commit_runtime_state(unconditional).head_revision >= 2


def _deepest_accepted(store: Store, top: int) -> int:
    """The deepest list nesting ``commit_runtime_state`` accepts (binary search; rejects write nothing)."""
    low, high = 0, top
    while low < high:
        mid = (low + high + 1) // 2
        delta = GraphDelta.append([node(f"depth-{mid}", payload=nested_lists(mid))], "u1")
        try:
            store.commit_runtime_state(msgspec.structs.replace(commit_at("root", None), graph=delta))
        except InvalidInput:
            high = mid - 1
        else:
            low = mid
    return low


def test_whatever_commit_accepts_can_be_loaded_again(memory_store: Store) -> None:
    """A payload the store accepts must stay loadable, even from a deeper call stack than the writer's.

    Otherwise an accepted commit makes the whole session unloadable (``CorruptData``) later.
    """
    graph = SessionGraph(nodes=[message("u1", "user", "hello")], leaf_node_id="u1")
    memory_store.commit_runtime_state(commit_at("root", 0, session_graph=graph))
    accepted: dict[str, int] = {}

    def writer() -> None:  # a shallow stack, like a runtime's worker thread
        accepted["depth"] = _deepest_accepted(memory_store, sys.getrecursionlimit() + 50)

    thread = threading.Thread(target=writer)
    thread.start()
    thread.join()
    depth = accepted["depth"]
    assert depth > 0

    def nested_call(levels: int) -> SessionNode | None:  # a reader a few dozen frames deeper
        if levels == 0:
            return memory_store.load_node(f"depth-{depth}")
        return nested_call(levels - 1)

    loaded = nested_call(100)
    assert loaded is not None
    assert list_depth(loaded.payload) == depth  # compared iteratively: == itself would recurse too deep
    assert memory_store.load_session() is not None

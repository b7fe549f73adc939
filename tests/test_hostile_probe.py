"""A table-driven probe of every public entry point with hostile arguments.

For every case the required outcome is ``lash_store.errors.InvalidInput`` (never a raw ``TypeError``,
``AttributeError``, ``UnicodeEncodeError``, ``OverflowError`` or a ``ValueError`` that is not
``InvalidInput``, never ``CorruptData``), its ``.what`` names the field, nothing was written (a full dump
of the database through an independent ``sqlite3`` connection is unchanged) and no file was left behind
(the directory listing is unchanged).  Iterables that can be consumed only once must either be rejected
or have every item applied: never consumed by validation and then silently skipped.

Only the public API is used: ``lash_store.Store``, ``SqliteSessionStoreFactory``, ``StoreOptions``,
``lash_store.model``, ``lash_store.errors`` and the ``lash-store`` command, plus raw ``sqlite3``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import math
import multiprocessing
import multiprocessing.connection
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import pytest

from lash_store import AsyncStore, GcPolicy, SqliteSessionStoreFactory, Store, StoreOptions
from lash_store.errors import InvalidInput, StoreError
from lash_store.model import (
    ArtifactKind,
    AttachmentIntent,
    BlobArtifactDescriptor,
    DeliveryPolicy,
    GraphDelta,
    HydratedCheckpoint,
    ImageRefItem,
    MergeKey,
    QueuedWorkBatchDraft,
    QueuedWorkClaim,
    QueuedWorkClaimBoundary,
    QueuedWorkPayload,
    RuntimeCommit,
    SessionMeta,
    SessionNode,
    SessionReadScope,
    SessionRelation,
    SlotPolicy,
    TextItem,
    TokenLedgerEntry,
    TokenUsage,
    TurnCommitStamp,
    TurnInput,
)
from tests.helpers import listing, snapshot

T = TypeVar("T")

SESSION = "root"
MAX_I64 = 2**63 - 1
START_MS = 1_700_000_000_000
LEASE_MS = 30_000
NAN = float("nan")
SURROGATE = "\ud800"
LOW_SURROGATE = "\udfff"


def once(items: Iterable[T]) -> Iterator[T]:
    """An iterable that can be consumed only once."""
    yield from items


class FakeClock:
    def __init__(self, now: int = START_MS) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


# ---------------------------------------------------------------------------
# a seeded store and full snapshots of its file


@dataclass
class World:
    """A file store with a head at revision 1, a blob, an intent, a module, two batches (one claimed) and meta."""

    tmp: Path
    path: Path
    store: Store
    clock: FakeClock
    claim: QueuedWorkClaim  # a live claim on batch ``claimed``
    claimed: str
    free: str  # an unclaimed batch
    other: Store  # an empty store to fork into
    other_path: Path


def message(node_id: str, role: str, text: str, parent: str | None = None) -> SessionNode:
    return SessionNode(
        node_id=node_id, parent_node_id=parent, payload={"role": role, "parts": [{"type": "text", "text": text}]}
    )


def draft(text: str, key: str) -> QueuedWorkBatchDraft:
    return QueuedWorkBatchDraft.new(
        SESSION,
        DeliveryPolicy.EARLIEST_SAFE_BOUNDARY,
        SlotPolicy.EXCLUSIVE,
        [QueuedWorkPayload.turn_input(TurnInput.text(text))],
    ).with_source_key(key)


def first_commit() -> RuntimeCommit:
    return RuntimeCommit(
        session_id=SESSION,
        expected_head_revision=0,
        config={"c": 1},
        agent_frames=[{"frame": 1}],
        current_agent_frame_id="frame-1",
        graph=GraphDelta.append([message("u1", "user", "hello"), message("a1", "assistant", "hi", "u1")], "a1"),
        checkpoint=HydratedCheckpoint(turn_state={"t": 1}, tool_state={"tool": 1}),
        usage_deltas=[TokenLedgerEntry(source="turn", model="m", usage=TokenUsage(input_tokens=12))],
    )


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    path = tmp_path / "session.db"
    clock = FakeClock()
    store = Store.open(path, StoreOptions(clock=clock))
    other_path = tmp_path / "fork-target.db"
    other = Store.open(other_path, StoreOptions(clock=clock))
    try:
        store.commit_runtime_state(first_commit())
        store.put_blob(b"existing blob")
        store.record_intent(
            AttachmentIntent(
                attachment_id="att-1", session_id=SESSION, canonical_uri="file:///a", intent_at_epoch_ms=START_MS
            )
        )
        store.put_module_artifact("mod:1", b"module bytes")
        claimed = store.enqueue_queued_work(draft("first", "k-a")).batch_id
        free = store.enqueue_queued_work(draft("second", "k-b")).batch_id
        claim = store.claim_ready_queued_work(SESSION, "owner", QueuedWorkClaimBoundary.IDLE, LEASE_MS, 8)
        assert claim is not None and claim.batch_ids == [claimed]
        store.save_session_meta(
            SessionMeta(session_id=SESSION, session_name="name", created_at="2024-01-01T00:00:00+00:00", model="m")
        )
        yield World(tmp_path, path, store, clock, claim, claimed, free, other, other_path)
    finally:
        store.close()
        other.close()


# ---------------------------------------------------------------------------
# builders for hostile values inside otherwise valid arguments


def commit(**fields: Any) -> RuntimeCommit:
    """A valid commit on top of revision 1 (appends node n2), with ``fields`` replaced."""
    base = RuntimeCommit(
        session_id=SESSION,
        expected_head_revision=1,
        config={"c": 2},
        graph=GraphDelta.append([message("n2", "user", "next", "a1")], "n2"),
        checkpoint=HydratedCheckpoint(turn_state={"t": 2}),
        usage_deltas=[TokenLedgerEntry(source="turn", model="m", usage=TokenUsage(input_tokens=5))],
    )
    return msgspec.structs.replace(base, **fields)


def with_nodes(*nodes: Any, leaf: Any = "n2") -> RuntimeCommit:
    return commit(graph=GraphDelta(kind="append", nodes=list(nodes), leaf_node_id=leaf))


def node(**fields: Any) -> SessionNode:
    base: dict[str, Any] = {
        "node_id": "n2",
        "parent_node_id": "a1",
        "payload": {"role": "user", "parts": [{"type": "text", "text": "x"}]},
    }
    return SessionNode(**{**base, **fields})


def checkpoint(**fields: Any) -> RuntimeCommit:
    return commit(checkpoint=HydratedCheckpoint(**{"turn_state": {"t": 2}, **fields}))


def usage(**counters: Any) -> RuntimeCommit:
    return commit(usage_deltas=[TokenLedgerEntry(source="turn", model="m", usage=TokenUsage(**counters))])


def entry(**fields: Any) -> RuntimeCommit:
    base: dict[str, Any] = {"source": "turn", "model": "m", "usage": TokenUsage(input_tokens=1)}
    return commit(usage_deltas=[TokenLedgerEntry(**{**base, **fields})])


def stamp(**fields: Any) -> RuntimeCommit:
    base: dict[str, Any] = {"session_id": SESSION, "turn_id": "turn-2", "turn_commit_hash": "h2"}
    return commit(turn_commit=TurnCommitStamp(**{**base, **fields}))


def completion(w: World, **fields: Any) -> RuntimeCommit:
    """A commit completing the world's live claim, with completion ``fields`` replaced."""
    valid = w.claim.completion()
    return commit(completed_queue_claims=[msgspec.structs.replace(valid, **fields)])


def queued(*payloads: Any, **fields: Any) -> QueuedWorkBatchDraft:
    base = QueuedWorkBatchDraft(
        session_id=SESSION,
        delivery_policy=DeliveryPolicy.EARLIEST_SAFE_BOUNDARY,
        slot_policy=SlotPolicy.JOIN,
        payloads=list(payloads) if payloads else [QueuedWorkPayload.turn_input(TurnInput.text("hi"))],
    )
    return msgspec.structs.replace(base, **fields)


def turn_input(**fields: Any) -> QueuedWorkBatchDraft:
    return queued(QueuedWorkPayload.turn_input(TurnInput(**{"items": [TextItem(text="hi")], **fields})))


def claim_with(w: World, **fields: Any) -> QueuedWorkClaim:
    return msgspec.structs.replace(w.claim, **fields)


def intent(**fields: Any) -> AttachmentIntent:
    base: dict[str, Any] = {
        "attachment_id": "att-2",
        "session_id": SESSION,
        "canonical_uri": "file:///b",
        "intent_at_epoch_ms": START_MS,
    }
    return AttachmentIntent(**{**base, **fields})


def meta(**fields: Any) -> SessionMeta:
    base: dict[str, Any] = {
        "session_id": SESSION,
        "session_name": "name",
        "created_at": "2024-01-01T00:00:00+00:00",
        "model": "m",
    }
    return SessionMeta(**{**base, **fields})


def claim_args(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "session_id": SESSION,
        "owner_id": "owner-2",
        "boundary": QueuedWorkClaimBoundary.IDLE,
        "lease_ttl_ms": LEASE_MS,
        "max_batches": 8,
    }
    return {**base, **fields}


def by_ids_args(w: World, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "session_id": SESSION,
        "owner_id": "owner-2",
        "boundary": QueuedWorkClaimBoundary.IDLE,
        "lease_ttl_ms": LEASE_MS,
        "batch_ids": [w.free],
    }
    return {**base, **fields}


# ---------------------------------------------------------------------------
# the table of arguments that must be rejected: (id, operation, substring of ``InvalidInput.what``)

Op = Callable[[World], object]
C = commit

REJECT: list[tuple[str, Op, str]] = [
    # -- commit_runtime_state: the commit itself and its scalar fields
    ("commit/none", lambda w: w.store.commit_runtime_state(None), "commit"),  # type: ignore[arg-type]
    ("commit/session-id-surrogate", lambda w: w.store.commit_runtime_state(C(session_id=SURROGATE)), "session_id"),
    ("commit/session-id-nul", lambda w: w.store.commit_runtime_state(C(session_id="ro\x00ot")), "session_id"),
    ("commit/session-id-bytes", lambda w: w.store.commit_runtime_state(C(session_id=b"root")), "session_id"),
    ("commit/revision-2**64", lambda w: w.store.commit_runtime_state(C(expected_head_revision=2**64)), "revision"),
    ("commit/revision-nan", lambda w: w.store.commit_runtime_state(C(expected_head_revision=NAN)), "revision"),
    ("commit/revision-10**30", lambda w: w.store.commit_runtime_state(C(expected_head_revision=10**30)), "revision"),
    ("commit/config-surrogate-key", lambda w: w.store.commit_runtime_state(C(config={SURROGATE: 1})), "config"),
    ("commit/config-surrogate-value", lambda w: w.store.commit_runtime_state(C(config={"k": LOW_SURROGATE})), "config"),
    ("commit/config-int-2**64", lambda w: w.store.commit_runtime_state(C(config={"n": 2**64})), "config"),
    ("commit/config-int-below-i64", lambda w: w.store.commit_runtime_state(C(config={"n": -(2**63) - 1})), "config"),
    ("commit/config-object", lambda w: w.store.commit_runtime_state(C(config=object())), "config"),
    ("commit/agent-frames-none", lambda w: w.store.commit_runtime_state(C(agent_frames=None)), "agent_frames"),
    ("commit/agent-frames-dict", lambda w: w.store.commit_runtime_state(C(agent_frames={"a": 1})), "agent_frames"),
    ("commit/agent-frames-str", lambda w: w.store.commit_runtime_state(C(agent_frames="frames")), "agent_frames"),
    (
        "commit/agent-frames-object",
        lambda w: w.store.commit_runtime_state(C(agent_frames=[{"x": object()}])),
        "agent_frames",
    ),
    (
        "commit/agent-frames-surrogate",
        lambda w: w.store.commit_runtime_state(C(agent_frames=[{"execution_state_ref": SURROGATE}])),
        "agent_frames",
    ),
    (
        "commit/current-frame-none",
        lambda w: w.store.commit_runtime_state(C(current_agent_frame_id=None)),
        "current_agent_frame_id",
    ),
    (
        "commit/current-frame-int",
        lambda w: w.store.commit_runtime_state(C(current_agent_frame_id=5)),
        "current_agent_frame_id",
    ),
    (
        "commit/current-frame-surrogate",
        lambda w: w.store.commit_runtime_state(C(current_agent_frame_id=SURROGATE)),
        "current_agent_frame_id",
    ),
    # -- the graph delta
    ("graph/none", lambda w: w.store.commit_runtime_state(C(graph=None)), "graph"),
    ("graph/kind-int", lambda w: w.store.commit_runtime_state(C(graph=GraphDelta(kind=5))), "graph"),  # type: ignore[arg-type]
    (
        "graph/nodes-none",
        lambda w: w.store.commit_runtime_state(C(graph=GraphDelta(kind="append", nodes=None, leaf_node_id="n2"))),  # type: ignore[arg-type]
        "nodes",
    ),
    (
        "graph/nodes-str",
        lambda w: w.store.commit_runtime_state(C(graph=GraphDelta(kind="append", nodes="n2", leaf_node_id="n2"))),  # type: ignore[arg-type]
        "nodes",
    ),
    (
        "graph/replace-nodes-none",
        lambda w: w.store.commit_runtime_state(C(graph=GraphDelta(kind="replace_full", nodes=None))),  # type: ignore[arg-type]
        "nodes",
    ),
    ("graph/node-none", lambda w: w.store.commit_runtime_state(with_nodes(None)), "nodes"),
    ("graph/node-str", lambda w: w.store.commit_runtime_state(with_nodes("n2")), "nodes"),
    ("graph/leaf-int", lambda w: w.store.commit_runtime_state(with_nodes(node(), leaf=5)), "leaf"),
    ("graph/leaf-surrogate", lambda w: w.store.commit_runtime_state(with_nodes(node(), leaf=SURROGATE)), "leaf"),
    ("graph/leaf-nul", lambda w: w.store.commit_runtime_state(with_nodes(node(), leaf="n\x002")), "leaf"),
    (
        "graph/unchanged-with-nodes",
        lambda w: w.store.commit_runtime_state(C(graph=GraphDelta(kind="unchanged", nodes=[node()]))),
        "nodes",
    ),
    # -- nodes
    (
        "node/id-surrogate-pair-half",
        lambda w: w.store.commit_runtime_state(with_nodes(node(node_id="\udc80"))),
        "node_id",
    ),
    ("node/id-float", lambda w: w.store.commit_runtime_state(with_nodes(node(node_id=1.5))), "node_id"),
    ("node/parent-int", lambda w: w.store.commit_runtime_state(with_nodes(node(parent_node_id=5))), "parent_node_id"),
    ("node/parent-nul", lambda w: w.store.commit_runtime_state(with_nodes(node(parent_node_id="a\x001"))), "parent"),
    ("node/kind-none", lambda w: w.store.commit_runtime_state(with_nodes(node(kind=None))), "kind"),
    ("node/kind-surrogate", lambda w: w.store.commit_runtime_state(with_nodes(node(kind=SURROGATE))), "kind"),
    ("node/frame-int", lambda w: w.store.commit_runtime_state(with_nodes(node(agent_frame_id=5))), "agent_frame_id"),
    ("node/frame-empty", lambda w: w.store.commit_runtime_state(with_nodes(node(agent_frame_id=""))), "agent_frame_id"),
    (
        "node/frame-surrogate",
        lambda w: w.store.commit_runtime_state(with_nodes(node(agent_frame_id=SURROGATE))),
        "agent_frame_id",
    ),
    ("node/timestamp-str", lambda w: w.store.commit_runtime_state(with_nodes(node(timestamp_ms="1"))), "timestamp_ms"),
    (
        "node/timestamp-bool",
        lambda w: w.store.commit_runtime_state(with_nodes(node(timestamp_ms=True))),
        "timestamp_ms",
    ),
    (
        "node/timestamp-float",
        lambda w: w.store.commit_runtime_state(with_nodes(node(timestamp_ms=1.5))),
        "timestamp_ms",
    ),
    ("node/timestamp-nan", lambda w: w.store.commit_runtime_state(with_nodes(node(timestamp_ms=NAN))), "timestamp_ms"),
    (
        "node/timestamp-2**63",
        lambda w: w.store.commit_runtime_state(with_nodes(node(timestamp_ms=2**63))),
        "timestamp_ms",
    ),
    (
        "node/timestamp-2**64",
        lambda w: w.store.commit_runtime_state(with_nodes(node(timestamp_ms=2**64))),
        "timestamp_ms",
    ),
    (
        "node/timestamp-negative",
        lambda w: w.store.commit_runtime_state(with_nodes(node(timestamp_ms=-1))),
        "timestamp_ms",
    ),
    (
        "node/caused-by-object",
        lambda w: w.store.commit_runtime_state(with_nodes(node(caused_by=object()))),
        "caused_by",
    ),
    (
        "node/caused-by-surrogate",
        lambda w: w.store.commit_runtime_state(with_nodes(node(caused_by={"why": SURROGATE}))),
        "caused_by",
    ),
    (
        "node/payload-surrogate-text",
        lambda w: w.store.commit_runtime_state(
            with_nodes(node(payload={"role": "user", "parts": [{"type": "text", "text": SURROGATE}]}))
        ),
        "payload",
    ),
    (
        "node/payload-surrogate-key",
        lambda w: w.store.commit_runtime_state(with_nodes(node(payload={LOW_SURROGATE: 1}))),
        "payload",
    ),
    ("node/payload-int-2**64", lambda w: w.store.commit_runtime_state(with_nodes(node(payload=[2**64]))), "payload"),
    # -- the checkpoint
    ("checkpoint/none", lambda w: w.store.commit_runtime_state(C(checkpoint=None)), "checkpoint"),
    ("checkpoint/dict", lambda w: w.store.commit_runtime_state(C(checkpoint={"turn_state": 1})), "checkpoint"),
    (
        "checkpoint/turn-state-object",
        lambda w: w.store.commit_runtime_state(checkpoint(turn_state=object())),
        "turn_state",
    ),
    (
        "checkpoint/turn-state-surrogate",
        lambda w: w.store.commit_runtime_state(checkpoint(turn_state={"k": SURROGATE})),
        "turn_state",
    ),
    (
        "checkpoint/tool-state-int-2**64",
        lambda w: w.store.commit_runtime_state(checkpoint(tool_state=2**64)),
        "tool_state",
    ),
    (
        "checkpoint/plugin-snapshot-object",
        lambda w: w.store.commit_runtime_state(checkpoint(plugin_snapshot={"p": object()})),
        "plugin_snapshot",
    ),
    ("checkpoint/tool-ref-int", lambda w: w.store.commit_runtime_state(checkpoint(tool_state_ref=5)), "tool_state_ref"),
    (
        "checkpoint/plugin-ref-surrogate",
        lambda w: w.store.commit_runtime_state(checkpoint(plugin_snapshot_ref=SURROGATE)),
        "plugin_snapshot_ref",
    ),
    (
        "checkpoint/execution-ref-empty",
        lambda w: w.store.commit_runtime_state(checkpoint(execution_state_ref="")),
        "execution_state_ref",
    ),
    (
        "checkpoint/execution-state-int",
        lambda w: w.store.commit_runtime_state(checkpoint(execution_state=5)),
        "execution_state",
    ),
    (
        "checkpoint/plugin-revision-str",
        lambda w: w.store.commit_runtime_state(checkpoint(plugin_snapshot_revision="1")),
        "plugin_snapshot_revision",
    ),
    (
        "checkpoint/plugin-revision-bool",
        lambda w: w.store.commit_runtime_state(checkpoint(plugin_snapshot_revision=True)),
        "plugin_snapshot_revision",
    ),
    (
        "checkpoint/plugin-revision-float",
        lambda w: w.store.commit_runtime_state(checkpoint(plugin_snapshot_revision=1.5)),
        "plugin_snapshot_revision",
    ),
    (
        "checkpoint/plugin-revision-2**64",
        lambda w: w.store.commit_runtime_state(checkpoint(plugin_snapshot_revision=2**64)),
        "plugin_snapshot_revision",
    ),
    # -- usage deltas
    ("usage/deltas-none", lambda w: w.store.commit_runtime_state(C(usage_deltas=None)), "usage_deltas"),
    ("usage/deltas-str", lambda w: w.store.commit_runtime_state(C(usage_deltas="usage")), "usage_deltas"),
    ("usage/delta-none", lambda w: w.store.commit_runtime_state(C(usage_deltas=[None])), "usage_deltas"),
    ("usage/usage-none", lambda w: w.store.commit_runtime_state(entry(usage=None)), "usage"),
    ("usage/usage-dict", lambda w: w.store.commit_runtime_state(entry(usage={"input_tokens": 1})), "usage"),
    ("usage/input-str", lambda w: w.store.commit_runtime_state(usage(input_tokens="1")), "input_tokens"),
    ("usage/output-float", lambda w: w.store.commit_runtime_state(usage(output_tokens=1.5)), "output_tokens"),
    (
        "usage/cached-bool",
        lambda w: w.store.commit_runtime_state(usage(cached_input_tokens=True)),
        "cached_input_tokens",
    ),
    ("usage/reasoning-nan", lambda w: w.store.commit_runtime_state(usage(reasoning_tokens=NAN)), "reasoning_tokens"),
    ("usage/input-2**64", lambda w: w.store.commit_runtime_state(usage(input_tokens=2**64)), "input_tokens"),
    ("usage/input-none", lambda w: w.store.commit_runtime_state(usage(input_tokens=None)), "input_tokens"),
    (
        "usage/total-overflows-i64",
        lambda w: w.store.commit_runtime_state(usage(input_tokens=MAX_I64)),  # 12 are stored already
        "usage",
    ),
    ("usage/source-none", lambda w: w.store.commit_runtime_state(entry(source=None)), "source"),
    ("usage/source-surrogate", lambda w: w.store.commit_runtime_state(entry(source=SURROGATE)), "source"),
    ("usage/model-int", lambda w: w.store.commit_runtime_state(entry(model=5)), "model"),
    ("usage/model-surrogate", lambda w: w.store.commit_runtime_state(entry(model=LOW_SURROGATE)), "model"),
    # -- turn stamp
    ("stamp/str", lambda w: w.store.commit_runtime_state(C(turn_commit="turn-2")), "turn_commit"),
    ("stamp/hash-none", lambda w: w.store.commit_runtime_state(stamp(turn_commit_hash=None)), "turn_commit_hash"),
    (
        "stamp/hash-surrogate",
        lambda w: w.store.commit_runtime_state(stamp(turn_commit_hash=SURROGATE)),
        "turn_commit_hash",
    ),
    ("stamp/turn-id-int", lambda w: w.store.commit_runtime_state(stamp(turn_id=5)), "turn_id"),
    ("stamp/turn-id-nul", lambda w: w.store.commit_runtime_state(stamp(turn_id="turn\x002")), "turn_id"),
    ("stamp/session-surrogate", lambda w: w.store.commit_runtime_state(stamp(session_id=SURROGATE)), "session_id"),
    # -- queue completions carried by the commit
    (
        "completion/claims-none",
        lambda w: w.store.commit_runtime_state(C(completed_queue_claims=None)),
        "completed_queue_claims",
    ),
    (
        "completion/claims-item-none",
        lambda w: w.store.commit_runtime_state(C(completed_queue_claims=[None])),
        "completed_queue_claims",
    ),
    (
        "completion/claims-item-claim",
        lambda w: w.store.commit_runtime_state(C(completed_queue_claims=[w.claim])),
        "completed_queue_claims",
    ),
    ("completion/batch-ids-none", lambda w: w.store.commit_runtime_state(completion(w, batch_ids=None)), "batch_ids"),
    (
        "completion/batch-ids-str",
        lambda w: w.store.commit_runtime_state(completion(w, batch_ids=w.claimed)),
        "batch_ids",
    ),
    ("completion/batch-id-int", lambda w: w.store.commit_runtime_state(completion(w, batch_ids=[5])), "batch_ids"),
    (
        "completion/batch-id-surrogate",
        lambda w: w.store.commit_runtime_state(completion(w, batch_ids=[SURROGATE])),
        "batch_ids",
    ),
    ("completion/fence-str", lambda w: w.store.commit_runtime_state(completion(w, fencing_token="1")), "fencing_token"),
    (
        "completion/fence-bool",
        lambda w: w.store.commit_runtime_state(completion(w, fencing_token=True)),
        "fencing_token",
    ),
    (
        "completion/fence-float",
        lambda w: w.store.commit_runtime_state(completion(w, fencing_token=1.0)),
        "fencing_token",
    ),
    (
        "completion/fence-2**63",
        lambda w: w.store.commit_runtime_state(completion(w, fencing_token=2**63)),
        "fencing_token",
    ),
    (
        "completion/fence-2**64",
        lambda w: w.store.commit_runtime_state(completion(w, fencing_token=2**64)),
        "fencing_token",
    ),
    (
        "completion/lease-token-none",
        lambda w: w.store.commit_runtime_state(completion(w, lease_token=None)),
        "lease_token",
    ),
    (
        "completion/claim-id-surrogate",
        lambda w: w.store.commit_runtime_state(completion(w, claim_id=SURROGATE)),
        "claim_id",
    ),
    ("completion/session-id-int", lambda w: w.store.commit_runtime_state(completion(w, session_id=5)), "session_id"),
    # -- attachments carried by the commit
    (
        "commit-attachments/none",
        lambda w: w.store.commit_runtime_state(C(committed_attachment_ids=None)),
        "committed_attachment_ids",
    ),
    (
        "commit-attachments/item-none",
        lambda w: w.store.commit_runtime_state(C(committed_attachment_ids=[None])),
        "committed_attachment_ids",
    ),
    (
        "commit-attachments/item-surrogate",
        lambda w: w.store.commit_runtime_state(C(committed_attachment_ids=[SURROGATE])),
        "committed_attachment_ids",
    ),
    (
        "commit-attachments/item-nul",
        lambda w: w.store.commit_runtime_state(C(committed_attachment_ids=["att\x001"])),
        "committed_attachment_ids",
    ),
    # -- enqueue_queued_work
    ("enqueue/none", lambda w: w.store.enqueue_queued_work(None), "draft"),  # type: ignore[arg-type]
    ("enqueue/session-surrogate", lambda w: w.store.enqueue_queued_work(queued(session_id=SURROGATE)), "session_id"),
    ("enqueue/session-int", lambda w: w.store.enqueue_queued_work(queued(session_id=5)), "session_id"),
    (
        "enqueue/delivery-str",
        lambda w: w.store.enqueue_queued_work(queued(delivery_policy="earliest_safe_boundary")),
        "delivery_policy",
    ),
    ("enqueue/slot-none", lambda w: w.store.enqueue_queued_work(queued(slot_policy=None)), "slot_policy"),
    ("enqueue/merge-key-none", lambda w: w.store.enqueue_queued_work(queued(merge_key=None)), "merge_key"),
    ("enqueue/merge-key-str", lambda w: w.store.enqueue_queued_work(queued(merge_key="group:g")), "merge_key"),
    (
        "enqueue/merge-group-surrogate",
        lambda w: w.store.enqueue_queued_work(queued(merge_key=MergeKey.group(SURROGATE))),
        "merge_key",
    ),
    (
        "enqueue/merge-group-name-int",
        lambda w: w.store.enqueue_queued_work(queued(merge_key=MergeKey(kind="group", name=5))),  # type: ignore[arg-type]
        "merge_key",
    ),
    (
        "enqueue/merge-kind-unknown",
        lambda w: w.store.enqueue_queued_work(queued(merge_key=MergeKey(kind="bogus"))),  # type: ignore[arg-type]
        "merge_key",
    ),
    (
        "enqueue/merge-never-with-name",
        lambda w: w.store.enqueue_queued_work(queued(merge_key=MergeKey(kind="never", name="x"))),
        "merge_key",
    ),
    ("enqueue/payloads-none", lambda w: w.store.enqueue_queued_work(queued(payloads=None)), "payloads"),
    ("enqueue/payloads-str", lambda w: w.store.enqueue_queued_work(queued(payloads="hi")), "payloads"),
    ("enqueue/payload-none", lambda w: w.store.enqueue_queued_work(queued(None)), "payloads"),
    (
        "enqueue/payload-kind-unknown",
        lambda w: w.store.enqueue_queued_work(queued(QueuedWorkPayload(kind="bogus"))),  # type: ignore[arg-type]
        "kind",
    ),
    (
        "enqueue/turn-input-none",
        lambda w: w.store.enqueue_queued_work(queued(QueuedWorkPayload(kind="turn_input", input=None))),
        "input",
    ),
    (
        "enqueue/turn-input-str",
        lambda w: w.store.enqueue_queued_work(queued(QueuedWorkPayload(kind="turn_input", input="hi"))),  # type: ignore[arg-type]
        "input",
    ),
    ("enqueue/items-none", lambda w: w.store.enqueue_queued_work(turn_input(items=None)), "items"),
    ("enqueue/items-int", lambda w: w.store.enqueue_queued_work(turn_input(items=[42])), "items"),
    ("enqueue/items-str", lambda w: w.store.enqueue_queued_work(turn_input(items=["hi"])), "items"),
    ("enqueue/items-dict", lambda w: w.store.enqueue_queued_work(turn_input(items=[{"type": "text"}])), "items"),
    ("enqueue/text-int", lambda w: w.store.enqueue_queued_work(turn_input(items=[TextItem(text=5)])), "text"),  # type: ignore[arg-type]
    (
        "enqueue/text-surrogate",
        lambda w: w.store.enqueue_queued_work(turn_input(items=[TextItem(text=SURROGATE)])),
        "text",
    ),
    ("enqueue/image-id-none", lambda w: w.store.enqueue_queued_work(turn_input(items=[ImageRefItem(id=None)])), "id"),  # type: ignore[arg-type]
    ("enqueue/image-blobs-none", lambda w: w.store.enqueue_queued_work(turn_input(image_blobs=None)), "image_blobs"),
    (
        "enqueue/image-blob-str",
        lambda w: w.store.enqueue_queued_work(turn_input(image_blobs={"i": "x"})),
        "image_blobs",
    ),
    (
        "enqueue/image-blob-key-int",
        lambda w: w.store.enqueue_queued_work(turn_input(image_blobs={5: b"x"})),
        "image_blobs",
    ),
    (
        "enqueue/turn-options-object",
        lambda w: w.store.enqueue_queued_work(turn_input(protocol_turn_options=object())),
        "protocol_turn_options",
    ),
    ("enqueue/trace-id-int", lambda w: w.store.enqueue_queued_work(turn_input(trace_turn_id=5)), "trace_turn_id"),
    (
        "enqueue/command-object",
        lambda w: w.store.enqueue_queued_work(queued(QueuedWorkPayload.session_command({"c": object()}))),
        "command",
    ),
    (
        "enqueue/command-surrogate",
        lambda w: w.store.enqueue_queued_work(queued(QueuedWorkPayload.session_command({"c": SURROGATE}))),
        "command",
    ),
    (
        "enqueue/wake-int-2**64",
        lambda w: w.store.enqueue_queued_work(queued(QueuedWorkPayload.process_wake({"n": 2**64}))),
        "wake",
    ),
    (
        "enqueue/available-2**63",
        lambda w: w.store.enqueue_queued_work(queued(available_at_ms=2**63)),
        "available_at_ms",
    ),
    ("enqueue/available-bool", lambda w: w.store.enqueue_queued_work(queued(available_at_ms=True)), "available_at_ms"),
    ("enqueue/available-float", lambda w: w.store.enqueue_queued_work(queued(available_at_ms=1.5)), "available_at_ms"),
    ("enqueue/available-nan", lambda w: w.store.enqueue_queued_work(queued(available_at_ms=NAN)), "available_at_ms"),
    ("enqueue/available-str", lambda w: w.store.enqueue_queued_work(queued(available_at_ms="0")), "available_at_ms"),
    ("enqueue/source-key-surrogate", lambda w: w.store.enqueue_queued_work(queued(source_key=SURROGATE)), "source_key"),
    ("enqueue/source-key-empty", lambda w: w.store.enqueue_queued_work(queued(source_key="")), "source_key"),
    ("enqueue/source-key-int", lambda w: w.store.enqueue_queued_work(queued(source_key=5)), "source_key"),
    ("enqueue/source-key-nul", lambda w: w.store.enqueue_queued_work(queued(source_key="k\x00")), "source_key"),
    # -- claim_ready_queued_work
    ("claim/session-none", lambda w: w.store.claim_ready_queued_work(**claim_args(session_id=None)), "session_id"),
    (
        "claim/session-surrogate",
        lambda w: w.store.claim_ready_queued_work(**claim_args(session_id=SURROGATE)),
        "session_id",
    ),
    ("claim/owner-nul", lambda w: w.store.claim_ready_queued_work(**claim_args(owner_id="o\x00")), "owner_id"),
    ("claim/owner-int", lambda w: w.store.claim_ready_queued_work(**claim_args(owner_id=5)), "owner_id"),
    ("claim/boundary-str", lambda w: w.store.claim_ready_queued_work(**claim_args(boundary="idle")), "boundary"),
    ("claim/boundary-none", lambda w: w.store.claim_ready_queued_work(**claim_args(boundary=None)), "boundary"),
    ("claim/ttl-bool", lambda w: w.store.claim_ready_queued_work(**claim_args(lease_ttl_ms=True)), "lease_ttl_ms"),
    ("claim/ttl-float", lambda w: w.store.claim_ready_queued_work(**claim_args(lease_ttl_ms=1.5)), "lease_ttl_ms"),
    ("claim/ttl-nan", lambda w: w.store.claim_ready_queued_work(**claim_args(lease_ttl_ms=NAN)), "lease_ttl_ms"),
    ("claim/ttl-2**64", lambda w: w.store.claim_ready_queued_work(**claim_args(lease_ttl_ms=2**64)), "lease_ttl_ms"),
    ("claim/max-bool", lambda w: w.store.claim_ready_queued_work(**claim_args(max_batches=True)), "max_batches"),
    ("claim/max-float", lambda w: w.store.claim_ready_queued_work(**claim_args(max_batches=1.5)), "max_batches"),
    ("claim/max-2**63", lambda w: w.store.claim_ready_queued_work(**claim_args(max_batches=2**63)), "max_batches"),
    ("claim/max-str", lambda w: w.store.claim_ready_queued_work(**claim_args(max_batches="8")), "max_batches"),
    ("claim/max-none", lambda w: w.store.claim_ready_queued_work(**claim_args(max_batches=None)), "max_batches"),
    # -- claim_ready_queued_work_by_batch_ids
    (
        "claim-by-ids/none",
        lambda w: w.store.claim_ready_queued_work_by_batch_ids(**by_ids_args(w, batch_ids=None)),
        "batch_ids",
    ),
    (
        "claim-by-ids/item-none",
        lambda w: w.store.claim_ready_queued_work_by_batch_ids(**by_ids_args(w, batch_ids=[None])),
        "batch_ids",
    ),
    (
        "claim-by-ids/item-surrogate",
        lambda w: w.store.claim_ready_queued_work_by_batch_ids(**by_ids_args(w, batch_ids=[SURROGATE])),
        "batch_ids",
    ),
    (
        "claim-by-ids/ttl-nan",
        lambda w: w.store.claim_ready_queued_work_by_batch_ids(**by_ids_args(w, lease_ttl_ms=NAN)),
        "lease_ttl_ms",
    ),
    # -- renew / abandon with hostile claims
    ("renew/claim-none", lambda w: w.store.renew_queued_work_claim(None, LEASE_MS), "claim"),  # type: ignore[arg-type]
    ("renew/claim-completion", lambda w: w.store.renew_queued_work_claim(w.claim.completion(), LEASE_MS), "claim"),  # type: ignore[arg-type]
    (
        "renew/fence-str",
        lambda w: w.store.renew_queued_work_claim(claim_with(w, fencing_token="1"), LEASE_MS),
        "fencing_token",
    ),
    (
        "renew/fence-bool",
        lambda w: w.store.renew_queued_work_claim(claim_with(w, fencing_token=True), LEASE_MS),
        "fencing_token",
    ),
    (
        "renew/fence-2**63",
        lambda w: w.store.renew_queued_work_claim(claim_with(w, fencing_token=2**63), LEASE_MS),
        "fencing_token",
    ),
    (
        "renew/fence-2**64",
        lambda w: w.store.renew_queued_work_claim(claim_with(w, fencing_token=2**64), LEASE_MS),
        "fencing_token",
    ),
    (
        "renew/fence-nan",
        lambda w: w.store.renew_queued_work_claim(claim_with(w, fencing_token=NAN), LEASE_MS),
        "fencing_token",
    ),
    (
        "renew/lease-token-none",
        lambda w: w.store.renew_queued_work_claim(claim_with(w, lease_token=None), LEASE_MS),
        "lease_token",
    ),
    ("renew/batches-none", lambda w: w.store.renew_queued_work_claim(claim_with(w, batches=None), LEASE_MS), "batches"),
    (
        "renew/batch-not-a-batch",
        lambda w: w.store.renew_queued_work_claim(claim_with(w, batches=[w.claimed]), LEASE_MS),
        "batches",
    ),
    (
        "renew/claim-id-surrogate",
        lambda w: w.store.renew_queued_work_claim(claim_with(w, claim_id=SURROGATE), LEASE_MS),
        "claim_id",
    ),
    ("renew/ttl-nan", lambda w: w.store.renew_queued_work_claim(w.claim, NAN), "lease_ttl_ms"),  # type: ignore[arg-type]
    ("renew/ttl-2**64", lambda w: w.store.renew_queued_work_claim(w.claim, 2**64), "lease_ttl_ms"),
    ("renew/ttl-bool", lambda w: w.store.renew_queued_work_claim(w.claim, True), "lease_ttl_ms"),
    ("abandon/claim-none", lambda w: w.store.abandon_queued_work_claim(None), "claim"),  # type: ignore[arg-type]
    (
        "abandon/fence-str",
        lambda w: w.store.abandon_queued_work_claim(claim_with(w, fencing_token="1")),
        "fencing_token",
    ),
    (
        "abandon/fence-2**64",
        lambda w: w.store.abandon_queued_work_claim(claim_with(w, fencing_token=2**64)),
        "fencing_token",
    ),
    (
        "abandon/lease-token-int",
        lambda w: w.store.abandon_queued_work_claim(claim_with(w, lease_token=5)),
        "lease_token",
    ),
    ("abandon/batches-none", lambda w: w.store.abandon_queued_work_claim(claim_with(w, batches=None)), "batches"),
    # -- cancel / list
    ("cancel/batch-none", lambda w: w.store.cancel_queued_work_batch(SESSION, None), "batch_id"),  # type: ignore[arg-type]
    ("cancel/batch-surrogate", lambda w: w.store.cancel_queued_work_batch(SESSION, SURROGATE), "batch_id"),
    ("cancel/session-nul", lambda w: w.store.cancel_queued_work_batch("ro\x00ot", w.free), "session_id"),
    ("list-queue/session-none", lambda w: w.store.list_queued_work(None), "session_id"),  # type: ignore[arg-type]
    ("list-queue/session-surrogate", lambda w: w.store.list_queued_work(SURROGATE), "session_id"),
    ("list-pending/session-int", lambda w: w.store.list_pending_queued_work(5), "session_id"),  # type: ignore[arg-type]
    # -- blobs and checkpoints
    ("put-blob/none", lambda w: w.store.put_blob(None), "content"),  # type: ignore[arg-type]
    ("put-blob/int", lambda w: w.store.put_blob(7), "content"),  # type: ignore[arg-type]
    (
        "put-artifact/hints-str-set",
        lambda w: w.store.put_artifact_blob(
            BlobArtifactDescriptor(kind=ArtifactKind.TOOL_STATE, hints=frozenset({"compressible"})),  # type: ignore[arg-type]
            b"x" * 10_000,
        ),
        "hints",
    ),
    (
        "put-artifact/hints-none",
        lambda w: w.store.put_artifact_blob(BlobArtifactDescriptor(kind=ArtifactKind.TOOL_STATE, hints=None), b"x"),  # type: ignore[arg-type]
        "hints",
    ),
    (
        "put-artifact/kind-str",
        lambda w: w.store.put_artifact_blob(BlobArtifactDescriptor(kind="tool_state"), b"x"),  # type: ignore[arg-type]
        "kind",
    ),
    ("put-artifact/descriptor-none", lambda w: w.store.put_artifact_blob(None, b"x"), "descriptor"),  # type: ignore[arg-type]
    ("get-blob/none", lambda w: w.store.get_blob(None), "ref"),  # type: ignore[arg-type]
    ("get-blob/int", lambda w: w.store.get_blob(5), "ref"),  # type: ignore[arg-type]
    ("get-blob/surrogate", lambda w: w.store.get_blob(SURROGATE), "ref"),
    ("get-blob/bytes", lambda w: w.store.get_blob(b"ab"), "ref"),  # type: ignore[arg-type]
    ("get-checkpoint/none", lambda w: w.store.get_checkpoint(None), "ref"),  # type: ignore[arg-type]
    ("get-checkpoint/surrogate", lambda w: w.store.get_checkpoint(LOW_SURROGATE), "ref"),
    ("put-checkpoint/none", lambda w: w.store.put_checkpoint(None), "hydrated"),  # type: ignore[arg-type]
    (
        "put-checkpoint/turn-state-surrogate",
        lambda w: w.store.put_checkpoint(HydratedCheckpoint(turn_state=SURROGATE)),
        "turn_state",
    ),
    (
        "put-checkpoint/revision-2**64",
        lambda w: w.store.put_checkpoint(HydratedCheckpoint(plugin_snapshot_revision=2**64)),
        "plugin_snapshot_revision",
    ),
    # -- the attachment manifest
    ("intent/none", lambda w: w.store.record_intent(None), "intent"),  # type: ignore[arg-type]
    ("intent/uri-none", lambda w: w.store.record_intent(intent(canonical_uri=None)), "canonical_uri"),
    ("intent/uri-surrogate", lambda w: w.store.record_intent(intent(canonical_uri=SURROGATE)), "canonical_uri"),
    ("intent/time-bool", lambda w: w.store.record_intent(intent(intent_at_epoch_ms=True)), "intent_at_epoch_ms"),
    ("intent/time-nan", lambda w: w.store.record_intent(intent(intent_at_epoch_ms=NAN)), "intent_at_epoch_ms"),
    ("intent/time-2**64", lambda w: w.store.record_intent(intent(intent_at_epoch_ms=2**64)), "intent_at_epoch_ms"),
    ("intent/time-str", lambda w: w.store.record_intent(intent(intent_at_epoch_ms="1")), "intent_at_epoch_ms"),
    ("intent/id-nul", lambda w: w.store.record_intent(intent(attachment_id="att\x002")), "attachment_id"),
    ("intent/session-int", lambda w: w.store.record_intent(intent(session_id=5)), "session_id"),
    ("commit-refs/session-none", lambda w: w.store.commit_refs(None, ["att-1"]), "session_id"),  # type: ignore[arg-type]
    ("commit-refs/ids-none", lambda w: w.store.commit_refs(SESSION, None), "attachment_ids"),  # type: ignore[arg-type]
    ("commit-refs/id-none", lambda w: w.store.commit_refs(SESSION, [None]), "attachment_ids"),  # type: ignore[list-item]
    ("commit-refs/id-surrogate", lambda w: w.store.commit_refs(SESSION, [SURROGATE]), "attachment_ids"),
    ("list-uncommitted/nan", lambda w: w.store.list_uncommitted(NAN), "older_than_epoch_ms"),  # type: ignore[arg-type]
    ("list-uncommitted/float", lambda w: w.store.list_uncommitted(1.5), "older_than_epoch_ms"),  # type: ignore[arg-type]
    ("list-uncommitted/none", lambda w: w.store.list_uncommitted(None), "older_than_epoch_ms"),  # type: ignore[arg-type]
    ("list-uncommitted/2**64", lambda w: w.store.list_uncommitted(2**64), "older_than_epoch_ms"),
    ("forget/none", lambda w: w.store.forget(None), "attachment_id"),  # type: ignore[arg-type]
    ("forget/surrogate", lambda w: w.store.forget(SURROGATE), "attachment_id"),
    # -- module artifacts
    ("module/ref-none", lambda w: w.store.put_module_artifact(None, b"x"), "module_ref"),  # type: ignore[arg-type]
    ("module/ref-surrogate", lambda w: w.store.put_module_artifact(SURROGATE, b"x"), "module_ref"),
    ("module/ref-nul", lambda w: w.store.put_module_artifact("mod\x00", b"x"), "module_ref"),
    ("module/data-none", lambda w: w.store.put_module_artifact("mod:2", None), "content"),  # type: ignore[arg-type]
    ("module/get-int", lambda w: w.store.get_module_artifact(5), "module_ref"),  # type: ignore[arg-type]
    ("module/forget-surrogate", lambda w: w.store.forget_module_artifact(SURROGATE), "module_ref"),
    # -- graph maintenance and reads
    ("tombstone/none", lambda w: w.store.tombstone_nodes(None), "node_ids"),  # type: ignore[arg-type]
    ("tombstone/item-none", lambda w: w.store.tombstone_nodes([None]), "node_ids"),  # type: ignore[list-item]
    ("tombstone/item-surrogate", lambda w: w.store.tombstone_nodes(["u1", SURROGATE]), "node_ids"),
    ("load-node/none", lambda w: w.store.load_node(None), "node_id"),  # type: ignore[arg-type]
    ("load-node/surrogate", lambda w: w.store.load_node(SURROGATE), "node_id"),
    ("load-node/nul", lambda w: w.store.load_node("u\x001"), "node_id"),
    ("load-node/int", lambda w: w.store.load_node(5), "node_id"),  # type: ignore[arg-type]
    ("load-session/scope-str", lambda w: w.store.load_session("full_graph"), "scope"),  # type: ignore[arg-type]
    (
        "load-session/scope-kind-unknown",
        lambda w: w.store.load_session(SessionReadScope(kind="weird")),  # type: ignore[arg-type]
        "scope",
    ),
    ("load-session/leaf-surrogate", lambda w: w.store.load_session(SessionReadScope.active_path(SURROGATE)), "leaf"),
    ("load-session/leaf-int", lambda w: w.store.load_session(SessionReadScope.active_path(5)), "leaf"),  # type: ignore[arg-type]
    ("load-session/leaf-empty", lambda w: w.store.load_session(SessionReadScope.active_path("")), "leaf"),
    # -- session metadata
    (
        "meta/relation-kind-unknown",
        lambda w: w.store.save_session_meta(meta(relation=SessionRelation(kind="x"))),  # type: ignore[arg-type]
        "relation",
    ),
    (
        "meta/relation-parent-int",
        lambda w: w.store.save_session_meta(meta(relation=SessionRelation.child(5))),  # type: ignore[arg-type]
        "parent_session_id",
    ),
    (
        "meta/relation-parent-surrogate",
        lambda w: w.store.save_session_meta(meta(relation=SessionRelation.child(SURROGATE))),
        "parent_session_id",
    ),
    (
        "meta/relation-caused-by-object",
        lambda w: w.store.save_session_meta(meta(relation=SessionRelation.child("p", caused_by=object()))),
        "caused_by",
    ),
    ("meta/created-at-int", lambda w: w.store.save_session_meta(meta(created_at=5)), "created_at"),
    ("meta/created-at-surrogate", lambda w: w.store.save_session_meta(meta(created_at=SURROGATE)), "created_at"),
    ("meta/cwd-int", lambda w: w.store.save_session_meta(meta(cwd=5)), "cwd"),
    ("meta/cwd-surrogate", lambda w: w.store.save_session_meta(meta(cwd="/home/\udcff")), "cwd"),
    ("meta/model-none", lambda w: w.store.save_session_meta(meta(model=None)), "model"),
    ("meta/name-surrogate", lambda w: w.store.save_session_meta(meta(session_name=LOW_SURROGATE)), "session_name"),
    ("meta/session-nul", lambda w: w.store.save_session_meta(meta(session_id="ro\x00ot")), "session_id"),
    # -- fork
    ("fork/target-none", lambda w: w.store.copy_session_into(None), "target"),  # type: ignore[arg-type]
    ("fork/into-itself", lambda w: w.store.copy_session_into(w.store), "target"),
    ("fork/target-path", lambda w: w.store.copy_session_into(str(w.other_path)), "target"),  # type: ignore[arg-type]
    ("fork/session-surrogate", lambda w: w.store.copy_session_into(w.other, session_id=SURROGATE), "session_id"),
    ("fork/session-int", lambda w: w.store.copy_session_into(w.other, session_id=5), "session_id"),  # type: ignore[arg-type]
    ("fork/session-nul", lambda w: w.store.copy_session_into(w.other, session_id="f\x00"), "session_id"),
]


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__module__}.{type(exc).__name__}: {exc}"


def invalid_input_problem(call: Callable[[], object], field: str) -> str | None:
    """None when ``call`` raises InvalidInput whose ``what`` names ``field``; otherwise what went wrong."""
    try:
        result = call()
    except InvalidInput as exc:
        if not (isinstance(exc, StoreError) and isinstance(exc, ValueError)):
            return f"{_describe(exc)} is not a StoreError and a ValueError"
        if not (isinstance(exc.what, str) and field in exc.what):
            return f"InvalidInput names {exc.what!r}; expected it to name {field!r} ({exc})"
        return None
    except Exception as exc:
        return f"raised {_describe(exc)} instead of InvalidInput naming {field!r}"
    return f"accepted (returned {result!r:.200}) instead of raising InvalidInput naming {field!r}"


def expect_invalid_input(call: Callable[[], object], field: str) -> None:
    """``call`` must raise InvalidInput whose ``what`` names ``field``."""
    problem = invalid_input_problem(call, field)
    if problem is not None:
        pytest.fail(problem)


def usable(w: World) -> None:
    """The store still takes a commit on top of revision 1."""
    result = w.store.commit_runtime_state(commit(expected_head_revision=1))
    assert result.head_revision == 2


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("operation", "field"), [pytest.param(op, f, id=i) for i, op, f in REJECT])
def test_hostile_argument_is_invalid_input_and_writes_nothing(world: World, operation: Op, field: str) -> None:
    before = snapshot(world.path)
    other_before = snapshot(world.other_path)
    files_before = listing(world.tmp)
    expect_invalid_input(lambda: operation(world), field)
    assert snapshot(world.path) == before, "the database changed"
    assert snapshot(world.other_path) == other_before, "the fork target changed"
    assert listing(world.tmp) == files_before, "files appeared or vanished"
    usable(world)


def test_reject_table_has_unique_ids() -> None:
    ids = [case[0] for case in REJECT]
    assert len(ids) == len(set(ids))


# ---------------------------------------------------------------------------
# iterables that can be consumed only once (and tuples): rejected, or every item applied


def _ledger_input(w: World) -> int:
    read = w.store.load_session()
    assert read is not None
    return sum(e.usage.input_tokens for e in read.token_ledger)


def _queued_ids(w: World) -> list[str]:
    return [batch.batch_id for batch in w.store.list_queued_work(SESSION)]


def _uncommitted(w: World) -> set[str]:
    return {entry.attachment_id for entry in w.store.list_uncommitted(MAX_I64)}


def _graph_ids(w: World) -> list[str]:
    read = w.store.load_session()
    assert read is not None
    return [n.node_id for n in read.graph.nodes]


def _commit_then(check: Callable[[World], bool]) -> Callable[[World, object], bool]:
    return lambda w, result: check(w)


def _two_nodes() -> list[SessionNode]:
    return [message("n2", "user", "q", "a1"), message("n3", "assistant", "r", "n2")]


@dataclass(frozen=True)
class OnceCase:
    id: str
    op: Callable[[World], object]
    applied: Callable[[World, object], bool]  # called after success with the result: was every item applied?


ONCE: list[OnceCase] = [
    OnceCase(
        "commit/graph-nodes-generator",
        lambda w: w.store.commit_runtime_state(
            C(graph=GraphDelta(kind="append", nodes=once(_two_nodes()), leaf_node_id="n3"))  # type: ignore[arg-type]
        ),
        lambda w, r: _graph_ids(w) == ["u1", "a1", "n2", "n3"],
    ),
    OnceCase(
        "commit/graph-nodes-tuple",
        lambda w: w.store.commit_runtime_state(
            C(graph=GraphDelta(kind="append", nodes=tuple(_two_nodes()), leaf_node_id="n3"))  # type: ignore[arg-type]
        ),
        lambda w, r: _graph_ids(w) == ["u1", "a1", "n2", "n3"],
    ),
    OnceCase(
        "commit/replace-full-nodes-generator",
        lambda w: w.store.commit_runtime_state(
            C(graph=GraphDelta(kind="replace_full", nodes=once(_two_nodes()), leaf_node_id="n3"))  # type: ignore[arg-type]
        ),
        lambda w, r: _graph_ids(w) == ["n2", "n3"],
    ),
    OnceCase(
        "commit/usage-deltas-generator",
        lambda w: w.store.commit_runtime_state(
            C(usage_deltas=once([TokenLedgerEntry(source="turn", model="m", usage=TokenUsage(input_tokens=5))] * 2))
        ),
        lambda w, r: _ledger_input(w) == 12 + 10,
    ),
    OnceCase(
        "commit/agent-frames-generator",
        lambda w: w.store.commit_runtime_state(C(agent_frames=once([{"frame": 2}, {"frame": 3}]))),
        lambda w, r: (read := w.store.load_session()) is not None and read.agent_frames == [{"frame": 2}, {"frame": 3}],
    ),
    OnceCase(
        "commit/agent-frames-tuple",
        lambda w: w.store.commit_runtime_state(C(agent_frames=({"frame": 2},))),
        lambda w, r: (read := w.store.load_session()) is not None and read.agent_frames == [{"frame": 2}],
    ),
    OnceCase(
        "commit/completed-queue-claims-generator",
        lambda w: w.store.commit_runtime_state(C(completed_queue_claims=once([w.claim.completion()]))),
        lambda w, r: w.claimed not in _queued_ids(w),
    ),
    OnceCase(
        "commit/completion-batch-ids-generator",
        lambda w: w.store.commit_runtime_state(completion(w, batch_ids=once([w.claimed]))),
        lambda w, r: w.claimed not in _queued_ids(w),
    ),
    OnceCase(
        "commit/completion-batch-ids-tuple",
        lambda w: w.store.commit_runtime_state(completion(w, batch_ids=(w.claimed,))),
        lambda w, r: w.claimed not in _queued_ids(w),
    ),
    OnceCase(
        "commit/committed-attachment-ids-generator",
        lambda w: w.store.commit_runtime_state(C(committed_attachment_ids=once(["att-1"]))),
        lambda w, r: "att-1" not in _uncommitted(w),
    ),
    OnceCase(
        "commit/committed-attachment-ids-tuple",
        lambda w: w.store.commit_runtime_state(C(committed_attachment_ids=("att-1",))),
        lambda w, r: "att-1" not in _uncommitted(w),
    ),
    OnceCase(
        "commit-refs/generator",
        lambda w: w.store.commit_refs(SESSION, once(["att-1"])),
        lambda w, r: "att-1" not in _uncommitted(w) and r == 1,
    ),
    OnceCase(
        "tombstone/generator",
        lambda w: w.store.tombstone_nodes(once(["u1", "a1"])),
        lambda w, r: _graph_ids(w) == [] and r == 2,
    ),
    OnceCase(
        "enqueue/payloads-generator",
        lambda w: w.store.enqueue_queued_work(
            queued(payloads=once([QueuedWorkPayload.turn_input(TurnInput.text(t)) for t in ("a", "b")]))
        ),
        lambda w, r: [len(b.items) for b in w.store.list_queued_work(SESSION) if b.batch_id == r.batch_id] == [2],  # type: ignore[attr-defined]
    ),
    OnceCase(
        "enqueue/turn-input-items-generator",
        lambda w: w.store.enqueue_queued_work(turn_input(items=once([TextItem(text="a"), TextItem(text="b")]))),
        lambda w, r: (
            [
                b.items[0].payload.input.items  # type: ignore[union-attr]
                for b in w.store.list_queued_work(SESSION)
                if b.batch_id == r.batch_id  # type: ignore[attr-defined]
            ]
            == [[TextItem(text="a"), TextItem(text="b")]]
        ),
    ),
    OnceCase(
        "claim-by-ids/generator",
        lambda w: w.store.claim_ready_queued_work_by_batch_ids(**by_ids_args(w, batch_ids=once([w.free]))),
        lambda w, r: r is not None and r.batch_ids == [w.free],  # type: ignore[attr-defined]
    ),
    OnceCase(
        "claim-by-ids/tuple",
        lambda w: w.store.claim_ready_queued_work_by_batch_ids(**by_ids_args(w, batch_ids=(w.free,))),
        lambda w, r: r is not None and r.batch_ids == [w.free],  # type: ignore[attr-defined]
    ),
    OnceCase(
        "abandon/batches-generator",
        lambda w: w.store.abandon_queued_work_claim(claim_with(w, batches=once(list(w.claim.batches)))),
        lambda w, r: (
            (again := w.store.claim_ready_queued_work(**claim_args(max_batches=1))) is not None
            and again.batch_ids == [w.claimed]
        ),
    ),
    OnceCase(
        "renew/batches-generator",
        lambda w: w.store.renew_queued_work_claim(claim_with(w, batches=once(list(w.claim.batches))), LEASE_MS * 10),
        lambda w, r: _renewed(w),
    ),
]


def _renewed(w: World) -> bool:
    """After the original lease ran out, the renewed claim still holds its batch (and can complete it)."""
    w.clock.now += LEASE_MS + 1
    taken = w.store.claim_ready_queued_work(**claim_args(max_batches=1))
    return taken is not None and taken.batch_ids == [w.free]  # the claimed batch is still leased, so B is next


@pytest.mark.timeout(30)
@pytest.mark.parametrize("case", ONCE, ids=[case.id for case in ONCE])
def test_once_only_iterable_is_rejected_or_fully_applied(world: World, case: OnceCase) -> None:
    before = snapshot(world.path)
    try:
        result = case.op(world)
    except InvalidInput:
        assert snapshot(world.path) == before, "rejected, but the database changed"
        usable(world)
        return
    except Exception as exc:
        pytest.fail(f"raised {_describe(exc)}; expected InvalidInput or every item applied")
    assert case.applied(world, result), (
        f"accepted (returned {result!r:.200}) but not every item was applied: the iterable was consumed "
        f"by validation and then silently skipped"
    )


# ---------------------------------------------------------------------------
# values that may be accepted, but then must come back exactly (else InvalidInput, nothing written)


@dataclass(frozen=True)
class RoundTrip:
    id: str
    op: Callable[[World], object]
    check: Callable[[World], bool]


def _node_payload(w: World, node_id: str) -> Any:
    loaded = w.store.load_node(node_id)
    return None if loaded is None else loaded.payload


ROUND_TRIP: list[RoundTrip] = [
    RoundTrip(
        "payload-nan",
        lambda w: w.store.commit_runtime_state(with_nodes(node(payload={"x": NAN}))),
        lambda w: math.isnan(_node_payload(w, "n2")["x"]),
    ),
    RoundTrip(
        "payload-infinity",
        lambda w: w.store.commit_runtime_state(with_nodes(node(payload={"x": -math.inf}))),
        lambda w: _node_payload(w, "n2") == {"x": -math.inf},
    ),
    RoundTrip(
        "payload-int-keys",
        lambda w: w.store.commit_runtime_state(with_nodes(node(payload={1: "one", 2**62: "big"}))),
        lambda w: _node_payload(w, "n2") == {1: "one", 2**62: "big"},
    ),
    RoundTrip(
        "payload-nul-text",
        lambda w: w.store.commit_runtime_state(
            with_nodes(node(payload={"role": "user", "parts": [{"type": "text", "text": "a\x00b"}]}))
        ),
        lambda w: (
            _node_payload(w, "n2")["parts"][0]["text"] == "a\x00b"
            and (info := w.store.load_picker_info()) is not None
            and info.user_message_count == 2
        ),
    ),
    RoundTrip(
        "usage-source-nul",
        lambda w: w.store.commit_runtime_state(entry(source="s\x00rc")),
        lambda w: (
            (read := w.store.load_session()) is not None and any(e.source == "s\x00rc" for e in read.token_ledger)
        ),
    ),
    RoundTrip(
        "merge-group-nul",
        lambda w: w.store.enqueue_queued_work(queued(merge_key=MergeKey.group("g\x00h"))),
        lambda w: any(b.merge_key == MergeKey.group("g\x00h") for b in w.store.list_queued_work(SESSION)),
    ),
    RoundTrip(
        "merge-group-empty-name",
        lambda w: w.store.enqueue_queued_work(queued(merge_key=MergeKey.group(""))),
        lambda w: any(b.merge_key == MergeKey.group("") for b in w.store.list_queued_work(SESSION)),
    ),
    RoundTrip(
        "plugin-revision-2**63",
        lambda w: w.store.commit_runtime_state(checkpoint(plugin_snapshot_revision=2**63)),
        lambda w: (
            (read := w.store.load_session()) is not None
            and read.checkpoint is not None
            and read.checkpoint.plugin_snapshot_revision == 2**63
        ),
    ),
    RoundTrip(
        "usage-negative-delta",
        lambda w: w.store.commit_runtime_state(usage(input_tokens=-2)),
        lambda w: _ledger_input(w) == 10,
    ),
    RoundTrip(
        "meta-cwd-nul",
        lambda w: w.store.save_session_meta(meta(cwd="/tmp/a\x00b")),
        lambda w: (m := w.store.load_session_meta()) is not None and m.cwd == "/tmp/a\x00b",
    ),
    RoundTrip(
        "intent-uri-nul",
        lambda w: w.store.record_intent(intent(canonical_uri="file:///a\x00b")),
        lambda w: any(e.canonical_uri == "file:///a\x00b" for e in w.store.list_uncommitted(MAX_I64)),
    ),
]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("case", ROUND_TRIP, ids=[case.id for case in ROUND_TRIP])
def test_edge_value_is_rejected_or_round_trips(world: World, case: RoundTrip) -> None:
    before = snapshot(world.path)
    try:
        case.op(world)
    except InvalidInput:
        assert snapshot(world.path) == before, "rejected, but the database changed"
        usable(world)
        return
    except Exception as exc:
        pytest.fail(f"raised {_describe(exc)}; expected InvalidInput or an exact round trip")
    assert case.check(world), "accepted, but it does not read back as written"
    assert world.store.load_session() is not None  # the session still loads


# ---------------------------------------------------------------------------
# options: rejected at open, nothing created


OpenOp = Callable[[Path], object]

OPTIONS: list[tuple[str, OpenOp, str]] = [
    ("options/not-options", lambda d: Store.open(d / "s.db", "fast"), "options"),  # type: ignore[arg-type]
    ("options/durability-str", lambda d: Store.open(d / "s.db", StoreOptions(durability="FULL")), "durability"),  # type: ignore[arg-type]
    ("options/durability-none", lambda d: Store.open(d / "s.db", StoreOptions(durability=None)), "durability"),  # type: ignore[arg-type]
    ("options/gc-policy-none", lambda d: Store.open(d / "s.db", StoreOptions(gc_policy=None)), "gc_policy"),  # type: ignore[arg-type]
    ("options/gc-policy-str", lambda d: Store.open(d / "s.db", StoreOptions(gc_policy="never")), "gc_policy"),  # type: ignore[arg-type]
    (
        "options/grace-bool",
        lambda d: Store.open(d / "s.db", StoreOptions(gc_policy=GcPolicy(grace_ms=True))),
        "grace_ms",
    ),
    ("options/grace-nan", lambda d: Store.open(d / "s.db", StoreOptions(gc_policy=GcPolicy(grace_ms=NAN))), "grace_ms"),  # type: ignore[arg-type]
    (
        "options/grace-2**63",
        lambda d: Store.open(d / "s.db", StoreOptions(gc_policy=GcPolicy(grace_ms=2**63))),
        "grace_ms",
    ),
    (
        "options/auto-gc-negative",
        lambda d: Store.open(d / "s.db", StoreOptions(gc_policy=GcPolicy(auto_run_every_commits=-1))),
        "auto_run_every_commits",
    ),
    (
        "options/auto-gc-float",
        lambda d: Store.open(d / "s.db", StoreOptions(gc_policy=GcPolicy(auto_run_every_commits=1.5))),  # type: ignore[arg-type]
        "auto_run_every_commits",
    ),
    (
        "options/auto-gc-bool",
        lambda d: Store.open(d / "s.db", StoreOptions(gc_policy=GcPolicy(auto_run_every_commits=True))),
        "auto_run_every_commits",
    ),
    (
        "options/blob-profile-str",
        lambda d: Store.open(d / "s.db", StoreOptions(blob_profile="balanced")),  # type: ignore[arg-type]
        "blob_profile",
    ),
    ("options/blob-profile-none", lambda d: Store.open(d / "s.db", StoreOptions(blob_profile=None)), "blob_profile"),  # type: ignore[arg-type]
    ("options/clock-int", lambda d: Store.open(d / "s.db", StoreOptions(clock=42)), "clock"),  # type: ignore[arg-type]
    ("options/clock-str", lambda d: Store.open(d / "s.db", StoreOptions(clock="now")), "clock"),  # type: ignore[arg-type]
    ("options/busy-2**63", lambda d: Store.open(d / "s.db", StoreOptions(busy_timeout_ms=2**63)), "busy_timeout_ms"),
    ("options/busy-negative", lambda d: Store.open(d / "s.db", StoreOptions(busy_timeout_ms=-1)), "busy_timeout_ms"),
    ("options/busy-bool", lambda d: Store.open(d / "s.db", StoreOptions(busy_timeout_ms=True)), "busy_timeout_ms"),
    ("options/busy-float", lambda d: Store.open(d / "s.db", StoreOptions(busy_timeout_ms=1.5)), "busy_timeout_ms"),  # type: ignore[arg-type]
    ("options/busy-nan", lambda d: Store.open(d / "s.db", StoreOptions(busy_timeout_ms=NAN)), "busy_timeout_ms"),  # type: ignore[arg-type]
    ("options/busy-str", lambda d: Store.open(d / "s.db", StoreOptions(busy_timeout_ms="15000")), "busy_timeout_ms"),  # type: ignore[arg-type]
    ("memory/durability-str", lambda d: Store.memory(StoreOptions(durability="FULL")), "durability"),  # type: ignore[arg-type]
    ("memory/gc-policy-none", lambda d: Store.memory(StoreOptions(gc_policy=None)), "gc_policy"),  # type: ignore[arg-type]
    ("memory/clock-int", lambda d: Store.memory(StoreOptions(clock=42)), "clock"),  # type: ignore[arg-type]
    ("memory/not-options", lambda d: Store.memory("fast"), "options"),  # type: ignore[arg-type]
    (
        "factory/durability-str",
        lambda d: SqliteSessionStoreFactory(d / "root", StoreOptions(durability="FULL")).create_store("s"),  # type: ignore[arg-type]
        "durability",
    ),
    (
        "factory/gc-policy-none",
        lambda d: SqliteSessionStoreFactory(d / "root", StoreOptions(gc_policy=None)).create_store("s"),  # type: ignore[arg-type]
        "gc_policy",
    ),
    (
        "factory/not-options",
        lambda d: SqliteSessionStoreFactory(d / "root", "fast").create_store("s"),  # type: ignore[arg-type]
        "options",
    ),
    # -- paths
    ("path/nul", lambda d: Store.open(d / "a\x00b.db"), "path"),
    ("path/nul-readonly", lambda d: Store.open_readonly(d / "a\x00b.db"), "path"),
    ("path/none", lambda d: Store.open(None), "path"),  # type: ignore[arg-type]
    ("path/empty", lambda d: Store.open(""), "path"),
    ("path/int", lambda d: Store.open(5), "path"),  # type: ignore[arg-type]
    ("path/surrogate", lambda d: Store.open(f"{d}/\ud800.db"), "path"),
    ("path/directory", lambda d: Store.open(d / "adir"), "path"),
    ("path/directory-readonly", lambda d: Store.open_readonly(d / "adir"), "path"),
    ("path/missing-parent", lambda d: Store.open(d / "missing" / "s.db"), "path"),
    ("path/file-as-parent", lambda d: Store.open(d / "afile" / "s.db"), "path"),
    ("factory/root-is-a-file", lambda d: SqliteSessionStoreFactory(d / "afile").create_store("s"), "root"),
    ("factory/root-is-a-file-list", lambda d: SqliteSessionStoreFactory(d / "afile").list_sessions(), "root"),
    ("factory/root-is-a-file-delete", lambda d: SqliteSessionStoreFactory(d / "afile").delete_session("s"), "root"),
    ("factory/root-nul", lambda d: SqliteSessionStoreFactory(f"{d}/r\x00").create_store("s"), "root"),
    ("factory/root-none", lambda d: SqliteSessionStoreFactory(None).create_store("s"), "root"),  # type: ignore[arg-type]
    # -- factory session ids and arguments
    ("factory/id-surrogate", lambda d: SqliteSessionStoreFactory(d / "root").create_store(SURROGATE), "session_id"),
    ("factory/id-nul", lambda d: SqliteSessionStoreFactory(d / "root").create_store("a\x00b"), "session_id"),
    ("factory/id-empty", lambda d: SqliteSessionStoreFactory(d / "root").create_store(""), "session_id"),
    ("factory/id-none", lambda d: SqliteSessionStoreFactory(d / "root").create_store(None), "session_id"),  # type: ignore[arg-type]
    ("factory/id-bytes", lambda d: SqliteSessionStoreFactory(d / "root").create_store(b"s"), "session_id"),  # type: ignore[arg-type]
    # path_for_session("") is one of the reference's file-name vectors ("session-e3b0c44298fc1c14.db"): kept.
    ("factory/path-for-nul", lambda d: SqliteSessionStoreFactory(d / "root").path_for_session("a\x00"), "session_id"),
    (
        "factory/path-for-surrogate",
        lambda d: SqliteSessionStoreFactory(d / "root").path_for_session(SURROGATE),
        "session_id",
    ),
    ("factory/path-for-int", lambda d: SqliteSessionStoreFactory(d / "root").path_for_session(5), "session_id"),  # type: ignore[arg-type]
    ("factory/delete-empty", lambda d: SqliteSessionStoreFactory(d / "root").delete_session(""), "session_id"),
    ("factory/delete-nul", lambda d: SqliteSessionStoreFactory(d / "root").delete_session("a\x00"), "session_id"),
    ("factory/delete-none", lambda d: SqliteSessionStoreFactory(d / "root").delete_session(None), "session_id"),  # type: ignore[arg-type]
    ("factory/model-int", lambda d: SqliteSessionStoreFactory(d / "root").create_store("s", model=5), "model"),  # type: ignore[arg-type]
    (
        "factory/model-surrogate",
        lambda d: SqliteSessionStoreFactory(d / "root").create_store("s", model=SURROGATE),
        "model",
    ),
    (
        "factory/relation-str",
        lambda d: SqliteSessionStoreFactory(d / "root").create_store("s", relation="root"),  # type: ignore[arg-type]
        "relation",
    ),
    (
        "factory/relation-kind-unknown",
        lambda d: SqliteSessionStoreFactory(d / "root").create_store("s", relation=SessionRelation(kind="x")),  # type: ignore[arg-type]
        "relation",
    ),
    (
        "factory/relation-parent-surrogate",
        lambda d: SqliteSessionStoreFactory(d / "root").create_store("s", relation=SessionRelation.child(SURROGATE)),
        "relation",
    ),
]

EMPTY_ID_DECOY = "session-e3b0c44298fc1c14.db"  # where an empty session id would land by the naming scheme


@pytest.fixture
def open_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory with a subdirectory, a plain file and a factory root holding one session and a decoy."""
    (tmp_path / "adir").mkdir()
    (tmp_path / "afile").write_text("not a directory")
    root = tmp_path / "root"
    with SqliteSessionStoreFactory(root).create_store("existing", model="m"):
        pass
    (root / EMPTY_ID_DECOY).write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("operation", "field"), [pytest.param(op, f, id=i) for i, op, f in OPTIONS])
def test_hostile_option_or_path_is_invalid_input_and_leaves_no_file(
    open_dir: Path, operation: OpenOp, field: str
) -> None:
    existing = SqliteSessionStoreFactory(open_dir / "root").path_for_session("existing")
    existing_before = snapshot(existing)  # (a read-only reader leaves the -wal/-shm sidecars: list afterwards)
    before = listing(open_dir)
    created: list[Any] = []

    def call() -> object:
        result = operation(open_dir)
        created.append(result)
        return result

    try:
        expect_invalid_input(call, field)
    finally:
        for result in created:
            with contextlib.suppress(Exception):
                result.close()
    assert listing(open_dir) == before, "files appeared or vanished"
    assert snapshot(existing) == existing_before


def test_option_table_has_unique_ids() -> None:
    ids = [case[0] for case in OPTIONS]
    assert len(ids) == len(set(ids))


# ---------------------------------------------------------------------------
# the same through AsyncStore


ASYNC_CASES: list[tuple[str, Callable[[Path], Awaitable[object]], str]] = [
    ("async-open/durability-str", lambda d: AsyncStore.open(d / "s.db", StoreOptions(durability="FULL")), "durability"),  # type: ignore[arg-type]
    ("async-open/path-nul", lambda d: AsyncStore.open(d / "a\x00b.db"), "path"),
    ("async-memory/gc-policy-none", lambda d: AsyncStore.memory(StoreOptions(gc_policy=None)), "gc_policy"),  # type: ignore[arg-type]
]


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("operation", "field"), [pytest.param(op, f, id=i) for i, op, f in ASYNC_CASES])
def test_async_open_with_hostile_arguments_is_invalid_input(
    tmp_path: Path, operation: Callable[[Path], Awaitable[object]], field: str
) -> None:
    async def main() -> None:
        store: Any = None

        async def call() -> object:
            nonlocal store
            store = await operation(tmp_path)
            return store

        try:
            problem: str | None
            try:
                await call()
            except InvalidInput as exc:
                problem = None if field in exc.what else f"InvalidInput names {exc.what!r}, not {field!r}"
            except Exception as exc:
                problem = f"raised {_describe(exc)} instead of InvalidInput naming {field!r}"
            else:
                problem = f"accepted instead of raising InvalidInput naming {field!r}"
        finally:
            if store is not None:
                await store.close()
        assert problem is None, problem
        assert listing(tmp_path) == [], "files were left behind"

    asyncio.run(main())


@pytest.mark.timeout(30)
def test_async_commit_with_a_generator_of_completions_is_rejected_or_applied(world: World) -> None:
    async def main() -> str:
        store = AsyncStore(world.store)
        try:
            await store.commit_runtime_state(C(completed_queue_claims=once([world.claim.completion()])))
        except InvalidInput:
            return "rejected"
        return "applied" if world.claimed not in _queued_ids(world) else "skipped"

    before = snapshot(world.path)
    outcome = asyncio.run(main())
    assert outcome != "skipped", "the completion was consumed by validation and silently skipped: work not consumed"
    if outcome == "rejected":
        assert snapshot(world.path) == before


# ---------------------------------------------------------------------------
# clocks that misbehave: every operation that reads the time is InvalidInput naming the clock


def _raising_clock() -> int:
    raise RuntimeError("the clock broke")


BAD_CLOCKS: dict[str, Callable[[], Any]] = {
    "float": lambda: 1_700_000_000_000.5,
    "negative": lambda: -1,
    "2**63": lambda: 2**63,
    "bool": lambda: True,
    "none": lambda: None,
    "str": lambda: "1700000000000",
    "nan": lambda: NAN,
    "raises": _raising_clock,
}

CLOCK_OPS: dict[str, Callable[[Store], object]] = {
    "put_blob": lambda s: s.put_blob(b"timed"),
    "enqueue": lambda s: s.enqueue_queued_work(draft("timed", "k-t")),
    "commit": lambda s: s.commit_runtime_state(
        RuntimeCommit(session_id=SESSION, expected_head_revision=0, checkpoint=HydratedCheckpoint(tool_state={"t": 1}))
    ),
    "put_module_artifact": lambda s: s.put_module_artifact("mod:t", b"timed"),
}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("clock", BAD_CLOCKS.values(), ids=BAD_CLOCKS.keys())
def test_misbehaving_clock_is_invalid_input_naming_the_clock(tmp_path: Path, clock: Callable[[], Any]) -> None:
    path = tmp_path / "clock.db"
    try:
        store = Store.open(path, StoreOptions(clock=clock))
    except InvalidInput as exc:  # refusing the clock up front is fine too
        assert "clock" in exc.what
        assert listing(tmp_path) == [], "a rejected open left files behind"
        return
    with store:
        before = snapshot(path)
        problems = []
        for name, operation in CLOCK_OPS.items():
            problem = invalid_input_problem(lambda operation=operation: operation(store), "clock")  # type: ignore[misc]
            if problem is not None:
                problems.append(f"{name}: {problem}")
            if snapshot(path) != before:
                problems.append(f"{name}: the database changed")
                before = snapshot(path)
        assert not problems, "; ".join(problems)


# ---------------------------------------------------------------------------
# busy timeouts SQLite cannot represent: honoured or refused, never silently zero


@pytest.mark.timeout(60)
@pytest.mark.parametrize("busy_timeout_ms", [2**31, 2**32 + 500, 2**53])
def test_huge_busy_timeout_is_honoured_or_rejected(tmp_path: Path, busy_timeout_ms: int) -> None:
    path = tmp_path / "busy.db"
    try:
        store = Store.open(path, StoreOptions(busy_timeout_ms=busy_timeout_ms))
    except InvalidInput as exc:
        assert "busy_timeout_ms" in exc.what
        assert listing(tmp_path) == []
        return
    with store:
        holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        holder.execute("BEGIN IMMEDIATE")
        release = threading.Timer(0.5, lambda: holder.execute("ROLLBACK"))
        release.start()
        started = time.monotonic()
        try:
            store.put_blob(b"waits for the lock")
        except StoreError as exc:
            pytest.fail(
                f"busy_timeout_ms={busy_timeout_ms} was accepted but the call gave up after "
                f"{time.monotonic() - started:.3f}s with {_describe(exc)}: the timeout was not honoured"
            )
        finally:
            release.join()
            holder.close()
        assert time.monotonic() - started >= 0.4


# ---------------------------------------------------------------------------
# a FIFO where the database should be (in a child process: a hang fails the test, it cannot hang the suite)


def _open_in_child(kind: str, target: str, conn: multiprocessing.connection.Connection) -> None:
    try:
        if kind == "open":
            Store.open(target).close()
        elif kind == "open_readonly":
            Store.open_readonly(target).close()
        elif kind == "list_sessions":
            conn.send(("returned", [info.session_id for info in SqliteSessionStoreFactory(target).list_sessions()]))
            return
        conn.send(("returned", None))
    except InvalidInput as exc:
        conn.send(("InvalidInput", exc.what))
    except BaseException as exc:
        conn.send((f"{type(exc).__module__}.{type(exc).__name__}", str(exc)))


def run_in_child(kind: str, target: Path, timeout: float = 8.0) -> tuple[str, Any]:
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=_open_in_child, args=(kind, str(target), child), daemon=True)
    process.start()
    child.close()
    try:
        if not parent.poll(timeout):
            pytest.fail(f"{kind}({target.name}) hangs (no answer within {timeout} s)")
        answer: tuple[str, Any] = parent.recv()
        return answer
    finally:
        if process.is_alive():
            process.kill()
        process.join(5)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["open", "open_readonly"])
def test_fifo_at_the_database_path_is_invalid_input_without_hanging(tmp_path: Path, kind: str) -> None:
    fifo = tmp_path / "session.db"
    os.mkfifo(fifo)
    before = listing(tmp_path)
    outcome, detail = run_in_child(kind, fifo)
    assert outcome == "InvalidInput", f"{kind} of a FIFO raised {outcome}: {detail}"
    assert "path" in detail, f"InvalidInput names {detail!r}, not the path"
    assert stat.S_ISFIFO(fifo.lstat().st_mode), "the FIFO was replaced"
    assert listing(tmp_path) == before


@pytest.mark.timeout(60)
def test_factory_listing_with_a_fifo_named_like_a_session_does_not_hang(tmp_path: Path) -> None:
    root = tmp_path / "root"
    with SqliteSessionStoreFactory(root).create_store("real", model="m"):
        pass
    os.mkfifo(root / "fifo-0000000000000000.db")
    outcome, detail = run_in_child("list_sessions", root)
    assert outcome == "returned", f"list_sessions raised {outcome}: {detail}"
    assert detail == ["real"]


# ---------------------------------------------------------------------------
# a parent directory that is not writable (as root: a child that drops privileges to nobody)


def _open_unprivileged(target: str, as_nobody: bool, conn: multiprocessing.connection.Connection) -> None:
    try:
        if as_nobody:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
        Store.open(target).close()
        conn.send(("returned", None))
    except InvalidInput as exc:
        conn.send(("InvalidInput", exc.what))
    except BaseException as exc:
        conn.send((f"{type(exc).__module__}.{type(exc).__name__}", str(exc)))


@pytest.mark.timeout(60)
@pytest.mark.skipif(not hasattr(os, "setuid"), reason="POSIX only")
def test_unwritable_parent_directory_is_invalid_input_and_leaves_no_file() -> None:
    base = Path(tempfile.mkdtemp(prefix="lash-hostile-"))
    try:
        base.chmod(0o755)
        locked = base / "locked"
        locked.mkdir()
        locked.chmod(0o555)  # nobody (and a non-root owner) may enter but not create
        before = listing(base)
        as_nobody = os.geteuid() == 0
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        process = context.Process(target=_open_unprivileged, args=(str(locked / "s.db"), as_nobody, child), daemon=True)
        process.start()
        child.close()
        try:
            assert parent.poll(20), "the open hangs"
            outcome, detail = parent.recv()
        finally:
            if process.is_alive():
                process.kill()
            process.join(5)
        assert outcome == "InvalidInput", f"opening below an unwritable directory raised {outcome}: {detail}"
        assert "path" in detail
        assert listing(base) == before
    finally:
        with contextlib.suppress(OSError):
            (base / "locked").chmod(0o755)
        shutil.rmtree(base, ignore_errors=True)


# ---------------------------------------------------------------------------
# odd but valid session ids: accepted, kept inside the root, listed under their exact id


ODD_IDS = [
    "../../etc/passwd",
    "..",
    ".",
    "/",
    "a/b\\c",
    "CON",
    "nul.txt",
    " ",
    "\n\t",
    "-rf",
    "*.db",
    "%00",
    "😀" * 40,
    "x" * 768,  # the longest id (ids are index keys: at most 768 UTF-8 bytes)
    "session",
    "\u202eevil",
]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("session_id", ODD_IDS, ids=[repr(i)[:30] for i in ODD_IDS])
def test_odd_session_id_is_accepted_and_stays_inside_the_root(tmp_path: Path, session_id: str) -> None:
    root = tmp_path / "root"
    factory = SqliteSessionStoreFactory(root)
    with factory.create_store("neighbour"):
        pass
    path = factory.path_for_session(session_id)
    assert path.parent == root, f"{path} is not directly inside {root}"
    assert path.name.endswith(".db") and "/" not in path.name and "\\" not in path.name
    with factory.create_store(session_id, model="m") as store:
        stored = store.load_session_meta()
        assert stored is not None and stored.session_id == session_id
        assert store.path is not None and Path(store.path).resolve() == path.resolve()
    outside = sorted(p.name for p in tmp_path.iterdir())
    assert outside == ["root"], f"files appeared outside the root: {outside}"
    assert {info.session_id for info in factory.list_sessions()} >= {session_id, "neighbour"}
    factory.delete_session(session_id)
    assert not path.exists()
    assert [info.session_id for info in factory.list_sessions()] == ["neighbour"]


def test_a_session_id_over_the_limit_is_invalid_input_and_creates_nothing(tmp_path: Path) -> None:
    root = tmp_path / "root"
    with pytest.raises(InvalidInput) as raised:
        SqliteSessionStoreFactory(root).create_store("x" * 769)
    assert raised.value.what == "session_id"
    assert not root.exists()


def test_ids_that_sanitise_alike_get_distinct_files(tmp_path: Path) -> None:
    factory = SqliteSessionStoreFactory(tmp_path)
    ids = ["a/b", "a_b", "a:b", "a b", "A/B"]
    assert len({factory.path_for_session(i) for i in ids}) == len(ids)


# ---------------------------------------------------------------------------
# the lash-store command: hostile arguments and export files are one-line errors that change nothing


def lash_store(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lash_store.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONUTF8": "1"},
        check=False,
    )


@pytest.fixture
def cli_db(tmp_path: Path) -> Path:
    path = tmp_path / "cli.db"
    with Store.open(path) as store:
        store.commit_runtime_state(first_commit())
        store.put_blob(b"orphan")
    return path


@pytest.fixture(scope="module")
def cli_export(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The export of a small session (made once: every hostile import mutates a copy)."""
    path = tmp_path_factory.mktemp("export") / "exported.db"
    with Store.open(path) as store:
        store.commit_runtime_state(first_commit())
        store.put_blob(b"orphan")
        store.enqueue_queued_work(draft("queued", "k-q"))
        store.record_intent(intent())
        store.put_module_artifact("mod:1", b"module bytes")
    return _export(path)


def assert_one_line_error(result: subprocess.CompletedProcess[str], codes: tuple[int, ...]) -> None:
    assert "Traceback" not in result.stderr, f"a traceback instead of a one-line error:\n{result.stderr}"
    assert result.returncode in codes, f"exit {result.returncode}, expected {codes}; stderr: {result.stderr}"


CLI_USAGE: list[tuple[str, list[str], tuple[int, ...]]] = [
    ("gc-grace-negative", ["gc", "{db}", "--grace-ms", "-1"], (2,)),
    ("gc-grace-2**63", ["gc", "{db}", "--grace-ms", str(2**63)], (2,)),
    ("gc-grace-float", ["gc", "{db}", "--grace-ms", "1.5"], (2,)),
    ("gc-grace-nan", ["gc", "{db}", "--grace-ms", "nan"], (2,)),
    ("history-limit-zero", ["history", "{db}", "--limit", "0"], (2,)),
    ("history-limit-negative", ["history", "{db}", "--limit", "-3"], (2,)),
    ("history-limit-huge", ["history", "{db}", "--limit", str(10**30)], (0, 2)),  # "all of them" is fine too
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("args", "codes"), [(a, c) for _, a, c in CLI_USAGE], ids=[i for i, _, _ in CLI_USAGE])
def test_cli_hostile_arguments_are_usage_errors(cli_db: Path, args: list[str], codes: tuple[int, ...]) -> None:
    before = snapshot(cli_db)
    result = lash_store(*[a.replace("{db}", str(cli_db)) for a in args])
    assert_one_line_error(result, codes)
    assert snapshot(cli_db) == before


@pytest.mark.timeout(60)
@pytest.mark.parametrize("command", ["inspect", "history", "verify", "gc", "vacuum", "export"])
def test_cli_on_a_fifo_or_directory_is_a_one_line_error(tmp_path: Path, command: str) -> None:
    fifo = tmp_path / "fifo.db"
    os.mkfifo(fifo)
    (tmp_path / "dir.db").mkdir()
    for target in (fifo, tmp_path / "dir.db"):
        try:
            result = lash_store(command, str(target), timeout=20)
        except subprocess.TimeoutExpired:
            pytest.fail(f"lash-store {command} {target.name} hangs")
        assert_one_line_error(result, (3,))
        assert stat.S_ISFIFO(fifo.lstat().st_mode)


def _export(db: Path) -> dict[str, Any]:
    result = lash_store("export", str(db))
    assert result.returncode == 0, result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def _set(document: dict[str, Any], record: str, field: str, value: Any) -> dict[str, Any]:
    """Set ``field`` of the dump's ``record`` (the head, the metadata, or the first row of a list)."""
    target = document[record]
    (target[0] if isinstance(target, list) else target)[field] = value
    return document


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


HOSTILE_EXPORTS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "head-revision-str": lambda d: _set(d, "head", "head_revision", "1"),
    "head-revision-2**64": lambda d: _set(d, "head", "head_revision", 2**64),
    "head-revision-negative": lambda d: _set(d, "head", "head_revision", -5),
    "head-session-surrogate": lambda d: _set(d, "head", "session_id", "\ud800"),
    "head-body-garbage": lambda d: _set(d, "head", "body", _b64(b"\xc1\xc1\xc1")),
    "head-ledger-garbage": lambda d: _set(d, "head", "usage_ledger", _b64(b"\x91\xc1")),
    "node-id-int": lambda d: _set(d, "nodes", "node_id", 5),
    "node-id-surrogate": lambda d: _set(d, "nodes", "node_id", "\udfff"),
    "node-body-garbage": lambda d: _set(d, "nodes", "body", _b64(b"\xc1")),
    "node-body-not-base64": lambda d: _set(d, "nodes", "body", "!!!not base64!!!"),
    "blob-content-tampered": lambda d: _set(d, "blobs", "content", _b64(b"tampered")),
    "blob-size-float": lambda d: _set(d, "blobs", "raw_size", 1.5),
    "field-injection": lambda d: _set(d, "nodes", "node_id) VALUES (1); DROP TABLE blobs; --", "x"),
    "record-injection": lambda d: {**d, "blobs; DROP TABLE graph_nodes; --": d["blobs"]},
    "unknown-record": lambda d: {**d, "evil": [{"x": 1}]},
    "nodes-not-a-list": lambda d: {**d, "nodes": {"u1": {}}},
    "rows-not-objects": lambda d: {**d, "nodes": [["u1", None, False, None, ""]]},
    "duplicate-node": lambda d: {**d, "nodes": [*d["nodes"], d["nodes"][0]]},
    "format-version-99": lambda d: {**d, "version": 99},
    "not-an-object": lambda d: [d],
    "nested-too-deep": lambda d: {**d, "nodes": [[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]},
    "fence-2**63": lambda d: {**d, "fences": [{"session_id": "x", "last_fencing_token": 2**63}]},
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mutate", HOSTILE_EXPORTS.values(), ids=HOSTILE_EXPORTS.keys())
def test_cli_import_of_a_hostile_export_is_refused_or_faithful(
    cli_export: dict[str, Any], tmp_path: Path, mutate: Callable[[dict[str, Any]], Any]
) -> None:
    """Refused with a one-line error and no file, or (when SQLite's column affinity makes it the same data)
    imported as an exact copy of the original that ``verify`` accepts: never garbage in the store."""
    original = cli_export
    document = mutate(json.loads(json.dumps(cli_export)))
    source = tmp_path / "hostile.json"
    source.write_text(json.dumps(document))
    target_dir = tmp_path / "target"
    target_dir.mkdir()
    target = target_dir / "new.db"
    result = lash_store("import", str(source), str(target))
    assert_one_line_error(result, (0, 3))
    if result.returncode == 3:
        assert listing(target_dir) == [], f"a refused import left files: {listing(target_dir)}"
        return
    verified = lash_store("verify", str(target))
    assert verified.returncode == 0, f"the import was accepted but does not verify: {verified.stdout[-2000:]}"
    assert _export(target) == original, "the import was accepted but is not the original"

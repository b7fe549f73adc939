"""Public value types of lash-store.

Every type is a keyword-constructed ``msgspec.Struct``.  Opaque payloads
(``config``, ``agent_frames``, ``turn_state``, node payloads, tool state, ...)
are plain JSON-like values or ``bytes``; the store never interprets them beyond
the few fields documented on each type.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from typing import Any, Literal, NewType

import msgspec
from msgspec import Struct, field

__all__ = [
    "ArtifactKind",
    "AttachmentIntent",
    "AttachmentManifestEntry",
    "BlobArtifactDescriptor",
    "BlobRef",
    "DeliveryPolicy",
    "DurabilityTier",
    "GcReport",
    "GraphDelta",
    "HydratedCheckpoint",
    "ImageRefItem",
    "MergeKey",
    "NewBlob",
    "PersistedSessionRead",
    "PruneReport",
    "QueuedWorkBatch",
    "QueuedWorkBatchDraft",
    "QueuedWorkClaim",
    "QueuedWorkClaimBoundary",
    "QueuedWorkCompletion",
    "QueuedWorkItem",
    "QueuedWorkPayload",
    "RuntimeCommit",
    "RuntimeCommitResult",
    "RuntimeSessionState",
    "SessionCheckpoint",
    "SessionGraph",
    "SessionMeta",
    "SessionNode",
    "SessionListing",
    "SessionPage",
    "SessionPickerInfo",
    "SessionReadScope",
    "SessionRelation",
    "SlotPolicy",
    "StagedWrite",
    "StorageHint",
    "TextItem",
    "TokenLedgerEntry",
    "TokenUsage",
    "TurnCommitStamp",
    "TurnInput",
    "VacuumReport",
]

BlobRef = NewType("BlobRef", str)
"""Lowercase hex SHA-256 of a blob's raw content."""


class DurabilityTier(enum.Enum):
    """How long committed data lives: on disk, or only in this process."""

    DURABLE = "durable"
    INLINE = "inline"


# --------------------------------------------------------------------------
# Usage ledger


class TokenUsage(Struct, kw_only=True, frozen=True):
    """Token counters of one model call or an aggregate of calls."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    reasoning_tokens: int = 0

    def total(self) -> int:
        """Input + output + reasoning tokens (cached input is excluded)."""
        return self.input_tokens + self.output_tokens + self.reasoning_tokens

    def is_zero(self) -> bool:
        """True when all four counters are zero (such entries are dropped)."""
        return not (self.input_tokens or self.output_tokens or self.cached_input_tokens or self.reasoning_tokens)

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cached_input_tokens=self.cached_input_tokens + other.cached_input_tokens,
            reasoning_tokens=self.reasoning_tokens + other.reasoning_tokens,
        )


class TokenLedgerEntry(Struct, kw_only=True, frozen=True):
    """Usage attributed to a ``(source, model)`` pair."""

    source: str
    model: str
    usage: TokenUsage = TokenUsage()


# --------------------------------------------------------------------------
# Session graph


TagValue = str | int | float | bool | None
"""A node tag's value: a scalar, compared exactly (``1``, ``1.0``, ``True`` and ``"1"`` are four values)."""


class SessionNode(Struct, kw_only=True, frozen=True, omit_defaults=True):
    """One node of the conversation graph.

    A ``kind="message"`` node's payload is ``{"role": ..., "parts": [...]}``
    with text parts ``{"type": "text", "text": ...}``; everything else is opaque.

    Indexed fields (for runtimes that keep many records in one session, such as
    framework checkpoints): ``lane`` partitions nodes (``None``: no lane),
    ``sort_key`` orders them within a query (compared as code points),
    ``tags`` are scalar key/value pairs that :meth:`~lash_store.Store.query_nodes`
    filters on, and ``blob_refs`` name blobs the node keeps alive: they are GC
    roots while the node is live, together with every blob they reach through
    blob children.  Fields left at their defaults are not stored.
    """

    node_id: str
    parent_node_id: str | None = None
    kind: str = "message"
    payload: Any = None
    timestamp_ms: int | None = None
    agent_frame_id: str | None = None
    caused_by: Any = None
    lane: str | None = None
    sort_key: str | None = None
    tags: dict[str, TagValue] = field(default_factory=dict)
    blob_refs: list[str] = field(default_factory=list)


class SessionGraph(Struct, kw_only=True, frozen=True):
    """Nodes in graph (insertion) order plus the current leaf."""

    nodes: list[SessionNode] = field(default_factory=list)
    leaf_node_id: str | None = None


class GraphDelta(Struct, kw_only=True, frozen=True):
    """How a commit changes the graph: ``unchanged``, ``append`` or ``replace_full``."""

    kind: Literal["unchanged", "append", "replace_full"]
    nodes: list[SessionNode] = field(default_factory=list)
    leaf_node_id: str | None = None

    @classmethod
    def unchanged(cls, leaf_node_id: str | None = None) -> GraphDelta:
        """Keep every node; only move the leaf."""
        return cls(kind="unchanged", leaf_node_id=leaf_node_id)

    @classmethod
    def append(cls, nodes: Iterable[SessionNode], leaf_node_id: str | None) -> GraphDelta:
        """Add (or upsert) ``nodes`` and move the leaf."""
        return cls(kind="append", nodes=list(nodes), leaf_node_id=leaf_node_id)

    @classmethod
    def replace_full(cls, graph: SessionGraph) -> GraphDelta:
        """Replace the whole graph, tombstoned nodes included."""
        return cls(kind="replace_full", nodes=list(graph.nodes), leaf_node_id=graph.leaf_node_id)


class SessionReadScope(Struct, kw_only=True, frozen=True):
    """Which part of the graph ``load_session`` returns."""

    kind: Literal["full_graph", "active_path"] = "full_graph"
    leaf_node_id: str | None = None

    @classmethod
    def full_graph(cls) -> SessionReadScope:
        """Every live node, in insertion order."""
        return cls(kind="full_graph")

    @classmethod
    def active_path(cls, leaf_node_id: str | None = None) -> SessionReadScope:
        """The path from the root to ``leaf_node_id`` (default: the head's leaf)."""
        return cls(kind="active_path", leaf_node_id=leaf_node_id)


# --------------------------------------------------------------------------
# Checkpoints and blobs


class SessionCheckpoint(Struct, kw_only=True, frozen=True):
    """The checkpoint manifest: turn state plus references to snapshot blobs."""

    turn_state: Any = None
    tool_state_ref: str | None = None
    plugin_snapshot_ref: str | None = None
    plugin_snapshot_revision: int | None = None
    execution_state_ref: str | None = None

    def child_refs(self) -> list[str]:
        """The snapshot blobs this manifest points at."""
        refs = (self.tool_state_ref, self.plugin_snapshot_ref, self.execution_state_ref)
        return [ref for ref in refs if ref is not None]


class HydratedCheckpoint(Struct, kw_only=True, frozen=True):
    """A checkpoint with its snapshots as values.

    When a snapshot value is given it is stored and its ref computed; when
    only a ref is given the ref is kept as is.
    """

    turn_state: Any = None
    tool_state: Any = None
    tool_state_ref: str | None = None
    plugin_snapshot: Any = None
    plugin_snapshot_ref: str | None = None
    plugin_snapshot_revision: int | None = None
    execution_state: bytes | None = None
    execution_state_ref: str | None = None


class ArtifactKind(enum.Enum):
    """What a typed blob holds."""

    GENERIC_BLOB = "generic_blob"
    CHECKPOINT_MANIFEST = "checkpoint_manifest"
    TOOL_STATE = "tool_state"
    PLUGIN_SESSION_SNAPSHOT = "plugin_session_snapshot"
    EXECUTION_STATE_SNAPSHOT = "execution_state_snapshot"
    MODULE_ARTIFACT = "module_artifact"


class StorageHint(enum.Enum):
    """Storage hints; only ``COMPRESSIBLE`` changes how bytes are stored."""

    COMPRESSIBLE = "compressible"
    INLINE_PREFERRED = "inline_preferred"
    LARGE_PAYLOAD = "large_payload"


class BlobArtifactDescriptor(Struct, kw_only=True, frozen=True):
    """Kind and storage hints of a typed blob."""

    kind: ArtifactKind
    hints: frozenset[StorageHint] = frozenset()

    @property
    def compressible(self) -> bool:
        return StorageHint.COMPRESSIBLE in self.hints

    @classmethod
    def checkpoint_manifest(cls) -> BlobArtifactDescriptor:
        return cls(kind=ArtifactKind.CHECKPOINT_MANIFEST, hints=_COMPRESSIBLE)

    @classmethod
    def tool_state_snapshot(cls) -> BlobArtifactDescriptor:
        return cls(kind=ArtifactKind.TOOL_STATE, hints=_LARGE)

    @classmethod
    def plugin_session_snapshot(cls) -> BlobArtifactDescriptor:
        return cls(kind=ArtifactKind.PLUGIN_SESSION_SNAPSHOT, hints=_LARGE)

    @classmethod
    def execution_state_snapshot(cls) -> BlobArtifactDescriptor:
        return cls(kind=ArtifactKind.EXECUTION_STATE_SNAPSHOT, hints=_LARGE)

    @classmethod
    def module_artifact(cls) -> BlobArtifactDescriptor:
        return cls(kind=ArtifactKind.MODULE_ARTIFACT, hints=_LARGE)


_COMPRESSIBLE = frozenset({StorageHint.COMPRESSIBLE})
_LARGE = frozenset({StorageHint.COMPRESSIBLE, StorageHint.LARGE_PAYLOAD})


# --------------------------------------------------------------------------
# Commits


class NewBlob(Struct, kw_only=True, frozen=True):
    """A blob written inside a commit (hashed and compressed before the commit takes its lock).

    ``children`` names blobs this one refers to: GC keeps them while this blob
    is reachable (composite values such as chunk trees).  A child need not be
    stored yet, but it is never collected while a live parent names it.
    """

    content: bytes
    descriptor: BlobArtifactDescriptor | None = None
    children: list[str] = field(default_factory=list)


class StagedWrite(Struct, kw_only=True, frozen=True):
    """A pending write attached to an anchor (usually a node id that may not exist yet).

    Keyed by ``(anchor_id, task_id, idx)``: a write with ``idx >= 0`` is
    stored once (a repeat is ignored); one with ``idx < 0`` replaces the stored
    one.  ``value`` is any msgpack-encodable value, stored as given.
    """

    anchor_id: str
    task_id: str
    idx: int
    channel: str
    value: Any = None
    task_path: str = ""


class TurnCommitStamp(Struct, kw_only=True, frozen=True):
    """Makes a final turn commit exactly-once: same turn and hash replay the result."""

    session_id: str
    turn_id: str
    turn_commit_hash: str


class RuntimeCommitResult(Struct, kw_only=True, frozen=True):
    """What a successful commit produced."""

    head_revision: int
    checkpoint_ref: str
    manifest: SessionCheckpoint


# --------------------------------------------------------------------------
# Session metadata


class SessionRelation(Struct, kw_only=True, frozen=True):
    """Whether a session is a root or a child of another session."""

    kind: Literal["root", "child"] = "root"
    parent_session_id: str | None = None
    caused_by: Any = None

    @classmethod
    def root(cls) -> SessionRelation:
        return cls(kind="root")

    @classmethod
    def child(cls, parent_session_id: str, caused_by: Any = None) -> SessionRelation:
        return cls(kind="child", parent_session_id=parent_session_id, caused_by=caused_by)


class SessionMeta(Struct, kw_only=True, frozen=True):
    """Descriptive metadata of a session (``created_at`` is RFC 3339)."""

    session_id: str
    session_name: str
    created_at: str
    model: str
    cwd: str | None = None
    relation: SessionRelation = SessionRelation()


class SessionPickerInfo(Struct, kw_only=True, frozen=True):
    """What a session picker shows, maintained without decoding the graph."""

    session_id: str
    cwd: str | None
    relation: SessionRelation
    first_user_message: str
    user_message_count: int


class SessionListing(Struct, kw_only=True, frozen=True):
    """One session of a listing by recency: its picker info and when it was last updated (epoch ms).

    "Updated" is the last write to the session's file on SQLite and its last commit on PostgreSQL.
    """

    info: SessionPickerInfo
    updated_at_epoch_ms: int


class SessionPage(Struct, kw_only=True, frozen=True):
    """A page of sessions, most recently updated first; ``next_cursor`` fetches the next page (None: last).

    ``failures`` names sessions on this page's stretch that could not be read, one
    ``(where, message)`` each: reported, never silently left out.
    """

    sessions: list[SessionListing]
    next_cursor: str | None
    failures: list[tuple[str, str]] = field(default_factory=list)


class GcReport(Struct, kw_only=True, frozen=True):
    """Outcome of a garbage collection; ``skipped_reason`` is set when it deleted nothing on purpose."""

    root_count: int
    retained_blob_count: int
    deleted_blob_count: int
    skipped_reason: str | None = None


class PruneReport(Struct, kw_only=True, frozen=True):
    """Outcome of ``prune``: turn stamps committed before ``cutoff_epoch_ms`` were removed (or, dry, counted).

    ``cutoff_epoch_ms`` is ``None`` when no horizon was set: nothing was pruned.
    """

    dry_run: bool
    cutoff_epoch_ms: int | None
    turn_stamp_count: int


class VacuumReport(Struct, kw_only=True, frozen=True):
    """Outcome of ``vacuum``: how many tombstoned nodes were removed."""

    removed_node_count: int


class AttachmentIntent(Struct, kw_only=True, frozen=True):
    """Recorded before attachment bytes are written elsewhere."""

    attachment_id: str
    session_id: str
    canonical_uri: str
    intent_at_epoch_ms: int


class AttachmentManifestEntry(Struct, kw_only=True, frozen=True):
    """A row of the attachment manifest; ``committed_at_epoch_ms`` is None until a commit references it."""

    attachment_id: str
    session_id: str
    canonical_uri: str
    intent_at_epoch_ms: int
    committed_at_epoch_ms: int | None = None


# --------------------------------------------------------------------------
# Work queue


class DeliveryPolicy(enum.Enum):
    """When queued work may be delivered."""

    EARLIEST_SAFE_BOUNDARY = "earliest_safe_boundary"
    AFTER_CURRENT_TURN_COMMIT = "after_current_turn_commit"


class SlotPolicy(enum.Enum):
    """Whether a batch may share a claim with its neighbours."""

    JOIN = "join"
    EXCLUSIVE = "exclusive"


class QueuedWorkClaimBoundary(enum.Enum):
    """Where the claimer stands: idle, or at a checkpoint inside a running turn."""

    IDLE = "idle"
    ACTIVE_TURN_CHECKPOINT = "active_turn_checkpoint"


class MergeKey(Struct, kw_only=True, frozen=True):
    """Join batches group only with equal merge keys (``never`` equals ``never``)."""

    kind: Literal["never", "payload_default", "group"] = "never"
    name: str | None = None

    @classmethod
    def never(cls) -> MergeKey:
        return cls(kind="never")

    @classmethod
    def payload_default(cls) -> MergeKey:
        return cls(kind="payload_default")

    @classmethod
    def group(cls, name: str) -> MergeKey:
        return cls(kind="group", name=name)


class TextItem(Struct, kw_only=True, frozen=True, tag_field="type", tag="text"):
    """A text input item."""

    text: str


class ImageRefItem(Struct, kw_only=True, frozen=True, tag_field="type", tag="image_ref"):
    """An image input item; ``id`` is a key of ``TurnInput.image_blobs``."""

    id: str


class TurnInput(Struct, kw_only=True, frozen=True):
    """User input for a turn: text and image-ref items, image bytes, options."""

    items: list[TextItem | ImageRefItem] = field(default_factory=list)
    image_blobs: dict[str, bytes] = field(default_factory=dict)
    protocol_turn_options: Any = None
    trace_turn_id: str | None = None

    @classmethod
    def text(cls, text: str) -> TurnInput:
        return cls(items=[TextItem(text=text)])

    def with_image_ref(self, image_id: str, data: bytes) -> TurnInput:
        return msgspec.structs.replace(
            self,
            items=[*self.items, ImageRefItem(id=image_id)],
            image_blobs={**self.image_blobs, image_id: data},
        )


class QueuedWorkPayload(Struct, kw_only=True, frozen=True):
    """One queued item: a turn input, a session command or a process wake-up."""

    kind: Literal["turn_input", "session_command", "process_wake"]
    input: TurnInput | None = None
    command: Any = None
    wake: Any = None

    @classmethod
    def turn_input(cls, turn_input: TurnInput) -> QueuedWorkPayload:
        return cls(kind="turn_input", input=turn_input)

    @classmethod
    def session_command(cls, command: Any) -> QueuedWorkPayload:
        return cls(kind="session_command", command=command)

    @classmethod
    def process_wake(cls, wake: Any) -> QueuedWorkPayload:
        return cls(kind="process_wake", wake=wake)


class QueuedWorkBatchDraft(Struct, kw_only=True, frozen=True):
    """Input to ``enqueue_queued_work``."""

    session_id: str
    delivery_policy: DeliveryPolicy
    slot_policy: SlotPolicy
    payloads: list[QueuedWorkPayload] = field(default_factory=list)
    source_key: str | None = None
    merge_key: MergeKey = MergeKey()
    available_at_ms: int = 0

    @classmethod
    def new(
        cls,
        session_id: str,
        delivery_policy: DeliveryPolicy,
        slot_policy: SlotPolicy,
        payloads: Iterable[QueuedWorkPayload],
    ) -> QueuedWorkBatchDraft:
        return cls(
            session_id=session_id,
            delivery_policy=delivery_policy,
            slot_policy=slot_policy,
            payloads=list(payloads),
        )

    def with_source_key(self, source_key: str) -> QueuedWorkBatchDraft:
        return msgspec.structs.replace(self, source_key=source_key)

    def with_available_at_ms(self, available_at_ms: int) -> QueuedWorkBatchDraft:
        return msgspec.structs.replace(self, available_at_ms=available_at_ms)

    def with_merge_key(self, merge_key: MergeKey) -> QueuedWorkBatchDraft:
        return msgspec.structs.replace(self, merge_key=merge_key)


class QueuedWorkItem(Struct, kw_only=True, frozen=True):
    """A stored item; ``item_id`` is ``<batch_id>:item:<index>``."""

    item_id: str
    payload: QueuedWorkPayload


class QueuedWorkBatch(Struct, kw_only=True, frozen=True):
    """A stored batch as callers see it (claim state is never exposed)."""

    batch_id: str
    session_id: str
    enqueue_seq: int
    delivery_policy: DeliveryPolicy
    slot_policy: SlotPolicy
    merge_key: MergeKey
    available_at_ms: int
    enqueued_at_ms: int
    items: list[QueuedWorkItem] = field(default_factory=list)
    source_key: str | None = None


class QueuedWorkCompletion(Struct, kw_only=True, frozen=True):
    """Proof of a claim, carried by the commit that consumed its batches."""

    session_id: str
    claim_id: str
    lease_token: str
    batch_ids: list[str]
    fencing_token: int


class QueuedWorkClaim(Struct, kw_only=True, frozen=True):
    """A leased, fenced claim on one or more batches of one session."""

    session_id: str
    claim_id: str
    owner_id: str
    lease_token: str
    fencing_token: int
    claimed_at_epoch_ms: int
    expires_at_epoch_ms: int
    batches: list[QueuedWorkBatch]

    @property
    def batch_ids(self) -> list[str]:
        return [batch.batch_id for batch in self.batches]

    def completion(self) -> QueuedWorkCompletion:
        """The proof to put into ``RuntimeCommit.completed_queue_claims``."""
        return QueuedWorkCompletion(
            session_id=self.session_id,
            claim_id=self.claim_id,
            lease_token=self.lease_token,
            batch_ids=self.batch_ids,
            fencing_token=self.fencing_token,
        )

    def is_empty(self) -> bool:
        """True when every claimed batch has no items."""
        return all(not batch.items for batch in self.batches)


# --------------------------------------------------------------------------
# Commits and reads (after the queue types they reference)


class RuntimeCommit(Struct, kw_only=True, frozen=True):
    """One atomic write of a runtime turn.

    ``expected_head_revision=None`` commits unconditionally; an integer is a
    compare-and-set against the stored head revision (0 = no head yet).
    ``new_blobs`` are stored in the same transaction (so nodes naming them in
    ``blob_refs`` never exist without them), and ``tombstone_node_ids`` are
    hidden in it (after the graph delta is applied; unknown ids are ignored).
    """

    session_id: str
    expected_head_revision: int | None
    config: Any = field(default_factory=dict)
    agent_frames: list[Any] = field(default_factory=list)
    current_agent_frame_id: str = ""
    graph: GraphDelta = GraphDelta(kind="unchanged")
    checkpoint: HydratedCheckpoint = HydratedCheckpoint()
    usage_deltas: list[TokenLedgerEntry] = field(default_factory=list)
    turn_commit: TurnCommitStamp | None = None
    completed_queue_claims: list[QueuedWorkCompletion] = field(default_factory=list)
    committed_attachment_ids: list[str] = field(default_factory=list)
    new_blobs: list[NewBlob] = field(default_factory=list)
    tombstone_node_ids: list[str] = field(default_factory=list)

    @classmethod
    def persisted_state(
        cls, state: RuntimeSessionState, usage_deltas: Sequence[TokenLedgerEntry] = ()
    ) -> RuntimeCommit:
        """Build the commit that persists ``state`` on top of ``state.head_revision``.

        The graph is replaced in full when the state has never been committed
        or demands it; otherwise only the leaf is recorded.
        """
        if state.head_revision is None or state.graph_replace_required:
            graph = GraphDelta.replace_full(state.session_graph)
        else:
            graph = GraphDelta.unchanged(state.session_graph.leaf_node_id)
        return cls(
            session_id=state.session_id,
            expected_head_revision=state.head_revision,
            config=state.config,
            agent_frames=list(state.agent_frames),
            current_agent_frame_id=state.current_agent_frame_id,
            graph=graph,
            checkpoint=HydratedCheckpoint(
                turn_state=state.turn_state,
                tool_state=state.tool_state_snapshot,
                tool_state_ref=state.tool_state_ref,
                plugin_snapshot=state.plugin_snapshot,
                plugin_snapshot_ref=state.plugin_snapshot_ref,
                plugin_snapshot_revision=state.plugin_snapshot_revision,
                execution_state=state.execution_state_snapshot,
                execution_state_ref=state.execution_state_ref,
            ),
            usage_deltas=list(usage_deltas),
        )

    def with_turn_commit(self, stamp: TurnCommitStamp) -> RuntimeCommit:
        return msgspec.structs.replace(self, turn_commit=stamp)

    def completing_queue_claim(self, completion: QueuedWorkCompletion) -> RuntimeCommit:
        return msgspec.structs.replace(self, completed_queue_claims=[*self.completed_queue_claims, completion])

    def completing_queue_claims(self, completions: Iterable[QueuedWorkCompletion]) -> RuntimeCommit:
        return msgspec.structs.replace(self, completed_queue_claims=[*self.completed_queue_claims, *completions])

    def with_committed_attachments(self, attachment_ids: Iterable[str]) -> RuntimeCommit:
        return msgspec.structs.replace(self, committed_attachment_ids=[*self.committed_attachment_ids, *attachment_ids])


class PersistedSessionRead(Struct, kw_only=True, frozen=True):
    """A session as loaded from one read snapshot."""

    session_id: str
    head_revision: int
    config: Any
    agent_frames: list[Any]
    current_agent_frame_id: str
    graph: SessionGraph
    checkpoint_ref: str | None
    checkpoint: HydratedCheckpoint | None
    token_ledger: list[TokenLedgerEntry]


class RuntimeSessionState(Struct, kw_only=True):
    """A runtime's in-memory view of a session; a convenient builder for commits."""

    session_id: str = "root"
    head_revision: int | None = None
    config: Any = field(default_factory=dict)
    agent_frames: list[Any] = field(default_factory=list)
    current_agent_frame_id: str = ""
    session_graph: SessionGraph = SessionGraph()
    graph_replace_required: bool = False
    turn_state: Any = field(default_factory=dict)
    tool_state_snapshot: Any = None
    tool_state_ref: str | None = None
    plugin_snapshot: Any = None
    plugin_snapshot_ref: str | None = None
    plugin_snapshot_revision: int | None = None
    execution_state_snapshot: bytes | None = None
    execution_state_ref: str | None = None

    @classmethod
    def from_read(cls, read: PersistedSessionRead) -> RuntimeSessionState:
        """Rebuild the runtime view from a loaded session."""
        checkpoint = read.checkpoint or HydratedCheckpoint()
        return cls(
            session_id=read.session_id,
            head_revision=read.head_revision,
            config=read.config,
            agent_frames=list(read.agent_frames),
            current_agent_frame_id=read.current_agent_frame_id,
            session_graph=read.graph,
            turn_state=checkpoint.turn_state,
            tool_state_snapshot=checkpoint.tool_state,
            tool_state_ref=checkpoint.tool_state_ref,
            plugin_snapshot=checkpoint.plugin_snapshot,
            plugin_snapshot_ref=checkpoint.plugin_snapshot_ref,
            plugin_snapshot_revision=checkpoint.plugin_snapshot_revision,
            execution_state_snapshot=checkpoint.execution_state,
            execution_state_ref=checkpoint.execution_state_ref,
        )

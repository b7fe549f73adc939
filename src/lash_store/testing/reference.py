"""A pure-Python, in-memory reference implementation of the whole store contract.

:class:`ReferenceStore` is the oracle of the property-based stateful tests: it
has the same public methods, results and errors as :class:`lash_store.Store`,
but keeps everything in plain dicts and lists and favours clarity over speed.

What decides *what* is written is shared with the real backends and reused
here, so the contract lives in one place: input validation
(:mod:`lash_store.core.validate`), commit validation, encoding and ordering
(:func:`~lash_store.core.commit.prepare_commit` /
:func:`~lash_store.core.commit.apply_commit`, driven through a dict-based
:class:`~lash_store.core.commit.CommitTx`), the checkpoint writer and reader,
GC marking (:func:`~lash_store.core.gc.mark_live`), queue validation and claim
grouping (:mod:`lash_store.core.queue`) and the picker's view of a node.  The
storage primitives themselves -- rows, transactions, queue operations and
reads -- are written out here in plain Python.

Transactions are modelled by copying the whole state before a write and
restoring it if the write raises, so a failed operation never leaves a partial
write behind.  Blobs are stored as raw bytes (the blob profile only changes
how real backends store bytes, never what they return).  The durability tier
is :attr:`~lash_store.model.DurabilityTier.INLINE` and the GC grace period
defaults to 0, as for ``Store.memory()``.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import msgspec

from lash_store.core import codec
from lash_store.core import queue as rules
from lash_store.core.checkpoint import decode_manifest, encode_checkpoint, hydrate
from lash_store.core.commit import HeadRow, apply_commit, prepare_commit
from lash_store.core.gc import mark_live
from lash_store.core.graph import EncodedNode, decode_node
from lash_store.core.usage import Totals, add_usage, ledger
from lash_store.core.validate import (
    check_count,
    check_id,
    check_ids,
    check_instance,
    check_ms,
    check_optional_id,
    check_text,
    saturating_add,
)
from lash_store.errors import CorruptData, InvalidInput, QueuedWorkClaimExpired, StoreClosed
from lash_store.model import (
    AttachmentIntent,
    AttachmentManifestEntry,
    BlobArtifactDescriptor,
    BlobRef,
    DurabilityTier,
    GcReport,
    HydratedCheckpoint,
    PersistedSessionRead,
    QueuedWorkBatch,
    QueuedWorkBatchDraft,
    QueuedWorkClaim,
    QueuedWorkClaimBoundary,
    QueuedWorkCompletion,
    RuntimeCommit,
    RuntimeCommitResult,
    SessionCheckpoint,
    SessionGraph,
    SessionMeta,
    SessionNode,
    SessionPickerInfo,
    SessionReadScope,
    SessionRelation,
    TokenLedgerEntry,
    TurnCommitStamp,
    VacuumReport,
)
from lash_store.options import BlobProfile, StoreOptions

__all__ = ["ReferenceStore"]

log = logging.getLogger("lash_store")

_MODULE_DESCRIPTOR = BlobArtifactDescriptor.module_artifact()

# Blobs are kept raw; this profile never compresses, so encoded content is the raw content.
_RAW_PROFILE = BlobProfile.LOW_LATENCY


# ---------------------------------------------------------------------------
# Rows


@dataclass
class _Blob:
    """A stored blob: its raw content and when it was (last) put, for the GC grace period."""

    content: bytes
    created_at_ms: int


@dataclass
class _Node:
    """A graph node row; the position in ``_State.nodes`` is its graph order."""

    node_id: str
    parent_node_id: str | None
    body: bytes
    user_text: str | None
    tombstoned: bool = False


@dataclass
class _Batch:
    """A queued-work batch row with its hidden claim state."""

    enqueue_seq: int
    batch_id: str
    session_id: str
    source_key: str | None
    delivery_policy: str
    slot_policy: str
    merge_key: str
    available_at_ms: int
    enqueued_at_ms: int
    payloads: bytes
    claim_id: str | None = None
    claim_owner_id: str | None = None
    claim_token: str | None = None
    claim_fencing_token: int = 0
    claim_claimed_at_ms: int = 0
    claim_expires_at_ms: int = 0

    def is_free(self, now_ms: int) -> bool:
        """Unclaimed, or the claim's lease ran out (expiry is inclusive)."""
        return self.claim_token is None or self.claim_expires_at_ms <= now_ms

    def is_held_by(self, session_id: str, claim_id: str, lease_token: str) -> bool:
        """Whether the row still carries this claim's identity (expiry is not looked at)."""
        return self.session_id == session_id and self.claim_id == claim_id and self.claim_token == lease_token

    def snapshot(self) -> QueuedWorkBatch:
        """The batch as callers see it (claim state hidden), decoded by the shared row decoder."""
        return rules.decode_batch(
            (
                self.enqueue_seq,
                self.batch_id,
                self.session_id,
                self.source_key,
                self.delivery_policy,
                self.slot_policy,
                self.merge_key,
                self.available_at_ms,
                self.enqueued_at_ms,
                self.payloads,
            )
        )


@dataclass
class _Attachment:
    """An attachment manifest row."""

    session_id: str
    canonical_uri: str
    intent_at_ms: int
    committed_at_ms: int | None = None


@dataclass
class _Meta:
    """The session metadata row; the relation is kept encoded, as a backend stores it."""

    session_id: str
    session_name: str
    created_at: str
    model: str
    cwd: str | None
    relation: bytes


@dataclass
class _State:
    """Everything one store holds.  Dicts keep insertion order, which is the order rows were added."""

    blobs: dict[str, _Blob] = field(default_factory=dict)
    head: HeadRow | None = None
    nodes: dict[str, _Node] = field(default_factory=dict)
    usage: Totals = field(default_factory=dict)
    meta: _Meta | None = None
    turn_commits: dict[tuple[str, str], bytes] = field(default_factory=dict)
    batches: dict[str, _Batch] = field(default_factory=dict)
    last_enqueue_seq: int = 0
    last_fencing_token: dict[str, int] = field(default_factory=dict)
    attachments: dict[str, _Attachment] = field(default_factory=dict)
    modules: dict[str, str] = field(default_factory=dict)

    def put_blob(self, ref: str, content: bytes, now_ms: int) -> None:
        """First writer's bytes win (they are equal anyway); a re-put refreshes the GC age."""
        existing = self.blobs.get(ref)
        if existing is None:
            self.blobs[ref] = _Blob(content, now_ms)
        else:
            existing.created_at_ms = max(existing.created_at_ms, now_ms)

    def put_encoded(self, blob: codec.EncodedBlob, now_ms: int) -> None:
        self.put_blob(blob.hash, codec.decode_blob(blob.hash, blob.encoding, blob.content, blob.raw_size), now_ms)

    def live_nodes(self) -> list[_Node]:
        return [node for node in self.nodes.values() if not node.tombstoned]

    def add_usage(self, entries: Iterable[TokenLedgerEntry]) -> None:
        add_usage(self.usage, entries)

    def upsert_nodes(self, nodes: Iterable[EncodedNode]) -> None:
        """New ids go to the end; an existing id is replaced in place and un-tombstoned."""
        for encoded in nodes:
            self.nodes[encoded.node_id] = _Node(
                encoded.node_id, encoded.parent_node_id, encoded.body, encoded.user_text
            )

    def session_batches(self, session_id: str) -> list[_Batch]:
        """The session's batches in FIFO (``enqueue_seq``) order."""
        rows = [batch for batch in self.batches.values() if batch.session_id == session_id]
        return sorted(rows, key=lambda batch: batch.enqueue_seq)

    def stamp_attachments(self, session_id: str, attachment_ids: Iterable[str], now_ms: int) -> int:
        """First stamp wins, and only for rows of ``session_id``; returns how many rows changed."""
        changed = 0
        for attachment_id in attachment_ids:
            row = self.attachments.get(attachment_id)
            if row is not None and row.session_id == session_id and row.committed_at_ms is None:
                row.committed_at_ms = now_ms
                changed += 1
        return changed


class _DictCommitTx:
    """The :class:`~lash_store.core.commit.CommitTx` primitives on a :class:`_State`."""

    def __init__(self, state: _State) -> None:
        self.state = state

    def read_head(self) -> HeadRow | None:
        return self.state.head

    def find_turn_commit(self, session_id: str, turn_id: str) -> bytes | None:
        return self.state.turn_commits.get((session_id, turn_id))

    def claimed_batches(self, session_id: str, claim_id: str, lease_token: str) -> dict[str, int]:
        return {
            batch.batch_id: batch.claim_fencing_token
            for batch in self.state.batches.values()
            if batch.is_held_by(session_id, claim_id, lease_token)
        }

    def put_blobs(self, blobs: list[codec.EncodedBlob], now_ms: int) -> None:
        for blob in blobs:
            self.state.put_encoded(blob, now_ms)

    def add_usage(self, entries: list[TokenLedgerEntry]) -> None:
        self.state.add_usage(entries)

    def replace_graph(self, nodes: list[EncodedNode]) -> None:
        self.state.nodes = {}
        self.state.upsert_nodes(nodes)

    def upsert_nodes(self, nodes: list[EncodedNode]) -> None:
        self.state.upsert_nodes(nodes)

    def write_head(self, head: HeadRow) -> None:
        self.state.head = head

    def delete_claimed_batches(self, completion: QueuedWorkCompletion) -> int:
        deleted = 0
        for batch_id in completion.batch_ids:
            batch = self.state.batches.get(batch_id)
            if (
                batch is not None
                and batch.is_held_by(completion.session_id, completion.claim_id, completion.lease_token)
                and batch.claim_fencing_token == completion.fencing_token
            ):
                del self.state.batches[batch_id]
                deleted += 1
        return deleted

    def stamp_attachments(self, session_id: str, attachment_ids: list[str], now_ms: int) -> None:
        self.state.stamp_attachments(session_id, attachment_ids, now_ms)

    def record_turn_commit(self, stamp: TurnCommitStamp, record: bytes, now_ms: int) -> None:
        key = (stamp.session_id, stamp.turn_id)
        assert key not in self.state.turn_commits, "apply_commit records a turn stamp only once"
        self.state.turn_commits[key] = record


# ---------------------------------------------------------------------------
# The store


class ReferenceStore:
    """The whole store contract in plain Python, for use as a test oracle.

    Same public methods, signatures, results and errors as
    :class:`lash_store.Store`; ``copy_session_into`` takes another
    :class:`ReferenceStore` as its target.
    """

    def __init__(self, options: StoreOptions | None = None) -> None:
        self.options = _check_options(options or StoreOptions(blob_profile=BlobProfile.LOW_LATENCY))
        grace = self.options.gc_policy.grace_ms
        self._grace_ms = 0 if grace is None else grace
        self._state: _State | None = _State()
        self._commits_since_gc = 0

    # -- lifecycle -------------------------------------------------------

    @classmethod
    def memory(cls, options: StoreOptions | None = None) -> ReferenceStore:
        """Same as the constructor; mirrors ``Store.memory``."""
        return cls(options)

    def close(self) -> None:
        """Drop the state; later calls raise :class:`StoreClosed`."""
        self._state = None

    def __enter__(self) -> ReferenceStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def path(self) -> Path | None:
        return None

    @property
    def durability_tier(self) -> DurabilityTier:
        return DurabilityTier.INLINE

    def _now(self) -> int:
        return check_ms("clock()", self.options.now_ms())

    @contextmanager
    def _read(self) -> Iterator[_State]:
        if self._state is None:
            raise StoreClosed()
        yield self._state

    @contextmanager
    def _write(self) -> Iterator[_State]:
        """A transaction: the state is restored if the body raises (anything, ``KeyboardInterrupt`` too)."""
        if self._state is None:
            raise StoreClosed()
        saved = copy.deepcopy(self._state)
        try:
            yield self._state
        except BaseException:
            self._state = saved
            raise

    # -- commits ---------------------------------------------------------

    def commit_runtime_state(self, commit: RuntimeCommit) -> RuntimeCommitResult:
        """Persist one runtime turn atomically, in the order :func:`apply_commit` defines."""
        plan = prepare_commit(commit, _RAW_PROFILE)
        with self._write() as state:
            result = apply_commit(_DictCommitTx(state), plan, self._now())
        self._maybe_auto_gc()
        return result

    def _maybe_auto_gc(self) -> None:
        every = self.options.gc_policy.auto_run_every_commits
        if not every:
            return
        self._commits_since_gc += 1
        if self._commits_since_gc % every == 0:
            try:
                self.gc_unreachable()
            except Exception:  # the commit already succeeded; never change its outcome
                log.warning("automatic GC after commit failed", exc_info=True)

    # -- reads -----------------------------------------------------------

    def load_session(self, scope: SessionReadScope | None = None) -> PersistedSessionRead | None:
        """Head, graph (full or active path), hydrated checkpoint and usage ledger."""
        scope = check_instance("scope", scope or SessionReadScope.full_graph(), SessionReadScope)
        check_optional_id("scope.leaf_node_id", scope.leaf_node_id)
        with self._read() as state:
            head = state.head
            if head is None:
                return None
            body = codec.decode("session head", head.body, codec.HeadBody)
            if scope.kind == "active_path":
                graph = _active_path(state, scope.leaf_node_id or head.leaf_node_id)
            else:
                nodes = [decode_node(node.node_id, node.body) for node in state.live_nodes()]
                graph = SessionGraph(nodes=nodes, leaf_node_id=_live_leaf(state, head.leaf_node_id))
            checkpoint = _load_checkpoint(state, head.checkpoint_ref) if head.checkpoint_ref else None
            token_ledger = ledger(state.usage)
        return PersistedSessionRead(
            session_id=head.session_id,
            head_revision=head.head_revision,
            config=body.config,
            agent_frames=body.agent_frames,
            current_agent_frame_id=body.current_agent_frame_id,
            graph=graph,
            checkpoint_ref=head.checkpoint_ref,
            checkpoint=checkpoint,
            token_ledger=token_ledger,
        )

    def load_node(self, node_id: str) -> SessionNode | None:
        """One live (not tombstoned) node, or ``None``."""
        check_id("node_id", node_id)
        with self._read() as state:
            node = state.nodes.get(node_id)
            return None if node is None or node.tombstoned else decode_node(node_id, node.body)

    def tombstone_nodes(self, node_ids: Iterable[str]) -> int:
        """Hide live nodes (unknown or already hidden ids are ignored); returns how many were hidden."""
        ids = check_ids("node_ids", node_ids)
        if not ids:
            return 0
        hidden = 0
        with self._write() as state:
            for node_id in ids:
                node = state.nodes.get(node_id)
                if node is not None and not node.tombstoned:
                    node.tombstoned = True
                    hidden += 1
        return hidden

    def vacuum(self) -> VacuumReport:
        """Physically remove tombstoned nodes.

        Vacuuming never changes what reads return: a head leaf naming a
        removed (tombstoned) node already read as no leaf, and is cleared so
        that it keeps reading as no leaf.
        """
        with self._write() as state:
            removed = [node.node_id for node in state.nodes.values() if node.tombstoned]
            for node_id in removed:
                del state.nodes[node_id]
            head = state.head
            if head is not None and head.leaf_node_id in removed:
                state.head = msgspec.structs.replace(head, leaf_node_id=None)
        return VacuumReport(removed_node_count=len(removed))

    # -- metadata --------------------------------------------------------

    def save_session_meta(self, meta: SessionMeta) -> None:
        """Write (replace) the session's descriptive metadata."""
        check_instance("meta", meta, SessionMeta)
        check_id("meta.session_id", meta.session_id)
        for name in ("session_name", "created_at", "model"):
            check_text(f"meta.{name}", getattr(meta, name))
        if meta.cwd is not None:
            check_text("meta.cwd", meta.cwd)
        relation = codec.encode("meta.relation", check_instance("meta.relation", meta.relation, SessionRelation))
        with self._write() as state:
            state.meta = _Meta(meta.session_id, meta.session_name, meta.created_at, meta.model, meta.cwd, relation)

    def load_session_meta(self) -> SessionMeta | None:
        with self._read() as state:
            meta = state.meta
        if meta is None:
            return None
        return SessionMeta(
            session_id=meta.session_id,
            session_name=meta.session_name,
            created_at=meta.created_at,
            model=meta.model,
            cwd=meta.cwd,
            relation=codec.decode("session meta relation", meta.relation, SessionRelation),
        )

    def load_picker_info(self) -> SessionPickerInfo | None:
        """First user message (first live user node in graph order) and the live user-message count."""
        with self._read() as state:
            meta = state.meta
            if meta is None:
                return None
            user_texts = [node.user_text for node in state.live_nodes() if node.user_text is not None]
        return SessionPickerInfo(
            session_id=meta.session_id,
            cwd=meta.cwd,
            relation=codec.decode("session meta relation", meta.relation, SessionRelation),
            first_user_message=user_texts[0] if user_texts else "",
            user_message_count=len(user_texts),
        )

    def graph_node_count(self) -> int:
        """Live (not tombstoned) nodes."""
        with self._read() as state:
            return len(state.live_nodes())

    # -- blobs and checkpoints -------------------------------------------

    def put_blob(self, content: bytes) -> BlobRef:
        """Store raw bytes; returns their SHA-256 ref."""
        return self._put_blob(codec.encode_blob(content, None, _RAW_PROFILE))

    def put_artifact_blob(self, descriptor: BlobArtifactDescriptor, content: bytes) -> BlobRef:
        """Store a typed blob (the descriptor only matters to how real backends store bytes)."""
        descriptor = codec.check_descriptor(descriptor)
        return self._put_blob(codec.encode_blob(content, descriptor, _RAW_PROFILE))

    def _put_blob(self, blob: codec.EncodedBlob) -> BlobRef:
        with self._write() as state:
            state.put_encoded(blob, self._now())
        return BlobRef(blob.hash)

    def get_blob(self, ref: str) -> bytes | None:
        """A blob's raw content, ``None`` if absent."""
        check_id("ref", ref)
        with self._read() as state:
            blob = state.blobs.get(ref)
            return None if blob is None else blob.content

    def put_checkpoint(self, hydrated: HydratedCheckpoint) -> tuple[BlobRef, SessionCheckpoint]:
        """Store a checkpoint's snapshots and manifest; returns ``(checkpoint_ref, manifest)``."""
        encoded, ref, manifest = encode_checkpoint(hydrated, _RAW_PROFILE, "hydrated")
        with self._write() as state:
            now = self._now()
            for blob in encoded:
                state.put_encoded(blob, now)
        return BlobRef(ref), manifest

    def get_checkpoint(self, ref: str) -> HydratedCheckpoint | None:
        """A hydrated checkpoint; refs of missing children are still reported."""
        check_id("ref", ref)
        with self._read() as state:
            return _load_checkpoint(state, ref)

    # -- garbage collection ----------------------------------------------

    def gc_unreachable(self) -> GcReport:
        """Delete blobs that no root reaches and that are at least ``grace_ms`` old.

        Deletes nothing (and says why) when the head or its rooted manifest
        is present but does not decode.
        """
        with self._write() as state:
            marking = mark_live(lambda: state.head, lambda ref: _blob_content(state, ref))
            root_count = len(marking.live) + len(state.modules)
            if marking.skipped_reason is not None:
                log.warning("GC skipped: %s", marking.skipped_reason)
                return GcReport(
                    root_count=root_count,
                    retained_blob_count=len(state.blobs),
                    deleted_blob_count=0,
                    skipped_reason=marking.skipped_reason,
                )
            pinned = set(state.modules.values())
            cutoff = self._now() - self._grace_ms
            doomed = [
                ref
                for ref, blob in state.blobs.items()
                if blob.created_at_ms <= cutoff and ref not in marking.live and ref not in pinned
            ]
            for ref in doomed:
                del state.blobs[ref]
            return GcReport(root_count=root_count, retained_blob_count=len(state.blobs), deleted_blob_count=len(doomed))

    # -- attachment write-ahead manifest ---------------------------------

    def record_intent(self, intent: AttachmentIntent) -> None:
        """Record an intent; re-recording an uncommitted id refreshes it, a committed row never changes."""
        check_instance("intent", intent, AttachmentIntent)
        check_id("intent.attachment_id", intent.attachment_id)
        check_id("intent.session_id", intent.session_id)
        check_text("intent.canonical_uri", intent.canonical_uri)
        check_ms("intent.intent_at_epoch_ms", intent.intent_at_epoch_ms)
        with self._write() as state:
            row = state.attachments.get(intent.attachment_id)
            if row is None:
                state.attachments[intent.attachment_id] = _Attachment(
                    intent.session_id, intent.canonical_uri, intent.intent_at_epoch_ms
                )
            elif row.committed_at_ms is None:
                row.session_id = intent.session_id
                row.canonical_uri = intent.canonical_uri
                row.intent_at_ms = max(row.intent_at_ms, intent.intent_at_epoch_ms)

    def commit_refs(self, session_id: str, attachment_ids: Iterable[str]) -> int:
        """Mark intents of ``session_id`` committed (first stamp wins); returns how many changed."""
        check_id("session_id", session_id)
        ids = check_ids("attachment_ids", attachment_ids)
        if not ids:
            return 0
        with self._write() as state:
            return state.stamp_attachments(session_id, ids, self._now())

    def list_uncommitted(self, older_than_epoch_ms: int) -> list[AttachmentManifestEntry]:
        """Uncommitted intents recorded at or before ``older_than_epoch_ms``, oldest first (ties by id)."""
        check_ms("older_than_epoch_ms", older_than_epoch_ms)
        with self._read() as state:
            rows = [
                (row.intent_at_ms, attachment_id, row)
                for attachment_id, row in state.attachments.items()
                if row.committed_at_ms is None and row.intent_at_ms <= older_than_epoch_ms
            ]
        rows.sort(key=lambda item: (item[0], item[1]))
        return [
            AttachmentManifestEntry(
                attachment_id=attachment_id,
                session_id=row.session_id,
                canonical_uri=row.canonical_uri,
                intent_at_epoch_ms=row.intent_at_ms,
            )
            for _, attachment_id, row in rows
        ]

    def forget(self, attachment_id: str) -> None:
        """Drop a manifest row, whatever its state; a missing row is fine."""
        check_id("attachment_id", attachment_id)
        with self._write() as state:
            state.attachments.pop(attachment_id, None)

    # -- module artifacts ------------------------------------------------

    def put_module_artifact(self, module_ref: str, data: bytes) -> BlobRef:
        """Pin a module's bytes under ``module_ref`` (a GC root until forgotten)."""
        check_id("module_ref", module_ref)
        blob = codec.encode_blob(data, _MODULE_DESCRIPTOR, _RAW_PROFILE)
        with self._write() as state:
            state.put_encoded(blob, self._now())
            state.modules[module_ref] = blob.hash
        return BlobRef(blob.hash)

    def get_module_artifact(self, module_ref: str) -> bytes | None:
        """A pinned module's bytes; ``None`` if never pinned, :class:`CorruptData` if its blob is gone."""
        check_id("module_ref", module_ref)
        with self._read() as state:
            ref = state.modules.get(module_ref)
            if ref is None:
                return None
            content = _blob_content(state, ref)
        if content is None:
            raise CorruptData(f"module artifact {module_ref!r}", f"blob {ref} is missing")
        return content

    def forget_module_artifact(self, module_ref: str) -> None:
        """Unpin a module; its blob becomes collectable."""
        check_id("module_ref", module_ref)
        with self._write() as state:
            state.modules.pop(module_ref, None)

    # -- fork ------------------------------------------------------------

    def copy_session_into(self, target: ReferenceStore, *, session_id: str | None = None) -> None:
        """Fork this session into an empty ``target``: head, graph (tombstones too), usage and every live blob.

        ``session_id`` rebinds the copy to another session id (default: keep
        this session's id).  Copied blobs count as fresh in the target.
        """
        check_instance("target", target, ReferenceStore)
        check_optional_id("session_id", session_id)
        with self._read() as state:
            head = state.head
            if head is None:
                raise InvalidInput("source", "has no session head to copy")
            marking = mark_live(lambda: head, lambda ref: _blob_content(state, ref))
            if marking.skipped_reason is not None:
                raise CorruptData("session head", marking.skipped_reason)
            wanted = set(marking.live) | set(state.modules.values())
            blobs = {ref: blob.content for ref, blob in state.blobs.items() if ref in wanted}
            modules = dict(state.modules)
            nodes = [copy.deepcopy(node) for node in state.nodes.values()]
            usage = ledger(state.usage)
        bound = session_id or head.session_id
        with target._write() as target_state:
            if target_state.head is not None:
                raise InvalidInput("target", "already holds a session head; fork into an empty store")
            now = target._now()
            for ref, content in blobs.items():
                existing = target_state.blobs.get(ref)
                if existing is None:
                    target_state.blobs[ref] = _Blob(content, now)
                else:
                    existing.created_at_ms = now
            target_state.modules.update(modules)
            target_state.nodes = {node.node_id: node for node in nodes}
            target_state.add_usage(usage)
            target_state.head = msgspec.structs.replace(head, session_id=bound)

    # -- work queue ------------------------------------------------------

    def enqueue_queued_work(self, draft: QueuedWorkBatchDraft) -> QueuedWorkBatch:
        """Add a batch; with a source key this is idempotent while that batch exists."""
        payloads = rules.check_draft(draft)
        with self._write() as state:
            if draft.source_key is not None:
                for batch in state.session_batches(draft.session_id):
                    if batch.source_key == draft.source_key:
                        return batch.snapshot()  # returned as stored; the draft's other fields are ignored
            state.last_enqueue_seq += 1  # never reused
            batch = _Batch(
                enqueue_seq=state.last_enqueue_seq,
                batch_id=rules.new_batch_id(),
                session_id=draft.session_id,
                source_key=draft.source_key,
                delivery_policy=draft.delivery_policy.value,
                slot_policy=draft.slot_policy.value,
                merge_key=rules.merge_key_text(draft.merge_key),
                available_at_ms=draft.available_at_ms,
                enqueued_at_ms=self._now(),
                payloads=payloads,
            )
            state.batches[batch.batch_id] = batch
            return batch.snapshot()

    def claim_ready_queued_work(
        self,
        session_id: str,
        owner_id: str,
        boundary: QueuedWorkClaimBoundary,
        lease_ttl_ms: int,
        max_batches: int,
    ) -> QueuedWorkClaim | None:
        """Lease the next ready group of batches, or ``None`` when nothing is claimable."""
        rules.check_claim_request(session_id, owner_id, boundary, lease_ttl_ms)
        check_count("max_batches", max_batches)
        if max_batches == 0:
            return None
        return self._claim(session_id, owner_id, boundary, lease_ttl_ms, max_batches, None)

    def claim_ready_queued_work_by_batch_ids(
        self,
        session_id: str,
        owner_id: str,
        boundary: QueuedWorkClaimBoundary,
        lease_ttl_ms: int,
        batch_ids: Sequence[str],
    ) -> QueuedWorkClaim | None:
        """Claim exactly ``batch_ids`` if they are the group the normal rule picks next; else ``None``, no trace."""
        rules.check_claim_request(session_id, owner_id, boundary, lease_ttl_ms)
        wanted = check_ids("batch_ids", batch_ids)
        if not wanted:
            return None
        return self._claim(session_id, owner_id, boundary, lease_ttl_ms, len(wanted), wanted)

    def _claim(
        self,
        session_id: str,
        owner_id: str,
        boundary: QueuedWorkClaimBoundary,
        lease_ttl_ms: int,
        max_batches: int,
        wanted: list[str] | None,
    ) -> QueuedWorkClaim | None:
        with self._write() as state:
            now = self._now()
            candidates = [
                batch.snapshot()
                for batch in state.session_batches(session_id)
                if batch.available_at_ms <= now and batch.is_free(now)
            ]
            group = rules.select_group(candidates, boundary, max_batches)
            if not group or (wanted is not None and [batch.batch_id for batch in group] != wanted):
                return None
            fence = state.last_fencing_token.get(session_id, 0) + 1  # per-session, monotonic
            state.last_fencing_token[session_id] = fence
            claim_id, token = rules.new_claim_id(), rules.new_lease_token()
            expires = saturating_add(now, lease_ttl_ms)
            for snapshot in group:
                row = state.batches[snapshot.batch_id]
                row.claim_id = claim_id
                row.claim_owner_id = owner_id
                row.claim_token = token
                row.claim_fencing_token = fence
                row.claim_claimed_at_ms = now
                row.claim_expires_at_ms = expires
        return QueuedWorkClaim(
            session_id=session_id,
            claim_id=claim_id,
            owner_id=owner_id,
            lease_token=token,
            fencing_token=fence,
            claimed_at_epoch_ms=now,
            expires_at_epoch_ms=expires,
            batches=group,
        )

    def renew_queued_work_claim(self, claim: QueuedWorkClaim, lease_ttl_ms: int) -> QueuedWorkClaim:
        """Extend the lease of every batch of the claim, or raise :class:`QueuedWorkClaimExpired` and change nothing.

        The claim must still own exactly its listed batches (no more, no
        fewer, no repeats), each with the claim's fencing token.  An expired
        lease that nobody reclaimed is revived.
        """
        rules.check_claim(claim)
        check_ms("lease_ttl_ms", lease_ttl_ms)
        with self._write() as state:
            now = self._now()
            owned = {
                batch.batch_id: batch
                for batch in state.batches.values()
                if batch.is_held_by(claim.session_id, claim.claim_id, claim.lease_token)
            }
            listed = claim.batch_ids
            if (
                len(set(listed)) != len(listed)
                or set(owned) != set(listed)
                or any(batch.claim_fencing_token != claim.fencing_token for batch in owned.values())
            ):
                raise QueuedWorkClaimExpired(claim.session_id, claim.claim_id)
            expires = saturating_add(now, lease_ttl_ms)
            for batch in owned.values():
                batch.claim_expires_at_ms = expires
        return msgspec.structs.replace(claim, expires_at_epoch_ms=expires)

    def abandon_queued_work_claim(self, claim: QueuedWorkClaim) -> int:
        """Release every row the claim still holds; a stale or unknown claim is a no-op.  Returns rows released."""
        rules.check_claim(claim)
        released = 0
        with self._write() as state:
            for batch in state.batches.values():
                if batch.is_held_by(claim.session_id, claim.claim_id, claim.lease_token):
                    batch.claim_id = None
                    batch.claim_owner_id = None
                    batch.claim_token = None
                    batch.claim_claimed_at_ms = 0
                    batch.claim_expires_at_ms = 0  # the fencing token stays
                    released += 1
        return released

    def cancel_queued_work_batch(self, session_id: str, batch_id: str) -> QueuedWorkBatch | None:
        """Remove a batch that is not live-claimed (delayed and expired ones too); ``None`` if claimed or gone."""
        check_id("session_id", session_id)
        check_id("batch_id", batch_id)
        with self._write() as state:
            now = self._now()
            batch = state.batches.get(batch_id)
            if batch is None or batch.session_id != session_id or not batch.is_free(now):
                return None
            snapshot = batch.snapshot()
            del state.batches[batch_id]
            return snapshot

    def list_queued_work(self, session_id: str) -> list[QueuedWorkBatch]:
        """Every batch of the session in FIFO order, claimed or not, ready or delayed."""
        check_id("session_id", session_id)
        with self._read() as state:
            return [batch.snapshot() for batch in state.session_batches(session_id)]

    def list_pending_queued_work(self, session_id: str) -> list[QueuedWorkBatch]:
        """Batches not live-claimed now (delayed ones included), in FIFO order."""
        check_id("session_id", session_id)
        with self._read() as state:
            now = self._now()
            return [batch.snapshot() for batch in state.session_batches(session_id) if batch.is_free(now)]


# ---------------------------------------------------------------------------
# Helpers


def _check_options(options: StoreOptions) -> StoreOptions:
    check_instance("options", options, StoreOptions)
    check_instance("options.blob_profile", options.blob_profile, BlobProfile)
    check_count("options.busy_timeout_ms", options.busy_timeout_ms)
    every = options.gc_policy.auto_run_every_commits
    if every is not None:
        check_count("options.gc_policy.auto_run_every_commits", every)
    if options.gc_policy.grace_ms is not None:
        check_ms("options.gc_policy.grace_ms", options.gc_policy.grace_ms)
    return options


def _blob_content(state: _State, ref: str) -> bytes | None:
    blob = state.blobs.get(ref)
    return None if blob is None else blob.content


def _load_checkpoint(state: _State, ref: str) -> HydratedCheckpoint | None:
    content = _blob_content(state, ref)
    if content is None:
        return None
    return hydrate(decode_manifest(ref, content), lambda child: _blob_content(state, child))


def _live_leaf(state: _State, leaf: str | None) -> str | None:
    """A tombstoned leaf reads as no leaf; a leaf naming an unknown node is reported as stored."""
    if leaf is None:
        return None
    node = state.nodes.get(leaf)
    return None if node is not None and node.tombstoned else leaf


def _active_path(state: _State, leaf: str | None) -> SessionGraph:
    """Walk from the leaf up through live parents, stopping at a missing or tombstoned parent or a cycle."""
    leaf = _live_leaf(state, leaf)
    if leaf is None:
        return SessionGraph()
    path: list[SessionNode] = []
    seen: set[str] = set()
    current = state.nodes.get(leaf)
    while current is not None and not current.tombstoned and current.node_id not in seen:
        seen.add(current.node_id)
        path.append(decode_node(current.node_id, current.body))
        parent = current.parent_node_id
        current = state.nodes.get(parent) if parent is not None else None
    path.reverse()
    return SessionGraph(nodes=path, leaf_node_id=leaf)

"""The public interface of a session store, as Protocols.

:class:`SessionStoreAPI` is what every synchronous store offers (``Store`` on
SQLite, ``PostgresStore``, the in-memory ``ReferenceStore``) and what the
conformance suite exercises; :class:`AsyncSessionStoreAPI` is the same
interface as coroutines (``AsyncStore``).  The async protocol and
``AsyncStore``'s methods are generated from this file by
``scripts/generate_async.py`` (a test checks they are current), so the two
never drift apart.  mypy checks that every store satisfies its protocol
(``lash_store/_typecheck.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from lash_store.effects import EffectJournalPruneReport, EffectJournalRecord, EffectScope
from lash_store.host_events import (
    HostEventOccurrenceRecord,
    HostEventOccurrenceRequest,
    HostEventPruneReport,
    TriggerDeliveryReservation,
    TriggerSubscriptionDraft,
    TriggerSubscriptionFilter,
    TriggerSubscriptionRecord,
)
from lash_store.model import (
    AttachmentIntent,
    AttachmentManifestEntry,
    BlobArtifactDescriptor,
    BlobRef,
    DurabilityTier,
    GcReport,
    HydratedCheckpoint,
    PersistedSessionRead,
    PruneReport,
    QueuedWorkBatch,
    QueuedWorkBatchDraft,
    QueuedWorkClaim,
    QueuedWorkClaimBoundary,
    QueuedWorkCompletion,
    QueuedWorkDeadLetter,
    RekeyReport,
    RuntimeCommit,
    RuntimeCommitResult,
    SessionCheckpoint,
    SessionMeta,
    SessionNode,
    SessionPickerInfo,
    SessionReadScope,
    StagedWrite,
    TagValue,
    VacuumReport,
)
from lash_store.processes import (
    ProcessAwaitOutput,
    ProcessEvent,
    ProcessEventAppendRequest,
    ProcessEventAppendResult,
    ProcessExternalRef,
    ProcessHandleDescriptor,
    ProcessHandleGrant,
    ProcessHandleGrantEntry,
    ProcessLease,
    ProcessLeaseCompletion,
    ProcessPruneReport,
    ProcessRecord,
    ProcessRegistration,
    ProcessScope,
    ProcessSessionDeleteReport,
)

if TYPE_CHECKING:
    from lash_store.service.diagnostics import RawRows
    from lash_store.service.effects.service import ScopedEffectController
    from lash_store.service.transfer import SessionDump

__all__ = ["AsyncProcessRegistryAPI", "AsyncSessionStoreAPI", "ProcessRegistryAPI", "SessionStoreAPI"]


class SessionStoreAPI(Protocol):
    """A session store (SPEC §5 and §6)."""

    @property
    def path(self) -> Path | None:
        """The database file, or ``None`` for stores that have none."""
        ...

    @property
    def durability_tier(self) -> DurabilityTier: ...

    # @generate-async-start
    def close(self) -> None:
        """Close the store; later calls raise ``StoreClosed``.  Closing twice is harmless."""
        ...

    def commit_runtime_state(self, commit: RuntimeCommit) -> RuntimeCommitResult:
        """Persist one runtime turn atomically."""
        ...

    def load_session(self, scope: SessionReadScope | None = None) -> PersistedSessionRead | None:
        """Head, graph (full or active path), hydrated checkpoint and usage, from one snapshot."""
        ...

    def load_node(self, node_id: str) -> SessionNode | None:
        """One live (not tombstoned) node, or ``None``."""
        ...

    def tombstone_nodes(self, node_ids: Iterable[str]) -> int:
        """Hide nodes from every read; returns how many were hidden."""
        ...

    def vacuum(self) -> VacuumReport:
        """Physically remove tombstoned nodes."""
        ...

    def query_nodes(
        self,
        *,
        kind: str | None = None,
        lane: str | None = None,
        sort_before: str | None = None,
        sort_key: str | None = None,
        tags: Mapping[str, TagValue] | None = None,
        limit: int | None = None,
    ) -> list[SessionNode]:
        """Live nodes by kind, lane, sort key and tags, newest (largest sort key) first."""
        ...

    def walk_ancestors(self, node_id: str, max_depth: int) -> list[SessionNode]:
        """A live node and up to ``max_depth`` live ancestors, nearest first (cycle-guarded)."""
        ...

    def put_staged_writes(
        self, writes: Iterable[StagedWrite], *, held_queue_claims: Iterable[QueuedWorkCompletion] = ()
    ) -> int:
        """Store pending writes in one transaction (``idx >= 0`` kept once, ``idx < 0`` replaced).

        ``held_queue_claims`` fence the write as they fence a commit (see ``RuntimeCommit``).
        """
        ...

    def load_staged_writes(self, anchor_ids: Iterable[str], channels: Iterable[str] | None = None) -> list[StagedWrite]:
        """Staged writes of the anchors (optionally only some channels), in the order first stored."""
        ...

    def delete_staged_writes(self, anchor_ids: Iterable[str]) -> int:
        """Drop the staged writes of the anchors; returns how many."""
        ...

    def graph_node_count(self) -> int:
        """Live (not tombstoned) nodes."""
        ...

    def save_session_meta(self, meta: SessionMeta) -> None:
        """Write (replace) the session's descriptive metadata."""
        ...

    def load_session_meta(self) -> SessionMeta | None:
        """The session's metadata, or ``None``."""
        ...

    def load_picker_info(self) -> SessionPickerInfo | None:
        """What a session picker shows, or ``None`` without metadata."""
        ...

    def ensure_session_meta(self, meta: SessionMeta) -> bool:
        """Write the metadata unless the session has some (never overwritten); True if written."""
        ...

    def put_blob(self, content: bytes) -> BlobRef:
        """Store raw bytes; returns their SHA-256 ref."""
        ...

    def put_artifact_blob(self, descriptor: BlobArtifactDescriptor, content: bytes) -> BlobRef:
        """Store a typed blob (compressed when it pays)."""
        ...

    def get_blob(self, ref: str) -> bytes | None:
        """A blob's raw content, or ``None``."""
        ...

    def get_blobs(self, refs: Iterable[str]) -> dict[str, bytes]:
        """Several blobs' raw content from one snapshot, by ref; absent refs are left out."""
        ...

    def put_checkpoint(self, hydrated: HydratedCheckpoint) -> tuple[BlobRef, SessionCheckpoint]:
        """Store a checkpoint's snapshots and manifest."""
        ...

    def get_checkpoint(self, ref: str) -> HydratedCheckpoint | None:
        """A hydrated checkpoint, or ``None``."""
        ...

    def gc_unreachable(self, *, dry_run: bool = False) -> GcReport:
        """Delete (or with ``dry_run`` only count) blobs no root reaches, past the grace period."""
        ...

    def record_intent(self, intent: AttachmentIntent) -> None:
        """Record that attachment bytes are about to be written."""
        ...

    def commit_refs(self, session_id: str, attachment_ids: Iterable[str]) -> int:
        """Mark intents committed (first stamp wins); returns how many changed."""
        ...

    def list_uncommitted(self, older_than_epoch_ms: int) -> list[AttachmentManifestEntry]:
        """Uncommitted intents recorded at or before the instant, oldest first."""
        ...

    def forget(self, attachment_id: str) -> None:
        """Drop a manifest row."""
        ...

    def put_module_artifact(self, module_ref: str, data: bytes) -> BlobRef:
        """Pin a module's bytes (a GC root until forgotten)."""
        ...

    def get_module_artifact(self, module_ref: str) -> bytes | None:
        """A pinned module's bytes, or ``None``."""
        ...

    def forget_module_artifact(self, module_ref: str) -> None:
        """Unpin a module."""
        ...

    def gc_plan(self, *, dry_run: bool = True, grace_ms: int | None = None) -> tuple[GcReport, int]:
        """GC (or a dry run of it) with the stored bytes it deletes; ``grace_ms`` overrides the grace period."""
        ...

    def prune(self, *, dry_run: bool = False, turn_stamps_older_than_ms: int | None = None) -> PruneReport:
        """Remove turn stamps older than the retention horizon (argument, else the options'); dry runs count."""
        ...

    def rekey(self, *, batch_size: int = 500) -> RekeyReport:
        """Encryption at rest: re-seal every stored value under the key ring's current key, in batches; resumable."""
        ...

    def raw_rows(self, *, content: bool = False) -> RawRows:
        """Every stored row, undecoded, from one snapshot (for tools that look at damage)."""
        ...

    def verify(self) -> list[dict[str, Any]]:
        """Check everything the store holds; one entry per check, each listing its problems."""
        ...

    def describe_backend(self) -> dict[str, Any]:
        """What the backend is (file, server, schema) and its own figures."""
        ...

    def compact(self) -> dict[str, Any]:
        """Give space back after deletions where the backend can (SQLite VACUUM)."""
        ...

    def copy_session_into(self, target: SessionStoreAPI, *, session_id: str | None = None) -> None:
        """Fork this session into an empty store of any backend."""
        ...

    def export_session(self) -> SessionDump:
        """Everything the store holds, in the backend-neutral dump format."""
        ...

    def import_session(self, dump: SessionDump) -> None:
        """Load a dump into this empty store in one transaction."""
        ...

    def enqueue_queued_work(self, draft: QueuedWorkBatchDraft) -> QueuedWorkBatch:
        """Add a batch (idempotent by source key while it exists)."""
        ...

    def claim_ready_queued_work(
        self,
        session_id: str,
        owner_id: str,
        boundary: QueuedWorkClaimBoundary,
        lease_ttl_ms: int,
        max_batches: int,
    ) -> QueuedWorkClaim | None:
        """Lease the next ready group of batches, or ``None``."""
        ...

    def claim_ready_queued_work_by_batch_ids(
        self,
        session_id: str,
        owner_id: str,
        boundary: QueuedWorkClaimBoundary,
        lease_ttl_ms: int,
        batch_ids: Sequence[str],
    ) -> QueuedWorkClaim | None:
        """Claim exactly these batches if they are the group the rule picks next, or ``None``."""
        ...

    def renew_queued_work_claim(self, claim: QueuedWorkClaim, lease_ttl_ms: int) -> QueuedWorkClaim:
        """Extend every batch's lease, or raise ``QueuedWorkClaimExpired``."""
        ...

    def abandon_queued_work_claim(
        self, claim: QueuedWorkClaim, error: str | None = None, *, counts_as_attempt: bool = True
    ) -> int:
        """Release a claim (a failed attempt, ``error`` kept for the dead-letter list); returns rows released.

        ``counts_as_attempt=False`` hands the batches back untried: the claim's attempt is uncounted and they
        are offered again at once, with no backoff.
        """
        ...

    def cancel_queued_work_batch(self, session_id: str, batch_id: str) -> QueuedWorkBatch | None:
        """Remove a batch that is not live-claimed."""
        ...

    def list_queued_work(self, session_id: str) -> list[QueuedWorkBatch]:
        """Every batch of the session, FIFO."""
        ...

    def list_pending_queued_work(self, session_id: str) -> list[QueuedWorkBatch]:
        """Batches not live-claimed now, FIFO."""
        ...

    def list_dead_letters(self, session_id: str) -> list[QueuedWorkDeadLetter]:
        """Batches set aside after their last allowed attempt failed (``PoisonPolicy``), FIFO."""
        ...

    def get_dead_letter(self, session_id: str, batch_id: str) -> QueuedWorkDeadLetter | None:
        """One dead letter, or ``None`` if the batch is not on the dead-letter list."""
        ...

    def requeue_dead_letter(self, session_id: str, batch_id: str) -> QueuedWorkBatch | None:
        """Put a dead letter back in the queue, attempts reset; ``None`` if it is not one."""
        ...

    def drop_dead_letter(self, session_id: str, batch_id: str) -> QueuedWorkDeadLetter | None:
        """Delete a dead letter and return it; ``None`` if it is not one."""
        ...

    # @generate-async-end


class ProcessRegistryAPI(Protocol):
    """A process registry (SPEC §9; reference (a) §a.4)."""

    @property
    def durability_tier(self) -> DurabilityTier: ...

    # @generate-async-start ProcessRegistryAPI
    def close(self) -> None:
        """Close the registry; later calls raise ``StoreClosed``.  Closing twice is harmless."""
        ...

    def register_process(self, registration: ProcessRegistration) -> ProcessRecord:
        """Register a process (idempotent by id and registration hash)."""
        ...

    def set_external_ref(self, process_id: str, external_ref: ProcessExternalRef) -> ProcessRecord:
        """Record where an external system runs the process."""
        ...

    def get_process(self, process_id: str) -> ProcessRecord | None:
        """The record, or ``None``."""
        ...

    def list_non_terminal(self) -> list[ProcessRecord]:
        """Every running process, by id (the recovery worklist)."""
        ...

    def list_processes(
        self, *, state: str | None = None, after: str | None = None, limit: int | None = None
    ) -> list[ProcessRecord]:
        """Processes by id, a page at a time, optionally of one state (or ``"terminal"``)."""
        ...

    def append_event(
        self, process_id: str, request: ProcessEventAppendRequest, *, lease: ProcessLease | None = None
    ) -> ProcessEventAppendResult:
        """Append an event (a replay appends nothing); with ``lease``, a fenced write."""
        ...

    def complete_process(
        self, process_id: str, await_output: ProcessAwaitOutput, *, lease: ProcessLease | None = None
    ) -> ProcessRecord:
        """Append the terminal event of ``await_output``; with ``lease``, a fenced write."""
        ...

    def events_after(self, process_id: str, after_sequence: int, *, limit: int | None = None) -> list[ProcessEvent]:
        """Events after a sequence, ascending."""
        ...

    def wake_events_after(self, process_id: str, after_sequence: int) -> list[ProcessEvent]:
        """Unacknowledged wake events after a sequence, ascending."""
        ...

    def ack_wake(self, process_id: str, sequence: int) -> None:
        """Acknowledge a wake event (idempotent)."""
        ...

    def grant_handle(
        self, owner_scope: ProcessScope, process_id: str, descriptor: ProcessHandleDescriptor | None = None
    ) -> ProcessHandleGrant:
        """Give a scope a handle to the process."""
        ...

    def revoke_handle(self, owner_scope: ProcessScope, process_id: str) -> None:
        """Remove a scope's handle (never an error)."""
        ...

    def transfer_handle_grants(
        self, from_scope: ProcessScope, to_scope: ProcessScope, process_ids: Iterable[str]
    ) -> None:
        """Move handles between scopes, all or nothing."""
        ...

    def list_handle_grants(self, owner_scope: ProcessScope) -> list[ProcessHandleGrantEntry]:
        """Every handle of the scope with its process, by process id."""
        ...

    def list_live_handle_grants(self, owner_scope: ProcessScope) -> list[ProcessHandleGrantEntry]:
        """The scope's handles to running processes."""
        ...

    def has_handle_grant(self, owner_scope: ProcessScope, process_id: str) -> bool:
        """Whether the scope holds a handle to the process."""
        ...

    def handle_grants_for_process(self, process_id: str) -> list[ProcessHandleGrant]:
        """Every scope's grant of the process."""
        ...

    def delete_session_process_state(
        self, session_id: str, *, reason: str | None = "session deleted"
    ) -> ProcessSessionDeleteReport:
        """Revoke the session's handles and cancel the processes nobody else holds, in one transaction."""
        ...

    def claim_process_lease(self, process_id: str, owner_id: str, lease_ttl_ms: int) -> ProcessLease:
        """Lease a running process."""
        ...

    def renew_process_lease(self, lease: ProcessLease, lease_ttl_ms: int) -> ProcessLease:
        """Extend a live lease held by the caller."""
        ...

    def complete_process_lease(self, completion: ProcessLeaseCompletion) -> None:
        """Release a lease (a stale completion is a no-op)."""
        ...

    def get_process_lease(self, process_id: str) -> ProcessLease | None:
        """The process's stored lease, or ``None``."""
        ...

    def prune_processes(
        self, older_than_epoch_ms: int, *, limit: int | None = None, dry_run: bool = False
    ) -> ProcessPruneReport:
        """Delete terminal processes older than the instant, with everything they hold."""
        ...

    def raw_rows(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every stored row, undecoded, from one snapshot."""
        ...

    def describe_backend(self) -> dict[str, Any]:
        """What the backend is."""
        ...

    # @generate-async-end ProcessRegistryAPI

    # @async-manual-start ProcessRegistryAPI: the facade awaits these on the event loop (see lash_store.aio)
    def wait_event_after(
        self, process_id: str, event_type: str, after_sequence: int, *, timeout_ms: int | None = None
    ) -> ProcessEvent:
        """The first event of a type after a sequence, waiting for it (``WaitTimeout`` after ``timeout_ms``)."""
        ...

    def await_process(self, process_id: str, *, timeout_ms: int | None = None) -> ProcessAwaitOutput:
        """The await output once the process is terminal, waiting for it (``WaitTimeout`` after ``timeout_ms``)."""
        ...

    # @async-manual-end ProcessRegistryAPI


class EffectHostAPI(Protocol):
    """An effect host (SPEC §9; reference (c) §c.4): scoped controllers over a durable journal."""

    @property
    def durability_tier(self) -> DurabilityTier: ...

    @property
    def owner_id(self) -> str: ...

    def scoped(self, scope: EffectScope, *, replay: bool | None = None) -> ScopedEffectController:
        """A controller journaling under ``scope``."""
        ...

    def start_replay(self) -> None:
        """Controllers scoped from now on start in strict replay mode."""
        ...

    # @generate-async-start EffectHostAPI
    def close(self) -> None:
        """Close the host; later calls raise ``StoreClosed``.  Closing twice is harmless."""
        ...

    def list_journal(
        self, *, status: str | None = None, scope: EffectScope | None = None, limit: int | None = None
    ) -> list[EffectJournalRecord]:
        """Journal rows, oldest update first, optionally of one status and/or one scope."""
        ...

    def prune_journal(self, older_than_epoch_ms: int, *, dry_run: bool = False) -> EffectJournalPruneReport:
        """Delete finished rows last updated before the horizon."""
        ...

    # @generate-async-end


class HostEventStoreAPI(Protocol):
    """A host-event store (SPEC §9; reference (b) §b.4 with the outbox fix)."""

    @property
    def durability_tier(self) -> DurabilityTier: ...

    def source_key_for_subscription(self, source_type: str, source: Any) -> str:
        """The stable source key of ``(source_type, source)``."""
        ...

    # @generate-async-start HostEventStoreAPI
    def close(self) -> None:
        """Close the store; later calls raise ``StoreClosed``.  Closing twice is harmless."""
        ...

    def register_subscription(self, draft: TriggerSubscriptionDraft) -> TriggerSubscriptionRecord:
        """Register a subscription with the next handle ``trigger:N``."""
        ...

    def list_subscriptions(self, filter: TriggerSubscriptionFilter | None = None) -> list[TriggerSubscriptionRecord]:
        """Subscriptions matching the filter, by session then handle number."""
        ...

    def cancel_subscription(self, session_id: str, handle: str) -> bool:
        """Disable a session's subscription; returns whether it was enabled."""
        ...

    def cancel_session_subscriptions(self, session_id: str) -> int:
        """Disable every enabled subscription of a session in one transaction; returns how many."""
        ...

    def record_occurrence(self, request: HostEventOccurrenceRequest) -> HostEventOccurrenceRecord:
        """Record an occurrence once per (source type, source key, idempotency key)."""
        ...

    def get_occurrence(self, occurrence_id: str) -> HostEventOccurrenceRecord | None:
        """The occurrence, or ``None``."""
        ...

    def list_occurrences(self, *, limit: int | None = None) -> list[HostEventOccurrenceRecord]:
        """Occurrences, oldest first."""
        ...

    def reserve_matching_deliveries(self, occurrence_id: str) -> list[TriggerDeliveryReservation]:
        """Reserve a delivery per matching enabled subscription; returns only the new ones."""
        ...

    def pending_deliveries(self, *, limit: int | None = None) -> list[TriggerDeliveryReservation]:
        """Deliveries reserved but not started, oldest first."""
        ...

    def list_deliveries(self, occurrence_id: str) -> list[TriggerDeliveryReservation]:
        """Every delivery of one occurrence."""
        ...

    def mark_delivery_started(self, occurrence_id: str, subscription_id: str) -> bool:
        """Close a delivery (reserved -> started); ``False`` when it had already started."""
        ...

    def prune(self, older_than_epoch_ms: int, *, dry_run: bool = False) -> HostEventPruneReport:
        """Delete old occurrences whose deliveries all started, with those deliveries."""
        ...

    # @generate-async-end


# --- generated by scripts/generate_async.py: do not edit ---
class AsyncSessionStoreAPI(Protocol):
    """:class:`SessionStoreAPI` as coroutines."""

    @property
    def path(self) -> Path | None: ...

    @property
    def durability_tier(self) -> DurabilityTier: ...

    async def close(self) -> None:
        """Close the store; later calls raise ``StoreClosed``.  Closing twice is harmless."""
        ...

    async def commit_runtime_state(self, commit: RuntimeCommit) -> RuntimeCommitResult:
        """Persist one runtime turn atomically."""
        ...

    async def load_session(self, scope: SessionReadScope | None = None) -> PersistedSessionRead | None:
        """Head, graph (full or active path), hydrated checkpoint and usage, from one snapshot."""
        ...

    async def load_node(self, node_id: str) -> SessionNode | None:
        """One live (not tombstoned) node, or ``None``."""
        ...

    async def tombstone_nodes(self, node_ids: Iterable[str]) -> int:
        """Hide nodes from every read; returns how many were hidden."""
        ...

    async def vacuum(self) -> VacuumReport:
        """Physically remove tombstoned nodes."""
        ...

    async def query_nodes(
        self,
        *,
        kind: str | None = None,
        lane: str | None = None,
        sort_before: str | None = None,
        sort_key: str | None = None,
        tags: Mapping[str, TagValue] | None = None,
        limit: int | None = None,
    ) -> list[SessionNode]:
        """Live nodes by kind, lane, sort key and tags, newest (largest sort key) first."""
        ...

    async def walk_ancestors(self, node_id: str, max_depth: int) -> list[SessionNode]:
        """A live node and up to ``max_depth`` live ancestors, nearest first (cycle-guarded)."""
        ...

    async def put_staged_writes(
        self, writes: Iterable[StagedWrite], *, held_queue_claims: Iterable[QueuedWorkCompletion] = ()
    ) -> int:
        """Store pending writes in one transaction (``idx >= 0`` kept once, ``idx < 0`` replaced).

        ``held_queue_claims`` fence the write as they fence a commit (see ``RuntimeCommit``)."""
        ...

    async def load_staged_writes(
        self, anchor_ids: Iterable[str], channels: Iterable[str] | None = None
    ) -> list[StagedWrite]:
        """Staged writes of the anchors (optionally only some channels), in the order first stored."""
        ...

    async def delete_staged_writes(self, anchor_ids: Iterable[str]) -> int:
        """Drop the staged writes of the anchors; returns how many."""
        ...

    async def graph_node_count(self) -> int:
        """Live (not tombstoned) nodes."""
        ...

    async def save_session_meta(self, meta: SessionMeta) -> None:
        """Write (replace) the session's descriptive metadata."""
        ...

    async def load_session_meta(self) -> SessionMeta | None:
        """The session's metadata, or ``None``."""
        ...

    async def load_picker_info(self) -> SessionPickerInfo | None:
        """What a session picker shows, or ``None`` without metadata."""
        ...

    async def ensure_session_meta(self, meta: SessionMeta) -> bool:
        """Write the metadata unless the session has some (never overwritten); True if written."""
        ...

    async def put_blob(self, content: bytes) -> BlobRef:
        """Store raw bytes; returns their SHA-256 ref."""
        ...

    async def put_artifact_blob(self, descriptor: BlobArtifactDescriptor, content: bytes) -> BlobRef:
        """Store a typed blob (compressed when it pays)."""
        ...

    async def get_blob(self, ref: str) -> bytes | None:
        """A blob's raw content, or ``None``."""
        ...

    async def get_blobs(self, refs: Iterable[str]) -> dict[str, bytes]:
        """Several blobs' raw content from one snapshot, by ref; absent refs are left out."""
        ...

    async def put_checkpoint(self, hydrated: HydratedCheckpoint) -> tuple[BlobRef, SessionCheckpoint]:
        """Store a checkpoint's snapshots and manifest."""
        ...

    async def get_checkpoint(self, ref: str) -> HydratedCheckpoint | None:
        """A hydrated checkpoint, or ``None``."""
        ...

    async def gc_unreachable(self, *, dry_run: bool = False) -> GcReport:
        """Delete (or with ``dry_run`` only count) blobs no root reaches, past the grace period."""
        ...

    async def record_intent(self, intent: AttachmentIntent) -> None:
        """Record that attachment bytes are about to be written."""
        ...

    async def commit_refs(self, session_id: str, attachment_ids: Iterable[str]) -> int:
        """Mark intents committed (first stamp wins); returns how many changed."""
        ...

    async def list_uncommitted(self, older_than_epoch_ms: int) -> list[AttachmentManifestEntry]:
        """Uncommitted intents recorded at or before the instant, oldest first."""
        ...

    async def forget(self, attachment_id: str) -> None:
        """Drop a manifest row."""
        ...

    async def put_module_artifact(self, module_ref: str, data: bytes) -> BlobRef:
        """Pin a module's bytes (a GC root until forgotten)."""
        ...

    async def get_module_artifact(self, module_ref: str) -> bytes | None:
        """A pinned module's bytes, or ``None``."""
        ...

    async def forget_module_artifact(self, module_ref: str) -> None:
        """Unpin a module."""
        ...

    async def gc_plan(self, *, dry_run: bool = True, grace_ms: int | None = None) -> tuple[GcReport, int]:
        """GC (or a dry run of it) with the stored bytes it deletes; ``grace_ms`` overrides the grace period."""
        ...

    async def prune(self, *, dry_run: bool = False, turn_stamps_older_than_ms: int | None = None) -> PruneReport:
        """Remove turn stamps older than the retention horizon (argument, else the options'); dry runs count."""
        ...

    async def rekey(self, *, batch_size: int = 500) -> RekeyReport:
        """Encryption at rest: re-seal every stored value under the key ring's current key, in batches; resumable."""
        ...

    async def raw_rows(self, *, content: bool = False) -> RawRows:
        """Every stored row, undecoded, from one snapshot (for tools that look at damage)."""
        ...

    async def verify(self) -> list[dict[str, Any]]:
        """Check everything the store holds; one entry per check, each listing its problems."""
        ...

    async def describe_backend(self) -> dict[str, Any]:
        """What the backend is (file, server, schema) and its own figures."""
        ...

    async def compact(self) -> dict[str, Any]:
        """Give space back after deletions where the backend can (SQLite VACUUM)."""
        ...

    async def copy_session_into(
        self, target: SessionStoreAPI | AsyncSessionStoreAPI, *, session_id: str | None = None
    ) -> None:
        """Fork this session into an empty store of any backend."""
        ...

    async def export_session(self) -> SessionDump:
        """Everything the store holds, in the backend-neutral dump format."""
        ...

    async def import_session(self, dump: SessionDump) -> None:
        """Load a dump into this empty store in one transaction."""
        ...

    async def enqueue_queued_work(self, draft: QueuedWorkBatchDraft) -> QueuedWorkBatch:
        """Add a batch (idempotent by source key while it exists)."""
        ...

    async def claim_ready_queued_work(
        self, session_id: str, owner_id: str, boundary: QueuedWorkClaimBoundary, lease_ttl_ms: int, max_batches: int
    ) -> QueuedWorkClaim | None:
        """Lease the next ready group of batches, or ``None``."""
        ...

    async def claim_ready_queued_work_by_batch_ids(
        self,
        session_id: str,
        owner_id: str,
        boundary: QueuedWorkClaimBoundary,
        lease_ttl_ms: int,
        batch_ids: Sequence[str],
    ) -> QueuedWorkClaim | None:
        """Claim exactly these batches if they are the group the rule picks next, or ``None``."""
        ...

    async def renew_queued_work_claim(self, claim: QueuedWorkClaim, lease_ttl_ms: int) -> QueuedWorkClaim:
        """Extend every batch's lease, or raise ``QueuedWorkClaimExpired``."""
        ...

    async def abandon_queued_work_claim(
        self, claim: QueuedWorkClaim, error: str | None = None, *, counts_as_attempt: bool = True
    ) -> int:
        """Release a claim (a failed attempt, ``error`` kept for the dead-letter list); returns rows released.

        ``counts_as_attempt=False`` hands the batches back untried: the claim's attempt is uncounted and they
        are offered again at once, with no backoff."""
        ...

    async def cancel_queued_work_batch(self, session_id: str, batch_id: str) -> QueuedWorkBatch | None:
        """Remove a batch that is not live-claimed."""
        ...

    async def list_queued_work(self, session_id: str) -> list[QueuedWorkBatch]:
        """Every batch of the session, FIFO."""
        ...

    async def list_pending_queued_work(self, session_id: str) -> list[QueuedWorkBatch]:
        """Batches not live-claimed now, FIFO."""
        ...

    async def list_dead_letters(self, session_id: str) -> list[QueuedWorkDeadLetter]:
        """Batches set aside after their last allowed attempt failed (``PoisonPolicy``), FIFO."""
        ...

    async def get_dead_letter(self, session_id: str, batch_id: str) -> QueuedWorkDeadLetter | None:
        """One dead letter, or ``None`` if the batch is not on the dead-letter list."""
        ...

    async def requeue_dead_letter(self, session_id: str, batch_id: str) -> QueuedWorkBatch | None:
        """Put a dead letter back in the queue, attempts reset; ``None`` if it is not one."""
        ...

    async def drop_dead_letter(self, session_id: str, batch_id: str) -> QueuedWorkDeadLetter | None:
        """Delete a dead letter and return it; ``None`` if it is not one."""
        ...


# --- end of generated code ---


# --- generated by scripts/generate_async.py from ProcessRegistryAPI: do not edit ---
class AsyncProcessRegistryAPI(Protocol):
    """:class:`ProcessRegistryAPI` as coroutines."""

    @property
    def durability_tier(self) -> DurabilityTier: ...

    async def close(self) -> None:
        """Close the registry; later calls raise ``StoreClosed``.  Closing twice is harmless."""
        ...

    async def register_process(self, registration: ProcessRegistration) -> ProcessRecord:
        """Register a process (idempotent by id and registration hash)."""
        ...

    async def set_external_ref(self, process_id: str, external_ref: ProcessExternalRef) -> ProcessRecord:
        """Record where an external system runs the process."""
        ...

    async def get_process(self, process_id: str) -> ProcessRecord | None:
        """The record, or ``None``."""
        ...

    async def list_non_terminal(self) -> list[ProcessRecord]:
        """Every running process, by id (the recovery worklist)."""
        ...

    async def list_processes(
        self, *, state: str | None = None, after: str | None = None, limit: int | None = None
    ) -> list[ProcessRecord]:
        """Processes by id, a page at a time, optionally of one state (or ``"terminal"``)."""
        ...

    async def append_event(
        self, process_id: str, request: ProcessEventAppendRequest, *, lease: ProcessLease | None = None
    ) -> ProcessEventAppendResult:
        """Append an event (a replay appends nothing); with ``lease``, a fenced write."""
        ...

    async def complete_process(
        self, process_id: str, await_output: ProcessAwaitOutput, *, lease: ProcessLease | None = None
    ) -> ProcessRecord:
        """Append the terminal event of ``await_output``; with ``lease``, a fenced write."""
        ...

    async def events_after(
        self, process_id: str, after_sequence: int, *, limit: int | None = None
    ) -> list[ProcessEvent]:
        """Events after a sequence, ascending."""
        ...

    async def wake_events_after(self, process_id: str, after_sequence: int) -> list[ProcessEvent]:
        """Unacknowledged wake events after a sequence, ascending."""
        ...

    async def ack_wake(self, process_id: str, sequence: int) -> None:
        """Acknowledge a wake event (idempotent)."""
        ...

    async def grant_handle(
        self, owner_scope: ProcessScope, process_id: str, descriptor: ProcessHandleDescriptor | None = None
    ) -> ProcessHandleGrant:
        """Give a scope a handle to the process."""
        ...

    async def revoke_handle(self, owner_scope: ProcessScope, process_id: str) -> None:
        """Remove a scope's handle (never an error)."""
        ...

    async def transfer_handle_grants(
        self, from_scope: ProcessScope, to_scope: ProcessScope, process_ids: Iterable[str]
    ) -> None:
        """Move handles between scopes, all or nothing."""
        ...

    async def list_handle_grants(self, owner_scope: ProcessScope) -> list[ProcessHandleGrantEntry]:
        """Every handle of the scope with its process, by process id."""
        ...

    async def list_live_handle_grants(self, owner_scope: ProcessScope) -> list[ProcessHandleGrantEntry]:
        """The scope's handles to running processes."""
        ...

    async def has_handle_grant(self, owner_scope: ProcessScope, process_id: str) -> bool:
        """Whether the scope holds a handle to the process."""
        ...

    async def handle_grants_for_process(self, process_id: str) -> list[ProcessHandleGrant]:
        """Every scope's grant of the process."""
        ...

    async def delete_session_process_state(
        self, session_id: str, *, reason: str | None = "session deleted"
    ) -> ProcessSessionDeleteReport:
        """Revoke the session's handles and cancel the processes nobody else holds, in one transaction."""
        ...

    async def claim_process_lease(self, process_id: str, owner_id: str, lease_ttl_ms: int) -> ProcessLease:
        """Lease a running process."""
        ...

    async def renew_process_lease(self, lease: ProcessLease, lease_ttl_ms: int) -> ProcessLease:
        """Extend a live lease held by the caller."""
        ...

    async def complete_process_lease(self, completion: ProcessLeaseCompletion) -> None:
        """Release a lease (a stale completion is a no-op)."""
        ...

    async def get_process_lease(self, process_id: str) -> ProcessLease | None:
        """The process's stored lease, or ``None``."""
        ...

    async def prune_processes(
        self, older_than_epoch_ms: int, *, limit: int | None = None, dry_run: bool = False
    ) -> ProcessPruneReport:
        """Delete terminal processes older than the instant, with everything they hold."""
        ...

    async def raw_rows(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every stored row, undecoded, from one snapshot."""
        ...

    async def describe_backend(self) -> dict[str, Any]:
        """What the backend is."""
        ...

    async def wait_event_after(
        self, process_id: str, event_type: str, after_sequence: int, *, timeout_ms: int | None = None
    ) -> ProcessEvent:
        """The first event of a type after a sequence, waiting for it (``WaitTimeout`` after ``timeout_ms``)."""
        ...

    async def await_process(self, process_id: str, *, timeout_ms: int | None = None) -> ProcessAwaitOutput:
        """The await output once the process is terminal, waiting for it (``WaitTimeout`` after ``timeout_ms``)."""
        ...


# --- end of generated code ---


# --- generated by scripts/generate_async.py from EffectHostAPI: do not edit ---
class AsyncEffectHostAPI(Protocol):
    """:class:`EffectHostAPI` as coroutines."""

    @property
    def durability_tier(self) -> DurabilityTier: ...

    async def close(self) -> None:
        """Close the host; later calls raise ``StoreClosed``.  Closing twice is harmless."""
        ...

    async def list_journal(
        self, *, status: str | None = None, scope: EffectScope | None = None, limit: int | None = None
    ) -> list[EffectJournalRecord]:
        """Journal rows, oldest update first, optionally of one status and/or one scope."""
        ...

    async def prune_journal(self, older_than_epoch_ms: int, *, dry_run: bool = False) -> EffectJournalPruneReport:
        """Delete finished rows last updated before the horizon."""
        ...


# --- end of generated code ---


# --- generated by scripts/generate_async.py from HostEventStoreAPI: do not edit ---
class AsyncHostEventStoreAPI(Protocol):
    """:class:`HostEventStoreAPI` as coroutines."""

    @property
    def durability_tier(self) -> DurabilityTier: ...

    async def close(self) -> None:
        """Close the store; later calls raise ``StoreClosed``.  Closing twice is harmless."""
        ...

    async def register_subscription(self, draft: TriggerSubscriptionDraft) -> TriggerSubscriptionRecord:
        """Register a subscription with the next handle ``trigger:N``."""
        ...

    async def list_subscriptions(
        self, filter: TriggerSubscriptionFilter | None = None
    ) -> list[TriggerSubscriptionRecord]:
        """Subscriptions matching the filter, by session then handle number."""
        ...

    async def cancel_subscription(self, session_id: str, handle: str) -> bool:
        """Disable a session's subscription; returns whether it was enabled."""
        ...

    async def cancel_session_subscriptions(self, session_id: str) -> int:
        """Disable every enabled subscription of a session in one transaction; returns how many."""
        ...

    async def record_occurrence(self, request: HostEventOccurrenceRequest) -> HostEventOccurrenceRecord:
        """Record an occurrence once per (source type, source key, idempotency key)."""
        ...

    async def get_occurrence(self, occurrence_id: str) -> HostEventOccurrenceRecord | None:
        """The occurrence, or ``None``."""
        ...

    async def list_occurrences(self, *, limit: int | None = None) -> list[HostEventOccurrenceRecord]:
        """Occurrences, oldest first."""
        ...

    async def reserve_matching_deliveries(self, occurrence_id: str) -> list[TriggerDeliveryReservation]:
        """Reserve a delivery per matching enabled subscription; returns only the new ones."""
        ...

    async def pending_deliveries(self, *, limit: int | None = None) -> list[TriggerDeliveryReservation]:
        """Deliveries reserved but not started, oldest first."""
        ...

    async def list_deliveries(self, occurrence_id: str) -> list[TriggerDeliveryReservation]:
        """Every delivery of one occurrence."""
        ...

    async def mark_delivery_started(self, occurrence_id: str, subscription_id: str) -> bool:
        """Close a delivery (reserved -> started); ``False`` when it had already started."""
        ...

    async def prune(self, older_than_epoch_ms: int, *, dry_run: bool = False) -> HostEventPruneReport:
        """Delete old occurrences whose deliveries all started, with those deliveries."""
        ...


# --- end of generated code ---

"""``AsyncStore`` and ``AsyncProcessRegistry``: every method as a coroutine, never blocking the event loop.

Calls run on one shared, bounded thread pool, so a process can hold thousands
of stores open without thousands of threads.  Each store has a *lane*: its
calls run one at a time, in submission order, and the next one is handed to
the pool only when the previous one has finished.  Cancelling an awaiting task
therefore never lets a later call overtake an earlier one: a call that has not
started yet is dropped (it never applies), and one that is already running
finishes before anything after it starts, while its awaiter is released at once.

The methods below the generated markers are written by ``scripts/generate_async.py``
from :class:`lash_store.api.SessionStoreAPI` and :class:`lash_store.api.ProcessRegistryAPI`;
do not edit them by hand.  The registry's blocking waits are written here: a
wait parks on the event loop (woken by the registry's notices, see
:mod:`lash_store.service.registry.signals`) and only its reads run in the lane,
so a waiting task holds no thread and cancelling it leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import os
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any, Generic, Protocol, Self, TypeVar

from lash_store.api import AsyncSessionStoreAPI, EffectHostAPI, HostEventStoreAPI, ProcessRegistryAPI, SessionStoreAPI
from lash_store.effects import (
    EffectJournalPruneReport,
    EffectJournalRecord,
    EffectReplayOptions,
    EffectScope,
    RuntimeEffectEnvelope,
    RuntimeEffectLocalExecutor,
    RuntimeEffectOutcome,
)
from lash_store.errors import BackendError
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
from lash_store.options import KeyRing, StoreOptions
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
from lash_store.service.diagnostics import RawRows
from lash_store.service.effects.service import ScopedEffectController
from lash_store.service.registry.service import ProcessRegistryService
from lash_store.service.registry.waits import Checked, Wait, wait_async
from lash_store.service.transfer import SessionDump
from lash_store.sqlite.registry import ProcessRegistry
from lash_store.sqlite.store import Store

__all__ = [
    "AsyncEffectHost",
    "AsyncHostEventStore",
    "AsyncProcessRegistry",
    "AsyncScopedEffectController",
    "AsyncStore",
    "run_in_lane",
]

T = TypeVar("T")

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _after_fork_in_child() -> None:
    # The parent's pool threads do not exist in the child, and its lock may have been held at fork time.
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _shared_pool() -> ThreadPoolExecutor:
    global _pool
    pool = _pool
    if pool is None:
        with _pool_lock:
            if _pool is None:
                _pool = ThreadPoolExecutor(
                    max_workers=min(32, (os.cpu_count() or 1) + 4), thread_name_prefix="lash-store"
                )
            pool = _pool
    return pool


class Lane:
    """One store's calls: run one at a time on the shared pool, in submission order."""

    __slots__ = ("_busy", "_lock", "_pending")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: deque[tuple[Future[Any], Callable[[], Any]]] = deque()
        self._busy = False

    def submit(self, job: Callable[[], T]) -> Future[T]:
        future: Future[T] = Future()
        with self._lock:
            self._pending.append((future, job))
            if self._busy:
                return future  # the running call hands the lane on when it finishes
            self._busy = True
        _shared_pool().submit(self._run_one)
        return future

    def _run_one(self) -> None:
        with self._lock:
            future, job = self._pending.popleft()
        if future.set_running_or_notify_cancel():  # False: cancelled before it started, so it never applies
            try:
                result = job()
            except BaseException as exc:  # delivered to the awaiter, whatever it is
                future.set_exception(exc)
            else:
                future.set_result(result)
        with self._lock:
            if not self._pending:
                self._busy = False
                return
        _shared_pool().submit(self._run_one)  # one call per pool task, so busy stores share the pool fairly


async def run_in_lane(lane: Lane, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Await ``func(*args, **kwargs)`` run in ``lane`` without blocking the event loop."""
    return await asyncio.wrap_future(lane.submit(functools.partial(func, *args, **kwargs)))


def _unwrap(store: SessionStoreAPI | AsyncSessionStoreAPI) -> SessionStoreAPI:
    return store.sync if isinstance(store, AsyncStore) else store  # type: ignore[return-value]


class _Wrapped(Protocol):
    """What a facade needs of the synchronous object it wraps."""

    @property
    def durability_tier(self) -> DurabilityTier: ...


W = TypeVar("W", bound=_Wrapped)


class _LaneFacade(Generic[W]):
    """What every facade shares: the synchronous object it wraps (``sync``), the lane its calls run in, in
    submission order, and ``async with`` (which closes it)."""

    def __init__(self, sync: W) -> None:
        self.sync = sync
        self._lane = Lane()

    async def _call(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await run_in_lane(self._lane, func, *args, **kwargs)

    async def close(self) -> None:
        raise NotImplementedError  # generated in each facade

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def durability_tier(self) -> DurabilityTier:
        return self.sync.durability_tier


class AsyncStore(_LaneFacade[SessionStoreAPI]):
    """An asyncio facade over any synchronous store (SQLite, PostgreSQL, the reference)."""

    @classmethod
    async def open(
        cls, path: str | os.PathLike[str], options: StoreOptions | None = None, *, migrate: bool = False
    ) -> AsyncStore:
        return cls(await run_in_lane(Lane(), Store.open, path, options, migrate=migrate))

    @classmethod
    async def memory(cls, options: StoreOptions | None = None) -> AsyncStore:
        return cls(await run_in_lane(Lane(), Store.memory, options))

    @classmethod
    async def open_readonly(cls, path: str | os.PathLike[str], *, encryption: KeyRing | None = None) -> AsyncStore:
        return cls(await run_in_lane(Lane(), Store.open_readonly, path, encryption=encryption))

    @property
    def path(self) -> Path | None:
        return self.sync.path

    async def backup(self, dest: str | os.PathLike[str]) -> dict[str, Any]:
        """:meth:`Store.backup`, on this store's lane (a SQLite store; PostgreSQL has pg_dump and export)."""
        if not isinstance(self.sync, Store):
            raise BackendError("backup copies a SQLite store; for PostgreSQL use pg_dump, or export_session()")
        return await self._call(self.sync.backup, dest)

    # --- generated by scripts/generate_async.py: do not edit ---
    async def close(self) -> None:
        """Close the store; later calls raise ``StoreClosed``.  Closing twice is harmless."""
        return await self._call(self.sync.close)

    async def commit_runtime_state(self, commit: RuntimeCommit) -> RuntimeCommitResult:
        """Persist one runtime turn atomically."""
        return await self._call(self.sync.commit_runtime_state, commit)

    async def load_session(self, scope: SessionReadScope | None = None) -> PersistedSessionRead | None:
        """Head, graph (full or active path), hydrated checkpoint and usage, from one snapshot."""
        return await self._call(self.sync.load_session, scope)

    async def load_node(self, node_id: str) -> SessionNode | None:
        """One live (not tombstoned) node, or ``None``."""
        return await self._call(self.sync.load_node, node_id)

    async def tombstone_nodes(self, node_ids: Iterable[str]) -> int:
        """Hide nodes from every read; returns how many were hidden."""
        return await self._call(self.sync.tombstone_nodes, node_ids)

    async def vacuum(self) -> VacuumReport:
        """Physically remove tombstoned nodes."""
        return await self._call(self.sync.vacuum)

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
        return await self._call(
            self.sync.query_nodes,
            kind=kind,
            lane=lane,
            sort_before=sort_before,
            sort_key=sort_key,
            tags=tags,
            limit=limit,
        )

    async def walk_ancestors(self, node_id: str, max_depth: int) -> list[SessionNode]:
        """A live node and up to ``max_depth`` live ancestors, nearest first (cycle-guarded)."""
        return await self._call(self.sync.walk_ancestors, node_id, max_depth)

    async def put_staged_writes(
        self, writes: Iterable[StagedWrite], *, held_queue_claims: Iterable[QueuedWorkCompletion] = ()
    ) -> int:
        """Store pending writes in one transaction (``idx >= 0`` kept once, ``idx < 0`` replaced).

        ``held_queue_claims`` fence the write as they fence a commit (see ``RuntimeCommit``)."""
        return await self._call(self.sync.put_staged_writes, writes, held_queue_claims=held_queue_claims)

    async def load_staged_writes(
        self, anchor_ids: Iterable[str], channels: Iterable[str] | None = None
    ) -> list[StagedWrite]:
        """Staged writes of the anchors (optionally only some channels), in the order first stored."""
        return await self._call(self.sync.load_staged_writes, anchor_ids, channels)

    async def delete_staged_writes(self, anchor_ids: Iterable[str]) -> int:
        """Drop the staged writes of the anchors; returns how many."""
        return await self._call(self.sync.delete_staged_writes, anchor_ids)

    async def graph_node_count(self) -> int:
        """Live (not tombstoned) nodes."""
        return await self._call(self.sync.graph_node_count)

    async def save_session_meta(self, meta: SessionMeta) -> None:
        """Write (replace) the session's descriptive metadata."""
        return await self._call(self.sync.save_session_meta, meta)

    async def load_session_meta(self) -> SessionMeta | None:
        """The session's metadata, or ``None``."""
        return await self._call(self.sync.load_session_meta)

    async def load_picker_info(self) -> SessionPickerInfo | None:
        """What a session picker shows, or ``None`` without metadata."""
        return await self._call(self.sync.load_picker_info)

    async def ensure_session_meta(self, meta: SessionMeta) -> bool:
        """Write the metadata unless the session has some (never overwritten); True if written."""
        return await self._call(self.sync.ensure_session_meta, meta)

    async def put_blob(self, content: bytes) -> BlobRef:
        """Store raw bytes; returns their SHA-256 ref."""
        return await self._call(self.sync.put_blob, content)

    async def put_artifact_blob(self, descriptor: BlobArtifactDescriptor, content: bytes) -> BlobRef:
        """Store a typed blob (compressed when it pays)."""
        return await self._call(self.sync.put_artifact_blob, descriptor, content)

    async def get_blob(self, ref: str) -> bytes | None:
        """A blob's raw content, or ``None``."""
        return await self._call(self.sync.get_blob, ref)

    async def get_blobs(self, refs: Iterable[str]) -> dict[str, bytes]:
        """Several blobs' raw content from one snapshot, by ref; absent refs are left out."""
        return await self._call(self.sync.get_blobs, refs)

    async def put_checkpoint(self, hydrated: HydratedCheckpoint) -> tuple[BlobRef, SessionCheckpoint]:
        """Store a checkpoint's snapshots and manifest."""
        return await self._call(self.sync.put_checkpoint, hydrated)

    async def get_checkpoint(self, ref: str) -> HydratedCheckpoint | None:
        """A hydrated checkpoint, or ``None``."""
        return await self._call(self.sync.get_checkpoint, ref)

    async def gc_unreachable(self, *, dry_run: bool = False) -> GcReport:
        """Delete (or with ``dry_run`` only count) blobs no root reaches, past the grace period."""
        return await self._call(self.sync.gc_unreachable, dry_run=dry_run)

    async def record_intent(self, intent: AttachmentIntent) -> None:
        """Record that attachment bytes are about to be written."""
        return await self._call(self.sync.record_intent, intent)

    async def commit_refs(self, session_id: str, attachment_ids: Iterable[str]) -> int:
        """Mark intents committed (first stamp wins); returns how many changed."""
        return await self._call(self.sync.commit_refs, session_id, attachment_ids)

    async def list_uncommitted(self, older_than_epoch_ms: int) -> list[AttachmentManifestEntry]:
        """Uncommitted intents recorded at or before the instant, oldest first."""
        return await self._call(self.sync.list_uncommitted, older_than_epoch_ms)

    async def forget(self, attachment_id: str) -> None:
        """Drop a manifest row."""
        return await self._call(self.sync.forget, attachment_id)

    async def put_module_artifact(self, module_ref: str, data: bytes) -> BlobRef:
        """Pin a module's bytes (a GC root until forgotten)."""
        return await self._call(self.sync.put_module_artifact, module_ref, data)

    async def get_module_artifact(self, module_ref: str) -> bytes | None:
        """A pinned module's bytes, or ``None``."""
        return await self._call(self.sync.get_module_artifact, module_ref)

    async def forget_module_artifact(self, module_ref: str) -> None:
        """Unpin a module."""
        return await self._call(self.sync.forget_module_artifact, module_ref)

    async def gc_plan(self, *, dry_run: bool = True, grace_ms: int | None = None) -> tuple[GcReport, int]:
        """GC (or a dry run of it) with the stored bytes it deletes; ``grace_ms`` overrides the grace period."""
        return await self._call(self.sync.gc_plan, dry_run=dry_run, grace_ms=grace_ms)

    async def prune(self, *, dry_run: bool = False, turn_stamps_older_than_ms: int | None = None) -> PruneReport:
        """Remove turn stamps older than the retention horizon (argument, else the options'); dry runs count."""
        return await self._call(self.sync.prune, dry_run=dry_run, turn_stamps_older_than_ms=turn_stamps_older_than_ms)

    async def rekey(self, *, batch_size: int = 500) -> RekeyReport:
        """Encryption at rest: re-seal every stored value under the key ring's current key, in batches; resumable."""
        return await self._call(self.sync.rekey, batch_size=batch_size)

    async def raw_rows(self, *, content: bool = False) -> RawRows:
        """Every stored row, undecoded, from one snapshot (for tools that look at damage)."""
        return await self._call(self.sync.raw_rows, content=content)

    async def verify(self) -> list[dict[str, Any]]:
        """Check everything the store holds; one entry per check, each listing its problems."""
        return await self._call(self.sync.verify)

    async def describe_backend(self) -> dict[str, Any]:
        """What the backend is (file, server, schema) and its own figures."""
        return await self._call(self.sync.describe_backend)

    async def compact(self) -> dict[str, Any]:
        """Give space back after deletions where the backend can (SQLite VACUUM)."""
        return await self._call(self.sync.compact)

    async def copy_session_into(
        self, target: SessionStoreAPI | AsyncSessionStoreAPI, *, session_id: str | None = None
    ) -> None:
        """Fork this session into an empty store of any backend."""
        return await self._call(self.sync.copy_session_into, _unwrap(target), session_id=session_id)

    async def export_session(self) -> SessionDump:
        """Everything the store holds, in the backend-neutral dump format."""
        return await self._call(self.sync.export_session)

    async def import_session(self, dump: SessionDump) -> None:
        """Load a dump into this empty store in one transaction."""
        return await self._call(self.sync.import_session, dump)

    async def enqueue_queued_work(self, draft: QueuedWorkBatchDraft) -> QueuedWorkBatch:
        """Add a batch (idempotent by source key while it exists)."""
        return await self._call(self.sync.enqueue_queued_work, draft)

    async def claim_ready_queued_work(
        self, session_id: str, owner_id: str, boundary: QueuedWorkClaimBoundary, lease_ttl_ms: int, max_batches: int
    ) -> QueuedWorkClaim | None:
        """Lease the next ready group of batches, or ``None``."""
        return await self._call(
            self.sync.claim_ready_queued_work, session_id, owner_id, boundary, lease_ttl_ms, max_batches
        )

    async def claim_ready_queued_work_by_batch_ids(
        self,
        session_id: str,
        owner_id: str,
        boundary: QueuedWorkClaimBoundary,
        lease_ttl_ms: int,
        batch_ids: Sequence[str],
    ) -> QueuedWorkClaim | None:
        """Claim exactly these batches if they are the group the rule picks next, or ``None``."""
        return await self._call(
            self.sync.claim_ready_queued_work_by_batch_ids, session_id, owner_id, boundary, lease_ttl_ms, batch_ids
        )

    async def renew_queued_work_claim(self, claim: QueuedWorkClaim, lease_ttl_ms: int) -> QueuedWorkClaim:
        """Extend every batch's lease, or raise ``QueuedWorkClaimExpired``."""
        return await self._call(self.sync.renew_queued_work_claim, claim, lease_ttl_ms)

    async def abandon_queued_work_claim(
        self, claim: QueuedWorkClaim, error: str | None = None, *, counts_as_attempt: bool = True
    ) -> int:
        """Release a claim (a failed attempt, ``error`` kept for the dead-letter list); returns rows released.

        ``counts_as_attempt=False`` hands the batches back untried: the claim's attempt is uncounted and they
        are offered again at once, with no backoff."""
        return await self._call(self.sync.abandon_queued_work_claim, claim, error, counts_as_attempt=counts_as_attempt)

    async def cancel_queued_work_batch(self, session_id: str, batch_id: str) -> QueuedWorkBatch | None:
        """Remove a batch that is not live-claimed."""
        return await self._call(self.sync.cancel_queued_work_batch, session_id, batch_id)

    async def list_queued_work(self, session_id: str) -> list[QueuedWorkBatch]:
        """Every batch of the session, FIFO."""
        return await self._call(self.sync.list_queued_work, session_id)

    async def list_pending_queued_work(self, session_id: str) -> list[QueuedWorkBatch]:
        """Batches not live-claimed now, FIFO."""
        return await self._call(self.sync.list_pending_queued_work, session_id)

    async def list_dead_letters(self, session_id: str) -> list[QueuedWorkDeadLetter]:
        """Batches set aside after their last allowed attempt failed (``PoisonPolicy``), FIFO."""
        return await self._call(self.sync.list_dead_letters, session_id)

    async def get_dead_letter(self, session_id: str, batch_id: str) -> QueuedWorkDeadLetter | None:
        """One dead letter, or ``None`` if the batch is not on the dead-letter list."""
        return await self._call(self.sync.get_dead_letter, session_id, batch_id)

    async def requeue_dead_letter(self, session_id: str, batch_id: str) -> QueuedWorkBatch | None:
        """Put a dead letter back in the queue, attempts reset; ``None`` if it is not one."""
        return await self._call(self.sync.requeue_dead_letter, session_id, batch_id)

    async def drop_dead_letter(self, session_id: str, batch_id: str) -> QueuedWorkDeadLetter | None:
        """Delete a dead letter and return it; ``None`` if it is not one."""
        return await self._call(self.sync.drop_dead_letter, session_id, batch_id)

    # --- end of generated code ---


class AsyncProcessRegistry(_LaneFacade[ProcessRegistryAPI]):
    """An asyncio facade over any synchronous process registry (SQLite, PostgreSQL, the reference).

    Calls run in the registry's lane on the shared pool, in submission order.
    ``wait_event_after`` and ``await_process`` park on the event loop: an
    append through any registry of this process on the same data wakes them
    within one loop iteration of its commit, and cancelling the awaiting task
    (or ``timeout_ms`` passing: :class:`~lash_store.errors.WaitTimeout`) ends
    the wait at once.  (A registry of another implementation waits in a
    thread of its own.)
    """

    @classmethod
    async def open(cls, path: str | os.PathLike[str], options: StoreOptions | None = None) -> AsyncProcessRegistry:
        return cls(await run_in_lane(Lane(), ProcessRegistry.open, path, options))

    @classmethod
    async def memory(cls, options: StoreOptions | None = None) -> AsyncProcessRegistry:
        return cls(await run_in_lane(Lane(), ProcessRegistry.memory, options))

    async def wait_event_after(
        self, process_id: str, event_type: str, after_sequence: int, *, timeout_ms: int | None = None
    ) -> ProcessEvent:
        """The first event of a type after a sequence, waiting for it (``WaitTimeout`` after ``timeout_ms``)."""
        service = self.sync
        if not isinstance(service, ProcessRegistryService):
            return await asyncio.to_thread(
                service.wait_event_after, process_id, event_type, after_sequence, timeout_ms=timeout_ms
            )
        wait, read = service.event_wait(process_id, event_type, after_sequence, timeout_ms)
        return await self._wait(service, wait, read)

    async def await_process(self, process_id: str, *, timeout_ms: int | None = None) -> ProcessAwaitOutput:
        """The await output once the process is terminal, waiting for it (``WaitTimeout`` after ``timeout_ms``)."""
        service = self.sync
        if not isinstance(service, ProcessRegistryService):
            return await asyncio.to_thread(service.await_process, process_id, timeout_ms=timeout_ms)
        wait, read = service.terminal_wait(process_id, timeout_ms)
        return await self._wait(service, wait, read)

    async def _wait(self, service: ProcessRegistryService, wait: Wait[T], read: Callable[[Any], Checked[T]]) -> T:
        return await wait_async(
            wait,
            lambda: self._call(service.run_read, read),
            lambda: run_in_lane(Lane(), wait.signals.prepare),  # may start a change feed: off the loop
        )

    # --- generated by scripts/generate_async.py from ProcessRegistryAPI: do not edit ---
    async def close(self) -> None:
        """Close the registry; later calls raise ``StoreClosed``.  Closing twice is harmless."""
        return await self._call(self.sync.close)

    async def register_process(self, registration: ProcessRegistration) -> ProcessRecord:
        """Register a process (idempotent by id and registration hash)."""
        return await self._call(self.sync.register_process, registration)

    async def set_external_ref(self, process_id: str, external_ref: ProcessExternalRef) -> ProcessRecord:
        """Record where an external system runs the process."""
        return await self._call(self.sync.set_external_ref, process_id, external_ref)

    async def get_process(self, process_id: str) -> ProcessRecord | None:
        """The record, or ``None``."""
        return await self._call(self.sync.get_process, process_id)

    async def list_non_terminal(self) -> list[ProcessRecord]:
        """Every running process, by id (the recovery worklist)."""
        return await self._call(self.sync.list_non_terminal)

    async def list_processes(
        self, *, state: str | None = None, after: str | None = None, limit: int | None = None
    ) -> list[ProcessRecord]:
        """Processes by id, a page at a time, optionally of one state (or ``"terminal"``)."""
        return await self._call(self.sync.list_processes, state=state, after=after, limit=limit)

    async def append_event(
        self, process_id: str, request: ProcessEventAppendRequest, *, lease: ProcessLease | None = None
    ) -> ProcessEventAppendResult:
        """Append an event (a replay appends nothing); with ``lease``, a fenced write."""
        return await self._call(self.sync.append_event, process_id, request, lease=lease)

    async def complete_process(
        self, process_id: str, await_output: ProcessAwaitOutput, *, lease: ProcessLease | None = None
    ) -> ProcessRecord:
        """Append the terminal event of ``await_output``; with ``lease``, a fenced write."""
        return await self._call(self.sync.complete_process, process_id, await_output, lease=lease)

    async def events_after(
        self, process_id: str, after_sequence: int, *, limit: int | None = None
    ) -> list[ProcessEvent]:
        """Events after a sequence, ascending."""
        return await self._call(self.sync.events_after, process_id, after_sequence, limit=limit)

    async def wake_events_after(self, process_id: str, after_sequence: int) -> list[ProcessEvent]:
        """Unacknowledged wake events after a sequence, ascending."""
        return await self._call(self.sync.wake_events_after, process_id, after_sequence)

    async def ack_wake(self, process_id: str, sequence: int) -> None:
        """Acknowledge a wake event (idempotent)."""
        return await self._call(self.sync.ack_wake, process_id, sequence)

    async def grant_handle(
        self, owner_scope: ProcessScope, process_id: str, descriptor: ProcessHandleDescriptor | None = None
    ) -> ProcessHandleGrant:
        """Give a scope a handle to the process."""
        return await self._call(self.sync.grant_handle, owner_scope, process_id, descriptor)

    async def revoke_handle(self, owner_scope: ProcessScope, process_id: str) -> None:
        """Remove a scope's handle (never an error)."""
        return await self._call(self.sync.revoke_handle, owner_scope, process_id)

    async def transfer_handle_grants(
        self, from_scope: ProcessScope, to_scope: ProcessScope, process_ids: Iterable[str]
    ) -> None:
        """Move handles between scopes, all or nothing."""
        return await self._call(self.sync.transfer_handle_grants, from_scope, to_scope, process_ids)

    async def list_handle_grants(self, owner_scope: ProcessScope) -> list[ProcessHandleGrantEntry]:
        """Every handle of the scope with its process, by process id."""
        return await self._call(self.sync.list_handle_grants, owner_scope)

    async def list_live_handle_grants(self, owner_scope: ProcessScope) -> list[ProcessHandleGrantEntry]:
        """The scope's handles to running processes."""
        return await self._call(self.sync.list_live_handle_grants, owner_scope)

    async def has_handle_grant(self, owner_scope: ProcessScope, process_id: str) -> bool:
        """Whether the scope holds a handle to the process."""
        return await self._call(self.sync.has_handle_grant, owner_scope, process_id)

    async def handle_grants_for_process(self, process_id: str) -> list[ProcessHandleGrant]:
        """Every scope's grant of the process."""
        return await self._call(self.sync.handle_grants_for_process, process_id)

    async def delete_session_process_state(
        self, session_id: str, *, reason: str | None = "session deleted"
    ) -> ProcessSessionDeleteReport:
        """Revoke the session's handles and cancel the processes nobody else holds, in one transaction."""
        return await self._call(self.sync.delete_session_process_state, session_id, reason=reason)

    async def claim_process_lease(self, process_id: str, owner_id: str, lease_ttl_ms: int) -> ProcessLease:
        """Lease a running process."""
        return await self._call(self.sync.claim_process_lease, process_id, owner_id, lease_ttl_ms)

    async def renew_process_lease(self, lease: ProcessLease, lease_ttl_ms: int) -> ProcessLease:
        """Extend a live lease held by the caller."""
        return await self._call(self.sync.renew_process_lease, lease, lease_ttl_ms)

    async def complete_process_lease(self, completion: ProcessLeaseCompletion) -> None:
        """Release a lease (a stale completion is a no-op)."""
        return await self._call(self.sync.complete_process_lease, completion)

    async def get_process_lease(self, process_id: str) -> ProcessLease | None:
        """The process's stored lease, or ``None``."""
        return await self._call(self.sync.get_process_lease, process_id)

    async def prune_processes(
        self, older_than_epoch_ms: int, *, limit: int | None = None, dry_run: bool = False
    ) -> ProcessPruneReport:
        """Delete terminal processes older than the instant, with everything they hold."""
        return await self._call(self.sync.prune_processes, older_than_epoch_ms, limit=limit, dry_run=dry_run)

    async def raw_rows(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every stored row, undecoded, from one snapshot."""
        return await self._call(self.sync.raw_rows)

    async def describe_backend(self) -> dict[str, Any]:
        """What the backend is."""
        return await self._call(self.sync.describe_backend)

    # --- end of generated code ---


# ---------------------------------------------------------------------------
# The effect journal and the host-event store

AsyncRunner = Callable[[RuntimeEffectEnvelope], Awaitable[RuntimeEffectOutcome]]


def _bridged(
    local_executor: RuntimeEffectLocalExecutor
    | AsyncRunner
    | Callable[[RuntimeEffectEnvelope], RuntimeEffectOutcome]
    | None,
    loop: asyncio.AbstractEventLoop,
) -> Any:
    """A coroutine function becomes a runner that runs it on ``loop`` (the effect's own thread waits for it)."""
    if local_executor is None or isinstance(local_executor, RuntimeEffectLocalExecutor):
        return local_executor
    if inspect.iscoroutinefunction(local_executor):
        coroutine_function: AsyncRunner = local_executor

        def run(envelope: RuntimeEffectEnvelope) -> RuntimeEffectOutcome:
            future = asyncio.run_coroutine_threadsafe(_awaited(coroutine_function(envelope)), loop)
            result: RuntimeEffectOutcome = future.result()
            return result

        return RuntimeEffectLocalExecutor.runner(run)
    return local_executor


async def _awaited(awaitable: Awaitable[T]) -> T:
    return await awaitable


class AsyncScopedEffectController:
    """A scoped controller whose ``execute_effect`` is awaitable.

    The effect runs in a thread of its own (an effect can run for minutes; it
    must not hold a lane of the shared pool), so effects of one host run
    concurrently.  The local executor may be a coroutine function: it runs on
    the caller's event loop.  Cancelling the awaiting task does not stop an
    effect that has started: it finishes and is journaled (its heartbeat keeps
    its lease), and the next execution of the envelope replays its outcome.
    """

    def __init__(self, controller: ScopedEffectController) -> None:
        self.sync = controller

    @property
    def effect_scope(self) -> EffectScope:
        return self.sync.effect_scope

    @property
    def scope_id(self) -> str:
        return self.sync.scope_id

    @property
    def turn_id(self) -> str | None:
        return self.sync.turn_id

    @property
    def replaying(self) -> bool:
        return self.sync.replaying

    def start_replay(self) -> None:
        self.sync.start_replay()

    async def execute_effect(
        self,
        envelope: RuntimeEffectEnvelope,
        local_executor: RuntimeEffectLocalExecutor
        | AsyncRunner
        | Callable[[RuntimeEffectEnvelope], RuntimeEffectOutcome]
        | None = None,
    ) -> RuntimeEffectOutcome:
        executor = _bridged(local_executor, asyncio.get_running_loop())
        return await asyncio.to_thread(self.sync.execute_effect, envelope, executor)


class AsyncEffectHost(_LaneFacade[EffectHostAPI]):
    """An asyncio facade over any synchronous effect host (SQLite, PostgreSQL, the reference)."""

    @classmethod
    async def open(
        cls,
        path: str | os.PathLike[str],
        options: StoreOptions | None = None,
        *,
        replay_options: EffectReplayOptions | None = None,
    ) -> AsyncEffectHost:
        from lash_store.sqlite.effects import EffectHost

        return cls(
            await run_in_lane(Lane(), functools.partial(EffectHost.open, replay_options=replay_options), path, options)
        )

    @classmethod
    async def memory(
        cls, options: StoreOptions | None = None, *, replay_options: EffectReplayOptions | None = None
    ) -> AsyncEffectHost:
        from lash_store.sqlite.effects import EffectHost

        return cls(
            await run_in_lane(Lane(), functools.partial(EffectHost.memory, replay_options=replay_options), options)
        )

    @property
    def owner_id(self) -> str:
        return self.sync.owner_id

    def scoped(self, scope: EffectScope, *, replay: bool | None = None) -> AsyncScopedEffectController:
        return AsyncScopedEffectController(self.sync.scoped(scope, replay=replay))

    def scoped_static(self, scope: EffectScope) -> AsyncScopedEffectController:
        return self.scoped(scope)

    def start_replay(self) -> None:
        self.sync.start_replay()

    def requires_durable_attachment_store(self) -> bool:
        return True

    # --- generated by scripts/generate_async.py from EffectHostAPI: do not edit ---
    async def close(self) -> None:
        """Close the host; later calls raise ``StoreClosed``.  Closing twice is harmless."""
        return await self._call(self.sync.close)

    async def list_journal(
        self, *, status: str | None = None, scope: EffectScope | None = None, limit: int | None = None
    ) -> list[EffectJournalRecord]:
        """Journal rows, oldest update first, optionally of one status and/or one scope."""
        return await self._call(self.sync.list_journal, status=status, scope=scope, limit=limit)

    async def prune_journal(self, older_than_epoch_ms: int, *, dry_run: bool = False) -> EffectJournalPruneReport:
        """Delete finished rows last updated before the horizon."""
        return await self._call(self.sync.prune_journal, older_than_epoch_ms, dry_run=dry_run)

    # --- end of generated code ---


class AsyncHostEventStore(_LaneFacade[HostEventStoreAPI]):
    """An asyncio facade over any synchronous host-event store (SQLite, PostgreSQL, the reference)."""

    @classmethod
    async def open(cls, path: str | os.PathLike[str], options: StoreOptions | None = None) -> AsyncHostEventStore:
        from lash_store.sqlite.host_events import HostEventStore

        return cls(await run_in_lane(Lane(), HostEventStore.open, path, options))

    @classmethod
    async def memory(cls, options: StoreOptions | None = None) -> AsyncHostEventStore:
        from lash_store.sqlite.host_events import HostEventStore

        return cls(await run_in_lane(Lane(), HostEventStore.memory, options))

    def source_key_for_subscription(self, source_type: str, source: Any) -> str:
        return self.sync.source_key_for_subscription(source_type, source)

    # --- generated by scripts/generate_async.py from HostEventStoreAPI: do not edit ---
    async def close(self) -> None:
        """Close the store; later calls raise ``StoreClosed``.  Closing twice is harmless."""
        return await self._call(self.sync.close)

    async def register_subscription(self, draft: TriggerSubscriptionDraft) -> TriggerSubscriptionRecord:
        """Register a subscription with the next handle ``trigger:N``."""
        return await self._call(self.sync.register_subscription, draft)

    async def list_subscriptions(
        self, filter: TriggerSubscriptionFilter | None = None
    ) -> list[TriggerSubscriptionRecord]:
        """Subscriptions matching the filter, by session then handle number."""
        return await self._call(self.sync.list_subscriptions, filter)

    async def cancel_subscription(self, session_id: str, handle: str) -> bool:
        """Disable a session's subscription; returns whether it was enabled."""
        return await self._call(self.sync.cancel_subscription, session_id, handle)

    async def cancel_session_subscriptions(self, session_id: str) -> int:
        """Disable every enabled subscription of a session in one transaction; returns how many."""
        return await self._call(self.sync.cancel_session_subscriptions, session_id)

    async def record_occurrence(self, request: HostEventOccurrenceRequest) -> HostEventOccurrenceRecord:
        """Record an occurrence once per (source type, source key, idempotency key)."""
        return await self._call(self.sync.record_occurrence, request)

    async def get_occurrence(self, occurrence_id: str) -> HostEventOccurrenceRecord | None:
        """The occurrence, or ``None``."""
        return await self._call(self.sync.get_occurrence, occurrence_id)

    async def list_occurrences(self, *, limit: int | None = None) -> list[HostEventOccurrenceRecord]:
        """Occurrences, oldest first."""
        return await self._call(self.sync.list_occurrences, limit=limit)

    async def reserve_matching_deliveries(self, occurrence_id: str) -> list[TriggerDeliveryReservation]:
        """Reserve a delivery per matching enabled subscription; returns only the new ones."""
        return await self._call(self.sync.reserve_matching_deliveries, occurrence_id)

    async def pending_deliveries(self, *, limit: int | None = None) -> list[TriggerDeliveryReservation]:
        """Deliveries reserved but not started, oldest first."""
        return await self._call(self.sync.pending_deliveries, limit=limit)

    async def list_deliveries(self, occurrence_id: str) -> list[TriggerDeliveryReservation]:
        """Every delivery of one occurrence."""
        return await self._call(self.sync.list_deliveries, occurrence_id)

    async def mark_delivery_started(self, occurrence_id: str, subscription_id: str) -> bool:
        """Close a delivery (reserved -> started); ``False`` when it had already started."""
        return await self._call(self.sync.mark_delivery_started, occurrence_id, subscription_id)

    async def prune(self, older_than_epoch_ms: int, *, dry_run: bool = False) -> HostEventPruneReport:
        """Delete old occurrences whose deliveries all started, with those deliveries."""
        return await self._call(self.sync.prune, older_than_epoch_ms, dry_run=dry_run)

    # --- end of generated code ---

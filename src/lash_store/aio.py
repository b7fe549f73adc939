"""``AsyncStore``: every store method as a coroutine, never blocking the event loop.

Calls run on one shared, bounded thread pool (so a process can hold thousands
of stores open without thousands of threads); a per-store FIFO lock keeps each
store's calls in submission order.
"""

from __future__ import annotations

import asyncio
import functools
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

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
    RuntimeCommit,
    RuntimeCommitResult,
    SessionCheckpoint,
    SessionMeta,
    SessionNode,
    SessionPickerInfo,
    SessionReadScope,
    VacuumReport,
)
from lash_store.options import StoreOptions
from lash_store.sqlite.store import Store

__all__ = ["AsyncStore"]

T = TypeVar("T")

_executor: ThreadPoolExecutor | None = None
_executor_pid = 0
_executor_lock = threading.Lock()


def _shared_executor() -> ThreadPoolExecutor:
    global _executor, _executor_pid
    with _executor_lock:
        if _executor is None or _executor_pid != os.getpid():  # a forked child gets a fresh pool
            _executor = ThreadPoolExecutor(
                max_workers=min(32, (os.cpu_count() or 1) + 4), thread_name_prefix="lash-store"
            )
            _executor_pid = os.getpid()
        return _executor


async def _run(func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_shared_executor(), functools.partial(func, *args, **kwargs))


class AsyncStore:
    """An asyncio facade over any store with the :class:`Store` interface."""

    def __init__(self, store: Any) -> None:
        self.sync = store
        self._order = asyncio.Lock()

    @classmethod
    async def open(cls, path: str | os.PathLike[str], options: StoreOptions | None = None) -> AsyncStore:
        return cls(await _run(Store.open, path, options))

    @classmethod
    async def memory(cls, options: StoreOptions | None = None) -> AsyncStore:
        return cls(await _run(Store.memory, options))

    @classmethod
    async def open_readonly(cls, path: str | os.PathLike[str]) -> AsyncStore:
        return cls(await _run(Store.open_readonly, path))

    async def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        async with self._order:
            return await _run(getattr(self.sync, name), *args, **kwargs)

    async def close(self) -> None:
        await self._call("close")

    async def __aenter__(self) -> AsyncStore:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def durability_tier(self) -> DurabilityTier:
        return self.sync.durability_tier  # type: ignore[no-any-return]

    @property
    def path(self) -> Path | None:
        return self.sync.path  # type: ignore[no-any-return]

    async def commit_runtime_state(self, commit: RuntimeCommit) -> RuntimeCommitResult:
        return await self._call("commit_runtime_state", commit)  # type: ignore[no-any-return]

    async def load_session(self, scope: SessionReadScope | None = None) -> PersistedSessionRead | None:
        return await self._call("load_session", scope)  # type: ignore[no-any-return]

    async def load_node(self, node_id: str) -> SessionNode | None:
        return await self._call("load_node", node_id)  # type: ignore[no-any-return]

    async def tombstone_nodes(self, node_ids: Iterable[str]) -> int:
        return await self._call("tombstone_nodes", node_ids)  # type: ignore[no-any-return]

    async def vacuum(self) -> VacuumReport:
        return await self._call("vacuum")  # type: ignore[no-any-return]

    async def save_session_meta(self, meta: SessionMeta) -> None:
        await self._call("save_session_meta", meta)

    async def load_session_meta(self) -> SessionMeta | None:
        return await self._call("load_session_meta")  # type: ignore[no-any-return]

    async def load_picker_info(self) -> SessionPickerInfo | None:
        return await self._call("load_picker_info")  # type: ignore[no-any-return]

    async def graph_node_count(self) -> int:
        return await self._call("graph_node_count")  # type: ignore[no-any-return]

    async def put_blob(self, content: bytes) -> BlobRef:
        return await self._call("put_blob", content)  # type: ignore[no-any-return]

    async def put_artifact_blob(self, descriptor: BlobArtifactDescriptor, content: bytes) -> BlobRef:
        return await self._call("put_artifact_blob", descriptor, content)  # type: ignore[no-any-return]

    async def get_blob(self, ref: str) -> bytes | None:
        return await self._call("get_blob", ref)  # type: ignore[no-any-return]

    async def put_checkpoint(self, hydrated: HydratedCheckpoint) -> tuple[BlobRef, SessionCheckpoint]:
        return await self._call("put_checkpoint", hydrated)  # type: ignore[no-any-return]

    async def get_checkpoint(self, ref: str) -> HydratedCheckpoint | None:
        return await self._call("get_checkpoint", ref)  # type: ignore[no-any-return]

    async def gc_unreachable(self) -> GcReport:
        return await self._call("gc_unreachable")  # type: ignore[no-any-return]

    async def record_intent(self, intent: AttachmentIntent) -> None:
        await self._call("record_intent", intent)

    async def commit_refs(self, session_id: str, attachment_ids: Iterable[str]) -> int:
        return await self._call("commit_refs", session_id, attachment_ids)  # type: ignore[no-any-return]

    async def list_uncommitted(self, older_than_epoch_ms: int) -> list[AttachmentManifestEntry]:
        return await self._call("list_uncommitted", older_than_epoch_ms)  # type: ignore[no-any-return]

    async def forget(self, attachment_id: str) -> None:
        await self._call("forget", attachment_id)

    async def put_module_artifact(self, module_ref: str, data: bytes) -> BlobRef:
        return await self._call("put_module_artifact", module_ref, data)  # type: ignore[no-any-return]

    async def get_module_artifact(self, module_ref: str) -> bytes | None:
        return await self._call("get_module_artifact", module_ref)  # type: ignore[no-any-return]

    async def forget_module_artifact(self, module_ref: str) -> None:
        await self._call("forget_module_artifact", module_ref)

    async def copy_session_into(self, target: AsyncStore | Store, *, session_id: str | None = None) -> None:
        sync_target = target.sync if isinstance(target, AsyncStore) else target
        await self._call("copy_session_into", sync_target, session_id=session_id)

    async def enqueue_queued_work(self, draft: QueuedWorkBatchDraft) -> QueuedWorkBatch:
        return await self._call("enqueue_queued_work", draft)  # type: ignore[no-any-return]

    async def claim_ready_queued_work(
        self,
        session_id: str,
        owner_id: str,
        boundary: QueuedWorkClaimBoundary,
        lease_ttl_ms: int,
        max_batches: int,
    ) -> QueuedWorkClaim | None:
        return await self._call(  # type: ignore[no-any-return]
            "claim_ready_queued_work", session_id, owner_id, boundary, lease_ttl_ms, max_batches
        )

    async def claim_ready_queued_work_by_batch_ids(
        self,
        session_id: str,
        owner_id: str,
        boundary: QueuedWorkClaimBoundary,
        lease_ttl_ms: int,
        batch_ids: Sequence[str],
    ) -> QueuedWorkClaim | None:
        return await self._call(  # type: ignore[no-any-return]
            "claim_ready_queued_work_by_batch_ids", session_id, owner_id, boundary, lease_ttl_ms, batch_ids
        )

    async def renew_queued_work_claim(self, claim: QueuedWorkClaim, lease_ttl_ms: int) -> QueuedWorkClaim:
        return await self._call("renew_queued_work_claim", claim, lease_ttl_ms)  # type: ignore[no-any-return]

    async def abandon_queued_work_claim(self, claim: QueuedWorkClaim) -> int:
        return await self._call("abandon_queued_work_claim", claim)  # type: ignore[no-any-return]

    async def cancel_queued_work_batch(self, session_id: str, batch_id: str) -> QueuedWorkBatch | None:
        return await self._call("cancel_queued_work_batch", session_id, batch_id)  # type: ignore[no-any-return]

    async def list_queued_work(self, session_id: str) -> list[QueuedWorkBatch]:
        return await self._call("list_queued_work", session_id)  # type: ignore[no-any-return]

    async def list_pending_queued_work(self, session_id: str) -> list[QueuedWorkBatch]:
        return await self._call("list_pending_queued_work", session_id)  # type: ignore[no-any-return]

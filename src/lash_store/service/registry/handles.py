"""Handle grants inside transactions: grant, revoke, transfer, listings, and deleting a session's state.

A grant is keyed by (scope id, process id) and remembers the scope's session,
so deleting a session removes the grants of its own scope and of every agent
frame in it.  ``delete_session_process_state`` also appends, in the same
transaction, the cancel request of every running process that no other scope
holds any more (reference §7 item 9): a crash can no longer leave such a
process running without its cancel request.
"""

from __future__ import annotations

from typing import Any

from lash_store.core.canonical import canonical_text
from lash_store.core.registry import rows
from lash_store.core.registry.registration import prepare_append
from lash_store.errors import HandleNotGranted, UnknownProcess
from lash_store.processes import (
    ProcessEvent,
    ProcessEventAppendRequest,
    ProcessHandleDescriptor,
    ProcessHandleGrant,
    ProcessHandleGrantEntry,
    ProcessScope,
    ProcessSessionDeleteReport,
)
from lash_store.service.ports import Row, Tx
from lash_store.service.registry.events import append_locked, key, locked_process


def descriptor(text: Any) -> ProcessHandleDescriptor:
    decoded: ProcessHandleDescriptor = rows.decode_json("handle descriptor", text, ProcessHandleDescriptor)
    return decoded


def grant(tx: Tx, scope: ProcessScope, process_id: str, handle: ProcessHandleDescriptor) -> ProcessHandleGrant:
    # A shared lock: the process cannot be pruned meanwhile, and grants never wait for appends.
    tx.send("lock_process_shared", key(process_id))
    if tx.one("process_row", key(process_id)) is None:
        raise UnknownProcess(process_id)
    put(tx, scope, process_id, canonical_text(handle))
    return ProcessHandleGrant(session_id=scope.session_id, process_id=process_id, descriptor=handle)


def put(tx: Tx, scope: ProcessScope, process_id: str, descriptor_json: str) -> None:
    tx.send(
        "upsert_grant",
        {
            "scope_id": scope.scope_id,
            "process_id": process_id,
            "session_id": scope.session_id,
            "descriptor": descriptor_json,
        },
    )


def transfer(tx: Tx, source: ProcessScope, target: ProcessScope, process_ids: list[str]) -> None:
    """Move each grant from ``source`` to ``target`` (descriptor kept); one missing grant moves nothing."""
    for process_id in process_ids:
        found = tx.one("grant_descriptor", {"scope_id": source.scope_id, "process_id": process_id})
        if found is None:
            raise HandleNotGranted(process_id, source.session_id)
        tx.run("delete_grant", {"scope_id": source.scope_id, "process_id": process_id})
        put(tx, target, process_id, found[0])


def entries(found: list[Row]) -> list[ProcessHandleGrantEntry]:
    """``grants_of_scope`` rows (grant session, descriptor, then the process columns) as grant entries."""
    listed = []
    for row in found:
        record = rows.record(rows.process_row(row[2:]))
        handle = ProcessHandleGrant(session_id=row[0], process_id=record.id, descriptor=descriptor(row[1]))
        listed.append(ProcessHandleGrantEntry(grant=handle, record=record))
    return listed


def delete_session(
    tx: Tx, session_id: str, reason: str | None
) -> tuple[ProcessSessionDeleteReport, list[ProcessEvent]]:
    """Revoke every grant of the session and cancel the running processes nobody else holds, atomically."""
    deleted = tx.all("delete_session_grants", {"session_id": session_id})
    cancel: list[str] = []
    preserved: list[str] = []
    events: list[ProcessEvent] = []
    # Process rows are locked in id order, so two deletions (or a deletion and a prune) cannot deadlock.
    for process_id in sorted({row[1] for row in deleted}):
        try:
            process, (counts,) = locked_process(tx, process_id, ("grant_counts", {"process_ids": [process_id]}))
        except UnknownProcess:
            continue  # a grant whose process is gone (pruned meanwhile): nothing to classify
        if process.is_terminal:
            continue
        if counts and int(counts[0][1]) > 0:
            preserved.append(process_id)
            continue
        cancel.append(process_id)
        request = ProcessEventAppendRequest.cancel_requested(process_id, reason).with_wake_target(
            ProcessScope(session_id=session_id)
        )
        appended = append_cancel(tx, process, request)
        if appended is not None:
            events.append(appended)
    report = ProcessSessionDeleteReport(
        session_id=session_id,
        revoked_handle_count=len(deleted),
        deleted_wake_count=0,
        cancel_process_ids=cancel,
        preserved_process_ids=preserved,
    )
    return report, events


def append_cancel(tx: Tx, process: rows.ProcessRow, request: ProcessEventAppendRequest) -> ProcessEvent | None:
    """Append a cancel request to a locked process unless the same request was appended before (then ``None``)."""
    prepared = prepare_append(request)
    if tx.one("event_by_replay_key", {"process_id": process.process_id, "replay_key": prepared.replay_key}):
        return None
    return append_locked(tx, process, prepared).result.event

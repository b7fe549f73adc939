"""Appending events inside one write transaction (reference §a.5.2, with the fenced-write fix of §7 item 4).

Order: lock the process row; read the row, the replayed event and the lease
in one go; check the fence; the replay path (before any validation of the
type, as in the reference: a replay returns the stored event and repairs a
stale status); the declared type; replay keys for terminal and cancel events;
the payload schema; the next sequence (read under the row lock); semantics;
terminal rules; the wake target.  Then the event row, the process row and a
notification are sent.  Any failure raises and the transaction rolls back.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from lash_store.core.canonical import canonical_text
from lash_store.core.registry import payload_schema, rows
from lash_store.core.registry.registration import PreparedAppend
from lash_store.core.registry.semantics import invocation, materialize, wake_delivery
from lash_store.errors import (
    EventReplayConflict,
    InvalidEventPayload,
    LeaseLost,
    MissingWakeTarget,
    ProcessAlreadyTerminal,
    ReplayKeyRequired,
    UndeclaredEventType,
    UnknownProcess,
)
from lash_store.processes import (
    CANCEL_REQUESTED,
    ProcessEvent,
    ProcessEventAppendResult,
    ProcessEventType,
    ProcessLease,
    ProcessScope,
    ProcessWakeDelivery,
)
from lash_store.service.ports import Row, Tx


class Appended(NamedTuple):
    """An append's result, and what changed: a new event (``written``) or only a repaired status."""

    result: ProcessEventAppendResult
    written: bool
    repaired: bool


def key(process_id: str) -> dict[str, Any]:
    return {"process_id": process_id}


def locked_process(
    tx: Tx, process_id: str, *extra: tuple[str, dict[str, Any]]
) -> tuple[rows.ProcessRow, list[list[Row]]]:
    """Lock a process row, then read it and ``extra`` in one go; :class:`UnknownProcess` when it does not exist."""
    tx.send("lock_process", key(process_id))
    fetched = tx.fetch_many([("process_row", key(process_id)), *extra])
    if not fetched[0]:
        raise UnknownProcess(process_id)
    return rows.process_row(fetched[0][0]), fetched[1:]


def check_fence(tx: Tx, lease: ProcessLease, found: list[Row]) -> None:
    """The caller's lease must be the process's live lease (owner, token, fencing token), now."""
    current = rows.lease_row(found[0] if found else None)
    if current is None or not current.holds(lease, tx.now_ms()):
        raise LeaseLost(lease.process_id, lease.owner_id, lease.fencing_token)


def append(tx: Tx, process_id: str, prepared: PreparedAppend, lease: ProcessLease | None) -> Appended:
    extra: list[tuple[str, dict[str, Any]]] = []
    if prepared.replay_key is not None:
        extra.append(("event_by_replay_key", {"process_id": process_id, "replay_key": prepared.replay_key}))
    if lease is not None:
        extra.append(("lease_row", key(process_id)))
    process, found = locked_process(tx, process_id, *extra)
    if lease is not None:
        check_fence(tx, lease, found[-1])
    if prepared.replay_key is not None and found[0]:
        return _replay(tx, process, prepared, found[0][0])
    return append_locked(tx, process, prepared)


def _replay(tx: Tx, process: rows.ProcessRow, prepared: PreparedAppend, stored_row: Row) -> Appended:
    """The stored event of a replayed request, its wake recomputed for the request's target, the status repaired."""
    assert prepared.replay_key is not None
    if stored_row[4] != prepared.payload_hash:
        raise EventReplayConflict(process.process_id, prepared.replay_key)
    stored = rows.event(stored_row, process.owner_session_id)
    delivery = _delivery(process, stored, prepared.target)
    terminal = stored.semantics.terminal
    repaired = terminal is not None and not process.is_terminal
    if terminal is not None and repaired:
        tx.send(
            "set_status",
            {
                "process_id": process.process_id,
                "status": terminal.state,
                "await_output": canonical_text(terminal.await_output),
                "now_ms": stored.occurred_at_ms,
            },
        )
    return Appended(ProcessEventAppendResult(event=stored, wake_delivery=delivery), written=False, repaired=repaired)


def declared_type(process: rows.ProcessRow, name: str) -> ProcessEventType:
    for event_type in process.declared():
        if event_type.name == name:
            return event_type
    raise UndeclaredEventType(process.process_id, name)


def append_locked(tx: Tx, process: rows.ProcessRow, prepared: PreparedAppend) -> Appended:
    """A new event on a locked, freshly read process row (no replay of it exists)."""
    process_id, name = process.process_id, prepared.event_type
    event_type = declared_type(process, name)
    if (event_type.semantics.terminal is not None or name == CANCEL_REQUESTED) and prepared.replay_key is None:
        raise ReplayKeyRequired(process_id, name)
    problem = payload_schema.problem(event_type.payload_schema, prepared.payload)
    if problem is not None:
        raise InvalidEventPayload(name, problem)
    sequence = process.last_sequence + 1
    semantics = materialize(event_type, prepared.payload, process_id, sequence)
    if semantics.terminal is not None and process.is_terminal:
        raise ProcessAlreadyTerminal(process_id, process.status)
    now = tx.now_ms()
    event = ProcessEvent(
        process_id=process_id,
        sequence=sequence,
        event_type=name,
        payload=prepared.payload,
        invocation=invocation(process.owner_session_id, process_id, sequence, name, prepared.replay_key),
        semantics=semantics,
        occurred_at_ms=now,
    )
    delivery = _delivery(process, event, prepared.target)
    tx.send(
        "insert_event",
        {
            "process_id": process_id,
            "sequence": sequence,
            "event_type": name,
            "payload": prepared.payload_json,
            "payload_hash": prepared.payload_hash,
            "replay_key": prepared.replay_key,
            "occurred_at_ms": now,
            "semantics": canonical_text(semantics),
            "is_wake": int(semantics.wake is not None),
        },
    )
    terminal = semantics.terminal
    tx.send(
        "advance_process",
        {
            "process_id": process_id,
            "last_sequence": sequence,
            "status": process.status if terminal is None else terminal.state,
            "await_output": process.await_output if terminal is None else canonical_text(terminal.await_output),
            "now_ms": now,
        },
    )
    tx.send("notify_process", key(process_id))
    return Appended(ProcessEventAppendResult(event=event, wake_delivery=delivery), written=True, repaired=False)


def _delivery(process: rows.ProcessRow, event: ProcessEvent, target: ProcessScope | None) -> ProcessWakeDelivery | None:
    if event.semantics.wake is None:
        return None
    if target is None:
        raise MissingWakeTarget(process.process_id, event.event_type)
    return wake_delivery(event, target, process.caused_by_value())

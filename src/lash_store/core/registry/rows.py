"""Stored rows of the registry to records, events and leases (and the columns a record is stored in).

Every backend stores the same columns: interpreted fields as plain columns
(status, sequences, times, the owner's session), opaque values as canonical
JSON text -- text rather than a JSON column type, so that what is read back is
exactly what was hashed.  The event's invocation is not stored: it follows
from the event's identity and the process owner.  Undecodable stored data
raises :class:`CorruptData`, never passes silently.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, TypeVar

import msgspec

from lash_store.core.registry.semantics import invocation
from lash_store.errors import CorruptData
from lash_store.processes import (
    MaterializedSemantics,
    ProcessAwaitOutput,
    ProcessEvent,
    ProcessEventType,
    ProcessExternalRef,
    ProcessLease,
    ProcessProvenance,
    ProcessRecord,
    ProcessScope,
    ProcessStatus,
)

T = TypeVar("T")
Row = tuple[Any, ...]

#: Columns of the ``process_row`` / ``list_*`` queries, in order.
PROCESS_COLUMNS = (
    "process_id",
    "registration_hash",
    "input",
    "event_types",
    "owner_session_id",
    "owner_agent_frame_id",
    "host_profile_id",
    "caused_by",
    "status",
    "await_output",
    "external_ref",
    "last_sequence",
    "created_at_ms",
    "updated_at_ms",
)
#: Columns of the event queries, in order.
EVENT_COLUMNS = (
    "process_id",
    "sequence",
    "event_type",
    "payload",
    "payload_hash",
    "idempotency_key",
    "occurred_at_ms",
    "semantics",
)
#: Columns of the lease queries: owner, token, fencing counter, claimed at, expires at.
LEASE_COLUMNS = ("lease_owner_id", "lease_token", "fencing_token", "claimed_at_ms", "expires_at_ms")

_STATES = ("running", "completed", "failed", "cancelled")

# Decoded event-type lists by registration hash: a registration never changes, and every append needs its types.
_EVENT_TYPES: OrderedDict[str, list[ProcessEventType]] = OrderedDict()
_EVENT_TYPES_LIMIT = 4096


def decode_json(what: str, text: Any, kind: type[T] | None = None) -> Any:
    """Stored JSON text as plain data (or as ``kind``); :class:`CorruptData` naming ``what`` when it does not decode."""
    if type(text) is not str:
        raise CorruptData(what, f"expected JSON text, found {type(text).__name__}")
    try:
        return msgspec.json.decode(text) if kind is None else msgspec.json.decode(text, type=kind)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise CorruptData(what, str(exc)) from None


def event_types(registration_hash: str, text: Any) -> list[ProcessEventType]:
    """The declared event types of a registration (decoded once per registration hash)."""
    cached = _EVENT_TYPES.get(registration_hash)
    if cached is not None:
        _EVENT_TYPES.move_to_end(registration_hash)
        return cached
    decoded: list[ProcessEventType] = decode_json(
        f"process event types ({registration_hash})", text, list[ProcessEventType]
    )
    _EVENT_TYPES[registration_hash] = decoded
    if len(_EVENT_TYPES) > _EVENT_TYPES_LIMIT:
        _EVENT_TYPES.popitem(last=False)
    return decoded


class ProcessRow(msgspec.Struct, frozen=True):
    """A ``processes`` row, typed (what the service's rules read before anything is decoded further)."""

    process_id: str
    registration_hash: str
    input: str
    event_types: str
    owner_session_id: str
    owner_agent_frame_id: str | None
    host_profile_id: str
    caused_by: str | None
    status: str
    await_output: str | None
    external_ref: str | None
    last_sequence: int
    created_at_ms: int
    updated_at_ms: int

    @property
    def is_terminal(self) -> bool:
        return self.status != "running"

    def declared(self) -> list[ProcessEventType]:
        return event_types(self.registration_hash, self.event_types)

    def caused_by_value(self) -> Any:
        return None if self.caused_by is None else decode_json(f"process {self.process_id!r} caused_by", self.caused_by)


def process_row(row: Row) -> ProcessRow:
    """A stored row checked column by column (wrong types are :class:`CorruptData`)."""
    try:
        parsed = msgspec.convert(dict(zip(PROCESS_COLUMNS, row, strict=True)), ProcessRow)
    except (msgspec.ValidationError, ValueError) as exc:
        raise CorruptData(f"process row {row[0]!r}", str(exc)) from None
    if parsed.status not in _STATES:
        raise CorruptData(f"process {parsed.process_id!r}", f"unknown status {parsed.status!r}")
    return parsed


def record(row: ProcessRow) -> ProcessRecord:
    """The public record of a process row."""
    what = f"process {row.process_id!r}"
    status = ProcessStatus.running()
    if row.is_terminal:
        output = decode_json(f"{what} await output", row.await_output, ProcessAwaitOutput)
        status = ProcessStatus.terminal(row.status, output)  # type: ignore[arg-type]
    external = None
    if row.external_ref is not None:
        external = decode_json(f"{what} external ref", row.external_ref, ProcessExternalRef)
    owner = ProcessScope(session_id=row.owner_session_id, agent_frame_id=row.owner_agent_frame_id)
    return ProcessRecord(
        id=row.process_id,
        input=decode_json(f"{what} input", row.input),
        event_types=list(row.declared()),
        provenance=ProcessProvenance(
            owner_scope=owner, host_profile_id=row.host_profile_id, caused_by=row.caused_by_value()
        ),
        registration_hash=row.registration_hash,
        created_at_ms=row.created_at_ms,
        updated_at_ms=row.updated_at_ms,
        external_ref=external,
        status=status,
    )


def event(row: Row, owner_session_id: str) -> ProcessEvent:
    """An event row (see :data:`EVENT_COLUMNS`) with its invocation built from its identity."""
    process_id, sequence, event_type, payload, _hash, replay_key, occurred_at_ms, semantics = row
    what = f"event {sequence!r} of process {process_id!r}"
    if type(sequence) is not int or type(event_type) is not str or type(occurred_at_ms) is not int:
        raise CorruptData(what, "stored columns have the wrong types")
    if not (replay_key is None or type(replay_key) is str):
        raise CorruptData(what, "the stored replay key is not text")
    return ProcessEvent(
        process_id=process_id,
        sequence=sequence,
        event_type=event_type,
        payload=decode_json(f"{what} payload", payload),
        invocation=invocation(owner_session_id, process_id, sequence, event_type, replay_key),
        semantics=decode_json(f"{what} semantics", semantics, MaterializedSemantics),
        occurred_at_ms=occurred_at_ms,
    )


class LeaseRow(msgspec.Struct, frozen=True):
    """A ``process_leases`` row: owner and token are ``None`` when released; the fencing counter stays."""

    lease_owner_id: str | None
    lease_token: str | None
    fencing_token: int
    claimed_at_ms: int
    expires_at_ms: int

    def live(self, now_ms: int) -> bool:
        """Held by someone and not expired (strictly later than now: a TTL of 0 is expired at once)."""
        return self.lease_token is not None and self.lease_owner_id is not None and self.expires_at_ms > now_ms

    def holds(self, lease: ProcessLease, now_ms: int) -> bool:
        """Whether ``lease`` is exactly this live lease: owner, token and fencing token all match."""
        return (
            self.live(now_ms)
            and self.lease_token == lease.lease_token
            and self.lease_owner_id == lease.owner_id
            and self.fencing_token == lease.fencing_token
        )


def lease_row(row: Row | None) -> LeaseRow | None:
    if row is None:
        return None
    try:
        return msgspec.convert(dict(zip(LEASE_COLUMNS, row, strict=True)), LeaseRow)
    except (msgspec.ValidationError, ValueError) as exc:
        raise CorruptData("process lease row", str(exc)) from None


def lease(process_id: str, row: LeaseRow) -> ProcessLease:
    assert row.lease_owner_id is not None and row.lease_token is not None
    return ProcessLease(
        process_id=process_id,
        owner_id=row.lease_owner_id,
        lease_token=row.lease_token,
        fencing_token=row.fencing_token,
        claimed_at_epoch_ms=row.claimed_at_ms,
        expires_at_epoch_ms=row.expires_at_ms,
    )

"""The process registry's public types (reference §a.2, names of SPEC §9) and its canonical hashes.

A **process** is a background job a runtime tracks durably: a tool call
running in the background, a process started by code or a trigger, a child
session's turn, an external job.  The registry keeps its registration, an
append-only event log with per-process sequences, the sessions that hold a
handle to it, and a fenced single-owner lease.  See the README for the
operations; :class:`ProcessRegistry` (SQLite), ``lash_store.postgres.PostgresProcessRegistry``,
``lash_store.testing.ReferenceProcessRegistry`` and :class:`AsyncProcessRegistry`
implement them.

Every type is a keyword-constructed, frozen ``msgspec.Struct``.  Tagged
unions are built with class methods named after their kinds
(``Selector.pointer("/x")``, ``DedupeKey.const("k")``, ``ProcessAwaitOutput.success(v)``).
Opaque values (``input``, payloads, ``caused_by``, ``metadata``) are plain JSON.

Hashes (reference §0.2) are the SHA-256 of :func:`canonical_json`: sorted
keys, compact separators, UTF-8, struct fields holding ``None`` left out.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Literal

from msgspec import Struct, field

from lash_store.core.canonical import canonical_json, canonical_text, plain, stable_hash
from lash_store.errors import InvalidProcessInput

if TYPE_CHECKING:
    from lash_store.aio import AsyncProcessRegistry
    from lash_store.sqlite.registry import ProcessRegistry

__all__ = [
    "CANCELLED",
    "CANCEL_REQUESTED",
    "COMPLETED",
    "CORE_EVENT_TYPES",
    "FAILED",
    "AsyncProcessRegistry",
    "DedupeKey",
    "MaterializedSemantics",
    "MaterializedTerminal",
    "MaterializedWake",
    "ProcessAwaitOutput",
    "ProcessEvent",
    "ProcessEventAppendRequest",
    "ProcessEventAppendResult",
    "ProcessEventCause",
    "ProcessEventInvocation",
    "ProcessEventSemantics",
    "ProcessEventSubject",
    "ProcessEventType",
    "ProcessExternalRef",
    "ProcessHandleDescriptor",
    "ProcessHandleGrant",
    "ProcessHandleGrantEntry",
    "ProcessLease",
    "ProcessLeaseCompletion",
    "ProcessProvenance",
    "ProcessPruneReport",
    "ProcessRecord",
    "ProcessRegistration",
    "ProcessRegistry",
    "ProcessReplay",
    "ProcessScope",
    "ProcessSessionDeleteReport",
    "ProcessStatus",
    "Selector",
    "TerminalSpec",
    "WakeSpec",
    "cancel_replay_key",
    "canonical_json",
    "canonical_text",
    "payload_hash",
    "plain",
    "registration_hash",
    "stable_hash",
    "terminal_replay_key",
    "wake_id",
]

TerminalState = Literal["completed", "failed", "cancelled"]
StatusState = Literal["running", "completed", "failed", "cancelled"]

#: The four core event types every registration declares (reference §a.5.1).
CANCEL_REQUESTED = "process.cancel_requested"
COMPLETED = "process.completed"
FAILED = "process.failed"
CANCELLED = "process.cancelled"


# --------------------------------------------------------------------------
# Scopes and provenance


class ProcessScope(Struct, kw_only=True, frozen=True):
    """A session, or one agent frame of it, that holds handles and receives wakes."""

    session_id: str
    agent_frame_id: str | None = None

    @property
    def scope_id(self) -> str:
        """``session:<id>``, or ``session:<id>/frame:<frame>`` when the frame id is present and non-empty."""
        if self.agent_frame_id:
            return f"session:{self.session_id}/frame:{self.agent_frame_id}"
        return f"session:{self.session_id}"

    @property
    def is_empty(self) -> bool:
        return not self.session_id


class ProcessProvenance(Struct, kw_only=True, frozen=True):
    """Who owns a process (its owner scope and host profile) and what caused it (opaque, copied into wakes)."""

    owner_scope: ProcessScope = ProcessScope(session_id="root")
    host_profile_id: str = "default"
    caused_by: Any = None


# --------------------------------------------------------------------------
# Event types and their semantics


class Selector(Struct, kw_only=True, frozen=True):
    """Picks a value out of an event's payload: ``payload``, ``pointer``, ``const``, ``template`` or ``present``.

    ``path`` is the JSON Pointer (RFC 6901) of ``pointer`` and ``present``;
    ``value`` the constant of ``const``; ``text`` and ``fields`` the template.
    """

    kind: Literal["payload", "pointer", "const", "template", "present"]
    path: str | None = None
    value: Any = None
    text: str | None = None
    fields: dict[str, Selector] | None = None

    @classmethod
    def payload(cls) -> Selector:
        """The whole payload."""
        return cls(kind="payload")

    @classmethod
    def pointer(cls, path: str) -> Selector:
        """The value at a JSON Pointer; an error if it does not resolve."""
        return cls(kind="pointer", path=path)

    @classmethod
    def const(cls, value: Any) -> Selector:
        """``value`` itself."""
        return cls(kind="const", value=value)

    @classmethod
    def template(cls, text: str, fields: dict[str, Selector]) -> Selector:
        """``text`` with each ``{name}`` of ``fields`` replaced by the string form of that field's value."""
        # Anything but a dict is kept as given: the registry refuses it with a typed error naming the field.
        return cls(kind="template", text=text, fields=dict(fields) if isinstance(fields, dict) else fields)

    @classmethod
    def present(cls, path: str) -> Selector:
        """Whether a JSON Pointer resolves (a boolean)."""
        return cls(kind="present", path=path)


class DedupeKey(Struct, kw_only=True, frozen=True):
    """How a wake's dedupe key is made: ``event_identity`` (``"<process>:<sequence>"``), ``selector`` or ``const``."""

    kind: Literal["event_identity", "selector", "const"] = "event_identity"
    select: Selector | None = None
    value: str | None = None

    @classmethod
    def event_identity(cls) -> DedupeKey:
        return cls(kind="event_identity")

    @classmethod
    def selector(cls, select: Selector) -> DedupeKey:
        """The string form of the value ``select`` picks."""
        return cls(kind="selector", select=select)

    @classmethod
    def const(cls, value: str) -> DedupeKey:
        return cls(kind="const", value=value)


class TerminalSpec(Struct, kw_only=True, frozen=True):
    """An event of this type ends the process in ``state``; ``await_output`` selects what ``await_process`` returns."""

    state: TerminalState
    await_output: Selector | None = None

    @classmethod
    def completed(cls, await_output: Selector | None = None) -> TerminalSpec:
        return cls(state="completed", await_output=await_output)

    @classmethod
    def failed(cls, await_output: Selector) -> TerminalSpec:
        return cls(state="failed", await_output=await_output)

    @classmethod
    def cancelled(cls, await_output: Selector) -> TerminalSpec:
        return cls(state="cancelled", await_output=await_output)


class WakeSpec(Struct, kw_only=True, frozen=True):
    """An event of this type wakes a session (when ``when`` is truthy) with the string form of ``input``."""

    input: Selector
    when: Selector | None = None
    dedupe_key: DedupeKey = DedupeKey()


class ProcessEventSemantics(Struct, kw_only=True, frozen=True):
    """What an event type means beyond its payload: terminal, wake, both or neither."""

    terminal: TerminalSpec | None = None
    wake: WakeSpec | None = None


class ProcessEventType(Struct, kw_only=True, frozen=True):
    """A declared event type: its name, a JSON Schema for its payload (``{}`` accepts anything), its semantics.

    The schema keywords the registry checks are listed in the README; a
    schema using any other keyword is refused at registration rather than
    silently not checked.
    """

    name: str
    payload_schema: Any = field(default_factory=dict)
    semantics: ProcessEventSemantics = ProcessEventSemantics()


def _core(name: str, semantics: ProcessEventSemantics) -> ProcessEventType:
    return ProcessEventType(name=name, payload_schema={}, semantics=semantics)


def _terminal(state: TerminalState) -> ProcessEventSemantics:
    return ProcessEventSemantics(terminal=TerminalSpec(state=state, await_output=Selector.pointer("/await_output")))


#: Added (in this order) to every registration that does not declare them itself.
CORE_EVENT_TYPES: tuple[ProcessEventType, ...] = (
    _core(CANCEL_REQUESTED, ProcessEventSemantics()),
    _core(COMPLETED, _terminal("completed")),
    _core(FAILED, _terminal("failed")),
    _core(CANCELLED, _terminal("cancelled")),
)


class ProcessRegistration(Struct, kw_only=True, frozen=True):
    """What ``register_process`` records: an id, an opaque input, declared event types and provenance."""

    id: str
    input: Any
    event_types: list[ProcessEventType] = field(default_factory=list)
    provenance: ProcessProvenance = ProcessProvenance()

    @classmethod
    def new(cls, id: str, input: Any) -> ProcessRegistration:
        """Owner scope ``session "root"``, host profile ``"default"``, the four core event types."""
        return cls(id=id, input=input, event_types=list(CORE_EVENT_TYPES))

    def with_event_types(self, event_types: Iterable[ProcessEventType]) -> ProcessRegistration:
        """The same registration declaring ``event_types`` too (after those it has)."""
        if not isinstance(event_types, Iterable):
            raise InvalidProcessInput("event_types", f"must be a list, got {type(event_types).__name__}")
        return ProcessRegistration(
            id=self.id, input=self.input, event_types=[*self.event_types, *event_types], provenance=self.provenance
        )

    def with_provenance(self, provenance: ProcessProvenance) -> ProcessRegistration:
        return ProcessRegistration(
            id=self.id, input=self.input, event_types=list(self.event_types), provenance=provenance
        )


# --------------------------------------------------------------------------
# Status and await outputs


class ProcessAwaitOutput(Struct, kw_only=True, frozen=True):
    """What ``await_process`` returns: ``success``, ``failure`` or ``cancelled`` (tagged by ``type``).

    The registry interprets only ``type``; the rest is carried as given.
    """

    type: Literal["success", "failure", "cancelled"]
    value: Any = None
    class_: str | None = field(default=None, name="class")
    code: str | None = None
    message: str | None = None
    raw: Any = None
    control: Any = None

    @classmethod
    def success(cls, value: Any, control: Any = None) -> ProcessAwaitOutput:
        return cls(type="success", value=value, control=control)

    @classmethod
    def failure(cls, class_: str, code: str, message: str, raw: Any = None, control: Any = None) -> ProcessAwaitOutput:
        return cls(type="failure", class_=class_, code=code, message=message, raw=raw, control=control)

    @classmethod
    def cancelled(cls, message: str, raw: Any = None, control: Any = None) -> ProcessAwaitOutput:
        return cls(type="cancelled", message=message, raw=raw, control=control)

    @property
    def terminal_state(self) -> TerminalState:
        """The terminal state this output ends a process in."""
        return _STATE_OF_OUTPUT[self.type]

    def __plain__(self) -> dict[str, Any]:
        """The JSON shape: ``success`` always carries ``value`` (``null`` included); optional parts only when set."""
        if self.type == "success":
            out: dict[str, Any] = {"type": "success", "value": self.value}
        elif self.type == "failure":
            out = {"type": "failure", "class": self.class_, "code": self.code, "message": self.message}
        else:
            out = {"type": "cancelled", "message": self.message}
        if self.type != "success" and self.raw is not None:
            out["raw"] = self.raw
        if self.control is not None:
            out["control"] = self.control
        return out


_STATE_OF_OUTPUT: dict[str, TerminalState] = {"success": "completed", "failure": "failed", "cancelled": "cancelled"}


class ProcessStatus(Struct, kw_only=True, frozen=True):
    """``running``, or a terminal state with the output ``await_process`` returns."""

    state: StatusState = "running"
    await_output: ProcessAwaitOutput | None = None

    @classmethod
    def running(cls) -> ProcessStatus:
        return cls(state="running")

    @classmethod
    def terminal(cls, state: TerminalState, await_output: ProcessAwaitOutput) -> ProcessStatus:
        return cls(state=state, await_output=await_output)

    @property
    def is_terminal(self) -> bool:
        return self.state != "running"


class ProcessExternalRef(Struct, kw_only=True, frozen=True):
    """Where an external system runs the process (opaque to the registry)."""

    backend: str
    id: str
    metadata: Any = None


class ProcessRecord(Struct, kw_only=True, frozen=True):
    """A registered process: its registration, hash, times, external ref and status."""

    id: str
    input: Any
    event_types: list[ProcessEventType]
    provenance: ProcessProvenance
    registration_hash: str
    created_at_ms: int
    updated_at_ms: int
    external_ref: ProcessExternalRef | None = None
    status: ProcessStatus = ProcessStatus()

    @property
    def registration(self) -> ProcessRegistration:
        """The normalised registration this record was created from."""
        return ProcessRegistration(
            id=self.id, input=self.input, event_types=list(self.event_types), provenance=self.provenance
        )

    @property
    def owner_scope_id(self) -> str:
        return self.provenance.owner_scope.scope_id


# --------------------------------------------------------------------------
# Events


class ProcessReplay(Struct, kw_only=True, frozen=True):
    """A replay (idempotency) key: appending the same request twice appends once."""

    key: str


class ProcessEventSubject(Struct, kw_only=True, frozen=True):
    type: Literal["process_event"] = "process_event"
    process_id: str
    sequence: int
    event_type: str


class ProcessEventCause(Struct, kw_only=True, frozen=True):
    type: Literal["process"] = "process"
    process_id: str


class ProcessEventInvocation(Struct, kw_only=True, frozen=True):
    """The causal envelope the registry builds for an event (scope = the process owner's session)."""

    scope: ProcessScope
    subject: ProcessEventSubject
    caused_by: ProcessEventCause
    replay: ProcessReplay | None = None


class MaterializedTerminal(Struct, kw_only=True, frozen=True):
    state: TerminalState
    await_output: ProcessAwaitOutput


class MaterializedWake(Struct, kw_only=True, frozen=True):
    input: str
    dedupe_key: str


class MaterializedSemantics(Struct, kw_only=True, frozen=True):
    """An event's semantics evaluated on its payload when it was appended."""

    terminal: MaterializedTerminal | None = None
    wake: MaterializedWake | None = None


class ProcessEvent(Struct, kw_only=True, frozen=True):
    """One appended event (sequences are dense per process, from 1)."""

    process_id: str
    sequence: int
    event_type: str
    payload: Any
    invocation: ProcessEventInvocation
    semantics: MaterializedSemantics
    occurred_at_ms: int


class ProcessEventAppendRequest(Struct, kw_only=True, frozen=True):
    """What ``append_event`` appends; a wake-producing event needs ``wake_target_scope``."""

    event_type: str
    payload: Any = None
    replay: ProcessReplay | None = None
    wake_target_scope: ProcessScope | None = None

    @classmethod
    def cancel_requested(cls, process_id: str, reason: str | None = None) -> ProcessEventAppendRequest:
        """A cancel request, keyed by its reason: asking twice for the same reason appends once."""
        return cls(
            event_type=CANCEL_REQUESTED,
            payload={"reason": reason},
            replay=ProcessReplay(key=cancel_replay_key(process_id, reason)),
        )

    def with_replay_key(self, key: str) -> ProcessEventAppendRequest:
        return ProcessEventAppendRequest(
            event_type=self.event_type,
            payload=self.payload,
            replay=ProcessReplay(key=key),
            wake_target_scope=self.wake_target_scope,
        )

    def with_wake_target(self, scope: ProcessScope) -> ProcessEventAppendRequest:
        return ProcessEventAppendRequest(
            event_type=self.event_type, payload=self.payload, replay=self.replay, wake_target_scope=scope
        )


class ProcessWakeDelivery(Struct, kw_only=True, frozen=True):
    """A wake computed for an appended event (never stored: recomputed identically on a replay)."""

    wake_id: str
    target_session_id: str
    target_scope_id: str
    process_id: str
    sequence: int
    event_type: str
    event_invocation: ProcessEventInvocation
    process_caused_by: Any
    dedupe_key: str
    input: str
    created_at_ms: int


class ProcessEventAppendResult(Struct, kw_only=True, frozen=True):
    event: ProcessEvent
    wake_delivery: ProcessWakeDelivery | None = None


# --------------------------------------------------------------------------
# Handles, leases, reports


class ProcessHandleDescriptor(Struct, kw_only=True, frozen=True):
    """How a session shows its handle to a process (opaque)."""

    kind: str | None = None
    label: str | None = None


class ProcessHandleGrant(Struct, kw_only=True, frozen=True):
    session_id: str
    process_id: str
    descriptor: ProcessHandleDescriptor = ProcessHandleDescriptor()


class ProcessHandleGrantEntry(Struct, kw_only=True, frozen=True):
    """A grant and the process it names."""

    grant: ProcessHandleGrant
    record: ProcessRecord


class ProcessLeaseCompletion(Struct, kw_only=True, frozen=True):
    process_id: str
    lease_token: str


class ProcessLease(Struct, kw_only=True, frozen=True):
    """A single-owner lease on a process; ``fencing_token`` grows with every new lease of the process."""

    schema_version: int = 1
    process_id: str
    owner_id: str
    lease_token: str
    fencing_token: int
    claimed_at_epoch_ms: int
    expires_at_epoch_ms: int

    def completion(self) -> ProcessLeaseCompletion:
        """What ``complete_process_lease`` takes to release this lease."""
        return ProcessLeaseCompletion(process_id=self.process_id, lease_token=self.lease_token)


class ProcessSessionDeleteReport(Struct, kw_only=True, frozen=True):
    """What ``delete_session_process_state`` did: grants revoked, processes cancelled or kept (both sorted)."""

    session_id: str
    revoked_handle_count: int
    deleted_wake_count: int = 0
    cancel_process_ids: list[str] = field(default_factory=list)
    preserved_process_ids: list[str] = field(default_factory=list)


class ProcessPruneReport(Struct, kw_only=True, frozen=True):
    """What ``prune_processes`` removed (or, in a dry run, would remove)."""

    older_than_epoch_ms: int
    dry_run: bool
    process_ids: list[str] = field(default_factory=list)
    event_count: int = 0
    grant_count: int = 0


# --------------------------------------------------------------------------
# Derived ids (reference §0.2)


def registration_hash(registration: ProcessRegistration) -> str:
    """``H`` of a normalised registration (``{id, input, event_types, provenance}``)."""
    return stable_hash(registration)


def payload_hash(event_type: str, payload: Any) -> str:
    """``H([event_type, payload])``: what a replay must match."""
    return stable_hash([event_type, payload])


def wake_id(target_scope_id: str, dedupe_key: str) -> str:
    """``"wake:" + H([target_scope_id, dedupe_key])``: equal for wakes a consumer should treat as one."""
    return "wake:" + stable_hash([target_scope_id, dedupe_key])


def cancel_replay_key(process_id: str, reason: str | None) -> str:
    """The replay key of :meth:`ProcessEventAppendRequest.cancel_requested` (a reason is a string or ``None``)."""
    if reason is not None and not isinstance(reason, str):
        raise InvalidProcessInput("reason", f"must be a string or None, got {type(reason).__name__}")
    try:
        digest = payload_hash(CANCEL_REQUESTED, {"reason": reason})
    except UnicodeEncodeError:
        raise InvalidProcessInput("reason", "must be valid UTF-8 (lone surrogates are not)") from None
    return f"process:{process_id}:cancel_requested:" + digest


def terminal_replay_key(process_id: str, event_type: str) -> str:
    """The replay key ``complete_process`` appends its terminal event with."""
    return f"process:{process_id}:terminal:{event_type}"


def __getattr__(name: str) -> Any:
    # The registries import this module, so they are re-exported lazily.
    if name == "ProcessRegistry":
        from lash_store.sqlite.registry import ProcessRegistry

        return ProcessRegistry
    if name == "AsyncProcessRegistry":
        from lash_store.aio import AsyncProcessRegistry

        return AsyncProcessRegistry
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_ = (canonical_json, canonical_text, plain)  # re-exported: the hashing rule is part of this module's contract

"""The durable effect journal's public types (reference §c.2, names of SPEC §9).

Every nondeterministic step of an agent runtime -- an LLM call, a tool call,
code execution, a sleep, a process command -- crosses one boundary,
:meth:`ScopedEffectController.execute_effect`.  The journal records each
effect's outcome under a stable key (the controller's full scope identity and
the envelope's replay key), so a turn re-run after a crash gets the recorded
outcomes back instead of calling the model, charging the card or sending the
e-mail again.  At most one caller executes an effect at a time: the claimant
holds a lease that a heartbeat renews while its executor runs, and an expired
lease (a crashed claimant) is taken over.

Every type is a keyword-constructed, frozen ``msgspec.Struct``; tagged unions
are built with class methods named after their kinds
(``EffectScope.turn("s", "t")``, ``RuntimeEffectCommand.sleep(100)``,
``ProcessCommand.start(registration)``, ``RuntimeEffectOutcome.tool_call(v)``).
:class:`EffectHost` (SQLite), ``lash_store.postgres.PostgresEffectHost``,
``lash_store.testing.ReferenceEffectHost`` and ``AsyncEffectHost`` implement
the host.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Literal

from msgspec import Struct

from lash_store.core.canonical import canonical_text, stable_hash
from lash_store.errors import (
    EffectBusyTimeout,
    EffectExecutorUnavailable,
    EffectJournalError,
    EffectLeaseLost,
    EffectReplayConflict,
    EffectReplayCorrupt,
    EffectReplayKeyMissing,
    EffectReplayMissing,
    InvalidEffectInput,
    MissingEffectScopeId,
    RuntimeEffectControllerError,
)
from lash_store.processes import (
    ProcessAwaitOutput,
    ProcessEvent,
    ProcessEventAppendRequest,
    ProcessHandleDescriptor,
    ProcessHandleGrantEntry,
    ProcessRecord,
    ProcessRegistration,
    ProcessScope,
    ProcessSessionDeleteReport,
)

if TYPE_CHECKING:
    from lash_store.api import ProcessRegistryAPI
    from lash_store.service.effects.service import ScopedEffectController
    from lash_store.sqlite.effects import EffectHost

__all__ = [
    "EFFECT_KINDS",
    "EffectBusyTimeout",
    "EffectExecutorUnavailable",
    "EffectHost",
    "EffectInvocation",
    "EffectJournalError",
    "EffectJournalPruneReport",
    "EffectJournalRecord",
    "EffectLeaseLost",
    "EffectReplay",
    "EffectReplayConflict",
    "EffectReplayCorrupt",
    "EffectReplayKeyMissing",
    "EffectReplayMissing",
    "EffectReplayOptions",
    "EffectScope",
    "EffectSubject",
    "MissingEffectScopeId",
    "ProcessCommand",
    "ProcessEffectOutcome",
    "ProcessStartGrant",
    "RuntimeEffectCommand",
    "RuntimeEffectControllerError",
    "RuntimeEffectEnvelope",
    "RuntimeEffectLocalExecutor",
    "RuntimeEffectOutcome",
    "RuntimeScope",
    "ScopedEffectController",
    "envelope_hash",
]

#: The command kinds of an envelope (``invocation.subject.kind`` equals the command's ``type``).
EFFECT_KINDS = (
    "llm_call",
    "direct",
    "tool_call",
    "process",
    "exec_code",
    "checkpoint",
    "sync_execution_surface",
    "sleep",
)

ScopeKind = Literal["turn", "process", "queue_drain", "session_delete", "runtime_operation"]

# --------------------------------------------------------------------------
# Scopes


class EffectScope(Struct, kw_only=True, frozen=True):
    """What a controller journals for: a turn, a process, a queue drain, a session deletion or an operation.

    Build it with the class methods; every id field of the kind must be
    non-blank (``scoped`` raises :class:`MissingEffectScopeId` otherwise).
    """

    type: ScopeKind
    session_id: str | None = None
    turn_id: str | None = None
    process_id: str | None = None
    drain_id: str | None = None
    operation_id: str | None = None

    @classmethod
    def turn(cls, session_id: str, turn_id: str) -> EffectScope:
        return cls(type="turn", session_id=session_id, turn_id=turn_id)

    @classmethod
    def process(cls, process_id: str) -> EffectScope:
        return cls(type="process", process_id=process_id)

    @classmethod
    def queue_drain(cls, session_id: str, drain_id: str) -> EffectScope:
        return cls(type="queue_drain", session_id=session_id, drain_id=drain_id)

    @classmethod
    def session_delete(cls, session_id: str) -> EffectScope:
        return cls(type="session_delete", session_id=session_id)

    @classmethod
    def runtime_operation(cls, operation_id: str) -> EffectScope:
        return cls(type="runtime_operation", operation_id=operation_id)

    @property
    def id_fields(self) -> tuple[str, ...]:
        """The names of the id fields this kind has."""
        return _SCOPE_FIELDS[self.type]

    @property
    def scope_id(self) -> str:
        """The reference's ``id()``: the kind's last id (turn id, process id, drain id, session id, operation id)."""
        return getattr(self, self.id_fields[-1]) or ""

    @property
    def identity(self) -> str:
        """The journal key's scope part: the kind and every id, as canonical JSON (reference §7 item 15)."""
        return canonical_text({"type": self.type, **{name: getattr(self, name) for name in self.id_fields}})


_SCOPE_FIELDS: dict[str, tuple[str, ...]] = {
    "turn": ("session_id", "turn_id"),
    "process": ("process_id",),
    "queue_drain": ("session_id", "drain_id"),
    "session_delete": ("session_id",),
    "runtime_operation": ("operation_id",),
}


# --------------------------------------------------------------------------
# Envelopes


class RuntimeScope(Struct, kw_only=True, frozen=True):
    """Where in a runtime an effect happens (opaque to the journal; hashed with the envelope)."""

    session_id: str
    turn_id: str | None = None
    turn_index: int | None = None
    protocol_iteration: int | None = None


class EffectSubject(Struct, kw_only=True, frozen=True):
    type: Literal["effect"] = "effect"
    effect_id: str
    kind: str


class EffectReplay(Struct, kw_only=True, frozen=True):
    """The replay key: the journal records an effect's outcome under (scope identity, key)."""

    key: str


class EffectInvocation(Struct, kw_only=True, frozen=True):
    scope: RuntimeScope
    subject: EffectSubject
    replay: EffectReplay
    caused_by: Any = None


class ProcessStartGrant(Struct, kw_only=True, frozen=True):
    """A handle grant made when a started process is registered."""

    owner_scope: ProcessScope
    descriptor: ProcessHandleDescriptor = ProcessHandleDescriptor()


ProcessCommandKind = Literal["start", "list", "transfer", "delete_session", "await", "cancel", "signal"]


class ProcessCommand(Struct, kw_only=True, frozen=True):
    """A process-control command, executed against the registry of a process-control executor (reference §c.5)."""

    type: ProcessCommandKind
    registration: ProcessRegistration | None = None
    grant: ProcessStartGrant | None = None
    execution_context: Any = None
    owner_scope: ProcessScope | None = None
    mode: Literal["live", "all"] | None = None
    from_scope: ProcessScope | None = None
    to_scope: ProcessScope | None = None
    process_ids: list[str] | None = None
    session_id: str | None = None
    process_id: str | None = None
    reason: str | None = None
    signal_id: str | None = None
    request: ProcessEventAppendRequest | None = None

    @classmethod
    def start(
        cls, registration: ProcessRegistration, grant: ProcessStartGrant | None = None, execution_context: Any = None
    ) -> ProcessCommand:
        return cls(type="start", registration=registration, grant=grant, execution_context=execution_context)

    @classmethod
    def list(cls, owner_scope: ProcessScope, mode: Literal["live", "all"] = "live") -> ProcessCommand:
        return cls(type="list", owner_scope=owner_scope, mode=mode)

    @classmethod
    def transfer(
        cls, from_scope: ProcessScope, to_scope: ProcessScope, process_ids: builtins.list[str]
    ) -> ProcessCommand:
        if isinstance(process_ids, (str, bytes)) or not isinstance(process_ids, Iterable):
            raise InvalidEffectInput(
                f"process transfer needs process_ids, a list of ids (got {type(process_ids).__name__})", "process_ids"
            )
        return cls(type="transfer", from_scope=from_scope, to_scope=to_scope, process_ids=list(process_ids))

    @classmethod
    def delete_session(cls, session_id: str) -> ProcessCommand:
        return cls(type="delete_session", session_id=session_id)

    @classmethod
    def await_(cls, process_id: str) -> ProcessCommand:
        """``await {process_id}`` (``await`` is a Python keyword)."""
        return cls(type="await", process_id=process_id)

    @classmethod
    def cancel(cls, process_id: str, reason: str | None = None) -> ProcessCommand:
        return cls(type="cancel", process_id=process_id, reason=reason)

    @classmethod
    def signal(cls, process_id: str, signal_id: str, request: ProcessEventAppendRequest) -> ProcessCommand:
        return cls(type="signal", process_id=process_id, signal_id=signal_id, request=request)


class RuntimeEffectCommand(Struct, kw_only=True, frozen=True):
    """What an effect does: ``type`` is one of :data:`EFFECT_KINDS`.

    The journal interprets only ``sleep`` (``duration_ms``) and ``process``
    (``process``); ``request`` of every other kind is opaque JSON, hashed.
    """

    type: str
    request: Any = None
    duration_ms: int | None = None
    process: ProcessCommand | None = None

    @classmethod
    def llm_call(cls, request: Any) -> RuntimeEffectCommand:
        return cls(type="llm_call", request=request)

    @classmethod
    def direct(cls, request: Any) -> RuntimeEffectCommand:
        return cls(type="direct", request=request)

    @classmethod
    def tool_call(cls, request: Any) -> RuntimeEffectCommand:
        return cls(type="tool_call", request=request)

    @classmethod
    def exec_code(cls, code: Any) -> RuntimeEffectCommand:
        return cls(type="exec_code", request=code)

    @classmethod
    def checkpoint(cls, request: Any) -> RuntimeEffectCommand:
        return cls(type="checkpoint", request=request)

    @classmethod
    def sync_execution_surface(cls, request: Any) -> RuntimeEffectCommand:
        return cls(type="sync_execution_surface", request=request)

    @classmethod
    def sleep(cls, duration_ms: int) -> RuntimeEffectCommand:
        return cls(type="sleep", duration_ms=duration_ms)

    @classmethod
    def process_command(cls, command: ProcessCommand) -> RuntimeEffectCommand:
        return cls(type="process", process=command)


class RuntimeEffectEnvelope(Struct, kw_only=True, frozen=True):
    """One effect: who asks (``invocation``, whose ``replay.key`` keys the journal) and what (``command``)."""

    invocation: EffectInvocation
    command: RuntimeEffectCommand

    @classmethod
    def new(
        cls,
        scope: RuntimeScope,
        effect_id: str,
        replay_key: str,
        command: RuntimeEffectCommand,
        caused_by: Any = None,
    ) -> RuntimeEffectEnvelope:
        """An envelope whose subject kind is the command's kind."""
        # A command that is not one is kept as given: the journal refuses it with a typed error naming it.
        subject = EffectSubject(effect_id=effect_id, kind=getattr(command, "type", ""))
        invocation = EffectInvocation(
            scope=scope, subject=subject, replay=EffectReplay(key=replay_key), caused_by=caused_by
        )
        return cls(invocation=invocation, command=command)

    @property
    def replay_key(self) -> str:
        return self.invocation.replay.key


def envelope_hash(envelope: RuntimeEffectEnvelope) -> str:
    """``H(envelope)`` (reference §0.2): a replay key reused with another envelope is a conflict."""
    return stable_hash(envelope)


# --------------------------------------------------------------------------
# Outcomes


ProcessOutcomeKind = Literal["start", "list", "transfer", "delete_session", "await", "cancel", "signal"]


class ProcessEffectOutcome(Struct, kw_only=True, frozen=True):
    """The result of a process command (which field is set follows ``type``)."""

    type: ProcessOutcomeKind
    record: ProcessRecord | None = None
    entries: list[ProcessHandleGrantEntry] | None = None
    report: ProcessSessionDeleteReport | None = None
    output: ProcessAwaitOutput | None = None
    event: ProcessEvent | None = None


class RuntimeEffectOutcome(Struct, kw_only=True, frozen=True):
    """What an effect produced: ``type`` mirrors the command kind; ``value`` is opaque JSON.

    The journal builds ``sleep`` and ``process`` outcomes itself.
    """

    type: str
    value: Any = None
    process: ProcessEffectOutcome | None = None

    @classmethod
    def llm_call(cls, value: Any) -> RuntimeEffectOutcome:
        return cls(type="llm_call", value=value)

    @classmethod
    def direct(cls, value: Any) -> RuntimeEffectOutcome:
        return cls(type="direct", value=value)

    @classmethod
    def tool_call(cls, value: Any) -> RuntimeEffectOutcome:
        return cls(type="tool_call", value=value)

    @classmethod
    def exec_code(cls, value: Any) -> RuntimeEffectOutcome:
        return cls(type="exec_code", value=value)

    @classmethod
    def checkpoint(cls, value: Any = None) -> RuntimeEffectOutcome:
        return cls(type="checkpoint", value=value)

    @classmethod
    def sync_execution_surface(cls, value: Any = None) -> RuntimeEffectOutcome:
        return cls(type="sync_execution_surface", value=value)

    @classmethod
    def sleep(cls) -> RuntimeEffectOutcome:
        return cls(type="sleep")

    @classmethod
    def process_outcome(cls, outcome: ProcessEffectOutcome) -> RuntimeEffectOutcome:
        return cls(type="process", process=outcome)


# --------------------------------------------------------------------------
# Executors and options


class RuntimeEffectLocalExecutor:
    """What a caller offers to actually run an effect.

    Build one with :meth:`runner` (a callable taking the envelope and
    returning a :class:`RuntimeEffectOutcome`), :meth:`process_control` (a
    process registry, for ``process`` commands), :meth:`sleep_only` or
    :meth:`unavailable`.  ``execute_effect`` also accepts a bare callable.

    A runner reports a failure by raising :class:`RuntimeEffectControllerError`:
    a deterministic one (``retryable=False``) is journaled as ``failed`` and
    replayed; a retryable one, or any other exception, releases the journal
    row for a later attempt and propagates.
    """

    def __init__(
        self,
        runner: Callable[[RuntimeEffectEnvelope], RuntimeEffectOutcome] | None = None,
        registry: ProcessRegistryAPI | None = None,
        label: str = "unavailable",
    ) -> None:
        self._runner = runner
        self._registry = registry
        self.label = label

    @classmethod
    def runner(cls, run: Callable[[RuntimeEffectEnvelope], RuntimeEffectOutcome]) -> RuntimeEffectLocalExecutor:
        return cls(runner=run, label="runner")

    @classmethod
    def process_control(cls, registry: ProcessRegistryAPI) -> RuntimeEffectLocalExecutor:
        return cls(registry=registry, label="process_control")

    @classmethod
    def sleep_only(cls) -> RuntimeEffectLocalExecutor:
        return cls(label="sleep_only")

    @classmethod
    def unavailable(cls) -> RuntimeEffectLocalExecutor:
        return cls()

    def execute(self, envelope: RuntimeEffectEnvelope) -> RuntimeEffectOutcome:
        if self._runner is None:
            raise EffectExecutorUnavailable(f"a {self.label} executor cannot run a {envelope.command.type} effect")
        return self._runner(envelope)

    def into_process(self) -> ProcessRegistryAPI:
        """The registry of a process-control executor; :class:`EffectExecutorUnavailable` otherwise."""
        if self._registry is None:
            raise EffectExecutorUnavailable(f"a {self.label} executor cannot run process commands")
        return self._registry


class EffectReplayOptions(Struct, kw_only=True, frozen=True):
    """How a host claims and waits (reference ``SqliteEffectReplayOptions``, with the §7 fixes).

    * ``lease_ttl_ms``: a claim's lease (0 counts as 1 ms);
    * ``heartbeat_interval_ms``: how often a running effect renews its lease (``None``: a third of the
      TTL; ``0``: never -- only for tests that model a stalled claimant);
    * ``busy_timeout_ms``: how long a caller waits for another caller's live claim before it raises
      :class:`EffectBusyTimeout` (``None``: wait as long as the holder keeps its lease alive).
    """

    lease_ttl_ms: int = 30_000
    heartbeat_interval_ms: int | None = None
    busy_timeout_ms: int | None = 600_000


# --------------------------------------------------------------------------
# Journal listings


class EffectJournalRecord(Struct, kw_only=True, frozen=True):
    """One journal row, as listings show it."""

    scope_identity: str
    scope_kind: str
    scope_id: str
    replay_key: str
    envelope_hash: str
    status: Literal["in_progress", "released", "completed", "failed"]
    attempts: int
    lease_owner_id: str | None
    lease_expires_at_ms: int
    due_at_ms: int | None
    created_at_ms: int
    updated_at_ms: int
    outcome: RuntimeEffectOutcome | None = None
    error: dict[str, Any] | None = None


class EffectJournalPruneReport(Struct, kw_only=True, frozen=True):
    """What ``prune_journal`` removed (or, in a dry run, would remove): finished rows older than the horizon."""

    older_than_epoch_ms: int
    dry_run: bool
    row_count: int


def __getattr__(name: str) -> Any:
    # The hosts import this module, so they are re-exported lazily.
    if name == "EffectHost":
        from lash_store.sqlite.effects import EffectHost

        return EffectHost
    if name == "ScopedEffectController":
        from lash_store.service.effects.service import ScopedEffectController

        return ScopedEffectController
    if name == "AsyncEffectHost":
        from lash_store.aio import AsyncEffectHost

        return AsyncEffectHost
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

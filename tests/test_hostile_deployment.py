"""A table-driven hostile probe of the three deployment stores: the process registry, the host-event store and
the effect journal (SPEC section 9), modelled on ``tests/test_hostile_probe.py``.

For every case the required outcome is a typed error deriving from ``lash_store.errors.StoreError`` -- for bad
input the store's own typed input error (``InvalidProcessInput``, ``InvalidHostEventInput``,
``InvalidEffectInput`` / ``MissingEffectScopeId`` / ``EffectReplayKeyMissing``) naming the field (``.what`` for
the registry and the host-event store; the effect journal's errors name it in their message and carry their
``code``), never a raw ``TypeError``, ``AttributeError``, ``UnicodeEncodeError``, ``OverflowError``,
``RecursionError``, ``KeyError`` or ``ValueError`` -- and nothing written: a full dump of the deployment file
through an independent ``sqlite3`` connection is unchanged, and so is the directory listing.  Value
constructors (``ProcessRegistration.new``, ``RuntimeEffectEnvelope.new``, ...) may accept a hostile value (they
are plain structs) but then the store must refuse it; when they refuse it themselves, with a typed error too.

A representative subset runs against PostgreSQL as well (typed error, table row counts unchanged).

Only the public API is used: ``lash_store.processes``, ``lash_store.host_events``, ``lash_store.effects``,
``lash_store.errors``, the SQLite stores and ``lash_store.postgres``, plus raw ``sqlite3``.
"""

# The probe passes ill-typed values on purpose: mypy's complaints about them are the point, not a problem.
# mypy: disable-error-code="arg-type, dict-item, misc, assignment, no-untyped-call, func-returns-value, list-item"

from __future__ import annotations

import asyncio
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from lash_store import StoreOptions
from lash_store.aio import AsyncEffectHost, AsyncHostEventStore, AsyncProcessRegistry
from lash_store.effects import (
    EffectHost,
    EffectReplayOptions,
    EffectScope,
    ProcessCommand,
    RuntimeEffectCommand,
    RuntimeEffectEnvelope,
    RuntimeEffectLocalExecutor,
    RuntimeEffectOutcome,
    RuntimeScope,
    ScopedEffectController,
)
from lash_store.errors import (
    EffectJournalError,
    EffectReplayConflict,
    EffectReplayKeyMissing,
    EffectReplayMissing,
    HostEventStoreError,
    InvalidEffectInput,
    InvalidHostEventInput,
    InvalidInput,
    InvalidProcessInput,
    LeaseLost,
    MissingEffectScopeId,
    NotAWakeEvent,
    OccurrenceConflict,
    ProcessAlreadyLeased,
    ProcessRegistryError,
    RegistrationConflict,
    StoreClosed,
    StoreError,
    UnknownDelivery,
    UnknownOccurrence,
    UnknownProcess,
    WaitTimeout,
)
from lash_store.host_events import (
    HostEventOccurrenceRecord,
    HostEventOccurrenceRequest,
    HostEventStore,
    TriggerSubscriptionDraft,
    TriggerSubscriptionFilter,
    TriggerSubscriptionRecord,
    TriggerTarget,
)
from lash_store.processes import (
    DedupeKey,
    ProcessAwaitOutput,
    ProcessEventAppendRequest,
    ProcessEventSemantics,
    ProcessEventType,
    ProcessExternalRef,
    ProcessHandleDescriptor,
    ProcessLease,
    ProcessLeaseCompletion,
    ProcessProvenance,
    ProcessRegistration,
    ProcessRegistry,
    ProcessReplay,
    ProcessScope,
    Selector,
    TerminalSpec,
    WakeSpec,
)
from tests.helpers import listing, snapshot

T = TypeVar("T")

START_MS = 1_700_000_000_000
TTL = 30_000
MAX_I64 = 2**63 - 1
NAN = float("nan")
INF = float("inf")
SURROGATE = "\ud800"
LOW_SURROGATE = "\udfff"
HUGE = "x" * 1_000_000  # a megabyte id
DEEP_LEVELS = 100_000
WAKE = "job.note"  # P1's wake event type (wakes with /msg)
LINE = "job.line"  # P1's plain event type (any payload)


def once(items: Iterable[T]) -> Iterator[T]:
    """An iterable that can be consumed only once."""
    yield from items


def deep_list(levels: int = DEEP_LEVELS) -> list[Any]:
    value: list[Any] = []
    for _ in range(levels):
        value = [value]
    return value


def deep_dict(levels: int = DEEP_LEVELS) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(levels):
        value = {"a": value}
    return value


def cyclic_list() -> list[Any]:
    value: list[Any] = []
    value.append(value)
    return value


def cyclic_dict() -> dict[str, Any]:
    value: dict[str, Any] = {}
    value["self"] = value
    return value


def deep_selector(levels: int = DEEP_LEVELS) -> Selector:
    selector = Selector.payload()
    for _ in range(levels):
        selector = Selector(kind="template", text="{a}", fields={"a": selector})
    return selector


#: Hostile opaque JSON values: (id, value).  Each must be refused wherever the stores take opaque JSON.
BAD_JSON: list[tuple[str, Any]] = [
    ("nan", NAN),
    ("inf", {"x": -INF}),
    ("int-key", {1: "one"}),
    ("tuple-key", {(1, 2): "pair"}),
    ("bytes", b"raw"),
    ("object", object()),
    ("set", {1, 2}),
    ("surrogate", {"k": SURROGATE}),
    ("surrogate-key", {LOW_SURROGATE: 1}),
    ("deep-list", deep_list()),
    ("deep-dict", deep_dict()),
    ("cyclic-list", cyclic_list()),
    ("cyclic-dict", cyclic_dict()),
    ("int-5000-digits", [10**5000]),
]


class FakeClock:
    def __init__(self, now: int = START_MS) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def S(session_id: Any, frame: Any = None) -> ProcessScope:
    return ProcessScope(session_id=session_id, agent_frame_id=frame)


def note_type() -> ProcessEventType:
    return ProcessEventType(name=WAKE, semantics=ProcessEventSemantics(wake=WakeSpec(input=Selector.pointer("/msg"))))


def registration(process_id: Any = "p-new", *types: Any, input: Any = None, **provenance: Any) -> ProcessRegistration:
    base = ProcessRegistration.new(process_id, {"cmd": "run"} if input is None else input)
    if types:
        base = base.with_event_types(types)
    if provenance:
        fields: dict[str, Any] = {"owner_scope": S("root"), "host_profile_id": "default", **provenance}
        base = base.with_provenance(ProcessProvenance(**fields))
    return base


def raw_registration(**fields: Any) -> ProcessRegistration:
    base: dict[str, Any] = {
        "id": "p-new",
        "input": {"cmd": "run"},
        "event_types": [],
        "provenance": ProcessProvenance(),
    }
    return ProcessRegistration(**{**base, **fields})


def typed(name: Any = "t.x", schema: Any = None, semantics: Any = None) -> ProcessRegistration:
    fields: dict[str, Any] = {"name": name}
    if schema is not None:
        fields["payload_schema"] = schema
    if semantics is not None:
        fields["semantics"] = semantics
    return registration("p-new", ProcessEventType(**fields))


def waking(input: Any = None, when: Any = None, dedupe: Any = None) -> ProcessRegistration:
    fields: dict[str, Any] = {"input": Selector.pointer("/msg") if input is None else input}
    if when is not None:
        fields["when"] = when
    if dedupe is not None:
        fields["dedupe_key"] = dedupe
    return typed(semantics=ProcessEventSemantics(wake=WakeSpec(**fields)))


def append(**fields: Any) -> ProcessEventAppendRequest:
    base: dict[str, Any] = {"event_type": LINE, "payload": {"line": "x"}}
    return ProcessEventAppendRequest(**{**base, **fields})


def lease_with(lease: ProcessLease, **fields: Any) -> ProcessLease:
    base = {name: getattr(lease, name) for name in lease.__struct_fields__}
    return ProcessLease(**{**base, **fields})


def draft(**fields: Any) -> TriggerSubscriptionDraft:
    base: dict[str, Any] = {"session_id": "s-2", "source_type": "button", "source_key": "key-2"}
    return TriggerSubscriptionDraft(**{**base, **fields})


def occurrence(**fields: Any) -> HostEventOccurrenceRequest:
    base: dict[str, Any] = {"source_type": "button", "source_key": "key-1", "idempotency_key": "press-2"}
    return HostEventOccurrenceRequest(**{**base, **fields})


def selection(**fields: Any) -> TriggerSubscriptionFilter:
    return TriggerSubscriptionFilter(**fields)


TURN = EffectScope.turn("s-1", "t-1")


def runtime_scope(**fields: Any) -> RuntimeScope:
    return RuntimeScope(**{"session_id": "s-1", "turn_id": "t-1", **fields})


def envelope(key: Any = "k-new", command: Any = None, **fields: Any) -> RuntimeEffectEnvelope:
    command = RuntimeEffectCommand.exec_code("print(1)") if command is None else command
    return RuntimeEffectEnvelope.new(fields.pop("scope", runtime_scope()), fields.pop("effect_id", "e"), key, command)


def exec_request(request: Any) -> RuntimeEffectEnvelope:
    return envelope(command=RuntimeEffectCommand.exec_code(request))


def returning(value: Any = "ok") -> RuntimeEffectLocalExecutor:
    return RuntimeEffectLocalExecutor.runner(lambda env: RuntimeEffectOutcome.exec_code(value))


# ---------------------------------------------------------------------------
# the deployment file, seeded, and full snapshots of it


@dataclass
class World:
    """One deployment file holding all three stores, seeded.

    Registry: process ``p1`` (a plain type ``job.line`` and a wake type ``job.note``) leased by ``owner-1`` and
    granted to session ``root``, with a wake event at sequence 1 and a plain event at sequence 2; process ``p2``
    completed.  Host events: subscription ``trigger:1`` of session ``s-1`` on ``button``/``key-1``, an occurrence
    with its delivery reserved.  Effects: a completed ``exec_code`` effect under ``TURN`` with replay key ``k1``.
    """

    tmp: Path
    path: Path
    clock: FakeClock
    registry: ProcessRegistry
    events: HostEventStore
    effects: EffectHost
    lease: ProcessLease
    subscription: TriggerSubscriptionRecord
    occurrence: HostEventOccurrenceRecord
    controller: ScopedEffectController

    def close(self) -> None:
        for store in (self.registry, self.events, self.effects):
            store.close()


def seed(registry: Any, events: Any, effects: Any) -> tuple[ProcessLease, Any, Any, Any]:
    registry.register_process(registration("p1", ProcessEventType(name=LINE), note_type()))
    registry.grant_handle(S("root"), "p1", ProcessHandleDescriptor(kind="job", label="p1"))
    registry.append_event(
        "p1", ProcessEventAppendRequest(event_type=WAKE, payload={"msg": "hi"}, wake_target_scope=S("root"))
    )
    registry.append_event("p1", append())
    lease = registry.claim_process_lease("p1", "owner-1", TTL)
    registry.register_process(registration("p2"))
    registry.complete_process("p2", ProcessAwaitOutput.success({"done": True}))
    subscription = events.register_subscription(draft(session_id="s-1", source_key="key-1", name="first"))
    recorded = events.record_occurrence(occurrence(idempotency_key="press-1", payload={"n": 1}))
    assert len(events.reserve_matching_deliveries(recorded.occurrence_id)) == 1
    controller = effects.scoped(TURN)
    controller.execute_effect(envelope("k1"), returning("first"))
    return lease, subscription, recorded, controller


@pytest.fixture(scope="module")
def seeded_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The seeded deployment file, made once (seeding takes ~25 ms, copying it ~1 ms); every test gets a copy."""
    path = tmp_path_factory.mktemp("seeded") / "deployment.db"
    options = StoreOptions(clock=FakeClock())
    with (
        ProcessRegistry.open(path, options) as registry,
        HostEventStore.open(path, options) as events,
        EffectHost.open(path, options) as effects,
    ):
        seed(registry, events, effects)
    leftovers = sorted(p.name for p in path.parent.iterdir())
    assert leftovers == [path.name], f"the closed file left {leftovers}: a copy of the file alone would miss them"
    return path


@pytest.fixture
def world(tmp_path: Path, seeded_file: Path) -> Iterator[World]:
    path = tmp_path / "deployment.db"
    shutil.copyfile(seeded_file, path)
    path.chmod(0o600)
    clock = FakeClock()
    options = StoreOptions(clock=clock)
    registry = ProcessRegistry.open(path, options)
    events = HostEventStore.open(path, options)
    effects = EffectHost.open(path, options, replay_options=EffectReplayOptions(busy_timeout_ms=200))
    try:
        lease = registry.get_process_lease("p1")
        (subscription,) = events.list_subscriptions()
        (recorded,) = events.list_occurrences()
        assert lease is not None and lease.owner_id == "owner-1"
        controller = effects.scoped(TURN)
        yield World(tmp_path, path, clock, registry, events, effects, lease, subscription, recorded, controller)
    finally:
        registry.close()
        events.close()
        effects.close()


def usable(w: World) -> None:
    """Every store still writes (and the seeded lease is intact)."""
    assert w.registry.renew_process_lease(w.lease, TTL).fencing_token == w.lease.fencing_token
    w.events.record_occurrence(occurrence(idempotency_key="after"))
    assert w.controller.execute_effect(envelope("k-after"), returning("after")).value == "after"


# ---------------------------------------------------------------------------
# the table: (id, operation, the typed error expected, the field it must name)
#
# ``field`` must be a substring of ``.what`` for InvalidInput errors of the registry and the host-event store; for
# the effect journal's errors (which carry a ``code``) the error's ``code`` is its class's and ``field`` must be a
# substring of its message.  For non-input errors (unknown ids, stale leases, ...) ``field`` is matched against
# the message, or ``""`` when the type says it all.

Op = Callable[[World], object]
Case = tuple[str, Op, type[StoreError], str]

R = InvalidProcessInput
H = InvalidHostEventInput
E = InvalidEffectInput


def registry_cases() -> list[Case]:
    cases: list[Case] = []
    add = cases.append

    # -- ids where a process id is expected, in every method that takes one
    bad_ids: list[tuple[str, Any]] = [
        ("int", 5),
        ("bool", True),
        ("none", None),
        ("bytes", b"p1"),
        ("float", 1.5),
        ("empty", ""),
        ("blank", "  \t\n"),
        ("nul", "p\x001"),
        ("surrogate", SURROGATE),
        ("huge", HUGE),
        ("list", ["p1"]),
    ]
    id_ops: list[tuple[str, Callable[[World, Any], object], str]] = [
        ("get_process", lambda w, v: w.registry.get_process(v), "process_id"),
        (
            "set_external_ref",
            lambda w, v: w.registry.set_external_ref(v, ProcessExternalRef(backend="b", id="i")),
            "process_id",
        ),
        ("append_event", lambda w, v: w.registry.append_event(v, append()), "process_id"),
        ("complete_process", lambda w, v: w.registry.complete_process(v, ProcessAwaitOutput.success(1)), "process_id"),
        ("events_after", lambda w, v: w.registry.events_after(v, 0), "process_id"),
        ("wake_events_after", lambda w, v: w.registry.wake_events_after(v, 0), "process_id"),
        ("ack_wake", lambda w, v: w.registry.ack_wake(v, 1), "process_id"),
        ("wait_event_after", lambda w, v: w.registry.wait_event_after(v, LINE, 0, timeout_ms=0), "process_id"),
        ("await_process", lambda w, v: w.registry.await_process(v, timeout_ms=0), "process_id"),
        ("grant_handle", lambda w, v: w.registry.grant_handle(S("root"), v), "process_id"),
        ("revoke_handle", lambda w, v: w.registry.revoke_handle(S("root"), v), "process_id"),
        ("transfer", lambda w, v: w.registry.transfer_handle_grants(S("root"), S("s-9"), [v]), "process_ids[0]"),
        ("has_handle_grant", lambda w, v: w.registry.has_handle_grant(S("root"), v), "process_id"),
        ("handle_grants_for_process", lambda w, v: w.registry.handle_grants_for_process(v), "process_id"),
        ("delete_session", lambda w, v: w.registry.delete_session_process_state(v), "session_id"),
        ("claim_lease", lambda w, v: w.registry.claim_process_lease(v, "owner-2", TTL), "process_id"),
        ("claim_lease_owner", lambda w, v: w.registry.claim_process_lease("p1", v, TTL), "owner_id"),
        ("get_process_lease", lambda w, v: w.registry.get_process_lease(v), "process_id"),
        ("register", lambda w, v: w.registry.register_process(registration(v)), "registration.id"),
        ("grant_scope", lambda w, v: w.registry.grant_handle(S(v), "p1"), "owner_scope.session_id"),
        ("list_grants_scope", lambda w, v: w.registry.list_handle_grants(S(v)), "owner_scope.session_id"),
        ("list_live_grants_scope", lambda w, v: w.registry.list_live_handle_grants(S(v)), "owner_scope.session_id"),
        ("revoke_scope", lambda w, v: w.registry.revoke_handle(S(v), "p1"), "owner_scope.session_id"),
        (
            "transfer_from",
            lambda w, v: w.registry.transfer_handle_grants(S(v), S("s-9"), ["p1"]),
            "from_scope.session_id",
        ),
        ("transfer_to", lambda w, v: w.registry.transfer_handle_grants(S("root"), S(v), ["p1"]), "to_scope.session_id"),
        (
            "host_profile",
            lambda w, v: w.registry.register_process(registration("p-new", host_profile_id=v)),
            "host_profile_id",
        ),
        (
            "owner_scope",
            lambda w, v: w.registry.register_process(registration("p-new", owner_scope=S(v))),
            "owner_scope.session_id",
        ),
        ("event_type_name", lambda w, v: w.registry.register_process(typed(name=v)), "event_types[4].name"),
        ("append_event_type", lambda w, v: w.registry.append_event("p1", append(event_type=v)), "request.event_type"),
        ("wait_event_type", lambda w, v: w.registry.wait_event_after("p1", v, 0, timeout_ms=0), "event_type"),
        (
            "replay_key",
            lambda w, v: w.registry.append_event("p1", append(replay=ProcessReplay(key=v))),
            "request.replay",
        ),
        ("list_after", lambda w, v: w.registry.list_processes(after=v), "after"),
        (
            "external_ref_backend",
            lambda w, v: w.registry.set_external_ref("p1", ProcessExternalRef(backend=v, id="i")),
            "external_ref.backend",
        ),
        (
            "external_ref_id",
            lambda w, v: w.registry.set_external_ref("p1", ProcessExternalRef(backend="b", id=v)),
            "external_ref.id",
        ),
        (
            "wake_target",
            lambda w, v: w.registry.append_event(
                "p1", append(event_type=WAKE, payload={"msg": "m"}, wake_target_scope=S(v))
            ),
            "wake_target_scope.session_id",
        ),
        (
            "completion_process",
            lambda w, v: w.registry.complete_process_lease(ProcessLeaseCompletion(process_id=v, lease_token="t")),
            "completion.process_id",
        ),
        (
            "completion_token",
            lambda w, v: w.registry.complete_process_lease(ProcessLeaseCompletion(process_id="p1", lease_token=v)),
            "completion.lease_token",
        ),
        (
            "renew_owner",
            lambda w, v: w.registry.renew_process_lease(lease_with(w.lease, owner_id=v), TTL),
            "lease.owner_id",
        ),
        (
            "renew_token",
            lambda w, v: w.registry.renew_process_lease(lease_with(w.lease, lease_token=v), TTL),
            "lease.lease_token",
        ),
        (
            "renew_process",
            lambda w, v: w.registry.renew_process_lease(lease_with(w.lease, process_id=v), TTL),
            "lease.process_id",
        ),
    ]
    # Free text (blank is fine there) and the reason of a deletion: only wrong types, NUL and surrogates.
    text_values = [v for v in bad_ids if v[0] in ("int", "bool", "bytes", "float", "nul", "surrogate", "list")]
    for op_id, op, field in id_ops:
        for value_id, value in bad_ids:
            if op_id == "list_after" and value_id == "none":
                continue  # None: the first page
            add((f"registry/{op_id}/{value_id}", lambda w, op=op, value=value: op(w, value), R, field))
    text_ops: list[tuple[str, Callable[[World, Any], object], str]] = [
        ("delete_reason", lambda w, v: w.registry.delete_session_process_state("root", reason=v), "reason"),
        ("agent_frame", lambda w, v: w.registry.grant_handle(S("root", v), "p1"), "owner_scope.agent_frame_id"),
        (
            "descriptor_kind",
            lambda w, v: w.registry.grant_handle(S("root"), "p1", ProcessHandleDescriptor(kind=v)),
            "descriptor.kind",
        ),
        (
            "descriptor_label",
            lambda w, v: w.registry.grant_handle(S("root"), "p1", ProcessHandleDescriptor(label=v)),
            "descriptor.label",
        ),
        ("list_state", lambda w, v: w.registry.list_processes(state=v), "state"),
        (
            "dedupe_const",
            lambda w, v: w.registry.register_process(waking(dedupe=DedupeKey.const(v))),
            "dedupe_key.value",
        ),
        (
            "pointer_path",
            lambda w, v: w.registry.register_process(waking(input=Selector.pointer(v))),
            "wake.input.path",
        ),
        (
            "template_text",
            lambda w, v: w.registry.register_process(waking(input=Selector.template(v, {}))),
            "wake.input.text",
        ),
    ]
    for op_id, op, field in text_ops:
        for value_id, value in text_values:
            add((f"registry/{op_id}/{value_id}", lambda w, op=op, value=value: op(w, value), R, field))

    # -- integers: sequences, limits, TTLs, timeouts, instants
    bad_ints: list[tuple[str, Any]] = [
        ("negative", -1),
        ("2**63", 2**63),
        ("2**64", 2**64),
        ("10**30", 10**30),
        ("bool", True),
        ("float", 1.5),
        ("nan", NAN),
        ("inf", INF),
        ("str", "5"),
        ("none", None),
    ]
    int_ops: list[tuple[str, Callable[[World, Any], object], str]] = [
        ("events_after_seq", lambda w, v: w.registry.events_after("p1", v), "after_sequence"),
        ("events_after_limit", lambda w, v: w.registry.events_after("p1", 0, limit=v), "limit"),
        ("wake_events_after_seq", lambda w, v: w.registry.wake_events_after("p1", v), "after_sequence"),
        ("ack_wake_seq", lambda w, v: w.registry.ack_wake("p1", v), "sequence"),
        ("wait_seq", lambda w, v: w.registry.wait_event_after("p1", LINE, v, timeout_ms=0), "after_sequence"),
        ("wait_timeout", lambda w, v: w.registry.wait_event_after("p1", LINE, 5, timeout_ms=v), "timeout_ms"),
        ("await_timeout", lambda w, v: w.registry.await_process("p1", timeout_ms=v), "timeout_ms"),
        ("claim_ttl", lambda w, v: w.registry.claim_process_lease("p1", "owner-2", v), "lease_ttl_ms"),
        ("renew_ttl", lambda w, v: w.registry.renew_process_lease(w.lease, v), "lease_ttl_ms"),
        (
            "renew_fence",
            lambda w, v: w.registry.renew_process_lease(lease_with(w.lease, fencing_token=v), TTL),
            "lease.fencing_token",
        ),
        (
            "renew_expiry",
            lambda w, v: w.registry.renew_process_lease(lease_with(w.lease, expires_at_epoch_ms=v), TTL),
            "lease.expires_at_epoch_ms",
        ),
        (
            "renew_claimed_at",
            lambda w, v: w.registry.renew_process_lease(lease_with(w.lease, claimed_at_epoch_ms=v), TTL),
            "lease.claimed_at_epoch_ms",
        ),
        (
            "fenced_append_fence",
            lambda w, v: w.registry.append_event("p1", append(), lease=lease_with(w.lease, fencing_token=v)),
            "lease.fencing_token",
        ),
        (
            "fenced_complete_fence",
            lambda w, v: w.registry.complete_process(
                "p1", ProcessAwaitOutput.success(1), lease=lease_with(w.lease, fencing_token=v)
            ),
            "lease.fencing_token",
        ),
        ("list_limit", lambda w, v: w.registry.list_processes(limit=v), "limit"),
        ("prune_horizon", lambda w, v: w.registry.prune_processes(v), "older_than_epoch_ms"),
        ("prune_limit", lambda w, v: w.registry.prune_processes(START_MS + 10**9, limit=v), "limit"),
    ]
    for op_id, op, field in int_ops:
        for value_id, value in bad_ints:
            if (
                op_id in ("wait_timeout", "await_timeout", "events_after_limit", "list_limit", "prune_limit")
                and value_id == "none"
            ):
                continue  # None means "no timeout" / "no limit" there
            add((f"registry/{op_id}/{value_id}", lambda w, op=op, value=value: op(w, value), R, field))

    # -- opaque JSON: registration input, caused_by, schemas, payloads, outputs, external metadata, const selectors
    json_ops: list[tuple[str, Callable[[World, Any], object], str]] = [
        (
            "register_input",
            lambda w, v: w.registry.register_process(registration("p-new", input=[v])),
            "registration.input",
        ),
        ("caused_by", lambda w, v: w.registry.register_process(registration("p-new", caused_by=v)), "caused_by"),
        (
            "payload_schema",
            lambda w, v: w.registry.register_process(typed(schema={"type": "object", "properties": {"a": v}})),
            "payload_schema",
        ),
        ("const_selector", lambda w, v: w.registry.register_process(waking(input=Selector.const(v))), "wake.input"),
        ("append_payload", lambda w, v: w.registry.append_event("p1", append(payload={"line": v})), "request.payload"),
        (
            "complete_value",
            lambda w, v: w.registry.complete_process("p1", ProcessAwaitOutput.success(v)),
            "await_output",
        ),
        (
            "complete_control",
            lambda w, v: w.registry.complete_process("p1", ProcessAwaitOutput.success(1, control=v)),
            "await_output",
        ),
        (
            "external_metadata",
            lambda w, v: w.registry.set_external_ref("p1", ProcessExternalRef(backend="b", id="i", metadata=v)),
            "external_ref.metadata",
        ),
    ]
    for op_id, op, field in json_ops:
        for value_id, value in BAD_JSON:
            add((f"registry/{op_id}/{value_id}", lambda w, op=op, value=value: op(w, value), R, field))

    # -- wrong types for the struct arguments
    add(("registry/register-arg/none", lambda w: w.registry.register_process(None), R, "registration"))
    add(
        (
            "registry/register-arg/dict",
            lambda w: w.registry.register_process({"id": "p-new", "input": 1}),
            R,
            "registration",
        )
    )
    add(
        (
            "registry/register/event-types-none",
            lambda w: w.registry.register_process(raw_registration(event_types=None)),
            R,
            "registration.event_types",
        )
    )
    add(
        (
            "registry/register/event-types-str",
            lambda w: w.registry.register_process(raw_registration(event_types="job")),
            R,
            "registration.event_types",
        )
    )
    add(
        (
            "registry/register/event-types-dict",
            lambda w: w.registry.register_process(raw_registration(event_types={"a": 1})),
            R,
            "registration.event_types",
        )
    )
    add(
        (
            "registry/register/event-type-str",
            lambda w: w.registry.register_process(raw_registration(event_types=["job"])),
            R,
            "registration.event_types[0]",
        )
    )
    add(
        (
            "registry/register/event-types-generator-bad",
            lambda w: w.registry.register_process(raw_registration(event_types=once([ProcessEventType(name=" ")]))),
            R,
            "registration.event_types[0].name",
        )
    )
    add(
        (
            "registry/register/provenance-none",
            lambda w: w.registry.register_process(raw_registration(provenance=None)),
            R,
            "registration.provenance",
        )
    )
    add(
        (
            "registry/register/owner-scope-str",
            lambda w: w.registry.register_process(raw_registration(provenance=ProcessProvenance(owner_scope="root"))),
            R,
            "owner_scope",
        )
    )
    add(
        (
            "registry/register/semantics-none",
            lambda w: w.registry.register_process(typed(semantics=ProcessEventSemantics(terminal=None, wake="x"))),
            R,
            "semantics.wake",
        )
    )
    add(
        (
            "registry/register/terminal-state",
            lambda w: w.registry.register_process(
                typed(semantics=ProcessEventSemantics(terminal=TerminalSpec(state="exploded")))
            ),
            R,
            "terminal.state",
        )
    )
    add(
        (
            "registry/register/terminal-state-unhashable",
            lambda w: w.registry.register_process(
                typed(semantics=ProcessEventSemantics(terminal=TerminalSpec(state=["completed"])))
            ),
            R,
            "terminal.state",
        )
    )
    add(
        (
            "registry/register/selector-kind",
            lambda w: w.registry.register_process(waking(input=Selector(kind="regex"))),
            R,
            "wake.input.kind",
        )
    )
    add(
        (
            "registry/register/selector-kind-unhashable",
            lambda w: w.registry.register_process(waking(input=Selector(kind={"k": 1}))),
            R,
            "wake.input.kind",
        )
    )
    add(
        (
            "registry/register/selector-none",
            lambda w: w.registry.register_process(waking(input=None, when="x")),
            R,
            "wake.when",
        )
    )
    add(
        (
            "registry/register/template-fields-none",
            lambda w: w.registry.register_process(waking(input=Selector(kind="template", text="{a}", fields=None))),
            R,
            "wake.input.fields",
        )
    )
    add(
        (
            "registry/register/template-field-key-int",
            lambda w: w.registry.register_process(
                waking(input=Selector(kind="template", text="{a}", fields={1: Selector.payload()}))
            ),
            R,
            "wake.input.fields",
        )
    )
    add(
        (
            "registry/register/template-field-not-selector",
            lambda w: w.registry.register_process(
                waking(input=Selector(kind="template", text="{a}", fields={"a": "/x"}))
            ),
            R,
            "wake.input.fields.a",
        )
    )
    add(
        (
            "registry/register/template-deep",
            lambda w: w.registry.register_process(waking(input=deep_selector())),
            R,
            "wake.input",
        )
    )
    add(
        (
            "registry/register/template-deep-constructor",
            lambda w: w.registry.register_process(waking(input=Selector.template("{a}", {"a": deep_selector()}))),
            R,
            "wake.input",
        )
    )
    add(
        (
            "registry/register/dedupe-kind",
            lambda w: w.registry.register_process(waking(dedupe=DedupeKey(kind="random"))),
            R,
            "dedupe_key.kind",
        )
    )
    add(
        (
            "registry/register/dedupe-str",
            lambda w: w.registry.register_process(waking(dedupe="event_identity")),
            R,
            "dedupe_key",
        )
    )
    add(
        (
            "registry/register/schema-unknown-keyword",
            lambda w: w.registry.register_process(typed(schema={"$ref": "#/x"})),
            R,
            "payload_schema",
        )
    )
    for case_id, pattern in [("lookahead", "a(?=b)"), ("backreference", "(a)\\1"), ("states", "(a{100}){101}")]:
        add(
            (
                f"registry/register/schema-pattern-{case_id}",
                lambda w, pattern=pattern: w.registry.register_process(typed(schema={"pattern": pattern})),
                R,
                "payload_schema",
            )
        )
    add(
        (
            "registry/register/schema-deep",
            lambda w: w.registry.register_process(typed(schema=deep_dict())),
            R,
            "payload_schema",
        )
    )
    add(
        (
            "registry/register/conflict",
            lambda w: w.registry.register_process(registration("p1")),
            RegistrationConflict,
            "p1",
        )
    )
    add(
        (
            "registry/register/with-event-types-none",
            lambda w: w.registry.register_process(ProcessRegistration.new("p-new", 1).with_event_types(None)),
            R,
            "event_types",
        )
    )
    add(
        (
            "registry/register-and-grant/scope-none",
            lambda w: w.registry.register_and_grant(registration("p-new"), None),
            R,
            "owner_scope",
        )
    )
    add(
        (
            "registry/register-and-grant/descriptor-str",
            lambda w: w.registry.register_and_grant(registration("p-new"), S("root"), "job"),
            R,
            "descriptor",
        )
    )
    add(
        (
            "registry/register-and-grant/registration-none",
            lambda w: w.registry.register_and_grant(None, S("root")),
            R,
            "registration",
        )
    )
    add(("registry/set-external-ref/none", lambda w: w.registry.set_external_ref("p1", None), R, "external_ref"))
    add(
        (
            "registry/set-external-ref/unknown",
            lambda w: w.registry.set_external_ref("ghost", ProcessExternalRef(backend="b", id="i")),
            UnknownProcess,
            "ghost",
        )
    )
    add(("registry/append/none", lambda w: w.registry.append_event("p1", None), R, "request"))
    add(("registry/append/dict", lambda w: w.registry.append_event("p1", {"event_type": LINE}), R, "request"))
    add(
        ("registry/append/replay-str", lambda w: w.registry.append_event("p1", append(replay="k")), R, "request.replay")
    )
    add(
        (
            "registry/append/scope-str",
            lambda w: w.registry.append_event("p1", append(wake_target_scope="root")),
            R,
            "request.wake_target_scope",
        )
    )
    add(
        (
            "registry/append/undeclared",
            lambda w: w.registry.append_event("p1", append(event_type="job.other")),
            R,
            "request.event_type",
        )
    )
    add(("registry/append/unknown", lambda w: w.registry.append_event("ghost", append()), UnknownProcess, "ghost"))
    add(
        (
            "registry/append/missing-wake-target",
            lambda w: w.registry.append_event("p1", append(event_type=WAKE, payload={"msg": "m"})),
            R,
            "request.wake_target_scope",
        )
    )
    add(
        (
            "registry/append/terminal-without-replay",
            lambda w: w.registry.append_event(
                "p1", append(event_type="process.completed", payload={"await_output": {"type": "success", "value": 1}})
            ),
            R,
            "request.replay",
        )
    )
    add(("registry/append/lease-str", lambda w: w.registry.append_event("p1", append(), lease="lease"), R, "lease"))
    add(
        (
            "registry/append/lease-other-process",
            lambda w: w.registry.append_event("p2", append(), lease=w.lease),
            R,
            "lease.process_id",
        )
    )
    add(
        (
            "registry/append/lease-forged-token",
            lambda w: w.registry.append_event("p1", append(), lease=lease_with(w.lease, lease_token="forged")),
            LeaseLost,
            "p1",
        )
    )
    add(
        (
            "registry/append/lease-other-owner",
            lambda w: w.registry.append_event("p1", append(), lease=lease_with(w.lease, owner_id="owner-2")),
            LeaseLost,
            "p1",
        )
    )
    add(
        (
            "registry/append/lease-future-fence",
            lambda w: w.registry.append_event(
                "p1", append(), lease=lease_with(w.lease, fencing_token=w.lease.fencing_token + 1)
            ),
            LeaseLost,
            "p1",
        )
    )
    add(
        (
            "registry/append/lease-max-fence",
            lambda w: w.registry.append_event("p1", append(), lease=lease_with(w.lease, fencing_token=MAX_I64)),
            LeaseLost,
            "p1",
        )
    )
    add(
        (
            "registry/append/lease-forged-expiry",
            lambda w: w.registry.append_event(
                "p1", append(), lease=lease_with(w.lease, expires_at_epoch_ms=MAX_I64, lease_token="forged")
            ),
            LeaseLost,
            "p1",
        )
    )
    add(
        (
            "registry/append/second-terminal",
            lambda w: w.registry.append_event(
                "p2", append(event_type="process.failed", payload={"await_output": "x"}, replay=ProcessReplay(key="f"))
            ),
            ProcessRegistryError,
            "already terminal",
        )
    )
    add(("registry/complete/none", lambda w: w.registry.complete_process("p1", None), R, "await_output"))
    add(
        (
            "registry/complete/dict",
            lambda w: w.registry.complete_process("p1", {"type": "success", "value": 1}),
            R,
            "await_output",
        )
    )
    add(
        (
            "registry/complete/type-unknown",
            lambda w: w.registry.complete_process("p1", ProcessAwaitOutput(type="exploded")),
            R,
            "await_output",
        )
    )
    add(
        (
            "registry/complete/type-unhashable",
            lambda w: w.registry.complete_process("p1", ProcessAwaitOutput(type=["success"])),
            R,
            "await_output",
        )
    )
    add(
        (
            "registry/complete/failure-code-int",
            lambda w: w.registry.complete_process("p1", ProcessAwaitOutput.failure("c", 5, "m")),
            R,
            "await_output",
        )
    )
    add(
        (
            "registry/complete/failure-message-none",
            lambda w: w.registry.complete_process("p1", ProcessAwaitOutput(type="failure", class_="c", code="x")),
            R,
            "await_output",
        )
    )
    add(
        (
            "registry/complete/failure-surrogate",
            lambda w: w.registry.complete_process("p1", ProcessAwaitOutput.failure("c", "x", SURROGATE)),
            R,
            "await_output",
        )
    )
    add(
        (
            "registry/complete/cancelled-message-int",
            lambda w: w.registry.complete_process("p1", ProcessAwaitOutput.cancelled(5)),
            R,
            "await_output",
        )
    )
    add(
        (
            "registry/complete/lease-forged",
            lambda w: w.registry.complete_process(
                "p1", ProcessAwaitOutput.success(1), lease=lease_with(w.lease, lease_token="forged")
            ),
            LeaseLost,
            "p1",
        )
    )
    add(
        (
            "registry/complete/lease-future-fence",
            lambda w: w.registry.complete_process(
                "p1", ProcessAwaitOutput.success(1), lease=lease_with(w.lease, fencing_token=w.lease.fencing_token + 7)
            ),
            LeaseLost,
            "p1",
        )
    )
    add(
        (
            "registry/complete/already-other-output",
            lambda w: w.registry.complete_process("p2", ProcessAwaitOutput.success({"done": False})),
            ProcessRegistryError,
            "p2",
        )
    )
    add(
        (
            "registry/complete/unknown",
            lambda w: w.registry.complete_process("ghost", ProcessAwaitOutput.success(1)),
            UnknownProcess,
            "ghost",
        )
    )
    add(("registry/ack/not-a-wake", lambda w: w.registry.ack_wake("p1", 2), NotAWakeEvent, "sequence"))
    add(("registry/ack/future", lambda w: w.registry.ack_wake("p1", 10**6), NotAWakeEvent, "sequence"))
    add(("registry/ack/unknown", lambda w: w.registry.ack_wake("ghost", 1), UnknownProcess, "ghost"))
    add(
        ("registry/wait/timeout", lambda w: w.registry.wait_event_after("p1", LINE, 2, timeout_ms=0), WaitTimeout, "p1")
    )
    add(("registry/await/timeout", lambda w: w.registry.await_process("p1", timeout_ms=1), WaitTimeout, "p1"))
    add(("registry/await/unknown", lambda w: w.registry.await_process("ghost", timeout_ms=0), UnknownProcess, "ghost"))
    add(("registry/events/unknown", lambda w: w.registry.events_after("ghost", 0), UnknownProcess, "ghost"))
    add(("registry/grant/unknown", lambda w: w.registry.grant_handle(S("root"), "ghost"), UnknownProcess, "ghost"))
    add(("registry/grant/scope-none", lambda w: w.registry.grant_handle(None, "p1"), R, "owner_scope"))
    add(("registry/grant/scope-str", lambda w: w.registry.grant_handle("root", "p1"), R, "owner_scope"))
    add(
        ("registry/grant/scope-dict", lambda w: w.registry.grant_handle({"session_id": "root"}, "p1"), R, "owner_scope")
    )
    add(
        (
            "registry/grant/descriptor-dict",
            lambda w: w.registry.grant_handle(S("root"), "p1", {"kind": "x"}),
            R,
            "descriptor",
        )
    )
    add(
        (
            "registry/transfer/ids-none",
            lambda w: w.registry.transfer_handle_grants(S("root"), S("s-9"), None),
            R,
            "process_ids",
        )
    )
    add(
        (
            "registry/transfer/ids-str",
            lambda w: w.registry.transfer_handle_grants(S("root"), S("s-9"), "p1"),
            R,
            "process_ids",
        )
    )
    add(
        (
            "registry/transfer/ids-bytes",
            lambda w: w.registry.transfer_handle_grants(S("root"), S("s-9"), b"p1"),
            R,
            "process_ids",
        )
    )
    add(
        (
            "registry/transfer/ids-dict",
            lambda w: w.registry.transfer_handle_grants(S("root"), S("s-9"), {"p1": 1}),
            R,
            "process_ids",
        )
    )
    add(
        (
            "registry/transfer/ids-int",
            lambda w: w.registry.transfer_handle_grants(S("root"), S("s-9"), 5),
            R,
            "process_ids",
        )
    )
    add(
        (
            "registry/transfer/generator-bad-second",
            lambda w: w.registry.transfer_handle_grants(S("root"), S("s-9"), once(["p1", SURROGATE])),
            R,
            "process_ids[1]",
        )
    )
    add(
        (
            "registry/transfer/not-granted",
            lambda w: w.registry.transfer_handle_grants(S("root"), S("s-9"), ["p1", "p2"]),
            ProcessRegistryError,
            "p2",
        )
    )
    add(
        (
            "registry/transfer/scope-none",
            lambda w: w.registry.transfer_handle_grants(None, S("s-9"), ["p1"]),
            R,
            "from_scope",
        )
    )
    add(("registry/list-grants/scope-none", lambda w: w.registry.list_handle_grants(None), R, "owner_scope"))
    add(("registry/has-grant/scope-none", lambda w: w.registry.has_handle_grant(None, "p1"), R, "owner_scope"))
    add(
        (
            "registry/grants-for/unknown",
            lambda w: w.registry.handle_grants_for_process("ghost"),
            UnknownProcess,
            "ghost",
        )
    )
    add(
        (
            "registry/claim/already-leased",
            lambda w: w.registry.claim_process_lease("p1", "owner-2", TTL),
            ProcessAlreadyLeased,
            "already leased",
        )
    )
    add(
        (
            "registry/claim/terminal",
            lambda w: w.registry.claim_process_lease("p2", "owner-2", TTL),
            ProcessRegistryError,
            "p2",
        )
    )
    add(
        (
            "registry/claim/unknown",
            lambda w: w.registry.claim_process_lease("ghost", "owner-2", TTL),
            UnknownProcess,
            "ghost",
        )
    )
    add(("registry/renew/none", lambda w: w.registry.renew_process_lease(None, TTL), R, "lease"))
    add(("registry/renew/completion", lambda w: w.registry.renew_process_lease(w.lease.completion(), TTL), R, "lease"))
    add(
        (
            "registry/renew/forged-token",
            lambda w: w.registry.renew_process_lease(lease_with(w.lease, lease_token="forged"), TTL),
            LeaseLost,
            "missing or expired",
        )
    )
    add(
        (
            "registry/renew/other-owner",
            lambda w: w.registry.renew_process_lease(lease_with(w.lease, owner_id="owner-2"), TTL),
            LeaseLost,
            "missing or expired",
        )
    )
    add(
        (
            "registry/renew/future-fence",
            lambda w: w.registry.renew_process_lease(lease_with(w.lease, fencing_token=w.lease.fencing_token + 1), TTL),
            LeaseLost,
            "missing or expired",
        )
    )
    add(
        (
            "registry/renew/past-fence",
            lambda w: w.registry.renew_process_lease(lease_with(w.lease, fencing_token=0), TTL),
            LeaseLost,
            "missing or expired",
        )
    )
    add(
        (
            "registry/renew/unknown-process",
            lambda w: w.registry.renew_process_lease(lease_with(w.lease, process_id="ghost"), TTL),
            ProcessRegistryError,
            "ghost",
        )
    )
    add(("registry/complete-lease/none", lambda w: w.registry.complete_process_lease(None), R, "completion"))
    add(("registry/complete-lease/lease", lambda w: w.registry.complete_process_lease(w.lease), R, "completion"))
    add(
        (
            "registry/prune/dry-run-str",
            lambda w: w.registry.prune_processes(START_MS + 10**9, dry_run="no"),
            R,
            "dry_run",
        )
    )
    add(
        (
            "registry/prune/dry-run-none",
            lambda w: w.registry.prune_processes(START_MS + 10**9, dry_run=None),
            R,
            "dry_run",
        )
    )
    add(("registry/list/state-unknown", lambda w: w.registry.list_processes(state="zombie"), R, "state"))
    add(
        (
            "registry/agent_frame/huge",
            lambda w: w.registry.grant_handle(S("root", HUGE), "p1"),
            R,
            "owner_scope.agent_frame_id",
        )
    )
    add(
        (
            "registry/wake_target_frame/huge",
            lambda w: w.registry.append_event(
                "p1", append(event_type=WAKE, payload={"msg": "m"}, wake_target_scope=S("root", HUGE))
            ),
            R,
            "wake_target_scope.agent_frame_id",
        )
    )
    add(
        (
            "registry/delete-session/reason-blank",
            lambda w: w.registry.delete_session_process_state("root", reason=" "),
            R,
            "reason",
        )
    )

    # -- value constructors: refused by the constructor (typed) or by the store (typed), never a raw error
    add(
        (
            "registry/ctor/cancel-requested-reason-nan",
            lambda w: w.registry.append_event("p1", ProcessEventAppendRequest.cancel_requested("p1", NAN)),
            R,
            "reason",
        )
    )
    add(
        (
            "registry/ctor/cancel-requested-reason-object",
            lambda w: w.registry.append_event("p1", ProcessEventAppendRequest.cancel_requested("p1", object())),
            R,
            "reason",
        )
    )
    add(
        (
            "registry/ctor/cancel-requested-reason-surrogate",
            lambda w: w.registry.append_event("p1", ProcessEventAppendRequest.cancel_requested("p1", SURROGATE)),
            R,
            "reason",
        )
    )
    add(
        (
            "registry/ctor/cancel-requested-id-int",
            lambda w: w.registry.append_event(5, ProcessEventAppendRequest.cancel_requested(5)),
            R,
            "process_id",
        )
    )
    add(
        (
            "registry/ctor/template-fields-none",
            lambda w: w.registry.register_process(waking(input=Selector.template("{a}", None))),
            R,
            "wake.input.fields",
        )
    )
    add(
        (
            "registry/ctor/template-fields-list",
            lambda w: w.registry.register_process(waking(input=Selector.template("{a}", [1]))),
            R,
            "wake.input.fields",
        )
    )
    add(
        (
            "registry/ctor/new-id-none",
            lambda w: w.registry.register_process(ProcessRegistration.new(None, 1)),
            R,
            "registration.id",
        )
    )
    add(
        (
            "registry/ctor/with-provenance-str",
            lambda w: w.registry.register_process(ProcessRegistration.new("p-new", 1).with_provenance("root")),
            R,
            "registration.provenance",
        )
    )
    add(
        (
            "registry/ctor/with-wake-target-str",
            lambda w: w.registry.append_event("p1", append().with_wake_target("root")),
            R,
            "request.wake_target_scope",
        )
    )
    add(
        (
            "registry/ctor/with-replay-key-int",
            lambda w: w.registry.append_event("p1", append().with_replay_key(5)),
            R,
            "request.replay",
        )
    )
    add(
        (
            "registry/ctor/await-failure-raw-nan",
            lambda w: w.registry.complete_process("p1", ProcessAwaitOutput.failure("c", "x", "m", raw=NAN)),
            R,
            "await_output",
        )
    )
    return cases


def host_event_cases() -> list[Case]:
    cases: list[Case] = []
    add = cases.append
    bad_keys: list[tuple[str, Any]] = [
        ("int", 5),
        ("bool", False),
        ("none", None),
        ("bytes", b"key"),
        ("float", 2.5),
        ("empty", ""),
        ("blank", " \t\n"),
        ("nul", "k\x00y"),
        ("surrogate", SURROGATE),
        ("huge", HUGE),
        ("list", ["key"]),
    ]
    key_ops: list[tuple[str, Callable[[World, Any], object], str]] = [
        ("draft_session", lambda w, v: w.events.register_subscription(draft(session_id=v)), "draft.session_id"),
        ("draft_source_type", lambda w, v: w.events.register_subscription(draft(source_type=v)), "draft.source_type"),
        ("draft_source_key", lambda w, v: w.events.register_subscription(draft(source_key=v)), "draft.source_key"),
        (
            "request_source_type",
            lambda w, v: w.events.record_occurrence(occurrence(source_type=v)),
            "request.source_type",
        ),
        ("request_source_key", lambda w, v: w.events.record_occurrence(occurrence(source_key=v)), "request.source_key"),
        (
            "request_idempotency",
            lambda w, v: w.events.record_occurrence(occurrence(idempotency_key=v)),
            "request.idempotency_key",
        ),
        (
            "record_reserve_idempotency",
            lambda w, v: w.events.record_and_reserve(occurrence(idempotency_key=v)),
            "request.idempotency_key",
        ),
        ("cancel_session", lambda w, v: w.events.cancel_subscription(v, "trigger:1"), "session_id"),
        ("cancel_handle", lambda w, v: w.events.cancel_subscription("s-1", v), "handle"),
        ("get_occurrence", lambda w, v: w.events.get_occurrence(v), "occurrence_id"),
        ("reserve", lambda w, v: w.events.reserve_matching_deliveries(v), "occurrence_id"),
        ("list_deliveries", lambda w, v: w.events.list_deliveries(v), "occurrence_id"),
        ("mark_started_occurrence", lambda w, v: w.events.mark_delivery_started(v, "subscription:1"), "occurrence_id"),
        (
            "mark_started_subscription",
            lambda w, v: w.events.mark_delivery_started(w.occurrence.occurrence_id, v),
            "subscription_id",
        ),
        ("source_key_for", lambda w, v: w.events.source_key_for_subscription(v, {"a": 1}), "source_type"),
    ]
    for op_id, op, field in key_ops:
        for value_id, value in bad_keys:
            add((f"host-events/{op_id}/{value_id}", lambda w, op=op, value=value: op(w, value), H, field))
    # Names (optional, free text) and filter fields: wrong types, NUL, surrogates.
    text_values = [v for v in bad_keys if v[0] in ("int", "bool", "bytes", "float", "nul", "surrogate", "list")]
    text_ops: list[tuple[str, Callable[[World, Any], object], str]] = [
        ("draft_name", lambda w, v: w.events.register_subscription(draft(name=v)), "draft.name"),
        *[
            (
                f"filter_{name}",
                lambda w, v, name=name: w.events.list_subscriptions(selection(**{name: v})),
                f"filter.{name}",
            )
            for name in ("session_id", "handle", "name", "source_type", "source_key")
        ],
    ]
    for op_id, op, field in text_ops:
        for value_id, value in text_values:
            add((f"host-events/{op_id}/{value_id}", lambda w, op=op, value=value: op(w, value), H, field))
    json_ops: list[tuple[str, Callable[[World, Any], object], str]] = [
        *[
            (
                f"draft_{name}",
                lambda w, v, name=name: w.events.register_subscription(draft(**{name: v})),
                f"draft.{name}",
            )
            for name in (
                "source",
                "event_ty",
                "module_ref",
                "required_surface_ref",
                "process_ref",
                "process_name",
                "input_template",
            )
        ],
        ("request_payload", lambda w, v: w.events.record_occurrence(occurrence(payload=v)), "request.payload"),
        ("request_source", lambda w, v: w.events.record_occurrence(occurrence(source=v)), "request.source"),
        ("record_reserve_payload", lambda w, v: w.events.record_and_reserve(occurrence(payload=v)), "request.payload"),
        (
            "filter_target",
            lambda w, v: w.events.list_subscriptions(
                selection(
                    target=TriggerTarget(module_ref=v, required_surface_ref=None, process_ref=None, process_name=None)
                )
            ),
            "filter.target.module_ref",
        ),
        ("source_key_for_source", lambda w, v: w.events.source_key_for_subscription("button", v), "source"),
    ]
    for op_id, op, field in json_ops:
        for value_id, value in BAD_JSON:
            add((f"host-events/{op_id}/{value_id}", lambda w, op=op, value=value: op(w, value), H, field))
    bad_ints: list[tuple[str, Any]] = [
        ("negative", -1),
        ("2**63", 2**63),
        ("2**64", 2**64),
        ("bool", True),
        ("float", 1.0),
        ("nan", NAN),
        ("str", "1"),
    ]
    int_ops: list[tuple[str, Callable[[World, Any], object], str]] = [
        ("list_occurrences_limit", lambda w, v: w.events.list_occurrences(limit=v), "limit"),
        ("pending_limit", lambda w, v: w.events.pending_deliveries(limit=v), "limit"),
        ("prune_horizon", lambda w, v: w.events.prune(v), "older_than_epoch_ms"),
    ]
    for op_id, op, field in int_ops:
        for value_id, value in bad_ints:
            add((f"host-events/{op_id}/{value_id}", lambda w, op=op, value=value: op(w, value), H, field))
    add(("host-events/prune/none", lambda w: w.events.prune(None), H, "older_than_epoch_ms"))
    add(("host-events/prune/dry-run-str", lambda w: w.events.prune(START_MS + 10**9, dry_run="no"), H, "dry_run"))
    add(("host-events/prune/dry-run-int", lambda w: w.events.prune(START_MS + 10**9, dry_run=0), H, "dry_run"))
    add(("host-events/register/none", lambda w: w.events.register_subscription(None), H, "draft"))
    add(("host-events/register/dict", lambda w: w.events.register_subscription({"session_id": "s"}), H, "draft"))
    add(("host-events/register/record", lambda w: w.events.register_subscription(w.subscription), H, "draft"))
    add(("host-events/record/none", lambda w: w.events.record_occurrence(None), H, "request"))
    add(("host-events/record/record", lambda w: w.events.record_occurrence(w.occurrence), H, "request"))
    add(
        (
            "host-events/record/conflict",
            lambda w: w.events.record_occurrence(occurrence(idempotency_key="press-1", payload={"n": 2})),
            OccurrenceConflict,
            "press-1",
        )
    )
    add(
        (
            "host-events/record-reserve/conflict",
            lambda w: w.events.record_and_reserve(occurrence(idempotency_key="press-1", payload={"n": 2})),
            OccurrenceConflict,
            "press-1",
        )
    )
    add(("host-events/record-reserve/none", lambda w: w.events.record_and_reserve(None), H, "request"))
    add(("host-events/filter/str", lambda w: w.events.list_subscriptions("s-1"), H, "filter"))
    add(
        (
            "host-events/filter/enabled-int",
            lambda w: w.events.list_subscriptions(selection(enabled=1)),
            H,
            "filter.enabled",
        )
    )
    add(
        (
            "host-events/filter/enabled-str",
            lambda w: w.events.list_subscriptions(selection(enabled="yes")),
            H,
            "filter.enabled",
        )
    )
    add(
        (
            "host-events/filter/target-dict",
            lambda w: w.events.list_subscriptions(selection(target={"module_ref": 1})),
            H,
            "filter.target",
        )
    )
    add(
        (
            "host-events/reserve/unknown",
            lambda w: w.events.reserve_matching_deliveries("host_event:ghost"),
            UnknownOccurrence,
            "host_event:ghost",
        )
    )
    add(
        (
            "host-events/mark-started/unknown",
            lambda w: w.events.mark_delivery_started(w.occurrence.occurrence_id, "subscription:99"),
            UnknownDelivery,
            "subscription:99",
        )
    )
    add(
        (
            "host-events/mark-started/unknown-occurrence",
            lambda w: w.events.mark_delivery_started("host_event:ghost", "subscription:1"),
            UnknownDelivery,
            "host_event:ghost",
        )
    )
    return cases


def effect_cases() -> list[Case]:
    cases: list[Case] = []
    add = cases.append
    bad_scope_ids: list[tuple[str, Any]] = [
        ("int", 5),
        ("bool", True),
        ("none", None),
        ("bytes", b"s"),
        ("float", 1.5),
        ("empty", ""),
        ("blank", " \n"),
        ("nul", "s\x00"),
        ("surrogate", SURROGATE),
        ("huge", HUGE),
        ("list", ["s"]),
    ]
    scopes: list[tuple[str, Callable[[Any], EffectScope], str]] = [
        ("turn-session", lambda v: EffectScope.turn(v, "t-1"), "session_id"),
        ("turn-turn", lambda v: EffectScope.turn("s-1", v), "turn_id"),
        ("process", lambda v: EffectScope.process(v), "process_id"),
        ("drain", lambda v: EffectScope.queue_drain("s-1", v), "drain_id"),
        ("session-delete", lambda v: EffectScope.session_delete(v), "session_id"),
        ("operation", lambda v: EffectScope.runtime_operation(v), "operation_id"),
    ]
    for scope_id, make, field in scopes:
        for value_id, value in bad_scope_ids:
            add(
                (
                    f"effects/scoped/{scope_id}/{value_id}",
                    lambda w, make=make, value=value: w.effects.scoped(make(value)),
                    MissingEffectScopeId,
                    field,
                )
            )
    for value_id, value in bad_scope_ids:
        add(
            (
                f"effects/list-journal-scope/{value_id}",
                lambda w, value=value: w.effects.list_journal(scope=EffectScope.turn(value, "t")),
                MissingEffectScopeId,
                "session_id",
            )
        )
        add(
            (
                f"effects/scoped-static/{value_id}",
                lambda w, value=value: w.effects.scoped_static(EffectScope.process(value)),
                MissingEffectScopeId,
                "process_id",
            )
        )
    add(("effects/scoped/none", lambda w: w.effects.scoped(None), MissingEffectScopeId, "scope"))
    add(("effects/scoped/str", lambda w: w.effects.scoped("turn"), MissingEffectScopeId, "scope"))
    add(
        (
            "effects/scoped/kind-unknown",
            lambda w: w.effects.scoped(EffectScope(type="galaxy", session_id="s")),
            MissingEffectScopeId,
            "galaxy",
        )
    )
    add(
        (
            "effects/scoped/kind-unhashable",
            lambda w: w.effects.scoped(EffectScope(type=["turn"], session_id="s", turn_id="t")),
            MissingEffectScopeId,
            "scope",
        )
    )
    add(("effects/scoped/replay-str", lambda w: w.effects.scoped(TURN, replay="no"), E, "replay"))

    # -- the replay key
    bad_keys: list[tuple[str, Any, type[StoreError]]] = [
        ("int", 5, EffectReplayKeyMissing),
        ("bool", True, EffectReplayKeyMissing),
        ("none", None, EffectReplayKeyMissing),
        ("bytes", b"k", EffectReplayKeyMissing),
        ("empty", "", EffectReplayKeyMissing),
        ("blank", "\t ", EffectReplayKeyMissing),
        ("nul", "k\x00", E),
        ("surrogate", SURROGATE, E),
        ("huge", HUGE, E),
    ]
    for value_id, value, error in bad_keys:
        add(
            (
                f"effects/execute/replay-key-{value_id}",
                lambda w, value=value: w.controller.execute_effect(envelope(value), returning()),
                error,
                "replay",
            )
        )

    # -- the envelope's structure
    add(("effects/execute/none", lambda w: w.controller.execute_effect(None, returning()), E, "RuntimeEffectEnvelope"))
    add(
        (
            "effects/execute/dict",
            lambda w: w.controller.execute_effect({"invocation": {}}, returning()),
            E,
            "RuntimeEffectEnvelope",
        )
    )
    add(
        (
            "effects/execute/invocation-none",
            lambda w: w.controller.execute_effect(
                RuntimeEffectEnvelope(invocation=None, command=RuntimeEffectCommand.exec_code("c")), returning()
            ),
            E,
            "invocation",
        )
    )
    add(
        (
            "effects/execute/command-none",
            lambda w: w.controller.execute_effect(
                RuntimeEffectEnvelope(invocation=envelope().invocation, command=None), returning()
            ),
            E,
            "command",
        )
    )
    add(
        (
            "effects/execute/replay-none",
            lambda w: w.controller.execute_effect(
                RuntimeEffectEnvelope(
                    invocation=type(envelope().invocation)(
                        scope=runtime_scope(), subject=envelope().invocation.subject, replay=None
                    ),
                    command=RuntimeEffectCommand.exec_code("c"),
                ),
                returning(),
            ),
            EffectReplayKeyMissing,
            "replay",
        )
    )
    add(
        (
            "effects/execute/subject-none",
            lambda w: w.controller.execute_effect(
                RuntimeEffectEnvelope(
                    invocation=type(envelope().invocation)(
                        scope=runtime_scope(), subject=None, replay=envelope().invocation.replay
                    ),
                    command=RuntimeEffectCommand.exec_code("c"),
                ),
                returning(),
            ),
            E,
            "subject",
        )
    )
    add(
        (
            "effects/execute/kind-unknown",
            lambda w: w.controller.execute_effect(envelope(command=RuntimeEffectCommand(type="teleport")), returning()),
            E,
            "teleport",
        )
    )
    add(
        (
            "effects/execute/kind-unhashable",
            lambda w: w.controller.execute_effect(
                envelope(command=RuntimeEffectCommand(type=["exec_code"])), returning()
            ),
            E,
            "command type",
        )
    )
    add(
        (
            "effects/execute/kind-int",
            lambda w: w.controller.execute_effect(envelope(command=RuntimeEffectCommand(type=5)), returning()),
            E,
            "command type",
        )
    )
    add(
        (
            "effects/execute/subject-kind-differs",
            lambda w: w.controller.execute_effect(
                RuntimeEffectEnvelope(
                    invocation=envelope(command=RuntimeEffectCommand.tool_call(1)).invocation,
                    command=RuntimeEffectCommand.exec_code("c"),
                ),
                returning(),
            ),
            E,
            "subject kind",
        )
    )
    add(
        (
            "effects/execute/effect-id-blank",
            lambda w: w.controller.execute_effect(envelope(effect_id=" "), returning()),
            E,
            "effect_id",
        )
    )
    add(
        (
            "effects/execute/effect-id-int",
            lambda w: w.controller.execute_effect(envelope(effect_id=5), returning()),
            E,
            "effect_id",
        )
    )
    # -- opaque JSON in requests and causes
    for value_id, value in BAD_JSON:
        add(
            (
                f"effects/execute/request-{value_id}",
                lambda w, value=value: w.controller.execute_effect(exec_request(value), returning()),
                E,
                "envelope",
            )
        )
        add(
            (
                f"effects/execute/caused-by-{value_id}",
                lambda w, value=value: w.controller.execute_effect(
                    RuntimeEffectEnvelope.new(
                        runtime_scope(), "e", "k-new", RuntimeEffectCommand.exec_code("c"), caused_by=value
                    ),
                    returning(),
                ),
                E,
                "envelope",
            )
        )
    # -- sleeps
    for value_id, value in [
        ("negative", -1),
        ("2**63", 2**63),
        ("2**64", 2**64),
        ("bool", True),
        ("float", 1.5),
        ("nan", NAN),
        ("str", "10"),
        ("none", None),
    ]:
        add(
            (
                f"effects/execute/sleep-{value_id}",
                lambda w, value=value: w.controller.execute_effect(
                    envelope(command=RuntimeEffectCommand.sleep(value)), RuntimeEffectLocalExecutor.sleep_only()
                ),
                E,
                "duration_ms",
            )
        )
    # -- process commands: their structure is the journal's to check before anything is written
    registry_executor = lambda w: RuntimeEffectLocalExecutor.process_control(w.registry)  # noqa: E731
    process_commands: list[tuple[str, Callable[[], ProcessCommand], str]] = [
        ("start-registration-none", lambda: ProcessCommand(type="start"), "registration"),
        ("start-registration-str", lambda: ProcessCommand(type="start", registration="p-new"), "registration"),
        ("start-grant-str", lambda: ProcessCommand.start(registration("p-new"), grant="root"), "grant"),
        ("list-scope-none", lambda: ProcessCommand(type="list"), "owner_scope"),
        ("list-mode-unknown", lambda: ProcessCommand(type="list", owner_scope=S("root"), mode="some"), "mode"),
        ("transfer-scopes-none", lambda: ProcessCommand(type="transfer", process_ids=["p1"]), "scope"),
        (
            "transfer-ids-str",
            lambda: ProcessCommand(type="transfer", from_scope=S("root"), to_scope=S("s-9"), process_ids="p1"),
            "process_ids",
        ),
        ("delete-session-none", lambda: ProcessCommand(type="delete_session"), "session_id"),
        ("delete-session-int", lambda: ProcessCommand.delete_session(5), "session_id"),
        ("await-process-none", lambda: ProcessCommand(type="await"), "process_id"),
        ("await-process-list", lambda: ProcessCommand.await_(["p1"]), "process_id"),
        ("cancel-process-none", lambda: ProcessCommand(type="cancel"), "process_id"),
        ("cancel-reason-int", lambda: ProcessCommand.cancel("p1", 5), "reason"),
        ("signal-request-none", lambda: ProcessCommand(type="signal", process_id="p1", signal_id="sig"), "request"),
        (
            "signal-request-str",
            lambda: ProcessCommand(type="signal", process_id="p1", signal_id="sig", request="go"),
            "request",
        ),
        ("kind-unknown", lambda: ProcessCommand(type="fork"), "fork"),
        ("kind-unhashable", lambda: ProcessCommand(type=["start"]), "process command"),
        ("transfer-ctor-none", lambda: ProcessCommand.transfer(S("root"), S("s-9"), None), "process_ids"),
    ]
    for command_id, make, field in process_commands:
        add(
            (
                f"effects/execute/process-{command_id}",
                lambda w, make=make: w.controller.execute_effect(
                    envelope(command=RuntimeEffectCommand.process_command(make())), registry_executor(w)
                ),
                E,
                field,
            )
        )
    add(
        (
            "effects/execute/process-command-str",
            lambda w: w.controller.execute_effect(
                envelope(command=RuntimeEffectCommand(type="process", process="start")), registry_executor(w)
            ),
            E,
            "process",
        )
    )
    # -- executors, conflicts, strict replay
    add(("effects/execute/executor-int", lambda w: w.controller.execute_effect(envelope(), 5), E, "local_executor"))
    add(("effects/execute/executor-str", lambda w: w.controller.execute_effect(envelope(), "run"), E, "local_executor"))
    add(
        (
            "effects/execute/conflict",
            lambda w: w.controller.execute_effect(envelope("k1", RuntimeEffectCommand.exec_code("other")), returning()),
            EffectReplayConflict,
            "k1",
        )
    )
    add(
        (
            "effects/execute/strict-missing",
            lambda w: w.effects.scoped(TURN, replay=True).execute_effect(envelope("k-none"), returning()),
            EffectReplayMissing,
            "k-none",
        )
    )
    add(
        (
            "effects/ctor/envelope-command-none",
            lambda w: w.controller.execute_effect(
                RuntimeEffectEnvelope.new(runtime_scope(), "e", "k", None), returning()
            ),
            E,
            "command",
        )
    )
    add(
        (
            "effects/ctor/envelope-command-str",
            lambda w: w.controller.execute_effect(
                RuntimeEffectEnvelope.new(runtime_scope(), "e", "k", "exec_code"), returning()
            ),
            E,
            "command",
        )
    )
    # -- listings and retention
    for value_id, value in [
        ("negative", -1),
        ("2**63", 2**63),
        ("bool", True),
        ("float", 1.5),
        ("nan", NAN),
        ("str", "1"),
    ]:
        add(
            (
                f"effects/list-journal/limit-{value_id}",
                lambda w, value=value: w.effects.list_journal(limit=value),
                E,
                "limit",
            )
        )
        add(
            (
                f"effects/prune-journal/{value_id}",
                lambda w, value=value: w.effects.prune_journal(value),
                E,
                "older_than_epoch_ms",
            )
        )
    add(("effects/prune-journal/none", lambda w: w.effects.prune_journal(None), E, "older_than_epoch_ms"))
    add(
        (
            "effects/prune-journal/dry-run-str",
            lambda w: w.effects.prune_journal(START_MS + 10**9, dry_run="no"),
            E,
            "dry_run",
        )
    )
    add(("effects/list-journal/status-unknown", lambda w: w.effects.list_journal(status="done"), E, "status"))
    add(("effects/list-journal/status-unhashable", lambda w: w.effects.list_journal(status=["completed"]), E, "status"))
    add(
        (
            "effects/list-journal/scope-str",
            lambda w: w.effects.list_journal(scope="turn"),
            MissingEffectScopeId,
            "scope",
        )
    )
    return cases


REJECT: list[Case] = registry_cases() + host_event_cases() + effect_cases()


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__module__}.{type(exc).__name__}: {str(exc)[:300]}"


def typed_error_problem(call: Callable[[], object], expected: type[StoreError], field: str) -> str | None:
    """None when ``call`` raises ``expected`` naming ``field`` (see the table's comment); otherwise what went wrong."""
    try:
        result = call()
    except StoreError as exc:
        if not isinstance(exc, expected):
            return f"raised {_describe(exc)} instead of {expected.__name__} naming {field!r}"
        if isinstance(exc, EffectJournalError):
            code = getattr(type(exc), "code_name", None) or type(exc).code
            if exc.code != code:
                return f"{_describe(exc)} carries code {exc.code!r}, not {code!r}"
            if field not in str(exc):
                return f"{_describe(exc)} does not name {field!r}"
            return None
        if isinstance(exc, InvalidInput):
            if not (isinstance(exc.what, str) and field in exc.what):
                return f"{type(exc).__name__} names {exc.what!r}; expected it to name {field!r} ({exc})"
            return None
        if field not in str(exc):
            return f"{_describe(exc)} does not name {field!r}"
        return None
    except RecursionError as exc:  # caught before its traceback is formatted
        return f"raised RecursionError ({str(exc)[:100]}) instead of {expected.__name__} naming {field!r}"
    except Exception as exc:
        return f"raised {_describe(exc)} instead of {expected.__name__} naming {field!r}"
    return f"accepted (returned {result!r:.200}) instead of raising {expected.__name__} naming {field!r}"


def _check_store_family(case_id: str, expected: type[StoreError]) -> None:
    """Each store's input errors are its own component's (SPEC section 9: one base per component)."""
    family = case_id.split("/")[0]
    base = {"registry": ProcessRegistryError, "host-events": HostEventStoreError, "effects": EffectJournalError}[family]
    assert issubclass(expected, base), f"{case_id}: the table expects {expected.__name__}, not a {base.__name__}"


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("operation", "error", "field"), [pytest.param(o, e, f, id=i) for i, o, e, f in REJECT])
def test_hostile_argument_is_a_typed_error_and_writes_nothing(
    world: World, operation: Op, error: type[StoreError], field: str
) -> None:
    before = snapshot(world.path)
    files_before = listing(world.tmp)
    problem = typed_error_problem(lambda: operation(world), error, field)
    if problem is not None:
        pytest.fail(problem)
    assert snapshot(world.path) == before, "the deployment file changed"
    assert listing(world.tmp) == files_before, "files appeared or vanished"
    usable(world)


def test_reject_table_has_unique_ids_and_component_errors() -> None:
    ids = [case[0] for case in REJECT]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    assert not duplicates, duplicates
    for case_id, _, expected, _ in REJECT:
        _check_store_family(case_id, expected)


# ---------------------------------------------------------------------------
# durations that are valid (0..2**63-1) but longer than the platform can sleep or wait in one go


def _in_thread(call: Callable[[], object]) -> tuple[threading.Thread, dict[str, Any]]:
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", ["memory", "file"])
def test_wait_with_the_largest_timeout_waits_and_then_answers(tmp_path: Path, kind: str) -> None:
    registry = ProcessRegistry.memory() if kind == "memory" else ProcessRegistry.open(tmp_path / "d.db")
    with registry:
        registry.register_process(registration("p1", ProcessEventType(name=LINE)))
        thread, outcome = _in_thread(lambda: registry.wait_event_after("p1", LINE, 0, timeout_ms=MAX_I64))
        thread.join(0.3)
        assert thread.is_alive(), f"the wait ended at once: {outcome}"
        registry.append_event("p1", append())
        thread.join(10)
        assert not thread.is_alive(), "the wait did not notice the event"
        assert "error" not in outcome, _describe(outcome["error"])
        assert outcome["value"].sequence == 1


@pytest.mark.timeout(30)
def test_sleep_effect_of_2_62_ms_sleeps_instead_of_raising(world: World) -> None:
    controller = world.effects.scoped(EffectScope.runtime_operation("sleepy"))
    sleep = envelope("k-sleep", RuntimeEffectCommand.sleep(2**62))
    thread, outcome = _in_thread(lambda: controller.execute_effect(sleep, RuntimeEffectLocalExecutor.sleep_only()))
    thread.join(0.5)
    assert thread.is_alive(), (
        f"the sleep ended at once: {_describe(outcome['error']) if 'error' in outcome else outcome}"
    )
    (row,) = world.effects.list_journal(scope=EffectScope.runtime_operation("sleepy"))
    assert row.status == "in_progress" and row.due_at_ms == START_MS + 2**62  # (the daemon thread sleeps on)


@pytest.mark.timeout(30)
def test_huge_lease_ttl_keeps_the_heartbeat_thread_alive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    crashed: list[str] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: crashed.append(repr(args.exc_value)))
    with EffectHost.open(tmp_path / "d.db", replay_options=EffectReplayOptions(lease_ttl_ms=2**62)) as host:
        slow = RuntimeEffectLocalExecutor.runner(lambda env: (time.sleep(0.2), RuntimeEffectOutcome.exec_code(1))[1])
        assert host.scoped(TURN).execute_effect(envelope("k"), slow).value == 1
        time.sleep(0.1)
    assert not crashed, f"the heartbeat thread died: {crashed}"


# ---------------------------------------------------------------------------
# every method after close(): StoreClosed, nothing written


AFTER_CLOSE: list[tuple[str, Op]] = [
    ("registry/register_process", lambda w: w.registry.register_process(registration("p-new"))),
    ("registry/register_and_grant", lambda w: w.registry.register_and_grant(registration("p-new"), S("root"))),
    ("registry/set_external_ref", lambda w: w.registry.set_external_ref("p1", ProcessExternalRef(backend="b", id="i"))),
    ("registry/get_process", lambda w: w.registry.get_process("p1")),
    ("registry/list_non_terminal", lambda w: w.registry.list_non_terminal()),
    ("registry/list_processes", lambda w: w.registry.list_processes()),
    ("registry/append_event", lambda w: w.registry.append_event("p1", append())),
    ("registry/complete_process", lambda w: w.registry.complete_process("p1", ProcessAwaitOutput.success(1))),
    ("registry/events_after", lambda w: w.registry.events_after("p1", 0)),
    ("registry/wake_events_after", lambda w: w.registry.wake_events_after("p1", 0)),
    ("registry/ack_wake", lambda w: w.registry.ack_wake("p1", 1)),
    ("registry/wait_event_after", lambda w: w.registry.wait_event_after("p1", LINE, 2, timeout_ms=100)),
    ("registry/await_process", lambda w: w.registry.await_process("p1", timeout_ms=100)),
    ("registry/grant_handle", lambda w: w.registry.grant_handle(S("s-9"), "p1")),
    ("registry/revoke_handle", lambda w: w.registry.revoke_handle(S("root"), "p1")),
    ("registry/transfer_handle_grants", lambda w: w.registry.transfer_handle_grants(S("root"), S("s-9"), ["p1"])),
    ("registry/list_handle_grants", lambda w: w.registry.list_handle_grants(S("root"))),
    ("registry/list_live_handle_grants", lambda w: w.registry.list_live_handle_grants(S("root"))),
    ("registry/has_handle_grant", lambda w: w.registry.has_handle_grant(S("root"), "p1")),
    ("registry/handle_grants_for_process", lambda w: w.registry.handle_grants_for_process("p1")),
    ("registry/delete_session_process_state", lambda w: w.registry.delete_session_process_state("root")),
    ("registry/claim_process_lease", lambda w: w.registry.claim_process_lease("p1", "owner-1", TTL)),
    ("registry/renew_process_lease", lambda w: w.registry.renew_process_lease(w.lease, TTL)),
    ("registry/complete_process_lease", lambda w: w.registry.complete_process_lease(w.lease.completion())),
    ("registry/get_process_lease", lambda w: w.registry.get_process_lease("p1")),
    ("registry/prune_processes", lambda w: w.registry.prune_processes(START_MS + 10**9)),
    ("registry/raw_rows", lambda w: w.registry.raw_rows()),
    ("host-events/register_subscription", lambda w: w.events.register_subscription(draft())),
    ("host-events/list_subscriptions", lambda w: w.events.list_subscriptions()),
    ("host-events/cancel_subscription", lambda w: w.events.cancel_subscription("s-1", "trigger:1")),
    ("host-events/record_occurrence", lambda w: w.events.record_occurrence(occurrence())),
    ("host-events/record_and_reserve", lambda w: w.events.record_and_reserve(occurrence())),
    ("host-events/get_occurrence", lambda w: w.events.get_occurrence(w.occurrence.occurrence_id)),
    ("host-events/list_occurrences", lambda w: w.events.list_occurrences()),
    (
        "host-events/reserve_matching_deliveries",
        lambda w: w.events.reserve_matching_deliveries(w.occurrence.occurrence_id),
    ),
    ("host-events/pending_deliveries", lambda w: w.events.pending_deliveries()),
    ("host-events/list_deliveries", lambda w: w.events.list_deliveries(w.occurrence.occurrence_id)),
    (
        "host-events/mark_delivery_started",
        lambda w: w.events.mark_delivery_started(w.occurrence.occurrence_id, w.subscription.subscription_id),
    ),
    ("host-events/prune", lambda w: w.events.prune(START_MS + 10**9)),
    ("effects/execute_effect-new", lambda w: w.controller.execute_effect(envelope("k-new"), returning())),
    ("effects/execute_effect-replay", lambda w: w.controller.execute_effect(envelope("k1"), returning())),
    (
        "effects/execute_effect-new-controller",
        lambda w: w.effects.scoped(TURN).execute_effect(envelope("k-new"), returning()),
    ),
    ("effects/list_journal", lambda w: w.effects.list_journal()),
    ("effects/prune_journal", lambda w: w.effects.prune_journal(START_MS + 10**9)),
]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("operation", [pytest.param(o, id=i) for i, o in AFTER_CLOSE])
def test_every_method_after_close_is_store_closed_and_writes_nothing(world: World, operation: Op) -> None:
    world.close()
    world.close()  # closing twice is harmless
    before = snapshot(world.path)
    files_before = listing(world.tmp)
    problem = typed_error_problem(lambda: operation(world), StoreClosed, "")
    if problem is not None:
        pytest.fail(problem)
    assert snapshot(world.path) == before
    assert listing(world.tmp) == files_before


# ---------------------------------------------------------------------------
# iterables that can be consumed only once: rejected, or every item applied (never consumed by validation and
# then silently skipped)


@dataclass(frozen=True)
class OnceCase:
    id: str
    op: Op
    applied: Callable[[World, Any], bool]


def _grants(w: World, session_id: str) -> list[str]:
    return [entry.record.id for entry in w.registry.list_handle_grants(S(session_id))]


ONCE: list[OnceCase] = [
    OnceCase(
        "registry/transfer-generator",
        lambda w: (
            w.registry.grant_handle(S("root"), "p2"),
            w.registry.transfer_handle_grants(S("root"), S("s-9"), once(["p1", "p2"])),
        ),
        lambda w, r: _grants(w, "s-9") == ["p1", "p2"] and _grants(w, "root") == [],
    ),
    OnceCase(
        "registry/transfer-tuple",
        lambda w: w.registry.transfer_handle_grants(S("root"), S("s-9"), ("p1",)),
        lambda w, r: _grants(w, "s-9") == ["p1"],
    ),
    OnceCase(
        "registry/event-types-generator",
        lambda w: w.registry.register_process(
            raw_registration(event_types=once([ProcessEventType(name="a"), ProcessEventType(name="b")]))
        ),
        lambda w, r: [t.name for t in r.event_types][:2] == ["a", "b"],
    ),
    OnceCase(
        "registry/with-event-types-generator",
        lambda w: w.registry.register_process(
            ProcessRegistration.new("p-new", 1).with_event_types(once([ProcessEventType(name="a")]))
        ),
        lambda w, r: "a" in [t.name for t in r.event_types],
    ),
    OnceCase(
        "effects/transfer-generator",
        lambda w: w.controller.execute_effect(
            envelope(
                "k-t", RuntimeEffectCommand.process_command(ProcessCommand.transfer(S("root"), S("s-9"), once(["p1"])))
            ),
            RuntimeEffectLocalExecutor.process_control(w.registry),
        ),
        lambda w, r: _grants(w, "s-9") == ["p1"],
    ),
]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("case", ONCE, ids=[case.id for case in ONCE])
def test_once_only_iterable_is_rejected_or_fully_applied(world: World, case: OnceCase) -> None:
    before = snapshot(world.path)
    try:
        result = case.op(world)
    except InvalidInput:
        assert snapshot(world.path) == before, "rejected, but the file changed"
        return
    except Exception as exc:
        pytest.fail(f"raised {_describe(exc)}; expected a typed refusal or every item applied")
    assert case.applied(world, result), f"accepted ({result!r:.200}) but not every item was applied"


# ---------------------------------------------------------------------------
# stale leases: expired, or taken over by another owner; fenced writes with them write nothing


STALE: list[tuple[str, Callable[[World, ProcessLease], object]]] = [
    ("append", lambda w, lease: w.registry.append_event("p1", append(), lease=lease)),
    ("complete", lambda w, lease: w.registry.complete_process("p1", ProcessAwaitOutput.success(1), lease=lease)),
    ("renew", lambda w, lease: w.registry.renew_process_lease(lease, TTL)),
]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("taken_over", [False, True], ids=["expired", "taken-over"])
@pytest.mark.parametrize("operation", [pytest.param(o, id=i) for i, o in STALE])
def test_stale_lease_is_lease_lost_and_writes_nothing(
    world: World, operation: Callable[[World, ProcessLease], object], taken_over: bool
) -> None:
    world.clock.now += TTL + 1
    if taken_over:
        assert world.registry.claim_process_lease("p1", "owner-2", TTL).fencing_token == world.lease.fencing_token + 1
    before = snapshot(world.path)
    problem = typed_error_problem(lambda: operation(world, world.lease), LeaseLost, "missing or expired")
    if problem is not None:
        pytest.fail(problem)
    assert snapshot(world.path) == before
    if taken_over:  # (the holder of an expired lease nobody took over may still release it)
        world.registry.complete_process_lease(world.lease.completion())  # a superseded completion is a no-op
        assert snapshot(world.path) == before


# ---------------------------------------------------------------------------
# a representative subset on PostgreSQL: the typed error, and no table's row count changed

PG_VALUES = ("nul", "huge", "surrogate", "int-5000-digits")
PG_NAMED = {
    "registry/append/lease-forged-token",
    "registry/append/lease-future-fence",
    "registry/renew/forged-token",
    "registry/renew/future-fence",
    "registry/register/template-deep",
    "registry/register/conflict",
    "registry/register-and-grant/scope-none",
    "registry/ack/not-a-wake",
    "registry/transfer/not-granted",
    "registry/claim_lease/blank",
    "registry/prune_horizon/2**63",
    "host-events/record/conflict",
    "host-events/filter/target-dict",
    "host-events/prune/dry-run-str",
    "host-events/mark-started/unknown",
    "host-events/pending_limit/2**64",
    "effects/execute/process-start-registration-none",
    "effects/execute/process-transfer-ids-str",
    "effects/execute/conflict",
    "effects/execute/strict-missing",
    "effects/execute/invocation-none",
    "effects/execute/sleep-2**63",
    "effects/prune-journal/dry-run-str",
    "effects/list-journal/limit-2**63",
}
PG_CASES = [case for case in REJECT if case[0].rsplit("/", 1)[-1] in PG_VALUES or case[0] in PG_NAMED]
PG_SCHEMA = "hostile"


@pytest.fixture(scope="module")
def pg_world(pg_server: Any) -> Iterator[tuple[World, Callable[[], dict[str, int]]]]:
    import psycopg

    from lash_store.postgres import (
        PostgresEffectHost,
        PostgresHostEventStore,
        PostgresProcessRegistry,
        close_shared_pools,
    )

    name = f"lash_hostile_{os.getpid()}"
    dsn = pg_server.create_database(name)
    clock = FakeClock()
    options = StoreOptions(clock=clock)
    stores: list[Any] = []
    try:
        registry = PostgresProcessRegistry.open(dsn, options, schema=PG_SCHEMA)
        stores.append(registry)
        events = PostgresHostEventStore.open(dsn, options, schema=PG_SCHEMA)
        stores.append(events)
        effects = PostgresEffectHost.open(
            dsn, options, schema=PG_SCHEMA, replay_options=EffectReplayOptions(busy_timeout_ms=200)
        )
        stores.append(effects)
        lease, subscription, recorded, controller = seed(registry, events, effects)
        nowhere = Path("/nonexistent")
        world = World(nowhere, nowhere, clock, registry, events, effects, lease, subscription, recorded, controller)
        with psycopg.connect(dsn, autocommit=True) as conn:
            tables = [
                row[0]
                for row in conn.execute(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = %s ORDER BY 1", (PG_SCHEMA,)
                )
            ]
            assert {"processes", "effect_journal", "host_event_subscriptions"} <= set(tables), tables

            def counts() -> dict[str, int]:
                found = {}
                for table in tables:
                    row = conn.execute(f'SELECT count(*) FROM "{PG_SCHEMA}"."{table}"').fetchone()
                    assert row is not None
                    found[table] = int(row[0])
                return found

            yield world, counts
    finally:
        for store in stores:
            store.close()
        close_shared_pools()
        pg_server.drop_database(name)


@pytest.mark.postgres
@pytest.mark.timeout(60)
@pytest.mark.parametrize(("operation", "error", "field"), [pytest.param(o, e, f, id=i) for i, o, e, f in PG_CASES])
def test_postgres_hostile_argument_is_a_typed_error_and_writes_nothing(
    pg_world: tuple[World, Callable[[], dict[str, int]]], operation: Op, error: type[StoreError], field: str
) -> None:
    world, counts = pg_world
    before = counts()
    problem = typed_error_problem(lambda: operation(world), error, field)
    if problem is not None:
        pytest.fail(problem)
    assert counts() == before, "a table's row count changed"


# ---------------------------------------------------------------------------
# opening with hostile options or paths: the typed error, and no file created

OpenOp = Callable[[Path], object]

OPEN: list[tuple[str, OpenOp, type[StoreError], str]] = [
    *[
        (f"effects/open/replay-options-{name}-{value_id}", op, InvalidEffectInput, f"replay_options.{name}")
        for name in ("lease_ttl_ms", "heartbeat_interval_ms", "busy_timeout_ms")
        for value_id, value in [("negative", -1), ("2**63", 2**63), ("bool", True), ("float", 1.5), ("str", "1")]
        for op in [
            lambda d, name=name, value=value: EffectHost.open(
                d / "d.db", replay_options=EffectReplayOptions(**{name: value})
            )
        ]
    ],
    (
        "effects/open/replay-options-none-ttl",
        lambda d: EffectHost.open(d / "d.db", replay_options=EffectReplayOptions(lease_ttl_ms=None)),
        InvalidEffectInput,
        "replay_options.lease_ttl_ms",
    ),
    (
        "effects/open/replay-options-dict",
        lambda d: EffectHost.open(d / "d.db", replay_options={"lease_ttl_ms": 1}),
        InvalidEffectInput,
        "replay_options",
    ),
    (
        "effects/memory/replay-options-str",
        lambda d: EffectHost.memory(replay_options="fast"),
        InvalidEffectInput,
        "replay_options",
    ),
    ("effects/open/options-str", lambda d: EffectHost.open(d / "d.db", "fast"), InvalidInput, "options"),
    ("effects/open/path-nul", lambda d: EffectHost.open(d / "a\x00b.db"), InvalidInput, "path"),
    ("effects/open/path-none", lambda d: EffectHost.open(None), InvalidInput, "path"),
    ("effects/open/path-directory", lambda d: EffectHost.open(d), InvalidInput, "path"),
    ("registry/open/options-str", lambda d: ProcessRegistry.open(d / "d.db", "fast"), InvalidInput, "options"),
    ("registry/open/path-nul", lambda d: ProcessRegistry.open(d / "a\x00b.db"), InvalidInput, "path"),
    ("registry/open/path-int", lambda d: ProcessRegistry.open(5), InvalidInput, "path"),
    ("registry/open/path-missing-parent", lambda d: ProcessRegistry.open(d / "missing" / "d.db"), InvalidInput, "path"),
    ("registry/open-readonly/missing", lambda d: ProcessRegistry.open_readonly(d / "d.db"), StoreError, ""),
    ("registry/memory/options-str", lambda d: ProcessRegistry.memory("fast"), InvalidInput, "options"),
    ("host-events/open/options-str", lambda d: HostEventStore.open(d / "d.db", "fast"), InvalidInput, "options"),
    ("host-events/open/path-surrogate", lambda d: HostEventStore.open(f"{d}/\ud800.db"), InvalidInput, "path"),
    ("host-events/open/path-empty", lambda d: HostEventStore.open(""), InvalidInput, "path"),
    ("host-events/memory/options-int", lambda d: HostEventStore.memory(5), InvalidInput, "options"),
]


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("operation", "error", "field"), [pytest.param(o, e, f, id=i) for i, o, e, f in OPEN])
def test_hostile_open_is_a_typed_error_and_creates_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, operation: OpenOp, error: type[StoreError], field: str
) -> None:
    monkeypatch.chdir(tmp_path)
    opened: list[Any] = []

    def call() -> object:
        opened.append(operation(tmp_path))
        return opened[-1]

    try:
        problem = typed_error_problem(call, error, field)
    finally:
        for store in opened:
            store.close()
    if problem is not None:
        pytest.fail(problem)
    assert listing(tmp_path) == [], "files were created"


@pytest.mark.postgres
@pytest.mark.timeout(60)
def test_postgres_open_with_hostile_replay_options_creates_no_schema(pg_dsn: str) -> None:
    import psycopg

    from lash_store.postgres import PostgresEffectHost, close_shared_pools

    try:
        with pytest.raises(InvalidEffectInput) as raised:
            PostgresEffectHost.open(pg_dsn, replay_options=EffectReplayOptions(lease_ttl_ms=-1), schema="fresh")
        assert raised.value.what == "replay_options.lease_ttl_ms"
        with psycopg.connect(pg_dsn) as conn:
            found = conn.execute("SELECT 1 FROM information_schema.schemata WHERE schema_name = 'fresh'").fetchall()
        assert found == [], "the schema was created before the options were checked"
    finally:
        close_shared_pools()


# ---------------------------------------------------------------------------
# valid extremes: accepted, and they read back exactly (limits 0 and 2**63-1, TTL 0, NUL inside JSON text)


@dataclass(frozen=True)
class Extreme:
    id: str
    check: Callable[[World], bool]


def _p1_payload(w: World, sequence: int) -> Any:
    return [event.payload for event in w.registry.events_after("p1", sequence - 1, limit=1)]


EXTREMES: list[Extreme] = [
    Extreme(
        "registry/limits-0",
        lambda w: w.registry.events_after("p1", 0, limit=0) == [] == w.registry.list_processes(limit=0),
    ),
    Extreme(
        "registry/limits-max",
        lambda w: (
            len(w.registry.events_after("p1", 0, limit=MAX_I64)) == 2
            and len(w.registry.list_processes(limit=MAX_I64)) == 2
        ),
    ),
    Extreme("registry/prune-limit-0", lambda w: w.registry.prune_processes(MAX_I64, limit=0).process_ids == []),
    Extreme(
        "registry/ttl-0-claims-an-expired-lease",
        lambda w: (
            w.registry.register_process(registration("p3")) is not None
            and w.registry.claim_process_lease("p3", "o", 0).expires_at_epoch_ms == START_MS
            and w.registry.claim_process_lease("p3", "o-2", TTL).fencing_token == 2
        ),  # it expired at once
    ),
    Extreme(
        "registry/ttl-max-saturates",
        lambda w: w.registry.renew_process_lease(w.lease, MAX_I64).expires_at_epoch_ms == MAX_I64,
    ),
    Extreme(
        "registry/nul-inside-json",
        lambda w: (
            w.registry.append_event("p1", append(payload={"line": "a\x00b", "k\x00": None})).event.sequence == 3
            and _p1_payload(w, 3) == [{"line": "a\x00b", "k\x00": None}]
        ),
    ),
    Extreme(
        "host-events/limits-0",
        lambda w: w.events.list_occurrences(limit=0) == [] == w.events.pending_deliveries(limit=0),
    ),
    Extreme("host-events/limits-max", lambda w: len(w.events.pending_deliveries(limit=MAX_I64)) == 1),
    Extreme(
        "host-events/nul-inside-json",
        lambda w: (
            w.events.get_occurrence(
                w.events.record_occurrence(occurrence(idempotency_key="nul", payload=["a\x00b"])).occurrence_id
            ).payload  # type: ignore[union-attr]
            == ["a\x00b"]
        ),
    ),
    Extreme("effects/limits-0", lambda w: w.effects.list_journal(limit=0) == []),
    Extreme("effects/prune-max-dry", lambda w: w.effects.prune_journal(MAX_I64, dry_run=True).row_count == 1),
    Extreme(
        "effects/nul-inside-json",
        lambda w: (
            w.controller.execute_effect(exec_request("a\x00b"), returning("r\x00")).value == "r\x00"
            and w.controller.execute_effect(exec_request("a\x00b"), returning("other")).value == "r\x00"
        ),
    ),
    Extreme("effects/ttl-0-counts-as-1-ms", lambda w: _with_ttl_0(w)),
]


def _with_ttl_0(w: World) -> bool:
    options = StoreOptions(clock=w.clock)
    with EffectHost.open(w.path, options, replay_options=EffectReplayOptions(lease_ttl_ms=0)) as host:
        outcome = host.scoped(TURN).execute_effect(envelope("k-ttl0"), returning("zero"))
        return bool(outcome.value == "zero")


@pytest.mark.timeout(30)
@pytest.mark.parametrize("case", EXTREMES, ids=[case.id for case in EXTREMES])
def test_valid_extreme_is_accepted_and_reads_back(world: World, case: Extreme) -> None:
    try:
        ok = case.check(world)
    except Exception as exc:
        pytest.fail(f"raised {_describe(exc)} for a valid extreme")
    assert ok, "accepted, but it did not read back as written"


# ---------------------------------------------------------------------------
# hostile executors: an outcome the journal cannot record is a typed failure, journaled (as the conformance
# suite's test_bad_outcome_that_cannot_be_journaled requires) so that every replay raises it again -- never a
# completed row that no replay can decode


HOSTILE_OUTCOMES: dict[str, Callable[[], Any]] = {
    "type-int": lambda: RuntimeEffectOutcome(type=5, value=1),
    "type-none": lambda: RuntimeEffectOutcome(type=None),
    "process-str": lambda: RuntimeEffectOutcome(type="exec_code", process="x"),
    "process-dict": lambda: RuntimeEffectOutcome(type="process", process={"type": "start"}),
    "value-nan": lambda: RuntimeEffectOutcome.exec_code(NAN),
    "value-deep": lambda: RuntimeEffectOutcome.exec_code(deep_list()),
    "value-cyclic": lambda: RuntimeEffectOutcome.exec_code(cyclic_dict()),
    "value-int-5000-digits": lambda: RuntimeEffectOutcome.exec_code(10**5000),
    "value-surrogate": lambda: RuntimeEffectOutcome.exec_code({"k": SURROGATE}),
    "value-int-key": lambda: RuntimeEffectOutcome.exec_code({1: "x"}),
}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("make", HOSTILE_OUTCOMES.values(), ids=HOSTILE_OUTCOMES.keys())
def test_hostile_executor_outcome_is_a_journaled_typed_failure(world: World, make: Callable[[], Any]) -> None:
    """Refused as a journaled failure (code ``sqlite_effect_replay_encode``), or recorded so that replays decode it."""
    bad = RuntimeEffectLocalExecutor.runner(lambda env: make())
    try:
        world.controller.execute_effect(envelope("k-bad"), bad)
    except EffectJournalError as exc:
        assert exc.code == "sqlite_effect_replay_encode", _describe(exc)
        (row,) = [r for r in world.effects.list_journal(scope=TURN) if r.replay_key == "k-bad"]
        assert row.status == "failed" and row.error is not None, row
        assert row.error["code"] == "sqlite_effect_replay_encode", row.error
        with pytest.raises(EffectJournalError) as replayed:
            world.controller.execute_effect(envelope("k-bad"), returning("late"))
        assert replayed.value.code == "sqlite_effect_replay_encode", f"the replay raised {_describe(replayed.value)}"
        return
    except Exception as exc:
        pytest.fail(f"raised {_describe(exc)}")
    try:  # accepted: every replay must decode what was journaled
        world.controller.execute_effect(envelope("k-bad"), returning("late"))
        world.effects.list_journal(scope=TURN)
    except Exception as exc:
        pytest.fail(f"accepted, but the journaled outcome does not replay: {_describe(exc)}")


# ---------------------------------------------------------------------------
# the same through the asyncio facades (a sample: they run the services' checks)

AsyncOp = Callable[[World], Any]

ASYNC_CASES: list[tuple[str, AsyncOp, type[StoreError], str]] = [
    (
        "registry/append-nul",
        lambda w: AsyncProcessRegistry(w.registry).append_event("p\x00", append()),
        R,
        "process_id",
    ),
    (
        "registry/wait-timeout-nan",
        lambda w: AsyncProcessRegistry(w.registry).wait_event_after("p1", LINE, 0, timeout_ms=NAN),
        R,
        "timeout_ms",
    ),
    (
        "registry/await-timeout-2**64",
        lambda w: AsyncProcessRegistry(w.registry).await_process("p1", timeout_ms=2**64),
        R,
        "timeout_ms",
    ),
    (
        "registry/renew-forged",
        lambda w: AsyncProcessRegistry(w.registry).renew_process_lease(lease_with(w.lease, lease_token="x"), TTL),
        LeaseLost,
        "missing or expired",
    ),
    (
        "host-events/record-huge-key",
        lambda w: AsyncHostEventStore(w.events).record_occurrence(occurrence(source_key=HUGE)),
        H,
        "request.source_key",
    ),
    (
        "host-events/prune-dry-run-str",
        lambda w: AsyncHostEventStore(w.events).prune(START_MS, dry_run="no"),
        H,
        "dry_run",
    ),
    (
        "effects/execute-command-none",
        lambda w: (
            AsyncEffectHost(w.effects)
            .scoped(TURN)
            .execute_effect(RuntimeEffectEnvelope.new(runtime_scope(), "e", "k", None), returning())
        ),
        E,
        "command",
    ),
    (
        "effects/execute-deep-request",
        lambda w: AsyncEffectHost(w.effects).scoped(TURN).execute_effect(exec_request(deep_dict()), returning()),
        E,
        "envelope",
    ),
    ("effects/list-limit-bool", lambda w: AsyncEffectHost(w.effects).list_journal(limit=True), E, "limit"),
]


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("operation", "error", "field"), [pytest.param(o, e, f, id=i) for i, o, e, f in ASYNC_CASES])
def test_async_facade_hostile_argument_is_a_typed_error_and_writes_nothing(
    world: World, operation: AsyncOp, error: type[StoreError], field: str
) -> None:
    async def call() -> object:
        return await operation(world)

    before = snapshot(world.path)
    problem = typed_error_problem(lambda: asyncio.run(call()), error, field)
    if problem is not None:
        pytest.fail(problem)
    assert snapshot(world.path) == before

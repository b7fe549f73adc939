"""The backend-agnostic conformance suite of the process registry (reference (a) §a.8, SPEC §9).

Every registry backend -- SQLite file and memory, PostgreSQL, the pure-Python
:class:`~lash_store.testing.registry_reference.ReferenceProcessRegistry`,
third-party ones -- must pass these tests.  They hold every scenario P-1 ...
P-36 of the reference (named ``test_p<N>_...``); where a fix of the
reference's §7 changes an outcome, the scenario tests the fixed behaviour and
says so, and the fixes have tests of their own (``test_fix_...``).

How a backend runs the suite -- in one of its test modules::

    import pytest

    pytest.register_assert_rewrite("lash_store.testing.registry_conformance")

    from lash_store.testing.registry_conformance import *  # noqa: E402, F403  (collects the suite)
    from lash_store.testing.registry_conformance import Clock, Registry, RegistryHarness  # noqa: E402


    class MyHarness(RegistryHarness):
        name = "my-backend"
        durable = True

        def open(self, clock: Clock) -> Registry:
            ...  # a fresh, empty registry reading time from ``clock`` (epoch ms)

        def reopen(self, registry: Registry) -> Registry:
            ...  # a new handle on the same durable data (same clock)

        def restore_running(self, registry: Registry, process_id: str) -> None:
            ...  # set the stored status back to running behind the registry's back


    @pytest.fixture
    def registry_harness() -> RegistryHarness:
        return MyHarness()

For a harness declaring ``durable = False`` the reopen and two-handle tests
run through the one handle it has.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from lash_store.api import ProcessRegistryAPI
from lash_store.core.registry.semantics import select
from lash_store.errors import (
    EventReplayConflict,
    HandleNotGranted,
    InvalidEventPayload,
    InvalidProcessInput,
    LeaseLost,
    MissingWakeTarget,
    NotAWakeEvent,
    ProcessAlreadyLeased,
    ProcessAlreadyTerminal,
    ProcessRegistryError,
    RegistrationConflict,
    ReplayKeyRequired,
    SelectorMismatch,
    StoreError,
    UndeclaredEventType,
    UnknownProcess,
    WaitTimeout,
)
from lash_store.model import DurabilityTier
from lash_store.processes import (
    CANCEL_REQUESTED,
    DedupeKey,
    ProcessAwaitOutput,
    ProcessEventAppendRequest,
    ProcessEventSemantics,
    ProcessEventType,
    ProcessExternalRef,
    ProcessHandleDescriptor,
    ProcessLease,
    ProcessProvenance,
    ProcessRegistration,
    ProcessReplay,
    ProcessScope,
    Selector,
    TerminalSpec,
    WakeSpec,
    wake_id,
)
from lash_store.testing.clock import ManualClock
from lash_store.testing.harness import Handles, Harness, in_thread

Clock = Callable[[], int]
"""A zero-argument callable returning epoch milliseconds."""

Registry = ProcessRegistryAPI
"""The registry surface the suite exercises: the package's public protocol (SPEC §9)."""

START_MS = 1_700_000_000_000
TTL = 60_000
EXTERNAL = {"type": "external", "metadata": None}


# ===========================================================================
# What a backend provides


class RegistryHarness(Harness[Registry]):
    """How the suite obtains registries of one backend.  Subclass it and provide a ``registry_harness`` fixture.

    ``reopen`` returns a NEW handle on the same durable data (same clock), or None if not durable.
    """

    def open(self, clock: Clock) -> Registry:
        """A fresh, empty registry reading time from ``clock``."""
        raise NotImplementedError(f"{type(self).__name__} must implement open(clock)")

    def restore_running(self, registry: Registry, process_id: str) -> None:
        """Set the stored status of a process back to ``running`` behind the registry's back (scenario P-25)."""
        raise NotImplementedError(f"{type(self).__name__} must implement restore_running(registry, process_id)")


class Registries(Handles[Registry]):
    """Per-test access to a harness: opens and reopens handles and closes them all at teardown."""

    harness: RegistryHarness

    def __init__(self, harness: RegistryHarness, clock: ManualClock) -> None:
        super().__init__(harness)
        self.clock = clock

    def open(self) -> Registry:
        registry: Registry = self.track(self.harness.open(self.clock))
        return registry


@pytest.fixture
def registry_clock() -> ManualClock:
    """The test's clock; every registry of the test reads time from it."""
    return ManualClock(START_MS)


@pytest.fixture
def registries(registry_harness: RegistryHarness, registry_clock: ManualClock) -> Iterator[Registries]:
    access = Registries(registry_harness, registry_clock)
    try:
        yield access
    finally:
        access.close_all()


@pytest.fixture
def registry(registries: Registries) -> Registry:
    """A fresh, empty registry of the backend under test."""
    return registries.open()


# ===========================================================================
# Builders (the reference's conventions)


def S(session_id: str, frame: str | None = None) -> ProcessScope:
    return ProcessScope(session_id=session_id, agent_frame_id=frame)


def plain(name: str) -> ProcessEventType:
    """Any payload, no semantics."""
    return ProcessEventType(name=name)


def wake_type(name: str) -> ProcessEventType:
    """Wakes with ``/wake_input`` when it is present."""
    wake = WakeSpec(when=Selector.present("/wake_input"), input=Selector.pointer("/wake_input"))
    return ProcessEventType(name=name, semantics=ProcessEventSemantics(wake=wake))


def reg(process_id: str, *extra: ProcessEventType, owner: str = "root", host: str = "default") -> ProcessRegistration:
    provenance = ProcessProvenance(owner_scope=S(owner), host_profile_id=host)
    return ProcessRegistration.new(process_id, EXTERNAL).with_event_types(extra).with_provenance(provenance)


def request(
    event_type: str, payload: Any, key: str | None = None, target: ProcessScope | None = None
) -> ProcessEventAppendRequest:
    return ProcessEventAppendRequest(
        event_type=event_type,
        payload=payload,
        replay=None if key is None else ProcessReplay(key=key),
        wake_target_scope=target,
    )


def sequences(events: list[Any]) -> list[int]:
    return [event.sequence for event in events]


def grant_sessions(registry: Registry, process_id: str) -> list[str]:
    return [grant.session_id for grant in registry.handle_grants_for_process(process_id)]


def lease_of(registry: Registry, process_id: str, owner: str, ttl: int = TTL) -> ProcessLease:
    return registry.claim_process_lease(process_id, owner, ttl)


# ===========================================================================
# P-1 ... P-17: registration, events, semantics, grants, listings


def test_p1_declared_durability(registry: Registry, registry_harness: RegistryHarness) -> None:
    expected = DurabilityTier.DURABLE if registry_harness.durable else DurabilityTier.INLINE
    assert registry.durability_tier == expected


def test_p2_registration_idempotency_and_conflict(registry: Registry) -> None:
    first = registry.register_process(reg("proc-idempotent"))
    second = registry.register_process(reg("proc-idempotent"))
    assert first.registration_hash == second.registration_hash
    assert first == second
    with pytest.raises(RegistrationConflict) as raised:
        registry.register_process(reg("proc-idempotent", wake_type("producer.wake")))
    assert raised.value.stored_hash == first.registration_hash
    assert raised.value.stored_hash in str(raised.value) and raised.value.requested_hash in str(raised.value)


def test_p2_a_replayed_registration_returns_the_stored_record_whatever_its_status(registry: Registry) -> None:
    registry.register_process(reg("proc-done"))
    done = registry.complete_process("proc-done", ProcessAwaitOutput.success(1))
    assert registry.register_process(reg("proc-done")) == done


def test_p3_external_ref_and_grant_membership(registry: Registry) -> None:
    with pytest.raises(UnknownProcess):
        registry.set_external_ref("missing-process", ProcessExternalRef(backend="test", id="missing"))
    registry.register_process(reg("proc-external-ref"))
    ref = ProcessExternalRef(backend="worker", id="job-123", metadata={"queue": "critical"})
    assert registry.set_external_ref("proc-external-ref", ref).external_ref == ref
    stored = registry.get_process("proc-external-ref")
    assert stored is not None and stored.external_ref == ref
    owner = S("grant-owner")
    assert not registry.has_handle_grant(owner, "proc-external-ref")
    registry.grant_handle(owner, "proc-external-ref", ProcessHandleDescriptor(kind="test", label="external ref"))
    assert registry.has_handle_grant(owner, "proc-external-ref")
    registry.revoke_handle(owner, "proc-external-ref")
    assert not registry.has_handle_grant(owner, "proc-external-ref")
    assert registry.list_handle_grants(owner) == []


def _line_type() -> ProcessEventType:
    schema = {
        "type": "object",
        "properties": {"line": {"type": "string"}, "wake_input": {"type": "string"}},
        "required": ["line"],
    }
    wake = WakeSpec(when=Selector.present("/wake_input"), input=Selector.pointer("/wake_input"))
    return ProcessEventType(name="producer.line", payload_schema=schema, semantics=ProcessEventSemantics(wake=wake))


def test_p4_custom_event_validation_wake_and_ack(registry: Registry) -> None:
    registry.register_process(reg("proc-1", _line_type()))
    payload = {"line": "deploy failed", "wake_input": "Process event: deploy failed"}
    result = registry.append_event("proc-1", request("producer.line", payload, target=S("s1")))
    assert result.event.sequence == 1
    assert result.wake_delivery is not None and result.wake_delivery.input == "Process event: deploy failed"
    assert result.event.semantics.wake is not None
    assert result.event.semantics.wake.input == "Process event: deploy failed"
    assert sequences(registry.wake_events_after("proc-1", 0)) == [1]
    registry.ack_wake("proc-1", 1)
    registry.ack_wake("proc-1", 1)  # idempotent
    assert registry.wake_events_after("proc-1", 0) == []
    with pytest.raises(InvalidEventPayload) as raised:
        registry.append_event(
            "proc-1", request("producer.line", {"wake_input": "missing required line"}, target=S("s1"))
        )
    assert raised.value.what == "request.payload" and "line" in str(raised.value)
    assert sequences(registry.events_after("proc-1", 0)) == [1]


def test_p5_custom_wake_provenance_and_replay(registry: Registry) -> None:
    cause = {"type": "session_node", "session_id": "target-session", "node_id": "host-event:button"}
    provenance = ProcessProvenance(owner_scope=S("owner-session"), host_profile_id="host-profile", caused_by=cause)
    registration = (
        ProcessRegistration.new("proc-provenance", EXTERNAL)
        .with_event_types([wake_type("producer.custom_wake")])
        .with_provenance(provenance)
    )
    registry.register_process(registration)
    target = S("target-session", "target-frame")
    req = request(
        "producer.custom_wake",
        {"line": "build failed", "wake_input": "custom wake: build failed"},
        key="custom-wake:build-failed",
        target=target,
    )
    first = registry.append_event("proc-provenance", req)
    second = registry.append_event("proc-provenance", req)
    assert first.event.sequence == second.event.sequence == 1
    assert len(registry.events_after("proc-provenance", 0)) == 1
    invocation = first.event.invocation
    assert invocation.scope == S("owner-session")
    assert (invocation.subject.process_id, invocation.subject.sequence) == ("proc-provenance", 1)
    assert invocation.subject.event_type == "producer.custom_wake" and invocation.subject.type == "process_event"
    assert invocation.caused_by.process_id == "proc-provenance" and invocation.caused_by.type == "process"
    assert invocation.replay is not None and invocation.replay.key == "custom-wake:build-failed"
    wake = first.wake_delivery
    assert wake is not None
    assert wake.event_type == "producer.custom_wake"
    assert wake.event_invocation == invocation
    assert wake.process_caused_by == cause
    assert wake.target_session_id == "target-session"
    assert wake.target_scope_id == "session:target-session/frame:target-frame"
    assert (wake.process_id, wake.sequence) == ("proc-provenance", 1)
    assert wake.dedupe_key == "proc-provenance:1"
    assert wake.input == "custom wake: build failed"
    assert wake.created_at_ms == first.event.occurred_at_ms
    assert second.wake_delivery is not None and second.wake_delivery.wake_id == wake.wake_id
    assert second.wake_delivery == wake


def test_p6_event_streams_order_filtering_waiting(registry: Registry) -> None:
    registry.register_process(
        reg("proc-stream", plain("producer.line"), wake_type("producer.wake"), plain("producer.future"))
    )
    registry.append_event("proc-stream", request("producer.line", {"line": "one"}))
    registry.append_event("proc-stream", request("producer.wake", {"wake_input": "wake two"}, target=S("root")))
    registry.append_event("proc-stream", request("producer.line", {"line": "three"}))
    after_one = registry.events_after("proc-stream", 1)
    assert [(e.sequence, e.event_type) for e in after_one] == [(2, "producer.wake"), (3, "producer.line")]
    assert registry.events_after("proc-stream", 3) == []
    assert [(e.sequence, e.event_type) for e in registry.wake_events_after("proc-stream", 1)] == [(2, "producer.wake")]
    assert registry.wake_events_after("proc-stream", 2) == []
    assert registry.wait_event_after("proc-stream", "producer.line", 1, timeout_ms=0).sequence == 3
    join = in_thread(lambda: registry.wait_event_after("proc-stream", "producer.future", 3, timeout_ms=5_000))
    time.sleep(0.02)
    registry.append_event("proc-stream", request("producer.future", {"line": "four"}))
    assert join(1.0).sequence == 4


def _matrix_type(name: str, wake: WakeSpec) -> ProcessEventType:
    return ProcessEventType(name=name, semantics=ProcessEventSemantics(wake=wake))


def test_p7_wake_semantics_matrix(registry: Registry) -> None:
    pointer = Selector.pointer("/wake_input")
    registry.register_process(
        reg(
            "proc-wake-matrix",
            _matrix_type(
                "matrix.when_false", WakeSpec(when=Selector.const(False), input=Selector.const("must not wake"))
            ),
            _matrix_type("matrix.payload", WakeSpec(input=Selector.payload())),
            _matrix_type("matrix.const_input", WakeSpec(input=Selector.const("constant wake input"))),
            _matrix_type(
                "matrix.template",
                WakeSpec(
                    input=Selector.template(
                        "line {line} #{n}", {"line": Selector.pointer("/line"), "n": Selector.pointer("/n")}
                    )
                ),
            ),
            _matrix_type(
                "matrix.selector_dedupe",
                WakeSpec(input=pointer, dedupe_key=DedupeKey.selector(Selector.pointer("/dedupe"))),
            ),
            _matrix_type("matrix.const_dedupe", WakeSpec(input=pointer, dedupe_key=DedupeKey.const("constant-dedupe"))),
        )
    )

    def append(event_type: str, payload: Any) -> Any:
        return registry.append_event("proc-wake-matrix", request(event_type, payload, target=S("root")))

    first = append("matrix.when_false", {})
    assert first.event.sequence == 1 and first.wake_delivery is None and first.event.semantics.wake is None
    payload_wake = append("matrix.payload", "payload wake").wake_delivery
    assert payload_wake is not None
    assert (payload_wake.input, payload_wake.dedupe_key) == ("payload wake", "proc-wake-matrix:2")
    const_wake = append("matrix.const_input", {}).wake_delivery
    assert const_wake is not None and const_wake.input == "constant wake input"
    template_wake = append("matrix.template", {"line": "done", "n": 7}).wake_delivery
    assert template_wake is not None and template_wake.input == "line done #7"
    one = append("matrix.selector_dedupe", {"wake_input": "selector one", "dedupe": "group-a"}).wake_delivery
    two = append("matrix.selector_dedupe", {"wake_input": "selector two", "dedupe": "group-a"}).wake_delivery
    assert one is not None and two is not None
    assert one.dedupe_key == two.dedupe_key == "group-a" and one.wake_id == two.wake_id
    assert one.wake_id == wake_id("session:root", "group-a")
    three = append("matrix.const_dedupe", {"wake_input": "const one"}).wake_delivery
    four = append("matrix.const_dedupe", {"wake_input": "const two"}).wake_delivery
    assert three is not None and four is not None
    assert three.dedupe_key == four.dedupe_key == "constant-dedupe" and three.wake_id == four.wake_id
    assert sequences(registry.wake_events_after("proc-wake-matrix", 0)) == [2, 3, 4, 5, 6, 7, 8]


def test_p8_keyed_wake_events_are_idempotent_and_conflicts_rejected(registry: Registry) -> None:
    registry.register_process(reg("proc-wake", wake_type("process.wake")))
    payload = {"message": "deploy failed", "wake_input": "Process wake: deploy failed"}
    req = request("process.wake", payload, key="wake:deploy failed", target=S("session"))
    first = registry.append_event("proc-wake", req)
    second = registry.append_event("proc-wake", req)
    assert first.event.sequence == second.event.sequence
    assert first.wake_delivery == second.wake_delivery
    assert first.wake_delivery is not None
    assert first.wake_delivery.input == "Process wake: deploy failed"
    assert first.wake_delivery.target_scope_id == "session:session"
    assert (first.wake_delivery.process_id, first.wake_delivery.sequence) == ("proc-wake", first.event.sequence)
    other = request("process.wake", {**payload, "message": "other"}, key="wake:deploy failed", target=S("session"))
    with pytest.raises(EventReplayConflict) as raised:
        registry.append_event("proc-wake", other)
    assert raised.value.replay_key == "wake:deploy failed"
    assert len(registry.events_after("proc-wake", 0)) == 1


def test_p9_wake_event_without_target_fails_atomically(registry: Registry) -> None:
    registry.register_process(reg("proc-missing-wake-target", wake_type("process.wake")))
    with pytest.raises(MissingWakeTarget, match="without a wake target scope"):
        registry.append_event(
            "proc-missing-wake-target", request("process.wake", {"wake_input": "x"}, key="wake:missing-target")
        )
    assert registry.events_after("proc-missing-wake-target", 0) == []


def test_p10_terminal_and_cancel_events_require_keys(registry: Registry) -> None:
    registry.register_process(reg("proc-terminal"))
    with pytest.raises(ReplayKeyRequired, match="requires a deterministic replay key"):
        registry.append_event("proc-terminal", request(CANCEL_REQUESTED, {"reason": "stop"}))
    registry.append_event("proc-terminal", ProcessEventAppendRequest.cancel_requested("proc-terminal", "stop"))
    with pytest.raises(ReplayKeyRequired):
        registry.append_event("proc-terminal", request("process.completed", {"await_output": None}))
    record = registry.complete_process("proc-terminal", ProcessAwaitOutput.cancelled("stopped"))
    assert record.status.state == "cancelled"
    assert record.status.await_output == ProcessAwaitOutput.cancelled("stopped")


def test_p11_await_reads_the_materialised_terminal_output(registry: Registry) -> None:
    registry.register_process(reg("proc-2"))
    record = registry.complete_process("proc-2", ProcessAwaitOutput.success({"ok": True}))
    assert registry.await_process("proc-2", timeout_ms=0) == ProcessAwaitOutput.success({"ok": True})
    assert record.status.is_terminal and record.status.state == "completed"


def test_p12_transfer_moves_addressability_only(registry: Registry) -> None:
    registry.register_process(reg("proc-3"))
    registry.grant_handle(S("s1"), "proc-3", ProcessHandleDescriptor(kind="tool", label="demo"))
    registry.transfer_handle_grants(S("s1"), S("s2"), ["proc-3"])
    assert registry.list_handle_grants(S("s1")) == []
    moved = registry.list_handle_grants(S("s2"))
    assert len(moved) == 1 and moved[0].grant.session_id == "s2"
    assert moved[0].grant.descriptor == ProcessHandleDescriptor(kind="tool", label="demo")
    assert registry.events_after("proc-3", 0) == []


def test_p13_multiple_sessions_hold_grants(registry: Registry) -> None:
    registry.register_process(reg("proc-5"))
    registry.grant_handle(S("s1"), "proc-5", ProcessHandleDescriptor(kind="tool", label="demo"))
    registry.grant_handle(S("s2"), "proc-5", ProcessHandleDescriptor(kind="worker", label="demo"))
    assert grant_sessions(registry, "proc-5") == ["s1", "s2"]
    registry.transfer_handle_grants(S("s1"), S("s3"), ["proc-5"])
    assert grant_sessions(registry, "proc-5") == ["s2", "s3"]
    assert registry.events_after("proc-5", 0) == []


def test_p14_zero_grants_is_valid(registry: Registry) -> None:
    registry.register_process(reg("proc-4"))
    assert registry.list_handle_grants(S("s1")) == []
    assert registry.handle_grants_for_process("proc-4") == []


def test_p15_session_deletion_revokes_and_classifies(registry: Registry) -> None:
    """Fix of §7 item 9: the unshared process also gets its cancel request, in the same transaction."""
    for process_id in ("sole", "shared", "terminal"):
        registry.register_process(reg(process_id, wake_type("producer.wake")))
        registry.grant_handle(S("deleted"), process_id)
    registry.grant_handle(S("remaining"), "shared")
    registry.complete_process("terminal", ProcessAwaitOutput.success(None))
    registry.append_event("sole", request("producer.wake", {"wake_input": "w"}, target=S("deleted")))
    report = registry.delete_session_process_state("deleted")
    assert report.session_id == "deleted"
    assert (report.revoked_handle_count, report.deleted_wake_count) == (3, 0)
    assert report.cancel_process_ids == ["sole"]
    assert report.preserved_process_ids == ["shared"]
    assert registry.list_handle_grants(S("deleted")) == []
    assert len(registry.list_handle_grants(S("remaining"))) == 1
    sole = registry.events_after("sole", 0)
    assert [e.event_type for e in sole] == ["producer.wake", CANCEL_REQUESTED]
    assert sole[-1].payload == {"reason": "session deleted"}
    assert [e.event_type for e in registry.events_after("shared", 0)] == []
    assert [e.event_type for e in registry.events_after("terminal", 0)] == ["process.completed"]
    again = registry.delete_session_process_state("deleted")
    assert (again.revoked_handle_count, again.cancel_process_ids, again.preserved_process_ids) == (0, [], [])


def test_p15_agent_frame_scopes_belong_to_their_session(registry: Registry) -> None:
    registry.register_process(reg("framed"))
    registry.grant_handle(S("deleted", "frame-1"), "framed")
    registry.grant_handle(S("deleted"), "framed")
    report = registry.delete_session_process_state("deleted", reason="gone")
    assert report.revoked_handle_count == 2 and report.cancel_process_ids == ["framed"]
    assert registry.events_after("framed", 0)[-1].payload == {"reason": "gone"}


def test_p16_recovery_worklist_excludes_terminal(registry: Registry) -> None:
    registry.register_process(reg("proc-live"))
    registry.register_process(reg("proc-done"))
    registry.complete_process("proc-done", ProcessAwaitOutput.success(None))
    assert [record.id for record in registry.list_non_terminal()] == ["proc-live"]


def test_p17_live_vs_all_grants(registry: Registry) -> None:
    for process_id in ("proc-live-grant", "proc-done-grant"):
        registry.register_process(reg(process_id))
        registry.grant_handle(S("history-owner"), process_id)
    registry.complete_process("proc-done-grant", ProcessAwaitOutput.success(None))
    live = registry.list_live_handle_grants(S("history-owner"))
    every = registry.list_handle_grants(S("history-owner"))
    assert [entry.record.id for entry in live] == ["proc-live-grant"]
    assert [entry.record.id for entry in every] == ["proc-done-grant", "proc-live-grant"]
    assert every[0].record.status.is_terminal and every[0].grant.session_id == "history-owner"


# ===========================================================================
# P-18 ... P-22: leases


def test_p18_live_lease_fences_another_owner_same_owner_may_reclaim(registry: Registry) -> None:
    registry.register_process(reg("proc-lease"))
    first = lease_of(registry, "proc-lease", "owner-a")
    with pytest.raises(ProcessAlreadyLeased, match="already leased"):
        lease_of(registry, "proc-lease", "owner-b")
    again = lease_of(registry, "proc-lease", "owner-a")
    assert again.owner_id == "owner-a"
    # Fix of §7 item 5: the re-claim extends the live lease instead of rotating its token.
    assert (again.lease_token, again.fencing_token) == (first.lease_token, first.fencing_token)


def test_p19_superseded_lease_cannot_renew(registry: Registry) -> None:
    registry.register_process(reg("proc-lease"))
    old = lease_of(registry, "proc-lease", "owner-a", ttl=0)
    newer = lease_of(registry, "proc-lease", "owner-b")
    assert newer.fencing_token > old.fencing_token
    with pytest.raises(LeaseLost, match="missing or expired"):
        registry.renew_process_lease(old, TTL)


def test_p20_renewal_extends_past_the_original_ttl(registry: Registry, registry_clock: ManualClock) -> None:
    registry.register_process(reg("proc-lease"))
    lease = lease_of(registry, "proc-lease", "owner-a", ttl=20)
    renewed = registry.renew_process_lease(lease, TTL)
    assert renewed.expires_at_epoch_ms == registry_clock() + TTL
    registry_clock.advance(30)
    again = registry.renew_process_lease(renewed, TTL)
    assert again.lease_token == lease.lease_token and again.expires_at_epoch_ms == registry_clock() + TTL


def test_p21_release_then_reclaim_bumps_fencing(registry: Registry) -> None:
    registry.register_process(reg("proc-lease"))
    first = lease_of(registry, "proc-lease", "owner-a")
    registry.complete_process_lease(first.completion())
    assert registry.get_process_lease("proc-lease") is None
    second = lease_of(registry, "proc-lease", "owner-b")
    assert second.fencing_token > first.fencing_token


def test_p22_stale_completion_cannot_release_a_live_lease(registry: Registry) -> None:
    registry.register_process(reg("proc-lease"))
    old = lease_of(registry, "proc-lease", "owner-a", ttl=0)
    current = lease_of(registry, "proc-lease", "owner-b")
    registry.complete_process_lease(old.completion())
    with pytest.raises(ProcessAlreadyLeased):
        lease_of(registry, "proc-lease", "owner-c")
    assert registry.renew_process_lease(current, TTL).lease_token == current.lease_token


# ===========================================================================
# P-23 ... P-25: reopen, persisted state, projection repair


def test_p23_reopen(registries: Registries) -> None:
    first = registries.open()
    first.register_process(reg("proc-reopen", wake_type("producer.reopen_wake")))
    first.grant_handle(S("reopen-session"), "proc-reopen")
    req = request(
        "producer.reopen_wake", {"wake_input": "survived reopen"}, key="producer:reopen", target=S("reopen-session")
    )
    appended = first.append_event("proc-reopen", req)
    second = registries.reopen(first)
    record = second.get_process("proc-reopen")
    assert record is not None and record.id == "proc-reopen"
    assert sequences(second.events_after("proc-reopen", 0)) == [appended.event.sequence]
    assert len(second.list_handle_grants(S("reopen-session"))) == 1
    assert second.append_event("proc-reopen", req).event == appended.event


def test_p24_persisted_terminal_state_after_reopen(registries: Registries) -> None:
    first = registries.open()
    first.register_process(reg("proc-persist", owner="session", host="test-host"))
    first.grant_handle(S("session"), "proc-persist", ProcessHandleDescriptor(kind="tool", label="demo"))
    first.complete_process("proc-persist", ProcessAwaitOutput.success({"ok": True}))
    second = registries.reopen(first)
    record = second.get_process("proc-persist")
    assert record is not None and record.owner_scope_id == "session:session"
    assert record.provenance.host_profile_id == "test-host"
    assert second.await_process("proc-persist", timeout_ms=0) == ProcessAwaitOutput.success({"ok": True})
    assert len(second.list_handle_grants(S("session"))) == 1


def test_p25_replayed_terminal_event_repairs_a_stale_projection(
    registries: Registries, registry: Registry, registry_clock: ManualClock
) -> None:
    registry.register_process(reg("proc-repair"))
    registry_clock.set(42)
    req = request(
        "process.completed", {"await_output": {"type": "success", "value": "done"}}, key="process-repair-terminal"
    )
    first = registry.append_event("proc-repair", req)
    assert (first.event.sequence, first.event.occurred_at_ms) == (1, 42)
    registries.harness.restore_running(registry, "proc-repair")
    stale = registry.get_process("proc-repair")
    assert stale is not None and stale.status.state == "running"
    registry_clock.set(1_000)
    replayed = registry.append_event("proc-repair", req)
    assert (replayed.event.sequence, replayed.event.occurred_at_ms) == (1, 42)
    assert sequences(registry.events_after("proc-repair", 0)) == [1]
    repaired = registry.get_process("proc-repair")
    assert repaired is not None and repaired.status.state == "completed"
    assert repaired.status.await_output == ProcessAwaitOutput.success("done")


# ===========================================================================
# P-26 ... P-34: selectors, validation, errors


def test_p26_selector_unit_behaviour() -> None:
    payload = {"line": "done", "wake_input": "wake me"}
    assert select(Selector.payload(), payload) == payload
    assert select(Selector.pointer("/line"), payload) == "done"
    assert select(Selector.const({"ok": True}), payload) == {"ok": True}
    assert select(Selector.template("event: {line}", {"line": Selector.pointer("/line")}), payload) == "event: done"
    assert select(Selector.present("/wake_input"), payload) is True
    assert select(Selector.present("/nope"), payload) is False
    with pytest.raises(SelectorMismatch, match="did not match"):
        select(Selector.pointer("/nope"), payload)


def test_p27_undeclared_type(registry: Registry) -> None:
    registry.register_process(reg("proc-undeclared"))
    with pytest.raises(UndeclaredEventType, match="undeclared event type"):
        registry.append_event("proc-undeclared", request("nope", {}))
    assert registry.events_after("proc-undeclared", 0) == []


def test_p28_terminal_idempotency_and_exclusivity(registry: Registry) -> None:
    registry.register_process(reg("proc-once"))
    first = registry.complete_process("proc-once", ProcessAwaitOutput.success(1))
    assert registry.complete_process("proc-once", ProcessAwaitOutput.success(1)) == first
    assert len(registry.events_after("proc-once", 0)) == 1
    with pytest.raises(ProcessAlreadyTerminal, match="already terminal"):
        registry.complete_process("proc-once", ProcessAwaitOutput.failure("c", "code", "boom"))
    with pytest.raises(EventReplayConflict):
        registry.complete_process("proc-once", ProcessAwaitOutput.success(2))
    assert len(registry.events_after("proc-once", 0)) == 1


def test_p29_cancel_helper_idempotency(registry: Registry) -> None:
    registry.register_process(reg("proc-cancel"))
    cancel = ProcessEventAppendRequest.cancel_requested
    registry.append_event("proc-cancel", cancel("proc-cancel", "a"))
    registry.append_event("proc-cancel", cancel("proc-cancel", "a"))
    assert len(registry.events_after("proc-cancel", 0)) == 1
    registry.append_event("proc-cancel", cancel("proc-cancel", "b"))
    assert len(registry.events_after("proc-cancel", 0)) == 2
    registry.complete_process("proc-cancel", ProcessAwaitOutput.success(None))
    registry.append_event("proc-cancel", cancel("proc-cancel", "after"))  # non-terminal events stay accepted
    assert len(registry.events_after("proc-cancel", 0)) == 4


def _failed_type_without_selector() -> ProcessEventType:
    return ProcessEventType(name="job.failed", semantics=ProcessEventSemantics(terminal=TerminalSpec(state="failed")))


def bare(process_id: str, *types: ProcessEventType, owner: str = "root", host: str = "default") -> ProcessRegistration:
    """A registration declaring only ``types`` (the core types are added by the registry)."""
    provenance = ProcessProvenance(owner_scope=S(owner), host_profile_id=host)
    return ProcessRegistration(id=process_id, input=EXTERNAL, event_types=list(types), provenance=provenance)


BAD_REGISTRATIONS: list[tuple[str, ProcessRegistration]] = [
    ("registration.id", bare("   ")),
    ("registration.id", bare("")),
    ("registration.provenance.owner_scope.session_id", bare("p", owner="")),
    ("registration.provenance.host_profile_id", bare("p", host="  ")),
    ("registration.event_types[1].name", bare("p", plain("dup"), plain("dup"))),
    ("registration.event_types[0].name", bare("p", plain(" "))),
    ("registration.event_types[0].semantics.terminal.await_output", bare("p", _failed_type_without_selector())),
    (
        "registration.event_types[0].semantics.terminal.await_output",
        bare(
            "p", ProcessEventType(name="x", semantics=ProcessEventSemantics(terminal=TerminalSpec(state="cancelled")))
        ),
    ),
    (
        "registration.event_types[0].payload_schema",
        bare("p", ProcessEventType(name="x", payload_schema={"type": "object", "patternProperties": {}})),
    ),
    (
        "registration.event_types[0].semantics.wake.input.path",
        bare("p", _matrix_type("x", WakeSpec(input=Selector.pointer("no-slash")))),
    ),
    ("registration.input.bad", ProcessRegistration(id="p", input={"bad": float("nan")})),
]


@pytest.mark.parametrize(("field", "bad"), BAD_REGISTRATIONS, ids=[f for f, _ in BAD_REGISTRATIONS])
def test_p30_registration_validation(registry: Registry, field: str, bad: ProcessRegistration) -> None:
    before = registry.raw_rows()
    with pytest.raises(InvalidProcessInput) as raised:
        registry.register_process(bad)
    assert raised.value.what == field
    assert isinstance(raised.value, ValueError) and isinstance(raised.value, ProcessRegistryError)
    assert registry.raw_rows() == before
    assert registry.list_processes() == []


def _bad_input_process(registry: Registry) -> ProcessLease:
    """A running process with a payload schema, a failed terminal type and a wake type with pointers; a lease."""
    failed = ProcessEventType(
        name="job.failed", semantics=ProcessEventSemantics(terminal=TerminalSpec.failed(Selector.pointer("/err")))
    )
    woken = ProcessEventType(
        name="job.note", semantics=ProcessEventSemantics(wake=WakeSpec(input=Selector.pointer("/msg")))
    )
    registry.register_process(reg("proc-bad", _line_type(), failed, woken))
    registry.grant_handle(S("holder"), "proc-bad")
    return lease_of(registry, "proc-bad", "worker")


BAD_CALLS: list[tuple[str, str, type[InvalidProcessInput], Callable[[Registry, ProcessLease], Any]]] = [
    ("blank id: append", "process_id", InvalidProcessInput, lambda r, _: r.append_event("  ", request("x", {}))),
    (
        "blank id: complete",
        "process_id",
        InvalidProcessInput,
        lambda r, _: r.complete_process("", ProcessAwaitOutput.success(None)),
    ),
    ("blank id: claim", "process_id", InvalidProcessInput, lambda r, _: r.claim_process_lease(" ", "w", TTL)),
    ("blank owner: claim", "owner_id", InvalidProcessInput, lambda r, _: r.claim_process_lease("proc-bad", "\t", TTL)),
    ("blank id: grant", "owner_scope.session_id", InvalidProcessInput, lambda r, _: r.grant_handle(S(" "), "proc-bad")),
    (
        "blank id: transfer",
        "to_scope.session_id",
        InvalidProcessInput,
        lambda r, _: r.transfer_handle_grants(S("holder"), S(""), ["proc-bad"]),
    ),
    (
        "blank id: delete",
        "session_id",
        InvalidProcessInput,
        lambda r, _: r.delete_session_process_state(" ", reason="x"),
    ),
    (
        "blank external ref",
        "external_ref.id",
        InvalidProcessInput,
        lambda r, _: r.set_external_ref("proc-bad", ProcessExternalRef(backend="b", id=" ")),
    ),
    (
        "payload breaks the schema",
        "request.payload",
        InvalidEventPayload,
        lambda r, _: r.append_event("proc-bad", request("producer.line", {"line": 7})),
    ),
    (
        "payload breaks the schema (fenced)",
        "request.payload",
        InvalidEventPayload,
        lambda r, lease: r.append_event("proc-bad", request("producer.line", {}), lease=lease),
    ),
    (
        "terminal pointer does not resolve",
        "request.payload",
        SelectorMismatch,
        lambda r, _: r.append_event("proc-bad", request("job.failed", {"error": "x"}, key="f")),
    ),
    (
        "wake pointer does not resolve",
        "request.payload",
        SelectorMismatch,
        lambda r, _: r.append_event("proc-bad", request("job.note", {"text": "x"}, target=S("holder"))),
    ),
    (
        "negative ttl: claim",
        "lease_ttl_ms",
        InvalidProcessInput,
        lambda r, _: r.claim_process_lease("proc-bad", "w", -1),
    ),
    (
        "oversized ttl: claim",
        "lease_ttl_ms",
        InvalidProcessInput,
        lambda r, _: r.claim_process_lease("proc-bad", "worker", 2**63),
    ),
    (
        "fractional ttl: claim",
        "lease_ttl_ms",
        InvalidProcessInput,
        lambda r, _: r.claim_process_lease("proc-bad", "worker", 1.5),  # type: ignore[arg-type]
    ),
    ("negative ttl: renew", "lease_ttl_ms", InvalidProcessInput, lambda r, lease: r.renew_process_lease(lease, -5)),
    (
        "oversized ttl: renew",
        "lease_ttl_ms",
        InvalidProcessInput,
        lambda r, lease: r.renew_process_lease(lease, 2**64),
    ),
    ("negative horizon: prune", "older_than_epoch_ms", InvalidProcessInput, lambda r, _: r.prune_processes(-1)),
]


@pytest.mark.parametrize(("field", "error", "call"), [c[1:] for c in BAD_CALLS], ids=[c[0] for c in BAD_CALLS])
def test_bad_input_gets_a_typed_error_naming_the_field_and_writes_nothing(
    registry: Registry, field: str, error: type[InvalidProcessInput], call: Callable[[Registry, ProcessLease], Any]
) -> None:
    lease = _bad_input_process(registry)
    before = registry.raw_rows()
    with pytest.raises(error) as raised:
        call(registry, lease)
    assert raised.value.what == field
    assert registry.raw_rows() == before
    assert registry.renew_process_lease(lease, TTL).fencing_token == lease.fencing_token  # the lease is intact


def test_p31_terminal_wrapping(registry: Registry) -> None:
    failed = ProcessEventType(
        name="job.failed",
        semantics=ProcessEventSemantics(terminal=TerminalSpec.failed(Selector.pointer("/err"))),
    )
    registry.register_process(reg("proc-wrap", failed))
    registry.append_event("proc-wrap", request("job.failed", {"err": "boom"}, key="job:failed"))
    record = registry.get_process("proc-wrap")
    assert record is not None and record.status.state == "failed"
    assert record.status.await_output == ProcessAwaitOutput.failure("execution", "process_failed", "boom", raw="boom")


@pytest.mark.parametrize(
    ("value", "wakes"),
    [(0, True), ("", False), ([], False), ({}, False), (None, False), (False, False), (1.5, True), ("x", True)],
)
def test_p32_truthiness(registry: Registry, value: Any, wakes: bool) -> None:
    truthy = ProcessEventType(
        name="t.when",
        semantics=ProcessEventSemantics(wake=WakeSpec(when=Selector.pointer("/w"), input=Selector.const("in"))),
    )
    registry.register_process(reg("proc-truth", truthy))
    result = registry.append_event("proc-truth", request("t.when", {"w": value}, target=S("root")))
    assert (result.wake_delivery is not None) is wakes


UNKNOWN_PROCESS_CALLS: list[tuple[str, Callable[[Registry], Any]]] = [
    ("events_after", lambda r: r.events_after("ghost", 0)),
    ("wake_events_after", lambda r: r.wake_events_after("ghost", 0)),
    ("ack_wake", lambda r: r.ack_wake("ghost", 1)),
    ("handle_grants_for_process", lambda r: r.handle_grants_for_process("ghost")),
    ("set_external_ref", lambda r: r.set_external_ref("ghost", ProcessExternalRef(backend="b", id="i"))),
    ("grant_handle", lambda r: r.grant_handle(S("s"), "ghost")),
    ("append_event", lambda r: r.append_event("ghost", request("process.cancel_requested", {}, key="k"))),
    ("await_process", lambda r: r.await_process("ghost", timeout_ms=0)),
    ("wait_event_after", lambda r: r.wait_event_after("ghost", "x", 0, timeout_ms=0)),
    ("complete_process", lambda r: r.complete_process("ghost", ProcessAwaitOutput.success(None))),
    ("claim_process_lease", lambda r: r.claim_process_lease("ghost", "owner", TTL)),
]


@pytest.mark.parametrize("call", [c for _, c in UNKNOWN_PROCESS_CALLS], ids=[n for n, _ in UNKNOWN_PROCESS_CALLS])
def test_p33_unknown_process_errors(registry: Registry, call: Callable[[Registry], Any]) -> None:
    with pytest.raises(UnknownProcess):
        call(registry)


def test_p33_unknown_process_lookups_that_succeed(registry: Registry) -> None:
    assert registry.get_process("ghost") is None
    registry.revoke_handle(S("s"), "ghost")
    registry.complete_process_lease(
        ProcessLease(
            process_id="ghost",
            owner_id="o",
            lease_token="t",
            fencing_token=1,
            claimed_at_epoch_ms=0,
            expires_at_epoch_ms=1,
        ).completion()
    )
    assert registry.get_process_lease("ghost") is None


def test_p34_atomic_transfer(registry: Registry) -> None:
    registry.register_process(reg("p1"))
    registry.register_process(reg("p2"))
    registry.grant_handle(S("s1"), "p1")
    with pytest.raises(HandleNotGranted, match="is not granted to session"):
        registry.transfer_handle_grants(S("s1"), S("s2"), ["p1", "p2"])
    assert [entry.record.id for entry in registry.list_handle_grants(S("s1"))] == ["p1"]
    assert registry.list_handle_grants(S("s2")) == []


# ===========================================================================
# P-35, P-36: several handles


def test_p35_concurrent_appends_are_dense(registries: Registries) -> None:
    first = registries.open()
    second = registries.reopen(first)
    first.register_process(reg("proc-dense", plain("tick")))
    start = threading.Barrier(2)

    def append_from(handle: Registry, name: str) -> None:
        start.wait(10)
        for index in range(50):
            handle.append_event("proc-dense", request("tick", {"by": name, "i": index}))

    joins = [in_thread(functools.partial(append_from, h, n)) for h, n in ((first, "a"), (second, "b"))]
    for join in joins:
        join(60.0)
    events = first.events_after("proc-dense", 0)
    assert sequences(events) == list(range(1, 101))
    assert sorted((e.payload["by"], e.payload["i"]) for e in events) == sorted(
        (name, index) for name in "ab" for index in range(50)
    )


def test_p35_concurrent_claims_have_one_winner(registries: Registries) -> None:
    first = registries.open()
    second = registries.reopen(first)
    first.register_process(reg("proc-race"))
    start = threading.Barrier(2)

    def claim(handle: Registry, owner: str) -> str:
        start.wait(10)
        try:
            handle.claim_process_lease("proc-race", owner, TTL)
            return "won"
        except ProcessAlreadyLeased:
            return "lost"

    joins = [in_thread(functools.partial(claim, h, o)) for h, o in ((first, "owner-a"), (second, "owner-b"))]
    assert sorted(join(30.0) for join in joins) == ["lost", "won"]


def test_p36_cross_handle_wake_up(registries: Registries) -> None:
    waiter = registries.open()
    writer = registries.reopen(waiter)
    waiter.register_process(reg("proc-wake-up"))
    join = in_thread(lambda: waiter.await_process("proc-wake-up", timeout_ms=10_000))
    time.sleep(0.05)
    started = time.monotonic()
    writer.complete_process("proc-wake-up", ProcessAwaitOutput.success("woken"))
    assert join(5.0) == ProcessAwaitOutput.success("woken")
    assert time.monotonic() - started < 2.0


# ===========================================================================
# The fixes of §7 and the other decisions


def test_fix_renew_checks_owner_token_and_fence(registry: Registry) -> None:
    registry.register_process(reg("proc-renew"))
    lease = lease_of(registry, "proc-renew", "owner-a")
    for forged in (
        ProcessLease(**{**_fields(lease), "owner_id": "owner-b"}),
        ProcessLease(**{**_fields(lease), "fencing_token": lease.fencing_token + 1}),
        ProcessLease(**{**_fields(lease), "lease_token": "f" * 64}),
    ):
        with pytest.raises(LeaseLost, match="missing or expired"):
            registry.renew_process_lease(forged, TTL)
    assert registry.renew_process_lease(lease, TTL).lease_token == lease.lease_token


def _fields(lease: ProcessLease) -> dict[str, Any]:
    return {name: getattr(lease, name) for name in lease.__struct_fields__}


def test_fix_an_expired_lease_cannot_renew_even_unclaimed(registry: Registry, registry_clock: ManualClock) -> None:
    registry.register_process(reg("proc-expiry"))
    lease = lease_of(registry, "proc-expiry", "owner-a", ttl=100)
    registry_clock.advance(100)  # expiry is exclusive: at the instant itself the lease is gone
    with pytest.raises(LeaseLost):
        registry.renew_process_lease(lease, TTL)


def test_fix_claims_on_terminal_processes_are_refused(registry: Registry) -> None:
    registry.register_process(reg("proc-finished"))
    registry.complete_process("proc-finished", ProcessAwaitOutput.success(None))
    with pytest.raises(ProcessAlreadyTerminal):
        registry.claim_process_lease("proc-finished", "owner-a", TTL)
    assert registry.get_process_lease("proc-finished") is None


def test_fix_fenced_writes_succeed_with_the_live_lease(registry: Registry) -> None:
    registry.register_process(reg("proc-fenced", plain("progress")))
    lease = lease_of(registry, "proc-fenced", "worker-1")
    registry.append_event("proc-fenced", request("progress", {"pct": 50}), lease=lease)
    record = registry.complete_process("proc-fenced", ProcessAwaitOutput.success("ok"), lease=lease)
    assert record.status.state == "completed"
    registry.complete_process_lease(lease.completion())


def test_fix_a_stale_holders_fenced_terminal_write_is_rejected_and_writes_nothing(
    registry: Registry, registry_clock: ManualClock
) -> None:
    registry.register_process(reg("proc-stale", plain("progress")))
    stale = lease_of(registry, "proc-stale", "worker-1", ttl=1_000)
    registry.append_event("proc-stale", request("progress", {"by": "worker-1"}), lease=stale)
    registry_clock.advance(1_000)  # worker-1 stalls past its lease
    before_takeover = registry.raw_rows()
    with pytest.raises(LeaseLost):  # expired, not yet taken over
        registry.complete_process("proc-stale", ProcessAwaitOutput.success("late"), lease=stale)
    assert registry.raw_rows() == before_takeover
    current = lease_of(registry, "proc-stale", "worker-2")
    assert current.fencing_token == stale.fencing_token + 1
    before = registry.raw_rows()
    for write in (
        lambda: registry.complete_process("proc-stale", ProcessAwaitOutput.success("late"), lease=stale),
        lambda: registry.append_event("proc-stale", request("progress", {"by": "worker-1"}), lease=stale),
        lambda: registry.append_event(
            "proc-stale", ProcessEventAppendRequest.cancel_requested("proc-stale", "x"), lease=stale
        ),
    ):
        with pytest.raises(LeaseLost, match="missing or expired"):
            write()
        assert registry.raw_rows() == before
    record = registry.complete_process("proc-stale", ProcessAwaitOutput.success("on time"), lease=current)
    assert record.status.await_output == ProcessAwaitOutput.success("on time")


def test_fix_a_lease_of_another_process_is_refused(registry: Registry) -> None:
    registry.register_process(reg("proc-a"))
    registry.register_process(reg("proc-b"))
    lease = lease_of(registry, "proc-a", "worker")
    with pytest.raises(InvalidProcessInput) as raised:
        registry.complete_process("proc-b", ProcessAwaitOutput.success(None), lease=lease)
    assert raised.value.what == "lease.process_id"


def test_fix_acks_name_wake_events_only(registry: Registry) -> None:
    registry.register_process(reg("proc-ack", plain("line")))
    registry.append_event("proc-ack", request("line", {}))
    for sequence in (1, 2):
        with pytest.raises(NotAWakeEvent):
            registry.ack_wake("proc-ack", sequence)


def test_fix_get_process_raises_for_backend_failures_not_none(registry: Registry) -> None:
    registry.close()
    with pytest.raises(StoreError):
        registry.get_process("anything")
    registry.close()  # twice is harmless


def test_waits_time_out_with_a_typed_error(registry: Registry) -> None:
    registry.register_process(reg("proc-slow", plain("never")))
    started = time.monotonic()
    with pytest.raises(WaitTimeout) as raised:
        registry.await_process("proc-slow", timeout_ms=50)
    assert isinstance(raised.value, TimeoutError) and isinstance(raised.value, StoreError)
    with pytest.raises(WaitTimeout):
        registry.wait_event_after("proc-slow", "never", 0, timeout_ms=50)
    assert time.monotonic() - started < 5.0


def test_waits_notice_a_terminal_process_and_events_of_other_types(registry: Registry) -> None:
    registry.register_process(reg("proc-mixed", plain("a"), plain("b")))
    join = in_thread(lambda: registry.wait_event_after("proc-mixed", "b", 0, timeout_ms=5_000))
    time.sleep(0.02)
    registry.append_event("proc-mixed", request("a", {}))
    registry.append_event("proc-mixed", request("a", {}))
    registry.append_event("proc-mixed", request("b", {"n": 3}))
    assert join(5.0).sequence == 3


def test_a_pruned_process_ends_its_waiters(registry: Registry, registry_clock: ManualClock) -> None:
    registry.register_process(reg("proc-prune-wait", plain("x")))
    registry.complete_process("proc-prune-wait", ProcessAwaitOutput.success(None))
    join = in_thread(lambda: registry.wait_event_after("proc-prune-wait", "x", 0, timeout_ms=5_000))
    time.sleep(0.02)
    registry.prune_processes(registry_clock())
    with pytest.raises(UnknownProcess):
        join(5.0)


def test_prune_removes_old_terminal_processes_and_everything_they_hold(
    registry: Registry, registry_clock: ManualClock
) -> None:
    registry.register_process(reg("old-done", wake_type("w")))
    registry.grant_handle(S("s"), "old-done")
    registry.append_event("old-done", request("w", {"wake_input": "x"}, target=S("s")))
    registry.ack_wake("old-done", 1)
    lease = lease_of(registry, "old-done", "worker")
    registry.complete_process("old-done", ProcessAwaitOutput.success(None), lease=lease)
    registry.register_process(reg("running"))
    registry_clock.advance(10_000)
    registry.register_process(reg("new-done"))
    registry.complete_process("new-done", ProcessAwaitOutput.success(None))
    horizon = registry_clock() - 5_000
    dry = registry.prune_processes(horizon, dry_run=True)
    assert (dry.process_ids, dry.event_count, dry.grant_count, dry.dry_run) == (["old-done"], 2, 1, True)
    assert registry.get_process("old-done") is not None
    report = registry.prune_processes(horizon)
    assert (report.process_ids, report.event_count, report.grant_count, report.dry_run) == (["old-done"], 2, 1, False)
    assert registry.get_process("old-done") is None
    assert [r.id for r in registry.list_processes()] == ["new-done", "running"]
    rows = registry.raw_rows()
    assert all("old-done" not in row for table in rows.values() for row in table)
    assert registry.prune_processes(horizon).process_ids == []
    registry.register_process(reg("old-done", wake_type("w")))  # the id can be used again
    assert registry.claim_process_lease("old-done", "w2", TTL).fencing_token == 1


def test_list_processes_pages_and_states(registry: Registry) -> None:
    for index in range(5):
        registry.register_process(reg(f"p{index}"))
    registry.complete_process("p1", ProcessAwaitOutput.failure("c", "x", "m"))
    registry.complete_process("p3", ProcessAwaitOutput.success(None))
    assert [r.id for r in registry.list_processes(limit=2)] == ["p0", "p1"]
    assert [r.id for r in registry.list_processes(after="p1", limit=2)] == ["p2", "p3"]
    assert [r.id for r in registry.list_processes(state="terminal")] == ["p1", "p3"]
    assert [r.id for r in registry.list_processes(state="failed")] == ["p1"]
    assert [r.id for r in registry.list_processes(state="running")] == ["p0", "p2", "p4"]
    with pytest.raises(InvalidProcessInput):
        registry.list_processes(state="sleeping")


def test_records_round_trip_their_registration_hash(registry: Registry) -> None:
    from lash_store.processes import registration_hash

    record = registry.register_process(reg("proc-hash", _line_type(), wake_type("w")))
    stored = registry.get_process("proc-hash")
    assert stored == record
    assert registration_hash(stored.registration) == record.registration_hash

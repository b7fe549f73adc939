"""The backend-agnostic conformance suite of the effect journal (reference (c) §c.9, SPEC §9).

Every effect-journal backend -- SQLite file and memory, PostgreSQL, the
pure-Python :class:`~lash_store.testing.effects_reference.ReferenceEffectHost`,
third-party ones -- must pass these tests.  They hold every scenario E-1 ...
E-15 of the reference (``test_e<N>_...``); where a fix of the reference's §7
changes an outcome the scenario tests the fixed behaviour and says so, and the
fixes have tests of their own (``test_fix_...``).  Bad input has tests proving
it is refused with a typed error and nothing is written (``test_bad_...``).

How a backend runs the suite -- in one of its test modules::

    import pytest

    pytest.register_assert_rewrite("lash_store.testing.effects_conformance")

    from lash_store.testing.effects_conformance import *  # noqa: E402, F403  (collects the suite)
    from lash_store.testing.effects_conformance import EffectsHarness  # noqa: E402


    class MyHarness(EffectsHarness):
        name = "my-backend"
        durable = True

        def open(self, replay_options):
            ...  # a fresh, empty host with these options

        def reopen(self, host):
            ...  # a NEW host on the same durable data (same options)

        def registry(self, host):
            ...  # a process registry for process commands (by default the in-memory reference)


    @pytest.fixture
    def effects_harness():
        return MyHarness()

The suite runs on real time (leases, sleeps and waits are real), with
generous margins for loaded machines.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from lash_store.api import ProcessRegistryAPI
from lash_store.effects import (
    EffectReplayOptions,
    EffectScope,
    ProcessCommand,
    ProcessStartGrant,
    RuntimeEffectCommand,
    RuntimeEffectEnvelope,
    RuntimeEffectLocalExecutor,
    RuntimeEffectOutcome,
    RuntimeScope,
)
from lash_store.errors import (
    EffectBusyTimeout,
    EffectJournalError,
    EffectLeaseLost,
    EffectReplayConflict,
    EffectReplayKeyMissing,
    EffectReplayMissing,
    InvalidEffectInput,
    InvalidInput,
    MissingEffectScopeId,
    RuntimeEffectControllerError,
)
from lash_store.model import DurabilityTier
from lash_store.processes import CANCEL_REQUESTED, ProcessRegistration, ProcessScope
from lash_store.service.effects.service import EffectHostService
from lash_store.testing.harness import Handles, Harness, in_thread
from lash_store.testing.registry_reference import ReferenceProcessRegistry

Host = EffectHostService
"""The host surface the suite exercises."""

TURN = EffectScope.turn("effect-session", "effect-turn")


# ===========================================================================
# What a backend provides


class EffectsHarness(Harness[Host]):
    """How the suite obtains hosts of one backend.  Subclass it and provide an ``effects_harness`` fixture.

    ``reopen`` returns a NEW host on the same durable data as ``host`` (same options), or ``None`` if not durable.
    """

    def open(self, replay_options: EffectReplayOptions | None) -> Host:
        """A fresh, empty host with ``replay_options``."""
        raise NotImplementedError(f"{type(self).__name__} must implement open(replay_options)")

    def registry(self, host: Host) -> ProcessRegistryAPI:
        """A process registry for process commands."""
        return ReferenceProcessRegistry()


class Hosts(Handles[Host]):
    """Per-test access to a harness: opens hosts and registries, closes them all at teardown."""

    harness: EffectsHarness

    def __init__(self, harness: EffectsHarness) -> None:
        super().__init__(harness)

    def open(self, **options: Any) -> Host:
        host: Host = self.track(self.harness.open(EffectReplayOptions(**options) if options else None))
        return host

    def registry(self, host: Host) -> ProcessRegistryAPI:
        registry: ProcessRegistryAPI = self.track(self.harness.registry(host))
        return registry


@pytest.fixture
def hosts(effects_harness: EffectsHarness) -> Iterator[Hosts]:
    access = Hosts(effects_harness)
    try:
        yield access
    finally:
        access.close_all()


@pytest.fixture
def host(hosts: Hosts) -> Host:
    """A fresh host with the default options."""
    return hosts.open()


# ===========================================================================
# Builders (the reference's conventions)


def runtime_scope(index: int = 1) -> RuntimeScope:
    return RuntimeScope(session_id="effect-session", turn_id="effect-turn", turn_index=index, protocol_iteration=0)


def exec_envelope(key: str, code: str, *, index: int = 1) -> RuntimeEffectEnvelope:
    """``exec(key, code)``: an exec_code effect whose effect id and replay key are ``key``."""
    return RuntimeEffectEnvelope.new(runtime_scope(index), key, key, RuntimeEffectCommand.exec_code(code))


def outcome(marker: str) -> RuntimeEffectOutcome:
    """``outcome(m)``: an exec outcome whose response finishes with ``m``."""
    return RuntimeEffectOutcome.exec_code({"terminal_finish": marker})


def marker(result: RuntimeEffectOutcome) -> str:
    assert result.type == "exec_code", result
    return str(result.value["terminal_finish"])


def returning(value: str, calls: list[str] | None = None) -> RuntimeEffectLocalExecutor:
    def run(envelope: RuntimeEffectEnvelope) -> RuntimeEffectOutcome:
        if calls is not None:
            calls.append(envelope.replay_key)
        return outcome(value)

    return RuntimeEffectLocalExecutor.runner(run)


class Failing:
    """An executor whose use means the test failed (it records the call and raises)."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.executor = RuntimeEffectLocalExecutor.runner(self._run)

    def _run(self, envelope: RuntimeEffectEnvelope) -> RuntimeEffectOutcome:
        self.calls.append(envelope.replay_key)
        raise RuntimeEffectControllerError("test_failing_executor", "the executor must not be called")


def rows(host: Host) -> list[Any]:
    return host.list_journal()


# ===========================================================================
# E-1 ... E-3: scopes


def test_e1_scope_metadata_preserved(host: Host) -> None:
    drain = EffectScope.queue_drain("session-1", "drain-1")
    scoped = host.scoped(drain)
    assert scoped.effect_scope == drain
    assert scoped.scope_id == "drain-1"
    assert scoped.turn_id is None
    turn = host.scoped(EffectScope.turn("session-1", "turn-1"))
    assert turn.scope_id == "turn-1"
    assert turn.turn_id == "turn-1"
    assert turn.controller is host


@pytest.mark.parametrize(
    "scope",
    [
        EffectScope.turn("", "turn"),
        EffectScope.turn("session", ""),
        EffectScope.turn("session", "   "),
        EffectScope.process(""),
        EffectScope.queue_drain("session", ""),
        EffectScope.queue_drain("", "drain"),
        EffectScope.session_delete(""),
        EffectScope.runtime_operation(""),
    ],
    ids=lambda scope: f"{scope.type}",
)
def test_e2_missing_scope_ids_rejected(host: Host, scope: EffectScope) -> None:
    with pytest.raises(MissingEffectScopeId) as caught:
        host.scoped(scope)
    assert caught.value.code == "missing_effect_scope_id"
    assert isinstance(caught.value, InvalidInput)
    assert rows(host) == []


def test_e3_static_scope(host: Host) -> None:
    scope = EffectScope.runtime_operation("static-runtime-op")
    scoped = host.scoped_static(scope)
    assert scoped is not None
    assert scoped.effect_scope == scope
    assert scoped.scope_id == "static-runtime-op"


# ===========================================================================
# E-4 ... E-8: execution, replay, conflicts, takeover, sleeps


def test_e4_concurrent_first_pass_then_order_independent_replay(host: Host) -> None:
    controller = host.scoped(EffectScope.turn("effect-conformance-session", "effect-conformance-turn"))

    def envelope(name: str) -> RuntimeEffectEnvelope:
        key = f"effect-conformance:effect-conformance-turn:effect-{name}"
        return RuntimeEffectEnvelope.new(
            runtime_scope(7), f"effect-{name}", key, RuntimeEffectCommand.exec_code(f"emit {name}")
        )

    barrier = threading.Barrier(2, timeout=20)
    fast_done = threading.Event()
    order: list[str] = []

    def body(name: str) -> RuntimeEffectLocalExecutor:
        def run(env: RuntimeEffectEnvelope) -> RuntimeEffectOutcome:
            barrier.wait()  # both executors are inside their bodies at the same time
            if name == "slow":
                assert fast_done.wait(20)
            order.append(name)
            if name == "fast":
                fast_done.set()
            return outcome(name)

        return RuntimeEffectLocalExecutor.runner(run)

    slow = in_thread(lambda: controller.execute_effect(envelope("slow"), body("slow")))
    fast = in_thread(lambda: controller.execute_effect(envelope("fast"), body("fast")))
    assert marker(fast(30)) == "fast"
    assert marker(slow(30)) == "slow"
    assert order == ["fast", "slow"]

    controller.start_replay()
    failing = Failing()
    replay_fast = in_thread(lambda: controller.execute_effect(envelope("fast"), failing.executor))
    replay_slow = in_thread(lambda: controller.execute_effect(envelope("slow"), failing.executor))
    assert marker(replay_fast(10)) == "fast"
    assert marker(replay_slow(10)) == "slow"
    assert failing.calls == []


def test_e5_replay_without_executor(host: Host) -> None:
    controller = host.scoped(TURN)
    assert marker(controller.execute_effect(exec_envelope("exec-replay", "first"), returning("recorded"))) == "recorded"
    controller.start_replay()
    failing = Failing()
    assert marker(controller.execute_effect(exec_envelope("exec-replay", "first"), failing.executor)) == "recorded"
    assert failing.calls == []


def test_e6_envelope_hash_conflict(host: Host) -> None:
    controller = host.scoped(TURN)
    controller.execute_effect(exec_envelope("same-key", "first"), returning("first"))
    before = rows(host)
    with pytest.raises(EffectReplayConflict) as caught:
        controller.execute_effect(exec_envelope("same-key", "changed"), Failing().executor)
    assert caught.value.code == "sqlite_effect_replay_hash_conflict"
    assert rows(host) == before  # the row is untouched


def test_e7_stale_in_progress_lease_is_reclaimed_and_the_stale_owner_loses(hosts: Hosts) -> None:
    """Adapted (§7 item 16): a live runner's heartbeat keeps its lease, so the stale owner is modelled as a
    runner whose heartbeat stopped (a frozen process): heartbeats are off for this host."""
    host = hosts.open(lease_ttl_ms=20, heartbeat_interval_ms=0)
    controller = host.scoped(TURN)
    entered, release = threading.Event(), threading.Event()

    def stale(env: RuntimeEffectEnvelope) -> RuntimeEffectOutcome:
        entered.set()
        assert release.wait(30)
        return outcome("stale-owner")

    first = in_thread(
        lambda: controller.execute_effect(
            exec_envelope("stale-lease", "work"), RuntimeEffectLocalExecutor.runner(stale)
        )
    )
    assert entered.wait(10)
    time.sleep(0.04)
    assert marker(controller.execute_effect(exec_envelope("stale-lease", "work"), returning("reclaimed-owner"))) == (
        "reclaimed-owner"
    )
    release.set()
    with pytest.raises(EffectLeaseLost) as caught:
        first(10)
    assert caught.value.code == "sqlite_effect_replay_lease_lost"
    controller.start_replay()
    failing = Failing()
    assert marker(controller.execute_effect(exec_envelope("stale-lease", "work"), failing.executor)) == (
        "reclaimed-owner"
    )
    assert failing.calls == []
    (row,) = rows(host)
    assert row.attempts == 2


def sleep_envelope(key: str, duration_ms: int) -> RuntimeEffectEnvelope:
    return RuntimeEffectEnvelope.new(runtime_scope(), key, key, RuntimeEffectCommand.sleep(duration_ms))


def test_e8_durable_sleep(host: Host) -> None:
    controller = host.scoped(TURN)
    started = time.monotonic()
    result = controller.execute_effect(sleep_envelope("sleep-key", 120), RuntimeEffectLocalExecutor.unavailable())
    assert result == RuntimeEffectOutcome.sleep()
    assert time.monotonic() - started >= 0.1
    controller.start_replay()
    failing = Failing()
    started = time.monotonic()
    assert controller.execute_effect(sleep_envelope("sleep-key", 120), failing.executor) == RuntimeEffectOutcome.sleep()
    assert time.monotonic() - started < 0.5  # the reference says 50 ms; loaded machines get some slack
    assert failing.calls == []


# ===========================================================================
# E-9: process commands


def process_envelope(effect_id: str, key: str, command: ProcessCommand) -> RuntimeEffectEnvelope:
    return RuntimeEffectEnvelope.new(runtime_scope(), effect_id, key, RuntimeEffectCommand.process_command(command))


def test_e9_delete_session_cancels_only_unshared_live_processes(hosts: Hosts, host: Host) -> None:
    registry = hosts.registry(host)
    for process_id in ("sole", "shared"):
        registry.register_process(ProcessRegistration.new(process_id, {"type": "external", "metadata": None}))
    registry.grant_handle(ProcessScope(session_id="deleted"), "sole")
    registry.grant_handle(ProcessScope(session_id="deleted"), "shared")
    registry.grant_handle(ProcessScope(session_id="remaining"), "shared")
    controller = host.scoped(EffectScope.session_delete("deleted"))
    envelope = process_envelope(
        "process:delete-session:deleted", "deleted:delete-session", ProcessCommand.delete_session("deleted")
    )
    result = controller.execute_effect(envelope, RuntimeEffectLocalExecutor.process_control(registry))
    assert result.type == "process"
    assert result.process is not None and result.process.type == "delete_session"
    assert result.process.report is not None and result.process.report.cancel_process_ids == ["sole"]
    assert [event.event_type for event in registry.events_after("sole", 0)] == [CANCEL_REQUESTED]
    assert registry.events_after("shared", 0) == []


def test_e9_process_command_needs_a_process_executor(host: Host) -> None:
    controller = host.scoped(EffectScope.process("p"))
    envelope = process_envelope("p:cancel", "p:cancel", ProcessCommand.cancel("x", "why"))
    with pytest.raises(RuntimeEffectControllerError) as caught:
        controller.execute_effect(envelope, returning("never"))
    assert caught.value.code == "runtime_effect_local_executor_unavailable"


# ===========================================================================
# E-10 ... E-15


def test_e10_strict_replay_with_no_history(host: Host) -> None:
    controller = host.scoped(TURN)
    controller.start_replay()
    failing = Failing()
    with pytest.raises(EffectReplayMissing) as caught:
        controller.execute_effect(exec_envelope("never-recorded", "x"), failing.executor)
    assert caught.value.code == "sqlite_effect_replay_missing"
    assert failing.calls == []
    assert rows(host) == []  # no row created


def test_e11_failures_are_journaled_and_replayed(host: Host) -> None:
    controller = host.scoped(TURN)

    def fails(env: RuntimeEffectEnvelope) -> RuntimeEffectOutcome:
        raise RuntimeEffectControllerError("x", "y")

    with pytest.raises(RuntimeEffectControllerError) as first:
        controller.execute_effect(exec_envelope("fails", "c"), RuntimeEffectLocalExecutor.runner(fails))
    assert (first.value.code, first.value.message) == ("x", "y")
    failing = Failing()
    with pytest.raises(RuntimeEffectControllerError) as again:
        controller.execute_effect(exec_envelope("fails", "c"), failing.executor)
    assert (again.value.code, again.value.message) == ("x", "y")
    assert failing.calls == []
    (row,) = rows(host)
    assert row.status == "failed" and row.error == {"code": "x", "message": "y"}


def test_e12_busy_waits_for_the_holder(hosts: Hosts) -> None:
    host = hosts.open(lease_ttl_ms=10_000)
    controller = host.scoped(TURN)
    entered = threading.Event()
    calls: list[str] = []

    def slow(env: RuntimeEffectEnvelope) -> RuntimeEffectOutcome:
        calls.append("first")
        entered.set()
        time.sleep(0.1)
        return outcome("holder")

    first = in_thread(
        lambda: controller.execute_effect(exec_envelope("busy", "c"), RuntimeEffectLocalExecutor.runner(slow))
    )
    assert entered.wait(10)
    failing = Failing()
    second = in_thread(lambda: controller.execute_effect(exec_envelope("busy", "c"), failing.executor))
    assert marker(first(20)) == "holder"
    assert marker(second(20)) == "holder"
    assert failing.calls == [] and calls == ["first"]


def test_e13_process_start_is_journaled(hosts: Hosts, host: Host) -> None:
    registry = hosts.registry(host)
    controller = host.scoped(EffectScope.process("starter"))
    registration = ProcessRegistration.new("started-1", {"type": "external", "metadata": None})
    grant = ProcessStartGrant(owner_scope=ProcessScope(session_id="owner"))
    envelope = process_envelope("start-1", "start-1", ProcessCommand.start(registration, grant))
    first = controller.execute_effect(envelope, RuntimeEffectLocalExecutor.process_control(registry))
    assert first.process is not None and first.process.record is not None
    assert first.process.record.id == "started-1"
    assert [grant.session_id for grant in registry.handle_grants_for_process("started-1")] == ["owner"]

    class Exploding:
        def __getattr__(self, name: str) -> Any:
            raise AssertionError(f"the registry must not be called ({name})")

    controller.start_replay()
    exploding = RuntimeEffectLocalExecutor.process_control(Exploding())
    assert controller.execute_effect(envelope, exploding) == first


def test_e14_reopen(hosts: Hosts, host: Host) -> None:
    host.scoped(TURN).execute_effect(exec_envelope("k", "c"), returning("recorded"))
    again = hosts.reopen(host)
    controller = again.scoped(TURN)
    controller.start_replay()
    failing = Failing()
    assert marker(controller.execute_effect(exec_envelope("k", "c"), failing.executor)) == "recorded"
    assert failing.calls == []


def test_e15_scope_isolation(host: Host) -> None:
    calls: list[str] = []
    first = host.scoped(EffectScope.turn("s", "t1")).execute_effect(exec_envelope("k", "c"), returning("t1", calls))
    second = host.scoped(EffectScope.turn("s", "t2")).execute_effect(exec_envelope("k", "c"), returning("t2", calls))
    assert (marker(first), marker(second)) == ("t1", "t2")
    assert calls == ["k", "k"]
    assert len(rows(host)) == 2


# ===========================================================================
# The fixes of reference §7


def test_fix_journal_key_is_the_full_scope_identity(host: Host) -> None:
    """§7 item 15: equal last ids in different sessions or of different kinds never share a row."""
    calls: list[str] = []
    scopes = [
        EffectScope.turn("session-a", "turn-1"),
        EffectScope.turn("session-b", "turn-1"),
        EffectScope.process("same-id"),
        EffectScope.runtime_operation("same-id"),
        EffectScope.queue_drain("same-id", "same-id"),
        EffectScope.session_delete("same-id"),
    ]
    for index, scope in enumerate(scopes):
        result = host.scoped(scope).execute_effect(exec_envelope("k", "c"), returning(str(index), calls))
        assert marker(result) == str(index)
    assert len(calls) == len(scopes)
    assert len({row.scope_identity for row in rows(host)}) == len(scopes)


def test_fix_heartbeat_keeps_a_long_effect_from_being_taken_over(hosts: Hosts) -> None:
    """§7 item 16: an effect running for 3x the TTL keeps its lease; a concurrent caller waits for its outcome."""
    host = hosts.open(lease_ttl_ms=150)
    controller = host.scoped(TURN)
    entered = threading.Event()
    calls: list[str] = []

    def long(env: RuntimeEffectEnvelope) -> RuntimeEffectOutcome:
        calls.append("long")
        entered.set()
        time.sleep(0.45)
        return outcome("long-runner")

    first = in_thread(
        lambda: controller.execute_effect(exec_envelope("long", "c"), RuntimeEffectLocalExecutor.runner(long))
    )
    assert entered.wait(10)
    failing = Failing()
    second = in_thread(lambda: host.scoped(TURN).execute_effect(exec_envelope("long", "c"), failing.executor))
    assert marker(first(30)) == "long-runner"
    assert marker(second(30)) == "long-runner"
    assert calls == ["long"] and failing.calls == []
    (row,) = rows(host)
    assert row.attempts == 1 and row.status == "completed"


def test_fix_retryable_failures_release_the_row(host: Host) -> None:
    """§7 item 17: a retryable error is not journaled; the next call runs the effect again (attempts counted)."""
    controller = host.scoped(TURN)

    def blip(env: RuntimeEffectEnvelope) -> RuntimeEffectOutcome:
        raise RuntimeEffectControllerError("network", "connection reset", retryable=True)

    with pytest.raises(RuntimeEffectControllerError) as caught:
        controller.execute_effect(exec_envelope("retry", "c"), RuntimeEffectLocalExecutor.runner(blip))
    assert caught.value.retryable
    (row,) = rows(host)
    assert (row.status, row.attempts, row.lease_owner_id) == ("released", 1, None)

    def crash(env: RuntimeEffectEnvelope) -> RuntimeEffectOutcome:
        raise OSError("disk full")

    with pytest.raises(OSError):
        controller.execute_effect(exec_envelope("retry", "c"), RuntimeEffectLocalExecutor.runner(crash))
    (row,) = rows(host)
    assert (row.status, row.attempts) == ("released", 2)
    assert marker(controller.execute_effect(exec_envelope("retry", "c"), returning("third"))) == "third"
    (row,) = rows(host)
    assert (row.status, row.attempts) == ("completed", 3)


def test_fix_busy_waits_are_bounded(hosts: Hosts) -> None:
    """§7 item 19: a caller waits for a live claim at most busy_timeout_ms, then raises (nothing written)."""
    host = hosts.open(lease_ttl_ms=10_000, busy_timeout_ms=200)
    entered, release = threading.Event(), threading.Event()

    def held(env: RuntimeEffectEnvelope) -> RuntimeEffectOutcome:
        entered.set()
        assert release.wait(30)
        return outcome("holder")

    first = in_thread(
        lambda: host.scoped(TURN).execute_effect(exec_envelope("held", "c"), RuntimeEffectLocalExecutor.runner(held))
    )
    assert entered.wait(10)
    started = time.monotonic()
    with pytest.raises(EffectBusyTimeout) as caught:
        host.scoped(TURN).execute_effect(exec_envelope("held", "c"), Failing().executor)
    assert isinstance(caught.value, TimeoutError) and caught.value.code == "effect_replay_busy_timeout"
    assert 0.15 <= time.monotonic() - started < 10
    release.set()
    assert marker(first(20)) == "holder"
    (row,) = rows(host)
    assert row.attempts == 1


def test_fix_replay_mode_is_per_controller(host: Host) -> None:
    """§7 item 18: one controller's strict replay does not change another's; the host's switch affects only
    controllers scoped after it."""
    replaying = host.scoped(TURN)
    other = host.scoped(EffectScope.turn("effect-session", "other-turn"))
    replaying.start_replay()
    assert replaying.replaying and not other.replaying
    assert marker(other.execute_effect(exec_envelope("k", "c"), returning("ran"))) == "ran"
    with pytest.raises(EffectReplayMissing):
        replaying.execute_effect(exec_envelope("k", "c"), Failing().executor)
    host.start_replay()
    assert not other.replaying
    assert host.scoped(TURN).replaying
    assert not host.scoped(TURN, replay=False).replaying


def test_fix_owner_ids_are_uuids(hosts: Hosts) -> None:
    """§7 item 20."""
    first, second = hosts.open(), hosts.open()
    assert uuid.UUID(first.owner_id).version == 4
    assert first.owner_id != second.owner_id


def test_fix_sleep_due_time_survives_takeover(hosts: Hosts) -> None:
    """A taken-over sleep ends at the originally scheduled time, not a full duration after the takeover."""
    host = hosts.open(lease_ttl_ms=30, heartbeat_interval_ms=0)
    started = time.monotonic()
    stale = in_thread(lambda: host.scoped(TURN).execute_effect(sleep_envelope("nap", 600), None))
    time.sleep(0.2)
    assert host.scoped(TURN).execute_effect(sleep_envelope("nap", 600), None) == RuntimeEffectOutcome.sleep()
    elapsed = time.monotonic() - started
    assert 0.55 <= elapsed < 0.75 + 0.5, elapsed  # ends near 600 ms after the first claim, not 800 ms
    with pytest.raises(EffectLeaseLost):
        stale(10)


def test_durability_tier(host: Host, effects_harness: EffectsHarness) -> None:
    expected = DurabilityTier.DURABLE if effects_harness.durable else DurabilityTier.INLINE
    assert host.durability_tier == expected
    assert host.requires_durable_attachment_store() is True


def test_list_and_prune(host: Host) -> None:
    controller = host.scoped(TURN)
    controller.execute_effect(exec_envelope("a", "c"), returning("a"))
    controller.execute_effect(exec_envelope("b", "c"), returning("b"))
    listed = host.list_journal(scope=TURN)
    assert [row.replay_key for row in listed] == ["a", "b"]
    assert host.list_journal(status="failed") == []
    future = listed[-1].updated_at_ms + 1
    assert host.prune_journal(future, dry_run=True).row_count == 2
    assert len(rows(host)) == 2
    assert host.prune_journal(future).row_count == 2
    assert rows(host) == []


# ===========================================================================
# Bad input: typed errors with codes, nothing written


def test_bad_missing_replay_key(host: Host) -> None:
    envelope = RuntimeEffectEnvelope.new(runtime_scope(), "e", "  ", RuntimeEffectCommand.exec_code("c"))
    with pytest.raises(EffectReplayKeyMissing) as caught:
        host.scoped(TURN).execute_effect(envelope, returning("x"))
    assert caught.value.code == "sqlite_effect_replay_key_missing"
    assert rows(host) == []


@pytest.mark.parametrize(
    "envelope",
    [
        RuntimeEffectEnvelope.new(runtime_scope(), "e", "k", RuntimeEffectCommand(type="teleport")),
        RuntimeEffectEnvelope.new(runtime_scope(), "e", "k", RuntimeEffectCommand.sleep(-1)),
        RuntimeEffectEnvelope.new(runtime_scope(), "e", "k", RuntimeEffectCommand.exec_code(float("nan"))),
        RuntimeEffectEnvelope.new(runtime_scope(), "e", "k", RuntimeEffectCommand.exec_code({1: "non-text key"})),
        RuntimeEffectEnvelope.new(runtime_scope(), "e", "k", RuntimeEffectCommand(type="process")),
    ],
    ids=["unknown-kind", "negative-sleep", "nan", "non-text-key", "process-without-command"],
)
def test_bad_envelopes_are_refused_with_nothing_written(host: Host, envelope: RuntimeEffectEnvelope) -> None:
    with pytest.raises(InvalidEffectInput) as caught:
        host.scoped(TURN).execute_effect(envelope, returning("x"))
    assert isinstance(caught.value, EffectJournalError) and isinstance(caught.value, InvalidInput)
    assert rows(host) == []


def test_bad_replay_key_reused_with_another_envelope_writes_nothing(host: Host) -> None:
    controller = host.scoped(TURN)
    controller.execute_effect(exec_envelope("k", "one"), returning("one"))
    before = rows(host)
    with pytest.raises(EffectReplayConflict):
        controller.execute_effect(exec_envelope("k", "two"), returning("two"))
    assert rows(host) == before


def test_bad_outcome_that_cannot_be_journaled_releases_the_claim(host: Host) -> None:
    controller = host.scoped(TURN)
    bad = RuntimeEffectLocalExecutor.runner(lambda env: RuntimeEffectOutcome.exec_code({"x": float("inf")}))
    with pytest.raises(RuntimeEffectControllerError) as caught:
        controller.execute_effect(exec_envelope("k", "c"), bad)
    assert caught.value.code == "sqlite_effect_replay_encode"
    (row,) = rows(host)
    assert row.status == "failed" and row.error is not None and row.error["code"] == "sqlite_effect_replay_encode"

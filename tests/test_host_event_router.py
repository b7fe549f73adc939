"""The host-event router end to end, with SIGKILLs at random points, on a SQLite deployment file and PostgreSQL.

Three subscriptions (two sessions) match a source, one matches another.  A
router process routes 30 occurrences; the test kills it at random moments and
restarts it (a restarted router sweeps pending deliveries first, then routes
every occurrence again) until a run finishes.  A worker process completes the
processes and is killed once too.  In the end every (occurrence, matching
subscription) pair has exactly one process, with the delivery's
deterministic id, started once (one journaled start, one terminal event),
and nothing else was started.
"""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from lash_store.effects import EffectReplayOptions, EffectScope
from lash_store.host_event_router import START_REPLAY_KEY, HostEventRouter, run_worker
from lash_store.host_events import (
    HostEventOccurrenceRequest,
    TriggerSubscriptionDraft,
    delivery_process_id,
    empty_source_key,
    occurrence_id,
)
from lash_store.processes import COMPLETED, ProcessAwaitOutput
from tests.pg import count_round_trips
from tests.pgproc import FORK

SOURCE = "ui.button.pressed"
KEY = empty_source_key(SOURCE)
OTHER_KEY = empty_source_key("schedule.tick")
OCCURRENCES = 30
TTL_MS = 400

Target = tuple[str, str]


def components(target: Target) -> tuple[Any, Any, Any]:
    backend, where = target
    replay = EffectReplayOptions(lease_ttl_ms=TTL_MS)
    if backend == "sqlite":
        from lash_store.sqlite.effects import EffectHost
        from lash_store.sqlite.host_events import HostEventStore
        from lash_store.sqlite.registry import ProcessRegistry

        return HostEventStore.open(where), EffectHost.open(where, replay_options=replay), ProcessRegistry.open(where)
    from lash_store.postgres import PostgresEffectHost, PostgresHostEventStore, PostgresProcessRegistry

    return (
        PostgresHostEventStore.open(where),
        PostgresEffectHost.open(where, replay_options=replay),
        PostgresProcessRegistry.open(where),
    )


def request(index: int) -> HostEventOccurrenceRequest:
    return HostEventOccurrenceRequest(
        source_type=SOURCE, source_key=KEY, idempotency_key=f"press-{index}", payload={"button": "Blue", "n": index}
    )


def route_all(target: Target, done: str) -> None:
    store, effects, registry = components(target)
    router = HostEventRouter(store, effects, registry)
    router.sweep()
    for index in range(OCCURRENCES):
        router.route(request(index))
    Path(done).touch()


def work_all(target: Target, done: str) -> None:
    _, _, registry = components(target)
    while registry.list_non_terminal():
        run_worker(
            registry,
            f"worker-{os.getpid()}",
            lambda record: ProcessAwaitOutput.success({"handled": record.id}),
            lease_ttl_ms=TTL_MS,
        )
        time.sleep(0.05)
    Path(done).touch()


def run_with_kills(target_fn: Any, target: Target, tmp_path: Path, name: str, kills_wanted: int) -> int:
    """Run ``target_fn`` in fresh processes, SIGKILLing them at random moments, until one run finishes.

    A run that finishes before its kill moment counts for nothing while kills are still wanted: the
    next kill comes sooner (routing and working are idempotent, so re-running is harmless).
    """
    rng = random.Random(f"{name}-{target[0]}")
    done = tmp_path / f"{name}.done"
    kills = 0
    longest = 0.6
    for _ in range(80):
        done.unlink(missing_ok=True)
        child = FORK.Process(target=target_fn, args=(target, str(done)), daemon=True)
        started = time.monotonic()
        child.start()
        if kills < kills_wanted:
            time.sleep(rng.uniform(0.01, longest))
            if child.is_alive():
                os.kill(child.pid or 0, signal.SIGKILL)
                child.join(10)
                kills += 1
                continue
            longest = max(0.02, (time.monotonic() - started) * 0.7)
            child.join(10)
            continue
        child.join(180)
        assert not child.is_alive(), f"{name} did not finish"
        assert child.exitcode == 0, f"{name} exited with {child.exitcode}"
        if done.exists():
            return kills
    pytest.fail(f"{name} never finished")


@pytest.fixture(params=["sqlite", "postgres"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Target:
    if request.param == "sqlite":
        return ("sqlite", str(tmp_path / "deployment.db"))
    request.applymarker(pytest.mark.postgres)
    return ("postgres", request.getfixturevalue("pg_dsn"))


def test_router_drill_with_random_kills(target: Target, tmp_path: Path) -> None:
    store, effects, registry = components(target)
    matching = [
        store.register_subscription(
            TriggerSubscriptionDraft(
                session_id=session, source_type=SOURCE, source_key=KEY, name=name, process_name=name
            )
        )
        for session, name in (("session-a", "one"), ("session-a", "two"), ("session-b", "three"))
    ]
    store.register_subscription(
        TriggerSubscriptionDraft(session_id="session-a", source_type="schedule.tick", source_key=OTHER_KEY, name="x")
    )

    router_kills = run_with_kills(route_all, target, tmp_path, "router", kills_wanted=5)
    worker_kills = run_with_kills(work_all, target, tmp_path, "worker", kills_wanted=1)
    assert router_kills >= 1

    expected = set()
    for index in range(OCCURRENCES):
        occurrence = occurrence_id(SOURCE, KEY, f"press-{index}")
        for sub in matching:
            expected.add(delivery_process_id(occurrence, sub.subscription_id))
    records = registry.list_processes()
    assert {record.id for record in records} == expected  # one per (occurrence, subscription), nothing else
    assert {record.status.state for record in records} == {"completed"}
    for record in records:
        terminal = [event for event in registry.events_after(record.id, 0) if event.event_type == COMPLETED]
        assert len(terminal) == 1, record.id  # completed once
        owner = record.provenance.owner_scope.session_id
        assert [grant.session_id for grant in registry.handle_grants_for_process(record.id)] == [owner]
        (row,) = effects.list_journal(scope=EffectScope.process(record.id))
        assert (row.replay_key, row.status) == (START_REPLAY_KEY, "completed")  # started once, journaled once
    assert store.pending_deliveries() == []
    assert len(store.list_occurrences()) == OCCURRENCES
    print(f"{target[0]}: router killed {router_kills} times, worker {worker_kills} times")
    for component in (store, effects, registry):
        component.close()


# --------------------------------------------------------------------------
# One transaction per delivery where the components share a database


def _subscribe(store: Any, session: str = "session-a") -> None:
    store.register_subscription(
        TriggerSubscriptionDraft(session_id=session, source_type=SOURCE, source_key=KEY, name="one", process_name="one")
    )


def test_shared_file_starts_and_closes_each_delivery_in_the_journal_transaction(tmp_path: Path) -> None:
    store, effects, registry = components(("sqlite", str(tmp_path / "deployment.db")))
    _subscribe(store)
    router = HostEventRouter(store, effects, registry)
    writes = _count_writes(effects, registry, store)
    (record,) = router.route(request(1))
    # The journal's claim and outcome, the registration, the grant and the closed delivery: one transaction.
    assert writes == {"effects": 1, "registry": 0, "host_events": 1}  # host events: record, reserve and list
    (row,) = effects.list_journal()
    assert (row.status, row.attempts, row.lease_owner_id) == ("completed", 1, None)
    assert row.outcome is not None and row.outcome.process is not None
    assert row.outcome.process.record == record
    assert [d.state for d in store.list_deliveries(record.provenance.caused_by["occurrence_id"])] == ["started"]
    assert [entry.grant.process_id for entry in registry.list_handle_grants(record.provenance.owner_scope)] == [
        record.id
    ]
    assert router.route(request(1)) == [record]  # the same occurrence again: replayed, nothing new
    assert len(effects.list_journal()) == 1 and len(registry.list_processes()) == 1


def _count_writes(effects: Any, registry: Any, store: Any) -> dict[str, int]:
    counts = {"effects": 0, "registry": 0, "host_events": 0}
    for name, component in (("effects", effects), ("registry", registry), ("host_events", store)):
        backend = component.backend
        original = backend.write

        def counted(body: Any, original: Any = original, name: str = name) -> Any:
            counts[name] += 1
            return original(body)

        backend.write = counted
    return counts


def test_components_on_separate_files_take_the_general_path(tmp_path: Path) -> None:
    from lash_store.sqlite.effects import EffectHost
    from lash_store.sqlite.host_events import HostEventStore
    from lash_store.sqlite.registry import ProcessRegistry

    store = HostEventStore.open(tmp_path / "events.db")
    effects = EffectHost.open(tmp_path / "journal.db")
    registry = ProcessRegistry.open(tmp_path / "registry.db")
    _subscribe(store)
    writes = _count_writes(effects, registry, store)
    (record,) = HostEventRouter(store, effects, registry).route(request(1))
    assert writes == {"effects": 2, "registry": 1, "host_events": 2}  # claim + outcome; start; record + close
    (row,) = effects.list_journal()
    assert (row.status, row.attempts) == ("completed", 1)
    assert registry.get_process(record.id) == record
    assert [d.state for d in store.list_deliveries(record.provenance.caused_by["occurrence_id"])] == ["started"]


def test_a_start_the_registry_refuses_is_journaled_as_failed_and_the_delivery_stays_reserved(tmp_path: Path) -> None:
    from lash_store.errors import EffectPluginError
    from lash_store.processes import ProcessRegistration

    store, effects, registry = components(("sqlite", str(tmp_path / "deployment.db")))
    _subscribe(store)
    occurrence = store.record_occurrence(request(1))
    (delivery,) = store.reserve_matching_deliveries(occurrence.occurrence_id)
    registry.register_process(ProcessRegistration.new(delivery.process_id, {"something": "else"}))
    with pytest.raises(EffectPluginError):
        HostEventRouter(store, effects, registry).route(request(1))
    (row,) = effects.list_journal()
    assert (row.status, row.attempts) == ("failed", 1)
    assert row.error is not None and row.error["code"] == "plugin"
    assert [d.state for d in store.pending_deliveries()] == ["reserved"]
    assert registry.list_handle_grants(_scope("session-a")) == []


def _scope(session: str) -> Any:
    from lash_store.processes import ProcessScope

    return ProcessScope(session_id=session)


# --------------------------------------------------------------------------
# Deleting a session from the deployment


def _sessions(target: Target, tmp_path: Path) -> Any:
    backend, where = target
    if backend == "sqlite":
        from lash_store import SqliteSessionStoreFactory

        return SqliteSessionStoreFactory(tmp_path / "sessions")
    from lash_store.postgres import PostgresSessionStoreFactory

    return PostgresSessionStoreFactory(where)


def test_delete_session_stops_its_triggers_and_processes_and_deletes_its_store(target: Target, tmp_path: Path) -> None:
    from lash_store.model import RuntimeCommit

    store, effects, registry = components(target)
    sessions = _sessions(target, tmp_path)
    for session in ("session-a", "session-b"):
        with sessions.create_store(session) as conversation:
            conversation.commit_runtime_state(RuntimeCommit(session_id=session, expected_head_revision=0))
    for session, name in (("session-a", "one"), ("session-a", "two"), ("session-b", "three")):
        store.register_subscription(
            TriggerSubscriptionDraft(session_id=session, source_type=SOURCE, source_key=KEY, name=name)
        )
    router = HostEventRouter(store, effects, registry)
    started = router.route(request(1))
    assert len(started) == 3
    crashed = store.record_and_reserve(request(2))  # a router that died before starting these
    assert len(crashed) == 3

    report = router.delete_session("session-a", sessions=sessions)

    assert (report.subscriptions_cancelled, report.deliveries_finished, report.session_deleted) == (2, 2, True)
    owned = {r.id for r in registry.list_processes() if r.provenance.owner_scope.session_id == "session-a"}
    assert len(owned) == 4 and set(report.processes.cancel_process_ids) == owned  # both occurrences' processes
    for process_id in owned:
        assert any(e.event_type == "process.cancel_requested" for e in registry.events_after(process_id, 0))
        assert registry.handle_grants_for_process(process_id) == []
    assert [d.subscription.session_id for d in store.pending_deliveries()] == ["session-b"]  # b's untouched
    assert {record.provenance.owner_scope.session_id for record in router.route(request(3))} == {"session-b"}
    assert [info.session_id for info in sessions.list_sessions()] == ["session-b"]

    again = router.delete_session("session-a", sessions=sessions)  # idempotent: finishing an interrupted run
    assert (again.subscriptions_cancelled, again.deliveries_finished) == (0, 0)
    assert again.processes.cancel_process_ids == []
    assert len(registry.list_processes()) == 3 + 2 + 1  # occurrence 2 of session-b is still pending
    for component in (store, effects, registry):
        component.close()


@pytest.mark.postgres
def test_a_route_on_postgres_costs_few_round_trips(pg_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Record, reserve and list: 6 waits (the clock, the insert, the occurrence with its subscriptions, one
    insert per delivery, COMMIT: a new occurrence's deliveries are the ones just reserved, nothing to list);
    each delivery: 5 (the clock, the registration, the closed delivery, the journal row -- written once,
    finished, its primary key the arbiter -- and COMMIT).  The transactions joined to the journal's read the
    database clock once: before, a route with two deliveries waited 24 times."""
    from lash_store.postgres import close_shared_pools

    store, effects, registry = components(("postgres", pg_dsn))
    try:
        _subscribe(store, "session-a")
        _subscribe(store, "session-b")
        router = HostEventRouter(store, effects, registry)
        router.route(request(0))  # warm: prepared statements, the pool
        waits = count_round_trips(monkeypatch)
        records = router.route(request(1))
        monkeypatch.undo()
        assert len(records) == 2
        assert len(waits) == 6 + 5 + 5, waits
        assert [d.state for d in store.list_deliveries(records[0].provenance.caused_by["occurrence_id"])] == [
            "started",
            "started",
        ]
        (first, second) = (effects.list_journal(scope=EffectScope.process(r.id))[0] for r in records)
        assert first.status == second.status == "completed"
    finally:
        for component in (store, effects, registry):
            component.close()
        close_shared_pools()


def test_record_and_reserve_returns_what_the_listing_reads(target: Target) -> None:
    """A new occurrence's deliveries are returned without listing them: the same records, in the listing's
    order (by subscription number, whatever the sessions' order); a repeated call lists them."""
    store, effects, registry = components(target)
    try:
        _subscribe(store, "session-z")  # trigger:1 of the later session
        _subscribe(store, "session-a")
        _subscribe(store, "session-m")
        first = store.record_and_reserve(request(7))
        occurrence_id = first[0].occurrence.occurrence_id
        listed = store.list_deliveries(occurrence_id)
        assert first == listed
        assert [d.subscription.handle for d in first] == ["trigger:1", "trigger:2", "trigger:3"]
        assert [d.state for d in first] == ["reserved"] * 3 and all(d.started_at_ms is None for d in first)
        assert store.record_and_reserve(request(7)) == listed  # not new: listed
        HostEventRouter(store, effects, registry).start(first[1])
        again = store.record_and_reserve(request(7))
        assert [d.state for d in again] == ["reserved", "started", "reserved"]
        assert again == store.list_deliveries(occurrence_id)
    finally:
        for component in (store, effects, registry):
            component.close()
        if target[0] == "postgres":
            from lash_store.postgres import close_shared_pools

            close_shared_pools()


# ---------------------------------------------------------------------------
# A journaled process start on the journal's database: one transaction, the journal row written once


def _start(process_id: str, replay_key: str = "start") -> Any:
    from lash_store.effects import (
        ProcessCommand,
        ProcessStartGrant,
        RuntimeEffectCommand,
        RuntimeEffectEnvelope,
        RuntimeScope,
    )
    from lash_store.processes import ProcessHandleDescriptor, ProcessProvenance, ProcessRegistration, ProcessScope

    scope = ProcessScope(session_id="s")
    registration = ProcessRegistration.new(process_id, {"n": 1}).with_provenance(ProcessProvenance(owner_scope=scope))
    grant = ProcessStartGrant(owner_scope=scope, descriptor=ProcessHandleDescriptor(kind="trigger", label="t"))
    command = RuntimeEffectCommand.process_command(ProcessCommand.start(registration, grant))
    return RuntimeEffectEnvelope.new(RuntimeScope(session_id="s"), process_id, replay_key, command)


def _journal(effects: Any, scope: EffectScope) -> Any:
    (row,) = effects.list_journal(scope=scope)
    return row


def test_a_start_is_journaled_finished_in_its_own_transaction(target: Target) -> None:
    """No claim is ever visible: the row is written once, completed, with one attempt and no lease."""
    from uuid import uuid4

    from lash_store.effects import RuntimeEffectLocalExecutor

    store, effects, registry = components(target)
    try:
        process_id = f"p-{uuid4().hex}"
        scope = EffectScope.turn("s", f"t-{uuid4().hex}")
        outcome = effects.scoped(scope).execute_effect(
            _start(process_id), RuntimeEffectLocalExecutor.process_control(registry)
        )
        assert outcome.process is not None and outcome.process.record is not None
        row = _journal(effects, scope)
        assert (row.status, row.attempts, row.lease_owner_id, row.lease_expires_at_ms) == ("completed", 1, None, 0)
        assert row.outcome == outcome
        assert registry.get_process(process_id) is not None
    finally:
        for component in (store, effects, registry):
            component.close()


def test_a_start_whose_journal_row_exists_writes_nothing_of_its_own(target: Target) -> None:
    """The same replay key with another start (another process): the one-transaction attempt registers the
    process and grants its handle, meets the journal row, and rolls all of it back; the journal's answer is
    a replay conflict, and the other process was never registered."""
    from uuid import uuid4

    from lash_store.effects import RuntimeEffectLocalExecutor
    from lash_store.errors import EffectReplayConflict

    store, effects, registry = components(target)
    try:
        first, second = f"p-{uuid4().hex}", f"p-{uuid4().hex}"
        scope = EffectScope.turn("s", f"t-{uuid4().hex}")
        controller = effects.scoped(scope)
        executor = RuntimeEffectLocalExecutor.process_control(registry)
        controller.execute_effect(_start(first), executor)
        effects.read_first = False  # as after a claim: the next start tries its own transaction first
        with pytest.raises(EffectReplayConflict):
            controller.execute_effect(_start(second), executor)
        assert registry.get_process(second) is None
        assert second not in {record.id for record in registry.list_processes()}
        assert _journal(effects, scope).attempts == 1
    finally:
        for component in (store, effects, registry):
            component.close()


def test_an_expired_claim_on_a_start_is_taken_over_and_the_process_started_once(target: Target) -> None:
    """A crashed runner's claim (in progress, its lease expired) blocks the one-transaction insert, which
    rolls back; the general path takes the claim over and starts the process: one process, two attempts."""
    from uuid import uuid4

    from lash_store.effects import RuntimeEffectLocalExecutor
    from lash_store.service.effects import journal
    from lash_store.service.effects.service import check_envelope

    store, effects, registry = components(target)
    try:
        process_id = f"p-{uuid4().hex}"
        scope = EffectScope.turn("s", f"t-{uuid4().hex}")
        controller = effects.scoped(scope)
        envelope = _start(process_id)
        key = journal.Key(controller.scope_identity, envelope.replay_key, scope.type, scope.scope_id)
        digest = check_envelope(envelope).digest
        claim = effects._write(lambda tx: journal.prepare(tx, key, digest, None, "crashed", "token", 1, False))
        assert isinstance(claim, journal.Claimed)
        time.sleep(0.05)  # its 1 ms lease is over
        effects.read_first = False
        outcome = controller.execute_effect(envelope, RuntimeEffectLocalExecutor.process_control(registry))
        row = _journal(effects, scope)
        assert (row.status, row.attempts) == ("completed", 2)
        assert outcome.process is not None and outcome.process.record is not None
        assert [record.id for record in registry.list_processes() if record.id == process_id] == [process_id]
    finally:
        for component in (store, effects, registry):
            component.close()

"""Differential, property-based stateful tests of the effect journal and the host-event store.

Two hypothesis ``RuleBasedStateMachine`` s drive random operation sequences
against a real backend (SQLite in memory, a deployment file, or PostgreSQL
with a fresh schema per example) and the reference implementation side by side, on one shared manual clock.  Every
result, every error (class and code) and, after every step, every stored row
must be equal.

* effects: executions under several scopes with runners that succeed, fail
  deterministically, fail retryably or raise; strict replay on and off; replay
  keys reused with other envelopes; invalid envelopes; prunes and clock advances;
* host events: registrations (valid and blank), cancels, occurrences (replays,
  conflicts, other sources), reservations (known and unknown), starts of
  deliveries, listings with filters, prunes and clock advances.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from lash_store import StoreOptions
from lash_store.effects import (
    EffectReplayOptions,
    EffectScope,
    RuntimeEffectCommand,
    RuntimeEffectEnvelope,
    RuntimeEffectLocalExecutor,
    RuntimeEffectOutcome,
    RuntimeScope,
)
from lash_store.errors import RuntimeEffectControllerError
from lash_store.host_events import (
    HostEventOccurrenceRequest,
    TriggerSubscriptionDraft,
    TriggerSubscriptionFilter,
    TriggerTarget,
    empty_source_key,
)
from lash_store.sqlite.effects import EffectHost
from lash_store.sqlite.host_events import HostEventStore
from lash_store.testing.clock import ManualClock
from lash_store.testing.effects_reference import ReferenceEffectHost
from lash_store.testing.host_events_reference import ReferenceHostEventStore

START_MS = 1_700_000_000_000
TALLY: Counter[str] = Counter()

SHORT = settings(
    max_examples=30,
    stateful_step_count=30,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def _call(op: Callable[[Any], Any], target: Any) -> tuple[bool, Any]:
    try:
        return True, op(target)
    except Exception as exc:
        return False, exc


def _same(real: tuple[bool, Any], ref: tuple[bool, Any]) -> None:
    assert real[0] == ref[0], (real, ref)
    if real[0]:
        TALLY["ok"] += 1
        assert real[1] == ref[1], (real[1], ref[1])
        return
    TALLY[type(real[1]).__name__] += 1
    assert type(real[1]) is type(ref[1]), (real[1], ref[1])
    assert getattr(real[1], "code", None) == getattr(ref[1], "code", None)
    assert getattr(real[1], "what", None) == getattr(ref[1], "what", None)


# ===========================================================================
# The effect journal


SCOPES = [
    EffectScope.turn("s", "t1"),
    EffectScope.turn("s2", "t1"),
    EffectScope.process("t1"),
    EffectScope.runtime_operation("op"),
    EffectScope.turn("s", " "),
]
KEYS = ["k1", "k2", "k3", ""]
CODES = ["c1", "c2"]
RUNNERS = ["ok", "ok2", "fail", "retry", "raise"]


def _envelope(key: str, code: str, kind: str) -> RuntimeEffectEnvelope:
    scope = RuntimeScope(session_id="s", turn_id="t1")
    if kind == "sleep":
        return RuntimeEffectEnvelope.new(scope, key or "e", key, RuntimeEffectCommand.sleep(0))
    if kind == "bad":
        return RuntimeEffectEnvelope.new(scope, "e", key, RuntimeEffectCommand.exec_code({"x": float("inf")}))
    return RuntimeEffectEnvelope.new(scope, key or "e", key, RuntimeEffectCommand.exec_code(code))


def _runner(name: str) -> RuntimeEffectLocalExecutor:
    def run(envelope: RuntimeEffectEnvelope) -> RuntimeEffectOutcome:
        if name == "fail":
            raise RuntimeEffectControllerError("deterministic", "no")
        if name == "retry":
            raise RuntimeEffectControllerError("transient", "later", retryable=True)
        if name == "raise":
            raise OSError("boom")
        return RuntimeEffectOutcome.exec_code({"by": name, "key": envelope.replay_key})

    return RuntimeEffectLocalExecutor.runner(run)


class EffectsMachine(RuleBasedStateMachine):
    BACKEND = "memory"

    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock(START_MS)
        options = StoreOptions(clock=self.clock)
        replay = EffectReplayOptions(lease_ttl_ms=60_000, heartbeat_interval_ms=0)
        self.tmp: str | None = None
        if self.BACKEND == "file":
            self.tmp = tempfile.mkdtemp(prefix="lash-effects-stateful-")
            real: Any = EffectHost.open(Path(self.tmp) / "deployment.db", options, replay_options=replay)
        elif self.BACKEND == "postgres":
            from lash_store.postgres.effects import PostgresEffectHost

            schema = f"eff_sm_{uuid.uuid4().hex[:12]}"
            real = PostgresEffectHost.open(POSTGRES["dsn"], options, replay_options=replay, schema=schema)
        else:
            real = EffectHost.memory(options, replay_options=replay)
        self.hosts = (real, ReferenceEffectHost(options, replay_options=replay))

    def both(self, op: Callable[[Any], Any]) -> None:
        _same(_call(op, self.hosts[0]), _call(op, self.hosts[1]))

    @rule(
        scope=st.sampled_from(SCOPES),
        key=st.sampled_from(KEYS),
        code=st.sampled_from(CODES),
        kind=st.sampled_from(["exec", "exec", "sleep", "bad"]),
        runner=st.sampled_from(RUNNERS),
        strict=st.booleans(),
    )
    def execute(self, scope: EffectScope, key: str, code: str, kind: str, runner: str, strict: bool) -> None:
        envelope = _envelope(key, code, kind)
        self.both(lambda host: host.scoped(scope, replay=strict).execute_effect(envelope, _runner(runner)))

    @rule(ms=st.sampled_from([0, 1, 1_000, 60_000]))
    def advance(self, ms: int) -> None:
        self.clock.advance(ms)

    @rule(back=st.sampled_from([0, 1, 500, 10_000]), dry=st.booleans())
    def prune(self, back: int, dry: bool) -> None:
        self.both(lambda host: host.prune_journal(max(0, self.clock() - back), dry_run=dry))

    @rule(status=st.sampled_from([None, "completed", "failed", "released", "in_progress", "nope"]))
    def listing(self, status: str | None) -> None:
        self.both(lambda host: host.list_journal(status=status))

    @invariant()
    def same_rows(self) -> None:
        assert self.hosts[0].list_journal() == self.hosts[1].list_journal()

    def teardown(self) -> None:
        for host in self.hosts:
            host.close()
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)


class FileEffectsMachine(EffectsMachine):
    BACKEND = "file"


class PostgresEffectsMachine(EffectsMachine):
    BACKEND = "postgres"


# ===========================================================================
# The host-event store


SOURCE = "ui.button.pressed"
SOURCE_KEYS = [empty_source_key(SOURCE), "source:other", " "]
SESSIONS = ["a", "b", ""]
NAMES = ["one", "two", None]
PAYLOADS = [{"button": "Blue"}, {"button": "Red"}, None]
IDEMS = ["i1", "i2", "i3", ""]


class HostEventsMachine(RuleBasedStateMachine):
    BACKEND = "memory"

    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock(START_MS)
        options = StoreOptions(clock=self.clock)
        self.tmp: str | None = None
        if self.BACKEND == "file":
            self.tmp = tempfile.mkdtemp(prefix="lash-hev-stateful-")
            real: Any = HostEventStore.open(Path(self.tmp) / "deployment.db", options)
        elif self.BACKEND == "postgres":
            from lash_store.postgres.host_events import PostgresHostEventStore

            schema = f"hev_sm_{uuid.uuid4().hex[:12]}"
            real = PostgresHostEventStore.open(POSTGRES["dsn"], options, schema=schema)
        else:
            real = HostEventStore.memory(options)
        self.stores = (real, ReferenceHostEventStore(options))
        self.occurrence_ids: list[str] = ["host_event:unknown"]

    def both(self, op: Callable[[Any], Any]) -> Any:
        real, ref = _call(op, self.stores[0]), _call(op, self.stores[1])
        _same(real, ref)
        return real[1] if real[0] else None

    @rule(
        session=st.sampled_from(SESSIONS),
        key=st.sampled_from(SOURCE_KEYS),
        name=st.sampled_from(NAMES),
        process=st.sampled_from(["p1", "p2"]),
    )
    def register(self, session: str, key: str, name: str | None, process: str) -> None:
        draft = TriggerSubscriptionDraft(
            session_id=session, source_type=SOURCE, source_key=key, name=name, process_name=process
        )
        self.both(lambda store: store.register_subscription(draft))

    @rule(session=st.sampled_from(SESSIONS), number=st.integers(0, 6))
    def cancel(self, session: str, number: int) -> None:
        self.both(lambda store: store.cancel_subscription(session, f"trigger:{number}"))

    @rule(key=st.sampled_from(SOURCE_KEYS), idem=st.sampled_from(IDEMS), payload=st.sampled_from(PAYLOADS))
    def record(self, key: str, idem: str, payload: Any) -> None:
        request = HostEventOccurrenceRequest(source_type=SOURCE, source_key=key, idempotency_key=idem, payload=payload)
        found = self.both(lambda store: store.record_occurrence(request))
        if found is not None and found.occurrence_id not in self.occurrence_ids:
            self.occurrence_ids.append(found.occurrence_id)

    @rule(data=st.data())
    def reserve(self, data: st.DataObject) -> None:
        occurrence = data.draw(st.sampled_from(self.occurrence_ids))
        self.both(lambda store: store.reserve_matching_deliveries(occurrence))

    @rule(data=st.data(), number=st.integers(0, 6))
    def start(self, data: st.DataObject, number: int) -> None:
        occurrence = data.draw(st.sampled_from(self.occurrence_ids))
        self.both(lambda store: store.mark_delivery_started(occurrence, f"subscription:{number}"))

    @rule(
        session=st.sampled_from([None, "a", "b"]),
        enabled=st.sampled_from([None, True, False]),
        name=st.sampled_from([None, "one"]),
        process=st.sampled_from([None, "p1"]),
    )
    def listing(self, session: str | None, enabled: bool | None, name: str | None, process: str | None) -> None:
        wanted = None
        if process is not None:
            wanted = TriggerTarget(module_ref=None, required_surface_ref=None, process_ref=None, process_name=process)
        selection = TriggerSubscriptionFilter(session_id=session, enabled=enabled, name=name, target=wanted)
        self.both(lambda store: store.list_subscriptions(selection))

    @rule(ms=st.sampled_from([0, 1, 1_000]))
    def advance(self, ms: int) -> None:
        self.clock.advance(ms)

    @rule(back=st.sampled_from([0, 1, 500]), dry=st.booleans())
    def prune(self, back: int, dry: bool) -> None:
        self.both(lambda store: store.prune(max(0, self.clock() - back), dry_run=dry))

    @invariant()
    def same_rows(self) -> None:
        real, ref = self.stores
        assert real.list_subscriptions() == ref.list_subscriptions()
        assert real.list_occurrences() == ref.list_occurrences()
        assert real.pending_deliveries() == ref.pending_deliveries()
        for occurrence in self.occurrence_ids:
            assert real.list_deliveries(occurrence) == ref.list_deliveries(occurrence)

    def teardown(self) -> None:
        for store in self.stores:
            store.close()
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)


class FileHostEventsMachine(HostEventsMachine):
    BACKEND = "file"


class PostgresHostEventsMachine(HostEventsMachine):
    BACKEND = "postgres"


MACHINES: dict[str, type[RuleBasedStateMachine]] = {
    "effects-memory": EffectsMachine,
    "effects-file": FileEffectsMachine,
    "host-events-memory": HostEventsMachine,
    "host-events-file": FileHostEventsMachine,
    "effects-postgres": PostgresEffectsMachine,
    "host-events-postgres": PostgresHostEventsMachine,
}
#: The database of the PostgreSQL machines (set by the fixture only when one of them runs).
POSTGRES: dict[str, str] = {}


@pytest.fixture
def stateful_dsn(request: pytest.FixtureRequest) -> Iterator[None]:
    if not request.node.callspec.params["machine"].endswith("postgres"):
        yield
        return
    request.applymarker(pytest.mark.postgres)
    server = request.getfixturevalue("pg_server")
    name = f"lash_effects_sm_{uuid.uuid4().hex[:8]}"
    POSTGRES["dsn"] = server.create_database(name)
    try:
        yield
    finally:
        from lash_store.postgres import close_shared_pools

        close_shared_pools()
        server.drop_database(name)
        POSTGRES.clear()


@pytest.mark.parametrize("machine", sorted(MACHINES))
@pytest.mark.usefixtures("stateful_dsn")
def test_real_backend_agrees_with_reference(machine: str, capsys: pytest.CaptureFixture[str]) -> None:
    TALLY.clear()
    run_state_machine_as_test(MACHINES[machine], settings=SHORT)
    with capsys.disabled():
        print(f" [{sum(TALLY.values())} calls on {machine}: {dict(TALLY.most_common(6))}]", end="")
    assert TALLY["ok"] > 50 and len(TALLY) >= 3  # successes and several kinds of errors are reached

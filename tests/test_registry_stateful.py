"""Differential, property-based stateful test of the process registry: each real backend against the reference.

A hypothesis ``RuleBasedStateMachine`` drives random operation sequences --
registrations (and conflicting ones), appends of every kind (plain, wake,
terminal, cancel, undeclared, schema-breaking, replays, fenced with the live,
a stale or a forged lease), completions, external refs, grants, revocations,
transfers, session deletions, lease claims, renewals and releases, acks,
prunes, zero-timeout waits, invalid input and clock advances -- against a
real registry and a :class:`~lash_store.testing.registry_reference.ReferenceProcessRegistry`
side by side, on one shared manual clock.  Every result, every error (class;
``.what`` for invalid input) and, after every step, every stored row must be
equal.  Lease tokens are random, so they are compared through a map to
logical names assigned in creation order.

Backends: ``ProcessRegistry.memory()``, a deployment file, and PostgreSQL (a
fresh schema per example).  ``LASH_STATEFUL_EXAMPLES`` / ``LASH_STATEFUL_STEPS``
size the long (``slow``) profile.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from lash_store import StoreOptions
from lash_store.errors import InvalidInput
from lash_store.postgres import close_shared_pools
from lash_store.postgres.registry import PostgresProcessRegistry
from lash_store.processes import (
    ProcessAwaitOutput,
    ProcessEventAppendRequest,
    ProcessEventSemantics,
    ProcessEventType,
    ProcessExternalRef,
    ProcessHandleDescriptor,
    ProcessLease,
    ProcessReplay,
    ProcessScope,
    Selector,
    TerminalSpec,
)
from lash_store.sqlite.registry import ProcessRegistry
from lash_store.testing.clock import ManualClock
from lash_store.testing.registry_conformance import bare, plain, wake_type
from lash_store.testing.registry_reference import ReferenceProcessRegistry

START_MS = 1_700_000_000_000
MAX_MS = 2**63 - 1
REAL, REF = 0, 1
Outcome = tuple[bool, Any]
#: What the operations returned (or raised) in this process, to show the machine reaches every outcome.
TALLY: Counter[str] = Counter()

PIDS = ["p0", "p1", "p2"]
SCOPES = [
    ProcessScope(session_id="s1"),
    ProcessScope(session_id="s2"),
    ProcessScope(session_id="s1", agent_frame_id="f"),
]
SESSIONS = ["s1", "s2", "s3"]
OWNERS = ["o1", "o2"]
TTLS = [0, 1, 50, 60_000, MAX_MS]
ADVANCES = [0, 1, 49, 50, 1_000, 60_000]
STRICT = ProcessEventType(
    name="strict",
    payload_schema={"type": "object", "properties": {"line": {"type": "string"}}, "required": ["line"]},
)
JOB_FAILED = ProcessEventType(
    name="job.failed", semantics=ProcessEventSemantics(terminal=TerminalSpec.failed(Selector.pointer("/err")))
)
TYPES = [plain("line"), wake_type("wake"), JOB_FAILED, STRICT]
EVENT_TYPES = ["line", "wake", "job.failed", "strict", "process.cancel_requested", "process.completed", "nope"]
PAYLOADS = [
    {},
    {"wake_input": "w"},
    {"err": "boom"},
    {"line": "x"},
    {"await_output": {"type": "success", "value": 1}},
    "text",
    None,
    {"reason": None},
]
KEYS = [None, None, "k1", "k2"]
TARGETS = [None, ProcessScope(session_id="s1"), ProcessScope(session_id="s2", agent_frame_id="f")]
OUTPUTS = [
    ProcessAwaitOutput.success(1),
    ProcessAwaitOutput.success(None),
    ProcessAwaitOutput.failure("c", "k", "m"),
    ProcessAwaitOutput.cancelled("stop"),
]
FENCES = ["none", "none", "latest", "forged_owner", "forged_fence", "oldest"]

INVALID_CALLS: list[Callable[[Any], Any]] = [
    lambda r: r.register_process(bare(" ")),
    lambda r: r.register_process(bare("p0", plain("x"), plain("x"))),
    lambda r: r.append_event("p0", ProcessEventAppendRequest(event_type="", payload={})),
    lambda r: r.append_event("p0", ProcessEventAppendRequest(event_type="line", payload={"x": float("nan")})),
    lambda r: r.append_event("p0", ProcessEventAppendRequest(event_type="line", replay=ProcessReplay(key=""))),
    lambda r: r.claim_process_lease("p0", "o1", -1),
    lambda r: r.claim_process_lease("p0", "", 1),
    lambda r: r.claim_process_lease("p0", "o1", 2**63),
    lambda r: r.events_after("p0", -1),
    lambda r: r.grant_handle(ProcessScope(session_id=""), "p0"),
    lambda r: r.wait_event_after("p0", "line", 0, timeout_ms=-5),
    lambda r: r.list_processes(state="asleep"),
    lambda r: r.prune_processes(-1),
]


def _call(op: Callable[[Any], Any], registry: Any) -> Outcome:
    try:
        return True, op(registry)
    except Exception as exc:  # compared below; an unexpected class is a divergence too
        return False, exc


class RegistryMachine(RuleBasedStateMachine):
    """One real registry and one reference registry, driven by the same random operations."""

    BACKEND = "memory"
    DSN = ""

    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock(START_MS)
        self.options = StoreOptions(clock=self.clock)
        self.tmp: str | None = None
        self.schema: str | None = None
        if self.BACKEND == "memory":
            self.real: Any = ProcessRegistry.memory(self.options)
        elif self.BACKEND == "file":
            self.tmp = tempfile.mkdtemp(prefix="lash-registry-stateful-")
            self.real = ProcessRegistry.open(Path(self.tmp) / "deployment.db", self.options)
        else:
            assert self.DSN, "the postgres machine runs under the registry_stateful_dsn fixture"
            self.schema = f"reg_{uuid.uuid4().hex[:12]}"
            self.real = PostgresProcessRegistry.open(self.DSN, self.options, schema=self.schema)
        self.ref = ReferenceProcessRegistry(self.options)
        self.sides = (self.real, self.ref)
        self.tokens: tuple[dict[str, str], dict[str, str]] = ({}, {})
        self.leases: list[tuple[ProcessLease, ProcessLease]] = []

    def teardown(self) -> None:
        self.real.close()
        self.ref.close()
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
        if self.schema is not None:
            with psycopg.connect(self.DSN, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA {self.schema} CASCADE")

    # -- comparing -------------------------------------------------------

    def both(
        self, op: Callable[[Any], Any], per_side: Callable[[Any, int], Any] | None = None
    ) -> tuple[Outcome, Outcome]:
        """Run an operation on both registries (``per_side`` when it takes side-specific arguments); compare."""
        if per_side is not None:
            real, ref = _call(lambda r: per_side(r, REAL), self.real), _call(lambda r: per_side(r, REF), self.ref)
        else:
            real, ref = _call(op, self.real), _call(op, self.ref)
        self.learn(real, ref)
        TALLY["ok" if real[0] else type(real[1]).__name__] += 1
        if real[0] and ref[0]:
            a, b = self.norm(real[1], REAL), self.norm(ref[1], REF)
            assert a == b, f"results differ:\n  real:      {a!r}\n  reference: {b!r}"
        elif not real[0] and not ref[0]:
            a, b = self.error_key(real[1]), self.error_key(ref[1])
            assert a == b, f"errors differ:\n  real:      {real[1]!r}\n  reference: {ref[1]!r}"
        else:
            raise AssertionError(f"outcomes differ:\n  real:      {real[1]!r}\n  reference: {ref[1]!r}")
        return real, ref

    @staticmethod
    def error_key(exc: Exception) -> tuple[Any, ...]:
        if isinstance(exc, InvalidInput):
            return type(exc), exc.what
        return type(exc), str(exc)

    def learn(self, real: Outcome, ref: Outcome) -> None:
        """Name the tokens of new leases (both sides' in creation order) so results compare equal."""
        new = real[0] and ref[0] and isinstance(real[1], ProcessLease) and isinstance(ref[1], ProcessLease)
        if new and real[1].lease_token not in self.tokens[REAL]:
            name = f"L{len(self.leases)}"
            self.tokens[REAL][real[1].lease_token] = self.tokens[REF][ref[1].lease_token] = name
            self.leases.append((real[1], ref[1]))

    def norm(self, value: Any, side: int) -> Any:
        if isinstance(value, ProcessLease):
            return msgspec.structs.replace(value, lease_token=self.tokens[side].get(value.lease_token, "?"))
        if isinstance(value, list):
            return [self.norm(item, side) for item in value]
        return value

    def lease_for(self, pid: str, fence: str, side: int) -> ProcessLease | None:
        mine = [pair[side] for pair in self.leases if pair[side].process_id == pid]
        if fence == "none" or not mine:
            return None
        lease = mine[0] if fence == "oldest" else mine[-1]
        if fence == "forged_owner":
            return msgspec.structs.replace(lease, owner_id="intruder")
        if fence == "forged_fence":
            return msgspec.structs.replace(lease, fencing_token=lease.fencing_token + 1)
        return lease

    # -- rules -----------------------------------------------------------

    @initialize()
    def two_processes(self) -> None:
        """Most sequences should be about processes that exist; p2 is registered (or not) at random later."""
        for pid, owner in (("p0", "root"), ("p1", "s1")):
            self.both(lambda r, pid=pid, owner=owner: r.register_process(bare(pid, *TYPES, owner=owner)))

    @rule(pid=st.sampled_from(PIDS), variant=st.sampled_from([0, 0, 0, 1]), owner=st.sampled_from(["root", "s1"]))
    def register(self, pid: str, variant: int, owner: str) -> None:
        types = TYPES if variant == 0 else [*TYPES, plain("extra")]
        self.both(lambda r: r.register_process(bare(pid, *types, owner=owner)))

    @rule(
        pid=st.sampled_from(PIDS),
        event_type=st.sampled_from(EVENT_TYPES),
        payload=st.sampled_from(PAYLOADS),
        key=st.sampled_from(KEYS),
        wake_to=st.sampled_from(TARGETS),
        fence=st.sampled_from(FENCES),
    )
    def append(self, pid: str, event_type: str, payload: Any, key: str | None, wake_to: Any, fence: str) -> None:
        request = ProcessEventAppendRequest(
            event_type=event_type,
            payload=payload,
            replay=None if key is None else ProcessReplay(key=key),
            wake_target_scope=wake_to,
        )
        self.both(None, lambda r, side: r.append_event(pid, request, lease=self.lease_for(pid, fence, side)))

    @rule(pid=st.sampled_from(PIDS), reason=st.sampled_from([None, "a", "b"]))
    def cancel(self, pid: str, reason: str | None) -> None:
        self.both(lambda r: r.append_event(pid, ProcessEventAppendRequest.cancel_requested(pid, reason)))

    @rule(pid=st.sampled_from(PIDS), output=st.sampled_from(OUTPUTS), fence=st.sampled_from(FENCES))
    def complete(self, pid: str, output: ProcessAwaitOutput, fence: str) -> None:
        self.both(None, lambda r, side: r.complete_process(pid, output, lease=self.lease_for(pid, fence, side)))

    @rule(pid=st.sampled_from(PIDS), job=st.sampled_from(["j1", "j2"]))
    def external_ref(self, pid: str, job: str) -> None:
        self.both(lambda r: r.set_external_ref(pid, ProcessExternalRef(backend="b", id=job, metadata={"j": job})))

    @rule(scope=st.sampled_from(SCOPES), pid=st.sampled_from(PIDS), kind=st.sampled_from([None, "tool"]))
    def grant(self, scope: ProcessScope, pid: str, kind: str | None) -> None:
        self.both(lambda r: r.grant_handle(scope, pid, ProcessHandleDescriptor(kind=kind, label="l")))

    @rule(scope=st.sampled_from(SCOPES), pid=st.sampled_from(PIDS))
    def revoke(self, scope: ProcessScope, pid: str) -> None:
        self.both(lambda r: r.revoke_handle(scope, pid))

    @rule(
        giver=st.sampled_from(SCOPES),
        taker=st.sampled_from(SCOPES),
        pids=st.lists(st.sampled_from(PIDS), max_size=2),
    )
    def transfer(self, giver: ProcessScope, taker: ProcessScope, pids: list[str]) -> None:
        self.both(lambda r: r.transfer_handle_grants(giver, taker, pids))

    @rule(session=st.sampled_from(SESSIONS))
    def delete_session(self, session: str) -> None:
        self.both(lambda r: r.delete_session_process_state(session))

    @rule(pid=st.sampled_from(PIDS), owner=st.sampled_from(OWNERS), ttl=st.sampled_from(TTLS))
    def claim(self, pid: str, owner: str, ttl: int) -> None:
        self.both(lambda r: r.claim_process_lease(pid, owner, ttl))

    @rule(
        pick=st.integers(0, 20),
        ttl=st.sampled_from(TTLS),
        fence=st.sampled_from(["latest", "forged_owner", "forged_fence"]),
    )
    def renew(self, pick: int, ttl: int, fence: str) -> None:
        if not self.leases:
            return
        pid = self.leases[-1 - pick % len(self.leases)][REF].process_id
        self.both(None, lambda r, side: r.renew_process_lease(self.lease_for(pid, fence, side), ttl))

    @rule(pick=st.integers(0, 20))
    def release(self, pick: int) -> None:
        if not self.leases:
            return
        index = -1 - pick % len(self.leases)
        self.both(None, lambda r, side: r.complete_process_lease(self.leases[index][side].completion()))

    @rule(pid=st.sampled_from(PIDS), sequence=st.integers(1, 4))
    def ack(self, pid: str, sequence: int) -> None:
        self.both(lambda r: r.ack_wake(pid, sequence))

    @rule(ms=st.sampled_from(ADVANCES))
    def advance(self, ms: int) -> None:
        self.clock.advance(ms)

    @rule(back=st.sampled_from([0, 50, 1_000, 10**9]), dry_run=st.booleans(), limit=st.sampled_from([None, 1]))
    def prune(self, back: int, dry_run: bool, limit: int | None) -> None:
        self.both(lambda r: r.prune_processes(max(0, self.clock() - back), limit=limit, dry_run=dry_run))

    @rule(pid=st.sampled_from(PIDS), event_type=st.sampled_from(EVENT_TYPES), after=st.integers(0, 3))
    def wait_now(self, pid: str, event_type: str, after: int) -> None:
        self.both(lambda r: r.wait_event_after(pid, event_type, after, timeout_ms=0))
        self.both(lambda r: r.await_process(pid, timeout_ms=0))

    @rule(call=st.sampled_from(INVALID_CALLS))
    def invalid(self, call: Callable[[Any], Any]) -> None:
        real, _ = self.both(call)
        assert not real[0] and isinstance(real[1], InvalidInput), real

    @rule(pid=st.sampled_from([*PIDS, "ghost"]), scope=st.sampled_from(SCOPES), after=st.integers(0, 2))
    def read(self, pid: str, scope: ProcessScope, after: int) -> None:
        self.both(lambda r: r.get_process(pid))
        self.both(lambda r: r.events_after(pid, after))
        self.both(lambda r: r.wake_events_after(pid, after))
        self.both(lambda r: r.handle_grants_for_process(pid))
        self.both(lambda r: r.get_process_lease(pid))
        self.both(lambda r: r.list_handle_grants(scope))
        self.both(lambda r: r.list_live_handle_grants(scope))
        self.both(lambda r: r.has_handle_grant(scope, pid))
        self.both(lambda r: r.list_non_terminal())
        self.both(lambda r: r.list_processes(state="terminal", limit=2))

    # -- every stored row, after every step --------------------------------

    @invariant()
    def same_rows(self) -> None:
        real, ref = self.real.raw_rows(), self.ref.raw_rows()
        for side, rows in ((REAL, real), (REF, ref)):
            rows["lease"] = [(*row[:2], self.tokens[side].get(row[2], row[2]), *row[3:]) for row in rows["lease"]]
        assert real == ref, f"stored rows differ:\n  real:      {real!r}\n  reference: {ref!r}"


class FileRegistryMachine(RegistryMachine):
    BACKEND = "file"


class PostgresRegistryMachine(RegistryMachine):
    BACKEND = "postgres"


MACHINES = {"memory": RegistryMachine, "file": FileRegistryMachine, "postgres": PostgresRegistryMachine}

SHORT = settings(
    max_examples=40,
    stateful_step_count=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@pytest.fixture
def registry_stateful_dsn(request: pytest.FixtureRequest) -> Iterator[None]:
    """A database for the PostgreSQL machine (only started when that machine runs)."""
    callspec = getattr(request.node, "callspec", None)
    if (callspec is None or callspec.params.get("backend") != "postgres") and "long" not in request.node.name:
        yield
        return
    server = request.getfixturevalue("pg_server")
    name = f"lash_reg_stateful_{uuid.uuid4().hex[:8]}"
    PostgresRegistryMachine.DSN = server.create_database(name)
    try:
        yield
    finally:
        close_shared_pools()
        server.drop_database(name)
        PostgresRegistryMachine.DSN = ""


@pytest.mark.parametrize("backend", sorted(MACHINES))
@pytest.mark.usefixtures("registry_stateful_dsn")
def test_real_registry_agrees_with_reference(backend: str, capsys: pytest.CaptureFixture[str]) -> None:
    TALLY.clear()
    run_state_machine_as_test(MACHINES[backend], settings=SHORT)
    with capsys.disabled():
        print(f" [{sum(TALLY.values())} registry calls on {backend}: {dict(TALLY.most_common(8))}]", end="")
    assert TALLY["ok"] > 100 and len(TALLY) > 5  # the sequences do reach successes and many kinds of errors


@pytest.mark.slow
@pytest.mark.timeout(0)
@pytest.mark.usefixtures("registry_stateful_dsn")
def test_real_registry_agrees_with_reference_long() -> None:
    examples = int(os.environ.get("LASH_STATEFUL_EXAMPLES", "300"))
    steps = int(os.environ.get("LASH_STATEFUL_STEPS", "80"))
    for backend in sorted(MACHINES):
        run_state_machine_as_test(
            MACHINES[backend], settings=settings(SHORT, max_examples=examples, stateful_step_count=steps)
        )

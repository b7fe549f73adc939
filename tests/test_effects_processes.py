"""The effect journal across real processes, on a SQLite deployment file and on PostgreSQL.

* 4 processes execute the same 200 envelopes at once: each executor body runs exactly once per
  envelope (every body leaves a mark file) and every caller gets the same outcome;
* a process SIGKILLed in the middle of an effect: another process takes the effect over once the
  lease has expired, and the journal keeps the survivor's outcome;
* an effect running for 3x the lease TTL in a live process is never taken over: its heartbeat
  renews the lease, and a concurrent caller in another process waits for its outcome.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from queue import Queue
from typing import Any

import pytest

from lash_store.effects import (
    EffectReplayOptions,
    EffectScope,
    RuntimeEffectCommand,
    RuntimeEffectEnvelope,
    RuntimeEffectOutcome,
    RuntimeScope,
)
from lash_store.errors import RuntimeEffectControllerError
from lash_store.service.effects.service import EffectHostService
from tests.pgproc import FORK, failure, run_processes

SCOPE = EffectScope.turn("proc-session", "proc-turn")
WORKERS = 4
ENVELOPES = 200

Target = tuple[str, str, str]  # (backend, dsn or path, schema)


def open_host(target: Target, **options: Any) -> EffectHostService:
    backend, where, schema = target
    replay = EffectReplayOptions(**options)
    if backend == "sqlite":
        from lash_store.sqlite.effects import EffectHost

        return EffectHost.open(where, replay_options=replay)
    from lash_store.postgres.effects import PostgresEffectHost

    return PostgresEffectHost.open(where, replay_options=replay, schema=schema)


def envelope(key: str) -> RuntimeEffectEnvelope:
    scope = RuntimeScope(session_id="proc-session", turn_id="proc-turn", turn_index=1)
    return RuntimeEffectEnvelope.new(scope, key, key, RuntimeEffectCommand.tool_call({"charge": key}))


def marking_body(marks: Path) -> Any:
    def body(env: RuntimeEffectEnvelope) -> RuntimeEffectOutcome:
        (marks / f"{env.replay_key}.{os.getpid()}.{uuid.uuid4().hex}").touch()
        return RuntimeEffectOutcome.tool_call({"runner": os.getpid(), "nonce": uuid.uuid4().hex})

    return body


@pytest.fixture(params=["sqlite", "postgres"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    if request.param == "sqlite":
        yield ("sqlite", str(tmp_path / "deployment.db"), "")
        return
    request.applymarker(pytest.mark.postgres)
    dsn = request.getfixturevalue("pg_dsn")
    yield ("postgres", dsn, "lash")


# ---------------------------------------------------------------------------
# Workers (module level: children find them by name)


def execute_all(queue: Queue[Any], target: Target, marks: str, start_at: float) -> None:
    try:
        host = open_host(target, lease_ttl_ms=5_000)
        controller = host.scoped(SCOPE)
        body = marking_body(Path(marks))
        time.sleep(max(0.0, start_at - time.time()))  # start together: every envelope is contended
        seen = {}
        for index in range(ENVELOPES):
            result = controller.execute_effect(envelope(f"charge-{index}"), body)
            seen[f"charge-{index}"] = result.value["nonce"]
        host.close()
        queue.put(("ok", os.getpid(), seen))
    except BaseException as exc:
        queue.put(failure(exc))


def hang_in_effect(target: Target, marks: str, ttl_ms: int) -> None:
    host = open_host(target, lease_ttl_ms=ttl_ms)

    def body(env: RuntimeEffectEnvelope) -> RuntimeEffectOutcome:
        (Path(marks) / "entered").touch()
        time.sleep(3600)  # killed here
        raise AssertionError("unreachable")

    host.scoped(SCOPE).execute_effect(envelope("killed"), body)


def run_long_effect(queue: Queue[Any], target: Target, marks: str, ttl_ms: int) -> None:
    try:
        host = open_host(target, lease_ttl_ms=ttl_ms)

        def body(env: RuntimeEffectEnvelope) -> RuntimeEffectOutcome:
            (Path(marks) / f"long.{os.getpid()}").touch()
            (Path(marks) / "entered").touch()
            time.sleep(3 * ttl_ms / 1000)
            return RuntimeEffectOutcome.tool_call({"runner": os.getpid()})

        result = host.scoped(SCOPE).execute_effect(envelope("long"), body)
        queue.put(("ok", result.value))
    except BaseException as exc:
        queue.put(failure(exc))


def wait_for(path: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} did not appear within {timeout_s} s"
        time.sleep(0.01)


# ---------------------------------------------------------------------------


def test_four_processes_execute_the_same_200_envelopes_once_each(target: Target, tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    open_host(target).close()  # create the schema once, before the race
    start_at = time.time() + 1.0
    jobs = [(execute_all, (target, str(marks), start_at)) for _ in range(WORKERS)]
    reports = run_processes(jobs, timeout_s=300, ctx=FORK)
    keys = [f"charge-{index}" for index in range(ENVELOPES)]
    bodies: dict[str, int] = {key: 0 for key in keys}
    for mark in marks.iterdir():
        bodies[mark.name.split(".")[0]] += 1
    assert bodies == {key: 1 for key in keys}, "an executor body ran more (or less) than once"
    outcomes = [report[2] for report in reports]
    assert all(seen == outcomes[0] for seen in outcomes), "callers saw different outcomes"
    runners = {mark.name.split(".")[1] for mark in marks.iterdir()}
    assert len(runners) >= 1
    with open_host(target) as host:
        rows = host.list_journal(scope=SCOPE)
        assert len(rows) == ENVELOPES
        assert {row.status for row in rows} == {"completed"}
        assert {row.attempts for row in rows} == {1}


def test_a_sigkilled_claimant_is_taken_over_after_the_ttl(target: Target, tmp_path: Path) -> None:
    ttl_ms = 1_000
    open_host(target).close()
    victim = FORK.Process(target=hang_in_effect, args=(target, str(tmp_path), ttl_ms), daemon=True)
    victim.start()
    try:
        wait_for(tmp_path / "entered", 60)
        time.sleep(0.5)  # the victim's heartbeat has renewed the lease at least once
        os.kill(victim.pid or 0, signal.SIGKILL)
        killed_at = time.monotonic()
        victim.join(10)
        assert victim.exitcode == -signal.SIGKILL
    finally:
        if victim.is_alive():
            victim.kill()
    marks = tmp_path / "marks"
    marks.mkdir()
    with open_host(target, lease_ttl_ms=ttl_ms) as survivor:
        result = survivor.scoped(SCOPE).execute_effect(envelope("killed"), marking_body(marks))
        waited = time.monotonic() - killed_at
        assert result.value["runner"] == os.getpid()
        assert 0.3 <= waited < 30  # it waited for the dead claim's lease to expire, then took over
        (row,) = survivor.list_journal(scope=SCOPE)
        assert (row.status, row.attempts) == ("completed", 2)
        assert row.outcome == result
    with open_host(target) as later:
        controller = later.scoped(SCOPE, replay=True)

        def never(env: RuntimeEffectEnvelope) -> RuntimeEffectOutcome:
            raise RuntimeEffectControllerError("test", "must not run")

        assert controller.execute_effect(envelope("killed"), never) == result  # the survivor's outcome
    assert len(list(marks.iterdir())) == 1


def test_a_long_effect_with_a_live_heartbeat_is_never_taken_over(target: Target, tmp_path: Path) -> None:
    ttl_ms = 400
    open_host(target).close()
    queue = FORK.Queue()
    runner = FORK.Process(target=run_long_effect, args=(queue, target, str(tmp_path), ttl_ms), daemon=True)
    runner.start()
    try:
        wait_for(tmp_path / "entered", 60)
        calls: list[str] = []

        def second(env: RuntimeEffectEnvelope) -> RuntimeEffectOutcome:
            calls.append("second")
            return RuntimeEffectOutcome.tool_call({"runner": "second"})

        with open_host(target, lease_ttl_ms=ttl_ms) as other:
            result = other.scoped(SCOPE).execute_effect(envelope("long"), second)
            (row,) = other.list_journal(scope=SCOPE)
        report = queue.get(timeout=60)
        assert report[0] == "ok", report
        runner.join(30)
        assert runner.exitcode == 0
    finally:
        if runner.is_alive():
            runner.kill()
    assert calls == []
    assert result.value == report[1] == {"runner": runner.pid}
    assert (row.status, row.attempts) == ("completed", 1)
    assert len(list(tmp_path.glob("long.*"))) == 1

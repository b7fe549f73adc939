"""Crash safety of the process registry: workers SIGKILLed at random moments, on SQLite and on PostgreSQL.

* A worker killed between claiming a process and completing it: the next worker (a new owner, once the
  dead one's lease has run out) re-runs the process from the start.  Every event a worker acknowledged is
  present exactly once (replay keys make the re-run append nothing twice), sequences are dense, no row
  is torn (every event decodes; SQLite's integrity check passes), every process ends exactly once.
* A worker killed in the middle of ``delete_session_process_state``: at every kill, each session's grants
  are either all there (not deleted yet) or all gone -- and then every process no other session holds has
  its cancel request.  At the end every process has exactly one.

Acknowledgements go to a file, one ``os.write`` per line, after the call returned.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import signal
import sqlite3
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lash_store.errors import LeaseLost, ProcessAlreadyLeased, ProcessAlreadyTerminal
from lash_store.postgres import close_shared_pools
from lash_store.processes import (
    CANCEL_REQUESTED,
    ProcessAwaitOutput,
    ProcessEventAppendRequest,
    ProcessReplay,
    payload_hash,
)
from lash_store.targets import is_dsn, open_registry
from lash_store.testing.registry_conformance import S, plain, reg

pytestmark = pytest.mark.timeout(240)

FORK = multiprocessing.get_context("fork")
JOBS = 40
STEPS = 4
LEASE_MS = 250
SESSIONS = 150
KILLS = 25
# A worker is killed this long after it started (SQLite writes take well under a millisecond, PostgreSQL's a
# few): early enough that most kills land in the middle of the work, late enough that every run gets some done.
KILL_AFTER_S = (0.002, 0.06)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield str(tmp_path / "deployment.db")
        return
    dsn: str = request.getfixturevalue("pg_dsn")
    yield dsn
    close_shared_pools()


def _ack(fd: int, *words: object) -> None:
    os.write(fd, (" ".join(str(word) for word in words) + "\n").encode())


def _acks(path: Path) -> list[list[str]]:
    try:
        return [line.split() for line in path.read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        return []


def _campaign(target: str, ack_path: Path, child: Any, done: str, seed: int) -> int:
    """Run ``child`` and SIGKILL it at random moments (restarting it) until it acknowledges ``done``; kills."""
    rng = random.Random(seed)
    kills = 0
    deadline = time.monotonic() + 180
    while not any(line[:1] == [done] for line in _acks(ack_path)):
        assert time.monotonic() < deadline, "the campaign did not finish"
        process = FORK.Process(target=child, args=(target, str(ack_path), rng.randrange(2**32)), daemon=True)
        process.start()
        if kills < KILLS:
            # Kill once the worker has acknowledged a few more lines (a claim, some events): the kill lands in
            # the middle of the work however fast the machine is; a time limit covers a worker that is waiting.
            target_acks = len(_acks(ack_path)) + rng.randint(1, 2 * STEPS)
            give_up = time.monotonic() + rng.uniform(*KILL_AFTER_S) * 20
            while process.is_alive() and len(_acks(ack_path)) < target_acks and time.monotonic() < give_up:
                time.sleep(0.0005)
            if process.is_alive():
                os.kill(process.pid, signal.SIGKILL)
                kills += 1
        process.join(120)
        assert not process.is_alive()
        assert process.exitcode in (0, -signal.SIGKILL), f"the worker failed (exit {process.exitcode})"
    return kills


def _check_storage(target: str) -> None:
    """The database is intact and every event row is whole: its payload still hashes to its stored hash."""
    if not is_dsn(target):
        conn = sqlite3.connect(target)
        try:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        finally:
            conn.close()
    with open_registry(target) as registry:
        for process_id, sequence, event_type, payload, stored_hash, *_ in registry.raw_rows()["event"]:
            assert payload_hash(event_type, json.loads(payload)) == stored_hash, f"{process_id} #{sequence} is torn"


# ---------------------------------------------------------------------------
# Killed between claiming and completing


def _step_request(pid: str, step: int) -> ProcessEventAppendRequest:
    return ProcessEventAppendRequest(
        event_type="progress", payload={"job": pid, "step": step}, replay=ProcessReplay(key=f"{pid}:step:{step}")
    )


def _job_worker(target: str, ack_path: str, seed: int) -> None:
    fd = os.open(ack_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    owner = f"worker-{uuid.uuid4().hex[:8]}"
    rng = random.Random(seed)
    try:
        with open_registry(target) as registry:
            while todo := [record.id for record in registry.list_non_terminal()]:
                rng.shuffle(todo)
                for pid in todo:
                    try:
                        lease = registry.claim_process_lease(pid, owner, LEASE_MS)
                    except (ProcessAlreadyLeased, ProcessAlreadyTerminal):
                        continue
                    _ack(fd, "claim", pid, lease.fencing_token)
                    try:
                        for step in range(STEPS):
                            event = registry.append_event(pid, _step_request(pid, step), lease=lease).event
                            _ack(fd, "event", pid, event.sequence, step)
                        registry.complete_process(pid, ProcessAwaitOutput.success({"job": pid}), lease=lease)
                        _ack(fd, "completed", pid)
                        registry.complete_process_lease(lease.completion())
                    except LeaseLost:
                        continue  # too slow: another worker runs it (appends replay, nothing twice)
                time.sleep(0.01)
        _ack(fd, "done")
    finally:
        os.close(fd)
        close_shared_pools()


def test_workers_killed_between_claim_and_completion(target: str, tmp_path: Path) -> None:
    with open_registry(target) as registry:
        for index in range(JOBS):
            registry.register_process(reg(f"job-{index:02d}", plain("progress")))
    ack_path = tmp_path / "acks"
    kills = _campaign(target, ack_path, _job_worker, "done", random.randrange(2**32))
    assert kills >= 5, f"only {kills} kills landed: the campaign proved little"
    acks = _acks(ack_path)
    acknowledged = {(pid, int(step)): int(sequence) for _, pid, sequence, step in (a for a in acks if a[0] == "event")}
    claims = Counter(ack[1] for ack in acks if ack[0] == "claim")
    assert max(claims.values()) > 1, "no process was re-run after its holder was killed"
    _check_storage(target)
    with open_registry(target) as registry:
        assert registry.list_non_terminal() == []
        for index in range(JOBS):
            pid = f"job-{index:02d}"
            events = registry.events_after(pid, 0)  # decodes every row: nothing is torn
            assert [event.sequence for event in events] == list(range(1, STEPS + 2)), f"{pid}: sequences"
            steps = [event.payload["step"] for event in events[:-1]]
            assert steps == list(range(STEPS)), f"{pid}: each step exactly once, in order: {steps}"
            assert events[-1].semantics.terminal is not None
            for event in events[:-1]:
                assert acknowledged.get((pid, event.payload["step"]), event.sequence) == event.sequence
        for (pid, step), sequence in acknowledged.items():  # every acknowledged event is there, where it was
            assert registry.events_after(pid, sequence - 1, limit=1)[0].payload == {"job": pid, "step": step}


# ---------------------------------------------------------------------------
# Killed in the middle of deleting sessions


def _layout() -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Each session holds two processes of its own and shares one with the next session (a ring)."""
    holders: dict[str, list[str]] = {}
    held: dict[str, list[str]] = {}
    for index in range(SESSIONS):
        session, following = f"s{index:02d}", f"s{(index + 1) % SESSIONS:02d}"
        for pid, sessions in (
            (f"own-{index:02d}-a", [session]),
            (f"own-{index:02d}-b", [session]),
            (f"ring-{index:02d}", [session, following]),
        ):
            holders[pid] = sessions
            for holder in sessions:
                held.setdefault(holder, []).append(pid)
    return holders, held


def _deleter(target: str, ack_path: str, seed: int) -> None:
    fd = os.open(ack_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        deleted = {line.split()[1] for line in Path(ack_path).read_text().splitlines() if line.startswith("deleted")}
        with open_registry(target) as registry:
            for index in range(SESSIONS):
                session = f"s{index:02d}"
                if session not in deleted:
                    report = registry.delete_session_process_state(session, reason="crash test")
                    _ack(fd, "deleted", session, ",".join(report.cancel_process_ids) or "-")
        _ack(fd, "done")
    finally:
        os.close(fd)
        close_shared_pools()


def _check_deletions(target: str, holders: dict[str, list[str]], held: dict[str, list[str]]) -> None:
    """Every session's deletion is whole, and every process nobody holds any more has its cancel request."""
    with open_registry(target) as registry:
        rows = registry.raw_rows()
        granted = Counter(row[2] for row in rows["grant"])  # grants per session
        cancels = Counter(row[0] for row in rows["event"] if row[2] == CANCEL_REQUESTED)
    for session, pids in held.items():
        assert granted[session] in (0, len(pids)), f"{session}: a torn deletion ({granted[session]} grants left)"
    gone = {session for session in held if granted[session] == 0}
    for pid, sessions in holders.items():
        expected = 1 if all(session in gone for session in sessions) else 0
        assert cancels[pid] == expected, f"{pid} held by {sessions}: {cancels[pid]} cancel requests"


def test_workers_killed_in_the_middle_of_session_deletion(target: str, tmp_path: Path) -> None:
    holders, held = _layout()
    with open_registry(target) as registry:
        for pid, sessions in holders.items():
            registry.register_process(reg(pid))
            for session in sessions:
                registry.grant_handle(S(session), pid)
    ack_path = tmp_path / "acks"
    rng = random.Random()
    kills = 0
    deadline = time.monotonic() + 180
    while not any(line[:1] == ["done"] for line in _acks(ack_path)):
        assert time.monotonic() < deadline
        process = FORK.Process(target=_deleter, args=(target, str(ack_path), 0), daemon=True)
        process.start()
        process.join(rng.uniform(0.001, KILL_AFTER_S[1] / 3) if kills < KILLS else 120)
        if process.is_alive():
            os.kill(process.pid, signal.SIGKILL)
            kills += 1
        process.join(60)
        assert process.exitcode in (0, -signal.SIGKILL)
        _check_deletions(target, holders, held)  # after every kill: whole deletions only
    assert kills >= 5, f"only {kills} kills landed"
    _check_storage(target)
    _check_deletions(target, holders, held)
    with open_registry(target) as registry:
        for pid in holders:
            events = registry.events_after(pid, 0)
            assert [event.event_type for event in events] == [CANCEL_REQUESTED]
            assert events[0].payload == {"reason": "crash test"}

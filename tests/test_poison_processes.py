"""Poison work across real processes: a batch that SIGKILLs every worker that claims it.

Three worker processes serve one queue (on a SQLite file, then on PostgreSQL) under a
:class:`~lash_store.PoisonPolicy`; a supervisor (the test) restarts every worker that dies.  The
poisoned batch kills its worker ``MAX_ATTEMPTS`` times -- each time its lease has to run out and the
backoff to pass before it is offered again -- and then waits on the dead-letter list.  Meanwhile a
producer keeps enqueueing healthy messages: each is answered exactly once (one commit with its own
turn stamp), and none waits longer than the backoff bound between being enqueued and being claimed.
Re-queueing the dead letter resets its attempts: it kills ``MAX_ATTEMPTS`` more workers before it is
set aside again.  Real wall clock, real ``SIGKILL``.
"""

from __future__ import annotations

import itertools
import json
import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lash_store import PoisonPolicy, StoreOptions
from lash_store.model import QueuedWorkBatch, QueuedWorkClaimBoundary, TextItem, TurnCommitStamp
from lash_store.options import system_clock
from lash_store.service.session import SessionService
from lash_store.targets import open_store
from lash_store.testing.pgserver import PostgresServer
from tests.helpers import commit_at, draft
from tests.pg import scratch_database

QUEUE = "root"
WORKERS = 3
MAX_ATTEMPTS = 3
LEASE_MS = 1_000  # how long a killed worker's claim holds the poisoned batch
POLICY = PoisonPolicy(max_attempts=MAX_ATTEMPTS, backoff_base_ms=500, backoff_max_ms=2_000, jitter=0.5)
HEALTHY = 40
ENQUEUE_EVERY_S = 0.1
ROUND_TIMEOUT_S = 120


def _open(target: str, partition: str | None) -> SessionService:
    return open_store(target, partition, options=StoreOptions(poison=POLICY))


def _text(batch: QueuedWorkBatch) -> str:
    payload = batch.items[0].payload
    assert payload.input is not None and isinstance(payload.input.items[0], TextItem)
    return payload.input.items[0].text


def _log(path: str, **entry: Any) -> None:
    with open(path, "a", encoding="utf-8") as log:  # one short line per write: appends do not interleave
        log.write(json.dumps(entry) + "\n")
        log.flush()
        os.fsync(log.fileno())


def _worker(target: str, partition: str | None, log_path: str, stop_path: str) -> None:
    """Claim one batch at a time; a poisoned one kills this process, any other is answered by a commit."""
    owner = f"worker-{os.getpid()}"
    with _open(target, partition) as store:
        _log(log_path, event="ready", pid=os.getpid())
        while not os.path.exists(stop_path):
            held = store.claim_ready_queued_work(QUEUE, owner, QueuedWorkClaimBoundary.IDLE, LEASE_MS, 1)
            if held is None:
                time.sleep(0.02)
                continue
            batch = held.batches[0]
            text = _text(batch)
            _log(log_path, event="claimed", text=text, batch_id=batch.batch_id, at_ms=held.claimed_at_epoch_ms)
            if text == "poison":
                os.kill(os.getpid(), signal.SIGKILL)
            stamp = TurnCommitStamp(session_id=QUEUE, turn_id=batch.batch_id, turn_commit_hash=text)
            commit = commit_at(QUEUE, None, turn_state={"answered": text})
            store.commit_runtime_state(commit.with_turn_commit(stamp).completing_queue_claim(held.completion()))
            _log(log_path, event="answered", text=text, batch_id=batch.batch_id, at_ms=system_clock())


class Supervisor:
    """Keeps ``WORKERS`` worker processes running, restarting each that dies; counts how they ended."""

    def __init__(self, target: str, partition: str | None, directory: Path) -> None:
        self.args = (target, partition, str(directory / "claims.log"), str(directory / "stop"))
        self.log_path, self.stop_path = Path(self.args[2]), Path(self.args[3])
        self.context = multiprocessing.get_context("spawn")
        self.processes = [self._start() for _ in range(WORKERS)]
        self.exit_codes: list[int | None] = []

    def _start(self) -> Any:
        process = self.context.Process(target=_worker, args=self.args, daemon=True)
        process.start()
        return process

    def tend(self) -> None:
        for index, process in enumerate(self.processes):
            if not process.is_alive():
                process.join()
                self.exit_codes.append(process.exitcode)
                self.processes[index] = self._start()

    def kills(self) -> int:
        return self.exit_codes.count(-signal.SIGKILL)

    def stop(self) -> None:
        self.stop_path.touch()
        for process in self.processes:
            process.join(timeout=60)
            if process.is_alive():
                process.kill()
                process.join()
            self.exit_codes.append(process.exitcode)

    def entries(self) -> list[dict[str, Any]]:
        if not self.log_path.exists():
            return []
        return [json.loads(line) for line in self.log_path.read_text(encoding="utf-8").splitlines()]


def _run_until(supervisor: Supervisor, done: Callable[[], bool], produce: Callable[[], None]) -> None:
    deadline = time.monotonic() + ROUND_TIMEOUT_S
    while not done():
        assert time.monotonic() < deadline, f"no outcome after {ROUND_TIMEOUT_S} s: {supervisor.exit_codes}"
        produce()
        supervisor.tend()
        time.sleep(0.05)


def _poison_campaign(target: str, partition: str | None, directory: Path) -> None:
    with _open(target, partition) as store:
        poison = store.enqueue_queued_work(draft(QUEUE, "poison"))
        healthy: dict[str, int] = {}  # batch id -> enqueued at
        last_enqueue = [0.0]

        def produce() -> None:
            if len(healthy) < HEALTHY and time.monotonic() - last_enqueue[0] >= ENQUEUE_EVERY_S and ready():
                batch = store.enqueue_queued_work(draft(QUEUE, f"message {len(healthy)}"))
                healthy[batch.batch_id] = batch.enqueued_at_ms
                last_enqueue[0] = time.monotonic()

        def settled() -> bool:
            answered = len(healthy) == HEALTHY and store.list_queued_work(QUEUE) == []
            return answered and [letter.batch for letter in store.list_dead_letters(QUEUE)] == [poison]

        supervisor = Supervisor(target, partition, directory)
        started: list[bool] = []

        def ready() -> bool:  # messages flow once the first workers are up (a start is not a poison's delay)
            if not started and sum(entry["event"] == "ready" for entry in supervisor.entries()) >= WORKERS:
                started.append(True)
            return bool(started)

        try:
            # Round 1: the poison kills MAX_ATTEMPTS workers and is set aside; every healthy message is answered.
            _run_until(supervisor, settled, produce)
            letter = store.get_dead_letter(QUEUE, poison.batch_id)
            assert letter is not None and letter.attempts == MAX_ATTEMPTS
            assert letter.last_error is None  # nobody abandoned it: every attempt ended with a killed worker
            kills_in_round_1 = supervisor.kills()

            # Round 2: re-queued, its attempts start from zero again.
            assert store.requeue_dead_letter(QUEUE, poison.batch_id) == poison
            assert store.list_dead_letters(QUEUE) == []
            _run_until(supervisor, lambda: bool(store.list_dead_letters(QUEUE)), lambda: None)
            again = store.get_dead_letter(QUEUE, poison.batch_id)
            assert again is not None and again.attempts == MAX_ATTEMPTS
        finally:
            supervisor.stop()

        entries = supervisor.entries()
        claims = [entry for entry in entries if entry["event"] == "claimed"]
        poison_claims = [entry for entry in claims if entry["text"] == "poison"]
        # Each attempt killed its worker, and only the poison ever killed one.
        assert kills_in_round_1 == MAX_ATTEMPTS
        assert supervisor.kills() == len(poison_claims) == 2 * MAX_ATTEMPTS
        assert [code for code in supervisor.exit_codes if code != -signal.SIGKILL] == [0] * WORKERS
        # Backoff: after failed attempt n the poison was not offered before its lease ran out plus half of
        # min(base * 2**(n-1), max) (the jitter only shortens the backoff, by at most half).
        for round_claims in (poison_claims[:MAX_ATTEMPTS], poison_claims[MAX_ATTEMPTS:]):
            for attempt, (before, after) in enumerate(itertools.pairwise(round_claims), start=1):
                backoff = min(POLICY.backoff_base_ms << (attempt - 1), POLICY.backoff_max_ms)
                assert after["at_ms"] - before["at_ms"] >= LEASE_MS + backoff // 2, (attempt, before, after)

        # Every healthy message was claimed once and answered once ...
        answered = [entry["batch_id"] for entry in entries if entry["event"] == "answered"]
        healthy_claims = [entry for entry in claims if entry["text"] != "poison"]
        assert sorted(answered) == sorted(healthy) == sorted(entry["batch_id"] for entry in healthy_claims)
        read = store.load_session()
        assert read is not None and read.head_revision == HEALTHY
        # ... and none waited longer than the backoff bound for it, though workers kept dying around it.
        waits = {entry["batch_id"]: entry["at_ms"] - healthy[entry["batch_id"]] for entry in healthy_claims}
        assert max(waits.values()) <= POLICY.backoff_max_ms, sorted(waits.values())[-5:]
        print(
            f"poison: {supervisor.kills()} workers killed; {HEALTHY} messages answered once, "
            f"longest wait {max(waits.values())} ms (bound {POLICY.backoff_max_ms} ms)"
        )

        assert store.drop_dead_letter(QUEUE, poison.batch_id) is not None
        assert store.list_dead_letters(QUEUE) == [] and store.list_queued_work(QUEUE) == []


def test_a_batch_that_kills_its_worker_ends_dead_lettered_on_sqlite(tmp_path: Path) -> None:
    _poison_campaign(str(tmp_path / "session.db"), None, tmp_path)


@pytest.mark.postgres
def test_a_batch_that_kills_its_worker_ends_dead_lettered_on_postgres(
    tmp_path: Path, pg_server: PostgresServer
) -> None:
    from lash_store.postgres import setup

    with scratch_database(pg_server, "lash_poison") as dsn:
        setup(dsn)
        _poison_campaign(dsn, "poison-session", tmp_path)

"""The process registry under real processes, on SQLite (one deployment file) and on PostgreSQL.

* 8 worker processes race to claim leases on 50 unfinished processes, run them (fenced appends, renewals,
  a fenced terminal write) and release them; some holders stall past their lease.  Afterwards: every
  process ended exactly once, by the holder of its highest fencing token; fencing tokens grew strictly
  with every claim; no lease was claimed while an earlier one was still live (each process had one live
  holder at a time); every event was written under the lease that was live then; every stalled holder's
  late terminal write was rejected and left nothing.
* A stalled holder's fenced terminal write after a takeover, step by step across three processes.
* A wait in one process wakes within 100 ms (median) of an append in another.

Workers are forked (a forked child reopens its own connection or pool) and report through a queue.
"""

from __future__ import annotations

import itertools
import multiprocessing
import random
import statistics
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lash_store.errors import LeaseLost, ProcessAlreadyLeased, ProcessAlreadyTerminal
from lash_store.postgres import close_shared_pools
from lash_store.processes import ProcessAwaitOutput, ProcessEventAppendRequest
from lash_store.targets import open_registry
from lash_store.testing.registry_conformance import plain, reg
from tests.pgproc import FORK, failure, run_processes

pytestmark = pytest.mark.timeout(180)

PROCESSES = 50
WORKERS = 8
LEASE_MS = 1_000
STALL_S = 1.3  # past the lease: the holder's later writes must all be rejected
DEADLINE_S = 90.0


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield str(tmp_path / "deployment.db")
        return
    dsn: str = request.getfixturevalue("pg_dsn")
    yield dsn
    close_shared_pools()


def _progress(owner: str, fence: int, step: int) -> ProcessEventAppendRequest:
    return ProcessEventAppendRequest(event_type="progress", payload={"owner": owner, "fence": fence, "step": step})


# ---------------------------------------------------------------------------
# 8 workers, 50 processes


def _race_worker(results: Any, target: str, worker: int, stall: list[str], seed: int) -> None:
    try:
        rng = random.Random(seed + worker)
        owner = f"worker-{worker}-{uuid.uuid4().hex[:6]}"
        log: list[tuple[Any, ...]] = []
        deadline = time.monotonic() + DEADLINE_S
        with open_registry(target) as registry:
            while time.monotonic() < deadline:
                todo = [record.id for record in registry.list_non_terminal()]
                if not todo:
                    break
                rng.shuffle(todo)
                for pid in todo:
                    try:
                        lease = registry.claim_process_lease(pid, owner, LEASE_MS)
                    except (ProcessAlreadyLeased, ProcessAlreadyTerminal):
                        continue
                    log.append(
                        ("claim", pid, lease.fencing_token, lease.claimed_at_epoch_ms, lease.expires_at_epoch_ms)
                    )
                    log.extend(_run_one(registry, lease, owner, stalls=pid in stall and lease.fencing_token == 1))
                time.sleep(0.01)
        results.put(("ok", worker, owner, log))
    except BaseException as exc:
        results.put(failure(exc))
    finally:
        close_shared_pools()


def _run_one(registry: Any, lease: Any, owner: str, *, stalls: bool) -> list[tuple[Any, ...]]:
    pid, fence = lease.process_id, lease.fencing_token
    log: list[tuple[Any, ...]] = []
    try:
        for step in range(3):
            registry.append_event(pid, _progress(owner, fence, step), lease=lease)
            if step == 1:
                lease = registry.renew_process_lease(lease, LEASE_MS)
                log.append(("renew", pid, fence, lease.expires_at_epoch_ms))
        if stalls:
            time.sleep(STALL_S)
        registry.complete_process(pid, ProcessAwaitOutput.success({"owner": owner, "fence": fence}), lease=lease)
        log.append(("completed", pid, fence))
        registry.complete_process_lease(lease.completion())
    except LeaseLost:
        log.append(("lost", pid, fence, stalls))
    return log


def test_workers_racing_for_leases_run_each_process_under_one_live_holder_at_a_time(target: str) -> None:
    with open_registry(target) as registry:
        for index in range(PROCESSES):
            registry.register_process(reg(f"job-{index:02d}", plain("progress")))
    stall = [f"job-{index:02d}" for index in range(0, PROCESSES, 5)]  # the first holder of these stalls
    seed = random.randrange(2**32)
    reports = run_processes(
        [(_race_worker, (target, worker, stall, seed)) for worker in range(WORKERS)], timeout_s=150, ctx=FORK
    )
    check_race(target, PROCESSES, [(report[2], report[3]) for report in reports], stall)


def check_race(target: str, processes: int, reports: list[tuple[str, list[tuple[Any, ...]]]], stall: list[str]) -> None:
    """What racing workers reported -- (owner, [("claim", pid, fence, claimed_at, expires_at), ("renew", pid,
    fence, expires_at), ("completed", pid, fence), ("lost", pid, fence, stalled)]) each -- against the registry:
    one live holder at a time, fences 1, 2, 3, ..., every process ended once by its last holder."""
    entries = [entry for report in reports for entry in report[1]]
    owner_of = {(entry[1], entry[2]): report[0] for report in reports for entry in report[1] if entry[0] == "claim"}

    claims: dict[str, list[tuple[int, int, int]]] = defaultdict(list)
    for kind, pid, fence, *rest in entries:
        if kind == "claim":
            claims[pid].append((fence, rest[0], rest[1]))
    expiry = {(pid, fence): expires for pid, rows in claims.items() for fence, _, expires in rows}
    for kind, pid, fence, *rest in entries:
        if kind == "renew":
            expiry[(pid, fence)] = max(expiry[(pid, fence)], rest[0])
    completed = [(pid, fence) for kind, pid, fence, *_ in entries if kind == "completed"]
    lost = [(pid, fence, stalled) for kind, pid, fence, *rest in entries if kind == "lost" for stalled in rest[:1]]

    assert sorted(pid for pid, _ in completed) == sorted(f"job-{i:02d}" for i in range(processes))
    assert {pid for pid, _, stalled in lost if stalled} == set(stall), "every stalled first holder lost its lease"
    assert all(len(claims[pid]) >= 2 for pid in stall), "a stalled process was taken over by another worker"
    assert len({report[0] for report in reports if report[1]}) > 1, "more than one worker ran processes"
    with open_registry(target) as registry:
        assert registry.list_non_terminal() == []
        for pid, rows in claims.items():
            rows.sort()
            fences = [fence for fence, _, _ in rows]
            assert fences == list(range(1, len(fences) + 1)), f"{pid}: fences {fences} are not 1, 2, 3, ..."
            for (fence, _, _), (_, next_claimed_at, _) in itertools.pairwise(rows):
                live_until = expiry[(pid, fence)]
                assert next_claimed_at >= live_until, f"{pid}: fence {fence + 1} claimed while fence {fence} was live"
            events = registry.events_after(pid, 0)
            terminal = [event for event in events if event.semantics.terminal is not None]
            assert len(terminal) == 1 and terminal[0] is events[-1], f"{pid}: {len(terminal)} terminal events"
            winner = dict(completed)[pid]
            assert winner == fences[-1], f"{pid}: completed under fence {winner}, the last lease was {fences[-1]}"
            assert terminal[0].payload["await_output"]["value"] == {"owner": owner_of[(pid, winner)], "fence": winner}
            written = [event.payload["fence"] for event in events[:-1]]
            assert written == sorted(written), f"{pid}: an older holder wrote after a newer one: {written}"
            for event in events[:-1]:  # every event was written by the holder of its fence
                assert event.payload["owner"] == owner_of[(pid, event.payload["fence"])]


# ---------------------------------------------------------------------------
# A stalled holder, step by step


def _holder(results: Any, target: str, name: str, ttl_ms: int, go: Any) -> None:
    """Claim, report the lease, wait for ``go``, then try a fenced terminal write and report what happened."""
    try:
        with open_registry(target) as registry:
            lease = None
            while lease is None:
                try:
                    lease = registry.claim_process_lease("stalled", name, ttl_ms)
                except ProcessAlreadyLeased:
                    time.sleep(0.02)
            registry.append_event("stalled", _progress(name, lease.fencing_token, 0), lease=lease)
            results.put(("claimed", name, lease.fencing_token))
            assert go.wait(60)
            try:
                registry.complete_process("stalled", ProcessAwaitOutput.success(name), lease=lease)
                results.put(("ok", name, "completed"))
            except LeaseLost as exc:
                results.put(("ok", name, f"lease lost: {exc}"))
    except BaseException as exc:
        results.put(failure(exc))
    finally:
        close_shared_pools()


def test_a_stalled_holders_terminal_write_after_a_takeover_is_rejected_and_leaves_nothing(target: str) -> None:
    with open_registry(target) as registry:
        registry.register_process(reg("stalled", plain("progress")))
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    go_first, go_second = ctx.Event(), ctx.Event()
    first = ctx.Process(target=_holder, args=(results, target, "first", 400, go_first), daemon=True)
    second = ctx.Process(target=_holder, args=(results, target, "second", 60_000, go_second), daemon=True)
    try:
        first.start()
        assert results.get(timeout=60) == ("claimed", "first", 1)
        second.start()  # it claims as soon as the first lease has run out (the clock the registry reads)
        assert results.get(timeout=60) == ("claimed", "second", 2)
        with open_registry(target) as registry:
            before = registry.raw_rows()
            go_first.set()  # the stalled holder wakes up and writes its result
            kind, name, outcome = results.get(timeout=60)
            assert (kind, name) == ("ok", "first") and outcome.startswith("lease lost"), outcome
            assert "missing or expired" in outcome
            assert registry.raw_rows() == before, "the rejected write left something behind"
            go_second.set()
            assert results.get(timeout=60) == ("ok", "second", "completed")
            assert registry.await_process("stalled", timeout_ms=10_000) == ProcessAwaitOutput.success("second")
            events = registry.events_after("stalled", 0)
            assert [event.payload.get("owner") for event in events[:-1]] == ["first", "second"]
    finally:
        for process in (first, second):
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
    assert first.exitcode == 0 and second.exitcode == 0


# ---------------------------------------------------------------------------
# Waking across processes


def _waiter(results: Any, target: str, rounds: int, ready: Any) -> None:
    try:
        with open_registry(target) as registry:
            for index in range(rounds):
                ready.put(index)
                event = registry.wait_event_after("waited", "progress", index, timeout_ms=30_000)
                results.put(("woke", index, event.sequence, time.monotonic()))
        results.put(("ok",))
    except BaseException as exc:
        results.put(failure(exc))
    finally:
        close_shared_pools()


def test_a_wait_in_another_process_wakes_within_100_ms_of_the_append(target: str) -> None:
    rounds = 12
    with open_registry(target) as registry:
        registry.register_process(reg("waited", plain("progress")))
        ctx = multiprocessing.get_context("fork")
        results, ready = ctx.Queue(), ctx.Queue()
        waiter = ctx.Process(target=_waiter, args=(results, target, rounds, ready), daemon=True)
        waiter.start()
        latencies = []
        try:
            for index in range(rounds):
                assert ready.get(timeout=60) == index
                time.sleep(0.05)  # the waiter is parked
                appended_at = time.monotonic()
                registry.append_event("waited", _progress("writer", 0, index))
                kind, woke_index, sequence, woke_at = results.get(timeout=60)
                assert (kind, woke_index, sequence) == ("woke", index, index + 1)
                latencies.append(woke_at - appended_at)
            assert results.get(timeout=60) == ("ok",)
        finally:
            waiter.join(timeout=30)
            if waiter.is_alive():
                waiter.kill()
    median = statistics.median(latencies)
    assert median < 0.1, f"median wake-up {median * 1000:.1f} ms (all: {[round(x * 1000) for x in latencies]})"
    assert max(latencies) < 2.0

"""The PostgreSQL backend under real processes (SPEC §8, design note §5.3).

Every worker is a separate ``spawn``ed process that opens its own store from
the DSN string (its own pool), so the races below are between database
sessions exactly as they are between machines:

* the seed's head-revision CAS race, many rounds: one winner per round;
* the seed's claim race: one claimer wins the single ready batch;
* 8 processes x 100 batches on one shared queue, and on a queue each;
* 16 processes running ``setup()`` at once on a fresh database / schema;
* a stale owner after reclaim is fenced out across processes;
* the clock is read after the lock (design note §3): a claim, a renew and a
  commit that waited for a lock stamp the instant the lock was granted.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import msgspec
import psycopg
import pytest

from lash_store.errors import HeadRevisionConflict, QueuedWorkClaimExpired, StoreError
from lash_store.model import (
    GraphDelta,
    HydratedCheckpoint,
    QueuedWorkClaim,
    QueuedWorkClaimBoundary,
    RuntimeCommit,
    SessionNode,
    SessionReadScope,
    TokenLedgerEntry,
    TokenUsage,
    TurnCommitStamp,
)
from lash_store.postgres import SCHEMA_VERSION, PostgresStore, close_shared_pools, setup
from tests.helpers import draft
from tests.pgproc import FORK, SPAWN, db_now_ms, failure, raw_all, raw_one, run_processes

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(120)]

IDLE = QueuedWorkClaimBoundary.IDLE
RESULT_TIMEOUT_S = 90.0
BARRIER_TIMEOUT_S = 60.0
MODEL = "proc-model"
DELTA = TokenUsage(input_tokens=3, output_tokens=2, cached_input_tokens=1, reasoning_tokens=1)


@pytest.fixture(autouse=True)
def _close_pools(pg_dsn: str) -> Iterator[None]:
    """This process's pools go before the test's database is dropped (a pool would keep reconnecting)."""
    yield
    close_shared_pools()


def _node(node_id: str) -> SessionNode:
    return SessionNode(node_id=node_id, payload={"role": "assistant", "parts": [{"type": "text", "text": node_id}]})


def _turn(
    sid: str,
    name: str,
    expected: int | None,
    completions: list[Any] | None = None,
) -> RuntimeCommit:
    """A commit that leaves a trace of everything it writes: node ``name``, stamp ``name``, one usage delta."""
    return RuntimeCommit(
        session_id=sid,
        expected_head_revision=expected,
        config={"by": name},
        graph=GraphDelta.append([_node(name)], leaf_node_id=name),
        checkpoint=HydratedCheckpoint(turn_state={"by": name}),
        usage_deltas=[TokenLedgerEntry(source="proc", model=MODEL, usage=DELTA)],
        turn_commit=TurnCommitStamp(session_id=sid, turn_id=name, turn_commit_hash=f"hash-of-{name}"),
        completed_queue_claims=list(completions or []),
    )


def _times(n: int) -> TokenUsage:
    return TokenUsage(
        input_tokens=DELTA.input_tokens * n,
        output_tokens=DELTA.output_tokens * n,
        cached_input_tokens=DELTA.cached_input_tokens * n,
        reasoning_tokens=DELTA.reasoning_tokens * n,
    )


def _sid(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:8]}"


def _stamps(dsn: str, sid: str) -> list[str]:
    return [r[0] for r in raw_all(dsn, "SELECT turn_id FROM lash.turn_commits WHERE session_id = %s", sid)]


# ---------------------------------------------------------------------------
# (a) The seed's CAS race, across processes, many rounds


def _cas_worker(results: Any, dsn: str, sid: str, worker: int, barrier: Any, rounds: int) -> None:
    try:
        outcomes: list[tuple[Any, ...]] = []
        with PostgresStore.open(dsn, sid) as store:
            for revision in range(rounds):
                barrier.wait(timeout=BARRIER_TIMEOUT_S)
                try:
                    result = store.commit_runtime_state(_turn(sid, f"r{revision}-w{worker}", revision))
                    outcomes.append(("ok", result.head_revision, result.checkpoint_ref))
                except HeadRevisionConflict as exc:
                    outcomes.append(("conflict", exc.expected, exc.actual))
                except StoreError as exc:  # reported, and the rounds go on
                    outcomes.append(("unexpected", type(exc).__name__, str(exc)))
        close_shared_pools()
        results.put(("ok", worker, outcomes))
    except BaseException as exc:
        results.put(failure(exc))


def test_cas_race_across_processes_has_one_winner_per_round(pg_dsn: str) -> None:
    workers, rounds = 4, 40
    sid = _sid("cas")
    PostgresStore.open(pg_dsn, sid).close()  # schema and partition exist before the race
    barrier = SPAWN.Barrier(workers)
    reports = run_processes(
        [(_cas_worker, (pg_dsn, sid, w, barrier, rounds)) for w in range(workers)], RESULT_TIMEOUT_S
    )
    by_worker = {r[1]: r[2] for r in reports}

    winners: dict[int, tuple[int, str]] = {}
    for revision in range(rounds):
        outcomes = {w: by_worker[w][revision] for w in range(workers)}
        won = [w for w, o in outcomes.items() if o[0] == "ok"]
        assert len(won) == 1, f"round {revision}: exactly one CAS may win, got {outcomes}"
        (winner,) = won
        assert outcomes[winner][1] == revision + 1, f"round {revision}: revisions must be contiguous: {outcomes}"
        losers = [o for w, o in outcomes.items() if w != winner]
        assert losers == [("conflict", revision, revision + 1)] * (workers - 1), (
            f"round {revision}: every loser must see a clean HeadRevisionConflict, got {outcomes}"
        )
        winners[revision] = (winner, outcomes[winner][2])

    expected_nodes = [f"r{r}-w{winners[r][0]}" for r in range(rounds)]
    with PostgresStore.open(pg_dsn, sid) as store:
        read = store.load_session(SessionReadScope.full_graph())
        assert read is not None and read.head_revision == rounds
        # Exactly the winners' writes, in round order: nothing of a loser, no winner lost or doubled.
        assert [n.node_id for n in read.graph.nodes] == expected_nodes
        assert read.token_ledger == [TokenLedgerEntry(source="proc", model=MODEL, usage=_times(rounds))]
        assert sorted(_stamps(pg_dsn, sid)) == sorted(expected_nodes)
        # Every acknowledged commit replays to the result it acknowledged.
        for revision, (winner, ref) in winners.items():
            replay = store.commit_runtime_state(_turn(sid, f"r{revision}-w{winner}", revision))
            assert (replay.head_revision, replay.checkpoint_ref) == (revision + 1, ref)
    assert raw_one(pg_dsn, "SELECT head_revision FROM lash.sessions WHERE session_id = %s", sid) == (rounds,)


# ---------------------------------------------------------------------------
# (b) The seed's claim race: N processes, one ready batch, exactly one winner (per round)


def _claim_worker(results: Any, dsn: str, sids: list[str], worker: int, barrier: Any) -> None:
    try:
        outcomes: list[tuple[Any, ...]] = []
        for sid in sids:
            with PostgresStore.open(dsn, sid) as store:
                barrier.wait(timeout=BARRIER_TIMEOUT_S)
                claim = store.claim_ready_queued_work(sid, f"owner-{worker}", IDLE, 60_000, 10)
                if claim is None:
                    outcomes.append((sid, None))
                    continue
                # A winner must really own its batch: renewing and completing it both succeed.
                renewed = store.renew_queued_work_claim(claim, 60_000)
                result = store.commit_runtime_state(_turn(sid, f"won-by-{worker}", None, [renewed.completion()]))
                outcomes.append((sid, msgspec.msgpack.encode(claim), result.head_revision))
        close_shared_pools()
        results.put(("ok", worker, outcomes))
    except BaseException as exc:
        results.put(failure(exc))


def test_claim_race_across_processes_has_exactly_one_winner(pg_dsn: str) -> None:
    workers, rounds = 6, 15
    sids = [_sid(f"claim{r}") for r in range(rounds)]  # one partition (and queue) per round
    batches = {}
    for sid in sids:
        with PostgresStore.open(pg_dsn, sid) as store:
            batches[sid] = store.enqueue_queued_work(draft(sid, "the only work")).batch_id
    barrier = SPAWN.Barrier(workers)
    reports = run_processes([(_claim_worker, (pg_dsn, sids, w, barrier)) for w in range(workers)], RESULT_TIMEOUT_S)

    for index, sid in enumerate(sids):
        outcomes = [o for r in reports for o in r[2] if o[0] == sid]
        won = [o for o in outcomes if o[1] is not None]
        assert len(outcomes) == workers
        assert len(won) == 1, f"round {index}: exactly one process may claim the batch, got {len(won)} winners"
        claim = msgspec.msgpack.decode(won[0][1], type=QueuedWorkClaim)
        assert claim.batch_ids == [batches[sid]]
        assert claim.fencing_token == 1 and won[0][2] == 1
        # Losers burnt no fence (a claim that found nothing rolled back), and the work is gone.
        row = raw_one(pg_dsn, "SELECT last_fencing_token FROM lash.queue_state WHERE session_id = %s", sid)
        assert row == (1,)
        assert raw_one(pg_dsn, "SELECT count(*) FROM lash.queued_work_batches WHERE session_id = %s", sid) == (0,)


# ---------------------------------------------------------------------------
# (c) 8 processes x 100 batches: one shared queue, and a queue each


def _drain_worker(results: Any, dsn: str, sid: str, worker: int, barrier: Any, deadline_s: float) -> None:
    """Claim one batch at a time and complete it in a stamped commit, until nothing is free."""
    try:
        claims: list[tuple[str, int, int]] = []  # (batch id, enqueue seq, fence)
        revisions: list[int] = []
        spurious_empty = 0
        with PostgresStore.open(dsn, sid) as store:
            barrier.wait(timeout=BARRIER_TIMEOUT_S)
            deadline = time.monotonic() + deadline_s
            while time.monotonic() < deadline:
                claim = store.claim_ready_queued_work(sid, f"w{worker}", IDLE, 60_000, 1)
                if claim is None:
                    # Nothing is abandoned or expires here, so "nothing to claim" must mean "nothing free".
                    if store.list_pending_queued_work(sid):
                        spurious_empty += 1
                        continue
                    break
                (batch,) = claim.batches
                claims.append((batch.batch_id, batch.enqueue_seq, claim.fencing_token))
                result = store.commit_runtime_state(_turn(sid, f"done-{batch.batch_id}", None, [claim.completion()]))
                revisions.append(result.head_revision)
        close_shared_pools()
        results.put(("ok", worker, claims, revisions, spurious_empty, time.monotonic() < deadline))
    except BaseException as exc:
        results.put(failure(exc))


@pytest.mark.parametrize("layout", ["shared-queue", "queue-per-process"])
def test_eight_processes_drain_one_hundred_batches_each_exactly_once(pg_dsn: str, layout: str) -> None:
    workers, per_worker = 8, 100
    shared = layout == "shared-queue"
    sids = [_sid("shared")] if shared else [_sid(f"own{w}") for w in range(workers)]
    enqueued: dict[str, list[str]] = {}
    for sid in sids:
        count = workers * per_worker if shared else per_worker
        with PostgresStore.open(pg_dsn, sid) as store:
            enqueued[sid] = [store.enqueue_queued_work(draft(sid, f"work {i}")).batch_id for i in range(count)]

    started = time.monotonic()
    # Forked: this process's pool for the same DSN is open (it enqueued), and no child may touch it.
    barrier = FORK.Barrier(workers)
    jobs = [(_drain_worker, (pg_dsn, sids[0 if shared else w], w, barrier, 45.0)) for w in range(workers)]
    reports = run_processes(jobs, RESULT_TIMEOUT_S, FORK)
    elapsed = time.monotonic() - started

    for _, worker, claims, _revisions, spurious_empty, in_time in reports:
        assert in_time, f"worker {worker} ran out of time"
        assert spurious_empty == 0, f"worker {worker} found nothing to claim {spurious_empty} times while work was free"
        # N24: one worker's successive claims take ever later batches, each under a larger fence.
        seqs = [seq for _, seq, _ in claims]
        fences = [fence for _, _, fence in claims]
        assert seqs == sorted(set(seqs)), f"worker {worker}: enqueue_seq not increasing"
        assert fences == sorted(set(fences)), f"worker {worker}: fences not increasing"
    if not shared:
        assert all(len(r[2]) == per_worker for r in reports)

    for sid in sids:
        mine = [c for r in reports for c in r[2] if (shared or sids[r[1]] == sid)]
        claimed = Counter(batch_id for batch_id, _, _ in mine)
        twice = [batch_id for batch_id, n in claimed.items() if n > 1]
        assert not twice, f"batches claimed twice: {twice[:5]}"
        assert set(claimed) == set(enqueued[sid]), "a batch was never claimed"
        assert len({fence for _, _, fence in mine}) == len(mine), "two claims shared a fence"
        revisions = [rev for r in reports if (shared or sids[r[1]] == sid) for rev in r[3]]
        total = len(enqueued[sid])
        assert sorted(revisions) == list(range(1, total + 1)), "commit revisions are not 1..N, each once"

        # Every completion recorded exactly once: one node, one stamp, one usage delta per batch; no work left.
        expected = sorted(f"done-{batch_id}" for batch_id in enqueued[sid])
        nodes = raw_all(pg_dsn, "SELECT node_id FROM lash.graph_nodes WHERE session_id = %s", sid)
        assert sorted(n for (n,) in nodes) == expected
        assert sorted(_stamps(pg_dsn, sid)) == expected
        with PostgresStore.open(pg_dsn, sid, create=False) as store:
            read = store.load_session(SessionReadScope.active_path())
            assert read is not None and read.head_revision == total
            assert read.token_ledger == [TokenLedgerEntry(source="proc", model=MODEL, usage=_times(total))]
            assert store.list_queued_work(sid) == []
            assert store.graph_node_count() == total
    print(f"{layout}: {workers} processes drained {workers * per_worker} batches in {elapsed:.1f} s")
    assert elapsed < 60, f"{layout} took {elapsed:.1f} s"


# ---------------------------------------------------------------------------
# (d) 16 processes run setup() at once on a fresh database / a fresh schema name


def _setup_worker(results: Any, dsn: str, schema: str, barrier: Any) -> None:
    try:
        barrier.wait(timeout=BARRIER_TIMEOUT_S)
        before = setup(dsn, schema=schema)
        with PostgresStore.open(dsn, f"after-setup-{uuid.uuid4().hex[:6]}", schema=schema, auto_setup=False) as s:
            assert s.load_session() is None
        close_shared_pools()
        results.put(("ok", before))
    except BaseException as exc:
        results.put(failure(exc))


@pytest.mark.parametrize("schema", ["lash", "fresh"])
def test_sixteen_concurrent_setups_create_one_schema(pg_dsn: str, schema: str) -> None:
    if schema == "fresh":
        setup(pg_dsn)  # the default schema exists; a second, new schema is raced next to it
        schema = f"lash_t_{uuid.uuid4().hex[:8]}"
    workers = 16
    barrier = FORK.Barrier(workers)
    reports = run_processes([(_setup_worker, (pg_dsn, schema, barrier))] * workers, RESULT_TIMEOUT_S, FORK)

    # Exactly one process created the schema; every other one found it current.
    assert sorted((r[1] for r in reports), key=str) == sorted([None] + [SCHEMA_VERSION] * (workers - 1), key=str)
    assert raw_one(pg_dsn, "SELECT count(*) FROM pg_namespace WHERE nspname = %s", schema) == (1,)
    rows = raw_all(pg_dsn, f"SELECT application, version FROM {schema}.schema_version")
    assert rows == [("lash-store", SCHEMA_VERSION)]
    assert raw_one(pg_dsn, "SELECT count(*) FROM pg_tables WHERE schemaname = %s", schema)[0] >= 8
    assert setup(pg_dsn, schema=schema) == SCHEMA_VERSION


# ---------------------------------------------------------------------------
# (e) A stale owner after reclaim is fenced out across processes


# Long enough that B, already waiting when A claims, surely tries (and fails) once while A's lease runs.
STALE_TTL_MS = 1500


def _head_snapshot(store: PostgresStore) -> tuple[Any, ...]:
    read = store.load_session(SessionReadScope.full_graph())
    assert read is not None
    return (read.head_revision, [n.node_id for n in read.graph.nodes], read.token_ledger, read.checkpoint_ref)


def _stale_owner_a(results: Any, dsn: str, sid: str, a_claimed: Any, b_claimed: Any, a_tried: Any, b_done: Any) -> None:
    report: dict[str, Any] = {}
    try:
        with PostgresStore.open(dsn, sid) as store:
            held = store.claim_ready_queued_work(sid, "owner-a", IDLE, STALE_TTL_MS, 1)
            assert held is not None, "owner A found nothing to claim"
            report["claim"] = msgspec.msgpack.encode(held)
            a_claimed.set()
            # A stalls (a GC pause, a hung tool) past its lease; B reclaims in the meantime.
            assert b_claimed.wait(BARRIER_TIMEOUT_S), "owner B never reclaimed"
            before = _head_snapshot(store)
            try:
                store.renew_queued_work_claim(held, 60_000)
                report["renew"] = "ok"
            except QueuedWorkClaimExpired:
                report["renew"] = "expired"
            stale = _turn(sid, "turn-a", None, [held.completion()])
            try:
                store.commit_runtime_state(stale)
                report["commit"] = "ok"
            except QueuedWorkClaimExpired as exc:
                report["commit"] = ("expired", exc.claim_id)
            report["unchanged_while_b_holds"] = _head_snapshot(store) == before
            a_tried.set()
            assert b_done.wait(BARRIER_TIMEOUT_S), "owner B never finished"
            # Once B's completion consumed the batch, A's retry is refused all the same.
            after_b = _head_snapshot(store)
            try:
                store.commit_runtime_state(stale)
                report["retry"] = "ok"
            except QueuedWorkClaimExpired:
                report["retry"] = "expired"
            report["unchanged_after_b"] = _head_snapshot(store) == after_b
            report["abandoned"] = store.abandon_queued_work_claim(held)
        close_shared_pools()
        results.put(("ok", "a", report))
    except BaseException as exc:
        a_claimed.set()
        a_tried.set()
        results.put(failure(exc))


def _stale_owner_b(results: Any, dsn: str, sid: str, a_claimed: Any, b_claimed: Any, a_tried: Any, b_done: Any) -> None:
    report: dict[str, Any] = {"attempts_before_expiry": 0}
    try:
        with PostgresStore.open(dsn, sid) as store:
            assert a_claimed.wait(BARRIER_TIMEOUT_S), "owner A never claimed"
            deadline = time.monotonic() + 20
            while (held := store.claim_ready_queued_work(sid, "owner-b", IDLE, 60_000, 1)) is None:
                report["attempts_before_expiry"] += 1
                assert time.monotonic() < deadline, "owner B never got the expired batch"
                time.sleep(0.02)
            report["claim"] = msgspec.msgpack.encode(held)
            b_claimed.set()
            assert a_tried.wait(BARRIER_TIMEOUT_S), "owner A never tried"
            report["head_revision"] = store.commit_runtime_state(
                _turn(sid, "turn-b", None, [held.completion()])
            ).head_revision
        close_shared_pools()
        results.put(("ok", "b", report))
    except BaseException as exc:
        results.put(failure(exc))
    finally:
        b_claimed.set()
        b_done.set()


def test_stale_owner_after_reclaim_is_fenced_out_across_processes(pg_dsn: str) -> None:
    sid = _sid("stale")
    with PostgresStore.open(pg_dsn, sid) as seed:
        seed.commit_runtime_state(_turn(sid, "seed", 0))
        batch = seed.enqueue_queued_work(draft(sid, "work"))
        # A delayed bystander: listed throughout, never claimable during the test.
        bystander = seed.enqueue_queued_work(draft(sid, "later").with_available_at_ms(4_102_444_800_000))
    events = [SPAWN.Event() for _ in range(4)]
    reports = run_processes(
        [(_stale_owner_a, (pg_dsn, sid, *events)), (_stale_owner_b, (pg_dsn, sid, *events))], RESULT_TIMEOUT_S
    )
    a, b = (next(r[2] for r in reports if r[1] == who) for who in ("a", "b"))

    claim_a = msgspec.msgpack.decode(a["claim"], type=QueuedWorkClaim)
    claim_b = msgspec.msgpack.decode(b["claim"], type=QueuedWorkClaim)
    assert claim_a.batch_ids == claim_b.batch_ids == [batch.batch_id]
    assert claim_a.expires_at_epoch_ms - claim_a.claimed_at_epoch_ms == STALE_TTL_MS
    # B only won once A's lease had run out on the database clock, and under a larger fence.
    assert claim_b.claimed_at_epoch_ms >= claim_a.expires_at_epoch_ms
    assert claim_b.fencing_token > claim_a.fencing_token
    assert b["attempts_before_expiry"] > 0, "B should have found the batch held while A's lease ran"

    assert a["renew"] == "expired"
    assert a["commit"] == ("expired", claim_a.claim_id)
    assert a["retry"] == "expired"
    assert a["unchanged_while_b_holds"] and a["unchanged_after_b"]
    assert a["abandoned"] == 0
    assert b["head_revision"] == 2

    with PostgresStore.open(pg_dsn, sid, create=False) as check:
        revision, nodes, ledger, _ = _head_snapshot(check)
        assert (revision, nodes) == (2, ["seed", "turn-b"])
        assert ledger == [TokenLedgerEntry(source="proc", model=MODEL, usage=_times(2))]
        assert [q.batch_id for q in check.list_queued_work(sid)] == [bystander.batch_id]
    assert sorted(_stamps(pg_dsn, sid)) == ["seed", "turn-b"]  # A's stamp never landed


# ---------------------------------------------------------------------------
# (f) Clock after lock (design note §3, §5.3): a waiting operation stamps the grant, not the request


HOLD_S = 1.0


def _hold_then_release(dsn: str, lock_sql: str, params: tuple[object, ...], locked: threading.Event) -> int:
    """Hold a row lock from a raw connection for HOLD_S; return the release instant on the database clock."""
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        row = conn.execute(lock_sql, params).fetchone()
        assert row is not None, "the row to lock does not exist"
        locked.set()
        time.sleep(HOLD_S)
        released_ms = db_now_ms(conn)  # read inside the lock holder: the lock is released after this instant
        conn.commit()
    return released_ms


def _while_locked(dsn: str, lock_sql: str, params: tuple[object, ...], operation: Any) -> tuple[Any, int, float]:
    """Run ``operation`` while a raw connection holds ``lock_sql``; returns (its result, release ms, its duration)."""
    locked = threading.Event()
    released: list[int] = []
    holder = threading.Thread(target=lambda: released.append(_hold_then_release(dsn, lock_sql, params, locked)))
    holder.start()
    try:
        assert locked.wait(10)
        started = time.monotonic()
        result = operation()
        waited = time.monotonic() - started
    finally:
        holder.join(timeout=30)
    assert released, "the lock holder failed"
    return result, released[0], waited


QUEUE_LOCK = "SELECT 1 FROM lash.queue_state WHERE session_id = %s AND queue_session_id = %s FOR NO KEY UPDATE"
SESSION_LOCK = "SELECT 1 FROM lash.sessions WHERE session_id = %s FOR NO KEY UPDATE"


def test_a_claim_that_waited_for_the_queue_lock_is_stamped_after_the_release(pg_dsn: str) -> None:
    sid = _sid("clock")
    with PostgresStore.open(pg_dsn, sid) as store:  # the database clock: no injected clock
        store.enqueue_queued_work(draft(sid, "work"))  # also creates the queue's lock row

        def claim() -> QueuedWorkClaim | None:
            return store.claim_ready_queued_work(sid, "owner", IDLE, 30_000, 1)

        held, released_ms, waited = _while_locked(pg_dsn, QUEUE_LOCK, (sid, sid), claim)
        assert held is not None
        assert waited >= HOLD_S * 0.8, f"the claim did not wait for the lock ({waited:.2f} s)"
        assert held.claimed_at_epoch_ms >= released_ms, (
            f"claimed_at {held.claimed_at_epoch_ms} precedes the lock release {released_ms}: "
            "the clock was read before the lock was granted"
        )
        assert held.expires_at_epoch_ms == held.claimed_at_epoch_ms + 30_000

        renewed, released_ms, _ = _while_locked(
            pg_dsn, QUEUE_LOCK, (sid, sid), lambda: store.renew_queued_work_claim(held, 30_000)
        )
        assert renewed.expires_at_epoch_ms >= released_ms + 30_000, "a renew measured its lease from before the wait"


def test_a_commit_that_waited_for_the_session_lock_is_stamped_after_the_release(pg_dsn: str) -> None:
    sid = _sid("clock")
    with PostgresStore.open(pg_dsn, sid) as store:
        _, released_ms, waited = _while_locked(
            pg_dsn, SESSION_LOCK, (sid,), lambda: store.commit_runtime_state(_turn(sid, "t1", 0))
        )
        assert waited >= HOLD_S * 0.8
        (committed_at,) = raw_one(
            pg_dsn, "SELECT committed_at_ms FROM lash.turn_commits WHERE session_id = %s AND turn_id = 't1'", sid
        )
        assert committed_at >= released_ms, "the turn stamp's instant was read before the session lock was granted"

"""Interrupts at any instant of an operation leave the store usable, unlocked and holding only whole turns.

A SIGALRM handler raises ``KeyboardInterrupt`` (or another ``BaseException``) after a random delay drawn
to land inside the operation under test: between ``BEGIN`` and the statements, inside ``COMMIT``, in a
rollback, while encoding, or while waiting for a write lock another process holds.  After every interrupt,
before any other call on the store, a separate raw ``sqlite3`` connection proves that no lock is held;
then the store must work and every observable effect must be all-or-nothing.

Only the public API is used (``Store``, ``StoreOptions``, ``lash_store.model``, ``lash_store.errors``),
plus raw ``sqlite3`` connections that observe the file from outside.

``LASH_INTERRUPT_SEED`` fixes the seed (printed on failure); ``LASH_INTERRUPTS`` sets the number of
interrupts of the ``slow`` profile (``pytest -m slow tests/test_interrupts.py``).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
import os
import random
import signal
import sqlite3
import statistics
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from lash_store import GcPolicy, Store, StoreOptions
from lash_store.model import (
    AttachmentIntent,
    BlobRef,
    DeliveryPolicy,
    GraphDelta,
    HydratedCheckpoint,
    MergeKey,
    QueuedWorkBatchDraft,
    QueuedWorkClaim,
    QueuedWorkClaimBoundary,
    QueuedWorkPayload,
    RuntimeCommit,
    SessionMeta,
    SessionNode,
    SessionReadScope,
    SlotPolicy,
    TokenLedgerEntry,
    TokenUsage,
    TurnCommitStamp,
    TurnInput,
)

pytestmark = pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs signal.setitimer (POSIX)")

SESSION = "interrupted-session"
LEASE_MS = 60_000
MAX_MS = 2**63 - 1
DEFAULT_INTERRUPTS = 2_000
SLOW_INTERRUPTS = int(os.environ.get("LASH_INTERRUPTS", "50000"))
INTERRUPTS_PER_FILE = 60  # a fresh file now and then keeps every load (and so the whole run) short
START_MS = 1_700_000_000_000
HOLD_AT_MOST_S = 3.0  # the other process gives the write lock up by itself after this long


def _seed() -> int:
    env = os.environ.get("LASH_INTERRUPT_SEED")
    return int(env) if env else random.SystemRandom().randrange(2**32)


class Interrupt(BaseException):
    """A ``BaseException`` that is not ``KeyboardInterrupt`` (think ``SystemExit`` or a runtime's own)."""


class FakeClock:
    """Epoch milliseconds that move only when told to (drives lease expiry and the GC grace period)."""

    def __init__(self, now: int = START_MS) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now

    def advance(self, ms: int) -> None:
        self.now += ms


# ---------------------------------------------------------------------------
# the interrupter


@dataclass
class Outcome:
    """What happened to one operation run under an armed timer."""

    interrupted: bool  # the injected exception came out of the call
    result: Any  # the call's return value when it returned
    due_at: float  # time.monotonic() when the signal was due
    fired_at: float | None  # time.monotonic() when the handler raised, if it did
    caught_at: float  # time.monotonic() when the call ended (returned or raised)
    swallowed: bool  # the handler raised but the call returned normally


class Interrupter:
    """Raises an exception from a SIGALRM handler ``delay`` seconds into a call, and never outside one."""

    def __init__(self) -> None:
        self._armed = False
        self._exc: type[BaseException] = KeyboardInterrupt
        self._fired_at: float | None = None
        self._previous = signal.signal(signal.SIGALRM, self._handler)

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if self._armed:
            self._armed = False
            self._fired_at = time.monotonic()
            raise self._exc("injected by test_interrupts")

    def run(self, call: Callable[[], Any], delay: float, exc: type[BaseException] = KeyboardInterrupt) -> Outcome:
        self._exc = exc
        self._fired_at = None
        result: Any = None
        interrupted = False
        delay = max(delay, 1e-6)
        due_at = time.monotonic() + delay
        try:
            self._armed = True
            signal.setitimer(signal.ITIMER_REAL, delay)
            try:
                result = call()
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
                self._armed = False
        except (KeyboardInterrupt, Interrupt) as error:
            if self._fired_at is None or not isinstance(error, exc):
                raise  # not ours
            interrupted = True
        caught_at = time.monotonic()
        return Outcome(
            interrupted=interrupted,
            result=result,
            due_at=due_at,
            fired_at=self._fired_at,
            caught_at=caught_at,
            swallowed=self._fired_at is not None and not interrupted,
        )

    def close(self) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        self._armed = False
        signal.signal(signal.SIGALRM, self._previous)


@contextlib.contextmanager
def interrupter() -> Iterator[Interrupter]:
    injector = Interrupter()
    try:
        yield injector
    finally:
        injector.close()


# ---------------------------------------------------------------------------
# observing the file from outside


def assert_no_lock_held(path: Path, context: str) -> None:
    """A separate connection takes the write lock at once, and a truncating checkpoint finds no reader."""
    raw = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        try:
            raw.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise AssertionError(f"{context}: the write lock is still held after the interrupt ({exc})") from exc
        raw.execute("ROLLBACK")
        raw.execute("PRAGMA synchronous = OFF")  # this checkpoint only looks for readers; skip its fsync
        busy, _log, _done = raw.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        assert busy == 0, f"{context}: a read transaction (snapshot) is still held after the interrupt"
    finally:
        raw.close()


# ---------------------------------------------------------------------------
# turns whose effects are checkable as all-or-nothing


def node_ids(revision: int) -> list[str]:
    return [f"n{r}{half}" for r in range(1, revision + 1) for half in "ab"]


def build_turn(
    revision: int,
    stamp: str,
    *,
    pad: int,
    claim: QueuedWorkClaim | None = None,
    attachments: list[str] | None = None,
) -> RuntimeCommit:
    """The commit that takes the head from ``revision - 1`` to ``revision``: every effect names ``revision``."""
    parent = f"n{revision - 1}b" if revision > 1 else None
    nodes = [
        SessionNode(
            node_id=f"n{revision}a",
            parent_node_id=parent,
            payload={"role": "user", "parts": [{"type": "text", "text": f"question {revision}"}]},
            timestamp_ms=revision,
        ),
        SessionNode(
            node_id=f"n{revision}b",
            parent_node_id=f"n{revision}a",
            payload={"role": "assistant", "parts": [{"type": "text", "text": f"answer {revision} " + "z" * pad}]},
        ),
    ]
    commit = RuntimeCommit(
        session_id=SESSION,
        expected_head_revision=revision - 1,
        config={"rev": revision},
        agent_frames=[{"frame": revision}],
        current_agent_frame_id=f"frame-{revision}",
        graph=GraphDelta.append(nodes, leaf_node_id=f"n{revision}b"),
        checkpoint=HydratedCheckpoint(
            turn_state={"rev": revision},
            tool_state={"rev": revision, "pad": "tool state " * (pad // 8 + 1)},
            plugin_snapshot={"rev": revision},
            plugin_snapshot_revision=revision,
            execution_state=f"execution {revision}".encode(),
        ),
        usage_deltas=[
            TokenLedgerEntry(source="turn", model="m1", usage=TokenUsage(input_tokens=1, output_tokens=revision)),
            TokenLedgerEntry(source="tool", model="m2", usage=TokenUsage(cached_input_tokens=2, reasoning_tokens=3)),
        ],
        turn_commit=TurnCommitStamp(session_id=SESSION, turn_id=stamp, turn_commit_hash=f"hash:{stamp}"),
    )
    if claim is not None:
        commit = commit.completing_queue_claim(claim.completion())
    if attachments:
        commit = commit.with_committed_attachments(attachments)
    return commit


@dataclass
class Model:
    """What the store must hold: everything follows from the head revision, plus the queue and manifest."""

    revision: int = 0
    pending: list[str] = field(default_factory=list)  # batch ids in FIFO order
    source_keys: dict[str, str] = field(default_factory=dict)  # batch id -> source key
    claim: QueuedWorkClaim | None = None  # the live claim we hold
    uncommitted: set[str] = field(default_factory=set)  # attachment ids recorded, not yet committed
    committed: set[str] = field(default_factory=set)
    stamps: int = 0
    batches: int = 0
    intents: int = 0

    def next_stamp(self) -> str:
        self.stamps += 1
        return f"turn-{self.stamps}"


def batch_draft(key: str) -> QueuedWorkBatchDraft:
    return (
        QueuedWorkBatchDraft.new(
            SESSION,
            DeliveryPolicy.AFTER_CURRENT_TURN_COMMIT,
            SlotPolicy.JOIN,
            [
                QueuedWorkPayload.turn_input(TurnInput.text(f"message {key}")),
                QueuedWorkPayload.session_command({"key": key}),
            ],
        )
        .with_source_key(key)
        .with_merge_key(MergeKey.group("g"))
    )


def check_whole(store: Store, model: Model, context: str) -> None:
    """Every effect agrees with the model: whole turns only, the queue and the manifest as recorded."""
    queue = [batch.batch_id for batch in store.list_queued_work(SESSION)]
    assert queue == model.pending, f"{context}: queue {queue}, expected {model.pending}"
    uncommitted = {entry.attachment_id for entry in store.list_uncommitted(MAX_MS)}
    assert uncommitted == model.uncommitted, (
        f"{context}: uncommitted intents {uncommitted}, expected {model.uncommitted}"
    )
    read = store.load_session()
    revision = model.revision
    if revision == 0:
        assert read is None, f"{context}: expected no head, found revision {read and read.head_revision}"
        return
    assert read is not None, f"{context}: the head at revision {revision} vanished"
    assert read.head_revision == revision, f"{context}: head {read.head_revision}, expected {revision}"
    ids = [n.node_id for n in read.graph.nodes]
    assert ids == node_ids(revision), f"{context}: graph {ids[-6:]} is not whole turns up to {revision}"
    assert read.graph.leaf_node_id == f"n{revision}b", f"{context}: leaf {read.graph.leaf_node_id}"
    assert read.config == {"rev": revision}, f"{context}: config {read.config}"
    assert read.agent_frames == [{"frame": revision}], f"{context}: agent frames {read.agent_frames}"
    assert read.current_agent_frame_id == f"frame-{revision}", f"{context}: frame {read.current_agent_frame_id}"
    checkpoint = read.checkpoint
    assert checkpoint is not None, f"{context}: the head checkpoint does not load"
    assert checkpoint.turn_state == {"rev": revision}, f"{context}: turn state {checkpoint.turn_state}"
    assert isinstance(checkpoint.tool_state, dict), f"{context}: tool state {checkpoint.tool_state!r}"
    assert checkpoint.tool_state.get("rev") == revision, f"{context}: tool state of another turn"
    assert checkpoint.plugin_snapshot == {"rev": revision}, f"{context}: plugin snapshot {checkpoint.plugin_snapshot}"
    assert checkpoint.plugin_snapshot_revision == revision, f"{context}: plugin revision"
    assert checkpoint.execution_state == f"execution {revision}".encode(), f"{context}: execution state"
    ledger = {(e.source, e.model): e.usage for e in read.token_ledger}
    assert ledger == {
        ("turn", "m1"): TokenUsage(input_tokens=revision, output_tokens=revision * (revision + 1) // 2),
        ("tool", "m2"): TokenUsage(cached_input_tokens=2 * revision, reasoning_tokens=3 * revision),
    }, f"{context}: usage ledger {ledger} does not sum {revision} whole turns"
    path = store.load_session(SessionReadScope.active_path())
    assert path is not None and [n.node_id for n in path.graph.nodes] == node_ids(revision), (
        f"{context}: the active path is not whole turns up to {revision}"
    )
    picker = store.load_picker_info()
    assert picker is not None, f"{context}: picker info vanished"
    assert picker.user_message_count == revision, f"{context}: user message count {picker.user_message_count}"
    assert picker.first_user_message == "question 1", f"{context}: first user message {picker.first_user_message!r}"


# ---------------------------------------------------------------------------
# the campaign


class Campaign:
    """Drives turns (enqueue, intent, claim, commit with completion, load, GC) and interrupts them at random."""

    def __init__(self, tmp_path: Path, seed: int, target: int, injector: Interrupter) -> None:
        self.tmp_path = tmp_path
        self.seed = seed
        self.rng = random.Random(seed)
        self.target = target
        self.injector = injector
        self.durations: dict[str, deque[float]] = {}
        self.interrupts = 0
        self.landed_inside = 0
        self.swallowed = 0
        self.files = 0
        self.by_kind: dict[str, int] = {}
        self.step = 0
        self.last = ""
        self._open_new_file()

    # -- files ------------------------------------------------------------

    def _open_new_file(self) -> None:
        self.files += 1
        self.path = self.tmp_path / f"interrupts-{self.files}.db"
        self.clock = FakeClock()
        options = StoreOptions(clock=self.clock, gc_policy=GcPolicy(grace_ms=0))
        self.store = Store.open(self.path, options)
        self.store.save_session_meta(
            SessionMeta(session_id=SESSION, session_name=SESSION, created_at="2024-01-01T00:00:00+00:00", model="m1")
        )
        self.model = Model()
        self.file_interrupts = 0

    def close(self) -> None:
        self.store.close()

    # -- running one operation ---------------------------------------------

    def _delay(self, kind: str) -> float | None:
        """A delay drawn uniformly in [0, 1.2 x the operation's measured duration]; None while calibrating."""
        samples = self.durations.get(kind)
        if samples is None or len(samples) < 3:
            return None
        return self.rng.uniform(0.0, 1.2 * statistics.median(samples))

    def attempt(self, kind: str, call: Callable[[], Any]) -> Outcome:
        """Run ``call`` under a timer armed to fire at a random instant inside it."""
        self.step += 1
        delay = self._delay(kind)
        self.last = f"step {self.step} {kind} delay={delay if delay is None else round(delay * 1e6)}us"
        started = time.perf_counter()
        if delay is None:
            result = call()
            now = time.monotonic()
            outcome = Outcome(False, result, now, None, now, False)
        else:
            exc: type[BaseException] = KeyboardInterrupt if self.rng.random() < 0.8 else Interrupt
            outcome = self.injector.run(call, delay, exc)
        if not outcome.interrupted:
            self.durations.setdefault(kind, deque(maxlen=15)).append(time.perf_counter() - started)
        if outcome.swallowed:
            self.swallowed += 1  # e.g. raised inside a finaliser, where Python reports and drops it
        if outcome.interrupted or outcome.swallowed:
            self.interrupts += 1
            self.file_interrupts += 1
            self.by_kind[kind] = self.by_kind.get(kind, 0) + 1
            # Before any other call on the store: nothing may be locked.
            assert_no_lock_held(self.path, f"after an interrupted {kind}")
        return outcome

    def after_interrupt(self) -> None:
        """The store works: a whole new turn commits and loads (fully checked again at the next interrupt)."""
        self.model.revision = self._commit_plain(claim=None, attachments=None)
        read = self.store.load_session()
        context = f"after the usability commit following {self.last}"
        assert read is not None and read.head_revision == self.model.revision, f"{context}: head moved elsewhere"
        assert [n.node_id for n in read.graph.nodes[-2:]] == node_ids(self.model.revision)[-2:], context
        assert read.config == {"rev": self.model.revision}, context

    # -- operations -------------------------------------------------------

    def _commit_plain(self, claim: QueuedWorkClaim | None, attachments: list[str] | None) -> int:
        revision = self.model.revision + 1
        commit = build_turn(revision, self.model.next_stamp(), pad=self.rng.randrange(0, 6000))
        result = self.store.commit_runtime_state(commit)
        assert result.head_revision == revision
        return revision

    def enqueue(self) -> None:
        self.model.batches += 1
        key = f"msg-{self.model.batches}"
        draft = batch_draft(key)
        outcome = self.attempt("enqueue", lambda: self.store.enqueue_queued_work(draft))
        if not (outcome.interrupted or outcome.swallowed):
            self.model.pending.append(outcome.result.batch_id)
            self.model.source_keys[outcome.result.batch_id] = key
            return
        stored = [b for b in self.store.list_queued_work(SESSION) if b.source_key == key]
        assert len(stored) <= 1, f"{self.last}: {len(stored)} batches for one source key"
        if stored:
            items = [item.payload for item in stored[0].items]
            assert items == draft.payloads, f"{self.last}: a half-written batch {items}"
            self.model.pending.append(stored[0].batch_id)
            self.model.source_keys[stored[0].batch_id] = key
        check_whole(self.store, self.model, f"after {self.last}")
        again = self.store.enqueue_queued_work(draft)  # idempotent by source key
        if stored:
            assert again.batch_id == stored[0].batch_id, f"{self.last}: the source key did not deduplicate"
        else:
            self.model.pending.append(again.batch_id)
            self.model.source_keys[again.batch_id] = key
        self.after_interrupt()

    def record_intent(self) -> None:
        self.model.intents += 1
        attachment_id = f"att-{self.model.intents}"
        intent = AttachmentIntent(
            attachment_id=attachment_id,
            session_id=SESSION,
            canonical_uri=f"file:///attachments/{attachment_id}",
            intent_at_epoch_ms=self.clock.now,
        )
        outcome = self.attempt("record_intent", lambda: self.store.record_intent(intent))
        if not (outcome.interrupted or outcome.swallowed):
            self.model.uncommitted.add(attachment_id)
            return
        present = {e.attachment_id for e in self.store.list_uncommitted(MAX_MS)}
        if attachment_id in present:
            self.model.uncommitted.add(attachment_id)
        check_whole(self.store, self.model, f"after {self.last}")
        self.store.record_intent(intent)
        self.model.uncommitted.add(attachment_id)
        self.after_interrupt()

    def claim(self) -> None:
        if self.model.claim is not None or not self.model.pending:
            return
        expected = list(self.model.pending)

        def call() -> QueuedWorkClaim | None:
            return self.store.claim_ready_queued_work(SESSION, "worker", QueuedWorkClaimBoundary.IDLE, LEASE_MS, 64)

        outcome = self.attempt("claim", call)
        if not (outcome.interrupted or outcome.swallowed):
            claim = outcome.result
            assert claim is not None and claim.batch_ids == expected, f"{self.last}: claimed {claim}"
            self.model.claim = claim
            return
        check_whole(self.store, self.model, f"after {self.last}")
        again = call()
        if again is None:
            # The interrupted claim took every batch (we lost its proof): let its lease run out, then reclaim.
            self.clock.advance(LEASE_MS + 1)
            again = call()
            assert again is not None, f"{self.last}: the batches stay claimed after their lease expired"
        assert again.batch_ids == expected, (
            f"{self.last}: a half-applied claim: a new claim got {again.batch_ids}, expected {expected}"
        )
        self.model.claim = again
        self.after_interrupt()

    def commit(self) -> None:
        model = self.model
        revision = model.revision + 1
        claim = model.claim
        attachments = sorted(model.uncommitted)
        commit = build_turn(revision, model.next_stamp(), pad=self.rng.randrange(0, 6000), claim=claim)
        if attachments:
            commit = commit.with_committed_attachments(attachments)
        outcome = self.attempt("commit", lambda: self.store.commit_runtime_state(commit))
        if not (outcome.interrupted or outcome.swallowed):
            assert outcome.result.head_revision == revision
            self._landed(revision, claim, attachments)
            return
        read = self.store.load_session()
        stored = read.head_revision if read is not None else 0
        assert stored in (revision - 1, revision), f"{self.last}: head {stored}, expected {revision - 1} or {revision}"
        if stored == revision:
            self._landed(revision, claim, attachments)
        check_whole(self.store, model, f"after {self.last} (landed: {stored == revision})")
        self.after_interrupt()
        if stored == revision:
            # Exactly once: a retry of the landed turn returns its stored result and writes nothing.
            replay = self.store.commit_runtime_state(commit)
            assert replay.head_revision == revision, f"{self.last}: the replay returned {replay.head_revision}"
            check_whole(self.store, model, f"after replaying {self.last}")

    def _landed(self, revision: int, claim: QueuedWorkClaim | None, attachments: list[str]) -> None:
        model = self.model
        model.revision = revision
        if claim is not None:
            done = set(claim.batch_ids)
            model.pending = [batch for batch in model.pending if batch not in done]
            model.claim = None
        model.uncommitted -= set(attachments)
        model.committed |= set(attachments)

    def load(self) -> None:
        scope = SessionReadScope.active_path() if self.rng.random() < 0.5 else SessionReadScope.full_graph()
        outcome = self.attempt("load", lambda: self.store.load_session(scope))
        if outcome.interrupted or outcome.swallowed:
            check_whole(self.store, self.model, f"after {self.last}")
            self.after_interrupt()

    def gc(self) -> None:
        orphans: list[BlobRef] = [
            self.store.put_blob(f"orphan {self.step} {index} ".encode() * self.rng.randrange(1, 200))
            for index in range(3)
        ]
        outcome = self.attempt("gc", self.store.gc_unreachable)
        if not (outcome.interrupted or outcome.swallowed):
            assert all(self.store.get_blob(ref) is None for ref in orphans), f"{self.last}: GC kept an orphan"
            return
        present = [self.store.get_blob(ref) is not None for ref in orphans]
        assert all(present) or not any(present), f"{self.last}: a half-applied GC left {present}"
        check_whole(self.store, self.model, f"after {self.last}")
        self.after_interrupt()
        report = self.store.gc_unreachable()
        assert report.skipped_reason is None, f"{self.last}: GC skipped: {report.skipped_reason}"
        assert not any(self.store.get_blob(ref) is not None for ref in orphans)

    # -- the loop ---------------------------------------------------------

    def run(self) -> None:
        while self.interrupts < self.target:
            if self.file_interrupts >= INTERRUPTS_PER_FILE:
                self.store.close()
                self._open_new_file()
            for _ in range(self.rng.randrange(1, 4)):
                self.enqueue()
            self.record_intent()
            self.claim()
            self.commit()
            self.load()
            if self.rng.random() < 0.35:
                self.gc()
        check_whole(self.store, self.model, "at the end")


def run_campaign(tmp_path: Path, target: int) -> None:
    seed = _seed()
    print(f"test_interrupts seed={seed} (set LASH_INTERRUPT_SEED={seed} to replay)")
    with interrupter() as injector:
        campaign = Campaign(tmp_path, seed, target, injector)
        try:
            campaign.run()
        except Exception as exc:
            raise AssertionError(
                f"seed={seed} file={campaign.files} {campaign.last} interrupts so far={campaign.interrupts}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        finally:
            with contextlib.suppress(Exception):
                campaign.close()
    print(
        f"{campaign.interrupts} interrupts ({campaign.by_kind}) over {campaign.files} files, "
        f"{campaign.step} operations, {campaign.swallowed} swallowed by Python"
    )


@pytest.mark.timeout(120, method="thread")  # SIGALRM belongs to the test, so the timeout uses a thread
def test_interrupts_at_random_instants_leave_the_store_usable_and_whole(tmp_path: Path) -> None:
    run_campaign(tmp_path, DEFAULT_INTERRUPTS)


@pytest.mark.slow
@pytest.mark.timeout(3600, method="thread")
def test_interrupts_at_random_instants_long_profile(tmp_path: Path) -> None:
    run_campaign(tmp_path, SLOW_INTERRUPTS)


# ---------------------------------------------------------------------------
# an interrupt while waiting for a write lock that another process holds


def _lock_holder(path: str, conn: multiprocessing.connection.Connection) -> None:
    """Serve "hold" and "quit": hold BEGIN IMMEDIATE on the file until "release" arrives (or a while passed)."""
    raw = sqlite3.connect(path, timeout=10, isolation_level=None)
    try:
        while True:
            command = conn.recv()
            if command == "quit":
                return
            if command == "hold":
                raw.execute("BEGIN IMMEDIATE")
                conn.send("held")
                told = conn.poll(HOLD_AT_MOST_S)
                if told:
                    conn.recv()
                raw.execute("ROLLBACK")
                conn.send("released" if told else f"released by itself after {HOLD_AT_MOST_S} s")
            # a stray "release" (sent after the holder gave up by itself) is ignored
    finally:
        raw.close()


class LockHolder:
    """Another process that holds the file's write lock on demand."""

    def __init__(self, path: Path) -> None:
        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_lock_holder, args=(str(path), child), daemon=True)
        self.process.start()
        child.close()

    def hold(self) -> None:
        self.conn.send("hold")
        assert self.conn.poll(30), "the lock holder did not start"
        assert self.conn.recv() == "held"

    def release(self) -> str:
        """Release the lock; returns "released", or how the holder gave up by itself."""
        self.conn.send("release")
        assert self.conn.poll(15), "the lock holder did not release"
        return str(self.conn.recv())

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.send("quit")
        self.process.join(10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


WAITING_OPERATIONS = ["commit", "enqueue", "claim", "gc", "record_intent", "put_blob"]


def waiting_calls(
    store: Store, clock: FakeClock, commit: RuntimeCommit, draft: QueuedWorkBatchDraft, round_: int
) -> dict[str, Callable[[], Any]]:
    """One call of each kind that needs the write lock."""
    intent = AttachmentIntent(
        attachment_id=f"wait-{round_}", session_id=SESSION, canonical_uri="file:///x", intent_at_epoch_ms=clock.now
    )
    return {
        "commit": lambda: store.commit_runtime_state(commit),
        "enqueue": lambda: store.enqueue_queued_work(draft),
        "claim": lambda: store.claim_ready_queued_work(SESSION, "worker", QueuedWorkClaimBoundary.IDLE, LEASE_MS, 64),
        "gc": store.gc_unreachable,
        "record_intent": lambda: store.record_intent(intent),
        "put_blob": lambda: store.put_blob(f"blob {round_}".encode()),
    }


@pytest.mark.timeout(120, method="thread")
def test_interrupt_while_waiting_for_another_process_lock_is_prompt(tmp_path: Path) -> None:
    seed = _seed()
    print(f"test_interrupts (waiting) seed={seed}")
    rng = random.Random(seed)
    path = tmp_path / "waiting.db"
    clock = FakeClock()
    store = Store.open(path, StoreOptions(busy_timeout_ms=10_000, clock=clock, gc_policy=GcPolicy(grace_ms=0)))
    store.save_session_meta(
        SessionMeta(session_id=SESSION, session_name=SESSION, created_at="2024-01-01T00:00:00+00:00", model="m1")
    )
    model = Model()
    holder = LockHolder(path)
    latencies: list[float] = []
    try:
        with interrupter() as injector:
            for round_ in range(12):
                kind = WAITING_OPERATIONS[round_ % len(WAITING_OPERATIONS)]
                context = f"seed={seed} round {round_} ({kind})"
                revision = model.revision + 1
                commit = build_turn(revision, model.next_stamp(), pad=rng.randrange(0, 4000))
                model.batches += 1
                draft = batch_draft(f"msg-{model.batches}")
                if kind == "claim":  # something to claim (enqueued before the lock is taken)
                    model.pending.append(store.enqueue_queued_work(draft).batch_id)
                calls = waiting_calls(store, clock, commit, draft, round_)
                holder.hold()
                delay = rng.uniform(0.05, 0.3)
                started = time.monotonic()
                try:
                    outcome = injector.run(calls[kind], delay)
                except BaseException:
                    holder.release()
                    raise
                ended = time.monotonic()
                released = holder.release()
                assert outcome.fired_at is not None, (
                    f"{context}: the call ended after {ended - started:.3f}s, before the interrupt was due at "
                    f"{delay:.3f}s, while another process held the write lock (result: {outcome.result!r})"
                )
                latency = outcome.caught_at - outcome.due_at
                latencies.append(latency)
                assert outcome.interrupted, f"{context}: the interrupt was swallowed"
                assert latency < 0.5, (
                    f"{context}: the KeyboardInterrupt surfaced {latency:.3f}s after the signal; a call waiting "
                    f"for another process's write lock must be interruptible (busy timeout 10 s; the holder "
                    f"{released})"
                )
                # The other process released: nothing of ours is locked, and the store works.
                assert_no_lock_held(path, context)
                read = store.load_session()
                stored = read.head_revision if read is not None else 0
                assert stored in (model.revision, revision), f"{context}: head {stored}"
                if stored == revision:  # only a commit can land, and then only after the lock was free
                    assert kind == "commit", f"{context}: a {kind} moved the head"
                    model.revision = revision
                if kind == "enqueue":
                    landed = [b.batch_id for b in store.list_queued_work(SESSION) if b.source_key == draft.source_key]
                    model.pending.extend(landed)
                if kind == "record_intent":
                    model.uncommitted |= {
                        e.attachment_id for e in store.list_uncommitted(MAX_MS) if e.attachment_id == f"wait-{round_}"
                    }
                if kind == "claim":
                    again = store.claim_ready_queued_work(SESSION, "worker", QueuedWorkClaimBoundary.IDLE, LEASE_MS, 64)
                    if again is None:
                        clock.advance(LEASE_MS + 1)
                        again = store.claim_ready_queued_work(
                            SESSION, "worker", QueuedWorkClaimBoundary.IDLE, LEASE_MS, 64
                        )
                    assert again is not None and again.batch_ids == model.pending, f"{context}: claim {again}"
                    store.abandon_queued_work_claim(again)
                check_whole(store, model, context)
                model.revision += 1
                next_commit = build_turn(model.revision, model.next_stamp(), pad=10)
                assert store.commit_runtime_state(next_commit).head_revision == model.revision
                check_whole(store, model, f"{context}, after a commit")
    finally:
        holder.close()
        store.close()
    print(f"interrupt latencies while waiting for the lock: {[round(x, 4) for x in latencies]}")

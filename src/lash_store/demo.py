"""The chaos demo: many worker processes answer queued user messages while a chaos monkey SIGKILLs them.

``run_demo`` builds a factory root with a few sessions, starts one producer
process that enqueues user messages (some of them twice with the same source
key, the way a host retries a delivery), and several worker processes that
loop: claim ready work under a short lease, "think" (renewing the lease),
produce a reply with a deterministic fake model, and commit the turn -- the
graph append, the queue completion, a usage delta, a checkpoint and a turn
stamp -- in one ``commit_runtime_state``.  Every few seconds the chaos monkey
SIGKILLs a random worker and starts a new one: the killed worker's lease
expires and its work is reclaimed by another worker under a higher fence.

Workers are written to be killed at any instant:

- the claim is only consumed by the commit that answers it (same transaction);
- a worker whose claim expired and was reclaimed gets ``QueuedWorkClaimExpired``
  on renew or commit, drops the claim and moves on;
- two workers answering different messages of one session race on the head:
  the loser gets ``HeadRevisionConflict``, reloads the head and retries, so a
  session's turns stay strictly serial;
- the turn stamp (turn id = the message's source key) makes a turn
  exactly-once even if two workers ever produced it; a stamp replay is
  recognised by the claim id in the returned manifest;
- a duplicate delivery that arrives after its original was answered (a new
  batch with the same source key) is recognised from the graph and cancelled.

With chaos on, the first session also receives a *poisoned* message: every
worker that claims it SIGKILLs itself (as a message that crashes its worker
would).  The stores run under a :class:`~lash_store.PoisonPolicy`, so each
claim counts an attempt and a failed attempt backs off before the message is
offered again; after ``poison_attempts`` the next claim moves it to the
session's dead-letter list, while the messages behind it are answered as
usual.

Afterwards the demo verifies the files: every user message answered exactly
once, duplicates deduplicated, queues empty, the poisoned message (and nothing
else) dead-lettered after all its attempts, head revision == number of turns,
usage ledger == the sum of the replies' usage, and ``lash-store verify`` clean.

Workers report counters through small per-process JSON files (atomically
replaced) and an append-only claim log; nothing shared in memory can be left
locked by a SIGKILL.  Processes use the ``spawn`` start method.

The same code runs on either backend; :class:`DemoTarget` names where the
sessions live and ``_Sessions`` is the one place that differs by backend:

- SQLite (the default): a factory root directory, one file per session;
- PostgreSQL (``DemoConfig.postgres``, a DSN or ``"auto"`` for a throwaway
  server): one partition per session in a schema created for the run
  (``lash_demo_<hex>``), dropped at the end unless kept.  A fresh schema rather
  than a fresh database: it needs only the CREATE privilege on the database the
  DSN names (not CREATEDB), and every run is isolated from the others and from
  the database's default ``lash`` schema.  Every process, the parent included,
  builds its own small connection pool from the DSN, so no pool or connection
  ever crosses a process boundary; lease instants come from the database clock.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing
import os
import random
import secrets
import shutil
import signal
import sqlite3
import tempfile
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lash_store.errors import (
    HeadRevisionConflict,
    QueuedWorkClaimExpired,
    RuntimeTurnCommitConflict,
    StoreError,
)
from lash_store.model import (
    DeliveryPolicy,
    GraphDelta,
    HydratedCheckpoint,
    PersistedSessionRead,
    QueuedWorkBatchDraft,
    QueuedWorkClaim,
    QueuedWorkClaimBoundary,
    QueuedWorkPayload,
    RuntimeCommit,
    SessionNode,
    SessionReadScope,
    SlotPolicy,
    TextItem,
    TokenLedgerEntry,
    TokenUsage,
    TurnCommitStamp,
    TurnInput,
)
from lash_store.options import PoisonPolicy, StoreOptions
from lash_store.service.session import SessionService
from lash_store.sqlite.factory import SqliteSessionStoreFactory
from lash_store.sqlite.store import Store

if TYPE_CHECKING:  # the postgres extra is optional: imported where a PostgreSQL run needs it
    from psycopg_pool import ConnectionPool

__all__ = [
    "MODEL",
    "DemoConfig",
    "DemoProgress",
    "DemoResult",
    "DemoSetupError",
    "DemoTarget",
    "fake_model",
    "run_demo",
    "user_message",
    "verify_run",
]

MODEL = "fake-model-1"
RUN_DIR = ".demo"
STOP_FILE = "stop"
POISON_KEY = "poison"  # the source key of the poisoned message (first session, with chaos on)
POISON_TEXT = "Please run the tool that crashes every worker."


@dataclass(frozen=True)
class DemoConfig:
    """Knobs of one demo run (the defaults are ``lash-store demo``'s)."""

    sessions: int = 8
    messages: int = 25
    workers: int = 4
    seed: int = 7
    chaos: bool = True
    kill_every_s: float = 1.5
    lease_ms: int = 1_000
    think_ms: tuple[int, int] = (40, 240)
    duplicate_rate: float = 0.2
    stall_rate: float = 0.05  # share of turns where a worker pauses past its lease (only with chaos)
    produce_interval_s: float = 0.15
    timeout_s: float = 120.0
    directory: Path | None = None  # SQLite only: the factory root to use (and keep)
    keep: bool = False
    postgres: str | None = None  # a DSN (URI or key=value) or "auto" (a throwaway server); None: SQLite
    poison: bool = True  # with chaos on: a poisoned message that kills every worker claiming it
    poison_attempts: int = 8  # PoisonPolicy.max_attempts of the run's stores (chaos and stalls fail attempts too)

    @property
    def poisoned(self) -> bool:
        """Whether this run sends the poisoned message (a fault: only with chaos on)."""
        return self.chaos and self.poison

    def policy(self) -> PoisonPolicy:
        """The run's poison policy (in force for every run; only the poisoned message should ever exhaust it).

        The backoff is short next to the lease: a killed worker's claim already holds the message for a lease.
        """
        return PoisonPolicy(max_attempts=self.poison_attempts, backoff_base_ms=100, backoff_max_ms=400, jitter=0.5)


@dataclass
class DemoProgress:
    """A snapshot of a running demo (what the live display shows)."""

    elapsed_s: float = 0.0
    answered: int = 0
    total: int = 0
    produced: int = 0
    queued: int = 0
    kills: int = 0
    reclaims: int = 0
    cas_conflicts: int = 0
    lost_claims: int = 0
    commits_per_s: float = 0.0
    dead_letters: int = 0


class DemoSetupError(Exception):
    """The demo could not start: PostgreSQL unreachable or refused, no server binaries, no driver (one line)."""


@dataclass
class DemoResult:
    """Outcome of a demo run: counters, the verification checks, and whether everything passed.

    ``directory`` is the SQLite factory root (``None`` on PostgreSQL, whose
    sessions are described by ``postgres``: database, schema, server); ``kept``
    says whether the sessions outlive the run; ``logs`` is the worker counters
    and claim logs directory when a failed run kept it.
    """

    config: DemoConfig
    directory: Path | None
    kept: bool
    wall_s: float
    timed_out: bool
    counters: dict[str, Any] = field(default_factory=dict)
    checks: list[dict[str, Any]] = field(default_factory=list)
    sessions: list[dict[str, Any]] = field(default_factory=list)
    backend: str = "sqlite"
    postgres: dict[str, Any] | None = None
    logs: Path | None = None

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(check["ok"] for check in self.checks)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready summary."""
        return {
            "ok": self.ok,
            "backend": self.backend,
            "directory": None if self.directory is None else str(self.directory),
            "postgres": self.postgres,
            "logs": None if self.logs is None else str(self.logs),
            "kept": self.kept,
            "wall_s": round(self.wall_s, 3),
            "timed_out": self.timed_out,
            "config": {
                "sessions": self.config.sessions,
                "messages": self.config.messages,
                "workers": self.config.workers,
                "seed": self.config.seed,
                "chaos": self.config.chaos,
                "kill_every_s": self.config.kill_every_s,
                "lease_ms": self.config.lease_ms,
                "stall_rate": self.config.stall_rate if self.config.chaos else 0.0,
                "poison": self.config.poisoned,
                "poison_attempts": self.config.poison_attempts,
            },
            "counters": self.counters,
            "checks": self.checks,
            "sessions": self.sessions,
        }


# ---------------------------------------------------------------------------
# The deterministic "model" and the user messages

_TOPICS = (
    "the weather in Lisbon",
    "a good name for a cat",
    "why the sky is blue",
    "how SQLite's WAL works",
    "a haiku about queues",
    "the best way to brew tea",
    "fencing tokens",
    "what to cook tonight",
    "compare-and-set",
    "a birthday present idea",
    "the history of the abacus",
    "how leases expire",
)
_ASKS = ("Tell me about {}.", "What do you think of {}?", "Quick question: {}?", "Could you explain {}?")
_OPENERS = ("Good question.", "Happy to help.", "Let me think.", "Here is my take.", "Short answer first.")
_FILLERS = (
    "The key idea is to keep one source of truth.",
    "Most of the time the simple approach wins.",
    "It depends on what you optimise for.",
    "A small example usually makes it clear.",
    "Durability comes from writing things down before acknowledging them.",
    "Retries are safe when every step is idempotent.",
)


def user_message(seed: int, session_id: str, index: int) -> str:
    """The deterministic text of message ``index`` of a session."""
    rng = random.Random(f"{seed}|user|{session_id}|{index}")
    return rng.choice(_ASKS).format(rng.choice(_TOPICS))


def fake_model(seed: int, session_id: str, source_key: str, prompt: str) -> tuple[str, TokenUsage, int]:
    """A deterministic reply, its token usage and how long to "think" (ms), from the seed and the message."""
    rng = random.Random(f"{seed}|model|{session_id}|{source_key}|{prompt}")
    reply = " ".join([rng.choice(_OPENERS), *rng.sample(_FILLERS, rng.randint(1, 3))])
    usage = TokenUsage(
        input_tokens=len(prompt.split()) * 3 + 17,
        output_tokens=len(reply.split()) * 4 // 3 + 1,
        cached_input_tokens=rng.randint(0, 12),
        reasoning_tokens=rng.randint(0, 40),
    )
    return reply, usage, rng.randint(0, 1000)


def _source_key(index: int) -> str:
    return f"m{index:03d}"


def _session_ids(count: int) -> list[str]:
    return [f"demo-{index:02d}" for index in range(count)]


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Atomically replace ``path`` (a reader sees the old or the new content, never a torn one)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


# ---------------------------------------------------------------------------
# Where the sessions live: the one part of the demo that differs by backend


@dataclass(frozen=True)
class DemoTarget:
    """Where a run's sessions live; picklable, so each worker process gets it and opens its own stores.

    SQLite: ``location`` is a factory root directory (one file per session).
    PostgreSQL: ``location`` is a DSN and ``schema`` the run's schema (one partition per session).
    """

    location: str
    schema: str | None = None

    @property
    def backend(self) -> str:
        return "sqlite" if self.schema is None else "postgres"


def _postgres_pool(dsn: str) -> ConnectionPool:
    """A small pool private to this process (demo processes are single-threaded: two connections suffice)."""
    from psycopg_pool import ConnectionPool

    # Autocommit connections, like the store's shared pools: the backend opens every transaction itself.
    return ConnectionPool(dsn, min_size=1, max_size=2, kwargs={"autocommit": True}, name="lash-demo", open=True)


class _Sessions:
    """Opens, creates, polls and verifies the sessions of a target in this process.

    On PostgreSQL the stores run on a pool this object builds from the DSN and
    closes in :meth:`close`: it is never inherited across a process boundary,
    and the parent does not touch the process-wide shared pool of the DSN (a
    program calling :func:`run_demo` keeps its own pools as they were).
    """

    def __init__(self, target: DemoTarget, poison: PoisonPolicy | None = None) -> None:
        self.target = target
        self.options = StoreOptions(poison=poison)
        self._pool: ConnectionPool | None = None if target.schema is None else _postgres_pool(target.location)

    def _schema(self) -> str:
        assert self.target.schema is not None
        return self.target.schema

    def path(self, session_id: str) -> Path:
        """The file of a session (SQLite only)."""
        return SqliteSessionStoreFactory(self.target.location).path_for_session(session_id)

    def create(self, session_id: str) -> None:
        if self._pool is None:
            SqliteSessionStoreFactory(self.target.location).create_store(session_id, model=MODEL).close()
            return
        from lash_store.postgres import PostgresSessionStoreFactory

        PostgresSessionStoreFactory(self._pool, schema=self._schema()).create_store(session_id, model=MODEL).close()

    def open(self, session_id: str) -> SessionService:
        """A store of a session the parent created (workers and the producer never create one)."""
        if self._pool is None:
            return Store.open(self.path(session_id), self.options)
        from lash_store.postgres import PostgresStore

        # No injected clock: every lease instant (claim, renew, expiry) is the database's, one clock for all
        # worker processes whatever their host clocks say.
        return PostgresStore.open(self._pool, session_id, self.options, schema=self._schema(), create=False)

    def open_readonly(self, session_id: str) -> SessionService:
        if self._pool is None:
            return Store.open_readonly(self.path(session_id))
        return self.open(session_id)  # create=False writes nothing

    def poller(self, session_ids: list[str]) -> _Poller | _PostgresPoller:
        if self._pool is None:
            return _Poller([self.path(sid) for sid in session_ids])
        return _PostgresPoller(self._pool, self._schema())

    def verify(self, session_id: str) -> list[str]:
        """The problems ``lash-store verify`` finds in a session (empty: clean)."""
        from lash_store import tools  # the verifier of `lash-store verify`

        if self._pool is None:
            problems: list[str] = tools.verify(self.path(session_id))["problems"]
            return problems
        # The verifier reads SQLite files, so a partition is checked as an exact copy: its rows, exported from
        # one snapshot, are imported into a scratch file (the import decodes and checks every record before it
        # commits) and verified there.  The import recomputes the maintained counters rather than copying them,
        # so those are compared here against the partition's own rows.
        problems = []
        with self.open_readonly(session_id) as store:
            dump = store.export_session()
            node_count = store.graph_node_count()
            info = store.load_picker_info()
        live = [node for node in dump.nodes if not node.tombstoned]
        users = sum(node.user_text is not None for node in live)
        if node_count != len(live):
            problems.append(f"counters: maintained node count {node_count} != {len(live)} live nodes")
        if info is None or info.user_message_count != users:
            counted = None if info is None else info.user_message_count
            problems.append(f"counters: maintained user-message count {counted} != {users} live user messages")
        with tempfile.TemporaryDirectory(prefix="lash-demo-verify-") as scratch:
            copy = Path(scratch) / "copy.db"
            try:
                with Store.open(copy) as target:
                    target.import_session(dump)
            except StoreError as exc:
                problems.append(f"import: {type(exc).__name__}: {exc}")
            else:
                problems.extend(tools.verify(copy)["problems"])
        return problems

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()


# ---------------------------------------------------------------------------
# Producer process


def _producer_main(
    target: DemoTarget,
    run_dir: str,
    session_ids: list[str],
    messages: int,
    seed: int,
    duplicate_rate: float,
    interval_s: float,
    poisoned: bool,
) -> None:
    """Enqueue every message once, some twice (at once, or a few rounds later), then write final counters."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us
    sessions = _Sessions(target)
    try:
        _produce(sessions, run_dir, session_ids, messages, seed, duplicate_rate, interval_s, poisoned)
    finally:
        sessions.close()


def _produce(
    sessions: _Sessions,
    run_dir: str,
    session_ids: list[str],
    messages: int,
    seed: int,
    duplicate_rate: float,
    interval_s: float,
    poisoned: bool,
) -> None:
    stores = {sid: sessions.open(sid) for sid in session_ids}
    stats_path = Path(run_dir) / "producer.json"
    rng = random.Random(f"{seed}|producer")
    counters = {"sent": 0, "duplicates_sent": 0, "deduplicated_at_enqueue": 0, "duplicates_requeued": 0, "done": 0}
    late: list[tuple[int, str, str, str, str]] = []

    def enqueue(session_id: str, key: str, text: str) -> str:
        draft = QueuedWorkBatchDraft.new(
            session_id,
            DeliveryPolicy.AFTER_CURRENT_TURN_COMMIT,
            SlotPolicy.EXCLUSIVE,
            [QueuedWorkPayload.turn_input(TurnInput.text(text))],
        ).with_source_key(key)
        return stores[session_id].enqueue_queued_work(draft).batch_id

    def duplicate(session_id: str, key: str, text: str, first_batch_id: str) -> None:
        counters["duplicates_sent"] += 1
        if enqueue(session_id, key, text) == first_batch_id:
            counters["deduplicated_at_enqueue"] += 1  # the original still exists: the store returned it
        else:
            counters["duplicates_requeued"] += 1  # the original was consumed: a worker must recognise it

    if poisoned:  # first in its session's queue: the messages behind it must not wait for it
        enqueue(session_ids[0], POISON_KEY, POISON_TEXT)
    stop = Path(run_dir) / STOP_FILE
    for index in range(messages):
        if stop.exists():  # the run was stopped (timeout or Ctrl-C)
            break
        for session_id in session_ids:
            key, text = _source_key(index), user_message(seed, session_id, index)
            batch_id = enqueue(session_id, key, text)
            counters["sent"] += 1
            draw = rng.random()
            if draw < duplicate_rate / 2:
                duplicate(session_id, key, text, batch_id)  # an immediate retry
            elif draw < duplicate_rate:
                late.append((index + rng.randint(2, 8), session_id, key, text, batch_id))  # a late redelivery
        due = [entry for entry in late if entry[0] <= index]
        late = [entry for entry in late if entry[0] > index]
        for _round, session_id, key, text, batch_id in due:
            duplicate(session_id, key, text, batch_id)
        _write_json(stats_path, counters)
        time.sleep(interval_s)
    for _round, session_id, key, text, batch_id in late:
        duplicate(session_id, key, text, batch_id)
    counters["done"] = 1
    _write_json(stats_path, counters)
    for store in stores.values():
        store.close()


# ---------------------------------------------------------------------------
# Worker process


class _Worker:
    """One worker incarnation: claims, thinks, commits; reports through its own files."""

    def __init__(
        self,
        target: DemoTarget,
        run_dir: str,
        session_ids: list[str],
        slot: int,
        incarnation: int,
        seed: int,
        lease_ms: int,
        think_ms: tuple[int, int],
        stall_rate: float,
        poison: PoisonPolicy,
    ) -> None:
        self.sessions = _Sessions(target, poison)
        self.run_dir = Path(run_dir)
        self.session_ids = session_ids
        self.owner = f"worker-{slot}.{incarnation}"
        self.seed = seed
        self.lease_ms = lease_ms
        self.think_ms = think_ms
        self.stall_rate = stall_rate
        self.rng = random.Random(f"{seed}|worker|{slot}|{incarnation}")
        self.stores: dict[str, SessionService] = {}
        self.stats_path = self.run_dir / f"worker-{slot}-{incarnation}.json"
        self.claim_log = os.open(
            self.run_dir / f"claims-{slot}-{incarnation}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600
        )
        self.counters: dict[str, Any] = {
            "pid": os.getpid(),
            "claims": 0,
            "commits": 0,
            "cas_conflicts": 0,
            "lost_claims": 0,
            "deduplicated": 0,
            "stamp_replays": 0,
            "stalls": 0,
            "poisoned": 0,
            "errors": [],
        }
        self.report()

    def store(self, session_id: str) -> SessionService:
        store = self.stores.get(session_id)
        if store is None:
            store = self.stores[session_id] = self.sessions.open(session_id)
        return store

    def report(self) -> None:
        _write_json(self.stats_path, self.counters)

    def run(self) -> None:
        stop = self.run_dir / STOP_FILE
        parent = os.getppid()
        while not stop.exists() and os.getppid() == parent:
            order = self.session_ids[:]
            self.rng.shuffle(order)
            for session_id in order:
                claim = self.store(session_id).claim_ready_queued_work(
                    session_id, self.owner, QueuedWorkClaimBoundary.IDLE, self.lease_ms, 1
                )
                if claim is not None:
                    self.handle(claim)
                    break
            else:
                time.sleep(0.02)

    def handle(self, claim: QueuedWorkClaim) -> None:
        batch = claim.batches[0]
        line = f"{batch.batch_id} {claim.fencing_token} {self.owner} {claim.session_id} {batch.source_key}\n"
        os.write(self.claim_log, line.encode())
        self.counters["claims"] += 1
        if batch.source_key == POISON_KEY:
            # The poisoned message: this worker dies claiming it, every time (its claim is left to expire).
            self.counters["poisoned"] = 1
            self.report()
            os.kill(os.getpid(), signal.SIGKILL)
        try:
            self.answer(claim)
        except StoreError as exc:  # not expected: reported, and the run's verification fails
            self.counters["errors"].append(f"{self.owner}: {type(exc).__name__}: {exc}")
            with contextlib.suppress(StoreError):
                self.store(claim.session_id).abandon_queued_work_claim(claim)
        self.report()

    def answer(self, claim: QueuedWorkClaim) -> None:
        """Load the session, think (renewing the lease), commit the turn; retry on a head-revision conflict."""
        session_id, batch = claim.session_id, claim.batches[0]
        store = self.store(session_id)
        key = batch.source_key or batch.batch_id
        item = batch.items[0].payload.input if batch.items else None
        prompt = " ".join(i.text for i in item.items if isinstance(i, TextItem)) if item else ""
        read = store.load_session(SessionReadScope.full_graph())  # the model reads the history first
        if read is not None and key in _answered_keys(read):
            self.drop_duplicate(store, claim)  # a redelivery of a message that was already answered
            return
        reply, usage, think = fake_model(self.seed, session_id, key, prompt)
        low, high = self.think_ms
        renewed = self.think(store, claim, (low + think * (high - low) / 1000) / 1000)
        if renewed is None:
            self.counters["lost_claims"] += 1  # our lease expired and someone reclaimed the work: drop it
            return
        claim = renewed
        turn_hash = hashlib.sha256(f"{key}\n{prompt}\n{reply}".encode()).hexdigest()
        for _attempt in range(100):
            commit = self.turn_commit(claim, read, key, prompt, reply, usage, turn_hash)
            try:
                result = store.commit_runtime_state(commit)
            except HeadRevisionConflict:
                # Another turn of this session committed while we were thinking: reload the head, retry.
                self.counters["cas_conflicts"] += 1
                read = store.load_session(SessionReadScope.full_graph())
                if read is not None and key in _answered_keys(read):
                    self.drop_duplicate(store, claim)
                    return
                continue
            except QueuedWorkClaimExpired:
                self.counters["lost_claims"] += 1
                return
            except RuntimeTurnCommitConflict as exc:  # same turn, other content: impossible with this model
                self.counters["errors"].append(f"{self.owner}: {exc}")
                self.drop_duplicate(store, claim)
                return
            turn_state = result.manifest.turn_state
            if isinstance(turn_state, dict) and turn_state.get("claim_id") == claim.claim_id:
                self.counters["commits"] += 1
            else:
                self.counters["stamp_replays"] += 1  # someone else committed this turn; ours wrote nothing
                self.drop_duplicate(store, claim)
            return
        raise StoreError(f"gave up on {key} of {session_id} after 100 head-revision conflicts")

    def think(self, store: SessionService, claim: QueuedWorkClaim, seconds: float) -> QueuedWorkClaim | None:
        """Sleep like a model call, renewing the lease every third of its TTL; ``None`` if the claim was lost."""
        if self.rng.random() < self.stall_rate:
            # A long pause (GC, swapping, a stuck call) without renewing: the lease expires and another worker
            # may reclaim the work under a higher fence; then our renew or commit is rejected.
            self.counters["stalls"] += 1
            time.sleep(self.lease_ms * 1.5 / 1000)
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            time.sleep(min(remaining, self.lease_ms / 3000))
            try:
                claim = store.renew_queued_work_claim(claim, self.lease_ms)
            except QueuedWorkClaimExpired:
                return None
        return claim

    def drop_duplicate(self, store: SessionService, claim: QueuedWorkClaim) -> None:
        """The message is already answered: release the claim and remove the redundant batch."""
        self.counters["deduplicated"] += 1
        store.abandon_queued_work_claim(claim)
        for batch in claim.batches:
            store.cancel_queued_work_batch(claim.session_id, batch.batch_id)

    def turn_commit(
        self,
        claim: QueuedWorkClaim,
        read: PersistedSessionRead | None,
        key: str,
        prompt: str,
        reply: str,
        usage: TokenUsage,
        turn_hash: str,
    ) -> RuntimeCommit:
        session_id, batch = claim.session_id, claim.batches[0]
        revision = read.head_revision if read is not None else 0
        leaf = read.graph.leaf_node_id if read is not None else None
        suffix = batch.batch_id.removeprefix("qwb:")[:8]
        now = time.time_ns() // 1_000_000
        origin = {"source_key": key, "batch_id": batch.batch_id, "fence": claim.fencing_token, "worker": self.owner}
        user = SessionNode(
            node_id=f"{key}-user-{suffix}",
            parent_node_id=leaf,
            payload={"role": "user", "parts": [{"type": "text", "text": prompt}], "demo": origin},
            timestamp_ms=now,
        )
        usage_record = {
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "cached_input_tokens": usage.cached_input_tokens,
            "reasoning_tokens": usage.reasoning_tokens,
        }
        assistant = SessionNode(
            node_id=f"{key}-reply-{suffix}",
            parent_node_id=user.node_id,
            payload={
                "role": "assistant",
                "parts": [{"type": "text", "text": reply}],
                "demo": {**origin, "usage": usage_record},
            },
            timestamp_ms=now,
        )
        turn = revision + 1
        return (
            RuntimeCommit(
                session_id=session_id,
                expected_head_revision=revision,
                config={"model": MODEL, "demo_seed": self.seed},
                agent_frames=[{"frame_id": "main"}],
                current_agent_frame_id="main",
                graph=GraphDelta.append([user, assistant], leaf_node_id=assistant.node_id),
                checkpoint=HydratedCheckpoint(
                    turn_state={"turn": turn, "source_key": key, "claim_id": claim.claim_id, "worker": self.owner},
                    tool_state={"answered": turn, "last_reply_chars": len(reply)},
                    execution_state=f"{session_id}:{turn}:{key}".encode(),
                ),
                usage_deltas=[TokenLedgerEntry(source="turn", model=MODEL, usage=usage)],
            )
            .with_turn_commit(TurnCommitStamp(session_id=session_id, turn_id=f"turn:{key}", turn_commit_hash=turn_hash))
            .completing_queue_claim(claim.completion())
        )

    def close(self) -> None:
        for store in self.stores.values():
            store.close()
        self.sessions.close()
        os.close(self.claim_log)


def _answered_keys(read: PersistedSessionRead) -> set[str]:
    keys = set()
    for node in read.graph.nodes:
        payload = node.payload
        if isinstance(payload, dict) and payload.get("role") == "assistant":
            origin = payload.get("demo")
            if isinstance(origin, dict) and isinstance(origin.get("source_key"), str):
                keys.add(origin["source_key"])
    return keys


def _worker_main(
    target: DemoTarget,
    run_dir: str,
    session_ids: list[str],
    slot: int,
    incarnation: int,
    seed: int,
    lease_ms: int,
    think_ms: tuple[int, int],
    stall_rate: float,
    poison: PoisonPolicy,
) -> None:
    """Entry point of a worker process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us
    worker = _Worker(target, run_dir, session_ids, slot, incarnation, seed, lease_ms, think_ms, stall_rate, poison)
    try:
        worker.run()
    finally:
        worker.close()


# ---------------------------------------------------------------------------
# The parent: processes, chaos, progress, verification


class _Supervisor:
    """Starts, kills and restarts worker processes (each is ours, addressed by its pid)."""

    def __init__(self, config: DemoConfig, target: DemoTarget, run_dir: Path, session_ids: list[str]) -> None:
        self.config = config
        self.target = target
        self.run_dir = run_dir
        self.session_ids = session_ids
        self.context = multiprocessing.get_context("spawn")
        self.workers: dict[int, BaseProcess] = {}
        self.incarnations: dict[int, int] = {}
        self.kills = 0
        self.restarts = 0
        self.poison_kills = 0
        self.crashes: list[str] = []
        self.producer: BaseProcess | None = None

    def start_producer(self) -> None:
        config = self.config
        self.producer = self.context.Process(
            target=_producer_main,
            args=(
                self.target,
                str(self.run_dir),
                self.session_ids,
                config.messages,
                config.seed,
                config.duplicate_rate,
                config.produce_interval_s,
                config.poisoned,
            ),
            name="lash-demo-producer",
            daemon=True,
        )
        self.producer.start()

    def start_worker(self, slot: int) -> None:
        incarnation = self.incarnations.get(slot, -1) + 1
        self.incarnations[slot] = incarnation
        config = self.config
        process = self.context.Process(
            target=_worker_main,
            args=(
                self.target,
                str(self.run_dir),
                self.session_ids,
                slot,
                incarnation,
                config.seed,
                config.lease_ms,
                config.think_ms,
                config.stall_rate if config.chaos else 0.0,
                config.policy(),
            ),
            name=f"lash-demo-worker-{slot}.{incarnation}",
            daemon=True,
        )
        process.start()
        self.workers[slot] = process

    def kill(self, slot: int) -> None:
        process = self.workers[slot]
        if process.pid is not None and process.is_alive():
            os.kill(process.pid, signal.SIGKILL)
            self.kills += 1
        process.join(5)
        self.restarts += 1
        self.start_worker(slot)

    def restart_crashed(self) -> None:
        for slot, process in list(self.workers.items()):
            if process.exitcode is not None:
                stats = _read_json(self.run_dir / f"worker-{slot}-{self.incarnations[slot]}.json")
                if process.exitcode == -signal.SIGKILL and stats.get("poisoned"):
                    self.poison_kills += 1  # the poisoned message killed it, as it kills every worker
                else:
                    self.crashes.append(f"worker {slot} exited unexpectedly with code {process.exitcode}")
                self.restarts += 1
                self.start_worker(slot)

    def stop(self) -> None:
        (self.run_dir / STOP_FILE).touch()
        processes = [*self.workers.values(), *([self.producer] if self.producer else [])]
        deadline = time.monotonic() + 10
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
        for process in processes:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGKILL)
                process.join(5)


class _Poller:
    """Read-only progress polling of the session files (plain ``mode=ro`` connections, kept open)."""

    def __init__(self, paths: list[Path]) -> None:
        self.conns = [
            sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None, timeout=5)
            for path in paths
        ]

    def poll(self) -> tuple[int, int, int]:
        """(turns committed, batches queued, dead letters) over every session."""
        turns = queued = dead = 0
        for conn in self.conns:
            conn.execute("BEGIN")
            try:
                row = conn.execute("SELECT head_revision FROM session_head").fetchone()
                turns += row[0] if row else 0
                live, letters = conn.execute(
                    "SELECT count(*) - count(dead_at_ms), count(dead_at_ms) FROM queued_work_batches"
                ).fetchone()
                queued, dead = queued + live, dead + letters
            finally:
                conn.execute("ROLLBACK")
        return turns, queued, dead

    def close(self) -> None:
        for conn in self.conns:
            conn.close()


class _PostgresPoller:
    """Progress of every partition of the run's schema, from one statement (one snapshot)."""

    def __init__(self, pool: ConnectionPool, schema: str) -> None:
        from psycopg import sql

        self.pool = pool
        self.query = sql.SQL(
            "SELECT (SELECT coalesce(sum(head_revision), 0) FROM {schema}.sessions),"
            " (SELECT count(*) - count(dead_at_ms) FROM {schema}.queued_work_batches),"
            " (SELECT count(dead_at_ms) FROM {schema}.queued_work_batches)"
        ).format(schema=sql.Identifier(schema))

    def poll(self) -> tuple[int, int, int]:
        """(turns committed, batches queued, dead letters) over every session."""
        with self.pool.connection() as conn:
            row = conn.execute(self.query).fetchone()
        return (int(row[0]), int(row[1]), int(row[2])) if row is not None else (0, 0, 0)

    def close(self) -> None:
        """Nothing of its own to close: the pool belongs to the ``_Sessions`` that made this poller."""


def _aggregate(run_dir: Path) -> dict[str, Any]:
    """Sum the counters every worker incarnation wrote, and count re-deliveries from the claim logs."""
    totals: dict[str, Any] = {
        "claims": 0,
        "commits": 0,
        "cas_conflicts": 0,
        "lost_claims": 0,
        "deduplicated": 0,
        "stamp_replays": 0,
        "stalls": 0,
        "errors": [],
    }
    for path in sorted(run_dir.glob("worker-*.json")):
        data = _read_json(path)
        for key, value in data.items():
            if key == "errors" and isinstance(value, list):
                totals["errors"].extend(str(error) for error in value)
            elif key in totals and isinstance(value, int):
                totals[key] += value
    claims_per_batch: dict[str, list[int]] = {}
    poison_batches: set[str] = set()
    for path in run_dir.glob("claims-*.log"):
        with contextlib.suppress(OSError):
            for line in path.read_text().splitlines():
                fields = line.split()
                if len(fields) >= 2 and fields[1].isdigit():
                    claims_per_batch.setdefault(fields[0], []).append(int(fields[1]))
                    if len(fields) >= 5 and fields[4] == POISON_KEY:
                        poison_batches.add(fields[0])
    totals["poison_claims"] = sum(len(claims_per_batch[batch_id]) for batch_id in poison_batches)
    totals["claims"] = sum(len(fences) for fences in claims_per_batch.values())
    totals["reclaims"] = sum(len(fences) - 1 for fences in claims_per_batch.values())
    totals["reclaimed_batches"] = sum(1 for fences in claims_per_batch.values() if len(fences) > 1)
    return totals


def _check(name: str, ok: bool, detail: str) -> dict[str, Any]:
    return {"name": name, "ok": ok, "detail": detail}


def verify_run(
    config: DemoConfig, where: str | os.PathLike[str] | DemoTarget
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Check the durable state of every session of a demo run; returns (checks, per-session rows).

    ``where`` is the run's factory root directory, or a :class:`DemoTarget`
    (a PostgreSQL run's DSN and schema).  Needs only the stored sessions (and
    the run's configuration): every message of every session answered exactly
    once, in one linear conversation, nothing left queued, head revision ==
    turns, usage ledger == the replies' usage, the checkpoint at the head, and
    ``lash-store verify`` clean.
    """
    target = where if isinstance(where, DemoTarget) else DemoTarget(os.fspath(where))
    sessions = _Sessions(target)
    try:
        return _verify(config, sessions)
    finally:
        sessions.close()


def _verify(config: DemoConfig, sessions: _Sessions) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    session_ids = _session_ids(config.sessions)
    expected_keys = {_source_key(index) for index in range(config.messages)}
    problems: dict[str, list[str]] = {
        name: []
        for name in (
            "answered",
            "duplicates",
            "queues",
            "dead_letters",
            "revisions",
            "linear",
            "usage",
            "checkpoint",
            "verify",
        )
    }
    rows = []
    for session_id in session_ids:
        with sessions.open_readonly(session_id) as store:
            read = store.load_session(SessionReadScope.full_graph())
            path_read = store.load_session(SessionReadScope.active_path())
            queued = store.list_queued_work(session_id)
            letters = store.list_dead_letters(session_id)
        wanted = [POISON_KEY] if config.poisoned and session_id == session_ids[0] else []
        if [letter.batch.source_key for letter in letters] != wanted:
            keys = [letter.batch.source_key for letter in letters]
            problems["dead_letters"].append(f"{session_id}: dead letters {keys}, expected {wanted}")
        for letter in letters:
            if letter.batch.source_key == POISON_KEY and letter.attempts != config.poison_attempts:
                problems["dead_letters"].append(
                    f"{session_id}: the poisoned message was set aside after {letter.attempts} attempts, "
                    f"not {config.poison_attempts}"
                )
        user_keys: dict[str, int] = {}
        reply_keys: dict[str, int] = {}
        usage_sum = TokenUsage()
        nodes = read.graph.nodes if read else []
        by_id = {node.node_id: node for node in nodes}
        for node in nodes:
            payload: dict[str, Any] = node.payload if isinstance(node.payload, dict) else {}
            origin: dict[str, Any] = payload["demo"] if isinstance(payload.get("demo"), dict) else {}
            key = origin.get("source_key")
            if payload.get("role") == "user" and isinstance(key, str):
                user_keys[key] = user_keys.get(key, 0) + 1
                if payload["parts"][0]["text"] != user_message(config.seed, session_id, int(key[1:])):
                    problems["answered"].append(f"{session_id}: message {key} was stored with the wrong text")
            elif payload.get("role") == "assistant" and isinstance(key, str):
                reply_keys[key] = reply_keys.get(key, 0) + 1
                parent = by_id.get(node.parent_node_id or "")
                parent_payload = parent.payload if parent is not None and isinstance(parent.payload, dict) else {}
                parent_origin = parent_payload.get("demo")
                if not isinstance(parent_origin, dict) or parent_origin.get("source_key") != key:
                    problems["answered"].append(f"{session_id}: the reply to {key} does not follow its message")
                usage_sum = usage_sum + TokenUsage(**origin["usage"])
            else:
                problems["answered"].append(f"{session_id}: unexpected node {node.node_id!r}")
        missing = sorted(expected_keys - set(reply_keys))
        if missing:
            problems["answered"].append(f"{session_id}: {len(missing)} unanswered, e.g. {missing[:3]}")
        if set(user_keys) - expected_keys:
            problems["answered"].append(f"{session_id}: unexpected messages {sorted(set(user_keys) - expected_keys)}")
        doubled = sorted({k for k in user_keys if user_keys[k] > 1} | {k for k in reply_keys if reply_keys[k] > 1})
        if doubled:
            problems["duplicates"].append(f"{session_id}: answered more than once: {doubled[:5]}")
        if queued:
            problems["queues"].append(f"{session_id}: {len(queued)} batches still queued")
        revision = read.head_revision if read else 0
        if revision != len(reply_keys) or revision != sum(reply_keys.values()):
            problems["revisions"].append(f"{session_id}: head revision {revision}, {sum(reply_keys.values())} turns")
        if path_read is None or len(path_read.graph.nodes) != len(nodes):
            on_path = len(path_read.graph.nodes) if path_read else 0
            problems["linear"].append(f"{session_id}: {on_path} of {len(nodes)} nodes on the active path")
        ledger = read.token_ledger if read else []
        ledger_sum = sum((entry.usage for entry in ledger), TokenUsage())
        if ledger_sum != usage_sum:
            problems["usage"].append(f"{session_id}: ledger {ledger_sum} != replies {usage_sum}")
        turn_state = read.checkpoint.turn_state if read and read.checkpoint else None
        if not isinstance(turn_state, dict) or turn_state.get("turn") != revision:
            problems["checkpoint"].append(f"{session_id}: checkpoint turn {turn_state!r} != revision {revision}")
        verify_problems = sessions.verify(session_id)
        problems["verify"].extend(f"{session_id}: {problem}" for problem in verify_problems)
        rows.append(
            {
                "session_id": session_id,
                "head_revision": revision,
                "messages": len(user_keys),
                "replies": sum(reply_keys.values()),
                "queued": len(queued),
                "dead_letters": len(letters),
                "nodes": len(nodes),
                "verify_ok": not verify_problems,
            }
        )
    total = config.sessions * config.messages
    if sessions.target.schema is None:
        verified = f"{len(session_ids)} session files"
    else:
        verified = f"{len(session_ids)} sessions, each exported to a SQLite copy and verified; counters match"
    labels = {
        "answered": ("every user message answered exactly once", f"{total} messages, one reply each"),
        "duplicates": ("duplicates deduplicated", "no message or reply stored twice"),
        "queues": ("queues empty", "no batch left in any session"),
        "dead_letters": (
            "only the poisoned message dead-lettered",
            f"{session_ids[0]}: the poisoned message, after {config.poison_attempts} attempts; nothing else"
            if config.poisoned
            else "no poisoned message in this run; nothing dead-lettered",
        ),
        "revisions": ("head revision == number of turns", "per session"),
        "linear": ("one linear conversation per session", "every node on the active path"),
        "usage": ("usage ledger == sum of replies' usage", "exactly-once usage accounting"),
        "checkpoint": ("checkpoint matches the head", "turn_state.turn == head revision"),
        "verify": ("lash-store verify clean", verified),
    }
    checks = []
    for key, (name, detail) in labels.items():
        found = problems[key]
        checks.append(_check(name, not found, "; ".join(found[:5]) if found else detail))
    return checks, rows


@dataclass
class _Place:
    """Where one run's sessions and worker logs live, and how to remove them."""

    target: DemoTarget
    run_dir: Path  # worker counters and claim logs
    kept: bool  # the sessions outlive the run
    directory: Path | None  # SQLite: the factory root
    postgres: dict[str, Any] | None  # PostgreSQL: database (no password), schema, server
    discard_sessions: Callable[[], None]
    can_keep: bool = True  # False when the sessions die with a throwaway server whatever happens

    def discard_logs(self) -> None:
        shutil.rmtree(self.run_dir, ignore_errors=True)


def _sqlite_place(config: DemoConfig) -> _Place:
    if config.directory is not None:
        directory = Path(config.directory)
        directory.mkdir(parents=True, exist_ok=True)
        if any(directory.glob("*.db")):
            raise ValueError(f"{directory} already holds session databases; give an empty or new directory")
        kept = True
    else:
        directory = Path(tempfile.mkdtemp(prefix="lash-demo-"))
        kept = config.keep
    run_dir = directory / RUN_DIR
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    return _Place(
        target=DemoTarget(str(directory)),
        run_dir=run_dir,
        kept=kept,
        directory=directory,
        postgres=None,
        discard_sessions=lambda: shutil.rmtree(directory, ignore_errors=True),
    )


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _start_server(stack: contextlib.ExitStack) -> str:
    """Start a throwaway PostgreSQL server, removed when ``stack`` closes; returns its DSN."""
    from lash_store.testing.pgserver import PostgresServer, PostgresServerError, PostgresUnavailable

    # fsync off, as in the tests: the chaos kills processes, not the machine, and the server is gone afterwards.
    server = PostgresServer(fsync=False)
    stack.callback(server.cleanup)
    try:
        server.start()
    except PostgresUnavailable as exc:
        raise DemoSetupError(f"postgres 'auto' needs a local PostgreSQL installation: {_one_line(exc)}") from None
    except PostgresServerError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DemoSetupError(f"the throwaway PostgreSQL server did not start: {first}") from None
    return server.dsn


def _postgres_place(config: DemoConfig, stack: contextlib.ExitStack) -> _Place:
    """A fresh schema for the run (and, for ``"auto"``, a throwaway server to hold it)."""
    assert config.postgres is not None
    try:
        import psycopg
        from psycopg import conninfo, sql

        from lash_store.postgres import setup
    except ImportError:
        raise DemoSetupError("a PostgreSQL run needs the postgres extra: pip install 'lash-store[postgres]'") from None
    server = "auto" if config.postgres == "auto" else "dsn"
    dsn = _start_server(stack) if server == "auto" else config.postgres
    schema = f"lash_demo_{secrets.token_hex(4)}"
    identifier = sql.Identifier(schema)

    def connect() -> psycopg.Connection[Any]:
        # A bounded wait for an unreachable host, unless the DSN sets its own.
        bounded = (
            dsn
            if "connect_timeout" in conninfo.conninfo_to_dict(dsn)
            else conninfo.make_conninfo(dsn, connect_timeout=10)
        )
        return psycopg.connect(bounded, autocommit=True)

    try:
        with connect() as conn:
            info = conn.info
            database = f"dbname={info.dbname} user={info.user} host={info.host} port={info.port}"
            # No IF NOT EXISTS: the schema must be the run's own, never an existing one reused.
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(identifier))
    except psycopg.Error as exc:
        raise DemoSetupError(f"cannot use PostgreSQL: {_one_line(exc)}") from exc

    def drop() -> None:
        try:
            with connect() as conn:
                conn.execute("SET lock_timeout = '30s'")
                conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(identifier))
        except psycopg.Error as exc:
            raise DemoSetupError(f"could not drop schema {schema} ({database}): {_one_line(exc)}") from exc

    try:
        setup(dsn, schema=schema)
        run_dir = Path(tempfile.mkdtemp(prefix="lash-demo-pg-"))
    except BaseException:
        drop()
        raise
    keep = config.keep and server != "auto"
    return _Place(
        target=DemoTarget(dsn, schema),
        run_dir=run_dir,
        kept=keep,
        directory=None,
        postgres={"server": server, "database": database, "schema": schema},
        # A throwaway server takes the schema with it; dropping it first would only cost time.
        discard_sessions=drop if server != "auto" else lambda: None,
        can_keep=server != "auto",
    )


def run_demo(config: DemoConfig, on_progress: Callable[[DemoProgress], None] | None = None) -> DemoResult:
    """Run the demo and verify it; ``on_progress`` is called a few times a second with a snapshot.

    Raises ``ValueError`` for a bad configuration and :class:`DemoSetupError`
    when PostgreSQL cannot be used (both before any process starts).
    """
    if config.sessions < 1 or config.messages < 1 or config.workers < 1:
        raise ValueError("sessions, messages and workers must each be at least 1")
    if config.postgres is not None:
        if config.directory is not None:
            raise ValueError("a directory is a SQLite factory root; a PostgreSQL run keeps its sessions in a schema")
        if config.postgres == "auto" and config.keep:
            raise ValueError("nothing can be kept from a throwaway PostgreSQL server (it is removed afterwards)")
    with contextlib.ExitStack() as stack:
        place = _sqlite_place(config) if config.postgres is None else _postgres_place(config, stack)
        try:
            result = _run(config, place, on_progress)
        except BaseException:
            if not place.kept:
                place.discard_sessions()
                place.discard_logs()
            raise
        if not result.ok:
            # Keep the evidence of a failed run: the sessions (where they can outlive it) and the worker logs.
            result.kept = place.can_keep
            result.logs = place.run_dir
        elif not place.kept:
            place.discard_sessions()
            place.discard_logs()
        else:
            place.discard_logs()
        return result


def _run(config: DemoConfig, place: _Place, on_progress: Callable[[DemoProgress], None] | None) -> DemoResult:
    session_ids = _session_ids(config.sessions)
    sessions = _Sessions(place.target)
    try:
        for session_id in session_ids:
            sessions.create(session_id)
        return _supervise(config, place, sessions, session_ids, on_progress)
    finally:
        sessions.close()


def _supervise(
    config: DemoConfig,
    place: _Place,
    sessions: _Sessions,
    session_ids: list[str],
    on_progress: Callable[[DemoProgress], None] | None,
) -> DemoResult:
    run_dir = place.run_dir
    total = config.sessions * config.messages
    supervisor = _Supervisor(config, place.target, run_dir, session_ids)
    poller = sessions.poller(session_ids)
    chaos_rng = random.Random(f"{config.seed}|chaos")
    started = time.monotonic()
    timed_out = False
    try:
        supervisor.start_producer()
        for slot in range(config.workers):
            supervisor.start_worker(slot)
        next_kill = started + config.kill_every_s * chaos_rng.uniform(0.6, 1.4)
        history: deque[tuple[float, int]] = deque()
        next_stats = 0.0
        stats: dict[str, Any] = _aggregate(run_dir)
        while True:
            now = time.monotonic()
            if config.chaos and now >= next_kill:
                supervisor.kill(chaos_rng.randrange(config.workers))
                next_kill = now + config.kill_every_s * chaos_rng.uniform(0.6, 1.4)
            supervisor.restart_crashed()
            answered, queued, dead = poller.poll()
            history.append((now, answered))
            while history and now - history[0][0] > 3.0:
                history.popleft()
            if now >= next_stats:
                stats = _aggregate(run_dir)
                next_stats = now + 0.5
            produced = _read_json(run_dir / "producer.json")
            if on_progress is not None:
                span = history[-1][0] - history[0][0]
                on_progress(
                    DemoProgress(
                        elapsed_s=now - started,
                        answered=answered,
                        total=total,
                        produced=int(produced.get("sent", 0)),
                        queued=queued,
                        kills=supervisor.kills,
                        reclaims=int(stats["reclaims"]),
                        cas_conflicts=int(stats["cas_conflicts"]),
                        lost_claims=int(stats["lost_claims"]),
                        commits_per_s=(history[-1][1] - history[0][1]) / span if span > 0 else 0.0,
                        dead_letters=dead,
                    )
                )
            producer_done = supervisor.producer is not None and supervisor.producer.exitcode is not None
            if producer_done and answered >= total and queued == 0 and dead >= int(config.poisoned):
                break
            if now - started > config.timeout_s:
                timed_out = True
                break
            time.sleep(0.1)
    finally:
        supervisor.stop()
        poller.close()
    wall = time.monotonic() - started
    stats = _aggregate(run_dir)
    produced = _read_json(run_dir / "producer.json")
    checks, rows = _verify(config, sessions)
    producer_ok = supervisor.producer is not None and supervisor.producer.exitcode == 0 and produced.get("done") == 1
    duplicates_sent = int(produced.get("duplicates_sent", 0))
    checks.insert(
        1,
        _check(
            "duplicate deliveries accounted for",
            duplicates_sent
            == int(produced.get("deduplicated_at_enqueue", 0)) + int(produced.get("duplicates_requeued", 0)),
            f"{duplicates_sent} sent twice: {produced.get('deduplicated_at_enqueue', 0)} merged by source key, "
            f"{produced.get('duplicates_requeued', 0)} re-queued after the answer and cancelled by workers",
        ),
    )
    poison_claims = int(stats["poison_claims"])
    wanted_claims = config.poison_attempts if config.poisoned else 0
    checks.append(
        _check(
            "the poisoned message killed its worker on every attempt",
            poison_claims == wanted_claims and supervisor.poison_kills <= poison_claims,
            f"claimed {poison_claims} times (expected {wanted_claims}), each claim SIGKILLed its worker; "
            f"{supervisor.poison_kills} of those deaths seen by the supervisor (the rest overtaken by chaos)"
            if config.poisoned
            else "no poisoned message in this run",
        ),
    )
    errors = [*stats["errors"], *supervisor.crashes]
    checks.append(
        _check(
            "run completed",
            not timed_out and producer_ok and not errors,
            "; ".join(errors[:3])
            if errors
            else ("timed out" if timed_out else "producer finished, no worker errors or crashes"),
        )
    )
    turns = sum(row["head_revision"] for row in rows)
    counters = {
        "sessions": config.sessions,
        "messages": total,
        "duplicates_sent": duplicates_sent,
        "deduplicated_at_enqueue": int(produced.get("deduplicated_at_enqueue", 0)),
        "duplicates_requeued": int(produced.get("duplicates_requeued", 0)),
        "deduplicated_by_workers": stats["deduplicated"],
        "turns_committed": turns,
        "claims": stats["claims"],
        "kills": supervisor.kills,
        "restarts": supervisor.restarts,
        "reclaims": stats["reclaims"],
        "lost_claims": stats["lost_claims"],
        "cas_conflicts": stats["cas_conflicts"],
        "stamp_replays": stats["stamp_replays"],
        "stalls": stats["stalls"],
        "poison_claims": poison_claims,
        "poison_kills": supervisor.poison_kills,
        "dead_letters": sum(row["dead_letters"] for row in rows),
        "commits_per_s": round(turns / wall, 1) if wall > 0 else 0.0,
        "errors": errors,
    }
    return DemoResult(
        config=config,
        directory=place.directory,
        kept=place.kept,
        wall_s=wall,
        timed_out=timed_out,
        counters=counters,
        checks=checks,
        sessions=rows,
        backend=place.target.backend,
        postgres=place.postgres,
    )

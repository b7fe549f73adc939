"""Crash harness: SIGKILL a writer in the middle of its commits, then prove the recovery.

A campaign runs against a *target*: a SQLite session file, or a PostgreSQL
database (a DSN) plus the session partition to write (default
``crash-session``) - one string, as everywhere else (:mod:`lash_store.targets`).

A *child* process (``python -m lash_store.testing.crash child <target> <seed>
[--session <id>]``) runs an endless stream of turns against the target.  Turn
``n`` is fully determined by ``(seed, n)``:

1. two attachment intents are recorded (``att-<n>-0``, ``att-<n>-1``);
2. a work batch with source key ``msg-<n>`` is enqueued and claimed;
3. one commit carries the turn stamp ``turn-<n>`` (hash derived from the
   seed), two message nodes ``u<n>`` and ``a<n>``, a fixed usage delta, a
   checkpoint with tool state and execution state, the queue completion and
   the committed attachment ids, with ``expected_head_revision = n - 1``.

The child prints ``commit <n>`` before and ``ack <n> <revision> <checkpoint_ref>``
after each ``commit_runtime_state`` call (one ``os.write`` per line, so a line
is either in the pipe whole or not at all).  A commit is *acknowledged* once
its ``ack`` line reached the parent.

The parent (:func:`run_crash_campaign`) starts a child, lets it run for a
random 5-80 ms after it reported ``ready`` (a few rounds are killed while the
child is still opening the store), SIGKILLs it, then verifies the target:

- the stored data is intact: on SQLite ``PRAGMA integrity_check`` is ``ok``;
  on PostgreSQL (where a dead client cannot damage pages) the server has
  first finished whatever the dead client's connection had under way, and
  the store's own reads work: the whole session exports, every blob matches
  its SHA-256 address and every node decodes (SQLite runs this check too, on
  the full-history rounds);
- every acknowledged commit is present: the head revision is at least the
  last acknowledged one, and re-committing each acknowledged turn with its
  stamp returns the acknowledged result and writes nothing (SQLite: ``PRAGMA
  data_version`` of an observer connection does not move; PostgreSQL: no row
  of the partition is inserted, updated or deleted - the row count and the
  row versions, ``xmin`` and ``ctid``, of every table are unchanged);
- nothing is half-applied: head revision == stamped turns == node pairs in
  the graph; the usage total is the per-turn delta times the revision; no
  batch of a committed turn is left in the queue; every attachment of a
  committed turn is stamped committed; the head checkpoint hydrates to the
  head turn's values; the leaf and config name the head turn;
- the in-flight (unacknowledged) turn replays idempotently: committing it
  twice yields exactly one new revision, and the second commit writes nothing.
  When the child died before committing it, the parent finishes the turn
  itself - re-recording the intents, re-enqueueing by source key, and
  re-claiming the batch with a clock moved past the dead child's lease (so
  the claim gets a new fencing token) - which leaves the target ready for the
  next round.

The next child resumes from the recovered head.  To keep a kill cheap, the
children are forked by a *zygote* (``python -m lash_store.testing.crash zygote
<target> <seed>``) that imported the package once, so a round costs a fork rather
than a Python start-up; ``launcher="subprocess"`` starts every child as a
fresh ``python -m lash_store.testing.crash child ...`` instead.  Each child
opens its own store (on PostgreSQL: its own connection pool, never the zygote's).

Run ``python -m lash_store.testing.crash --kills 2000 --seed 1 [--dir DIR]``, or
``... --target 'host=... dbname=...' [--session ID]`` for PostgreSQL.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import select
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from lash_store.core.codec import decode_blob
from lash_store.core.graph import decode_node
from lash_store.errors import StoreError
from lash_store.model import (
    AttachmentIntent,
    DeliveryPolicy,
    GraphDelta,
    HydratedCheckpoint,
    PersistedSessionRead,
    QueuedWorkBatchDraft,
    QueuedWorkClaimBoundary,
    QueuedWorkCompletion,
    QueuedWorkPayload,
    RuntimeCommit,
    RuntimeCommitResult,
    SessionNode,
    SessionReadScope,
    SlotPolicy,
    TokenLedgerEntry,
    TokenUsage,
    TurnCommitStamp,
    TurnInput,
)
from lash_store.options import StoreOptions, system_clock
from lash_store.service.session import SessionService
from lash_store.targets import is_dsn, open_store

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "ATTACHMENTS_PER_TURN",
    "LEASE_TTL_MS",
    "SESSION_ID",
    "USAGE_DELTA",
    "Ack",
    "CampaignReport",
    "CrashTarget",
    "LAUNCHERS",
    "HarnessError",
    "RoundOutcome",
    "attachment_ids",
    "main",
    "prepare_turn",
    "run_child",
    "run_crash_campaign",
    "run_zygote",
    "turn_commit",
    "turn_hash",
    "verify_recovery",
    "verify_store",
]

SESSION_ID = "crash-session"
MODEL = "crash-model"
LEASE_TTL_MS = 60_000
"""The child's lease; the verifier's clock runs this far ahead, so a dead child's claim reads as expired."""
ATTACHMENTS_PER_TURN = 2
USAGE_DELTA = TokenUsage(input_tokens=120, output_tokens=45, cached_input_tokens=30, reasoning_tokens=7)
"""Every turn adds exactly this usage, so the ledger total is this delta times the head revision."""

_READY_TIMEOUT_S = 120.0
_EXIT_TIMEOUT_S = 30.0


class HarnessError(Exception):
    """The store broke one of the harness's invariants (or the child misbehaved)."""


@dataclass(frozen=True)
class CrashTarget:
    """What a campaign writes to: a SQLite session file, or a PostgreSQL database and a session partition.

    ``location`` is a path or a DSN, told apart as everywhere else
    (:func:`lash_store.targets.is_dsn`); ``partition`` is the PostgreSQL
    session id the turns go to (a SQLite file is one session, so there it is
    always :data:`SESSION_ID`).  The turns themselves always carry
    :data:`SESSION_ID`, whatever the partition.
    """

    location: str
    partition: str = SESSION_ID

    @classmethod
    def of(cls, target: str | os.PathLike[str] | CrashTarget, session_id: str | None = None) -> CrashTarget:
        """``target`` as a :class:`CrashTarget`; ``session_id`` picks the PostgreSQL partition."""
        if isinstance(target, CrashTarget):
            if session_id is not None and session_id != target.partition:
                raise ValueError(f"session_id {session_id!r} contradicts the target's partition {target.partition!r}")
            return target
        location = os.fspath(target)
        if not is_dsn(location):
            if session_id not in (None, SESSION_ID):
                raise ValueError("a SQLite target is one session file: session_id applies to PostgreSQL targets only")
            return cls(location)
        return cls(location, SESSION_ID if session_id is None else session_id)

    @property
    def postgres(self) -> bool:
        return is_dsn(self.location)

    @property
    def path(self) -> Path:
        """The SQLite file (only for SQLite targets)."""
        if self.postgres:
            raise ValueError("a PostgreSQL target has no file")
        return Path(self.location)

    def open(self, options: StoreOptions | None = None) -> SessionService:
        """A read-write store (creating the file or partition if needed)."""
        return open_store(self.location, self.partition, options=options)

    def open_readonly(self) -> SessionService:
        """A store that never creates or writes anything."""
        return open_store(self.location, self.partition, readonly=True)

    def observer(self) -> _Observer:
        """A raw connection that sees the stored rows without going through the store."""
        return _PostgresObserver(self.location, self.partition) if self.postgres else _SqliteObserver(self.path)

    def cli_options(self) -> list[str]:
        """The options that go with ``location`` on the command line of ``child`` and ``zygote``."""
        return ["--session", self.partition] if self.postgres else []

    def __str__(self) -> str:
        return f"{self.location} (session {self.partition})" if self.postgres else self.location


# ---------------------------------------------------------------------------
# The deterministic turn stream


def turn_id(n: int) -> str:
    """The stamp id of turn ``n``."""
    return f"turn-{n}"


def turn_hash(seed: int, n: int) -> str:
    """The stamp hash of turn ``n``: a pure function of the campaign seed and the turn number."""
    return hashlib.sha256(f"lash-crash:{seed}:{n}".encode()).hexdigest()


def source_key(n: int) -> str:
    """The source key of the work batch that turn ``n`` answers."""
    return f"msg-{n}"


def attachment_ids(n: int) -> list[str]:
    """The attachments turn ``n`` records as intents and then commits."""
    return [f"att-{n}-{index}" for index in range(ATTACHMENTS_PER_TURN)]


def tool_state(seed: int, n: int) -> dict[str, object]:
    """Turn ``n``'s tool state: usually small, one turn in eight above 4 KiB (stored zstd-compressed)."""
    digest = hashlib.sha256(f"tool:{seed}:{n}".encode()).digest()
    lines = 150 if digest[1] % 8 == 0 else 2 + digest[0] % 6
    return {"turn": n, "seed": seed, "log": [f"tool call {index} of turn {n}: ok" for index in range(lines)]}


def execution_state(seed: int, n: int) -> bytes:
    """Turn ``n``'s opaque execution state (32-128 incompressible bytes)."""
    return hashlib.sha256(f"exec:{seed}:{n}".encode()).digest() * (1 + n % 4)


def _message(node_id: str, parent: str | None, role: str, text: str, n: int) -> SessionNode:
    return SessionNode(
        node_id=node_id,
        parent_node_id=parent,
        payload={"role": role, "parts": [{"type": "text", "text": text}]},
        timestamp_ms=n,
    )


def turn_commit(seed: int, n: int, completions: Sequence[QueuedWorkCompletion] = ()) -> RuntimeCommit:
    """The stamped commit of turn ``n`` (CAS on revision ``n - 1``), completing ``completions``.

    Everything but the queue completion is a pure function of ``(seed, n)``,
    so a replay built later by another process carries the same stamp.
    """
    user = _message(f"u{n}", f"a{n - 1}" if n > 1 else None, "user", f"user message {n}", n)
    reply = _message(f"a{n}", f"u{n}", "assistant", f"assistant reply {n}", n)
    return RuntimeCommit(
        session_id=SESSION_ID,
        expected_head_revision=n - 1,
        config={"model": MODEL, "turn": n},
        agent_frames=[{"frame_id": "main", "turn": n}],
        current_agent_frame_id="main",
        graph=GraphDelta.append([user, reply], leaf_node_id=f"a{n}"),
        checkpoint=HydratedCheckpoint(
            turn_state={"turn": n}, tool_state=tool_state(seed, n), execution_state=execution_state(seed, n)
        ),
        usage_deltas=[TokenLedgerEntry(source="turn", model=MODEL, usage=USAGE_DELTA)],
        turn_commit=TurnCommitStamp(session_id=SESSION_ID, turn_id=turn_id(n), turn_commit_hash=turn_hash(seed, n)),
        completed_queue_claims=list(completions),
        committed_attachment_ids=attachment_ids(n),
    )


def prepare_turn(store: SessionService, seed: int, n: int, owner_id: str, now_ms: int) -> RuntimeCommit:
    """Record turn ``n``'s intents, enqueue and claim its batch, and return its commit.

    Every step is idempotent, so a process may redo it after another one died
    half-way: intents are re-recorded, the batch is found by its source key,
    and the claim (by batch id, so a stray earlier batch makes it fail loudly)
    succeeds once the previous lease has expired by ``store``'s clock.
    """
    for attachment_id in attachment_ids(n):
        store.record_intent(
            AttachmentIntent(
                attachment_id=attachment_id,
                session_id=SESSION_ID,
                canonical_uri=f"blob://crash/{attachment_id}",
                intent_at_epoch_ms=now_ms,
            )
        )
    draft = QueuedWorkBatchDraft.new(
        SESSION_ID,
        DeliveryPolicy.AFTER_CURRENT_TURN_COMMIT,
        SlotPolicy.EXCLUSIVE,
        [QueuedWorkPayload.turn_input(TurnInput.text(f"user message {n}"))],
    ).with_source_key(source_key(n))
    batch = store.enqueue_queued_work(draft)
    claim = store.claim_ready_queued_work_by_batch_ids(
        SESSION_ID, owner_id, QueuedWorkClaimBoundary.IDLE, LEASE_TTL_MS, [batch.batch_id]
    )
    if claim is None:
        pending = [(b.source_key, b.batch_id) for b in store.list_queued_work(SESSION_ID)]
        raise HarnessError(f"turn {n}: could not claim batch {batch.batch_id} (queue holds {pending})")
    return turn_commit(seed, n, [claim.completion()])


def _expected_usage(revision: int) -> TokenUsage:
    return TokenUsage(
        input_tokens=USAGE_DELTA.input_tokens * revision,
        output_tokens=USAGE_DELTA.output_tokens * revision,
        cached_input_tokens=USAGE_DELTA.cached_input_tokens * revision,
        reasoning_tokens=USAGE_DELTA.reasoning_tokens * revision,
    )


def _read_head(store: SessionService) -> PersistedSessionRead | None:
    # A one-node scope (the first user node) keeps the read's cost flat as the session grows;
    # head revision, config, checkpoint and ledger are read in full all the same.
    return store.load_session(SessionReadScope.active_path("u1"))


# ---------------------------------------------------------------------------
# The child


def _emit(out_fd: int, line: str) -> None:
    """One ``write`` per line (far below ``PIPE_BUF``): the parent sees a line whole or not at all."""
    os.write(out_fd, (line + "\n").encode())


def _pause(rng: random.Random) -> None:
    """Mostly none, sometimes a short sleep: kills land before, during and after commits."""
    draw = rng.random()
    if draw < 0.5:
        return
    time.sleep(rng.uniform(0.0, 0.002) if draw < 0.9 else rng.uniform(0.002, 0.008))


def run_child(
    target: str | os.PathLike[str] | CrashTarget,
    seed: int,
    round_seed: int,
    out_fd: int = 1,
    *,
    session_id: str | None = None,
) -> None:
    """The child: resume from the head, then commit turn after turn until killed.

    Writes ``ready <head>``, then ``commit <n>`` before and ``ack <n> <revision>
    <checkpoint_ref>`` after each commit to ``out_fd``.  ``round_seed`` drives
    the random pauses only; the turns themselves derive from ``seed``.
    """
    rng = random.Random(round_seed)
    owner_id = f"crash-child-{os.getpid()}"
    store = CrashTarget.of(target, session_id).open()
    read = _read_head(store)
    head = read.head_revision if read is not None else 0
    _emit(out_fd, f"ready {head}")
    n = head + 1
    while True:
        _pause(rng)
        commit = prepare_turn(store, seed, n, owner_id, system_clock())
        _pause(rng)
        _emit(out_fd, f"commit {n}")
        result = store.commit_runtime_state(commit)
        _pause(rng)  # a kill here leaves a durable commit that was never acknowledged
        _emit(out_fd, f"ack {n} {result.head_revision} {result.checkpoint_ref}")
        if result.head_revision != n:
            raise HarnessError(f"turn {n} committed as revision {result.head_revision}")
        n += 1


# ---------------------------------------------------------------------------
# The parent: rounds and verification


@dataclass(frozen=True)
class Ack:
    """One acknowledged commit as the child reported it."""

    turn: int
    head_revision: int
    checkpoint_ref: str


@dataclass
class RoundOutcome:
    """What the parent saw of one child before and at the kill."""

    ready_head: int | None = None
    acks: list[Ack] = field(default_factory=list)
    killed_in_commit_window: bool = False
    ready_timed_out: bool = False
    returncode: int | None = None
    error: str = ""


@dataclass
class CampaignReport:
    """Counts of a crash campaign; ``failures`` is empty when every recovery verified.

    ``kills_in_commit_window`` counts children killed after announcing a commit
    and before acknowledging it (inside ``commit_runtime_state`` or just after
    it returned); ``inflight_found_committed`` counts the recoveries that found
    such an unacknowledged commit durable (and replayed it by its stamp).
    """

    kills: int = 0
    acked_commits: int = 0
    recoveries_verified: int = 0
    inflight_replays_verified: int = 0
    inflight_found_committed: int = 0
    kills_in_commit_window: int = 0
    kills_before_ready: int = 0
    full_checks: int = 0
    final_head_revision: int = 0
    elapsed_s: float = 0.0
    db_path: str = ""
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no verification failed."""
        return not self.failures

    def summary(self) -> str:
        """A human-readable multi-line report."""
        rows = [
            ("kills (SIGKILL)", self.kills),
            ("  between commit and ack", self.kills_in_commit_window),
            ("  before the child was ready", self.kills_before_ready),
            ("acknowledged commits", self.acked_commits),
            ("recoveries verified", self.recoveries_verified),
            ("in-flight replays verified", self.inflight_replays_verified),
            ("  in-flight turn found durable", self.inflight_found_committed),
            ("full-history checks", self.full_checks),
            ("final head revision", self.final_head_revision),
            ("elapsed", f"{self.elapsed_s:.1f} s"),
            ("database", self.db_path),
            ("failures", len(self.failures)),
        ]
        lines = [f"{name:<32}{value}" for name, value in rows]
        lines += [f"  - {failure}" for failure in self.failures]
        return "\n".join(lines)


_MODULE = "lash_store.testing.crash"
LAUNCHERS = ("zygote", "subprocess")
"""How children start.  ``zygote``: one helper process imports the package once and forks each
child (a few ms per kill); ``subprocess``: every child is a fresh ``python -m
lash_store.testing.crash child ...`` (~200 ms per kill).  Both are real processes killed with SIGKILL."""


def _child_main(target: CrashTarget, seed: int, round_seed: int, out_fd: int) -> None:
    """Run the child; any error becomes an ``error`` line (and a traceback on stderr), then exit code 3."""
    try:
        run_child(target, seed, round_seed, out_fd)
    except BaseException as exc:
        message = " ".join(f"{type(exc).__name__}: {exc}".split())
        os.write(out_fd, f"error {message}\n".encode())
        os.write(2, traceback.format_exc().encode())
    os._exit(3)


def run_zygote(target: str | os.PathLike[str] | CrashTarget, seed: int, *, session_id: str | None = None) -> int:
    """Fork children on request: ``spawn <round_seed>`` forks one, ``reap`` waits for it.

    The zygote answers ``spawned <pid>`` and, after ``reap``, ``exit <pid> <code>``
    (``-9`` for SIGKILL).  A child's pid cannot be reused before ``reap``, so the
    parent may SIGKILL it by pid at any moment until then.  Children share the
    zygote's stdout; only one runs at a time.
    """
    where = CrashTarget.of(target, session_id)
    if where.postgres:
        # Imported once here, so that a forked child only opens its connection pool (of its own).
        import lash_store.postgres  # noqa: F401
    pid: int | None = None
    for line in sys.stdin:
        word, *rest = line.split()
        if word == "spawn" and pid is None:
            pid = os.fork()
            if pid == 0:
                _child_main(where, seed, int(rest[0]), 1)  # never returns
            _emit(1, f"spawned {pid}")
        elif word == "reap" and pid is not None:
            _, status = os.waitpid(pid, 0)
            _emit(1, f"exit {pid} {os.waitstatus_to_exitcode(status)}")
            pid = None
    return 0


class _LineReader:
    """Complete lines from a pipe, read with timeouts."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._buffer = b""
        self.lines: list[str] = []

    def read_some(self, timeout_s: float) -> bool:
        """Read what arrives within ``timeout_s``; False at end of file or timeout."""
        readable, _, _ = select.select([self.fd], [], [], max(timeout_s, 0.0))
        if not readable:
            return False
        chunk = os.read(self.fd, 65536)
        if not chunk:
            return False
        self._buffer += chunk
        *complete, self._buffer = self._buffer.split(b"\n")
        self.lines += [line.decode(errors="replace") for line in complete]
        return True

    def wait_for(self, prefix: str, timeout_s: float) -> str | None:
        """The first line starting with ``prefix`` (reading as needed), or None on EOF or timeout."""
        deadline = time.monotonic() + timeout_s
        while True:
            for line in self.lines:
                if line.startswith(prefix):
                    return line
            if not self.read_some(deadline - time.monotonic()):
                return None


class _Children:
    """Starts, kills and reaps the children of one campaign, one at a time."""

    def __init__(self, launcher: str, target: CrashTarget, seed: int) -> None:
        if launcher not in LAUNCHERS:
            raise ValueError(f"launcher must be one of {LAUNCHERS}, got {launcher!r}")
        self.launcher = launcher
        self.target = target
        self.seed = seed
        self._zygote: subprocess.Popen[bytes] | None = None
        self._popen: subprocess.Popen[bytes] | None = None
        self._reader: _LineReader | None = None
        self._live = False
        self.pid = 0
        if launcher == "zygote":
            self._zygote = subprocess.Popen(
                [sys.executable, "-m", _MODULE, "zygote", target.location, str(seed), *target.cli_options()],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                bufsize=0,
            )
            assert self._zygote.stdout is not None
            self._zygote_reader = _LineReader(self._zygote.stdout.fileno())

    @property
    def reader(self) -> _LineReader:
        assert self._reader is not None
        return self._reader

    def _tell_zygote(self, command: str) -> None:
        assert self._zygote is not None and self._zygote.stdin is not None
        self._zygote.stdin.write(f"{command}\n".encode())
        self._zygote.stdin.flush()

    def start(self, round_seed: int) -> None:
        """Start the next child (its pid is known when this returns)."""
        if self._zygote is not None:
            self._reader = self._zygote_reader
            self._reader.lines = []
            self._tell_zygote(f"spawn {round_seed}")
            line = self._reader.wait_for("spawned ", _READY_TIMEOUT_S)
            if line is None:
                raise HarnessError("the zygote did not fork a child")
            self.pid = int(line.split()[1])
            self._live = True
        else:
            command = [
                *(sys.executable, "-m", _MODULE, "child", self.target.location, str(self.seed), str(round_seed)),
                *self.target.cli_options(),
            ]
            self._popen = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, bufsize=0)
            assert self._popen.stdout is not None
            self._reader = _LineReader(self._popen.stdout.fileno())
            self.pid = self._popen.pid
            self._live = True

    def wait_for_ready(self, timeout_s: float) -> bool:
        """Read until the child reports ``ready``; False if it failed first or the timeout passed."""
        return self.reader.wait_for("ready ", timeout_s) is not None

    def timed_out(self) -> bool:
        """True when the child is still running without having reported ``ready`` or an error."""
        return not any(line.startswith(("ready ", "error ")) for line in self.reader.lines)

    def kill_and_reap(self) -> RoundOutcome:
        """SIGKILL the child by pid (unreaped, so the pid is still its own), reap it, parse its lines."""
        self._live = False
        if self._zygote is not None:
            os.kill(self.pid, signal.SIGKILL)
            self._tell_zygote("reap")
            line = self.reader.wait_for(f"exit {self.pid} ", _EXIT_TIMEOUT_S)
            if line is None:
                raise HarnessError(f"the zygote did not report the exit of child {self.pid}")
            returncode: int | None = int(line.split()[2])
        else:
            assert self._popen is not None and self._popen.stdout is not None
            if self._popen.returncode is None:  # never reaped: the pid is still the child's
                os.kill(self.pid, signal.SIGKILL)
            returncode = self._popen.wait(timeout=_EXIT_TIMEOUT_S)
            deadline = time.monotonic() + _EXIT_TIMEOUT_S
            while self.reader.read_some(deadline - time.monotonic()):  # EOF: the write end died with the child
                pass
            self._popen.stdout.close()
            self._popen = None
        return _parse(self.reader.lines, returncode)

    def close(self) -> None:
        """End the zygote (closing its stdin makes it exit) and any child still running."""
        if self._live:
            self.kill_and_reap()
        if self._zygote is not None:
            assert self._zygote.stdin is not None and self._zygote.stdout is not None
            self._zygote.stdin.close()
            try:
                self._zygote.wait(timeout=_EXIT_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.kill(self._zygote.pid, signal.SIGKILL)
                self._zygote.wait()
            self._zygote.stdout.close()
            self._zygote = None


def _parse(lines: list[str], returncode: int | None) -> RoundOutcome:
    outcome = RoundOutcome(returncode=returncode)
    in_commit = False
    for line in lines:
        word, *rest = line.split()
        if word == "ready":
            outcome.ready_head = int(rest[0])
        elif word == "commit":
            in_commit = True
        elif word == "error":
            outcome.error = line[len("error ") :]
        elif word == "ack":
            outcome.acks.append(Ack(turn=int(rest[0]), head_revision=int(rest[1]), checkpoint_ref=rest[2]))
            in_commit = False
    outcome.killed_in_commit_window = in_commit
    return outcome


class _Observer(Protocol):
    """Reads the stored rows directly (a raw connection, not the store), for checks the store cannot make."""

    def version(self) -> object:
        """A value that changes whenever a write to the session's data is committed."""
        ...

    def check_integrity(self) -> None:
        """The backend's own integrity check (and, on PostgreSQL, wait out the dead client's last work)."""
        ...

    def stamp_count(self) -> int: ...

    def stamp_turn_bounds(self) -> tuple[int | None, int | None]:
        """The smallest and largest ``n`` of the stored ``turn-<n>`` stamps of :data:`SESSION_ID`."""
        ...

    def stamp_ids(self) -> list[str]: ...

    def node_count(self) -> int:
        """Graph rows, tombstoned or not."""
        ...

    def committed_attachment_count(self) -> int: ...

    def committed_attachments(self, ids: list[str]) -> list[str]:
        """Which of ``ids`` are stamped committed, sorted."""
        ...

    def close(self) -> None: ...


class _SqliteObserver:
    """A raw connection whose ``PRAGMA data_version`` moves only when another connection commits."""

    def __init__(self, db_path: Path) -> None:
        self.conn = sqlite3.connect(db_path, isolation_level=None)

    def version(self) -> int:
        return int(self.conn.execute("PRAGMA data_version").fetchone()[0])

    def check_integrity(self) -> None:
        rows = self._column("PRAGMA integrity_check")
        _check(rows == ["ok"], f"PRAGMA integrity_check reports {rows[:5]}")

    def _scalar(self, sql: str, *args: object) -> Any:
        return self.conn.execute(sql, args).fetchone()[0]

    def _column(self, sql: str, *args: object) -> list[Any]:
        return [row[0] for row in self.conn.execute(sql, args)]

    def stamp_count(self) -> int:
        return int(self._scalar("SELECT count(*) FROM runtime_turn_commits"))

    def stamp_turn_bounds(self) -> tuple[int | None, int | None]:
        low, high = self.conn.execute(
            "SELECT min(CAST(substr(turn_id, 6) AS INTEGER)), max(CAST(substr(turn_id, 6) AS INTEGER)) "
            "FROM runtime_turn_commits WHERE session_id = ? AND turn_id LIKE 'turn-%'",
            (SESSION_ID,),
        ).fetchone()
        return low, high

    def stamp_ids(self) -> list[str]:
        return [str(t) for t in self._column("SELECT turn_id FROM runtime_turn_commits")]

    def node_count(self) -> int:
        return int(self._scalar("SELECT count(*) FROM graph_nodes"))

    def committed_attachment_count(self) -> int:
        return int(self._scalar("SELECT count(*) FROM attachment_manifest WHERE committed_at_ms IS NOT NULL"))

    def committed_attachments(self, ids: list[str]) -> list[str]:
        marks = ", ".join("?" for _ in ids)
        return self._column(
            f"SELECT attachment_id FROM attachment_manifest WHERE attachment_id IN ({marks}) "
            "AND committed_at_ms IS NOT NULL ORDER BY attachment_id",
            *ids,
        )

    def close(self) -> None:
        self.conn.close()


# Every table of the PostgreSQL schema; each one's rows of a partition carry its session_id.
_PG_TABLES = (
    "sessions",
    "session_meta",
    "graph_nodes",
    "blobs",
    "turn_commits",
    "queue_state",
    "queued_work_batches",
    "attachment_manifest",
    "artifact_refs",
)
_SETTLE_TIMEOUT_S = 30.0


class _PostgresObserver:
    """A raw autocommit connection to the partition's rows (every statement sees the latest commits).

    "Writes nothing" is checked on the row versions themselves: any insert,
    update or delete of a partition's row changes the row count or the set
    of ``(xmin, ctid)`` pairs of its table (an update writes a new row
    version), while the row locks a replay takes do not.
    """

    def __init__(self, dsn: str, partition: str) -> None:
        import psycopg  # the postgres extra is needed only for a PostgreSQL target

        from lash_store.postgres.schema import DEFAULT_SCHEMA

        self.partition = partition
        self.schema = DEFAULT_SCHEMA
        self.conn: psycopg.Connection[Any] = psycopg.connect(dsn, autocommit=True, connect_timeout=10)
        self._version_sql = " UNION ALL ".join(
            f"(SELECT '{table}', count(*), md5(coalesce(string_agg(xmin::text || '/' || ctid::text, ',' "
            f"ORDER BY ctid), '')) FROM {self.schema}.{table} WHERE session_id = %(sid)s)"
            for table in _PG_TABLES
        )

    def _one(self, sql: str, **params: object) -> tuple[Any, ...]:
        row = self.conn.execute(sql, {"sid": self.partition, **params}).fetchone()
        assert row is not None
        return tuple(row)

    def _column(self, sql: str, **params: object) -> list[Any]:
        return [row[0] for row in self.conn.execute(sql, {"sid": self.partition, **params}).fetchall()]

    def version(self) -> tuple[tuple[Any, ...], ...]:
        return tuple(tuple(row) for row in self.conn.execute(self._version_sql, {"sid": self.partition}).fetchall())

    def check_integrity(self) -> None:
        # A SIGKILLed client cannot damage the server's pages, but its backend may still be finishing
        # what the client sent (a COMMIT in the socket buffer, say): until it has, a check could see the
        # state before that commit and the store the state after.  Wait until no other client backend of
        # this database is inside a statement or a transaction.
        deadline = time.monotonic() + _SETTLE_TIMEOUT_S
        while True:
            (busy,) = self._one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND backend_type = 'client backend' "
                "AND state IS DISTINCT FROM 'idle'"
            )
            if busy == 0:
                return
            _check(
                time.monotonic() < deadline,
                f"{busy} server backend(s) still busy {_SETTLE_TIMEOUT_S:.0f} s after the client was killed",
            )
            time.sleep(0.005)

    def stamp_count(self) -> int:
        return int(self._one(f"SELECT count(*) FROM {self.schema}.turn_commits WHERE session_id = %(sid)s")[0])

    def stamp_turn_bounds(self) -> tuple[int | None, int | None]:
        low, high = self._one(
            f"SELECT min(substr(turn_id, 6)::bigint), max(substr(turn_id, 6)::bigint) "
            f"FROM {self.schema}.turn_commits WHERE session_id = %(sid)s AND stamp_session_id = %(stamp)s "
            "AND turn_id LIKE 'turn-%%'",
            stamp=SESSION_ID,
        )
        return low, high

    def stamp_ids(self) -> list[str]:
        return [
            str(t) for t in self._column(f"SELECT turn_id FROM {self.schema}.turn_commits WHERE session_id = %(sid)s")
        ]

    def node_count(self) -> int:
        return int(self._one(f"SELECT count(*) FROM {self.schema}.graph_nodes WHERE session_id = %(sid)s")[0])

    def committed_attachment_count(self) -> int:
        return int(
            self._one(
                f"SELECT count(*) FROM {self.schema}.attachment_manifest "
                "WHERE session_id = %(sid)s AND committed_at_ms IS NOT NULL"
            )[0]
        )

    def committed_attachments(self, ids: list[str]) -> list[str]:
        return self._column(
            f"SELECT attachment_id FROM {self.schema}.attachment_manifest WHERE session_id = %(sid)s "
            "AND attachment_id = ANY(%(ids)s) AND committed_at_ms IS NOT NULL ORDER BY attachment_id",
            ids=ids,
        )

    def close(self) -> None:
        self.conn.close()


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise HarnessError(message)


def _check_readable(store: SessionService) -> None:
    """The store's own reads of everything it holds work: the whole session exports, every blob matches
    its SHA-256 address, every node decodes, and the maintained live-node counter agrees with the rows."""
    try:
        dump = store.export_session()
        for blob in dump.blobs:
            decode_blob(blob.hash, blob.encoding, blob.content, blob.raw_size)
        for node in dump.nodes:
            decode_node(node.node_id, node.body)
    except StoreError as exc:
        raise HarnessError(f"stored data does not read back: {exc}") from exc
    live = sum(not node.tombstoned for node in dump.nodes)
    _check(store.graph_node_count() == live, f"graph_node_count() {store.graph_node_count()}, live node rows {live}")


def _skewed_clock() -> int:
    # The verifier lives past the dead child's lease: its claims find the child's batch expired.
    return system_clock() + LEASE_TTL_MS + 1_000


def _verifier_store(target: CrashTarget) -> SessionService:
    return target.open(StoreOptions(clock=_skewed_clock))


def _check_state(store: SessionService, observer: _Observer, seed: int, head: int, pending: int | None) -> None:
    """Every invariant of a target whose last committed turn is ``head``.

    ``pending`` names the one turn that may be half-prepared (intents recorded,
    batch enqueued or claimed, but not committed).
    """
    read = _read_head(store)
    if head == 0:
        _check(read is None, f"no turn committed, yet a head at revision {read and read.head_revision}")
    else:
        _check(read is not None, f"turn {head} committed, yet no head")
        assert read is not None
        _check(read.head_revision == head, f"head revision {read.head_revision}, expected {head}")
        _check(read.config == {"model": MODEL, "turn": head}, f"head config {read.config!r} is not turn {head}'s")
        _check(read.agent_frames == [{"frame_id": "main", "turn": head}], f"head frames {read.agent_frames!r}")
        checkpoint = read.checkpoint
        _check(checkpoint is not None, f"head checkpoint {read.checkpoint_ref} does not hydrate")
        assert checkpoint is not None
        _check(checkpoint.turn_state == {"turn": head}, f"checkpoint turn state {checkpoint.turn_state!r}")
        _check(checkpoint.tool_state == tool_state(seed, head), f"checkpoint tool state of turn {head} differs")
        _check(checkpoint.execution_state == execution_state(seed, head), "checkpoint execution state differs")
        ledger = [TokenLedgerEntry(source="turn", model=MODEL, usage=_expected_usage(head))]
        _check(read.token_ledger == ledger, f"usage {read.token_ledger!r} is not {head} x the per-turn delta")
        leaf = store.load_node(f"a{head}")
        _check(leaf is not None and leaf.parent_node_id == f"u{head}", f"node a{head} missing or misparented")
    _check(store.load_node(f"u{head + 1}") is None, f"node u{head + 1} of an uncommitted turn is in the graph")
    stamps = observer.stamp_count()
    _check(stamps == head, f"{stamps} turn stamps for head revision {head}")
    if head:
        bounds = observer.stamp_turn_bounds()
        _check(bounds == (1, head), f"turn stamps span {bounds}, expected (1, {head})")
    nodes = observer.node_count()
    _check(nodes == 2 * head, f"{nodes} graph nodes for {head} turns")
    _check(store.graph_node_count() == 2 * head, f"graph_node_count() {store.graph_node_count()} for {head} turns")
    keys = sorted(str(batch.source_key) for batch in store.list_queued_work(SESSION_ID))
    allowed = [] if pending is None else [source_key(pending)]
    _check(keys in ([], allowed), f"queue holds {keys} at head {head} (allowed: {allowed})")
    committed = observer.committed_attachment_count()
    _check(committed == ATTACHMENTS_PER_TURN * head, f"{committed} committed attachments for {head} turns")
    if head:
        last = observer.committed_attachments(attachment_ids(head))
        _check(last == attachment_ids(head), f"attachments of turn {head} not committed: {last}")
    uncommitted = sorted(entry.attachment_id for entry in store.list_uncommitted(2**63 - 1))
    allowed_intents = [] if pending is None else attachment_ids(pending)
    _check(set(uncommitted) <= set(allowed_intents), f"uncommitted intents {uncommitted} at head {head}")


def _check_full_history(store: SessionService, observer: _Observer, head: int) -> None:
    """The whole graph, in order, and every stamp id (cost grows with the session: run it now and then)."""
    read = store.load_session(SessionReadScope.full_graph())
    expected = [node_id for n in range(1, head + 1) for node_id in (f"u{n}", f"a{n}")]
    if head == 0:
        _check(read is None, "a head exists although no turn committed")
        return
    assert read is not None
    got = [node.node_id for node in read.graph.nodes]
    _check(got == expected, f"graph of {len(got)} nodes is not u1, a1, ..., u{head}, a{head}")
    _check(read.graph.leaf_node_id == f"a{head}", f"leaf {read.graph.leaf_node_id!r}, expected a{head}")
    path = store.load_session(SessionReadScope.active_path())
    assert path is not None
    _check([node.node_id for node in path.graph.nodes] == expected, "active path is not the full chain")
    stamps = sorted(observer.stamp_ids())
    _check(stamps == sorted(turn_id(n) for n in range(1, head + 1)), "turn stamp ids are not turn-1..turn-head")


def _replay_without_writes(
    store: SessionService, observer: _Observer, commit: RuntimeCommit, what: str
) -> RuntimeCommitResult:
    before = observer.version()
    result = store.commit_runtime_state(commit)
    _check(observer.version() == before, f"{what}: the replay wrote to the database")
    return result


def _replay_acked(store: SessionService, observer: _Observer, seed: int, ack: Ack) -> None:
    # The claim proof died with the child; a stored stamp answers before claims are looked at.
    result = _replay_without_writes(store, observer, turn_commit(seed, ack.turn), f"acked turn {ack.turn}")
    _check(
        (result.head_revision, result.checkpoint_ref) == (ack.head_revision, ack.checkpoint_ref),
        f"acked turn {ack.turn}: replay returned revision {result.head_revision} / {result.checkpoint_ref}, "
        f"acknowledged {ack.head_revision} / {ack.checkpoint_ref}",
    )


def _replay_inflight(store: SessionService, observer: _Observer, seed: int, turn: int, committed: bool) -> None:
    """Commit the in-flight turn twice: one revision, and the second commit writes nothing."""
    if committed:
        commit = turn_commit(seed, turn)
        first = _replay_without_writes(store, observer, commit, f"in-flight turn {turn} (found committed)")
    else:
        commit = prepare_turn(store, seed, turn, "crash-verifier", _skewed_clock())
        first = store.commit_runtime_state(commit)
    _check(first.head_revision == turn, f"in-flight turn {turn} committed as revision {first.head_revision}")
    second = _replay_without_writes(store, observer, commit, f"second commit of in-flight turn {turn}")
    _check(second == first, f"in-flight turn {turn}: second commit returned {second!r}, first {first!r}")
    read = _read_head(store)
    _check(read is not None and read.head_revision == turn, f"in-flight turn {turn} did not yield one revision")


def verify_store(
    target: str | os.PathLike[str] | CrashTarget, seed: int, *, full: bool = True, session_id: str | None = None
) -> int:
    """Check every invariant of a harness target at rest; returns its head revision.

    Raises :class:`HarnessError` naming the first broken invariant.  Use it on
    a target a campaign left behind (the in-flight turn is always finished by
    the last verification, so the queue and the intents are clean).  Nothing
    is written.
    """
    where = CrashTarget.of(target, session_id)
    observer = where.observer()
    try:
        observer.check_integrity()
        with where.open_readonly() as store:
            try:
                read = _read_head(store)
            except StoreError as exc:  # damage under the head (say, its checkpoint's blob) already shows here
                raise HarnessError(f"stored data does not read back: {exc}") from exc
            head = read.head_revision if read is not None else 0
            _check_state(store, observer, seed, head, None)
            if full:
                _check_full_history(store, observer, head)
            if full or where.postgres:
                _check_readable(store)
        return head
    finally:
        observer.close()


def verify_recovery(
    target: str | os.PathLike[str] | CrashTarget,
    seed: int,
    prior_head: int,
    outcome: RoundOutcome,
    *,
    rng: random.Random | None = None,
    report: CampaignReport | None = None,
    full: bool = False,
    session_id: str | None = None,
) -> int:
    """Verify the target after one kill, finish the in-flight turn, and return the new head.

    ``prior_head`` is the head the killed child resumed from and ``outcome``
    what it acknowledged.  Raises :class:`HarnessError` (or the store's error)
    at the first broken invariant; ``rng`` picks older turns to replay,
    ``report`` receives the in-flight counters, ``full`` re-reads the whole history.
    """
    where = CrashTarget.of(target, session_id)
    rng = rng or random.Random(prior_head)
    report = report or CampaignReport()
    for index, ack in enumerate(outcome.acks):
        expected_turn = prior_head + 1 + index
        _check(ack.turn == expected_turn, f"child acknowledged turn {ack.turn}, expected turn {expected_turn}")
        _check(ack.head_revision == ack.turn, f"turn {ack.turn} acknowledged as revision {ack.head_revision}")
    if outcome.ready_head is not None:
        _check(outcome.ready_head == prior_head, f"child resumed at {outcome.ready_head}, head was {prior_head}")
    last_acked = outcome.acks[-1].turn if outcome.acks else prior_head
    if not where.postgres and not where.path.exists():
        _check(prior_head == 0, f"database file vanished at head {prior_head}")
        where.open().close()  # killed before the file existed: let the store create it (mode 0600)
    observer = where.observer()
    try:
        observer.check_integrity()
        with _verifier_store(where) as store:  # creates a partition the child died before creating
            read = _read_head(store)
            head = read.head_revision if read is not None else 0
            _check(head >= last_acked, f"acknowledged commit lost: head {head} < last acknowledged {last_acked}")
            _check(head <= last_acked + 1, f"head {head} is past the in-flight turn {last_acked + 1}")
            inflight = last_acked + 1
            _check_state(store, observer, seed, head, None if head == inflight else inflight)
            if full or where.postgres:
                _check_readable(store)
            for ack in outcome.acks:
                _replay_acked(store, observer, seed, ack)
            for turn in rng.sample(range(1, prior_head + 1), min(2, prior_head)):
                result = _replay_without_writes(store, observer, turn_commit(seed, turn), f"older turn {turn}")
                _check(result.head_revision == turn, f"older turn {turn} replayed as revision {result.head_revision}")
            committed = head == inflight
            _replay_inflight(store, observer, seed, inflight, committed)
            report.inflight_replays_verified += 1
            report.inflight_found_committed += committed
            _check_state(store, observer, seed, inflight, None)
            if full:
                _check_full_history(store, observer, inflight)
                report.full_checks += 1
        return inflight
    finally:
        observer.close()


def _initial_head(target: CrashTarget) -> int:
    if not target.postgres and (not target.path.exists() or target.path.stat().st_size == 0):
        return 0
    # On PostgreSQL this creates the schema and the partition when they are new: the first child would anyway.
    with _verifier_store(target) as store:
        read = _read_head(store)
    return read.head_revision if read is not None else 0


def run_crash_campaign(
    target: str | os.PathLike[str] | CrashTarget,
    kills: int,
    seed: int,
    *,
    session_id: str | None = None,
    min_delay_ms: float = 5.0,
    max_delay_ms: float = 80.0,
    early_kill_rate: float = 0.03,
    full_check_every: int = 50,
    max_failures: int = 1,
    launcher: str = "zygote",
    progress: Callable[[CampaignReport], None] | None = None,
) -> CampaignReport:
    """SIGKILL ``kills`` children mid-stream on one target, verifying the recovery after each.

    ``target`` is a SQLite file path or a PostgreSQL DSN (then ``session_id``
    names the partition, default :data:`SESSION_ID`): new, or one an earlier
    campaign with the same ``seed`` left behind (turn stamps derive from the
    seed).  Each child is killed ``min_delay_ms``..``max_delay_ms`` after it
    reported ``ready``; a fraction ``early_kill_rate`` of the rounds is killed
    0-5 ms after the child started, while it is still opening the store.  The
    whole history is re-read every ``full_check_every`` rounds and after the
    last one.  The campaign stops after ``max_failures`` failed verifications
    (a broken store makes later rounds meaningless).  ``launcher`` picks how
    children start (see :data:`LAUNCHERS`); both give real processes killed
    with SIGKILL.
    """
    where = CrashTarget.of(target, session_id)
    if launcher not in LAUNCHERS:  # before anything is created
        raise ValueError(f"launcher must be one of {LAUNCHERS}, got {launcher!r}")
    rng = random.Random(seed)
    report = CampaignReport(db_path=str(where))
    started = time.monotonic()
    head = _initial_head(where)
    report.final_head_revision = head
    children = _Children(launcher, where, seed)
    try:
        for round_index in range(kills):
            children.start(rng.getrandbits(63))
            outcome = _run_round(children, rng, min_delay_ms, max_delay_ms, early_kill_rate)
            report.kills += 1
            report.acked_commits += len(outcome.acks)
            report.kills_in_commit_window += outcome.killed_in_commit_window
            report.kills_before_ready += outcome.ready_head is None
            if outcome.ready_timed_out:
                report.failures.append(f"round {round_index}: child did not report ready within {_READY_TIMEOUT_S} s")
            elif outcome.returncode != -signal.SIGKILL:
                report.failures.append(
                    f"round {round_index}: child exited with {outcome.returncode} before the kill: {outcome.error}"
                )
            else:
                full = (round_index + 1) % full_check_every == 0 or round_index + 1 == kills
                try:
                    head = verify_recovery(where, seed, head, outcome, rng=rng, report=report, full=full)
                    report.recoveries_verified += 1
                    report.final_head_revision = head
                except Exception as exc:
                    detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
                    report.failures.append(f"round {round_index} (head {head}): {detail}")
            if progress is not None:
                progress(report)
            if len(report.failures) >= max_failures:
                break
    finally:
        children.close()
    report.elapsed_s = time.monotonic() - started
    return report


def _run_round(
    children: _Children, rng: random.Random, min_delay_ms: float, max_delay_ms: float, early_kill_rate: float
) -> RoundOutcome:
    timed_out = False
    if rng.random() < early_kill_rate:
        time.sleep(rng.uniform(0.0, 0.005))  # the child is still starting or opening the file
    elif children.wait_for_ready(_READY_TIMEOUT_S):
        time.sleep(rng.uniform(min_delay_ms, max_delay_ms) / 1000)
    else:
        timed_out = children.timed_out()
    outcome = children.kill_and_reap()
    outcome.ready_timed_out = timed_out
    return outcome


# ---------------------------------------------------------------------------
# Command line


def main(argv: Sequence[str] | None = None) -> int:
    """``child <target> <seed> [round_seed]`` runs a child; otherwise run a campaign and print its report."""
    args = list(sys.argv[1:] if argv is None else argv)
    session_help = "PostgreSQL targets: the session partition to write (default %(default)s)"
    if args[:1] == ["zygote"]:
        zygote = argparse.ArgumentParser(prog="python -m lash_store.testing.crash zygote")
        zygote.add_argument("target", help="a SQLite file or a PostgreSQL DSN")
        zygote.add_argument("seed", type=int)
        zygote.add_argument("--session", default=None, help=session_help)
        parsed = zygote.parse_args(args[1:])
        return run_zygote(parsed.target, parsed.seed, session_id=parsed.session)
    if args[:1] == ["child"]:
        child = argparse.ArgumentParser(prog="python -m lash_store.testing.crash child")
        child.add_argument("target", help="a SQLite file or a PostgreSQL DSN")
        child.add_argument("seed", type=int)
        child.add_argument("round_seed", type=int, nargs="?", default=0)
        child.add_argument("--session", default=None, help=session_help)
        parsed = child.parse_args(args[1:])
        where = CrashTarget.of(parsed.target, parsed.session)
        _child_main(where, parsed.seed, parsed.round_seed, sys.stdout.fileno())
        return 3  # not reached: the child runs until it is killed or fails
    parser = argparse.ArgumentParser(
        prog="python -m lash_store.testing.crash",
        description="SIGKILL a committing child process repeatedly and verify every recovery.",
    )
    parser.add_argument("--kills", type=int, default=200, help="children to kill (default 200)")
    parser.add_argument("--seed", type=int, default=1, help="campaign seed (default 1)")
    parser.add_argument("--dir", type=Path, default=None, help="directory for the database (default: a temp dir)")
    parser.add_argument(
        "--target", default=None, help="a PostgreSQL DSN (or a SQLite file) to use instead of a file in --dir"
    )
    parser.add_argument("--session", default=None, help=session_help.replace("%(default)s", SESSION_ID))
    parser.add_argument("--min-delay-ms", type=float, default=5.0)
    parser.add_argument("--max-delay-ms", type=float, default=80.0)
    parser.add_argument("--full-check-every", type=int, default=50)
    parser.add_argument("--launcher", choices=LAUNCHERS, default="zygote")
    parser.add_argument("--progress", action="store_true", help="print a line every 100 kills to stderr")
    parsed = parser.parse_args(args)
    if parsed.target is not None:
        target: str | Path = parsed.target
    else:
        directory = parsed.dir if parsed.dir is not None else Path(tempfile.mkdtemp(prefix="lash-crash-"))
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / f"crash-seed{parsed.seed}.db"

    def show(report: CampaignReport) -> None:
        if parsed.progress and report.kills % 100 == 0:
            sys.stderr.write(
                f"{report.kills} kills, {report.acked_commits} acked, head {report.final_head_revision}, "
                f"{len(report.failures)} failures\n"
            )

    report = run_crash_campaign(
        target,
        parsed.kills,
        parsed.seed,
        session_id=parsed.session,
        min_delay_ms=parsed.min_delay_ms,
        max_delay_ms=parsed.max_delay_ms,
        full_check_every=parsed.full_check_every,
        launcher=parsed.launcher,
        progress=show,
    )
    sys.stdout.write(report.summary() + "\n")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""A worker "host" for the network-namespace tests: ``python -m lash_store.testing.netns_worker <mode> ...``.

The test starts it inside a worker namespace (``ip netns exec <ns> python -m
lash_store.testing.netns_worker ...``), so it reaches PostgreSQL over the
test network (127.213.0.0/24) exactly as a worker on another machine would.
``ip netns exec`` changes only the network namespace, so results go to a file
(``--out``, JSON lines, one ``os.write`` each) and instructions come as files
in a control directory.  Every mode stops at ``--deadline`` (epoch seconds)
at the latest; an unexpected error is reported as an ``error`` line and exit
code 1.

Modes:

``shared``
    Commit ``--turns`` stamped turns to the session with compare-and-set,
    retrying a lost race from the revision the conflict reports; then claim
    batches of the session's queue one at a time and complete each in a
    stamped commit, until none is free.
``hold``
    Claim one batch with a ``--lease-ms`` lease and report it; when the
    control file ``renew`` appears, try to renew (the test has cut the
    network by then); when ``commit`` appears, commit a turn carrying the
    claim's completion, and report what happened and whether the session
    changed.
``reclaim``
    Open the store, wait for the control file ``reclaim`` (so that the
    process's start-up is over before the clock that matters runs), then claim
    until a batch is granted (it is free once the holder's lease has run out
    on the database clock), and complete it in a stamped commit.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from lash_store.errors import BackendError, HeadRevisionConflict, QueuedWorkClaimExpired
from lash_store.model import (
    GraphDelta,
    HydratedCheckpoint,
    QueuedWorkClaim,
    QueuedWorkClaimBoundary,
    QueuedWorkCompletion,
    RuntimeCommit,
    SessionNode,
    SessionReadScope,
    TokenLedgerEntry,
    TokenUsage,
    TurnCommitStamp,
)
from lash_store.options import StoreOptions
from lash_store.postgres import PostgresStore, close_shared_pools

__all__ = ["USAGE", "main", "turn"]

T = TypeVar("T")

#: The usage every turn adds, so a session's total tells how many turns it holds.
USAGE = TokenUsage(input_tokens=5, output_tokens=3, cached_input_tokens=0, reasoning_tokens=1)
_IDLE = QueuedWorkClaimBoundary.IDLE
# Short enough that a partitioned worker's call gives up (StoreBusy) within seconds, not minutes.
_BUSY_TIMEOUT_MS = 3000


class Deadline(Exception):
    """The worker ran out of time."""


def turn(
    session_id: str, name: str, expected: int | None, completions: Sequence[QueuedWorkCompletion] = ()
) -> RuntimeCommit:
    """A commit that leaves a trace of everything it writes: node ``name``, stamp ``name``, one :data:`USAGE`."""
    node = SessionNode(node_id=name, payload={"role": "assistant", "parts": [{"type": "text", "text": name}]})
    return RuntimeCommit(
        session_id=session_id,
        expected_head_revision=expected,
        config={"by": name},
        graph=GraphDelta.append([node], leaf_node_id=name),
        checkpoint=HydratedCheckpoint(turn_state={"by": name}),
        usage_deltas=[TokenLedgerEntry(source="netns", model="netns-model", usage=USAGE)],
        turn_commit=TurnCommitStamp(session_id=session_id, turn_id=name, turn_commit_hash=f"hash-of-{name}"),
        completed_queue_claims=list(completions),
    )


class Worker:
    def __init__(self, args: argparse.Namespace) -> None:
        self.name: str = args.name
        self.session: str = args.session
        self.deadline: float = args.deadline
        self.out = os.open(args.out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self.control = Path(args.control) if args.control else None
        self.dsn: str = args.dsn
        self._store: PostgresStore | None = None

    @property
    def store(self) -> PostgresStore:
        if self._store is None:
            options = StoreOptions(busy_timeout_ms=_BUSY_TIMEOUT_MS)
            self._store = self.retrying(partial(PostgresStore.open, self.dsn, self.session, options))
        return self._store

    def report(self, event: str, **fields: Any) -> None:
        line = msgspec.json.encode({"ev": event, "worker": self.name, **fields}) + b"\n"
        os.write(self.out, line)

    def check_time(self) -> None:
        if time.time() > self.deadline:
            raise Deadline(f"worker {self.name} passed its deadline")

    def retrying(self, action: Callable[[], T]) -> T:
        """``action`` until it succeeds; a BackendError (a network or server failure) is reported and retried."""
        while True:
            self.check_time()
            try:
                return action()
            except BackendError as exc:
                self.report("retry", error=type(exc).__name__, message=" ".join(str(exc).split())[:200])
                time.sleep(0.1)

    def wait_for(self, signal_name: str) -> None:
        assert self.control is not None, "this mode needs --control"
        while not (self.control / signal_name).exists():
            self.check_time()
            time.sleep(0.02)

    def snapshot(self) -> dict[str, Any]:
        read = self.retrying(lambda: self.store.load_session(SessionReadScope.full_graph()))
        if read is None:
            return {"revision": 0, "nodes": [], "usage": []}
        return {
            "revision": read.head_revision,
            "nodes": [node.node_id for node in read.graph.nodes],
            "usage": msgspec.to_builtins(read.token_ledger),
        }

    # -- modes ----------------------------------------------------------

    def shared(self, turns: int) -> None:
        read = self.retrying(lambda: self.store.load_session(SessionReadScope.active_path("-")))
        expected = 0 if read is None else read.head_revision
        conflicts = 0
        for index in range(turns):
            name = f"{self.name}-t{index}"
            while True:
                commit = turn(self.session, name, expected)
                try:
                    result = self.retrying(partial(self.store.commit_runtime_state, commit))
                    break
                except HeadRevisionConflict as exc:  # another host won this revision: retry on top of it
                    conflicts += 1
                    expected = exc.actual
            expected = result.head_revision
            self.report("ack", turn=name, revision=result.head_revision, ref=result.checkpoint_ref)
        self.report("cas-done", conflicts=conflicts)
        drained = 0
        while True:
            claim = self.retrying(lambda: self.store.claim_ready_queued_work(self.session, self.name, _IDLE, 60_000, 1))
            if claim is None:
                break
            (batch,) = claim.batches
            self.report("claim", batch=batch.batch_id, seq=batch.enqueue_seq, fence=claim.fencing_token)
            done = turn(self.session, f"done-{batch.batch_id}", None, [claim.completion()])
            result = self.retrying(partial(self.store.commit_runtime_state, done))
            self.report("completed", batch=batch.batch_id, revision=result.head_revision)
            drained += 1
        self.report("done", drained=drained)

    def hold(self, lease_ms: int) -> None:
        claim = self.retrying(lambda: self.store.claim_ready_queued_work(self.session, self.name, _IDLE, lease_ms, 1))
        if claim is None:
            raise RuntimeError("nothing to claim")
        self.report("claimed", claim=msgspec.to_builtins(claim))
        self.wait_for("renew")
        started = time.monotonic()
        try:
            self.store.renew_queued_work_claim(claim, 60_000)
            outcome = "ok"
        except QueuedWorkClaimExpired:
            outcome = "expired"
        except BackendError as exc:  # cut off: the store must fail with its typed error, and in bounded time
            outcome = type(exc).__name__
        self.report("renew", outcome=outcome, seconds=time.monotonic() - started)
        self.wait_for("commit")
        before = self.snapshot()
        stale = turn(self.session, f"{self.name}-stale", None, [claim.completion()])
        try:
            self.retrying(lambda: self.store.commit_runtime_state(stale))
            outcome = "ok"
            claim_id = ""
        except QueuedWorkClaimExpired as exc:
            outcome = "expired"
            claim_id = exc.claim_id
        self.report("commit", outcome=outcome, claim_id=claim_id, before=before, after=self.snapshot())

    def reclaim(self, lease_ms: int) -> None:
        self.report("ready", session_revision=self.snapshot()["revision"])  # connected: the store is open
        self.wait_for("reclaim")
        attempts = 0
        while (
            claim := self.retrying(
                lambda: self.store.claim_ready_queued_work(self.session, self.name, _IDLE, lease_ms, 1)
            )
        ) is None:
            attempts += 1
            time.sleep(0.05)
        self.report("claimed", claim=msgspec.to_builtins(claim), attempts=attempts)
        done = turn(self.session, f"{self.name}-reclaimed", None, [claim.completion()])
        result = self.retrying(lambda: self.store.commit_runtime_state(done))
        self.report("completed", revision=result.head_revision)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
        close_shared_pools()
        os.close(self.out)


def decode_claim(value: Any) -> QueuedWorkClaim:
    """A claim as a worker reported it."""
    return msgspec.convert(value, QueuedWorkClaim)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lash_store.testing.netns_worker")
    parser.add_argument("mode", choices=("shared", "hold", "reclaim"))
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--session", required=True, help="the session (and partition) to work on")
    parser.add_argument("--name", required=True, help="this worker's name (owner id, stamp prefix)")
    parser.add_argument("--out", required=True, help="JSON-lines result file (appended to)")
    parser.add_argument("--deadline", type=float, required=True, help="stop by this instant (epoch seconds)")
    parser.add_argument("--control", default=None, help="directory the test drops signal files into")
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--lease-ms", type=int, default=60_000)
    args = parser.parse_args(argv)
    worker = Worker(args)
    try:
        if args.mode == "shared":
            worker.shared(args.turns)
        elif args.mode == "hold":
            worker.hold(args.lease_ms)
        else:
            worker.reclaim(args.lease_ms)
    except BaseException as exc:
        worker.report("error", type=type(exc).__name__, message=" ".join(str(exc).split()))
        return 1
    finally:
        worker.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

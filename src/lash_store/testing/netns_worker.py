"""A worker "host" for the network-namespace tests: ``python -m lash_store.testing.netns_worker <mode> ...``.

The shared machinery (arguments, result file, retries, control files, the
deadline) is :mod:`lash_store.testing.netns_host`'s.

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
import sys
import time
from collections.abc import Sequence
from functools import partial
from typing import Any

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
from lash_store.postgres import PostgresStore
from lash_store.testing.netns_host import BUSY_TIMEOUT_MS, NetnsHost, host_parser

__all__ = ["USAGE", "main", "turn"]

#: The usage every turn adds, so a session's total tells how many turns it holds.
USAGE = TokenUsage(input_tokens=5, output_tokens=3, cached_input_tokens=0, reasoning_tokens=1)
_IDLE = QueuedWorkClaimBoundary.IDLE


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


class Worker(NetnsHost):
    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self.session: str = args.session
        self._store: PostgresStore | None = None

    @property
    def store(self) -> PostgresStore:
        if self._store is None:
            options = StoreOptions(busy_timeout_ms=BUSY_TIMEOUT_MS)
            self._store = self.retrying(partial(PostgresStore.open, self.dsn, self.session, options))
        return self._store

    def close_store(self) -> None:
        if self._store is not None:
            self._store.close()

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


def decode_claim(value: Any) -> QueuedWorkClaim:
    """A claim as a worker reported it."""
    return msgspec.convert(value, QueuedWorkClaim)


def main(argv: Sequence[str] | None = None) -> int:
    parser = host_parser(
        "lash_store.testing.netns_worker", ("shared", "hold", "reclaim"), "this worker's name (owner id, stamp prefix)"
    )
    parser.add_argument("--session", required=True, help="the session (and partition) to work on")
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--lease-ms", type=int, default=60_000)
    args = parser.parse_args(argv)
    worker = Worker(args)
    modes = {
        "shared": partial(worker.shared, args.turns),
        "hold": partial(worker.hold, args.lease_ms),
        "reclaim": partial(worker.reclaim, args.lease_ms),
    }
    return worker.run(modes[args.mode])


if __name__ == "__main__":
    sys.exit(main())

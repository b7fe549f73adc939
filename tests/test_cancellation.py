"""Cancelling an awaiting task never reorders one store's calls.

``AsyncStore`` promises that one store's calls run in submission order.  Cancellation must not break
that: a cancelled call either finishes before any later call on that store starts, or never applies.
The known failure: a cancelled commit still running in its worker thread lands *after* a later,
already acknowledged commit, silently overwriting it (a lost update).

Only the public API (``AsyncStore``, ``lash_store.model``) plus raw ``sqlite3`` connections (to hold
the file's write lock from outside) are used.  ``LASH_CANCEL_SEED`` fixes the seed (printed on failure).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import sqlite3
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest

from lash_store import AsyncStore
from lash_store.model import (
    AttachmentIntent,
    DeliveryPolicy,
    GraphDelta,
    HydratedCheckpoint,
    PersistedSessionRead,
    QueuedWorkBatchDraft,
    QueuedWorkPayload,
    RuntimeCommit,
    RuntimeCommitResult,
    SessionMeta,
    SessionNode,
    SessionReadScope,
    SlotPolicy,
    TurnInput,
)

SESSION = "cancel-session"
MAX_MS = 2**63 - 1


def _seed() -> int:
    env = os.environ.get("LASH_CANCEL_SEED")
    return int(env) if env else random.SystemRandom().randrange(2**32)


def node(node_id: str, text: str = "", parent: str | None = None) -> SessionNode:
    return SessionNode(
        node_id=node_id, parent_node_id=parent, payload={"role": "assistant", "parts": [{"type": "text", "text": text}]}
    )


def small_commit(tag: str, **config: Any) -> RuntimeCommit:
    """An unconditional commit whose config and one new node say who made it."""
    return RuntimeCommit(
        session_id=SESSION,
        expected_head_revision=None,
        config={"who": tag, **config},
        graph=GraphDelta.append([node(f"node-{tag}")], leaf_node_id=f"node-{tag}"),
        checkpoint=HydratedCheckpoint(turn_state={"who": tag}),
    )


SHAPES = ("hash-heavy", "hash-heavy", "nodes", "blob")


def big_commit(tag: str, rng: random.Random, shape: str, size: int = 16_000_000) -> RuntimeCommit:
    """An unconditional commit that takes a while in its worker thread.

    ``hash-heavy`` spends nearly all of its time before the write lock (encoding, hashing and compressing
    ``size`` bytes that shrink to little); ``nodes`` validates and inserts thousands of nodes; ``blob``
    hashes and stores 3 MB that do not compress.
    """
    checkpoint = HydratedCheckpoint(turn_state={"who": tag})
    nodes = [node(f"node-{tag}")]
    if shape == "hash-heavy":
        text = " ".join(f"{tag}:{rng.randrange(10**6)}" for _ in range(2000))
        checkpoint = HydratedCheckpoint(turn_state={"who": tag}, tool_state={"text": text * (size // len(text))})
    elif shape == "nodes":  # ids are reused from commit to commit, so the graph stays bounded
        nodes = [node(f"bulk-{index}", f"{tag} {index} " * 8) for index in range(4000)] + nodes
    else:
        blob = rng.randbytes(3_000_000)
        checkpoint = HydratedCheckpoint(
            turn_state={"who": tag}, tool_state={"blob": blob}, execution_state=blob[:500_000]
        )
    return RuntimeCommit(
        session_id=SESSION,
        expected_head_revision=None,
        config={"who": tag},
        graph=GraphDelta.append(nodes, leaf_node_id=f"node-{tag}"),
        checkpoint=checkpoint,
    )


@contextlib.asynccontextmanager
async def open_store(path: Path) -> AsyncIterator[AsyncStore]:
    store = await AsyncStore.open(path)
    try:
        yield store
    finally:
        await store.close()


async def measure(store: AsyncStore, commits: list[RuntimeCommit]) -> float:
    """The median time one of ``commits`` takes when awaited alone."""
    durations = []
    for commit in commits:
        started = time.perf_counter()
        await store.commit_runtime_state(commit)
        durations.append(time.perf_counter() - started)
    return statistics.median(durations)


async def outcome_of(task: asyncio.Task[Any]) -> str:
    """ "cancelled", "returned" or the exception's type name, once the task is done."""
    try:
        await task
    except asyncio.CancelledError:
        return "cancelled"
    except Exception as exc:
        return type(exc).__name__
    return "returned"


def head_of(read: PersistedSessionRead | None) -> tuple[int, Any]:
    assert read is not None, "the head vanished"
    return read.head_revision, read.config


# ---------------------------------------------------------------------------
# a cancelled commit still running in its thread must not land after a later acknowledged commit


@pytest.mark.timeout(120)
def test_cancelled_running_commit_never_lands_after_a_later_acknowledged_commit(tmp_path: Path) -> None:
    seed = _seed()
    print(f"test_cancellation seed={seed} (set LASH_CANCEL_SEED={seed} to replay)")
    rng = random.Random(seed)

    async def main() -> None:
        async with open_store(tmp_path / "cancel-running.db") as store:
            durations = {
                shape: await measure(store, [big_commit(f"warm-{shape}-{n}", rng, shape) for n in range(3)])
                for shape in set(SHAPES)
            }
            for round_ in range(24):
                shape = rng.choice(SHAPES)
                duration = durations[shape]
                cancelled = big_commit(f"cancelled-{round_}", rng, shape)
                later = small_commit(f"later-{round_}", round=round_)
                task = asyncio.create_task(store.commit_runtime_state(cancelled))
                wait = None if rng.random() < 0.15 else rng.uniform(0.0, 1.2 * duration)
                if wait is not None:
                    await asyncio.sleep(wait)
                task.cancel()
                acknowledged = await store.commit_runtime_state(later)
                how = await outcome_of(task)
                # Give a cancelled commit that is still running in its thread ample time to land.
                await asyncio.sleep(2 * duration + 0.05)
                revision, config = head_of(await store.load_session(SessionReadScope.active_path()))
                waited = "no wait" if wait is None else f"{wait * 1000:.1f} ms"
                context = (
                    f"seed={seed} round {round_} ({shape}, cancelled after {waited}, a commit takes "
                    f"~{duration * 1000:.0f} ms, the cancelled task {how})"
                )
                assert config == later.config, (
                    f"{context}: the head holds {config.get('who')!r}, not the last acknowledged commit "
                    f"{later.config['who']!r}: a cancelled commit landed after a later acknowledged one (lost update)"
                )
                assert revision == acknowledged.head_revision, (
                    f"{context}: the head moved to {revision} after the last acknowledged commit "
                    f"(revision {acknowledged.head_revision})"
                )

    asyncio.run(main())


@pytest.mark.timeout(120)
def test_cancelled_commit_waiting_for_the_write_lock_never_lands_after_a_later_one(tmp_path: Path) -> None:
    """The cancelled commit is provably running: its thread waits for a write lock held from outside."""
    seed = _seed()
    print(f"test_cancellation (gated) seed={seed}")
    rng = random.Random(seed)
    path = tmp_path / "cancel-gated.db"

    async def main() -> None:
        async with open_store(path) as store:
            await store.commit_runtime_state(small_commit("first"))
            gate = sqlite3.connect(path, isolation_level=None)
            try:
                for round_ in range(8):
                    gate.execute("BEGIN IMMEDIATE")
                    try:
                        cancelled = small_commit(f"cancelled-{round_}")
                        later = small_commit(f"later-{round_}", round=round_)
                        task = asyncio.create_task(store.commit_runtime_state(cancelled))
                        await asyncio.sleep(rng.uniform(0.02, 0.06))  # now waiting for the lock in its thread
                        task.cancel()
                        later_task = asyncio.create_task(store.commit_runtime_state(later))
                        await asyncio.sleep(rng.uniform(0.0, 0.05))
                    finally:
                        gate.execute("ROLLBACK")
                    acknowledged = await asyncio.wait_for(later_task, 30)
                    how = await outcome_of(task)
                    await asyncio.sleep(0.3)  # a cancelled commit still waiting for the lock has taken it by now
                    revision, config = head_of(await store.load_session(SessionReadScope.active_path()))
                    context = f"seed={seed} round {round_} (the cancelled task {how})"
                    assert config == later.config, (
                        f"{context}: the head holds {config.get('who')!r}, not the last acknowledged commit "
                        f"{later.config['who']!r}: a cancelled commit landed after a later acknowledged one"
                    )
                    assert revision == acknowledged.head_revision, (
                        f"{context}: head {revision} after the acknowledged revision {acknowledged.head_revision}"
                    )
            finally:
                gate.close()

    asyncio.run(main())


# ---------------------------------------------------------------------------
# a cancelled call that had not started yet never applies


@dataclass
class Pending:
    """A call that will be cancelled before it can start, and how to tell whether it applied."""

    name: str
    call: Callable[[AsyncStore], Coroutine[Any, Any, Any]]
    applied: Callable[[AsyncStore], Awaitable[bool]]


def _draft() -> QueuedWorkBatchDraft:
    return QueuedWorkBatchDraft.new(
        SESSION,
        DeliveryPolicy.EARLIEST_SAFE_BOUNDARY,
        SlotPolicy.EXCLUSIVE,
        [QueuedWorkPayload.turn_input(TurnInput.text("never"))],
    ).with_source_key("never-enqueued")


async def _has_node(store: AsyncStore, node_id: str) -> bool:
    return await store.load_node(node_id) is not None


async def _queued(store: AsyncStore) -> bool:
    return any(batch.source_key == "never-enqueued" for batch in await store.list_queued_work(SESSION))


async def _intent(store: AsyncStore) -> bool:
    return any(entry.attachment_id == "never-att" for entry in await store.list_uncommitted(MAX_MS))


async def _module(store: AsyncStore) -> bool:
    return await store.get_module_artifact("never-module") is not None


async def _meta(store: AsyncStore) -> bool:
    meta = await store.load_session_meta()
    return meta is not None and meta.model == "never-model"


async def _tombstoned(store: AsyncStore) -> bool:
    return await store.load_node("node-first") is None


PENDING = [
    Pending("commit", lambda s: s.commit_runtime_state(small_commit("never")), lambda s: _has_node(s, "node-never")),
    Pending("enqueue", lambda s: s.enqueue_queued_work(_draft()), _queued),
    Pending(
        "record_intent",
        lambda s: s.record_intent(
            AttachmentIntent(
                attachment_id="never-att", session_id=SESSION, canonical_uri="file:///n", intent_at_epoch_ms=1
            )
        ),
        _intent,
    ),
    Pending("put_module_artifact", lambda s: s.put_module_artifact("never-module", b"never"), _module),
    Pending(
        "save_session_meta",
        lambda s: s.save_session_meta(
            SessionMeta(
                session_id=SESSION, session_name="n", created_at="2024-01-01T00:00:00+00:00", model="never-model"
            )
        ),
        _meta,
    ),
    Pending("tombstone_nodes", lambda s: s.tombstone_nodes(["node-first"]), _tombstoned),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("pending", PENDING, ids=[p.name for p in PENDING])
def test_cancelled_call_that_had_not_started_never_applies(tmp_path: Path, pending: Pending) -> None:
    path = tmp_path / "not-started.db"

    async def main() -> None:
        async with open_store(path) as store:
            await store.commit_runtime_state(small_commit("first"))
            gate = sqlite3.connect(path, isolation_level=None)
            try:
                gate.execute("BEGIN IMMEDIATE")
                try:
                    earlier = asyncio.create_task(store.commit_runtime_state(small_commit("earlier")))
                    await asyncio.sleep(0.05)  # the earlier commit now waits for the lock in its thread
                    assert not earlier.done()
                    victim = asyncio.create_task(pending.call(store))
                    for _ in range(3):
                        await asyncio.sleep(0)  # the victim is submitted, queued behind the earlier call
                    assert not earlier.done(), "the earlier call finished while the write lock was held"
                    victim.cancel()
                    last = small_commit("last")
                    later = asyncio.create_task(store.commit_runtime_state(last))
                    await asyncio.sleep(0.02)
                finally:
                    gate.execute("ROLLBACK")
                await asyncio.wait_for(earlier, 30)
                acknowledged = await asyncio.wait_for(later, 30)
                how = await outcome_of(victim)
            finally:
                gate.close()
            await asyncio.sleep(0.2)  # time for a wrongly started victim to land
            assert how == "cancelled", f"the cancelled {pending.name} ended as {how!r}, not with CancelledError"
            assert not await pending.applied(store), (
                f"a {pending.name} cancelled before it started (an earlier call was still running) was applied"
            )
            revision, config = head_of(await store.load_session(SessionReadScope.active_path()))
            assert config == last.config and revision == acknowledged.head_revision

    asyncio.run(main())


# ---------------------------------------------------------------------------
# many tasks, random cancellations: applied commits keep submission order, loads see exactly their past


@pytest.mark.timeout(120)
def test_calls_from_many_tasks_keep_submission_order_despite_cancellations(tmp_path: Path) -> None:
    seed = _seed()
    print(f"test_cancellation (order) seed={seed}")
    big = 4_000_000  # bytes per big commit: dozens of them are alive at once
    rng = random.Random(seed)

    async def main() -> None:
        async with open_store(tmp_path / "order.db") as store:
            duration = await measure(store, [big_commit(f"warm-{n}", rng, "hash-heavy", big) for n in range(3)])
            base = (await store.commit_runtime_state(small_commit("base", seq=-1))).head_revision
            kinds: list[str] = []
            expected_duration: list[float] = []
            tasks: list[asyncio.Task[Any]] = []
            for seq in range(120):
                if seq % 6 == 5:
                    kinds.append("load")
                    expected_duration.append(0.0)
                    tasks.append(asyncio.create_task(store.load_session()))
                    continue
                kinds.append("commit")
                if rng.random() < 0.3:
                    commit = big_commit(f"seq-{seq:04d}", rng, "hash-heavy", big)
                    expected_duration.append(duration)
                else:
                    commit = small_commit(f"seq-{seq:04d}")
                    expected_duration.append(0.002)
                commit = msgspec.structs.replace(commit, config={"who": f"seq-{seq:04d}", "seq": seq})
                tasks.append(asyncio.create_task(store.commit_runtime_state(commit)))

            async def canceller() -> None:
                """Now and then cancel the commit that is running (the earliest one not done) part-way."""
                decided: set[int] = set()
                while not all(task.done() for task in tasks):
                    seq = next(index for index, task in enumerate(tasks) if not task.done())
                    if kinds[seq] == "commit" and seq not in decided:
                        decided.add(seq)
                        if rng.random() < 0.35:
                            await asyncio.sleep(rng.uniform(0.0, 1.2 * expected_duration[seq]))
                            tasks[seq].cancel()
                            continue
                    await asyncio.sleep(0.0005)

            await asyncio.wait_for(canceller(), 60)
            results = await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.sleep(2 * duration + 0.1)  # stragglers still running in threads land now, if ever
            final = await store.load_session()
            assert final is not None
            applied = [int(n.node_id.removeprefix("node-seq-")) for n in final.graph.nodes if "seq-" in n.node_id]
            context = f"seed={seed}"
            swapped = [(a, b) for a, b in itertools.pairwise(applied) if a > b]
            assert not swapped, (
                f"{context}: commits were applied out of submission order (stored order has "
                f"{', '.join(f'{a} before {b}' for a, b in swapped)})"
            )
            acked = [
                seq
                for seq, (kind, result) in enumerate(zip(kinds, results, strict=True))
                if kind == "commit" and isinstance(result, RuntimeCommitResult)
            ]
            assert set(acked) <= set(applied), (
                f"{context}: acknowledged commits are missing: {set(acked) - set(applied)}"
            )
            for seq in acked:
                result = results[seq]
                assert isinstance(result, RuntimeCommitResult)
                assert result.head_revision == base + 1 + applied.index(seq), (
                    f"{context}: commit {seq} was acknowledged as revision {result.head_revision}, but it is "
                    f"number {applied.index(seq) + 1} in the stored order {applied}"
                )
            assert final.head_revision == base + len(applied), f"{context}: head {final.head_revision}, {applied}"
            assert final.config == {"who": f"seq-{applied[-1]:04d}", "seq": applied[-1]}, (
                f"{context}: the head config {final.config} is not the last applied commit {applied[-1]}"
            )
            for seq, (kind, result) in enumerate(zip(kinds, results, strict=True)):
                if kind != "load" or not isinstance(result, PersistedSessionRead):
                    continue
                seen = [int(n.node_id.removeprefix("node-seq-")) for n in result.graph.nodes if "seq-" in n.node_id]
                past = [earlier for earlier in applied if earlier < seq]
                assert seen == past, (
                    f"{context}: the load submitted after commit {seq - 1} saw {seen[-5:]} but the commits "
                    f"submitted before it that were ever applied are {past[-5:]}"
                )

    asyncio.run(main())

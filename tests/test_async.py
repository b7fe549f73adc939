"""AsyncStore: every method a coroutine, ordered per store, never blocking the loop, bounded threads."""

from __future__ import annotations

import asyncio
import inspect
import itertools
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from lash_store import AsyncStore, Store, StoreOptions
from lash_store.errors import HeadRevisionConflict, InvalidInput, StoreClosed
from lash_store.model import (
    AttachmentIntent,
    DurabilityTier,
    GraphDelta,
    QueuedWorkClaimBoundary,
    SessionGraph,
    SessionMeta,
    SessionReadScope,
)
from tests.helpers import commit_at, draft, message


def public_names(cls: type) -> set[str]:
    return {name for name in dir(cls) if not name.startswith("_")}


# ---------------------------------------------------------------------------
# the surface


def test_every_store_method_is_a_coroutine_with_the_same_arguments() -> None:
    store_names = public_names(Store)
    assert store_names - public_names(AsyncStore) == set(), "AsyncStore lacks some Store methods"
    checked = 0
    for name in sorted(store_names):
        sync_attr = inspect.getattr_static(Store, name)
        async_attr = inspect.getattr_static(AsyncStore, name)
        if isinstance(sync_attr, property):
            assert isinstance(async_attr, property), name
            continue
        func = getattr(AsyncStore, name)
        assert inspect.iscoroutinefunction(func), f"AsyncStore.{name} is not a coroutine function"
        sync_params = [p.name for p in inspect.signature(getattr(Store, name)).parameters.values()]
        async_params = [p.name for p in inspect.signature(func).parameters.values()]
        assert async_params[: len(sync_params)] == sync_params, (name, sync_params, async_params)
        checked += 1
    assert checked >= 30
    for required in ("commit_runtime_state", "load_session", "put_blob", "claim_ready_queued_work", "close"):
        assert inspect.iscoroutinefunction(getattr(AsyncStore, required))


def test_round_trip_through_a_file_store(db_path: Path) -> None:
    async def main() -> None:
        store = await AsyncStore.open(db_path)
        assert store.durability_tier is DurabilityTier.DURABLE
        graph = SessionGraph(nodes=[message("u1", "user", "hello async")], leaf_node_id="u1")
        result = await store.commit_runtime_state(commit_at("root", 0, session_graph=graph, turn_state={"t": 1}))
        assert result.head_revision == 1
        read = await store.load_session(SessionReadScope.active_path())
        assert read is not None and read.head_revision == 1
        assert [n.node_id for n in read.graph.nodes] == ["u1"]
        assert (await store.load_node("u1")) is not None
        ref = await store.put_blob(b"async bytes")
        assert await store.get_blob(ref) == b"async bytes"
        meta = SessionMeta(session_id="root", session_name="n", created_at="2024-01-01T00:00:00+00:00", model="m")
        await store.save_session_meta(meta)
        assert await store.load_session_meta() == meta
        info = await store.load_picker_info()
        assert info is not None and info.first_user_message == "hello async"
        await store.record_intent(
            AttachmentIntent(attachment_id="a1", session_id="root", canonical_uri="u", intent_at_epoch_ms=1)
        )
        assert [e.attachment_id for e in await store.list_uncommitted(10)] == ["a1"]
        batch = await store.enqueue_queued_work(draft("root", "queued"))
        claim = await store.claim_ready_queued_work("root", "owner", QueuedWorkClaimBoundary.IDLE, 60_000, 5)
        assert claim is not None and claim.batch_ids == [batch.batch_id]
        done = await store.commit_runtime_state(commit_at("root", 1).completing_queue_claim(claim.completion()))
        assert done.head_revision == 2
        assert await store.list_queued_work("root") == []
        await store.close()
        with pytest.raises(StoreClosed):
            await store.load_session()

    asyncio.run(main())
    with Store.open(db_path) as sync_store:
        read = sync_store.load_session()
        assert read is not None and read.head_revision == 2


def test_memory_and_wrapping_and_context_manager() -> None:
    async def main() -> None:
        async with await AsyncStore.memory() as store:
            assert store.durability_tier is DurabilityTier.INLINE
            assert (await store.commit_runtime_state(commit_at("root", 0))).head_revision == 1
            with pytest.raises(HeadRevisionConflict):
                await store.commit_runtime_state(commit_at("root", 0))
        with pytest.raises(StoreClosed):
            await store.load_session()
        sync_store = Store.memory()
        wrapped = AsyncStore(sync_store)
        await wrapped.commit_runtime_state(commit_at("root", 0))
        read = sync_store.load_session()
        assert read is not None and read.head_revision == 1
        await wrapped.close()

    asyncio.run(main())


def test_async_validation_matches_the_sync_store() -> None:
    """A plain string where a list of ids is expected is rejected, not split into one-character ids."""

    async def main() -> None:
        store = await AsyncStore.memory()
        nodes = [message(node_id, "user", node_id) for node_id in ("u", "1", "u1")]
        await store.commit_runtime_state(commit_at("root", 0, session_graph=SessionGraph(nodes=nodes)))
        with pytest.raises(InvalidInput) as info:
            await store.tombstone_nodes("u1")
        assert "node_ids" in info.value.what
        assert await store.graph_node_count() == 3
        with pytest.raises(InvalidInput):
            await store.commit_refs("root", "a1")
        with pytest.raises(InvalidInput):
            await store.claim_ready_queued_work_by_batch_ids(
                "root", "owner", QueuedWorkClaimBoundary.IDLE, 1000, "qwb:1"
            )
        await store.close()

    asyncio.run(main())


# ---------------------------------------------------------------------------
# ordering


def test_calls_on_one_store_run_in_submission_order(db_path: Path) -> None:
    async def main() -> None:
        store = await AsyncStore.open(db_path)
        results = await asyncio.gather(
            *(
                store.commit_runtime_state(
                    msgspec.structs.replace(
                        commit_at("root", revision),
                        graph=GraphDelta.append([message(f"n{revision}", "user", str(revision))], f"n{revision}"),
                    )
                )
                for revision in range(50)
            )
        )
        assert [r.head_revision for r in results] == list(range(1, 51))
        read = await store.load_session()
        assert read is not None and read.head_revision == 50
        assert [n.node_id for n in read.graph.nodes] == [f"n{i}" for i in range(50)]
        await store.close()

    asyncio.run(main())


def test_reads_and_writes_interleave_in_submission_order() -> None:
    async def main() -> None:
        store = await AsyncStore.memory()
        calls: list[Any] = []
        for revision in range(20):
            calls.append(store.commit_runtime_state(commit_at("root", revision)))
            calls.append(store.load_session())
        results = await asyncio.gather(*calls)
        seen = [r.head_revision for r in results[1::2]]
        assert seen == list(range(1, 21))
        blob_calls = [store.put_blob(f"b{i}".encode()) for i in range(30)] + [store.gc_unreachable()]
        *refs, report = await asyncio.gather(*blob_calls)
        assert report.deleted_blob_count >= 30  # the GC ran after every put (memory grace is 0)
        assert await asyncio.gather(*(store.get_blob(ref) for ref in refs)) == [None] * 30
        await store.close()

    asyncio.run(main())


# ---------------------------------------------------------------------------
# never blocking the event loop


def test_event_loop_keeps_running_while_a_call_waits_for_the_write_lock(db_path: Path) -> None:
    async def main() -> None:
        store = await AsyncStore.open(db_path, StoreOptions(busy_timeout_ms=10_000))
        await store.commit_runtime_state(commit_at("root", 0))
        holder = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
        holder.execute("BEGIN IMMEDIATE")
        release = threading.Timer(0.3, lambda: (holder.execute("ROLLBACK"), holder.close()))
        ticks: list[float] = []
        stop = asyncio.Event()

        async def ticker() -> None:
            while not stop.is_set():
                ticks.append(time.monotonic())
                await asyncio.sleep(0.01)

        tick_task = asyncio.create_task(ticker())
        await asyncio.sleep(0.02)
        started = time.monotonic()
        release.start()
        other = await AsyncStore.memory()
        try:
            # another store is not held up by the first one's wait
            waiting = asyncio.create_task(store.commit_runtime_state(commit_at("root", 1)))
            await asyncio.sleep(0.05)
            assert not waiting.done()
            quick_started = time.monotonic()
            assert (await other.commit_runtime_state(commit_at("root", 0))).head_revision == 1
            assert time.monotonic() - quick_started < 0.2
            assert not waiting.done()
            result = await waiting
        finally:
            release.join()
            stop.set()
            await tick_task
        waited = time.monotonic() - started
        assert result.head_revision == 2
        assert waited >= 0.25, waited
        during = [t for t in ticks if started <= t <= started + waited]
        assert len(during) >= 10, len(during)
        gaps = [b - a for a, b in itertools.pairwise(ticks)]
        assert max(gaps) < 0.15, f"the event loop stalled for {max(gaps):.3f}s"
        await store.close()
        await other.close()

    asyncio.run(main())


# ---------------------------------------------------------------------------
# bounded threads


def test_many_open_stores_do_not_grow_the_thread_count(tmp_path: Path) -> None:
    baseline = threading.active_count()

    async def main() -> int:
        peak = threading.active_count()
        memory_stores = await asyncio.gather(*(AsyncStore.memory() for _ in range(300)))
        file_stores = await asyncio.gather(*(AsyncStore.open(tmp_path / f"s{i}.db") for i in range(60)))
        stores = [*memory_stores, *file_stores]
        peak = max(peak, threading.active_count())
        results = await asyncio.gather(*(s.commit_runtime_state(commit_at("root", 0)) for s in stores))
        assert all(r.head_revision == 1 for r in results)
        peak = max(peak, threading.active_count())
        reads = await asyncio.gather(*(s.load_session() for s in stores))
        assert all(r is not None and r.head_revision == 1 for r in reads)
        peak = max(peak, threading.active_count())
        await asyncio.gather(*(s.close() for s in stores))
        return max(peak, threading.active_count())

    peak = asyncio.run(main())
    assert peak < 50, f"{peak} threads for 360 open stores"
    assert peak <= baseline + 33, (baseline, peak)


@pytest.mark.postgres
def test_async_store_over_postgres_keeps_order_and_a_bounded_pool(pg_dsn: str) -> None:
    """AsyncStore wraps a PostgresStore: hundreds of sessions on the shared executor and a bounded pool."""
    from lash_store.postgres import PostgresStore, close_shared_pools

    async def scenario() -> None:
        stores = [AsyncStore(PostgresStore.open(pg_dsn, f"async-{n}")) for n in range(200)]
        try:
            results = await asyncio.gather(
                *(store.commit_runtime_state(commit_at(f"async-{n}", 0)) for n, store in enumerate(stores))
            )
            assert {result.head_revision for result in results} == {1}
            one = stores[0]
            ordered = [one.commit_runtime_state(commit_at("async-0", revision)) for revision in range(1, 21)]
            assert [result.head_revision for result in await asyncio.gather(*ordered)] == list(range(2, 22))
        finally:
            for store in stores:
                await store.close()

    threads_before = threading.active_count()
    try:
        asyncio.run(scenario())
        assert threading.active_count() - threads_before <= 32 + 12  # the executor and the pool, not a thread each
    finally:
        close_shared_pools()

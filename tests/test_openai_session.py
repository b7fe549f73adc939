"""LashSession: the OpenAI Agents SDK's Session protocol on lash-store (SQLite file, memory, PostgreSQL).

Protocol semantics as the SDK's SQLiteSession has them (limits, settings,
JSON normalisation, pop order, clear, closed sessions), plus what the SDK's
session does not promise: batches from several processes land whole and
contiguous, every item is popped exactly once across processes, and a
cancelled mutation is settled before the cancellation propagates.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from agents.memory.session import Session
from agents.memory.session_settings import SessionSettings

from lash_store.adapters.openai_agents import LashSession
from lash_store.postgres import close_shared_pools

Factory = Callable[..., LashSession]


@pytest.fixture(params=["sqlite", "memory", "postgres"])
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Factory]:
    """Sessions of one backend; every session a test makes with the same id shares its data (but memory)."""
    opened: list[LashSession] = []

    def factory(session_id: str = "s", **kwargs: Any) -> LashSession:
        if request.param == "sqlite":
            session = LashSession.sqlite(session_id, tmp_path / "root", **kwargs)
        elif request.param == "memory":
            session = LashSession.memory(session_id, **kwargs)
        else:
            session = LashSession.postgres(session_id, request.getfixturevalue("pg_dsn"), **kwargs)
        opened.append(session)
        return session

    yield factory
    for session in opened:
        session.close()
    close_shared_pools()


def items(*texts: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text} for text in texts]


def test_it_is_a_session(make: Factory) -> None:
    assert isinstance(make(), Session)


def test_add_get_pop_clear(make: Factory) -> None:
    async def scenario() -> None:
        session = make()
        assert await session.get_items() == []
        assert await session.pop_item() is None
        await session.add_items(items("a", "b"))
        await session.add_items([{"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"}])
        await session.add_items([])
        assert [item.get("content", item.get("type")) for item in await session.get_items()] == [
            "a",
            "b",
            "function_call",
        ]
        assert (await session.pop_item())["type"] == "function_call"
        assert await session.get_items() == items("a", "b")
        await session.clear_session()
        assert await session.get_items() == []
        await session.add_items(items("after"))
        assert await session.get_items() == items("after")

    asyncio.run(scenario())


def test_limits_follow_the_sdk(make: Factory) -> None:
    async def scenario() -> None:
        session = make()
        await session.add_items(items("1", "2", "3", "4"))
        assert await session.get_items(2) == items("3", "4")
        assert await session.get_items(0) == []
        assert await session.get_items(-1) == items("1", "2", "3", "4")  # SQLite's LIMIT -1: everything
        assert await session.get_items(10) == items("1", "2", "3", "4")
        session.session_settings = SessionSettings(limit=3)
        assert await session.get_items() == items("2", "3", "4")
        assert await session.get_items(1) == items("4")  # an explicit limit wins over the settings

    asyncio.run(scenario())


def test_items_round_trip_through_json_like_sqlite_session(make: Factory) -> None:
    async def scenario() -> None:
        session = make()
        odd = {"role": "user", "content": "'; DROP TABLE x; -- ünïcödé 🎉 \\u0000", "extra": (1, 2), 3: "int key"}
        await session.add_items([odd])
        assert await session.get_items() == [
            {"role": "user", "content": odd["content"], "extra": [1, 2], "3": "int key"}
        ]
        with pytest.raises(ValueError):
            await session.add_items([{"role": "user", "content": object()}])
        assert len(await session.get_items()) == 1  # nothing of the failed batch was written

    asyncio.run(scenario())


def test_a_closed_session_refuses_every_call(make: Factory) -> None:
    async def scenario() -> None:
        session = make()
        session.close()
        for call in (session.get_items(), session.add_items([]), session.pop_item(), session.clear_session()):
            with pytest.raises(RuntimeError, match="closed"):
                await call

    asyncio.run(scenario())


def test_two_handles_see_each_others_writes(make: Factory, request: pytest.FixtureRequest) -> None:
    if "memory" in request.node.callspec.id:
        return  # a memory session is private to its handle, as SQLiteSession(":memory:") is
    first, second = make("shared"), make("shared")

    async def scenario() -> None:
        await first.add_items(items("from first"))
        await second.add_items(items("from second"))
        assert await first.get_items() == items("from first", "from second")
        assert await second.pop_item() == items("from second")[0]
        assert await first.get_items() == items("from first")

    asyncio.run(scenario())


def test_a_cancelled_add_is_settled_before_the_cancellation_propagates(make: Factory) -> None:
    async def scenario() -> None:
        session = make()
        task = asyncio.ensure_future(session.add_items(items(*(str(i) for i in range(50)))))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert len(await session.get_items()) == 50  # the batch landed whole

    asyncio.run(scenario())


# ---------------------------------------------------------------------------
# Several processes on one session


def _append_batches(root: str, worker: int, batches: int, size: int) -> None:
    async def run() -> None:
        session = LashSession.sqlite("shared", root)
        for batch in range(batches):
            await session.add_items([{"role": "user", "content": f"w{worker}-b{batch}-i{i}"} for i in range(size)])
        session.close()

    asyncio.run(run())


def _pop_all(root: str, out: Any) -> None:
    async def run() -> list[str]:
        session = LashSession.sqlite("shared", root)
        popped = []
        while (item := await session.pop_item()) is not None:
            popped.append(item["content"])
        session.close()
        return popped

    out.put(asyncio.run(run()))


def test_four_processes_append_whole_contiguous_batches(tmp_path: Path) -> None:
    root, workers, batches, size = str(tmp_path / "root"), 4, 25, 3
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_append_batches, args=(root, w, batches, size)) for w in range(workers)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(120)
        assert process.exitcode == 0
    contents = [item["content"] for item in asyncio.run(LashSession.sqlite("shared", root).get_items())]
    assert len(contents) == workers * batches * size == len(set(contents))
    for start in range(0, len(contents), size):  # every batch whole, in order, and nothing inside it
        worker_batch = contents[start].rsplit("-", 1)[0]
        assert contents[start : start + size] == [f"{worker_batch}-i{i}" for i in range(size)]
    for worker in range(workers):  # each worker's batches in the order it added them
        mine = [c for c in contents if c.startswith(f"w{worker}-") and c.endswith("-i0")]
        assert mine == [f"w{worker}-b{b}-i0" for b in range(batches)]


def test_four_processes_pop_every_item_exactly_once(tmp_path: Path) -> None:
    root = str(tmp_path / "root")
    seeded = [f"item-{i}" for i in range(200)]
    asyncio.run(LashSession.sqlite("shared", root).add_items([{"role": "user", "content": c} for c in seeded]))
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    processes = [context.Process(target=_pop_all, args=(root, queue)) for _ in range(4)]
    for process in processes:
        process.start()
    popped = [c for _ in processes for c in queue.get(timeout=120)]
    for process in processes:
        process.join(60)
        assert process.exitcode == 0
    assert sorted(popped) == sorted(seeded)

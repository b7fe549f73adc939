"""Single-writer mode of the adapters: a fenced lease per thread/session, checked inside every write.

The process tests replay LangGraph's two-writer fork (upstream issue #8796)
with real processes: worker A holds the lease and is frozen (SIGSTOP) in the
middle of a node, its lease runs out, worker B takes the thread over and
finishes, then A thaws.  A's late writes carry its old fence, so the store
refuses them and writes nothing: the thread keeps one linear history.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage
from langgraph.graph import END, START, MessagesState, StateGraph

from lash_store.adapters.langgraph import LashSaver, WriterBusy, WriterLeaseRequired
from lash_store.adapters.openai_agents import LashSession
from lash_store.errors import QueuedWorkClaimExpired
from lash_store.postgres import close_shared_pools

TTL_MS = 600


def _saver(backend: str, where: str, **kwargs: Any) -> LashSaver:
    if backend == "sqlite":
        return LashSaver.sqlite(where, **kwargs)
    return LashSaver.postgres(where, **kwargs)


def _session(backend: str, where: str, **kwargs: Any) -> LashSession:
    if backend == "sqlite":
        return LashSession.sqlite("shared", where, **kwargs)
    return LashSession.postgres("shared", where, **kwargs)


@pytest.fixture(params=["sqlite", "postgres"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(backend, root directory or DSN)."""
    if request.param == "sqlite":
        yield "sqlite", str(tmp_path / "root")
    else:
        yield "postgres", request.getfixturevalue("pg_dsn")
        close_shared_pools()


def _graph(saver: Any, answer: str, pause: Callable[[], None] | None = None) -> Any:
    def reply(state: MessagesState) -> dict[str, list[AIMessage]]:
        if pause is not None:
            pause()
        return {"messages": [AIMessage(content=answer)]}

    builder = StateGraph(MessagesState)
    builder.add_node("reply", reply)
    builder.add_edge(START, "reply")
    builder.add_edge("reply", END)
    return builder.compile(checkpointer=saver)


def _history(saver: LashSaver) -> list[tuple[str, str | None, int]]:
    """(checkpoint id, parent id, pending write count) of every checkpoint of thread ``t``, newest first."""
    return [
        (
            found.config["configurable"]["checkpoint_id"],
            None if found.parent_config is None else found.parent_config["configurable"]["checkpoint_id"],
            len(found.pending_writes or []),
        )
        for found in saver.list({"configurable": {"thread_id": "t"}})
    ]


def _assert_linear(history: list[tuple[str, str | None, int]]) -> None:
    """One chain: each checkpoint's parent is the one before it, and the oldest has none."""
    ids = [cid for cid, _, _ in reversed(history)]
    parents = [parent for _, parent, _ in reversed(history)]
    assert parents == [None, *ids[:-1]]


# -- in one process ------------------------------------------------------------------


def test_fenced_saver_refuses_writes_without_a_lease_and_a_stale_lease(where: tuple[str, str]) -> None:
    backend, place = where
    with _saver(backend, place, write_policy="fenced") as saver:
        graph = _graph(saver, "answer")
        with pytest.raises(WriterLeaseRequired):
            graph.invoke({"messages": [("user", "no lease")]}, {"configurable": {"thread_id": "t"}})
        with saver.writer("t", "A", ttl_ms=TTL_MS) as first:
            graph.invoke({"messages": [("user", "q1")]}, first, durability="sync")
        with saver.writer("t", "B", ttl_ms=TTL_MS) as second:
            assert second["configurable"]["__lash_fence"][4] > first["configurable"]["__lash_fence"][4]
            before = _history(saver)
            with pytest.raises(QueuedWorkClaimExpired):  # A released: its old config is refused
                graph.invoke({"messages": [("user", "stale")]}, first, durability="sync")
            with pytest.raises(QueuedWorkClaimExpired):
                saver.put_writes({"configurable": {**first["configurable"], "checkpoint_id": "x"}}, [("c", 1)], "task")
            assert _history(saver) == before
            graph.invoke({"messages": [("user", "q2")]}, second, durability="sync")
        history = _history(saver)
        _assert_linear(history)
        state = graph.get_state({"configurable": {"thread_id": "t"}})
        assert [m.content for m in state.values["messages"]] == ["q1", "answer", "q2", "answer"]


def test_a_live_lease_keeps_a_second_writer_out_until_released(where: tuple[str, str]) -> None:
    backend, place = where
    with _saver(backend, place) as saver:
        with saver.writer("t", "A", ttl_ms=TTL_MS) as held:
            time.sleep(TTL_MS * 2 / 1000)  # renewed meanwhile: still A's
            with pytest.raises(WriterBusy), saver.writer("t", "B", ttl_ms=TTL_MS, wait_s=0.3):
                pass
            _graph(saver, "answer").invoke({"messages": [("user", "q")]}, held, durability="sync")
        with saver.writer("t", "B", ttl_ms=TTL_MS, wait_s=1.0) as taken:
            assert taken["configurable"]["__lash_fence"][4] > held["configurable"]["__lash_fence"][4]


def test_fenced_session_refuses_writes_without_a_lease_and_a_stale_lease(where: tuple[str, str]) -> None:
    backend, place = where
    first = _session(backend, place, single_writer=True)
    second = _session(backend, place, single_writer=True)
    asyncio.run(_stale_session_scenario(first, second))


async def _stale_session_scenario(first: LashSession, second: LashSession) -> None:
    try:
        with pytest.raises(WriterLeaseRequired):
            await first.add_items([{"role": "user", "content": "no lease"}])
        async with first.writer("A", ttl_ms=TTL_MS) as lease:
            await first.add_items([{"role": "user", "content": "a1"}])
            lease._stop.set()  # stop renewing, as a frozen process would
            await asyncio.sleep(TTL_MS * 1.5 / 1000)
            async with second.writer("B", ttl_ms=TTL_MS):
                await second.add_items([{"role": "user", "content": "b1"}])
            with pytest.raises(QueuedWorkClaimExpired):
                await first.add_items([{"role": "user", "content": "a2"}])
            with pytest.raises(QueuedWorkClaimExpired):
                await first.pop_item()
        assert [item["content"] for item in await first.get_items()] == ["a1", "b1"]
    finally:
        first.close()
        second.close()


# -- two processes -------------------------------------------------------------------


def _frozen_worker(backend: str, place: str, marker: str, out: Any) -> None:
    """Worker A: takes the lease, then stops inside the node until the parent has let B finish."""

    def pause() -> None:
        Path(marker).write_text("in node")
        time.sleep(1.0)  # the parent SIGSTOPs us in here

    with _saver(backend, place) as saver:
        try:
            with saver.writer("t", "A", ttl_ms=TTL_MS) as config:
                out.put(("A-fence", config["configurable"]["__lash_fence"][4]))
                _graph(saver, "answer A", pause).invoke(
                    {"messages": [("user", "question A")]}, config, durability="sync"
                )
            out.put(("A", "written"))
        except QueuedWorkClaimExpired:
            out.put(("A", "refused"))


def _taking_worker(backend: str, place: str, out: Any) -> None:
    """Worker B: waits for the lease (A's runs out while A is frozen), then runs one turn."""
    with _saver(backend, place) as saver, saver.writer("t", "B", ttl_ms=TTL_MS, wait_s=30) as config:
        out.put(("B-fence", config["configurable"]["__lash_fence"][4]))
        _graph(saver, "answer B").invoke({"messages": [("user", "question B")]}, config, durability="sync")
    out.put(("B", "written"))


def _wait_for(path: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def test_two_processes_racing_on_one_thread_leave_one_linear_history(where: tuple[str, str], tmp_path: Path) -> None:
    backend, place = where
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    marker = tmp_path / "a-in-node"
    a = context.Process(target=_frozen_worker, args=(backend, place, str(marker), out))
    a.start()
    b = None
    try:
        _wait_for(marker)
        assert a.pid is not None
        os.kill(a.pid, signal.SIGSTOP)
        with _saver(backend, place) as saver:
            frozen = _history(saver)
        b = context.Process(target=_taking_worker, args=(backend, place, out))
        b.start()
        b.join(120)
        assert b.exitcode == 0
        with _saver(backend, place) as saver:
            after_b = _history(saver)
        os.kill(a.pid, signal.SIGCONT)
        a.join(120)
        assert a.exitcode == 0
    finally:
        for process in (a, b):
            if process is not None and process.is_alive():
                assert process.pid is not None
                os.kill(process.pid, signal.SIGCONT)
                process.kill()
    reports = dict(out.get(timeout=10) for _ in range(4))
    assert reports["A"] == "refused" and reports["B"] == "written"
    assert reports["B-fence"] > reports["A-fence"]
    with _saver(backend, place) as saver:
        history = _history(saver)
        state = _graph(saver, "unused").get_state({"configurable": {"thread_id": "t"}})
    assert history == after_b  # A's late writes stored nothing
    assert len(after_b) > len(frozen)
    _assert_linear(history)
    contents = [m.content for m in state.values["messages"]]
    assert "answer B" in contents and "answer A" not in contents
    assert contents[-2:] == ["question B", "answer B"]


def _session_worker(backend: str, place: str, name: str, marker: str | None, out: Any) -> None:
    async def run() -> None:
        session = _session(backend, place, single_writer=True)
        try:
            async with session.writer(name, ttl_ms=TTL_MS, wait_s=30) as lease:
                out.put((f"{name}-fence", lease.fencing_token))
                await session.add_items([{"role": "user", "content": f"{name}1"}])
                if marker is not None:
                    Path(marker).write_text("between writes")
                    time.sleep(1.0)  # the parent SIGSTOPs us in here
                await session.add_items([{"role": "user", "content": f"{name}2"}, {"role": "user", "content": "x"}])
            out.put((name, "written"))
        except QueuedWorkClaimExpired:
            out.put((name, "refused"))
        finally:
            session.close()

    asyncio.run(run())


def test_two_processes_racing_on_one_session_keep_one_linear_history(where: tuple[str, str], tmp_path: Path) -> None:
    backend, place = where
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    marker = tmp_path / "a-between"
    a = context.Process(target=_session_worker, args=(backend, place, "A", str(marker), out))
    a.start()
    b = None
    try:
        _wait_for(marker)
        assert a.pid is not None
        os.kill(a.pid, signal.SIGSTOP)
        b = context.Process(target=_session_worker, args=(backend, place, "B", None, out))
        b.start()
        b.join(120)
        assert b.exitcode == 0
        os.kill(a.pid, signal.SIGCONT)
        a.join(120)
        assert a.exitcode == 0
    finally:
        for process in (a, b):
            if process is not None and process.is_alive():
                assert process.pid is not None
                os.kill(process.pid, signal.SIGCONT)
                process.kill()
    reports = dict(out.get(timeout=10) for _ in range(4))
    assert (reports["A"], reports["B"]) == ("refused", "written")
    assert reports["B-fence"] > reports["A-fence"]
    reader = _session(backend, place)
    try:
        contents = [item["content"] for item in asyncio.run(reader.get_items())]
    finally:
        reader.close()
    assert contents == ["A1", "B1", "B2", "x"]  # A's batch after its lease ran out: nothing of it


def _acquirer(backend: str, place: str, name: str, start: Any, done: Any, out: Any) -> None:
    with _saver(backend, place) as saver:
        saver.writer("t", "warm-up", ttl_ms=TTL_MS, wait_s=30).lease._open_store()  # open (create) before the race
        start.wait(120)
        writer = saver.writer("t", name, ttl_ms=TTL_MS, wait_s=0.3)
        try:
            writer.__enter__()
        except WriterBusy:
            out.put((name, None))
            done.wait(120)
            return
        out.put((name, writer.lease.fencing_token))
        done.wait(120)  # hold the lease until every acquirer has tried
        writer.__exit__(None, None, None)


def test_of_four_concurrent_acquirers_exactly_one_holds_the_lease(where: tuple[str, str]) -> None:
    backend, place = where
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    start, done = context.Barrier(4), context.Barrier(4)
    workers = [context.Process(target=_acquirer, args=(backend, place, f"w{i}", start, done, out)) for i in range(4)]
    for process in workers:
        process.start()
    results = dict(out.get(timeout=180) for _ in workers)
    for process in workers:
        process.join(60)
        assert process.exitcode == 0
    winners = [name for name, fence in results.items() if fence is not None]
    assert len(winners) == 1, results
    with _saver(backend, place) as saver, saver.writer("t", "after", ttl_ms=TTL_MS, wait_s=5) as config:
        assert config["configurable"]["__lash_fence"][4] > results[winners[0]]  # released, and fenced higher


def test_a_released_lease_is_no_failed_attempt(where: tuple[str, str]) -> None:
    """Under a PoisonPolicy with a long backoff, the next writer still gets a released lease at once."""
    from lash_store import PoisonPolicy, StoreOptions

    backend, place = where
    options = StoreOptions(poison=PoisonPolicy(max_attempts=5, backoff_base_ms=600_000, backoff_max_ms=600_000))
    with _saver(backend, place, options=options) as saver:
        for owner in ("A", "B", "C", "D", "E", "F", "G"):  # more writers than attempts
            with saver.writer("t", owner, ttl_ms=TTL_MS, wait_s=2.0):  # a backoff would be WriterBusy here
                pass


def test_a_poison_policy_never_retires_the_writer_lease(where: tuple[str, str]) -> None:
    """Each acquisition counts as an attempt of the lease batch; the lease still works after max_attempts."""
    from lash_store import PoisonPolicy, StoreOptions

    backend, place = where
    options = StoreOptions(poison=PoisonPolicy(max_attempts=1, backoff_base_ms=1, backoff_max_ms=1, jitter=0.0))
    with _saver(backend, place, options=options) as saver:
        fences = []
        for owner in ("A", "B", "C", "D"):
            with saver.writer("t", owner, ttl_ms=TTL_MS, wait_s=5.0) as held:
                fences.append(held["configurable"]["__lash_fence"][4])
                _graph(saver, f"answer {owner}").invoke({"messages": [("user", owner)]}, held, durability="sync")
        assert fences == sorted(fences) and len(set(fences)) == 4
        _assert_linear(_history(saver))

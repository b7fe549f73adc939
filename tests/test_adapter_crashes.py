"""SIGKILL in the middle of the adapters' writes: every acknowledged write is whole, none half there, none twice.

A child process writes in a loop and acknowledges each write through a pipe
once the call returned; the parent kills it at a random moment, then reopens
the files and checks what is stored against what was acknowledged.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import random
import signal
import time
from collections import Counter
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from lash_store.adapters.langgraph import LashSaver
from lash_store.adapters.openai_agents import LashSession

BATCH = 5
KILLS = 4


def _add_forever(root: str, start: int, pipe: Connection) -> None:
    async def run() -> None:
        session = LashSession.sqlite("crash", root)
        batch = start
        pipe.send(None)  # ready: the kill's delay counts from here, not from a slow start on a loaded machine
        while True:
            await session.add_items([{"role": "user", "content": f"b{batch}-i{i}"} for i in range(BATCH)])
            pipe.send(batch)
            batch += 1

    asyncio.run(run())


def _invoke_forever(root: str, start: int, pipe: Connection) -> None:
    from langchain_core.messages import AIMessage
    from langgraph.graph import END, START, MessagesState, StateGraph

    def reply(state: MessagesState) -> dict[str, list[AIMessage]]:
        return {"messages": [AIMessage(content="answer " * 30)]}

    builder = StateGraph(MessagesState)
    builder.add_node("reply", reply)
    builder.add_edge(START, "reply")
    builder.add_edge("reply", END)
    saver = LashSaver.sqlite(root)
    graph = builder.compile(checkpointer=saver)
    config = {"configurable": {"thread_id": "crash"}}
    turn = start
    pipe.send(None)  # ready (importing LangGraph can take seconds on a loaded machine)
    while True:
        graph.invoke({"messages": [("user", f"turn {turn}")]}, config, durability="sync")
        pipe.send(turn)
        turn += 1


def _kill_after(target: Any, args: tuple[Any, ...], seconds: float) -> list[int]:
    """Run ``target(*args, pipe)`` in a child, SIGKILL it ``seconds`` after it is ready; what it acknowledged."""
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=target, args=(*args, sender))
    child.start()
    sender.close()
    acknowledged: list[int] = []
    assert receiver.poll(120) and receiver.recv() is None, "the child never got ready"
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if receiver.poll(0.01):
            acknowledged.append(receiver.recv())
    assert child.pid is not None
    os.kill(child.pid, signal.SIGKILL)
    child.join(30)
    while receiver.poll(0):  # acknowledgements already in the pipe when the kill landed
        try:
            acknowledged.append(receiver.recv())
        except EOFError:
            break
    return acknowledged


def test_sigkill_during_add_items_leaves_whole_batches_only(tmp_path: Path) -> None:
    root, rng, acknowledged = str(tmp_path / "root"), random.Random(7), []
    for kill in range(KILLS):  # every child writes batch numbers of its own (a million apart: never overlapping)
        acknowledged += _kill_after(_add_forever, (root, 1_000_000 * kill), rng.uniform(1.5, 3.0))
    contents = [item["content"] for item in asyncio.run(LashSession.sqlite("crash", root).get_items())]
    batches = Counter(content.split("-")[0] for content in contents)
    assert all(count == BATCH for count in batches.values()), "a batch is half there"
    assert len(contents) == len(set(contents)), "an item is there twice"
    assert {f"b{n}" for n in acknowledged} <= set(batches), "an acknowledged batch is missing"
    for start_index in range(0, len(contents), BATCH):  # and every batch is contiguous
        assert len({c.split("-")[0] for c in contents[start_index : start_index + BATCH]}) == 1


def test_sigkill_during_put_and_put_writes_leaves_every_acknowledged_checkpoint_whole(tmp_path: Path) -> None:
    root, rng, acknowledged = str(tmp_path / "root"), random.Random(11), []
    for kill in range(KILLS):
        acknowledged += _kill_after(_invoke_forever, (root, 1_000_000 * kill), rng.uniform(2.0, 3.5))
    assert acknowledged, "the child never finished a turn"
    with LashSaver.sqlite(root) as saver:
        config = {"configurable": {"thread_id": "crash"}}
        tuples = list(saver.list(config))
        ids = [t.config["configurable"]["checkpoint_id"] for t in tuples]
        assert len(ids) == len(set(ids))
        for found in tuples:  # every stored checkpoint loads whole: all of its values are there
            assert saver.get_tuple(found.config) is not None
        users = [
            m.content for m in saver.get_tuple(config).checkpoint["channel_values"]["messages"] if m.type == "human"
        ]
    assert {f"turn {n}" for n in acknowledged} <= set(users), "an acknowledged turn is missing"
    assert len(users) == len(set(users)), "a turn is there twice"

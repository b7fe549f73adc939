"""Differential tests: the adapters against the frameworks' own backends, on generated scripted scenarios.

* ``LashSaver`` against LangGraph's ``InMemorySaver``: random sequences of
  ``put`` (random parents, namespaces, metadata, small and chunked list
  values), ``put_writes`` (duplicates, special channels, writes for unknown
  checkpoints), ``get_tuple``, ``list`` (filters, ``before``, ``limit``, all
  threads) and ``delete_thread``; every answer must be equal.
* The branching ``LashSession`` against the SDK's ``AdvancedSQLiteSession``:
  random sequences of adds, pops, branches from turns, switches, deletes,
  usage records, tool calls, reads (items, turns, items by turn, tool usage)
  and clears; every answer (values and ``ValueError`` messages) must be
  equal, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import tempfile
import types
import uuid
from pathlib import Path
from typing import Any

from agents.extensions.memory.advanced_sqlite_session import AdvancedSQLiteSession
from agents.usage import Usage
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langgraph.checkpoint.base import CheckpointTuple
from langgraph.checkpoint.memory import InMemorySaver

from lash_store.adapters.langgraph import LashSaver
from lash_store.adapters.openai_agents import LashSession
from lash_store.postgres import close_shared_pools

FUNCTION_SCOPED = HealthCheck.function_scoped_fixture

SETTINGS = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)

# -- LashSaver against InMemorySaver ------------------------------------------------------

THREADS = ["t1", "t2"]
NAMESPACES = ["", "child:1"]
CHANNELS = ["messages", "count", "note"]

values = st.one_of(
    st.integers(-5, 5),
    st.text(max_size=4),
    st.text(min_size=130, max_size=200),  # over the inline limit: a blob
    st.lists(st.text(max_size=8), max_size=40),  # 16 or more: a chunked list
    st.dictionaries(st.sampled_from(["a", "b"]), st.integers(0, 3), max_size=2),
)
metadata = st.fixed_dictionaries(
    {"source": st.sampled_from(["input", "loop", "update"]), "step": st.integers(-1, 4)},
    optional={"user": st.sampled_from(["ann", "bob"]), "flag": st.booleans(), "extra": st.lists(st.integers(0, 2))},
)
put_op = st.tuples(
    st.just("put"),
    st.sampled_from(THREADS),
    st.sampled_from(NAMESPACES),
    st.integers(0, 5),  # which earlier checkpoint is the parent (0: none)
    st.dictionaries(st.sampled_from(CHANNELS), values, max_size=3),
    metadata,
)
writes_op = st.tuples(
    st.just("put_writes"),
    st.sampled_from(THREADS),
    st.sampled_from(NAMESPACES),
    st.integers(0, 6),  # which checkpoint (past the known ones: not stored yet)
    st.sampled_from(["task-a", "task-b"]),
    st.lists(st.tuples(st.sampled_from(["messages", "count", "__error__", "__interrupt__"]), values), max_size=3),
)
get_op = st.tuples(st.just("get"), st.sampled_from(THREADS), st.sampled_from(NAMESPACES), st.integers(0, 6))
list_op = st.tuples(
    st.just("list"),
    st.sampled_from([None, *THREADS]),
    st.sampled_from([None, *NAMESPACES]),
    st.one_of(
        st.none(),
        st.fixed_dictionaries({}, optional={"source": st.sampled_from(["input", "loop"]), "step": st.integers(-1, 2)}),
        st.fixed_dictionaries({"extra": st.lists(st.integers(0, 2), max_size=1)}),
        st.fixed_dictionaries({"user": st.sampled_from(["ann", None])}),
    ),
    st.integers(0, 6),  # before which checkpoint (0: no bound)
    st.one_of(st.none(), st.integers(1, 3)),
)
delete_op = st.tuples(st.just("delete"), st.sampled_from(THREADS))
saver_ops = st.lists(st.one_of(put_op, put_op, writes_op, get_op, list_op, delete_op), min_size=1, max_size=25)


def _tuple(found: CheckpointTuple | None) -> Any:
    if found is None:
        return None
    return (
        found.config,
        found.checkpoint,
        found.metadata,
        found.parent_config,
        found.pending_writes,
    )


class _SaverScenario:
    """Drives both savers with the same operations, naming checkpoints by a counter (ids sort by time)."""

    def __init__(self, lash: LashSaver) -> None:
        self.savers = [lash, InMemorySaver()]
        self.ids: list[str] = []
        self.count = 0

    def _id(self, index: int) -> str | None:
        return self.ids[index - 1] if 0 < index <= len(self.ids) else None

    def _config(self, thread: str, ns: str, checkpoint_id: str | None) -> dict[str, Any]:
        configurable: dict[str, Any] = {"thread_id": thread, "checkpoint_ns": ns}
        if checkpoint_id is not None:
            configurable["checkpoint_id"] = checkpoint_id
        return {"configurable": configurable}

    def run(self, op: tuple[Any, ...]) -> list[Any]:
        kind = op[0]
        if kind == "put":
            _, thread, ns, parent, channel_values, md = op
            self.count += 1
            checkpoint_id = f"1f0{self.count:05d}"
            self.ids.append(checkpoint_id)
            # One version per distinct value, as the stock savers assume: equal versions, equal values.
            versions = {channel: f"{abs(hash(repr(value))):020d}" for channel, value in channel_values.items()}
            checkpoint = {
                "v": 4,
                "id": checkpoint_id,
                "ts": f"2026-01-01T00:00:{self.count:02d}+00:00",
                "channel_values": channel_values,
                "channel_versions": versions,
                "versions_seen": {"node": dict(versions)},
                "updated_channels": sorted(channel_values),
            }
            config = self._config(thread, ns, self._id(parent))
            return [s.put(config, dict(checkpoint), dict(md), dict(versions)) for s in self.savers]
        if kind == "put_writes":
            _, thread, ns, target, task, writes = op
            checkpoint_id = self._id(target) or f"1f1{target:05d}"
            for saver in self.savers:
                saver.put_writes(self._config(thread, ns, checkpoint_id), list(writes), task)
            return []
        if kind == "get":
            _, thread, ns, target = op
            return [_tuple(s.get_tuple(self._config(thread, ns, self._id(target)))) for s in self.savers]
        if kind == "list":
            _, thread, ns, filter_, before, limit = op
            configurable: dict[str, Any] = {}
            if thread is not None:
                configurable["thread_id"] = thread
            if ns is not None and thread is not None:  # the in-memory saver wants a thread with a namespace
                configurable["checkpoint_ns"] = ns
            config = {"configurable": configurable} if configurable else None
            bound = self._id(before)
            before_config = None if bound is None else {"configurable": {"checkpoint_id": bound}}
            if thread is None or ns is None:
                # Across threads or namespaces the savers may interleave differently: compare the sets, unlimited.
                found = [
                    sorted(map(repr, map(_tuple, s.list(config, filter=filter_, before=before_config))))
                    for s in self.savers
                ]
                return found
            return [
                [_tuple(t) for t in s.list(config, filter=filter_, before=before_config, limit=limit)]
                for s in self.savers
            ]
        _, thread = op
        for saver in self.savers:
            saver.delete_thread(thread)
        return []


@SETTINGS
@given(script=saver_ops)
def test_lash_saver_answers_like_the_in_memory_saver(script: list[tuple[Any, ...]]) -> None:
    with tempfile.TemporaryDirectory() as directory, LashSaver.sqlite(Path(directory) / "root") as lash:
        scenario = _SaverScenario(lash)
        for step, op in enumerate(script):
            answers = scenario.run(op)
            if answers:
                mine, theirs = answers
                assert mine == theirs, f"step {step}: {op[0]}"


# -- the branching LashSession against AdvancedSQLiteSession -------------------------------

BRANCHES = ["main", "b1", "b2", "b3"]

item = st.one_of(
    st.builds(lambda t: {"role": "user", "content": t}, st.sampled_from(["alpha", "Beta", "gamma delta", "x" * 120])),
    st.builds(lambda t: {"role": "assistant", "content": t}, st.sampled_from(["ok", "sure"])),
    st.builds(
        lambda n: {"type": "function_call", "name": n, "call_id": f"c-{n}", "arguments": "{}"},
        st.sampled_from(["search", "calc"]),
    ),
    # The other tool items get_tool_usage tells apart: outputs (not calls), namespaces, MCP, hosted, tool search.
    st.sampled_from(
        [
            {"type": "function_call_output", "call_id": "c-calc", "output": "4"},
            {"type": "function_call", "name": "calc", "namespace": "math", "call_id": "c-m", "arguments": "{}"},
            {"type": "mcp_call", "id": "m", "server_label": "docs", "name": "fetch", "arguments": "{}"},
            {"type": "web_search_call", "id": "w", "status": "completed"},
            {"type": "tool_search_call", "id": "t"},
            {"type": "tool_search_output", "id": "o"},
        ]
    ),
)
# Every script ends reading its tool calls, whatever came before (generated reads mostly hit empty branches).
FINAL_READS = [("by_turns", None), ("tools", None), ("tools", "main"), ("items", None, None)]
add_op = st.tuples(st.just("add"), st.lists(item, min_size=1, max_size=4))
turn_op = st.tuples(st.just("add"), st.tuples(st.sampled_from([{"role": "user", "content": "alpha"}]), item).map(list))
# A turn searching for tools: its output must not count next to its call (rare if left to the item strategy).
search_op = st.just(
    ("add", [{"role": "user", "content": "find a tool"}, {"type": "tool_search_call"}, {"type": "tool_search_output"}])
)
branch_op = st.tuples(st.just("branch"), st.integers(0, 4), st.sampled_from(["b1", "b2", "b3", "b4", "main"]))
session_ops = st.tuples(
    st.lists(turn_op, min_size=1, max_size=4),
    st.lists(
        st.one_of(
            add_op,
            turn_op,
            search_op,
            st.tuples(st.just("pop")),
            branch_op,
            branch_op,
            st.tuples(st.just("switch"), st.sampled_from(BRANCHES)),
            st.tuples(st.just("delete"), st.sampled_from(BRANCHES), st.booleans()),
            st.tuples(st.just("usage"), st.integers(1, 3), st.integers(0, 50)),
            st.tuples(st.just("items"), st.one_of(st.none(), st.integers(-1, 4)), st.sampled_from([None, *BRANCHES])),
            st.tuples(st.just("turns"), st.sampled_from([None, *BRANCHES])),
            st.tuples(st.just("find"), st.sampled_from(["a", "BETA", "zzz"])),
            st.tuples(st.just("list")),
            st.tuples(
                st.just("turn_usage"), st.one_of(st.none(), st.integers(0, 4)), st.sampled_from([None, *BRANCHES])
            ),
            st.tuples(st.just("session_usage"), st.sampled_from([None, *BRANCHES])),
            st.tuples(st.just("by_turns"), st.sampled_from([None, *BRANCHES])),
            st.tuples(st.just("tools"), st.sampled_from([None, *BRANCHES])),
            st.tuples(st.just("clear")),
        ),
        min_size=1,
        max_size=30,
    ),
).map(lambda parts: [*parts[0], *parts[1], *FINAL_READS])  # a few turns first: branches have a start


def _turn_rows(turns: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(t["turn"], t["content"], t["full_content"], t["can_branch"]) for t in turns]


async def _answer(session: Any, op: tuple[Any, ...]) -> Any:
    kind = op[0]
    try:
        if kind == "add":
            return await session.add_items(list(op[1]))
        if kind == "pop":
            return await session.pop_item()
        if kind == "branch":
            return await session.create_branch_from_turn(op[1], op[2])
        if kind == "switch":
            return await session.switch_to_branch(op[1])
        if kind == "delete":
            return await session.delete_branch(op[1], force=op[2])
        if kind == "delete_current":  # from main, or forced from the branch itself
            current = session.current_branch if isinstance(session, LashSession) else session._current_branch_id
            if not op[1]:
                await session.switch_to_branch("main")
            return (current, await session.delete_branch(current, force=op[1]))
        if kind == "usage":
            usage = Usage(requests=op[1], input_tokens=op[2], output_tokens=1, total_tokens=op[2] + 1)
            return await session.store_run_usage(
                types.SimpleNamespace(context_wrapper=types.SimpleNamespace(usage=usage))
            )
        if kind == "items":
            return await session.get_items(op[1], branch_id=op[2])
        if kind == "turns":
            return _turn_rows(await session.get_conversation_turns(op[1]))
        if kind == "find":
            return _turn_rows(await session.find_turns_by_content(op[1]))
        if kind == "list":
            listed = await session.list_branches()
            return sorted((b["branch_id"], b["message_count"], b["user_turns"], b["is_current"]) for b in listed)
        if kind == "turn_usage":
            return await session.get_turn_usage(op[1], op[2])
        if kind == "session_usage":
            return await session.get_session_usage(op[1])
        if kind == "by_turns":
            return await session.get_conversation_by_turns(op[1])
        if kind == "tools":
            return await session.get_tool_usage(op[1])
        return await session.clear_session()
    except ValueError as exc:
        return ("ValueError", str(exc))


async def _run_both(script: list[tuple[Any, ...]], directory: str, mine: LashSession) -> None:
    theirs = AdvancedSQLiteSession(session_id="s", db_path=Path(directory) / "advanced.db", create_tables=True)
    try:
        for step, op in enumerate(script):
            got, expected = await _answer(mine, op), await _answer(theirs, op)
            assert got == expected, f"step {step}: {op}"
    finally:
        mine.close()
        theirs.close()


@SETTINGS
@given(script=session_ops)
def test_the_branching_session_answers_like_the_sdks_advanced_session(script: list[tuple[Any, ...]]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        asyncio.run(_run_both(script, directory, LashSession.sqlite("s", Path(directory) / "root")))


@settings(SETTINGS, max_examples=40, suppress_health_check=[*SETTINGS.suppress_health_check, FUNCTION_SCOPED])
@given(script=session_ops)
def test_the_branching_session_on_postgres_answers_like_the_sdks_advanced_session(
    script: list[tuple[Any, ...]], pg_dsn: str
) -> None:
    # One database for every example (the fixture is the test's): each example gets a session of its own.
    try:
        with tempfile.TemporaryDirectory() as directory:
            mine = LashSession.postgres(f"s-{uuid.uuid4().hex}", pg_dsn)
            asyncio.run(_run_both(script, directory, mine))
    finally:
        close_shared_pools()

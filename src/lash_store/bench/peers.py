"""Peers on the commit workload: LangGraph's ``SqliteSaver`` and the OpenAI Agents SDK's ``SQLiteSession``.

``python -m lash_store.bench commit --peers`` adds these libraries to the
interleaved loop of :mod:`lash_store.bench.commit`: every turn, each side
makes the same turn durable (a user message of ~500 bytes, an assistant
message of ~1,500 bytes and an ~8 KB tool state), each in its own database
file of the run directory, in an order that rotates every turn.  They need
the optional extra ``lash-store[bench]``; :func:`check_available` reports a
missing package as :class:`~lash_store.bench.MissingExtra`.

How each library is driven -- the way an application using it would, with
one write per turn:

``LangGraph full state`` (``langgraph-checkpoint-sqlite``)
    A LangGraph app keeps the conversation in a ``messages`` channel (the
    ``add_messages`` reducer) and saves a checkpoint after each step.
    ``SqliteSaver.put`` serialises the whole checkpoint, every channel value
    included, into one row (langgraph issue #7843), so each turn writes the
    entire history: one ``put`` per turn whose ``channel_values`` hold every
    message so far (``HumanMessage`` / ``AIMessage``) and the ``tool_state``
    dict.  This grows linearly with the session (quadratic in total), so it
    stops after :data:`LANGGRAPH_FULL_MAX_TURNS` turns by default; and since
    its megabytes of writes per turn (and their WAL checkpoints) would slow
    the other sides down, it runs in a pass of its own, interleaved with a
    lash-store and a floor of that pass, whose floor its ratio is taken
    against.  A real
    graph writes more than this (an ``input`` checkpoint, ``put_writes`` of
    each task, then the ``loop`` checkpoint): one ``put`` per turn is a lower
    bound of its cost.

``LangGraph new msgs``
    The same saver, one ``put`` per turn whose ``channel_values`` hold only the
    turn's two messages and the tool state: the constant-size write of an app
    that keeps history elsewhere (or a delta-style channel).  It is the
    cheapest way to use the saver, not what a default ``MessagesState`` app does.

``OpenAI SQLiteSession`` (``openai-agents``)
    ``await session.add_items([...])`` once per turn, on a persistent event
    loop (the session runs its SQL in ``asyncio.to_thread``, which is timed
    too: it is the API).  Items are Responses-API input items: the user
    message ``{"role": "user", "content": ...}`` and the assistant output
    message.  A session has no tool-state concept, so the tool state is
    appended as a third JSON item ``{"type": "lash_bench_tool_state", ...}``
    in the same ``add_items`` call (one transaction, the same bytes as the
    other sides); a real app would have to filter it out of the history it
    sends to the model, or keep it in a store of its own.

Durability: lash-store and the floor run with ``synchronous=NORMAL`` in WAL
mode.  By default (``--peer-sync match``) the peers get the same level, set
on their connections (for ``SQLiteSession`` by overriding its connection
set-up hook), so the comparison is of implementations, not of ``fsync``
policy; ``--peer-sync default`` leaves each library's own setting (SQLite's
compiled default, ``FULL``: one WAL ``fsync`` per commit).

Values of a turn are built outside the timed region on every side (for the
peers: the message objects, the checkpoint dict, the items); serialisation
and the write are timed.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

from lash_store.bench import require_extra
from lash_store.bench.commit import PeerSpec, PeerWriter, TurnContent

if TYPE_CHECKING:
    from agents import SQLiteSession
    from langgraph.checkpoint.base import BaseCheckpointSaver, Checkpoint, CheckpointMetadata

__all__ = [
    "LANGGRAPH_FULL_MAX_TURNS",
    "REQUIRED",
    "LangGraphMode",
    "LangGraphPeer",
    "LangGraphWriter",
    "OpenAIAgentsPeer",
    "check_available",
    "default_peers",
]

LANGGRAPH_FULL_MAX_TURNS = 1_000
"""Turns after which the full-state LangGraph peer stops (its per-turn write grows with the session)."""

THREAD_ID = "bench-session"
TOOL_STATE_ITEM = "lash_bench_tool_state"

REQUIRED: tuple[tuple[str, str], ...] = (
    ("langgraph.checkpoint.sqlite", "langgraph-checkpoint-sqlite"),
    ("langchain_core.messages", "langchain-core"),
    ("agents.memory.sqlite_session", "openai-agents"),
)
"""(module imported, distribution providing it) for every peer."""

_SYNCHRONOUS_NAMES = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}


def check_available() -> None:
    """Import every peer module; raise :class:`~lash_store.bench.MissingExtra` naming the distributions missing."""
    require_extra("--peers", REQUIRED)


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def _texts(content: TurnContent) -> tuple[str, str]:
    """The text of the turn's user and assistant messages."""
    user = content.user.payload["parts"][0]["text"]
    assistant = content.assistant.payload["parts"][0]["text"]
    return str(user), str(assistant)


def _synchronous_label(synchronous: str | None) -> str:
    return synchronous if synchronous is not None else "library default"


# --------------------------------------------------------------------------
# LangGraph: SqliteSaver.put once per turn


@dataclass(frozen=True, slots=True)
class LangGraphMode:
    """What a LangGraph peer's ``mode`` decides on either backend: its label, its pass, what it writes per turn.

    ``full``: every message so far in each checkpoint; ``new``: only the turn's messages.
    """

    mode: Literal["full", "new"]

    @property
    def label(self) -> str:
        return "LangGraph full state" if self.mode == "full" else "LangGraph new msgs"

    @property
    def isolated(self) -> bool:
        """The full-state peer writes megabytes per turn; in the shared pass that I/O would slow the others."""
        return self.mode == "full"

    def description(self, library: str, synchronous: str, *, saver: str, full_state_rows: str) -> dict[str, Any]:
        """The peer's ``describe()``; ``full_state_rows`` says how ``saver`` stores a full-state checkpoint."""
        if self.mode == "full":
            per_turn = (
                f"one {saver}.put; channel_values = every message so far (HumanMessage/AIMessage) "
                f"+ tool_state{full_state_rows} (grows with the session)"
            )
        else:
            per_turn = (
                f"one {saver}.put; channel_values = this turn's HumanMessage + AIMessage + tool_state (constant size)"
            )
        return {
            "library": library,
            "version": _version(library),
            "synchronous": synchronous,
            "per_turn": per_turn,
            "tool_state": "a 'tool_state' channel of the checkpoint",
        }


@dataclass(frozen=True, slots=True)
class LangGraphPeer(LangGraphMode):
    """LangGraph's ``SqliteSaver`` with one ``put`` per turn (``mode``: ``full`` state or ``new`` messages only)."""

    synchronous: str | None = "NORMAL"
    max_turns: int | None = None

    @property
    def key(self) -> str:
        return f"langgraph-{self.mode}"

    def open(self, directory: Path, name: str) -> PeerWriter:
        return _LangGraphWriter(directory / f"{name}-{self.key}.db", self.mode, self.synchronous)

    def describe(self) -> dict[str, Any]:
        return self.description(
            "langgraph-checkpoint-sqlite",
            _synchronous_label(self.synchronous),
            saver="SqliteSaver",
            full_state_rows=", serialised inline in one row",
        )


class LangGraphWriter:
    """One thread of one LangGraph checkpoint saver, written as a LangGraph app would: one ``put`` per turn.

    Shared by the SQLite and the PostgreSQL peers so that both save exactly
    the same checkpoints; a subclass opens the saver on its connection, counts
    the rows it wrote (:meth:`verify`) and closes the connection.
    """

    def __init__(self, saver: BaseCheckpointSaver[str], mode: Literal["full", "new"], thread_id: str) -> None:
        from langchain_core.messages import AIMessage, HumanMessage
        from langgraph.checkpoint.base import empty_checkpoint

        self._saver = saver
        self._thread_id = thread_id
        self._config: Any = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
        self._human, self._ai = HumanMessage, AIMessage
        self.mode = mode
        self._checkpoint: Checkpoint = empty_checkpoint()
        self._messages: list[Any] = []
        self._version: str | None = None
        self._step = 0

    def prepare(self, content: TurnContent) -> tuple[Checkpoint, CheckpointMetadata, dict[str, str | int | float]]:
        from langgraph.checkpoint.base import create_checkpoint

        user, assistant = _texts(content)
        new = [
            self._human(content=user, id=content.user.node_id),
            self._ai(content=assistant, id=content.assistant.node_id),
        ]
        self._messages = [*self._messages, *new]  # add_messages returns a new list every step
        self._step += 1
        self._version = self._saver.get_next_version(self._version, None)
        checkpoint = create_checkpoint(self._checkpoint, None, self._step)
        checkpoint["channel_values"] = {
            "messages": self._messages if self.mode == "full" else new,
            "tool_state": content.tool_state,
        }
        versions: dict[str, str | int | float] = {"messages": self._version, "tool_state": self._version}
        checkpoint["channel_versions"] = versions
        checkpoint["versions_seen"] = {"agent": dict(versions)}
        self._checkpoint = checkpoint
        metadata: CheckpointMetadata = {"source": "loop", "step": self._step, "parents": {}}
        return checkpoint, metadata, versions

    def commit(self, prepared: tuple[Checkpoint, CheckpointMetadata, dict[str, str | int | float]]) -> None:
        checkpoint, metadata, versions = prepared
        self._config = self._saver.put(self._config, checkpoint, metadata, versions)

    def check(self, rows: int, turns: int) -> dict[str, Any]:
        """Whether the latest checkpoint read back holds turn ``turns`` and there are ``rows`` = one per turn."""
        latest = self._saver.get_tuple({"configurable": {"thread_id": self._thread_id, "checkpoint_ns": ""}})
        if latest is None:
            return {"ok": False, "detail": "no checkpoint", "checkpoints": rows}
        values = latest.checkpoint["channel_values"]
        messages = values.get("messages", [])
        expected = 2 * turns if self.mode == "full" else 2
        last_id = messages[-1].id if messages else None
        ok = (
            rows == turns
            and len(messages) == expected
            and last_id == f"t{turns:06d}-assistant"
            and values.get("tool_state", {}).get("turn_index") == turns
        )
        return {
            "ok": ok,
            "detail": f"{rows:,} checkpoints, the latest holds {len(messages):,} messages",
            "checkpoints": rows,
            "latest_messages": len(messages),
        }


class _LangGraphWriter(LangGraphWriter):
    """One thread of one ``SqliteSaver`` on its own file."""

    def __init__(self, path: Path, mode: Literal["full", "new"], synchronous: str | None) -> None:
        from langgraph.checkpoint.sqlite import SqliteSaver

        # As the SqliteSaver docs show: a connection shared with the saver's lock.
        self._conn = sqlite3.connect(str(path), check_same_thread=False)
        saver = SqliteSaver(self._conn)
        saver.setup()  # WAL and tables (the first put would do it)
        if synchronous is not None:
            self._conn.execute(f"PRAGMA synchronous={synchronous}")
        super().__init__(saver, mode, THREAD_ID)

    def verify(self, turns: int) -> dict[str, Any]:
        rows = int(self._conn.execute("SELECT count(*) FROM checkpoints").fetchone()[0])
        level = _SYNCHRONOUS_NAMES.get(int(self._conn.execute("PRAGMA synchronous").fetchone()[0]), "?")
        return {**self.check(rows, turns), "synchronous_seen": level}

    def close(self) -> None:
        self._conn.close()


# --------------------------------------------------------------------------
# OpenAI Agents SDK: SQLiteSession.add_items once per turn


def _session_class(synchronous: str | None) -> type[SQLiteSession]:
    """``SQLiteSession``, or a subclass that also sets ``synchronous`` on each connection it opens."""
    from agents import SQLiteSession

    if synchronous is None:
        return SQLiteSession
    if not callable(getattr(SQLiteSession, "_configure_connection", None)):
        raise RuntimeError(
            "this openai-agents version has no connection set-up hook to set synchronous; use --peer-sync default"
        )
    level = synchronous

    class _MatchedSQLiteSession(SQLiteSession):
        @staticmethod
        def _configure_connection(conn: sqlite3.Connection) -> None:
            SQLiteSession._configure_connection(conn)
            conn.execute(f"PRAGMA synchronous={level}")

    return _MatchedSQLiteSession


@dataclass(frozen=True, slots=True)
class OpenAIAgentsPeer:
    """The OpenAI Agents SDK's ``SQLiteSession`` with one ``add_items`` per turn."""

    synchronous: str | None = "NORMAL"
    max_turns: int | None = None

    @property
    def key(self) -> str:
        return "openai-agents"

    @property
    def label(self) -> str:
        return "OpenAI SQLiteSession"

    @property
    def isolated(self) -> bool:
        return False

    def open(self, directory: Path, name: str) -> PeerWriter:
        return _OpenAIWriter(directory / f"{name}-{self.key}.db", self.synchronous)

    def describe(self) -> dict[str, Any]:
        return {
            "library": "openai-agents",
            "version": _version("openai-agents"),
            "synchronous": _synchronous_label(self.synchronous),
            "per_turn": "one await SQLiteSession.add_items([user item, assistant output message, tool-state item])",
            "tool_state": (
                f"no tool-state concept: stored as a third JSON item {{'type': '{TOOL_STATE_ITEM}', ...}} "
                "in the same add_items call"
            ),
        }


class _OpenAIWriter:
    """One ``SQLiteSession`` on its own file, driven from one persistent event loop."""

    def __init__(self, path: Path, synchronous: str | None) -> None:
        self._loop = asyncio.new_event_loop()
        try:
            self._session = _session_class(synchronous)(THREAD_ID, str(path))
        except BaseException:
            self._loop.close()
            raise

    def prepare(self, content: TurnContent) -> list[Any]:
        user, assistant = _texts(content)
        return [
            {"role": "user", "content": user},
            {
                "id": f"msg_{content.assistant.node_id}",
                "type": "message",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": assistant, "annotations": []}],
            },
            {"type": TOOL_STATE_ITEM, "turn": content.index, "state": content.tool_state},
        ]

    def commit(self, prepared: list[Any]) -> None:
        self._loop.run_until_complete(self._session.add_items(prepared))

    def verify(self, turns: int) -> dict[str, Any]:
        items = self._loop.run_until_complete(self._session.get_items())
        last = cast("dict[str, Any]", items[-1]) if items else {}
        assistant = cast("dict[str, Any]", items[-2]) if len(items) >= 2 else {}
        ok = (
            len(items) == 3 * turns
            and last.get("type") == TOOL_STATE_ITEM
            and last.get("turn") == turns
            and assistant.get("id") == f"msg_t{turns:06d}-assistant"
        )
        return {"ok": ok, "detail": f"{len(items):,} items", "items": len(items)}

    def close(self) -> None:
        try:
            self._session.close()
        finally:
            self._loop.run_until_complete(self._loop.shutdown_default_executor())
            self._loop.close()


# --------------------------------------------------------------------------


def default_peers(
    *, synchronous: str | None = "NORMAL", langgraph_full_max_turns: int | None = LANGGRAPH_FULL_MAX_TURNS
) -> list[PeerSpec]:
    """The peers of ``--peers``; raises :class:`MissingExtra` when the extra is not installed.

    ``synchronous`` is the SQLite level set on the peers' connections
    (``None``: each library's default).
    """
    check_available()
    return [
        LangGraphPeer("full", synchronous, langgraph_full_max_turns),
        LangGraphPeer("new", synchronous, None),
        OpenAIAgentsPeer(synchronous, None),
    ]

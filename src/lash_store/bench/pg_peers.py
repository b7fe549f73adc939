"""The PostgreSQL peer of the commit workload: LangGraph's ``PostgresSaver`` (``commit --backend postgres --peers``).

It mirrors the SQLite peer of :mod:`lash_store.bench.peers`: the same
checkpoints (built by :class:`~lash_store.bench.peers.LangGraphTurns`), one
``put`` per turn, in two modes:

``LangGraph full state``
    ``channel_values`` hold every message so far and the tool state, as a
    default ``MessagesState`` app saves them.  ``PostgresSaver.put`` stores
    each channel whose version changed as one row of ``checkpoint_blobs``
    (the serialised value) and the checkpoint itself as a JSONB row, so every
    turn writes the entire history again: the write grows linearly with the
    session.  It stops after
    :data:`~lash_store.bench.peers.LANGGRAPH_FULL_MAX_TURNS` turns by default
    and runs in a pass of its own (its megabytes of WAL per turn would slow the
    other sides down), with a lash-store and a floor of that pass.

``LangGraph new msgs``
    Only the turn's two messages and the tool state: the constant-size write of
    an app that keeps its history elsewhere.

The saver is driven as its documentation shows
(``PostgresSaver.from_conn_string``): one autocommit connection with
``prepare_threshold=0`` and ``dict_row``, ``setup()`` once; ``put`` runs its
statements in a pipeline.  Its tables live in a schema of their own, selected
through the connection's ``search_path`` (the saver has no schema option).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from lash_store.bench import MissingExtra
from lash_store.bench.commit import PeerWriter, TurnContent
from lash_store.bench.peers import LANGGRAPH_FULL_MAX_TURNS, LangGraphTurns, _version

if TYPE_CHECKING:
    from langgraph.checkpoint.base import Checkpoint, CheckpointMetadata
    from langgraph.checkpoint.postgres import PostgresSaver

__all__ = [
    "REQUIRED",
    "LangGraphPostgresPeer",
    "PgPeerSpec",
    "check_available",
    "default_peers",
]

REQUIRED: tuple[tuple[str, str], ...] = (
    ("langgraph.checkpoint.postgres", "langgraph-checkpoint-postgres"),
    ("langchain_core.messages", "langchain-core"),
)
"""(module imported, distribution providing it) for the PostgreSQL peers."""


class PgPeerSpec(Protocol):
    """How to open one PostgreSQL peer, and how it is reported (the PostgreSQL twin of ``PeerSpec``)."""

    @property
    def key(self) -> str: ...

    @property
    def label(self) -> str: ...

    @property
    def max_turns(self) -> int | None: ...

    @property
    def isolated(self) -> bool: ...

    def open(self, dsn: str, thread_id: str) -> PeerWriter:
        """A fresh writer on ``dsn`` (whose search path selects the peer's own schema), for one thread."""
        ...

    def describe(self) -> dict[str, Any]: ...


def check_available() -> None:
    """Raise :class:`MissingExtra` naming the distributions the PostgreSQL peers need that are missing."""
    missing = []
    for module, distribution in REQUIRED:
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(distribution)
    if missing:
        raise MissingExtra("--peers", missing)


@dataclass(frozen=True, slots=True)
class LangGraphPostgresPeer:
    """LangGraph's ``PostgresSaver`` with one ``put`` per turn (``full`` state or ``new`` messages only)."""

    mode: Literal["full", "new"]
    max_turns: int | None = None

    @property
    def key(self) -> str:
        return f"langgraph-pg-{self.mode}"

    @property
    def label(self) -> str:
        return "LangGraph full state" if self.mode == "full" else "LangGraph new msgs"

    @property
    def isolated(self) -> bool:
        """The full-state peer writes megabytes per turn; in the shared pass that WAL would slow the others."""
        return self.mode == "full"

    def open(self, dsn: str, thread_id: str) -> PeerWriter:
        return _PostgresSaverWriter(dsn, self.mode, thread_id)

    def describe(self) -> dict[str, Any]:
        if self.mode == "full":
            per_turn = (
                "one PostgresSaver.put; channel_values = every message so far (HumanMessage/AIMessage) "
                "+ tool_state; each changed channel is one checkpoint_blobs row (grows with the session)"
            )
        else:
            per_turn = (
                "one PostgresSaver.put; channel_values = this turn's HumanMessage + AIMessage + tool_state "
                "(constant size)"
            )
        return {
            "library": "langgraph-checkpoint-postgres",
            "version": _version("langgraph-checkpoint-postgres"),
            "synchronous": "server setting (synchronous_commit=on)",
            "per_turn": per_turn,
            "tool_state": "a 'tool_state' channel of the checkpoint",
        }


class _PostgresSaverWriter:
    """One thread of one ``PostgresSaver`` on its own connection, written as a LangGraph app would."""

    def __init__(self, dsn: str, mode: Literal["full", "new"], thread_id: str) -> None:
        import psycopg
        from langgraph.checkpoint.postgres import PostgresSaver
        from psycopg.rows import dict_row

        # The connection PostgresSaver.from_conn_string opens, kept open by us for the whole pass.
        self._conn: psycopg.Connection[dict[str, Any]] = psycopg.connect(
            dsn, autocommit=True, prepare_threshold=0, row_factory=dict_row
        )
        try:
            self._saver: PostgresSaver = PostgresSaver(self._conn)
            self._saver.setup()
        except BaseException:
            self._conn.close()
            raise
        self._thread_id = thread_id
        self._config: Any = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
        self._turns = LangGraphTurns(mode, lambda version: self._saver.get_next_version(version, None))

    def prepare(self, content: TurnContent) -> tuple[Checkpoint, CheckpointMetadata, dict[str, str | int | float]]:
        return self._turns.prepare(content)

    def commit(self, prepared: tuple[Checkpoint, CheckpointMetadata, dict[str, str | int | float]]) -> None:
        checkpoint, metadata, versions = prepared
        self._config = self._saver.put(self._config, checkpoint, metadata, versions)

    def verify(self, turns: int) -> dict[str, Any]:
        latest = self._saver.get_tuple({"configurable": {"thread_id": self._thread_id, "checkpoint_ns": ""}})
        row = self._conn.execute(
            "SELECT count(*) AS n FROM checkpoints WHERE thread_id = %s", (self._thread_id,)
        ).fetchone()
        rows = int(row["n"]) if row is not None else 0
        return self._turns.check(latest, rows, turns)

    def close(self) -> None:
        self._conn.close()


def default_peers(*, langgraph_full_max_turns: int | None = LANGGRAPH_FULL_MAX_TURNS) -> list[PgPeerSpec]:
    """The peers of ``commit --backend postgres --peers``; raises :class:`MissingExtra` without the extra."""
    check_available()
    return [LangGraphPostgresPeer("full", langgraph_full_max_turns), LangGraphPostgresPeer("new", None)]

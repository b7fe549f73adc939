"""The PostgreSQL peer of the commit workload: LangGraph's ``PostgresSaver`` (``commit --backend postgres --peers``).

It mirrors the SQLite peer of :mod:`lash_store.bench.peers`: the same
checkpoints (written by :class:`~lash_store.bench.peers.LangGraphWriter`), one
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

from dataclasses import dataclass
from typing import Any, Literal, Protocol

from lash_store.bench import require_extra
from lash_store.bench.commit import PeerWriter
from lash_store.bench.commit_report import Peer
from lash_store.bench.peers import LANGGRAPH_FULL_MAX_TURNS, LangGraphMode, LangGraphWriter

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


class PgPeerSpec(Peer, Protocol):
    """How to open one PostgreSQL peer (the PostgreSQL twin of ``PeerSpec``; reported as any :class:`Peer`)."""

    def open(self, dsn: str, thread_id: str) -> PeerWriter:
        """A fresh writer on ``dsn`` (whose search path selects the peer's own schema), for one thread."""
        ...


def check_available() -> None:
    """Raise :class:`~lash_store.bench.MissingExtra` naming the distributions the PostgreSQL peers need and miss."""
    require_extra("--peers", REQUIRED)


@dataclass(frozen=True, slots=True)
class LangGraphPostgresPeer(LangGraphMode):
    """LangGraph's ``PostgresSaver`` with one ``put`` per turn (``full`` state or ``new`` messages only)."""

    max_turns: int | None = None

    @property
    def key(self) -> str:
        return f"langgraph-pg-{self.mode}"

    def open(self, dsn: str, thread_id: str) -> PeerWriter:
        return _PostgresSaverWriter(dsn, self.mode, thread_id)

    def describe(self) -> dict[str, Any]:
        return self.description(
            "langgraph-checkpoint-postgres",
            "server setting (synchronous_commit=on)",
            saver="PostgresSaver",
            full_state_rows="; each changed channel is one checkpoint_blobs row",
        )


class _PostgresSaverWriter(LangGraphWriter):
    """One thread of one ``PostgresSaver`` on its own connection."""

    def __init__(self, dsn: str, mode: Literal["full", "new"], thread_id: str) -> None:
        import psycopg
        from langgraph.checkpoint.postgres import PostgresSaver
        from psycopg.rows import dict_row

        # The connection PostgresSaver.from_conn_string opens, kept open by us for the whole pass.
        self._conn: psycopg.Connection[dict[str, Any]] = psycopg.connect(
            dsn, autocommit=True, prepare_threshold=0, row_factory=dict_row
        )
        try:
            saver = PostgresSaver(self._conn)
            saver.setup()
        except BaseException:
            self._conn.close()
            raise
        super().__init__(saver, mode, thread_id)

    def verify(self, turns: int) -> dict[str, Any]:
        row = self._conn.execute(
            "SELECT count(*) AS n FROM checkpoints WHERE thread_id = %s", (self._thread_id,)
        ).fetchone()
        rows = int(row["n"]) if row is not None else 0
        return self.check(rows, turns)

    def close(self) -> None:
        self._conn.close()


def default_peers(*, langgraph_full_max_turns: int | None = LANGGRAPH_FULL_MAX_TURNS) -> list[PgPeerSpec]:
    """The peers of ``commit --backend postgres --peers``; raises :class:`MissingExtra` without the extra."""
    check_available()
    return [LangGraphPostgresPeer("full", langgraph_full_max_turns), LangGraphPostgresPeer("new", None)]

"""An OpenAI Agents SDK session on lash-store: :class:`LashSession` (``pip install 'lash-store[openai-agents]'``).

It implements the SDK's ``Session`` protocol (``get_items``, ``add_items``,
``pop_item``, ``clear_session``, ``session_id``, ``session_settings``) on
any lash-store backend, through the public store API only:

* a session is a lash-store session (one file per session on SQLite, one
  partition on PostgreSQL);
* every item is a graph node whose parent is the previous item, with a
  monotonic sort key, so the newest N items are one index read;
* ``add_items`` is one commit for the whole batch, compare-and-set on the
  head revision: concurrent writers (threads, processes, hosts) never
  interleave inside a batch and never lose one -- the loser re-reads the tail
  and commits again on top of it;
* ``pop_item`` tombstones the newest item in a compare-and-set commit, so each
  item is popped at most once across processes;
* mutations run to completion even if the caller is cancelled (the outcome is
  settled, then ``CancelledError`` propagates), as the SDK's own sessions do.

Items are normalised through JSON first (``json.loads(json.dumps(item))``),
so what comes back is exactly what ``SQLiteSession`` would return.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import random
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from lash_store.api import SessionStoreAPI
from lash_store.errors import HeadRevisionConflict, InvalidInput
from lash_store.model import GraphDelta, RuntimeCommit, SessionGraph, SessionNode
from lash_store.options import StoreOptions

__all__ = ["LashSession"]

KIND_MESSAGE = "message"  # user/assistant/system messages (the store's picker reads these)
KIND_ITEM = "oa.item"  # every other item type (tool calls and outputs, reasoning, ...)
LANE = "oa"
_ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}
_MAX_ATTEMPTS = 200

T = TypeVar("T")

_POOL = ThreadPoolExecutor(max_workers=min(32, (os.cpu_count() or 1) * 4), thread_name_prefix="lash-openai")


class LashSession:
    """The SDK's ``Session`` protocol on a lash-store session (see the module docstring).

    Build one with :meth:`sqlite`, :meth:`postgres` or :meth:`memory`, or pass
    any store (``LashSession(session_id, store=...)``; the session then owns it
    and closes it on :meth:`close`).
    """

    def __init__(self, session_id: str, *, store: SessionStoreAPI, session_settings: Any = None) -> None:
        if not isinstance(session_id, str) or not session_id:
            raise InvalidInput("session_id", "must be a non-empty string")
        self.session_id = session_id
        self.session_settings = _settings(session_settings)
        self._store = store
        self._revision = 0  # the last head revision seen: the compare-and-set guess of the next write
        self._lock = threading.Lock()
        self._closed = False

    @classmethod
    def sqlite(
        cls,
        session_id: str,
        root: str | os.PathLike[str],
        *,
        options: StoreOptions | None = None,
        session_settings: Any = None,
    ) -> LashSession:
        """The session as a file under the factory root ``root`` (shared with other processes)."""
        return cls(session_id, store=sqlite_store(session_id, root, options), session_settings=session_settings)

    @classmethod
    def postgres(
        cls,
        session_id: str,
        dsn_or_pool: Any,
        *,
        options: StoreOptions | None = None,
        schema: str = "lash",
        session_settings: Any = None,
    ) -> LashSession:
        """The session as a partition of a PostgreSQL database (set up first if needed)."""
        store = postgres_store(session_id, dsn_or_pool, options, schema)
        return cls(session_id, store=store, session_settings=session_settings)

    @classmethod
    def memory(cls, session_id: str, *, session_settings: Any = None) -> LashSession:
        """A private in-memory session (like ``SQLiteSession(session_id)`` with ``":memory:"``)."""
        from lash_store.sqlite.store import Store

        return cls(session_id, store=Store.memory(), session_settings=session_settings)

    # -- the protocol ------------------------------------------------------

    async def get_items(self, limit: int | None = None) -> list[Any]:
        """The newest ``limit`` items in chronological order (``None`` or negative: all; 0: none)."""
        self._check_open()
        resolved = _resolve_limit(limit, self.session_settings)
        if resolved == 0:
            return []
        return await _in_pool(self._read, None if resolved is None or resolved < 0 else resolved)

    async def add_items(self, items: list[Any]) -> None:
        """Append ``items`` as one atomic batch (contiguous, in order)."""
        self._check_open()
        if not items:
            return
        normalised = _normalise(items)
        await _settled(_in_pool(self._append, normalised))

    async def pop_item(self) -> Any | None:
        """Remove and return the newest item (``None`` when empty); each item is popped at most once."""
        self._check_open()
        return await _settled(_in_pool(self._pop, None))

    async def pop_item_validated(self, validate: Callable[[Any], None] | None) -> Any | None:
        """:meth:`pop_item`, but ``validate(item)`` runs before the removal commits; if it raises, nothing changes.

        The SDK's encrypted session authenticates the popped item this way, so a
        wrong key never destroys a row (it probes ``_pop_item_with_validation``).
        """
        self._check_open()
        return await _settled(_in_pool(self._pop, validate))

    _pop_item_with_validation = pop_item_validated

    async def clear_session(self) -> None:
        """Forget every item (the session itself and its metadata stay)."""
        self._check_open()
        await _settled(_in_pool(self._clear))

    def close(self) -> None:
        """Release the store; every later call raises ``RuntimeError``."""
        if not self._closed:
            self._closed = True
            self._store.close()

    # -- synchronous access (for code that cannot await: tools, test doubles) --------------

    def items_now(self) -> list[Any]:
        """Every item, read synchronously."""
        self._check_open()
        return self._read(None)

    def add_now(self, items: list[Any]) -> None:
        """:meth:`add_items`, synchronously."""
        self._check_open()
        if items:
            self._append(_normalise(items))

    def replace_now(self, items: list[Any]) -> None:
        """Replace the whole history with ``items`` in one commit."""
        self._check_open()
        normalised = _normalise(items)
        batch = uuid.uuid4().hex
        self._commit(lambda leaf, seq: _replace_commit(self.session_id, batch, normalised))

    closed_message = "LashSession is closed"

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(self.closed_message)

    # -- the store side (runs on the pool) -----------------------------------

    def _read(self, limit: int | None) -> list[Any]:
        nodes = self._store.query_nodes(lane=LANE, limit=limit)
        return [node.payload["oa"] for node in reversed(nodes)]

    def _tail(self) -> tuple[str | None, int]:
        """The newest item's node id and sort sequence (``None, 0`` when empty)."""
        newest = self._store.query_nodes(lane=LANE, limit=1)
        if not newest:
            return None, 0
        return newest[0].node_id, int(newest[0].sort_key or "0")

    def _commit(self, build: Callable[[str | None, int], RuntimeCommit | None]) -> Any:
        """Compare-and-set on the head revision, re-reading the tail after every conflict (bounded, jittered)."""
        for attempt in range(_MAX_ATTEMPTS):
            with self._lock:
                expected = self._revision
            leaf, seq = self._tail()
            commit = build(leaf, seq)
            if commit is None:
                return None
            try:
                result = self._store.commit_runtime_state(
                    RuntimeCommit(
                        session_id=self.session_id,
                        expected_head_revision=expected,
                        graph=commit.graph,
                        tombstone_node_ids=commit.tombstone_node_ids,
                    )
                )
            except HeadRevisionConflict as conflict:
                with self._lock:
                    self._revision = conflict.actual
                if attempt:
                    time.sleep(random.uniform(0, min(0.05, 0.001 * 2**attempt)))
                continue
            with self._lock:
                self._revision = result.head_revision
            return commit
        raise TimeoutError(f"session {self.session_id!r}: gave up after {_MAX_ATTEMPTS} conflicting writers")

    def _append(self, items: list[Any]) -> None:
        batch = uuid.uuid4().hex

        def build(leaf: str | None, seq: int) -> RuntimeCommit:
            nodes = []
            parent = leaf
            for offset, item in enumerate(items, start=1):
                node = _node(f"oa/{batch}/{offset}", parent, seq + offset, item)
                nodes.append(node)
                parent = node.node_id
            return RuntimeCommit(
                session_id=self.session_id, expected_head_revision=None, graph=GraphDelta.append(nodes, parent)
            )

        self._commit(build)

    def _pop(self, validate: Callable[[Any], None] | None) -> Any | None:
        popped: list[Any] = []

        def build(leaf: str | None, seq: int) -> RuntimeCommit | None:
            popped.clear()
            if leaf is None:
                return None
            node = self._store.load_node(leaf)
            if node is None:  # popped meanwhile: look again
                return RuntimeCommit(session_id=self.session_id, expected_head_revision=None)
            item = node.payload["oa"]
            if validate is not None:
                validate(item)  # raising here leaves the item where it is: nothing has been written
            popped.append(item)
            return RuntimeCommit(
                session_id=self.session_id,
                expected_head_revision=None,
                graph=GraphDelta.unchanged(node.parent_node_id),
                tombstone_node_ids=[leaf],
            )

        return popped[0] if self._commit(build) is not None and popped else None

    def _clear(self) -> None:
        self._commit(
            lambda leaf, seq: RuntimeCommit(
                session_id=self.session_id, expected_head_revision=None, graph=GraphDelta.replace_full(SessionGraph())
            )
        )


def sqlite_store(session_id: str, root: str | os.PathLike[str], options: StoreOptions | None = None) -> SessionStoreAPI:
    """The session's store under a SQLite factory root (created with its metadata if new)."""
    from lash_store.sqlite.factory import SqliteSessionStoreFactory

    os.makedirs(root, exist_ok=True)
    return SqliteSessionStoreFactory(root, options).create_store(session_id)


def postgres_store(
    session_id: str, dsn_or_pool: Any, options: StoreOptions | None = None, schema: str = "lash"
) -> SessionStoreAPI:
    """The session's store in a PostgreSQL database (the schema is set up first when needed)."""
    from lash_store.postgres import PostgresSessionStoreFactory, setup

    setup(dsn_or_pool, schema=schema)
    return PostgresSessionStoreFactory(dsn_or_pool, options, schema=schema).create_store(session_id)


def _replace_commit(session_id: str, batch: str, items: list[Any]) -> RuntimeCommit:
    nodes: list[SessionNode] = []
    for offset, item in enumerate(items, start=1):
        nodes.append(_node(f"oa/{batch}/{offset}", nodes[-1].node_id if nodes else None, offset, item))
    graph = GraphDelta.replace_full(SessionGraph(nodes=nodes, leaf_node_id=nodes[-1].node_id if nodes else None))
    return RuntimeCommit(session_id=session_id, expected_head_revision=None, graph=graph)


def _node(node_id: str, parent: str | None, seq: int, item: Any) -> SessionNode:
    role = item.get("role") if isinstance(item, dict) else None
    item_type = item.get("type") if isinstance(item, dict) else None
    tags: dict[str, Any] = {}
    if isinstance(item_type, str) and item_type:
        tags["type"] = item_type
    if role in _ROLES and item_type in (None, "message"):
        content = item.get("content")
        text = content if isinstance(content, str) else _text_of(content)
        tags["role"] = role
        payload = {"role": _ROLES[role], "parts": [{"type": "text", "text": text}], "oa": item}
        kind = KIND_MESSAGE
    else:
        payload = {"oa": item}
        kind = KIND_ITEM
    return SessionNode(
        node_id=node_id, parent_node_id=parent, kind=kind, payload=payload, lane=LANE, sort_key=f"{seq:020d}", tags=tags
    )


def _text_of(content: Any) -> str:
    """The text parts of a structured message content, joined (for the store's picker)."""
    if not isinstance(content, list):
        return ""
    texts = [part.get("text") for part in content if isinstance(part, dict)]
    return "\n\n".join(text for text in texts if isinstance(text, str))


def _normalise(items: list[Any]) -> list[Any]:
    """JSON round trip: tuples become lists, keys strings -- exactly what SQLiteSession stores and returns."""
    try:
        return [json.loads(json.dumps(item)) for item in items]
    except (TypeError, ValueError) as exc:
        raise InvalidInput("items", f"must be JSON-serialisable: {exc}") from exc


def _settings(settings: Any) -> Any:
    """The SDK's ``SessionSettings``: a dict is checked and converted, ``None`` is the default (as in SQLiteSession)."""
    from agents.memory.session_settings import SessionSettings, coerce_session_settings

    return SessionSettings() if settings is None else coerce_session_settings(settings)


def _resolve_limit(limit: int | None, settings: Any) -> int | None:
    if limit is not None:
        return limit
    if settings is None:
        return None
    if isinstance(settings, dict):
        value = settings.get("limit")
        return value if isinstance(value, int) else None
    value = getattr(settings, "limit", None)
    return value if isinstance(value, int) else None


async def _in_pool(call: Callable[..., T], *args: Any) -> T:
    return await asyncio.get_running_loop().run_in_executor(_POOL, functools.partial(call, *args))


async def _settled(awaitable: Any) -> Any:
    """Await a mutation to its end even when the caller is cancelled, then re-raise the cancellation."""
    task = asyncio.ensure_future(awaitable)
    cancelled: asyncio.CancelledError | None = None
    while not task.done():
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError as exc:
            cancelled = cancelled or exc
    result = task.result()
    if cancelled is not None:
        raise cancelled
    return result

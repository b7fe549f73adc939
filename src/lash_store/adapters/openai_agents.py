"""An OpenAI Agents SDK session on lash-store: :class:`LashSession` (``pip install 'lash-store[openai-agents]'``).

It implements the SDK's ``Session`` protocol (``get_items``, ``add_items``,
``pop_item``, ``clear_session``, ``session_id``, ``session_settings``) on
any lash-store backend, through the public store API only:

* a session is a lash-store session (one file per session on SQLite, one
  partition on PostgreSQL);
* every item is a graph node whose parent is the previous item, and a
  pointer node names the newest (see branches below), so the newest N items
  are a key lookup and a walk of N parent links, whatever the session's length;
* ``add_items`` is one commit for the whole batch, compare-and-set on the
  head revision: concurrent writers (threads, processes, hosts) never
  interleave inside a batch and never lose one -- the loser re-reads the tail
  and commits again on top of it;
* ``pop_item`` tombstones the newest item in a compare-and-set commit, so each
  item is popped at most once across processes;
* mutations run to completion even if the caller is cancelled (the outcome is
  settled, then ``CancelledError`` propagates), as the SDK's own sessions do.
* branches (the API of the SDK's ``AdvancedSQLiteSession``) are pointers, not
  copies: a ``oa.branch`` node per branch name names the branch's newest item,
  and a branch's history is the walk up the parent links from there.  ``main``
  gets its pointer with the session's first ``add_items`` (a session written
  before is read through the lane index until its next append).  Each
  item records its user turn and its place on the path, and is indexed by its
  predecessor (tag ``after``), so a pop or a branch delete can tell whether
  another branch still runs through it;
* ``store_run_usage`` keeps one ``oa.usage`` node per (branch, user turn),
  replaced by a later call for the same turn;
* ``get_conversation_by_turns`` and ``get_tool_usage`` walk the branch's path
  and classify each item as they read it (:mod:`._openai_tools`): nothing
  more is stored per item than its turn, so branches stay pointers;
* with ``single_writer=True``, every mutation must run inside
  :meth:`LashSession.writer`, a fenced lease checked in the commit itself.

Items are normalised through JSON first (``json.loads(json.dumps(item))``),
so what comes back is exactly what ``SQLiteSession`` would return.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import json
import os
import random
import re
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from lash_store.adapters._lease import WriterBusy, WriterLease, WriterLeaseRequired
from lash_store.adapters._openai_tools import item_type, tool_name, tool_usage
from lash_store.api import SessionStoreAPI
from lash_store.errors import HeadRevisionConflict, InvalidInput
from lash_store.model import GraphDelta, RuntimeCommit, SessionGraph, SessionNode
from lash_store.options import StoreOptions

__all__ = ["LashSession", "WriterBusy", "WriterLeaseRequired"]

KIND_MESSAGE = "message"  # user/assistant/system messages (the store's picker reads these)
KIND_ITEM = "oa.item"  # every other item type (tool calls and outputs, reasoning, ...)
LANE = "oa"
KIND_BRANCH = "oa.branch"  # a branch pointer (its newest item), one per branch name ever used
BRANCH_LANE = "oa.branches"
KIND_USAGE = "oa.usage"  # a run's usage for one (branch, user turn)
USAGE_LANE = "oa.usage"
_DEPTH = 2**31 - 1  # "the whole path" for a walk up the parent links
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

    def __init__(
        self, session_id: str, *, store: SessionStoreAPI, session_settings: Any = None, single_writer: bool = False
    ) -> None:
        if not isinstance(session_id, str) or not session_id:
            raise InvalidInput("session_id", "must be a non-empty string")
        self.session_id = session_id
        self.session_settings = _settings(session_settings)
        self.single_writer = single_writer
        self._store = store
        self._lease: WriterLease | None = None
        self._branch = "main"  # this instance's branch (as in the SDK's AdvancedSQLiteSession, per instance)
        # What this instance's last commit left (saves the reads of the next mutation while no one else commits).
        self._cache: _Cached | None = None
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
        single_writer: bool = False,
    ) -> LashSession:
        """The session as a file under the factory root ``root`` (shared with other processes)."""
        store = sqlite_store(session_id, root, options)
        return cls(session_id, store=store, session_settings=session_settings, single_writer=single_writer)

    @classmethod
    def postgres(
        cls,
        session_id: str,
        dsn_or_pool: Any,
        *,
        options: StoreOptions | None = None,
        schema: str = "lash",
        session_settings: Any = None,
        single_writer: bool = False,
    ) -> LashSession:
        """The session as a partition of a PostgreSQL database (set up first if needed)."""
        store = postgres_store(session_id, dsn_or_pool, options, schema)
        return cls(session_id, store=store, session_settings=session_settings, single_writer=single_writer)

    @classmethod
    def memory(cls, session_id: str, *, session_settings: Any = None) -> LashSession:
        """A private in-memory session (like ``SQLiteSession(session_id)`` with ``":memory:"``)."""
        from lash_store.sqlite.store import Store

        return cls(session_id, store=Store.memory(), session_settings=session_settings)

    # -- the protocol ------------------------------------------------------

    async def get_items(self, limit: int | None = None, branch_id: str | None = None) -> list[Any]:
        """The newest ``limit`` items in chronological order (``None`` or negative: all; 0: none).

        ``branch_id`` reads another branch than this instance's current one.
        """
        self._check_open()
        resolved = _resolve_limit(limit, self.session_settings)
        if resolved == 0:
            return []
        return await _in_pool(self._read, None if resolved is None or resolved < 0 else resolved, branch_id)

    async def add_items(self, items: list[Any]) -> None:
        """Append ``items`` as one atomic batch (contiguous, in order) to the current branch."""
        self._check_open()
        if not items:
            return
        normalised = _normalise(items)
        await _settled(_submit(self._append, normalised))

    async def pop_item(self) -> Any | None:
        """Remove and return the newest item (``None`` when empty); each item is popped at most once."""
        self._check_open()
        return await _settled(_submit(self._pop, None))

    async def pop_item_validated(self, validate: Callable[[Any], None] | None) -> Any | None:
        """:meth:`pop_item`, but ``validate(item)`` runs before the removal commits; if it raises, nothing changes.

        The SDK's encrypted session authenticates the popped item this way, so a
        wrong key never destroys a row (it probes ``_pop_item_with_validation``).
        """
        self._check_open()
        return await _settled(_submit(self._pop, validate))

    _pop_item_with_validation = pop_item_validated

    async def clear_session(self) -> None:
        """Forget every item, branch and usage record (branch names stay reserved; back on ``main``)."""
        self._check_open()
        await _settled(_submit(self._clear))

    def close(self) -> None:
        """Release the store; every later call raises ``RuntimeError``."""
        if not self._closed:
            self._closed = True
            self._store.close()

    # -- branches and turns (the API of the SDK's AdvancedSQLiteSession) ------------------

    @property
    def current_branch(self) -> str:
        """This instance's branch (``"main"`` until it switches)."""
        return self._branch

    async def create_branch_from_turn(self, turn_number: int, branch_name: str | None = None) -> str:
        """A new branch holding the current branch's history before user turn ``turn_number``; switches to it.

        Nothing is copied: the branch is a pointer at the item before that
        turn's user message.  Raises ``ValueError`` when the turn has no user
        message on the current branch or the name is blank or already used
        (names stay reserved, even after a delete or a clear).
        """
        self._check_open()
        if branch_name is not None and not branch_name.strip():
            raise ValueError("Branch name cannot be empty")
        name: str = await _settled(_submit(self._branch_from_turn, turn_number, branch_name))
        return name

    async def create_branch_from_content(self, search_term: str, branch_name: str | None = None) -> str:
        """:meth:`create_branch_from_turn` at the first user turn whose text contains ``search_term``."""
        matching = await self.find_turns_by_content(search_term)
        if not matching:
            raise ValueError(f"No user turns found containing '{search_term}'")
        return await self.create_branch_from_turn(matching[0]["turn"], branch_name)

    async def switch_to_branch(self, branch_id: str) -> None:
        """Make ``branch_id`` this instance's branch; ``ValueError`` unless it exists and holds an item."""
        self._check_open()
        exists = await _in_pool(self._branch_exists, branch_id)
        if not exists:
            raise ValueError(f"Branch '{branch_id}' does not exist")
        self._branch = branch_id

    async def delete_branch(self, branch_id: str, force: bool = False) -> None:
        """Drop a branch, its usage records and the items no other branch shares (``main`` is kept).

        The current branch needs ``force=True`` (the instance then switches to
        ``main``).  The name stays reserved.
        """
        self._check_open()
        if not branch_id or not branch_id.strip():
            raise ValueError("Branch ID cannot be empty")
        if branch_id == "main":
            raise ValueError("Cannot delete the 'main' branch")
        if branch_id == self._branch:
            if not force:
                raise ValueError(f"Cannot delete current branch '{branch_id}'. Use force=True or switch branches first")
            if not await _in_pool(self._branch_exists, branch_id):
                raise ValueError(f"Branch '{branch_id}' does not exist")
            self._branch = "main"
        await _settled(_submit(self._delete_branch, branch_id))

    async def list_branches(self) -> list[dict[str, Any]]:
        """Every branch holding an item, oldest first.

        Each is ``branch_id``, ``message_count``, ``user_turns``, ``is_current`` and ``created_at``.
        """
        self._check_open()
        return await _in_pool(self._list_branches)

    async def get_conversation_turns(self, branch_id: str | None = None) -> list[dict[str, Any]]:
        """The user turns of a branch (default: the current one).

        Each is ``turn``, ``content`` (a preview), ``full_content``, ``timestamp`` and ``can_branch``.
        """
        self._check_open()
        return await _in_pool(self._turns, branch_id, None)

    async def find_turns_by_content(self, search_term: str, branch_id: str | None = None) -> list[dict[str, Any]]:
        """The user turns whose text contains ``search_term`` (ASCII case-insensitive).

        Shaped like :meth:`get_conversation_turns` (with the whole content).
        """
        self._check_open()
        return await _in_pool(self._turns, branch_id, search_term)

    async def store_run_usage(self, result: Any) -> None:
        """Record a run's usage (``result.context_wrapper.usage``) for the current turn of the current branch.

        A second call for the same turn replaces the first.  Nothing is stored
        while the branch holds no item.
        """
        self._check_open()
        usage = getattr(getattr(result, "context_wrapper", None), "usage", None)
        if usage is None:
            return
        await _settled(_submit(self._store_usage, _usage_record(usage)))

    async def get_turn_usage(
        self, user_turn_number: int | None = None, branch_id: str | None = None
    ) -> list[dict[str, Any]] | dict[str, Any]:
        """One turn's usage (``{}`` when none), or every turn's of the branch (with ``user_turn_number``)."""
        self._check_open()
        return await _in_pool(self._turn_usage, user_turn_number, branch_id)

    async def get_session_usage(self, branch_id: str | None = None) -> dict[str, int] | None:
        """Summed usage of one branch or of all (``requests``, tokens, ``total_turns``); ``None`` when there is none."""
        self._check_open()
        return await _in_pool(self._session_usage, branch_id)

    async def get_conversation_by_turns(self, branch_id: str | None = None) -> dict[int, list[dict[str, str | None]]]:
        """The items of a branch (default: the current one) grouped by user turn, in order.

        Each item is ``{"type": ..., "tool_name": ...}``: ``user`` or
        ``assistant`` by role, else the item's ``type`` (``other`` without one),
        and the tool it names or ``None``.  Items before the first user message
        are turn 0.
        """
        self._check_open()
        return await _in_pool(self._by_turns, branch_id)

    async def get_tool_usage(self, branch_id: str | None = None) -> list[tuple[str | None, int, int]]:
        """``(tool_name, calls, turn)`` per tool and user turn of a branch, by turn then tool name.

        Tool calls are the SDK's call item types (``function_call``, ``mcp_call``,
        ``web_search_call``, ...); a ``tool_search_output`` counts only in a
        turn that has no ``tool_search_call``.
        """
        self._check_open()
        return await _in_pool(self._tool_usage, branch_id)

    # -- single writer --------------------------------------------------------

    def writer(self, owner_id: str, *, ttl_ms: int = 30_000, wait_s: float = 60.0) -> _Writer:
        """Hold the session's fenced writer lease for a block (``async with session.writer("worker-1"):``).

        Inside the block every mutation of this instance carries the lease; the
        store refuses it (``QueuedWorkClaimExpired``, nothing written) once
        another writer took the session over after this lease ran out.  The
        lease renews itself every ``ttl_ms / 3``; acquiring waits up to
        ``wait_s``, then raises :class:`WriterBusy`.  With ``single_writer=True``
        a mutation outside a lease raises :class:`WriterLeaseRequired`.
        """
        return _Writer(self, WriterLease(lambda: self._store, self.session_id, owner_id, ttl_ms=ttl_ms, wait_s=wait_s))

    def _fence(self) -> list[Any]:
        lease = self._lease
        if lease is None:
            if self.single_writer:
                raise WriterLeaseRequired(self.session_id)
            return []
        return [lease.proof()]

    # -- synchronous access (for code that cannot await: tools, test doubles) --------------

    def items_now(self) -> list[Any]:
        """Every item of the current branch, read synchronously."""
        self._check_open()
        return self._read(None, None)

    def add_now(self, items: list[Any]) -> None:
        """:meth:`add_items`, synchronously."""
        self._check_open()
        if items:
            self._append(_normalise(items))

    def replace_now(self, items: list[Any]) -> None:
        """Replace the whole history with ``items`` in one commit (as :meth:`clear_session` then an add)."""
        self._check_open()
        normalised = _normalise(items)
        batch = uuid.uuid4().hex

        def build(view: _View) -> RuntimeCommit:
            nodes = _chain(batch, None, normalised, 0, "main")
            leaf = nodes[-1].node_id if nodes else None
            records = [_record_node(rec, leaf=leaf if rec["name"] == "main" else None) for rec in _reset(view)]
            return _commit_of(
                self.session_id, GraphDelta.replace_full(SessionGraph(nodes=[*nodes, *records], leaf_node_id=leaf))
            )

        self._commit(build)
        self._branch = "main"

    closed_message = "LashSession is closed"

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(self.closed_message)

    # -- the store side (runs on the pool) -----------------------------------

    def _records(self) -> dict[str, dict[str, Any]]:
        """Every branch record by name (empty for a session written before ``main`` was a pointer)."""
        return {node.payload["name"]: node.payload for node in self._store.query_nodes(lane=BRANCH_LANE)}

    def _records_of(self, *names: str) -> dict[str, dict[str, Any]]:
        """The records of ``names`` only, each one key lookup (a lane query reads every node of the session).

        ``main`` has a record whenever any branch has one, so its absence means
        a session that never had records.
        """
        found = {}
        for name in dict.fromkeys(names):
            node = self._store.load_node(f"oab/{name}")
            if node is not None:
                found[name] = node.payload
        return found

    def _view(self, expected: int, *, complete: bool = True) -> _View:
        """What a mutation builds on: the branch records, this instance's branch and its newest item.

        The records come from the cache when it holds them as of ``expected``
        (the revision the commit will compare against: if that is stale, the
        commit fails and the next attempt reads them again).  Otherwise an
        ``add_items`` (``complete=False``) reads only its branch's and ``main``'s
        records by key, so that its cost does not grow with the session.
        """
        need_all = complete  # the caller needs every record (and a leaf read from the store)
        cached = self._cache if self._cache is not None and self._cache.revision == expected else None
        if cached is not None and not cached.complete and (need_all or self._branch not in cached.records):
            cached = None  # it lacks records this mutation needs (or this instance switched branches since)
        if cached is not None:
            records, complete = cached.records, cached.complete
        elif complete:
            records = self._records()
        else:
            records = self._records_of(self._branch, "main")
        if not records:  # no pointer yet (new, or written before): one linear history, its newest item is the lane's
            newest = self._store.query_nodes(lane=LANE, limit=1)
            leaf = newest[0] if newest else None
            return _View(records, "main", leaf, _seq(leaf), complete)
        record = records.get(self._branch)
        if record is None or record["deleted"]:  # deleted or cleared by another instance: back on main
            self._branch = "main"
            record = records["main"]
        leaf_id = record["leaf"]
        # An append needs of its leaf only the id, turn, depth and sort key: the node this instance wrote will do.
        leaf = cached.items.get(leaf_id) if cached is not None and not need_all and leaf_id is not None else None
        if leaf is None and leaf_id is not None:
            leaf = self._store.load_node(leaf_id)
        # Sort keys grow along a path (a branch's items sort after the ones it shares); no read needs them
        # ordered across branches, so the next one is taken from the branch's own newest item.
        return _View(records, self._branch, leaf, _seq(leaf), complete)

    def _leaf_of(self, branch_id: str | None) -> tuple[bool, str | None]:
        """(the session has branch records, the newest item of ``branch_id`` or of the current branch)."""
        name = self._branch if branch_id is None else branch_id
        records = self._records_of(name, "main")
        if not records:
            if name != "main":
                return False, None
            newest = self._store.query_nodes(lane=LANE, limit=1)
            return False, newest[0].node_id if newest else None
        record = records.get(name)
        if record is None or record["deleted"]:
            if branch_id is not None or name == "main":
                return True, None
            self._branch = "main"
            record = records["main"]
        return True, record["leaf"]

    def _path(self, leaf: str | None, limit: int | None = None) -> list[SessionNode]:
        """The items from the root to ``leaf`` (the newest ``limit`` of them), oldest first."""
        if leaf is None:
            return []
        return list(reversed(self._store.walk_ancestors(leaf, _DEPTH if limit is None else limit - 1)))

    def _read(self, limit: int | None, branch_id: str | None) -> list[Any]:
        branched, leaf = self._leaf_of(branch_id)
        if not branched:
            if leaf is None:
                return []
            nodes = list(reversed(self._store.query_nodes(lane=LANE, limit=limit)))
        else:
            nodes = self._path(leaf, limit)
        return [node.payload["oa"] for node in nodes]

    def _commit(self, build: Callable[[_View], RuntimeCommit | None], *, complete: bool = True) -> Any:
        """Compare-and-set on the head revision, re-reading the state after every conflict (bounded, jittered).

        ``complete=False``: ``build`` needs only the current branch's record (see :meth:`_view`).
        """
        for attempt in range(_MAX_ATTEMPTS):
            with self._lock:
                expected = self._revision
            fence = self._fence()
            view = self._view(expected, complete=complete)
            commit = build(view)
            if commit is None:
                return None
            try:
                result = self._store.commit_runtime_state(
                    RuntimeCommit(
                        session_id=self.session_id,
                        expected_head_revision=expected,
                        graph=commit.graph,
                        tombstone_node_ids=commit.tombstone_node_ids,
                        held_queue_claims=fence,
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
                self._cache = _Cached(result.head_revision, view, commit.graph)
            return commit
        raise TimeoutError(f"session {self.session_id!r}: gave up after {_MAX_ATTEMPTS} conflicting writers")

    def _append(self, items: list[Any]) -> None:
        batch = uuid.uuid4().hex

        def build(view: _View) -> RuntimeCommit:
            turn, depth = self._position(view.leaf)
            nodes = _chain(batch, view.leaf, items, view.seq, view.branch, turn=turn, depth=depth)
            leaf = nodes[-1].node_id
            # The branch pointer moves in the same commit.  A session without records gets main's now: finding the
            # newest item of a pointer-less session takes a lane query, which reads every node.
            record = view.records.get(view.branch) or _record("main", None, 0, None, None)
            nodes.append(_record_node(record, leaf=leaf))
            return _commit_of(self.session_id, GraphDelta.append(nodes, leaf))

        self._commit(build, complete=False)

    def _position(self, node: SessionNode | None) -> tuple[int, int]:
        """(user turns, items) on the path up to ``node`` inclusive."""
        if node is None:
            return 0, 0
        if "depth" in node.payload:
            return node.payload["turn"], node.payload["depth"]
        path = self._path(node.node_id)  # an item written before turns were recorded: count once
        return sum(1 for n in path if _is_user(n.payload["oa"])), len(path)

    def _pop(self, validate: Callable[[Any], None] | None) -> Any | None:
        popped: list[Any] = []

        def build(view: _View) -> RuntimeCommit | None:
            popped.clear()
            node = view.leaf
            if node is None:
                return None
            item = node.payload["oa"]
            if validate is not None:
                validate(item)  # raising here leaves the item where it is: nothing has been written
            popped.append(item)
            parent = node.parent_node_id
            doomed = [] if view.records and self._shared(node, view, None) else [node.node_id]
            turn, _ = self._position(node)
            parent_turn = self._position(self._store.load_node(parent))[0] if parent is not None else 0
            if parent is None or parent_turn != turn:  # the turn has no item left on this branch: nor its usage
                doomed.append(_usage_id(view.branch, turn))
            records = [_record_node(view.records[view.branch], leaf=parent)] if view.records else []
            return _commit_of(self.session_id, GraphDelta.append(records, parent), doomed)

        return popped[0] if self._commit(build) is not None and popped else None

    def _shared(self, node: SessionNode, view: _View, coming_from: str | None) -> bool:
        """Whether another branch's history runs through ``node`` (its newest item, or a live child).

        An item written before branches existed has children that do not name
        it in the index: it is always kept (at worst a leaked item, never a cut path).
        """
        node_id = node.node_id
        if "depth" not in node.payload:
            return True
        for name, record in view.records.items():
            if name != view.branch and not record["deleted"] and record["leaf"] == node_id:
                return True
        children = self._store.query_nodes(lane=LANE, tags={"after": node_id}, limit=2)
        return any(child.node_id != coming_from for child in children)

    def _clear(self) -> None:
        def build(view: _View) -> RuntimeCommit:
            records = [_record_node(rec, leaf=None) for rec in _reset(view)]
            return _commit_of(self.session_id, GraphDelta.replace_full(SessionGraph(nodes=records)))

        self._commit(build)
        self._branch = "main"

    def _branch_from_turn(self, turn_number: int, branch_name: str | None) -> str:
        chosen: list[str] = []

        def build(view: _View) -> RuntimeCommit:
            chosen.clear()
            path = self._path(None if view.leaf is None else view.leaf.node_id)
            user = next((n for n in path if _is_user(n.payload["oa"]) and self._turn_of(n, path) == turn_number), None)
            if user is None:
                raise ValueError(f"Turn {turn_number} does not contain a user message in branch '{view.branch}'")
            records = dict(view.records)
            if not records:  # the first branch: main becomes a pointer too
                records["main"] = _record("main", view.leaf.node_id if view.leaf else None, 0, None, None)
            used = set(records)
            if branch_name is not None:
                if branch_name in used:
                    raise ValueError(f"Branch ID '{branch_name}' has already been used. Choose a new branch ID.")
                name = branch_name
            else:
                base = name = f"branch_from_turn_{turn_number}_{int(time.time())}"
                suffix = 1
                while name in used:
                    suffix += 1
                    name = f"{base}_{suffix}"
            records[name] = _record(name, user.parent_node_id, len(records), turn_number, view.branch)
            chosen.append(name)
            changed = [records[name]] if view.records else [records["main"], records[name]]
            leaf = view.leaf.node_id if view.leaf else None
            return _commit_of(self.session_id, GraphDelta.append([_record_node(r) for r in changed], leaf))

        self._commit(build)
        self._branch = chosen[0]
        return chosen[0]

    def _turn_of(self, node: SessionNode, path: list[SessionNode]) -> int:
        if "turn" in node.payload:
            return int(node.payload["turn"])
        index = next(i for i, n in enumerate(path) if n.node_id == node.node_id)
        return sum(1 for n in path[: index + 1] if _is_user(n.payload["oa"]))

    def _branch_exists(self, branch_id: str) -> bool:
        """A branch exists while it holds an item (as in the SDK's session)."""
        records = self._records_of(branch_id, "main")
        if not records:
            return branch_id == "main" and bool(self._store.query_nodes(lane=LANE, limit=1))
        record = records.get(branch_id)
        return record is not None and not record["deleted"] and record["leaf"] is not None

    def _delete_branch(self, branch_id: str) -> None:
        def build(view: _View) -> RuntimeCommit:
            record = view.records.get(branch_id)
            if record is None or record["deleted"] or record["leaf"] is None:
                raise ValueError(f"Branch '{branch_id}' does not exist")
            others = _View(view.records, branch_id, None, view.seq, True)
            doomed: list[str] = []
            previous: str | None = None
            for node in self._store.walk_ancestors(record["leaf"], _DEPTH):  # newest first, up to a shared item
                if self._shared(node, others, previous):
                    break
                doomed.append(node.node_id)
                previous = node.node_id
            doomed += [n.node_id for n in self._store.query_nodes(lane=USAGE_LANE, tags={"branch": branch_id})]
            gone = _record_node(dict(record, deleted=True), leaf=None)
            leaf = view.leaf.node_id if view.leaf else None
            return _commit_of(self.session_id, GraphDelta.append([gone], leaf), doomed)

        self._commit(build)

    def _list_branches(self) -> list[dict[str, Any]]:
        records = self._records()
        if not records:
            newest = self._store.query_nodes(lane=LANE, limit=1)
            if not newest:
                return []
            records = {"main": _record("main", newest[0].node_id, 0, None, None)}
        current = self._branch if self._branch in records and not records[self._branch]["deleted"] else "main"
        listed = []
        for name, record in sorted(records.items(), key=lambda pair: pair[1]["order"]):
            if record["deleted"] or record["leaf"] is None:
                continue
            leaf = self._store.load_node(record["leaf"])
            if leaf is None:
                continue
            turns, count = self._position(leaf)
            created = record["at"]
            if name == "main":  # main began with its first item
                oldest = self._path(leaf.node_id)[:1]
                created = oldest[0].payload.get("at") if oldest else None
            listed.append(
                {
                    "branch_id": name,
                    "message_count": count,
                    "user_turns": turns,
                    "is_current": name == current,
                    "created_at": _timestamp(created),
                }
            )
        return listed

    def _turns(self, branch_id: str | None, search: str | None) -> list[dict[str, Any]]:
        _, leaf = self._leaf_of(branch_id)
        path = self._path(leaf)
        pattern = None if search is None else re.compile(re.escape(search), re.IGNORECASE | re.ASCII)
        turns = []
        for node in path:
            item = node.payload["oa"]
            if not _is_user(item):
                continue
            content = item.get("content", "")
            if pattern is not None:
                texts = [content] if isinstance(content, str) else [p.get("text", "") for p in content or []]
                if not any(isinstance(text, str) and pattern.search(text) for text in texts):
                    continue
            turns.append(
                {
                    "turn": self._turn_of(node, path),
                    "content": _preview(content, 100 if search is None else None),
                    "full_content": content,
                    "timestamp": _timestamp(node.payload.get("at")),
                    "can_branch": True,
                }
            )
        return turns

    def _turn_items(self, branch_id: str | None) -> list[tuple[int, Any]]:
        """(user turn, item) along a branch's path, oldest first.

        The turn is the one recorded with the item; an item written before
        turns were recorded counts the user messages before it instead (the
        same number, as a turn is that count).
        """
        _, leaf = self._leaf_of(branch_id)
        counted = 0
        pairs = []
        for node in self._path(leaf):
            item = node.payload["oa"]
            if _is_user(item):
                counted += 1
            pairs.append((int(node.payload.get("turn", counted)), item))
        return pairs

    def _by_turns(self, branch_id: str | None) -> dict[int, list[dict[str, str | None]]]:
        grouped: dict[int, list[dict[str, str | None]]] = {}
        for turn, item in self._turn_items(branch_id):
            grouped.setdefault(turn, []).append({"type": item_type(item), "tool_name": tool_name(item)})
        return grouped

    def _tool_usage(self, branch_id: str | None) -> list[tuple[str | None, int, int]]:
        return tool_usage(self._turn_items(branch_id))

    def _store_usage(self, usage: dict[str, Any]) -> None:
        def build(view: _View) -> RuntimeCommit | None:
            if view.leaf is None:
                return None  # no turn to record it for
            turn, _ = self._position(view.leaf)
            node = SessionNode(
                node_id=_usage_id(view.branch, turn),
                parent_node_id=None,
                kind=KIND_USAGE,
                payload=usage,
                lane=USAGE_LANE,
                sort_key=f"{turn:020d}",
                tags={"branch": view.branch, "turn": turn},
            )
            return _commit_of(self.session_id, GraphDelta.append([node], view.leaf.node_id))

        self._commit(build, complete=False)  # the current branch is all it needs

    def _usage_nodes(self, branch_id: str | None) -> list[SessionNode]:
        tags = None if branch_id is None else {"branch": branch_id}
        return self._store.query_nodes(lane=USAGE_LANE, tags=tags)

    def _turn_usage(self, turn: int | None, branch_id: str | None) -> list[dict[str, Any]] | dict[str, Any]:
        branch = self._resolved_branch(branch_id)
        if turn is not None:
            node = self._store.load_node(_usage_id(branch, turn))
            return {} if node is None else dict(node.payload)
        nodes = sorted(self._usage_nodes(branch), key=lambda n: int(n.tags["turn"]))  # type: ignore[arg-type]
        return [{"user_turn_number": n.tags["turn"], **n.payload} for n in nodes]

    def _resolved_branch(self, branch_id: str | None) -> str:
        if branch_id is not None:
            return branch_id
        self._leaf_of(None)  # resets a branch deleted or cleared elsewhere to main
        return self._branch

    def _session_usage(self, branch_id: str | None) -> dict[str, int] | None:
        nodes = self._usage_nodes(branch_id or None)
        if not nodes:
            return None
        total = {key: sum(int(n.payload[key]) for n in nodes) for key in _USAGE_SUMS}
        return {**total, "total_turns": len(nodes)}


class _View:
    """The state a mutation builds on (read after the revision it expects)."""

    __slots__ = ("branch", "complete", "leaf", "records", "seq")

    def __init__(
        self, records: dict[str, dict[str, Any]], branch: str, leaf: SessionNode | None, seq: int, complete: bool
    ) -> None:
        self.records = records  # every branch's, or (complete=False) only the current branch's and main's
        self.branch = branch
        self.leaf = leaf
        self.seq = seq
        self.complete = complete


class _Cached:
    """The state as of a head revision this instance committed: the branch records and the items it wrote.

    Valid only while the head is still at ``revision``: a mutation built on it
    compares against that revision, so if anyone else committed meanwhile the
    commit fails and the next attempt reads the store again.
    """

    __slots__ = ("complete", "items", "records", "revision")

    def __init__(self, revision: int, view: _View, graph: GraphDelta) -> None:
        self.revision = revision
        self.records = _records_after(view.records, graph)
        self.complete = view.complete  # every branch's record, or only those the view read and the commit wrote
        self.items = {node.node_id: node for node in graph.nodes if node.lane == LANE}


def _records_after(records: dict[str, dict[str, Any]], graph: GraphDelta) -> dict[str, dict[str, Any]]:
    """The branch records once ``graph`` is applied on top of ``records``."""
    written = {node.payload["name"]: node.payload for node in graph.nodes if node.kind == KIND_BRANCH}
    return written if graph.kind == "replace_full" else {**records, **written} if written else records


def _seq(node: SessionNode | None) -> int:
    return 0 if node is None else int(node.sort_key or "0")


def _commit_of(session_id: str, graph: GraphDelta, tombstones: list[str] | None = None) -> RuntimeCommit:
    return RuntimeCommit(
        session_id=session_id, expected_head_revision=None, graph=graph, tombstone_node_ids=tombstones or []
    )


def _record(name: str, leaf: str | None, order: int, from_turn: int | None, source: str | None) -> dict[str, Any]:
    return {
        "name": name,
        "leaf": leaf,
        "order": order,
        "from_turn": from_turn,
        "source": source,
        "at": int(time.time() * 1000),
        "deleted": False,
    }


_KEEP: Any = object()


def _record_node(record: dict[str, Any], *, leaf: Any = _KEEP) -> SessionNode:
    """A branch pointer: one small node per branch, rewritten in place when the branch moves."""
    payload = dict(record)
    if leaf is not _KEEP:
        payload["leaf"] = leaf
    return SessionNode(
        node_id=f"oab/{payload['name']}",
        parent_node_id=None,
        kind=KIND_BRANCH,
        payload=payload,
        lane=BRANCH_LANE,
        sort_key=f"{payload['order']:020d}",
    )


def _reset(view: _View) -> list[dict[str, Any]]:
    """The records after a clear: every name kept (reserved) but deleted, ``main`` empty and live."""
    if not view.records:
        return []
    return [dict(record, deleted=record["name"] != "main") for record in view.records.values()]


def _usage_id(branch: str, turn: int) -> str:
    return f"oau/{len(branch)}/{branch}/{turn}"


_USAGE_SUMS = ("requests", "input_tokens", "output_tokens", "total_tokens")


def _details(value: Any) -> Any:
    if value is None:
        return None
    if hasattr(value, "model_dump"):
        return value.model_dump()
    return dict(vars(value)) if hasattr(value, "__dict__") else value


def _usage_record(usage: Any) -> dict[str, Any]:
    """What ``store_run_usage`` keeps of the SDK's ``Usage``."""
    record: dict[str, Any] = {
        "requests": int(getattr(usage, "requests", 0) or 0),
        "input_tokens": int(getattr(usage, "input_tokens", 0) or 0),
        "output_tokens": int(getattr(usage, "output_tokens", 0) or 0),
        "total_tokens": int(getattr(usage, "total_tokens", 0) or 0),
        "input_tokens_details": _details(getattr(usage, "input_tokens_details", None)) or None,
        "output_tokens_details": _details(getattr(usage, "output_tokens_details", None)) or None,
    }
    normalised: dict[str, Any] = json.loads(json.dumps(record))
    return normalised


def _is_user(item: Any) -> bool:
    return isinstance(item, dict) and item.get("role") == "user"


def _preview(content: Any, max_length: int | None) -> str:
    text = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)
    if max_length is not None and len(text) > max_length:
        return text[:max_length] + "..."
    return text


def _timestamp(epoch_ms: int | None) -> str | None:
    if epoch_ms is None:
        return None
    return datetime.datetime.fromtimestamp(epoch_ms / 1000, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _chain(
    batch: str,
    parent: SessionNode | None,
    items: list[Any],
    seq: int,
    branch: str,
    *,
    turn: int = 0,
    depth: int = 0,
) -> list[SessionNode]:
    """Items as a chain of nodes under ``parent``: each records its user turn and its place on the path."""
    nodes: list[SessionNode] = []
    parent_id = None if parent is None else parent.node_id
    now = int(time.time() * 1000)
    for offset, item in enumerate(items, start=1):
        if _is_user(item):
            turn += 1
        depth += 1
        node = _node(
            f"oa/{batch}/{offset}", parent_id, seq + offset, item, turn=turn, depth=depth, at=now, branch=branch
        )
        nodes.append(node)
        parent_id = node.node_id
    return nodes


def _node(
    node_id: str, parent: str | None, seq: int, item: Any, *, turn: int, depth: int, at: int, branch: str
) -> SessionNode:
    role = item.get("role") if isinstance(item, dict) else None
    item_type = item.get("type") if isinstance(item, dict) else None
    tags: dict[str, Any] = {"after": parent or ""}  # indexed: which items continue from this one
    if isinstance(item_type, str) and item_type:
        tags["type"] = item_type
    place = {"turn": turn, "depth": depth, "at": at, "branch": branch}
    if role in _ROLES and item_type in (None, "message"):
        content = item.get("content")
        text = content if isinstance(content, str) else _text_of(content)
        tags["role"] = role
        payload = {"role": _ROLES[role], "parts": [{"type": "text", "text": text}], "oa": item, **place}
        kind = KIND_MESSAGE
    else:
        payload = {"oa": item, **place}
        kind = KIND_ITEM
    return SessionNode(
        node_id=node_id, parent_node_id=parent, kind=kind, payload=payload, lane=LANE, sort_key=f"{seq:020d}", tags=tags
    )


class _Writer:
    """:meth:`LashSession.writer`: the lease is the session instance's while the block runs."""

    def __init__(self, session: LashSession, lease: WriterLease) -> None:
        self._session = session
        self.lease = lease

    async def __aenter__(self) -> WriterLease:
        self._session._check_open()
        if self._session._lease is not None:
            raise RuntimeError("this session already holds its writer lease")
        await _in_pool(self.lease.acquire)
        self._session._lease = self.lease
        return self.lease

    async def __aexit__(self, *exc_info: object) -> None:
        self._session._lease = None
        await _in_pool(self.lease.release)


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
    return await _submit(call, *args)


def _submit(call: Callable[..., T], *args: Any) -> asyncio.Future[T]:
    """``call(*args)`` on the pool, as a future (a mutation awaits it through :func:`_settled` without a task)."""
    return asyncio.get_running_loop().run_in_executor(_POOL, functools.partial(call, *args))


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

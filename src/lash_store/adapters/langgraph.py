"""A LangGraph checkpointer on lash-store: :class:`LashSaver` (``pip install 'lash-store[langgraph]'``).

How LangGraph's data maps onto the store (only the public store API is used,
so every backend works the same way):

* a **thread** is a lash-store session (``session_id = thread_id``): one file
  per thread on SQLite, one partition per thread on PostgreSQL;
* a **checkpoint** is a graph node of kind ``lg.checkpoint`` in the lane of its
  namespace, sorted by its checkpoint id (uuid6: time-ordered), tagged with
  its scalar metadata (so ``list(filter=...)`` is an index lookup), and
  parented on the checkpoint it was put after;
* its payload is a **manifest**: the serialised checkpoint without channel
  values, the serialised metadata, the parent id, and one reference per
  channel: small values inline, larger ones as a blob, and lists (LangGraph's
  ``messages``) as a content-defined chunk tree (:mod:`lash_store.adapters._chunks`)
  whose chunks are shared between versions -- so a checkpoint of a
  ``MessagesState`` graph adds the new messages, not the whole history;
* **pending writes** are staged writes anchored to the checkpoint's node id
  (they may arrive before their checkpoint: no foreign key), kept once per
  ``(task_id, idx)`` and replaced for LangGraph's negative special indexes.

Long lists cost O(new elements) CPU per checkpoint, not O(history)
(:mod:`lash_store.adapters._values`): a ``put`` reuses the encodings and
leaves of the elements it already wrote or read (by identity; off with
``reuse_encodings=False``), and a read decodes only chunks it has not seen,
handing out fresh copies of cached elements (mutating them cannot change a
later read).  A tree this process wrote reads back without a fetch.

With a writer lease (:meth:`LashSaver.writer`, mandatory with
``write_policy="fenced"``) every ``put`` and ``put_writes`` carries the
lease's claim and the store checks it in the write's own transaction, so a
writer whose lease was taken over writes nothing (LangGraph issue #8796).

Every value goes through the saver's own ``serde`` (``dumps_typed`` /
``loads_typed``, so ``EncryptedSerializer`` and strict msgpack allow-lists
work unchanged); nothing is ever pickled.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import os
import random
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Protocol, TypeVar

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_checkpoint_id,
    get_checkpoint_metadata,
)
from langgraph.checkpoint.serde.base import SerializerProtocol

from lash_store.adapters import _chunks, _values
from lash_store.adapters._lease import WriterBusy, WriterLease, WriterLeaseRequired, fence_from, fence_value
from lash_store.api import SessionStoreAPI
from lash_store.errors import StoreNotFound
from lash_store.model import (
    GraphDelta,
    NewBlob,
    QueuedWorkCompletion,
    RuntimeCommit,
    SessionNode,
    SessionPickerInfo,
    StagedWrite,
)
from lash_store.options import StoreOptions

__all__ = ["FENCE_KEY", "LashSaver", "WriterBusy", "WriterLeaseRequired"]

WritePolicy = Literal["permissive", "fenced"]
FENCE_KEY = "__lash_fence"  # the writer's claim in ``configurable`` (LangGraph keeps ``__`` keys out of metadata)

KIND = "lg.checkpoint"
INLINE_MAX = 128  # typed values up to this size stay in the manifest
MIN_CHUNKED = 16  # lists shorter than this are one blob
_KNOWN_TTL_S = 60.0  # how long a ref this process stored is trusted to still exist (GC grace is 600 s)

T = TypeVar("T")

# Async twins run the sync code on one shared, bounded pool: thousands of threads (LangGraph threads) must not
# mean thousands of OS threads.
_POOL = ThreadPoolExecutor(max_workers=min(32, (os.cpu_count() or 1) * 4), thread_name_prefix="lash-langgraph")


def node_id_of(checkpoint_ns: str, checkpoint_id: str) -> str:
    """The node id of a checkpoint: length-prefixed, since namespaces contain ``:`` and ``|``."""
    return f"lgc/{len(checkpoint_ns)}/{checkpoint_ns}/{checkpoint_id}"


class _StoreCache:
    """Open stores by thread id (one handle per thread, shared by every clone of the saver)."""

    def __init__(self, opener: Callable[[str, bool], SessionStoreAPI | None]) -> None:
        self._opener = opener
        self._stores: dict[str, SessionStoreAPI] = {}
        self._lock = threading.Lock()

    def open(self, thread_id: str, *, create: bool) -> SessionStoreAPI | None:
        with self._lock:
            store = self._stores.get(thread_id)
            if store is None:
                store = self._opener(thread_id, create)
                if store is not None:
                    self._stores[thread_id] = store
            return store

    def forget(self, thread_id: str) -> None:
        with self._lock:
            store = self._stores.pop(thread_id, None)
        if store is not None:
            store.close()

    def close(self) -> None:
        with self._lock:
            stores, self._stores = list(self._stores.values()), {}
        for store in stores:
            store.close()


class _Factory(Protocol):
    def delete_session(self, session_id: str) -> None: ...

    def list_sessions(self, *, limit: int | None = None, after: str | None = None) -> list[SessionPickerInfo]: ...


class _Sessions:
    """Where the saver's threads live: a session factory (SQLite root or PostgreSQL database) and open handles."""

    def __init__(self, factory: _Factory, opener: Callable[[str, bool], SessionStoreAPI | None]) -> None:
        self._factory = factory
        self._cache = _StoreCache(opener)

    @classmethod
    def sqlite(cls, root: str | os.PathLike[str], options: StoreOptions | None) -> _Sessions:
        from lash_store.sqlite.factory import SqliteSessionStoreFactory
        from lash_store.sqlite.store import Store

        factory = SqliteSessionStoreFactory(root, options)

        def opener(thread_id: str, create: bool) -> SessionStoreAPI | None:
            if create:
                return factory.create_store(thread_id)
            path = factory.path_for_session(thread_id)
            return Store.open(path, options) if path.exists() else None  # a read never creates a file

        return cls(factory, opener)

    @classmethod
    def postgres(cls, dsn_or_pool: Any, options: StoreOptions | None, schema: str) -> _Sessions:
        from lash_store.postgres import PostgresSessionStoreFactory, PostgresStore, setup

        setup(dsn_or_pool, schema=schema)  # explicit and versioned; safe from many processes at once
        factory = PostgresSessionStoreFactory(dsn_or_pool, options, schema=schema)

        def opener(thread_id: str, create: bool) -> SessionStoreAPI | None:
            if create:
                return factory.create_store(thread_id)
            try:
                return PostgresStore.open(dsn_or_pool, thread_id, options, schema=schema, create=False)
            except StoreNotFound:
                return None

        return cls(factory, opener)

    def open(self, thread_id: str, *, create: bool) -> SessionStoreAPI | None:
        return self._cache.open(thread_id, create=create)

    def delete(self, thread_id: str) -> None:
        self._cache.forget(thread_id)
        self._factory.delete_session(thread_id)

    def thread_ids(self) -> list[str]:
        return [info.session_id for info in self._factory.list_sessions()]

    def close(self) -> None:
        self._cache.close()


class _Known:
    """Refs this process stored recently: their blobs need not be sent again (a re-put would rewrite the row).

    Entries expire well inside the store's GC grace period, so a ref is never
    trusted after GC could have collected it.
    """

    def __init__(self) -> None:
        self._refs: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._lock = threading.Lock()

    def missing(self, thread_id: str, blobs: dict[str, NewBlob]) -> list[NewBlob]:
        """The blobs (by ref) not stored by this process within the trusted period."""
        now = time.monotonic()
        with self._lock:
            return [
                blob
                for ref, blob in blobs.items()
                if now - self._refs.get((thread_id, ref), -_KNOWN_TTL_S) >= _KNOWN_TTL_S
            ]

    def add(self, thread_id: str, refs: list[str]) -> None:
        now = time.monotonic()
        with self._lock:
            for ref in refs:
                self._refs[(thread_id, ref)] = now
                self._refs.move_to_end((thread_id, ref))
            while len(self._refs) > 200_000:
                self._refs.popitem(last=False)

    def forget(self, thread_id: str) -> None:
        with self._lock:
            for key in [key for key in self._refs if key[0] == thread_id]:
                del self._refs[key]


def _ref(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def _scalar_tags(metadata: dict[str, Any]) -> dict[str, Any]:
    """The metadata keys the tag index can hold (scalars under non-empty string keys)."""
    tags: dict[str, Any] = {}
    for key, value in metadata.items():
        if isinstance(key, str) and key and (value is None or type(value) in (str, int, bool, float)):
            if type(value) is int and not -(2**63) <= value < 2**63:
                continue
            if type(value) is float and value != value:  # NaN has no index form
                continue
            tags[key] = value
    return tags


class LashSaver(BaseCheckpointSaver[str]):
    """A LangGraph checkpointer on lash-store (SQLite: :meth:`sqlite`; PostgreSQL: :meth:`postgres`).

    Both sync and async methods are native (the async ones run the same code
    on a shared, bounded thread pool).  Beyond the stock savers: each
    checkpoint stores only what changed (lists as shared chunks), writes are
    one transaction with their blobs (a crash never leaves a checkpoint
    without its values), ``list`` filters on indexed metadata, and
    ``copy_thread``, ``delete_for_runs`` and ``prune`` are implemented.

    ``reuse_encodings`` (default on): a ``put`` of a list that starts with the
    element objects of the last list of that channel this saver wrote or read
    reuses their encodings instead of serialising them again.  Elements are
    matched by identity, so an element changed *in place* after it was
    checkpointed is not re-encoded (LangGraph state is updated by returning
    new values); pass ``False`` to encode every element of every put.
    """

    def __init__(
        self,
        sessions: _Sessions,
        *,
        serde: SerializerProtocol | None = None,
        write_policy: WritePolicy = "permissive",
        reuse_encodings: bool = True,
    ) -> None:
        super().__init__(serde=serde)
        if write_policy not in ("permissive", "fenced"):
            raise ValueError(f"unknown write policy {write_policy!r}")
        self.write_policy = write_policy
        self._sessions = sessions
        self._known = _Known()
        self._chunk_cache = _chunks.ChunkCache()
        self._build_cache = _chunks.BuildCache()
        self._decoded = _values.DecodedLeaves()
        self._lists = _values.Lists(capacity=64 if reuse_encodings else 0, ttl_s=_KNOWN_TTL_S)

    @classmethod
    def sqlite(
        cls,
        root: str | os.PathLike[str],
        *,
        options: StoreOptions | None = None,
        serde: SerializerProtocol | None = None,
        write_policy: WritePolicy = "permissive",
        reuse_encodings: bool = True,
    ) -> LashSaver:
        """Threads as session files under ``root`` (created if needed)."""
        Path(root).mkdir(parents=True, exist_ok=True)
        return cls(
            _Sessions.sqlite(root, options), serde=serde, write_policy=write_policy, reuse_encodings=reuse_encodings
        )

    @classmethod
    def postgres(
        cls,
        dsn_or_pool: Any,
        *,
        options: StoreOptions | None = None,
        schema: str = "lash",
        serde: SerializerProtocol | None = None,
        write_policy: WritePolicy = "permissive",
        reuse_encodings: bool = True,
    ) -> LashSaver:
        """Threads as session partitions of a PostgreSQL database (a DSN or a ``psycopg_pool`` pool)."""
        return cls(
            _Sessions.postgres(dsn_or_pool, options, schema),
            serde=serde,
            write_policy=write_policy,
            reuse_encodings=reuse_encodings,
        )

    # -- single writer ---------------------------------------------------------

    def writer(self, thread_id: str, owner_id: str, *, ttl_ms: int = 30_000, wait_s: float = 60.0) -> _Writer:
        """A fenced lease on one thread, as a context manager (``with`` or ``async with``) yielding a config.

        Merge the yielded config into the run's config: every ``put`` and
        ``put_writes`` of the run then carries the lease, and the store refuses
        them (``QueuedWorkClaimExpired``, nothing written) once another writer
        has taken the thread over.  The lease renews itself every ``ttl_ms / 3``
        and is released on exit.  Acquiring waits up to ``wait_s`` for the
        current holder (or for its lease to run out), then raises
        :class:`WriterBusy`.  With ``write_policy="fenced"`` a write without a
        lease raises :class:`WriterLeaseRequired`.
        """
        return _Writer(self, str(thread_id), owner_id, ttl_ms, wait_s)

    def _fence(self, thread_id: str, configurable: dict[str, Any]) -> list[QueuedWorkCompletion]:
        value = configurable.get(FENCE_KEY)
        if value is None:
            if self.write_policy == "fenced":
                raise WriterLeaseRequired(thread_id)
            return []
        proof = fence_from(value)
        if proof.session_id != thread_id:
            raise ValueError(f"the writer lease is for thread {proof.session_id!r}, not {thread_id!r}")
        return [proof]

    # -- lifecycle -----------------------------------------------------------

    def close(self) -> None:
        self._sessions.close()

    def __enter__(self) -> LashSaver:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    async def __aenter__(self) -> LashSaver:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await _in_pool(self.close)

    # -- values --------------------------------------------------------------

    def _typed(self, value: Any) -> tuple[str, bytes]:
        kind, data = self.serde.dumps_typed(value)
        return kind, bytes(data)

    def _element(self, value: Any) -> _chunks.Element:
        pair = self._typed(value)
        return pair, _chunks.element_digest(pair)

    def _value_ref(self, key: tuple[str, str, str], value: Any, blobs: dict[str, NewBlob]) -> list[Any]:
        """How one channel value is stored: ``["i", type, bytes]``, ``["b", type, ref]`` or ``["l", root, n]``."""
        if type(value) is list and len(value) >= MIN_CHUNKED:
            elements, keep = self._lists.elements(key, value, self._element)
            tree = _chunks.build_elements(elements, self._build_cache, self._chunk_cache, keep)
            self._lists.remember(key, value, elements, tree.leaves)
            blobs.update(tree.chunks)
            return ["l", tree.root, tree.length]
        kind, data = self._typed(value)
        if len(data) <= INLINE_MAX:
            return ["i", kind, data]
        ref = _ref(data)
        blobs[ref] = NewBlob(content=data, descriptor=_chunks.CHUNK_DESCRIPTOR)
        return ["b", kind, ref]

    def _load_values(
        self, store: SessionStoreAPI, thread_id: str, checkpoint_ns: str, channels: dict[str, list[Any]]
    ) -> dict[str, Any]:
        refs = sorted({spec[2] for spec in channels.values() if spec[0] == "b"})
        contents = store.get_blobs(refs) if refs else {}
        values: dict[str, Any] = {}
        for channel, spec in channels.items():
            if spec[0] == "i":
                values[channel] = self.serde.loads_typed((spec[1], spec[2]))
            elif spec[0] == "b":
                data = contents.get(spec[2])
                if data is None:
                    from lash_store.errors import CorruptData

                    raise CorruptData(f"channel {channel!r}", f"value blob {spec[2]} is missing")
                values[channel] = self.serde.loads_typed((spec[1], data))
            else:
                items: list[Any] = []
                elements: list[_chunks.Element] = []
                leaves = _chunks.read_leaves(spec[1], store.get_blobs, self._chunk_cache)
                for ref, pairs in leaves:
                    self._decoded.read(ref, pairs, self.serde.loads_typed, items, elements)
                # A put of a list that starts with these objects need not encode or chunk them again.
                self._lists.remember(
                    (thread_id, checkpoint_ns, channel), items, elements, [(ref, len(pairs)) for ref, pairs in leaves]
                )
                values[channel] = items
        return values

    # -- put -----------------------------------------------------------------

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        configurable = config["configurable"]
        thread_id = str(configurable["thread_id"])
        fence = self._fence(thread_id, configurable)
        checkpoint_ns = str(configurable.get("checkpoint_ns", ""))
        parent_id = configurable.get("checkpoint_id")
        skeleton: dict[str, Any] = dict(checkpoint)
        channel_values: dict[str, Any] = skeleton.pop("channel_values", {}) or {}
        blobs: dict[str, NewBlob] = {}
        channels = {
            channel: self._value_ref((thread_id, checkpoint_ns, channel), channel_values[channel], blobs)
            for channel in checkpoint["channel_versions"]
            if channel in channel_values
        }
        full_metadata = dict(get_checkpoint_metadata(config, metadata))
        node = SessionNode(
            node_id=node_id_of(checkpoint_ns, checkpoint["id"]),
            parent_node_id=None if parent_id is None else node_id_of(checkpoint_ns, parent_id),
            kind=KIND,
            payload={
                "cp": list(self._typed(skeleton)),
                "md": list(self._typed(full_metadata)),
                "ns": checkpoint_ns,
                "id": checkpoint["id"],
                "parent": parent_id,
                "ch": channels,
            },
            lane=checkpoint_ns,
            sort_key=checkpoint["id"],
            tags=_scalar_tags(full_metadata),
            blob_refs=sorted({spec[1] if spec[0] == "l" else spec[2] for spec in channels.values() if spec[0] != "i"}),
        )
        store = self._store(thread_id, create=True)
        fresh = self._known.missing(thread_id, blobs)
        store.commit_runtime_state(
            RuntimeCommit(
                session_id=thread_id,
                expected_head_revision=None,
                graph=GraphDelta.append([node], node.node_id),
                new_blobs=fresh,
                held_queue_claims=fence,
            )
        )
        self._known.add(thread_id, list(blobs))
        return {
            "configurable": {"thread_id": thread_id, "checkpoint_ns": checkpoint_ns, "checkpoint_id": checkpoint["id"]}
        }

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        configurable = config["configurable"]
        thread_id = str(configurable["thread_id"])
        fence = self._fence(thread_id, configurable)
        anchor = node_id_of(str(configurable.get("checkpoint_ns", "")), str(configurable["checkpoint_id"]))
        rows = [
            StagedWrite(
                anchor_id=anchor,
                task_id=task_id,
                idx=WRITES_IDX_MAP.get(channel, index),
                channel=channel,
                value=list(self._typed(value)),
                task_path=task_path,
            )
            for index, (channel, value) in enumerate(writes)
        ]
        self._store(thread_id, create=True).put_staged_writes(rows, held_queue_claims=fence)

    # -- reads ---------------------------------------------------------------

    def _store(self, thread_id: str, *, create: bool) -> SessionStoreAPI:
        store = self._sessions.open(thread_id, create=create)
        assert store is not None  # create=True always opens
        return store

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        configurable = config["configurable"]
        thread_id = str(configurable["thread_id"])
        store = self._sessions.open(thread_id, create=False)
        if store is None:
            return None
        checkpoint_ns = str(configurable.get("checkpoint_ns", ""))
        checkpoint_id = get_checkpoint_id(config)
        if checkpoint_id:
            node = store.load_node(node_id_of(checkpoint_ns, checkpoint_id))
            nodes = [] if node is None or node.kind != KIND else [node]
        else:
            nodes = store.query_nodes(kind=KIND, lane=checkpoint_ns, limit=1)
        return self._tuples(store, thread_id, nodes)[0] if nodes else None

    def _tuples(self, store: SessionStoreAPI, thread_id: str, nodes: Sequence[SessionNode]) -> list[CheckpointTuple]:
        writes: dict[str, list[StagedWrite]] = {}
        for write in store.load_staged_writes([node.node_id for node in nodes]):
            writes.setdefault(write.anchor_id, []).append(write)
        return [self._tuple(store, thread_id, node, writes.get(node.node_id, [])) for node in nodes]

    def _tuple(
        self, store: SessionStoreAPI, thread_id: str, node: SessionNode, writes: list[StagedWrite]
    ) -> CheckpointTuple:
        manifest = node.payload
        checkpoint: Any = self.serde.loads_typed(tuple(manifest["cp"]))
        checkpoint["channel_values"] = self._load_values(store, thread_id, manifest["ns"], manifest["ch"])
        metadata: Any = self.serde.loads_typed(tuple(manifest["md"]))
        checkpoint_ns = manifest["ns"]
        parent = manifest["parent"]
        writes = sorted(writes, key=lambda w: (w.task_path, w.task_id, w.idx))
        return CheckpointTuple(
            config={
                "configurable": {
                    "thread_id": thread_id,
                    "checkpoint_ns": checkpoint_ns,
                    "checkpoint_id": manifest["id"],
                }
            },
            checkpoint=checkpoint,
            metadata=metadata,
            parent_config=None if parent is None else _config(thread_id, checkpoint_ns, parent),
            pending_writes=[(w.task_id, w.channel, self.serde.loads_typed(tuple(w.value))) for w in writes],
        )

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        configurable = (config or {}).get("configurable", {})
        threads = [str(configurable["thread_id"])] if "thread_id" in configurable else self._sessions.thread_ids()
        lane = str(configurable["checkpoint_ns"]) if "checkpoint_ns" in configurable else None
        exact = configurable.get("checkpoint_id")
        sort_before = None if before is None else get_checkpoint_id(before)
        wanted = dict(filter or {})
        indexed = {key: value for key, value in _scalar_tags(wanted).items() if value is not None}  # None: also absent
        remaining = limit
        for thread_id in threads:
            if remaining is not None and remaining <= 0:
                return
            store = self._sessions.open(thread_id, create=False)
            if store is None:
                continue
            nodes = store.query_nodes(
                kind=KIND,
                lane=lane,
                sort_before=sort_before,
                sort_key=exact,
                tags=indexed,
                limit=remaining if len(indexed) == len(wanted) else None,
            )
            for found in self._tuples(store, thread_id, nodes):
                if any(found.metadata.get(key) != value for key, value in wanted.items()):
                    continue  # a non-scalar filter value: compared on the decoded metadata
                yield found
                if remaining is not None:
                    remaining -= 1
                    if remaining <= 0:
                        return

    # -- deletion, copies, pruning -------------------------------------------

    def delete_thread(self, thread_id: str) -> None:
        self._sessions.delete(str(thread_id))
        self._known.forget(str(thread_id))
        self._lists.forget(lambda key: isinstance(key, tuple) and key[0] == str(thread_id))

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        source = self._sessions.open(str(source_thread_id), create=False)
        if source is None or not source.query_nodes(kind=KIND, limit=1):
            return
        target = self._store(str(target_thread_id), create=True)
        if target.query_nodes(kind=KIND, limit=1) or target.load_session() is not None:
            raise ValueError(f"thread {target_thread_id!r} already holds checkpoints")
        source.copy_session_into(target, session_id=str(target_thread_id))

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        runs = [str(run_id) for run_id in run_ids]
        if not runs:
            return
        for thread_id in self._sessions.thread_ids():
            store = self._sessions.open(thread_id, create=False)
            if store is None:
                continue
            doomed = sorted(
                {node.node_id for run in runs for node in store.query_nodes(kind=KIND, tags={"run_id": run})}
            )
            if doomed:
                self._drop(store, thread_id, doomed, keep=[])

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        if strategy not in ("keep_latest", "delete"):
            raise ValueError(f"unknown prune strategy {strategy!r}")
        for thread_id in (str(t) for t in thread_ids):
            if strategy == "delete":
                self.delete_thread(thread_id)
                continue
            store = self._sessions.open(thread_id, create=False)
            if store is None:
                continue
            latest: dict[str, SessionNode] = {}
            doomed: list[str] = []
            for node in store.query_nodes(kind=KIND):  # newest first: the first of each lane is its latest
                if node.lane in latest:
                    doomed.append(node.node_id)
                else:
                    latest[node.lane or ""] = node
            if doomed:
                # The kept checkpoints lose their (deleted) parents, in the same commit.
                kept = [_orphaned(node) for node in latest.values() if node.parent_node_id is not None]
                self._drop(store, thread_id, doomed, keep=kept)

    def _drop(self, store: SessionStoreAPI, thread_id: str, doomed: Sequence[str], keep: Sequence[SessionNode]) -> None:
        """Tombstone ``doomed`` checkpoints (re-appending ``keep``) in one commit, then drop their writes and rows."""
        gone = set(doomed)
        self._lists.forget(lambda key: isinstance(key, tuple) and key[0] == thread_id)  # its leaves may be collected
        # The session's leaf follows the newest surviving checkpoint of the root namespace (it is informational).
        root = store.query_nodes(kind=KIND, lane="", limit=len(gone) + 1)
        leaf = next((node.node_id for node in root if node.node_id not in gone), None)
        store.commit_runtime_state(
            RuntimeCommit(
                session_id=thread_id,
                expected_head_revision=None,
                graph=GraphDelta.append(keep, leaf) if keep else GraphDelta.unchanged(leaf),
                tombstone_node_ids=list(doomed),
            )
        )
        store.delete_staged_writes(doomed)
        store.vacuum()

    # -- versions ------------------------------------------------------------

    def get_next_version(self, current: str | None, channel: None) -> str:
        """``"<counter>.<random>"`` like LangGraph's own savers, so their data imports unchanged."""
        number = 0 if current is None else int(current) if isinstance(current, int) else int(str(current).split(".")[0])
        return f"{number + 1:032}.{random.random():016}"

    # -- async twins ---------------------------------------------------------

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await _in_pool(self.get_tuple, config)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        found = await _in_pool(lambda: list(self.list(config, filter=filter, before=before, limit=limit)))
        for item in found:
            yield item

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return await _in_pool(self.put, config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        await _in_pool(self.put_writes, config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        await _in_pool(self.delete_thread, thread_id)

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        await _in_pool(self.delete_for_runs, run_ids)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        await _in_pool(self.copy_thread, source_thread_id, target_thread_id)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        await _in_pool(functools.partial(self.prune, thread_ids, strategy=strategy))


class _Writer:
    """:meth:`LashSaver.writer`: acquire on enter (in the pool for ``async with``), release on exit."""

    def __init__(self, saver: LashSaver, thread_id: str, owner_id: str, ttl_ms: int, wait_s: float) -> None:
        self._saver = saver
        self._thread_id = thread_id
        self._lease = WriterLease(
            lambda: saver._store(thread_id, create=True), thread_id, owner_id, ttl_ms=ttl_ms, wait_s=wait_s
        )

    @property
    def lease(self) -> WriterLease:
        return self._lease

    def config(self) -> RunnableConfig:
        """The config to merge into a run's: the thread and the lease."""
        return {"configurable": {"thread_id": self._thread_id, FENCE_KEY: fence_value(self._lease.proof())}}

    def __enter__(self) -> RunnableConfig:
        self._lease.acquire()
        return self.config()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._lease.release()

    async def __aenter__(self) -> RunnableConfig:
        await _in_pool(self._lease.acquire)
        return self.config()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await _in_pool(self._lease.release)


def _config(thread_id: str, checkpoint_ns: str, checkpoint_id: str) -> RunnableConfig:
    return {"configurable": {"thread_id": thread_id, "checkpoint_ns": checkpoint_ns, "checkpoint_id": checkpoint_id}}


def _orphaned(node: SessionNode) -> SessionNode:
    payload = dict(node.payload)
    payload["parent"] = None
    return SessionNode(
        node_id=node.node_id,
        parent_node_id=None,
        kind=node.kind,
        payload=payload,
        lane=node.lane,
        sort_key=node.sort_key,
        tags=node.tags,
        blob_refs=node.blob_refs,
    )


async def _in_pool(call: Callable[..., T], *args: Any) -> T:
    return await asyncio.get_running_loop().run_in_executor(_POOL, functools.partial(call, *args))

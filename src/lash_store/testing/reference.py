"""The pure-Python, in-memory reference store: the session service over plain dicts.

:class:`ReferenceStore` is the oracle of the property-based stateful tests and
an in-memory store for users' tests.  It is :class:`~lash_store.service.session.SessionService`
(the one implementation of every store method) over :class:`MemoryBackend`,
which implements each named query of the SQL backends' ``queries.sql`` as a
few lines of Python on dicts and lists: what the reference checks when it is
compared with SQLite or PostgreSQL is exactly the SQL.

A write transaction copies the whole state first and restores it if the body
raises (``KeyboardInterrupt`` too), so a failed operation never leaves a
partial write behind.  Blobs keep their codec encoding, as a SQL backend
stores them.  The durability tier is INLINE and the GC grace period defaults
to 0, as for ``Store.memory()``.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from lash_store.core.queue import BatchRow
from lash_store.errors import StoreClosed
from lash_store.options import BlobProfile, StoreOptions, check_options
from lash_store.service.clock import TransactionClock
from lash_store.service.ports import Params, Row
from lash_store.service.session import SessionService

__all__ = ["MemoryBackend", "ReferenceStore"]

T = TypeVar("T")


@dataclass
class _State:
    """Everything one store holds.  Dicts keep insertion order, which is the order rows were added."""

    head: dict[str, Any] = field(
        default_factory=lambda: {
            "session_id": None,
            "head_revision": 0,
            "checkpoint_ref": None,
            "leaf_node_id": None,
            "body": None,
            "usage_ledger": None,
            "node_count": 0,
            "user_message_count": 0,
        }
    )
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)  # node_id -> row (seq, parent, ...)
    last_node_seq: int = 0
    blobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    meta: dict[str, Any] | None = None
    turn_commits: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    batches: dict[str, dict[str, Any]] = field(default_factory=dict)
    last_enqueue_seq: int = 0
    fences: dict[str, int] = field(default_factory=dict)
    attachments: dict[str, dict[str, Any]] = field(default_factory=dict)
    modules: dict[str, str] = field(default_factory=dict)
    tags: dict[str, set[str]] = field(default_factory=dict)  # node_id -> tag texts
    node_refs: dict[str, set[str]] = field(default_factory=dict)  # node_id -> blob refs
    edges: set[tuple[str, str]] = field(default_factory=set)  # (parent blob, child blob)
    staged: dict[tuple[str, str, int], dict[str, Any]] = field(default_factory=dict)
    last_staged_seq: int = 0


_STAGED = ("anchor_id", "task_id", "idx", "task_path", "channel", "value")


def _newest_first(node: dict[str, Any]) -> tuple[Any, ...]:
    """Sort key (code point order, as SQLite's BINARY and PostgreSQL's "C"), then seq; keyless nodes last."""
    return (node["sort_key"] is not None, node["sort_key"] or "", node["seq"])


_HEAD = ("session_id", "head_revision", "checkpoint_ref", "leaf_node_id", "body", "usage_ledger")
_COUNTS = ("node_count", "user_message_count")
_BATCH = BatchRow.__struct_fields__
_CLAIM = (
    "claim_id",
    "claim_owner_id",
    "claim_token",
    "claim_fencing_token",
    "claim_claimed_at_ms",
    "claim_expires_at_ms",
)
_NO_CLAIM = dict.fromkeys(_CLAIM[:3]) | {name: 0 for name in _CLAIM[3:]}
_POISON = ("attempts", "retry_at_ms", "last_owner_id", "last_claimed_at_ms", "last_error", "dead_at_ms")
_NO_ATTEMPT = {"attempts": 0, "retry_at_ms": 0} | dict.fromkeys(_POISON[2:])
_DEAD_LETTER = ("attempts", "dead_at_ms", "last_owner_id", "last_claimed_at_ms", "last_error")
_BLOB = ("hash", "encoding", "kind", "raw_size", "created_at_ms", "content")
_META = ("session_id", "session_name", "created_at", "model", "cwd", "relation")
_ATTACHMENT = ("attachment_id", "session_id", "canonical_uri", "intent_at_ms", "committed_at_ms")


def _free(batch: dict[str, Any], now_ms: int) -> bool:
    """Unclaimed, or the claim's lease ran out (expiry is inclusive)."""
    return batch["claim_token"] is None or batch["claim_expires_at_ms"] <= now_ms


def _batch_row(batch: dict[str, Any]) -> Row:
    return tuple(batch[name] for name in _BATCH)


def _live(batch: dict[str, Any]) -> bool:
    """Queued work, not a dead letter."""
    return batch["dead_at_ms"] is None


def _dead_letter_row(batch: dict[str, Any]) -> Row:
    return (*_batch_row(batch), *(batch[name] for name in _DEAD_LETTER))


def _sweepable(state: _State, p: Params) -> list[str]:
    live = set(p["live"]) | set(state.modules.values())
    return [ref for ref, blob in state.blobs.items() if blob["created_at_ms"] <= p["cutoff_ms"] and ref not in live]


class _Queries:
    """Every named query of ``queries.sql``, in Python.  Each returns rows (a list) or a changed-row count."""

    def __init__(self, state: _State) -> None:
        self.s = state

    # -- locks: one store, one lock (the backend's), nothing per row ------

    def lock_session(self, p: Params) -> int:
        return 0

    def lock_queue(self, p: Params) -> int:
        return 0

    # -- head -------------------------------------------------------------

    def read_head(self, p: Params) -> list[Row]:
        return [tuple(self.s.head[name] for name in (*_HEAD, *_COUNTS))]

    def commit_head(self, p: Params) -> list[Row]:
        return self.read_head(p)

    def write_head(self, p: Params) -> int:
        self.s.head.update({name: p[name] for name in (*_HEAD, *_COUNTS)})
        return 1

    def write_counts(self, p: Params) -> int:
        self.s.head.update({name: p[name] for name in _COUNTS})
        return 1

    def clear_leaf(self, p: Params) -> int:
        self.s.head["leaf_node_id"] = None
        return 1

    # -- graph ------------------------------------------------------------

    def full_graph(self, p: Params) -> list[Row]:
        return [(node_id, n["body"]) for node_id, n in self._ordered() if not n["tombstoned"]]

    def active_path(self, p: Params) -> list[Row]:
        rows: list[Row] = []
        node = self.s.nodes.get(p["leaf_node_id"])
        depth = 0
        while node is not None and not node["tombstoned"] and depth <= p["depth_cap"]:
            rows.append((node["node_id"], node["parent_node_id"], node["body"]))
            node = self.s.nodes.get(node["parent_node_id"]) if node["parent_node_id"] is not None else None
            depth += 1
        return rows

    def node_tombstoned(self, p: Params) -> list[Row]:
        node = self.s.nodes.get(p["node_id"])
        return [] if node is None else [(int(node["tombstoned"]),)]

    def load_node(self, p: Params) -> list[Row]:
        node = self.s.nodes.get(p["node_id"])
        return [] if node is None or node["tombstoned"] else [(node["body"],)]

    def nodes_state(self, p: Params) -> list[Row]:
        wanted = set(p["node_ids"])
        return [
            (node_id, int(n["tombstoned"]), int(n["user_text"] is not None))
            for node_id, n in self.s.nodes.items()
            if node_id in wanted
        ]

    def upsert_node(self, p: Params) -> int:
        node = self.s.nodes.get(p["node_id"])
        if node is None:
            self.s.last_node_seq += 1
            node = self.s.nodes[p["node_id"]] = {"node_id": p["node_id"], "seq": self.s.last_node_seq}
        node.update(parent_node_id=p["parent_node_id"], user_text=p["user_text"], body=p["body"], tombstoned=False)
        node.update(kind=p["kind"], lane=p["lane"], sort_key=p["sort_key"])
        return 1

    def delete_graph(self, p: Params) -> int:
        count = len(self.s.nodes)
        self.s.nodes.clear()
        self.s.tags.clear()
        self.s.node_refs.clear()
        return count

    # -- node index -------------------------------------------------------

    def delete_node_index(self, p: Params) -> int:
        for node_id in p["node_ids"]:
            self.s.tags.pop(node_id, None)
            self.s.node_refs.pop(node_id, None)
        return 0

    def insert_node_tag(self, p: Params) -> int:
        self.s.tags.setdefault(p["node_id"], set()).add(p["tag"])
        return 1

    def insert_node_ref(self, p: Params) -> int:
        self.s.node_refs.setdefault(p["node_id"], set()).add(p["ref"])
        return 1

    def delete_tombstoned_index(self, p: Params) -> int:
        doomed = {node_id for node_id, n in self.s.nodes.items() if n["tombstoned"]}
        for node_id in doomed:
            self.s.tags.pop(node_id, None)
            self.s.node_refs.pop(node_id, None)
        self.s.staged = {key: row for key, row in self.s.staged.items() if key[0] not in doomed}
        return 0

    def query_nodes(self, p: Params) -> list[Row]:
        wanted = set(p["tags"])
        hits = [
            n
            for n in self.s.nodes.values()
            if not n["tombstoned"]
            and (p["kind"] is None or n["kind"] == p["kind"])
            and (p["any_lane"] or n["lane"] == p["lane"])
            and (p["sort_before"] is None or (n["sort_key"] is not None and n["sort_key"] < p["sort_before"]))
            and (p["sort_key"] is None or n["sort_key"] == p["sort_key"])
            and wanted <= self.s.tags.get(n["node_id"], set())
        ]
        hits.sort(key=_newest_first, reverse=True)
        if p["limit"] is not None:
            hits = hits[: p["limit"]]
        return [(n["node_id"], n["body"]) for n in hits]

    def reachable_refs(self, p: Params) -> list[Row]:
        reach = set(p["roots"])
        for node_id, refs in self.s.node_refs.items():
            node = self.s.nodes.get(node_id)
            if node is not None and not node["tombstoned"]:
                reach |= refs
        children: dict[str, list[str]] = {}
        for parent, child in self.s.edges:
            children.setdefault(parent, []).append(child)
        todo = list(reach)
        while todo:
            for child in children.get(todo.pop(), ()):
                if child not in reach:
                    reach.add(child)
                    todo.append(child)
        return [(ref,) for ref in sorted(reach)]

    def node_tag_rows(self, p: Params) -> list[Row]:
        return sorted((node_id, tag) for node_id, tags in self.s.tags.items() for tag in tags)

    def node_ref_rows(self, p: Params) -> list[Row]:
        return sorted((node_id, ref) for node_id, refs in self.s.node_refs.items() for ref in refs)

    # -- staged writes ----------------------------------------------------

    def _stage(self, p: Params, replace: bool) -> int:
        key = (p["anchor_id"], p["task_id"], p["idx"])
        row = self.s.staged.get(key)
        if row is not None:
            if not replace:
                return 0
            row.update(task_path=p["task_path"], channel=p["channel"], value=p["value"])
            return 1
        self.s.last_staged_seq += 1
        self.s.staged[key] = {**{name: p[name] for name in _STAGED}, "seq": self.s.last_staged_seq}
        return 1

    def put_staged_write(self, p: Params) -> int:
        return self._stage(p, replace=False)

    def replace_staged_write(self, p: Params) -> int:
        return self._stage(p, replace=True)

    insert_staged_write_row = put_staged_write

    def _staged_in_order(self) -> list[dict[str, Any]]:
        return sorted(self.s.staged.values(), key=lambda row: row["seq"])

    def load_staged_writes(self, p: Params) -> list[Row]:
        anchors, channels = set(p["anchor_ids"]), set(p["channels"])
        return [
            tuple(row[name] for name in _STAGED)
            for row in self._staged_in_order()
            if row["anchor_id"] in anchors and (p["any_channel"] or row["channel"] in channels)
        ]

    def delete_staged_writes(self, p: Params) -> int:
        anchors = set(p["anchor_ids"])
        doomed = [key for key in self.s.staged if key[0] in anchors]
        for key in doomed:
            del self.s.staged[key]
        return len(doomed)

    def staged_write_rows(self, p: Params) -> list[Row]:
        return [tuple(row[name] for name in _STAGED) for row in self._staged_in_order()]

    def tombstone_node(self, p: Params) -> int:
        node = self.s.nodes.get(p["node_id"])
        if node is None or node["tombstoned"]:
            return 0
        node["tombstoned"] = True
        return 1

    def delete_tombstoned(self, p: Params) -> int:
        doomed = [node_id for node_id, n in self.s.nodes.items() if n["tombstoned"]]
        for node_id in doomed:
            del self.s.nodes[node_id]
        return len(doomed)

    def first_user_text(self, p: Params) -> list[Row]:
        for _node_id, n in self._ordered():
            if n["user_text"] is not None and not n["tombstoned"]:
                return [(n["user_text"],)]
        return []

    def node_rows(self, p: Params) -> list[Row]:
        return [
            (node_id, n["parent_node_id"], int(n["tombstoned"]), n["user_text"], n["body"])
            for node_id, n in self._ordered()
        ]

    def insert_node_row(self, p: Params) -> int:
        self.upsert_node(p)
        self.s.nodes[p["node_id"]]["tombstoned"] = bool(p["tombstoned"])
        return 1

    def _ordered(self) -> list[tuple[str, dict[str, Any]]]:
        return sorted(self.s.nodes.items(), key=lambda item: item[1]["seq"])

    # -- turn commits -----------------------------------------------------

    def find_turn_commit(self, p: Params) -> list[Row]:
        stamp = self.s.turn_commits.get((p["session_id"], p["turn_id"]))
        return [] if stamp is None else [(stamp["record"],)]

    def record_turn_commit(self, p: Params) -> int:
        key = (p["session_id"], p["turn_id"])
        if key in self.s.turn_commits:
            raise AssertionError(f"turn stamp {key} inserted twice")  # a unique key in SQL
        self.s.turn_commits[key] = dict(p)
        return 1

    def count_old_turn_commits(self, p: Params) -> list[Row]:
        return [(sum(1 for r in self.s.turn_commits.values() if r["committed_at_ms"] < p["cutoff_ms"]),)]

    def delete_old_turn_commits(self, p: Params) -> int:
        old = [key for key, r in self.s.turn_commits.items() if r["committed_at_ms"] < p["cutoff_ms"]]
        for key in old:
            del self.s.turn_commits[key]
        return len(old)

    def turn_commit_rows(self, p: Params) -> list[Row]:
        rows = sorted(self.s.turn_commits.values(), key=lambda r: (r["committed_at_ms"], r["session_id"], r["turn_id"]))
        return [(r["session_id"], r["turn_id"], r["record"], r["committed_at_ms"]) for r in rows]

    # -- blobs ------------------------------------------------------------

    def put_blob(self, p: Params) -> int:
        blob = self.s.blobs.get(p["hash"])
        if blob is None:
            self.s.blobs[p["hash"]] = {name: p[name] for name in _BLOB}
        else:  # first writer's bytes win; a re-put refreshes the grace clock
            blob["created_at_ms"] = max(blob["created_at_ms"], p["created_at_ms"])
        return 1

    insert_blob_row = put_blob

    def put_blob_edge(self, p: Params) -> int:
        edge = (p["parent_ref"], p["child_ref"])
        if edge in self.s.edges:
            return 0
        self.s.edges.add(edge)
        return 1

    def blob_edge_rows(self, p: Params) -> list[Row]:
        refs = set(p["refs"])
        return sorted(edge for edge in self.s.edges if p["all_edges"] or edge[0] in refs)

    def sweep_edges(self, p: Params) -> int:
        gone = {edge for edge in self.s.edges if edge[0] not in self.s.blobs}
        self.s.edges -= gone
        return len(gone)

    def get_blob(self, p: Params) -> list[Row]:
        blob = self.s.blobs.get(p["hash"])
        return [] if blob is None else [(blob["encoding"], blob["content"], blob["raw_size"])]

    def get_blobs(self, p: Params) -> list[Row]:
        wanted = [self.s.blobs.get(ref) for ref in sorted(set(p["refs"]))]
        return [(b["hash"], b["encoding"], b["content"], b["raw_size"]) for b in wanted if b is not None]

    def count_blobs(self, p: Params) -> list[Row]:
        return [(len(self.s.blobs),)]

    def sweep_blobs(self, p: Params) -> int:
        doomed = _sweepable(self.s, p)
        for ref in doomed:
            del self.s.blobs[ref]
        return len(doomed)

    def sweep_candidates(self, p: Params) -> list[Row]:
        doomed = _sweepable(self.s, p)
        return [(len(doomed), sum(len(self.s.blobs[ref]["content"]) for ref in doomed))]

    def blob_rows(self, p: Params) -> list[Row]:
        wanted = set(p["refs"]) | set(self.s.modules.values())
        return [tuple(b[name] for name in _BLOB) for ref, b in self.s.blobs.items() if ref in wanted]

    def blob_sizes(self, p: Params) -> list[Row]:
        return [(*(b[name] for name in _BLOB[:5]), len(b["content"])) for b in self.s.blobs.values()]

    def all_blob_rows(self, p: Params) -> list[Row]:
        return [tuple(b[name] for name in _BLOB) for b in self.s.blobs.values()]

    # -- metadata ---------------------------------------------------------

    def save_meta(self, p: Params) -> int:
        self.s.meta = {name: p[name] for name in _META}
        return 1

    def load_meta(self, p: Params) -> list[Row]:
        return [] if self.s.meta is None else [tuple(self.s.meta[name] for name in _META)]

    # -- attachments ------------------------------------------------------

    def record_intent(self, p: Params) -> int:
        row = self.s.attachments.get(p["attachment_id"])
        if row is None:
            self.s.attachments[p["attachment_id"]] = {**{n: p[n] for n in _ATTACHMENT[:4]}, "committed_at_ms": None}
            return 1
        if row["committed_at_ms"] is not None:
            return 0
        row.update(
            session_id=p["session_id"],
            canonical_uri=p["canonical_uri"],
            intent_at_ms=max(row["intent_at_ms"], p["intent_at_ms"]),
        )
        return 1

    def stamp_attachment(self, p: Params) -> int:
        row = self.s.attachments.get(p["attachment_id"])
        if row is None or row["session_id"] != p["session_id"] or row["committed_at_ms"] is not None:
            return 0
        row["committed_at_ms"] = p["committed_at_ms"]
        return 1

    def list_uncommitted(self, p: Params) -> list[Row]:
        rows = [
            r
            for r in self.s.attachments.values()
            if r["committed_at_ms"] is None and r["intent_at_ms"] <= p["older_than_ms"]
        ]
        rows.sort(key=lambda r: (r["intent_at_ms"], r["attachment_id"]))
        return [tuple(r[name] for name in _ATTACHMENT[:4]) for r in rows]

    def forget_attachment(self, p: Params) -> int:
        return int(self.s.attachments.pop(p["attachment_id"], None) is not None)

    def attachment_rows(self, p: Params) -> list[Row]:
        return [tuple(r[name] for name in _ATTACHMENT) for _, r in sorted(self.s.attachments.items())]

    def insert_attachment_row(self, p: Params) -> int:
        self.s.attachments[p["attachment_id"]] = {name: p[name] for name in _ATTACHMENT}
        return 1

    # -- module artifacts -------------------------------------------------

    def pin_module(self, p: Params) -> int:
        self.s.modules[p["module_ref"]] = p["blob_ref"]
        return 1

    def module_blob_ref(self, p: Params) -> list[Row]:
        ref = self.s.modules.get(p["module_ref"])
        return [] if ref is None else [(ref,)]

    def unpin_module(self, p: Params) -> int:
        return int(self.s.modules.pop(p["module_ref"], None) is not None)

    def count_modules(self, p: Params) -> list[Row]:
        return [(len(self.s.modules),)]

    def module_rows(self, p: Params) -> list[Row]:
        return sorted(self.s.modules.items())

    # -- work queue -------------------------------------------------------

    def _session_batches(self, session_id: str) -> list[dict[str, Any]]:
        return sorted(
            (b for b in self.s.batches.values() if b["session_id"] == session_id), key=lambda b: b["enqueue_seq"]
        )

    def batch_by_source_key(self, p: Params) -> list[Row]:
        return [_batch_row(b) for b in self._session_batches(p["session_id"]) if b["source_key"] == p["source_key"]][:1]

    def insert_batch(self, p: Params) -> list[Row]:
        self.s.last_enqueue_seq += 1
        batch = {
            **{name: p[name] for name in _BATCH[1:]},
            "enqueue_seq": self.s.last_enqueue_seq,
            **_NO_CLAIM,
            **_NO_ATTEMPT,
        }
        self.s.batches[p["batch_id"]] = batch
        return [_batch_row(batch)]

    def ready_batches(self, p: Params) -> list[Row]:
        now = p["now_ms"]
        rows = [
            (*_batch_row(b), b["attempts"])
            for b in self._session_batches(p["session_id"])
            if _live(b) and b["available_at_ms"] <= now and b["retry_at_ms"] <= now and _free(b, now)
        ]
        return rows if p.get("limit") is None else rows[: p["limit"]]

    def last_fence(self, p: Params) -> list[Row]:
        fence = self.s.fences.get(p["session_id"])
        return [] if fence is None else [(fence,)]

    def set_fence(self, p: Params) -> int:
        self.s.fences[p["session_id"]] = p["last_fencing_token"]
        return 1

    def mark_claimed(self, p: Params) -> int:
        batch = self.s.batches.get(p["batch_id"])
        if batch is None or batch["session_id"] != p["session_id"] or not _live(batch) or not _free(batch, p["now_ms"]):
            return 0
        batch.update(
            claim_id=p["claim_id"],
            claim_owner_id=p["owner_id"],
            claim_token=p["lease_token"],
            claim_fencing_token=p["fencing_token"],
            claim_claimed_at_ms=p["now_ms"],
            claim_expires_at_ms=p["expires_at_ms"],
            attempts=batch["attempts"] + 1,
            retry_at_ms=p["retry_at_ms"],
            last_owner_id=p["owner_id"],
            last_claimed_at_ms=p["now_ms"],
        )
        return 1

    def _held(self, p: Params) -> list[dict[str, Any]]:
        return [
            b
            for b in self._session_batches(p["session_id"])
            if b["claim_id"] == p["claim_id"] and b["claim_token"] == p["lease_token"]
        ]

    def claimed_batches(self, p: Params) -> list[Row]:
        return [(b["batch_id"], b["claim_fencing_token"], b["attempts"], b["enqueue_seq"]) for b in self._held(p)]

    def held_claim_batches(self, p: Params) -> list[Row]:
        return [(b["batch_id"], b["claim_fencing_token"], b["claim_expires_at_ms"]) for b in self._held(p)]

    def _held_row(self, p: Params) -> dict[str, Any] | None:
        batch = self.s.batches.get(p["batch_id"])
        if (
            batch is None
            or batch["session_id"] != p["session_id"]
            or batch["claim_id"] != p["claim_id"]
            or batch["claim_token"] != p["lease_token"]
            or batch["claim_fencing_token"] != p["fencing_token"]
        ):
            return None
        return batch

    def extend_claim(self, p: Params) -> int:
        batch = self._held_row(p)
        if batch is None:
            return 0
        batch.update(claim_expires_at_ms=p["expires_at_ms"], retry_at_ms=p["retry_at_ms"])
        return 1

    def release_batch(self, p: Params) -> int:
        batch = self.s.batches.get(p["batch_id"])
        if (
            batch is None
            or batch["session_id"] != p["session_id"]
            or batch["claim_id"] != p["claim_id"]
            or batch["claim_token"] != p["lease_token"]
        ):
            return 0
        batch.update(claim_id=None, claim_owner_id=None, claim_token=None)
        batch.update(claim_claimed_at_ms=0, claim_expires_at_ms=0, retry_at_ms=p["retry_at_ms"])
        batch["attempts"] = max(batch["attempts"] - p["uncount"], 0)
        if p["error"] is not None:
            batch["last_error"] = p["error"]
        return 1

    def free_batch(self, p: Params) -> list[Row]:
        batch = self.s.batches.get(p["batch_id"])
        if batch is None or batch["session_id"] != p["session_id"] or not _live(batch) or not _free(batch, p["now_ms"]):
            return []
        return [_batch_row(batch)]

    def batch_by_id(self, p: Params) -> list[Row]:
        batch = self.s.batches.get(p["batch_id"])
        return [] if batch is None or batch["session_id"] != p["session_id"] else [_batch_row(batch)]

    def delete_batch(self, p: Params) -> int:
        if not self.batch_by_id(p):
            return 0
        del self.s.batches[p["batch_id"]]
        return 1

    def delete_claimed_batch(self, p: Params) -> int:
        if self._held_row(p) is None:
            return 0
        del self.s.batches[p["batch_id"]]
        return 1

    def list_batches(self, p: Params) -> list[Row]:
        return [_batch_row(b) for b in self._session_batches(p["session_id"]) if _live(b)]

    def list_pending_batches(self, p: Params) -> list[Row]:
        return [_batch_row(b) for b in self._session_batches(p["session_id"]) if _live(b) and _free(b, p["now_ms"])]

    # -- dead letters -----------------------------------------------------

    def _dead(self, p: Params) -> dict[str, Any] | None:
        batch = self.s.batches.get(p["batch_id"])
        if batch is None or batch["session_id"] != p["session_id"] or _live(batch):
            return None
        return batch

    def dead_letter_exhausted(self, p: Params) -> list[Row]:
        dead = [row[1] for row in self.ready_batches(p) if row[10] >= p["max_attempts"]]
        for batch_id in dead:
            batch = self.s.batches[batch_id]
            batch.update(_NO_CLAIM | {"claim_fencing_token": batch["claim_fencing_token"], "dead_at_ms": p["now_ms"]})
        return [(batch_id,) for batch_id in dead]

    def dead_letters(self, p: Params) -> list[Row]:
        return [_dead_letter_row(b) for b in self._session_batches(p["session_id"]) if not _live(b)]

    def dead_letter_by_id(self, p: Params) -> list[Row]:
        batch = self._dead(p)
        return [] if batch is None else [_dead_letter_row(batch)]

    def requeue_dead_letter(self, p: Params) -> int:
        batch = self._dead(p)
        if batch is None:
            return 0
        batch.update(_NO_ATTEMPT)
        return 1

    def drop_dead_letter(self, p: Params) -> int:
        if self._dead(p) is None:
            return 0
        del self.s.batches[p["batch_id"]]
        return 1

    def batch_rows(self, p: Params) -> list[Row]:
        ordered = sorted(self.s.batches.values(), key=lambda b: b["enqueue_seq"])
        return [tuple(b[name] for name in (*_BATCH, *_CLAIM, *_POISON)) for b in ordered]

    def insert_batch_row(self, p: Params) -> int:
        self.s.batches[p["batch_id"]] = {name: p[name] for name in (*_BATCH, *_CLAIM, *_POISON)}
        return 1

    def fence_rows(self, p: Params) -> list[Row]:
        return sorted(self.s.fences.items())

    def insert_fence_row(self, p: Params) -> int:
        self.s.fences[p["session_id"]] = p["last_fencing_token"]
        return 1

    def last_enqueue_seq(self, p: Params) -> list[Row]:
        return [(self.s.last_enqueue_seq,)]

    def raise_enqueue_seq(self, p: Params) -> int:
        self.s.last_enqueue_seq = max(self.s.last_enqueue_seq, p["seq"])
        return 1

    def session_exists(self, p: Params) -> list[Row]:
        return [(1,)]  # like a file: the session is there while its store is

    def holds_data(self, p: Params) -> list[Row]:
        s = self.s
        parts: tuple[dict[Any, Any], ...] = (s.nodes, s.blobs, s.turn_commits, s.batches, s.fences, s.attachments)
        extra = len(s.modules) + (s.meta is not None) + len(s.staged) + len(s.edges)
        return [(sum(len(part) for part in parts) + extra,)]


class _MemoryTx:
    def __init__(self, queries: Any, options: StoreOptions) -> None:
        self._queries = queries  # an object with one method per query name, over one state
        self._clock = TransactionClock(options.now_ms)

    def now_ms(self) -> int:
        return self._clock.now_ms()

    def _call(self, query: str, params: Params | None) -> Any:
        return getattr(self._queries, query)(params or {})

    def one(self, query: str, params: Params | None = None) -> Row | None:
        rows = self._call(query, params)
        return rows[0] if rows else None

    def all(self, query: str, params: Params | None = None) -> list[Row]:
        return list(self._call(query, params))

    def iter(self, query: str, params: Params | None = None) -> Iterator[Row]:
        return iter(self._call(query, params))

    def run(self, query: str, params: Params | None = None) -> int:
        result = self._call(query, params)
        return len(result) if isinstance(result, list) else int(result)

    def run_many(self, query: str, rows: Sequence[Params]) -> int:
        return sum(self.run(query, row) for row in rows)

    def fetch_many(self, reads: Sequence[tuple[str, Params | None]]) -> list[list[Row]]:
        return [self.all(query, params) for query, params in reads]

    def send(self, query: str, params: Params | None = None) -> None:
        self.run(query, params)

    def send_many(self, query: str, rows: Sequence[Params]) -> None:
        self.run_many(query, rows)


class MemoryBackend:
    """The in-memory backend: a dict state, copied before each write and restored if the write raises.

    ``state`` is the data (the session store's by default) and ``queries``
    builds the object that answers each named query over it, so another
    component (the process registry) is the same backend over its own state.
    """

    name = "reference"

    def __init__(
        self,
        options: StoreOptions,
        state: Any = None,
        queries: Callable[[Any], Any] = _Queries,
    ) -> None:
        self._options = options
        self._state: Any = _State() if state is None else state
        self._make_queries = queries
        self._lock = threading.RLock()

    @property
    def in_memory(self) -> bool:
        return True

    def _current(self) -> Any:
        if self._state is None:
            raise StoreClosed()
        return self._state

    def read(self, body: Callable[[_MemoryTx], T]) -> T:
        with self._lock:
            return body(_MemoryTx(self._make_queries(self._current()), self._options))

    def write(self, body: Callable[[_MemoryTx], T]) -> T:
        with self._lock:
            state = self._current()
            saved = copy.deepcopy(state)
            try:
                return body(_MemoryTx(self._make_queries(state), self._options))
            except BaseException:
                self._state = saved
                raise

    def describe(self) -> dict[str, Any]:
        return {"backend": "reference"}

    def integrity_checks(self) -> list[dict[str, Any]]:
        return []  # plain Python data: nothing below the rows can be damaged

    def compact(self) -> dict[str, Any]:
        return {"compacted": False, "reason": "in-memory data takes no space back"}

    def close(self) -> None:
        self._state = None

    @property
    def closed(self) -> bool:
        return self._state is None


class ReferenceStore(SessionService):
    """The whole store contract over plain Python data, for use as a test oracle and in users' tests."""

    def __init__(self, options: StoreOptions | None = None) -> None:
        options = check_options(StoreOptions(blob_profile=BlobProfile.LOW_LATENCY) if options is None else options)
        super().__init__(MemoryBackend(options), options)

    @classmethod
    def memory(cls, options: StoreOptions | None = None) -> ReferenceStore:
        """Same as the constructor; mirrors ``Store.memory``."""
        return cls(options)

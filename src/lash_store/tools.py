"""Inspection and maintenance of a store on any backend: the logic behind ``lash-store``.

Every command names its store with one string (a SQLite session file, or a
PostgreSQL DSN plus ``session_id``; see :mod:`lash_store.targets`) and goes
through the store's public service, so it works the same on both backends.
Every function returns plain, JSON-ready data; :mod:`lash_store.cli` turns it
into tables or JSON.

Reading functions (:func:`inspect_store`, :func:`history`, :func:`list_sessions`,
:func:`stats`, :func:`verify`, :func:`export_store`, and :func:`gc` with ``dry_run``) open the
store read-only: they never create or modify anything (on SQLite not even a
``-wal``/``-shm`` sidecar).  Writing functions (:func:`gc`, :func:`vacuum`,
:func:`migrate`) never create a store that does not exist; :func:`import_store`
and :func:`copy_store` create a new one, or fill an empty one, and verify it
before the import commits.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from lash_store.core import codec
from lash_store.core import queue as queue_rules
from lash_store.core.checkpoint import decode_manifest
from lash_store.core.usage import decode_totals
from lash_store.errors import (
    CorruptData,
    InvalidInput,
    NotAStoreDatabase,
    SessionsUnreadable,
    StoreError,
    StoreNotFound,
)
from lash_store.model import QueuedWorkDeadLetter, SessionNode, SessionReadScope
from lash_store.options import DEFAULT_FILE_GRACE_MS, KeyRing, StoreOptions, system_clock
from lash_store.processes import ProcessRecord
from lash_store.service.diagnostics import RawRows, detail
from lash_store.service.head import head_from_row
from lash_store.service.registry.service import ProcessRegistryService
from lash_store.service.session import SessionService
from lash_store.service.transfer import SessionDump, dump_from_json, dump_to_json, same_content
from lash_store.sqlite import schema
from lash_store.sqlite.factory import SqliteSessionStoreFactory
from lash_store.sqlite.migrations import inspect_revision, migrate_file
from lash_store.sqlite.store import Store
from lash_store.targets import is_dsn, open_factory, open_registry, open_store

__all__ = [
    "ToolError",
    "backup",
    "copy_store",
    "dead_letters",
    "drop_dead_letter",
    "export_store",
    "gc",
    "history",
    "import_store",
    "inspect_store",
    "list_sessions",
    "message_text",
    "migrate",
    "requeue_dead_letter",
    "show_dead_letter",
    "processes_list",
    "processes_prune",
    "processes_show",
    "stats",
    "using_key_ring",
    "vacuum",
    "verify",
]


T = TypeVar("T")


class ToolError(StoreError):
    """A one-line, user-facing failure of a tool (refused import, bad export file, not a directory)."""


# ---------------------------------------------------------------------------
# Opening stores: readers never write, maintenance never creates

# The key ring of the stores the tools open (encryption at rest); the CLI sets it from --keys.
_KEY_RING: ContextVar[KeyRing | None] = ContextVar("lash_store_tools_key_ring", default=None)


@contextlib.contextmanager
def using_key_ring(ring: KeyRing | None) -> Iterator[None]:
    """Open every store inside the block with ``ring`` (``None``: without one, as outside any block)."""
    token = _KEY_RING.set(ring)
    try:
        yield
    finally:
        _KEY_RING.reset(token)


def _with_ring(options: StoreOptions | None = None) -> StoreOptions | None:
    """``options`` with the block's key ring, unless they name their own."""
    ring = _KEY_RING.get()
    if ring is None:
        return options
    if options is None:
        return StoreOptions(encryption=ring)
    return options if options.encryption is not None else msgspec.structs.replace(options, encryption=ring)


def open_for_reading(target: str | os.PathLike[str], session_id: str | None = None) -> SessionService:
    """The store ``target`` names, read-only (nothing is created or written, on any backend)."""
    return open_store(_text(target), session_id, options=_with_ring(), readonly=True)


def open_for_maintenance(
    target: str | os.PathLike[str], session_id: str | None = None, options: StoreOptions | None = None
) -> SessionService:
    """The existing store ``target`` names, writable; a missing store is :class:`StoreNotFound`, never created."""
    text = _text(target)
    options = _with_ring(options)
    if is_dsn(text):
        from lash_store.postgres import PostgresStore

        if session_id is None:
            raise InvalidInput("session_id", "a PostgreSQL store needs the session id (--session)")
        return PostgresStore.open(text, session_id, options, create=False)
    path = Path(text)
    if not path.exists():
        raise StoreNotFound(text)
    if path.is_dir():
        raise InvalidInput("path", f"{text} is a directory")
    return open_store(text, options=options)


def _text(target: str | os.PathLike[str]) -> str:
    text = os.fspath(target)
    if not isinstance(text, str):
        raise InvalidInput("target", "must be a text path or DSN")
    return text


def _where(store: SessionService, target: str) -> dict[str, Any]:
    """How a report names its store: the file, or the database and session."""
    info = store.describe_backend()
    return {"target": _shown(target), **info}


def _shown(target: str) -> str:
    """A target as reports name it: a path as given, a DSN without its password."""
    if not is_dsn(target):
        return target
    dsn = target
    if dsn.startswith(("postgresql://", "postgres://")):
        scheme, _, rest = dsn.partition("://")
        credentials, at, host = rest.rpartition("@")
        if at and ":" in credentials:
            return f"{scheme}://{credentials.split(':', 1)[0]}:***@{host}"
        return dsn
    return " ".join("password=***" if part.startswith("password=") else part for part in dsn.split())


def message_text(node: SessionNode) -> str:
    """A readable one-string rendering of a node's content (text parts joined, other parts summarised)."""
    payload = node.payload
    if node.kind != "message" or not isinstance(payload, dict):
        return _short_json(payload)
    parts = payload.get("parts")
    pieces: list[str] = []
    for part in parts if isinstance(parts, list) else ():
        if not isinstance(part, dict):
            pieces.append(_short_json(part))
            continue
        kind = part.get("type")
        text = part.get("text")
        if isinstance(text, str):
            pieces.append(text)
        elif kind == "image":
            pieces.append("[image]")
        elif kind == "tool_call":
            pieces.append(f"[tool call {part.get('name', '')}]".replace(" ]", "]"))
        elif kind == "tool_result":
            pieces.append("[tool result]")
        else:
            pieces.append(f"[{kind}]" if isinstance(kind, str) else _short_json(part))
    return "\n\n".join(piece for piece in pieces if piece)


def _short_json(value: Any, limit: int = 200) -> str:
    if value is None:
        return ""
    try:
        text = msgspec.json.encode(value).decode()
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _role(node: SessionNode) -> str:
    payload = node.payload
    if node.kind == "message" and isinstance(payload, dict) and isinstance(payload.get("role"), str):
        return str(payload["role"])
    return node.kind


# ---------------------------------------------------------------------------
# inspect


def inspect_store(
    target: str | os.PathLike[str], session_id: str | None = None, now_ms: int | None = None
) -> dict[str, Any]:
    """Everything about one store, from one read snapshot (damage is reported, not raised)."""
    text = _text(target)
    now = system_clock() if now_ms is None else now_ms
    with open_for_reading(text, session_id) as store:
        rows = store.raw_rows(content=False)
        where = _where(store, text)
        checkpoint = _inspect_checkpoint(store, rows)
    head_info, usage = _inspect_head(rows)
    live = sum(1 for row in rows.nodes if not row[2])
    counters = _counters(rows)
    return {
        **where,
        "session": _meta(rows),
        "head": head_info,
        "graph": {
            "node_count": counters[0],
            "user_message_count": counters[1],
            "live_rows": live,
            "tombstoned_rows": len(rows.nodes) - live,
        },
        "checkpoint": checkpoint,
        "usage": usage,
        "usage_total": {
            key: sum(entry[key] for entry in usage)
            for key in ("input_tokens", "output_tokens", "cached_input_tokens", "reasoning_tokens")
        },
        "turn_commits": len(rows.turn_commits),
        "queue": _inspect_queue(rows, now),
        "attachments": [
            dict(
                zip(
                    ("attachment_id", "session_id", "canonical_uri", "intent_at_ms", "committed_at_ms"),
                    row,
                    strict=True,
                )
            )
            for row in sorted(rows.attachments, key=lambda r: (r[3], r[0]))
        ],
        "module_artifacts": [
            {
                "module_ref": module_ref,
                "blob_ref": blob_ref,
                "present": blob_ref in _blobs(rows),
                "raw_bytes": _blobs(rows)[blob_ref][3] if blob_ref in _blobs(rows) else None,
            }
            for module_ref, blob_ref in rows.modules
        ],
        "blobs": _inspect_blobs(rows),
    }


def _counters(rows: RawRows) -> tuple[int, int]:
    try:
        head = head_from_row(rows.head)
    except CorruptData:
        return 0, 0
    return head.node_count, head.user_message_count


def _blobs(rows: RawRows) -> dict[str, tuple[Any, ...]]:
    return {row[0]: row for row in rows.blobs}


def _inspect_head(rows: RawRows) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    try:
        head = head_from_row(rows.head)
    except CorruptData as exc:
        return {"error": detail(exc)}, []
    usage: list[dict[str, Any]] = []
    with contextlib.suppress(CorruptData):  # verify reports a damaged ledger; inspect shows what it can
        usage = [
            {"source": source, "model": model, **msgspec.structs.asdict(totals)}
            for (source, model), totals in decode_totals(head.usage_ledger).items()
        ]
    if not head.bound or head.body is None:
        return None, usage
    info: dict[str, Any] = {
        "session_id": head.session_id,
        "head_revision": head.head_revision,
        "leaf_node_id": head.leaf_node_id,
        "checkpoint_ref": head.checkpoint_ref,
    }
    try:
        body = codec.decode("session head", head.body, codec.HeadBody)
        info.update(
            config=body.config,
            agent_frame_count=len(body.agent_frames),
            current_agent_frame_id=body.current_agent_frame_id,
        )
    except CorruptData as exc:
        info["error"] = str(exc)
    return info, usage


def _blob_info(rows: RawRows, ref: str | None) -> dict[str, Any] | None:
    if ref is None:
        return None
    row = _blobs(rows).get(ref)
    if row is None:
        return {"ref": ref, "present": False, "encoding": None, "kind": None, "raw_bytes": None, "stored_bytes": None}
    return {
        "ref": ref,
        "present": True,
        "encoding": row[1],
        "kind": row[2],
        "raw_bytes": row[3],
        "stored_bytes": row[5],
    }


def _inspect_checkpoint(store: SessionService, rows: RawRows) -> dict[str, Any] | None:
    try:
        ref = head_from_row(rows.head).checkpoint_ref
    except CorruptData:
        return None
    info = _blob_info(rows, ref)
    if ref is None or info is None:
        return None
    result: dict[str, Any] = {"ref": ref, "manifest": info, "turn_state": None, "children": []}
    if not info["present"]:
        result["error"] = f"checkpoint manifest {ref} is missing"
        return result
    try:
        manifest = decode_manifest(ref, store.get_blob(ref) or b"")
    except CorruptData as exc:
        result["error"] = str(exc)
        return result
    result["turn_state"] = manifest.turn_state
    result["plugin_snapshot_revision"] = manifest.plugin_snapshot_revision
    children = (
        ("tool_state", manifest.tool_state_ref),
        ("plugin_snapshot", manifest.plugin_snapshot_ref),
        ("execution_state", manifest.execution_state_ref),
    )
    result["children"] = [{"role": role, **(_blob_info(rows, child) or {})} for role, child in children if child]
    return result


def _inspect_queue(rows: RawRows, now: int) -> dict[str, Any]:
    batches = []
    for row in rows.batches:
        stored, claim, poison = row[:10], row[10:16], row[16:22]
        entry: dict[str, Any] = dict(zip(queue_rules.BatchRow.__struct_fields__[:9], stored[:9], strict=True))
        entry["ready"] = isinstance(stored[7], int) and stored[7] <= now
        try:
            batch = queue_rules.decode_batch(tuple(stored))
            entry["items"] = len(batch.items)
            entry["kinds"] = sorted({item.payload.kind for item in batch.items})
        except Exception as exc:  # damaged stored data of any shape is reported, not raised
            entry["items"] = None
            entry["error"] = str(exc)
        claim_id, owner, token, fence, claimed_at, expires = claim
        entry["claim"] = (
            None
            if token is None
            else {
                "claim_id": claim_id,
                "owner_id": owner,
                "fencing_token": fence,
                "claimed_at_ms": claimed_at,
                "expires_at_ms": expires,
                "expired": isinstance(expires, int) and expires <= now,
            }
        )
        attempts, retry_at, _last_owner, _last_claimed_at, last_error, dead_at = poison
        entry["attempts"] = attempts
        entry["retry_at_ms"] = retry_at
        entry["dead_lettered_at_ms"] = dead_at
        entry["last_error"] = last_error
        if dead_at is not None or (isinstance(retry_at, int) and retry_at > now):
            entry["ready"] = False
        batches.append(entry)
    return {"now_ms": now, "batches": batches, "last_fencing_tokens": dict(rows.fences)}


def _inspect_blobs(rows: RawRows) -> dict[str, Any]:
    by_kind: dict[str, dict[str, int]] = {}
    for _ref, encoding, kind, raw, _created, stored in rows.blobs:
        entry = by_kind.setdefault(kind or "raw", {"count": 0, "raw_bytes": 0, "stored_bytes": 0, "zstd": 0})
        entry["count"] += 1
        entry["raw_bytes"] += raw if isinstance(raw, int) else 0
        entry["stored_bytes"] += stored if isinstance(stored, int) else 0
        entry["zstd"] += encoding == codec.ENCODING_ZSTD
    return {
        "count": len(rows.blobs),
        "raw_bytes": sum(e["raw_bytes"] for e in by_kind.values()),
        "stored_bytes": sum(e["stored_bytes"] for e in by_kind.values()),
        "by_kind": dict(sorted(by_kind.items())),
    }


def _meta(rows: RawRows) -> dict[str, Any] | None:
    if rows.meta is None:
        return None
    session_id, name, created_at, model, cwd, relation = rows.meta
    meta: dict[str, Any] = {
        "session_id": session_id,
        "session_name": name,
        "created_at": created_at,
        "model": model,
        "cwd": cwd,
    }
    try:
        meta["relation"] = msgspec.structs.asdict(codec.decode_relation(relation))
    except CorruptData as exc:
        meta["relation"] = None
        meta["relation_error"] = exc.detail
    return meta


# ---------------------------------------------------------------------------
# history


def history(
    target: str | os.PathLike[str],
    session_id: str | None = None,
    *,
    active_path: bool = False,
    limit: int | None = None,
) -> dict[str, Any]:
    """The conversation: every live node in order, or the active path to the leaf; the last ``limit`` nodes."""
    text = _text(target)
    scope = SessionReadScope.active_path() if active_path else SessionReadScope.full_graph()
    with open_for_reading(text, session_id) as store:
        read = store.load_session(scope)
        meta = store.load_session_meta() if read is None else None
    nodes = [] if read is None else read.graph.nodes
    total = len(nodes)
    start = max(0, total - limit) if limit is not None else 0
    return {
        "target": _shown(text),
        "session_id": read.session_id if read is not None else (meta.session_id if meta else session_id),
        "head_revision": read.head_revision if read is not None else 0,
        "leaf_node_id": read.graph.leaf_node_id if read is not None else None,
        "scope": "active_path" if active_path else "full_graph",
        "total": total,
        "shown": total - start,
        "nodes": [
            {
                "index": index,
                "node_id": node.node_id,
                "parent_node_id": node.parent_node_id,
                "kind": node.kind,
                "role": _role(node),
                "text": message_text(node),
                "timestamp_ms": node.timestamp_ms,
                "agent_frame_id": node.agent_frame_id,
                "payload": node.payload,
            }
            for index, node in enumerate(nodes[start:], start=start + 1)
        ],
    }


# ---------------------------------------------------------------------------
# sessions


def list_sessions(
    root: str | os.PathLike[str],
    *,
    limit: int | None = None,
    after: str | None = None,
    recent: bool = False,
    cursor: str | None = None,
) -> dict[str, Any]:
    """The sessions of a factory root or a PostgreSQL database; unreadable ones are listed with their error.

    By session id (``after``: the previous page's last id), or with ``recent`` the most recently written
    first, a page of ``limit`` (default 50) at a time (``cursor``: the previous page's ``next_cursor``).
    """
    if recent and after is not None:
        raise ToolError("--after pages the listing by id; with --recent pass --cursor")
    if cursor is not None and not recent:
        raise ToolError("--cursor pages the --recent listing")
    text = _text(root)
    if not is_dsn(text):
        directory = Path(text)
        if not directory.exists():
            raise StoreNotFound(text)
        if not directory.is_dir():
            raise ToolError(f"{text} is not a directory (sessions lists a factory root or a PostgreSQL database)")
    factory = open_factory(text, _with_ring())
    shown = _shown(text)
    if recent:
        found = factory.recent_sessions(limit=50 if limit is None else limit, cursor=cursor)
        sessions = [
            {**_session_row(text, factory, item.info.session_id, item.info), "updated_at_ms": item.updated_at_epoch_ms}
            for item in found.sessions
        ]
        errors = [{"path": where, "error": error} for where, error in found.failures]
        return {"root": shown, "sessions": sessions, "errors": errors, "next_cursor": found.next_cursor}
    errors = []
    try:
        infos = factory.list_sessions(limit=limit, after=after)
    except SessionsUnreadable as exc:
        infos = exc.sessions
        errors = [{"path": where, "error": " ".join(str(error).split())} for where, error in exc.failures]
    sessions = [_session_row(text, factory, info.session_id, info) for info in infos]
    return {"root": shown, "sessions": sessions, "errors": errors}


def _session_row(root: str, factory: Any, session_id: str, info: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "session_id": session_id,
        "cwd": info.cwd,
        "first_user_message": info.first_user_message,
        "user_messages": info.user_message_count,
    }
    target, partition = (root, session_id) if is_dsn(root) else (str(factory.path_for_session(session_id)), None)
    row["path"] = target if not is_dsn(root) else None
    try:
        with open_for_reading(target, partition) as store:
            meta = store.load_session_meta()
            read_rows = store.raw_rows(content=False)
            size = store.describe_backend().get("file", {}).get("size_bytes")
    except (StoreError, OSError) as exc:
        row["error"] = " ".join(str(exc).split())
        return row
    head = head_from_row(read_rows.head)
    row.update(
        session_name=meta.session_name if meta else None,
        model=meta.model if meta else None,
        created_at=meta.created_at if meta else None,
        head_revision=head.head_revision,
        messages=head.node_count,
        queued_batches=len(read_rows.batches),
        size_bytes=size,
    )
    return row


# ---------------------------------------------------------------------------
# stats


def stats(target: str | os.PathLike[str], session_id: str | None = None, *, top: int = 10) -> dict[str, Any]:
    """Sizes, counts and growth of one store, or summed over a factory root or a database (``top`` largest).

    ``target`` is a session file, a PostgreSQL DSN with ``session_id`` (one
    store), a factory root directory, or a DSN without ``session_id`` (every
    session).  Everything is read through read-only stores; every row of every
    session is read once.  See :func:`_store_stats` for what is counted.
    """
    text = _text(target)
    if is_dsn(text):
        return _store_stats(text, session_id) if session_id is not None else _root_stats(text, top)
    path = Path(text)
    if path.is_dir():
        if session_id is not None:
            raise ToolError("--session applies to a PostgreSQL DSN; give the session's file instead")
        return _root_stats(text, top)
    return _store_stats(text, session_id)


def _store_stats(target: str, session_id: str | None) -> dict[str, Any]:
    """One store.  ``stored_bytes`` is what it occupies: on SQLite the database file plus its WAL, on
    PostgreSQL (whose tables hold every session) the bytes of the session's stored content.
    ``content_bytes`` is that content on every backend: encoded node bodies, blobs as stored (compressed),
    turn-stamp records and queued payloads.  Growth divides it by the head revision (one per commit) and by
    the turn stamps: an average over the session's life of what is still kept (after GC and vacuum)."""
    with open_for_reading(target, session_id) as store:
        rows = store.raw_rows(content=False)
        where = _where(store, target)
    revision: int | None = None
    bound_session = None
    head_error = None
    try:
        head = head_from_row(rows.head)
        revision, bound_session = head.head_revision, head.session_id
    except CorruptData as exc:
        head_error = detail(exc)
    meta_session = rows.meta[0] if rows.meta is not None else None
    content = {
        "nodes": sum(_length(row[4]) for row in rows.nodes),
        "blobs": sum(row[5] if isinstance(row[5], int) else 0 for row in rows.blobs),  # stored length
        "turn_commits": sum(_length(row[2]) for row in rows.turn_commits),
        "queue": sum(_length(row[9]) for row in rows.batches),
    }
    content_total = sum(content.values())
    files = None
    if where["backend"] == "sqlite" and where.get("path"):  # the pages are in where["file"]
        files = {"database_bytes": _file_size(where["path"]), "wal_bytes": _file_size(where["path"] + "-wal")}
    stored = files["database_bytes"] + files["wal_bytes"] if files is not None else content_total
    live = sum(1 for row in rows.nodes if not row[2])
    turns = len(rows.turn_commits)
    return {
        "kind": "store",
        **where,
        "session_id": bound_session or meta_session or session_id,
        "head_revision": revision,
        **({"head_error": head_error} if head_error else {}),
        "files": files,
        "stored_bytes": stored,
        "content_bytes": {**content, "total": content_total},
        "counts": {
            "nodes": live,
            "tombstoned_nodes": len(rows.nodes) - live,
            "blobs": len(rows.blobs),
            "turn_commits": turns,
            "queue_batches": len(rows.batches),
            "claimed_batches": sum(1 for row in rows.batches if row[12] is not None),
            "attachments": len(rows.attachments),
            "uncommitted_attachments": sum(1 for row in rows.attachments if row[4] is None),
            "module_artifacts": len(rows.modules),
        },
        "blobs": _inspect_blobs(rows),
        "growth": {
            "commits": revision,
            "turns": turns,
            "stored_bytes_per_commit": stored / revision if revision else None,
            "content_bytes_per_commit": content_total / revision if revision else None,
            "content_bytes_per_turn": content_total / turns if turns else None,
        },
    }


def _length(value: Any) -> int:
    return len(value) if isinstance(value, (bytes, str)) else 0


def _file_size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


_SUMMED_COUNTS = (
    "nodes",
    "tombstoned_nodes",
    "blobs",
    "turn_commits",
    "queue_batches",
    "claimed_batches",
    "attachments",
    "uncommitted_attachments",
    "module_artifacts",
)


def _root_stats(root: str, top: int) -> dict[str, Any]:
    """Every session of a factory root (each session file in it) or of a database; unreadable ones are errors."""
    sessions: list[dict[str, Any]] = []
    errors: list[dict[str, str]] = []
    for target, partition in _root_sessions(root, errors):
        try:
            sessions.append(_store_stats(target, partition))
        except NotAStoreDatabase:
            continue  # another application's file in the directory is no session
        except (StoreError, OSError) as exc:
            errors.append({"path": target if partition is None else f"session {partition!r}", "error": _line(exc)})
    largest = sorted(
        sessions,
        key=lambda entry: (-entry["stored_bytes"], -entry["content_bytes"]["total"], str(entry["session_id"])),
    )[:top]
    content_total = sum(entry["content_bytes"]["total"] for entry in sessions)
    commits = sum(entry["head_revision"] or 0 for entry in sessions)
    return {
        "kind": "root",
        "root": _shown(root),
        "backend": "postgres" if is_dsn(root) else "sqlite",
        "sessions": len(sessions),
        "stored_bytes": sum(entry["stored_bytes"] for entry in sessions),
        "content_bytes": {
            key: sum(entry["content_bytes"][key] for entry in sessions)
            for key in ("nodes", "blobs", "turn_commits", "queue", "total")
        },
        "counts": {key: sum(entry["counts"][key] for entry in sessions) for key in _SUMMED_COUNTS},
        "commits": commits,
        "content_bytes_per_commit": content_total / commits if commits else None,
        "largest": [
            {
                "session_id": entry["session_id"],
                "path": entry.get("path"),
                "stored_bytes": entry["stored_bytes"],
                "content_bytes": entry["content_bytes"]["total"],
                "head_revision": entry["head_revision"],
                "nodes": entry["counts"]["nodes"],
                "blobs": entry["counts"]["blobs"],
            }
            for entry in largest
        ],
        "errors": errors,
    }


def _root_sessions(root: str, errors: list[dict[str, str]]) -> list[tuple[str, str | None]]:
    """``(target, partition)`` of each session: every ``*.db`` file of a root, or every listed partition."""
    if not is_dsn(root):
        found: list[tuple[str, str | None]] = []
        for file, problem in _session_files(Path(root)):
            if problem is not None:
                errors.append({"path": str(file), "error": _line(problem)})
            elif file.is_file():
                found.append((str(file), None))
        return found
    factory = open_factory(root, _with_ring())
    try:
        infos = factory.list_sessions()
    except SessionsUnreadable as exc:
        infos = exc.sessions
        errors.extend({"path": where, "error": _line(error)} for where, error in exc.failures)
    return [(root, info.session_id) for info in infos]


def _line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


# ---------------------------------------------------------------------------
# prune


def prune(
    target: str | os.PathLike[str],
    session_id: str | None = None,
    *,
    stamps_older_than_ms: int | None = None,
    idle_sessions_ms: int | None = None,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Retention: turn stamps older than a horizon, of one store or of every session of a root or database;
    for a root or database also the sessions idle longer than ``idle_sessions_ms``.

    Idle sessions go first (their stamps need no pruning then).  With
    ``dry_run`` everything is counted and nothing changes (the stamps of the
    idle sessions are counted too, since they stay).
    """
    text = _text(target)
    one_store = session_id is not None or (not is_dsn(text) and not Path(text).is_dir())
    if one_store and idle_sessions_ms is not None:
        raise ToolError("--idle-sessions applies to a factory root or a database, not to one session")
    deleted: list[str] = []
    if not one_store and idle_sessions_ms is not None:
        deleted = open_factory(text, _with_ring()).prune_idle_sessions(idle_sessions_ms, dry_run=dry_run)
    errors: list[dict[str, str]] = []
    stores = [(text, session_id)] if one_store else _root_sessions(text, errors)
    stamps = 0
    for store_target, partition in stores:
        try:
            opened = open_for_reading if dry_run else open_for_maintenance
            with opened(store_target, partition) as store:
                report = store.prune(dry_run=dry_run, turn_stamps_older_than_ms=stamps_older_than_ms)
            stamps += report.turn_stamp_count
        except NotAStoreDatabase:
            continue
        except (StoreError, OSError) as exc:
            if one_store:
                raise
            errors.append(
                {"path": store_target if partition is None else f"session {partition!r}", "error": _line(exc)}
            )
    return {
        "target": _shown(text),
        "dry_run": dry_run,
        "stamps_older_than_ms": stamps_older_than_ms,
        "idle_sessions_ms": idle_sessions_ms,
        "turn_stamps": stamps,
        "idle_sessions": deleted,
        "errors": errors,
    }


# ---------------------------------------------------------------------------
# rekey (encryption at rest)


def load_key_ring(path: str | os.PathLike[str]) -> KeyRing:
    """The key ring of a JSON key file (``KeyRing.to_json``); a bad file is :class:`InvalidInput`."""
    try:
        text = Path(path).read_bytes()
    except OSError as exc:
        raise InvalidInput("keys", f"cannot read the key file {os.fspath(path)}: {exc.strerror}") from exc
    return KeyRing.from_json(text)


def rekey(
    target: str | os.PathLike[str],
    session_id: str | None = None,
    *,
    ring: KeyRing,
    batch_size: int = 500,
) -> dict[str, Any]:
    """Re-seal one store, or every session of a factory root or database, under the ring's current key.

    Each store goes in batches of ``batch_size`` rows (one short transaction
    each, safe while writers run); an interrupted run is resumed by running it
    again.  ``remaining_key_ids`` lists key ids still in use anywhere.
    """
    text = _text(target)
    options = StoreOptions(encryption=ring)
    one_store = session_id is not None or (not is_dsn(text) and not Path(text).is_dir())
    errors: list[dict[str, str]] = []
    if one_store:
        stores: list[tuple[str, str | None]] = [(text, session_id)]
    elif is_dsn(text):
        stores = [(text, info.session_id) for info in open_factory(text, options).list_sessions()]
    else:
        stores = _root_sessions(text, errors)
    resealed: dict[str, int] = {}
    remaining: set[str] = set()
    count = 0
    for store_target, partition in stores:
        try:
            with open_for_maintenance(store_target, partition, options) as store:
                report = store.rekey(batch_size=batch_size)
        except NotAStoreDatabase:
            continue
        except (StoreError, OSError) as exc:
            if one_store:
                raise
            errors.append(
                {"path": store_target if partition is None else f"session {partition!r}", "error": _line(exc)}
            )
            continue
        count += 1
        for table, changed in report.resealed.items():
            resealed[table] = resealed.get(table, 0) + changed
        remaining.update(report.remaining_key_ids)
    return {
        "target": _shown(text),
        "key_id": ring.current,
        "stores": count,
        "resealed": resealed,
        "remaining_key_ids": sorted(remaining),
        "errors": errors,
    }


# ---------------------------------------------------------------------------
# gc and vacuum


def gc(
    target: str | os.PathLike[str],
    session_id: str | None = None,
    *,
    grace_ms: int | None = None,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Run the store's garbage collector (``gc_unreachable``); with ``dry_run`` report and change nothing."""
    text = _text(target)
    grace = DEFAULT_FILE_GRACE_MS if grace_ms is None else grace_ms
    opened = open_for_reading(text, session_id) if dry_run else open_for_maintenance(text, session_id)
    with opened as store:
        report, deleted_bytes = store.gc_plan(dry_run=dry_run, grace_ms=grace)
    return {
        "target": _shown(text),
        "dry_run": dry_run,
        "grace_ms": grace,
        "root_count": report.root_count,
        "retained_blob_count": report.retained_blob_count,
        "deleted_blob_count": report.deleted_blob_count,
        "deleted_bytes": deleted_bytes,
        "skipped_reason": report.skipped_reason,
    }


def vacuum(target: str | os.PathLike[str], session_id: str | None = None, *, compact: bool = True) -> dict[str, Any]:
    """Remove tombstoned nodes (``vacuum``), then let the backend give space back (SQLite rebuilds the file)."""
    text = _text(target)
    with open_for_maintenance(text, session_id) as store:
        report = store.vacuum()
        space = store.compact() if compact else {"compacted": False}
    return {
        "target": _shown(text),
        "removed_node_count": report.removed_node_count,
        **space,
    }


# ---------------------------------------------------------------------------
# Dead letters (poison work): list and show read; requeue and drop write


def _queue_of(store: SessionService, session_id: str | None, queue: str | None) -> str:
    """The queue a dead-letter command works on: ``queue``, else the store's own session id."""
    if queue is not None:
        return queue
    if session_id is not None:
        return session_id
    meta = store.load_session_meta()
    if meta is not None:
        return meta.session_id
    read = store.load_session(SessionReadScope.active_path())
    if read is not None:
        return read.session_id
    raise InvalidInput("queue", "the store names no session yet: give the queue's session id (--queue)")


def _letter_summary(letter: QueuedWorkDeadLetter) -> dict[str, Any]:
    batch = letter.batch
    return {
        "batch_id": batch.batch_id,
        "enqueue_seq": batch.enqueue_seq,
        "source_key": batch.source_key,
        "delivery_policy": batch.delivery_policy.value,
        "slot_policy": batch.slot_policy.value,
        "enqueued_at_ms": batch.enqueued_at_ms,
        "attempts": letter.attempts,
        "dead_lettered_at_ms": letter.dead_lettered_at_ms,
        "last_owner_id": letter.last_owner_id,
        "last_claimed_at_ms": letter.last_claimed_at_ms,
        "last_error": letter.last_error,
        "items": len(batch.items),
        "kinds": sorted({item.payload.kind for item in batch.items}),
    }


def _letter_detail(letter: QueuedWorkDeadLetter) -> dict[str, Any]:
    batch = letter.batch
    return {
        **_letter_summary(letter),
        "merge_key": msgspec.to_builtins(batch.merge_key),
        "available_at_ms": batch.available_at_ms,
        "payloads": [
            {"item_id": item.item_id, **msgspec.to_builtins(item.payload, builtin_types=(bytes,))}
            for item in batch.items
        ],
    }


def dead_letters(
    target: str | os.PathLike[str], session_id: str | None = None, *, queue: str | None = None
) -> dict[str, Any]:
    """The queue's dead letters, oldest enqueue first (read-only: nothing is created or written)."""
    text = _text(target)
    with open_for_reading(text, session_id) as store:
        name = _queue_of(store, session_id, queue)
        letters = store.list_dead_letters(name)
    return {
        "target": _shown(text),
        "queue": name,
        "dead_letters": [_letter_summary(letter) for letter in letters],
    }


def show_dead_letter(
    target: str | os.PathLike[str], batch_id: str, session_id: str | None = None, *, queue: str | None = None
) -> dict[str, Any]:
    """One dead letter in full, payloads included (read-only); :class:`ToolError` if the batch is not one."""
    shown, name, letter = _on_dead_letter(target, session_id, queue, batch_id, SessionService.get_dead_letter)
    return {"target": shown, "queue": name, **_letter_detail(letter)}


def requeue_dead_letter(
    target: str | os.PathLike[str], batch_id: str, session_id: str | None = None, *, queue: str | None = None
) -> dict[str, Any]:
    """Put a dead letter back in its queue (same id and place, attempts reset); :class:`ToolError` if not one."""
    act = SessionService.requeue_dead_letter
    shown, name, batch = _on_dead_letter(target, session_id, queue, batch_id, act, write=True)
    return {"target": shown, "queue": name, "requeued": {"batch_id": batch.batch_id, "enqueue_seq": batch.enqueue_seq}}


def drop_dead_letter(
    target: str | os.PathLike[str], batch_id: str, session_id: str | None = None, *, queue: str | None = None
) -> dict[str, Any]:
    """Delete a dead letter for good; returns it as it was.  :class:`ToolError` if the batch is not one."""
    act = SessionService.drop_dead_letter
    shown, name, letter = _on_dead_letter(target, session_id, queue, batch_id, act, write=True)
    return {"target": shown, "queue": name, "dropped": _letter_summary(letter)}


def _on_dead_letter(
    target: str | os.PathLike[str],
    session_id: str | None,
    queue: str | None,
    batch_id: str,
    act: Callable[[SessionService, str, str], T | None],
    *,
    write: bool = False,
) -> tuple[str, str, T]:
    """``act(store, queue, batch_id)`` on the store ``target`` names: (the target shown, the queue, the result);
    :class:`ToolError` when the batch is not a dead letter of that queue."""
    text = _text(target)
    with (open_for_maintenance if write else open_for_reading)(text, session_id) as store:
        name = _queue_of(store, session_id, queue)
        found = act(store, name, batch_id)
    if found is None:
        raise ToolError(f"{batch_id} is not a dead letter of queue {name!r}")
    return _shown(text), name, found


def backup(source: str | os.PathLike[str], dest: str | os.PathLike[str]) -> dict[str, Any]:
    """An online backup of a SQLite session file to the new file ``dest``, then ``verify`` of the copy."""
    text = _text(source)
    if is_dsn(text):
        raise ToolError(
            "backup copies a SQLite session file; for PostgreSQL use pg_dump (the whole database) "
            "or `lash-store export` (one session)"
        )
    with open_for_reading(text) as store:
        assert isinstance(store, Store)  # a file path opens a SQLite store
        data = store.backup(dest)
    with open_for_reading(data["destination"]) as copy:
        head = copy.load_session(SessionReadScope.active_path())
        checks = copy.verify()
    problems = [f"{check['name']}: {problem}" for check in checks for problem in check["problems"]]
    return {
        **data,
        "head_revision": None if head is None else head.head_revision,
        "ok": not problems,
        "problems": problems,
    }


# ---------------------------------------------------------------------------
# verify


def verify(target: str | os.PathLike[str], session_id: str | None = None) -> dict[str, Any]:
    """Check a store thoroughly; ``ok`` is False and each problem is listed when anything is wrong."""
    text = _text(target)
    with open_for_reading(text, session_id) as store:
        checks = store.verify()
    problems = [f"{check['name']}: {problem}" for check in checks for problem in check["problems"]]
    return {
        "target": _shown(text),
        "ok": not problems,
        "checks": checks,
        "problems": problems,
    }


# ---------------------------------------------------------------------------
# export, import and copy


def export_store(target: str | os.PathLike[str], session_id: str | None = None) -> SessionDump:
    """The store's whole content in the backend-neutral dump format, from one snapshot."""
    with open_for_reading(_text(target), session_id) as store:
        return store.export_session()


def export_bytes(dump: SessionDump) -> bytes:
    return dump_to_json(dump)


def check_export_destination(source: str, output: str) -> None:
    """An export never overwrites the store it reads (nor its -wal/-shm), even with --force."""
    if is_dsn(source):
        return
    out = os.path.realpath(output)
    for suffix in ("", "-wal", "-shm", "-journal"):
        if out == os.path.realpath(f"{source}{suffix}"):
            raise ToolError(f"refusing to overwrite the store being exported ({output})")
        with contextlib.suppress(OSError):
            if os.path.samefile(output, f"{source}{suffix}"):
                raise ToolError(f"refusing to overwrite the store being exported ({output})")


def read_export(file: str | os.PathLike[str]) -> SessionDump:
    """Parse an export file (``-`` reads standard input); anything malformed is one :class:`ToolError` line."""
    source = os.fspath(file)
    try:
        data = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    except FileNotFoundError as exc:
        raise ToolError(f"export file {source} does not exist") from exc
    except OSError as exc:
        raise ToolError(f"cannot read {source}: {exc.strerror}") from exc
    try:
        return dump_from_json(data)
    except InvalidInput as exc:
        raise ToolError(f"{source}: {exc.detail}") from exc


def dump_session_id(dump: SessionDump) -> str | None:
    """The session a dump holds, after checking that its head and its metadata agree on it."""
    claimed = {record.session_id for record in (dump.head, dump.meta) if record is not None}
    if len(claimed) > 1:
        raise ToolError(f"the export contradicts itself: head and metadata name sessions {sorted(claimed)}")
    return next(iter(claimed), None)


def import_store(
    file: str | os.PathLike[str], target: str | os.PathLike[str], session_id: str | None = None
) -> dict[str, Any]:
    """Recreate an exported session in a new or empty store (a file, a factory root, or a PostgreSQL DSN).

    Everything is written in one transaction and verified before it commits;
    a target that already holds data is refused untouched, and a file this
    import created is removed again when it fails.
    """
    dump = read_export(file)
    result = _import(dump, _text(target), session_id)
    return {"source": os.fspath(file), **result}


def _import(dump: SessionDump, target: str, session_id: str | None) -> dict[str, Any]:
    claimed = dump_session_id(dump)
    if is_dsn(target):
        partition = session_id or claimed
        if partition is None:
            raise ToolError("the export names no session id; give one with --session")
        with open_store(target, partition, options=_with_ring()) as store:
            store.import_session(dump)
        return {"target": _shown(target), "session_id": partition, "created": True, **_counts(dump)}
    destination = Path(target)
    if destination.is_dir():
        if claimed is None:
            raise ToolError("the export names no session id, so it cannot be placed in a factory root; give a file")
        if session_id is not None and session_id != claimed:
            raise ToolError(f"the export holds session {claimed!r}, not {session_id!r}")
        destination = SqliteSessionStoreFactory(destination).path_for_session(claimed)
    if not destination.parent.is_dir():
        raise ToolError(f"directory {destination.parent} does not exist")
    created = not destination.exists()
    try:
        with open_store(str(destination), options=_with_ring()) as store:
            store.import_session(dump)
    except BaseException:
        if created:  # a file this import made and nobody else can have opened yet
            for suffix in ("", "-wal", "-shm", "-journal"):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(f"{destination}{suffix}")
        raise
    return {"target": str(destination), "session_id": claimed, "created": created, **_counts(dump)}


def _counts(dump: SessionDump) -> dict[str, Any]:
    return {
        "rows": {
            "nodes": len(dump.nodes),
            "blobs": len(dump.blobs),
            "turn_commits": len(dump.turn_commits),
            "batches": len(dump.batches),
            "attachments": len(dump.attachments),
            "modules": len(dump.modules),
        },
        "head_revision": dump.head.head_revision if dump.head else 0,
    }


def copy_store(
    source: str | os.PathLike[str],
    destination: str | os.PathLike[str],
    *,
    session_id: str | None = None,
    to_session: str | None = None,
) -> dict[str, Any]:
    """Move a session between stores of any backend (SQLite to PostgreSQL and back), then prove the copy.

    The copy is read back and must equal the source's export exactly.
    """
    src, dst = _text(source), _text(destination)
    dump = export_store(src, session_id)
    result = _import(dump, dst, to_session or session_id)
    copied_target = result["target"] if not is_dsn(dst) else dst
    copied = export_store(copied_target, result["session_id"] if is_dsn(dst) else None)
    if not same_content(copied, dump):
        raise ToolError("the copy does not read back equal to its source")
    return {"source": _shown(src), **result, "verified": True}


# ---------------------------------------------------------------------------
# migrate


def migrate(paths: Sequence[str | os.PathLike[str]], *, check: bool = False) -> dict[str, Any]:
    """Bring session files to the current layout revision, one transaction per file.

    Each path is a session file or a factory root directory (every ``*.db``
    directly inside it).  Every file gets one entry: ``status`` is
    ``migrated`` (``revision`` is the one it had), ``current``, or ``error``
    (``error`` says why; the file was left untouched).  With ``check`` nothing
    is changed and a file that needs a migration is ``needs_migration``.
    ``ok`` is false when any file failed, or, with ``check``, needs migrating.
    A path that does not exist is an error: no database is ever created.
    """
    files: list[dict[str, Any]] = []
    seen: set[str] = set()
    for path in paths:
        for file, problem in _session_files(Path(path)):
            key = os.path.realpath(file)
            if key in seen:  # named twice (itself and its directory, say): migrate and report it once
                continue
            seen.add(key)
            entry: dict[str, Any] = {"path": str(file), "status": "error", "revision": None, "error": None}
            try:
                if problem is not None:
                    raise problem
                if check:
                    revision, needed = inspect_revision(file)
                    entry.update(status="needs_migration" if needed else "current", revision=revision)
                else:
                    found = migrate_file(file)
                    entry.update(
                        status="current" if found is None else "migrated",
                        revision=schema.LAYOUT_REVISION if found is None else found,
                    )
            except (StoreError, OSError) as exc:
                entry["error"] = {"type": type(exc).__name__, "message": " ".join(str(exc).split())}
            files.append(entry)
    summary = {
        status: sum(1 for entry in files if entry["status"] == status)
        for status in ("migrated", "needs_migration", "current", "error")
    }
    ok = summary["error"] == 0 and summary["needs_migration"] == 0
    return {"check": check, "layout_revision": schema.LAYOUT_REVISION, "files": files, "summary": summary, "ok": ok}


def _session_files(path: Path) -> Iterator[tuple[Path, Exception | None]]:
    """The files a migrate path names: the file itself, or the ``*.db`` files of a directory, sorted."""
    if path.is_dir():
        try:
            found = sorted(path.glob("*.db"))
        except OSError as exc:
            yield path, exc
            return
        for file in found:
            yield file, None
    elif not os.path.lexists(path):
        yield path, StoreNotFound(str(path))
    else:
        yield path, None


# ---------------------------------------------------------------------------
# The process registry: list, show, prune


def open_registry_for_reading(target: str | os.PathLike[str], *, schema: str = "lash") -> ProcessRegistryService:
    """The registry ``target`` names (a deployment file or a DSN), read-only: nothing is created or written."""
    return open_registry(_text(target), readonly=True, schema=schema)


def open_registry_for_maintenance(target: str | os.PathLike[str], *, schema: str = "lash") -> ProcessRegistryService:
    """The existing registry ``target`` names, writable; a missing deployment file is never created."""
    text = _text(target)
    if not is_dsn(text):
        path = Path(text)
        if not path.exists():
            raise StoreNotFound(text)
        if path.is_dir():
            raise InvalidInput("path", f"{text} is a directory")
        return open_registry(text)
    from lash_store.postgres.registry import PostgresProcessRegistry

    return PostgresProcessRegistry.open(text, schema=schema, auto_setup=False)


def _process_row(record: ProcessRecord) -> dict[str, Any]:
    """One line of a process listing."""
    output = record.status.await_output
    return {
        "process_id": record.id,
        "state": record.status.state,
        "owner_session_id": record.provenance.owner_scope.session_id,
        "host_profile_id": record.provenance.host_profile_id,
        "created_at_ms": record.created_at_ms,
        "updated_at_ms": record.updated_at_ms,
        "external_ref": None if record.external_ref is None else msgspec.to_builtins(record.external_ref),
        "outcome": None if output is None else output.type,
        "message": None if output is None else output.message,
    }


def processes_list(
    target: str | os.PathLike[str],
    *,
    state: str | None = None,
    after: str | None = None,
    limit: int | None = None,
    schema: str = "lash",
) -> dict[str, Any]:
    """A page of processes by id (``state``: running, completed, failed, cancelled or terminal); read-only."""
    text = _text(target)
    with open_registry_for_reading(text, schema=schema) as registry:
        records = registry.list_processes(state=state, after=after, limit=None if limit is None else limit + 1)
    more = limit is not None and len(records) > limit
    shown = records[:limit] if limit is not None else records
    return {
        "target": _shown(text),
        "state": state,
        "processes": [_process_row(record) for record in shown],
        "next_after": shown[-1].id if more and shown else None,
    }


def processes_show(
    target: str | os.PathLike[str], process_id: str, *, events: int | None = 50, schema: str = "lash"
) -> dict[str, Any]:
    """One process: its record, its last ``events`` events (all with ``None``), grants and lease; read-only.

    The lease's token is left out: it is what lets a holder write, and a report is no place for it.
    """
    text = _text(target)
    with open_registry_for_reading(text, schema=schema) as registry:
        record = registry.get_process(process_id)
        if record is None:
            raise ToolError(f"no process {process_id!r} in {_shown(text)}")
        found = registry.events_after(process_id, 0)
        grants = registry.handle_grants_for_process(process_id)
        lease = registry.get_process_lease(process_id)
    shown = found if events is None else found[len(found) - events :] if events else []
    return {
        "target": _shown(text),
        "process": {**_process_row(record), "record": msgspec.to_builtins(record)},
        "event_count": len(found),
        "events": [msgspec.to_builtins(event) for event in shown],
        "grants": [msgspec.to_builtins(grant) for grant in grants],
        "lease": None
        if lease is None
        else {
            "owner_id": lease.owner_id,
            "fencing_token": lease.fencing_token,
            "claimed_at_epoch_ms": lease.claimed_at_epoch_ms,
            "expires_at_epoch_ms": lease.expires_at_epoch_ms,
        },
    }


def processes_prune(
    target: str | os.PathLike[str],
    older_than_ms: int,
    *,
    dry_run: bool = False,
    limit: int | None = None,
    now_ms: int | None = None,
    schema: str = "lash",
) -> dict[str, Any]:
    """Retention: delete terminal processes last updated more than ``older_than_ms`` ago, with their events,
    acks, grants and leases (a dry run counts and changes nothing); never creates a registry."""
    text = _text(target)
    horizon = max(0, (system_clock() if now_ms is None else now_ms) - older_than_ms)
    opened = open_registry_for_reading if dry_run else open_registry_for_maintenance
    with opened(text, schema=schema) as registry:
        report = registry.prune_processes(horizon, limit=limit, dry_run=dry_run)
    return {
        "target": _shown(text),
        "dry_run": dry_run,
        "older_than_ms": older_than_ms,
        "horizon_epoch_ms": horizon,
        "processes": report.process_ids,
        "events": report.event_count,
        "grants": report.grant_count,
    }

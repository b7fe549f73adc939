"""Inspection and maintenance of session database files: the logic behind ``lash-store``.

Every function here returns plain, JSON-ready data (dicts, lists, strings,
numbers; ``bytes`` only inside opaque caller values, which JSON renders as
base64); :mod:`lash_store.cli` turns it into tables or JSON.

Reading functions (:func:`inspect_store`, :func:`history`, :func:`list_sessions`,
:func:`gc_dry_run`, :func:`verify`, :func:`export_store`) never create or
modify a file.  They read through :func:`read_snapshot`: a ``mode=ro``
connection in one read transaction (one snapshot).  SQLite creates the
``-wal`` and ``-shm`` sidecars of a WAL database even for a ``mode=ro``
connection when they are absent (that is, when no process has the file
open), so in that case the file is opened ``immutable=1``: no other process
has it open, so nothing can change under the reader, and nothing is created.

Writing functions (:func:`gc`, :func:`vacuum`, :func:`migrate`,
:func:`import_store`) refuse to create a database at a path that does not
exist (import excepted, which creates a fresh one) and never touch a file that
is not a lash-store database.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import os
import re
import sqlite3
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgspec

from lash_store.core import codec
from lash_store.core import queue as queue_rules
from lash_store.core.checkpoint import decode_manifest
from lash_store.core.commit import TurnCommitRecord
from lash_store.core.gc import mark_live
from lash_store.core.graph import decode_node, user_message_text
from lash_store.core.head import HeadRow
from lash_store.core.usage import Totals, decode_totals
from lash_store.errors import CorruptData, NotAStoreDatabase, StoreError, StoreNotFound
from lash_store.model import ArtifactKind, SessionNode, SessionRelation
from lash_store.options import DEFAULT_FILE_GRACE_MS, GcPolicy, StoreOptions, system_clock
from lash_store.service import head as service_head
from lash_store.sqlite import schema
from lash_store.sqlite.backend import SqliteTx
from lash_store.sqlite.connection import translate
from lash_store.sqlite.factory import SqliteSessionStoreFactory
from lash_store.sqlite.migrations import inspect_revision, migrate_file
from lash_store.sqlite.store import Store

__all__ = [
    "EXPORT_FORMAT",
    "EXPORT_FORMAT_VERSION",
    "ToolError",
    "export_store",
    "gc",
    "gc_dry_run",
    "history",
    "import_store",
    "inspect_store",
    "list_sessions",
    "message_text",
    "migrate",
    "read_snapshot",
    "vacuum",
    "verify",
    "verify_connection",
]

EXPORT_FORMAT = "lash-store-export"
EXPORT_FORMAT_VERSION = 1

_SIDECARS = ("-wal", "-shm")
_DDL_OBJECT = re.compile(r"CREATE (?:UNIQUE )?(?:TABLE|INDEX|TRIGGER) IF NOT EXISTS (\w+)")
_KNOWN_KINDS = frozenset(kind.value for kind in ArtifactKind)

# Export/import order of each table: its primary key (blobs has no rowid).
_TABLE_ORDER = {
    "blobs": "hash",
    "session_meta": "singleton",
    "graph_nodes": "seq",
    "runtime_turn_commits": "session_id, turn_id",
    "queued_work_batches": "enqueue_seq",
    "queued_work_sessions": "session_id",
    "attachment_manifest": "attachment_id",
    "artifact_refs": "artifact_ref",
    "session_head": "singleton",
}


def _raw_head(conn: sqlite3.Connection) -> HeadRow:
    return service_head.read_head(SqliteTx(conn, StoreOptions()))


def read_head(conn: sqlite3.Connection) -> HeadRow | None:
    head = _raw_head(conn)
    return head if head.bound else None


def read_graph_counts(conn: sqlite3.Connection) -> tuple[int, int]:
    head = _raw_head(conn)
    return head.node_count, head.user_message_count


def read_usage(conn: sqlite3.Connection) -> Totals:
    return decode_totals(_raw_head(conn).usage_ledger)


def _get_blob(conn: sqlite3.Connection, ref: str) -> bytes | None:
    row = conn.execute("SELECT encoding, content, raw_size FROM blobs WHERE hash = ?", (ref,)).fetchone()
    return None if row is None else codec.decode_blob(ref, *row)


def _detail(exc: BaseException) -> str:
    """What went wrong, in one line: a :class:`CorruptData`'s detail, else the exception's type and message."""
    if isinstance(exc, CorruptData):
        return exc.detail
    return " ".join(f"{type(exc).__name__}: {exc}".split())


class ToolError(StoreError):
    """A one-line, user-facing failure of a tool (refused import, bad export file, not a directory)."""


# ---------------------------------------------------------------------------
# Opening files without creating or modifying anything


def _require_file(path: Path) -> None:
    if not path.exists():
        raise StoreNotFound(str(path))
    if not path.is_file():
        raise NotAStoreDatabase(str(path), "it is not a regular file")


def _file_bytes(path: Path) -> int:
    """Size of the database plus its write-ahead log (what the session occupies on disk)."""
    total = 0
    for suffix in ("", "-wal"):
        with contextlib.suppress(OSError):
            total += os.stat(f"{path}{suffix}").st_size
    return total


@contextmanager
def read_snapshot(path: str | os.PathLike[str]) -> Iterator[sqlite3.Connection]:
    """A read-only connection to a lash-store file, inside one read transaction.

    Raises :class:`StoreNotFound` for a missing path and :class:`NotAStoreDatabase`
    or :class:`UnsupportedSchemaVersion` for a foreign file.  Creates no file
    (not even ``-wal``/``-shm`` sidecars) and modifies nothing.
    """
    file = Path(path)
    _require_file(file)
    live = any(os.path.exists(f"{file}{suffix}") for suffix in _SIDECARS)
    # Without sidecars no process has the file open; immutable=1 keeps SQLite from creating them.
    query = "mode=ro" if live else "mode=ro&immutable=1"
    try:
        conn = sqlite3.connect(
            f"{file.resolve().as_uri()}?{query}", uri=True, isolation_level=None, check_same_thread=False, timeout=5
        )
    except sqlite3.Error as exc:
        raise NotAStoreDatabase(str(file), str(exc)) from exc
    try:
        try:
            conn.execute("BEGIN")
            identity = schema.Identity(conn)
        except sqlite3.DatabaseError as exc:
            raise NotAStoreDatabase(str(file), str(exc)) from exc
        identity.check(str(file))
        if identity.is_empty or not identity.is_complete:
            raise NotAStoreDatabase(str(file), "it holds no lash-store schema")
        try:
            yield conn
        except sqlite3.Error as exc:
            raise translate(exc) from exc
        except (TypeError, ValueError, OverflowError) as exc:
            if isinstance(exc, StoreError):
                raise
            # Only stored values can surprise a reader this way (text in an integer column, ...).
            raise CorruptData(str(file), f"unexpected stored value ({_detail(exc)})") from exc
    finally:
        with contextlib.suppress(sqlite3.Error):
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        conn.close()


def _open_store_for_writing(path: Path, options: StoreOptions | None = None) -> Store:
    """Open an existing lash-store file for a maintenance write (never creates one)."""
    _require_file(path)
    with read_snapshot(path):  # identity check without side effects first
        pass
    return Store.open(path, options)


# ---------------------------------------------------------------------------
# Small readers shared by the commands


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


def _blob_info(conn: sqlite3.Connection, ref: str | None) -> dict[str, Any] | None:
    if ref is None:
        return None
    row = conn.execute("SELECT encoding, kind, raw_size, length(content) FROM blobs WHERE hash = ?", (ref,)).fetchone()
    if row is None:
        return {"ref": ref, "present": False, "encoding": None, "kind": None, "raw_bytes": None, "stored_bytes": None}
    return {
        "ref": ref,
        "present": True,
        "encoding": row[0],
        "kind": row[1],
        "raw_bytes": row[2],
        "stored_bytes": row[3],
    }


def _meta(conn: sqlite3.Connection) -> dict[str, Any] | None:
    row = conn.execute("SELECT session_id, session_name, created_at, model, cwd, relation FROM session_meta").fetchone()
    if row is None:
        return None
    try:
        relation: Any = msgspec.to_builtins(codec.decode("session meta relation", row[5], SessionRelation))
    except Exception as exc:  # damaged stored data of any shape is reported, not raised
        relation = {"error": str(exc)}
    return {
        "session_id": row[0],
        "session_name": row[1],
        "created_at": row[2],
        "model": row[3],
        "cwd": row[4],
        "relation": relation,
    }


# ---------------------------------------------------------------------------
# inspect


def inspect_store(path: str | os.PathLike[str], now_ms: int | None = None) -> dict[str, Any]:
    """Everything about one session file, from one read snapshot."""
    file = Path(path)
    now = system_clock() if now_ms is None else now_ms
    with read_snapshot(file) as conn:
        identity = schema.Identity(conn)
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        page_count = conn.execute("PRAGMA page_count").fetchone()[0]
        freelist = conn.execute("PRAGMA freelist_count").fetchone()[0]
        head = read_head(conn)
        head_info: dict[str, Any] | None = None
        if head is not None:
            head_info = {
                "session_id": head.session_id,
                "head_revision": head.head_revision,
                "leaf_node_id": head.leaf_node_id,
                "checkpoint_ref": head.checkpoint_ref,
            }
            try:
                body = codec.decode("session head", head.body or b"", codec.HeadBody)
                head_info.update(
                    config=body.config,
                    agent_frame_count=len(body.agent_frames),
                    current_agent_frame_id=body.current_agent_frame_id,
                )
            except Exception as exc:  # damaged stored data of any shape is reported, not raised
                head_info["error"] = str(exc)
        node_count, user_count = read_graph_counts(conn)
        live, tombstoned = conn.execute(
            "SELECT count(*) FILTER (WHERE tombstoned = 0), count(*) FILTER (WHERE tombstoned != 0) FROM graph_nodes"
        ).fetchone()
        checkpoint = _inspect_checkpoint(conn, head.checkpoint_ref if head else None)
        usage = [
            {"source": source, "model": model, **msgspec.structs.asdict(totals)}
            for (source, model), totals in read_usage(conn).items()
        ]
        turn_commits = conn.execute("SELECT count(*) FROM runtime_turn_commits").fetchone()[0]
        queue = _inspect_queue(conn, now)
        attachments = [
            {
                "attachment_id": r[0],
                "session_id": r[1],
                "canonical_uri": r[2],
                "intent_at_ms": r[3],
                "committed_at_ms": r[4],
            }
            for r in conn.execute(
                "SELECT attachment_id, session_id, canonical_uri, intent_at_ms, committed_at_ms "
                "FROM attachment_manifest ORDER BY intent_at_ms, attachment_id"
            )
        ]
        modules = [
            {"module_ref": r[0], "blob_ref": r[1], "present": r[2] is not None, "raw_bytes": r[2]}
            for r in conn.execute(
                "SELECT a.artifact_ref, a.blob_ref, b.raw_size FROM artifact_refs a "
                "LEFT JOIN blobs b ON b.hash = a.blob_ref ORDER BY a.artifact_ref"
            )
        ]
        blob_rows = conn.execute(
            "SELECT coalesce(kind, 'raw'), encoding, count(*), coalesce(sum(raw_size), 0), "
            "coalesce(sum(length(content)), 0) FROM blobs GROUP BY 1, 2 ORDER BY 1, 2"
        ).fetchall()
        meta = _meta(conn)
    by_kind: dict[str, dict[str, int]] = {}
    for kind, encoding, count, raw, stored in blob_rows:
        entry = by_kind.setdefault(kind, {"count": 0, "raw_bytes": 0, "stored_bytes": 0, "zstd": 0})
        entry["count"] += count
        entry["raw_bytes"] += raw
        entry["stored_bytes"] += stored
        if encoding == codec.ENCODING_ZSTD:
            entry["zstd"] += count
    return {
        "path": str(file),
        "file": {
            "size_bytes": _file_bytes(file),
            "page_size": page_size,
            "page_count": page_count,
            "freelist_pages": freelist,
        },
        "schema": {
            "user_version": identity.user_version,
            "supported_version": schema.SCHEMA_VERSION,
            "application_id": identity.application_id,
        },
        "session": meta,
        "head": head_info,
        "graph": {
            "node_count": node_count,
            "user_message_count": user_count,
            "live_rows": live,
            "tombstoned_rows": tombstoned,
        },
        "checkpoint": checkpoint,
        "usage": usage,
        "usage_total": {
            key: sum(entry[key] for entry in usage)
            for key in ("input_tokens", "output_tokens", "cached_input_tokens", "reasoning_tokens")
        },
        "turn_commits": turn_commits,
        "queue": queue,
        "attachments": attachments,
        "module_artifacts": modules,
        "blobs": {
            "count": sum(e["count"] for e in by_kind.values()),
            "raw_bytes": sum(e["raw_bytes"] for e in by_kind.values()),
            "stored_bytes": sum(e["stored_bytes"] for e in by_kind.values()),
            "by_kind": by_kind,
        },
    }


def _inspect_checkpoint(conn: sqlite3.Connection, ref: str | None) -> dict[str, Any] | None:
    info = _blob_info(conn, ref)
    if ref is None or info is None:
        return None
    result: dict[str, Any] = {"ref": ref, "manifest": info, "turn_state": None, "children": []}
    if not info["present"]:
        result["error"] = f"checkpoint manifest {ref} is missing"
        return result
    try:
        content = _get_blob(conn, ref)
        manifest = decode_manifest(ref, content or b"")
    except Exception as exc:  # damaged stored data of any shape is reported, not raised
        result["error"] = str(exc)
        return result
    result["turn_state"] = manifest.turn_state
    result["plugin_snapshot_revision"] = manifest.plugin_snapshot_revision
    children = (
        ("tool_state", manifest.tool_state_ref),
        ("plugin_snapshot", manifest.plugin_snapshot_ref),
        ("execution_state", manifest.execution_state_ref),
    )
    result["children"] = [{"role": role, **(_blob_info(conn, child) or {})} for role, child in children if child]
    return result


def _inspect_queue(conn: sqlite3.Connection, now: int) -> dict[str, Any]:
    batches = []
    rows = conn.execute(
        f"SELECT {queue_rules.BATCH_COLUMNS}, claim_id, claim_owner_id, claim_token IS NOT NULL, "
        "claim_fencing_token, claim_claimed_at_ms, claim_expires_at_ms FROM queued_work_batches ORDER BY enqueue_seq"
    ).fetchall()
    for row in rows:
        stored, claim = row[:10], row[10:]
        entry: dict[str, Any] = {
            "enqueue_seq": stored[0],
            "batch_id": stored[1],
            "session_id": stored[2],
            "source_key": stored[3],
            "delivery_policy": stored[4],
            "slot_policy": stored[5],
            "merge_key": stored[6],
            "available_at_ms": stored[7],
            "enqueued_at_ms": stored[8],
            "ready": stored[7] <= now,
        }
        try:
            batch = queue_rules.decode_batch(tuple(stored))
            entry["items"] = len(batch.items)
            entry["kinds"] = sorted({item.payload.kind for item in batch.items})
        except Exception as exc:  # damaged stored data of any shape is reported, not raised
            entry["items"] = None
            entry["error"] = str(exc)
        if claim[2]:
            entry["claim"] = {
                "claim_id": claim[0],
                "owner_id": claim[1],
                "fencing_token": claim[3],
                "claimed_at_ms": claim[4],
                "expires_at_ms": claim[5],
                "expired": claim[5] <= now,
            }
        else:
            entry["claim"] = None
        batches.append(entry)
    fences = dict(conn.execute("SELECT session_id, last_fencing_token FROM queued_work_sessions ORDER BY 1"))
    return {"now_ms": now, "batches": batches, "last_fencing_tokens": fences}


# ---------------------------------------------------------------------------
# history


def history(path: str | os.PathLike[str], *, active_path: bool = False, limit: int | None = None) -> dict[str, Any]:
    """The conversation: every live node in order, or the active path to the leaf; the last ``limit`` nodes."""
    file = Path(path)
    with read_snapshot(file) as conn:
        head = read_head(conn)
        leaf = head.leaf_node_id if head else None
        if active_path:
            nodes = _active_path_nodes(conn, leaf)
        else:
            nodes = [decode_node(r[0], r[1]) for r in conn.execute(_LIVE_NODES)]
        meta = _meta(conn)
    total = len(nodes)
    start = max(0, total - limit) if limit is not None else 0
    return {
        "path": str(file),
        "session_id": head.session_id if head else (meta["session_id"] if meta else None),
        "head_revision": head.head_revision if head else 0,
        "leaf_node_id": leaf,
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


_LIVE_NODES = "SELECT node_id, body FROM graph_nodes WHERE tombstoned = 0 ORDER BY seq"


def _active_path_nodes(conn: sqlite3.Connection, leaf: str | None) -> list[SessionNode]:
    """Root-first path to ``leaf`` over live nodes; a parent cycle ends the walk."""
    if leaf is None:
        return []
    parents = {r[0]: (r[1], r[2]) for r in conn.execute("SELECT node_id, parent_node_id, tombstoned FROM graph_nodes")}
    path_ids: list[str] = []
    seen: set[str] = set()
    current: str | None = leaf
    while current is not None and current not in seen and current in parents and not parents[current][1]:
        seen.add(current)
        path_ids.append(current)
        current = parents[current][0]
    nodes = []
    for node_id in reversed(path_ids):
        body = conn.execute("SELECT body FROM graph_nodes WHERE node_id = ?", (node_id,)).fetchone()[0]
        nodes.append(decode_node(node_id, body))
    return nodes


# ---------------------------------------------------------------------------
# sessions


def list_sessions(root: str | os.PathLike[str]) -> dict[str, Any]:
    """Every session database of a factory root; unreadable files are listed with their error."""
    directory = Path(root)
    if not directory.exists():
        raise StoreNotFound(str(directory))
    if not directory.is_dir():
        raise ToolError(f"{directory} is not a directory (sessions lists a factory root)")
    sessions: list[dict[str, Any]] = []
    errors: list[dict[str, str]] = []
    for file in sorted(directory.glob("*.db")):
        try:
            sessions.append(_session_row(file))
        except StoreError as exc:
            errors.append({"path": str(file), "error": str(exc)})
    sessions.sort(key=lambda row: (row["session_id"] or "", row["path"]))
    return {"root": str(directory), "sessions": sessions, "errors": errors}


def _session_row(file: Path) -> dict[str, Any]:
    with read_snapshot(file) as conn:
        meta = _meta(conn) or {}
        head = read_head(conn)
        nodes, users = read_graph_counts(conn)
        first = conn.execute(
            "SELECT user_text FROM graph_nodes WHERE user_text IS NOT NULL AND tombstoned = 0 ORDER BY seq LIMIT 1"
        ).fetchone()
        queued = conn.execute("SELECT count(*) FROM queued_work_batches").fetchone()[0]
    return {
        "path": str(file),
        "session_id": meta.get("session_id") or (head.session_id if head else None),
        "session_name": meta.get("session_name"),
        "model": meta.get("model"),
        "created_at": meta.get("created_at"),
        "cwd": meta.get("cwd"),
        "head_revision": head.head_revision if head else 0,
        "messages": nodes,
        "user_messages": users,
        "first_user_message": first[0] if first else "",
        "queued_batches": queued,
        "size_bytes": _file_bytes(file),
    }


# ---------------------------------------------------------------------------
# gc and vacuum


def _gc_plan(conn: sqlite3.Connection, now: int, grace_ms: int) -> dict[str, Any]:
    marking = mark_live(lambda: _raw_head(conn), lambda ref: _get_blob(conn, ref))
    pinned = {r[0] for r in conn.execute("SELECT blob_ref FROM artifact_refs")}
    rows = conn.execute("SELECT hash, kind, created_at_ms, length(content) FROM blobs ORDER BY created_at_ms, hash")
    candidates, total, total_bytes = [], 0, 0
    for ref, kind, created, stored in rows:
        total += 1
        total_bytes += stored
        if ref in marking.live or ref in pinned or created > now - grace_ms:
            continue
        candidates.append({"ref": ref, "kind": kind, "stored_bytes": stored, "age_ms": now - created})
    if marking.skipped_reason is not None:
        candidates = []
    return {
        "root_count": len(marking.live) + len(pinned),
        "blob_count": total,
        "blob_bytes": total_bytes,
        "skipped_reason": marking.skipped_reason,
        "candidates": candidates,
    }


def _grace(grace_ms: int | None) -> int:
    return DEFAULT_FILE_GRACE_MS if grace_ms is None else grace_ms


def gc_dry_run(path: str | os.PathLike[str], *, grace_ms: int | None = None) -> dict[str, Any]:
    """What :func:`gc` would delete now, without deleting anything (read-only)."""
    file = Path(path)
    grace = _grace(grace_ms)
    now = system_clock()
    with read_snapshot(file) as conn:
        plan = _gc_plan(conn, now, grace)
    deleted = len(plan["candidates"])
    return {
        "path": str(file),
        "dry_run": True,
        "grace_ms": grace,
        "root_count": plan["root_count"],
        "retained_blob_count": plan["blob_count"] - deleted,
        "deleted_blob_count": deleted,
        "deleted_bytes": sum(c["stored_bytes"] for c in plan["candidates"]),
        "skipped_reason": plan["skipped_reason"],
        "candidates": plan["candidates"],
    }


def gc(path: str | os.PathLike[str], *, grace_ms: int | None = None) -> dict[str, Any]:
    """Run the store's garbage collector (``Store.gc_unreachable``) on an existing file."""
    file = Path(path)
    grace = _grace(grace_ms)
    with read_snapshot(file) as conn:
        before = conn.execute("SELECT coalesce(sum(length(content)), 0) FROM blobs").fetchone()[0]
    with _open_store_for_writing(file, StoreOptions(gc_policy=GcPolicy(grace_ms=grace))) as store:
        report = store.gc_unreachable()
    with read_snapshot(file) as conn:
        after = conn.execute("SELECT coalesce(sum(length(content)), 0) FROM blobs").fetchone()[0]
    return {
        "path": str(file),
        "dry_run": False,
        "grace_ms": grace,
        "root_count": report.root_count,
        "retained_blob_count": report.retained_blob_count,
        "deleted_blob_count": report.deleted_blob_count,
        "deleted_bytes": max(0, before - after),
        "skipped_reason": report.skipped_reason,
    }


def vacuum(path: str | os.PathLike[str], *, compact: bool = True) -> dict[str, Any]:
    """Remove tombstoned nodes (``Store.vacuum``), then let SQLite rebuild the file to release free pages."""
    file = Path(path)
    size_before = _file_bytes(file) if file.is_file() else 0
    with _open_store_for_writing(file) as store:
        report = store.vacuum()
        busy_timeout_s = store.options.busy_timeout_ms / 1000
    checkpointed = None
    if compact:
        conn = sqlite3.connect(str(file), isolation_level=None, timeout=busy_timeout_s)
        try:
            conn.execute("VACUUM")
            busy, _log, _done = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            checkpointed = not busy
        except sqlite3.Error as exc:
            raise translate(exc) from exc
        finally:
            conn.close()
    return {
        "path": str(file),
        "removed_node_count": report.removed_node_count,
        "compacted": compact,
        "wal_truncated": checkpointed,
        "size_before_bytes": size_before,
        "size_after_bytes": _file_bytes(file),
    }


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
# verify


class _Problems:
    """Collects the problems of one check (capped, so a badly broken file still gives a readable report)."""

    LIMIT = 50

    def __init__(self) -> None:
        self.items: list[str] = []
        self.suppressed = 0

    def add(self, problem: str) -> None:
        if len(self.items) < self.LIMIT:
            self.items.append(problem)
        else:
            self.suppressed += 1


def verify(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Check a session file thoroughly; ``ok`` is False and each problem is listed when anything is wrong."""
    file = Path(path)
    with read_snapshot(file) as conn:
        checks = verify_connection(conn, integrity=True)
    problems = [f"{check['name']}: {problem}" for check in checks for problem in check["problems"]]
    return {"path": str(file), "ok": not problems, "checks": checks, "problems": problems}


def verify_connection(conn: sqlite3.Connection, *, integrity: bool = True) -> list[dict[str, Any]]:
    """Run every check on a connection that is inside a transaction; returns one entry per check."""
    checks: list[tuple[str, Callable[[sqlite3.Connection, _Problems], str]]] = [
        ("schema", _check_schema),
        ("column types", _check_types),
        ("blobs", _check_blobs),
        ("head", _check_head),
        ("graph", _check_graph),
        ("counters", _check_counters),
        ("turn commits", _check_turn_commits),
        ("queue", _check_queue),
        ("module artifacts", _check_modules),
        ("metadata", _check_meta),
    ]
    if integrity:
        checks.insert(0, ("sqlite integrity", _check_integrity))
    results = []
    for name, check in checks:
        problems = _Problems()
        try:
            detail = check(conn, problems)
        except Exception as exc:  # a check that cannot finish is itself a problem
            problems.add(f"check aborted: {_detail(exc)}")
            detail = "aborted"
        if problems.suppressed:
            problems.items.append(f"... and {problems.suppressed} more")
        results.append({"name": name, "ok": not problems.items, "detail": detail, "problems": problems.items})
    return results


def _check_integrity(conn: sqlite3.Connection, problems: _Problems) -> str:
    rows = [r[0] for r in conn.execute("PRAGMA integrity_check")]
    if rows != ["ok"]:
        for row in rows:
            problems.add(str(row))
    return "PRAGMA integrity_check"


def _check_schema(conn: sqlite3.Connection, problems: _Problems) -> str:
    identity = schema.Identity(conn)
    if identity.user_version != schema.SCHEMA_VERSION:
        problems.add(f"schema version {identity.user_version}, expected {schema.SCHEMA_VERSION}")
    if identity.application_id != schema.APPLICATION_ID:
        problems.add(f"application id {identity.application_id}, expected {schema.APPLICATION_ID}")
    expected = set(_DDL_OBJECT.findall(schema.DDL))
    for name in sorted(expected - identity.objects):
        problems.add(f"schema object {name} is missing")
    return f"version {identity.user_version}, {len(expected)} schema objects"


# Columns whose SQLite storage class the store relies on (NULL allowed where the schema allows it).
_COLUMN_TYPES: dict[str, dict[str, str]] = {
    "blobs": {"hash": "text", "encoding": "text", "raw_size": "integer", "created_at_ms": "integer", "content": "blob"},
    "session_head": {
        "session_id": "text",
        "head_revision": "integer",
        "body": "blob",
        "node_count": "integer",
        "user_message_count": "integer",
        "usage_ledger": "blob",
    },
    "graph_nodes": {"seq": "integer", "node_id": "text", "tombstoned": "integer", "body": "blob"},
    "runtime_turn_commits": {"turn_id": "text", "record": "blob", "committed_at_ms": "integer"},
    "queued_work_batches": {
        "batch_id": "text",
        "available_at_ms": "integer",
        "enqueued_at_ms": "integer",
        "payloads": "blob",
        "claim_fencing_token": "integer",
        "claim_expires_at_ms": "integer",
    },
    "queued_work_sessions": {"last_fencing_token": "integer"},
    "session_meta": {"session_id": "text", "created_at": "text", "relation": "blob"},
}


def _check_types(conn: sqlite3.Connection, problems: _Problems) -> str:
    checked = 0
    for table, columns in _COLUMN_TYPES.items():
        for column, expected in columns.items():
            checked += 1
            rows = conn.execute(
                f"SELECT typeof({column}), count(*) FROM {table} "
                f"WHERE typeof({column}) NOT IN ('{expected}', 'null') GROUP BY 1"
            ).fetchall()
            for found, count in rows:
                problems.add(f"{table}.{column}: {count} row(s) hold {found}, expected {expected}")
    return f"{checked} columns"


def _check_blobs(conn: sqlite3.Connection, problems: _Problems) -> str:
    count = 0
    for ref, encoding, kind, raw_size, content in conn.execute(
        "SELECT hash, encoding, kind, raw_size, content FROM blobs ORDER BY hash"
    ):
        count += 1
        if kind is not None and kind not in _KNOWN_KINDS:
            problems.add(f"blob {ref}: unknown kind {kind!r}")
        try:
            codec.decode_blob(ref, encoding, content, raw_size)  # checks hash and recorded size
        except Exception as exc:  # damaged stored data of any shape is reported, not raised
            problems.add(f"blob {ref}: {_detail(exc)}")
    return f"{count} blobs, every SHA-256 recomputed"


def _blob_or_problem(conn: sqlite3.Connection, ref: str, what: str, problems: _Problems) -> bytes | None:
    try:
        content = _get_blob(conn, ref)
    except Exception as exc:  # damaged stored data of any shape is reported, not raised
        problems.add(f"{what} {ref} does not decode: {_detail(exc)}")
        return None
    if content is None:
        problems.add(f"{what} {ref} is missing")
    return content


def _check_head(conn: sqlite3.Connection, problems: _Problems) -> str:
    head = read_head(conn)
    if head is None:
        return "no head (nothing committed yet)"
    try:
        body = codec.decode("session head", head.body or b"", codec.HeadBody)
    except Exception as exc:  # damaged stored data of any shape is reported, not raised
        problems.add(f"head does not decode: {_detail(exc)}")
        return f"revision {head.head_revision}"
    if head.head_revision < 1:
        problems.add(f"head revision {head.head_revision} is not positive")
    for ref in codec.frame_execution_refs(body.agent_frames):
        _blob_or_problem(conn, ref, "execution-state blob named by an agent frame,", problems)
    if head.checkpoint_ref is not None:
        content = _blob_or_problem(conn, head.checkpoint_ref, "checkpoint manifest", problems)
        if content is not None:
            try:
                manifest = decode_manifest(head.checkpoint_ref, content)
            except Exception as exc:  # damaged stored data of any shape is reported, not raised
                problems.add(f"checkpoint manifest {head.checkpoint_ref} does not decode: {_detail(exc)}")
            else:
                for role, child_ref in (
                    ("tool-state snapshot", manifest.tool_state_ref),
                    ("plugin snapshot", manifest.plugin_snapshot_ref),
                ):
                    if child_ref is None:
                        continue
                    child = _blob_or_problem(conn, child_ref, role, problems)
                    if child is not None:
                        try:
                            codec.decode_any(f"{role} {child_ref}", child)
                        except Exception as exc:  # damaged stored data of any shape is reported, not raised
                            problems.add(f"{role} {child_ref} does not decode: {_detail(exc)}")
                if manifest.execution_state_ref is not None:
                    _blob_or_problem(conn, manifest.execution_state_ref, "execution-state snapshot", problems)
    if head.leaf_node_id is not None:
        row = conn.execute("SELECT tombstoned FROM graph_nodes WHERE node_id = ?", (head.leaf_node_id,)).fetchone()
        if row is None:
            problems.add(f"leaf node {head.leaf_node_id!r} does not exist")
    return f"revision {head.head_revision}, checkpoint {'present' if head.checkpoint_ref else 'none'}"


def _check_graph(conn: sqlite3.Connection, problems: _Problems) -> str:
    rows = conn.execute("SELECT node_id, parent_node_id, tombstoned, user_text, body FROM graph_nodes ORDER BY seq")
    parents: dict[str, str | None] = {}
    count = 0
    for node_id, parent, _tombstoned, user_text, body in rows:
        count += 1
        parents[node_id] = parent
        try:
            node = decode_node(node_id, body)
        except Exception as exc:  # damaged stored data of any shape is reported, not raised
            problems.add(f"node {node_id!r} does not decode: {_detail(exc)}")
            continue
        if node.node_id != node_id:
            problems.add(f"node {node_id!r}: its body names node {node.node_id!r}")
        if node.parent_node_id != parent:
            problems.add(f"node {node_id!r}: parent column {parent!r} differs from its body's {node.parent_node_id!r}")
        if user_message_text(node) != user_text:
            problems.add(f"node {node_id!r}: maintained user text differs from its payload")
    for node_id, parent in parents.items():
        if parent is not None and parent not in parents:
            problems.add(f"node {node_id!r}: parent {parent!r} does not exist")
    head = read_head(conn)
    if head is not None and head.leaf_node_id in parents:
        seen: set[str] = set()
        current: str | None = head.leaf_node_id
        while current is not None and current in parents:
            if current in seen:
                problems.add(f"the active path from leaf {head.leaf_node_id!r} has a cycle at {current!r}")
                break
            seen.add(current)
            current = parents[current]
    return f"{count} nodes decoded, parents and active path checked"


def _check_counters(conn: sqlite3.Connection, problems: _Problems) -> str:
    live, users = conn.execute(
        "SELECT count(*), count(user_text) FROM graph_nodes WHERE tombstoned = 0",
    ).fetchone()
    node_count, user_count = read_graph_counts(conn)
    if node_count != live:
        problems.add(f"maintained node count {node_count} != {live} live nodes")
    if user_count != users:
        problems.add(f"maintained user-message count {user_count} != {users} live user messages")
    try:
        totals = len(read_usage(conn))
    except Exception as exc:  # damaged stored data of any shape is reported, not raised
        problems.add(f"usage ledger does not decode: {_detail(exc)}")
        totals = 0
    return f"node count {node_count}, user messages {user_count}, usage totals for {totals} source/model pair(s)"


def _check_turn_commits(conn: sqlite3.Connection, problems: _Problems) -> str:
    head = read_head(conn)
    revision = head.head_revision if head else 0
    count = 0
    for session_id, turn_id, record in conn.execute("SELECT session_id, turn_id, record FROM runtime_turn_commits"):
        count += 1
        try:
            stored = codec.decode(f"turn commit {turn_id!r}", record, TurnCommitRecord)
        except Exception as exc:  # damaged stored data of any shape is reported, not raised
            problems.add(f"turn {turn_id!r} record does not decode: {_detail(exc)}")
            continue
        if stored.result.head_revision > revision:
            problems.add(f"turn {turn_id!r} claims revision {stored.result.head_revision} > head {revision}")
        if head is not None and session_id != head.session_id:
            problems.add(f"turn {turn_id!r} belongs to session {session_id!r}, head to {head.session_id!r}")
    return f"{count} turn stamps"


def _check_queue(conn: sqlite3.Connection, problems: _Problems) -> str:
    fences = dict(conn.execute("SELECT session_id, last_fencing_token FROM queued_work_sessions"))
    count = 0
    for row in conn.execute(
        f"SELECT {queue_rules.BATCH_COLUMNS}, claim_id, claim_owner_id, claim_token, claim_fencing_token "
        "FROM queued_work_batches ORDER BY enqueue_seq"
    ):
        count += 1
        stored, (claim_id, owner, token, fence) = row[:10], row[10:]
        batch_id, session_id = stored[1], stored[2]
        try:
            queue_rules.decode_batch(tuple(stored))
        except Exception as exc:  # damaged stored data of any shape is reported, not raised
            problems.add(f"batch {batch_id}: {_detail(exc)}")
        if (claim_id is None) != (token is None) or (token is not None and owner is None):
            problems.add(f"batch {batch_id}: inconsistent claim columns")
        if fence > fences.get(session_id, 0):
            problems.add(f"batch {batch_id}: fencing token {fence} exceeds the session's counter")
    return f"{count} batches"


def _check_modules(conn: sqlite3.Connection, problems: _Problems) -> str:
    count = 0
    for module_ref, blob_ref in conn.execute("SELECT artifact_ref, blob_ref FROM artifact_refs"):
        count += 1
        _blob_or_problem(conn, blob_ref, f"module artifact {module_ref!r}: blob", problems)
    return f"{count} pinned modules"


def _check_meta(conn: sqlite3.Connection, problems: _Problems) -> str:
    row = conn.execute("SELECT session_id, created_at, relation FROM session_meta").fetchone()
    if row is None:
        return "no metadata"
    try:
        codec.decode("session meta relation", row[2], SessionRelation)
    except Exception as exc:  # damaged stored data of any shape is reported, not raised
        problems.add(f"relation does not decode: {_detail(exc)}")
    try:
        datetime.datetime.fromisoformat(row[1])
    except (TypeError, ValueError):
        problems.add(f"created_at {row[1]!r} is not an RFC 3339 timestamp")
    head = read_head(conn)
    if head is not None and head.session_id != row[0]:
        problems.add(f"metadata names session {row[0]!r}, the head {head.session_id!r}")
    return f"session {row[0]!r}"


# ---------------------------------------------------------------------------
# export and import


def _cell_out(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"base64": base64.b64encode(value).decode("ascii")}
    return value


def _cell_in(table: str, value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) != {"base64"} or not isinstance(value["base64"], str):
            raise ToolError(f"export file: table {table} holds an unknown cell object")
        try:
            return base64.b64decode(value["base64"], validate=True)
        except ValueError as exc:
            raise ToolError(f"export file: table {table} holds invalid base64 ({exc})") from exc
    if value is None or (isinstance(value, (int, float, str)) and not isinstance(value, bool)):
        return value
    raise ToolError(f"export file: table {table} holds an unsupported value of type {type(value).__name__}")


def _columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]


def export_store(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A portable, exact JSON-ready copy of a session file (every table, blobs as base64), from one snapshot."""
    file = Path(path)
    with read_snapshot(file) as conn:
        tables: dict[str, Any] = {}
        for table, order in _TABLE_ORDER.items():
            columns = _columns(conn, table)
            rows = conn.execute(f"SELECT {', '.join(columns)} FROM {table} ORDER BY {order}").fetchall()
            tables[table] = {"columns": columns, "rows": [[_cell_out(cell) for cell in row] for row in rows]}
        sequences = dict(conn.execute("SELECT name, seq FROM sqlite_sequence ORDER BY name"))
        head = read_head(conn)
        meta = _meta(conn)
        node_count, _users = read_graph_counts(conn)
    return {
        "format": EXPORT_FORMAT,
        "format_version": EXPORT_FORMAT_VERSION,
        "schema_version": schema.SCHEMA_VERSION,
        "exported_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "source": {
            "path": str(file),
            "session_id": head.session_id if head else (meta["session_id"] if meta else None),
            "head_revision": head.head_revision if head else 0,
            "node_count": node_count,
            "blob_count": len(tables["blobs"]["rows"]),
        },
        "tables": tables,
        "sequences": sequences,
    }


class _ParsedExport(msgspec.Struct, frozen=True):
    session_id: str | None
    tables: dict[str, tuple[list[str], list[list[Any]]]]
    sequences: dict[str, int]


def _parse_export(document: Any) -> _ParsedExport:
    if not isinstance(document, dict) or document.get("format") != EXPORT_FORMAT:
        raise ToolError(f'not a lash-store export (expected "format": "{EXPORT_FORMAT}")')
    if document.get("format_version") != EXPORT_FORMAT_VERSION:
        raise ToolError(
            f"export format version {document.get('format_version')!r} is not supported "
            f"(this release reads version {EXPORT_FORMAT_VERSION})"
        )
    if document.get("schema_version") != schema.SCHEMA_VERSION:
        raise ToolError(
            f"export of schema version {document.get('schema_version')!r}; "
            f"this release writes schema version {schema.SCHEMA_VERSION}"
        )
    raw_tables = document.get("tables")
    if not isinstance(raw_tables, dict):
        raise ToolError('export file: "tables" must be an object')
    unknown = set(raw_tables) - set(_TABLE_ORDER)
    if unknown:
        raise ToolError(f"export file: unknown tables {sorted(unknown)}")
    tables: dict[str, tuple[list[str], list[list[Any]]]] = {}
    for table, content in raw_tables.items():
        if not isinstance(content, dict):
            raise ToolError(f"export file: table {table} must be an object")
        columns, rows = content.get("columns"), content.get("rows")
        if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns) or not isinstance(rows, list):
            raise ToolError(f'export file: table {table} needs "columns" (strings) and "rows" (arrays)')
        decoded = []
        for row in rows:
            if not isinstance(row, list) or len(row) != len(columns):
                raise ToolError(f"export file: a row of table {table} does not match its {len(columns)} columns")
            decoded.append([_cell_in(table, cell) for cell in row])
        tables[table] = (columns, decoded)
    sequences = document.get("sequences", {})
    if not isinstance(sequences, dict) or not all(
        isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) for k, v in sequences.items()
    ):
        raise ToolError('export file: "sequences" must map table names to integers')
    source = document.get("source")
    session_id = source.get("session_id") if isinstance(source, dict) else None
    return _ParsedExport(
        session_id=session_id if isinstance(session_id, str) and session_id else None,
        tables=tables,
        sequences=sequences,
    )


def _occupied(conn: sqlite3.Connection) -> str | None:
    """Why the target cannot receive an import, or ``None`` when it is empty."""
    head = read_head(conn)
    if head is not None:
        return f"it already holds session {head.session_id!r} at head revision {head.head_revision}"
    for table in _TABLE_ORDER:
        if table == "session_head":
            continue  # its one row exists from creation on; the head was checked above
        if conn.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone() is not None:
            return f"it already holds data (table {table})"
    if read_graph_counts(conn) != (0, 0) or read_usage(conn):
        return "it already holds graph counters or usage"
    return None


def import_store(file: str | os.PathLike[str], target: str | os.PathLike[str]) -> dict[str, Any]:
    """Recreate an exported session at ``target`` (a new or empty file, or a factory root directory).

    Everything is written in one transaction and verified before it commits;
    a target that already holds a session (or any data) is refused untouched.
    """
    source = Path(file)
    try:
        data = source.read_bytes() if str(source) != "-" else _stdin_bytes()
    except FileNotFoundError as exc:
        raise ToolError(f"export file {source} does not exist") from exc
    except OSError as exc:
        raise ToolError(f"cannot read {source}: {exc.strerror}") from exc
    try:
        document = msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        raise ToolError(f"{source} is not JSON ({exc})") from exc
    parsed = _parse_export(document)
    for ref, encoding, _kind, raw_size, _created, content in _blob_rows(parsed):
        codec.decode_blob(ref, encoding, content, raw_size)  # CorruptData names the blob

    destination = Path(target)
    if destination.is_dir():
        if parsed.session_id is None:
            raise ToolError("the export names no session id, so it cannot be placed in a factory root; give a file")
        destination = SqliteSessionStoreFactory(destination).path_for_session(parsed.session_id)
    if not destination.parent.is_dir():
        raise ToolError(f"directory {destination.parent} does not exist")
    created = not destination.exists()
    if not created and (not destination.is_file() or destination.stat().st_size > 0):
        _require_file(destination)
        with read_snapshot(destination) as conn:
            reason = _occupied(conn)
        if reason is not None:
            raise ToolError(f"refusing to import into {destination}: {reason}")
    try:
        with Store.open(destination) as store:  # creates and stamps a fresh file; never modifies a foreign one
            busy_timeout_s = store.options.busy_timeout_ms / 1000
        checks = _write_import(destination, parsed, busy_timeout_s)
    except BaseException:
        if created:
            for suffix in ("", "-wal", "-shm", "-journal"):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(f"{destination}{suffix}")
        raise
    rows = {table: len(content[1]) for table, content in parsed.tables.items()}
    return {
        "path": str(destination),
        "source": str(source),
        "session_id": parsed.session_id,
        "created": created,
        "rows": rows,
        "checks": checks,
    }


def _stdin_bytes() -> bytes:
    return sys.stdin.buffer.read()


def _blob_rows(parsed: _ParsedExport) -> Iterator[tuple[str, str, str | None, int, int, bytes]]:
    columns, rows = parsed.tables.get("blobs", ([], []))
    if not rows:
        return
    try:
        indexes = [columns.index(name) for name in ("hash", "encoding", "kind", "raw_size", "created_at_ms", "content")]
    except ValueError as exc:
        raise ToolError(f"export file: table blobs lacks a column ({exc})") from exc
    for row in rows:
        ref, encoding, kind, raw_size, created, content = (row[i] for i in indexes)
        if not isinstance(ref, str) or not isinstance(encoding, str) or not isinstance(content, bytes):
            raise ToolError("export file: a blob row has the wrong types")
        if not isinstance(raw_size, int) or not isinstance(created, int):
            raise ToolError(f"export file: blob {ref} has non-integer sizes")
        yield ref, encoding, kind, raw_size, created, content


def _write_import(destination: Path, parsed: _ParsedExport, busy_timeout_s: float) -> list[dict[str, Any]]:
    conn = sqlite3.connect(str(destination), isolation_level=None, timeout=busy_timeout_s)
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            reason = _occupied(conn)  # re-checked under the write lock
            if reason is not None:
                raise ToolError(f"refusing to import into {destination}: {reason}")
            for table in _TABLE_ORDER:
                if table not in parsed.tables:
                    continue
                columns, rows = parsed.tables[table]
                actual = _columns(conn, table)
                if sorted(columns) != sorted(actual):
                    raise ToolError(f"export file: table {table} has columns {columns}, this schema has {actual}")
                marks = ", ".join("?" for _ in columns)
                # The head row exists from creation on: the exported one replaces it (verified below).
                verb = "INSERT OR REPLACE" if table == "session_head" else "INSERT"
                conn.executemany(f"{verb} INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)
            for name, seq in parsed.sequences.items():
                if name not in _TABLE_ORDER:
                    raise ToolError(f"export file: sequence of unknown table {name}")
                updated = conn.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = ?", (seq, name)).rowcount
                if not updated:
                    conn.execute("INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)", (name, seq))
            checks = verify_connection(conn, integrity=False)
            problems = [f"{c['name']}: {p}" for c in checks for p in c["problems"]]
            if problems:
                raise ToolError(f"refusing to import: the imported session does not verify ({'; '.join(problems)})")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    except sqlite3.Error as exc:
        raise translate(exc) from exc
    finally:
        conn.close()
    return checks

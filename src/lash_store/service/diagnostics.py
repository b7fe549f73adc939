"""Looking at a store as it is stored, damage included: raw rows from one snapshot, and the checks of ``verify``.

Nothing here raises for damaged data: every check collects problems as text,
so ``lash-store verify`` lists everything that is wrong with a store on any
backend.  Checks only a backend can make (SQLite's ``integrity_check``, its
schema objects and column storage classes) come from the backend's own
``integrity_checks``.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

import msgspec

from lash_store.core import codec
from lash_store.core import queue as queue_rules
from lash_store.core.checkpoint import decode_manifest
from lash_store.core.commit import TurnCommitRecord
from lash_store.core.graph import decode_node, user_message_text
from lash_store.core.head import HeadRow
from lash_store.core.usage import decode_totals
from lash_store.errors import CorruptData
from lash_store.model import ArtifactKind
from lash_store.service.head import head_from_row
from lash_store.service.ports import Row, Tx

_KNOWN_KINDS = frozenset(kind.value for kind in ArtifactKind)


class RawRows(msgspec.Struct, frozen=True):
    """Every row of a store, undecoded, from one read snapshot.

    ``blobs`` rows are ``(hash, encoding, kind, raw_size, created_at_ms, content_or_stored_size)``:
    the content itself when it was asked for, else its stored length.
    """

    head: Row | None
    meta: Row | None
    nodes: list[Row]
    blobs: list[Row]
    turn_commits: list[Row]
    batches: list[Row]
    fences: list[Row]
    attachments: list[Row]
    modules: list[Row]
    last_enqueue_seq: int


def read_raw(tx: Tx, *, content: bool) -> RawRows:
    seq = tx.one("last_enqueue_seq")
    return RawRows(
        head=tx.one("read_head"),
        meta=tx.one("load_meta"),
        nodes=tx.all("node_rows"),
        blobs=tx.all("all_blob_rows" if content else "blob_sizes"),
        turn_commits=tx.all("turn_commit_rows"),
        batches=tx.all("batch_rows"),
        fences=tx.all("fence_rows"),
        attachments=tx.all("attachment_rows"),
        modules=tx.all("module_rows"),
        last_enqueue_seq=0 if seq is None else int(seq[0]),
    )


def detail(exc: BaseException) -> str:
    """What went wrong, in one line."""
    if isinstance(exc, CorruptData):
        return exc.detail
    return " ".join(f"{type(exc).__name__}: {exc}".split())


class Problems:
    """The problems one check found (capped, so a badly broken store still gives a readable report)."""

    LIMIT = 50

    def __init__(self) -> None:
        self.items: list[str] = []
        self.suppressed = 0

    def add(self, problem: str) -> None:
        if len(self.items) < self.LIMIT:
            self.items.append(problem)
        else:
            self.suppressed += 1


Check = Callable[["_Context", Problems], str]


def run_checks(checks: list[tuple[str, Callable[[Problems], str]]]) -> list[dict[str, Any]]:
    """Run named checks; a check that cannot finish is itself a problem.  One entry per check."""
    results = []
    for name, check in checks:
        problems = Problems()
        try:
            summary = check(problems)
        except Exception as exc:  # damaged stored data of any shape is reported, not raised
            problems.add(f"check aborted: {detail(exc)}")
            summary = "aborted"
        if problems.suppressed:
            problems.items.append(f"... and {problems.suppressed} more")
        results.append({"name": name, "ok": not problems.items, "detail": summary, "problems": problems.items})
    return results


class _Context:
    """The rows under check, with decoded blobs looked up once."""

    def __init__(self, rows: RawRows) -> None:
        self.rows = rows
        self.blobs = {row[0]: row for row in rows.blobs}
        self.head: HeadRow | None = None
        try:
            self.head = head_from_row(rows.head)
        except CorruptData as exc:
            self.head_error: str | None = detail(exc)
        else:
            self.head_error = None

    def blob(self, ref: str, what: str, problems: Problems) -> bytes | None:
        row = self.blobs.get(ref)
        if row is None:
            problems.add(f"{what} {ref} is missing")
            return None
        try:
            return codec.decode_blob(ref, row[1], row[5], row[3])
        except Exception as exc:  # damaged stored data of any shape is reported, not raised
            problems.add(f"{what} {ref} does not decode: {detail(exc)}")
            return None


def verify_rows(rows: RawRows) -> list[dict[str, Any]]:
    """The backend-neutral checks of ``verify`` over rows read with their content."""
    context = _Context(rows)
    checks: list[tuple[str, Check]] = [
        ("blobs", _check_blobs),
        ("head", _check_head),
        ("graph", _check_graph),
        ("counters", _check_counters),
        ("turn commits", _check_turn_commits),
        ("queue", _check_queue),
        ("module artifacts", _check_modules),
        ("metadata", _check_meta),
    ]
    return run_checks([(name, _bind(check, context)) for name, check in checks])


def _bind(check: Check, context: _Context) -> Callable[[Problems], str]:
    return lambda problems: check(context, problems)


def _check_blobs(context: _Context, problems: Problems) -> str:
    for ref, encoding, kind, raw_size, _created, content in context.rows.blobs:
        if kind is not None and kind not in _KNOWN_KINDS:
            problems.add(f"blob {ref}: unknown kind {kind!r}")
        try:
            codec.decode_blob(ref, encoding, content, raw_size)  # checks the hash and the recorded size
        except Exception as exc:  # damaged stored data of any shape is reported, not raised
            problems.add(f"blob {ref}: {detail(exc)}")
    return f"{len(context.rows.blobs)} blobs, every SHA-256 recomputed"


def _check_head(context: _Context, problems: Problems) -> str:
    if context.head_error is not None:
        problems.add(f"head row: {context.head_error}")
        return "unreadable"
    head = context.head
    if head is None or not head.bound or head.body is None:
        return "no head (nothing committed yet)"
    try:
        body = codec.decode("session head", head.body, codec.HeadBody)
    except Exception as exc:  # damaged stored data of any shape is reported, not raised
        problems.add(f"head does not decode: {detail(exc)}")
        return f"revision {head.head_revision}"
    if head.head_revision < 1:
        problems.add(f"head revision {head.head_revision} is not positive")
    for ref in codec.frame_execution_refs(body.agent_frames):
        context.blob(ref, "execution-state blob named by an agent frame,", problems)
    if head.checkpoint_ref is not None:
        _check_manifest(context, head.checkpoint_ref, problems)
    nodes = {row[0] for row in context.rows.nodes}
    if head.leaf_node_id is not None and head.leaf_node_id not in nodes:
        problems.add(f"leaf node {head.leaf_node_id!r} does not exist")
    return f"revision {head.head_revision}, checkpoint {'present' if head.checkpoint_ref else 'none'}"


def _check_manifest(context: _Context, ref: str, problems: Problems) -> None:
    content = context.blob(ref, "checkpoint manifest", problems)
    if content is None:
        return
    try:
        manifest = decode_manifest(ref, content)
    except Exception as exc:  # damaged stored data of any shape is reported, not raised
        problems.add(f"checkpoint manifest {ref} does not decode: {detail(exc)}")
        return
    for role, child_ref in (
        ("tool-state snapshot", manifest.tool_state_ref),
        ("plugin snapshot", manifest.plugin_snapshot_ref),
    ):
        if child_ref is None:
            continue
        child = context.blob(child_ref, role, problems)
        if child is not None:
            try:
                codec.decode_any(f"{role} {child_ref}", child)
            except Exception as exc:  # damaged stored data of any shape is reported, not raised
                problems.add(f"{role} {child_ref} does not decode: {detail(exc)}")
    if manifest.execution_state_ref is not None:
        context.blob(manifest.execution_state_ref, "execution-state snapshot", problems)


def _check_graph(context: _Context, problems: Problems) -> str:
    parents: dict[str, str | None] = {}
    for node_id, parent, _tombstoned, user_text, body in context.rows.nodes:
        parents[node_id] = parent
        try:
            node = decode_node(node_id, body)
        except Exception as exc:  # damaged stored data of any shape is reported, not raised
            problems.add(f"node {node_id!r} does not decode: {detail(exc)}")
            continue
        if node.node_id != node_id:
            problems.add(f"node {node_id!r}: its body names node {node.node_id!r}")
        if node.parent_node_id != parent:
            problems.add(f"node {node_id!r}: parent column {parent!r} differs from its body's {node.parent_node_id!r}")
        # Files written before NUL became U+FFFD in the picker text keep the NUL; both are faithful.
        if user_message_text(node) != (user_text and user_text.replace("\x00", "\ufffd")):
            problems.add(f"node {node_id!r}: maintained user text differs from its payload")
    for node_id, parent in parents.items():
        if parent is not None and parent not in parents:
            problems.add(f"node {node_id!r}: parent {parent!r} does not exist")
    head = context.head
    if head is not None and head.leaf_node_id in parents:
        seen: set[str] = set()
        current: str | None = head.leaf_node_id
        while current is not None and current in parents:
            if current in seen:
                problems.add(f"the active path from leaf {head.leaf_node_id!r} has a cycle at {current!r}")
                break
            seen.add(current)
            current = parents[current]
    return f"{len(context.rows.nodes)} nodes decoded, parents and active path checked"


def _check_counters(context: _Context, problems: Problems) -> str:
    head = context.head
    if head is None:
        return "no head row"
    live = [row for row in context.rows.nodes if not row[2]]
    users = sum(row[3] is not None for row in live)
    if head.node_count != len(live):
        problems.add(f"maintained node count {head.node_count} != {len(live)} live nodes")
    if head.user_message_count != users:
        problems.add(f"maintained user-message count {head.user_message_count} != {users} live user messages")
    try:
        totals = len(decode_totals(head.usage_ledger))
    except Exception as exc:  # damaged stored data of any shape is reported, not raised
        problems.add(f"usage ledger does not decode: {detail(exc)}")
        totals = 0
    return (
        f"node count {head.node_count}, user messages {head.user_message_count}, "
        f"usage totals for {totals} source/model pair(s)"
    )


def _check_turn_commits(context: _Context, problems: Problems) -> str:
    head = context.head
    revision = head.head_revision if head is not None else 0
    for session_id, turn_id, record, _committed in context.rows.turn_commits:
        try:
            stored = codec.decode(f"turn commit {turn_id!r}", record, TurnCommitRecord)
        except Exception as exc:  # damaged stored data of any shape is reported, not raised
            problems.add(f"turn {turn_id!r} record does not decode: {detail(exc)}")
            continue
        if stored.result.head_revision > revision:
            problems.add(f"turn {turn_id!r} claims revision {stored.result.head_revision} > head {revision}")
        if head is not None and head.bound and session_id != head.session_id:
            problems.add(f"turn {turn_id!r} belongs to session {session_id!r}, head to {head.session_id!r}")
    return f"{len(context.rows.turn_commits)} turn stamps"


def _check_queue(context: _Context, problems: Problems) -> str:
    fences: dict[str, int] = dict(context.rows.fences)
    for row in context.rows.batches:
        stored, (claim_id, owner, token, fence) = row[:10], row[10:14]
        batch_id, session_id = stored[1], stored[2]
        try:
            queue_rules.decode_batch(tuple(stored))
        except Exception as exc:  # damaged stored data of any shape is reported, not raised
            problems.add(f"batch {batch_id}: {detail(exc)}")
        if (claim_id is None) != (token is None) or (token is not None and owner is None):
            problems.add(f"batch {batch_id}: inconsistent claim columns")
        if isinstance(fence, int) and fence > fences.get(session_id, 0):
            problems.add(f"batch {batch_id}: fencing token {fence} exceeds the session's counter")
    return f"{len(context.rows.batches)} batches"


def _check_modules(context: _Context, problems: Problems) -> str:
    for module_ref, blob_ref in context.rows.modules:
        context.blob(blob_ref, f"module artifact {module_ref!r}: blob", problems)
    return f"{len(context.rows.modules)} pinned modules"


def _check_meta(context: _Context, problems: Problems) -> str:
    row = context.rows.meta
    if row is None:
        return "no metadata"
    session_id, _name, created_at, _model, _cwd, relation = row
    try:
        codec.decode_relation(relation)
    except Exception as exc:  # damaged stored data of any shape is reported, not raised
        problems.add(f"relation does not decode: {detail(exc)}")
    try:
        datetime.datetime.fromisoformat(created_at)
    except (TypeError, ValueError):
        problems.add(f"created_at {created_at!r} is not an RFC 3339 timestamp")
    head = context.head
    if head is not None and head.bound and head.session_id != session_id:
        problems.add(f"metadata names session {session_id!r}, the head {head.session_id!r}")
    return f"session {session_id!r}"

"""Moving a whole session between stores of any backend: the dump format, fork, export and import.

A :class:`SessionDump` is a store's logical content (no backend's table
layout): the head row, graph nodes, blobs in their codec encoding, metadata,
turn stamps, queue rows with their claims and fences, the attachment
manifest and pinned modules.  It encodes to JSON (bytes as base64) or
msgpack, so ``lash-store export`` from SQLite and ``import`` into PostgreSQL
(or the reverse) carry a session exactly.  A dump is *input* when it is
written back: everything in it is checked before the first row is written,
and a bad field is :class:`~lash_store.errors.InvalidInput` naming it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from lash_store.core import codec
from lash_store.core import queue as rules
from lash_store.core.checkpoint import decode_manifest
from lash_store.core.commit import TurnCommitRecord
from lash_store.core.gc import mark_live
from lash_store.core.graph import EncodedNode, decode_node, index_of
from lash_store.core.head import HeadRow
from lash_store.core.usage import decode_totals
from lash_store.errors import CorruptData, InvalidInput
from lash_store.model import SessionMeta, SessionRelation
from lash_store.service.commit import write_node_index
from lash_store.service.head import read_head
from lash_store.service.ports import Tx

# Every integer a backend stores is a signed 64-bit column; a dump cannot smuggle in more.
I64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
U63 = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]


# Rows of a dump: exact field names, nothing else accepted.


class HeadRecord(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    session_id: str
    head_revision: U63
    checkpoint_ref: str | None
    leaf_node_id: str | None
    body: bytes
    usage_ledger: bytes | None


class NodeRecord(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    node_id: str
    parent_node_id: str | None
    tombstoned: bool
    user_text: str | None
    body: bytes


class BlobRecord(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    hash: str
    encoding: str
    kind: str | None
    raw_size: U63
    created_at_ms: U63
    content: bytes


class MetaRecord(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    session_id: str
    session_name: str
    created_at: str
    model: str
    cwd: str | None
    relation: bytes


class TurnStampRecord(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    session_id: str
    turn_id: str
    record: bytes
    committed_at_ms: U63


class BatchRecord(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    enqueue_seq: U63
    batch_id: str
    session_id: str
    source_key: str | None
    delivery_policy: str
    slot_policy: str
    merge_key: str
    available_at_ms: U63
    enqueued_at_ms: U63
    payloads: bytes
    claim_id: str | None
    claim_owner_id: str | None
    claim_token: str | None
    claim_fencing_token: U63
    claim_claimed_at_ms: U63
    claim_expires_at_ms: U63


class FenceRecord(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    session_id: str
    last_fencing_token: U63


class AttachmentRecord(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    attachment_id: str
    session_id: str
    canonical_uri: str
    intent_at_ms: U63
    committed_at_ms: U63 | None


class ModuleRecord(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    module_ref: str
    blob_ref: str


class EdgeRecord(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    parent_ref: str
    child_ref: str


class StagedWriteRecord(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    anchor_id: str
    task_id: str
    idx: I64
    task_path: str
    channel: str
    value: bytes  # msgpack, as stored


class SessionDump(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """One store's logical content (see the module docstring)."""

    format: Literal["lash-store/session-dump"] = "lash-store/session-dump"
    version: Literal[1] = 1
    head: HeadRecord | None = None
    meta: MetaRecord | None = None
    nodes: list[NodeRecord] = msgspec.field(default_factory=list)
    blobs: list[BlobRecord] = msgspec.field(default_factory=list)
    turn_commits: list[TurnStampRecord] = msgspec.field(default_factory=list)
    batches: list[BatchRecord] = msgspec.field(default_factory=list)
    fences: list[FenceRecord] = msgspec.field(default_factory=list)
    last_enqueue_seq: U63 = 0
    attachments: list[AttachmentRecord] = msgspec.field(default_factory=list)
    modules: list[ModuleRecord] = msgspec.field(default_factory=list)
    # Layout revision 4: children of composite blobs and staged writes (dumps without them still load).
    blob_edges: list[EdgeRecord] = msgspec.field(default_factory=list)
    staged_writes: list[StagedWriteRecord] = msgspec.field(default_factory=list)


_STAGED_FIELDS = StagedWriteRecord.__struct_fields__
_BATCH_FIELDS = BatchRecord.__struct_fields__
_JSON = msgspec.json.Decoder(SessionDump)


def dump_to_json(dump: SessionDump) -> bytes:
    return msgspec.json.encode(dump)


def dump_from_json(data: bytes) -> SessionDump:
    """Parse a JSON dump; anything malformed (types, ranges, nesting) is :class:`InvalidInput`, one line."""
    try:
        return _JSON.decode(data)
    except msgspec.ValidationError as exc:
        raise InvalidInput("dump", str(exc)) from exc
    except (msgspec.DecodeError, RecursionError, ValueError) as exc:
        raise InvalidInput("dump", f"not a lash-store session dump ({str(exc) or type(exc).__name__})") from exc


# ---------------------------------------------------------------------------
# Reading


def read_dump(tx: Tx, *, live_only: bool) -> SessionDump:
    """The store's content; ``live_only`` (a fork) keeps the head's graph, usage and live blobs only."""
    head = read_head(tx)
    if live_only:
        marking = mark_live(lambda: head, lambda ref: _blob(tx, ref))
        if marking.skipped_reason is not None:
            raise CorruptData("session head", marking.skipped_reason)
        live = sorted({row[0] for row in tx.all("reachable_refs", {"roots": sorted(marking.live)})})
        blob_rows = tx.all("blob_rows", {"refs": live})
        edge_rows = tx.all("blob_edge_rows", {"all_edges": False, "refs": live})
    else:
        blob_rows = tx.all("all_blob_rows")
        edge_rows = tx.all("blob_edge_rows", {"all_edges": True, "refs": []})
    dump = SessionDump(
        head=_head_record(head),
        nodes=[
            NodeRecord(node_id=r[0], parent_node_id=r[1], tombstoned=bool(r[2]), user_text=r[3], body=r[4])
            for r in tx.iter("node_rows")
        ],
        blobs=[_blob_record(row) for row in blob_rows],
        modules=[ModuleRecord(module_ref=r[0], blob_ref=r[1]) for r in tx.iter("module_rows")],
        blob_edges=[EdgeRecord(parent_ref=r[0], child_ref=r[1]) for r in edge_rows],
        staged_writes=[
            StagedWriteRecord(**dict(zip(_STAGED_FIELDS, row, strict=True))) for row in tx.iter("staged_write_rows")
        ],
    )
    if live_only:
        return dump
    meta = tx.one("load_meta")
    seq = tx.one("last_enqueue_seq")
    return msgspec.structs.replace(
        dump,
        meta=None if meta is None else MetaRecord(**dict(zip(MetaRecord.__struct_fields__, meta, strict=True))),
        turn_commits=[
            TurnStampRecord(session_id=r[0], turn_id=r[1], record=r[2], committed_at_ms=r[3])
            for r in tx.iter("turn_commit_rows")
        ],
        batches=[BatchRecord(**dict(zip(_BATCH_FIELDS, row, strict=True))) for row in tx.iter("batch_rows")],
        fences=[FenceRecord(session_id=r[0], last_fencing_token=r[1]) for r in tx.iter("fence_rows")],
        last_enqueue_seq=0 if seq is None else int(seq[0]),
        attachments=[
            AttachmentRecord(
                attachment_id=r[0], session_id=r[1], canonical_uri=r[2], intent_at_ms=r[3], committed_at_ms=r[4]
            )
            for r in tx.iter("attachment_rows")
        ],
    )


def _head_record(head: HeadRow) -> HeadRecord | None:
    if not head.bound or head.session_id is None or head.body is None:
        return None
    return HeadRecord(
        session_id=head.session_id,
        head_revision=head.head_revision,
        checkpoint_ref=head.checkpoint_ref,
        leaf_node_id=head.leaf_node_id,
        body=head.body,
        usage_ledger=head.usage_ledger,
    )


def _blob_record(row: tuple[Any, ...]) -> BlobRecord:
    ref, encoding, kind, raw_size, created_at_ms, content = row
    codec.decode_blob(ref, encoding, content, raw_size)  # never export damage silently
    return BlobRecord(
        hash=ref, encoding=encoding, kind=kind, raw_size=raw_size, created_at_ms=created_at_ms, content=content
    )


def _blob(tx: Tx, ref: str) -> bytes | None:
    row = tx.one("get_blob", {"hash": ref})
    return None if row is None else codec.decode_blob(ref, *row)


# ---------------------------------------------------------------------------
# Writing


def write_dump(tx: Tx, dump: SessionDump, *, rebind: str | None, fork: bool) -> None:
    """Write ``dump`` into an empty store (a fork only needs an unbound head).

    Everything is checked first; counters are recomputed from the nodes, never trusted.
    """
    check_dump(dump)
    tx.send("lock_session")
    target = read_head(tx)
    if target.bound:
        raise InvalidInput("target", f"already holds session {target.session_id!r}; fork or import into an empty store")
    if not fork and int((tx.one("holds_data") or (0,))[0]) != 0:
        raise InvalidInput("target", "already holds data; import into an empty store")
    now = tx.now_ms()
    tx.run_many(
        "insert_blob_row",
        [{**msgspec.structs.asdict(blob), "created_at_ms": now if fork else blob.created_at_ms} for blob in dump.blobs],
    )
    tx.run_many("pin_module", [{"module_ref": m.module_ref, "blob_ref": m.blob_ref} for m in dump.modules])
    tx.run("delete_graph")
    indexed = [_indexed(node) for node in dump.nodes]
    tx.run_many(
        "insert_node_row",
        [
            {**msgspec.structs.asdict(node), "kind": one.kind, "lane": one.lane, "sort_key": one.sort_key}
            for node, one in zip(dump.nodes, indexed, strict=True)
        ],
    )
    write_node_index(tx, indexed)
    tx.run_many("put_blob_edge", [msgspec.structs.asdict(edge) for edge in dump.blob_edges])
    tx.run_many("insert_staged_write_row", [msgspec.structs.asdict(row) for row in dump.staged_writes])
    live = [node for node in dump.nodes if not node.tombstoned]
    head = dump.head
    if head is not None:
        tx.send(
            "write_head",
            HeadRow(
                rebind or head.session_id,
                head.head_revision,
                head.checkpoint_ref,
                head.leaf_node_id,
                head.body,
                head.usage_ledger,
                len(live),
                sum(node.user_text is not None for node in live),
            ).params(),
        )
    if fork:
        return
    if dump.meta is not None:
        tx.run("save_meta", msgspec.structs.asdict(dump.meta))
    tx.run_many("record_turn_commit", [msgspec.structs.asdict(stamp) for stamp in dump.turn_commits])
    tx.run_many("insert_fence_row", [msgspec.structs.asdict(fence) for fence in dump.fences])
    tx.run_many("insert_batch_row", [msgspec.structs.asdict(batch) for batch in dump.batches])
    highest = max([dump.last_enqueue_seq, *(batch.enqueue_seq for batch in dump.batches)])
    if highest:
        tx.run("raise_enqueue_seq", {"seq": highest})
    tx.run_many("insert_attachment_row", [msgspec.structs.asdict(row) for row in dump.attachments])
    if not same_content(read_dump(tx, live_only=False), dump):  # verified before the import commits
        raise InvalidInput("dump", "the imported store does not read back equal to the dump")


def _indexed(node: NodeRecord) -> EncodedNode:
    """A dumped node's index columns and rows, read from its body (the body is the truth; the index follows)."""
    decoded = decode_node(node.node_id, node.body)
    tags, refs = index_of(decoded)
    return EncodedNode(
        node.node_id,
        node.parent_node_id,
        node.body,
        node.user_text,
        decoded.kind,
        decoded.lane,
        decoded.sort_key,
        tags,
        refs,
    )


def same_content(a: SessionDump, b: SessionDump) -> bool:
    """Whether two dumps hold the same session, whatever order each backend lists its rows in."""
    return _normalised(a) == _normalised(b)


def _normalised(dump: SessionDump) -> SessionDump:
    highest = max([dump.last_enqueue_seq, *(batch.enqueue_seq for batch in dump.batches)])
    return msgspec.structs.replace(
        dump,
        blobs=sorted(dump.blobs, key=lambda blob: blob.hash),
        turn_commits=sorted(dump.turn_commits, key=lambda row: (row.session_id, row.turn_id)),
        batches=sorted(dump.batches, key=lambda batch: batch.enqueue_seq),
        fences=sorted(dump.fences, key=lambda row: row.session_id),
        attachments=sorted(dump.attachments, key=lambda row: row.attachment_id),
        modules=sorted(dump.modules, key=lambda row: row.module_ref),
        blob_edges=sorted(dump.blob_edges, key=lambda row: (row.parent_ref, row.child_ref)),
        last_enqueue_seq=highest,
    )


def check_dump(dump: SessionDump) -> None:
    """Prove every record of a dump decodes as what it claims to be, before anything is written."""
    try:
        _check_dump(dump)
    except CorruptData as exc:
        raise InvalidInput(f"dump: {exc.what}", exc.detail) from exc


def _check_dump(dump: SessionDump) -> None:
    _unique("dump.nodes", [node.node_id for node in dump.nodes])
    _unique("dump.blobs", [blob.hash for blob in dump.blobs])
    _unique("dump.batches", [batch.batch_id for batch in dump.batches])
    _unique("dump.modules", [module.module_ref for module in dump.modules])
    _unique("dump.attachments", [row.attachment_id for row in dump.attachments])
    _unique("dump.fences", [row.session_id for row in dump.fences])
    _unique("dump.turn_commits", [(row.session_id, row.turn_id) for row in dump.turn_commits])
    _unique("dump.batches (enqueue_seq)", [batch.enqueue_seq for batch in dump.batches])
    _unique("dump.blob_edges", [(edge.parent_ref, edge.child_ref) for edge in dump.blob_edges])
    _unique("dump.staged_writes", [(row.anchor_id, row.task_id, row.idx) for row in dump.staged_writes])
    for row in dump.staged_writes:
        codec.decode_any(f"staged write {row.anchor_id!r}/{row.task_id!r}/{row.idx}", row.value)
    contents = {
        blob.hash: codec.decode_blob(blob.hash, blob.encoding, blob.content, blob.raw_size) for blob in dump.blobs
    }
    for node in dump.nodes:
        decode_node(node.node_id, node.body)
    if dump.head is not None:
        codec.decode("session head", dump.head.body, codec.HeadBody)
        decode_totals(dump.head.usage_ledger)
        ref = dump.head.checkpoint_ref
        if ref is not None and ref in contents:
            decode_manifest(ref, contents[ref])
    if dump.meta is not None:
        codec.decode_relation(dump.meta.relation)
        SessionMeta(**{**msgspec.structs.asdict(dump.meta), "relation": SessionRelation()})
    for stamp in dump.turn_commits:
        codec.decode(f"turn commit {stamp.turn_id!r}", stamp.record, TurnCommitRecord)
    for batch in dump.batches:
        rules.decode_batch(tuple(getattr(batch, name) for name in _BATCH_FIELDS[:10]))
    for module in dump.modules:
        if module.blob_ref not in contents:
            raise InvalidInput(
                "dump.modules", f"module {module.module_ref!r} names blob {module.blob_ref}, not in the dump"
            )


def _unique(what: str, keys: list[Any]) -> None:
    if len(set(keys)) != len(keys):
        raise InvalidInput(what, "holds the same key twice")

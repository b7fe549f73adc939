"""The SQLite session store: one database file (or memory) per session."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType

import msgspec

from lash_store.core import codec
from lash_store.core import queue as rules
from lash_store.core.checkpoint import decode_manifest, encode_checkpoint, hydrate
from lash_store.core.commit import HeadRow, apply_commit, prepare_commit
from lash_store.core.gc import mark_live
from lash_store.core.graph import decode_node, walk_active_path
from lash_store.core.usage import ledger as token_ledger
from lash_store.core.validate import (
    check_count,
    check_id,
    check_ids,
    check_instance,
    check_ms,
    check_optional_id,
    check_text,
)
from lash_store.errors import CorruptData, InvalidInput
from lash_store.model import (
    AttachmentIntent,
    AttachmentManifestEntry,
    BlobArtifactDescriptor,
    BlobRef,
    DurabilityTier,
    GcReport,
    HydratedCheckpoint,
    PersistedSessionRead,
    QueuedWorkBatch,
    QueuedWorkBatchDraft,
    QueuedWorkClaim,
    QueuedWorkClaimBoundary,
    RuntimeCommit,
    RuntimeCommitResult,
    SessionCheckpoint,
    SessionGraph,
    SessionMeta,
    SessionNode,
    SessionPickerInfo,
    SessionReadScope,
    SessionRelation,
    VacuumReport,
)
from lash_store.options import DEFAULT_FILE_GRACE_MS, BlobProfile, StoreOptions
from lash_store.sqlite import blobs
from lash_store.sqlite import queue as sql_queue
from lash_store.sqlite.commit_tx import (
    SqliteCommitTx,
    read_graph_counts,
    read_head,
    read_usage,
    stamp_attachments,
)
from lash_store.sqlite.connection import Connection

log = logging.getLogger("lash_store")

_MODULE_DESCRIPTOR = BlobArtifactDescriptor.module_artifact()

# Walk from a leaf to the root; the depth cap (node count) turns a parent cycle into a finite walk.
_ACTIVE_PATH = """
WITH RECURSIVE path(node_id, parent_node_id, body, depth) AS (
    SELECT node_id, parent_node_id, body, 0 FROM graph_nodes WHERE node_id = ? AND tombstoned = 0
    UNION ALL
    SELECT g.node_id, g.parent_node_id, g.body, p.depth + 1
    FROM path p JOIN graph_nodes g ON g.node_id = p.parent_node_id
    WHERE g.tombstoned = 0 AND p.depth < ?
)
SELECT node_id, parent_node_id, body FROM path ORDER BY depth
"""


class Store:
    """A durable session store on SQLite.

    Open with :meth:`open` (a file, created if new), :meth:`memory` or
    :meth:`open_readonly`.  A store is safe to share between threads; calls
    are serialised on its one connection.  Several stores (threads or
    processes) may open the same file: writes serialise on SQLite's write
    lock and compare-and-set keeps them honest.
    """

    def __init__(self, connection: Connection, options: StoreOptions, *, in_memory: bool) -> None:
        self._db = connection
        self.options = options
        self._in_memory = in_memory
        self._profile = options.blob_profile
        grace = options.gc_policy.grace_ms
        self._grace_ms = grace if grace is not None else (0 if in_memory else DEFAULT_FILE_GRACE_MS)
        self._commits_since_gc = 0

    # -- lifecycle -------------------------------------------------------

    @classmethod
    def open(cls, path: str | os.PathLike[str], options: StoreOptions | None = None) -> Store:
        """Open (or create) the session database at ``path``.

        A file that is not ours is never modified: it raises
        :class:`NotAStoreDatabase` or :class:`UnsupportedSchemaVersion`.
        """
        options = _check_options(options or StoreOptions())
        return cls(Connection(Path(path), options), options, in_memory=False)

    @classmethod
    def memory(cls, options: StoreOptions | None = None) -> Store:
        """A private in-memory store (``LOW_LATENCY`` blobs by default, GC grace 0)."""
        options = _check_options(options or StoreOptions(blob_profile=BlobProfile.LOW_LATENCY))
        return cls(Connection(None, options), options, in_memory=True)

    @classmethod
    def open_readonly(cls, path: str | os.PathLike[str]) -> Store:
        """Open an existing store for reading; never creates or modifies a file."""
        options = StoreOptions(busy_timeout_ms=1000)
        return cls(Connection(Path(path), options, readonly=True), options, in_memory=False)

    def close(self) -> None:
        """Close the connection; later calls raise :class:`StoreClosed`."""
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def path(self) -> Path | None:
        return self._db.path

    @property
    def durability_tier(self) -> DurabilityTier:
        return DurabilityTier.INLINE if self._in_memory else DurabilityTier.DURABLE

    def _now(self) -> int:
        return check_ms("clock()", self.options.now_ms())

    # -- commits ---------------------------------------------------------

    def commit_runtime_state(self, commit: RuntimeCommit) -> RuntimeCommitResult:
        """Persist one runtime turn atomically (see the README for the exact order of checks)."""
        plan = prepare_commit(commit, self._profile)  # all encoding happens before the lock
        with self._db.write() as conn:
            result = apply_commit(SqliteCommitTx(conn), plan, self._now())
        self._maybe_auto_gc()
        return result

    def _maybe_auto_gc(self) -> None:
        every = self.options.gc_policy.auto_run_every_commits
        if not every:
            return
        self._commits_since_gc += 1
        if self._commits_since_gc % every == 0:
            try:
                self.gc_unreachable()
            except Exception:  # the commit already succeeded; never change its outcome
                log.warning("automatic GC after commit failed", exc_info=True)

    # -- reads -----------------------------------------------------------

    def load_session(self, scope: SessionReadScope | None = None) -> PersistedSessionRead | None:
        """Load head, graph (full or active path), hydrated checkpoint and usage from one snapshot."""
        scope = check_instance("scope", scope or SessionReadScope.full_graph(), SessionReadScope)
        check_optional_id("scope.leaf_node_id", scope.leaf_node_id)
        with self._db.read() as conn:
            head = read_head(conn)
            if head is None:
                return None
            body = codec.decode("session head", head.body, codec.HeadBody)
            if scope.kind == "active_path":
                graph = _active_path(conn, scope.leaf_node_id or head.leaf_node_id)
            else:
                graph = _full_graph(conn, head.leaf_node_id)
            checkpoint = _load_checkpoint(conn, head.checkpoint_ref) if head.checkpoint_ref else None
            ledger = token_ledger(read_usage(conn))
        return PersistedSessionRead(
            session_id=head.session_id,
            head_revision=head.head_revision,
            config=body.config,
            agent_frames=body.agent_frames,
            current_agent_frame_id=body.current_agent_frame_id,
            graph=graph,
            checkpoint_ref=head.checkpoint_ref,
            checkpoint=checkpoint,
            token_ledger=ledger,
        )

    def load_node(self, node_id: str) -> SessionNode | None:
        """One live (not tombstoned) node, or ``None``."""
        check_id("node_id", node_id)
        with self._db.read() as conn:
            row = conn.execute(
                "SELECT body FROM graph_nodes WHERE node_id = ? AND tombstoned = 0", (node_id,)
            ).fetchone()
        return None if row is None else decode_node(node_id, row[0])

    def tombstone_nodes(self, node_ids: Iterable[str]) -> int:
        """Hide nodes from every read (unknown ids are ignored); returns how many were hidden."""
        ids = check_ids("node_ids", node_ids)
        if not ids:
            return 0
        with self._db.write() as conn:
            return conn.executemany(
                "UPDATE graph_nodes SET tombstoned = 1 WHERE node_id = ? AND tombstoned = 0",
                [(node_id,) for node_id in ids],
            ).rowcount

    def vacuum(self) -> VacuumReport:
        """Physically remove tombstoned nodes."""
        with self._db.write() as conn:
            # A tombstoned leaf already reads as no leaf; keep it that way once its row is gone.
            conn.execute(
                "UPDATE session_head SET leaf_node_id = NULL "
                "WHERE leaf_node_id IN (SELECT node_id FROM graph_nodes WHERE tombstoned = 1)"
            )
            removed = conn.execute("DELETE FROM graph_nodes WHERE tombstoned = 1").rowcount
        return VacuumReport(removed_node_count=removed)

    # -- metadata --------------------------------------------------------

    def save_session_meta(self, meta: SessionMeta) -> None:
        """Write (replace) the session's descriptive metadata."""
        check_instance("meta", meta, SessionMeta)
        check_id("meta.session_id", meta.session_id)
        for name in ("session_name", "created_at", "model"):
            check_text(f"meta.{name}", getattr(meta, name))
        if meta.cwd is not None:
            check_text("meta.cwd", meta.cwd)
        relation = codec.encode("meta.relation", check_instance("meta.relation", meta.relation, SessionRelation))
        with self._db.write() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO session_meta VALUES (1, ?, ?, ?, ?, ?, ?)",
                (meta.session_id, meta.session_name, meta.created_at, meta.model, meta.cwd, relation),
            )

    def load_session_meta(self) -> SessionMeta | None:
        with self._db.read() as conn:
            row = conn.execute(
                "SELECT session_id, session_name, created_at, model, cwd, relation FROM session_meta"
            ).fetchone()
        if row is None:
            return None
        relation = codec.decode("session meta relation", row[5], SessionRelation)
        return SessionMeta(
            session_id=row[0], session_name=row[1], created_at=row[2], model=row[3], cwd=row[4], relation=relation
        )

    def load_picker_info(self) -> SessionPickerInfo | None:
        """Picker info from a maintained counter and the first user node's stored text; no node is decoded.

        The first live user message is found by walking rows in insertion
        order, which stops within the first few rows of any real session.
        """
        with self._db.read() as conn:
            meta = conn.execute("SELECT session_id, cwd, relation FROM session_meta").fetchone()
            if meta is None:
                return None
            first = conn.execute(
                "SELECT user_text FROM graph_nodes WHERE user_text IS NOT NULL AND tombstoned = 0 ORDER BY seq LIMIT 1"
            ).fetchone()
            _nodes, count = read_graph_counts(conn)
        return SessionPickerInfo(
            session_id=meta[0],
            cwd=meta[1],
            relation=codec.decode("session meta relation", meta[2], SessionRelation),
            first_user_message=first[0] if first else "",
            user_message_count=count,
        )

    def graph_node_count(self) -> int:
        """Live (not tombstoned) nodes, from the maintained counter."""
        with self._db.read() as conn:
            return read_graph_counts(conn)[0]

    # -- blobs and checkpoints -------------------------------------------

    def put_blob(self, content: bytes) -> BlobRef:
        """Store raw bytes (never compressed); returns their SHA-256 ref."""
        return self._put_blobs([codec.encode_blob(content, None, self._profile)])

    def put_artifact_blob(self, descriptor: BlobArtifactDescriptor, content: bytes) -> BlobRef:
        """Store a typed blob, compressed when the profile and descriptor allow and it shrinks."""
        descriptor = codec.check_descriptor(descriptor)
        return self._put_blobs([codec.encode_blob(content, descriptor, self._profile)])

    def _put_blobs(self, encoded: list[codec.EncodedBlob]) -> BlobRef:
        with self._db.write() as conn:
            blobs.put(conn, encoded, self._now())
        return BlobRef(encoded[-1].hash)

    def get_blob(self, ref: str) -> bytes | None:
        """A blob's raw content, ``None`` if absent; bytes that fail their hash raise :class:`CorruptData`."""
        check_id("ref", ref)
        with self._db.read() as conn:
            return blobs.get(conn, ref)

    def put_checkpoint(self, hydrated: HydratedCheckpoint) -> tuple[BlobRef, SessionCheckpoint]:
        """Store a checkpoint's snapshots and manifest; returns ``(checkpoint_ref, manifest)``."""
        encoded, ref, manifest = encode_checkpoint(hydrated, self._profile, "hydrated")
        with self._db.write() as conn:
            blobs.put(conn, encoded, self._now())
        return BlobRef(ref), manifest

    def get_checkpoint(self, ref: str) -> HydratedCheckpoint | None:
        """A hydrated checkpoint; refs of missing children are still reported."""
        check_id("ref", ref)
        with self._db.read() as conn:
            return _load_checkpoint(conn, ref)

    # -- garbage collection ----------------------------------------------

    def gc_unreachable(self) -> GcReport:
        """Delete blobs no root reaches and older than the grace period.

        Refuses (deletes nothing, sets ``skipped_reason``) when the head or
        its rooted manifest is present but undecodable.
        """
        with self._db.write() as conn:
            marking = mark_live(lambda: read_head(conn), lambda ref: _get_blob_or_corrupt(conn, ref))
            modules = conn.execute("SELECT count(*) FROM artifact_refs").fetchone()[0]
            if marking.skipped_reason is not None:
                log.warning("GC skipped: %s", marking.skipped_reason)
                total = conn.execute("SELECT count(*) FROM blobs").fetchone()[0]
                return GcReport(
                    root_count=len(marking.live) + modules,
                    retained_blob_count=total,
                    deleted_blob_count=0,
                    skipped_reason=marking.skipped_reason,
                )
            deleted = conn.execute(
                "DELETE FROM blobs WHERE created_at_ms <= ? "
                "AND hash NOT IN (SELECT value FROM json_each(?)) "
                "AND hash NOT IN (SELECT blob_ref FROM artifact_refs)",
                (self._now() - self._grace_ms, _json_list(marking.live)),
            ).rowcount
            retained = conn.execute("SELECT count(*) FROM blobs").fetchone()[0]
        return GcReport(
            root_count=len(marking.live) + modules, retained_blob_count=retained, deleted_blob_count=deleted
        )

    # -- attachment write-ahead manifest ---------------------------------

    def record_intent(self, intent: AttachmentIntent) -> None:
        """Record that attachment bytes are about to be written.

        Re-recording an uncommitted id refreshes it (so a sweep cannot delete
        bytes that were just re-uploaded); a committed row never changes.
        """
        check_instance("intent", intent, AttachmentIntent)
        check_id("intent.attachment_id", intent.attachment_id)
        check_id("intent.session_id", intent.session_id)
        check_text("intent.canonical_uri", intent.canonical_uri)
        check_ms("intent.intent_at_epoch_ms", intent.intent_at_epoch_ms)
        with self._db.write() as conn:
            conn.execute(
                "INSERT INTO attachment_manifest VALUES (?, ?, ?, ?, NULL) ON CONFLICT (attachment_id) "
                "DO UPDATE SET session_id = excluded.session_id, canonical_uri = excluded.canonical_uri, "
                "intent_at_ms = max(intent_at_ms, excluded.intent_at_ms) WHERE committed_at_ms IS NULL",
                (intent.attachment_id, intent.session_id, intent.canonical_uri, intent.intent_at_epoch_ms),
            )

    def commit_refs(self, session_id: str, attachment_ids: Iterable[str]) -> int:
        """Mark intents of ``session_id`` committed (first stamp wins); returns how many changed."""
        check_id("session_id", session_id)
        ids = check_ids("attachment_ids", attachment_ids)
        if not ids:
            return 0
        with self._db.write() as conn:
            return stamp_attachments(conn, session_id, ids, self._now())

    def list_uncommitted(self, older_than_epoch_ms: int) -> list[AttachmentManifestEntry]:
        """Uncommitted intents recorded at or before ``older_than_epoch_ms``, oldest first."""
        check_ms("older_than_epoch_ms", older_than_epoch_ms)
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT attachment_id, session_id, canonical_uri, intent_at_ms FROM attachment_manifest "
                "WHERE committed_at_ms IS NULL AND intent_at_ms <= ? ORDER BY intent_at_ms, attachment_id",
                (older_than_epoch_ms,),
            ).fetchall()
        return [
            AttachmentManifestEntry(attachment_id=r[0], session_id=r[1], canonical_uri=r[2], intent_at_epoch_ms=r[3])
            for r in rows
        ]

    def forget(self, attachment_id: str) -> None:
        """Drop a manifest row (after the host deleted an orphan's bytes)."""
        check_id("attachment_id", attachment_id)
        with self._db.write() as conn:
            conn.execute("DELETE FROM attachment_manifest WHERE attachment_id = ?", (attachment_id,))

    # -- module artifacts ------------------------------------------------

    def put_module_artifact(self, module_ref: str, data: bytes) -> BlobRef:
        """Pin a module's bytes under ``module_ref`` (a GC root until forgotten)."""
        check_id("module_ref", module_ref)
        encoded = codec.encode_blob(data, _MODULE_DESCRIPTOR, self._profile)
        with self._db.write() as conn:
            blobs.put(conn, [encoded], self._now())
            conn.execute("INSERT OR REPLACE INTO artifact_refs VALUES (?, ?)", (module_ref, encoded.hash))
        return BlobRef(encoded.hash)

    def get_module_artifact(self, module_ref: str) -> bytes | None:
        """A pinned module's bytes; ``None`` if never pinned, :class:`CorruptData` if its blob is gone."""
        check_id("module_ref", module_ref)
        with self._db.read() as conn:
            row = conn.execute("SELECT blob_ref FROM artifact_refs WHERE artifact_ref = ?", (module_ref,)).fetchone()
            if row is None:
                return None
            return _get_blob_or_corrupt(conn, row[0], f"module artifact {module_ref!r}")

    def forget_module_artifact(self, module_ref: str) -> None:
        """Unpin a module; its blob becomes collectable."""
        check_id("module_ref", module_ref)
        with self._db.write() as conn:
            conn.execute("DELETE FROM artifact_refs WHERE artifact_ref = ?", (module_ref,))

    # -- fork ------------------------------------------------------------

    def copy_session_into(self, target: Store, *, session_id: str | None = None) -> None:
        """Fork this session into an empty ``target``: head, graph, usage and every live blob.

        The target is written in one transaction.  ``session_id`` rebinds the
        copy to another session id (default: keep this session's id).
        """
        check_instance("target", target, Store)
        check_optional_id("session_id", session_id)
        with self._db.read() as conn:
            head = read_head(conn)
            if head is None:
                raise InvalidInput("source", "has no session head to copy")
            marking = mark_live(lambda: head, lambda ref: _get_blob_or_corrupt(conn, ref))
            if marking.skipped_reason is not None:
                raise CorruptData("session head", marking.skipped_reason)
            blob_rows = conn.execute(
                "SELECT hash, encoding, kind, raw_size, content FROM blobs "
                "WHERE hash IN (SELECT value FROM json_each(?)) OR hash IN (SELECT blob_ref FROM artifact_refs)",
                (_json_list(marking.live),),
            ).fetchall()
            modules = conn.execute("SELECT artifact_ref, blob_ref FROM artifact_refs").fetchall()
            nodes = conn.execute(
                "SELECT node_id, parent_node_id, tombstoned, user_text, body FROM graph_nodes ORDER BY seq"
            ).fetchall()
            ledger = token_ledger(read_usage(conn))
        bound = session_id or head.session_id
        with target._db.write() as conn:
            tx = SqliteCommitTx(conn)
            if tx.read_head() is not None:
                raise InvalidInput("target", "already holds a session head; fork into an empty store")
            now = target._now()
            conn.executemany(
                "INSERT INTO blobs (hash, encoding, kind, raw_size, created_at_ms, content) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (hash) DO UPDATE SET created_at_ms = ?",
                [(*row[:4], now, row[4], now) for row in blob_rows],
            )
            conn.executemany("INSERT OR REPLACE INTO artifact_refs VALUES (?, ?)", modules)
            conn.execute("DELETE FROM graph_nodes")
            conn.executemany(
                "INSERT INTO graph_nodes (node_id, parent_node_id, tombstoned, user_text, body) VALUES (?, ?, ?, ?, ?)",
                nodes,
            )
            tx.add_usage(ledger)
            tx.write_head(HeadRow(bound, head.head_revision, head.checkpoint_ref, head.leaf_node_id, head.body))

    # -- work queue ------------------------------------------------------

    def enqueue_queued_work(self, draft: QueuedWorkBatchDraft) -> QueuedWorkBatch:
        """Add a batch; with a source key this is idempotent while that batch exists."""
        payloads = rules.check_draft(draft)
        with self._db.write() as conn:
            return sql_queue.enqueue(conn, draft, payloads, self._now())

    def claim_ready_queued_work(
        self,
        session_id: str,
        owner_id: str,
        boundary: QueuedWorkClaimBoundary,
        lease_ttl_ms: int,
        max_batches: int,
    ) -> QueuedWorkClaim | None:
        """Lease the next ready group of batches, or ``None`` when nothing is ready (or a race was lost)."""
        rules.check_claim_request(session_id, owner_id, boundary, lease_ttl_ms)
        check_count("max_batches", max_batches)
        if max_batches == 0:
            return None
        return self._claim(session_id, owner_id, boundary, lease_ttl_ms, max_batches, None)

    def claim_ready_queued_work_by_batch_ids(
        self,
        session_id: str,
        owner_id: str,
        boundary: QueuedWorkClaimBoundary,
        lease_ttl_ms: int,
        batch_ids: Sequence[str],
    ) -> QueuedWorkClaim | None:
        """Claim exactly ``batch_ids`` if they are the group the normal rule picks next; else ``None``, no trace."""
        rules.check_claim_request(session_id, owner_id, boundary, lease_ttl_ms)
        wanted = check_ids("batch_ids", batch_ids)
        if not wanted:
            return None
        return self._claim(session_id, owner_id, boundary, lease_ttl_ms, len(wanted), wanted)

    def _claim(
        self,
        session_id: str,
        owner_id: str,
        boundary: QueuedWorkClaimBoundary,
        lease_ttl_ms: int,
        max_batches: int,
        wanted: list[str] | None,
    ) -> QueuedWorkClaim | None:
        try:
            with self._db.write() as conn:
                claim = sql_queue.claim(
                    conn, session_id, owner_id, boundary, lease_ttl_ms, max_batches, self._now(), wanted
                )
                if claim is None and wanted is not None:
                    sql_queue.find_corrupt(conn, session_id, wanted)
                return claim
        except sql_queue.LostRace:
            return None

    def renew_queued_work_claim(self, claim: QueuedWorkClaim, lease_ttl_ms: int) -> QueuedWorkClaim:
        """Extend the lease of every batch of the claim, or raise :class:`QueuedWorkClaimExpired` and change nothing."""
        rules.check_claim(claim)
        check_ms("lease_ttl_ms", lease_ttl_ms)
        with self._db.write() as conn:
            expires = sql_queue.renew(conn, claim, lease_ttl_ms, self._now())
        return _replace_expiry(claim, expires)

    def abandon_queued_work_claim(self, claim: QueuedWorkClaim) -> int:
        """Release a claim so its batches are claimable again; stale claims are a no-op. Returns rows released."""
        rules.check_claim(claim)
        with self._db.write() as conn:
            return sql_queue.abandon(conn, claim)

    def cancel_queued_work_batch(self, session_id: str, batch_id: str) -> QueuedWorkBatch | None:
        """Remove a batch that is not live-claimed; ``None`` if claimed or gone."""
        check_id("session_id", session_id)
        check_id("batch_id", batch_id)
        with self._db.write() as conn:
            return sql_queue.cancel(conn, session_id, batch_id, self._now())

    def list_queued_work(self, session_id: str) -> list[QueuedWorkBatch]:
        """Every batch of the session in FIFO order (undecodable rows are logged and left out)."""
        check_id("session_id", session_id)
        with self._db.read() as conn:
            return sql_queue.list_batches(conn, session_id, None)

    def list_pending_queued_work(self, session_id: str) -> list[QueuedWorkBatch]:
        """Batches not live-claimed now (delayed ones included), in FIFO order."""
        check_id("session_id", session_id)
        with self._db.read() as conn:
            return sql_queue.list_batches(conn, session_id, self._now())


# ---------------------------------------------------------------------------
# Read helpers (run inside the caller's read transaction)


def _check_options(options: StoreOptions) -> StoreOptions:
    check_instance("options", options, StoreOptions)
    check_instance("options.blob_profile", options.blob_profile, BlobProfile)
    check_count("options.busy_timeout_ms", options.busy_timeout_ms)
    every = options.gc_policy.auto_run_every_commits
    if every is not None:
        check_count("options.gc_policy.auto_run_every_commits", every)
    if options.gc_policy.grace_ms is not None:
        check_ms("options.gc_policy.grace_ms", options.gc_policy.grace_ms)
    return options


def _json_list(refs: Iterable[str]) -> str:
    """A set of refs as one JSON parameter, so SQL can treat it as a table (``json_each``)."""
    return json.dumps(sorted(refs))


def _replace_expiry(claim: QueuedWorkClaim, expires: int) -> QueuedWorkClaim:
    return msgspec.structs.replace(claim, expires_at_epoch_ms=expires)


def _get_blob_or_corrupt(conn: sqlite3.Connection, ref: str, what: str | None = None) -> bytes | None:
    content = blobs.get(conn, ref)
    if content is None and what is not None:
        raise CorruptData(what, f"blob {ref} is missing")
    return content


def _load_checkpoint(conn: sqlite3.Connection, ref: str) -> HydratedCheckpoint | None:
    content = blobs.get(conn, ref)
    if content is None:
        return None
    return hydrate(decode_manifest(ref, content), lambda child: blobs.get(conn, child))


def _full_graph(conn: sqlite3.Connection, leaf: str | None) -> SessionGraph:
    rows = conn.execute("SELECT node_id, body FROM graph_nodes WHERE tombstoned = 0 ORDER BY seq")
    nodes = [decode_node(node_id, body) for node_id, body in rows]
    return SessionGraph(nodes=nodes, leaf_node_id=_live_leaf(conn, leaf))


def _active_path(conn: sqlite3.Connection, leaf: str | None) -> SessionGraph:
    leaf = _live_leaf(conn, leaf)
    if leaf is None:
        return SessionGraph()
    depth_cap = read_graph_counts(conn)[0]
    rows = conn.execute(_ACTIVE_PATH, (leaf, depth_cap))
    return SessionGraph(nodes=walk_active_path(leaf, rows), leaf_node_id=leaf)


def _live_leaf(conn: sqlite3.Connection, leaf: str | None) -> str | None:
    """A tombstoned leaf reads as no leaf; a leaf naming an unknown node is reported as stored."""
    if leaf is None:
        return None
    row = conn.execute("SELECT tombstoned FROM graph_nodes WHERE node_id = ?", (leaf,)).fetchone()
    return None if row is not None and row[0] else leaf

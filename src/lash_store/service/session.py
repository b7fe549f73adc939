"""The session store's behaviour, once: every public method of every backend's store.

:class:`SessionService` validates arguments, decides ordering, assembles
results and applies policies (GC grace and auto-GC, fork rules, the rule that
a tombstoned leaf reads as no leaf).  It reaches its data only through a
:class:`~lash_store.service.ports.Backend`: a transaction runner whose
transactions execute named queries.  ``Store`` (SQLite), ``PostgresStore``
and the in-memory ``ReferenceStore`` are this class over their backends.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from lash_store.api import SessionStoreAPI
from lash_store.core import codec
from lash_store.core import queue as rules
from lash_store.core.checkpoint import decode_manifest, encode_checkpoint, hydrate
from lash_store.core.commit import check_held_claims, prepare_commit
from lash_store.core.gc import Marking, mark_live
from lash_store.core.graph import check_tags, decode_node, walk_active_path
from lash_store.core.usage import decode_totals
from lash_store.core.usage import ledger as token_ledger
from lash_store.core.validate import (
    check_count,
    check_id,
    check_ids,
    check_instance,
    check_list,
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
    GcReport,
    HydratedCheckpoint,
    PersistedSessionRead,
    PruneReport,
    QueuedWorkBatch,
    QueuedWorkBatchDraft,
    QueuedWorkClaim,
    QueuedWorkClaimBoundary,
    QueuedWorkCompletion,
    QueuedWorkDeadLetter,
    RekeyReport,
    RuntimeCommit,
    RuntimeCommitResult,
    SessionCheckpoint,
    SessionGraph,
    SessionMeta,
    SessionNode,
    SessionPickerInfo,
    SessionReadScope,
    SessionRelation,
    StagedWrite,
    TagValue,
    VacuumReport,
)
from lash_store.options import DEFAULT_FILE_GRACE_MS, StoreOptions, TelemetryOptions, check_options
from lash_store.service import diagnostics, transfer
from lash_store.service import queue as queue_ops
from lash_store.service.commit import (
    apply_commit,
    blob_params,
    check_bound_ref,
    check_fences,
    hide_nodes,
    stamp_params,
)
from lash_store.service.head import read_head
from lash_store.service.lifecycle import BackendService
from lash_store.service.ports import Backend, Tx
from lash_store.service.sealed import rekey as sealed_rekey
from lash_store.service.sealed import sealed_backend

if TYPE_CHECKING:
    from lash_store.telemetry import Recorder

log = logging.getLogger("lash_store")

_MODULE_DESCRIPTOR = BlobArtifactDescriptor.module_artifact()


class SessionService(BackendService):
    """A session store over any backend (see the module docstring).

    A store is safe to share between threads; its backend serialises calls.
    Several stores (threads, processes, machines) may hold the same session:
    writes serialise on the backend's lock and compare-and-set keeps them honest.
    """

    def __init__(self, backend: Backend, options: StoreOptions) -> None:
        self.options = check_options(options)
        if self.options.encryption is not None:
            backend = sealed_backend(backend, self.options.encryption)
        self._backend = backend
        grace = self.options.gc_policy.grace_ms
        self._grace_ms = grace if grace is not None else (0 if backend.in_memory else DEFAULT_FILE_GRACE_MS)
        self._profile = self.options.blob_profile
        self._commits_since_gc = 0
        # Chosen once: without OpenTelemetry (or with telemetry off) every operation pays one `is None` check.
        self._telemetry = _recorder(backend.name, self.options.telemetry)

    # -- lifecycle -------------------------------------------------------

    @property
    def path(self) -> Path | None:
        """The database file, or ``None`` for stores that have none."""
        return None

    # -- commits ---------------------------------------------------------

    def commit_runtime_state(self, commit: RuntimeCommit) -> RuntimeCommitResult:
        """Persist one runtime turn atomically (see the README for the exact order of checks)."""
        result = self._commit(commit)[0] if self._telemetry is None else self._telemetry.commit(self._commit, commit)
        self._maybe_auto_gc()
        return result

    def _commit(self, commit: RuntimeCommit) -> tuple[RuntimeCommitResult, bool]:
        plan = prepare_commit(commit, self._profile)  # all encoding happens before the lock
        return self._backend.write(lambda tx: apply_commit(tx, plan))

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
        """Head, graph (full or active path), hydrated checkpoint and usage, from one snapshot."""
        scope = check_instance("scope", scope or SessionReadScope.full_graph(), SessionReadScope)
        if scope.kind not in ("full_graph", "active_path"):
            raise InvalidInput("scope.kind", f"unknown read scope {scope.kind!r}")
        check_optional_id("scope.leaf_node_id", scope.leaf_node_id)
        if self._telemetry is not None:
            return self._telemetry.load_session(
                scope.kind, lambda: self._backend.read(lambda tx: _load_session(tx, scope))
            )
        return self._backend.read(lambda tx: _load_session(tx, scope))

    def load_node(self, node_id: str) -> SessionNode | None:
        """One live (not tombstoned) node, or ``None``."""
        check_id("node_id", node_id)
        if self._telemetry is not None:
            return self._telemetry.load_node(lambda: self._load_node(node_id))
        return self._load_node(node_id)

    def _load_node(self, node_id: str) -> SessionNode | None:
        row = self._backend.read(lambda tx: tx.one("load_node", {"node_id": node_id}))
        return None if row is None else decode_node(node_id, row[0])

    def tombstone_nodes(self, node_ids: Iterable[str]) -> int:
        """Hide nodes from every read (unknown ids are ignored); returns how many were hidden."""
        ids = check_ids("node_ids", node_ids)
        if not ids:
            return 0
        return self._backend.write(lambda tx: _tombstone(tx, ids))

    def vacuum(self) -> VacuumReport:
        """Physically remove tombstoned nodes (reads do not change)."""
        if self._telemetry is not None:
            return self._telemetry.vacuum(lambda: self._backend.write(_vacuum))
        return self._backend.write(_vacuum)

    def query_nodes(
        self,
        *,
        kind: str | None = None,
        lane: str | None = None,
        sort_before: str | None = None,
        sort_key: str | None = None,
        tags: Mapping[str, TagValue] | None = None,
        limit: int | None = None,
    ) -> list[SessionNode]:
        """Live nodes by their indexed fields, largest ``sort_key`` first (then latest inserted first).

        ``kind``/``lane`` (``None``: any), ``sort_before`` (strictly below),
        ``sort_key`` (equal), ``tags`` (every pair must match exactly) and
        ``limit`` (``None``: all) narrow the result.  Nodes without a sort key
        come after those with one.  Served by indexes, one read snapshot.
        """
        params: dict[str, Any] = {
            "kind": None if kind is None else check_text("kind", kind),
            "any_lane": lane is None,
            "lane": None if lane is None else check_text("lane", lane),
            "sort_before": None if sort_before is None else check_text("sort_before", sort_before),
            "sort_key": None if sort_key is None else check_text("sort_key", sort_key),
        }
        if tags is not None and not isinstance(tags, Mapping):
            raise InvalidInput("tags", f"must be a mapping, got {type(tags).__name__}")
        wanted = set(check_tags("tags", dict(tags or {})))
        if limit is not None:
            check_count("limit", limit)
        params.update(tags=sorted(wanted), tag_count=len(wanted), limit=limit)
        rows = self._backend.read(lambda tx: tx.all("query_nodes", params))
        return [decode_node(node_id, body) for node_id, body in rows]

    def walk_ancestors(self, node_id: str, max_depth: int) -> list[SessionNode]:
        """``node_id`` and up to ``max_depth`` of its live ancestors, nearest first, from one snapshot.

        The walk stops at the root, at a tombstoned or missing node, and at a
        parent cycle; an unknown or tombstoned ``node_id`` gives ``[]``.
        """
        check_id("node_id", node_id)
        check_count("max_depth", max_depth)
        rows = self._backend.read(lambda tx: tx.all("active_path", {"leaf_node_id": node_id, "depth_cap": max_depth}))
        return list(reversed(walk_active_path(node_id, rows)))

    # -- staged writes ---------------------------------------------------

    def put_staged_writes(
        self, writes: Iterable[StagedWrite], *, held_queue_claims: Iterable[QueuedWorkCompletion] = ()
    ) -> int:
        """Store pending writes, in one transaction; returns how many rows were written or replaced.

        A write is keyed by ``(anchor_id, task_id, idx)``: with ``idx >= 0`` a
        stored one is kept (a retry is a no-op), with ``idx < 0`` it is
        replaced.  The anchor need not exist: writes may precede their node.
        ``held_queue_claims`` fence the write: each claim must still own exactly
        its batches under its token with a running lease, or
        ``QueuedWorkClaimExpired`` is raised and nothing is written.
        """
        rows = [_staged_params(f"writes[{i}]", w) for i, w in enumerate(check_list("writes", writes))]
        held = check_held_claims("held_queue_claims", held_queue_claims)
        if not rows:
            return 0

        def body(tx: Tx) -> int:
            tx.send("lock_session")
            if held:
                check_fences(tx, None, held)  # staged writes bind no session: the claims name their queues
            kept = tx.run_many("put_staged_write", [row for row in rows if row["idx"] >= 0])
            return kept + tx.run_many("replace_staged_write", [row for row in rows if row["idx"] < 0])

        return self._backend.write(body)

    def load_staged_writes(self, anchor_ids: Iterable[str], channels: Iterable[str] | None = None) -> list[StagedWrite]:
        """The staged writes of ``anchor_ids`` (optionally only ``channels``), in the order first stored."""
        anchors = sorted(set(check_ids("anchor_ids", anchor_ids)))
        wanted = None if channels is None else sorted(set(check_ids("channels", channels)))
        if not anchors or wanted == []:
            return []
        params = {"anchor_ids": anchors, "any_channel": wanted is None, "channels": wanted or []}
        rows = self._backend.read(lambda tx: tx.all("load_staged_writes", params))
        return [_decode_staged(row) for row in rows]

    def delete_staged_writes(self, anchor_ids: Iterable[str]) -> int:
        """Drop every staged write of ``anchor_ids``; returns how many."""
        anchors = sorted(set(check_ids("anchor_ids", anchor_ids)))
        if not anchors:
            return 0

        def body(tx: Tx) -> int:
            tx.send("lock_session")
            return tx.run("delete_staged_writes", {"anchor_ids": anchors})

        return self._backend.write(body)

    def graph_node_count(self) -> int:
        """Live (not tombstoned) nodes, from the maintained counter."""
        return self._backend.read(lambda tx: read_head(tx).node_count)

    # -- metadata --------------------------------------------------------

    def save_session_meta(self, meta: SessionMeta) -> None:
        """Write (replace) the session's descriptive metadata."""
        params = meta_params(meta)
        self._backend.write(lambda tx: tx.run("save_meta", params))

    def load_session_meta(self) -> SessionMeta | None:
        row = self._backend.read(lambda tx: tx.one("load_meta"))
        return None if row is None else _decode_meta(row)

    def load_picker_info(self) -> SessionPickerInfo | None:
        """Picker info from the maintained counter and the first live user message's stored text."""
        return self._backend.read(_picker_info)

    def ensure_session_meta(self, meta: SessionMeta) -> bool:
        """Write ``meta`` unless the session already has metadata (never overwritten); True if written."""
        params = meta_params(meta)

        def body(tx: Tx) -> bool:
            tx.send("lock_session")
            if tx.one("load_meta") is not None:
                return False
            tx.run("save_meta", params)
            return True

        return self._backend.write(body)

    # -- blobs and checkpoints -------------------------------------------

    def put_blob(self, content: bytes) -> BlobRef:
        """Store raw bytes (never compressed); returns their SHA-256 ref."""
        return self._put_blobs([codec.encode_blob(content, None, self._profile)])

    def put_artifact_blob(self, descriptor: BlobArtifactDescriptor, content: bytes) -> BlobRef:
        """Store a typed blob, compressed when the profile and descriptor allow and it shrinks."""
        descriptor = codec.check_descriptor(descriptor)
        return self._put_blobs([codec.encode_blob(content, descriptor, self._profile)])

    def _put_blobs(self, encoded: list[codec.EncodedBlob]) -> BlobRef:
        self._backend.write(lambda tx: _put_blobs(tx, encoded))
        return BlobRef(encoded[-1].hash)

    def get_blob(self, ref: str) -> bytes | None:
        """A blob's raw content, ``None`` if absent; bytes that fail their hash raise :class:`CorruptData`."""
        check_id("ref", ref)
        return self._backend.read(lambda tx: _get_blob(tx, ref))

    def get_blobs(self, refs: Iterable[str]) -> dict[str, bytes]:
        """Several blobs' raw content from one snapshot, by ref; absent refs are left out (hashes are verified)."""
        wanted = sorted(set(check_ids("refs", refs)))
        if not wanted:
            return {}
        rows = self._backend.read(lambda tx: tx.all("get_blobs", {"refs": wanted}))
        return {row[0]: codec.decode_blob(row[0], *row[1:]) for row in rows}

    def put_checkpoint(self, hydrated: HydratedCheckpoint) -> tuple[BlobRef, SessionCheckpoint]:
        """Store a checkpoint's snapshots and manifest; returns ``(checkpoint_ref, manifest)``.

        Refs given without a value must name stored blobs of their kind.
        """
        encoded = encode_checkpoint(hydrated, self._profile, "hydrated")

        def body(tx: Tx) -> None:
            for bound in encoded.bound_refs:
                check_bound_ref(tx, bound)
            _put_blobs(tx, encoded.blobs)

        self._backend.write(body)
        return BlobRef(encoded.checkpoint_ref), encoded.manifest

    def get_checkpoint(self, ref: str) -> HydratedCheckpoint | None:
        """A hydrated checkpoint; refs of missing children are still reported."""
        check_id("ref", ref)
        return self._backend.read(lambda tx: _load_checkpoint(tx, ref))

    # -- garbage collection ----------------------------------------------

    def gc_unreachable(self, *, dry_run: bool = False) -> GcReport:
        """Delete blobs no root reaches and older than the grace period.

        Refuses (deletes nothing, sets ``skipped_reason``) when the head or its
        rooted manifest is present but undecodable.  With ``dry_run`` it
        reports what it would delete and changes nothing.
        """
        if not isinstance(dry_run, bool):
            raise InvalidInput("dry_run", f"must be a bool, got {type(dry_run).__name__}")
        return self.gc_plan(dry_run=dry_run)[0]

    def gc_plan(self, *, dry_run: bool = True, grace_ms: int | None = None) -> tuple[GcReport, int]:
        """:meth:`gc_unreachable` with the stored bytes it deletes (or, in a dry run, would delete).

        ``grace_ms`` overrides the store's grace period for this call (the command line's ``--grace-ms``).
        """
        grace = self._grace_ms if grace_ms is None else check_ms("grace_ms", grace_ms)
        if self._telemetry is not None:
            return self._telemetry.gc(dry_run, lambda: self._gc(grace, dry_run))
        return self._gc(grace, dry_run)

    def _gc(self, grace_ms: int, dry_run: bool) -> tuple[GcReport, int]:
        if dry_run:
            return self._backend.read(lambda tx: _gc(tx, grace_ms, dry_run=True))
        return self._backend.write(lambda tx: _gc(tx, grace_ms, dry_run=False))

    # -- retention -------------------------------------------------------

    def prune(self, *, dry_run: bool = False, turn_stamps_older_than_ms: int | None = None) -> PruneReport:
        """Remove turn-commit stamps older than the retention horizon (set-based, one transaction).

        The horizon is ``turn_stamps_older_than_ms`` or else the options'
        ``retention.turn_stamps_ms``; with neither, nothing is pruned.  A stamp
        only turns a retried turn into a replay: heads, nodes, blobs, claims and
        pinned artifacts are never touched.  ``dry_run`` counts and changes nothing.
        """
        check_instance("dry_run", dry_run, bool)
        horizon = self.options.retention.turn_stamps_ms
        if turn_stamps_older_than_ms is not None:
            horizon = check_ms("turn_stamps_older_than_ms", turn_stamps_older_than_ms)
        if horizon is None:
            return PruneReport(dry_run=dry_run, cutoff_epoch_ms=None, turn_stamp_count=0)
        if dry_run:
            return self._backend.read(lambda tx: _prune(tx, horizon, dry_run=True))
        return self._backend.write(lambda tx: _prune(tx, horizon, dry_run=False))

    # -- encryption at rest ----------------------------------------------

    def rekey(self, *, batch_size: int = 500) -> RekeyReport:
        """Re-seal every stored value under the key ring's current key (README, "Encryption at rest").

        Runs in batches of ``batch_size`` rows, one short write transaction
        each; every update is a compare-and-set on the old sealed value, so it
        is safe while writers run (a row a writer replaced is sealed under the
        current key already) and resumable (a second run skips what is done).
        The report's ``remaining_key_ids`` is empty when no stored value needs
        an older key any more: those keys may then leave the ring.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= 100_000:
            raise InvalidInput("batch_size", "must be an integer from 1 to 100000")
        report: RekeyReport = sealed_rekey(self._backend, batch_size=batch_size)
        return report

    # -- attachment write-ahead manifest ---------------------------------

    def record_intent(self, intent: AttachmentIntent) -> None:
        """Record that attachment bytes are about to be written.

        Re-recording an uncommitted id refreshes it (so a sweep cannot delete
        bytes that were just re-uploaded); a committed row never changes.
        """
        check_instance("intent", intent, AttachmentIntent)
        params = {
            "attachment_id": check_id("intent.attachment_id", intent.attachment_id),
            "session_id": check_id("intent.session_id", intent.session_id),
            "canonical_uri": check_text("intent.canonical_uri", intent.canonical_uri),
            "intent_at_ms": check_ms("intent.intent_at_epoch_ms", intent.intent_at_epoch_ms),
        }
        self._backend.write(lambda tx: tx.run("record_intent", params))

    def commit_refs(self, session_id: str, attachment_ids: Iterable[str]) -> int:
        """Mark intents of ``session_id`` committed (first stamp wins); returns how many changed."""
        check_id("session_id", session_id)
        ids = check_ids("attachment_ids", attachment_ids)
        if not ids:
            return 0
        return self._backend.write(
            lambda tx: tx.run_many("stamp_attachment", stamp_params(session_id, ids, tx.now_ms()))
        )

    def list_uncommitted(self, older_than_epoch_ms: int) -> list[AttachmentManifestEntry]:
        """Uncommitted intents recorded at or before ``older_than_epoch_ms``, oldest first."""
        check_ms("older_than_epoch_ms", older_than_epoch_ms)
        rows = self._backend.read(lambda tx: tx.all("list_uncommitted", {"older_than_ms": older_than_epoch_ms}))
        return [
            AttachmentManifestEntry(attachment_id=r[0], session_id=r[1], canonical_uri=r[2], intent_at_epoch_ms=r[3])
            for r in rows
        ]

    def forget(self, attachment_id: str) -> None:
        """Drop a manifest row (after the host deleted an orphan's bytes)."""
        check_id("attachment_id", attachment_id)
        self._backend.write(lambda tx: tx.run("forget_attachment", {"attachment_id": attachment_id}))

    # -- module artifacts ------------------------------------------------

    def put_module_artifact(self, module_ref: str, data: bytes) -> BlobRef:
        """Pin a module's bytes under ``module_ref`` (a GC root until forgotten)."""
        check_id("module_ref", module_ref)
        encoded = codec.encode_blob(data, _MODULE_DESCRIPTOR, self._profile)

        def body(tx: Tx) -> None:
            _put_blobs(tx, [encoded])
            tx.run("pin_module", {"module_ref": module_ref, "blob_ref": encoded.hash})

        self._backend.write(body)
        return BlobRef(encoded.hash)

    def get_module_artifact(self, module_ref: str) -> bytes | None:
        """A pinned module's bytes; ``None`` if never pinned, :class:`CorruptData` if its blob is gone."""
        check_id("module_ref", module_ref)

        def body(tx: Tx) -> bytes | None:
            row = tx.one("module_blob_ref", {"module_ref": module_ref})
            if row is None:
                return None
            content = _get_blob(tx, row[0])
            if content is None:
                raise CorruptData(f"module artifact {module_ref!r}", f"blob {row[0]} is missing")
            return content

        return self._backend.read(body)

    def forget_module_artifact(self, module_ref: str) -> None:
        """Unpin a module; its blob becomes collectable."""
        check_id("module_ref", module_ref)
        self._backend.write(lambda tx: tx.run("unpin_module", {"module_ref": module_ref}))

    # -- fork, export and import -----------------------------------------

    def copy_session_into(self, target: SessionStoreAPI, *, session_id: str | None = None) -> None:
        """Fork this session into an empty ``target`` (any backend): head, graph, usage and every live blob.

        The target is written in one transaction.  ``session_id`` rebinds the
        copy to another session id (default: keep this session's id).
        """
        if not isinstance(target, SessionService):
            raise InvalidInput("target", f"must be a store, got {type(target).__name__}")
        check_optional_id("session_id", session_id)
        if target is self:
            raise InvalidInput("target", "a store cannot be forked into itself")
        dump = self._backend.read(lambda tx: transfer.read_dump(tx, live_only=True))
        if dump.head is None:
            raise InvalidInput("source", "has no session head to copy")
        target._backend.write(lambda tx: transfer.write_dump(tx, dump, rebind=session_id, fork=True))

    def export_session(self) -> transfer.SessionDump:
        """Everything this store holds, from one snapshot, in the backend-neutral dump format."""
        return self._backend.read(lambda tx: transfer.read_dump(tx, live_only=False))

    def import_session(self, dump: transfer.SessionDump) -> None:
        """Load a dump into this empty store in one transaction; it is verified before it commits."""
        check_instance("dump", dump, transfer.SessionDump)
        self._backend.write(lambda tx: transfer.write_dump(tx, dump, rebind=None, fork=False))

    # -- diagnostics -----------------------------------------------------

    def raw_rows(self, *, content: bool = False) -> diagnostics.RawRows:
        """Every stored row, undecoded, from one snapshot (tools look at damage with this)."""
        return self._backend.read(lambda tx: diagnostics.read_raw(tx, content=content))

    def verify(self) -> list[dict[str, Any]]:
        """Check everything the store holds; one entry per check, each listing its problems (never raises
        for damaged data)."""
        backend = self._backend.integrity_checks()
        return [*backend, *diagnostics.verify_rows(self.raw_rows(content=True))]

    def describe_backend(self) -> dict[str, Any]:
        """What the backend is (file, server, schema) and its own figures."""
        return self._backend.describe()

    def compact(self) -> dict[str, Any]:
        """Give space back after deletions where the backend can (SQLite ``VACUUM``); changes no content."""
        return self._backend.compact()

    # -- work queue ------------------------------------------------------

    def enqueue_queued_work(self, draft: QueuedWorkBatchDraft) -> QueuedWorkBatch:
        """Add a batch; with a source key this is idempotent while that batch exists."""
        payloads = rules.check_draft(draft)
        return self._backend.write(lambda tx: queue_ops.enqueue(tx, draft, payloads))

    def claim_ready_queued_work(
        self,
        session_id: str,
        owner_id: str,
        boundary: QueuedWorkClaimBoundary,
        lease_ttl_ms: int,
        max_batches: int,
    ) -> QueuedWorkClaim | None:
        """Lease the next ready group of batches, or ``None`` when nothing is ready."""
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
        if self._telemetry is not None:
            return self._telemetry.claim(
                session_id,
                lambda: self._claim_untraced(session_id, owner_id, boundary, lease_ttl_ms, max_batches, wanted),
            )
        return self._claim_untraced(session_id, owner_id, boundary, lease_ttl_ms, max_batches, wanted)[0]

    def _claim_untraced(
        self,
        session_id: str,
        owner_id: str,
        boundary: QueuedWorkClaimBoundary,
        lease_ttl_ms: int,
        max_batches: int,
        wanted: list[str] | None,
    ) -> tuple[QueuedWorkClaim | None, int]:
        """The claim (``None``: nothing taken) and how many exhausted batches it moved to the dead-letter list."""
        poison = self.options.poison
        try:
            claimed = self._backend.write(
                lambda tx: queue_ops.claim(
                    tx, session_id, owner_id, boundary, lease_ttl_ms, max_batches, wanted, poison
                )
            )
        except queue_ops.LostRace:
            return None, 0
        if claimed.dead_lettered:
            log.warning("queue %s: %d batch(es) moved to the dead-letter list", session_id, claimed.dead_lettered)
        return claimed.claim, claimed.dead_lettered

    def renew_queued_work_claim(self, claim: QueuedWorkClaim, lease_ttl_ms: int) -> QueuedWorkClaim:
        """Extend the lease of every batch of the claim, or raise :class:`QueuedWorkClaimExpired` and change nothing."""
        held = rules.check_claim(claim)
        check_ms("lease_ttl_ms", lease_ttl_ms)
        poison = self.options.poison
        if self._telemetry is not None:
            expires = self._telemetry.renew(
                held.session_id,
                lambda: self._backend.write(lambda tx: queue_ops.renew(tx, held, lease_ttl_ms, poison)),
            )
        else:
            expires = self._backend.write(lambda tx: queue_ops.renew(tx, held, lease_ttl_ms, poison))
        return msgspec.structs.replace(held, expires_at_epoch_ms=expires)

    def abandon_queued_work_claim(
        self, claim: QueuedWorkClaim, error: str | None = None, *, counts_as_attempt: bool = True
    ) -> int:
        """Release a claim so its batches are claimable again; stale claims are a no-op. Returns rows released.

        By default the attempt counts as failed: under a poison policy the
        batches back off before they are offered again, and ``error`` (if
        given) is kept as the last error a dead letter reports.  With
        ``counts_as_attempt=False`` the holder hands the batches back untried
        (a lease given up on purpose, a worker shutting down before it began):
        the claim's attempt is uncounted and they are offered again at once.
        """
        held = rules.check_claim(claim)
        reason = rules.check_error(error)
        if not isinstance(counts_as_attempt, bool):
            raise InvalidInput("counts_as_attempt", "must be a bool")
        poison = self.options.poison if counts_as_attempt else None

        def release(tx: Tx) -> int:
            return queue_ops.abandon(tx, held, reason, poison, uncount=not counts_as_attempt)

        if self._telemetry is not None:
            return self._telemetry.abandon(held.session_id, lambda: self._backend.write(release))
        return self._backend.write(release)

    def cancel_queued_work_batch(self, session_id: str, batch_id: str) -> QueuedWorkBatch | None:
        """Remove a batch that is not live-claimed; ``None`` if claimed or gone."""
        check_id("session_id", session_id)
        check_id("batch_id", batch_id)
        return self._backend.write(lambda tx: queue_ops.cancel(tx, session_id, batch_id))

    def list_queued_work(self, session_id: str) -> list[QueuedWorkBatch]:
        """Every batch of the session in FIFO order (undecodable rows are logged and left out)."""
        check_id("session_id", session_id)
        return self._backend.read(lambda tx: queue_ops.list_batches(tx, session_id, pending=False))

    def list_pending_queued_work(self, session_id: str) -> list[QueuedWorkBatch]:
        """Batches not live-claimed now (delayed ones included), in FIFO order."""
        check_id("session_id", session_id)
        return self._backend.read(lambda tx: queue_ops.list_batches(tx, session_id, pending=True))

    # -- dead letters ----------------------------------------------------

    def list_dead_letters(self, session_id: str) -> list[QueuedWorkDeadLetter]:
        """The queue's dead letters in FIFO order (undecodable rows are logged and left out)."""
        check_id("session_id", session_id)
        return self._backend.read(lambda tx: queue_ops.list_dead_letters(tx, session_id))

    def get_dead_letter(self, session_id: str, batch_id: str) -> QueuedWorkDeadLetter | None:
        """One dead letter, or ``None`` if the batch is not on the dead-letter list."""
        check_id("session_id", session_id)
        check_id("batch_id", batch_id)
        return self._backend.read(lambda tx: queue_ops.get_dead_letter(tx, session_id, batch_id))

    def requeue_dead_letter(self, session_id: str, batch_id: str) -> QueuedWorkBatch | None:
        """Put a dead letter back in the queue at its old place with its attempts reset; ``None`` if not one."""
        check_id("session_id", session_id)
        check_id("batch_id", batch_id)
        return self._backend.write(lambda tx: queue_ops.requeue_dead_letter(tx, session_id, batch_id))

    def drop_dead_letter(self, session_id: str, batch_id: str) -> QueuedWorkDeadLetter | None:
        """Delete a dead letter for good and return it; ``None`` if the batch is not one."""
        check_id("session_id", session_id)
        check_id("batch_id", batch_id)
        return self._backend.write(lambda tx: queue_ops.drop_dead_letter(tx, session_id, batch_id))


@functools.cache
def _recorder_class() -> type[Recorder] | None:
    """The telemetry recorder, or ``None`` when OpenTelemetry is not installed (looked up once per process)."""
    try:
        from lash_store.telemetry import Recorder
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] != "opentelemetry":
            raise  # a broken install of our own package is an error, not "telemetry off"
        return None
    return Recorder


def _recorder(backend: str, options: TelemetryOptions) -> Recorder | None:
    if not options.enabled:
        return None
    recorder = _recorder_class()
    return None if recorder is None else recorder(backend, options)


# ---------------------------------------------------------------------------
# Transaction bodies


def _load_session(tx: Tx, scope: SessionReadScope) -> PersistedSessionRead | None:
    head = read_head(tx)
    if not head.bound or head.body is None or head.session_id is None:
        return None
    body = codec.decode("session head", head.body, codec.HeadBody)
    if scope.kind == "active_path":
        leaf = _live_leaf(tx, scope.leaf_node_id or head.leaf_node_id)
        nodes = [] if leaf is None else _active_path(tx, leaf, head.node_count)
        graph = SessionGraph(nodes=nodes, leaf_node_id=leaf)
    else:
        nodes = [decode_node(node_id, node_body) for node_id, node_body in tx.iter("full_graph")]
        graph = SessionGraph(nodes=nodes, leaf_node_id=_live_leaf(tx, head.leaf_node_id))
    checkpoint = _load_checkpoint(tx, head.checkpoint_ref) if head.checkpoint_ref else None
    return PersistedSessionRead(
        session_id=head.session_id,
        head_revision=head.head_revision,
        config=body.config,
        agent_frames=body.agent_frames,
        current_agent_frame_id=body.current_agent_frame_id,
        graph=graph,
        checkpoint_ref=head.checkpoint_ref,
        checkpoint=checkpoint,
        token_ledger=token_ledger(decode_totals(head.usage_ledger)),
    )


def _active_path(tx: Tx, leaf: str, node_count: int) -> list[SessionNode]:
    rows = tx.iter("active_path", {"leaf_node_id": leaf, "depth_cap": node_count})
    return walk_active_path(leaf, rows)


def _live_leaf(tx: Tx, leaf: str | None) -> str | None:
    """A tombstoned leaf reads as no leaf; a leaf naming an unknown node is reported as stored."""
    if leaf is None:
        return None
    row = tx.one("node_tombstoned", {"node_id": leaf})
    return None if row is not None and row[0] else leaf


def _tombstone(tx: Tx, ids: list[str]) -> int:
    tx.send("lock_session")
    head = read_head(tx)
    hidden, users = hide_nodes(tx, ids)
    if not hidden:
        return 0
    tx.run(
        "write_counts",
        {"node_count": head.node_count - hidden, "user_message_count": head.user_message_count - users},
    )
    return hidden


def _prune(tx: Tx, horizon_ms: int, *, dry_run: bool) -> PruneReport:
    cutoff = max(0, tx.now_ms() - horizon_ms)
    params = {"cutoff_ms": cutoff}
    if dry_run:
        row = tx.one("count_old_turn_commits", params)
        count = 0 if row is None else int(row[0])
    else:
        count = tx.run("delete_old_turn_commits", params)
    return PruneReport(dry_run=dry_run, cutoff_epoch_ms=cutoff, turn_stamp_count=count)


def _vacuum(tx: Tx) -> VacuumReport:
    tx.send("lock_session")
    head = read_head(tx)
    # A tombstoned leaf already reads as no leaf; keep it that way once its row is gone.
    if head.leaf_node_id is not None and _live_leaf(tx, head.leaf_node_id) is None:
        tx.run("clear_leaf")
    tx.send("delete_tombstoned_index")  # their tags, blob refs and staged writes go with them
    return VacuumReport(removed_node_count=tx.run("delete_tombstoned"))


def _staged_params(what: str, write: Any) -> dict[str, Any]:
    check_instance(what, write, StagedWrite)
    idx = write.idx
    if type(idx) is not int or not -(2**63) <= idx < 2**63:
        raise InvalidInput(f"{what}.idx", "must be a 64-bit integer")
    return {
        "anchor_id": check_id(f"{what}.anchor_id", write.anchor_id),
        "task_id": check_id(f"{what}.task_id", write.task_id),
        "idx": idx,
        "task_path": check_text(f"{what}.task_path", write.task_path),
        "channel": check_id(f"{what}.channel", write.channel),
        "value": codec.encode(f"{what}.value", write.value),
    }


def _decode_staged(row: tuple[Any, ...]) -> StagedWrite:
    anchor_id, task_id, idx, task_path, channel, value = row
    if type(value) is not bytes:
        raise CorruptData(f"staged write {anchor_id!r}/{task_id!r}/{idx}", "stored value is not a blob")
    return StagedWrite(
        anchor_id=anchor_id,
        task_id=task_id,
        idx=int(idx),
        task_path=task_path,
        channel=channel,
        value=codec.decode_any(f"staged write {anchor_id!r}/{task_id!r}/{idx}", value),
    )


def reachable_refs(tx: Tx, roots: Iterable[str]) -> set[str]:
    """``roots``, the blob refs of live nodes, and every blob these reach through blob children."""
    return {row[0] for row in tx.all("reachable_refs", {"roots": sorted(set(roots))})}


def _picker_info(tx: Tx) -> SessionPickerInfo | None:
    meta = tx.one("load_meta")
    if meta is None:
        return None
    first = tx.one("first_user_text")
    return picker_info(meta, first[0] if first else None, read_head(tx).user_message_count)


def picker_info(meta_row: tuple[Any, ...], first_user_text: Any, user_message_count: Any) -> SessionPickerInfo:
    """A picker entry from a metadata row, the first live user text and the maintained counter (typed)."""
    meta = _decode_meta(meta_row)
    if not (first_user_text is None or type(first_user_text) is str) or type(user_message_count) is not int:
        raise CorruptData("session picker", "stored columns have the wrong types")
    codec.raise_if_sealed("first user message", first_user_text)  # an encrypted store read without keys
    return SessionPickerInfo(
        session_id=meta.session_id,
        cwd=meta.cwd,
        relation=meta.relation,
        first_user_message=first_user_text or "",
        user_message_count=user_message_count,
    )


def meta_params(meta: Any, relation_field: str = "meta.relation") -> dict[str, Any]:
    """Metadata checked field by field, as the ``save_meta`` query's parameters."""
    check_instance("meta", meta, SessionMeta)
    params: dict[str, Any] = {
        "session_id": check_id("meta.session_id", meta.session_id),
        "session_name": check_text("meta.session_name", meta.session_name),
        "created_at": check_text("meta.created_at", meta.created_at),
        "model": check_text("meta.model", meta.model),
        "cwd": None if meta.cwd is None else check_text("meta.cwd", meta.cwd),
    }
    relation = check_instance(relation_field, meta.relation, SessionRelation)
    if relation.kind not in ("root", "child"):
        raise InvalidInput(f"{relation_field}.kind", f"unknown relation {relation.kind!r}")
    if relation.kind == "child":
        check_id(f"{relation_field}.parent_session_id", relation.parent_session_id)
    elif relation.parent_session_id is not None:
        raise InvalidInput(f"{relation_field}.parent_session_id", "a root session has no parent")
    params["relation"] = codec.encode_checked(relation_field, relation, SessionRelation)
    return params


def _decode_meta(row: tuple[Any, ...]) -> SessionMeta:
    session_id, name, created_at, model, cwd, relation = row
    if not all(type(text) is str for text in (session_id, name, created_at, model)) or not (
        cwd is None or type(cwd) is str
    ):
        raise CorruptData("session meta", "stored row has the wrong column types")
    if type(relation) is not bytes:
        raise CorruptData("session meta relation", "stored relation is not a blob")
    for what, text in (("session name", name), ("session model", model), ("session cwd", cwd)):
        codec.raise_if_sealed(what, text)  # an encrypted store read without keys
    return SessionMeta(
        session_id=session_id,
        session_name=name,
        created_at=created_at,
        model=model,
        cwd=cwd,
        relation=codec.decode_relation(relation),
    )


def _put_blobs(tx: Tx, encoded: list[codec.EncodedBlob]) -> None:
    tx.send_many("put_blob", [blob_params(blob, tx.now_ms()) for blob in encoded])


def _get_blob(tx: Tx, ref: str) -> bytes | None:
    row = tx.one("get_blob", {"hash": ref})
    return None if row is None else codec.decode_blob(ref, *row)


def _load_checkpoint(tx: Tx, ref: str) -> HydratedCheckpoint | None:
    content = _get_blob(tx, ref)
    if content is None:
        return None
    return hydrate(decode_manifest(ref, content), lambda child: _get_blob(tx, child))


def _marking(tx: Tx) -> Marking:
    return mark_live(lambda: read_head(tx), lambda ref: _get_blob(tx, ref))


def _gc(tx: Tx, grace_ms: int, *, dry_run: bool) -> tuple[GcReport, int]:
    if not dry_run:
        tx.send("lock_session")
    marking = _marking(tx)
    modules = _count(tx, "count_modules")
    total = _count(tx, "count_blobs")
    if marking.skipped_reason is not None:
        log.warning("GC skipped: %s", marking.skipped_reason)
        report = GcReport(
            root_count=len(marking.live) + modules,
            retained_blob_count=total,
            deleted_blob_count=0,
            skipped_reason=marking.skipped_reason,
        )
        return report, 0
    live = reachable_refs(tx, marking.live)
    params = {"cutoff_ms": tx.now_ms() - grace_ms, "live": sorted(live)}
    candidates = tx.one("sweep_candidates", params)
    doomed, doomed_bytes = (0, 0) if candidates is None else (int(candidates[0]), int(candidates[1]))
    if not dry_run:
        doomed = tx.run("sweep_blobs", params)  # the same rows: the sweep runs under the session's lock
        tx.send("sweep_edges")
    report = GcReport(root_count=len(live) + modules, retained_blob_count=total - doomed, deleted_blob_count=doomed)
    return report, doomed_bytes


def _count(tx: Tx, query: str, params: dict[str, Any] | None = None) -> int:
    row = tx.one(query, params)
    return 0 if row is None else int(row[0])

"""Sessions of one PostgreSQL database (schema): create, list with pagination, delete."""

from __future__ import annotations

from psycopg_pool import ConnectionPool

from lash_store.core.validate import check_count, check_id, check_instance, check_ms
from lash_store.errors import CorruptData, StoreError
from lash_store.model import DurabilityTier, SessionListing, SessionPage, SessionPickerInfo, SessionRelation
from lash_store.options import StoreOptions, check_options
from lash_store.postgres import schema as schemas
from lash_store.postgres.backend import PostgresBackend, PostgresTx
from lash_store.postgres.store import PostgresStore, connect_target, ensure_schema
from lash_store.service.factory import check_page, decode_cursor, encode_cursor, new_session_meta, page
from lash_store.service.ports import Row
from lash_store.service.session import picker_info

_MAX_MS = 2**63 - 1

# One page of the listing when the caller asks for everything (the query pages by session id anyway).
_PAGE = 1000
# Idle sessions deleted per transaction: each chunk holds its sessions locked until it commits.
_PRUNE_CHUNK = 100


class PostgresSessionStoreFactory:
    """Creates, lists and deletes session partitions in one database."""

    def __init__(
        self,
        dsn_or_pool: str | ConnectionPool,
        options: StoreOptions | None = None,
        *,
        schema: str = schemas.DEFAULT_SCHEMA,
        auto_setup: bool = True,
    ) -> None:
        self._target = connect_target(dsn_or_pool)
        self.options = StoreOptions() if options is None else check_options(options)
        self.schema = schemas.check_schema_name(schema)
        self._auto_setup = check_instance("auto_setup", auto_setup, bool)

    @property
    def durability_tier(self) -> DurabilityTier:
        return DurabilityTier.DURABLE

    def _backend(self, session_id: str) -> PostgresBackend:
        ensure_schema(self._target, self.schema, auto_setup=self._auto_setup)
        return PostgresBackend(self._target, session_id, self.schema, self.options)

    def create_store(
        self, session_id: str, *, model: str = "", relation: SessionRelation | None = None
    ) -> PostgresStore:
        """Open (creating if needed) the session; metadata is written once, never overwritten."""
        meta = new_session_meta(session_id, model, relation)
        store = PostgresStore.open(
            self._target, session_id, self.options, schema=self.schema, auto_setup=self._auto_setup
        )
        store.ensure_session_meta(meta)
        return store

    def delete_session(self, session_id: str) -> None:
        """Delete every row of the session in one transaction; deleting a missing session is not an error."""
        check_id("session_id", session_id)
        self._backend(session_id).write(lambda tx: _delete(tx, [session_id], batches=True))

    def prune_idle_sessions(self, idle_ms: int | None = None, *, dry_run: bool = False) -> list[str]:
        """Delete the sessions with no commit for ``idle_ms`` (else the options' ``retention.idle_sessions_ms``).

        Idleness is judged by the database clock; a session with queued work, or
        one a commit holds locked right now, is kept.  Sessions go in chunks of
        one transaction each.  Returns the ids deleted (with ``dry_run``, those
        that would be; nothing changes).
        """
        check_instance("dry_run", dry_run, bool)
        horizon = self.options.retention.idle_sessions_ms
        if idle_ms is not None:
            horizon = check_ms("idle_ms", idle_ms)
        if horizon is None:
            return []
        backend = self._backend("")
        pruned: list[str] = []
        while True:
            params = {"idle_ms": horizon, "after": pruned[-1] if pruned else "", "limit": _PRUNE_CHUNK}
            if dry_run:
                rows = backend.read(lambda tx: tx.all("idle_sessions", params))  # noqa: B023 (called at once)
            else:
                rows = backend.write(lambda tx: _delete_idle(tx, params))  # noqa: B023 (called at once)
            pruned.extend(row[0] for row in rows)
            if len(rows) < _PRUNE_CHUNK:
                return pruned

    def recent_sessions(self, *, limit: int = 50, cursor: str | None = None) -> SessionPage:
        """A page of sessions, the most recently committed first (by the database clock).

        Pass the page's ``next_cursor`` for the next one.  A session committed
        after the first page was taken moves to the front and is not repeated
        on later pages; every session unchanged meanwhile appears exactly once.
        """
        size = check_count("limit", limit)
        start = decode_cursor(cursor, int)
        before_ms, before_id = start if start is not None else (_MAX_MS, "")
        params = {"before_ms": before_ms, "before_id": before_id, "limit": size + 1}
        rows = self._backend("").read(lambda tx: tx.all("recent_sessions", params))
        sessions, failures = [], []
        for meta_id, cwd, relation, first, users, partition, updated in rows[:size]:
            try:
                info = picker_info((meta_id, meta_id, "", "", cwd, relation), first, users)
            except CorruptData as exc:
                failures.append((f"session {partition!r}", " ".join(str(exc).split())))
                continue
            sessions.append(SessionListing(info=info, updated_at_epoch_ms=updated))
        more = len(rows) > size
        next_cursor = encode_cursor((rows[size - 1][6], rows[size - 1][5])) if more and size else None
        return SessionPage(sessions=sessions, next_cursor=next_cursor, failures=failures)

    def list_sessions(self, *, limit: int | None = None, after: str | None = None) -> list[SessionPickerInfo]:
        """Picker info of the sessions, by session id (a page: ``after``, ``limit``), from keyset-paged queries.

        A session whose stored rows do not decode raises :class:`SessionsUnreadable`,
        which carries the sessions that could be read.
        """
        limit, after = check_page(limit, after)
        backend = self._backend("")
        sessions: list[SessionPickerInfo] = []
        failures: list[tuple[str, StoreError]] = []
        cursor = after or ""
        while limit is None or len(sessions) < limit:
            size = _PAGE if limit is None else min(_PAGE, limit - len(sessions))
            params = {"after": cursor, "limit": size}
            rows = backend.read(lambda tx: tx.all("list_sessions", params))  # noqa: B023 (called at once)
            for meta_id, cwd, relation, first, users, partition in rows:
                try:
                    sessions.append(picker_info((meta_id, meta_id, "", "", cwd, relation), first, users))
                except CorruptData as exc:
                    failures.append((f"session {partition!r}", exc))
            if len(rows) < size:
                break
            cursor = rows[-1][-1]
        return page(sessions, failures, None, None)


def _delete_idle(tx: PostgresTx, params: dict[str, object]) -> list[Row]:
    rows = tx.all("lock_idle_sessions", params)
    if rows:
        # Queued batches stay: there were none, and one enqueued in this very instant is kept (the recreated
        # session's first work) rather than lost.
        _delete(tx, [row[0] for row in rows], batches=False)
    return rows


def _delete(tx: PostgresTx, session_ids: list[str], *, batches: bool) -> None:
    if batches:
        tx.run("delete_queued_batches", {"sids": session_ids})
    tx.run("delete_sessions", {"sids": session_ids})

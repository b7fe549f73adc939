"""Sessions of one PostgreSQL database (schema): create, list with pagination, delete."""

from __future__ import annotations

from psycopg_pool import ConnectionPool

from lash_store.core.validate import check_id, check_instance
from lash_store.errors import CorruptData, StoreError
from lash_store.model import DurabilityTier, SessionPickerInfo, SessionRelation
from lash_store.options import StoreOptions, check_options
from lash_store.postgres import schema as schemas
from lash_store.postgres.backend import PostgresBackend
from lash_store.postgres.store import PostgresStore, connect_target, ensure_schema
from lash_store.service.factory import check_page, new_session_meta, page
from lash_store.service.session import picker_info

# One page of the listing when the caller asks for everything (the query pages by session id anyway).
_PAGE = 1000


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
        self._backend(session_id).write(lambda tx: tx.run("delete_partition"))

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

"""One database file per session under a root directory."""

from __future__ import annotations

import os
from pathlib import Path

from lash_store.core.validate import check_count, check_id, check_instance, check_ms, check_text
from lash_store.errors import InvalidInput
from lash_store.model import DurabilityTier, SessionPage, SessionPickerInfo, SessionRelation
from lash_store.options import StoreOptions, check_options, system_clock
from lash_store.service.factory import check_page, new_session_meta, page
from lash_store.sqlite import listing, retention
from lash_store.sqlite.catalog import Catalog, Entry
from lash_store.sqlite.deletion import delete_session_file
from lash_store.sqlite.file_names import safe_file_name
from lash_store.sqlite.store import Store, check_directory_path


class SqliteSessionStoreFactory:
    """Creates, lists and deletes per-session stores below ``root``."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        options: StoreOptions | None = None,
        *,
        migrate: bool = False,
        keep_catalog: bool = False,
    ) -> None:
        """``migrate``: :meth:`create_store` migrates a session file of an older layout revision when it
        opens it (one transaction; ``Store.open(path, migrate=True)``); without it such a file raises
        :class:`SchemaMigrationRequired`, untouched.

        ``keep_catalog``: :meth:`create_store` and the listings keep the root's catalogue file
        (``.lash-catalog.sqlite``, a cache of every file's picker info, see
        :mod:`lash_store.sqlite.catalog`) up to date, so that a fresh process lists a large root fast
        too.  Without it (the default) listings write nothing at all: they use the catalogue file
        when one exists, and what this factory read before, kept in its memory."""
        self.root = check_directory_path("root", root)
        self.options = None if options is None else check_options(options)
        self.migrate: bool = check_instance("migrate", migrate, bool)
        self.keep_catalog: bool = check_instance("keep_catalog", keep_catalog, bool)
        self._remembered: dict[str, Entry] = {}

    def _catalog(self) -> Catalog:
        encryption = None if self.options is None else self.options.encryption
        return Catalog(self.root, writable=self.keep_catalog, memory=self._remembered, encryption=encryption)

    @property
    def durability_tier(self) -> DurabilityTier:
        return DurabilityTier.DURABLE

    def path_for_session(self, session_id: str) -> Path:
        """Where ``session_id``'s database lives (the reference's file-name vectors, ``""`` included)."""
        return self.root / safe_file_name(check_text("session_id", session_id))

    def create_store(self, session_id: str, *, model: str = "", relation: SessionRelation | None = None) -> Store:
        """Open (creating if needed) the session's store; metadata is written once, never overwritten."""
        meta = new_session_meta(session_id, model, relation)  # every argument checked before a file exists
        self._make_root()
        path = self.path_for_session(session_id)
        created = not path.exists()
        store = Store.open(path, self.options, migrate=self.migrate)
        try:
            store.ensure_session_meta(meta)
        except BaseException:
            store.close()
            raise
        if created:  # its id, so listing by id need not open it (the picker info is read when shown)
            catalog = self._catalog()
            catalog.remember(path.name, Entry(meta.session_id, None, 0, None))
            catalog.flush()
        return store

    def _make_root(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except FileExistsError as exc:
            raise InvalidInput("root", f"{self.root} is not a directory") from exc
        except OSError as exc:
            raise InvalidInput("root", f"cannot create {self.root}: {exc.strerror}") from exc
        if not self.root.is_dir():
            raise InvalidInput("root", f"{self.root} is not a directory")

    def delete_session(self, session_id: str) -> None:
        """Remove the database and its sidecars; deleting a missing session is not an error.

        A session that a store has open (in this process or another) is never
        unlinked under it, which would silently lose that store's later commits:
        the deletion waits up to the busy timeout, then raises :class:`StoreBusy`.
        See :mod:`lash_store.sqlite.deletion`.
        """
        path = self.path_for_session(check_id("session_id", session_id))
        if self.root.exists() and not self.root.is_dir():
            raise InvalidInput("root", f"{self.root} is not a directory")
        delete_session_file(path, timeout_s=(self.options or StoreOptions()).busy_timeout_ms / 1000)

    def prune_idle_sessions(self, idle_ms: int | None = None, *, dry_run: bool = False) -> list[str]:
        """Delete the sessions not written for ``idle_ms`` (else the options' ``retention.idle_sessions_ms``).

        A session with queued work, or open in any process, is kept; so is one
        written since it was found idle.  Returns the ids deleted (with
        ``dry_run``, those that would be; nothing changes).  See
        :mod:`lash_store.sqlite.retention`.
        """
        check_instance("dry_run", dry_run, bool)
        horizon = (self.options or StoreOptions()).retention.idle_sessions_ms
        if idle_ms is not None:
            horizon = check_ms("idle_ms", idle_ms)
        if horizon is None or not self.root.is_dir():
            return []
        cutoff = system_clock() - horizon  # file times are wall-clock times, whatever clock the stores use
        pruned = []
        for path, seen in retention.idle_session_files(self.root, cutoff):
            session_id = retention.prune_file(path, seen, dry_run=dry_run)
            if session_id is not None:
                pruned.append(session_id)
        return sorted(pruned)

    def list_sessions(self, *, limit: int | None = None, after: str | None = None) -> list[SessionPickerInfo]:
        """Picker info of the session databases under the root, by session id (a page: ``after``, ``limit``).

        Files are opened read-only and nothing is created next to them; the
        catalogue spares opening the files that did not change (see
        :mod:`lash_store.sqlite.listing`).  Files of other applications are not
        sessions and are passed over; a session file that cannot be read
        (damaged, unreadable, written by a newer release) raises
        :class:`SessionsUnreadable`, which carries the sessions that could be
        read: nothing is silently left out.
        """
        limit, after = check_page(limit, after)
        sessions, failures = listing.by_session_id(self.root, self._catalog(), limit, after)
        return page(sessions, failures, limit, after)

    def recent_sessions(self, *, limit: int = 50, cursor: str | None = None) -> SessionPage:
        """A page of sessions, the most recently written first (a file's last write: database or log).

        Pass the page's ``next_cursor`` for the next one.  A session written
        after the first page was taken moves to the front and is not repeated
        on later pages; every session unchanged meanwhile appears exactly once.
        """
        return listing.by_recency(self.root, self._catalog(), check_count("limit", limit), cursor)

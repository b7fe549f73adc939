"""One database file per session under a root directory."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from lash_store.core.validate import check_id, check_instance, check_ms, check_text
from lash_store.errors import InvalidInput, NotAStoreDatabase, StoreError, StoreNotFound
from lash_store.model import DurabilityTier, SessionPickerInfo, SessionRelation
from lash_store.options import StoreOptions, check_options, system_clock
from lash_store.service.factory import check_page, new_session_meta, page
from lash_store.sqlite import retention
from lash_store.sqlite.deletion import delete_session_file
from lash_store.sqlite.store import Store, check_directory_path

_MAX_STEM = 80


def safe_file_name(session_id: str) -> str:
    """A deterministic, separator-free file name: sanitised id + 16 hex chars of its SHA-256 + ``.db``."""
    kept = "".join(c if (c.isascii() and c.isalnum()) or c in "-_" else "_" for c in session_id)
    stem = kept.strip("_") or "session"
    digest = hashlib.sha256(session_id.encode("utf-8")).hexdigest()[:16]
    return f"{stem[:_MAX_STEM]}-{digest}.db"


class SqliteSessionStoreFactory:
    """Creates, lists and deletes per-session stores below ``root``."""

    def __init__(
        self, root: str | os.PathLike[str], options: StoreOptions | None = None, *, migrate: bool = False
    ) -> None:
        """``migrate``: :meth:`create_store` migrates a session file of an older layout revision when it
        opens it (one transaction; ``Store.open(path, migrate=True)``); without it such a file raises
        :class:`SchemaMigrationRequired`, untouched."""
        self.root = check_directory_path("root", root)
        self.options = None if options is None else check_options(options)
        self.migrate: bool = check_instance("migrate", migrate, bool)

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
        store = Store.open(self.path_for_session(session_id), self.options, migrate=self.migrate)
        try:
            store.ensure_session_meta(meta)
        except BaseException:
            store.close()
            raise
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

        Files are opened read-only and nothing is created next to them.  Files of
        other applications are not sessions and are passed over; a session file
        that cannot be read (damaged, unreadable, written by a newer release)
        raises :class:`SessionsUnreadable`, which carries the sessions that could
        be read: nothing is silently left out.
        """
        limit, after = check_page(limit, after)
        sessions: list[SessionPickerInfo] = []
        failures: list[tuple[str, StoreError]] = []
        if not self.root.exists():
            return []
        if not self.root.is_dir():
            raise InvalidInput("root", f"{self.root} is not a directory")
        for path in sorted(self.root.glob("*.db")):
            if not path.is_file():
                continue
            try:
                with Store.open_readonly(path) as store:
                    info = store.load_picker_info()
            except NotAStoreDatabase:
                continue  # another application's file is no session of ours
            except StoreNotFound:
                continue  # deleted while the listing ran
            except StoreError as exc:
                failures.append((str(path), exc))
                continue
            if info is not None:
                sessions.append(info)
        return page(sessions, failures, limit, after)

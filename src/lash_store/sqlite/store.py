"""``Store``: the session service on SQLite, one database file (or private memory) per session."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lash_store.core.validate import check_instance
from lash_store.errors import InvalidInput
from lash_store.options import BlobProfile, StoreOptions, check_options
from lash_store.service.session import SessionService
from lash_store.sqlite import backup
from lash_store.sqlite.backend import SqliteBackend
from lash_store.sqlite.connection import Connection


class Store(SessionService):
    """A durable session store on SQLite.

    Open with :meth:`open` (a file, created if new), :meth:`memory` or
    :meth:`open_readonly`.  A store is safe to share between threads; calls
    are serialised on its one connection.  Several stores (threads or
    processes) may open the same file: writes serialise on SQLite's write
    lock and compare-and-set keeps them honest.
    """

    def __init__(self, backend: SqliteBackend, options: StoreOptions) -> None:
        super().__init__(backend, options)
        self._sqlite = backend
        self._db = backend.connection  # the connection, for tests and tools that look at the file itself

    @classmethod
    def open(cls, path: str | os.PathLike[str], options: StoreOptions | None = None, *, migrate: bool = False) -> Store:
        """Open (or create) the session database at ``path``.

        A file that is not ours is never modified: it raises
        :class:`NotAStoreDatabase` or :class:`UnsupportedSchemaVersion`.  A file
        of an earlier schema version raises :class:`SchemaMigrationRequired`
        unless ``migrate`` is true, in which case it is migrated in one
        transaction first.
        """
        options = check_options(StoreOptions() if options is None else options)
        check_instance("migrate", migrate, bool)
        return cls(SqliteBackend(Connection(_check_path(path), options, migrate=migrate)), options)

    @classmethod
    def memory(cls, options: StoreOptions | None = None) -> Store:
        """A private in-memory store (``LOW_LATENCY`` blobs by default, GC grace 0)."""
        options = check_options(StoreOptions(blob_profile=BlobProfile.LOW_LATENCY) if options is None else options)
        return cls(SqliteBackend(Connection(None, options)), options)

    @classmethod
    def open_readonly(cls, path: str | os.PathLike[str]) -> Store:
        """Open an existing store for reading; never creates or modifies a file."""
        options = StoreOptions(busy_timeout_ms=1000)
        return cls(SqliteBackend(Connection(_check_path(path), options, readonly=True)), options)

    @property
    def path(self) -> Path | None:
        return self._sqlite.connection.path

    def backup(self, dest: str | os.PathLike[str]) -> dict[str, Any]:
        """Write a consistent copy of this store to the new file ``dest`` while writers keep committing.

        The copy holds every commit acknowledged before it started and none
        half-written; restoring is opening it with :meth:`open`.  ``dest`` must
        not exist (a backup never overwrites); it is created with mode 0600.
        Works on read-only and in-memory stores too.
        """
        return backup.backup(self._sqlite.connection, check_directory_path("dest", dest))


def _check_path(path: object) -> Path:
    return check_directory_path("path", path)


def check_directory_path(what: str, path: object) -> Path:
    """A usable file-system path (file or directory): text, not empty, no NUL, encodable."""
    if not isinstance(path, (str, os.PathLike)):
        raise InvalidInput(what, f"must be a str or os.PathLike, got {type(path).__name__}")
    text = os.fspath(path)
    if not isinstance(text, str):
        raise InvalidInput(what, "must be a text path, not bytes")
    if not text:
        raise InvalidInput(what, "must not be empty")
    if "\x00" in text:
        raise InvalidInput(what, "must not contain NUL characters")
    try:
        os.fsencode(text)
    except UnicodeEncodeError as exc:
        raise InvalidInput(what, "cannot be encoded for the file system (lone surrogates are not)") from exc
    return Path(text)

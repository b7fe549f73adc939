"""One SQLite connection with explicit transactions, error translation and fork safety.

Every write runs under ``BEGIN IMMEDIATE`` (the write lock is taken up
front, so a read-then-write can never be overtaken); every multi-statement
read runs in one deferred transaction (one snapshot).  Any exception,
``KeyboardInterrupt`` included, rolls back and leaves the connection usable.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lash_store.errors import (
    BackendError,
    CorruptData,
    NotAStoreDatabase,
    StoreBusy,
    StoreClosed,
    StoreNotFound,
)
from lash_store.options import StoreOptions
from lash_store.sqlite import schema

log = logging.getLogger("lash_store")

# Connections inherited through fork() are parked here, never closed or used by the child.
_ABANDONED_AFTER_FORK: list[sqlite3.Connection] = []

# Bumped in every forked child: comparing it costs nothing, unlike a getpid() system call per operation.
_fork_generation = 0


def _after_fork_in_child() -> None:
    global _fork_generation
    _fork_generation += 1


os.register_at_fork(after_in_child=_after_fork_in_child)


def translate(exc: sqlite3.Error) -> Exception:
    """Map a driver error to the store's typed errors (the original stays chained)."""
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    if primary in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return StoreBusy(f"database is busy: the write lock was not free within the busy timeout ({exc})")
    if primary in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        return CorruptData("database file", str(exc))
    return BackendError(str(exc))


class Connection:
    """A lock-guarded sqlite3 connection to a file (reconnecting after fork) or to memory."""

    def __init__(self, path: Path | None, options: StoreOptions, *, readonly: bool = False) -> None:
        self.path = path
        self.options = options
        self.readonly = readonly
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._generation = _fork_generation
        self._conn = self._connect()

    # -- opening ---------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        if self.path is None:
            conn = self._raw_connect(":memory:")
            with self._guard():
                conn.execute("BEGIN IMMEDIATE")
                schema.initialise(conn)
                conn.execute("COMMIT")
                self._apply_pragmas(conn)
            return conn
        if self.readonly:
            return self._connect_readonly(self.path)
        return self._connect_file(self.path)

    def _raw_connect(self, target: str, *, uri: bool = False) -> sqlite3.Connection:
        return sqlite3.connect(
            target,
            timeout=self.options.busy_timeout_ms / 1000,
            isolation_level=None,
            check_same_thread=False,
            cached_statements=256,
            uri=uri,
        )

    def _connect_file(self, path: Path) -> sqlite3.Connection:
        _create_private(path)
        _check_header(path)
        conn = self._raw_connect(str(path))
        try:
            with self._guard(opening=True):
                identity = schema.Identity.read(conn)
                identity.check(str(path))  # before anything could modify the file
                self._switch_to_wal(conn)
                if not (identity.user_version == schema.SCHEMA_VERSION and identity.is_complete):
                    self._initialise_file(conn, str(path))
                self._apply_pragmas(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _initialise_file(self, conn: sqlite3.Connection, path: str) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            identity = schema.Identity(conn)
            identity.check(path)  # another opener may have won the race; re-check under the lock
            if identity.is_empty or not identity.is_complete:
                schema.initialise(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _connect_readonly(self, path: Path) -> sqlite3.Connection:
        if not path.is_file():
            raise StoreNotFound(str(path))
        _check_header(path)
        conn = self._raw_connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            with self._guard(opening=True):
                identity = schema.Identity.read(conn)
                identity.check(str(path))
                if identity.is_empty or not identity.is_complete:
                    raise NotAStoreDatabase(str(path), "it holds no lash-store schema")
        except BaseException:
            conn.close()
            raise
        return conn

    def _switch_to_wal(self, conn: sqlite3.Connection) -> None:
        # SQLite does not consult the busy handler for this switch, so retry by hand.
        deadline = time.monotonic() + self.options.busy_timeout_ms / 1000
        delay = 0.001
        while True:
            try:
                conn.execute("PRAGMA journal_mode=WAL").fetchone()
                return
            except sqlite3.OperationalError as exc:
                code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
                if code not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) or time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.05)

    def _apply_pragmas(self, conn: sqlite3.Connection) -> None:
        conn.execute(f"PRAGMA synchronous = {self.options.durability.value}")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA cache_size = -8000")

    # -- using -----------------------------------------------------------

    @contextmanager
    def _guard(self, *, opening: bool = False) -> Iterator[None]:
        """Translate driver errors into typed store errors."""
        try:
            yield
        except sqlite3.DatabaseError as exc:
            if opening and "not a database" in str(exc):
                raise NotAStoreDatabase(str(self.path), str(exc)) from exc
            raise translate(exc) from exc
        except sqlite3.Error as exc:
            raise translate(exc) from exc

    def _current(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreClosed()
        return self._conn

    def _follow_fork(self) -> None:
        """In a forked child, reconnect instead of sharing the parent's file handles and locks."""
        if self._generation == _fork_generation:
            return
        self._generation = _fork_generation
        self._lock = threading.RLock()  # the parent's lock may have been held at fork time
        if self.path is None or self._conn is None:
            return  # a private in-memory database is simply copied into the child
        _ABANDONED_AFTER_FORK.append(self._conn)  # never closed: the parent still owns it
        self._conn = None
        self._conn = self._connect()

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A ``BEGIN IMMEDIATE`` transaction: committed on success, rolled back on any exception."""
        self._follow_fork()
        with self._lock:
            conn = self._current()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                    conn.execute("COMMIT")
                except BaseException:
                    _rollback(conn)
                    raise
            except sqlite3.Error as exc:  # one handler here: this runs on every commit
                raise translate(exc) from exc

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A deferred read transaction: every statement inside sees one snapshot."""
        self._follow_fork()
        with self._lock:
            conn = self._current()
            try:
                conn.execute("BEGIN")
                try:
                    yield conn
                finally:
                    _rollback(conn)
            except sqlite3.Error as exc:
                raise translate(exc) from exc

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None and self._generation == _fork_generation:
                conn.close()

    @property
    def closed(self) -> bool:
        return self._conn is None


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:  # the original exception matters more
            log.warning("rollback failed", exc_info=True)


_SQLITE_HEADER = b"SQLite format 3\x00"


def _check_header(path: Path) -> None:
    """Reject a non-empty file without the SQLite header (SQLite itself treats a 1-byte file as empty)."""
    try:
        with open(path, "rb") as handle:
            header = handle.read(len(_SQLITE_HEADER))
    except OSError as exc:
        raise BackendError(f"cannot read {path}: {exc}") from exc
    if header and header != _SQLITE_HEADER:
        raise NotAStoreDatabase(str(path), "it is not an SQLite database")


def _create_private(path: Path) -> None:
    """Create a new database file readable by its owner only (its -wal/-shm inherit the mode)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    except OSError as exc:
        raise BackendError(f"cannot create {path}: {exc}") from exc
    os.close(fd)

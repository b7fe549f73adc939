"""One SQLite connection with interrupt-safe transactions, bounded waits and fork safety.

Every write runs under ``BEGIN IMMEDIATE`` (the write lock is taken up front,
so a read-then-write can never be overtaken); every multi-statement read runs
in one deferred transaction (one snapshot).

Interrupts.  A ``KeyboardInterrupt`` (or any exception raised by a signal
handler) can arrive between any two bytecodes.  A transaction left open by one
would keep the file's write lock and break every later call, so:

* the statements, the commit and the rollback run in one function whose
  ``finally`` rolls back until the connection is out of its transaction; the
  rollback loop is written inline, because entering a function is itself a
  point where CPython delivers a pending interrupt, and an interrupt that lands
  during a rollback is held back and re-raised once the rollback is done;
* a rollback that fails (an I/O error) closes the connection, which releases
  every lock, and the next call reconnects;
* waiting for another process's lock happens in short slices inside SQLite and
  between them in Python, where an interrupt is delivered at once (SQLite's own
  busy wait cannot be interrupted), and the whole transaction is retried.
"""

from __future__ import annotations

import logging
import os
import random
import sqlite3
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from lash_store.errors import (
    BackendError,
    CorruptData,
    InvalidInput,
    NotAStoreDatabase,
    StoreBusy,
    StoreClosed,
    StoreNotFound,
)
from lash_store.options import StoreOptions
from lash_store.sqlite.deletion import delete_session_file, is_marked
from lash_store.sqlite.reader import ReadOnlyFile
from lash_store.sqlite.schema import SESSION_SCHEMA, DatabaseSchema, IdentityView

log = logging.getLogger("lash_store")

T = TypeVar("T")

# Connections inherited through fork() are parked here, never closed or used by the child.
_ABANDONED_AFTER_FORK: list[sqlite3.Connection] = []

# How often an open may find the file marked deleted and finish the deletion before it gives up.
_DELETED_RETRIES = 3
_READONLY_DBMOVED = sqlite3.SQLITE_READONLY_DBMOVED  # the file was unlinked since it was opened

# Bumped in every forked child: comparing it costs nothing, unlike a getpid() system call per operation.
_fork_generation = 0


def _after_fork_in_child() -> None:
    global _fork_generation
    _fork_generation += 1


os.register_at_fork(after_in_child=_after_fork_in_child)

_READ_ONLY_ATTEMPTS = 20

# How long SQLite itself may wait for a lock before control returns to Python (where interrupts land).
_BUSY_SLICE_S = 0.025


def translate(exc: sqlite3.Error) -> Exception:
    """Map a driver error to the store's typed errors (the original stays chained)."""
    if _is_busy(exc):
        return StoreBusy(f"database is busy: the lock was not free within the busy timeout ({exc})")
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    if primary in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        return CorruptData("database file", str(exc))
    return BackendError(str(exc))


def _is_busy(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


class Connection:
    """A lock-guarded sqlite3 connection to a file (reconnecting after fork) or to memory.

    ``schema`` is the kind of file (a session file by default): its identity
    is checked before anything is modified, and it is created or migrated
    under the write lock.
    """

    def __init__(
        self,
        path: Path | None,
        options: StoreOptions,
        *,
        readonly: bool = False,
        migrate: bool = False,
        create: bool = True,
        schema: DatabaseSchema = SESSION_SCHEMA,
    ) -> None:
        self.path = path
        self.options = options
        self.schema = schema
        self.readonly = readonly
        self.migrate = migrate
        # ``create=False``: open an existing lash-store file only; never create or initialise one
        # (maintenance commands such as ``lash-store migrate`` must not leave a new database behind).
        self.create = create
        self.migrated_from: int | None = None  # the layout revision this connection migrated the file from
        self._lock = threading.RLock()
        self._generation = _fork_generation
        self._conn: sqlite3.Connection | None = None
        self._reconnect = False
        self._closed = False
        self._source: ReadOnlyFile | None = None
        self._conn = self._connect()

    # -- opening ---------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        if self.path is None:
            conn = self._raw_connect(":memory:")
            try:
                self._in_transaction(conn, "BEGIN IMMEDIATE", self.schema.initialise)
                _apply_pragmas(conn, self.options)
            except BaseException:
                conn.close()
                raise
            return conn
        if self.readonly:
            return self._connect_readonly(self.path)
        return self._connect_file(self.path)

    def _raw_connect(self, target: str, *, uri: bool = False) -> sqlite3.Connection:
        try:
            return sqlite3.connect(
                target,
                timeout=min(_BUSY_SLICE_S, self.options.busy_timeout_ms / 1000),
                isolation_level=None,
                check_same_thread=False,
                cached_statements=256,
                uri=uri,
            )
        except sqlite3.Error as exc:
            raise BackendError(f"cannot open {target}: {exc}") from exc

    def _connect_file(self, path: Path) -> sqlite3.Connection:
        for _ in range(_DELETED_RETRIES):
            try:
                inode = check_database_path(path, create=self.create)
            except StoreNotFound:
                if not self.create:
                    raise
                continue  # created, then deleted at once by a concurrent deletion: create it again
            # mode=rw: should the file vanish after the check above, SQLite fails instead of creating it.
            conn = self._raw_connect(str(path)) if self.create else self._raw_connect(_rw_uri(path), uri=True)
            try:
                identity = self._with_retry(lambda: _read_identity(conn, self.schema), opening=True)  # noqa: B023
            except BackendError as exc:
                conn.close()
                if self.create and _deleted_meanwhile(exc, path, inode):
                    continue
                raise
            except BaseException:
                conn.close()
                raise
            if not (identity.is_deleted and self.create):
                try:
                    return self._set_up_file(conn, path, identity)
                except (BackendError, StoreNotFound) as exc:
                    if not (self.create and _deleted_meanwhile(exc, path, inode)):
                        raise
                    continue  # a deletion took the file while it was set up: open (create) it again
            # A deletion marked the file and then failed (or is finishing right now): complete it, then create.
            conn.close()
            delete_session_file(
                path,
                timeout_s=self.options.busy_timeout_ms / 1000,
                keep=lambda marked: not is_marked(marked),
                stray_sidecars=False,  # once it is gone, a new session may already live at this path
            )
        raise StoreBusy(f"{path} kept being deleted while it was opened")

    def _set_up_file(self, conn: sqlite3.Connection, path: Path, identity: IdentityView) -> sqlite3.Connection:
        try:
            identity.check(str(path), migrate=self.migrate)  # before anything could modify the file
            if not self.create and identity.needs_initialising:
                raise NotAStoreDatabase(str(path), "it holds no lash-store schema")
            self._with_retry(lambda: _switch_to_wal(conn), opening=True)
            if identity.needs_migration:
                found = self._with_retry(
                    lambda: self._in_transaction(conn, "BEGIN IMMEDIATE", lambda c: self.schema.migrate(c, str(path)))
                )
                if found is not None:  # None: another process migrated the file first
                    self.migrated_from = found
            elif identity.needs_initialising:
                self._with_retry(
                    lambda: self._in_transaction(
                        conn, "BEGIN IMMEDIATE", lambda c: self.schema.initialise_checked(c, str(path))
                    )
                )
            _apply_pragmas(conn, self.options)
        except BaseException:
            conn.close()
            raise
        return conn

    def _connect_readonly(self, path: Path) -> sqlite3.Connection:
        check_database_path(path, create=False)
        source = self._source = ReadOnlyFile(path, min(_BUSY_SLICE_S, self.options.busy_timeout_ms / 1000))
        try:
            identity = self._read_only(lambda conn: self.schema.identity(conn), opening=True)
            identity.check(str(path))
            if identity.is_empty or not identity.is_complete:
                raise NotAStoreDatabase(str(path), "it holds no lash-store schema")
            return source.connection()
        except BaseException:
            source.close()
            raise

    def _read_only(self, body: Callable[[sqlite3.Connection], T], *, opening: bool = False) -> T:
        """A read transaction on a file this process must not write to (see :mod:`lash_store.sqlite.reader`)."""
        source = self._source
        assert source is not None
        for _ in range(_READ_ONLY_ATTEMPTS):
            try:
                result = self._with_retry(
                    lambda: self._in_transaction(source.connection(), "BEGIN", body, commit=False), opening=opening
                )
            except BackendError as exc:
                if not isinstance(exc.__cause__, sqlite3.OperationalError):
                    raise
                source.close()  # the files changed under the connection (a writer closed): look again
                continue
            if source.unchanged():
                return result
        raise StoreBusy(f"{self.path} kept changing while it was read")

    # -- transactions ----------------------------------------------------

    def write(self, body: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``body`` under ``BEGIN IMMEDIATE``: committed if it returns, rolled back if anything raises."""
        return self._transaction("BEGIN IMMEDIATE", body)

    def read(self, body: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``body`` in one deferred transaction (one snapshot); it is always rolled back."""
        return self._transaction("BEGIN", body, commit=False)

    def _transaction(self, begin: str, body: Callable[[sqlite3.Connection], T], *, commit: bool = True) -> T:
        if self._generation != _fork_generation:
            self._follow_fork()
        with self._lock:
            if self.readonly:
                if self._closed:
                    raise StoreClosed()
                if commit:
                    raise BackendError(f"{self.path} was opened read-only; nothing was written")
                return self._read_only(body)
            if not self._reconnect and self._conn is not None and self._conn.in_transaction:
                # Only this thread can hold the lock with a transaction open: a call from inside its own body
                # (two components sharing this connection).  Refused before anything else, so that the
                # cleanup below never rolls back the caller's transaction.
                raise BackendError("a transaction cannot start inside another one on the same connection")
            return self._with_retry(lambda: self._in_transaction(self._current(), begin, body, commit=commit))

    def outside_transaction(self, body: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``body`` on the connection with no transaction open (``VACUUM`` cannot run inside one)."""
        if self._generation != _fork_generation:
            self._follow_fork()
        with self._lock:
            if self.readonly:
                raise BackendError(f"{self.path} was opened read-only; nothing was written")
            return self._with_retry(lambda: body(self._current()))

    def _with_retry(self, attempt: Callable[[], T], *, opening: bool = False) -> T:
        """Retry ``attempt`` while the database is busy, up to the busy timeout, sleeping in Python."""
        deadline = time.monotonic() + self.options.busy_timeout_ms / 1000
        while True:
            try:
                return attempt()
            except sqlite3.Error as exc:
                if not _is_busy(exc) or time.monotonic() >= deadline:
                    if opening and "not a database" in str(exc):
                        raise NotAStoreDatabase(str(self.path), str(exc)) from exc
                    raise translate(exc) from exc
            time.sleep(random.uniform(0.0005, 0.002))  # no transaction is open here: an interrupt is harmless

    def _in_transaction(
        self,
        conn: sqlite3.Connection,
        begin: str,
        body: Callable[[sqlite3.Connection], T],
        *,
        commit: bool = True,
    ) -> T:
        interrupted: BaseException | None = None
        try:
            conn.execute(begin)
            result = body(conn)
            if commit:
                conn.execute("COMMIT")
            return result
        finally:
            # Inline, not a helper call: see the module docstring.
            while conn.in_transaction:
                try:
                    conn.rollback()
                except sqlite3.Error:
                    log.warning("rollback failed; closing the connection to release its locks", exc_info=True)
                    conn.close()
                    self._reconnect = True
                    break
                except BaseException as exc:  # an interrupt during the rollback: finish it first
                    interrupted = exc
            if interrupted is not None:
                raise interrupted

    def _current(self) -> sqlite3.Connection:
        if self._closed:
            raise StoreClosed()
        if self._reconnect or self._conn is None:
            if self.path is None:
                raise BackendError("the in-memory database was lost when its connection had to be closed")
            self._conn = self._connect()
            self._reconnect = False
        return self._conn

    def _follow_fork(self) -> None:
        """In a forked child, reconnect instead of sharing the parent's file handles and locks."""
        self._generation = _fork_generation
        self._lock = threading.RLock()  # the parent's lock may have been held at fork time
        if self._source is not None:
            inherited = self._source.detach()
            if inherited is not None:
                _ABANDONED_AFTER_FORK.append(inherited)
            self._conn = None
            return
        if self.path is None or self._conn is None or self._closed:
            return  # a private in-memory database is simply copied into the child
        _ABANDONED_AFTER_FORK.append(self._conn)  # never closed: the parent still owns it
        self._conn = None
        self._reconnect = True

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
            self._closed = True
            if self._source is not None and self._generation == _fork_generation:
                self._source.close()
            elif conn is not None and self._generation == _fork_generation:
                conn.close()

    @property
    def closed(self) -> bool:
        return self._closed


def _read_identity(conn: sqlite3.Connection, schema: DatabaseSchema) -> IdentityView:
    """Read a file's identity in one read transaction, before anything is modified."""
    conn.execute("BEGIN")
    try:
        return schema.identity(conn)
    finally:
        conn.rollback()


def _deleted_meanwhile(exc: Exception, path: Path, inode: int) -> bool:
    """A deletion marked or unlinked the file while it was being set up (see :mod:`.deletion`)."""
    if isinstance(exc, StoreNotFound):
        return True
    cause = exc.__cause__
    code = getattr(cause, "sqlite_errorcode", None) if isinstance(cause, sqlite3.Error) else None
    if code == _READONLY_DBMOVED:
        return True
    if code is not None and code & 0xFF == sqlite3.SQLITE_IOERR:
        # SQLite finds a file's log and journal by name: while a deletion removes them, an opener of the
        # same name can meet them half gone.  Nothing was written yet, so the open is simply tried again.
        return True
    try:
        if os.stat(path).st_ino != inode:
            return True
    except FileNotFoundError:
        return True
    try:  # the deletion marks the file before it removes the sidecars an opener may be using
        probe = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=_BUSY_SLICE_S)
        try:
            return is_marked(probe)
        finally:
            probe.close()
    except sqlite3.Error:
        return False


def _rw_uri(path: Path) -> str:
    """A URI that opens an existing database read-write and never creates one."""
    return f"{path.resolve().as_uri()}?mode=rw"


def _switch_to_wal(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA journal_mode=WAL").fetchone()


def _apply_pragmas(conn: sqlite3.Connection, options: StoreOptions) -> None:
    conn.execute(f"PRAGMA synchronous = {options.durability.value}")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA cache_size = -8000")


# ---------------------------------------------------------------------------
# Paths

# The smallest SQLite database is one 512-byte page.  SQLite itself refuses a larger file without its
# header, but treats a shorter one as empty and would initialise it: such a file is refused here.
_MIN_DATABASE_BYTES = 512


def check_database_path(path: Path, *, create: bool) -> int:
    """Refuse paths that cannot hold a database before SQLite touches them; create a new file 0600.

    Returns the file's inode, by which a deletion racing the open is recognised.

    Only ``stat`` looks at an existing file, never ``open``: closing any descriptor of a file drops
    every POSIX lock this process holds on it, SQLite's locks of other connections included, and
    opening a FIFO where the database should be would block forever.
    """
    text = os.fspath(path)
    if "\x00" in text:
        raise InvalidInput("path", "must not contain NUL characters")
    if create:
        _create_private(path)
    try:
        st = os.stat(path)
    except FileNotFoundError as exc:
        raise StoreNotFound(text) from exc
    except OSError as exc:
        raise InvalidInput("path", f"cannot use {text}: {exc.strerror}") from exc
    if stat.S_ISDIR(st.st_mode):
        raise InvalidInput("path", f"{text} is a directory")
    if not stat.S_ISREG(st.st_mode):
        raise InvalidInput("path", f"{text} is not a regular file")
    if 0 < st.st_size < _MIN_DATABASE_BYTES:
        raise NotAStoreDatabase(text, "it is not an SQLite database")
    return st.st_ino


def _create_private(path: Path) -> None:
    """Create a new database file readable by its owner only (its -wal/-shm inherit the mode)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NONBLOCK | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return
    except IsADirectoryError as exc:
        raise InvalidInput("path", f"{path} is a directory") from exc
    except OSError as exc:
        raise InvalidInput("path", f"cannot create {path}: {exc.strerror}") from exc
    os.close(fd)  # a brand-new file: no connection of this process can hold locks on it yet

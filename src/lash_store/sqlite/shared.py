"""One connection per deployment file and process, shared by the components opened on it.

The process registry, the host-event store and the effect journal live in one
deployment file.  Each on its own connection, every switch between them (a
route touches all three) would find the page cache invalidated by the other
connections' commits and read the pages again.  So, within one process,
components opened on the same file with the same connection options (busy
timeout, durability) use one :class:`~lash_store.sqlite.connection.Connection`:

* each component holds a :class:`SharedConnection`, its own view with its own
  options (its clock) and its own ``closed`` state: a component closed raises
  :class:`StoreClosed` while the others keep working; the connection closes
  with the last of them;
* calls of the components are serialised on the connection's lock (SQLite
  serialises their writes on the file's lock anyway);
* a file replaced at the same path (another inode) gets a connection of its own;
* after ``fork`` a child starts with no shared connections: what it opens gets
  a new one, and the components it inherited reconnect as every connection does;
* read-only opens and private in-memory databases are never shared.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from lash_store.errors import StoreClosed
from lash_store.options import StoreOptions
from lash_store.sqlite.connection import Connection
from lash_store.sqlite.schema import DatabaseSchema

__all__ = ["Database", "SharedConnection", "open_shared"]

T = TypeVar("T")

# (resolved path, busy timeout, durability) -> the shared connection of this process.
_Key = tuple[str, int, str]


class _Share:
    """A connection and how many open components use it."""

    __slots__ = ("connection", "inode", "key", "users")

    def __init__(self, key: _Key, connection: Connection, inode: int | None) -> None:
        self.key = key
        self.connection = connection
        self.inode = inode
        self.users = 0


_lock = threading.Lock()
_shares: dict[_Key, _Share] = {}


def _after_fork_in_child() -> None:
    global _lock, _shares
    _lock = threading.Lock()  # the parent's may have been held at fork time
    _shares = {}  # the inherited views keep their shares (and reconnect); new opens start afresh


os.register_at_fork(after_in_child=_after_fork_in_child)


class SharedConnection:
    """One component's use of a shared :class:`Connection` (the part of its interface the backends use)."""

    __slots__ = ("_closed", "_share", "options", "path")

    readonly = False

    def __init__(self, share: _Share, path: Path, options: StoreOptions) -> None:
        self._share = share
        self._closed = False
        self.path: Path | None = path
        self.options = options

    def shares_with(self, other: object) -> bool:
        """Whether ``other`` is a view of the same connection (so of the same file)."""
        return isinstance(other, SharedConnection) and other._share is self._share

    @property
    def shared(self) -> Connection:
        """The connection itself (tests look at it)."""
        return self._share.connection

    def read(self, body: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise StoreClosed()
        return self._share.connection.read(body)

    def write(self, body: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise StoreClosed()
        return self._share.connection.write(body)

    def outside_transaction(self, body: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise StoreClosed()
        return self._share.connection.outside_transaction(body)

    def close(self) -> None:
        """Close this view (twice is harmless); the connection closes with its last view."""
        with _lock:
            if self._closed:
                return
            self._closed = True
            share = self._share
            share.users -= 1
            if share.users > 0:
                return
            if _shares.get(share.key) is share:
                del _shares[share.key]
        share.connection.close()

    @property
    def closed(self) -> bool:
        return self._closed


def open_shared(path: Path, options: StoreOptions, schema: DatabaseSchema) -> SharedConnection:
    """A view of this process's connection to ``path`` for ``options``, opening (checking, creating) it if needed.

    The first open of a file checks it (and creates or initialises it) as a
    :class:`Connection` does; a later open of the same file checks it again
    on the shared connection (one read transaction).
    """
    resolved = path.resolve()
    key: _Key = (str(resolved), options.busy_timeout_ms, options.durability.value)
    with _lock:
        share = _shares.get(key)
        if share is not None and (share.inode is None or _inode(resolved) != share.inode):
            share = None
        if share is not None:
            share.users += 1
    if share is not None:
        view = SharedConnection(share, path, options)
        try:
            if _still_complete(view, path, schema):
                return view
        except BaseException:
            view.close()
            raise
        view.close()  # changed behind the connection's back (tables dropped): open it afresh, as a first open
    connection = Connection(path, options, schema=schema)  # outside the lock: it may wait for another process
    inode = _inode(resolved)
    with _lock:
        found = _shares.get(key)
        if found is not None and inode is not None and found.inode == inode:
            found.users += 1  # another thread opened the file meanwhile: use its connection
            share, spare = found, connection
        else:
            share, spare = _Share(key, connection, inode), None
            share.users = 1
            _shares[key] = share
    if spare is not None:
        spare.close()
    return SharedConnection(share, path, options)


#: What a backend runs its transactions on: a connection of its own, or its view of a shared one.
Database = Connection | SharedConnection


def _still_complete(view: SharedConnection, path: Path, schema: DatabaseSchema) -> bool:
    """Apply the open rules to the file again, as every open does (another program may have changed it)."""
    identity = view.read(schema.identity)
    identity.check(str(path))
    return not (identity.needs_initialising or identity.needs_migration)


def _inode(path: Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None

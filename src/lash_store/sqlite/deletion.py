"""Deleting a session file without ever losing a commit acknowledged to a process that has it open.

Unlinking a database that another connection still uses is silent data loss:
that connection keeps committing into a file nobody can find again.  So a
deletion first proves that nobody has the file open, and leaves a mark that
anyone who opened it meanwhile will see:

1. An exclusive lock (``locking_mode=EXCLUSIVE`` + ``BEGIN EXCLUSIVE``).  Every
   lash-store connection to a WAL file holds a shared lock for as long as it is
   open, so the lock is granted only when no store has the file open, in this
   process or any other.  Otherwise the file is in use: :class:`StoreBusy`.
2. Under that lock the file is marked deleted (``user_version`` = ``DELETED_MARK``).
   A process that opened the file just before and waits for the lock reads the
   mark and never writes into the doomed file.
3. Still under the lock, the file leaves WAL mode (its log is folded back and
   removed by SQLite itself) and is unlinked, sidecars first.  Leaving WAL mode
   matters: closing a WAL connection deletes the log *by name*, which could by
   then be the log of a new session created at the same path.

A crash between the mark and the unlink leaves a marked file: opening it as a
store raises :class:`StoreNotFound`, and creating a store there finishes the
deletion first.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from lash_store.errors import StoreBusy

DELETED_MARK = 0x7DE1E7ED  # a user_version no lash-store release uses: "this session was deleted"


def is_marked(conn: sqlite3.Connection) -> bool:
    return bool(conn.execute("PRAGMA user_version").fetchone()[0] == DELETED_MARK)


SIDECARS = ("-wal", "-shm", "-journal")

_SLICE_S = 0.025


def delete_session_file(
    path: Path,
    *,
    timeout_s: float,
    keep: Callable[[sqlite3.Connection], bool] | None = None,
    stray_sidecars: bool = True,
) -> bool:
    """Remove the session database at ``path`` and its sidecars; False if ``keep`` said to keep it.

    ``keep`` runs under the exclusive lock (a last check, e.g. "still idle?").
    A missing file is not an error; its stray sidecars are removed too unless
    ``stray_sidecars`` is false (a stale log beside a future database of that
    name would be replayed into it).  A file in use raises :class:`StoreBusy`.
    """
    if not os.path.lexists(path):
        if not stray_sidecars or not any(os.path.lexists(f"{path}{suffix}") for suffix in SIDECARS):
            return True
        # Stray sidecars: a session being created right now may own them.  A placeholder database in its
        # place makes that creator wait for the lock below and then see the mark, like any other opener.
        with contextlib.suppress(FileExistsError):
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=rw", uri=True, timeout=_SLICE_S, isolation_level=None)
    except sqlite3.Error:
        _remove(path, (*SIDECARS, ""))  # not openable as a database (a directory is left to fail below)
        return True
    try:
        conn.execute("PRAGMA locking_mode=EXCLUSIVE")
        _lock_exclusively(conn, path, time.monotonic() + timeout_s)
        if keep is not None and keep(conn):
            conn.rollback()
            return False
        conn.execute(f"PRAGMA user_version = {DELETED_MARK}")
        conn.execute("COMMIT")  # the exclusive locking mode keeps the lock after the commit
        conn.execute("PRAGMA journal_mode=DELETE").fetchone()
        _remove(path, (*SIDECARS, ""))  # the database last: while it exists, openers see the mark
    except sqlite3.DatabaseError as exc:
        if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_READONLY_DBMOVED:
            return True  # another deletion unlinked it first; the name may already belong to a new session
        if "not a database" not in str(exc):
            raise
        _remove(path, (*SIDECARS, ""))  # not a database: nothing can have it open as a store
    finally:
        conn.close()
    return True


def _lock_exclusively(conn: sqlite3.Connection, path: Path, deadline: float) -> None:
    """Wait in short slices (an interrupt is delivered between them) until no one else has the file open."""
    while True:
        try:
            conn.execute("BEGIN EXCLUSIVE")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            if time.monotonic() >= deadline:
                raise StoreBusy(f"{path} is open (in this or another process); close it first") from exc
        time.sleep(_SLICE_S)


def _remove(path: Path, suffixes: tuple[str, ...]) -> None:
    for suffix in suffixes:
        with contextlib.suppress(FileNotFoundError):
            os.remove(f"{path}{suffix}")

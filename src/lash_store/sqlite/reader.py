"""Reading a session file without creating or modifying anything next to it.

A WAL database's committed data may sit in its ``-wal`` file, and SQLite's
usual read-only open (``mode=ro``) still creates ``-wal``/``-shm`` when they
are missing and writes read marks into an existing ``-shm``.  Readers here
choose, before every read transaction, from what ``stat`` shows:

* the ``-wal`` holds frames and a ``-shm`` exists (a live writer, or a crash
  left both): ``mode=ro&readonly_shm=1`` maps the ``-shm`` read-only (or, when
  no process owns it, rebuilds the index in private memory) and sees every
  committed transaction, live, changing nothing;
* the ``-wal`` holds frames but there is no ``-shm`` (a crash, then someone
  removed it): the database and its ``-wal`` are copied into a private
  temporary directory, where SQLite replays the log; the copy is kept while
  the originals do not change;
* otherwise the main file holds everything: ``immutable=1`` reads it without
  locks or sidecars, and the transaction is retried if the file changed while
  it was read (a writer that started meanwhile).

The one gap: a writer that closes (checkpointing and deleting its sidecars)
between the ``stat`` and the open can make SQLite leave an empty ``-wal``
behind; the read itself is retried and correct.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
from pathlib import Path

from lash_store.errors import StoreBusy, StoreNotFound

_WAL_HEADER = 32  # a -wal no longer than its header holds no frames

Key = tuple[int, int, int, int]

_OPEN_ATTEMPTS = 5


def _key(path: str) -> Key | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class ReadOnlyFile:
    """A source of read-only connections to one database file (see the module docstring)."""

    def __init__(self, path: Path, timeout_s: float) -> None:
        self.path = path
        self._db = str(path)
        self._uri = path.resolve().as_uri()
        self._timeout_s = timeout_s
        self._conn: sqlite3.Connection | None = None
        self._mode = ""
        self._state: tuple[Key | None, ...] = ()
        self._copy_dir: str | None = None

    def _observe(self) -> tuple[str, tuple[Key | None, ...]]:
        db, wal, shm = _key(self._db), _key(self._db + "-wal"), _key(self._db + "-shm")
        has_frames = wal is not None and wal[1] > _WAL_HEADER
        mode = ("live" if shm is not None else "copy") if has_frames else "immutable"
        # A live connection follows the writer by itself; the others are valid while nothing changes.
        return mode, (db,) if mode == "live" else (db, wal, shm)

    def connection(self) -> sqlite3.Connection:
        """A connection that reads every committed transaction as of now."""
        for _ in range(_OPEN_ATTEMPTS):
            mode, state = self._observe()
            if self._conn is not None and mode == self._mode and state == self._state:
                return self._conn
            self.close()
            if _key(self._db) is None:
                raise StoreNotFound(self._db, "it was deleted while it was read")
            try:
                self._conn = self._open(mode)
            except FileNotFoundError:
                continue  # the log went away between looking and copying (its writer closed): look again
            self._mode, self._state = mode, state
            return self._conn
        raise StoreBusy(f"{self._db} kept changing while it was opened")

    def unchanged(self) -> bool:
        """Whether what the last connection read is still what the files hold (immutable reads need this)."""
        return self._mode == "live" or self._observe() == (self._mode, self._state)

    def _open(self, mode: str) -> sqlite3.Connection:
        if mode == "live":
            return self._connect(f"{self._uri}?mode=ro&readonly_shm=1")
        if mode == "immutable":
            return self._connect(f"{self._uri}?mode=ro&immutable=1")
        return self._open_copy()

    def _open_copy(self) -> sqlite3.Connection:
        directory = tempfile.mkdtemp(prefix="lash-store-read-")
        try:
            copy = os.path.join(directory, "session.db")
            shutil.copyfile(self._db, copy)
            shutil.copyfile(self._db + "-wal", copy + "-wal")
            os.chmod(copy, 0o600)
            conn = self._connect(copy)
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise
        self._copy_dir = directory
        return conn

    def _connect(self, target: str) -> sqlite3.Connection:
        return sqlite3.connect(
            target,
            uri=target.startswith("file:"),
            timeout=self._timeout_s,
            isolation_level=None,
            check_same_thread=False,
        )

    def detach(self) -> sqlite3.Connection | None:
        """Forget the connection and copy without closing them (a forked child: the parent still owns them)."""
        conn, self._conn, self._copy_dir, self._mode = self._conn, None, None, ""
        return conn

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
        directory, self._copy_dir = self._copy_dir, None
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)

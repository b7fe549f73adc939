"""The factory's catalogue: what each session file of a root said when it was last read, and when.

Listing many sessions must not open every file.  The catalogue remembers --
in the factory's memory, and in a small SQLite file in the root
(``.lash-catalog.sqlite``) when the factory is made with ``keep_catalog=True``
-- per session file its
session id and picker info together with the file's *signature*: the
modification time and size of the database and of its write-ahead log.  Every
write to a session changes one of them, so an entry whose signature still
matches the file is current and every other entry is read again from the file.

It is a cache and never trusted blindly:

* an entry is used only while the file's signature is the one it was read at,
  and only when that signature is older than the moment of reading by more
  than the file system's timestamp granularity (a write in the same tick as
  the read could otherwise leave the signature unchanged);
* files the catalogue does not know are read, entries of vanished files are
  dropped, and a damaged or unwritable catalogue is rebuilt or simply not
  used: listing then reads the files, slower but the same result.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import msgspec

from lash_store.model import SessionPickerInfo

log = logging.getLogger("lash_store")

CATALOG_NAME = ".lash-catalog.sqlite"

# Timestamps of some file systems tick in seconds (ext3, FAT twice that): a signature this close to the moment
# it was read from may not have changed for a write in the same tick, so such an entry is read again.
_TICK_NS = 2_000_000_000

# Entries fetched per query (SQLite's limit on parameters is far above it).
_CHUNK = 500

Signature = tuple[int, int, int, int]  # database mtime_ns and size, log mtime_ns and size (0, 0 without a log)

_DDL = """
CREATE TABLE IF NOT EXISTS files (
    file_name TEXT PRIMARY KEY,
    session_id TEXT,
    db_mtime_ns INTEGER, db_size INTEGER, wal_mtime_ns INTEGER, wal_size INTEGER,
    read_at_ns INTEGER NOT NULL,
    info BLOB
)
"""


class Entry(NamedTuple):
    """What the catalogue holds for one file (``info`` is None for a file without session metadata)."""

    session_id: str | None
    signature: Signature | None
    read_at_ns: int
    info: SessionPickerInfo | None

    def current_for(self, signature: Signature) -> bool:
        return self.signature == signature and max(signature[0], signature[2]) + _TICK_NS < self.read_at_ns


class Catalog:
    """Best-effort access to a root's catalogue: every failure turns it off, never the listing.

    ``memory`` is the factory's own record of what its listings read (kept for
    the factory's lifetime, written nowhere); the file is read when it exists
    and written only when ``writable``.  Where both know a file, the entry read
    last wins.
    """

    def __init__(self, root: Path, *, writable: bool, memory: dict[str, Entry] | None = None) -> None:
        self.path = root / CATALOG_NAME
        self.writable = writable
        self.memory: dict[str, Entry] = {} if memory is None else memory
        self._pending: dict[str, Entry | None] = {}

    def session_ids(self) -> dict[str, str | None]:
        """Every file's remembered session id (what ordering by id needs, without the picker infos)."""
        rows = self._select("SELECT file_name, session_id FROM files", ())
        ids = {name: session_id for name, session_id in rows if session_id is None or isinstance(session_id, str)}
        ids.update((name, entry.session_id) for name, entry in list(self.memory.items()))
        return ids

    def entries(self, file_names: list[str]) -> dict[str, Entry]:
        """The usable entries of ``file_names`` (a damaged one is left out: its file is simply read again)."""
        found: dict[str, Entry] = {}
        for start in range(0, len(file_names), _CHUNK):
            chunk = file_names[start : start + _CHUNK]
            rows = self._select(
                "SELECT file_name, session_id, db_mtime_ns, db_size, wal_mtime_ns, wal_size, read_at_ns, info "
                f"FROM files WHERE file_name IN ({', '.join('?' * len(chunk))})",
                chunk,
            )
            for name, session_id, *signature, read_at, info in rows:
                entry = _entry(session_id, signature, read_at, info)
                if entry is not None:
                    found[name] = entry
        for name in file_names:
            remembered = self.memory.get(name)
            if remembered is not None and (name not in found or remembered.read_at_ns >= found[name].read_at_ns):
                found[name] = remembered
        return found

    def _select(self, sql: str, params: Sequence[object]) -> list[tuple[Any, ...]]:
        if not self.path.exists():
            return []
        conn = self._connect(readonly=True)
        if conn is None:
            return []
        try:
            return conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:  # damaged, or a writer's hot journal: the files are read instead
            log.warning("session catalogue %s is unreadable (%s); listing reads the files", self.path, exc)
            return []
        finally:
            conn.close()

    def remember(self, file_name: str, entry: Entry) -> None:
        self.memory[file_name] = entry
        self._pending[file_name] = entry

    def forget(self, file_names: Iterable[str]) -> None:
        for name in file_names:
            self.memory.pop(name, None)
            self._pending[name] = None

    def flush(self) -> None:
        """Write what this listing learnt, in one transaction (skipped when busy or read-only)."""
        pending, self._pending = self._pending, {}
        if not pending or not self.writable:
            return
        for attempt in range(2):
            if self._write(pending) or attempt:
                return
            self._discard_damaged()  # damaged rather than busy: start it afresh, once

    def _write(self, pending: dict[str, Entry | None]) -> bool:
        """False if the catalogue is damaged (busy or unwritable: True, nothing written, no harm done)."""
        conn = self._connect(readonly=False)
        if conn is None:
            return True
        try:
            conn.execute("PRAGMA synchronous = OFF")  # a cache: losing its last update costs one re-read
            with conn:
                conn.execute(_DDL)
                for name, entry in pending.items():
                    if entry is None:
                        conn.execute("DELETE FROM files WHERE file_name = ?", (name,))
                    else:
                        conn.execute(
                            "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                            (name, entry.session_id, *(entry.signature or (None,) * 4), entry.read_at_ns, _blob(entry)),
                        )
        except sqlite3.DatabaseError as exc:
            log.warning("session catalogue %s could not be updated (%s)", self.path, exc)
            return isinstance(exc, sqlite3.OperationalError)  # busy or read-only; anything else is damage
        finally:
            conn.close()
        return True

    def _connect(self, *, readonly: bool) -> sqlite3.Connection | None:
        try:
            if readonly:  # a rollback-journal file: reading it creates nothing beside it
                return sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=0.05)
            with contextlib.suppress(FileExistsError):  # private, like the session files it describes
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            return sqlite3.connect(self.path, timeout=0.05)  # `with conn:` makes one transaction
        except (sqlite3.Error, OSError) as exc:
            log.debug("session catalogue %s unavailable: %s", self.path, exc)
            return None

    def _discard_damaged(self) -> None:
        if self.writable:
            for suffix in ("", "-wal", "-shm", "-journal"):
                with contextlib.suppress(OSError):
                    os.remove(f"{self.path}{suffix}")


def signature_of(entries: dict[str, os.DirEntry[str]], file_name: str) -> Signature | None:
    """The file's signature from a directory scan (None if it vanished meanwhile)."""
    try:
        database = entries[file_name].stat()
    except OSError:
        return None
    log = entries.get(file_name + "-wal")
    try:
        log_stat = None if log is None else log.stat()
    except OSError:
        log_stat = None
    if log_stat is None:
        return database.st_mtime_ns, database.st_size, 0, 0
    return database.st_mtime_ns, database.st_size, log_stat.st_mtime_ns, log_stat.st_size


def last_write_ns(signature: Signature) -> int:
    return max(signature[0], signature[2])


def now_ns() -> int:
    return time.time_ns()


def _entry(session_id: object, signature: list[object], read_at: object, info: object) -> Entry | None:
    if not (session_id is None or isinstance(session_id, str)) or type(read_at) is not int:
        return None
    if all(type(part) is int for part in signature):
        sig: Signature | None = (signature[0], signature[1], signature[2], signature[3])  # type: ignore[assignment]
    elif all(part is None for part in signature):
        sig = None
    else:
        return None
    decoded = None
    if info is not None:
        if not isinstance(info, bytes):
            return None
        try:
            decoded = msgspec.msgpack.decode(info, type=SessionPickerInfo)
        except msgspec.DecodeError:
            return None
    return Entry(session_id, sig, read_at, decoded)


def _blob(entry: Entry) -> bytes | None:
    return None if entry.info is None else msgspec.msgpack.encode(entry.info)

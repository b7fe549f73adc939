"""Online backup: a consistent copy of a session database while writers keep committing.

The copy is SQLite's backup API run in one step inside one read transaction,
so it holds exactly the commits acknowledged before that snapshot and never
half of one; in WAL mode writers are not held up meanwhile.  The copy is
written to a private temporary file beside the destination, made durable, and
only then linked into place, so a crash or an interrupt never leaves a partial
backup under the destination's name.  A backup never overwrites anything.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

from lash_store.errors import BackendError, InvalidInput
from lash_store.sqlite.inspection import file_bytes
from lash_store.sqlite.shared import Database

# A stale log or journal under the destination's name would be replayed into the new copy on its first open.
_SIDECARS = ("-wal", "-shm", "-journal")


def backup(connection: Database, dest: Path) -> dict[str, Any]:
    """Copy the database behind ``connection`` to the new file ``dest`` (mode 0600)."""
    check_backup_destination(dest)
    started = time.monotonic()
    partial = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.partial")
    try:
        connection.read(lambda conn: _copy(conn, partial))
        _publish(partial, dest)
    finally:
        for leftover in (partial, *(Path(f"{partial}{suffix}") for suffix in _SIDECARS)):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
    return {
        "source": None if connection.path is None else str(connection.path),
        "destination": str(dest),
        "size_bytes": file_bytes(dest),
        "elapsed_ms": round((time.monotonic() - started) * 1000, 1),
    }


def check_backup_destination(dest: Path) -> None:
    """``dest`` must be a new name in an existing directory, with no stale sidecar files of that name."""
    if os.path.lexists(dest):
        raise InvalidInput("dest", f"{dest} already exists; a backup never overwrites a file")
    for suffix in _SIDECARS:
        if os.path.lexists(f"{dest}{suffix}"):
            raise InvalidInput("dest", f"{dest}{suffix} exists; remove it first (it would be read as part of the copy)")
    if not dest.parent.is_dir():
        raise InvalidInput("dest", f"directory {dest.parent} does not exist")


def _copy(source: sqlite3.Connection, partial: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        partial.unlink()  # left by an attempt that met a busy database and is being retried
    os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))  # private before any byte is written
    target = sqlite3.connect(str(partial), isolation_level=None)
    try:
        source.backup(target)  # pages=-1: every page in one step, from one snapshot
        # A self-contained file: the copy takes the source's WAL mode flag, which would leave a log beside it.
        target.execute("PRAGMA journal_mode=DELETE")
    except sqlite3.Error as exc:
        raise BackendError(f"backup to {partial} failed: {exc}") from exc
    finally:
        target.close()
    _fsync(partial)


def _publish(partial: Path, dest: Path) -> None:
    """Give the finished copy its name without ever replacing a file that appeared meanwhile."""
    try:
        os.link(partial, dest)
    except FileExistsError:
        raise InvalidInput("dest", f"{dest} appeared while the backup ran; nothing was overwritten") from None
    except OSError:  # a file system without hard links: rename, after checking once more
        check_backup_destination(dest)
        os.rename(partial, dest)
    _fsync(dest.parent)


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)

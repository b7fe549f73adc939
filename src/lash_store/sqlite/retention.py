"""Idle sessions of a factory root: found by the time of their last write, deleted only when nobody uses them.

A session file's last write is the later modification time of the database and
its write-ahead log (every commit, enqueue or checkpoint touches one of them;
reading never does).  A session is pruned when that is older than the horizon,
it holds no queued work (a batch waiting for a worker is not idleness), and no
store has it open: the deletion of :mod:`lash_store.sqlite.deletion` takes the
exclusive lock without waiting and, under it, checks once more that nothing
was written since the scan.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from lash_store.errors import StoreBusy, StoreError
from lash_store.sqlite.backend import SESSION_QUERIES
from lash_store.sqlite.deletion import delete_session_file
from lash_store.sqlite.store import Store

Signature = tuple[tuple[int, int], tuple[int, int] | None]


def idle_session_files(root: Path, cutoff_ms: int) -> list[tuple[Path, Signature]]:
    """Session files under ``root`` last written before ``cutoff_ms``, with the stat signature seen."""
    found = []
    for path in sorted(root.glob("*.db")):
        signature = _signature(path)
        if signature is not None and _last_write_ms(signature) < cutoff_ms:
            found.append((path, signature))
    return found


def prune_file(path: Path, seen: Signature, *, dry_run: bool) -> str | None:
    """The pruned (or, dry, prunable) session's id; ``None`` when it is kept (busy, has work, written since).

    A dry run cannot tell which sessions will be open when the real run comes, so it lists them too.
    """
    if dry_run:
        return _inspect(path)
    pruned: list[str] = []

    def keep(conn: sqlite3.Connection) -> bool:
        session_id = _check(conn, path, seen)
        if session_id is None:
            return True
        pruned.append(session_id)
        return False

    try:
        delete_session_file(path, timeout_s=0, keep=keep)
    except StoreBusy:
        return None  # open in some process: in use, whatever its files' times say
    return pruned[0] if pruned else None


def _inspect(path: Path) -> str | None:
    """The dry run's check, through a read-only store: it creates no log or index file beside the database."""
    try:
        with Store.open_readonly(path) as store:
            count, meta = store._sqlite.read(lambda tx: (tx.one("queued_batch_count"), tx.one("load_meta")))
    except StoreError:
        return None  # unreadable, foreign or busy: never pruned on a guess
    if count is None or count[0]:
        return None
    return str(meta[0]) if meta is not None else path.name


def _check(conn: sqlite3.Connection, path: Path, seen: Signature) -> str | None:
    """The session id if the file is still idle as seen and holds no queued work, else ``None``."""
    if _written_since(path, seen):
        return None
    (count,) = conn.execute(SESSION_QUERIES.statements["queued_batch_count"][0]).fetchone()
    if count:
        return None
    meta = conn.execute(SESSION_QUERIES.statements["load_meta"][0]).fetchone()
    return str(meta[0]) if meta is not None else path.name


def _written_since(path: Path, seen: Signature) -> bool:
    now = _signature(path)
    if now is None or now[0] != seen[0]:
        return True
    log, seen_log = now[1], seen[1]
    if log is None or log == seen_log:
        return False
    # Opening the file for the check may create an empty log; a log with frames is a write.
    return seen_log is not None or log[1] > 0


def _signature(path: Path) -> Signature | None:
    try:
        database = os.stat(path)
    except FileNotFoundError:
        return None
    try:
        log = os.stat(f"{path}-wal")
        log_signature: tuple[int, int] | None = (log.st_mtime_ns, log.st_size)
    except FileNotFoundError:
        log_signature = None
    return (database.st_mtime_ns, database.st_size), log_signature


def _last_write_ms(signature: Signature) -> int:
    database, log = signature
    latest = database[0] if log is None else max(database[0], log[0])
    return latest // 1_000_000

"""Blob rows: insert (first writer's bytes win, a re-put refreshes the GC grace clock) and read."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

from lash_store.core import codec

_INSERT = (
    "INSERT INTO blobs (hash, encoding, kind, raw_size, created_at_ms, content) VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (hash) DO UPDATE SET created_at_ms = max(created_at_ms, excluded.created_at_ms)"
)


def put(conn: sqlite3.Connection, blobs: Iterable[codec.EncodedBlob], now_ms: int) -> None:
    conn.executemany(_INSERT, [(b.hash, b.encoding, b.kind, b.raw_size, now_ms, b.content) for b in blobs])


def get(conn: sqlite3.Connection, ref: str) -> bytes | None:
    row = conn.execute("SELECT encoding, content, raw_size FROM blobs WHERE hash = ?", (ref,)).fetchone()
    if row is None:
        return None
    return codec.decode_blob(ref, row[0], row[1], row[2])

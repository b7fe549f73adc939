"""The SQLite backend of the services: named queries (``queries.sql``) run on one connection."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from lash_store.core.queries import load
from lash_store.options import StoreOptions
from lash_store.service.clock import TransactionClock
from lash_store.service.ports import Params, Row
from lash_store.sqlite import inspection
from lash_store.sqlite.connection import Connection

T = TypeVar("T")

QUERIES = load("lash_store.sqlite")
# The queries that take a set of values: SQLite reads it as one JSON array with json_each.
_SET_QUERIES = frozenset(name for name, statements in QUERIES.items() if any("json_each" in s for s in statements))


def _bind(query: str, params: Params | None) -> Params:
    """A list parameter becomes one JSON array (only where a query reads one); everything else binds as is."""
    if not params:
        return {}
    if query not in _SET_QUERIES:
        return params
    return {key: json.dumps(value) if isinstance(value, list) else value for key, value in params.items()}


class SqliteTx:
    """A transaction on a connection that already holds ``BEGIN`` or ``BEGIN IMMEDIATE``."""

    __slots__ = ("_clock", "_conn")

    def __init__(self, conn: sqlite3.Connection, options: StoreOptions) -> None:
        self._conn = conn
        self._clock = TransactionClock(options.now_ms)

    def now_ms(self) -> int:
        return self._clock.now_ms()

    def one(self, query: str, params: Params | None = None) -> Row | None:
        row: Row | None = None
        for statement in QUERIES[query]:
            row = self._conn.execute(statement, _bind(query, params)).fetchone()
        return row

    def all(self, query: str, params: Params | None = None) -> list[Row]:
        return list(self.iter(query, params))

    def iter(self, query: str, params: Params | None = None) -> Iterator[Row]:
        (statement,) = QUERIES[query]
        return iter(self._conn.execute(statement, _bind(query, params)))

    def run(self, query: str, params: Params | None = None) -> int:
        changed = 0
        for statement in QUERIES[query]:
            changed += self._conn.execute(statement, _bind(query, params)).rowcount
        return changed

    def run_many(self, query: str, rows: Sequence[Params]) -> int:
        if not rows:
            return 0
        (statement,) = QUERIES[query]
        return self._conn.executemany(statement, [_bind(query, row) for row in rows]).rowcount

    def fetch_many(self, reads: Sequence[tuple[str, Params | None]]) -> list[list[Row]]:
        return [self.all(query, params) for query, params in reads]

    def send(self, query: str, params: Params | None = None) -> None:
        self.run(query, params)  # an embedded database has no round trip to save

    def send_many(self, query: str, rows: Sequence[Params]) -> None:
        self.run_many(query, rows)


class SqliteBackend:
    """Transactions of one session file (or a private in-memory database)."""

    name = "sqlite"

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self._options = connection.options

    @property
    def in_memory(self) -> bool:
        return self.connection.path is None

    def read(self, body: Callable[[SqliteTx], T]) -> T:
        return self.connection.read(lambda conn: body(SqliteTx(conn, self._options)))

    def write(self, body: Callable[[SqliteTx], T]) -> T:
        return self.connection.write(lambda conn: body(SqliteTx(conn, self._options)))

    def close(self) -> None:
        self.connection.close()

    @property
    def closed(self) -> bool:
        return self.connection.closed

    def describe(self) -> dict[str, Any]:
        return inspection.describe(self.connection)

    def integrity_checks(self) -> list[dict[str, Any]]:
        return inspection.integrity_checks(self.connection)

    def compact(self) -> dict[str, Any]:
        if self.in_memory:
            return {"compacted": False, "reason": "an in-memory database has no file to compact"}
        return inspection.compact(self.connection)

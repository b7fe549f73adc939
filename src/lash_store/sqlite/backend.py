"""The SQLite backend of the services: named queries (a ``*.sql`` file of named blocks) run on one connection.

The session store runs ``queries.sql`` on a session file; the process registry
runs ``registry_queries.sql`` on a deployment file.  A :class:`QuerySet` is one
such file, parsed once.
"""

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
from lash_store.sqlite.shared import Database, SharedConnection

T = TypeVar("T")


class QuerySet:
    """The named statements of one ``*.sql`` file of this package."""

    __slots__ = ("set_queries", "statements")

    def __init__(self, file_name: str) -> None:
        self.statements = load("lash_store.sqlite", file_name)
        # The queries that take a set of values: SQLite reads it as one JSON array with json_each.
        self.set_queries = frozenset(
            name for name, statements in self.statements.items() if any("json_each" in s for s in statements)
        )

    def bind(self, query: str, params: Params | None) -> Params:
        """A list parameter becomes one JSON array (only where a query reads one); everything else binds as is."""
        if not params:
            return {}
        if query not in self.set_queries:
            return params
        return {key: json.dumps(value) if isinstance(value, list) else value for key, value in params.items()}


SESSION_QUERIES = QuerySet("queries.sql")


class SqliteTx:
    """A transaction on a connection that already holds ``BEGIN`` or ``BEGIN IMMEDIATE``."""

    __slots__ = ("_clock", "_conn", "_queries")

    def __init__(self, conn: sqlite3.Connection, options: StoreOptions, queries: QuerySet = SESSION_QUERIES) -> None:
        self._conn = conn
        self._clock = TransactionClock(options.now_ms)
        self._queries = queries

    def now_ms(self) -> int:
        return self._clock.now_ms()

    def one(self, query: str, params: Params | None = None) -> Row | None:
        row: Row | None = None
        bound = self._queries.bind(query, params)
        for statement in self._queries.statements[query]:
            row = self._conn.execute(statement, bound).fetchone()
        return row

    def all(self, query: str, params: Params | None = None) -> list[Row]:
        return list(self.iter(query, params))

    def iter(self, query: str, params: Params | None = None) -> Iterator[Row]:
        (statement,) = self._queries.statements[query]
        return iter(self._conn.execute(statement, self._queries.bind(query, params)))

    def run(self, query: str, params: Params | None = None) -> int:
        changed = 0
        bound = self._queries.bind(query, params)
        for statement in self._queries.statements[query]:
            changed += self._conn.execute(statement, bound).rowcount
        return changed

    def run_many(self, query: str, rows: Sequence[Params]) -> int:
        if not rows:
            return 0
        (statement,) = self._queries.statements[query]
        return self._conn.executemany(statement, [self._queries.bind(query, row) for row in rows]).rowcount

    def fetch_many(self, reads: Sequence[tuple[str, Params | None]]) -> list[list[Row]]:
        return [self.all(query, params) for query, params in reads]

    def send(self, query: str, params: Params | None = None) -> None:
        self.run(query, params)  # an embedded database has no round trip to save

    def send_many(self, query: str, rows: Sequence[Params]) -> None:
        self.run_many(query, rows)


class SqliteBackend:
    """Transactions of one database file (or a private in-memory database), running one query set."""

    name = "sqlite"

    def __init__(self, connection: Database, queries: QuerySet = SESSION_QUERIES) -> None:
        self.connection = connection
        self._options = connection.options
        self._queries = queries

    @property
    def in_memory(self) -> bool:
        return self.connection.path is None

    def read(self, body: Callable[[SqliteTx], T]) -> T:
        return self.connection.read(lambda conn: body(SqliteTx(conn, self._options, self._queries)))

    def write(self, body: Callable[[SqliteTx], T]) -> T:
        return self.connection.write(lambda conn: body(SqliteTx(conn, self._options, self._queries)))

    def joined(self, other: object) -> Callable[[SqliteTx], SqliteTx] | None:
        """``other``'s queries inside this backend's transactions, when both are on one database file."""
        if not isinstance(other, SqliteBackend):
            return None
        mine, theirs = self.connection.path, other.connection.path
        if mine is None or theirs is None:
            return None
        same_share = isinstance(self.connection, SharedConnection) and self.connection.shares_with(other.connection)
        if not same_share and mine != theirs and mine.resolve() != theirs.resolve():
            return None
        options, queries = other._options, other._queries
        return lambda tx: SqliteTx(tx._conn, options, queries)

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

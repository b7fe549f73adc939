"""The PostgreSQL backend of the services: named queries (``queries.sql``) on pooled connections.

Transactions are explicit on autocommit connections: writes run under READ
COMMITTED and take row locks first (the service's ``lock_*`` queries), reads
run under REPEATABLE READ READ ONLY (one snapshot).  An interrupt or any other
non-database exception in the middle of a transaction closes the connection
instead of returning it to the pool: the server then aborts the transaction
and releases its locks, and no half-read protocol state is ever reused.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import cache
from typing import Any, TypeVar

import psycopg
from psycopg import IsolationLevel, errors, pq
from psycopg_pool import ConnectionPool, PoolTimeout

from lash_store.core.queries import load
from lash_store.errors import BackendError, StoreBusy, StoreClosed
from lash_store.options import StoreOptions
from lash_store.postgres import pool as pools
from lash_store.service.ports import Params, Row

T = TypeVar("T")

# Transient failures that a transaction may simply be retried after (nothing of it was applied).
_RETRYABLE = (errors.SerializationFailure, errors.DeadlockDetected)
_MAX_ATTEMPTS = 5

# The lock_timeout each pooled connection currently has, so it is set only when a store needs another.
_lock_timeouts: weakref.WeakKeyDictionary[psycopg.Connection[Any], int] = weakref.WeakKeyDictionary()


@cache
def queries(schema: str) -> dict[str, tuple[str, ...]]:
    """The named queries with the schema name filled in (``schema`` is a checked identifier)."""
    return {
        name: tuple(s.replace("{schema}", schema) for s in statements)
        for name, statements in load(__package__ or "lash_store.postgres").items()
    }


def translate(exc: psycopg.Error) -> BackendError:
    """Map a driver error to the store's typed errors (the original stays chained)."""
    if isinstance(exc, (errors.LockNotAvailable, errors.QueryCanceled)):
        return StoreBusy(f"database is busy: a lock was not granted within the busy timeout ({exc})")
    return BackendError(" ".join(str(exc).split()) or type(exc).__name__)


class PostgresTx:
    """A transaction on one pooled connection; every query gets the store's partition as ``sid``."""

    __slots__ = ("_conn", "_now", "_options", "_queries", "_sid")

    def __init__(self, conn: psycopg.Connection[Any], sid: str, schema: str, options: StoreOptions) -> None:
        self._conn = conn
        self._sid = sid
        self._queries = queries(schema)
        self._options = options
        self._now: int | None = None

    def _params(self, params: Params | None) -> Mapping[str, Any]:
        merged = dict(params) if params else {}
        merged["sid"] = self._sid
        return merged

    def _execute(self, statement: str, params: Params | None) -> psycopg.Cursor[Any]:
        return self._conn.execute(statement, self._params(params))

    def now_ms(self) -> int:
        """The injected test clock when there is one, else the database clock (one reading per transaction)."""
        if self._now is None:
            if self._options.clock is not None:
                self._now = self._options.now_ms()
            else:
                row = self.one("now")
                assert row is not None
                self._now = int(row[0])
        return self._now

    def one(self, query: str, params: Params | None = None) -> Row | None:
        row: Row | None = None
        for statement in self._queries[query]:
            row = self._execute(statement, params).fetchone()
        return row

    def all(self, query: str, params: Params | None = None) -> list[Row]:
        return list(self.iter(query, params))

    def iter(self, query: str, params: Params | None = None) -> Iterator[Row]:
        (statement,) = self._queries[query]
        return iter(self._execute(statement, params).fetchall())

    def run(self, query: str, params: Params | None = None) -> int:
        changed = 0
        for statement in self._queries[query]:
            changed += max(self._execute(statement, params).rowcount, 0)
        return changed

    def run_many(self, query: str, rows: Sequence[Params]) -> int:
        if not rows:
            return 0
        (statement,) = self._queries[query]
        with self._conn.cursor() as cursor:
            cursor.executemany(statement, [self._params(row) for row in rows])
            return max(cursor.rowcount, 0)


class PostgresBackend:
    """Transactions of one session partition, on a shared pool (by DSN) or a caller's pool."""

    def __init__(self, target: str | ConnectionPool, sid: str, schema: str, options: StoreOptions) -> None:
        self._dsn = target if isinstance(target, str) else None
        self._given_pool = None if isinstance(target, str) else target
        self._generation = pools.generation()
        self.sid = sid
        self.schema = schema
        self._options = options
        self._closed = False

    @property
    def in_memory(self) -> bool:
        return False

    def pool(self) -> ConnectionPool:
        if self._closed:
            raise StoreClosed()
        if self._dsn is not None:
            return pools.shared_pool(self._dsn)  # re-resolved: a forked child gets its own pool
        assert self._given_pool is not None
        if self._generation != pools.generation():
            raise BackendError("a connection pool passed to the store cannot be used after fork(); pass the DSN")
        return self._given_pool

    def read(self, body: Callable[[PostgresTx], T]) -> T:
        return self._run(body, write=False)

    def write(self, body: Callable[[PostgresTx], T]) -> T:
        return self._run(body, write=True)

    def _run(self, body: Callable[[PostgresTx], T], *, write: bool) -> T:
        pool = self.pool()
        for attempt in range(_MAX_ATTEMPTS):
            try:
                conn = pool.getconn(timeout=max(self._options.busy_timeout_ms / 1000, 0.001))
            except PoolTimeout as exc:
                raise StoreBusy(f"no database connection became free within the busy timeout ({exc})") from exc
            except psycopg.Error as exc:
                raise translate(exc) from exc
            try:
                return self._attempt(conn, body, write=write)
            except _Retry as retry:
                if attempt == _MAX_ATTEMPTS - 1:
                    raise translate(retry.cause) from retry.cause
                if not isinstance(retry.cause, _RETRYABLE):
                    # The connection was dead before the transaction began (the server restarted, or the
                    # link dropped): its idle siblings in the pool most likely are too, and handing them out
                    # one per attempt would use up the attempts on corpses.  Test them now; the pool replaces
                    # the dead ones, so the next attempt gets a live connection once the server answers.
                    pool.check()
            finally:
                pool.putconn(conn)
        raise AssertionError("unreachable")

    def _attempt(self, conn: psycopg.Connection[Any], body: Callable[[PostgresTx], T], *, write: bool) -> T:
        reusable = False
        started = False
        try:
            conn.isolation_level = IsolationLevel.READ_COMMITTED if write else IsolationLevel.REPEATABLE_READ
            conn.read_only = not write
            self._set_lock_timeout(conn)
            with conn.transaction():
                started = True
                result = body(PostgresTx(conn, self.sid, self.schema, self._options))
            reusable = True
            return result
        except psycopg.Error as exc:
            reusable = not conn.broken and conn.info.transaction_status == pq.TransactionStatus.IDLE
            if isinstance(exc, _RETRYABLE) or (isinstance(exc, psycopg.OperationalError) and not started):
                raise _Retry(exc) from exc  # nothing of it was applied (a dead pooled connection fails at BEGIN)
            raise translate(exc) from exc
        except Exception:
            reusable = not conn.broken and conn.info.transaction_status == pq.TransactionStatus.IDLE
            raise
        finally:
            if not reusable:
                conn.close()  # the server aborts whatever was open and releases its locks

    def _set_lock_timeout(self, conn: psycopg.Connection[Any]) -> None:
        wanted = self._options.busy_timeout_ms
        if _lock_timeouts.get(conn) != wanted:
            conn.execute(f"SET lock_timeout = {int(wanted)}")
            _lock_timeouts[conn] = wanted

    def describe(self) -> dict[str, Any]:
        def body(tx: PostgresTx) -> dict[str, Any]:
            server = tx.one("server_version")
            version = tx.one("schema_version")
            return {
                "backend": "postgres",
                "server_version": None if server is None else server[0],
                "schema": {"name": self.schema, "version": None if version is None else version[0]},
                "session_partition": self.sid,
            }

        return self.read(body)

    def integrity_checks(self) -> list[dict[str, Any]]:
        def body(tx: PostgresTx) -> list[dict[str, Any]]:
            problems = [] if tx.one("session_exists") is not None else [f"session row {self.sid!r} is missing"]
            return [
                {
                    "name": "postgres partition",
                    "ok": not problems,
                    "detail": f"schema {self.schema}",
                    "problems": problems,
                }
            ]

        return self.read(body)

    def compact(self) -> dict[str, Any]:
        return {"compacted": False, "reason": "PostgreSQL's autovacuum gives space back; run VACUUM FULL yourself"}

    def close(self) -> None:
        self._closed = True

    @property
    def closed(self) -> bool:
        return self._closed


class _Retry(Exception):
    def __init__(self, cause: psycopg.Error) -> None:
        super().__init__(str(cause))
        self.cause = cause

"""The PostgreSQL backend of the services: named queries (``queries.sql``) on pooled connections.

Transactions are explicit on autocommit connections: writes run under READ
COMMITTED and take row locks first (the service's ``lock_*`` queries), reads
run under REPEATABLE READ READ ONLY (one snapshot).  An interrupt in the middle
of a transaction closes the connection instead of returning it to the pool: the
server then aborts the transaction and releases its locks, and no half-read
protocol state is ever reused.

Every transaction runs in libpq pipeline mode, so that a commit costs a few
round trips instead of one per statement: ``BEGIN`` goes out with the first
query, and ``COMMIT`` with the last statements.  What the service *sends*
(``Tx.send``: the lock queries and the plain writes of a commit, whose results
it does not need) is queued without waiting; the next query whose rows are
read carries it to the server, in order, and an error it raised surfaces there
or at ``COMMIT`` -- inside the same transaction, which then commits nothing.
Every ``run`` and read is waited for, so the rows and row counts the service
reads are exactly those of one-statement-at-a-time execution.  The database
clock is read (with a deferred query) right after the transaction's latest
lock statement, which is where the service reads it.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import cache
from typing import Any, TypeVar

import psycopg
from psycopg import errors, pq
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

# The lock queries (every query named ``lock_*``): the service reads the clock after them, so its reading is
# queued right behind each.
_LOCK_PREFIX = "lock_"

# Queries never run as prepared statements.  PostgreSQL gives a prepared statement a generic plan after five
# executions and keeps it; made while a table was small and not yet analyzed, that plan can use the wrong
# index for these lookups by primary key and filter every row of the session or queue.  It did for
# ``nodes_state``: it read all of a session's nodes through (session_id, seq), so commit latency grew with
# the session until autovacuum's ANALYZE invalidated the plan.  The per-batch queue lookups have the same
# shape (their generic plans use the FIFO index and filter the batch id).  Planned with their actual values
# every time, they use the primary key.
_UNPREPARED = frozenset(
    {
        "nodes_state",
        "mark_claimed",
        "delete_claimed_batch",
        "extend_claim",
        "batch_by_id",
        "free_batch",
        "delete_batch",
        "release_batch",
        "dead_letter_by_id",
        "requeue_dead_letter",
        "drop_dead_letter",
    }
)

_BEGIN_WRITE = b"BEGIN ISOLATION LEVEL READ COMMITTED, READ WRITE"
_BEGIN_READ = b"BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY"

# The lock_timeout each pooled connection currently has, so it is set only when a store needs another.
_lock_timeouts: weakref.WeakKeyDictionary[psycopg.Connection[Any], int] = weakref.WeakKeyDictionary()


@cache
def queries(schema: str, file_name: str = "queries.sql") -> dict[str, tuple[str, ...]]:
    """The named queries of ``file_name`` with the schema name filled in (``schema`` is a checked identifier)."""
    return {
        name: tuple(s.replace("{schema}", schema) for s in statements)
        for name, statements in load(__package__ or "lash_store.postgres", file_name).items()
    }


def translate(exc: psycopg.Error) -> BackendError:
    """Map a driver error to the store's typed errors (the original stays chained)."""
    if isinstance(exc, (errors.LockNotAvailable, errors.QueryCanceled)):
        return StoreBusy(f"database is busy: a lock was not granted within the busy timeout ({exc})")
    return BackendError(" ".join(str(exc).split()) or type(exc).__name__)


class PostgresTx:
    """A transaction on one pooled connection in pipeline mode.

    A session store's queries get its partition as the ``sid`` parameter; a
    deployment-wide component (the process registry) has no partition (``sid`` is ``None``).
    """

    __slots__ = (
        "_clock",
        "_conn",
        "_db_now",
        "_now",
        "_options",
        "_pipeline",
        "_queries",
        "_root",
        "_sid",
        "_unprepared",
        "waited",
    )

    def __init__(
        self,
        conn: psycopg.Connection[Any],
        pipeline: psycopg.Pipeline,
        sid: str | None,
        statements: dict[str, tuple[str, ...]],
        options: StoreOptions,
        unprepared: frozenset[str] = _UNPREPARED,
        root: PostgresTx | None = None,
    ) -> None:
        self._conn = conn
        self._pipeline = pipeline
        self._sid = sid
        self._queries = statements
        self._unprepared = unprepared
        self._options = options
        self._now: int | None = None
        # The database clock is read once per database transaction: a transaction joined to another
        # (``PostgresBackend.joined``: another component's queries in the same transaction) uses its ``root``'s
        # reading and queued reading, as a second lock of one component's transaction does.
        self._root = self if root is None else root
        self._db_now: int | None = None
        self._clock: psycopg.Cursor[Any] | None = None
        #: Whether the server has answered anything of this transaction yet (see ``PostgresBackend._attempt``).
        self.waited = False

    def _answered(self) -> None:
        self.waited = True
        self._root.waited = True

    def _params(self, params: Params | None) -> Mapping[str, Any]:
        if self._sid is None:
            return params or {}
        merged = dict(params) if params else {}
        merged["sid"] = self._sid
        return merged

    def _execute(self, statement: str, params: Params | None, query: str = "") -> psycopg.Cursor[Any]:
        prepare = False if query in self._unprepared else None  # None: psycopg's default (prepared after 5 runs)
        return self._conn.execute(statement, self._params(params), prepare=prepare)

    def _sync(self) -> None:
        """Send everything queued and wait for every result (row counts are known after this)."""
        self._pipeline.sync()
        self._answered()

    def now_ms(self) -> int:
        """The injected test clock when there is one, else the database clock (one reading per transaction)."""
        if self._now is None:
            self._now = self._options.now_ms() if self._options.clock is not None else self._database_now()
        return self._now

    def _database_now(self) -> int:
        root = self._root
        if root._db_now is None:
            cursor = root._clock if root._clock is not None else root._queue_clock()
            row = cursor.fetchone()
            self._answered()
            assert row is not None
            root._db_now = int(row[0])
        return root._db_now

    def _queue_clock(self) -> psycopg.Cursor[Any]:
        (statement,) = self._queries["now"]
        self._clock = self._execute(statement, None)
        return self._clock

    def one(self, query: str, params: Params | None = None) -> Row | None:
        row: Row | None = None
        for statement in self._queries[query]:
            row = self._execute(statement, params, query).fetchone()
            self._answered()
        return row

    def all(self, query: str, params: Params | None = None) -> list[Row]:
        return list(self.iter(query, params))

    def iter(self, query: str, params: Params | None = None) -> Iterator[Row]:
        (statement,) = self._queries[query]
        rows = self._execute(statement, params, query).fetchall()
        self._answered()
        return iter(rows)

    def run(self, query: str, params: Params | None = None) -> int:
        cursors = self._queue(query, params)
        self._sync()
        return sum(max(cursor.rowcount, 0) for cursor in cursors)

    def run_many(self, query: str, rows: Sequence[Params]) -> int:
        if not rows:
            return 0
        cursors = self._queue_many(query, rows)
        self._sync()
        return sum(max(cursor.rowcount, 0) for cursor in cursors)

    def fetch_many(self, reads: Sequence[tuple[str, Params | None]]) -> list[list[Row]]:
        cursors = [self._queue(query, params) for query, params in reads]
        self._sync()  # one round trip for all of them
        return [cursor_list[-1].fetchall() for cursor_list in cursors]

    def send(self, query: str, params: Params | None = None) -> None:
        self._queue(query, params)
        if query.startswith(_LOCK_PREFIX) and self._options.clock is None and self._root._db_now is None:
            # The service reads the clock after its locks: queue the reading behind this lock now,
            # so that it costs no round trip of its own (a later lock queues a newer reading).
            self._root._queue_clock()

    def send_many(self, query: str, rows: Sequence[Params]) -> None:
        if rows:
            self._queue_many(query, rows)

    def _queue(self, query: str, params: Params | None) -> list[psycopg.Cursor[Any]]:
        return [self._execute(statement, params, query) for statement in self._queries[query]]

    def _queue_many(self, query: str, rows: Sequence[Params]) -> list[psycopg.Cursor[Any]]:
        (statement,) = self._queries[query]
        if query in self._unprepared:
            # executemany always prepares: one unprepared execute per row instead, pipelined all the same.
            return [self._execute(statement, row, query) for row in rows]
        # Not closed here: a queued batch's results arrive later, and psycopg hands them to this cursor.
        cursor = self._conn.cursor()
        cursor.executemany(statement, [self._params(row) for row in rows])
        return [cursor]


class PostgresBackend:
    """Transactions of one session partition (or, with ``sid=None``, of deployment-wide tables), on a shared
    pool (by DSN) or a caller's pool, running the named queries of ``query_file``."""

    name = "postgres"

    def __init__(
        self,
        target: str | ConnectionPool,
        sid: str | None,
        schema: str,
        options: StoreOptions,
        *,
        query_file: str = "queries.sql",
        unprepared: frozenset[str] = _UNPREPARED,
    ) -> None:
        self._dsn = target if isinstance(target, str) else None
        self._given_pool = None if isinstance(target, str) else target
        self._generation = pools.generation()
        self.sid = sid
        self.schema = schema
        self._options = options
        self._statements = queries(schema, query_file)
        self._unprepared = unprepared
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

    def joined(self, other: object) -> Callable[[PostgresTx], PostgresTx] | None:
        """``other``'s queries inside this backend's transactions, when both use one database and schema."""
        if not isinstance(other, PostgresBackend) or other.schema != self.schema:
            return None
        if self._dsn is not None:
            if other._dsn != self._dsn:
                return None
        elif other._given_pool is not self._given_pool:
            return None
        sid, statements, options, unprepared = other.sid, other._statements, other._options, other._unprepared
        return lambda tx: PostgresTx(tx._conn, tx._pipeline, sid, statements, options, unprepared, tx._root)

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
        tx: PostgresTx | None = None
        committing = False
        try:
            self._set_lock_timeout(conn)
            with conn.pipeline() as pipeline:
                conn.execute(_BEGIN_WRITE if write else _BEGIN_READ, prepare=False)
                tx = PostgresTx(conn, pipeline, self.sid, self._statements, self._options, self._unprepared)
                result = body(tx)
                committing = True
                conn.execute(b"COMMIT", prepare=False)
            # Leaving the pipeline waited for every result: COMMIT succeeded.
            reusable = True
            return result
        except psycopg.Error as exc:
            reusable = self._rollback(conn)
            answered = tx is not None and tx.waited
            if isinstance(exc, _RETRYABLE) or (
                isinstance(exc, psycopg.OperationalError) and not answered and not committing
            ):
                # Nothing of it was applied: a serialization failure or deadlock rolled it back, and a dead
                # pooled connection fails before the server answered anything.  Once COMMIT was sent, a lost
                # connection leaves the outcome unknown: that is never retried.
                raise _Retry(exc) from exc
            raise translate(exc) from exc
        except Exception:
            reusable = self._rollback(conn)
            raise
        finally:
            if not reusable:
                conn.close()  # the server aborts whatever was open and releases its locks

    @staticmethod
    def _rollback(conn: psycopg.Connection[Any]) -> bool:
        """End a failed transaction; whether the connection is clean again (else it is closed by the caller)."""
        if conn.broken:
            return False
        try:
            if conn.info.transaction_status != pq.TransactionStatus.IDLE:
                conn.execute(b"ROLLBACK", prepare=False)
        except psycopg.Error:
            return False
        return conn.info.transaction_status == pq.TransactionStatus.IDLE

    def _set_lock_timeout(self, conn: psycopg.Connection[Any]) -> None:
        # busy_timeout_ms = 0 means "do not wait" (as in SQLite), but PostgreSQL reads lock_timeout = 0 as
        # "wait forever": the shortest wait it has, 1 ms, is the closest honest translation.
        wanted = max(int(self._options.busy_timeout_ms), 1)
        if _lock_timeouts.get(conn) != wanted:
            conn.execute(f"SET lock_timeout = {wanted}")
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

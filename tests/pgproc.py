"""Helpers for PostgreSQL tests that race real processes: start them, collect their reports, read raw rows.

Workers are module-level functions (``spawn`` children import them by name).
Each opens its *own* store from the DSN string it is given - a pool never
crosses a process boundary - and reports exactly one tuple through the
result queue: ``("ok", ...)`` or ``("error", type, traceback)``; workers never
raise, so a failure shows up as a readable report rather than as a bare exit code.
"""

from __future__ import annotations

import multiprocessing
import time
import traceback
from collections.abc import Callable, Sequence
from multiprocessing.context import BaseContext, ForkContext, SpawnContext
from queue import Empty
from typing import Any

import psycopg
import pytest

__all__ = ["FORK", "SPAWN", "db_now_ms", "failure", "raw_all", "raw_one", "run_processes"]

#: A fresh interpreter per child: nothing of the parent (pools, threads, caches) reaches the worker.
SPAWN: SpawnContext = multiprocessing.get_context("spawn")
#: A copy of the test process, ~100x cheaper to start than a spawned one (which re-imports psycopg and
#: the package, ~0.5 s of CPU each): used where many workers start at once.  A forked child never uses
#: its parent's pools - the package's at-fork hook empties the pool registry - so it opens its own.
FORK: ForkContext = multiprocessing.get_context("fork")


def failure(exc: BaseException) -> tuple[str, str, str]:
    """The report of a worker that failed: its exception type and full traceback."""
    return ("error", type(exc).__name__, "".join(traceback.format_exception(exc)))


def run_processes(
    jobs: Sequence[tuple[Callable[..., None], tuple[Any, ...]]], timeout_s: float, ctx: BaseContext = SPAWN
) -> list[Any]:
    """Start one process per ``(target, args)`` (``ctx``); each is called as ``target(queue, *args)``.

    Returns the reports in arrival order.  Fails the test as soon as every
    child has exited without reporting, when ``timeout_s`` passes, when a child
    exits non-zero, or when any report is an error.  Children still running at
    the end are killed, so nothing outlives the test.
    """
    queue = ctx.Queue()
    processes = [ctx.Process(target=target, args=(queue, *args), daemon=True) for target, args in jobs]
    for process in processes:
        process.start()
    results: list[Any] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(results) < len(processes):
            try:
                results.append(queue.get(timeout=0.2))
            except Empty:
                if all(not p.is_alive() for p in processes) and queue.empty():
                    pytest.fail(f"children exited ({[p.exitcode for p in processes]}) after reporting {results!r}")
                if time.monotonic() > deadline:
                    pytest.fail(f"children did not report within {timeout_s:.0f} s: {results!r}")
    finally:
        for process in processes:
            process.join(timeout=max(1.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join(timeout=10)
    errors = [r for r in results if r[0] == "error"]
    assert not errors, "\n\n".join(str(e[2]) for e in errors)
    assert [p.exitcode for p in processes] == [0] * len(processes)
    return results


def raw_one(dsn: str, sql: str, *params: object) -> tuple[Any, ...]:
    """One row from a fresh autocommit connection (never the store's pool): what the database really holds."""
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        row = conn.execute(sql, params).fetchone()  # type: ignore[arg-type]
    assert row is not None, sql
    return tuple(row)


def raw_all(dsn: str, sql: str, *params: object) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        return [tuple(row) for row in conn.execute(sql, params).fetchall()]  # type: ignore[arg-type]


def db_now_ms(conn: psycopg.Connection[Any]) -> int:
    """The database clock in epoch ms, computed exactly as the store computes its lease instants."""
    row = conn.execute("SELECT floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint").fetchone()
    assert row is not None
    return int(row[0])

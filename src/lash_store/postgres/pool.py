"""Connection pools: one shared pool per process and DSN, so thousands of stores use a bounded few connections.

Pools are created on first use.  A forked child must never touch its parent's
connections (they are the parent's sockets, and the pool's worker threads do
not exist in the child), so the child starts with an empty registry and stores
re-resolve their pool by DSN; the parent's pools are parked, never closed, by
the child.
"""

from __future__ import annotations

import os
import threading

from psycopg_pool import ConnectionPool

from lash_store.core.validate import check_text
from lash_store.errors import InvalidInput

#: Connections per shared pool (``LASH_PG_POOL_SIZE`` overrides it).
DEFAULT_POOL_SIZE = 10

_pools: dict[str, ConnectionPool] = {}
_lock = threading.Lock()
_generation = 0
_ABANDONED_AFTER_FORK: list[ConnectionPool] = []


def _after_fork_in_child() -> None:
    global _lock, _generation
    _ABANDONED_AFTER_FORK.extend(_pools.values())
    _pools.clear()
    _lock = threading.Lock()
    _generation += 1


os.register_at_fork(after_in_child=_after_fork_in_child)


def generation() -> int:
    """Bumped in every forked child: a store compares it to know its pool is its parent's."""
    return _generation


def check_dsn(dsn: object) -> str:
    text = check_text("dsn", dsn)
    if not text.strip():
        raise InvalidInput("dsn", "must not be empty")
    if "\x00" in text:
        raise InvalidInput("dsn", "must not contain NUL characters")
    return text


def shared_pool(dsn: str) -> ConnectionPool:
    """The process's pool for ``dsn`` (autocommit connections: every transaction is explicit)."""
    pool = _pools.get(dsn)
    if pool is not None:
        return pool
    with _lock:
        pool = _pools.get(dsn)
        if pool is None:
            size = int(os.environ.get("LASH_PG_POOL_SIZE", DEFAULT_POOL_SIZE))
            pool = ConnectionPool(
                dsn,
                min_size=1,
                max_size=max(1, size),
                kwargs={"autocommit": True},
                name="lash-store",
                open=True,
            )
            _pools[dsn] = pool
        return pool


def close_shared_pools() -> None:
    """Close every shared pool of this process (tests, and programs that want a clean exit)."""
    with _lock:
        pools = list(_pools.values())
        _pools.clear()
    for pool in pools:
        pool.close()

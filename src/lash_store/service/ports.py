"""The ports a backend implements for the services.

A backend runs a callable inside a transaction and hands it a :class:`Tx`,
through which the service executes *named* queries.  Every query name has one
statement list per backend (``queries.sql``; the in-memory reference
implements the same names in Python).  Parameters are passed by name; a list
parameter is bound the way the backend binds a set of values (SQLite: one
JSON array for ``json_each``; PostgreSQL: an array for ``= ANY``).  Rows are
plain tuples with the columns the query's comment lists, identical on every
backend.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol, TypeVar

T = TypeVar("T")

Row = tuple[Any, ...]
Params = Mapping[str, Any]


class Tx(Protocol):
    """One open transaction of a backend."""

    def now_ms(self) -> int:
        """The current instant, read inside the transaction (after its locks are held)."""
        ...

    def one(self, query: str, params: Params | None = None) -> Row | None:
        """The first row of a query, or ``None``."""
        ...

    def all(self, query: str, params: Params | None = None) -> list[Row]:
        """Every row of a query."""
        ...

    def iter(self, query: str, params: Params | None = None) -> Iterator[Row]:
        """Rows of a query, fetched lazily (the caller may stop early)."""
        ...

    def run(self, query: str, params: Params | None = None) -> int:
        """Execute a statement; returns how many rows it changed."""
        ...

    def run_many(self, query: str, rows: Sequence[Params]) -> int:
        """Execute a statement once per parameter set; returns the total rows changed."""
        ...

    def fetch_many(self, reads: Sequence[tuple[str, Params | None]]) -> list[list[Row]]:
        """The rows of several queries, run in order; a backend may send them all before it waits.

        A write path reads everything its checks need in one call after it has
        taken its locks, so that a networked backend pays one round trip for it.
        """
        ...

    def send(self, query: str, params: Params | None = None) -> None:
        """Execute a statement whose result is not needed (a lock, a plain write).

        A backend may send it without waiting for it (PostgreSQL pipelines it);
        an error it raises then surfaces at a later call of the same
        transaction, which rolls back as a whole either way.
        """
        ...

    def send_many(self, query: str, rows: Sequence[Params]) -> None:
        """:meth:`send` once per parameter set."""
        ...


class Backend(Protocol):
    """Transactions over one store's data (one session file, one PostgreSQL partition, or memory)."""

    @property
    def name(self) -> str:
        """A short name of the kind of backend ("sqlite", "postgres", "reference"), for telemetry."""
        ...

    @property
    def in_memory(self) -> bool:
        """``True`` when the data lives only in this process (durability tier INLINE)."""
        ...

    def read(self, body: Callable[[Tx], T]) -> T:
        """Run ``body`` in a read-only transaction: every query in it sees one snapshot."""
        ...

    def write(self, body: Callable[[Tx], T]) -> T:
        """Run ``body`` in a write transaction: committed if it returns, rolled back if it raises.

        The transaction serialises with every other writer of the same data
        (SQLite ``BEGIN IMMEDIATE``; PostgreSQL takes row locks through the
        ``lock_*`` queries the service runs first).
        """
        ...

    def describe(self) -> dict[str, Any]:
        """What the backend is and holds (file, server, schema), for people and tools."""
        ...

    def integrity_checks(self) -> list[dict[str, Any]]:
        """The checks only this backend can make, already run (see ``diagnostics.run_checks``)."""
        ...

    def compact(self) -> dict[str, Any]:
        """Give space back after deletions, where the backend can (SQLite ``VACUUM``)."""
        ...

    def close(self) -> None: ...

    @property
    def closed(self) -> bool: ...


def joined(backend: object, other: object) -> Callable[[Tx], Tx] | None:
    """How a transaction of ``backend`` runs ``other``'s named queries, when both are on one database.

    A backend that can share its transactions has a ``joined(other)`` method returning a function from
    one of its transactions to a transaction on the same connection with ``other``'s queries, or ``None``
    when ``other`` is on another database (another file, server or schema).  Everything else: ``None``.
    """
    method = getattr(backend, "joined", None)
    if method is None:
        return None
    found: Callable[[Tx], Tx] | None = method(other)
    return found

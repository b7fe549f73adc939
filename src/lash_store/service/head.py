"""Reading the head row inside a transaction, type-checked."""

from __future__ import annotations

from lash_store.core.head import HeadRow
from lash_store.errors import CorruptData, StoreError, StoreNotFound
from lash_store.service.ports import Row, Tx


def read_head(tx: Tx) -> HeadRow:
    """The head row, type-checked: anything else is :class:`CorruptData`."""
    row = tx.one("read_head")
    if row is None:
        raise missing_head(tx)
    return head_from_row(row)


def missing_head(tx: Tx) -> StoreError:
    """Why the head row is missing: the session was deleted (its store lives on as a stale handle), or damage.

    Where a session is rows in a shared database its head row is its existence;
    where it is a file the row is always there, and a missing one is damage.
    """
    if tx.one("session_exists") is None:
        return StoreNotFound("this store's session", "it was deleted")
    return CorruptData("session head", "the head row is missing")


def head_from_row(row: Row | None) -> HeadRow:
    """A ``read_head`` row, type-checked."""
    if row is None:
        raise CorruptData("session head", "the head row is missing")
    session_id, revision, checkpoint_ref, leaf, body, ledger, nodes, users = row
    if session_id is None and revision == 0:
        body = None  # unbound: whatever else the row holds is not a head
    elif not (
        type(session_id) is str
        and type(revision) is int
        and type(body) is bytes
        and (checkpoint_ref is None or type(checkpoint_ref) is str)
        and (leaf is None or type(leaf) is str)
    ):
        raise CorruptData("session head", "stored row has the wrong column types")
    if type(nodes) is not int or type(users) is not int:
        raise CorruptData("session head", "stored graph counters are not integers")
    if ledger is not None and type(ledger) is not bytes:
        raise CorruptData("usage ledger", "stored ledger is not a blob")
    return HeadRow(session_id, revision, checkpoint_ref, leaf, body, ledger, nodes, users)

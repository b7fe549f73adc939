"""The usage ledger: one running total per ``(source, model)``, in order of first appearance."""

from __future__ import annotations

from collections.abc import Iterable

from lash_store.core import codec
from lash_store.errors import InvalidInput
from lash_store.model import TokenLedgerEntry, TokenUsage

Totals = dict[tuple[str, str], TokenUsage]

_COUNTERS = ("input_tokens", "output_tokens", "cached_input_tokens", "reasoning_tokens")
_MIN_I64, _MAX_I64 = -(2**63), 2**63 - 1


def add_usage(totals: Totals, entries: Iterable[TokenLedgerEntry]) -> None:
    """Add ``entries`` to ``totals`` in place.

    A total that would leave the signed 64-bit range (what SQL backends can
    store as an integer) is refused, so whatever is accepted reads back.
    """
    for entry in entries:
        key = (entry.source, entry.model)
        previous = totals.get(key)
        total = entry.usage if previous is None else previous + entry.usage
        for counter in _COUNTERS:
            if not _MIN_I64 <= getattr(total, counter) <= _MAX_I64:
                raise InvalidInput(
                    "commit.usage_deltas",
                    f"the {counter} total of {entry.source!r}/{entry.model!r} would leave the signed 64-bit range",
                )
        totals[key] = total


def ledger(totals: Totals) -> list[TokenLedgerEntry]:
    """The totals as ledger entries, in order of first appearance."""
    return [TokenLedgerEntry(source=source, model=model, usage=usage) for (source, model), usage in totals.items()]


def encode_totals(totals: Totals) -> bytes:
    return codec.encode("usage ledger", ledger(totals))


def decode_totals(stored: bytes | None) -> Totals:
    """Totals from their stored form (``None``: nothing recorded yet); damage raises ``CorruptData``."""
    if stored is None:
        return {}
    entries = codec.decode("usage ledger", stored, list[TokenLedgerEntry])
    return {(entry.source, entry.model): entry.usage for entry in entries}

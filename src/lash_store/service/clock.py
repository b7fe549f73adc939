"""The clock a transaction reads: once, so that every instant one transaction stamps is the same instant."""

from __future__ import annotations

from collections.abc import Callable


class TransactionClock:
    """Reads ``source`` on first use (after the transaction's locks are held) and keeps that reading."""

    __slots__ = ("_now", "_source")

    def __init__(self, source: Callable[[], int]) -> None:
        self._source = source
        self._now: int | None = None

    def now_ms(self) -> int:
        if self._now is None:
            self._now = self._source()
        return self._now

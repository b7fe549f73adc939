"""Blocking waits (``wait_event_after``, ``await_process``), synchronous and asyncio, over :mod:`.signals`.

A wait reads (one read transaction) and, when the answer is not there yet,
parks until a notice arrives or a backstop interval passes, then decides from
the notices whether it has its answer, must read again, or keeps waiting.  A
notice for the waited process that carries the events right after the last
sequence the wait read is the answer's source itself: no read.  Any other
change of that process (a gap, a notice without events, an unknown process)
means read again.  The timeout is checked at every step and raises
:class:`WaitTimeout`; cancelling (``KeyboardInterrupt``, task cancellation)
leaves nothing behind.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from lash_store.errors import WaitTimeout
from lash_store.processes import ProcessEvent
from lash_store.service.registry.signals import Notice, Signals

T = TypeVar("T")

#: The first backstop re-read comes after this long, then the interval doubles up to :data:`MAX_BACKSTOP_S`.
FIRST_BACKSTOP_S = 0.1
MAX_BACKSTOP_S = 1.0
#: The longest a waiter parks, or a sleep effect or heartbeat sleeps, in one go: the platform's lock and sleep
#: timeouts cannot represent a deadline 2**63-1 ms away (OverflowError); ending early only reads or sleeps again.
MAX_PARK_S = 3600.0

Checked = tuple[T | None, int]
"""What a wait's read returns: the answer (or ``None``) and the process's last sequence at that snapshot."""


class Wait(Generic[T]):
    """The decisions of one wait, shared by the synchronous and the asyncio loops."""

    def __init__(
        self,
        signals: Signals,
        process_id: str,
        what: str,
        timeout_ms: int | None,
        match: Callable[[ProcessEvent], T | None],
    ) -> None:
        self.signals = signals
        self.process_id = process_id
        self.what = what
        self.timeout_ms = timeout_ms
        self.deadline = None if timeout_ms is None else time.monotonic() + timeout_ms / 1000
        self.match = match
        self.last_sequence = 0
        self.backstop = FIRST_BACKSTOP_S
        self.cursor = 0

    def begin(self) -> None:
        """Take the cursor before a read: anything committed after the read's snapshot is noticed."""
        self.cursor = self.signals.cursor()

    def read(self, checked: Checked[T]) -> T | None:
        found, self.last_sequence = checked
        return found

    def next_slice(self) -> float | None:
        """How long to park now (``None``: until a notice); :class:`WaitTimeout` once the deadline has passed.

        Without a change feed every writer is in this process and publishes its
        notices, so there is nothing to poll for: the wait parks until a notice.
        """
        backstop = self.backstop if self.signals.has_feed else None
        if self.deadline is None:
            return backstop
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise WaitTimeout(self.process_id, self.what, self.timeout_ms or 0)
        # A park is at most MAX_PARK_S even for a deadline 2**63-1 ms away: the platform's lock timeouts cannot
        # represent that (OverflowError), and a park that ends early only reads again.
        return min(remaining, MAX_PARK_S) if backstop is None else min(remaining, backstop)

    def absorb(self) -> tuple[T | None, bool]:
        """After parking: ``(answer, False)``, ``(None, True)`` to read again, or ``(None, False)`` to park again."""
        notices = self.signals.since(self.cursor)
        if not notices:  # a backstop interval passed (or history was lost): read again
            self.backstop = min(self.backstop * 2, MAX_BACKSTOP_S)
            return None, True
        self.cursor = notices[-1].serial
        for notice in notices:
            found, reread = self._notice(notice)
            if found is not None or reread:
                return found, reread
        return None, False

    def _notice(self, notice: Notice) -> tuple[T | None, bool]:
        if notice.process_id is not None and notice.process_id != self.process_id:
            return None, False
        if not notice.events or notice.events[0].sequence != self.last_sequence + 1:
            return None, True  # another writer's change, or a gap: only a read can tell
        for event in notice.events:
            found = self.match(event)
            if found is not None:
                return found, False
        self.last_sequence = notice.events[-1].sequence
        return None, False


def wait_sync(wait: Wait[T], read: Callable[[], Checked[T]]) -> T:
    """Run ``wait`` in this thread; ``read`` runs one read transaction."""
    with wait.signals.waiting():
        wait.signals.prepare()
        while True:
            wait.begin()
            found = wait.read(read())
            while found is None:
                wait.signals.wait(wait.cursor, wait.next_slice())
                found, reread = wait.absorb()
                if reread:
                    break
            if found is not None:
                return found


async def wait_async(
    wait: Wait[T], read: Callable[[], Awaitable[Checked[T]]], prepare: Callable[[], Awaitable[None]]
) -> T:
    """Run ``wait`` on the event loop; ``read`` awaits one read transaction run off the loop.

    ``prepare`` runs :meth:`Signals.prepare` off the loop (starting a change
    feed may connect to a server).
    """
    with wait.signals.waiting():
        await prepare()
        while True:
            wait.begin()
            found = wait.read(await read())
            while found is None:
                await wait.signals.wait_async(wait.cursor, wait.next_slice())
                found, reread = wait.absorb()
                if reread:
                    break
            if found is not None:
                return found

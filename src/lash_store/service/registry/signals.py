"""Wake-ups for the registry's blocking waits: local notices after each commit, and a backend's change feed.

Every registry handle on the same data in one process (the same deployment
file, the same PostgreSQL schema, the same in-memory registry) shares one
:class:`Signals`.  After a write commits, the service *publishes* a notice
naming the process and carrying the events it appended, so a waiter in this
process usually gets its answer from the notice itself, without reading the
database again (in asyncio: within one loop iteration of the append).  Other
processes' writes arrive through the backend's :class:`ChangeFeed` (SQLite:
a thread watching ``PRAGMA data_version``; PostgreSQL: ``LISTEN``), as notices
without events: the waiter then reads again.  A waiter also re-reads after a
backstop interval, so a feed that fails costs latency, never a lost wake-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import contextmanager
from typing import NamedTuple, Protocol

from lash_store.processes import ProcessEvent

log = logging.getLogger("lash_store")

#: How many notices a handle keeps for its waiters; a waiter that falls further behind reads again.
NOTICE_HISTORY = 4096


class Notice(NamedTuple):
    """Something changed: ``process_id`` (``None``: unknown) and the events appended, in sequence order."""

    serial: int
    process_id: str | None
    events: tuple[ProcessEvent, ...]


class ChangeFeed(Protocol):
    """Delivers other writers' changes to a ``publish`` callable from a background thread."""

    def ensure_running(self, publish: Callable[[str | None], None], wanted: Callable[[], bool]) -> None:
        """Make sure the feed delivers; returns once every change committed from now on will be delivered.

        The feed may stop by itself once ``wanted()`` has been false for a while
        (nobody waits); the next call starts it again.
        """
        ...

    def stop(self) -> None:
        """Stop delivering (idempotent)."""
        ...

    def after_fork(self) -> None:
        """In a forked child: forget the parent's thread and connection (they are not the child's)."""
        ...


class ThreadFeed:
    """A :class:`ChangeFeed` run by one daemon thread while anyone waits (it stops after a while without waiters).

    A subclass implements :meth:`watch`: deliver changes until ``keep_going()``
    says stop, setting ``ready`` once it is delivering (and surviving its own
    transient failures: a failure it cannot hide is reported as an unknown
    change, so that waiters read again).
    """

    #: How long the thread lingers without waiters before it stops.
    IDLE_S = 5.0
    #: How long ``ensure_running`` waits for a new thread to be ready (then waiters fall back on polling).
    START_TIMEOUT_S = 5.0

    def __init__(self, name: str) -> None:
        self._name = name
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def watch(
        self, publish: Callable[[str | None], None], ready: threading.Event, keep_going: Callable[[], bool]
    ) -> None:
        raise NotImplementedError

    def ensure_running(self, publish: Callable[[str | None], None], wanted: Callable[[], bool]) -> None:
        with self._lock:
            if self._thread is not None:
                return
            ready = threading.Event()
            self._stopping = threading.Event()
            self._thread = threading.Thread(
                target=self._main, args=(publish, wanted, ready, self._stopping), name=self._name, daemon=True
            )
            self._thread.start()
        ready.wait(self.START_TIMEOUT_S)

    def _main(
        self,
        publish: Callable[[str | None], None],
        wanted: Callable[[], bool],
        ready: threading.Event,
        stopping: threading.Event,
    ) -> None:
        idle_since: list[float] = []

        def keep_going() -> bool:
            if stopping.is_set():
                return False
            if wanted():
                idle_since.clear()
                return True
            if not idle_since:
                idle_since.append(time.monotonic())
                return True
            if time.monotonic() - idle_since[0] < self.IDLE_S:
                return True
            with self._lock:  # decided under the lock: a waiter arriving now starts a new thread
                if wanted():
                    idle_since.clear()
                    return True
                self._thread = None
                return False

        try:
            self.watch(publish, ready, keep_going)
        except Exception:  # a bug in the feed must not kill waiters: they fall back on polling
            log.warning("the registry's change feed %s failed", self._name, exc_info=True)
            publish(None)
        finally:
            ready.set()
            with self._lock:
                if self._thread is threading.current_thread():
                    self._thread = None

    def stop(self) -> None:
        with self._lock:
            self._stopping.set()
            self._thread = None

    def after_fork(self) -> None:
        self._lock = threading.Lock()
        self._thread = None
        self._stopping = threading.Event()


class Signals:
    """The notices of one data domain in this process, and the waiters parked on them."""

    def __init__(self, feed: ChangeFeed | None) -> None:
        self._feed = feed
        self._reset(forked=False)
        _instances.add(self)

    def _reset(self, *, forked: bool) -> None:
        """Fresh state (also in a forked child: the parent's lock may have been held, its waiters are not here)."""
        # Entered as the bare lock (``with self._lock``), never as the condition: ``Condition.__enter__`` is
        # Python code, so an interrupt landing just after its acquire would leave the lock held for good.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._serial = 0
        self._notices: deque[Notice] = deque(maxlen=NOTICE_HISTORY)
        self._async: dict[asyncio.Future[None], asyncio.AbstractEventLoop] = {}
        self._waiters = 0
        if forked and self._feed is not None:
            self._feed.after_fork()

    # -- publishing ------------------------------------------------------

    def publish(self, process_id: str | None, events: Sequence[ProcessEvent] = ()) -> None:
        """Record a change and wake every waiter (threads at once; asyncio waiters on their loops)."""
        with self._lock:
            self._serial += 1
            self._notices.append(Notice(self._serial, process_id, tuple(events)))
            self._cond.notify_all()
            parked, self._async = self._async, {}
        for future, loop in parked.items():
            with contextlib.suppress(RuntimeError):  # the loop was closed meanwhile; its waiter is gone with it
                loop.call_soon_threadsafe(_resolve, future)

    # -- reading ---------------------------------------------------------

    def cursor(self) -> int:
        """The serial of the latest notice: a waiter reads the data *after* taking it, so nothing is missed."""
        with self._lock:
            return self._serial

    def since(self, cursor: int) -> list[Notice] | None:
        """The notices after ``cursor``, or ``None`` when some were already dropped (read again)."""
        with self._lock:
            if self._serial == cursor:
                return []
            if not self._notices or self._notices[0].serial > cursor + 1:
                return None
            return [notice for notice in self._notices if notice.serial > cursor]

    def wait(self, cursor: int, timeout_s: float | None) -> None:
        """Block until a notice after ``cursor`` exists or ``timeout_s`` passes."""
        with self._lock:
            self._cond.wait_for(lambda: self._serial != cursor, timeout=timeout_s)

    async def wait_async(self, cursor: int, timeout_s: float | None) -> None:
        """:meth:`wait` for asyncio: the loop is never blocked, and cancelling the awaiting task is harmless."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if self._serial != cursor:
                return
            self._async[future] = loop
        try:
            await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            pass
        finally:
            with self._lock:
                self._async.pop(future, None)

    # -- waiters and the feed --------------------------------------------

    @contextmanager
    def waiting(self) -> Iterator[None]:
        """Count a waiter while it waits (a change feed runs while anyone waits)."""
        with self._lock:
            self._waiters += 1
        try:
            yield
        finally:
            with self._lock:
                self._waiters -= 1

    @property
    def waiters(self) -> int:
        """Waits in progress (parked, or reading)."""
        with self._lock:
            return self._waiters

    @property
    def parked(self) -> int:
        """Asyncio waits parked on a loop right now."""
        with self._lock:
            return len(self._async)

    @property
    def has_feed(self) -> bool:
        """Whether other processes can change the data (then waits also re-read now and then)."""
        return self._feed is not None

    def prepare(self) -> None:
        """Make sure the change feed delivers; a waiter calls it (inside :meth:`waiting`) before its first read."""
        if self._feed is not None:
            self._feed.ensure_running(self.publish, lambda: self.waiters > 0)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


# ---------------------------------------------------------------------------
# One Signals per data domain in this process

# Weak: the handles of a domain keep its Signals alive, and it goes when the last handle does.
_domains: weakref.WeakValueDictionary[Hashable, Signals] = weakref.WeakValueDictionary()
_domains_lock = threading.Lock()


def signals_for(key: Hashable, feed: Callable[[], ChangeFeed | None]) -> Signals:
    """The process-wide :class:`Signals` of the data ``key`` names (``feed`` builds its change feed once)."""
    with _domains_lock:
        found = _domains.get(key)
        if found is None:
            found = _domains[key] = Signals(feed())
        return found


_instances: weakref.WeakSet[Signals] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # The parent's feed threads do not exist in the child, and its locks may have been held at fork time:
    # handles inherited by the child keep working with fresh state; new handles get new domains.
    global _domains_lock
    _domains.clear()
    _domains_lock = threading.Lock()
    for signals in list(_instances):
        signals._reset(forked=True)


os.register_at_fork(after_in_child=_after_fork_in_child)

"""A manual clock for tests: inject it as ``StoreOptions(clock=...)`` to drive leases and grace periods."""

from __future__ import annotations

import threading

DEFAULT_START_MS = 1_700_000_000_000


class ManualClock:
    """An injectable clock (epoch ms) that moves only when told to; thread-safe."""

    def __init__(self, start_ms: int = DEFAULT_START_MS) -> None:
        self._now = start_ms
        self._lock = threading.Lock()

    def __call__(self) -> int:
        with self._lock:
            return self._now

    def advance(self, ms: int) -> int:
        """Move forward by ``ms`` and return the new time."""
        with self._lock:
            self._now += ms
            return self._now

    def set(self, ms: int) -> None:
        """Jump to ``ms``."""
        with self._lock:
            self._now = ms

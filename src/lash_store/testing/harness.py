"""What every conformance suite of a deployment store shares: a backend harness and the handles of one test.

The registry, host-event and effect-journal suites each obtain their stores
from a harness that a backend subclasses (``open`` takes what that store needs,
so each suite declares its own), and track every handle a test opens so that
all of them are closed at teardown, newest first.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, ClassVar, Generic, TypeVar

H = TypeVar("H")


class Harness(Generic[H]):
    """How a suite obtains handles of one backend; a suite's own harness adds ``open``."""

    name: ClassVar[str] = "backend"
    # A durable backend implements ``reopen``; for a non-durable one "reopen" is the same handle.
    durable: ClassVar[bool] = False

    def reopen(self, handle: H) -> H | None:
        """A NEW handle on the same durable data as ``handle``, or ``None`` if not durable."""
        return None

    def close(self, handle: Any) -> None:
        handle.close()


class Handles(Generic[H]):
    """Per-test access to a harness: tracks every handle opened and closes them all at teardown."""

    def __init__(self, harness: Harness[H]) -> None:
        self.harness = harness
        self._handles: list[Any] = []

    def track(self, handle: Any) -> Any:
        self._handles.append(handle)
        return handle

    def reopen(self, handle: H) -> H:
        """A second handle on ``handle``'s data (the same handle for a non-durable harness)."""
        if not self.harness.durable:
            return handle
        again = self.harness.reopen(handle)
        assert again is not None and again is not handle, "reopen() must return a new handle"
        self._handles.append(again)
        return again

    def close_all(self) -> None:
        for handle in reversed(self._handles):
            self.harness.close(handle)
        self._handles.clear()


def in_thread(call: Callable[[], Any]) -> Callable[[float], Any]:
    """Run ``call`` in a thread now; the returned function joins it and returns its result (or raises)."""
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["value"] = call()
        except BaseException as exc:
            result["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    def join(timeout_s: float) -> Any:
        thread.join(timeout_s)
        assert not thread.is_alive(), f"the thread did not finish within {timeout_s} s"
        if "error" in result:
            raise result["error"]
        return result["value"]

    return join

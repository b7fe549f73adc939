"""What every worker "host" of the network-namespace tests shares: arguments, reporting, retries, control files.

A test starts a worker inside a worker namespace (``ip netns exec <ns> python
-m lash_store.testing.<worker> <mode> ...``), so it reaches PostgreSQL over the
test network exactly as a worker on another machine would.  ``ip netns exec``
changes only the network namespace, so results go to a file (``--out``, JSON
lines, one ``os.write`` each) and instructions come as files in a control
directory (``--control``).  Every mode stops at ``--deadline`` (epoch seconds)
at the latest; an unexpected error is reported as an ``error`` line and exit
code 1.  The session worker (:mod:`~lash_store.testing.netns_worker`) and the
registry worker (:mod:`~lash_store.testing.netns_registry_worker`) differ only
in their store and their modes.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import msgspec

from lash_store.errors import BackendError
from lash_store.postgres import close_shared_pools

__all__ = ["BUSY_TIMEOUT_MS", "Deadline", "NetnsHost", "host_parser"]

T = TypeVar("T")

# Short enough that a partitioned worker's call gives up (StoreBusy) within seconds, not minutes.
BUSY_TIMEOUT_MS = 3000


class Deadline(Exception):
    """The worker ran out of time."""


def host_parser(prog: str, modes: Sequence[str], name_help: str) -> argparse.ArgumentParser:
    """The arguments every worker takes; a worker adds its own."""
    parser = argparse.ArgumentParser(prog=f"python -m {prog}")
    parser.add_argument("mode", choices=tuple(modes))
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--name", required=True, help=name_help)
    parser.add_argument("--out", required=True, help="JSON-lines result file (appended to)")
    parser.add_argument("--deadline", type=float, required=True, help="stop by this instant (epoch seconds)")
    parser.add_argument("--control", default=None, help="directory the test drops signal files into")
    return parser


class NetnsHost:
    """One worker: its result file, its deadline, its control directory; a subclass adds a store and modes."""

    # The failures of a call that a cut network causes: reported and retried, never fatal.
    retried: ClassVar[tuple[type[BaseException], ...]] = (BackendError,)

    def __init__(self, args: argparse.Namespace) -> None:
        self.name: str = args.name
        self.deadline: float = args.deadline
        self.out = os.open(args.out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self.control = Path(args.control) if args.control else None
        self.dsn: str = args.dsn

    def report(self, event: str, **fields: Any) -> None:
        os.write(self.out, msgspec.json.encode({"ev": event, "worker": self.name, **fields}) + b"\n")

    def check_time(self) -> None:
        if time.time() > self.deadline:
            raise Deadline(f"worker {self.name} passed its deadline")

    def retrying(self, action: Callable[[], T]) -> T:
        """``action`` until it succeeds; a failure in :attr:`retried` is reported and retried."""
        while True:
            self.check_time()
            try:
                return action()
            except self.retried as exc:
                self.report("retry", error=type(exc).__name__, message=" ".join(str(exc).split())[:200])
                time.sleep(0.1)

    def wait_for(self, signal_name: str) -> None:
        assert self.control is not None, "this mode needs --control"
        while not (self.control / signal_name).exists():
            self.check_time()
            time.sleep(0.02)

    def close_store(self) -> None:
        """Close the worker's store, if it opened one."""

    def run(self, mode: Callable[[], None]) -> int:
        """Run ``mode``, report an unexpected error, close everything; the process's exit code."""
        try:
            mode()
        except BaseException as exc:
            self.report("error", type=type(exc).__name__, message=" ".join(str(exc).split()))
            return 1
        finally:
            self.close_store()
            close_shared_pools()
            os.close(self.out)
        return 0

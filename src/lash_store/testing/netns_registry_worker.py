"""A registry worker "host" for the network-namespace tests: ``python -m lash_store.testing.netns_registry_worker``.

Like :mod:`lash_store.testing.netns_worker`, it runs on
:mod:`lash_store.testing.netns_host` (arguments, result file, retries, control
files, the deadline).

Modes:

``race``
    Claim leases on the registry's unfinished processes until none is left:
    for each, three fenced appends (renewing after the second) and a fenced
    terminal write; the first holder of a process named by ``--stall`` sleeps
    past its lease before the terminal write.  Every claim, renewal, completion
    and lost lease is reported.
``hold``
    Claim ``--process`` with a ``--lease-ms`` lease, append one fenced event
    and report the lease; when the control file ``complete`` appears (the test
    has cut this host off and healed it again by then), try the fenced
    terminal write and report what happened.
``reclaim``
    Open the registry and report ``ready``; when the control file ``reclaim``
    appears, claim ``--process`` until the lease is granted (once the holder's
    lease has run out on the database clock), append and complete under it.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Sequence
from functools import partial
from typing import Any, ClassVar

import msgspec

from lash_store.errors import BackendError, LeaseLost, ProcessAlreadyLeased, ProcessAlreadyTerminal, StoreBusy
from lash_store.options import StoreOptions
from lash_store.postgres.registry import PostgresProcessRegistry
from lash_store.processes import ProcessAwaitOutput, ProcessEventAppendRequest, ProcessLease
from lash_store.testing.netns_host import BUSY_TIMEOUT_MS, NetnsHost, host_parser

__all__ = ["main", "progress"]

_STALL_PAST_LEASE_S = 0.3


def progress(owner: str, fence: int, step: int) -> ProcessEventAppendRequest:
    """The event a holder appends: who wrote it, under which fence."""
    return ProcessEventAppendRequest(event_type="progress", payload={"owner": owner, "fence": fence, "step": step})


class RegistryWorker(NetnsHost):
    retried: ClassVar[tuple[type[BaseException], ...]] = (BackendError, StoreBusy)

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self._registry: PostgresProcessRegistry | None = None

    @property
    def registry(self) -> PostgresProcessRegistry:
        if self._registry is None:
            options = StoreOptions(busy_timeout_ms=BUSY_TIMEOUT_MS)
            self._registry = self.retrying(lambda: PostgresProcessRegistry.open(self.dsn, options, auto_setup=False))
        return self._registry

    def close_store(self) -> None:
        if self._registry is not None:
            self._registry.close()

    # -- modes ----------------------------------------------------------

    def race(self, lease_ms: int, stall: set[str], seed: int) -> None:
        rng = random.Random(seed)
        registry = self.registry
        while todo := [record.id for record in self.retrying(registry.list_non_terminal)]:
            rng.shuffle(todo)
            for pid in todo:
                self.check_time()
                try:
                    lease = registry.claim_process_lease(pid, self.name, lease_ms)
                except (ProcessAlreadyLeased, ProcessAlreadyTerminal):
                    continue
                self.report(
                    "claim",
                    process=pid,
                    fence=lease.fencing_token,
                    claimed_at=lease.claimed_at_epoch_ms,
                    expires_at=lease.expires_at_epoch_ms,
                )
                self._run_one(lease, lease_ms, stalls=pid in stall and lease.fencing_token == 1)
            time.sleep(0.01)
        self.report("done")

    def _run_one(self, lease: ProcessLease, lease_ms: int, *, stalls: bool) -> None:
        registry, pid, fence = self.registry, lease.process_id, lease.fencing_token
        try:
            for step in range(3):
                registry.append_event(pid, progress(self.name, fence, step), lease=lease)
                if step == 1:
                    lease = registry.renew_process_lease(lease, lease_ms)
                    self.report("renew", process=pid, fence=fence, expires_at=lease.expires_at_epoch_ms)
            if stalls:
                time.sleep(lease_ms / 1000 + _STALL_PAST_LEASE_S)
            output = ProcessAwaitOutput.success({"owner": self.name, "fence": fence})
            registry.complete_process(pid, output, lease=lease)
            self.report("completed", process=pid, fence=fence)
            registry.complete_process_lease(lease.completion())
        except LeaseLost:
            self.report("lost", process=pid, fence=fence, stalled=stalls)

    def hold(self, process_id: str, lease_ms: int) -> None:
        registry = self.registry
        lease = self.retrying(lambda: registry.claim_process_lease(process_id, self.name, lease_ms))
        self.retrying(
            lambda: registry.append_event(process_id, progress(self.name, lease.fencing_token, 0), lease=lease)
        )
        self.report("claimed", lease=msgspec.to_builtins(lease))
        self.wait_for("complete")
        try:
            output = ProcessAwaitOutput.success({"owner": self.name, "fence": lease.fencing_token})
            self.retrying(lambda: registry.complete_process(process_id, output, lease=lease))
            self.report("complete", outcome="completed")
        except LeaseLost as exc:
            self.report("complete", outcome="LeaseLost", message=str(exc))

    def reclaim(self, process_id: str, lease_ms: int) -> None:
        registry = self.registry
        self.report("ready")
        self.wait_for("reclaim")
        attempts = 0
        while True:
            try:
                lease = self.retrying(lambda: registry.claim_process_lease(process_id, self.name, lease_ms))
                break
            except ProcessAlreadyLeased:
                attempts += 1
                time.sleep(0.05)
        registry.append_event(process_id, progress(self.name, lease.fencing_token, 0), lease=lease)
        output = ProcessAwaitOutput.success({"owner": self.name, "fence": lease.fencing_token})
        registry.complete_process(process_id, output, lease=lease)
        self.report("claimed", lease=msgspec.to_builtins(lease), attempts=attempts)
        self.report("completed")


def decode_lease(value: Any) -> ProcessLease:
    """A lease as a worker reported it."""
    return msgspec.convert(value, ProcessLease)


def main(argv: Sequence[str] | None = None) -> int:
    parser = host_parser(
        "lash_store.testing.netns_registry_worker",
        ("race", "hold", "reclaim"),
        "this worker's name (its lease owner id)",
    )
    parser.add_argument("--process", default="stalled", help="the process of hold and reclaim")
    parser.add_argument("--stall", default="", help="comma-separated processes whose first holder stalls (race)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lease-ms", type=int, default=1_000)
    args = parser.parse_args(argv)
    worker = RegistryWorker(args)
    modes = {
        "race": partial(worker.race, args.lease_ms, {pid for pid in args.stall.split(",") if pid}, args.seed),
        "hold": partial(worker.hold, args.process, args.lease_ms),
        "reclaim": partial(worker.reclaim, args.process, args.lease_ms),
    }
    return worker.run(modes[args.mode])


if __name__ == "__main__":
    sys.exit(main())

"""Interrupts at any instant of a registry operation leave the deployment file usable, unlocked and whole.

The registry runs on the same interrupt-safe SQLite transactions as the session store (see
``tests/test_interrupts.py``, whose interrupter this reuses): a SIGALRM handler raises
``KeyboardInterrupt`` (or another ``BaseException``) at a random instant inside a registration, an append
(fenced or not), a completion, a lease claim / renewal / release, a grant, a transfer, a session deletion
or a prune.  After every interrupt a raw connection proves no lock is held; then every stored row must be
exactly what a reference registry holds after applying the same operations -- with the interrupted one
either applied whole (when it committed before the interrupt) or not at all.

``LASH_INTERRUPT_SEED`` fixes the seed; ``LASH_REGISTRY_INTERRUPTS`` sets the count of the ``slow`` profile.
"""

from __future__ import annotations

import os
import random
import signal
import statistics
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lash_store import ProcessRegistry, StoreOptions
from lash_store.errors import ProcessRegistryError
from lash_store.processes import ProcessAwaitOutput, ProcessEventAppendRequest, ProcessLease, ProcessReplay
from lash_store.testing.registry_conformance import S, plain, reg, wake_type
from lash_store.testing.registry_reference import ReferenceProcessRegistry
from tests.helpers import ManualClock
from tests.test_interrupts import Interrupt, Interrupter, assert_no_lock_held, interrupter

pytestmark = pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs signal.setitimer (POSIX)")

DEFAULT_INTERRUPTS = 300
SLOW_INTERRUPTS = int(os.environ.get("LASH_REGISTRY_INTERRUPTS", "20000"))
PIDS = [f"p{i}" for i in range(6)]
SESSIONS = ["s1", "s2", "s3"]
KINDS = ["register", "append", "append", "fenced", "complete", "claim", "renew", "release", "grant", "transfer"]
KINDS += ["delete", "prune", "cancel"]


def _seed() -> int:
    env = os.environ.get("LASH_INTERRUPT_SEED")
    return int(env) if env else random.SystemRandom().randrange(2**32)


def _rows(registry: Any) -> dict[str, list[tuple[Any, ...]]]:
    """Every stored row, lease tokens left out (each registry draws its own)."""
    rows: dict[str, list[tuple[Any, ...]]] = registry.raw_rows()
    rows["lease"] = [(*row[:2], row[2] is not None, *row[3:]) for row in rows["lease"]]
    return rows


class RegistryCampaign:
    """Random registry operations on a file and on the reference, some of them interrupted."""

    def __init__(self, path: Path, seed: int, injector: Interrupter) -> None:
        self.rng = random.Random(seed)
        self.injector = injector
        self.path = path
        self.clock = ManualClock()
        self.real = ProcessRegistry.open(path, StoreOptions(clock=self.clock))
        self.model = ReferenceProcessRegistry(StoreOptions(clock=self.clock))
        self.leases: dict[str, tuple[ProcessLease | None, ProcessLease | None]] = {}
        self.durations: dict[str, deque[float]] = {}
        self.interrupts = 0
        self.applied_anyway = 0
        self.last = ""

    def close(self) -> None:
        self.real.close()
        self.model.close()

    # -- one operation ------------------------------------------------------

    def operation(self) -> tuple[str, Callable[[Any, int], Any]]:
        """A random operation as ``(kind, call(registry, side))``; ``side`` 0 is the file, 1 the reference."""
        rng, pid = self.rng, self.rng.choice(PIDS)
        kind = rng.choice(KINDS)
        if kind == "register":
            return kind, lambda r, side: r.register_process(reg(pid, plain("line"), wake_type("wake")))
        if kind == "append":
            key = rng.choice([None, f"k{rng.randrange(3)}"])
            payload = {"line": "x" * rng.randrange(0, 4000), "wake_input": "w"}
            request = ProcessEventAppendRequest(
                event_type=rng.choice(["line", "wake"]),
                payload=payload,
                replay=None if key is None else ProcessReplay(key=key),
                wake_target_scope=S("s1"),
            )
            return kind, lambda r, side: r.append_event(pid, request)
        if kind == "fenced":
            request = ProcessEventAppendRequest(event_type="line", payload={"fenced": True})
            return kind, lambda r, side: r.append_event(pid, request, lease=self.lease(pid, side))
        if kind == "complete":
            output = rng.choice([ProcessAwaitOutput.success(1), ProcessAwaitOutput.failure("c", "k", "m")])
            return kind, lambda r, side: r.complete_process(pid, output, lease=self.lease(pid, side))
        if kind == "claim":
            owner, ttl = rng.choice(["w1", "w2"]), rng.choice([0, 1_000, 60_000])
            return kind, lambda r, side: r.claim_process_lease(pid, owner, ttl)
        if kind == "renew":
            return kind, lambda r, side: r.renew_process_lease(self.lease(pid, side), 60_000)
        if kind == "release":
            return kind, lambda r, side: r.complete_process_lease(self.lease(pid, side).completion())
        if kind == "grant":
            scope = S(rng.choice(SESSIONS), rng.choice([None, "f"]))
            return kind, lambda r, side: r.grant_handle(scope, pid)
        if kind == "transfer":
            source, target = S(rng.choice(SESSIONS)), S(rng.choice(SESSIONS))
            pids = rng.sample(PIDS, 2)
            return kind, lambda r, side: r.transfer_handle_grants(source, target, pids)
        if kind == "delete":
            session = rng.choice(SESSIONS)
            return kind, lambda r, side: r.delete_session_process_state(session)
        if kind == "prune":
            horizon = self.clock() - rng.choice([0, 5_000])
            return kind, lambda r, side: r.prune_processes(horizon)
        reason = rng.choice(["a", "b"])
        return kind, lambda r, side: r.append_event(pid, ProcessEventAppendRequest.cancel_requested(pid, reason))

    def lease(self, pid: str, side: int) -> Any:
        pair = self.leases.get(pid, (None, None))
        held = pair[side]
        if None in pair:  # no lease known on one side: a forged one on both (rejected, nothing written)
            return ProcessLease(
                process_id=pid,
                owner_id="w1",
                lease_token="0" * 64,
                fencing_token=1,
                claimed_at_epoch_ms=0,
                expires_at_epoch_ms=0,
            )
        return held

    @staticmethod
    def call(registry: Any, side: int, op: Callable[[Any, int], Any]) -> tuple[bool, Any]:
        try:
            return True, op(registry, side)
        except ProcessRegistryError as exc:
            return False, type(exc)

    def step(self, index: int) -> None:
        kind, op = self.operation()
        before = _rows(self.real)
        samples = self.durations.setdefault(kind, deque(maxlen=15))
        self.last = f"step {index} {kind}"
        if len(samples) < 3 or self.rng.random() < 0.3:  # calibrate, and let most operations through
            started = time.perf_counter()
            real = self.call(self.real, 0, op)
            samples.append(time.perf_counter() - started)
            self.apply(kind, op, real)
        else:
            delay = self.rng.uniform(0.0, 1.2 * statistics.median(samples))
            exc: type[BaseException] = KeyboardInterrupt if self.rng.random() < 0.8 else Interrupt
            outcome = self.injector.run(lambda: self.call(self.real, 0, op), delay, exc)
            if outcome.interrupted or outcome.swallowed:
                self.interrupts += 1
                assert_no_lock_held(self.path, f"after an interrupted {self.last}")
                if _rows(self.real) != before:  # it committed before the interrupt landed: it must be whole
                    self.applied_anyway += 1
                    self.apply(kind, op, None)
            else:
                self.apply(kind, op, outcome.result)
        self.clock.advance(self.rng.choice([0, 0, 10, 1_000]))
        assert _rows(self.real) == _rows(self.model), f"after {self.last}: the file and the reference differ"

    def apply(self, kind: str, op: Callable[[Any, int], Any], real: tuple[bool, Any] | None) -> None:
        """Apply the operation to the reference too; when the file's call returned, both agree on the outcome."""
        model = self.call(self.model, 1, op)
        if real is not None:
            assert real[0] == model[0] and (real[0] or real[1] == model[1]), f"{self.last}: {real} vs {model}"
        if kind == "claim" and model[0]:
            file_lease = real[1] if real is not None and real[0] else None  # unknown when the call was interrupted
            self.leases[model[1].process_id] = (file_lease, model[1])


def run_campaign(tmp_path: Path, target: int) -> None:
    seed = _seed()
    with interrupter() as injector:
        campaign = RegistryCampaign(tmp_path / "deployment.db", seed, injector)
        try:
            index = 0
            while campaign.interrupts < target:
                index += 1
                campaign.step(index)
        except BaseException as exc:
            raise AssertionError(f"seed {seed}, {campaign.last}: {exc}") from exc
        finally:
            campaign.close()
    print(f"\n{campaign.interrupts} interrupts over {index} operations, {campaign.applied_anyway} had committed")


def test_interrupted_registry_operations_leave_the_file_usable_and_whole(tmp_path: Path) -> None:
    run_campaign(tmp_path, DEFAULT_INTERRUPTS)


@pytest.mark.slow
@pytest.mark.timeout(0)
def test_interrupted_registry_operations_long_profile(tmp_path: Path) -> None:
    run_campaign(tmp_path, SLOW_INTERRUPTS)

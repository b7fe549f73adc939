"""``AsyncProcessRegistry``: waits park on the event loop, wake within a loop iteration, time out and cancel cleanly."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from lash_store import AsyncProcessRegistry, ProcessRegistry
from lash_store.errors import UnknownProcess, WaitTimeout
from lash_store.processes import ProcessAwaitOutput, ProcessEventAppendRequest
from lash_store.service.registry import waits
from lash_store.testing.registry_conformance import plain, reg
from lash_store.testing.registry_reference import ReferenceProcessRegistry


def _run(coro: object) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


async def _settle(task: asyncio.Task[object], iterations: int) -> bool:
    for _ in range(iterations):
        if task.done():
            return True
        await asyncio.sleep(0)
    return task.done()


async def _parked(registry: AsyncProcessRegistry, count: int) -> None:
    """Until ``count`` waits are parked on the loop (not in the middle of a read)."""
    signals = registry.sync.signals  # type: ignore[attr-defined]
    for _ in range(1_000):
        if signals.parked == count:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"{signals.parked} waits parked, expected {count}")


@pytest.mark.parametrize("kind", ["memory", "file", "reference"])
def test_a_wait_wakes_within_a_loop_iteration_of_the_append(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # This is about waits woken by this process's own appends: keep the polling backstop out of the way.
    monkeypatch.setattr(waits, "FIRST_BACKSTOP_S", 60.0)

    async def main() -> None:
        if kind == "memory":
            registry = await AsyncProcessRegistry.memory()
        elif kind == "file":
            registry = await AsyncProcessRegistry.open(tmp_path / "deployment.db")
        else:
            registry = AsyncProcessRegistry(ReferenceProcessRegistry())
        async with registry:
            await registry.register_process(reg("p", plain("tick")))
            waiter = asyncio.create_task(registry.wait_event_after("p", "tick", 0, timeout_ms=10_000))
            finisher = asyncio.create_task(registry.await_process("p", timeout_ms=10_000))
            await _parked(registry, 2)
            appended = await registry.append_event("p", ProcessEventAppendRequest(event_type="tick", payload={}))
            # The append's commit published the event before its own result reached the loop: the waiter has
            # its answer already (no read), so it is done within the next iteration or two.
            assert await _settle(waiter, 2), "the waiter did not wake within a loop iteration"
            assert waiter.result() == appended.event
            # On a file, the append also reaches the file watcher, whose notice (it cannot tell whose commit
            # it saw) makes parked waiters read once more; the finisher is parked again after that.
            await asyncio.sleep(0.05)
            await _parked(registry, 1)
            await registry.complete_process("p", ProcessAwaitOutput.success("done"))
            assert await _settle(finisher, 2)
            assert finisher.result() == ProcessAwaitOutput.success("done")

    _run(main())


def test_the_loop_keeps_running_while_a_wait_parks() -> None:
    async def main() -> None:
        async with await AsyncProcessRegistry.memory() as registry:
            await registry.register_process(reg("p"))
            ticks = 0

            async def heartbeat() -> None:
                nonlocal ticks
                while True:
                    ticks += 1
                    await asyncio.sleep(0.005)

            beat = asyncio.create_task(heartbeat())
            started = time.monotonic()
            with pytest.raises(WaitTimeout):
                await registry.await_process("p", timeout_ms=200)
            assert 0.15 < time.monotonic() - started < 5
            beat.cancel()
            assert ticks > 10  # the loop was never blocked by the wait

    _run(main())


def test_cancelling_a_wait_leaves_nothing_behind(tmp_path: Path) -> None:
    async def main() -> None:
        sync = ProcessRegistry.open(tmp_path / "deployment.db")
        async with AsyncProcessRegistry(sync) as registry:
            await registry.register_process(reg("p", plain("tick")))
            waits = [asyncio.create_task(registry.wait_event_after("p", "tick", 0)) for _ in range(20)]
            await asyncio.sleep(0.05)
            assert sync.signals.waiters == 20
            for task in waits:
                task.cancel()
            await asyncio.gather(*waits, return_exceptions=True)
            assert all(task.cancelled() for task in waits)
            assert sync.signals.waiters == 0
            # The registry works on: later calls run and see earlier ones.
            appended = await registry.append_event("p", ProcessEventAppendRequest(event_type="tick", payload={}))
            assert (await registry.wait_event_after("p", "tick", 0, timeout_ms=0)) == appended.event

    _run(main())


def test_waits_report_unknown_and_pruned_processes() -> None:
    async def main() -> None:
        async with await AsyncProcessRegistry.memory() as registry:
            with pytest.raises(UnknownProcess):
                await registry.await_process("ghost", timeout_ms=1_000)

    _run(main())

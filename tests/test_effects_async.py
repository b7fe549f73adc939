"""``AsyncEffectHost`` and ``AsyncHostEventStore``: the generated facades, coroutine executors, cancellation."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from lash_store.aio import AsyncEffectHost, AsyncHostEventStore
from lash_store.effects import (
    EffectScope,
    RuntimeEffectCommand,
    RuntimeEffectEnvelope,
    RuntimeEffectOutcome,
    RuntimeScope,
)
from lash_store.host_events import HostEventOccurrenceRequest, TriggerSubscriptionDraft, empty_source_key

SCOPE = EffectScope.turn("s", "t")


def envelope(key: str) -> RuntimeEffectEnvelope:
    return RuntimeEffectEnvelope.new(RuntimeScope(session_id="s"), key, key, RuntimeEffectCommand.tool_call({"k": key}))


def test_async_effects_run_concurrently_and_replay(tmp_path: Path) -> None:
    async def main() -> None:
        host = await AsyncEffectHost.open(tmp_path / "deployment.db")
        controller = host.scoped(SCOPE)
        inside = 0
        both_inside = asyncio.Event()
        calls: list[str] = []

        async def run(env: RuntimeEffectEnvelope) -> RuntimeEffectOutcome:  # runs on this loop
            nonlocal inside
            calls.append(env.replay_key)
            inside += 1
            if inside == 2:
                both_inside.set()
            await asyncio.wait_for(both_inside.wait(), 20)  # the two effects are in their bodies at once
            return RuntimeEffectOutcome.tool_call({"done": env.replay_key})

        first, second = await asyncio.gather(
            controller.execute_effect(envelope("a"), run), controller.execute_effect(envelope("b"), run)
        )
        assert (first.value, second.value) == ({"done": "a"}, {"done": "b"})
        replaying = host.scoped(SCOPE, replay=True)
        assert await replaying.execute_effect(envelope("a"), run) == first
        assert sorted(calls) == ["a", "b"]
        rows = await host.list_journal(scope=SCOPE)
        assert [row.status for row in rows] == ["completed", "completed"]
        assert (await host.prune_journal(0, dry_run=True)).row_count == 0
        await host.close()

    asyncio.run(main())


def test_cancelling_the_awaiting_task_leaves_the_effect_to_finish(tmp_path: Path) -> None:
    async def main() -> None:
        async with await AsyncEffectHost.open(tmp_path / "deployment.db") as host:
            entered, release = asyncio.Event(), asyncio.Event()

            async def slow(env: RuntimeEffectEnvelope) -> RuntimeEffectOutcome:
                entered.set()
                await release.wait()
                return RuntimeEffectOutcome.tool_call("finished")

            task = asyncio.create_task(host.scoped(SCOPE).execute_effect(envelope("slow"), slow))
            await asyncio.wait_for(entered.wait(), 20)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task  # the awaiter is released at once ...
            release.set()  # ... while the effect itself is still running

            async def never(env: RuntimeEffectEnvelope) -> RuntimeEffectOutcome:
                raise AssertionError("replayed effects do not run")

            # The started effect finishes and is journaled; the next execution waits for it and replays it.
            result = await host.scoped(SCOPE).execute_effect(envelope("slow"), never)
            assert result == RuntimeEffectOutcome.tool_call("finished")

    asyncio.run(main())


def test_async_host_event_store(tmp_path: Path) -> None:
    async def main() -> None:
        async with await AsyncHostEventStore.open(tmp_path / "deployment.db") as store:
            key = empty_source_key("ui.button.pressed")
            sub = await store.register_subscription(
                TriggerSubscriptionDraft(session_id="a", source_type="ui.button.pressed", source_key=key)
            )
            assert sub.handle == "trigger:1"
            assert store.source_key_for_subscription("ui.button.pressed", {}) == key
            occurrence = await store.record_occurrence(
                HostEventOccurrenceRequest(source_type="ui.button.pressed", source_key=key, idempotency_key="1")
            )
            (reserved,) = await store.reserve_matching_deliveries(occurrence.occurrence_id)
            assert [d.process_id for d in await store.pending_deliveries()] == [reserved.process_id]
            assert await store.mark_delivery_started(occurrence.occurrence_id, sub.subscription_id) is True
            assert await store.pending_deliveries() == []

    asyncio.run(main())

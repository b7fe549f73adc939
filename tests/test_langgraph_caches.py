"""LashSaver's speed caches: each one is hit, stays bounded, and never changes what is stored or read.

* the decoded-leaf cache (reads decode only new chunks; what a read returns is
  a private copy: mutating it cannot corrupt a later read);
* the list cache (a put after a read or a put encodes and chunks only the new
  elements; off with ``reuse_encodings=False``);
* the chunk build cache and incremental builds (the same tree as a full build);
* all of it under ``EncryptedSerializer``.
"""

from __future__ import annotations

import copy
import dataclasses
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langgraph.checkpoint.serde.encrypted import EncryptedSerializer
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.graph import END, START, MessagesState, StateGraph

from lash_store.adapters import _chunks, _values
from lash_store.adapters.langgraph import LashSaver


class CountingSerde(JsonPlusSerializer):
    """JsonPlusSerializer that counts the elements it encodes and decodes."""

    def __init__(self) -> None:
        super().__init__()
        self.dumped = 0
        self.loaded = 0

    def dumps_typed(self, obj: Any) -> tuple[str, bytes]:
        self.dumped += 1
        return super().dumps_typed(obj)

    def loads_typed(self, data: tuple[str, bytes]) -> Any:
        self.loaded += 1
        return super().loads_typed(data)


def _graph(saver: Any) -> Any:
    def reply(state: MessagesState) -> dict[str, list[AIMessage]]:
        turn = len(state["messages"]) // 2
        return {"messages": [AIMessage(content=f"reply {turn}: " + "lorem ipsum " * 20)]}

    builder = StateGraph(MessagesState)
    builder.add_node("reply", reply)
    builder.add_edge(START, "reply")
    builder.add_edge("reply", END)
    return builder.compile(checkpointer=saver)


def _run(graph: Any, turns: int, thread: str = "t", start: int = 0) -> dict[str, Any]:
    config = {"configurable": {"thread_id": thread}}
    for turn in range(start, start + turns):
        graph.invoke({"messages": [("user", f"question {turn} " + "x" * 100)]}, config, durability="sync")
    return config


@pytest.fixture
def serde() -> CountingSerde:
    return CountingSerde()


@pytest.fixture
def saver(tmp_path: Path, serde: CountingSerde) -> Iterator[LashSaver]:
    with LashSaver.sqlite(tmp_path / "root", serde=serde) as opened:
        yield opened


def _messages(saver: LashSaver, config: Any) -> list[Any]:
    found = saver.get_tuple(config)
    assert found is not None
    messages: list[Any] = found.checkpoint["channel_values"]["messages"]
    return messages


# -- decoded leaves --------------------------------------------------------------------


def test_a_second_read_decodes_nothing(saver: LashSaver, serde: CountingSerde) -> None:
    config = _run(_graph(saver), 20)
    first = _messages(saver, config)
    assert len(first) == 40
    loaded = serde.loaded
    hits = saver._decoded.hits
    second = _messages(saver, config)
    assert serde.loaded - loaded <= 2  # the checkpoint skeleton and metadata, no message
    assert saver._decoded.hits > hits
    assert [(m.type, m.content, m.id) for m in second] == [(m.type, m.content, m.id) for m in first]
    assert all(a is not b for a, b in zip(first, second, strict=True))  # never the same objects


def test_mutating_what_a_read_returned_cannot_corrupt_a_later_read(saver: LashSaver) -> None:
    graph = _graph(saver)
    config = _run(graph, 10)
    expected = [m.model_dump() for m in _messages(saver, config)]
    for _ in range(2):  # the first read fills the cache, the second is served from it
        returned = _messages(saver, config)
        for message in returned:
            message.content = "changed"
            message.additional_kwargs["injected"] = {"deep": [1]}
            message.response_metadata.setdefault("list", []).append(1)
            if isinstance(message, AIMessage):
                message.tool_calls.append({"name": "x", "args": {}, "id": "1", "type": "tool_call"})
        returned.append(HumanMessage(content="extra"))
        returned[0] = HumanMessage(content="replaced")
        assert [m.model_dump() for m in _messages(saver, config)] == expected
    assert len(graph.get_state(config).values["messages"]) == 20


def test_nested_content_is_copied_deeply() -> None:
    message = AIMessage(
        content=[{"type": "text", "text": "hi"}],
        tool_calls=[{"name": "search", "args": {"q": ["a", {"b": 1}]}, "id": "c1", "type": "tool_call"}],
        additional_kwargs={"k": {"nested": [1, 2]}},
        id="m1",
    )
    assert _values.clonable(message)
    copied = _values.clone(message)
    assert copied == message and copied.model_dump() == copy.deepcopy(message).model_dump()
    assert copied.__pydantic_fields_set__ == message.__pydantic_fields_set__
    assert list(copied.tool_calls[0]["args"]) == ["q"] and list(copied.additional_kwargs) == ["k"]
    ordered = {"z": 1, "a": [1], "m": {"y": 2, "b": {}}, "b": None}
    assert list(_values.clone(ordered)) == ["z", "a", "m", "b"] and _values.clone(ordered) == ordered
    assert list(_values.clone(ordered)["m"]) == ["y", "b"]
    assert list(copied.__dict__) == list(message.__dict__)  # the fields in their order, too
    copied.tool_calls[0]["args"]["q"][1]["b"] = 2
    copied.additional_kwargs["k"]["nested"].append(3)
    copied.content[0]["text"] = "changed"
    assert message.tool_calls[0]["args"]["q"][1]["b"] == 1
    assert message.additional_kwargs["k"]["nested"] == [1, 2]
    assert message.content[0]["text"] == "hi"  # type: ignore[index]


def test_the_class_registry_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import create_model

    _values.freeze(AIMessage(content="x"))  # registered before the bound is reached
    monkeypatch.setattr(_values, "MAX_CLASSES", len(_values._classes))
    made = create_model("Made", text=(str, ""))
    assert not _values.clonable(made(text="x"))  # a new class past the bound: decoded each time instead
    assert _values.clonable(AIMessage(content="x"))  # a registered class still is


@dataclasses.dataclass
class Note:
    text: str
    tags: list[str]


def test_values_the_clone_does_not_know_are_decoded_afresh(tmp_path: Path) -> None:
    assert not _values.clonable(Note("a", []))
    with LashSaver.sqlite(tmp_path / "root") as saver:
        config: Any = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}
        notes = [Note(f"note {i}", ["x"]) for i in range(40)]
        checkpoint = _checkpoint({"notes": notes})
        saver.put(config, checkpoint, {}, {})  # type: ignore[arg-type]
        first = saver.get_tuple(config).checkpoint["channel_values"]["notes"]  # type: ignore[union-attr]
        first[0].tags.append("mutated")
        second = saver.get_tuple(config).checkpoint["channel_values"]["notes"]  # type: ignore[union-attr]
        assert second == notes and second[0] is not first[0]


def test_the_decoded_leaf_cache_holds_no_object_the_collector_tracks() -> None:
    import gc

    serde = JsonPlusSerializer()
    cache = _values.DecodedLeaves()
    pairs = [serde.dumps_typed(AIMessage(content=f"m{i}", id=f"i{i}", additional_kwargs={"k": [i]})) for i in range(50)]
    values: list[Any] = []
    cache.read("leaf", pairs, serde.loads_typed, values, [])
    for _ in range(10):  # each collection untracks the tuples whose items it has untracked: a level at a time
        gc.collect()
    leaf = cache._leaves["leaf"]
    assert leaf[2] == (True,) * 50
    assert not gc.is_tracked(leaf)


def test_the_decoded_leaf_cache_is_bounded_by_elements() -> None:
    cache = _values.DecodedLeaves(capacity=10)
    serde = JsonPlusSerializer()
    for leaf in range(20):
        pairs = [serde.dumps_typed(f"{leaf}-{i}") for i in range(3)]
        values: list[Any] = []
        cache.read(f"ref{leaf}", pairs, serde.loads_typed, values, [])
        assert values == [f"{leaf}-{i}" for i in range(3)]
        assert cache.held <= 10
    assert len(cache) == 3 and cache.held == 9 and cache.misses == 20
    values = []
    cache.read("ref19", [], serde.loads_typed, values, [])  # a hit needs no pairs
    assert values == ["19-0", "19-1", "19-2"] and cache.hits == 1
    cache.read("ref0", [serde.dumps_typed("again")], serde.loads_typed, values, [])  # evicted: decoded again
    assert values[-1] == "again" and cache.misses == 21


# -- the list cache --------------------------------------------------------------------


def test_a_put_encodes_only_the_new_messages(saver: LashSaver, serde: CountingSerde) -> None:
    graph = _graph(saver)
    config = _run(graph, 30)
    dumped = serde.dumped
    _run(graph, 1, start=30)
    # One turn: 3 checkpoints (skeleton + metadata each), 2 pending writes, and 2 new messages -- not 60.
    assert serde.dumped - dumped < 20, serde.dumped - dumped
    assert saver._lists.hits > 0
    assert len(graph.get_state(config).values["messages"]) == 62


def test_without_reuse_every_put_encodes_the_whole_list(tmp_path: Path) -> None:
    serde = CountingSerde()
    with LashSaver.sqlite(tmp_path / "root", serde=serde, reuse_encodings=False) as saver:
        graph = _graph(saver)
        config = _run(graph, 30)
        dumped = serde.dumped
        _run(graph, 1, start=30)
        assert serde.dumped - dumped > 3 * 60
        assert len(saver._lists) == 0
        assert len(graph.get_state(config).values["messages"]) == 62


def test_a_replaced_message_is_stored_as_it_is_now(saver: LashSaver, tmp_path: Path) -> None:
    graph = _graph(saver)
    config = _run(graph, 20)
    messages = list(graph.get_state(config).values["messages"])
    # add_messages replaces a message with the same id: the new object at position 3 must be encoded again.
    replacement = HumanMessage(content="edited question", id=messages[3].id)
    graph.update_state(config, {"messages": [replacement]})
    stored = _messages(saver, config)
    assert stored[3].content == "edited question"
    assert [m.content for m in stored[4:]] == [m.content for m in messages[4:]]
    # A fresh saver (nothing cached) reads the same list.
    with LashSaver.sqlite(tmp_path / "root") as cold:
        assert [m.model_dump() for m in _messages(cold, config)] == [m.model_dump() for m in stored]


def test_the_list_cache_is_bounded_and_forgets_deleted_threads(tmp_path: Path) -> None:
    cache = _values.Lists(capacity=2)
    for key in "abc":
        cache.remember(key, [1], [(("int", b"1"), b"d")], [("r", 1)])
    assert len(cache) == 2
    _, keep = cache.elements("a", [1], lambda item: (("int", b"1"), b"d"))
    assert keep == [] and cache.misses == 1  # "a" was evicted
    with LashSaver.sqlite(tmp_path / "root") as saver:
        _run(_graph(saver), 10, thread="gone")
        assert len(saver._lists) == 1
        saver.delete_thread("gone")
        assert len(saver._lists) == 0


def test_an_expired_list_entry_is_not_trusted(monkeypatch: pytest.MonkeyPatch) -> None:
    cache = _values.Lists(capacity=4, ttl_s=60.0)
    items = [object() for _ in range(40)]
    elements = [(("o", bytes([i])), bytes([i]) * 32) for i in range(40)]
    cache.remember("k", items, elements, [("a", 20), ("b", 20)])
    encoded: list[Any] = []

    def encode(item: Any) -> _chunks.Element:
        encoded.append(item)
        return ("o", b"n"), b"n" * 32

    got, keep = cache.elements("k", [*items, object()], encode)
    assert keep == [("a", 20)] and len(encoded) == 1 and got[:40] == elements
    now = time.monotonic()
    monkeypatch.setattr(time, "monotonic", lambda: now + 61)
    encoded.clear()
    got, keep = cache.elements("k", items, encode)
    assert keep == [] and len(encoded) == 40


# -- chunk builds ----------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.binary(min_size=0, max_size=64), min_size=1, max_size=300),
    st.integers(min_value=0, max_value=300),
    st.lists(st.binary(min_size=0, max_size=64), max_size=40),
)
def test_an_incremental_build_is_the_full_build(first: list[bytes], cut: int, tail: list[bytes]) -> None:
    def elements(values: list[bytes]) -> list[_chunks.Element]:
        return [(("bytes", value), _chunks.element_digest(("bytes", value))) for value in values]

    cache = _chunks.BuildCache(capacity=64)
    before = _chunks.build_elements(elements(first), cache, None)
    after = first[: min(cut, len(first))] + tail
    if not after:
        return
    common = min(cut, len(first))
    keep: list[tuple[str, int]] = []
    end = 0
    for ref, count in before.leaves[:-1]:
        if end + count > common:
            break
        keep.append((ref, count))
        end += count
    incremental = _chunks.build_elements(elements(after), cache, None, keep)
    full = _chunks.build([pair for pair, _ in elements(after)])
    assert (incremental.root, incremental.length, incremental.leaves) == (full.root, full.length, full.leaves)
    assert set(incremental.chunks) | {ref for ref, _ in keep} == set(full.chunks)
    assert len(cache) <= 64


def test_the_build_cache_is_hit_and_bounded() -> None:
    pairs = [("str", f"element {i}".encode()) for i in range(500)]
    elements = [(pair, _chunks.element_digest(pair)) for pair in pairs]
    cache = _chunks.BuildCache()
    first = _chunks.build_elements(elements[:-1], cache, None)
    misses = cache.misses
    assert cache.hits == 0 and misses == len(cache) > len(first.leaves)
    _chunks.build_elements(elements, cache, None)
    # Appending one element rebuilds the last leaf and one index chunk per level; every other chunk is a hit.
    assert cache.misses - misses <= 4 and cache.hits >= len(first.leaves) - 1
    small = _chunks.BuildCache(capacity=50)
    _chunks.build_elements(elements, small, None)
    assert len(small) == 50


def test_a_tree_this_process_wrote_reads_back_without_fetching(saver: LashSaver) -> None:
    config = _run(_graph(saver), 20)
    store = saver._store("t", create=False)
    fetched: list[list[str]] = []
    original = store.get_blobs

    def counting(refs: Any) -> dict[str, bytes]:
        fetched.append(list(refs))
        return original(refs)

    store.get_blobs = counting  # type: ignore[method-assign]
    assert len(_messages(saver, config)) == 40
    assert fetched == []


# -- encryption ------------------------------------------------------------------------


def test_encrypted_serializer_with_every_cache(tmp_path: Path) -> None:
    serde = EncryptedSerializer.from_pycryptodome_aes(key=b"k" * 16)
    with LashSaver.sqlite(tmp_path / "root", serde=serde) as saver:
        graph = _graph(saver)
        config = _run(graph, 20)
        _run(graph, 5, start=20)  # puts after reads, from the caches
        warm = [(m.type, m.content) for m in graph.get_state(config).values["messages"]]
    assert len(warm) == 50
    with LashSaver.sqlite(tmp_path / "root", serde=serde) as cold:
        assert [(m.type, m.content) for m in _messages(cold, config)] == warm
    with LashSaver.sqlite(tmp_path / "root") as wrong, pytest.raises(Exception):  # noqa: B017 - no key, no read
        _messages(wrong, config)
    database = b"".join(path.read_bytes() for path in (tmp_path / "root").glob("*.db"))
    assert b"question 1" not in database and b"lorem ipsum" not in database


def test_tool_messages_and_random_edits_round_trip(saver: LashSaver) -> None:
    rng = random.Random(7)
    config: Any = {"configurable": {"thread_id": "tools", "checkpoint_ns": ""}}
    history: list[Any] = []
    parent: Any = config
    for step in range(30):
        history = list(history)
        history.append(ToolMessage(content=f"result {step}", tool_call_id=f"call-{step}", id=f"t{step}"))
        if len(history) > 5 and rng.random() < 0.3:
            index = rng.randrange(len(history))
            history[index] = HumanMessage(content=f"edit {step}", id=f"e{step}")
        if len(history) > 5 and rng.random() < 0.2:
            del history[rng.randrange(len(history))]
        checkpoint = _checkpoint({"messages": history}, step)
        parent = saver.put(parent, checkpoint, {"step": step}, {})  # type: ignore[arg-type]
        if step % 3 == 0:
            assert [m.model_dump() for m in _messages(saver, parent)] == [m.model_dump() for m in history]
            history = _messages(saver, parent)  # continue from the read's objects, as LangGraph does
    assert [m.model_dump() for m in _messages(saver, parent)] == [m.model_dump() for m in history]


def _checkpoint(values: dict[str, Any], step: int = 0) -> dict[str, Any]:
    from langgraph.checkpoint.base import empty_checkpoint

    checkpoint: dict[str, Any] = dict(empty_checkpoint())
    checkpoint["id"] = f"1ef0000{step:04d}-0000-6000-8000-000000000000"
    checkpoint["channel_values"] = values
    checkpoint["channel_versions"] = {channel: f"{step + 1:032}.0" for channel in values}
    return checkpoint


@pytest.mark.parametrize("reuse", [True, False])
def test_an_in_place_change_is_stored_only_without_reuse(tmp_path: Path, reuse: bool) -> None:
    """The documented limit of ``reuse_encodings``: elements are matched by identity, not re-encoded."""
    with LashSaver.sqlite(tmp_path / "root", reuse_encodings=reuse) as saver:
        config: Any = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}
        history = [HumanMessage(content=f"m{i}", id=f"m{i}") for i in range(20)]
        parent = saver.put(config, _checkpoint({"messages": history}, 0), {}, {})  # type: ignore[arg-type]
        history[0].content = "changed in place"  # the same object, changed after it was checkpointed
        history = [*history, HumanMessage(content="m20", id="m20")]
        parent = saver.put(parent, _checkpoint({"messages": history}, 1), {}, {})  # type: ignore[arg-type]
        stored = _messages(saver, parent)
        assert len(stored) == 21
        assert stored[0].content == ("m0" if reuse else "changed in place")

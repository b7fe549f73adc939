"""Canonical JSON: the struct fast path (field names looked up once per type) converts exactly as a dict would."""

from __future__ import annotations

import enum
from typing import Any

import msgspec
import pytest

from lash_store.core.canonical import MAX_JSON_DEPTH, canonical_text, json_value, plain
from lash_store.errors import InvalidInput
from lash_store.processes import ProcessAwaitOutput


class Colour(enum.Enum):
    RED = "red"


class Leaf(msgspec.Struct, frozen=True):
    name: str
    value: Any = None
    colour: Colour | None = None


class Renamed(msgspec.Struct, frozen=True, rename="camel"):
    long_name: str
    other_value: Any = None


class Empty(msgspec.Struct, frozen=True):
    pass


class Node(msgspec.Struct, frozen=True):
    child: Any = None


def _as_dicts(value: Any) -> Any:
    """The rule of the module docstring, written out directly (the reference both walkers must agree with)."""
    if isinstance(value, ProcessAwaitOutput):
        return _as_dicts(value.__plain__())
    if isinstance(value, msgspec.Struct):
        fields = zip(value.__struct_fields__, value.__struct_encode_fields__, strict=True)
        return {enc: _as_dicts(getattr(value, n)) for n, enc in fields if getattr(value, n) is not None}
    if isinstance(value, (list, tuple)):
        return [_as_dicts(item) for item in value]
    if isinstance(value, dict):
        return {key: _as_dicts(item) for key, item in value.items()}
    if isinstance(value, enum.Enum):
        return value.value
    return value


VALUES = [
    Leaf("a"),
    Leaf("a", value={"x": [1, 2.5, None, Leaf("b", colour=Colour.RED)]}),
    Renamed("x", other_value=(1, 2)),
    Renamed("x"),
    Empty(),
    {"wrapped": [Empty(), Leaf("ü", value="ünïcode")]},
    ProcessAwaitOutput.success(None),
    ProcessAwaitOutput.failure("c", "d", "m", raw={"r": [1, {"s": None}]}),
    Node(Node(Node(None))),
]


@pytest.mark.parametrize("value", VALUES)
def test_structs_convert_as_their_fields_would(value: Any) -> None:
    expected = _as_dicts(value)
    assert json_value("v", value) == expected
    assert plain(value) == expected
    # The key order is the field order (what a hash of the unsorted text would see).
    assert list(json_value("v", value)) == list(expected) if isinstance(expected, dict) else True
    assert canonical_text(value) == canonical_text(expected)


def _nested(levels: int) -> Any:
    value: Any = Node(child=1)
    for _ in range(levels):
        value = Node(child=value)
    return value


def test_the_depth_limit_counts_struct_levels_as_objects() -> None:
    deepest = MAX_JSON_DEPTH - 1  # Node(child=1) nested under MAX-1 more: the number sits at depth MAX
    assert json_value("v", _nested(deepest)) == _as_dicts(_nested(deepest))
    with pytest.raises(InvalidInput, match="deeper"):
        json_value("v", _nested(deepest + 1))
    # An empty struct at the limit is an empty object, as an empty dict there is.
    at_limit: Any = Empty()
    for _ in range(MAX_JSON_DEPTH):
        at_limit = Node(child=at_limit)
    assert json_value("v", at_limit) == _as_dicts(at_limit)


def test_a_bad_value_inside_a_struct_is_named() -> None:
    with pytest.raises(InvalidInput) as caught:
        json_value("payload", Leaf("a", value={"bad": "\ud800"}))
    assert caught.value.what.startswith("payload")
    with pytest.raises(InvalidInput, match="finite"):
        json_value("payload", Node(child=float("nan")))

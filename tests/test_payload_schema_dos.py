"""Hostile payloads cannot make the payload-schema check slow: it stays linear in (payload size x schema size).

No timed assertions: each hostile check runs with a generous hard limit (:data:`LIMIT_S`) that only
exponential or quadratic behaviour would reach (``re.search`` on these patterns and texts would run for longer
than the universe has existed).  Checks that went through ``re`` run in a subprocess, killed at the limit: a
thread cannot be given up on, as ``re`` holds the GIL for the whole search and the waiting thread never wakes.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lash_store
from lash_store.core.registry.payload_schema import SchemaError, check_schema, json_equal, json_key, problem
from lash_store.errors import InvalidProcessInput
from lash_store.processes import ProcessEventType, ProcessRegistration
from lash_store.sqlite.registry import ProcessRegistry
from lash_store.testing.harness import in_thread
from tests.helpers import listing, snapshot

LIMIT_S = 20.0
N = 20_000

# (pattern, hostile text, whether it matches): the classic catastrophic-backtracking cases.
EVIL: list[tuple[str, str, bool]] = [
    ("(a+)+$", "a" * N + "!", False),
    ("(a|aa)*$", "a" * N + "!", True),  # the empty match at the end
    ("^(a|aa)*$", "a" * N + "!", False),
    ("(a*)*b", "a" * N, False),
    ("^(\\w+\\s?)*$", "a " * (N // 2) + "!", False),
    ("(.*a){20}", "a" * N, True),
    ("(.*a){20}", "a" * 19 + "b" * N, False),
    ("(\\d*)*x", "1" * N, False),
    ("^(a|a?)+$", "a" * N + "b", False),
    ("(x+x+)+y", "x" * N, False),
    (
        "^([a-zA-Z0-9])(([\\-.]|[_]+)?([a-zA-Z0-9]+))*(@){1}[a-z0-9]+[.]{1}(([a-z]{2,3})|([a-z]{2,3}[.]{1}[a-z]{2,3}))$",
        "a" * N + "!",
        False,
    ),
    ("^(([a-z])+.)+[A-Z]([a-z])+$", "a" * N, False),
]


def within_limit(call: Any) -> Any:
    """``call()`` in a thread, given up on after :data:`LIMIT_S` (for checks that never were ``re``'s)."""
    return in_thread(call)(LIMIT_S)


def isolated(source: str, data: Any) -> Any:
    """Run ``source`` in a fresh interpreter with ``data`` as JSON on stdin: the JSON it prints, or a failure."""
    src = str(Path(lash_store.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-c", source]
    try:
        done = subprocess.run(command, input=json.dumps(data), capture_output=True, text=True, env=env, timeout=LIMIT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the check did not finish within {LIMIT_S} s")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


CHECK = """
import json, sys
from lash_store.core.registry.payload_schema import check_schema, problem
schema, payload = json.load(sys.stdin)
check_schema(schema)
print(json.dumps(problem(schema, payload)))
"""


@pytest.mark.parametrize(
    ("pattern", "text", "matches"), EVIL, ids=[f"{i}:{p[:24]}" for i, (p, _, _) in enumerate(EVIL)]
)
def test_evil_patterns_on_hostile_texts_finish_and_answer_right(pattern: str, text: str, matches: bool) -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string", "pattern": pattern}}}
    found = isolated(CHECK, [schema, {"name": text}])
    assert (found is None) is matches, found
    if not matches:
        assert found is not None and found.startswith("/name: does not match the pattern")


def test_a_long_text_against_a_simple_pattern_is_fast_enough() -> None:
    """A megabyte per check, both answers (the search stops at the first match, or at a dead end)."""
    schema = {"items": {"pattern": "^[a-z]+$"}}
    assert within_limit(lambda: problem(schema, ["a" * 1_000_000, "a" * 999_999 + "!"])) is not None
    assert within_limit(lambda: problem({"pattern": "needle"}, "hay" * 300_000 + "needle")) is None


def test_dollar_is_the_end_of_the_text() -> None:
    """ECMA-262's ``$`` (and ``re``'s ``\\Z``): a final newline is not the end, as it would be for ``re``'s ``$``."""
    assert problem({"pattern": "^a+$"}, "aaa") is None
    found = problem({"pattern": "^a+$"}, "aaa\n")
    assert found is not None and "does not match" in found


def test_a_stored_pattern_outside_the_subset_refuses_the_payload() -> None:
    """A schema stored before the subset existed is not checked half-way: every string is refused, saying why."""
    found = problem({"pattern": "(?=a)a"}, "a")
    assert found is not None and "cannot be checked" in found and "lookahead" in found


def test_a_payload_over_the_pattern_work_budget_is_refused_not_checked_for_seconds() -> None:
    rng = random.Random(3)
    text = "".join(rng.choice("ab") for _ in range(100_000))
    found = within_limit(lambda: problem({"pattern": "(a|b)*a.{2000}$"}, text))
    assert found is not None and "cannot be checked" in found and "100,000 characters" in found


@pytest.mark.parametrize(
    ("schema", "where", "reason"),
    [
        ({"pattern": "(a)\\1"}, "/pattern", "backreferences"),
        ({"properties": {"x": {"pattern": "a(?=b)"}}}, "/properties/x/pattern", "lookahead"),
        ({"items": {"anyOf": [{"pattern": "(?i)a"}]}}, "/items/anyOf/0/pattern", "inline flags"),
        ({"pattern": "a{1000}{2}"}, "/pattern", "multiple repeat"),
        ({"pattern": "(a{100}){101}"}, "/pattern", "10000 NFA states"),
    ],
)
def test_refused_patterns_name_the_place_and_the_reason(schema: Any, where: str, reason: str) -> None:
    with pytest.raises(SchemaError) as caught:
        check_schema(schema)
    assert caught.value.where == where
    assert reason in caught.value.detail and "linear time" in caught.value.detail


def test_deepest_schema_with_the_deepest_pattern_stays_under_the_recursion_limit() -> None:
    """128 JSON levels of ``not`` around a pattern nesting 50 groups: checked and matched without RecursionError."""
    pattern = "(" * 50 + "a" + ")" * 50
    schema: Any = {"pattern": pattern}
    for _ in range(63):  # each level is two JSON levels: {"not": {"not": ...}} keeps the answer
        schema = {"not": {"not": schema}}
    check_schema(schema)
    assert problem(schema, "a") is None
    assert problem(schema, "b") is not None


# ---------------------------------------------------------------------------
# Through a real SQLite registry


def _registration(pattern: str) -> ProcessRegistration:
    schema = {"type": "object", "properties": {"name": {"type": "string", "pattern": pattern}}, "required": ["name"]}
    event_type = ProcessEventType(name="job.named", payload_schema=schema)
    return ProcessRegistration.new("p-1", {"cmd": "run"}).with_event_types([event_type])


APPEND = """
import json, sys
from lash_store.errors import InvalidEventPayload
from lash_store.processes import ProcessEventAppendRequest
from lash_store.sqlite.registry import ProcessRegistry
path, payloads = json.load(sys.stdin)
outcomes = []
with ProcessRegistry.open(path) as registry:
    for payload in payloads:
        try:
            appended = registry.append_event("p-1", ProcessEventAppendRequest(event_type="job.named", payload=payload))
            outcomes.append(appended.event.sequence)
        except InvalidEventPayload as exc:
            outcomes.append([exc.what, str(exc)])
print(json.dumps(outcomes))
"""


def test_an_evil_pattern_and_a_hostile_payload_through_the_registry(tmp_path: Path) -> None:
    path = tmp_path / "deployment.db"
    with ProcessRegistry.open(path) as registry:
        registry.register_process(_registration("^(a+)+$"))
    hostile, fine = {"name": "a" * 50_000 + "!"}, {"name": "a" * 50_000}
    refused, accepted = isolated(APPEND, [str(path), [hostile, fine]])
    assert refused[0] == "request.payload" and "/name: does not match the pattern" in refused[1]
    assert accepted == 1
    with ProcessRegistry.open(path) as registry:
        assert [event.payload for event in registry.events_after("p-1", 0)] == [fine]


@pytest.mark.parametrize("pattern", ["(a)\\1", "(?<=a)b", "a++", "(?P<n>a)", "\\bword", "(a{100}){101}", "a{,2}"])
def test_a_refused_pattern_is_a_typed_error_at_register_and_writes_nothing(tmp_path: Path, pattern: str) -> None:
    path = tmp_path / "deployment.db"
    with ProcessRegistry.open(path) as registry:
        before, files = snapshot(path), listing(tmp_path)
        with pytest.raises(InvalidProcessInput) as caught:
            registry.register_process(_registration(pattern))
        assert caught.value.what.startswith("registration.event_types[")  # after the core event types
        assert caught.value.what.endswith("].payload_schema")
        assert "/properties/name/pattern" in str(caught.value)
        assert snapshot(path) == before and listing(tmp_path) == files
        assert registry.get_process("p-1") is None


# ---------------------------------------------------------------------------
# uniqueItems: one canonical text per item, with exactly json_equal's notion of equality

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from([0, 1, -1, 2, 2**53, 2**53 + 1, 10**300, 2**1000]),
    st.sampled_from([0.0, -0.0, 1.0, -1.0, 1.5, 2.0, 2.0**53, 1e300, 2.0**1000, 5e-324]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(-3, 3),
    st.text(alphabet="ab1\u00e9", max_size=2),
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["a", "b", "c"]), inner, max_size=3),
    max_leaves=8,
)


def reordered(value: Any) -> Any:
    """The same JSON value with every object's keys in reverse order."""
    if isinstance(value, dict):
        return {key: reordered(value[key]) for key in reversed(list(value))}
    if isinstance(value, list):
        return [reordered(item) for item in value]
    return value


def pairwise_first_duplicate(items: list[Any]) -> int | None:
    """The earlier implementation: the first item equal to one before it, comparing every pair."""
    for index, item in enumerate(items):
        if any(json_equal(item, other) for other in items[:index]):
            return index
    return None


@settings(max_examples=500, deadline=None)
@given(st.lists(JSON_VALUES, max_size=6), st.lists(st.integers(0, 5), max_size=3))
def test_unique_items_agrees_with_the_pairwise_comparison(items: list[Any], copies: list[int]) -> None:
    items = items + [reordered(items[i]) for i in copies if i < len(items)]
    found = problem({"uniqueItems": True}, items)
    expected = pairwise_first_duplicate(items)
    assert found == (None if expected is None else f"/{expected}: items must be unique")


@settings(max_examples=500, deadline=None)
@given(JSON_VALUES, JSON_VALUES)
def test_json_key_is_json_equal(a: Any, b: Any) -> None:
    assert (json_key(a) == json_key(b)) is json_equal(a, b)
    assert json_key(a) == json_key(reordered(a))


@pytest.mark.parametrize(
    ("a", "b", "equal"),
    [
        (1, 1.0, True),
        (True, 1, False),
        (False, 0.0, False),
        (-0.0, 0, True),
        (2**53 + 1, 2.0**53, False),
        ({"a": 1, "b": [1.0, {"c": True}]}, {"b": [1, {"c": True}], "a": 1.0}, True),
        ({"a": 1}, {"a": 1, "b": None}, False),
        ("1", 1, False),
        ([1, [2.0]], [1.0, [2]], True),
    ],
)
def test_json_key_on_the_edge_cases(a: Any, b: Any, equal: bool) -> None:
    assert json_equal(a, b) is equal
    assert (json_key(a) == json_key(b)) is equal


def test_unique_items_over_100000_items_finishes() -> None:
    items: list[Any] = [{"id": i, "tags": ["x", i * 1.0]} for i in range(100_000)]
    schema = {"type": "array", "uniqueItems": True}
    assert isolated(CHECK, [schema, items]) is None
    duplicate = {"tags": ["x", 5], "id": 5.0}  # item 5 again: 1.0 is 1, key order does not count
    assert isolated(CHECK, [schema, [*items, duplicate]]) == "/100000: items must be unique"


# ---------------------------------------------------------------------------
# JSON pointers and messages are written once, for the failure reported

SCHEMA_WHERE = """
import json, sys
from lash_store.core.registry.payload_schema import SchemaError, check_schema
try:
    check_schema(json.load(sys.stdin))
    print("null")
except SchemaError as exc:
    print(json.dumps([exc.where, exc.detail]))
"""


def test_a_long_key_above_many_failing_nodes_is_not_copied_once_per_node() -> None:
    """Written at every node, the 900 kB key's pointer would be copied 300,000 times (270 GB)."""
    key = "k/~" * 300_000
    schema = {"additionalProperties": {"items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}}}
    pointer = "/" + key.replace("~", "~0").replace("/", "~1")
    assert isolated(CHECK, [schema, {key: [0] * 100_000}]) is None
    found = isolated(CHECK, [schema, {key: [0] * 99_999 + [None]}])
    assert found == f"{pointer}/99999: matches none of the anyOf schemas"


def test_a_long_property_name_above_many_schema_nodes_is_not_copied_once_per_node() -> None:
    """The same at registration: 500,000 keywords under a 4 MB property name (2 TB if copied each time)."""
    name = "n" * 4_000_000
    inner: dict[str, Any] = {
        str(i): {"type": "string", "minLength": 0, "maxLength": 9, "title": "t"} for i in range(100_000)
    }
    assert isolated(SCHEMA_WHERE, {"properties": {name: {"properties": inner}}}) is None
    inner["99999"] = {"type": "float"}
    where, detail = isolated(SCHEMA_WHERE, {"properties": {name: {"properties": inner}}})
    assert where == f"/properties/{name}/properties/99999/type" and detail.startswith("must name types")


@pytest.mark.parametrize(
    ("schema", "value", "message"),
    [
        ({"properties": {"a/b": {"items": {"const": 1}}}}, {"a/b": [1, 2]}, "/a~1b/1: must be 1"),
        ({"additionalProperties": False}, {"x~": 1}, "/: property 'x~' is not allowed"),
        ({"items": {"enum": ["x", True]}}, ["x", 1], '/1: must be one of ["x",true]'),
        ({"not": {"items": {"type": "string"}}}, ["a"], "/: matches the schema under 'not'"),
        ({"oneOf": [{"minLength": 1}, {"maxLength": 3}]}, "ab", "/: must match exactly one oneOf schema, matches 2"),
        ({"items": {"items": {"minimum": 2}}}, [[3], [1]], "/1/0: must be at least 2, got 1"),
        ({"uniqueItems": True, "items": {"type": "object"}}, [{"a": 1}, {"a": 1.0}], "/1: items must be unique"),
    ],
)
def test_messages_name_the_json_pointer_of_the_failure(schema: Any, value: Any, message: str) -> None:
    check_schema(schema)
    assert problem(schema, value) == message
    inside = message.removeprefix("/") if message.startswith("/:") else message  # "/" alone is the root
    assert problem(schema, value, where="/payload") == "/payload" + inside

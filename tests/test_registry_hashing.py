"""Golden vectors of the canonical hashing rule (reference §0.2): the bytes and digests are pinned.

A change to any of these is a change of every stored registration hash,
replay key and wake id: it must be deliberate.  Each vector states the
canonical bytes literally and checks the digest two ways (the pinned hex, and
``hashlib`` over the literal bytes), so the rule itself is visible here.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from lash_store.core.canonical import json_value
from lash_store.errors import InvalidInput
from lash_store.processes import (
    ProcessAwaitOutput,
    ProcessRegistration,
    ProcessScope,
    Selector,
    cancel_replay_key,
    canonical_json,
    payload_hash,
    registration_hash,
    stable_hash,
    wake_id,
)

GOLDEN_REGISTRATION = (
    b'{"event_types":[{"name":"process.cancel_requested","payload_schema":{},"semantics":{}},'
    b'{"name":"process.completed","payload_schema":{},"semantics":{"terminal":{"await_output":'
    b'{"kind":"pointer","path":"/await_output"},"state":"completed"}}},'
    b'{"name":"process.failed","payload_schema":{},"semantics":{"terminal":{"await_output":'
    b'{"kind":"pointer","path":"/await_output"},"state":"failed"}}},'
    b'{"name":"process.cancelled","payload_schema":{},"semantics":{"terminal":{"await_output":'
    b'{"kind":"pointer","path":"/await_output"},"state":"cancelled"}}}],'
    b'"id":"proc-golden","input":{"metadata":null,"type":"external"},'
    b'"provenance":{"host_profile_id":"default","owner_scope":{"session_id":"root"}}}'
)

VECTORS: list[tuple[str, Any, bytes, str]] = [
    (
        "sorted keys, compact, UTF-8, null in arrays kept",
        {"b": 1, "a": [None, "é", 1.5, True]},
        b'{"a":[null,"\xc3\xa9",1.5,true],"b":1}',
        "42c519182ec2fb9437b1942325d4b4bf388e6dc271a3ab6f9422f9b91a21482a",
    ),
    ("tuples are arrays", ("a", 1), b'["a",1]', "135f17a475a61afdeeaf3759ad2e45ad1c7abb192395abe47e41fc8e395dc1a9"),
    (
        "a registration with the core types",
        ProcessRegistration.new("proc-golden", {"type": "external", "metadata": None}),
        GOLDEN_REGISTRATION,
        "a5d0673dfd81b5cd594c0f35f37796166a3abb67d4dfb370c9c32355206f1111",
    ),
    (
        "struct fields holding None are left out",
        ProcessScope(session_id="s"),
        b'{"session_id":"s"}',
        hashlib.sha256(b'{"session_id":"s"}').hexdigest(),
    ),
    (
        "a success output always carries its value",
        ProcessAwaitOutput.success(None),
        b'{"type":"success","value":null}',
        hashlib.sha256(b'{"type":"success","value":null}').hexdigest(),
    ),
    (
        "a failure output names its class",
        ProcessAwaitOutput.failure("execution", "process_failed", "boom", raw="boom"),
        b'{"class":"execution","code":"process_failed","message":"boom","raw":"boom","type":"failure"}',
        hashlib.sha256(
            b'{"class":"execution","code":"process_failed","message":"boom","raw":"boom","type":"failure"}'
        ).hexdigest(),
    ),
    (
        "a const selector of null has no value field",
        Selector.const(None),
        b'{"kind":"const"}',
        hashlib.sha256(b'{"kind":"const"}').hexdigest(),
    ),
]


@pytest.mark.parametrize(("value", "expected", "digest"), [v[1:] for v in VECTORS], ids=[v[0] for v in VECTORS])
def test_golden_vectors(value: Any, expected: bytes, digest: str) -> None:
    assert canonical_json(value) == expected
    assert stable_hash(value) == digest == hashlib.sha256(expected).hexdigest()


def test_registration_hash_is_the_hash_of_the_normalised_registration() -> None:
    registration = ProcessRegistration.new("proc-golden", {"type": "external", "metadata": None})
    assert registration_hash(registration) == "a5d0673dfd81b5cd594c0f35f37796166a3abb67d4dfb370c9c32355206f1111"


def test_derived_ids() -> None:
    assert payload_hash("producer.line", {"line": "x"}) == (
        "ecf2b7497dcd6a04e11af7e19bda5ba97c891161dec38032557f8689bce9dcfa"
    )
    assert payload_hash("producer.line", {"line": "x"}) == hashlib.sha256(b'["producer.line",{"line":"x"}]').hexdigest()
    assert wake_id("session:s1", "p:1") == "wake:ce3c4655748c03ea794bcbd2ec5b3469a387393ac44846c3e6ec8616ae858651"
    assert wake_id("session:s1", "p:1") == "wake:" + hashlib.sha256(b'["session:s1","p:1"]').hexdigest()
    assert cancel_replay_key("p", "stop") == (
        "process:p:cancel_requested:85a6238fa9840bc3105d1a06ca03df61803080fefa838ab687d36662275be019"
    )
    expected = hashlib.sha256(b'["process.cancel_requested",{"reason":null}]').hexdigest()
    assert cancel_replay_key("p", None) == f"process:p:cancel_requested:{expected}"


def test_key_order_and_nested_nulls_do_not_matter_but_values_do() -> None:
    assert stable_hash({"a": 1, "b": [None]}) == stable_hash({"b": [None], "a": 1})
    assert stable_hash({"a": None}) != stable_hash({})  # inside opaque data a null is a value
    assert stable_hash(1) != stable_hash(1.0) and stable_hash(True) != stable_hash(1)


@pytest.mark.parametrize(
    ("value", "detail"),
    [
        (float("nan"), "finite"),
        (float("inf"), "finite"),
        ({1: "x"}, "keys are strings"),
        ({"x": b"bytes"}, "plain JSON"),
        ({"x": {1, 2}}, "plain JSON"),
        ("\ud800", "UTF-8"),
        ([[[[[]]]]] * 1, None),
    ],
)
def test_only_plain_json_is_accepted(value: Any, detail: str | None) -> None:
    if detail is None:
        assert json_value("payload", value) == value
        return
    with pytest.raises(InvalidInput, match=detail) as raised:
        json_value("payload", value)
    assert raised.value.what.startswith("payload")


def test_nesting_is_bounded() -> None:
    deep: Any = "leaf"
    for _ in range(200):
        deep = [deep]
    with pytest.raises(InvalidInput, match="deeper"):
        json_value("payload", deep)

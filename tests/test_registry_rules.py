"""The registry's pure rules: JSON pointers, string forms, truthiness, await-output shapes and the schema subset."""

from __future__ import annotations

from typing import Any

import pytest

from lash_store.core.registry.payload_schema import SchemaError, check_schema, problem
from lash_store.core.registry.semantics import await_output_of, select, string_form, truthy
from lash_store.errors import SelectorMismatch
from lash_store.processes import ProcessAwaitOutput, Selector

DOC = {"a/b": 1, "m~n": 2, "list": [10, 20], "nested": {"x": None}, "": 3}


@pytest.mark.parametrize(
    ("path", "expected"),
    [("", DOC), ("/a~1b", 1), ("/m~0n", 2), ("/list/1", 20), ("/nested/x", None), ("/", 3)],
)
def test_json_pointers_resolve(path: str, expected: Any) -> None:
    assert select(Selector.pointer(path), DOC) == expected


@pytest.mark.parametrize("path", ["/list/2", "/list/01", "/list/-", "/nope", "/nested/x/y", "no-slash", "/bad~2"])
def test_json_pointers_that_do_not_resolve(path: str) -> None:
    with pytest.raises(SelectorMismatch):
        select(Selector.pointer(path), DOC)
    assert select(Selector.present(path), DOC) is False


def test_string_form() -> None:
    assert string_form("text") == "text"
    assert string_form(7) == "7" and string_form(True) == "true" and string_form(None) == "null"
    assert string_form({"b": 1, "a": [1]}) == '{"a":[1],"b":1}'


def test_templates_fill_known_fields_once_and_leave_the_rest() -> None:
    template = Selector.template("{a} and {b} and {unknown}", {"a": Selector.const("{b}"), "b": Selector.const(2)})
    assert select(template, {}) == "{b} and 2 and {unknown}"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, False),
        (False, False),
        (True, True),
        (0, True),
        (0.0, True),
        ("", False),
        ("x", True),
        ([], False),
        ([0], True),
        ({}, False),
        ({"a": 1}, True),
    ],
)
def test_truthiness(value: Any, expected: bool) -> None:
    assert truthy(value) is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"type": "success", "value": None}, ProcessAwaitOutput.success(None)),
        ({"type": "success"}, None),
        (
            {"type": "failure", "class": "c", "code": "k", "message": "m", "raw": 1},
            ProcessAwaitOutput.failure("c", "k", "m", raw=1),
        ),
        ({"type": "failure", "class": "c", "code": "k"}, None),
        ({"type": "cancelled", "message": "m"}, ProcessAwaitOutput.cancelled("m")),
        ({"type": "cancelled", "message": 5}, None),
        ({"type": "other"}, None),
        ("success", None),
    ],
)
def test_await_output_shapes(value: Any, expected: ProcessAwaitOutput | None) -> None:
    assert await_output_of(value) == expected


OBJECT = {
    "type": "object",
    "properties": {"line": {"type": "string", "minLength": 1}, "n": {"type": "integer", "minimum": 0}},
    "required": ["line"],
    "additionalProperties": False,
}


@pytest.mark.parametrize(
    ("schema", "value", "where"),
    [
        (OBJECT, {"line": "x"}, None),
        (OBJECT, {"line": "x", "n": 2.0}, None),
        (OBJECT, {"n": 1}, "/: missing required property 'line'"),
        (OBJECT, {"line": ""}, "/line: at least 1"),
        (OBJECT, {"line": "x", "n": -1}, "/n: must be at least 0"),
        (OBJECT, {"line": "x", "n": True}, "/n: expected integer, got boolean"),
        (OBJECT, {"line": "x", "extra": 1}, "property 'extra' is not allowed"),
        (OBJECT, [], "expected object"),
        ({"type": ["string", "null"]}, None, None),
        ({"type": "number"}, 3, None),
        ({"enum": [1, "a"]}, 1.0, None),
        ({"enum": [1, "a"]}, True, "must be one of"),
        ({"const": {"a": [1]}}, {"a": [1.0]}, None),
        ({"items": {"type": "string"}, "maxItems": 2}, ["a", 1], "/1: expected string"),
        ({"uniqueItems": True}, [1, 1.0], "/1: items must be unique"),
        ({"pattern": "^a+$"}, "aab", "does not match"),
        ({"pattern": "^a+$"}, "aa\n", "does not match"),  # $ is the end of the text (ECMA-262), as re's \Z
        ({"pattern": "a(b|c)*?d"}, "xabcbd", None),
        ({"pattern": "^[\\w.-]{1,64}@[^@\\s]+$"}, "ann.lee@example.org", None),
        ({"anyOf": [{"type": "string"}, {"type": "integer"}]}, 2, None),
        ({"oneOf": [{"type": "number"}, {"type": "integer"}]}, 2, "exactly one"),
        ({"not": {"type": "null"}}, None, "matches the schema under 'not'"),
        ({"multipleOf": 3}, 9, None),
        ({"multipleOf": 0.5}, 1.25, "multiple of"),
        # multipleOf divides the decimals the JSON says, exactly (not their nearest binary fractions):
        ({"multipleOf": 0.1}, 0.3, None),  # 0.3 / 0.1 is 2.9999999999999996 in floats
        ({"multipleOf": 0.01}, 19.99, None),
        ({"multipleOf": 3}, 1e17, "multiple of"),  # 1e17 / 3 rounds to a whole float
        ({"multipleOf": 3}, 3e17, None),
        ({"multipleOf": 2**4000}, 0.0, None),  # the float division overflowed
        ({"multipleOf": 2**4000}, 2**4001, None),
        ({"multipleOf": 1e-300}, 1e300, None),
        ({"multipleOf": 0.7}, 2**4095, "multiple of"),
        ({"multipleOf": 1.5}, 4.5, None),
        (True, {"anything": 1}, None),
        (False, 1, "no value is allowed"),
        ({"title": "annotations are ignored", "description": "x"}, 1, None),
    ],
)
def test_payload_schema_subset(schema: Any, value: Any, where: str | None) -> None:
    check_schema(schema)
    found = problem(schema, value)
    if where is None:
        assert found is None
    else:
        assert found is not None and where in found


@pytest.mark.parametrize(
    "schema",
    [
        {"patternProperties": {}},
        {"$ref": "#/defs/x"},
        {"type": "float"},
        {"required": "line"},
        {"properties": {"x": 5}},
        {"minLength": -1},
        {"pattern": "("},
        {"pattern": "a(?=b)"},
        {"pattern": "(a)\\1"},
        {"pattern": "a{,3}"},
        {"pattern": "(a{100}){101}"},
        {"anyOf": []},
        {"multipleOf": 0},
        [],
    ],
)
def test_schemas_the_validator_cannot_check_are_refused(schema: Any) -> None:
    with pytest.raises(SchemaError):
        check_schema(schema)

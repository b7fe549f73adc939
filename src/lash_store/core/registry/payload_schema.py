"""The JSON Schema subset an event type's payload is checked against.

The registry checks payloads itself instead of depending on a JSON Schema
library.  A schema may use the keywords below; one that uses any other keyword
is refused when the process is registered (:func:`check_schema`), so a schema
is never silently half-enforced.

* ``true`` / ``{}`` accept everything, ``false`` nothing;
* ``type`` (a name or a list of names: ``null``, ``boolean``, ``integer``, ``number``, ``string``,
  ``array``, ``object``; ``1.0`` is an integer, ``true`` is not a number), ``enum``, ``const``;
* objects: ``properties``, ``required``, ``additionalProperties`` (boolean or schema),
  ``minProperties``, ``maxProperties``;
* arrays: ``items`` (one schema for every item), ``minItems``, ``maxItems``, ``uniqueItems``;
* strings: ``minLength``, ``maxLength`` (code points), ``pattern`` (searched, in the linear-time subset of
  :mod:`.pattern`: ``^``/``$`` anchor, ``$`` is the end of the text; lookaround, backreferences and the like
  are refused at registration, so a payload cannot make the check backtrack for minutes);
* numbers: ``minimum``, ``maximum``, ``exclusiveMinimum``, ``exclusiveMaximum`` (numbers), ``multipleOf``;
* combinators: ``allOf``, ``anyOf``, ``oneOf``, ``not``;
* annotations, ignored: ``title``, ``description``, ``default``, ``examples``, ``format``, ``$schema``,
  ``$id``, ``$comment``, ``deprecated``, ``readOnly``, ``writeOnly``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from lash_store.core.canonical import canonical_text
from lash_store.core.registry.pattern import PatternError, compile_pattern

__all__ = ["SchemaError", "check_schema", "json_equal", "json_key", "problem"]

_TYPES = ("null", "boolean", "integer", "number", "string", "array", "object")
_ANNOTATIONS = frozenset(
    {"title", "description", "default", "examples", "format", "$schema", "$id", "$comment", "deprecated", "readOnly"}
    | {"writeOnly"}
)
_COUNTS = ("minProperties", "maxProperties", "minItems", "maxItems", "minLength", "maxLength")
_NUMBERS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf")
_SCHEMA_LISTS = ("allOf", "anyOf", "oneOf")


class SchemaError(ValueError):
    """A schema the registry cannot check; ``where`` is the JSON path inside the schema."""

    def __init__(self, where: str, detail: str) -> None:
        self.where = where
        self.detail = detail
        super().__init__(f"{where or '/'}: {detail}")


# ---------------------------------------------------------------------------
# Checking a schema (at registration)


def check_schema(schema: Any, where: str = "") -> None:
    """Raise :class:`SchemaError` unless ``schema`` uses only the supported keywords, well-formed."""
    if isinstance(schema, bool):
        return
    if not isinstance(schema, dict):
        raise SchemaError(where, "a schema is an object or a boolean")
    for keyword, value in schema.items():
        _CHECKS.get(keyword, _unknown)(keyword, value, f"{where}/{keyword}")


def _unknown(keyword: str, value: Any, where: str) -> None:
    if keyword not in _ANNOTATIONS:
        raise SchemaError(where, f"keyword {keyword!r} is not supported by the registry's validator")


def _check_type(keyword: str, value: Any, where: str) -> None:
    names = value if isinstance(value, list) else [value]
    if not names or any(name not in _TYPES for name in names):
        raise SchemaError(where, f"must name types among {', '.join(_TYPES)}")


def _check_enum(keyword: str, value: Any, where: str) -> None:
    if not isinstance(value, list):
        raise SchemaError(where, "must be an array")


def _check_const(keyword: str, value: Any, where: str) -> None:
    return


def _check_properties(keyword: str, value: Any, where: str) -> None:
    if not isinstance(value, dict):
        raise SchemaError(where, "must be an object of schemas")
    for name, sub in value.items():
        check_schema(sub, f"{where}/{name}")


def _check_required(keyword: str, value: Any, where: str) -> None:
    if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
        raise SchemaError(where, "must be an array of property names")


def _check_subschema(keyword: str, value: Any, where: str) -> None:
    check_schema(value, where)


def _check_count(keyword: str, value: Any, where: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SchemaError(where, "must be a non-negative integer")


def _check_number(keyword: str, value: Any, where: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SchemaError(where, "must be a number")
    if keyword == "multipleOf" and not value > 0:
        raise SchemaError(where, "must be greater than 0")


def _check_unique(keyword: str, value: Any, where: str) -> None:
    if not isinstance(value, bool):
        raise SchemaError(where, "must be a boolean")


def _check_pattern(keyword: str, value: Any, where: str) -> None:
    if not isinstance(value, str):
        raise SchemaError(where, "must be a string")
    try:
        compile_pattern(value)
    except PatternError as exc:
        raise SchemaError(where, f"is not a pattern the registry can check in linear time: {exc}") from None


def _check_schema_list(keyword: str, value: Any, where: str) -> None:
    if not isinstance(value, list) or not value:
        raise SchemaError(where, "must be a non-empty array of schemas")
    for index, sub in enumerate(value):
        check_schema(sub, f"{where}/{index}")


_CHECKS: dict[str, Callable[[str, Any, str], None]] = {
    "type": _check_type,
    "enum": _check_enum,
    "const": _check_const,
    "properties": _check_properties,
    "required": _check_required,
    "additionalProperties": _check_subschema,
    "items": _check_subschema,
    "not": _check_subschema,
    "uniqueItems": _check_unique,
    "pattern": _check_pattern,
    **dict.fromkeys(_COUNTS, _check_count),
    **dict.fromkeys(_NUMBERS, _check_number),
    **dict.fromkeys(_SCHEMA_LISTS, _check_schema_list),
}


# ---------------------------------------------------------------------------
# Validating a payload (at append)


def problem(schema: Any, value: Any, where: str = "") -> str | None:
    """The first way ``value`` breaks ``schema`` (``"<json pointer>: <what>"``), or ``None`` when it conforms."""
    if schema is True or schema == {}:
        return None
    if schema is False:
        return f"{where or '/'}: no value is allowed here"
    for keyword, expected in schema.items():
        rule = _RULES.get(keyword)
        found = None if rule is None else rule(expected, value, where, schema)
        if found is not None:
            return found
    return None


def _at(where: str, detail: str) -> str:
    return f"{where or '/'}: {detail}"


def _type_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _type(expected: Any, value: Any, where: str, schema: dict[str, Any]) -> str | None:
    names = expected if isinstance(expected, list) else [expected]
    actual = _type_of(value)
    if actual in names or (actual == "integer" and "number" in names):
        return None
    return _at(where, f"expected {' or '.join(names)}, got {actual}")


def json_equal(a: Any, b: Any) -> bool:
    """JSON equality: ``1 == 1.0``, but ``true`` is not ``1``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def json_key(value: Any) -> str:
    """A text two JSON values share exactly when :func:`json_equal` holds between them (one per value: linear)."""
    return json.dumps(_integral_as_int(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _integral_as_int(value: Any) -> Any:
    # 1 and 1.0 are one JSON number, and an integral float's int is exact, so both are written as the int;
    # booleans stay booleans (``true`` is written "true", not 1); object keys are sorted by json.dumps.
    if isinstance(value, float):
        return int(value) if value.is_integer() else value
    if isinstance(value, list):
        return [_integral_as_int(item) for item in value]
    if isinstance(value, dict):
        return {key: _integral_as_int(item) for key, item in value.items()}
    return value


def _enum(expected: Any, value: Any, where: str, schema: dict[str, Any]) -> str | None:
    if any(json_equal(value, option) for option in expected):
        return None
    return _at(where, f"must be one of {canonical_text(expected)}")


def _const(expected: Any, value: Any, where: str, schema: dict[str, Any]) -> str | None:
    return None if json_equal(value, expected) else _at(where, f"must be {canonical_text(expected)}")


def _properties(expected: Any, value: Any, where: str, schema: dict[str, Any]) -> str | None:
    if not isinstance(value, dict):
        return None
    for name, sub in expected.items():
        if name in value:
            found = problem(sub, value[name], f"{where}/{_escape(name)}")
            if found is not None:
                return found
    return None


def _required(expected: Any, value: Any, where: str, schema: dict[str, Any]) -> str | None:
    if not isinstance(value, dict):
        return None
    missing = [name for name in expected if name not in value]
    return _at(where, f"missing required property {missing[0]!r}") if missing else None


def _additional(expected: Any, value: Any, where: str, schema: dict[str, Any]) -> str | None:
    if not isinstance(value, dict):
        return None
    declared = schema.get("properties", {})
    for name, item in value.items():
        if name in declared:
            continue
        if expected is False:
            return _at(where, f"property {name!r} is not allowed")
        found = problem(expected, item, f"{where}/{_escape(name)}")
        if found is not None:
            return found
    return None


def _items(expected: Any, value: Any, where: str, schema: dict[str, Any]) -> str | None:
    if not isinstance(value, list):
        return None
    for index, item in enumerate(value):
        found = problem(expected, item, f"{where}/{index}")
        if found is not None:
            return found
    return None


def _size(value: Any) -> int | None:
    if isinstance(value, (dict, list, str)):
        return len(value)
    return None


def _bound(kind: type, low: bool) -> Callable[[Any, Any, str, dict[str, Any]], str | None]:
    def rule(expected: Any, value: Any, where: str, schema: dict[str, Any]) -> str | None:
        size = _size(value) if isinstance(value, kind) else None
        if size is None or (size >= expected if low else size <= expected):
            return None
        return _at(where, f"{'at least' if low else 'at most'} {expected} expected, got {size}")

    return rule


def _unique(expected: Any, value: Any, where: str, schema: dict[str, Any]) -> str | None:
    if not expected or not isinstance(value, list):
        return None
    # One canonical text per item and a set, not every pair: 100,000 items would be 5e9 comparisons.
    seen: set[str] = set()
    for index, item in enumerate(value):
        key = json_key(item)
        if key in seen:
            return _at(f"{where}/{index}", "items must be unique")
        seen.add(key)
    return None


def _pattern(expected: Any, value: Any, where: str, schema: dict[str, Any]) -> str | None:
    if not isinstance(value, str):
        return None
    try:
        matched = compile_pattern(expected).search(value)
    except PatternError as exc:  # a schema registered before patterns were held to the linear-time subset
        return _at(where, f"the pattern {expected!r} cannot be checked ({exc})")
    return None if matched else _at(where, f"does not match the pattern {expected!r}")


def _number(value: Any) -> float | int | None:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _compare(test: Callable[[Any, Any], bool], words: str) -> Callable[[Any, Any, str, dict[str, Any]], str | None]:
    def rule(expected: Any, value: Any, where: str, schema: dict[str, Any]) -> str | None:
        number = _number(value)
        if number is None or test(number, expected):
            return None
        return _at(where, f"must be {words} {expected}, got {number}")

    return rule


def _multiple(expected: Any, value: Any, where: str, schema: dict[str, Any]) -> str | None:
    number = _number(value)
    if number is None:
        return None
    if isinstance(number, int) and isinstance(expected, int):
        if number % expected == 0:
            return None
    else:
        try:
            quotient = number / expected
        except OverflowError:
            quotient = math.inf
        if math.isfinite(quotient) and quotient.is_integer():
            return None
    return _at(where, f"must be a multiple of {expected}")


def _all_of(expected: Any, value: Any, where: str, schema: dict[str, Any]) -> str | None:
    for sub in expected:
        found = problem(sub, value, where)
        if found is not None:
            return found
    return None


def _any_of(expected: Any, value: Any, where: str, schema: dict[str, Any]) -> str | None:
    if any(problem(sub, value, where) is None for sub in expected):
        return None
    return _at(where, "matches none of the anyOf schemas")


def _one_of(expected: Any, value: Any, where: str, schema: dict[str, Any]) -> str | None:
    matches = sum(problem(sub, value, where) is None for sub in expected)
    return None if matches == 1 else _at(where, f"must match exactly one oneOf schema, matches {matches}")


def _not(expected: Any, value: Any, where: str, schema: dict[str, Any]) -> str | None:
    return _at(where, "matches the schema under 'not'") if problem(expected, value, where) is None else None


def _escape(name: str) -> str:
    return name.replace("~", "~0").replace("/", "~1")


_RULES: dict[str, Callable[[Any, Any, str, dict[str, Any]], str | None]] = {
    "type": _type,
    "enum": _enum,
    "const": _const,
    "properties": _properties,
    "required": _required,
    "additionalProperties": _additional,
    "items": _items,
    "minProperties": _bound(dict, True),
    "maxProperties": _bound(dict, False),
    "minItems": _bound(list, True),
    "maxItems": _bound(list, False),
    "minLength": _bound(str, True),
    "maxLength": _bound(str, False),
    "uniqueItems": _unique,
    "pattern": _pattern,
    "minimum": _compare(lambda n, e: n >= e, "at least"),
    "maximum": _compare(lambda n, e: n <= e, "at most"),
    "exclusiveMinimum": _compare(lambda n, e: n > e, "greater than"),
    "exclusiveMaximum": _compare(lambda n, e: n < e, "less than"),
    "multipleOf": _multiple,
    "allOf": _all_of,
    "anyOf": _any_of,
    "oneOf": _one_of,
    "not": _not,
}

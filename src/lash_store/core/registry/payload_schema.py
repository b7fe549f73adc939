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
  are refused at registration);
* numbers: ``minimum``, ``maximum``, ``exclusiveMinimum``, ``exclusiveMaximum`` (numbers), ``multipleOf``;
* combinators: ``allOf``, ``anyOf``, ``oneOf``, ``not``;
* annotations, ignored: ``title``, ``description``, ``default``, ``examples``, ``format``, ``$schema``,
  ``$id``, ``$comment``, ``deprecated``, ``readOnly``, ``writeOnly``.

A payload is hostile input, and it is checked while its append holds the
process row's lock, so a check costs time linear in (payload size x schema
size) whatever the payload: each schema node meets each payload node at most
once (schemas have no ``$ref``), and a meeting costs at most the product of
their own sizes.  Hence ``pattern`` is not Python's backtracking ``re`` but an
NFA (:mod:`.pattern`: at most :data:`~.pattern.MAX_STATES` steps per
character, usually one); ``uniqueItems`` looks up one canonical text per item
instead of comparing every pair; and the JSON pointer and message of a failure
are only written out for the failure that is reported (written at every node,
a long key would be copied once per node below it, and ``anyOf``, ``oneOf``
and ``not`` throw most failures away).  ``enum`` and ``const`` compare with
each option, which is within the bound; depth is bounded by the JSON checks.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from fractions import Fraction
from typing import Any, NamedTuple

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


class _Path(NamedTuple):
    """A place in a JSON document, one link per step: written out only for the one message that is returned."""

    parent: _Path | None
    token: str | int


def _written(path: _Path | None, escape: bool) -> str:
    tokens: list[str | int] = []
    while path is not None:
        tokens.append(path.token)
        path = path.parent
    return "".join(f"/{_escape(t) if escape and isinstance(t, str) else t}" for t in reversed(tokens))


# ---------------------------------------------------------------------------
# Checking a schema (at registration)


class _Refusal(Exception):
    def __init__(self, path: _Path | None, detail: str) -> None:
        self.path = path
        self.detail = detail


def check_schema(schema: Any, where: str = "") -> None:
    """Raise :class:`SchemaError` unless ``schema`` uses only the supported keywords, well-formed."""
    try:
        _check(schema, None)
    except _Refusal as refusal:
        raise SchemaError(where + _written(refusal.path, escape=False), refusal.detail) from None


def _check(schema: Any, path: _Path | None) -> None:
    if isinstance(schema, bool):
        return
    if not isinstance(schema, dict):
        raise _Refusal(path, "a schema is an object or a boolean")
    for keyword, value in schema.items():
        _CHECKS.get(keyword, _unknown)(keyword, value, _Path(path, keyword))


def _unknown(keyword: str, value: Any, path: _Path) -> None:
    if keyword not in _ANNOTATIONS:
        raise _Refusal(path, f"keyword {keyword!r} is not supported by the registry's validator")


def _check_type(keyword: str, value: Any, path: _Path) -> None:
    names = value if isinstance(value, list) else [value]
    if not names or any(name not in _TYPES for name in names):
        raise _Refusal(path, f"must name types among {', '.join(_TYPES)}")


def _check_enum(keyword: str, value: Any, path: _Path) -> None:
    if not isinstance(value, list):
        raise _Refusal(path, "must be an array")


def _check_const(keyword: str, value: Any, path: _Path) -> None:
    return


def _check_properties(keyword: str, value: Any, path: _Path) -> None:
    if not isinstance(value, dict):
        raise _Refusal(path, "must be an object of schemas")
    for name, sub in value.items():
        _check(sub, _Path(path, name))


def _check_required(keyword: str, value: Any, path: _Path) -> None:
    if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
        raise _Refusal(path, "must be an array of property names")


def _check_subschema(keyword: str, value: Any, path: _Path) -> None:
    _check(value, path)


def _check_count(keyword: str, value: Any, path: _Path) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _Refusal(path, "must be a non-negative integer")


def _check_number(keyword: str, value: Any, path: _Path) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Refusal(path, "must be a number")
    if keyword == "multipleOf" and not value > 0:
        raise _Refusal(path, "must be greater than 0")


def _check_unique(keyword: str, value: Any, path: _Path) -> None:
    if not isinstance(value, bool):
        raise _Refusal(path, "must be a boolean")


def _check_pattern(keyword: str, value: Any, path: _Path) -> None:
    if not isinstance(value, str):
        raise _Refusal(path, "must be a string")
    try:
        compile_pattern(value)
    except PatternError as exc:
        raise _Refusal(path, f"is not a pattern the registry can check in linear time: {exc}") from None


def _check_schema_list(keyword: str, value: Any, path: _Path) -> None:
    if not isinstance(value, list) or not value:
        raise _Refusal(path, "must be a non-empty array of schemas")
    for index, sub in enumerate(value):
        _check(sub, _Path(path, index))


_CHECKS: dict[str, Callable[[str, Any, _Path], None]] = {
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


class _Miss(NamedTuple):
    """Where a value breaks its schema, and what is wrong (a text, or a function that writes it when needed)."""

    path: _Path | None
    detail: str | Callable[[], str]


_Rule = Callable[[Any, Any, _Path | None, dict[str, Any]], _Miss | None]


def problem(schema: Any, value: Any, where: str = "") -> str | None:
    """The first way ``value`` breaks ``schema`` (``"<json pointer>: <what>"``), or ``None`` when it conforms."""
    miss = _problem(schema, value, None)
    if miss is None:
        return None
    detail = miss.detail if isinstance(miss.detail, str) else miss.detail()
    return f"{(where + _written(miss.path, escape=True)) or '/'}: {detail}"


def _problem(schema: Any, value: Any, path: _Path | None) -> _Miss | None:
    if schema is True or schema == {}:
        return None
    if schema is False:
        return _Miss(path, "no value is allowed here")
    for keyword, expected in schema.items():
        rule = _RULES.get(keyword)
        found = None if rule is None else rule(expected, value, path, schema)
        if found is not None:
            return found
    return None


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


def _type(expected: Any, value: Any, path: _Path | None, schema: dict[str, Any]) -> _Miss | None:
    names = expected if isinstance(expected, list) else [expected]
    actual = _type_of(value)
    if actual in names or (actual == "integer" and "number" in names):
        return None
    return _Miss(path, lambda: f"expected {' or '.join(names)}, got {actual}")


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


def _enum(expected: Any, value: Any, path: _Path | None, schema: dict[str, Any]) -> _Miss | None:
    if any(json_equal(value, option) for option in expected):
        return None
    return _Miss(path, lambda: f"must be one of {canonical_text(expected)}")


def _const(expected: Any, value: Any, path: _Path | None, schema: dict[str, Any]) -> _Miss | None:
    return None if json_equal(value, expected) else _Miss(path, lambda: f"must be {canonical_text(expected)}")


def _properties(expected: Any, value: Any, path: _Path | None, schema: dict[str, Any]) -> _Miss | None:
    if not isinstance(value, dict):
        return None
    for name, sub in expected.items():
        if name in value:
            found = _problem(sub, value[name], _Path(path, name))
            if found is not None:
                return found
    return None


def _required(expected: Any, value: Any, path: _Path | None, schema: dict[str, Any]) -> _Miss | None:
    if not isinstance(value, dict):
        return None
    missing = [name for name in expected if name not in value]
    return _Miss(path, f"missing required property {missing[0]!r}") if missing else None


def _additional(expected: Any, value: Any, path: _Path | None, schema: dict[str, Any]) -> _Miss | None:
    if not isinstance(value, dict):
        return None
    declared = schema.get("properties", {})
    for name, item in value.items():
        if name in declared:
            continue
        if expected is False:
            return _not_allowed(path, name)
        found = _problem(expected, item, _Path(path, name))
        if found is not None:
            return found
    return None


def _not_allowed(path: _Path | None, name: str) -> _Miss:
    return _Miss(path, lambda: f"property {name!r} is not allowed")


def _items(expected: Any, value: Any, path: _Path | None, schema: dict[str, Any]) -> _Miss | None:
    if not isinstance(value, list):
        return None
    for index, item in enumerate(value):
        found = _problem(expected, item, _Path(path, index))
        if found is not None:
            return found
    return None


def _size(value: Any) -> int | None:
    if isinstance(value, (dict, list, str)):
        return len(value)
    return None


def _bound(kind: type, low: bool) -> _Rule:
    def rule(expected: Any, value: Any, path: _Path | None, schema: dict[str, Any]) -> _Miss | None:
        size = _size(value) if isinstance(value, kind) else None
        if size is None or (size >= expected if low else size <= expected):
            return None
        return _Miss(path, lambda: f"{'at least' if low else 'at most'} {expected} expected, got {size}")

    return rule


def _unique(expected: Any, value: Any, path: _Path | None, schema: dict[str, Any]) -> _Miss | None:
    if not expected or not isinstance(value, list):
        return None
    # One canonical text per item and a set, not every pair: 100,000 items would be 5e9 comparisons.
    seen: set[str] = set()
    for index, item in enumerate(value):
        key = json_key(item)
        if key in seen:
            return _Miss(_Path(path, index), "items must be unique")
        seen.add(key)
    return None


def _pattern(expected: Any, value: Any, path: _Path | None, schema: dict[str, Any]) -> _Miss | None:
    if not isinstance(value, str):
        return None
    try:
        matched = compile_pattern(expected).search(value)
    except PatternError as exc:  # a pattern stored before the subset was enforced, or a text over the budget
        return _Miss(path, f"the pattern {expected!r} cannot be checked ({exc})")
    return None if matched else _Miss(path, lambda: f"does not match the pattern {expected!r}")


def _number(value: Any) -> float | int | None:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _compare(test: Callable[[Any, Any], bool], words: str) -> _Rule:
    def rule(expected: Any, value: Any, path: _Path | None, schema: dict[str, Any]) -> _Miss | None:
        number = _number(value)
        if number is None or test(number, expected):
            return None
        return _Miss(path, lambda: f"must be {words} {expected}, got {number}")

    return rule


def _multiple(expected: Any, value: Any, path: _Path | None, schema: dict[str, Any]) -> _Miss | None:
    number = _number(value)
    if number is None:
        return None
    if isinstance(number, int) and isinstance(expected, int):
        if number % expected == 0:  # the common case, without fractions
            return None
    elif (_decimal(number) / _decimal(expected)).denominator == 1:
        return None
    return _Miss(path, lambda: f"must be a multiple of {expected}")


def _decimal(number: float | int) -> Fraction:
    """``number`` as the decimal it is written as in JSON, exactly.

    ``multipleOf`` divides the JSON numbers, which are decimals: a float is taken as its shortest repr (what
    the payload's text said, ``0.3`` and not the binary fraction nearest to it), so ``0.3`` is a multiple of
    ``0.1``, ``1e17`` is not one of ``3``, and nothing overflows (integers are bounded by the JSON checks).
    """
    return Fraction(Decimal(repr(number))) if isinstance(number, float) else Fraction(number)


def _all_of(expected: Any, value: Any, path: _Path | None, schema: dict[str, Any]) -> _Miss | None:
    for sub in expected:
        found = _problem(sub, value, path)
        if found is not None:
            return found
    return None


def _any_of(expected: Any, value: Any, path: _Path | None, schema: dict[str, Any]) -> _Miss | None:
    if any(_problem(sub, value, path) is None for sub in expected):
        return None
    return _Miss(path, "matches none of the anyOf schemas")


def _one_of(expected: Any, value: Any, path: _Path | None, schema: dict[str, Any]) -> _Miss | None:
    matches = sum(_problem(sub, value, path) is None for sub in expected)
    return None if matches == 1 else _Miss(path, f"must match exactly one oneOf schema, matches {matches}")


def _not(expected: Any, value: Any, path: _Path | None, schema: dict[str, Any]) -> _Miss | None:
    return _Miss(path, "matches the schema under 'not'") if _problem(expected, value, path) is None else None


def _escape(name: str) -> str:
    return name.replace("~", "~0").replace("/", "~1")


_RULES: dict[str, _Rule] = {
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

"""Canonical JSON and the stable hash (reference §0.2): one rule, decided once, used for every derived id.

``canonical_json(v)`` is the UTF-8 encoding of ``json.dumps(plain(v),
sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)``
and ``stable_hash(v)`` its lowercase hex SHA-256.  ``plain`` turns typed values
(``msgspec.Struct``) into plain JSON data, leaving out every struct field whose
value is ``None`` (so adding an optional field later does not change old
hashes); tuples become arrays; opaque JSON values -- and ``null`` inside lists
and objects -- are kept exactly as given.

:func:`json_value` checks a caller's opaque value before anything is hashed or
stored: JSON types only, text keys, finite numbers, valid UTF-8, bounded depth.
:func:`json_value_text` returns that value and its canonical text from one walk.

The text is written by ``msgspec`` (sorted keys) when the walk met nothing but exact ``str`` keys and
exact ``str``/``int``/``bool``/``None`` leaves in dicts and lists: for those its bytes are
``json.dumps``'s (proved by tests/test_canonical_fast.py, a differential test over arbitrary values).
Anything else -- a float (``msgspec`` writes ``1e16`` where ``json`` writes ``1e+16``), a subclass, an
object ``json`` would refuse -- takes ``json.dumps`` itself.
"""

from __future__ import annotations

import enum
import hashlib
import itertools
import json
import math
import threading
from collections.abc import Callable
from typing import Any

import msgspec

from lash_store.errors import InvalidInput

__all__ = [
    "MAX_JSON_DEPTH",
    "Verbatim",
    "canonical_json",
    "canonical_text",
    "json_value",
    "json_value_text",
    "plain",
    "stable_hash",
]

#: How deeply opaque JSON may nest; deeper values are refused (they would exhaust the encoders' recursion).
MAX_JSON_DEPTH = 128

#: How many bits an integer in opaque JSON may have (about 1,233 decimal digits): larger ones are refused, as
#: the JSON encoder refuses to write integers past the interpreter's digit limit (4,300 by default) with a raw
#: ``ValueError``, and no reader of the reference's JSON holds them anyway.
MAX_JSON_INT_BITS = 4096


# A struct type's (attribute name, JSON name) pairs, or None for a type with its own ``__plain__``; looked up
# once per type instead of once per value.  ``()`` sends a type down the general path, which checks every key:
# a type without fields, or (never in practice) one with a JSON name that is not valid UTF-8.
_Fields = tuple[tuple[str, str], ...] | None
_STRUCT_FIELDS: dict[type, _Fields] = {}


def _struct_fields(kind: type[msgspec.Struct]) -> _Fields:
    """``kind``'s entry of :data:`_STRUCT_FIELDS`, computed once."""
    try:
        return _STRUCT_FIELDS[kind]
    except KeyError:
        pass
    pairs: _Fields = None
    if getattr(kind, "__plain__", None) is None:  # else a type whose JSON shape is part of a contract
        pairs = tuple(zip(kind.__struct_fields__, kind.__struct_encode_fields__, strict=True))
        try:
            for _, encoded in pairs:
                encoded.encode("utf-8")
        except UnicodeEncodeError:
            pairs = ()
    _STRUCT_FIELDS[kind] = pairs
    return pairs


# Every walk counts here what the fast encoder cannot take (see the module docstring): a caller takes the
# fast path only when the count moved by exactly its own two marks.  ``next`` on a count is atomic, so a
# concurrent walk can only send a caller down the slow path, never hide what its own walk met.
_IRREGULAR = itertools.count()
_SORTED = msgspec.json.Encoder(order="sorted")
_REGULAR_LEAVES = frozenset({str, int, bool, type(None)})


def _irregular_leaf(value: Any) -> None:
    kind = type(value)
    if kind not in _REGULAR_LEAVES or (kind is int and value.bit_length() > MAX_JSON_INT_BITS):
        next(_IRREGULAR)


def plain(value: Any) -> Any:
    """``value`` as plain JSON data (see the module docstring for the rule)."""
    if isinstance(value, msgspec.Struct):
        pairs = _struct_fields(type(value))
        if pairs is None:  # an await output
            next(_IRREGULAR)  # returned as its __plain__ gives it, not walked
            return value.__plain__()  # type: ignore[attr-defined]
        out: dict[str, Any] = {}
        for name, encoded in pairs or zip(value.__struct_fields__, value.__struct_encode_fields__, strict=True):
            field = getattr(value, name)
            if field is not None:
                out[encoded] = plain(field)
        if not pairs:
            next(_IRREGULAR)  # field names not known to be valid text
        return out
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if isinstance(value, dict):
        converted = {}
        for key, item in value.items():
            if type(key) is not str:
                next(_IRREGULAR)
            converted[key] = plain(item)
        return converted
    if isinstance(value, enum.Enum):
        _irregular_leaf(value.value)
        return value.value
    _irregular_leaf(value)
    return value


def _dumps(value: Any, default: Callable[[Any], Any] | None = None) -> str:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=default
    )


def _encoded(value: Any, mark: int, default: Callable[[Any], Any] | None = None) -> str:
    """The canonical text of ``value``, a walk's result; ``mark``: the count taken before the walk; ``default``:
    what ``json.dumps`` does with an object it does not know, on the slow path."""
    if next(_IRREGULAR) == mark + 1:
        try:
            return _SORTED.encode(value).decode("utf-8")
        except (UnicodeError, TypeError, ValueError, OverflowError):
            pass  # e.g. a lone surrogate, which only the UTF-8 encoding after json.dumps refuses
    return _dumps(value, default)


def canonical_text(value: Any) -> str:
    """The canonical JSON text of ``value`` (a ``str``; :func:`canonical_json` is its UTF-8 bytes)."""
    kind = type(value)
    # An id, or ids in a list or a dict (what derived ids hash): regular leaves, nothing to walk.
    if (
        kind is str
        or ((kind is list or kind is tuple) and all(type(item) is str for item in value))
        or (kind is dict and all(type(k) is str and type(v) is str for k, v in value.items()))
    ):
        try:
            return _SORTED.encode(value).decode("utf-8")
        except UnicodeError:
            return _dumps(value)  # a lone surrogate (see _encoded)
    mark = next(_IRREGULAR)
    return _encoded(plain(value), mark)


def canonical_json(value: Any) -> bytes:
    """The bytes every hash of this project is taken over."""
    return canonical_text(value).encode("utf-8")


def stable_hash(value: Any) -> str:
    """``H(value)``: lowercase hex SHA-256 of the canonical JSON."""
    return hashlib.sha256(canonical_json(value)).hexdigest()


def json_value(what: str, value: Any) -> Any:
    """A caller's opaque value as plain JSON data, checked; :class:`InvalidInput` naming ``what`` otherwise.

    Typed values inside are converted as :func:`plain` does; tuples become lists.
    """
    try:
        return _convert(value, 0)
    except _Refused:
        pass
    return _check(what, value, 0)  # the same walk again, naming the offending place in the error


def json_value_text(what: str, value: Any) -> tuple[Any, str]:
    """:func:`json_value` and the canonical text of what it returns, from one walk."""
    mark = next(_IRREGULAR)
    try:
        converted = _convert(value, 0)
    except _Refused:
        checked = _check(what, value, 0)
        return checked, _dumps(checked)
    return converted, _encoded(converted, mark)


class Verbatim:
    """The canonical text of a value, standing in for that value in a walk of :func:`json_value_text`.

    The text is written as it is, not walked again: a caller that has just checked and encoded a part of a
    bigger value (the registration inside a process start's envelope) encodes the whole without walking the
    part twice.  The caller vouches that ``text`` is the canonical text of the value it replaces; the
    library makes these itself, and a walk accepts only the one its caller names (any other, in a caller's
    opaque values say, is refused like every object that is not JSON).
    """

    __slots__ = ("nesting", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.nesting = text.count("{") + text.count("[")  # at least how deeply it nests (brackets in strings too)


def spliced_text(value: Any, stand_in: Verbatim) -> str:
    """The canonical text of ``value``, in which ``stand_in`` (and no other :class:`Verbatim`) is its text.

    Checked as :func:`json_value_text` checks (:class:`InvalidInput`, without naming the place: a caller
    that needs the place walks the value without its stand-in).
    """
    mark = next(_IRREGULAR)
    _SPLICING.stand_in = stand_in
    try:
        try:
            converted = _convert(value, 0)
        except _Refused:
            raise InvalidInput("value", "must be plain JSON") from None
        return _encoded(converted, mark, _raw_value)
    finally:
        _SPLICING.stand_in = None


def _raw_value(value: Any) -> Any:
    """On the slow path ``json.dumps`` meets the stand-in's text: it writes the text's value, whose canonical
    text is that text again (canonical text decodes to the data it was written from)."""
    if type(value) is msgspec.Raw:
        return _DECODE(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _stand_in_text(stand_in: Verbatim, depth: int) -> msgspec.Raw:
    """The text of the splice's stand-in; any other :class:`Verbatim` is refused (it is not JSON)."""
    if stand_in is not getattr(_SPLICING, "stand_in", None):
        raise _REFUSED
    if depth + stand_in.nesting + 1 >= MAX_JSON_DEPTH:
        raise _REFUSED  # near the depth limit: the caller walks the value itself, which decides exactly
    return msgspec.Raw(stand_in.text)


# The stand-in of this thread's splice, if one runs (read only where a walk meets a type it does not know, so
# it costs the walks of plain data nothing).
_SPLICING = threading.local()


class _Refused(Exception):
    """Raised by :func:`_convert` where :func:`_check` would raise; :func:`_check` then says where and why."""


_REFUSED = _Refused()


def _convert(value: Any, depth: int) -> Any:
    """:func:`_check` without building a path for every node (the common case: nothing is wrong)."""
    kind = type(value)
    if kind is str:
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise _REFUSED from None
        return value
    if kind is dict:
        if depth >= MAX_JSON_DEPTH:
            if value:  # the items would nest deeper than allowed
                raise _REFUSED
            return {}
        inner = depth + 1
        checked: dict[str, Any] = {}
        for key, item in value.items():
            if type(key) is not str or not key.isascii():
                if not isinstance(key, str):
                    raise _REFUSED
                if type(key) is not str:
                    next(_IRREGULAR)
                try:
                    key.encode("utf-8")
                except UnicodeEncodeError:
                    raise _REFUSED from None
            checked[key] = _convert(item, inner)
        return checked
    if value is None or kind is bool:
        return value
    if kind is int:
        if value.bit_length() > MAX_JSON_INT_BITS:
            raise _REFUSED
        return value
    if kind is list or kind is tuple:
        if depth >= MAX_JSON_DEPTH and value:
            raise _REFUSED
        inner = depth + 1
        return [_convert(item, inner) for item in value]
    if kind is float:
        if not math.isfinite(value):
            raise _REFUSED
        next(_IRREGULAR)  # json and msgspec write some floats differently (1e+16, 1e16)
        return value
    if isinstance(value, msgspec.Struct):
        known = _CONSTANTS.get(id(value))
        if known is not None and known[0] is value and depth + known[2] < MAX_JSON_DEPTH:
            return _DECODE(known[1])  # a fresh copy of what the walk below would return
        pairs = _struct_fields(kind)
        if pairs is None:
            return _convert(value.__plain__(), depth)  # type: ignore[attr-defined]
        if not pairs:  # as a dict of its fields, every key checked
            next(_IRREGULAR)
            out: dict[str, Any] = {}
            for name, encoded in zip(value.__struct_fields__, value.__struct_encode_fields__, strict=True):
                field = getattr(value, name)
                if field is not None:
                    out[encoded] = field
            return _convert(out, depth)
        # The same as converting that dict, without building it first (its keys are known to be valid).
        inner = depth + 1
        converted: dict[str, Any] = {}
        for name, encoded in pairs:
            field = getattr(value, name)
            if field is not None:
                if inner > MAX_JSON_DEPTH:
                    raise _REFUSED
                converted[encoded] = _convert(field, inner)
        return converted
    if isinstance(value, enum.Enum):
        return _convert(value.value, depth)
    if kind is Verbatim:
        return _stand_in_text(value, depth)
    raise _REFUSED  # anything rarer (subclasses of the JSON types included): _check decides


# Frozen structs that live as long as the program (the registry's core event types, in every registration):
# id -> (the constant, its conversion as JSON in field order, how deeply that nests).  Only constants whose
# conversion is regular (see _IRREGULAR) are kept, so a copy decoded from the JSON is equal to a new walk's
# result, key order included.
_CONSTANTS: dict[int, tuple[Any, bytes, int]] = {}
_DECODE = msgspec.json.Decoder().decode


def _nesting(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_nesting, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_nesting, value), default=0)
    return 0


def register_constant(value: msgspec.Struct) -> None:
    """Convert the frozen, never-collected struct ``value`` once: later walks copy the result instead.

    For module constants only (the id must never be reused, and the value never change).
    """
    mark = next(_IRREGULAR)
    converted = _convert(value, 0)
    if next(_IRREGULAR) == mark + 1:
        _CONSTANTS[id(value)] = (value, msgspec.json.encode(converted), _nesting(converted))


def _check(what: str, value: Any, depth: int) -> Any:
    if depth > MAX_JSON_DEPTH:
        raise InvalidInput(what, f"nests deeper than {MAX_JSON_DEPTH} levels")
    if isinstance(value, msgspec.Struct):
        custom = getattr(value, "__plain__", None)
        if custom is not None:
            return _check(what, custom(), depth)
        fields = zip(value.__struct_fields__, value.__struct_encode_fields__, strict=True)
        return _check(what, {enc: getattr(value, n) for n, enc in fields if getattr(value, n) is not None}, depth)
    if isinstance(value, enum.Enum):
        return _check(what, value.value, depth)
    if isinstance(value, tuple):
        value = list(value)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        if value.bit_length() > MAX_JSON_INT_BITS:
            raise InvalidInput(what, f"must be plain JSON: an integer of {value.bit_length()} bits is too large")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInput(what, f"must be plain JSON: {value!r} is not a finite number")
        return value
    if isinstance(value, str):
        return _text(what, value)
    if isinstance(value, list):
        return [_check(f"{what}[{index}]", item, depth + 1) for index, item in enumerate(value)]
    if isinstance(value, dict):
        checked: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidInput(what, f"must be plain JSON: object keys are strings, got {type(key).__name__}")
            checked[_text(what, key)] = _check(f"{what}.{key}", item, depth + 1)
        return checked
    raise InvalidInput(what, f"must be plain JSON, got {type(value).__name__}")


def _text(what: str, value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInput(what, "must be valid UTF-8 (lone surrogates are not)") from exc
    return value

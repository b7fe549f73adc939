"""Input validation shared by every backend: typed errors that name the field."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from lash_store.errors import InvalidInput
from lash_store.model import TokenLedgerEntry, TokenUsage

MAX_MS = 2**63 - 1


# Ids are index keys; PostgreSQL refuses an index entry over 2,704 bytes, and keys combine up to three ids.
MAX_ID_BYTES = 768


def check_id(what: str, value: Any) -> str:
    """Ids are non-empty strings of at most 768 UTF-8 bytes that SQLite and PostgreSQL can store and index."""
    if not isinstance(value, str):
        raise InvalidInput(what, f"must be a string, got {type(value).__name__}")
    if not value:
        raise InvalidInput(what, "must not be empty")
    if "\x00" in value:
        raise InvalidInput(what, "must not contain NUL characters")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise InvalidInput(what, "must be valid UTF-8 (lone surrogates are not)") from exc
    if size > MAX_ID_BYTES:
        raise InvalidInput(what, f"must be at most {MAX_ID_BYTES} UTF-8 bytes, got {size}")
    return value


def check_optional_id(what: str, value: Any) -> str | None:
    return None if value is None else check_id(what, value)


def check_list(what: str, values: Any) -> list[Any]:
    """A collection argument, copied into a list once.

    Any iterable is accepted (a generator too); it is consumed here, exactly
    once, and every later step works on the returned list.  Strings, bytes and
    mappings are refused: iterating them is almost always a caller's mistake.
    """
    if isinstance(values, list):
        return list(values)
    if isinstance(values, (str, bytes, bytearray, memoryview, Mapping)) or not isinstance(values, Iterable):
        raise InvalidInput(what, f"must be a list, got {type(values).__name__}")
    return list(values)


def check_ids(what: str, values: Any) -> list[str]:
    return [check_id(f"{what}[{index}]", value) for index, value in enumerate(check_list(what, values))]


def check_text(what: str, value: Any) -> str:
    """Free text (may be empty) that every backend can store: PostgreSQL text holds no NUL."""
    if not isinstance(value, str):
        raise InvalidInput(what, f"must be a string, got {type(value).__name__}")
    if "\x00" in value:
        raise InvalidInput(what, "must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInput(what, "must be valid UTF-8 (lone surrogates are not)") from exc
    return value


def check_ms(what: str, value: Any) -> int:
    """Instants and durations are integer milliseconds in ``0..2**63-1``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(what, f"must be an integer number of milliseconds, got {type(value).__name__}")
    if not 0 <= value <= MAX_MS:
        raise InvalidInput(what, f"must be within 0..2**63-1, got {value}")
    return value


def check_int(what: str, value: Any, low: int, high: int) -> int:
    """An integer (never a bool) within ``low..high``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(what, f"must be an integer, got {type(value).__name__}")
    if not low <= value <= high:
        raise InvalidInput(what, f"must be within {low}..{high}, got {value}")
    return value


def check_count(what: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(what, f"must be an integer, got {type(value).__name__}")
    if not 0 <= value <= MAX_MS:
        raise InvalidInput(what, f"must be within 0..2**63-1, got {value}")
    return value


def check_revision(what: str, value: Any) -> int | None:
    return None if value is None else check_count(what, value)


def saturating_add(instant: int, duration: int) -> int:
    """Expiries saturate at ``2**63-1`` instead of wrapping."""
    return min(instant + duration, MAX_MS)


def check_instance(what: str, value: Any, expected: type | tuple[type, ...]) -> Any:
    if not isinstance(value, expected):
        names = expected.__name__ if isinstance(expected, type) else " or ".join(t.__name__ for t in expected)
        raise InvalidInput(what, f"must be a {names}, got {type(value).__name__}")
    return value


MIN_I64 = -(2**63)


def check_usage(what: str, entry: Any) -> TokenLedgerEntry:
    """A ledger entry with text keys and signed 64-bit counters (what SQL backends store as integers)."""
    check_instance(what, entry, TokenLedgerEntry)
    check_text(f"{what}.source", entry.source)
    check_text(f"{what}.model", entry.model)
    check_instance(f"{what}.usage", entry.usage, TokenUsage)
    for name in ("input_tokens", "output_tokens", "cached_input_tokens", "reasoning_tokens"):
        check_int(f"{what}.usage.{name}", getattr(entry.usage, name), MIN_I64, MAX_MS)
    return entry  # type: ignore[no-any-return]


def check_callable(what: str, value: Any) -> Any:
    if not callable(value):
        raise InvalidInput(what, f"must be callable, got {type(value).__name__}")
    return value

"""Input validation shared by every backend: typed errors that name the field."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from lash_store.errors import InvalidInput

MAX_MS = 2**63 - 1


def check_id(what: str, value: Any) -> str:
    """Ids are non-empty strings that SQLite and PostgreSQL can store."""
    if not isinstance(value, str):
        raise InvalidInput(what, f"must be a string, got {type(value).__name__}")
    if not value:
        raise InvalidInput(what, "must not be empty")
    if "\x00" in value:
        raise InvalidInput(what, "must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInput(what, "must be valid UTF-8 (lone surrogates are not)") from exc
    return value


def check_optional_id(what: str, value: Any) -> str | None:
    return None if value is None else check_id(what, value)


def check_ids(what: str, values: Iterable[Any]) -> list[str]:
    if isinstance(values, (str, bytes)):
        raise InvalidInput(what, "must be a list of ids, not a single string")
    return [check_id(f"{what}[{index}]", value) for index, value in enumerate(values)]


def check_text(what: str, value: Any) -> str:
    """Free text (may be empty) that must be storable."""
    if not isinstance(value, str):
        raise InvalidInput(what, f"must be a string, got {type(value).__name__}")
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

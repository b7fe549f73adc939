"""What every backend's session factory shares: the metadata a new session gets, and listing pages."""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable, Iterable

from lash_store.core.validate import check_count, check_id, check_optional_id, check_text
from lash_store.errors import InvalidInput, SessionsUnreadable, StoreError
from lash_store.model import SessionMeta, SessionPickerInfo, SessionRelation
from lash_store.service.session import meta_params


def new_session_meta(session_id: object, model: object, relation: object) -> SessionMeta:
    """The metadata ``create_store`` writes once for a new session, fully checked (nothing is created before)."""
    meta = SessionMeta(
        session_id=check_id("session_id", session_id),
        session_name=session_id,  # type: ignore[arg-type]  # checked above
        created_at=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        model=check_text("model", model),
        cwd=_cwd(),
        relation=SessionRelation.root() if relation is None else relation,  # type: ignore[arg-type]
    )
    meta_params(meta, "relation")
    return meta


def check_page(limit: object, after: object) -> tuple[int | None, str | None]:
    """``limit`` (None: everything) and ``after`` (a session id: the page starts after it)."""
    return (None if limit is None else check_count("limit", limit)), check_optional_id("after", after)


def page(
    sessions: Iterable[SessionPickerInfo],
    failures: list[tuple[str, StoreError]],
    limit: int | None,
    after: str | None,
) -> list[SessionPickerInfo]:
    """Sessions ordered by id, from just after ``after``, at most ``limit``; unreadable ones are reported."""
    ordered = sorted(sessions, key=lambda info: info.session_id)
    selected = [info for info in ordered if after is None or info.session_id > after]
    if limit is not None:
        selected = selected[:limit]
    if failures:
        raise SessionsUnreadable(list(selected), failures)
    return selected


def encode_cursor(position: tuple[int, str]) -> str:
    return f"{position[0]}:{position[1]}"


def decode_cursor(cursor: object, kind: Callable[[str], int]) -> tuple[int, str] | None:
    """A cursor from :func:`encode_cursor` (``None``: the first page)."""
    if cursor is None:
        return None
    if not isinstance(cursor, str) or ":" not in cursor:
        raise InvalidInput("cursor", "must be a next_cursor from a previous page")
    moment, _, key = cursor.partition(":")
    try:
        return kind(moment), key
    except ValueError as exc:
        raise InvalidInput("cursor", "must be a next_cursor from a previous page") from exc


def _cwd() -> str | None:
    try:
        return os.getcwd()
    except OSError:
        return None

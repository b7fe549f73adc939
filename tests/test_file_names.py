"""Session file names: deterministic and safe, and the session id a name gives back without opening the file."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from lash_store.sqlite import safe_file_name
from lash_store.sqlite.file_names import session_id_in_name

_PLAIN = re.compile(r"[A-Za-z0-9-]([A-Za-z0-9_-]{0,78}[A-Za-z0-9-])?")


@given(st.text(min_size=1, max_size=100))
def test_a_name_gives_back_its_id_or_nothing(session_id: str) -> None:
    try:
        session_id.encode("utf-8")
    except UnicodeEncodeError:
        return  # ids are valid UTF-8 (checked before a name is made)
    found = session_id_in_name(safe_file_name(session_id))
    assert found in (session_id, None)
    assert (found == session_id) == bool(_PLAIN.fullmatch(session_id))


@given(st.from_regex(_PLAIN, fullmatch=True))
def test_plain_ids_always_come_back(session_id: str) -> None:
    assert session_id_in_name(safe_file_name(session_id)) == session_id


def test_names_that_are_not_a_sessions_give_nothing() -> None:
    digest_of_other = safe_file_name("other").rsplit("-", 1)[1]
    for name in [
        "",
        ".db",
        "notes.db",
        "chat-1.db",
        f"chat-{digest_of_other}",
        f"chat-{digest_of_other}",
        "-0123456789abcdef.db",
        safe_file_name("a b"),
        safe_file_name("_x"),
        f"chat-{digest_of_other}.db",
    ]:
        assert session_id_in_name(name) is None, name
    assert session_id_in_name(safe_file_name("session")) == "session"
    assert session_id_in_name(safe_file_name("___")) is None  # its stem is "session" too, its digest is not

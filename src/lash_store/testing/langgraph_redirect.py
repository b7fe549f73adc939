"""A pytest plugin that runs LangGraph's own runtime tests with :class:`LashSaver` in place of ``SqliteSaver``.

Load it with ``-p lash_store.testing.langgraph_redirect`` from the root of the
``langgraph`` source distribution (the version installed).  LangGraph's test
``conftest`` builds its ``sqlite``, ``sqlite_aes`` and ``sqlite_aio``
checkpointer parameters with module-level helpers that its fixtures look up
when they run; once collection is done (the conftest is imported by then) this
plugin rebinds those three helpers to build a :class:`LashSaver` on a fresh
temporary directory: plain, with LangGraph's AES ``EncryptedSerializer``, and
used through its async methods.  Every other parameter is left alone, so one
run compares both.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import pytest
from langgraph.checkpoint.serde.encrypted import EncryptedSerializer
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from lash_store.adapters.langgraph import LashSaver

_AES_KEY = b"1234567890123456"  # the key LangGraph's own sqlite_aes fixture uses


def _strict() -> bool:
    return os.getenv("LANGGRAPH_STRICT_MSGPACK", "false").lower() in ("1", "true", "yes")


def _serde(aes: bool) -> Any:
    inner = JsonPlusSerializer(allowed_msgpack_modules=None) if _strict() else None
    if aes:
        return EncryptedSerializer.from_pycryptodome_aes(key=_AES_KEY, **({"serde": inner} if inner else {}))
    return inner


@contextmanager
def lash_saver(aes: bool = False) -> Iterator[LashSaver]:
    with tempfile.TemporaryDirectory(prefix="lash-langgraph-") as root, LashSaver.sqlite(root) as saver:
        serde = _serde(aes)
        if serde is not None:
            saver.serde = serde
        yield saver


@contextmanager
def lash_saver_aes() -> Iterator[LashSaver]:
    with lash_saver(aes=True) as saver:
        yield saver


@asynccontextmanager
async def lash_saver_async() -> AsyncIterator[LashSaver]:
    with lash_saver() as saver:
        yield saver


def pytest_collection_finish(session: pytest.Session) -> None:
    conftest = sys.modules.get("tests.conftest")
    if conftest is None:
        raise pytest.UsageError("langgraph_redirect: LangGraph's tests/conftest.py was not imported")
    for name in ("_checkpointer_sqlite", "_checkpointer_sqlite_aes", "_checkpointer_sqlite_aio"):
        if not hasattr(conftest, name):
            raise pytest.UsageError(f"langgraph_redirect: tests.conftest has no {name} (the test tree changed)")
    for name, builder in (
        ("_checkpointer_sqlite", lash_saver),
        ("_checkpointer_sqlite_aes", lash_saver_aes),
        ("_checkpointer_sqlite_aio", lash_saver_async),
    ):
        setattr(conftest, name, builder)

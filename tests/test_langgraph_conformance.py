"""LangGraph's own checkpointer conformance suite (``langgraph-checkpoint-conformance`` from PyPI) on LashSaver.

Every capability the package knows must be detected and pass, on SQLite and
on PostgreSQL: ``passed_all_base()``, ``passed_all()`` and level FULL.  The
package is a test dependency (the ``dev`` extra); if it is missing the import
fails and so does this module -- it is never skipped.
"""

from __future__ import annotations

import asyncio
import itertools
import tempfile
from collections.abc import AsyncIterator
from typing import Any

import pytest
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.capabilities import Capability
from langgraph.checkpoint.conformance.report import ProgressCallbacks

from lash_store.adapters.langgraph import LashSaver

_schemas = itertools.count()


def _check(report: Any) -> None:
    detected = {name for name, result in report.results.items() if result.detected}
    assert detected == {capability.value for capability in Capability}, report.to_dict()
    assert report.passed_all_base(), {k: v.failures for k, v in report.results.items() if v.failures}
    assert report.passed_all(), report.to_dict()
    assert report.conformance_level() == "FULL"


def test_conformance_on_sqlite() -> None:
    @checkpointer_test(name="LashSaver[sqlite]")
    async def lash_sqlite() -> AsyncIterator[LashSaver]:
        with tempfile.TemporaryDirectory() as root:
            async with LashSaver.sqlite(root) as saver:
                yield saver

    _check(asyncio.run(validate(lash_sqlite, progress=ProgressCallbacks.quiet())))


@pytest.mark.postgres
def test_conformance_on_postgres(pg_dsn: str) -> None:
    @checkpointer_test(name="LashSaver[postgres]")
    async def lash_postgres() -> AsyncIterator[LashSaver]:
        # A fresh schema per capability: each starts from an empty database, as the suite expects.
        async with LashSaver.postgres(pg_dsn, schema=f"lg_{next(_schemas)}") as saver:
            yield saver

    _check(asyncio.run(validate(lash_postgres, progress=ProgressCallbacks.quiet())))

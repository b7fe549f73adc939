"""Generated code is current: the async twins are written from ``lash_store.api.SessionStoreAPI``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_async_twins_are_generated_from_the_protocol() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "generate_async.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_every_protocol_method_has_an_async_twin() -> None:
    from lash_store.aio import AsyncProcessRegistry, AsyncStore
    from lash_store.api import AsyncProcessRegistryAPI, AsyncSessionStoreAPI, ProcessRegistryAPI, SessionStoreAPI

    for protocol, async_protocol, facade in (
        (SessionStoreAPI, AsyncSessionStoreAPI, AsyncStore),
        (ProcessRegistryAPI, AsyncProcessRegistryAPI, AsyncProcessRegistry),
    ):
        sync_names = {name for name in vars(protocol) if not name.startswith("_")}
        assert sync_names <= set(vars(async_protocol))
        assert sync_names <= set(dir(facade))

"""Runs the effect-journal conformance suite (``lash_store.testing.effects_conformance``) against our backends.

Backends: ``EffectHost.memory()`` (not durable), a deployment file opened
with ``EffectHost.open()`` (durable; reopen = a new host on the path, process
commands against a ``ProcessRegistry`` on the same file) and the pure-Python
oracle ``ReferenceEffectHost`` (not durable).
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.register_assert_rewrite("lash_store.testing.effects_conformance")

from lash_store.api import ProcessRegistryAPI  # noqa: E402
from lash_store.effects import EffectReplayOptions  # noqa: E402
from lash_store.sqlite.effects import EffectHost  # noqa: E402
from lash_store.sqlite.registry import ProcessRegistry  # noqa: E402
from lash_store.testing.effects_conformance import *  # noqa: E402, F403  (collects the suite)
from lash_store.testing.effects_conformance import EffectsHarness, Host  # noqa: E402
from lash_store.testing.effects_reference import ReferenceEffectHost  # noqa: E402


class MemoryHarness(EffectsHarness):
    name = "sqlite-memory"
    durable = False

    def open(self, replay_options: EffectReplayOptions | None) -> Host:
        return EffectHost.memory(replay_options=replay_options)


class FileHarness(EffectsHarness):
    name = "sqlite-file"
    durable = True

    def __init__(self, root: Path) -> None:
        self.path = root / "deployment.db"

    def open(self, replay_options: EffectReplayOptions | None) -> Host:
        return EffectHost.open(self.path, replay_options=replay_options)

    def reopen(self, host: Host) -> Host:
        assert isinstance(host, EffectHost) and host.path is not None
        return EffectHost.open(host.path, replay_options=host.replay_options)

    def registry(self, host: Host) -> ProcessRegistryAPI:
        assert isinstance(host, EffectHost) and host.path is not None
        return ProcessRegistry.open(host.path)


class ReferenceHarness(EffectsHarness):
    name = "reference"
    durable = False

    def open(self, replay_options: EffectReplayOptions | None) -> Host:
        return ReferenceEffectHost(replay_options=replay_options)


@pytest.fixture(params=["sqlite-memory", "sqlite-file", "reference"])
def effects_harness(request: pytest.FixtureRequest, tmp_path: Path) -> EffectsHarness:
    if request.param == "sqlite-memory":
        return MemoryHarness()
    if request.param == "sqlite-file":
        return FileHarness(tmp_path)
    return ReferenceHarness()

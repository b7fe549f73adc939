"""Small builders shared by the tests (``ManualClock`` comes from the testing kit)."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path
from typing import Any

import msgspec

from lash_store.model import (
    DeliveryPolicy,
    QueuedWorkBatchDraft,
    QueuedWorkPayload,
    RuntimeCommit,
    RuntimeSessionState,
    SessionNode,
    SlotPolicy,
    TurnInput,
)
from lash_store.testing.clock import ManualClock

__all__ = ["ManualClock", "commit_at", "draft", "message"]


def commit_at(session_id: str = "root", expected_head_revision: int | None = None, **state: Any) -> RuntimeCommit:
    """The commit lash-core's ``persisted_state`` builds for a default state, with a chosen CAS revision."""
    commit = RuntimeCommit.persisted_state(RuntimeSessionState(session_id=session_id, **state))
    return msgspec.structs.replace(commit, expected_head_revision=expected_head_revision)


def message(node_id: str, role: str, text: str, parent: str | None = None) -> SessionNode:
    return SessionNode(
        node_id=node_id, parent_node_id=parent, payload={"role": role, "parts": [{"type": "text", "text": text}]}
    )


def draft(
    session_id: str,
    text: str,
    delivery: DeliveryPolicy = DeliveryPolicy.EARLIEST_SAFE_BOUNDARY,
    slot: SlotPolicy = SlotPolicy.EXCLUSIVE,
) -> QueuedWorkBatchDraft:
    return QueuedWorkBatchDraft.new(session_id, delivery, slot, [QueuedWorkPayload.turn_input(TurnInput.text(text))])


def snapshot(path: Path) -> list[str]:
    """Every schema object and row of a database file, through an independent read-only connection."""
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        dump = list(conn.iterdump())
        dump.append(f"user_version={conn.execute('PRAGMA user_version').fetchone()[0]}")
        dump.append(f"application_id={conn.execute('PRAGMA application_id').fetchone()[0]}")
        return dump
    finally:
        conn.close()


def listing(root: Path) -> list[str]:
    """Every path below ``root`` with its type (files, directories, FIFOs...)."""
    found = []
    for directory, subdirs, files in os.walk(root):
        for name in sorted(subdirs + files):
            full = Path(directory) / name
            found.append(f"{full.relative_to(root)} {stat.filemode(full.lstat().st_mode)[0]}")
    return sorted(found)


def deployment_components(path: Path) -> dict[str, int]:
    """The component versions a deployment file records, read with plain sqlite3."""
    conn = sqlite3.connect(path)
    try:
        return dict(conn.execute("SELECT component, version FROM lash_components"))
    finally:
        conn.close()

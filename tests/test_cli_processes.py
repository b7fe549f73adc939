"""``lash-store processes list|show|prune`` on a deployment file and on PostgreSQL.

The readers (list, show, prune --dry-run) write nothing -- on SQLite not even a sidecar file; prune deletes
terminal processes older than the horizon with everything they hold, and never creates a registry.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lash_store.cli import EXIT_ERROR, EXIT_OK, EXIT_USAGE, main
from lash_store.options import StoreOptions, system_clock
from lash_store.postgres import close_shared_pools
from lash_store.processes import ProcessAwaitOutput
from lash_store.targets import is_dsn, open_registry
from lash_store.testing.registry_conformance import S, reg, request, wake_type
from tests.test_cli import run, snapshot

DAY_MS = 86_400_000


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        directory = tmp_path / "deployment"
        directory.mkdir()
        yield str(directory / "registry.db")
        return
    dsn: str = request.getfixturevalue("pg_dsn")
    yield dsn
    close_shared_pools()


def _populate(target: str) -> None:
    """Two processes ten days old (one ended, one running) and one that ended just now."""
    now = system_clock()
    old = StoreOptions(clock=lambda: now - 10 * DAY_MS)
    with open_registry(target, options=old) as registry:
        registry.register_process(reg("old-done", wake_type("w"), owner="s1"))
        registry.grant_handle(S("s1"), "old-done")
        registry.append_event("old-done", request("w", {"wake_input": "hello"}, target=S("s1")))
        lease = registry.claim_process_lease("old-done", "worker-1", 60_000)
        registry.complete_process("old-done", ProcessAwaitOutput.failure("execution", "boom", "it broke"), lease=lease)
        registry.register_process(reg("old-running"))
    with open_registry(target) as registry:
        registry.register_process(reg("new-done"))
        registry.complete_process("new-done", ProcessAwaitOutput.success({"ok": True}))
    close_shared_pools()


def _json(capsys: pytest.CaptureFixture[str], *args: str, expect: int = EXIT_OK) -> Any:
    code, out, err = run(capsys, "processes", *args, "--json")
    assert code == expect, err
    return json.loads(out)


def _state(target: str) -> Any:
    """What a reader must leave as it was: the directory's files on SQLite, every row on PostgreSQL."""
    if is_dsn(target):
        with open_registry(target, readonly=True) as registry:
            return registry.raw_rows()
    return snapshot(Path(target).parent)


def test_list_show_and_prune(capsys: pytest.CaptureFixture[str], target: str) -> None:
    _populate(target)
    before = _state(target)

    listed = _json(capsys, "list", target)
    assert [(p["process_id"], p["state"]) for p in listed["processes"]] == [
        ("new-done", "completed"),
        ("old-done", "failed"),
        ("old-running", "running"),
    ]
    assert listed["next_after"] is None
    assert listed["processes"][1]["outcome"] == "failure" and listed["processes"][1]["message"] == "it broke"
    assert [p["process_id"] for p in _json(capsys, "list", target, "--state", "terminal")["processes"]] == [
        "new-done",
        "old-done",
    ]
    page = _json(capsys, "list", target, "--limit", "2")
    assert [p["process_id"] for p in page["processes"]] == ["new-done", "old-done"] and page["next_after"] == "old-done"
    rest = _json(capsys, "list", target, "--after", "old-done", "--limit", "2")
    assert [p["process_id"] for p in rest["processes"]] == ["old-running"] and rest["next_after"] is None

    shown = _json(capsys, "show", target, "old-done")
    assert shown["process"]["state"] == "failed" and shown["event_count"] == 2
    assert [e["event_type"] for e in shown["events"]] == ["w", "process.failed"]
    assert [g["session_id"] for g in shown["grants"]] == ["s1"]
    assert shown["lease"]["owner_id"] == "worker-1" and shown["lease"]["fencing_token"] == 1
    assert "lease_token" not in json.dumps(shown)  # a report never carries what lets a holder write
    assert [e["sequence"] for e in _json(capsys, "show", target, "old-done", "--events", "1")["events"]] == [2]

    dry = _json(capsys, "prune", target, "--older-than", "5d", "--dry-run")
    assert (dry["processes"], dry["events"], dry["grants"], dry["dry_run"]) == (["old-done"], 2, 1, True)
    for args in (("list", target), ("show", target, "old-done"), ("prune", target, "--older-than", "5d", "--dry-run")):
        code, out, err = run(capsys, "processes", *args)  # human output too
        assert code == EXIT_OK, err
        assert "old-done" in out
    assert _state(target) == before, "a reader wrote something"

    done = _json(capsys, "prune", target, "--older-than", "5d")
    assert (done["processes"], done["events"], done["grants"], done["dry_run"]) == (["old-done"], 2, 1, False)
    assert [p["process_id"] for p in _json(capsys, "list", target)["processes"]] == ["new-done", "old-running"]
    assert _json(capsys, "prune", target, "--older-than", "5d")["processes"] == []
    assert _json(capsys, "prune", target, "--older-than", "0ms", "--limit", "5")["processes"] == ["new-done"]
    with open_registry(target, readonly=True) as registry:
        rows = registry.raw_rows()
    assert all("old-done" not in row and "new-done" not in row for table in rows.values() for row in table)
    close_shared_pools()


def test_errors_are_one_line_and_create_nothing(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = tmp_path / "nothing-here.db"
    for args in (("list", str(missing)), ("show", str(missing), "p"), ("prune", str(missing), "--older-than", "1d")):
        error = _json(capsys, *args, expect=EXIT_ERROR)["error"]
        assert error["type"] == "StoreNotFound"
    assert list(tmp_path.iterdir()) == []
    target = str(tmp_path / "registry.db")
    _populate(target)
    assert "ghost" in _json(capsys, "show", target, "ghost", expect=EXIT_ERROR)["error"]["message"]
    for args, message in ((("prune", target), "--older-than"), (("list", target, "--state", "sleeping"), "sleeping")):
        with pytest.raises(SystemExit) as exc:  # the horizon is required; states are checked
            main(["processes", *args])
        assert exc.value.code == EXIT_USAGE and message in capsys.readouterr().err
    from lash_store import Store

    with Store.open(tmp_path / "real-session.db"):
        pass
    files = snapshot(tmp_path)
    for args in (
        ("list", str(tmp_path / "real-session.db")),
        ("prune", str(tmp_path / "real-session.db"), "--older-than", "0ms"),
    ):
        error = _json(capsys, *args, expect=EXIT_ERROR)["error"]  # a session file is refused, untouched
        assert error["type"] in ("NotAStoreDatabase", "UnsupportedSchemaVersion")
    assert snapshot(tmp_path) == files

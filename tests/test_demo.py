"""``lash-store demo``: real worker processes, real SIGKILLs, real files -- and a verification that can fail."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import pytest

from lash_store import SqliteSessionStoreFactory, Store, tools
from lash_store.cli import EXIT_ERROR, EXIT_OK
from lash_store.demo import DemoConfig, DemoTarget, fake_model, user_message, verify_run
from lash_store.model import (
    DeliveryPolicy,
    GraphDelta,
    QueuedWorkBatchDraft,
    QueuedWorkPayload,
    RuntimeCommit,
    SessionNode,
    SlotPolicy,
    TurnInput,
)
from lash_store.postgres import PostgresSessionStoreFactory, close_shared_pools
from lash_store.testing.pgserver import PostgresUnavailable, find_bindir
from tests.pg import postgres_unavailable

SMALL = ["--sessions", "2", "--messages", "5", "--workers", "2"]

EXPECTED_CHECKS = [
    "every user message answered exactly once",
    "duplicate deliveries accounted for",
    "duplicates deduplicated",
    "queues empty",
    "only the poisoned message dead-lettered",
    "head revision == number of turns",
    "one linear conversation per session",
    "usage ledger == sum of replies' usage",
    "checkpoint matches the head",
    "lash-store verify clean",
    "the poisoned message killed its worker on every attempt",
    "run completed",
]


def run_demo_process(
    *args: str, timeout: float = 90, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``lash-store demo`` as a real process (it starts its own worker processes)."""
    return subprocess.run(
        [sys.executable, "-m", "lash_store.cli", "demo", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "160", **(env or {})},
        check=False,
    )


def demo_json(*args: str) -> dict[str, Any]:
    result = run_demo_process(*args, "--json")
    assert result.returncode == EXIT_OK, result.stdout + result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def test_demo_without_chaos_verifies_and_leaves_inspectable_files(tmp_path: Path) -> None:
    directory = tmp_path / "demo"
    data = demo_json(*SMALL, "--no-chaos", "--seed", "11", "--dir", str(directory))
    assert data["ok"] is True and data["timed_out"] is False and data["kept"] is True
    assert [check["name"] for check in data["checks"]] == EXPECTED_CHECKS
    assert all(check["ok"] for check in data["checks"])
    counters = data["counters"]
    assert counters["messages"] == 10 and counters["turns_committed"] == 10
    assert counters["kills"] == 0 and counters["restarts"] == 0 and counters["errors"] == []
    assert counters["stalls"] == 0 and counters["reclaims"] == 0 and counters["lost_claims"] == 0
    assert counters["poison_claims"] == 0 and counters["dead_letters"] == 0
    assert counters["duplicates_sent"] == counters["deduplicated_at_enqueue"] + counters["duplicates_requeued"]
    assert data["config"] == {
        "sessions": 2,
        "messages": 5,
        "workers": 2,
        "seed": 11,
        "chaos": False,
        "kill_every_s": 1.5,
        "lease_ms": 1000,
        "stall_rate": 0.0,  # --no-chaos turns off every injected fault
        "poison": False,  # the poisoned message included
        "poison_attempts": 8,
    }
    assert [row["head_revision"] for row in data["sessions"]] == [5, 5]

    # The run directory is a factory root the inspection commands understand (and nothing else is left in it).
    assert sorted(p.name for p in directory.iterdir() if p.suffix == ".db") == [
        SqliteSessionStoreFactory(directory).path_for_session(sid).name for sid in ("demo-00", "demo-01")
    ]
    assert not (directory / ".demo").exists()
    listing = tools.list_sessions(directory)
    assert [(s["session_id"], s["messages"], s["user_messages"]) for s in listing["sessions"]] == [
        ("demo-00", 10, 5),
        ("demo-01", 10, 5),
    ]
    assert listing["sessions"][0]["model"] == "fake-model-1"
    path = SqliteSessionStoreFactory(directory).path_for_session("demo-00")
    assert tools.verify(path)["ok"] is True
    conversation = tools.history(path, active_path=True)["nodes"]
    assert [node["role"] for node in conversation] == ["user", "assistant"] * 5
    replies = {node["payload"]["demo"]["source_key"]: node["text"] for node in conversation if node["role"] != "user"}
    prompts = {node["payload"]["demo"]["source_key"]: node["text"] for node in conversation if node["role"] == "user"}
    assert prompts == {f"m{i:03d}": user_message(11, "demo-00", i) for i in range(5)}
    assert replies == {key: fake_model(11, "demo-00", key, prompts[key])[0] for key in prompts}


def test_demo_with_chaos_still_verifies(tmp_path: Path) -> None:
    data = demo_json(
        *SMALL,
        "--messages",
        "8",
        "--kill-every",
        "0.7",
        "--lease-ms",
        "500",
        "--think-ms",
        "100",
        "300",
        "--duplicate-rate",
        "0.5",
        "--dir",
        str(tmp_path / "chaos"),
    )
    assert data["ok"] is True, data["checks"]
    assert all(check["ok"] for check in data["checks"])
    counters = data["counters"]
    assert counters["kills"] >= 1 and counters["restarts"] >= counters["kills"]
    assert counters["turns_committed"] == 16 and counters["errors"] == []
    # Every claim beyond one per answered message is a re-delivery (after a kill) or a duplicate batch.
    assert counters["claims"] >= counters["turns_committed"]
    assert counters["duplicates_sent"] >= 1
    # The poisoned message killed a worker on each of its attempts, then waited on the dead-letter list.
    assert counters["poison_claims"] == data["config"]["poison_attempts"] == 8 and counters["dead_letters"] == 1
    assert [row["dead_letters"] for row in data["sessions"]] == [1, 0]


def test_demo_human_output_and_progress(tmp_path: Path) -> None:
    result = run_demo_process("--sessions", "1", "--messages", "3", "--workers", "1", "--no-chaos")
    assert result.returncode == EXIT_OK, result.stdout + result.stderr
    out = result.stdout
    assert out.startswith("lash-store demo: 1 sessions x 3 messages, 1 worker processes") and "on SQLite" in out
    for text in ("Run", "Verification", "workers SIGKILLed", "CAS conflicts", "queues empty", "PASS: all 12 checks"):
        assert text in out
    assert "answered" in result.stderr  # progress lines go to stderr when stdout is not a terminal
    assert "session files kept" not in out  # the temporary directory was removed


def test_demo_refuses_a_directory_that_holds_sessions(tmp_path: Path) -> None:
    SqliteSessionStoreFactory(tmp_path).create_store("someone").close()
    result = run_demo_process(*SMALL, "--dir", str(tmp_path))
    assert result.returncode == EXIT_ERROR
    assert "already holds session databases" in result.stderr and result.stderr.count("\n") == 1


def test_demo_verification_detects_a_double_answer_and_leftover_work(tmp_path: Path) -> None:
    directory = tmp_path / "demo"
    demo_json("--sessions", "1", "--messages", "3", "--workers", "1", "--no-chaos", "--dir", str(directory))
    config = DemoConfig(sessions=1, messages=3, workers=1, chaos=False)
    checks, _rows = verify_run(config, directory)
    assert all(check["ok"] for check in checks)
    # A run with chaos would have a dead-lettered poisoned message; this one has none, and the check says so.
    poisoned_checks, _rows = verify_run(DemoConfig(sessions=1, messages=3, workers=1), directory)
    assert [check["name"] for check in poisoned_checks if not check["ok"]] == [
        "only the poisoned message dead-lettered"
    ]

    path = SqliteSessionStoreFactory(directory).path_for_session("demo-00")
    with Store.open(path) as store:
        read = store.load_session()
        assert read is not None
        extra = SessionNode(
            node_id="m000-reply-again",
            parent_node_id=read.graph.leaf_node_id,
            payload={
                "role": "assistant",
                "parts": [{"type": "text", "text": "answering m000 a second time"}],
                "demo": {"source_key": "m000", "usage": msgspec.to_builtins(fake_model(7, "demo-00", "m000", "")[1])},
            },
        )
        store.commit_runtime_state(
            RuntimeCommit(
                session_id="demo-00",
                expected_head_revision=read.head_revision,
                config=read.config,
                graph=GraphDelta.append([extra], leaf_node_id=extra.node_id),
            )
        )
        store.enqueue_queued_work(
            QueuedWorkBatchDraft.new(
                "demo-00",
                DeliveryPolicy.AFTER_CURRENT_TURN_COMMIT,
                SlotPolicy.EXCLUSIVE,
                [QueuedWorkPayload.turn_input(TurnInput.text("left behind"))],
            )
        )
    checks, rows = verify_run(config, directory)
    failed = {check["name"] for check in checks if not check["ok"]}
    assert failed == {
        "every user message answered exactly once",
        "duplicates deduplicated",
        "queues empty",
        "head revision == number of turns",
        "usage ledger == sum of replies' usage",
        "checkpoint matches the head",
    }
    assert rows == [
        {
            "session_id": "demo-00",
            "head_revision": 4,
            "messages": 3,
            "replies": 4,
            "queued": 1,
            "dead_letters": 0,
            "nodes": 7,
            "verify_ok": True,
        }
    ]


def test_fake_model_and_messages_are_deterministic() -> None:
    assert user_message(7, "demo-00", 3) == user_message(7, "demo-00", 3)
    assert fake_model(7, "demo-00", "m003", "hi") == fake_model(7, "demo-00", "m003", "hi")
    replies = {fake_model(seed, "demo-00", "m003", "hi")[0] for seed in range(20)}
    assert len(replies) > 1  # the seed matters


@pytest.mark.parametrize(
    "bad", [["--sessions", "0"], ["--think-ms", "300", "100"], ["--duplicate-rate", "2"], ["--poison-attempts", "0"]]
)
def test_demo_rejects_bad_arguments(bad: list[str]) -> None:
    result = run_demo_process(*bad, timeout=30)
    assert result.returncode in (2, EXIT_ERROR) and "Traceback" not in result.stderr


# ---------------------------------------------------------------------------
# The same demo on PostgreSQL

# A short run with every fault on: kills every ~0.7 s, short leases, frequent stalls and duplicates.
PG_CHAOS = [
    *SMALL,
    "--messages",
    "8",
    "--kill-every",
    "0.7",
    "--lease-ms",
    "500",
    "--think-ms",
    "100",
    "300",
    "--duplicate-rate",
    "0.5",
    "--stall-rate",
    "0.2",
    "--timeout",
    "60",
]


def demo_schemas(dsn: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'lash_demo_%' ORDER BY 1").fetchall()
    return [row[0] for row in rows]


def assert_chaos_run_verified(data: dict[str, Any]) -> None:
    assert data["ok"] is True, data["checks"]
    assert data["backend"] == "postgres" and data["directory"] is None
    assert [check["name"] for check in data["checks"]] == EXPECTED_CHECKS
    assert all(check["ok"] for check in data["checks"])
    counters = data["counters"]
    assert counters["turns_committed"] == 16 and counters["errors"] == []
    assert counters["kills"] >= 1 and counters["restarts"] >= counters["kills"]
    # Killed workers held claims: their work was reclaimed under a higher fence (and answered once).
    assert counters["reclaims"] >= 1 and counters["claims"] >= counters["turns_committed"]
    assert counters["duplicates_sent"] == counters["deduplicated_at_enqueue"] + counters["duplicates_requeued"]
    assert counters["poison_claims"] == 8 and counters["dead_letters"] == 1
    assert data["wall_s"] < 60


@pytest.mark.postgres
def test_demo_on_postgres_with_chaos_verifies_and_drops_its_schema(pg_dsn: str) -> None:
    data = demo_json(*PG_CHAOS, "--postgres", pg_dsn)
    assert_chaos_run_verified(data)
    postgres = data["postgres"]
    assert postgres["server"] == "dsn" and re.fullmatch(r"lash_demo_[0-9a-f]{8}", postgres["schema"])
    assert "password" not in postgres["database"]
    assert data["kept"] is False and demo_schemas(pg_dsn) == []  # the run's schema was dropped


@pytest.mark.postgres
def test_demo_on_a_throwaway_postgres_server() -> None:
    try:
        find_bindir()
    except PostgresUnavailable as exc:
        postgres_unavailable(exc)
    started = time.monotonic()
    data = demo_json(*PG_CHAOS, "--postgres", "auto")
    assert_chaos_run_verified(data)
    assert data["postgres"]["server"] == "auto" and data["kept"] is False
    # The server is gone with its run directory (the unix socket's directory is the DSN's host).
    host = re.search(r"host=(\S+)", data["postgres"]["database"])
    assert host is not None and not Path(host.group(1)).exists()
    assert time.monotonic() - started < 90


@pytest.mark.postgres
def test_demo_on_postgres_keep_leaves_a_schema_that_verifies(pg_dsn: str) -> None:
    result = run_demo_process(
        "--sessions", "1", "--messages", "3", "--workers", "1", "--no-chaos", "--postgres", pg_dsn, "--keep"
    )
    assert result.returncode == EXIT_OK, result.stdout + result.stderr
    out = result.stdout
    assert out.startswith("lash-store demo: 1 sessions x 3 messages, 1 worker processes") and "on PostgreSQL" in out
    assert "PASS: all 12 checks" in out and "lash-store verify clean" in out
    found = re.search(r"backend +│ +PostgreSQL │\n│ +schema +│ +(lash_demo_[0-9a-f]{8}) │", out)
    assert found is not None, out
    schema = found.group(1)
    assert f"sessions kept in schema {schema}" in out and demo_schemas(pg_dsn) == [schema]

    # The kept schema is a factory's sessions, and the verification runs on it again from outside.
    config = DemoConfig(sessions=1, messages=3, workers=1, chaos=False)
    checks, rows = verify_run(config, DemoTarget(pg_dsn, schema))
    assert all(check["ok"] for check in checks) and rows[0]["head_revision"] == 3 and rows[0]["verify_ok"]
    factory = PostgresSessionStoreFactory(pg_dsn, schema=schema)
    try:
        assert [info.session_id for info in factory.list_sessions()] == ["demo-00"]
        with factory.create_store("demo-00") as store:
            store.enqueue_queued_work(
                QueuedWorkBatchDraft.new(
                    "demo-00",
                    DeliveryPolicy.AFTER_CURRENT_TURN_COMMIT,
                    SlotPolicy.EXCLUSIVE,
                    [QueuedWorkPayload.turn_input(TurnInput.text("left behind"))],
                )
            )
    finally:
        close_shared_pools()
    checks, _rows = verify_run(config, DemoTarget(pg_dsn, schema))
    assert {check["name"] for check in checks if not check["ok"]} == {"queues empty"}


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://lash@127.0.0.1:1/nowhere",  # nothing listens there
        "host=/nonexistent/lash port=5432 dbname=demo",  # no such socket
        "dbname=demo no_such_option=1",  # libpq refuses the string itself
        "not a dsn",
    ],
)
@pytest.mark.parametrize("as_json", [False, True])
def test_demo_with_a_bad_postgres_dsn_is_a_one_line_error(dsn: str, as_json: bool) -> None:
    result = run_demo_process("--postgres", dsn, *(["--json"] if as_json else []), timeout=60)
    assert result.returncode == EXIT_ERROR, result.stdout + result.stderr
    assert result.stderr.startswith("lash-store: error: ") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr + result.stdout
    if as_json:
        assert json.loads(result.stdout)["error"]["message"] in result.stderr


def test_demo_postgres_auto_without_server_binaries_is_a_one_line_error() -> None:
    result = run_demo_process("--postgres", "auto", env={"LASH_PG_BINDIR": "/nonexistent/lash-pg-bin"}, timeout=60)
    assert result.returncode == EXIT_ERROR, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "PostgreSQL" in result.stderr and "/nonexistent/lash-pg-bin" in result.stderr


@pytest.mark.parametrize(("extra", "message"), [(["--dir", "somewhere"], "--dir"), (["--keep"], "--keep")])
def test_demo_postgres_refuses_options_that_mean_nothing_there(extra: list[str], message: str) -> None:
    dsn = "auto" if "--keep" in extra else "dbname=demo"
    result = run_demo_process("--postgres", dsn, *extra, timeout=30)
    assert result.returncode == EXIT_ERROR and message in result.stderr and result.stderr.count("\n") == 1

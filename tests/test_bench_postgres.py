"""The PostgreSQL benchmarks run end to end on tiny sizes, verify what they wrote and report the documented JSON.

As in test_bench.py, nothing here depends on speed.  Most runs use ``--dsn``
on the test server (fsync off), which also checks that the benchmark leaves
no schema behind; one run starts its own throwaway durable server.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from lash_store.bench.__main__ import main
from lash_store.bench.commit import Workload
from lash_store.bench.pg_commit import PgFloor, TurnEncoder
from lash_store.options import BlobProfile, StoreOptions
from lash_store.postgres import PostgresStore, close_shared_pools
from tests.test_bench import run_bench_process, run_json

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(300)]


@pytest.fixture
def dsn(pg_dsn: str) -> Iterator[str]:
    yield pg_dsn
    close_shared_pools()  # the benchmark's pooled connections must not outlive the test database


def _bench_schemas(dsn: str) -> list[str]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'lash_bench_%' ORDER BY 1").fetchall()
    return [row[0] for row in rows]


def test_floor_stores_the_bytes_lash_store_stores(dsn: str) -> None:
    """The floor writes byte for byte the node bodies, blobs and head lash-store writes for the same turns."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA floor_check")
    workload = Workload(5)
    options = StoreOptions(blob_profile=BlobProfile.BALANCED)
    encoder = TurnEncoder("s1", options.blob_profile)
    floor = PgFloor(dsn, "floor_check", "s1")
    revision = 0
    try:
        with PostgresStore.open(dsn, "s1", options) as store:
            for index in range(1, 4):
                commit = workload.commit(workload.turn(index), revision)
                revision = store.commit_runtime_state(commit).head_revision
                floor.commit(encoder.encode(commit))
        with psycopg.connect(dsn, autocommit=True) as conn:

            def rows(sql: str) -> list[tuple[Any, ...]]:
                return conn.execute(sql).fetchall()  # type: ignore[arg-type]

            nodes = "SELECT node_id, parent_node_id, user_text, body FROM {}.{} WHERE session_id = 's1' ORDER BY seq"
            assert rows(nodes.format("lash", "graph_nodes")) == rows(nodes.format("floor_check", "nodes"))
            blobs = "SELECT hash, encoding, kind, raw_size, content FROM {}.blobs WHERE session_id = 's1' ORDER BY 1"
            store_blobs = rows(blobs.format("lash"))
            assert len(store_blobs) == 6 and store_blobs == rows(blobs.format("floor_check"))
            head = (
                "SELECT {rev}, checkpoint_ref, leaf_node_id, body, usage_ledger, node_count, user_message_count "
                "FROM {schema}.sessions WHERE session_id = 's1'"
            )
            store_head = rows(head.format(rev="head_revision", schema="lash"))
            assert store_head == rows(head.format(rev="revision", schema="floor_check"))
            assert store_head[0][0] == 3 and store_head[0][5] == 6
    finally:
        floor.close()


def test_commit_postgres_quick_json(dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["commit", "--backend", "postgres", "--dsn", dsn, "--quick", "--json", "--turns", "4", "12"]
    argv += ["--warmup", "2", "--window", "4", "--peers", "--peer-full-max-turns", "6"]
    code, report = run_json(capsys, argv)
    assert code == 0
    assert report["benchmark"] == "commit" and report["backend"] == "postgres"
    assert report["config"]["checkpoints"] == [4, 12] and report["config"]["repeat"] == 1
    assert report["server"]["origin"] == "given DSN" and report["server"]["transport"] == "unix socket"
    assert {"fsync", "synchronous_commit", "wal_sync_method", "server_version"} <= report["server"].keys()
    for row in report["checkpoints"]:
        for key in ("store_us", "store_p90_us", "store_p99_us", "floor_us", "floor_p90_us", "floor_p99_us"):
            assert row[key] > 0
        assert row["store_p90_us"] <= row["store_p99_us"]
        assert row["ratio"] == pytest.approx(row["store_us"] / row["floor_us"])
        assert row["target"] == 1.5 and isinstance(row["pass"], bool) and row["encode_us"] > 0
    growth = report["growth"]
    assert (growth["from_turn"], growth["to_turn"], growth["last_turn"]) == (4, 12, 12)
    check = report["verification"]
    assert check["ok"] is True
    assert (check["head_revision"], check["node_count"], check["active_path_nodes"]) == (12, 24, 24)
    assert (check["floor_head_revision"], check["floor_node_count"]) == (12, 24)
    sides = {side["key"]: side for side in report["peers"]["sides"]}
    assert list(sides) == ["langgraph-pg-full", "langgraph-pg-new"]
    full, new = sides["langgraph-pg-full"], sides["langgraph-pg-new"]
    assert full["pass"] == "own" and new["pass"] == "shared"
    assert full["library"] == "langgraph-checkpoint-postgres"
    assert full["verification"]["ok"] is True and full["verification"]["checkpoints"] == 6
    assert full["verification"]["latest_messages"] == 12
    assert full["checkpoints"][0]["us"] > 0 and full["checkpoints"][1]["us"] is None  # stopped after 6 turns
    assert full["speedup_pass"] is None  # turn 1,000 was not measured
    assert new["verification"]["ok"] is True and new["verification"]["latest_messages"] == 2
    for point in new["checkpoints"]:
        assert point["ratio_vs_store"] == pytest.approx(point["us"] / point["pass_store_us"])
    assert _bench_schemas(dsn) == []  # every schema the benchmark created was dropped


def test_queue_postgres_quick_json_exactly_once(dsn: str) -> None:
    """Through ``python -m`` so that spawned worker processes and the exit code are the real ones."""
    argv = ["queue", "--backend", "postgres", "--dsn", dsn, "--quick", "--json", "--batches", "10"]
    argv += ["--workers", "1", "3"]
    completed = run_bench_process(argv)
    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout)
    assert report["benchmark"] == "queue" and report["backend"] == "postgres"
    assert report["config"]["workers"] == [1, 3] and report["config"]["modes"] == ["own", "shared"]
    assert [(c["mode"], c["workers"], c["queues"]) for c in report["configs"]] == [
        ("own", 1, 1),
        ("own", 3, 3),
        ("shared", 1, 1),
        ("shared", 3, 1),
    ]
    for config in report["configs"]:
        assert config["verification"]["ok"] is True
        for side in ("lash_store", "floor"):
            summary = config[side]
            check = summary["verification"]
            assert summary["claims"] == 10 and summary["claims_per_s"] > 0
            assert check["completed"] == 10 and check["final_head_revision"] == 10 and check["remaining_batches"] == 0
            assert check["claimed_twice"] == [] and check["completed_twice"] == [] and check["lost"] == []
            assert check["worker_errors"] == []
            claims = [worker["claims"] for worker in summary["per_worker"]]
            assert len(claims) == config["workers"] and sum(claims) == 10
            if config["mode"] == "own":
                assert claims == ([10] if config["workers"] == 1 else [4, 3, 3])  # each worker drains its own queue
        assert config["ratio"] == pytest.approx(config["lash_store"]["claims_per_s"] / config["floor"]["claims_per_s"])
    assert report["verification"] == {"ok": True, "configs_verified": 4}
    assert _bench_schemas(dsn) == []


def test_list_postgres_on_a_throwaway_server(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["list", "--backend", "postgres", "--quick", "--json", "--sessions", "30", "--limit", "10", "--repeat", "2"]
    code, report = run_json(capsys, argv)
    assert code == 0
    assert report["benchmark"] == "list" and report["backend"] == "postgres"
    assert report["server"]["fsync"] == "on" and report["server"]["synchronous_commit"] == "on"
    assert report["server"]["origin"].startswith("throwaway")
    assert report["config"] == {"sessions": 30, "limit": 10, "repeat": 2, "setup_threads": 8}
    assert report["setup"]["seconds"] > 0 and report["setup"]["sessions_per_s"] > 0
    for key in ("first_page", "middle_page", "recent_page", "floor"):
        figures = report[key]
        assert figures["count"] == 2 and 0 < figures["p50_ms"] <= figures["max_ms"]
    assert report["ratio"] > 0 and report["target_ms"] == 50.0 and isinstance(report["pass"], bool)
    assert report["verification"] == {"ok": True, "problems": [], "listed": 30}


def test_list_text_report_with_dsn(dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "--dsn", dsn, "--sessions", "12", "--limit", "5", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    assert "lash-store first page" in out and "psycopg floor" in out and "set-up: 12 sessions" in out
    assert "verification: ok" in out
    assert _bench_schemas(dsn) == []


@pytest.mark.parametrize(
    "argv",
    [
        ["list", "--backend", "sqlite", "--dsn", "host=/nowhere"],
        ["commit", "--backend", "postgres", "--dir", "/tmp/x"],
        ["commit", "--backend", "postgres", "--plot", "x.png"],
        ["commit", "--dsn", "host=/nowhere"],
        ["queue", "--workers", "1", "4"],
        ["queue", "--mode", "own"],
    ],
)
def test_options_of_the_other_backend_are_refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    capsys.readouterr()

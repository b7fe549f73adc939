"""The benchmark command runs end to end on tiny sizes and reports the documented JSON shape.

No assertion here depends on speed: benchmarks measure, tests only check
that the measurement runs, verifies and reports.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest

from lash_store.bench import percentile, render_table, summarise_ns
from lash_store.bench import queue as queue_bench
from lash_store.bench.__main__ import main
from lash_store.bench.commit import FloorStore, Workload

ROOT = Path(__file__).resolve().parents[1]


def _run_json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, dict[str, Any]]:
    code = main(argv)
    return code, json.loads(capsys.readouterr().out)


def test_commit_quick_json_shape(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "commit",
        "--quick",
        "--json",
        "--turns",
        "10",
        "30",
        "--warmup",
        "3",
        "--window",
        "8",
        "--dir",
        str(tmp_path),
    ]
    code, report = _run_json(capsys, argv)
    assert code == 0
    assert report["benchmark"] == "commit"
    assert report["config"]["checkpoints"] == [10, 30]
    assert report["config"]["turns"] == 30
    assert report["config"]["repeat"] == 1
    assert report["config"]["blob_profile"] == "balanced"
    assert report["config"]["durability"] == "NORMAL"
    assert [row["turn"] for row in report["checkpoints"]] == [10, 30]
    for row in report["checkpoints"]:
        assert {"store_us", "floor_us", "ratio", "target", "pass", "window"} <= row.keys()
        assert row["store_us"] > 0 and row["floor_us"] > 0
        assert row["ratio"] == pytest.approx(row["store_us"] / row["floor_us"])
        assert row["target"] == 2.0 and isinstance(row["pass"], bool)
    growth = report["growth"]
    assert (growth["from_turn"], growth["to_turn"], growth["target"]) == (10, 30, 1.3)
    assert isinstance(growth["pass"], bool)
    assert isinstance(report["targets_met"], bool)
    assert report["verification"]["ok"] is True
    assert report["verification"]["head_revision"] == 30
    assert report["verification"]["node_count"] == 60
    sizes = report["bytes_per_turn"]
    assert sizes["tool_state"] > 7_500 and sizes["tool_state_stored_by_lash_store"] < sizes["tool_state"]


def test_commit_text_report_prints_verdicts(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["commit", "--quick", "--turns", "12", "--warmup", "0", "--window", "5"]) == 0
    out = capsys.readouterr().out
    assert "lash-store" in out and "sqlite3 floor" in out
    assert "growth" in out
    assert "PASS" in out or "MISS" in out


def test_commit_low_latency_profile_stores_raw_tool_state(capsys: pytest.CaptureFixture[str]) -> None:
    code, report = _run_json(capsys, ["commit", "--json", "--turns", "10", "--warmup", "0", "--profile", "low_latency"])
    assert code == 0
    assert report["config"]["blob_profile"] == "low_latency"
    sizes = report["bytes_per_turn"]
    assert sizes["tool_state_stored_by_lash_store"] == sizes["tool_state"]


def test_queue_quick_json_verifies_exactly_once(tmp_path: Path) -> None:
    """Run through ``python -m`` so the spawn start method and the exit code are the real ones."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "lash_store.bench",
            "queue",
            "--quick",
            "--json",
            "--batches",
            "40",
            "--repeat",
            "2",
            "--dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout)
    assert report["benchmark"] == "queue"
    assert report["config"]["batches"] == 40 and report["config"]["workers"] == 4 and report["config"]["repeat"] == 2
    for side in ("lash_store", "floor"):
        summary = report[side]
        assert summary["claims"] == 80 and summary["runs"] == 2 and len(summary["claims_per_s_per_run"]) == 2
        assert {
            "claims_per_s",
            "claim_latency_us",
            "commit_latency_us",
            "lost_races",
            "missed_free_work",
            "per_worker",
        } <= summary.keys()
        assert {"p50", "p99"} <= summary["claim_latency_us"].keys()
        assert summary["verification"]["ok"] is True
    check = report["verification"]
    assert check["ok"] is True and check["runs_verified"] == 2
    assert check["completed"] == 40 and check["final_head_revision"] == 40 and check["remaining_batches"] == 0
    assert check["claimed_twice"] == [] and check["lost"] == [] and check["worker_errors"] == []
    assert sum(worker["claims"] for worker in report["lash_store"]["per_worker"]) == 80


def _worker(owner: str, claimed: list[str], completed: list[str]) -> dict[str, Any]:
    result = queue_bench._new_result(owner)
    result.update(claimed=claimed, completed=completed, claim_ns=[1_000] * len(claimed), started_ns=1, finished_ns=2)
    return result


def test_queue_verification_catches_double_claims_and_losses() -> None:
    enqueued = ["a", "b", "c"]
    bad = queue_bench.QueueRun(
        [_worker("w0", ["a", "b"], ["a", "b"]), _worker("w1", ["b"], ["b"])], enqueued, 3, 0, 1.0
    )
    check = queue_bench.verify_run(bad)
    assert check["ok"] is False
    assert check["claimed_twice"] == ["b"] and check["completed_twice"] == ["b"] and check["lost"] == ["c"]

    good = queue_bench.QueueRun(
        [_worker("w0", ["a", "c"], ["a", "c"]), _worker("w1", ["b"], ["b"])], enqueued, 3, 0, 1.0
    )
    assert queue_bench.verify_run(good)["ok"] is True
    short_head = queue_bench.QueueRun([_worker("w0", enqueued, enqueued)], enqueued, 2, 0, 1.0)
    assert queue_bench.verify_run(short_head)["ok"] is False  # head revision must equal the number of batches
    left_over = queue_bench.QueueRun([_worker("w0", enqueued, enqueued)], enqueued, 3, 1, 1.0)
    assert queue_bench.verify_run(left_over)["ok"] is False

    summary = queue_bench.summarise([good, bad])  # one failing run fails the whole report
    assert summary["verification"]["ok"] is False and summary["verification"]["lost"] == ["c"]
    assert summary["claims"] == 6 and summary["runs"] == 2
    assert queue_bench.summarise([good, good])["verification"]["ok"] is True


def test_workload_is_deterministic_and_sized_like_a_turn() -> None:
    first, again = Workload(7).turn(42), Workload(7).turn(42)
    encode = msgspec.msgpack.encode
    assert encode(first.tool_state) == encode(again.tool_state)
    assert encode(first.user) == encode(again.user)
    assert encode(Workload(7).turn(43).tool_state) != encode(first.tool_state)
    assert first.user.parent_node_id == "t000041-assistant"
    assert first.assistant.parent_node_id == first.user.node_id
    assert Workload(7).turn(1).user.parent_node_id is None
    assert len(first.user.payload["parts"][0]["text"]) == 500
    assert len(first.assistant.payload["parts"][0]["text"]) == 1_500
    sizes = {len(encode(Workload(7).tool_state(index))) for index in (1, 10, 1_000, 10_000)}
    assert all(7_800 <= size <= 8_600 for size in sizes)


def test_floor_writes_one_head_revision_per_turn(tmp_path: Path) -> None:
    floor = FloorStore(tmp_path / "floor.db")
    workload = Workload(1)
    try:
        for index in range(1, 4):
            floor.commit(workload.turn(index))
        assert floor.conn.execute("SELECT revision FROM head").fetchone()[0] == 3
        assert floor.conn.execute("SELECT count(*) FROM nodes").fetchone()[0] == 6
    finally:
        floor.close()


def test_helpers() -> None:
    assert percentile([5, 1, 3, 2, 4], 0.5) == 3
    assert percentile([5, 1, 3, 2, 4], 0.99) == 5
    assert percentile(list(range(1, 101)), 0.99) == 99
    summary = summarise_ns([1_000, 2_000, 3_000])
    assert summary["p50"] == 2.0 and summary["max"] == 3.0 and summary["count"] == 3
    table = render_table(["a", "b"], [["x", "1"], ["yy", "22"]])
    assert table.splitlines()[0].startswith("a")
    assert len(table.splitlines()) == 4


def test_bad_arguments_are_rejected(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["commit", "--turns", "0"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit):
        main([])
    capsys.readouterr()

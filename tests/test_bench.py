"""The benchmark command runs end to end on tiny sizes and reports the documented JSON shape.

No assertion here depends on speed: benchmarks measure, tests only check
that the measurement runs, verifies and reports.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest

from lash_store.bench import MissingExtra, percentile, render_table, summarise_ns
from lash_store.bench import peers as peer_bench
from lash_store.bench import plot as plot_bench
from lash_store.bench import queue as queue_bench
from lash_store.bench import resume as resume_bench
from lash_store.bench.__main__ import main
from lash_store.bench.commit import FloorStore, Workload
from lash_store.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[1]


def run_json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, dict[str, Any]]:
    """Run the benchmark command in this process; its exit code and its JSON report."""
    code = main(argv)
    return code, json.loads(capsys.readouterr().out)


def run_bench_process(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """``python -m lash_store.bench ARGV`` in a child process of this checkout (the real spawn and exit code)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-m", "lash_store.bench", *argv],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        check=False,
    )


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
    code, report = run_json(capsys, argv)
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
    code, report = run_json(capsys, ["commit", "--json", "--turns", "10", "--warmup", "0", "--profile", "low_latency"])
    assert code == 0
    assert report["config"]["blob_profile"] == "low_latency"
    sizes = report["bytes_per_turn"]
    assert sizes["tool_state_stored_by_lash_store"] == sizes["tool_state"]


def test_queue_quick_json_verifies_exactly_once(tmp_path: Path) -> None:
    """Run through ``python -m`` so the spawn start method and the exit code are the real ones."""
    completed = run_bench_process(
        ["queue", "--quick", "--json", "--batches", "40", "--repeat", "2", "--dir", str(tmp_path)]
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


# --------------------------------------------------------------------------
# resume


def test_resume_json_reads_every_size_back(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["resume", "--json", "--turns", "12", "3", "--repeat", "2", "--dir", str(tmp_path)]
    code, report = run_json(capsys, argv)
    assert code == 0
    assert report["benchmark"] == "resume"
    assert report["config"]["sizes"] == [3, 12] and report["config"]["repeat"] == 2
    assert [row["turns"] for row in report["sizes"]] == [3, 12]
    assert [row["nodes"] for row in report["sizes"]] == [6, 24]
    for row in report["sizes"]:
        for key in ("full_graph_us", "active_path_us", "floor_us", "floor_walk_us"):
            assert row[key] > 0
        assert row["full_graph_ratio"] == pytest.approx(row["full_graph_us"] / row["floor_us"])
        assert row["active_path_ratio"] == pytest.approx(row["active_path_us"] / row["floor_us"])
        assert row["samples"] == 2
    assert report["verification"] == {"ok": True, "problems": []}
    assert any(tmp_path.rglob("resume-store.db"))  # --dir keeps the files


def test_resume_text_report_prints_ratios(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["resume", "--turns", "4", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    assert "full/floor" in out and "active/floor" in out and "sqlite3 floor" in out
    assert "verification" in out and "ok" in out


def test_resume_floor_reads_the_same_rows(tmp_path: Path) -> None:
    floor = FloorStore(tmp_path / "floor.db")
    workload = Workload(3)
    try:
        for index in range(1, 6):
            floor.commit(workload.turn(index))
        revision, head, nodes, tool_state = resume_bench.floor_load(floor.conn)
        walked = resume_bench.floor_walk(floor.conn)
    finally:
        floor.close()
    assert revision == 5 and head["turn_state"]["turn_index"] == 5
    assert [node.node_id for node in nodes][-2:] == ["t000005-user", "t000005-assistant"]
    assert tool_state == workload.tool_state(5)
    assert [node.node_id for node in walked[2]] == [node.node_id for node in nodes]


# --------------------------------------------------------------------------
# gc


def test_gc_json_deletes_exactly_the_unreachable_blobs(capsys: pytest.CaptureFixture[str]) -> None:
    code, report = run_json(capsys, ["gc", "--json", "--blobs", "150", "--repeat", "2"])
    assert code == 0
    assert report["benchmark"] == "gc"
    assert report["config"]["blobs"] == 150 and report["config"]["repeat"] == 2 and report["config"]["grace_ms"] == 0
    assert report["config"]["live_blobs"] >= 1
    assert len(report["store_us_per_run"]) == 2 and len(report["floor_us_per_run"]) == 2
    assert report["store_us_per_10k"] == pytest.approx(report["store_us"] * 10_000 / 150)
    assert report["floor_us_per_10k"] == pytest.approx(report["floor_us"] * 10_000 / 150)
    assert report["ratio"] == pytest.approx(report["store_us"] / report["floor_us"])
    assert report["verification"] == {"ok": True, "problems": []}


def test_list_sqlite_json_pages_a_root_through_its_catalogue(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["list", "--json", "--sessions", "24", "--limit", "5", "--repeat", "2", "--dir", str(tmp_path)]
    code, report = run_json(capsys, argv)
    assert code == 0
    assert report["benchmark"] == "list" and report["backend"] == "sqlite"
    assert report["config"] == {"sessions": 24, "limit": 5, "repeat": 2, "setup_threads": 4}
    for key in ("first_page", "second_page", "by_id_page", "floor"):
        assert report[key]["count"] == 2 and 0 < report[key]["p50_ms"] <= report[key]["max_ms"]
    assert report["cold_ms"] > 0 and report["after_touch"]["touched"] == 1
    assert report["target_ms"] == 100.0 and isinstance(report["pass"], bool)
    assert report["verification"] == {"ok": True, "problems": [], "listed": 24}


def test_gc_through_the_lash_store_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["bench", "gc", "--quick", "--blobs", "40"]) == 0
    out = capsys.readouterr().out
    assert "gc_unreachable()" in out and "per 10,000 blobs" in out and "sqlite3 floor" in out


# --------------------------------------------------------------------------
# --plot and --peers


def test_commit_plot_writes_a_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "charts" / "commit.png"
    argv = ["commit", "--turns", "5", "20", "--warmup", "0", "--window", "5", "--plot", str(target)]
    assert main(argv) == 0
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"plot: {target}" in capsys.readouterr().out


def test_rolling_median() -> None:
    assert plot_bench.rolling_median([5, 1, 3, 100, 2], 3) == [5, 3, 3, 3, 3]
    assert plot_bench.rolling_median([], 4) == []
    with pytest.raises(ValueError):
        plot_bench.rolling_median([1.0], 0)


def test_commit_peers_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "peers.png"
    argv = ["commit", "--json", "--turns", "4", "10", "--warmup", "2", "--window", "4"]
    argv += ["--peers", "--peer-full-max-turns", "6", "--plot", str(target)]
    code, report = run_json(capsys, argv)
    assert code == 0
    assert report["plot"] == str(target) and target.exists()
    peers = report["peers"]
    assert peers["store_synchronous"] == "NORMAL"
    sides = {side["key"]: side for side in peers["sides"]}
    assert list(sides) == ["langgraph-full", "langgraph-new", "openai-agents"]
    for side in sides.values():
        assert side["verification"]["ok"] is True, side["verification"]
        assert side["synchronous"] == "NORMAL"
        assert {"library", "version", "per_turn", "tool_state", "label"} <= side.keys()
        assert [point["turn"] for point in side["checkpoints"]] == [4, 10]
    floor_us = {row["turn"]: row["floor_us"] for row in report["checkpoints"]}
    for key in ("langgraph-new", "openai-agents"):
        for point in sides[key]["checkpoints"]:
            assert point["us"] > 0
            assert point["ratio_vs_floor"] == pytest.approx(point["us"] / floor_us[point["turn"]])
    full = sides["langgraph-full"]
    assert full["pass"] == "own" and sides["langgraph-new"]["pass"] == sides["openai-agents"]["pass"] == "shared"
    point = full["checkpoints"][0]
    assert point["ratio_vs_floor"] == pytest.approx(point["us"] / point["pass_floor_us"])
    assert full["max_turns"] == 6
    assert full["checkpoints"][0]["us"] > 0
    assert full["checkpoints"][1]["us"] is None  # stopped after 6 turns
    assert full["verification"]["checkpoints"] == 6 and full["verification"]["latest_messages"] == 12
    assert sides["langgraph-new"]["verification"]["latest_messages"] == 2
    assert sides["openai-agents"]["verification"]["items"] == 30  # user, assistant and tool-state items
    assert sides["langgraph-full"]["verification"]["synchronous_seen"] == "NORMAL"


def test_commit_peers_text_and_library_durability(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["commit", "--turns", "3", "--warmup", "0", "--window", "3", "--peers", "--peer-sync", "default"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    for label in ("LangGraph full state", "LangGraph new msgs", "OpenAI SQLiteSession"):
        assert label in out
    assert "synchronous=library default" in out
    assert "lash_bench_tool_state" in out  # how the tool state is stored in SQLiteSession is stated


def _hide_modules(monkeypatch: pytest.MonkeyPatch, *prefixes: str) -> None:
    real_import = importlib.import_module

    def fake_import(name: str, package: str | None = None) -> Any:
        if name.startswith(prefixes):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return real_import(name, package)

    monkeypatch.setattr(importlib, "import_module", fake_import)


def test_missing_extra_exits_2_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _hide_modules(monkeypatch, "agents", "matplotlib")
    assert main(["commit", "--turns", "3", "--peers"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    line = captured.err.strip()
    assert "\n" not in line and "openai-agents" in line and "lash-store[bench]" in line
    assert "langgraph" not in line  # only what is missing is named

    assert main(["commit", "--turns", "3", "--plot", "never.png"]) == 2
    line = capsys.readouterr().err.strip()
    assert "\n" not in line and "matplotlib" in line and "lash-store[bench]" in line
    assert not Path("never.png").exists()
    with pytest.raises(MissingExtra):
        peer_bench.check_available()

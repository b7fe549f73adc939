"""``lash-store bench openai-session`` runs end to end (tiny sizes; a measurement, never a timed test)."""

from __future__ import annotations

import json
import math

import pytest

from lash_store.bench import openai_session
from lash_store.cli import main


def test_the_bench_reports_both_sessions_at_every_checkpoint() -> None:
    report = openai_session.run(checkpoints=[3, 8], window=4, warmup_turns=2, reads=2, limit=3, verbose=False)
    assert report["verification"] == {"ok": True, "same_items": True, "items": 16}
    assert [mark["turn"] for mark in report["checkpoints"]] == [3, 8]
    first, last = report["checkpoints"]
    assert first["lash"]["count"] == first["sdk"]["count"] == 3  # the window cannot reach before turn 1
    assert last["lash"]["count"] == last["sdk"]["count"] == 4
    for mark in report["checkpoints"]:
        assert mark["lash"]["p50_ms"] > 0 and mark["sdk"]["p99_ms"] > 0
        assert math.isclose(mark["ratio_p50"], mark["lash"]["p50_ms"] / mark["sdk"]["p50_ms"])
        assert mark["get_items"]["lash"]["count"] == mark["get_items"]["sdk"]["count"] == 2
    assert set(report["flatness"]) == {"lash", "sdk"}
    assert set(report["targets"]) == {"not_slower_than_sqlite_session", "flat", "flat_bound"}
    assert report["config"]["synchronous"] == "NORMAL"
    text = openai_session.format_report(report)
    assert "LashSession @ 8" in text and "SQLiteSession @ 8" in text and "get_items(3)" in text


def test_both_sides_store_the_same_items() -> None:
    items = openai_session.turn_items(1, 7)
    assert items == openai_session.turn_items(1, 7)  # deterministic: both sides get equal dicts
    assert [item["role"] for item in items] == ["user", "assistant"]
    assert 450 <= len(items[0]["content"]) <= 500 and len(items[1]["content"][0]["text"]) <= 1_500


def test_the_command_line_prints_json(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["bench", "openai-session", "--quick", "--json", "--turns", "2", "4", "--warmup", "0", "--reads", "0"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["config"]["checkpoints"] == [2, 4]
    assert report["checkpoints"][1]["get_items"] == {}
    assert report["verification"]["ok"] is True

"""``lash-store bench effects`` runs end to end (tiny sizes; a measurement, never a timed test)."""

from __future__ import annotations

import json

import pytest

from lash_store.bench import effects as effects_bench
from lash_store.cli import main


def test_effects_bench_reports_every_workload_on_sqlite() -> None:
    report = effects_bench.run(backend="sqlite", effects=20, workers=(1, 2), occurrences=3, verbose=False)
    assert [entry["workers"] for entry in report["effects"]] == [1, 2]
    for entry in report["effects"]:
        for mode in ("first", "replay"):
            assert entry[mode]["lash_per_second"] > 0 and entry[mode]["floor_per_second"] > 0
    assert report["effects"][0]["replay"]["latency_us"]["count"] == 20
    assert report["routing"]["lash_per_second"] > 0
    text = effects_bench.format_report(report)
    assert "replay latency" in text and "routing" in text


@pytest.mark.postgres
def test_effects_bench_on_postgres(pg_dsn: str) -> None:
    report = effects_bench.run(backend="postgres", effects=12, workers=(1,), occurrences=2, dsn=pg_dsn, verbose=False)
    assert report["server"]["fsync"] in ("on", "off")
    assert report["routing"]["floor_per_second"] > 0


def test_the_command_line_prints_json(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["bench", "effects", "--quick", "--json", "--effects", "8", "--occurrences", "2", "--workers", "1"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["config"]["effects"] == 8

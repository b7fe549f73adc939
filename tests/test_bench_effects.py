"""``lash-store bench effects`` runs end to end (tiny sizes; a measurement, never a timed test)."""

from __future__ import annotations

import json
from pathlib import Path

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
    assert report["routing"]["pk_only_floor_per_second"] > 0  # the floor without the secondary indexes too
    text = effects_bench.format_report(report)
    assert "replay latency" in text and "routing" in text and "primary keys only" in text


def test_the_floor_tables_carry_the_deployment_layouts_secondary_indexes(tmp_path: Path) -> None:
    """Each table routing writes has, on the floor, as many secondary indexes as in lash-store's SQLite layout,
    with the same partial predicates; the primary-key-only floor has none."""
    import sqlite3

    from lash_store.sqlite.host_events import HostEventStore
    from lash_store.sqlite.registry import ProcessRegistry

    lash = tmp_path / "lash.db"
    HostEventStore.open(lash).close()
    ProcessRegistry.open(lash).close()
    effects_bench._open_host(effects_bench.Where("sqlite", str(lash))).close()
    for indexed, name in ((True, "floor.db"), (False, "bare.db")):
        floor = effects_bench.Floor(effects_bench.Where("sqlite", str(tmp_path / name)), indexed=indexed)
        floor.setup()
        floor.close()

    def predicates(path: Path) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        with sqlite3.connect(path) as conn:
            for table, sql in conn.execute("SELECT tbl_name, sql FROM sqlite_master WHERE type = 'index'"):
                if sql is not None:  # not a primary key's own index
                    found.setdefault(table, []).append(" ".join(sql.split()).partition(" WHERE ")[2])
        return found

    mine, floor_indexes = predicates(lash), predicates(tmp_path / "floor.db")
    written = {
        "effect_journal": "floor_journal",
        "host_event_occurrences": "floor_occurrences",
        "host_event_deliveries": "floor_deliveries",
        "processes": "floor_processes",
        "process_handle_grants": "floor_grants",
    }
    for table, floor_table in written.items():
        assert sorted(floor_indexes[floor_table]) == sorted(mine[table]), table
    assert floor_indexes["floor_subscriptions"] == [""]  # the matching read's index (routing never writes it)
    assert predicates(tmp_path / "bare.db") == {}


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

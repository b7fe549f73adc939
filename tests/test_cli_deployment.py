"""``lash-store subscriptions / occurrences / pending-deliveries / journal / deployment-prune`` on a deployment file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lash_store.cli import EXIT_ERROR, EXIT_OK, main
from lash_store.effects import (
    EffectScope,
    RuntimeEffectCommand,
    RuntimeEffectEnvelope,
    RuntimeEffectOutcome,
    RuntimeScope,
)
from lash_store.host_events import HostEventOccurrenceRequest, TriggerSubscriptionDraft, empty_source_key
from lash_store.sqlite.effects import EffectHost
from lash_store.sqlite.host_events import HostEventStore

KEY = empty_source_key("ui.button.pressed")


@pytest.fixture
def deployment(tmp_path: Path) -> Path:
    path = tmp_path / "deployment.db"
    with HostEventStore.open(path) as store:
        for session in ("a", "b"):
            store.register_subscription(
                TriggerSubscriptionDraft(
                    session_id=session, source_type="ui.button.pressed", source_key=KEY, name=session
                )
            )
        occurrence = store.record_occurrence(
            HostEventOccurrenceRequest(source_type="ui.button.pressed", source_key=KEY, idempotency_key="press-1")
        )
        store.reserve_matching_deliveries(occurrence.occurrence_id)
    with EffectHost.open(path) as host:
        envelope = RuntimeEffectEnvelope.new(RuntimeScope(session_id="a"), "e", "k", RuntimeEffectCommand.tool_call({}))
        host.scoped(EffectScope.turn("a", "t")).execute_effect(envelope, lambda env: RuntimeEffectOutcome.tool_call(1))
    return path


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:
    assert main([*argv, "--json"]) == EXIT_OK
    return json.loads(capsys.readouterr().out)


def test_listings(deployment: Path, capsys: pytest.CaptureFixture[str]) -> None:
    subs = run_json(capsys, "subscriptions", str(deployment))["subscriptions"]
    assert [s["handle"] for s in subs] == ["trigger:1", "trigger:2"]
    assert [
        s["handle"] for s in run_json(capsys, "subscriptions", str(deployment), "--session", "b")["subscriptions"]
    ] == ["trigger:2"]
    (occurrence,) = run_json(capsys, "occurrences", str(deployment))["occurrences"]
    assert occurrence["idempotency_key"] == "press-1"
    pending = run_json(capsys, "pending-deliveries", str(deployment))["pending_deliveries"]
    assert len(pending) == 2 and {p["state"] for p in pending} == {"reserved"}
    (row,) = run_json(capsys, "journal", str(deployment))["journal"]
    assert (row["status"], row["replay_key"], row["outcome"]["value"]) == ("completed", "k", 1)
    assert run_json(capsys, "journal", str(deployment), "--status", "failed")["journal"] == []
    for command in ("subscriptions", "occurrences", "pending-deliveries", "journal"):  # human output
        assert main([command, str(deployment)]) == EXIT_OK
        assert capsys.readouterr().out.strip()


def test_prune(deployment: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dry = run_json(capsys, "deployment-prune", str(deployment), "--older-than", "0", "--dry-run")
    assert dry["journal"]["row_count"] == 1
    assert dry["host_events"]["occurrence_count"] == 0  # its deliveries are still pending
    done = run_json(capsys, "deployment-prune", str(deployment), "--older-than", "0")
    assert done["journal"]["row_count"] == 1
    assert run_json(capsys, "journal", str(deployment))["journal"] == []
    assert len(run_json(capsys, "occurrences", str(deployment))["occurrences"]) == 1


def test_a_missing_deployment_file_is_an_error_and_is_not_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.db"
    assert main(["journal", str(missing)]) == EXIT_ERROR
    assert "no deployment file" in capsys.readouterr().err
    assert not missing.exists()


@pytest.mark.parametrize("command", ["subscriptions", "occurrences", "pending-deliveries", "journal"])
def test_every_command_renders_without_rich(
    deployment: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    from lash_store import _output

    monkeypatch.setattr(_output, "HAVE_RICH", False)
    assert main([command, str(deployment)]) == EXIT_OK
    out = capsys.readouterr().out
    assert out.strip() and not any(tag in out for tag in ("[/", "[bold", "[red", "[green", "[dim"))

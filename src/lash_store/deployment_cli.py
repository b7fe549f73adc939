"""``lash-store`` commands for a deployment's host events and effect journal.

* ``subscriptions DEPLOYMENT`` -- trigger subscriptions (``--session``, ``--enabled``);
* ``occurrences DEPLOYMENT`` -- recorded host-event occurrences, oldest first;
* ``pending-deliveries DEPLOYMENT`` -- deliveries reserved but not started (what a sweeper would finish);
* ``journal DEPLOYMENT`` -- effect-journal rows (``--status``);
* ``deployment-prune DEPLOYMENT --older-than SECONDS`` -- delete finished journal rows and fully
  started occurrences older than the horizon (``--dry-run`` counts only).

``DEPLOYMENT`` is a SQLite deployment file (it must exist: listing never creates
one) or a PostgreSQL DSN (``--schema``, default ``lash``; never set up by
these commands).  ``--json`` prints one JSON document.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import msgspec

from lash_store._output import Output, Table
from lash_store.host_events import TriggerSubscriptionFilter
from lash_store.service.effects.service import EffectHostService
from lash_store.service.host_events.service import HostEventStoreService
from lash_store.targets import is_dsn

__all__ = ["add_deployment_commands"]

_STATUSES = ("in_progress", "released", "completed", "failed")


class DeploymentError(ValueError):
    """The deployment cannot be opened (reported in one line, exit code 3)."""


def _print_json(data: Any) -> None:
    sys.stdout.write(msgspec.json.format(msgspec.json.encode(data), indent=2).decode() + "\n")


def _check_file(target: str) -> Path:
    path = Path(target)
    if not path.is_file():
        raise DeploymentError(f"no deployment file at {target}")
    return path


def _host_events(args: argparse.Namespace) -> closing[HostEventStoreService]:
    """The host-event store of the deployment ``args`` names, closed when the ``with`` block ends."""
    if is_dsn(args.deployment):
        from lash_store.postgres.host_events import PostgresHostEventStore

        return closing(PostgresHostEventStore.open(args.deployment, schema=args.schema, auto_setup=False))
    from lash_store.sqlite.host_events import HostEventStore

    return closing(HostEventStore.open(_check_file(args.deployment)))


def _effects(args: argparse.Namespace) -> closing[EffectHostService]:
    """The effect journal of the deployment ``args`` names, closed when the ``with`` block ends."""
    if is_dsn(args.deployment):
        from lash_store.postgres.effects import PostgresEffectHost

        return closing(PostgresEffectHost.open(args.deployment, schema=args.schema, auto_setup=False))
    from lash_store.sqlite.effects import EffectHost

    return closing(EffectHost.open(_check_file(args.deployment)))


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms / 1000))


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _cmd_subscriptions(args: argparse.Namespace) -> int:
    selection = TriggerSubscriptionFilter(session_id=args.session, enabled=True if args.enabled else None)
    with _host_events(args) as store:
        found = store.list_subscriptions(selection)
    if args.json:
        _print_json({"subscriptions": msgspec.to_builtins(found)})
        return 0
    out = Output()
    table = Table(title=f"{len(found)} subscriptions")
    for column in ("session", "handle", "name", "source type", "enabled", "process", "updated"):
        table.add_column(column)
    for sub in found:
        table.add_row(
            out.text(sub.session_id),
            out.text(sub.handle),
            out.text(sub.name or "-"),
            out.text(sub.source_type),
            "yes" if sub.enabled else "no",
            out.text(_clip(str(sub.process_name), 32)),
            _when(sub.updated_at_ms),
        )
    out.print(table)
    return 0


def _cmd_occurrences(args: argparse.Namespace) -> int:
    with _host_events(args) as store:
        found = store.list_occurrences(limit=args.limit)
    if args.json:
        _print_json({"occurrences": msgspec.to_builtins(found)})
        return 0
    out = Output()
    table = Table(title=f"{len(found)} occurrences")
    for column in ("occurred", "source type", "idempotency key", "occurrence id"):
        table.add_column(column)
    for occurrence in found:
        table.add_row(
            _when(occurrence.occurred_at_ms),
            out.text(occurrence.source_type),
            out.text(_clip(occurrence.idempotency_key, 32)),
            out.text(_clip(occurrence.occurrence_id, 30)),
        )
    out.print(table)
    return 0


def _cmd_pending(args: argparse.Namespace) -> int:
    with _host_events(args) as store:
        found = store.pending_deliveries(limit=args.limit)
    if args.json:
        _print_json({"pending_deliveries": msgspec.to_builtins(found)})
        return 0
    out = Output()
    table = Table(title=f"{len(found)} pending deliveries")
    for column in ("reserved", "session", "handle", "occurrence", "process id"):
        table.add_column(column)
    for delivery in found:
        table.add_row(
            _when(delivery.reserved_at_ms),
            out.text(delivery.subscription.session_id),
            out.text(delivery.subscription.handle),
            out.text(_clip(delivery.occurrence.occurrence_id, 24)),
            out.text(_clip(delivery.process_id, 32)),
        )
    out.print(table)
    return 0


def _cmd_journal(args: argparse.Namespace) -> int:
    with _effects(args) as host:
        found = host.list_journal(status=args.status, limit=args.limit)
    if args.json:
        _print_json({"journal": msgspec.to_builtins(found)})
        return 0
    out = Output()
    table = Table(title=f"{len(found)} journal rows")
    for column in ("updated", "scope", "replay key", "status", "attempts", "outcome / error"):
        table.add_column(column)
    for row in found:
        result = row.outcome.type if row.outcome is not None else (row.error or {}).get("code", "-")
        table.add_row(
            _when(row.updated_at_ms),
            out.text(f"{row.scope_kind}:{_clip(row.scope_id, 24)}"),
            out.text(_clip(row.replay_key, 32)),
            out.text(row.status),
            str(row.attempts),
            out.text(str(result)),
        )
    out.print(table)
    return 0


def _cmd_prune(args: argparse.Namespace) -> int:
    horizon = max(0, int(time.time() * 1000) - int(args.older_than * 1000))
    with _effects(args) as host:
        journal = host.prune_journal(horizon, dry_run=args.dry_run)
    with _host_events(args) as store:
        events = store.prune(horizon, dry_run=args.dry_run)
    data = {"older_than_epoch_ms": horizon, "dry_run": args.dry_run, "journal": journal, "host_events": events}
    if args.json:
        _print_json(msgspec.to_builtins(data))
        return 0
    verb = "would delete" if args.dry_run else "deleted"
    Output().print(
        f"{verb} {journal.row_count} journal rows, {events.occurrence_count} occurrences and "
        f"{events.delivery_count} deliveries older than {_when(horizon)} UTC"
    )
    return 0


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative number, got {text}")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def add_deployment_commands(commands: Any, json_flag: argparse.ArgumentParser) -> None:
    """Add this module's commands to ``lash-store``'s subcommands."""
    target = argparse.ArgumentParser(add_help=False)
    target.add_argument("deployment", metavar="DEPLOYMENT", help="a deployment database file, or a PostgreSQL DSN")
    target.add_argument("--schema", default="lash", help="the PostgreSQL schema (default lash)")

    def command(name: str, handler: Callable[[argparse.Namespace], int], help_text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = commands.add_parser(name, parents=[json_flag, target], help=help_text)
        parser.set_defaults(handler=handler)
        return parser

    subscriptions = command("subscriptions", _cmd_subscriptions, "list a deployment's trigger subscriptions")
    subscriptions.add_argument("--session", default=None, metavar="ID", help="only this session's")
    subscriptions.add_argument("--enabled", action="store_true", help="only enabled subscriptions")
    occurrences = command("occurrences", _cmd_occurrences, "list recorded host-event occurrences, oldest first")
    occurrences.add_argument("--limit", type=_positive, default=None, metavar="N")
    pending = command("pending-deliveries", _cmd_pending, "list deliveries reserved but not started")
    pending.add_argument("--limit", type=_positive, default=None, metavar="N")
    journal = command("journal", _cmd_journal, "list effect-journal rows, oldest update first")
    journal.add_argument("--status", choices=_STATUSES, default=None)
    journal.add_argument("--limit", type=_positive, default=None, metavar="N")
    prune = command(
        "deployment-prune", _cmd_prune, "delete finished journal rows and old occurrences (never pending work)"
    )
    prune.add_argument(
        "--older-than", type=_non_negative_float, required=True, metavar="SECONDS", help="the age horizon"
    )
    prune.add_argument("--dry-run", action="store_true", help="count only; change nothing")

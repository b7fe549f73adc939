"""``StoreOptions.poison`` is checked at the boundary: a bad policy is ``InvalidInput`` naming the field, and
nothing is created or written (no file, no PostgreSQL session) -- on every way of opening a store."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

from lash_store import PoisonPolicy, SqliteSessionStoreFactory, Store, StoreOptions
from lash_store.core.queue import retry_delay_ms
from lash_store.errors import InvalidInput
from lash_store.testing.reference import ReferenceStore

BAD_POLICIES: list[tuple[str, Any]] = [
    ("options.poison", "five"),
    ("options.poison", {"max_attempts": 3}),
    ("options.poison.max_attempts", PoisonPolicy(max_attempts=0)),
    ("options.poison.max_attempts", PoisonPolicy(max_attempts=-1)),
    ("options.poison.max_attempts", PoisonPolicy(max_attempts=True)),
    ("options.poison.max_attempts", PoisonPolicy(max_attempts=2.0)),  # type: ignore[arg-type]
    ("options.poison.max_attempts", PoisonPolicy(max_attempts="3")),  # type: ignore[arg-type]
    ("options.poison.max_attempts", PoisonPolicy(max_attempts=2**63)),
    ("options.poison.backoff_base_ms", PoisonPolicy(backoff_base_ms=-1)),
    ("options.poison.backoff_base_ms", PoisonPolicy(backoff_base_ms=1.5)),  # type: ignore[arg-type]
    ("options.poison.backoff_max_ms", PoisonPolicy(backoff_max_ms=None)),  # type: ignore[arg-type]
    ("options.poison.backoff_max_ms", PoisonPolicy(backoff_base_ms=2_000, backoff_max_ms=1_000)),
    ("options.poison.jitter", PoisonPolicy(jitter=1.5)),
    ("options.poison.jitter", PoisonPolicy(jitter=-0.1)),
    ("options.poison.jitter", PoisonPolicy(jitter=float("nan"))),
    ("options.poison.jitter", PoisonPolicy(jitter=True)),
    ("options.poison.jitter", PoisonPolicy(jitter="0.5")),  # type: ignore[arg-type]
]
IDS = [f"{field.rsplit('.', 1)[-1]}={policy!r}"[:60] for field, policy in BAD_POLICIES]


@pytest.mark.parametrize(("field", "policy"), BAD_POLICIES, ids=IDS)
def test_a_bad_policy_is_invalid_input_naming_the_field_and_creates_nothing(
    tmp_path: Path, field: str, policy: Any
) -> None:
    options = StoreOptions(poison=policy)
    for open_it in (
        lambda: Store.open(tmp_path / "never.db", options),
        lambda: Store.memory(options),
        lambda: ReferenceStore(options),
        lambda: SqliteSessionStoreFactory(tmp_path / "root", options=options),
    ):
        with pytest.raises(InvalidInput) as raised:
            open_it()
        assert raised.value.what == field
    assert list(tmp_path.iterdir()) == []


@pytest.mark.postgres
def test_a_bad_policy_creates_no_postgres_session(pg_dsn: str) -> None:
    from lash_store.postgres import PostgresStore, close_shared_pools, setup

    setup(pg_dsn)
    session = f"never-{uuid.uuid4().hex}"
    try:
        for field, policy in BAD_POLICIES:
            with pytest.raises(InvalidInput) as raised:
                PostgresStore.open(pg_dsn, session, StoreOptions(poison=policy))
            assert raised.value.what == field
    finally:
        close_shared_pools()
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM lash.sessions WHERE session_id = %s", (session,)).fetchone() == (0,)


def test_good_policies_open_and_the_backoff_follows_the_formula() -> None:
    for policy in (
        PoisonPolicy(),
        PoisonPolicy(max_attempts=None),
        PoisonPolicy(max_attempts=1, backoff_base_ms=0, backoff_max_ms=0, jitter=0),
        PoisonPolicy(max_attempts=2**63 - 1, backoff_base_ms=2**63 - 1, backoff_max_ms=2**63 - 1, jitter=1),
    ):
        Store.memory(StoreOptions(poison=policy)).close()
    exact = PoisonPolicy(max_attempts=10, backoff_base_ms=1_000, backoff_max_ms=60_000, jitter=0.0)
    assert [retry_delay_ms(exact, "s", 1, n) for n in range(1, 11)] == [
        1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000, 60_000, 0,  # the last attempt waits nothing
    ]  # fmt: skip
    jittered = PoisonPolicy(max_attempts=None, backoff_base_ms=1_000, backoff_max_ms=60_000, jitter=0.5)
    delays = [retry_delay_ms(jittered, "s", seq, 3) for seq in range(200)]
    assert all(2_000 <= delay <= 4_000 for delay in delays) and len(set(delays)) > 100  # spread, never longer
    assert delays == [retry_delay_ms(jittered, "s", seq, 3) for seq in range(200)]  # the same every time
    assert retry_delay_ms(jittered, "s", 1, 10_000) <= 60_000  # no overflow however many attempts
    assert retry_delay_ms(None, "s", 1, 3) == 0

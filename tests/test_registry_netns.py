"""The process registry across hosts: workers in their own network namespaces share one PostgreSQL server.

The server runs in the ``db`` namespace; each worker is ``ip netns exec <ns> python -m
lash_store.testing.netns_registry_worker ...`` and reaches it over the test network (127.213.0.0/24),
as a worker on another machine would (see ``tests/test_postgres_netns.py`` for the set-up).

* 8 workers on 4 hosts race for leases on 50 unfinished processes: one live holder per process at a time
  (on the database clock), fences 1, 2, 3, ..., every process ended once, by its last holder, and every
  stalled first holder's late writes rejected.
* A partition during a lease: w1 holds a process and is cut off; w2 claims it once w1's lease has run out,
  completes it; after the heal w1's fenced terminal write is rejected with ``LeaseLost`` and writes nothing.

Needs root (CI runs as root); see ``tests/test_netns.py`` for the skip rule.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lash_store.processes import ProcessAwaitOutput
from lash_store.targets import open_registry
from lash_store.testing.netns import Topology
from lash_store.testing.netns_registry_worker import decode_lease
from lash_store.testing.pgserver import PostgresServer
from lash_store.testing.registry_conformance import plain, reg
from tests.netns_hosts import Workers, database, network, workers_factory
from tests.test_registry_processes import check_race

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(150)]

HOSTS = 4
WORKERS = 8
PROCESSES = 50
WORKER_BUDGET_S = 100.0


@pytest.fixture(scope="module")
def hosts() -> Iterator[tuple[Topology, PostgresServer]]:
    yield from network(HOSTS)


@pytest.fixture
def make_workers(hosts: tuple[Topology, PostgresServer], tmp_path: Path) -> Iterator[Callable[[str], Workers]]:
    yield from workers_factory(hosts[0], "lash_store.testing.netns_registry_worker", tmp_path, WORKER_BUDGET_S)


def _entry(event: dict[str, Any]) -> tuple[Any, ...]:
    kind, pid, fence = event["ev"], event["process"], event["fence"]
    if kind == "claim":
        return (kind, pid, fence, event["claimed_at"], event["expires_at"])
    if kind == "renew":
        return (kind, pid, fence, event["expires_at"])
    if kind == "lost":
        return (kind, pid, fence, event["stalled"])
    return (kind, pid, fence)


def test_workers_on_several_hosts_race_for_leases(hosts: tuple[Topology, PostgresServer], make_workers: Any) -> None:
    started = time.monotonic()
    net, server = hosts
    local, tcp = database(server, "registry_race")
    with open_registry(local) as registry:
        for index in range(PROCESSES):
            registry.register_process(reg(f"job-{index:02d}", plain("progress")))
    stall = [f"job-{index:02d}" for index in range(0, PROCESSES, 10)]
    workers = make_workers(tcp)
    names = [f"w{index}" for index in range(WORKERS)]
    for index, name in enumerate(names):
        workers.start(name, 1 + index % HOSTS, "race", "--stall", ",".join(stall), "--seed", str(index))
    for name in names:
        workers.finish(name, WORKER_BUDGET_S + 10)
    kinds = ("claim", "renew", "completed", "lost")
    reports = [(name, [_entry(e) for e in workers.events(name) if e["ev"] in kinds]) for name in names]
    check_race(local, PROCESSES, reports, stall)
    log = server.log_path.read_text(errors="replace")
    for host in range(1, HOSTS + 1):  # the work came over the test network, from every host
        assert f"connection received: host={net.worker_address(host)} " in log, f"no connection from host {host}"
    claims = sum(1 for _, entries in reports for entry in entries if entry[0] == "claim")
    print(f"{claims} claims on {PROCESSES} processes by {WORKERS} workers on {HOSTS} hosts")
    print(f"in {time.monotonic() - started:.1f} s")


def test_a_cut_off_holders_fenced_terminal_write_is_rejected_after_the_heal(
    hosts: tuple[Topology, PostgresServer], make_workers: Any
) -> None:
    net, server = hosts
    local, tcp = database(server, "registry_partition")
    with open_registry(local) as registry:
        registry.register_process(reg("stalled", plain("progress")))
    workers = make_workers(tcp)
    workers.start("w2", 2, "reclaim", "--process", "stalled", "--lease-ms", "60000")
    workers.wait_for("w2", "ready", 20)
    workers.start("w1", 1, "hold", "--process", "stalled", "--lease-ms", "3000")
    held = decode_lease(workers.wait_for("w1", "claimed", 20)["lease"])
    try:
        net.partition(1)
        workers.signal("reclaim")
        reclaimed = workers.wait_for("w2", "completed", 30)
        workers.finish("w2", 20)
        with open_registry(local) as registry:
            before = registry.raw_rows()
    finally:
        net.heal(1)
    workers.signal("complete")
    workers.finish("w1", 40)

    taken = decode_lease(workers.events("w2", "claimed")[0]["lease"])
    assert taken.fencing_token == held.fencing_token + 1
    assert taken.claimed_at_epoch_ms >= held.expires_at_epoch_ms, "w2 got the lease while w1's was live"
    assert reclaimed["ev"] == "completed"
    (late,) = workers.events("w1", "complete")
    assert late["outcome"] == "LeaseLost", late
    with open_registry(local) as registry:
        assert registry.raw_rows() == before, "the rejected write left something behind"
        assert registry.await_process("stalled", timeout_ms=1_000) == ProcessAwaitOutput.success(
            {"owner": "w2", "fence": taken.fencing_token}
        )
        events = registry.events_after("stalled", 0)
        assert [event.payload.get("owner") for event in events[:-1]] == ["w1", "w2"]

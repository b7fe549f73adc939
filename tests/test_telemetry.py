"""OpenTelemetry spans and metrics, recorded once by the session service for every backend.

Each test gives its store its own SDK providers (OpenTelemetry's global
providers can be set only once per process) with in-memory exporters, and
runs on a SQLite file, the in-memory ReferenceStore and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from lash_store import AsyncStore, GcPolicy, Store, StoreOptions, TelemetryOptions, telemetry
from lash_store.errors import HeadRevisionConflict, InvalidInput, QueuedWorkClaimExpired
from lash_store.model import (
    BlobArtifactDescriptor,
    DeliveryPolicy,
    GraphDelta,
    QueuedWorkClaimBoundary,
    RuntimeCommit,
    SlotPolicy,
    TurnCommitStamp,
)
from lash_store.service.session import SessionService
from lash_store.testing import ReferenceStore
from tests.helpers import ManualClock, draft, message

REPO = Path(__file__).resolve().parent.parent
SESSION = "telemetry-chat"
IDLE = QueuedWorkClaimBoundary.IDLE


class Captured:
    """SDK providers with in-memory exporters, and lookups into what they caught."""

    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def options(self, **telemetry_options: Any) -> TelemetryOptions:
        return TelemetryOptions(
            tracer_provider=self.tracer_provider, meter_provider=self.meter_provider, **telemetry_options
        )

    def finished(self, name: str) -> list[ReadableSpan]:
        return [span for span in self.spans.get_finished_spans() if span.name == name]

    def points(self, metric: str) -> list[tuple[dict[str, Any], Any]]:
        """``(attributes, value)`` per data point: a sum's value, or a histogram's ``(count, sum)``."""
        data = self.reader.get_metrics_data()
        found: list[tuple[dict[str, Any], Any]] = []
        for resource in data.resource_metrics if data is not None else ():
            for scope in resource.scope_metrics:
                for item in scope.metrics:
                    if item.name != metric:
                        continue
                    for point in item.data.data_points:
                        value = (point.count, point.sum) if hasattr(point, "count") else point.value
                        found.append((dict(point.attributes or {}), value))
        return found

    def total(self, metric: str, **attributes: Any) -> int:
        return sum(
            value for point, value in self.points(metric) if all(point.get(k) == v for k, v in attributes.items())
        )

    def close(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


@pytest.fixture
def captured() -> Iterator[Captured]:
    capture = Captured()
    yield capture
    capture.close()


@pytest.fixture(params=["sqlite", "reference", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def open_store(backend: str, tmp_path: Path, clock: ManualClock, request: pytest.FixtureRequest) -> Iterator[Any]:
    """Opens stores of the test's backend with the given telemetry options (GC grace 0, the manual clock)."""
    opened: list[SessionService] = []
    dsn = request.getfixturevalue("pg_dsn") if backend == "postgres" else None

    def open_with(telemetry_options: TelemetryOptions) -> SessionService:
        options = StoreOptions(clock=clock, gc_policy=GcPolicy(grace_ms=0), telemetry=telemetry_options)
        store: SessionService
        if backend == "sqlite":
            store = Store.open(tmp_path / f"{uuid.uuid4().hex}.db", options)
        elif backend == "reference":
            store = ReferenceStore(options)
        else:
            from lash_store.postgres import PostgresStore

            assert dsn is not None
            store = PostgresStore.open(dsn, f"s-{uuid.uuid4().hex}", options)
        opened.append(store)
        return store

    yield open_with
    for store in opened:
        store.close()
    if dsn is not None:
        from lash_store.postgres import close_shared_pools

        close_shared_pools()


@pytest.fixture
def store(open_store: Any, captured: Captured) -> SessionService:
    opened: SessionService = open_store(captured.options())
    return opened


def first_commit(session_id: str = SESSION) -> RuntimeCommit:
    return RuntimeCommit(
        session_id=session_id,
        expected_head_revision=0,
        graph=GraphDelta.append([message("u1", "user", "hi")], leaf_node_id="u1"),
    )


# ---------------------------------------------------------------------------
# commits


def test_a_commit_produces_a_span_and_a_latency_point(store: SessionService, captured: Captured, backend: str) -> None:
    store.commit_runtime_state(first_commit())
    (span,) = captured.finished(telemetry.SPAN_COMMIT)
    assert span.attributes is not None
    assert span.attributes[telemetry.BACKEND] == backend
    assert span.attributes[telemetry.OUTCOME] == "committed"
    assert span.attributes[telemetry.HEAD_REVISION] == 1
    assert span.status.status_code is StatusCode.UNSET
    ((attributes, (count, total_ms)),) = captured.points(telemetry.COMMIT_DURATION)
    assert attributes == {telemetry.BACKEND: backend, telemetry.OUTCOME: "committed"}
    assert count == 1 and total_ms > 0


def test_a_cas_conflict_counts_and_marks_the_span_as_error(store: SessionService, captured: Captured) -> None:
    store.commit_runtime_state(first_commit())
    with pytest.raises(HeadRevisionConflict):
        store.commit_runtime_state(first_commit())
    assert captured.total(telemetry.COMMIT_CONFLICTS) == 1
    failed = [span for span in captured.finished(telemetry.SPAN_COMMIT) if span.status.status_code is StatusCode.ERROR]
    (span,) = failed
    assert span.attributes is not None
    assert span.attributes[telemetry.ERROR_TYPE] == "HeadRevisionConflict"
    assert span.attributes[telemetry.OUTCOME] == "error"
    assert not span.events, "exception messages can name sessions; they are not recorded"
    outcomes = {attrs[telemetry.OUTCOME]: value[0] for attrs, value in captured.points(telemetry.COMMIT_DURATION)}
    assert outcomes == {"committed": 1, "error": 1}


def test_a_turn_stamp_replay_counts_a_replay(store: SessionService, captured: Captured) -> None:
    stamped = first_commit().with_turn_commit(TurnCommitStamp(session_id=SESSION, turn_id="t1", turn_commit_hash="h"))
    first = store.commit_runtime_state(stamped)
    assert store.commit_runtime_state(stamped) == first  # the retry writes nothing
    assert captured.total(telemetry.COMMIT_REPLAYS) == 1
    outcomes = [
        span.attributes[telemetry.OUTCOME] for span in captured.finished(telemetry.SPAN_COMMIT) if span.attributes
    ]
    assert outcomes == ["committed", "replayed"]


# ---------------------------------------------------------------------------
# the work queue


def test_claims_count_calls_and_batches(store: SessionService, captured: Captured) -> None:
    for text in ("a", "b", "c"):
        store.enqueue_queued_work(draft(SESSION, text, DeliveryPolicy.EARLIEST_SAFE_BOUNDARY, SlotPolicy.JOIN))
    claim = store.claim_ready_queued_work(SESSION, "w1", IDLE, 30_000, 2)
    assert claim is not None and len(claim.batches) == 2
    rest = store.claim_ready_queued_work(SESSION, "w1", IDLE, 30_000, 64)
    assert rest is not None and len(rest.batches) == 1
    assert store.claim_ready_queued_work(SESSION, "w1", IDLE, 30_000, 64) is None
    assert captured.total(telemetry.QUEUE_CLAIMS, **{telemetry.OUTCOME: "claimed"}) == 2
    assert captured.total(telemetry.QUEUE_CLAIMS, **{telemetry.OUTCOME: "empty"}) == 1
    assert captured.total(telemetry.QUEUE_CLAIMED_BATCHES) == 3
    taken = [span.attributes[telemetry.BATCHES] for span in captured.finished(telemetry.SPAN_CLAIM) if span.attributes]
    assert taken == [2, 1, 0]
    # Claiming by ids goes through the same place.
    store.enqueue_queued_work(draft(SESSION, "d"))
    batch_ids = [batch.batch_id for batch in store.list_pending_queued_work(SESSION)]
    assert store.claim_ready_queued_work_by_batch_ids(SESSION, "w1", IDLE, 30_000, batch_ids) is not None
    assert captured.total(telemetry.QUEUE_CLAIMED_BATCHES) == 4


def test_a_stale_owner_is_counted_as_a_claim_rejection(
    store: SessionService, captured: Captured, clock: ManualClock
) -> None:
    store.enqueue_queued_work(draft(SESSION, "hello"))
    stale = store.claim_ready_queued_work(SESSION, "w1", IDLE, 1_000, 1)
    assert stale is not None
    clock.advance(5_000)  # the lease expires and another worker takes the work under a higher fence
    fresh = store.claim_ready_queued_work(SESSION, "w2", IDLE, 30_000, 1)
    assert fresh is not None and fresh.fencing_token > stale.fencing_token

    with pytest.raises(QueuedWorkClaimExpired):
        store.renew_queued_work_claim(stale, 1_000)
    with pytest.raises(QueuedWorkClaimExpired):
        store.commit_runtime_state(first_commit().completing_queue_claim(stale.completion()))
    assert store.abandon_queued_work_claim(stale) == 0  # a stale abandon is a no-op, not an error

    assert captured.total(telemetry.QUEUE_CLAIM_REJECTIONS, **{telemetry.OPERATION: "renew"}) == 1
    assert captured.total(telemetry.QUEUE_CLAIM_REJECTIONS, **{telemetry.OPERATION: "commit"}) == 1
    (renew,) = captured.finished(telemetry.SPAN_RENEW)
    assert renew.status.status_code is StatusCode.ERROR
    assert renew.attributes is not None and renew.attributes[telemetry.ERROR_TYPE] == "QueuedWorkClaimExpired"
    (abandon,) = captured.finished(telemetry.SPAN_ABANDON)
    assert abandon.attributes is not None and abandon.attributes[telemetry.RELEASED] == 0

    store.renew_queued_work_claim(fresh, 30_000)  # the live owner renews and completes
    store.commit_runtime_state(first_commit().completing_queue_claim(fresh.completion()))
    assert captured.total(telemetry.QUEUE_CLAIM_REJECTIONS) == 2
    assert len(captured.finished(telemetry.SPAN_RENEW)) == 2


# ---------------------------------------------------------------------------
# maintenance and reads


def test_gc_reports_its_deletions(store: SessionService, captured: Captured) -> None:
    store.commit_runtime_state(first_commit())
    descriptor = BlobArtifactDescriptor.plugin_session_snapshot()
    store.put_artifact_blob(descriptor, b"orphan one")
    store.put_artifact_blob(descriptor, b"orphan number two")
    dry, dry_bytes = store.gc_plan(dry_run=True)
    assert dry.deleted_blob_count == 2
    assert captured.total(telemetry.GC_DELETED_BLOBS) == 0, "a dry run deletes nothing"
    report = store.gc_unreachable()
    assert report.deleted_blob_count == 2
    assert captured.total(telemetry.GC_DELETED_BLOBS) == 2
    assert captured.total(telemetry.GC_DELETED_BYTES) == dry_bytes > 0
    runs = captured.finished(telemetry.SPAN_GC)
    assert [(s.attributes or {}).get(telemetry.DRY_RUN) for s in runs] == [True, False]
    assert (runs[1].attributes or {})[telemetry.DELETED_BYTES] == dry_bytes


def test_loads_and_vacuum_have_spans(store: SessionService, captured: Captured) -> None:
    store.commit_runtime_state(first_commit())
    assert store.load_session() is not None
    assert store.load_node("u1") is not None
    assert store.load_node("nope") is None
    store.tombstone_nodes(["u1"])
    assert store.vacuum().removed_node_count == 1
    (load,) = captured.finished(telemetry.SPAN_LOAD_SESSION)
    assert load.attributes is not None
    assert load.attributes[telemetry.NODES] == 1 and load.attributes[telemetry.FOUND] is True
    assert [(s.attributes or {})[telemetry.FOUND] for s in captured.finished(telemetry.SPAN_LOAD_NODE)] == [True, False]
    (vacuum,) = captured.finished(telemetry.SPAN_VACUUM)
    assert vacuum.attributes is not None and vacuum.attributes[telemetry.REMOVED_NODES] == 1


def test_auto_gc_after_a_commit_is_a_span_of_its_own(tmp_path: Path, captured: Captured) -> None:
    options = StoreOptions(gc_policy=GcPolicy(auto_run_every_commits=1, grace_ms=0), telemetry=captured.options())
    with Store.open(tmp_path / "auto.db", options) as store:
        store.commit_runtime_state(first_commit())
    (commit,) = captured.finished(telemetry.SPAN_COMMIT)
    (gc,) = captured.finished(telemetry.SPAN_GC)
    assert gc.parent is None  # after the commit's transaction, outside its span
    assert gc.start_time is not None and commit.end_time is not None and gc.start_time >= commit.end_time


# ---------------------------------------------------------------------------
# privacy, nesting, switching off


def test_session_ids_are_recorded_only_when_asked_for_and_never_on_metrics(open_store: Any, captured: Captured) -> None:
    quiet = open_store(captured.options())
    quiet.commit_runtime_state(first_commit("private-session"))
    quiet.enqueue_queued_work(draft("private-session", "x"))
    quiet.claim_ready_queued_work("private-session", "w", IDLE, 1_000, 1)
    quiet.load_session()
    assert all(telemetry.SESSION_ID not in (span.attributes or {}) for span in captured.spans.get_finished_spans())
    captured.spans.clear()

    loud = open_store(captured.options(record_session_ids=True))
    loud.commit_runtime_state(first_commit("named-session"))
    loud.enqueue_queued_work(draft("named-session", "x"))
    loud.claim_ready_queued_work("named-session", "w", IDLE, 1_000, 1)
    loud.load_session()
    for name in (telemetry.SPAN_COMMIT, telemetry.SPAN_CLAIM, telemetry.SPAN_LOAD_SESSION):
        (span,) = captured.finished(name)
        assert (span.attributes or {})[telemetry.SESSION_ID] == "named-session", name
    for metric in telemetry.METRICS:
        assert all(telemetry.SESSION_ID not in attributes for attributes, _ in captured.points(metric)), metric


def test_spans_nest_under_the_callers_span(store: SessionService, captured: Captured) -> None:
    tracer = captured.tracer_provider.get_tracer("host")
    with tracer.start_as_current_span("agent turn") as outer:
        store.commit_runtime_state(first_commit())
    (commit,) = captured.finished(telemetry.SPAN_COMMIT)
    assert commit.parent is not None and commit.parent.span_id == outer.get_span_context().span_id
    assert commit.context.trace_id == outer.get_span_context().trace_id


def test_telemetry_can_be_switched_off(open_store: Any, captured: Captured) -> None:
    store = open_store(captured.options(enabled=False))
    assert store._telemetry is None
    store.commit_runtime_state(first_commit())
    with pytest.raises(HeadRevisionConflict):
        store.commit_runtime_state(first_commit())
    assert captured.spans.get_finished_spans() == ()
    assert captured.points(telemetry.COMMIT_DURATION) == []


def test_the_async_store_is_covered_through_the_sync_service(tmp_path: Path, captured: Captured) -> None:
    async def run() -> None:
        async with await AsyncStore.open(tmp_path / "async.db", StoreOptions(telemetry=captured.options())) as store:
            await store.commit_runtime_state(first_commit())
            await store.load_session()

    asyncio.run(run())
    assert len(captured.finished(telemetry.SPAN_COMMIT)) == 1
    assert len(captured.finished(telemetry.SPAN_LOAD_SESSION)) == 1


def test_telemetry_options_are_checked(tmp_path: Path) -> None:
    bad: list[tuple[str, TelemetryOptions]] = [
        ("options.telemetry.enabled", TelemetryOptions(enabled="yes")),  # type: ignore[arg-type]
        ("options.telemetry.record_session_ids", TelemetryOptions(record_session_ids=1)),  # type: ignore[arg-type]
        ("options.telemetry.tracer_provider", TelemetryOptions(tracer_provider=object())),
        ("options.telemetry.meter_provider", TelemetryOptions(meter_provider="meter")),
    ]
    for field, telemetry_options in bad:
        with pytest.raises(InvalidInput) as raised:
            Store.open(tmp_path / "never.db", StoreOptions(telemetry=telemetry_options))
        assert raised.value.what == field
    with pytest.raises(InvalidInput):
        Store.memory(StoreOptions(telemetry=None))  # type: ignore[arg-type]
    assert not (tmp_path / "never.db").exists()


def test_with_the_api_only_stores_use_the_global_no_op_providers() -> None:
    # No SDK is configured globally in this process: the store gets the API's proxies and works as usual.
    with Store.memory() as store:
        assert store._telemetry is not None
        store.commit_runtime_state(first_commit())
        with pytest.raises(HeadRevisionConflict):
            store.commit_runtime_state(first_commit())
        assert store.load_session() is not None


def test_global_providers_configured_after_the_store_opened_receive_its_telemetry() -> None:
    # OpenTelemetry's global providers can be set once per process, so this runs in a process of its own.
    script = textwrap.dedent(
        """
        from lash_store import Store
        from lash_store.model import RuntimeCommit
        from opentelemetry import metrics, trace
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        store = Store.memory()  # opened before any SDK is configured: it holds the API's proxies
        store.commit_runtime_state(RuntimeCommit(session_id="s", expected_head_revision=0))
        spans, reader = InMemorySpanExporter(), InMemoryMetricReader()
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
        trace.set_tracer_provider(tracer_provider)
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
        store.commit_runtime_state(RuntimeCommit(session_id="s", expected_head_revision=1))
        assert [span.name for span in spans.get_finished_spans()] == ["lash_store.commit"]
        data = reader.get_metrics_data()
        names = [m.name for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics]
        assert names == ["lash_store.commit.duration"], names
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


# ---------------------------------------------------------------------------
# without OpenTelemetry installed


def test_without_opentelemetry_everything_works_and_no_instrument_is_created(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import sys
        sys.modules["opentelemetry"] = None  # as if the otel extra were not installed
        import asyncio
        from lash_store import AsyncStore, GcPolicy, Store, StoreOptions
        from lash_store.errors import HeadRevisionConflict
        from lash_store.model import BlobArtifactDescriptor, QueuedWorkClaimBoundary, RuntimeCommit
        from lash_store.testing import ReferenceStore
        from tests.helpers import draft

        try:
            import lash_store.telemetry
        except ImportError:
            pass
        else:
            raise SystemExit("lash_store.telemetry imported without OpenTelemetry")

        path = sys.argv[1]
        for store in (Store.open(path, StoreOptions(gc_policy=GcPolicy(grace_ms=0))), ReferenceStore()):
            assert store._telemetry is None
            store.commit_runtime_state(RuntimeCommit(session_id="s", expected_head_revision=0))
            try:
                store.commit_runtime_state(RuntimeCommit(session_id="s", expected_head_revision=0))
            except HeadRevisionConflict:
                pass
            store.enqueue_queued_work(draft("s", "x"))
            claim = store.claim_ready_queued_work("s", "w", QueuedWorkClaimBoundary.IDLE, 1000, 1)
            store.renew_queued_work_claim(claim, 1000)
            store.abandon_queued_work_claim(claim)
            store.put_artifact_blob(BlobArtifactDescriptor.plugin_session_snapshot(), b"orphan")
            assert store.gc_unreachable().deleted_blob_count == 1
            assert store.load_session().head_revision == 1
            store.vacuum()
            store.close()

        async def run():
            async with await AsyncStore.memory() as store:
                await store.commit_runtime_state(RuntimeCommit(session_id="s", expected_head_revision=0))

        asyncio.run(run())
        loaded = sorted(name for name, module in sys.modules.items() if name.startswith("opentelemetry") and module)
        assert not loaded, loaded
        print("ok")
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "plain.db")],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


# ---------------------------------------------------------------------------
# the cost benchmark (runs and reports; never judged on speed)


def test_the_telemetry_benchmark_runs_and_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from lash_store.bench.__main__ import main as bench_main

    argv = ["telemetry", "--quick", "--json", "--turns", "6", "--warmup", "2", "--dir", str(tmp_path)]
    assert bench_main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["benchmark"] == "telemetry"
    assert report["config"]["variants"] == ["off", "api", "sdk"]
    assert report["config"]["turns"] == 6 and report["config"]["store"] == "file"
    assert set(report["ratios"]) == {"api", "sdk"}
    assert report["ratios"]["api"]["p50"] > 0
    assert isinstance(report["target"]["ok"], bool)
    check = report["verification"]
    assert check["ok"] and check["head_revisions"] == {"off": 6, "api": 6, "sdk": 6}
    assert check["recording"] == {"off": False, "api": True, "sdk": True}

    assert bench_main(["telemetry", "--quick", "--turns", "3", "--warmup", "0", "--memory"]) == 0
    text = capsys.readouterr().out
    assert "API only at most 1.05x off" in text and "memory stores" in text

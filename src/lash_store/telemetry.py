"""OpenTelemetry spans and metrics of a store (the optional ``lash-store[otel]`` extra).

Every backend's store is :class:`~lash_store.service.session.SessionService`
over that backend, so the service is the one place that records: SQLite,
PostgreSQL, the in-memory ``ReferenceStore`` and ``AsyncStore`` (which calls a
sync store) are all covered by the same few lines.  The service asks for a
:class:`Recorder` once, when the store opens; without OpenTelemetry installed
(importing this module raises ``ImportError``) or with
``StoreOptions(telemetry=TelemetryOptions(enabled=False))`` it holds ``None``
instead, and each instrumented call costs one ``is None`` check.

Instruments are created once per pair of providers and shared by every store
that uses them.  A span becomes the current span only when it records, so
that spans of a database driver's own instrumentation nest under it; the
API's no-op tracer (OpenTelemetry installed, no SDK configured) yields spans
that record nothing, and attaching those to the context would only cost time.

Exceptions are not recorded as span events: their messages can name sessions
(``SessionBindingMismatch``, ``QueuedWorkClaimExpired``), and session ids are
recorded only when asked for.  A failed operation's span gets status ERROR and
``error.type`` (the exception's class name) instead.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar, cast

from opentelemetry import context, metrics, trace
from opentelemetry.trace import StatusCode

from lash_store.errors import HeadRevisionConflict, QueuedWorkClaimExpired
from lash_store.model import (
    GcReport,
    PersistedSessionRead,
    QueuedWorkClaim,
    RuntimeCommit,
    RuntimeCommitResult,
    VacuumReport,
)
from lash_store.options import TelemetryOptions

__all__ = [
    "ATTRIBUTES",
    "METRICS",
    "SPANS",
    "Recorder",
]

T = TypeVar("T")

SCOPE = "lash_store"
"""The instrumentation scope (tracer and meter name)."""

# Span names.
SPAN_COMMIT = "lash_store.commit"
SPAN_LOAD_SESSION = "lash_store.load_session"
SPAN_LOAD_NODE = "lash_store.load_node"
SPAN_CLAIM = "lash_store.queue.claim"
SPAN_RENEW = "lash_store.queue.renew"
SPAN_ABANDON = "lash_store.queue.abandon"
SPAN_GC = "lash_store.gc"
SPAN_VACUUM = "lash_store.vacuum"
SPANS = (SPAN_COMMIT, SPAN_LOAD_SESSION, SPAN_LOAD_NODE, SPAN_CLAIM, SPAN_RENEW, SPAN_ABANDON, SPAN_GC, SPAN_VACUUM)

# Metric names.
COMMIT_DURATION = "lash_store.commit.duration"
COMMIT_CONFLICTS = "lash_store.commit.conflicts"
COMMIT_REPLAYS = "lash_store.commit.replays"
QUEUE_CLAIMS = "lash_store.queue.claims"
QUEUE_CLAIMED_BATCHES = "lash_store.queue.claimed_batches"
QUEUE_CLAIM_REJECTIONS = "lash_store.queue.claim_rejections"
GC_DELETED_BLOBS = "lash_store.gc.deleted_blobs"
GC_DELETED_BYTES = "lash_store.gc.deleted_bytes"
METRICS = (
    COMMIT_DURATION,
    COMMIT_CONFLICTS,
    COMMIT_REPLAYS,
    QUEUE_CLAIMS,
    QUEUE_CLAIMED_BATCHES,
    QUEUE_CLAIM_REJECTIONS,
    GC_DELETED_BLOBS,
    GC_DELETED_BYTES,
)

# Attribute keys.
BACKEND = "lash_store.backend"  # "sqlite", "postgres", "reference": on every span and metric point
OUTCOME = "lash_store.outcome"  # commit: committed | replayed | error; claim: claimed | empty
OPERATION = "lash_store.operation"  # claim rejections: commit | renew
SESSION_ID = "lash_store.session.id"  # spans only, only with record_session_ids
ERROR_TYPE = "error.type"  # OpenTelemetry's semantic convention: the exception's class name
HEAD_REVISION = "lash_store.head_revision"
BATCHES = "lash_store.queue.batches"
RELEASED = "lash_store.queue.released"
SCOPE_KIND = "lash_store.load.scope"
NODES = "lash_store.load.nodes"
FOUND = "lash_store.load.found"
DRY_RUN = "lash_store.gc.dry_run"
DELETED_BLOBS = "lash_store.gc.deleted_blobs"
DELETED_BYTES = "lash_store.gc.deleted_bytes"
SKIPPED = "lash_store.gc.skipped"
REMOVED_NODES = "lash_store.vacuum.removed_nodes"
ATTRIBUTES = (BACKEND, OUTCOME, OPERATION, SESSION_ID, ERROR_TYPE)

# Commits take from a few hundred microseconds (SQLite) to tens of milliseconds (a busy server);
# the SDK's default buckets start at 5 ms and would put every embedded commit in the first one.
_MS_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 10000.0)


class _Instruments:
    """A tracer and the metric instruments, resolved once per pair of providers."""

    def __init__(self, tracer_provider: trace.TracerProvider, meter_provider: metrics.MeterProvider) -> None:
        from lash_store import __version__

        self.tracer = tracer_provider.get_tracer(SCOPE, __version__)
        meter = meter_provider.get_meter(SCOPE, __version__)
        self.commit_duration = meter.create_histogram(
            COMMIT_DURATION,
            unit="ms",
            description="Time of commit_runtime_state, encoding and transaction included",
            explicit_bucket_boundaries_advisory=_MS_BUCKETS,
        )
        self.conflicts = meter.create_counter(
            COMMIT_CONFLICTS, unit="{conflict}", description="Commits refused by the head compare-and-set"
        )
        self.replays = meter.create_counter(
            COMMIT_REPLAYS, unit="{commit}", description="Commits answered from a stored turn stamp (nothing written)"
        )
        self.claims = meter.create_counter(
            QUEUE_CLAIMS, unit="{claim}", description="Claim calls, by whether they took work"
        )
        self.claimed_batches = meter.create_counter(
            QUEUE_CLAIMED_BATCHES, unit="{batch}", description="Queued-work batches taken by claims"
        )
        self.claim_rejections = meter.create_counter(
            QUEUE_CLAIM_REJECTIONS,
            unit="{claim}",
            description="Renewals and completions refused with QueuedWorkClaimExpired (stale fence or lost claim)",
        )
        self.deleted_blobs = meter.create_counter(
            GC_DELETED_BLOBS, unit="{blob}", description="Blobs deleted by garbage collection"
        )
        self.deleted_bytes = meter.create_counter(
            GC_DELETED_BYTES, unit="By", description="Stored bytes deleted by garbage collection"
        )


@functools.lru_cache(maxsize=16)
def _instruments(tracer_provider: trace.TracerProvider, meter_provider: metrics.MeterProvider) -> _Instruments:
    return _Instruments(tracer_provider, meter_provider)


class _Span:
    """A started span, current while it records; on an exception it ends with status ERROR and ``error.type``."""

    __slots__ = ("_token", "span")

    def __init__(self, tracer: trace.Tracer, name: str, attributes: dict[str, Any]) -> None:
        self.span = tracer.start_span(name, attributes=attributes)
        self._token = context.attach(trace.set_span_in_context(self.span)) if self.span.is_recording() else None

    def __enter__(self) -> trace.Span:
        return self.span

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._token is not None:
            context.detach(self._token)
        if exc_type is not None and self.span.is_recording():
            kind = exc_type.__qualname__
            self.span.set_attribute(ERROR_TYPE, kind)
            self.span.set_status(StatusCode.ERROR, kind)  # the class only: messages can name sessions
        self.span.end()


class Recorder:
    """One store's telemetry: its backend's attributes over the shared instruments.

    Each method runs ``call`` (the service's untraced operation) inside the
    operation's span and records its metrics; it returns what ``call``
    returns and lets every exception through unchanged.
    """

    __slots__ = (
        "_base",
        "_claimed",
        "_committed",
        "_empty",
        "_instruments",
        "_rejected_commit",
        "_rejected_renew",
        "_replayed",
        "_session_ids",
    )

    def __init__(self, backend: str, options: TelemetryOptions) -> None:
        # The global providers are proxies until an SDK is configured; they forward to it from then on.
        tracer_provider = trace.get_tracer_provider() if options.tracer_provider is None else options.tracer_provider
        meter_provider = metrics.get_meter_provider() if options.meter_provider is None else options.meter_provider
        self._instruments = _instruments(
            cast(trace.TracerProvider, tracer_provider), cast(metrics.MeterProvider, meter_provider)
        )
        self._session_ids = options.record_session_ids
        # Attribute sets are built once: recording a point then allocates nothing.
        self._base = {BACKEND: backend}
        self._committed = {BACKEND: backend, OUTCOME: "committed"}
        self._replayed = {BACKEND: backend, OUTCOME: "replayed"}
        self._claimed = {BACKEND: backend, OUTCOME: "claimed"}
        self._empty = {BACKEND: backend, OUTCOME: "empty"}
        self._rejected_commit = {BACKEND: backend, OPERATION: "commit"}
        self._rejected_renew = {BACKEND: backend, OPERATION: "renew"}

    def _span(self, name: str, session_id: object = None) -> _Span:
        attributes = self._base
        if self._session_ids and type(session_id) is str:
            attributes = {**self._base, SESSION_ID: session_id}
        return _Span(self._instruments.tracer, name, attributes)

    # -- commits and reads -------------------------------------------------

    def commit(
        self, call: Callable[[RuntimeCommit], tuple[RuntimeCommitResult, bool]], commit: RuntimeCommit
    ) -> RuntimeCommitResult:
        """``call(commit)`` returns the result and whether it was a turn-stamp replay."""
        instruments = self._instruments
        session_id = getattr(commit, "session_id", None) if self._session_ids else None  # not yet validated
        with self._span(SPAN_COMMIT, session_id) as span:
            started = time.perf_counter()
            try:
                result, replayed = call(commit)
            except BaseException as exc:
                self._commit_failed(span, exc, (time.perf_counter() - started) * 1000)
                raise
            elapsed_ms = (time.perf_counter() - started) * 1000
            if replayed:
                instruments.replays.add(1, self._base)
            instruments.commit_duration.record(elapsed_ms, self._replayed if replayed else self._committed)
            if span.is_recording():
                span.set_attribute(OUTCOME, "replayed" if replayed else "committed")
                span.set_attribute(HEAD_REVISION, result.head_revision)
            return result

    def _commit_failed(self, span: trace.Span, exc: BaseException, elapsed_ms: float) -> None:
        instruments = self._instruments
        if span.is_recording():
            span.set_attribute(OUTCOME, "error")
        instruments.commit_duration.record(
            elapsed_ms, {**self._base, OUTCOME: "error", ERROR_TYPE: type(exc).__qualname__}
        )
        if isinstance(exc, HeadRevisionConflict):
            instruments.conflicts.add(1, self._base)
        elif isinstance(exc, QueuedWorkClaimExpired):
            instruments.claim_rejections.add(1, self._rejected_commit)

    def load_session(
        self, scope_kind: str, call: Callable[[], PersistedSessionRead | None]
    ) -> PersistedSessionRead | None:
        with self._span(SPAN_LOAD_SESSION) as span:
            read = call()
            if span.is_recording():
                span.set_attribute(SCOPE_KIND, scope_kind)
                span.set_attribute(FOUND, read is not None)
                if read is not None:
                    span.set_attribute(NODES, len(read.graph.nodes))
                    span.set_attribute(HEAD_REVISION, read.head_revision)
                    if self._session_ids:  # known only once read (a SQLite file does not name its session)
                        span.set_attribute(SESSION_ID, read.session_id)
            return read

    def load_node(self, call: Callable[[], T]) -> T:
        with self._span(SPAN_LOAD_NODE) as span:
            node = call()
            if span.is_recording():
                span.set_attribute(FOUND, node is not None)
            return node

    # -- the work queue ----------------------------------------------------

    def claim(self, session_id: str, call: Callable[[], QueuedWorkClaim | None]) -> QueuedWorkClaim | None:
        instruments = self._instruments
        with self._span(SPAN_CLAIM, session_id) as span:
            claim = call()
            taken = 0 if claim is None else len(claim.batches)
            if taken:
                instruments.claims.add(1, self._claimed)
                instruments.claimed_batches.add(taken, self._base)
            else:
                instruments.claims.add(1, self._empty)
            if span.is_recording():
                span.set_attribute(OUTCOME, "claimed" if taken else "empty")
                span.set_attribute(BATCHES, taken)
            return claim

    def renew(self, session_id: str, call: Callable[[], T]) -> T:
        with self._span(SPAN_RENEW, session_id):
            try:
                return call()
            except QueuedWorkClaimExpired:
                self._instruments.claim_rejections.add(1, self._rejected_renew)
                raise

    def abandon(self, session_id: str, call: Callable[[], int]) -> int:
        with self._span(SPAN_ABANDON, session_id) as span:
            released = call()
            if span.is_recording():
                span.set_attribute(RELEASED, released)
            return released

    # -- maintenance -------------------------------------------------------

    def gc(self, dry_run: bool, call: Callable[[], tuple[GcReport, int]]) -> tuple[GcReport, int]:
        """``call`` returns the report and the stored bytes deleted (or, in a dry run, that would be)."""
        with self._span(SPAN_GC) as span:
            report, deleted_bytes = call()
            if not dry_run and report.deleted_blob_count:
                self._instruments.deleted_blobs.add(report.deleted_blob_count, self._base)
                self._instruments.deleted_bytes.add(deleted_bytes, self._base)
            if span.is_recording():
                span.set_attribute(DRY_RUN, dry_run)
                span.set_attribute(DELETED_BLOBS, report.deleted_blob_count)
                span.set_attribute(DELETED_BYTES, deleted_bytes)
                span.set_attribute(SKIPPED, report.skipped_reason is not None)
            return report, deleted_bytes

    def vacuum(self, call: Callable[[], VacuumReport]) -> VacuumReport:
        with self._span(SPAN_VACUUM) as span:
            report = call()
            if span.is_recording():
                span.set_attribute(REMOVED_NODES, report.removed_node_count)
            return report

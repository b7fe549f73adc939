"""Store options."""

from __future__ import annotations

import enum
import time
from collections.abc import Callable

from msgspec import Struct, field

from lash_store.core.validate import check_callable, check_count, check_instance, check_int, check_ms
from lash_store.errors import InvalidInput

__all__ = [
    "BlobProfile",
    "Clock",
    "Durability",
    "GcPolicy",
    "RetentionPolicy",
    "StoreOptions",
    "TelemetryOptions",
    "check_options",
    "system_clock",
]

Clock = Callable[[], int]
"""A zero-argument callable returning epoch milliseconds."""


def system_clock() -> int:
    """The wall clock in epoch milliseconds."""
    return time.time_ns() // 1_000_000


class BlobProfile(enum.Enum):
    """When compressible blobs are zstd-compressed (kept only when smaller)."""

    LOW_LATENCY = "low_latency"  # never
    BALANCED = "balanced"  # from 4 KiB
    COMPACT = "compact"  # from 1 KiB

    @property
    def compression_threshold(self) -> int | None:
        return _THRESHOLDS[self]

    @property
    def compression_level(self) -> int:
        return _LEVELS[self]


_THRESHOLDS = {BlobProfile.LOW_LATENCY: None, BlobProfile.BALANCED: 4096, BlobProfile.COMPACT: 1024}
# BALANCED favours commit latency (level 1 is ~25% faster than 3 for nearly the same size); COMPACT favours size.
_LEVELS = {BlobProfile.LOW_LATENCY: 0, BlobProfile.BALANCED: 1, BlobProfile.COMPACT: 6}


class Durability(enum.Enum):
    """SQLite ``synchronous`` level: NORMAL survives process crashes, FULL also power loss."""

    NORMAL = "NORMAL"
    FULL = "FULL"


DEFAULT_FILE_GRACE_MS = 600_000


class GcPolicy(Struct, kw_only=True, frozen=True):
    """Automatic GC cadence and the grace period protecting fresh blobs.

    ``grace_ms=None`` means 600,000 ms for file stores and 0 for ``Store.memory()``.
    """

    auto_run_every_commits: int | None = None
    grace_ms: int | None = None


class RetentionPolicy(Struct, kw_only=True, frozen=True):
    """How long records that only serve retries and idle sessions are kept (``None``: forever).

    ``turn_stamps_ms``: a turn's commit stamp (what makes a retried turn a
    replay) is pruned this long after its commit; a retry after that is no
    longer recognised and is judged by its compare-and-set revision alone.
    ``idle_sessions_ms``: a factory's ``prune_idle_sessions`` deletes sessions
    not written for this long that have no queued work and are not in use.
    Nothing is pruned until ``prune`` (or ``lash-store prune``) runs.
    """

    turn_stamps_ms: int | None = None
    idle_sessions_ms: int | None = None


class TelemetryOptions(Struct, kw_only=True, frozen=True):
    """OpenTelemetry spans and metrics of a store (see :mod:`lash_store.telemetry`).

    Recording needs the ``lash-store[otel]`` extra; without it these options
    change nothing and the store records nothing.  ``enabled=False`` turns
    telemetry off even when OpenTelemetry is installed.  Session ids go on
    spans only with ``record_session_ids=True`` (they may identify users);
    they never go on metrics.  The providers default to OpenTelemetry's
    global ones; pass your own ``TracerProvider`` / ``MeterProvider`` to keep
    a store's telemetry apart (tests do).
    """

    enabled: bool = True
    record_session_ids: bool = False
    tracer_provider: object | None = None
    meter_provider: object | None = None


class StoreOptions(Struct, kw_only=True, frozen=True):
    """Options of a store (``Store.memory()`` without options uses ``LOW_LATENCY``)."""

    blob_profile: BlobProfile = BlobProfile.BALANCED
    gc_policy: GcPolicy = GcPolicy()
    durability: Durability = Durability.NORMAL
    busy_timeout_ms: int = 15_000
    clock: Clock | None = field(default=None)
    telemetry: TelemetryOptions = TelemetryOptions()
    retention: RetentionPolicy = RetentionPolicy()

    def now_ms(self) -> int:
        """The clock's reading, checked: a clock that fails or returns a non-instant is an invalid option.

        A failing clock's exception is chained as the cause; interrupts
        (``KeyboardInterrupt``, ``SystemExit``) and ``MemoryError`` propagate unchanged.
        """
        if self.clock is None:
            return system_clock()
        try:
            value = self.clock()
        except MemoryError:
            raise
        except Exception as exc:
            raise InvalidInput("options.clock", f"raised {type(exc).__name__}: {exc}") from exc
        return check_ms("options.clock()", value)


# SQLite keeps its busy timeout as a C int of milliseconds; larger values would silently mean "never wait".
MAX_BUSY_TIMEOUT_MS = 2**31 - 1


def check_options(options: object) -> StoreOptions:
    """Every option checked once, when a store opens, before any file is touched."""
    check_instance("options", options, StoreOptions)
    assert isinstance(options, StoreOptions)
    check_instance("options.blob_profile", options.blob_profile, BlobProfile)
    check_instance("options.durability", options.durability, Durability)
    check_instance("options.gc_policy", options.gc_policy, GcPolicy)
    every = options.gc_policy.auto_run_every_commits
    if every is not None:
        check_count("options.gc_policy.auto_run_every_commits", every)
    if options.gc_policy.grace_ms is not None:
        check_ms("options.gc_policy.grace_ms", options.gc_policy.grace_ms)
    check_int("options.busy_timeout_ms", options.busy_timeout_ms, 0, MAX_BUSY_TIMEOUT_MS)
    if options.clock is not None:
        check_callable("options.clock", options.clock)
    _check_telemetry(options.telemetry)
    check_instance("options.retention", options.retention, RetentionPolicy)
    for horizon in ("turn_stamps_ms", "idle_sessions_ms"):
        value = getattr(options.retention, horizon)
        if value is not None:
            check_ms(f"options.retention.{horizon}", value)
    return options


def _check_telemetry(telemetry: object) -> None:
    check_instance("options.telemetry", telemetry, TelemetryOptions)
    assert isinstance(telemetry, TelemetryOptions)
    check_instance("options.telemetry.enabled", telemetry.enabled, bool)
    check_instance("options.telemetry.record_session_ids", telemetry.record_session_ids, bool)
    # Checked by shape, not type: the options must not import OpenTelemetry (it is an optional extra).
    for field_name, method in (("tracer_provider", "get_tracer"), ("meter_provider", "get_meter")):
        provider = getattr(telemetry, field_name)
        if provider is not None and not callable(getattr(provider, method, None)):
            raise InvalidInput(f"options.telemetry.{field_name}", f"must have a {method}() method")

"""Store options."""

from __future__ import annotations

import enum
import math
import os
import re
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
    "KeyRing",
    "PoisonPolicy",
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


class PoisonPolicy(Struct, kw_only=True, frozen=True):
    """What the work queue does with a batch whose attempts keep failing (``StoreOptions.poison``).

    An *attempt* is a claim of the batch; every claim counts one (with or
    without a policy).  An attempt fails when its lease runs out or its claim
    is abandoned without the commit that completes it.  With a policy:

    - after failed attempt ``n`` the batch is not offered again for
      ``min(backoff_base_ms * 2**(n-1), backoff_max_ms)``, shortened by up to
      ``jitter`` (a fraction, 0..1) of itself; the jitter is derived from the
      batch's session, enqueue sequence and attempt, so it is the same on every
      backend and under an injected clock;
    - a batch whose ``max_attempts`` attempts all failed is moved to the
      session's dead-letter list by the next claim that would have offered it
      (``None``: never, it backs off forever);
    - a batch on its second or later attempt is claimed alone and ends any
      join group that reaches it, so a poisoned batch never takes the batches
      it was grouped with into the dead-letter list.

    Batches in backoff or dead-lettered never block later batches: the claim
    passes over them as it passes over delayed work.
    """

    max_attempts: int | None = 5
    backoff_base_ms: int = 1_000
    backoff_max_ms: int = 60_000
    jitter: float = 0.5


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


KEY_BYTES = 32
_KEY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class KeyRing(Struct, kw_only=True, frozen=True):
    """Encryption at rest: AES-256 data keys by id, the id that seals new data, and the index key.

    ``keys`` maps a key id (1-64 characters of ``A-Z a-z 0-9 . _ -``, starting
    with a letter or digit) to 32 random bytes (:meth:`generate_key`);
    ``current`` names the key every new value is sealed with.  Keep retired
    keys in the ring until ``lash-store rekey`` has re-sealed everything under
    the current one.  ``index_key`` (32 bytes) keys the store's addresses
    (blob hashes, node tags, blob references): it is never rotated, so a
    rotation does not move a single row.  Needs the ``lash-store[encryption]``
    extra.  The repr never shows key bytes.  See the README, "Encryption at rest".
    """

    keys: dict[str, bytes]
    current: str
    index_key: bytes

    def __repr__(self) -> str:
        return f"KeyRing(key_ids={sorted(self.keys)!r}, current={self.current!r})"

    @staticmethod
    def generate_key() -> bytes:
        """A new random 256-bit key (from the operating system's CSPRNG)."""
        return os.urandom(KEY_BYTES)

    @classmethod
    def generate(cls, key_id: str = "k1") -> KeyRing:
        """A new ring of one fresh data key (``key_id``, current) and a fresh index key."""
        return cls(keys={key_id: cls.generate_key()}, current=key_id, index_key=cls.generate_key())

    def rotated(self, key_id: str, key: bytes | None = None) -> KeyRing:
        """This ring with ``key_id`` added (``key``, else a fresh one) and made current; old keys stay."""
        return KeyRing(
            keys={**self.keys, key_id: key if key is not None else self.generate_key()},
            current=key_id,
            index_key=self.index_key,
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> KeyRing:
        """A ring from its JSON form: ``{"current": id, "index_key": b64, "keys": {id: b64, ...}}`` (checked)."""
        import base64
        import binascii
        import json

        try:
            data = json.loads(text)
            if not isinstance(data, dict) or not isinstance(data.get("keys"), dict):
                raise ValueError("expected an object with current, index_key and keys")
            ring = cls(
                keys={str(kid): base64.b64decode(key, validate=True) for kid, key in data["keys"].items()},
                current=data.get("current", ""),
                index_key=base64.b64decode(data.get("index_key") or "", validate=True),
            )
        except (ValueError, TypeError, binascii.Error) as exc:
            raise InvalidInput("key ring", f"not a key ring file ({type(exc).__name__})") from exc
        return check_key_ring("key ring", ring)

    def to_json(self) -> str:
        """The JSON form :meth:`from_json` reads (holds the key bytes: keep it secret)."""
        import base64
        import json

        def encode(key: bytes) -> str:
            return base64.b64encode(key).decode("ascii")

        return json.dumps(
            {
                "current": self.current,
                "index_key": encode(self.index_key),
                "keys": {kid: encode(key) for kid, key in self.keys.items()},
            }
        )

    def without(self, key_id: str) -> KeyRing:
        """This ring with a retired key removed (after ``rekey``)."""
        return KeyRing(
            keys={kid: key for kid, key in self.keys.items() if kid != key_id},
            current=self.current,
            index_key=self.index_key,
        )


class StoreOptions(Struct, kw_only=True, frozen=True):
    """Options of a store (``Store.memory()`` without options uses ``LOW_LATENCY``)."""

    blob_profile: BlobProfile = BlobProfile.BALANCED
    gc_policy: GcPolicy = GcPolicy()
    durability: Durability = Durability.NORMAL
    busy_timeout_ms: int = 15_000
    clock: Clock | None = field(default=None)
    telemetry: TelemetryOptions = TelemetryOptions()
    retention: RetentionPolicy = RetentionPolicy()
    encryption: KeyRing | None = None
    poison: PoisonPolicy | None = None  # None: no backoff, no dead letters (attempts are still counted)

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
    if options.encryption is not None:
        check_key_ring("options.encryption", options.encryption)
    if options.poison is not None:
        _check_poison(options.poison)
    return options


def check_key_ring(what: str, ring: object) -> KeyRing:
    """A key ring's ids, key sizes and current key, and that the ``encryption`` extra is installed."""
    check_instance(what, ring, KeyRing)
    assert isinstance(ring, KeyRing)
    if not isinstance(ring.keys, dict) or not ring.keys:
        raise InvalidInput(f"{what}.keys", "must be a non-empty dict of key id -> 32 key bytes")
    for key_id, key in ring.keys.items():
        if not isinstance(key_id, str) or not _KEY_ID.fullmatch(key_id):
            raise InvalidInput(
                f"{what}.keys", f"key id {key_id!r} must be 1-64 characters of A-Z a-z 0-9 . _ - (no leading . _ -)"
            )
        if type(key) is not bytes or len(key) != KEY_BYTES:
            raise InvalidInput(f"{what}.keys[{key_id!r}]", f"must be {KEY_BYTES} bytes (AES-256), not shown here")
    if not isinstance(ring.current, str) or ring.current not in ring.keys:
        raise InvalidInput(f"{what}.current", f"names no key of the ring: {ring.current!r}")
    if type(ring.index_key) is not bytes or len(ring.index_key) != KEY_BYTES:
        raise InvalidInput(f"{what}.index_key", f"must be {KEY_BYTES} bytes, not shown here")
    try:
        import cryptography.hazmat.primitives.ciphers.aead  # noqa: F401  (the encryption extra)
    except ModuleNotFoundError as exc:
        raise InvalidInput(what, "needs the lash-store[encryption] extra (the cryptography package)") from exc
    return ring


def _check_poison(poison: object) -> None:
    check_instance("options.poison", poison, PoisonPolicy)
    assert isinstance(poison, PoisonPolicy)
    if poison.max_attempts is not None:
        check_int("options.poison.max_attempts", poison.max_attempts, 1, 2**63 - 1)
    check_ms("options.poison.backoff_base_ms", poison.backoff_base_ms)
    check_ms("options.poison.backoff_max_ms", poison.backoff_max_ms)
    if poison.backoff_max_ms < poison.backoff_base_ms:
        raise InvalidInput("options.poison.backoff_max_ms", "must be at least backoff_base_ms")
    jitter = poison.jitter
    if isinstance(jitter, bool) or not isinstance(jitter, (int, float)) or not math.isfinite(jitter):
        raise InvalidInput("options.poison.jitter", f"must be a number, got {type(jitter).__name__}")
    if not 0 <= jitter <= 1:
        raise InvalidInput("options.poison.jitter", f"must be within 0..1, got {jitter}")


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

"""Encoding of everything the store persists: msgpack records and blobs.

All encoding happens before a write lock is taken; all decoding is typed and
turns malformed bytes into :class:`CorruptData` (never ``pickle``).
"""

from __future__ import annotations

import hashlib
import re
import threading
from typing import Any, Literal, TypeVar

import msgspec
import zstandard

from lash_store.errors import CorruptData, InvalidInput
from lash_store.model import ArtifactKind, BlobArtifactDescriptor, SessionRelation, StorageHint
from lash_store.options import BlobProfile

T = TypeVar("T")

ENCODING_RAW = "raw"
ENCODING_ZSTD = "zstd"
MAX_DECOMPRESSED = 1 << 31  # refuse zstd frames claiming more than 2 GiB

_encoder = msgspec.msgpack.Encoder()
_decoders: dict[Any, msgspec.msgpack.Decoder[Any]] = {}
_local = threading.local()


_ENCODE_ERRORS = (TypeError, ValueError, OverflowError, RecursionError)
_VALIDATION_PATH = re.compile(r"`\$([^`]*)`")  # msgspec names the failing part as `$.a[0].b`


def encode(what: str, value: Any) -> bytes:
    """msgpack-encode a caller value, naming the field when it cannot be encoded."""
    try:
        return _encoder.encode(value)
    except _ENCODE_ERRORS as exc:
        raise InvalidInput(_failing_path(what, value), f"cannot be encoded as msgpack: {exc}") from exc


def _failing_path(what: str, value: Any, depth: int = 0) -> str:
    """The path of the first part of ``value`` that does not encode (only walked when encoding failed)."""
    if depth > 32:
        return what
    if isinstance(value, msgspec.Struct):
        parts: Any = ((f".{name}", getattr(value, name)) for name in value.__struct_fields__)
    elif isinstance(value, dict):
        parts = ((f"[{key!r}]", item) for key, item in value.items())
    elif isinstance(value, (list, tuple)):
        parts = ((f"[{index}]", item) for index, item in enumerate(value))
    else:
        return what
    for suffix, part in parts:
        try:
            _encoder.encode(part)
        except _ENCODE_ERRORS:
            return _failing_path(what + suffix, part, depth + 1)
    return what


def encode_checked(what: str, value: Any, type_: Any) -> bytes:
    """Encode ``value`` and prove it reads back as ``type_``; a field that would not is :class:`InvalidInput`.

    Value types are plain structs that accept anything at construction; this
    is the one check that whatever the store accepts, it can also read (a
    wrong type at any depth names its path, e.g. ``draft.payloads[0].input.items[0].text``).
    """
    data = encode(what, value)
    decoder = _decoders.get(type_)
    if decoder is None:
        decoder = _decoders[type_] = msgspec.msgpack.Decoder(type_)
    try:
        decoder.decode(data)
    except RecursionError:
        pass  # deep opaque payloads: they decode on a fresh stack (see _decode_on_fresh_stack)
    except msgspec.ValidationError as exc:
        found = _VALIDATION_PATH.search(str(exc))
        raise InvalidInput(what + (found.group(1) if found else ""), str(exc)) from exc
    return data


def decode(what: str, data: bytes, type_: type[T]) -> T:
    """Typed msgpack decoding; malformed bytes raise :class:`CorruptData` naming ``what``."""
    return _decode(what, data, type_)  # type: ignore[no-any-return]


def decode_any(what: str, data: bytes) -> Any:
    """Decode an opaque caller value."""
    return _decode(what, data, Any)


def _decode(what: str, data: bytes, type_: Any) -> Any:
    decoder = _decoders.get(type_)
    if decoder is None:
        decoder = _decoders[type_] = msgspec.msgpack.Decoder(type_)
    try:
        return decoder.decode(data)
    except RecursionError:
        return _decode_on_fresh_stack(what, decoder, data)
    except (msgspec.DecodeError, TypeError, ValueError) as exc:
        raise CorruptData(what, str(exc)) from exc


def _decode_on_fresh_stack(what: str, decoder: msgspec.msgpack.Decoder[Any], data: bytes) -> Any:
    """Decode deeply nested data on a new thread's empty stack.

    Encoding accepts nesting up to the recursion limit minus the writer's own
    stack depth; a reader deeper in its stack than the writer was would fail on
    data the store accepted.  A fresh stack always has room for what was written.
    """
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = decoder.decode(data)
        except (msgspec.DecodeError, TypeError, ValueError, RecursionError) as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run, name="lash-store-deep-decode")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise CorruptData(what, str(outcome["error"])) from outcome["error"]
    return outcome["value"]


def sha256_hex(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


class EncodedBlob(msgspec.Struct, frozen=True):
    """A blob ready to insert: ``content`` is stored as ``encoding`` says."""

    hash: str
    encoding: str
    kind: str | None
    content: bytes
    raw_size: int


def _compressor(level: int) -> zstandard.ZstdCompressor:
    # zstd contexts are not thread-safe; reuse one per thread and level (creation is costly).
    compressors: dict[int, zstandard.ZstdCompressor] | None = getattr(_local, "compressors", None)
    if compressors is None:
        compressors = _local.compressors = {}
    compressor = compressors.get(level)
    if compressor is None:
        compressor = compressors[level] = zstandard.ZstdCompressor(level=level)
    return compressor


def _decompressor() -> zstandard.ZstdDecompressor:
    decompressor: zstandard.ZstdDecompressor | None = getattr(_local, "decompressor", None)
    if decompressor is None:
        decompressor = _local.decompressor = zstandard.ZstdDecompressor()
    return decompressor


def encode_blob(content: bytes, descriptor: BlobArtifactDescriptor | None, profile: BlobProfile) -> EncodedBlob:
    """Hash the raw content and compress it when the profile and descriptor allow and it pays."""
    if not isinstance(content, (bytes, bytearray, memoryview)):
        raise InvalidInput("content", f"must be bytes, got {type(content).__name__}")
    raw = bytes(content)
    kind = descriptor.kind.value if descriptor is not None else None
    threshold = profile.compression_threshold
    if descriptor is not None and descriptor.compressible and threshold is not None and len(raw) >= threshold:
        packed = _compressor(profile.compression_level).compress(raw)
        if len(packed) < len(raw):
            return EncodedBlob(sha256_hex(raw), ENCODING_ZSTD, kind, packed, len(raw))
    return EncodedBlob(sha256_hex(raw), ENCODING_RAW, kind, raw, len(raw))


def decode_blob(ref: str, encoding: Any, stored: Any, raw_size: Any) -> bytes:
    """Return a blob's raw content; undecodable or tampered bytes raise :class:`CorruptData`.

    Decompression is bounded by the recorded raw size, so a damaged frame
    cannot make the reader allocate what its header claims.
    """
    what = f"blob {ref}"
    if not isinstance(stored, bytes) or not isinstance(raw_size, int):
        raise CorruptData(what, "stored row has the wrong column types")
    if encoding == ENCODING_RAW:
        raw = stored
    elif encoding == ENCODING_ZSTD:
        try:
            declared = zstandard.frame_content_size(stored)
        except zstandard.ZstdError as exc:
            raise CorruptData(what, f"not a zstd frame: {exc}") from exc
        if declared not in (raw_size, -1) or not 0 <= raw_size <= MAX_DECOMPRESSED:
            raise CorruptData(what, f"zstd frame declares {declared} bytes, the row records {raw_size}")
        try:
            raw = _decompressor().decompress(stored, max_output_size=raw_size)
        except (zstandard.ZstdError, MemoryError) as exc:
            raise CorruptData(what, f"zstd frame does not decompress: {exc}") from exc
    else:
        raise CorruptData(what, f"unknown encoding {encoding!r}")
    if len(raw) != raw_size or sha256_hex(raw) != ref:
        raise CorruptData(what, "content does not match its SHA-256 address")
    return raw


def check_descriptor(descriptor: Any) -> BlobArtifactDescriptor:
    if not isinstance(descriptor, BlobArtifactDescriptor):
        raise InvalidInput("descriptor", f"must be a BlobArtifactDescriptor, got {type(descriptor).__name__}")
    if not isinstance(descriptor.kind, ArtifactKind):
        raise InvalidInput("descriptor.kind", "must be an ArtifactKind")
    hints = descriptor.hints
    if not isinstance(hints, (set, frozenset)) or not all(isinstance(hint, StorageHint) for hint in hints):
        raise InvalidInput("descriptor.hints", "must be a set of StorageHint")
    return descriptor


# ---------------------------------------------------------------------------
# Persisted records (private formats of this project)


class HeadBody(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """The opaque part of the head row; revision, session, leaf and checkpoint are columns.

    Strict: every field has a default, so without it any msgpack map (damage) would read as an empty head.
    """

    config: Any = None
    agent_frames: list[Any] = msgspec.field(default_factory=list)
    current_agent_frame_id: str = ""


class _StoredRelation(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """How a session's relation is stored: strict, because every field has a default (see HeadBody)."""

    kind: Literal["root", "child"] = "root"
    parent_session_id: str | None = None
    caused_by: Any = None


def decode_relation(data: bytes) -> SessionRelation:
    """A stored session relation; anything else, a map of other fields included, is :class:`CorruptData`."""
    stored = decode("session meta relation", data, _StoredRelation)
    return SessionRelation(kind=stored.kind, parent_session_id=stored.parent_session_id, caused_by=stored.caused_by)


def frame_execution_refs(agent_frames: list[Any]) -> list[str]:
    """Execution-state refs named by agent frames (GC roots)."""
    refs = []
    for frame in agent_frames:
        if isinstance(frame, dict):
            ref = frame.get("execution_state_ref")
            if isinstance(ref, str) and ref:
                refs.append(ref)
    return refs

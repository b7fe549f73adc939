"""The checkpoint writer and reader shared by commits and ``put_checkpoint``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from lash_store.core import codec
from lash_store.core.validate import check_optional_id
from lash_store.errors import InvalidInput
from lash_store.model import BlobArtifactDescriptor, HydratedCheckpoint, SessionCheckpoint
from lash_store.options import BlobProfile

_TOOL = BlobArtifactDescriptor.tool_state_snapshot()
_PLUGIN = BlobArtifactDescriptor.plugin_session_snapshot()
_EXECUTION = BlobArtifactDescriptor.execution_state_snapshot()
_MANIFEST = BlobArtifactDescriptor.checkpoint_manifest()


class BoundRef(msgspec.Struct, frozen=True):
    """A snapshot given by ref only: under the lock its blob must exist and decode as ``kind``."""

    what: str
    ref: str
    kind: str  # "msgpack" (tool state, plugin snapshot) or "bytes" (execution state)


class EncodedCheckpoint(msgspec.Struct, frozen=True):
    blobs: list[codec.EncodedBlob]
    checkpoint_ref: str
    manifest: SessionCheckpoint
    bound_refs: list[BoundRef]


def encode_checkpoint(
    hydrated: HydratedCheckpoint, profile: BlobProfile, what: str = "checkpoint"
) -> EncodedCheckpoint:
    """Encode snapshot blobs and the manifest, and list the refs given without a value."""
    if not isinstance(hydrated, HydratedCheckpoint):
        raise InvalidInput(what, f"must be a HydratedCheckpoint, got {type(hydrated).__name__}")
    blobs: list[codec.EncodedBlob] = []
    bound: list[BoundRef] = []

    def snapshot(field: str, value: Any, ref: str | None, descriptor: BlobArtifactDescriptor) -> str | None:
        check_optional_id(f"{what}.{field}_ref", ref)
        if value is None:
            if ref is not None:
                bound.append(BoundRef(f"{what}.{field}_ref", ref, "bytes" if field == "execution_state" else "msgpack"))
            return ref
        if field == "execution_state":
            if not isinstance(value, (bytes, bytearray, memoryview)):
                raise InvalidInput(f"{what}.execution_state", "must be bytes")
            content = bytes(value)
        else:
            content = codec.encode(f"{what}.{field}", value)
        blob = codec.encode_blob(content, descriptor, profile)
        blobs.append(blob)
        return blob.hash

    revision = hydrated.plugin_snapshot_revision
    if revision is not None and (isinstance(revision, bool) or not isinstance(revision, int) or revision < 0):
        raise InvalidInput(f"{what}.plugin_snapshot_revision", "must be None or a non-negative integer")
    manifest = SessionCheckpoint(
        turn_state=hydrated.turn_state,
        tool_state_ref=snapshot("tool_state", hydrated.tool_state, hydrated.tool_state_ref, _TOOL),
        plugin_snapshot_ref=snapshot(
            "plugin_snapshot", hydrated.plugin_snapshot, hydrated.plugin_snapshot_ref, _PLUGIN
        ),
        plugin_snapshot_revision=revision,
        execution_state_ref=snapshot(
            "execution_state", hydrated.execution_state, hydrated.execution_state_ref, _EXECUTION
        ),
    )
    manifest_blob = codec.encode_blob(codec.encode(f"{what}.turn_state", manifest), _MANIFEST, profile)
    blobs.append(manifest_blob)
    return EncodedCheckpoint(blobs, manifest_blob.hash, manifest, bound)


def decode_manifest(ref: str, content: bytes) -> SessionCheckpoint:
    return codec.decode(f"checkpoint manifest {ref}", content, SessionCheckpoint)


def hydrate(manifest: SessionCheckpoint, get_blob: Callable[[str], bytes | None]) -> HydratedCheckpoint:
    """Load a manifest's snapshots; a missing child yields ``None`` while its ref is still reported."""

    def value(ref: str | None) -> Any:
        if ref is None:
            return None
        content = get_blob(ref)
        return None if content is None else codec.decode_any(f"snapshot blob {ref}", content)

    execution = get_blob(manifest.execution_state_ref) if manifest.execution_state_ref else None
    return HydratedCheckpoint(
        turn_state=manifest.turn_state,
        tool_state=value(manifest.tool_state_ref),
        tool_state_ref=manifest.tool_state_ref,
        plugin_snapshot=value(manifest.plugin_snapshot_ref),
        plugin_snapshot_ref=manifest.plugin_snapshot_ref,
        plugin_snapshot_revision=manifest.plugin_snapshot_revision,
        execution_state=execution,
        execution_state_ref=manifest.execution_state_ref,
    )

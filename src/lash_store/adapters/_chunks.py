"""Content-defined chunk trees: long lists stored so that each new version adds only what changed.

A list of already-encoded elements becomes a small Merkle tree of blobs.
Leaf chunks close after an element whose hash hits a boundary (on average
every :data:`AVG_LEAF` elements) or at a size cap; index chunks group child
refs by the same rule over the refs, level by level, until one root is left.
Because boundaries depend on content and not on position, appending to a list
rewrites only the open tail chunk and one index chunk per level, and every
version of a list shares its unchanged chunks with the others (and with any
other list holding the same run of elements): storage grows with the new
elements, not with the length of the list.

Each index chunk names its children (:class:`~lash_store.model.NewBlob`
``children``), so the store's GC keeps a whole tree alive through its root.
Nothing here knows about any framework: elements are opaque ``(type, bytes)``
pairs, as serializers that tag their output produce them.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from threading import Lock
from typing import cast

import msgspec

from lash_store.errors import CorruptData
from lash_store.model import ArtifactKind, BlobArtifactDescriptor, NewBlob, StorageHint

AVG_LEAF = 4  # elements per leaf chunk, on average
MAX_LEAF = 32
MAX_LEAF_BYTES = 256 * 1024
AVG_FANOUT = 16  # children per index chunk, on average
MAX_FANOUT = 64

_LEAF, _INDEX = 0, 1
Pair = tuple[str, bytes]  # an element: its serializer's type tag and bytes

# Chunks are worth compressing (message text); the store keeps the compressed form only when it is smaller.
CHUNK_DESCRIPTOR = BlobArtifactDescriptor(kind=ArtifactKind.GENERIC_BLOB, hints=frozenset({StorageHint.COMPRESSIBLE}))

_encoder = msgspec.msgpack.Encoder()
_leaf_decoder = msgspec.msgpack.Decoder(tuple[int, list[tuple[str, bytes]]])
_index_decoder = msgspec.msgpack.Decoder(tuple[int, list[tuple[bytes, int]]])
_kind_decoder = msgspec.msgpack.Decoder(tuple[int, msgspec.Raw])


def _hits_boundary(digest: bytes, average: int) -> bool:
    return int.from_bytes(digest[:4], "big") % average == average - 1


def element_digest(pair: Pair) -> bytes:
    return hashlib.sha256(pair[0].encode() + b"\x00" + pair[1]).digest()


class Tree(msgspec.Struct, frozen=True):
    """A built tree: its root ref, element count, and every chunk blob of it (new or not)."""

    root: str
    length: int
    blobs: list[NewBlob]


def build(pairs: Sequence[Pair]) -> Tree:
    """The chunk tree of ``pairs`` (which must not be empty)."""
    blobs: list[NewBlob] = []
    level: list[tuple[str, int]] = []  # (ref, elements below it)
    chunk: list[Pair] = []
    size = 0
    for pair in pairs:
        chunk.append(pair)
        size += len(pair[1])
        if _hits_boundary(element_digest(pair), AVG_LEAF) or len(chunk) >= MAX_LEAF or size >= MAX_LEAF_BYTES:
            level.append(_close(blobs, _encoder.encode((_LEAF, chunk)), len(chunk), ()))
            chunk, size = [], 0
    if chunk:
        level.append(_close(blobs, _encoder.encode((_LEAF, chunk)), len(chunk), ()))
    while len(level) > 1:
        parents: list[tuple[str, int]] = []
        group: list[tuple[str, int]] = []
        for entry in level:
            group.append(entry)
            if _hits_boundary(bytes.fromhex(entry[0]), AVG_FANOUT) or len(group) >= MAX_FANOUT:
                parents.append(_close_index(blobs, group))
                group = []
        if group:
            parents.append(_close_index(blobs, group))
        level = parents
    root, length = level[0]
    return Tree(root=root, length=length, blobs=blobs)


def _close_index(blobs: list[NewBlob], group: list[tuple[str, int]]) -> tuple[str, int]:
    content = _encoder.encode((_INDEX, [(bytes.fromhex(ref), count) for ref, count in group]))
    return _close(blobs, content, sum(count for _, count in group), [ref for ref, _ in group])


def _close(blobs: list[NewBlob], content: bytes, count: int, children: Iterable[str]) -> tuple[str, int]:
    blobs.append(NewBlob(content=content, descriptor=CHUNK_DESCRIPTOR, children=list(children)))
    return hashlib.sha256(content).hexdigest(), count


class ChunkCache:
    """Decoded chunks by ref (immutable bytes: safe to share between savers and threads), bounded."""

    def __init__(self, capacity: int = 4096) -> None:
        self._chunks: OrderedDict[str, tuple[int, list[Pair] | list[tuple[bytes, int]]]] = OrderedDict()
        self._capacity = capacity
        self._lock = Lock()

    def get(self, ref: str) -> tuple[int, list[Pair] | list[tuple[bytes, int]]] | None:
        with self._lock:
            found = self._chunks.get(ref)
            if found is not None:
                self._chunks.move_to_end(ref)
            return found

    def put(self, ref: str, chunk: tuple[int, list[Pair] | list[tuple[bytes, int]]]) -> None:
        with self._lock:
            self._chunks[ref] = chunk
            while len(self._chunks) > self._capacity:
                self._chunks.popitem(last=False)


def read(root: str, fetch: Callable[[list[str]], dict[str, bytes]], cache: ChunkCache) -> list[Pair]:
    """Every element of the tree under ``root``, in order; one batched fetch per level for what is not cached."""
    level = [root]
    while True:
        decoded = _decode_level(level, fetch, cache)
        kinds = {kind for kind, _ in decoded}
        if kinds == {_LEAF}:
            leaves: list[Pair] = []
            for _, items in decoded:
                leaves.extend(cast("list[Pair]", items))
            return leaves
        if kinds != {_INDEX}:
            raise CorruptData(f"chunk tree {root}", "a level mixes leaf and index chunks")
        level = [child.hex() for _, entries in decoded for child, _count in cast("list[tuple[bytes, int]]", entries)]


def _decode_level(
    refs: list[str], fetch: Callable[[list[str]], dict[str, bytes]], cache: ChunkCache
) -> list[tuple[int, list[Pair] | list[tuple[bytes, int]]]]:
    found = {ref: cache.get(ref) for ref in refs}
    missing = sorted({ref for ref, chunk in found.items() if chunk is None})
    if missing:
        contents = fetch(missing)
        for ref in missing:
            content = contents.get(ref)
            if content is None:
                raise CorruptData(f"chunk {ref}", "a chunk of a stored list is missing")
            chunk = _decode_chunk(ref, content)
            cache.put(ref, chunk)
            found[ref] = chunk
    return [cast("tuple[int, list[Pair] | list[tuple[bytes, int]]]", found[ref]) for ref in refs]


def _decode_chunk(ref: str, content: bytes) -> tuple[int, list[Pair] | list[tuple[bytes, int]]]:
    try:
        kind = _kind_decoder.decode(content)[0]  # the body stays raw until the kind is known
        if kind == _LEAF:
            return _leaf_decoder.decode(content)
        if kind == _INDEX:
            return _index_decoder.decode(content)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise CorruptData(f"chunk {ref}", str(exc)) from exc
    raise CorruptData(f"chunk {ref}", f"unknown chunk kind {kind!r}")

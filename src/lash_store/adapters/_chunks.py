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
from collections.abc import Callable, Sequence
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
_leaf_decoder = msgspec.msgpack.Decoder(tuple[int, tuple[tuple[str, bytes], ...]])
_index_decoder = msgspec.msgpack.Decoder(tuple[int, tuple[tuple[bytes, int], ...]])
_kind_decoder = msgspec.msgpack.Decoder(tuple[int, msgspec.Raw])


def _hits_boundary(digest: bytes, average: int) -> bool:
    return int.from_bytes(digest[:4], "big") % average == average - 1


def element_digest(pair: Pair) -> bytes:
    return hashlib.sha256(pair[0].encode() + b"\x00" + pair[1]).digest()


class Tree(msgspec.Struct, frozen=True):
    """A built tree: its root ref, element count, its leaves (ref, elements) and its chunk blobs by ref.

    ``chunks`` holds every chunk of the tree except the leaves a build was
    told to keep (:func:`build_elements`), which are stored already.
    """

    root: str
    length: int
    chunks: dict[str, NewBlob]
    leaves: list[tuple[str, int]]

    @property
    def blobs(self) -> list[NewBlob]:
        return list(self.chunks.values())


Element = tuple[Pair, bytes]  # an element with its :func:`element_digest`
# A decoded chunk: its kind and its items, as tuples of atoms (the garbage collector stops tracking them).
Decoded = tuple[int, tuple[Pair, ...] | tuple[tuple[bytes, int], ...]]
# A built chunk as the build cache keeps it (atoms only, too): ref, bytes, children, decoded form.
_Built = tuple[str, bytes, tuple[str, ...], Decoded]


class BuildCache:
    """Chunks already built, by the digests of what they hold: a new version of a list re-encodes only its new chunks.

    A leaf is keyed by the concatenated digests of its elements, an index chunk
    by its children's refs; both determine the chunk's bytes exactly, so a hit
    is the same chunk a rebuild would make.  Bounded (least recently used out).
    """

    def __init__(self, capacity: int = 2048) -> None:
        self._chunks: OrderedDict[bytes | tuple[tuple[str, int], ...], _Built] = OrderedDict()
        self._capacity = capacity
        self._lock = Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: bytes | tuple[tuple[str, int], ...]) -> _Built | None:
        with self._lock:
            found = self._chunks.get(key)
            if found is None:
                self.misses += 1
                return None
            self.hits += 1
            self._chunks.move_to_end(key)
            return found

    def put(self, key: bytes | tuple[tuple[str, int], ...], chunk: _Built) -> None:
        with self._lock:
            self._chunks[key] = chunk
            self._chunks.move_to_end(key)
            while len(self._chunks) > self._capacity:
                self._chunks.popitem(last=False)

    def __len__(self) -> int:
        return len(self._chunks)


def build(pairs: Sequence[Pair]) -> Tree:
    """The chunk tree of ``pairs`` (which must not be empty)."""
    return build_elements([(pair, element_digest(pair)) for pair in pairs], None, None)


def build_elements(
    elements: Sequence[Element],
    cache: BuildCache | None,
    decoded: ChunkCache | None,
    keep: Sequence[tuple[str, int]] = (),
) -> Tree:
    """The chunk tree of ``elements`` (not empty), reusing and filling ``cache``.

    ``keep`` are leading leaves of an earlier build of a list that starts with
    the same elements (every leaf but that list's last, whose end was the
    list's end, not a boundary): they are the leaves a rebuild would make, so
    chunking starts after them.  Every chunk built here is also put in
    ``decoded`` (its decoded form is known), so reading back a tree this
    process wrote fetches nothing.
    """
    chunks: dict[str, NewBlob] = {}
    level: list[tuple[str, int]] = list(keep)  # (ref, elements below it)
    start = sum(count for _, count in keep)
    size = 0
    count = len(elements)
    for index in range(start, count):
        pair, digest = elements[index]
        size += len(pair[1])
        if (
            index + 1 == count
            or _hits_boundary(digest, AVG_LEAF)
            or index + 1 - start >= MAX_LEAF
            or size >= MAX_LEAF_BYTES
        ):
            group = elements[start : index + 1]
            level.append(_leaf(chunks, group, cache, decoded))
            start, size = index + 1, 0
    leaves = level
    while len(level) > 1:
        parents: list[tuple[str, int]] = []
        group_refs: list[tuple[str, int]] = []
        for entry in level:
            group_refs.append(entry)
            if int(entry[0][:8], 16) % AVG_FANOUT == AVG_FANOUT - 1 or len(group_refs) >= MAX_FANOUT:
                parents.append(_index(chunks, group_refs, cache, decoded))
                group_refs = []
        if group_refs:
            parents.append(_index(chunks, group_refs, cache, decoded))
        level = parents
    root, length = level[0]
    return Tree(root=root, length=length, chunks=chunks, leaves=leaves)


def _leaf(
    chunks: dict[str, NewBlob], group: Sequence[Element], cache: BuildCache | None, decoded: ChunkCache | None
) -> tuple[str, int]:
    key = b"L" + b"".join(digest for _, digest in group)
    found = cache.get(key) if cache is not None else None
    if found is None:
        body: Decoded = (_LEAF, tuple(pair for pair, _ in group))
        found = _new_chunk(_encoder.encode(body), (), body)
        if cache is not None:
            cache.put(key, found)
    ref, content, children, body = found
    chunks[ref] = NewBlob(content=content, descriptor=CHUNK_DESCRIPTOR, children=list(children))
    if decoded is not None:
        decoded.put(ref, body)
    return ref, len(group)


def _index(
    chunks: dict[str, NewBlob], group: list[tuple[str, int]], cache: BuildCache | None, decoded: ChunkCache | None
) -> tuple[str, int]:
    key = tuple(group)  # the children's refs and counts determine the chunk (a leaf's key is bytes: no clash)
    found = cache.get(key) if cache is not None else None
    if found is None:
        body: Decoded = (_INDEX, tuple((bytes.fromhex(ref), count) for ref, count in group))
        found = _new_chunk(_encoder.encode(body), tuple(ref for ref, _ in group), body)
        if cache is not None:
            cache.put(key, found)
    ref, content, children, body = found
    chunks[ref] = NewBlob(content=content, descriptor=CHUNK_DESCRIPTOR, children=list(children))
    if decoded is not None:
        decoded.put(ref, body)
    return ref, sum(count for _, count in group)


def _new_chunk(content: bytes, children: tuple[str, ...], body: Decoded) -> _Built:
    return hashlib.sha256(content).hexdigest(), content, children, body


class ChunkCache:
    """Decoded chunks by ref (immutable bytes: safe to share between savers and threads), bounded."""

    def __init__(self, capacity: int = 4096) -> None:
        self._chunks: OrderedDict[str, Decoded] = OrderedDict()
        self._capacity = capacity
        self._lock = Lock()

    def get(self, ref: str) -> Decoded | None:
        with self._lock:
            found = self._chunks.get(ref)
            if found is not None:
                self._chunks.move_to_end(ref)
            return found

    def put(self, ref: str, chunk: Decoded) -> None:
        with self._lock:
            self._chunks[ref] = chunk
            self._chunks.move_to_end(ref)
            while len(self._chunks) > self._capacity:
                self._chunks.popitem(last=False)


def read(root: str, fetch: Callable[[list[str]], dict[str, bytes]], cache: ChunkCache) -> list[Pair]:
    """Every element of the tree under ``root``, in order; one batched fetch per level for what is not cached."""
    return [pair for _, pairs in read_leaves(root, fetch, cache) for pair in pairs]


def read_leaves(
    root: str, fetch: Callable[[list[str]], dict[str, bytes]], cache: ChunkCache
) -> list[tuple[str, tuple[Pair, ...]]]:
    """The leaf chunks of the tree under ``root`` in order, each with its ref (what :func:`read` flattens)."""
    level = [root]
    while True:
        decoded = _decode_level(level, fetch, cache)
        kinds = {kind for kind, _ in decoded}
        if kinds == {_LEAF}:
            return [(ref, cast("tuple[Pair, ...]", items)) for ref, (_, items) in zip(level, decoded, strict=True)]
        if kinds != {_INDEX}:
            raise CorruptData(f"chunk tree {root}", "a level mixes leaf and index chunks")
        level = [
            child.hex() for _, entries in decoded for child, _count in cast("tuple[tuple[bytes, int], ...]", entries)
        ]


def _decode_level(refs: list[str], fetch: Callable[[list[str]], dict[str, bytes]], cache: ChunkCache) -> list[Decoded]:
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
    return [cast("Decoded", found[ref]) for ref in refs]


def _decode_chunk(ref: str, content: bytes) -> Decoded:
    try:
        kind = _kind_decoder.decode(content)[0]  # the body stays raw until the kind is known
        if kind == _LEAF:
            return _leaf_decoder.decode(content)
        if kind == _INDEX:
            return _index_decoder.decode(content)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise CorruptData(f"chunk {ref}", str(exc)) from exc
    raise CorruptData(f"chunk {ref}", f"unknown chunk kind {kind!r}")

"""Caches that make a checkpoint of a long list cost O(new elements) CPU, not O(history).

Two bounded caches sit between a saver's serializer and the chunk trees
(:mod:`lash_store.adapters._chunks`):

* :class:`DecodedLeaves` -- the decoded elements of a leaf chunk, by the
  chunk's ref.  A ref is the hash of the chunk's bytes, so an entry can never
  go stale.  The cache holds no live objects, only a :func:`freeze` form made of
  tuples of atoms (which the garbage collector stops tracking, so thousands of
  cached messages do not lengthen its full collections); a read gets a fresh
  :func:`thaw` of each (a fraction of the cost of decoding), so mutating what
  a read returned cannot change what a later read returns.  Elements of a type
  :func:`freeze` does not know are decoded from their bytes again, as without
  the cache.
* :class:`Lists` -- the last list of each channel (per thread and namespace)
  that this process wrote or read, with the encoding of each element and the
  leaves it was chunked into.  A ``put`` of a list that starts with the same
  element *objects* (LangGraph's reducers build the new list from the old
  one's objects: ``add_messages`` appends) reuses their encodings and every
  leaf that lies wholly within that common start, so it encodes and chunks
  only the new elements.  Elements are compared by identity (the list holds
  them, so an ``id`` cannot be reused meanwhile); an element object changed
  *in place* after it was checkpointed is not seen as changed.  LangGraph
  state is updated by returning new values, and in-place changes of state
  are not reliably saved by any saver (a channel whose version did not
  change is not written again); ``LashSaver(..., reuse_encodings=False)``
  turns this cache off.  Entries are trusted for as long as the blobs this
  process stored (see ``_Known`` in the adapter).
"""

from __future__ import annotations

import datetime
import decimal
import operator
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from typing import Any

from pydantic import BaseModel

from lash_store.adapters._chunks import Element, Pair, element_digest

_ATOMS: frozenset[type] = frozenset(
    {
        str,
        bytes,
        int,
        float,
        bool,
        complex,
        type(None),
        decimal.Decimal,
        uuid.UUID,
        datetime.datetime,
        datetime.date,
        datetime.time,
        datetime.timedelta,
    }
)


def clonable(value: Any) -> bool:
    """Whether :func:`clone` copies ``value`` fully (JSON-like data and plain pydantic models of it)."""
    kind = type(value)
    if kind in _ATOMS:
        return True
    if kind is list or kind is tuple:
        return all(clonable(item) for item in value)
    if kind is dict:
        return all(type(key) in _ATOMS and clonable(item) for key, item in value.items())
    if isinstance(value, BaseModel):
        if kind.__copy__ is not BaseModel.__copy__ or kind.__deepcopy__ is not BaseModel.__deepcopy__:
            return False
        if kind not in _class_numbers and len(_classes) >= MAX_CLASSES:
            return False  # classes made at run time (create_model) must not grow the registry without bound
        if getattr(value, "__pydantic_private__", None) is not None:
            return False
        extra = value.__pydantic_extra__ or {}
        return all(clonable(item) for item in value.__dict__.values()) and all(
            clonable(item) for item in extra.values()
        )
    return False


def clone(value: Any) -> Any:
    """A deep copy of a :func:`clonable` value (what ``copy.deepcopy`` makes, at a fraction of its cost)."""
    return thaw(freeze(value))


# A frozen value is made of tuples of atoms only, which the garbage collector stops
# tracking: a cache of thousands of frozen messages adds nothing to a full collection's pause (live pydantic
# objects would).  atom -> itself; list -> (0, items); dict -> (1, keys, atoms, deep) where ``atoms`` holds the
# atom values (None for the others) and ``deep`` the (key, frozen value) of the others; tuple -> (2, items);
# pydantic model -> (3, class number, keys, atoms, deep, fields set, frozen extra or None).  An empty list or
# dict is (4,) or (5,).
_LIST, _DICT, _TUPLE, _MODEL, _EMPTY_LIST, _EMPTY_DICT = 0, 1, 2, 3, 4, 5
MAX_CLASSES = 1024  # pydantic classes a frozen form may name (beyond them, values are decoded each time)
_classes: list[type[BaseModel]] = []
_class_numbers: dict[type[BaseModel], int] = {}
_classes_lock = threading.Lock()


def freeze(value: Any) -> Any:
    """The frozen form of a :func:`clonable` value (:func:`thaw` makes a fresh copy of it)."""
    kind = type(value)
    if kind in _ATOMS:
        return value
    if kind is list:
        return (_LIST, tuple([freeze(item) for item in value])) if value else (_EMPTY_LIST,)
    if kind is tuple:
        return (_TUPLE, tuple([freeze(item) for item in value]))
    if kind is dict:
        return (_DICT, *_freeze_items(value)) if value else (_EMPTY_DICT,)
    number = _class_numbers.get(kind)
    if number is None:
        with _classes_lock:
            number = _class_numbers.get(kind)
            if number is None:
                number = len(_classes)
                _classes.append(kind)
                _class_numbers[kind] = number
    extra = value.__pydantic_extra__
    return (
        _MODEL,
        number,
        *_freeze_items(value.__dict__),
        tuple(value.__pydantic_fields_set__),
        None if extra is None else freeze(extra),
    )


def _freeze_items(value: dict[Any, Any]) -> tuple[tuple[Any, ...], tuple[Any, ...], tuple[tuple[Any, Any], ...]]:
    # Every key in order with its atom value (None for the others, put back in their places on thaw: a dict's
    # order is kept).  Tuples, not a dict: a tuple holding a dict is never untracked.
    keys = tuple(value)
    atoms = tuple([item if type(item) in _ATOMS else None for item in value.values()])
    deep = tuple([(key, freeze(item)) for key, item in value.items() if type(item) not in _ATOMS])
    return keys, atoms, deep


def thaw(frozen: Any) -> Any:
    """A fresh value from its :func:`freeze` form (nothing of it is shared with any other thawed copy)."""
    if type(frozen) is not tuple:
        return frozen
    tag = frozen[0]
    if tag == _MODEL:
        _, number, keys, atoms, deep, fields_set, extra = frozen
        copied: Any = _new(_classes[number])
        _set(copied, "__dict__", _thaw_items(keys, atoms, deep))
        _set(copied, "__pydantic_extra__", None if extra is None else thaw(extra))
        _set(copied, "__pydantic_fields_set__", set(fields_set))
        _set(copied, "__pydantic_private__", None)
        return copied
    if tag == _EMPTY_LIST:
        return []
    if tag == _EMPTY_DICT:
        return {}
    if tag == _DICT:
        return _thaw_items(frozen[1], frozen[2], frozen[3])
    if tag == _LIST:
        return [item if type(item) is not tuple else thaw(item) for item in frozen[1]]
    return tuple(thaw(item) for item in frozen[1])


def _thaw_items(keys: tuple[Any, ...], atoms: tuple[Any, ...], deep: tuple[tuple[Any, Any], ...]) -> dict[Any, Any]:
    thawed = dict(zip(keys, atoms))  # noqa: B905 - of one length by construction
    for key, item in deep:
        tag = item[0]
        thawed[key] = [] if tag == _EMPTY_LIST else {} if tag == _EMPTY_DICT else thaw(item)
    return thawed


_set = object.__setattr__
_new = BaseModel.__new__


# A decoded leaf: the frozen values (``None``: decoded each time), their elements, and which are frozen -- a
# tuple of tuples of atoms, which the garbage collector stops tracking.
_Leaf = tuple[tuple[Any, ...], tuple[Element, ...], tuple[bool, ...]]


class DecodedLeaves:
    """Decoded leaf chunks by ref, bounded by the number of elements held (least recently used out)."""

    def __init__(self, capacity: int = 16_384) -> None:
        self._leaves: OrderedDict[str, _Leaf] = OrderedDict()
        self._held = 0
        self._capacity = capacity
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def read(
        self, ref: str, pairs: Sequence[Pair], loads: Callable[[Pair], Any], values: list[Any], elements: list[Element]
    ) -> None:
        """Append fresh values of the leaf ``ref`` (holding ``pairs``) to ``values``, and their elements."""
        with self._lock:
            leaf = self._leaves.get(ref)
            if leaf is not None:
                self._leaves.move_to_end(ref)
                self.hits += 1
        if leaf is None:
            decoded = [loads(pair) for pair in pairs]
            fast = [clonable(value) for value in decoded]
            # Lists first, then tuples of them: a collection untracks a tuple whose items it has already untracked.
            frozen = tuple([freeze(value) if ok else None for value, ok in zip(decoded, fast, strict=True)])
            leaf = (frozen, tuple([(pair, element_digest(pair)) for pair in pairs]), tuple(fast))
            with self._lock:
                self.misses += 1
                if len(pairs) <= self._capacity:
                    old = self._leaves.pop(ref, None)
                    self._held += len(pairs) - (0 if old is None else len(old[0]))
                    self._leaves[ref] = leaf
                    while self._held > self._capacity:
                        _, evicted = self._leaves.popitem(last=False)
                        self._held -= len(evicted[0])
        # No cached object is ever handed out: the first read gets fresh copies like every later one.
        values.extend(
            [
                thaw(value) if fast else loads(element[0])
                for value, element, fast in zip(leaf[0], leaf[1], leaf[2], strict=True)
            ]
        )
        elements.extend(leaf[1])

    def __len__(self) -> int:
        return len(self._leaves)

    @property
    def held(self) -> int:
        """How many elements the cached leaves hold (at most the capacity)."""
        return self._held


class _List:
    __slots__ = ("at", "elements", "items", "leaves")

    def __init__(self, items: list[Any], elements: list[Element], leaves: list[tuple[str, int]], at: float) -> None:
        self.items = items
        self.elements = elements
        self.leaves = leaves
        self.at = at


class Lists:
    """The last list of each channel this process wrote or read (see the module docstring), bounded."""

    def __init__(self, capacity: int = 64, ttl_s: float = 60.0) -> None:
        self._lists: OrderedDict[Hashable, _List] = OrderedDict()
        self._capacity = capacity
        self._ttl_s = ttl_s
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def remember(
        self, key: Hashable, items: Sequence[Any], elements: list[Element], leaves: list[tuple[str, int]]
    ) -> None:
        """``items`` (copied: the caller's list may change) encode to ``elements``, chunked into ``leaves``."""
        if self._capacity <= 0:
            return
        entry = _List(list(items), elements, leaves, time.monotonic())
        with self._lock:
            self._lists[key] = entry
            self._lists.move_to_end(key)
            while len(self._lists) > self._capacity:
                self._lists.popitem(last=False)

    def forget(self, match: Callable[[Hashable], bool]) -> None:
        with self._lock:
            for key in [key for key in self._lists if match(key)]:
                del self._lists[key]

    def elements(
        self, key: Hashable, items: list[Any], encode: Callable[[Any], Element]
    ) -> tuple[list[Element], list[tuple[str, int]]]:
        """The elements of ``items`` and the leaves a build may keep (encoding only what the last list lacks)."""
        with self._lock:
            last = self._lists.get(key)
        if last is None or time.monotonic() - last.at >= self._ttl_s:
            with self._lock:
                self.misses += 1
            return [encode(item) for item in items], []
        before = last.items
        same = min(len(items), len(before))
        if not all(map(operator.is_, items[:same], before[:same])):
            same = next(index for index, (a, b) in enumerate(zip(items, before, strict=False)) if a is not b)
        keep: list[tuple[str, int]] = []
        end = 0
        for ref, count in last.leaves[:-1]:  # the last leaf ended with its list, not at a boundary
            if end + count > same:
                break
            keep.append((ref, count))
            end += count
        with self._lock:
            self.hits += 1
        return last.elements[:same] + [encode(item) for item in items[same:]], keep

    def __len__(self) -> int:
        return len(self._lists)

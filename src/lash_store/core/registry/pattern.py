r"""A linear-time matcher for the ``pattern`` keyword of payload schemas.

Why: ``re.search`` backtracks, so a pattern such as ``(a+)+$`` takes minutes on ``"a" * 30 + "!"`` (twice as
long for each further ``a``), and the payload check runs while the append holds its process row's lock: one
crafted payload would stall the process.  This matcher parses a pattern into a Thompson NFA and runs it over
the text with a set of states, building the DFA lazily (each state set met is kept, with its transitions, up
to a budget), so a search costs at most O(len(text) x states) whatever the pattern and the text, and in
practice one dictionary lookup per character.

The subset is the common ground of ECMA-262 (the dialect JSON Schema names) and Python's ``re``, and a pattern
means what ``re.search`` makes of it, except ``$``:

* literal characters; escaped punctuation (``\.``, ``\*``, ``\\``, ``\/``: a backslash before any character
  that is not an ASCII letter or digit); ``\t \n \r \f \v``, ``\xhh`` and ``\uhhhh`` (not a surrogate);
* ``.`` (any character but ``\n``); ``\d \w \s \D \W \S``, Unicode-aware as in ``re`` (``str.isdecimal``,
  ``str.isalnum`` or ``_``, ``str.isspace``);
* classes ``[...]`` and ``[^...]`` with ranges and the escapes above (``\b`` is a backspace there);
* ``^``: the start of the text; ``$``: the end of the text only (ECMA-262 without multiline, and ``re``'s
  ``\Z``; ``re``'s own ``$`` also matches before a final ``\n``);
* groups ``(...)`` and ``(?:...)``; alternation ``|``;
* quantifiers ``* + ? {m} {m,} {m,n}``, and their lazy forms ``*?`` ..., which are the same thing here:
  only whether the text matches counts.

Characters are code points (``re``'s view; ECMA-262 without the ``u`` flag sees UTF-16 units).  A search is
unanchored: ``^`` and ``$`` anchor it.

Refused, with :class:`PatternError` (the schema is refused at registration, never half-enforced):
backreferences and octal escapes (``\1``, ``\0``, ``(?P=name)``, ``\k<name>``), lookahead and lookbehind,
atomic groups and possessive quantifiers, named groups, inline flags, comments and conditionals, ``\b \B \A
\Z`` and every other letter escape, a ``{`` that does not start a quantifier (write ``\{``; ``{,n}`` is one),
a class that starts with ``]`` or holds an unescaped ``[`` (the two dialects read them differently), groups
nested more than :data:`MAX_NESTING` deep, patterns longer than :data:`MAX_LENGTH` characters, and patterns
whose NFA would have more than :data:`MAX_STATES` states (counted repeats are expanded: ``(a{100}){101}`` is
refused).
"""

from __future__ import annotations

import functools
import threading
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

__all__ = ["MAX_LENGTH", "MAX_NESTING", "MAX_STATES", "Pattern", "PatternError", "TooCostly", "compile_pattern"]

#: The most states a pattern's NFA may have: a search costs at most this many steps per character.
MAX_STATES = 10_000
#: The longest pattern, in characters.
MAX_LENGTH = 10_000
#: The deepest group nesting a pattern may have (the parser recurses once per level).
MAX_NESTING = 50
#: What one search may spend on NFA states outside the lazy DFA's cache: a fixed allowance plus so many per
#: character.  Ordinary patterns stay far below it (their DFA is small and soon cached); a huge counted repeat
#: meeting text that keeps it out of the cache would cost up to MAX_STATES per character, seconds per 100 kB,
#: so such a search stops early with :class:`TooCostly` instead (the payload is refused, never half-checked).
WORK_ALLOWANCE = 1_000_000
WORK_PER_CHARACTER = 32
#: Entries (set members, transitions) one pattern's lazy DFA may cache, and as many for the NFA states'
#: successor sets, before starting afresh: a search only slows down.  About 1.5 MB at most, per pattern.
_CACHE_BUDGET = 20_000
#: Compiled patterns kept (with their caches: at most ~100 MB however many patterns the schemas hold).
_COMPILED = 64


class PatternError(ValueError):
    """A pattern outside the supported subset, or malformed; ``position`` is where in the pattern."""

    def __init__(self, position: int, reason: str) -> None:
        self.position = position
        self.reason = reason
        super().__init__(f"{reason} (at position {position})")


class TooCostly(PatternError):
    """A search would spend more than its work budget (see :data:`WORK_ALLOWANCE`) on this text."""

    def __init__(self, length: int) -> None:
        self.position = 0
        self.reason = f"a text of {length:,} characters needs more automaton steps than a check may take"
        ValueError.__init__(self, self.reason)


# ---------------------------------------------------------------------------
# Character sets


_CLASS_TESTS: dict[str, Callable[[str], bool]] = {
    "d": str.isdecimal,  # what ``re`` calls a Unicode digit (category Nd)
    "w": lambda ch: ch.isalnum() or ch == "_",
    "s": str.isspace,
    "D": lambda ch: not ch.isdecimal(),
    "W": lambda ch: not (ch.isalnum() or ch == "_"),
    "S": lambda ch: not ch.isspace(),
}


@dataclass(frozen=True, slots=True)
class CharSet:
    """The characters one NFA state consumes: merged code-point ranges, class escapes, maybe negated."""

    starts: tuple[int, ...]
    ends: tuple[int, ...]
    classes: tuple[Callable[[str], bool], ...]
    negated: bool

    def __contains__(self, ch: str) -> bool:
        code = ord(ch)
        index = bisect_right(self.starts, code) - 1
        inside = (index >= 0 and code <= self.ends[index]) or any(test(ch) for test in self.classes)
        return inside != self.negated


def _char_set(ranges: list[tuple[int, int]], classes: list[str], negated: bool = False) -> CharSet:
    merged: list[list[int]] = []
    for low, high in sorted(ranges):
        if merged and low <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], high)
        else:
            merged.append([low, high])
    tests = tuple(_CLASS_TESTS[name] for name in dict.fromkeys(classes))
    return CharSet(tuple(low for low, _ in merged), tuple(high for _, high in merged), tests, negated)


_DOT = _char_set([(0x0A, 0x0A)], [], negated=True)
_NOTHING = _char_set([], [])  # what the states that consume no character are given, so every state has a set


# ---------------------------------------------------------------------------
# The syntax tree


@dataclass(frozen=True, slots=True)
class _Chars:
    chars: CharSet


@dataclass(frozen=True, slots=True)
class _Anchor:
    end: bool  # ``$`` if true, else ``^``


@dataclass(frozen=True, slots=True)
class _Seq:
    items: tuple[_Node, ...]


@dataclass(frozen=True, slots=True)
class _Alt:
    options: tuple[_Node, ...]


@dataclass(frozen=True, slots=True)
class _Repeat:
    item: _Node
    low: int
    high: int | None  # None: no upper bound


_Node = _Chars | _Anchor | _Seq | _Alt | _Repeat
_EMPTY = _Seq(())


def _emits_nothing(node: _Node) -> bool:
    """Whether ``node`` compiles to no NFA state at all (repeating it must not loop without building)."""
    return isinstance(node, _Seq) and all(_emits_nothing(item) for item in node.items)


# ---------------------------------------------------------------------------
# Parsing

_CONTROLS = {"t": 0x09, "n": 0x0A, "r": 0x0D, "f": 0x0C, "v": 0x0B}
_HEX = frozenset("0123456789abcdefABCDEF")
_DIGITS = frozenset("0123456789")
_LETTER_ESCAPES = {
    "b": "word boundaries (\\b, \\B) are not supported",
    "B": "word boundaries (\\b, \\B) are not supported",
    "A": "anchors other than ^ and $ are not supported",
    "Z": "anchors other than ^ and $ are not supported",
    "k": "backreferences are not supported",
    "p": "Unicode property escapes are not supported",
    "P": "Unicode property escapes are not supported",
}
# What may follow "(?": a non-capturing group (no reason), or a reason to refuse, longest prefixes first.
_GROUP_KINDS = (
    ("?:", ""),
    ("?=", "lookahead is not supported"),
    ("?!", "lookahead is not supported"),
    ("?<=", "lookbehind is not supported"),
    ("?<!", "lookbehind is not supported"),
    ("?<", "named groups are not supported"),
    ("?P<", "named groups are not supported"),
    ("?P=", "backreferences are not supported"),
    ("?>", "atomic groups are not supported"),
    ("?#", "comments are not supported"),
    ("?(", "conditionals are not supported"),
    ("?", "inline flags and other (? groups are not supported"),
)
_BRACE = "a '{' that does not start a quantifier {m}, {m,} or {m,n} must be escaped as \\{"


class _Parser:
    """Recursive descent over the subset; every refusal names its position."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.pos = 0

    def fail(self, reason: str, position: int | None = None) -> NoReturn:
        raise PatternError(self.pos if position is None else position, reason)

    def peek(self, ahead: int = 0) -> str:
        index = self.pos + ahead
        return self.source[index] if index < len(self.source) else ""

    def take(self) -> str:
        ch = self.peek()
        self.pos += 1
        return ch

    def parse(self) -> _Node:
        if len(self.source) > MAX_LENGTH:  # the parse tree takes ~100 bytes per character: refused before it
            self.fail(f"a pattern longer than {MAX_LENGTH} characters", MAX_LENGTH)
        node = self.alternation(0)
        if self.pos < len(self.source):  # only a ')' ends an alternation early
            self.fail("unbalanced parenthesis")
        return node

    def alternation(self, depth: int) -> _Node:
        options = [self.sequence(depth)]
        while self.peek() == "|":
            self.pos += 1
            options.append(self.sequence(depth))
        return options[0] if len(options) == 1 else _Alt(tuple(options))

    def sequence(self, depth: int) -> _Node:
        items: list[_Node] = []
        while self.pos < len(self.source) and self.peek() not in ("|", ")"):
            atom, repeatable = self.atom(depth)
            items.append(self.quantified(atom, repeatable))
        return items[0] if len(items) == 1 else _Seq(tuple(items))

    def atom(self, depth: int) -> tuple[_Node, bool]:
        """The next atom, and whether a quantifier may follow it (not after ``^`` or ``$``, as in ``re``)."""
        start = self.pos
        ch = self.take()
        if ch == "(":
            return self.group(depth, start), True
        if ch == "[":
            return _Chars(self.char_class(start)), True
        if ch == ".":
            return _Chars(_DOT), True
        if ch in ("^", "$"):
            return _Anchor(end=ch == "$"), False
        if ch == "\\":
            item = self.escape(start, in_class=False)
            return _Chars(_char_set([], [item]) if isinstance(item, str) else _char_set([(item, item)], [])), True
        if ch in ("*", "+", "?"):
            self.fail("nothing to repeat", start)
        if ch == "{":
            self.fail(_BRACE, start)
        return _Chars(_char_set([(ord(ch), ord(ch))], [])), True

    def group(self, depth: int, start: int) -> _Node:
        if depth >= MAX_NESTING:
            self.fail(f"groups nest more than {MAX_NESTING} levels deep", start)
        if self.peek() == "?":
            for prefix, refusal in _GROUP_KINDS:
                if self.source.startswith(prefix, self.pos):
                    if refusal:
                        self.fail(refusal, start)
                    self.pos += len(prefix)
                    break
        inner = self.alternation(depth + 1)
        if self.take() != ")":
            self.fail("missing ), unterminated group", start)
        return inner

    def quantified(self, atom: _Node, repeatable: bool) -> _Node:
        at = self.pos
        bounds = self.quantifier()
        if bounds is None:
            return atom
        if not repeatable:
            self.fail("nothing to repeat", at)
        if self.peek() == "?":
            self.pos += 1  # lazy: another order of trying, the same set of matches
        elif self.peek() == "+":
            self.fail("possessive quantifiers are not supported")
        if self.peek() in ("*", "+", "?", "{"):
            self.fail("multiple repeat")
        low, high = bounds
        if high == 0 or _emits_nothing(atom):
            return _EMPTY  # x{0} matches the empty string; repeating an empty group changes nothing
        return _Repeat(atom, low, high)

    def quantifier(self) -> tuple[int, int | None] | None:
        ch = self.peek()
        if ch in ("*", "+", "?"):
            self.pos += 1
            return {"*": (0, None), "+": (1, None), "?": (0, 1)}[ch]
        if ch != "{":
            return None
        start = self.pos
        self.pos += 1
        low = self.count()
        high: int | None = low
        if self.peek() == ",":
            self.pos += 1
            high = self.count()
        if low is None or self.take() != "}":
            self.fail(_BRACE, start)
        if high is not None and high < low:
            self.fail("min repeat greater than max repeat", start)
        return low, high

    def count(self) -> int | None:
        start = self.pos
        while self.peek() in _DIGITS:
            self.pos += 1
        digits = self.source[start : self.pos]
        if len(digits) > len(str(MAX_STATES)):  # more would exceed the state limit anyway; int() has limits
            self.fail(f"a repeat count above {MAX_STATES}", start)
        return int(digits) if digits else None

    def escape(self, start: int, in_class: bool) -> int | str:
        """After a backslash: a code point, or the letter of a class escape (``d w s D W S``)."""
        ch = self.take()
        if not ch:
            self.fail("a pattern cannot end with a backslash", start)
        if ch in _CLASS_TESTS:
            return ch
        if ch in _CONTROLS:
            return _CONTROLS[ch]
        if ch == "b" and in_class:
            return 0x08
        if ch in ("x", "u"):
            return self.hex_escape(start, 2 if ch == "x" else 4)
        if ch in _DIGITS:
            self.fail("backreferences and octal escapes are not supported", start)
        if ch.isascii() and ch.isalpha():
            self.fail(_LETTER_ESCAPES.get(ch, f"the escape \\{ch} is not supported"), start)
        return ord(ch)

    def hex_escape(self, start: int, width: int) -> int:
        digits = self.source[self.pos : self.pos + width]
        if len(digits) != width or not all(d in _HEX for d in digits):
            self.fail(f"an escape \\{self.source[self.pos - 1]} takes exactly {width} hex digits", start)
        self.pos += width
        code = int(digits, 16)
        if 0xD800 <= code <= 0xDFFF:
            self.fail("surrogate code points are not supported (texts are code points)", start)
        return code

    def char_class(self, start: int) -> CharSet:
        negated = self.peek() == "^"
        if negated:
            self.pos += 1
        if self.peek() == "]":
            self.fail("a class cannot start with ']' (ECMA-262 reads [] as an empty class): write \\]")
        ranges: list[tuple[int, int]] = []
        classes: list[str] = []
        while (ch := self.take()) != "]":
            low = self.class_item(ch, start)
            if self.peek() == "-" and self.peek(1) not in ("]", ""):
                dash = self.pos
                self.pos += 1
                high = self.class_item(self.take(), start)
                if isinstance(low, str) or isinstance(high, str) or high < low:
                    self.fail("bad character range", dash)
                ranges.append((low, high))
            elif isinstance(low, str):
                classes.append(low)
            else:
                ranges.append((low, low))
        return _char_set(ranges, classes, negated)

    def class_item(self, ch: str, start: int) -> int | str:
        if not ch:
            self.fail("unterminated character class", start)
        if ch == "[":
            self.fail("write \\[ for a '[' inside a class (nested classes and set operations are not supported)")
        return self.escape(self.pos - 1, in_class=True) if ch == "\\" else ord(ch)


# ---------------------------------------------------------------------------
# The NFA (Thompson's construction, built back to front so no fragment needs patching)

_CHAR, _SPLIT, _BEGIN, _END, _MATCH = range(5)


class _TooLarge(Exception):
    pass


class _Builder:
    def __init__(self) -> None:
        self.kinds: list[int] = []
        self.out: list[int] = []
        self.alt: list[int] = []
        self.set_of: list[int] = []  # a consuming state's character set, as an index into ``sets``
        self.sets: list[CharSet] = []
        self._numbers: dict[int, int] = {}  # id of a CharSet -> its index: the copies of a repeat share one

    def node(self, kind: int, out: int = -1, alt: int = -1, chars: CharSet = _NOTHING) -> int:
        if len(self.kinds) >= MAX_STATES:
            raise _TooLarge  # checked as states are made, so a huge expansion stops at the limit, not after
        number = self._numbers.get(id(chars))
        if number is None:
            number = self._numbers[id(chars)] = len(self.sets)
            self.sets.append(chars)
        self.kinds.append(kind)
        self.out.append(out)
        self.alt.append(alt)
        self.set_of.append(number)
        return len(self.kinds) - 1

    def emit(self, node: _Node, then: int) -> int:
        """The entry state of ``node`` followed by state ``then``."""
        if isinstance(node, _Chars):
            return self.node(_CHAR, then, chars=node.chars)
        if isinstance(node, _Anchor):
            return self.node(_END if node.end else _BEGIN, then)
        if isinstance(node, _Seq):
            for item in reversed(node.items):
                then = self.emit(item, then)
            return then
        if isinstance(node, _Alt):
            entries = [self.emit(option, then) for option in node.options]
            entry = entries.pop()
            for other in reversed(entries):
                entry = self.node(_SPLIT, other, entry)
            return entry
        return self.repeat(node, then)

    def repeat(self, node: _Repeat, then: int) -> int:
        tail = then
        if node.high is None:  # x*: a split that loops through x
            tail = self.node(_SPLIT, -1, then)
            self.out[tail] = self.emit(node.item, tail)
        else:  # the optional copies nest, (x(x(x)?)?)?, so leaving early is one step, not a chain
            for _ in range(node.high - node.low):
                tail = self.node(_SPLIT, self.emit(node.item, tail), then)
        for _ in range(node.low):  # each copy makes a state (see _emits_nothing), so this loop is bounded
            tail = self.emit(node.item, tail)
        return tail


# ---------------------------------------------------------------------------
# Matching: the NFA's state sets, met lazily, cached as a DFA

# The NFA states a set of states stands for: those that consume a character, and each ``$`` still waiting for
# the end of the text (the others are passed through at once).
_Reach = tuple[frozenset[int], frozenset[int]]
_MATCHES: _Reach = (frozenset({-1}), frozenset())  # a match is reached (compared by identity)
_NONE: frozenset[int] = frozenset()


class _State:
    """A state of the lazy DFA: a set of NFA states with the transitions found so far.

    ``final`` is True once a match is found, False when nothing can match any more, None otherwise.
    """

    __slots__ = ("at_end", "consumers", "ends", "final", "steps")

    def __init__(self, reach: _Reach, final: bool | None = None) -> None:
        self.consumers, self.ends = reach
        self.final = final
        self.steps: dict[str, _State] = {}
        self.at_end: bool | None = None  # whether the text may end here (computed once)


_MATCHED = _State((_NONE, _NONE), final=True)
_DEAD = _State((_NONE, _NONE), final=False)


class Pattern:
    """A compiled pattern; ``search(text)`` is ``re.search(pattern, text) is not None``, ``$`` aside (see above)."""

    def __init__(self, source: str) -> None:
        self.source = source
        root = _Parser(source).parse()
        builder = _Builder()
        try:
            self._start = builder.emit(root, builder.node(_MATCH))
        except _TooLarge:
            raise PatternError(0, f"the pattern needs more than {MAX_STATES} NFA states") from None
        self._kinds = tuple(builder.kinds)
        self._out = tuple(builder.out)
        self._alt = tuple(builder.alt)
        self._set_of = tuple(builder.set_of)
        self._sets = tuple(builder.sets)
        self.states = len(self._kinds)
        self._cache: dict[_Reach, _State] = {}
        self._follows: dict[int, _Reach] = {}
        self._cached = self._followed = 0
        self._lock = threading.Lock()
        # Where a match may begin after the first character (``^`` no longer holds there).
        self._seed = self._closure([self._start], at_begin=False, at_end=False)
        first = self._closure([self._start], at_begin=True, at_end=False)
        self._first = _MATCHED if first is _MATCHES else _State(first)
        # The empty text is the only one that ends where it begins (``^`` and ``$`` both hold there).
        self._matches_empty = first is _MATCHES or self._closure(list(first[1]), True, True) is _MATCHES

    def search(self, text: str) -> bool:
        """Whether the pattern matches somewhere in ``text``: one dictionary lookup per character once warm."""
        if not text:
            return self._matches_empty
        state = self._first
        budget = WORK_ALLOWANCE + WORK_PER_CHARACTER * len(text)
        for ch in text:
            if state.final is not None:
                return state.final
            following = state.steps.get(ch)
            if following is None:
                budget -= len(state.consumers) + 1
                if budget < 0:
                    raise TooCostly(len(text))
                with self._lock:  # threads share a compiled pattern: one at a time grows (or drops) its cache
                    following = self._step(state, ch)
            state = following
        if state.final is not None:
            return state.final
        if state.at_end is None:
            state.at_end = self._closure(list(state.ends), at_begin=False, at_end=True) is _MATCHES
        return state.at_end

    def _step(self, state: _State, ch: str) -> _State:
        """The state after ``ch``, from the NFA: at most one pass over the set's states."""
        set_of, sets, follows = self._set_of, self._sets, self._follows
        tested: dict[int, bool] = {}  # the copies a counted repeat makes share one set: test each set once
        consumers, ends = [self._seed[0]], [self._seed[1]]  # unanchored: a match may also start after ``ch``
        for index in state.consumers:
            number = set_of[index]
            hit = tested.get(number)
            if hit is None:
                hit = tested[number] = ch in sets[number]
            if hit:
                after = follows.get(index)
                if after is None:
                    after = self._follow(index)
                if after is _MATCHES:
                    return self._remember_step(state, ch, _MATCHED)
                consumers.append(after[0])
                ends.append(after[1])
        return self._remember_step(state, ch, self._intern((_NONE.union(*consumers), _NONE.union(*ends))))

    def _follow(self, index: int) -> _Reach:
        """Where consuming state ``index`` leads once it took its character (computed once, cached)."""
        after = self._closure([self._out[index]], at_begin=False, at_end=False)
        self._followed += len(after[0]) + len(after[1]) + 1
        if self._followed > _CACHE_BUDGET:  # kept apart from the DFA's states: they are worth more
            self._follows = {}
            self._followed = 0
        self._follows[index] = after
        return after

    def _intern(self, reach: _Reach) -> _State:
        if not reach[0] and not reach[1]:
            return _DEAD  # no match can start or continue
        found = self._cache.get(reach)
        if found is None:
            found = self._cache[reach] = _State(reach)
            self._remember(len(reach[0]) + len(reach[1]) + 1)
        return found

    def _remember_step(self, state: _State, ch: str, following: _State) -> _State:
        state.steps[ch] = following
        self._remember(1)
        return following

    def _remember(self, size: int) -> None:
        """Account for ``size`` more cached entries; past the budget, drop the cache (memory stays bounded)."""
        self._cached += size
        if self._cached > _CACHE_BUDGET:
            for state in self._cache.values():
                state.steps = {}
            self._first.steps = {}
            self._cache = {}
            self._cached = 0

    def _closure(self, starts: list[int], at_begin: bool, at_end: bool) -> _Reach:
        """What ``starts`` reach without consuming a character, or :data:`_MATCHES` if a match is among it."""
        kinds, out, alt = self._kinds, self._out, self._alt
        seen: set[int] = set()
        consumers: list[int] = []
        ends: list[int] = []
        stack = starts
        while stack:
            index = stack.pop()
            if index in seen:
                continue
            seen.add(index)
            kind = kinds[index]
            if kind == _SPLIT:
                stack.append(alt[index])
                stack.append(out[index])
            elif kind == _CHAR:
                consumers.append(index)
            elif kind == _MATCH:
                return _MATCHES
            elif kind == _BEGIN:
                if at_begin:
                    stack.append(out[index])
            elif at_end:
                stack.append(out[index])
            else:
                ends.append(index)  # a ``$`` waits for the end of the text
        return frozenset(consumers), frozenset(ends)


@functools.lru_cache(maxsize=_COMPILED)
def compile_pattern(source: str) -> Pattern:
    """``source`` compiled (cached: a payload check does not parse its schema's patterns again)."""
    return Pattern(source)

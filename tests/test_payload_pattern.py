r"""The payload-schema pattern matcher agrees with ``re.search`` on its whole subset, and refuses the rest.

The rule that differs on purpose: ``$`` is the end of the text only (ECMA-262's ``$``, ``re``'s ``\Z``), where
``re``'s ``$`` also matches before a final newline.  The oracle is therefore ``re.search`` of the same pattern
with every ``$`` anchor written ``\Z``; generated texts do contain newlines.
"""

from __future__ import annotations

import random
import re
import warnings
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from lash_store.core.registry import pattern as pattern_module
from lash_store.core.registry.pattern import (
    MAX_LENGTH,
    MAX_NESTING,
    MAX_STATES,
    Pattern,
    PatternError,
    TooCostly,
    compile_pattern,
)
from lash_store.testing.harness import in_thread

TEXT_ALPHABET = "ab1 _-.\né٣\t"
LITERALS = "ab1 _-.é{}[]()|*+?^$\\/"
SPECIAL = set("\\.^$*+?{}[]|()")
CLASS_SPECIAL = set("\\]^-[")


@dataclass(frozen=True)
class Rendered:
    """A generated pattern as the matcher reads it, and as ``re`` must read it to mean the same."""

    ours: str
    oracle: str
    atom: bool  # a single atom: a quantifier may follow it without a group


def _same(text: str, atom: bool = True) -> Rendered:
    return Rendered(text, text, atom)


def _literal(ch: str, form: int) -> str:
    if form == 1:
        return f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}"
    if form == 2:
        return f"\\u{ord(ch):04x}"
    return "\\" + ch if ch in SPECIAL else ch


def _class_char(ch: str) -> str:
    return "\\" + ch if ch in CLASS_SPECIAL else ch


literal_atoms = st.builds(lambda ch, form: _same(_literal(ch, form)), st.sampled_from(LITERALS), st.integers(0, 2))
escape_atoms = st.sampled_from(["\\d", "\\w", "\\s", "\\D", "\\W", "\\S", ".", "\\n", "\\t"]).map(_same)


@st.composite
def class_atoms(draw: st.DrawFn) -> Rendered:
    items = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.integers(0, 2))
        if kind == 0:
            items.append(_class_char(draw(st.sampled_from(LITERALS + "\n"))))
        elif kind == 1:
            low, high = sorted(draw(st.lists(st.sampled_from("-0159ABZaqzé"), min_size=2, max_size=2)))
            items.append(f"{_class_char(low)}-{_class_char(high)}")
        else:
            items.append(draw(st.sampled_from(["\\d", "\\w", "\\s", "\\D", "\\W", "\\S", "\\b"])))
    negated = "^" if draw(st.booleans()) else ""
    return _same(f"[{negated}{''.join(items)}]")


anchors = st.sampled_from([Rendered("^", "^", False), Rendered("$", "\\Z", False)])
leaves = st.one_of(literal_atoms, escape_atoms, class_atoms(), anchors, st.just(_same("(?:)")))


def _group(inner: Rendered, capturing: bool) -> Rendered:
    opening = "(" if capturing else "(?:"
    return Rendered(f"{opening}{inner.ours})", f"{opening}{inner.oracle})", True)


@st.composite
def quantified(draw: st.DrawFn, inner: st.SearchStrategy[Rendered]) -> Rendered:
    item = draw(inner)
    if not item.atom:
        item = _group(item, draw(st.booleans()))
    low = draw(st.integers(0, 3))
    high = low + draw(st.integers(0, 2))
    suffix = draw(st.sampled_from(["*", "+", "?", f"{{{low}}}", f"{{{low},}}", f"{{{low},{high}}}"]))
    lazy = "?" if draw(st.booleans()) else ""
    return Rendered(item.ours + suffix + lazy, item.oracle + suffix + lazy, False)


def _extend(inner: st.SearchStrategy[Rendered]) -> st.SearchStrategy[Rendered]:
    sequences = st.lists(inner, min_size=2, max_size=3).map(
        lambda parts: Rendered("".join(p.ours for p in parts), "".join(p.oracle for p in parts), False)
    )
    alternations = st.lists(inner, min_size=2, max_size=3).map(
        lambda parts: Rendered("|".join(p.ours for p in parts), "|".join(p.oracle for p in parts), False)
    )
    groups = st.builds(_group, inner, st.booleans())
    return st.one_of(sequences, alternations, groups, quantified(inner))


patterns = st.recursive(leaves, _extend, max_leaves=8)
texts = st.text(alphabet=TEXT_ALPHABET, max_size=12)


def _oracle(pattern: str, text: str) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return re.search(pattern, text) is not None


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(patterns, st.lists(texts, min_size=1, max_size=6))
@example(Rendered("(a+)+$", "(a+)+\\Z", False), ["aaaa!", "aaaa", "aaaa\n"])
@example(Rendered("^$", "^\\Z", False), ["", "\n"])
@example(Rendered("(^)*a|$^", "(^)*a|\\Z^", False), ["ba", "", "b"])
def test_the_matcher_agrees_with_re_search(pattern: Rendered, texts: list[str]) -> None:
    compiled = compile_pattern(pattern.ours)
    for text in texts:
        assert compiled.search(text) == _oracle(pattern.oracle, text), (pattern, text)


RAW_ALPHABET = "ab()|*+?{},0123[]^$.\\-dwsDWSbx:=!<>P"


@settings(max_examples=3000, deadline=None)
@given(st.text(alphabet=RAW_ALPHABET, max_size=10), st.lists(st.text(alphabet="ab01 -_", max_size=8), max_size=4))
def test_whatever_the_matcher_accepts_re_accepts_and_agrees_on(pattern: str, texts: list[str]) -> None:
    """Random pattern text: the matcher refuses or means what ``re`` means (texts without a newline: ``$`` agrees)."""
    try:
        compiled = compile_pattern(pattern)
    except PatternError:
        return
    for text in texts:
        assert compiled.search(text) == _oracle(pattern, text), (pattern, text)


@pytest.mark.parametrize("escape", ["d", "w", "s", "D", "W", "S"])
def test_class_escapes_are_unicode_aware_as_in_re(escape: str) -> None:
    compiled = compile_pattern(f"^\\{escape}$")
    oracle = re.compile(f"^\\{escape}\\Z")
    codes = [*range(0, 0xD800), *range(0xE000, 0x10000), *range(0x10000, 0x110000, 97)]
    differ = [code for code in codes if compiled.search(chr(code)) != (oracle.search(chr(code)) is not None)]
    assert differ == []


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("(a)\\1", "backreferences"),
        ("\\0", "octal"),
        ("(?P<name>a)(?P=name)", "named groups"),
        ("(?P=name)", "backreferences"),
        ("\\k<name>", "backreferences"),
        ("a(?=b)", "lookahead"),
        ("a(?!b)", "lookahead"),
        ("(?<=a)b", "lookbehind"),
        ("(?<!a)b", "lookbehind"),
        ("(?<name>a)", "named groups"),
        ("(?>a+)", "atomic"),
        ("a++", "possessive"),
        ("a*+", "possessive"),
        ("a{1,2}+", "possessive"),
        ("(?i)a", "inline flags"),
        ("(?i:a)", "inline flags"),
        ("(?#note)a", "comments"),
        ("(a)?(?(1)b|c)", "conditionals"),
        ("\\bword\\b", "word boundaries"),
        ("\\Bx", "word boundaries"),
        ("\\Aabc\\Z", "anchors other than"),
        ("\\p{L}", "property"),
        ("\\cJ", "\\c"),
        ("\\a", "\\a"),
        ("\\U0001F600", "\\U"),
        ("\\N{BULLET}", "\\N"),
        ("\\x4", "hex digits"),
        ("\\ud83d\\ude00", "surrogate"),
        ("a{", "must be escaped"),
        ("a{,3}", "must be escaped"),
        ("a{1,x}", "must be escaped"),
        ("{1}", "must be escaped"),
        ("[]a]", "cannot start with ']'"),
        ("[^]a]", "cannot start with ']'"),
        ("[[:alpha:]]", "'['"),
        ("[a", "unterminated"),
        ("[z-a]", "bad character range"),
        ("[\\d-z]", "bad character range"),
        ("[a-\\w]", "bad character range"),
        ("a**", "multiple repeat"),
        ("a{2}{3}", "multiple repeat"),
        ("a???", "multiple repeat"),
        ("*a", "nothing to repeat"),
        ("a|?", "nothing to repeat"),
        ("^*", "nothing to repeat"),
        ("x$+", "nothing to repeat"),
        ("(a", "unterminated group"),
        ("a)", "unbalanced"),
        ("a\\", "backslash"),
        ("a{3,2}", "min repeat greater"),
        ("a{123456}", "above"),
        ("(a{100}){101}", f"more than {MAX_STATES}"),
        ("((a{10}){10}){101}", f"more than {MAX_STATES}"),
        ("(" * (MAX_NESTING + 1) + ")" * (MAX_NESTING + 1), "nest"),
        ("[" + "a" * MAX_LENGTH + "]", "longer than"),
    ],
)
def test_patterns_outside_the_subset_are_refused_with_a_reason(pattern: str, reason: str) -> None:
    with pytest.raises(PatternError) as caught:
        compile_pattern(pattern)
    assert reason in caught.value.reason
    assert 0 <= caught.value.position <= len(pattern)


@pytest.mark.parametrize(
    "pattern",
    [
        "(" * MAX_NESTING + "a" + ")" * MAX_NESTING,
        f"a{{{MAX_STATES - 2}}}",  # its states and the match state
        "[a-z]{1,64}@[a-z0-9.-]{1,253}\\.[a-z]{2,63}",
        "(?:){99999}",
        "(a{0}){99999}",
        "\\{\\}\\[\\]\\(\\)\\|\\*\\+\\?\\.\\^\\$\\\\\\/\\-",
        "[\\]\\[\\\\^-]",
    ],
)
def test_patterns_at_the_limits_are_accepted(pattern: str) -> None:
    assert compile_pattern(pattern).states <= MAX_STATES


def test_threads_sharing_a_pattern_whose_cache_overflows_get_the_same_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    """A DFA of 2**9 states against a tiny cache budget: it is dropped again and again, under 8 threads."""
    monkeypatch.setattr(pattern_module, "_CACHE_BUDGET", 100)
    compiled = Pattern("(a|b)*a(a|b){8}$")
    oracle = re.compile("(a|b)*a(a|b){8}\\Z")

    def disagreements(seed: int) -> list[str]:
        rng = random.Random(seed)
        texts = ["".join(rng.choice("ab") for _ in range(rng.randint(0, 40))) for _ in range(300)]
        return [text for text in texts if compiled.search(text) != (oracle.search(text) is not None)]

    joins = [in_thread(lambda seed=seed: disagreements(seed)) for seed in range(8)]
    assert [join(60) for join in joins] == [[]] * 8


@pytest.mark.parametrize(
    ("pattern", "text", "matches"),
    [
        ("(a+)+$", "a" * 5_000 + "!", False),
        ("(a|aa)*c", "a" * 5_000, False),
        ("^(\\w+\\s?)*$", "ab " * 2_000 + "!", False),
        ("(a|b)*a(a|b){12}$", "ab" * 2_000 + "a" * 13, True),
        ("(.*a){30}x", "a" * 5_000, False),
    ],
)
def test_a_search_makes_at_most_one_set_step_per_character(
    monkeypatch: pytest.MonkeyPatch, pattern: str, text: str, matches: bool
) -> None:
    """Counted, not timed: each character costs at most one step over at most ``states`` NFA states."""
    compiled = Pattern(pattern)
    steps: list[int] = []
    step = compiled._step

    def counted(state: object, ch: str) -> object:
        steps.append(len(state.consumers))  # type: ignore[attr-defined]
        return step(state, ch)  # type: ignore[arg-type]

    monkeypatch.setattr(compiled, "_step", counted)
    assert compiled.search(text) is matches  # (re.search would backtrack for ages on most of these)
    assert 0 < len(steps) <= len(text)
    assert all(size <= compiled.states for size in steps)


def test_a_search_that_would_exceed_its_work_budget_stops_with_too_costly() -> None:
    # State sets that never settle: about 2,000 NFA states visited per character of random a/b text.
    unsettled = Pattern("(a|b)*a.{2000}$")
    rng = random.Random(1)
    text = "".join(rng.choice("ab") for _ in range(100_000))
    with pytest.raises(TooCostly, match="100,000 characters"):
        unsettled.search(text)
    assert isinstance(TooCostly(1), PatternError)  # a payload check reports it like any unusable pattern
    settling = Pattern(r"(a|b)*a.{20}$")  # the same shape, small: it stays within its budget
    assert settling.search(text) == (text[-21] == "a")  # (re itself backtracks for minutes over this text)

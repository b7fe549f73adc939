"""The fast canonical encoder writes exactly ``json.dumps``'s bytes (every stored hash was taken over those).

``canonical_text`` and ``json_value_text`` write with ``msgspec`` where their walk met only exact
``str`` keys and ``str``/``int``/``bool``/``None`` leaves, and with ``json.dumps`` otherwise; these
differential tests compare both against ``json.dumps`` of the reference conversion over arbitrary values:
every code point (controls, U+2028/U+2029, DEL, non-BMP, lone surrogates), integers of any size, floats
of every magnitude, nesting, tuples, structs, enums and subclasses of the JSON types.
"""

from __future__ import annotations

import enum
import json
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lash_store.core import canonical
from lash_store.core.canonical import MAX_JSON_INT_BITS, canonical_text, json_value, json_value_text, plain
from lash_store.errors import InvalidInput


def reference(value: Any) -> str:
    """What every hash of the project was computed over (the module docstring's rule)."""
    return json.dumps(plain(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


class Text(str):
    pass


class Number(int):
    pass


class Colour(enum.Enum):
    RED = "red"
    BIG = 2**70


class Pair(msgspec.Struct, frozen=True):
    left: Any
    right: Any = None


SPECIAL = [
    "\u2028",
    "\u2029",
    "\x7f",
    "\x00",
    "\x1f",
    "\x08",
    "\x0c",
    "\ufeff",
    "\U0010ffff",
    "\ud7ff",
    "\ue000",
    '"',
    "\\",
]
# Every code point but lone surrogates (which json_value refuses; tested separately).
TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12) | st.sampled_from(SPECIAL)
INTS = st.integers() | st.integers(min_value=-(2**MAX_JSON_INT_BITS) + 1, max_value=2**MAX_JSON_INT_BITS - 1)
FLOATS = st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from([1e16, 1e-7, -0.0, 1e308, 5e-324, 0.1])
REGULAR = st.recursive(
    st.none() | st.booleans() | INTS | TEXT,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(TEXT, inner, max_size=5),
    max_leaves=30,
)
ANY = st.recursive(
    st.none()
    | st.booleans()
    | INTS
    | FLOATS
    | TEXT
    | TEXT.map(Text)
    | st.integers().map(Number)
    | st.sampled_from([Colour.RED, Colour.BIG]),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=4).map(tuple)
        | st.dictionaries(TEXT | TEXT.map(Text), inner, max_size=4)
        | st.builds(Pair, inner, inner | st.none())
    ),
    max_leaves=30,
)


@settings(max_examples=3000, deadline=None)
@given(REGULAR)
def test_msgspec_sorted_is_json_dumps_on_regular_values(value: Any) -> None:
    assert canonical._SORTED.encode(value).decode("utf-8") == dumps(value)


@settings(max_examples=3000, deadline=None)
@given(ANY)
def test_canonical_text_is_the_reference(value: Any) -> None:
    assert canonical_text(value) == reference(value)


@settings(max_examples=3000, deadline=None)
@given(ANY)
def test_json_value_text_is_json_value_and_its_reference_text(value: Any) -> None:
    try:
        expected = json_value("v", value)
    except InvalidInput:
        with pytest.raises(InvalidInput):
            json_value_text("v", value)
        return
    checked, text = json_value_text("v", value)
    assert checked == expected
    assert text == dumps(expected) == reference(value)


@pytest.mark.parametrize(
    "value",
    [
        "\ud800",  # a lone surrogate: json.dumps writes it, the UTF-8 encoding then refuses
        {"k\udfff": 1},
        [1.0, 1e16, 2.5e-8],
        {Text("b"): Number(3), "a": Colour.BIG},
        2**5000,  # past the bound json_value keeps, still written by json.dumps
    ],
)
def test_irregular_values_take_json_dumps(value: Any) -> None:
    assert canonical_text(value) == reference(value)


def test_a_concurrent_walk_can_only_slow_a_caller_down() -> None:
    # The count moved by someone else between the marks: the slow path, the same text.
    mark = next(canonical._IRREGULAR)
    next(canonical._IRREGULAR)
    assert canonical._encoded({"b": 1, "a": [2]}, mark) == '{"a":[2],"b":1}'


# ---------------------------------------------------------------------------
# Texts built from parts (each part encoded once) are the canonical text of the whole


def test_constants_are_copied_as_a_walk_would_convert_them() -> None:
    import lash_store.core.registry.registration  # noqa: F401  (registers the core event types)
    from lash_store.processes import CORE_EVENT_TYPES

    for core in CORE_EVENT_TYPES:
        assert id(core) in canonical._CONSTANTS
        converted = json_value("v", core)
        assert converted == json.loads(reference(core))
        assert converted == plain(core) and list(converted) == list(plain(core))  # field order, as a walk gives
        converted["name"] = "changed"  # a copy: the next conversion is unaffected
        assert json_value("v", core)["name"] == core.name


JSON_ANY = ANY.filter(lambda value: _accepted(value))


def _accepted(value: Any) -> bool:
    try:
        json_value("v", value)
    except InvalidInput:
        return False
    return True


@settings(max_examples=500, deadline=None)
@given(JSON_ANY, JSON_ANY, st.sampled_from(["", "f1", None]))
def test_a_registration_hash_is_the_hash_of_the_normalised_registration(
    process_input: Any, caused_by: Any, frame: str | None
) -> None:
    from lash_store.core.canonical import stable_hash
    from lash_store.core.registry.registration import normalise_registration
    from lash_store.processes import ProcessProvenance, ProcessRegistration, ProcessScope

    provenance = ProcessProvenance(owner_scope=ProcessScope(session_id="s", agent_frame_id=frame), caused_by=caused_by)
    normal = normalise_registration(ProcessRegistration.new("p", process_input).with_provenance(provenance))
    assert normal.hash == stable_hash(normal.registration)
    assert normal.input_json == canonical_text(normal.registration.input)
    assert normal.caused_by_json == (None if caused_by is None else canonical_text(caused_by))


@settings(max_examples=500, deadline=None)
@given(JSON_ANY, JSON_ANY, TEXT.filter(lambda text: bool(text.strip()) and "\x00" not in text))
def test_an_occurrence_request_hash_is_request_hash(payload: Any, source: Any, key: str) -> None:
    from lash_store.host_events import HostEventOccurrenceRequest, request_hash
    from lash_store.service.host_events.service import check_request

    request = HostEventOccurrenceRequest(
        source_type="t", source_key="k", idempotency_key=key, payload=payload, source=source
    )
    assert check_request(request)["request_hash"] == request_hash(request)


# ---------------------------------------------------------------------------
# A process start's envelope is encoded around its normalised registration's text (check_envelope)


class Name(str):
    pass


def _start_envelope(registration: Any, caused_by: Any = None) -> Any:
    from lash_store.effects import (
        ProcessCommand,
        ProcessStartGrant,
        RuntimeEffectCommand,
        RuntimeEffectEnvelope,
        RuntimeScope,
    )
    from lash_store.processes import ProcessHandleDescriptor, ProcessScope

    grant = ProcessStartGrant(owner_scope=ProcessScope(session_id="s"), descriptor=ProcessHandleDescriptor())
    command = RuntimeEffectCommand.process_command(ProcessCommand.start(registration, grant))
    return RuntimeEffectEnvelope.new(RuntimeScope(session_id="s"), "e", "k", command, caused_by=caused_by)


def _custom_type() -> Any:
    from lash_store.processes import ProcessEventType

    return ProcessEventType(name="custom", payload_schema={"type": "object"})


EVENT_TYPES = st.sampled_from(["core", "none", "custom first", "core then custom", "half the core", "tuple"])
IDS = st.sampled_from(["p", "process:x", Name("p")])


@settings(max_examples=500, deadline=None)
@given(JSON_ANY, JSON_ANY, JSON_ANY, st.sampled_from(["", "f1", None]), EVENT_TYPES, IDS)
def test_a_start_envelope_hash_is_the_hash_of_the_envelope(
    process_input: Any, caused_by: Any, envelope_caused_by: Any, frame: str | None, kinds: str, process_id: str
) -> None:
    """Whatever the registration (already normal or not, exact types or subclasses), the digest is H(envelope)."""
    from lash_store.core.canonical import stable_hash
    from lash_store.processes import CORE_EVENT_TYPES, ProcessProvenance, ProcessRegistration, ProcessScope
    from lash_store.service.effects.service import check_envelope

    event_types: Any = {
        "core": list(CORE_EVENT_TYPES),
        "none": [],
        "custom first": [_custom_type()],
        "core then custom": [*CORE_EVENT_TYPES, _custom_type()],
        "half the core": list(CORE_EVENT_TYPES[:2]),
        "tuple": tuple(CORE_EVENT_TYPES),
    }[kinds]
    provenance = ProcessProvenance(owner_scope=ProcessScope(session_id="s", agent_frame_id=frame), caused_by=caused_by)
    registration = ProcessRegistration(
        id=process_id, input=process_input, event_types=event_types, provenance=provenance
    )
    envelope = _start_envelope(registration, envelope_caused_by)
    checked = check_envelope(envelope)
    assert checked.digest == stable_hash(envelope)
    assert checked.registration is not None
    assert checked.registration.as_given == (kinds in ("core", "tuple") and type(process_id) is str)


def test_a_start_envelope_near_the_depth_limit_is_refused_as_a_whole_walk_would() -> None:
    """The spliced text's nesting counts: an input deep enough for a registration but too deep inside an
    envelope is refused, exactly as before; one just within both is accepted with the same digest."""
    from lash_store.core.canonical import MAX_JSON_DEPTH, stable_hash
    from lash_store.errors import InvalidEffectInput
    from lash_store.processes import ProcessRegistration
    from lash_store.service.effects.service import check_envelope

    def nested(levels: int) -> Any:
        value: Any = 1
        for _ in range(levels):
            value = [value]
        return value

    accepted = refused = 0
    for levels in range(MAX_JSON_DEPTH - 12, MAX_JSON_DEPTH + 1):
        envelope = _start_envelope(ProcessRegistration.new("p", nested(levels)))
        try:
            expected = stable_hash(envelope) if _accepted(envelope) else None
        except (InvalidInput, ValueError, RecursionError):
            expected = None
        if expected is None:
            with pytest.raises(InvalidEffectInput):
                check_envelope(envelope)
            refused += 1
        else:
            assert check_envelope(envelope).digest == expected
            accepted += 1
    assert accepted and refused


def test_a_verbatim_text_is_refused_in_a_callers_values() -> None:
    """Only the library's own splice writes a stand-in's text; anywhere else it is not JSON."""
    from lash_store.core.canonical import Verbatim, spliced_text

    forged = {"amount": Verbatim('1,"admin":true')}
    with pytest.raises(InvalidInput):
        json_value("payload", forged)
    with pytest.raises(InvalidInput):
        json_value_text("payload", forged)
    with pytest.raises(TypeError):
        canonical_text(forged)
    stand_in = Verbatim("[1,2]")
    assert spliced_text({"a": stand_in, "b": 1.5}, stand_in) == '{"a":[1,2],"b":1.5}'  # the slow path too
    with pytest.raises(InvalidInput):  # another stand-in than the one named: a forged one
        spliced_text({"a": stand_in, "b": Verbatim("2")}, stand_in)
    assert json_value("after", {"a": 1}) == {"a": 1}  # the splice is over
    with pytest.raises(TypeError):
        canonical_text({"a": msgspec.Raw(b"1")})  # a raw text from outside is no JSON value either


def test_a_forged_stand_in_inside_a_start_envelope_is_refused() -> None:
    """A caller's ``caused_by`` holding a Verbatim is no JSON: the envelope is refused, spliced or not."""
    from lash_store.core.canonical import Verbatim
    from lash_store.errors import InvalidEffectInput
    from lash_store.processes import ProcessRegistration
    from lash_store.service.effects.service import check_envelope

    envelope = _start_envelope(ProcessRegistration.new("p", {}), caused_by={"x": Verbatim('1,"y":2')})
    with pytest.raises(InvalidEffectInput):
        check_envelope(envelope)

"""The record's byte form and its hash are a published format: pinned, not compared with themselves.

Every ledger ever written, every proof an auditor holds and every witness line depend on
these exact bytes and digests; a change to the encoder (key order, float form, spacing) or
to the leaf hash would silently orphan them, so the expected values here are literals
(the digest was checked with `printf '\\x00<bytes>' | sha256sum`, RFC 9162's leaf hash).
"""

from __future__ import annotations

import json

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from scheduler.events import EVENT_TYPES, Answered, Configured, Event, Offered, Quoted, Submitted, event_fields
from scheduler.ledger.merkle import leaf_hash
from scheduler.ledger.records import MalformedRecord, decode, encode

OFFER = Offered(
    at=12.5,
    job="train-1",
    attempt=2,
    holder="azure",
    mode="first-look",
    window_seconds=30.0,
    competing_price=2.95,
    competing_cloud="oci",
)
OFFER_BYTES = (
    b'{"at":12.5,"attempt":2,"competing_cloud":"oci","competing_price":2.95,"holder":"azure",'
    b'"job":"train-1","kind":"offered","mode":"first-look","prev":5,"seq":7,"window_seconds":30.0}'
)
DECLINE = Answered(
    at=13.0, job="train-1", attempt=2, holder="azure", answer="declined", reason="no-capacity", response_seconds=0.5
)


def test_record_bytes_are_canonical_json_of_seq_kind_and_every_field() -> None:
    assert encode(7, OFFER, prev=5) == OFFER_BYTES


def test_leaf_hash_of_a_record_is_pinned() -> None:
    assert leaf_hash(OFFER_BYTES).hex() == "15cf8dff1d21204a6a8ed600bee07aafddfaef271d4cc26b7bacbf3aaf85ee1a"
    assert leaf_hash(encode(8, DECLINE, prev=7)).hex() == "c17f73d39f8b467bb284ec875018e4e48c192df06c1c590640b2026243c5519e"


def test_a_record_reads_back_to_its_fields() -> None:
    rec = decode(OFFER_BYTES)
    assert rec == {**OFFER.to_record(), "kind": "offered", "seq": 7, "prev": 5}
    with pytest.raises(MalformedRecord, match="prev"):  # a job's record must name its previous one
        decode(OFFER_BYTES.replace(b'"prev":5,', b""))
    with pytest.raises(MalformedRecord):
        decode(OFFER_BYTES.replace(b'"attempt":2', b'"attempt":"2"'))


_JSON_SCALARS = (
    st.none() | st.booleans() | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12)
)
_JSON = st.recursive(
    _JSON_SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=20
)


@settings(max_examples=400, deadline=None)
@example(catalog={"del": "a\x7fb", "big": 10**30}, at=1.5)
@example(catalog={"unicode": "é\u2028"}, at=1.5)
@example(catalog={"tiny": 1e-7}, at=1.5)
@example(catalog={"huge": 1e16}, at=1e-5)
@given(catalog=st.dictionaries(st.text(max_size=8), _JSON, max_size=6), at=st.floats(allow_nan=False, allow_infinity=False))
def test_the_fast_encoder_writes_exactly_the_canonical_json_bytes(catalog: dict[str, object], at: float) -> None:
    """The leaf is written by msgspec where it can prove the bytes equal json.dumps' (the
    published form): any value, unicode and DEL in strings, floats with exponents, big ints."""
    ev = Configured(at=at, catalog=catalog, contract={"k": at})
    rec = {**ev.to_record(), "kind": "configured", "seq": 3}
    assert encode(3, ev) == json.dumps(rec, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_non_finite_number_is_still_refused(value: float) -> None:
    with pytest.raises(ValueError):
        encode(1, Configured(at=1.0, catalog={"x": value}, contract={}))


def test_enum_fields_and_str_subclasses_are_written_as_json_writes_them() -> None:
    from scheduler.pipeline.outcomes import Answer

    class Name(str):
        pass

    for ev in (Answered(at=2.0, job="j", attempt=1, holder="azure", answer=Answer.DECLINED, reason=None, response_seconds=0.25),
               Answered(at=2.0, job=Name("j"), attempt=1, holder="azure", answer="declined", reason=None, response_seconds=0.25)):
        rec = {**ev.to_record(), "kind": "answered", "seq": 4, "prev": 2}
        assert encode(4, ev, prev=2) == json.dumps(rec, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


_FLOATS = st.floats(allow_nan=False, allow_infinity=False)


def _ascii(max_size: int) -> st.SearchStrategy[str]:
    return st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7e), max_size=max_size)  # the fast path's strings


_EVENTS = st.one_of(
    st.builds(Quoted, at=_FLOATS, job=_ascii(max_size=6), attempt=st.integers(0, 9),
              quotes=st.lists(st.tuples(_ascii(max_size=4), _ascii(max_size=4), _FLOATS, _FLOATS), max_size=4).map(tuple),
              dropped=st.lists(st.tuples(_ascii(max_size=4), _ascii(max_size=8)), max_size=3).map(tuple)),
    st.builds(Offered, at=_FLOATS, job=_ascii(max_size=6), attempt=st.integers(0, 9), holder=st.just("azure"), mode=st.just("match"),
              window_seconds=_FLOATS, competing_price=st.none() | _FLOATS, competing_cloud=st.none() | _ascii(max_size=4)),
    st.builds(Submitted, at=_FLOATS, job=_ascii(max_size=6), cls=st.just("training"), gpus=st.integers(1, 64) | _FLOATS,
              gpu_type=st.just("H100"), priority=st.integers(0, 100), spec=st.dictionaries(_ascii(max_size=5), _JSON, max_size=4)),
)


@settings(max_examples=400, deadline=None)
@example(ev=Quoted(at=1.0, job="j", attempt=1, quotes=(("oci", "r", 1e20, 2.0),), dropped=()), prev=0)
@example(ev=Offered(at=1.0, job="j", attempt=1, holder="azure", mode="match", window_seconds=30.0, competing_price=1e-5,
                    competing_cloud="oci"), prev=None)
@given(ev=_EVENTS, prev=st.none() | st.integers(0, 10**6))
def test_every_event_shape_is_written_as_canonical_json(ev: Event, prev: int | None) -> None:
    """The per-field checks follow the event schema (a quote's two float columns, an optional
    price) and still look at a scalar that holds a float where an int is declared."""
    rec = {**ev.to_record(), "kind": ev.kind, "seq": 9, **({} if prev is None else {"prev": prev})}
    assert encode(9, ev, prev) == json.dumps(rec, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def _sample(hint: object) -> object:
    """A value of the declared type, with floats that json and msgspec write alike."""
    import types
    import typing

    if hint is float:
        return 2.5
    if hint is int:
        return 3
    if hint is bool:
        return True
    if hint is str:
        return "x"
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return _sample(next(a for a in args if a is not type(None)))
    if origin is tuple:
        return ()
    return {"b": [1, "z", None], "a": 0.25}  # dicts, Any: a nested value, keys out of order


@pytest.mark.parametrize("kind", sorted(EVENT_TYPES))
def test_each_event_type_is_written_as_canonical_json_with_and_without_prev(kind: str) -> None:
    """Every event type goes through the writer's per-type struct (``records._plan``), with and
    without ``prev``, and comes out as the published bytes (json.dumps of the record's dict)."""
    import typing

    cls = EVENT_TYPES[kind]
    hints = typing.get_type_hints(cls)
    ev = cls(**{name: _sample(hints[name]) for name in event_fields(cls)})  # type: ignore[arg-type]
    for prev in (None, 0, 41):
        rec = {**ev.to_record(), "kind": kind, "seq": 42, **({} if prev is None else {"prev": prev})}
        assert encode(42, ev, prev) == json.dumps(rec, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def test_an_event_type_with_its_own_record_is_written_from_that_record() -> None:
    class Renamed(Offered, frozen=True):
        def to_record(self) -> dict[str, object]:
            return {"at": self.at, "job": self.job.upper()}

    ev = Renamed(at=1.0, job="j", attempt=1, holder="azure", mode="match", window_seconds=30.0)
    assert encode(5, ev, 2) == b'{"at":1.0,"job":"J","kind":"offered","prev":2,"seq":5}'

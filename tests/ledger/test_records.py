"""The record's byte form and its hash are a published format: pinned, not compared with themselves.

Every ledger ever written, every proof an auditor holds and every witness line depend on
these exact bytes and digests; a change to the encoder (key order, float form, spacing) or
to the leaf hash would silently orphan them, so the expected values here are literals
(the digest was checked with `printf '\\x00<bytes>' | sha256sum`, RFC 9162's leaf hash).
"""

from __future__ import annotations

import pytest

from scheduler.events import Answered, Offered
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

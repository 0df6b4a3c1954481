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
    b'"job":"train-1","kind":"offered","mode":"first-look","seq":7,"window_seconds":30.0}'
)
DECLINE = Answered(
    at=13.0, job="train-1", attempt=2, holder="azure", answer="declined", reason="no-capacity", response_seconds=0.5
)


def test_record_bytes_are_canonical_json_of_seq_kind_and_every_field() -> None:
    assert encode(7, OFFER) == OFFER_BYTES


def test_leaf_hash_of_a_record_is_pinned() -> None:
    assert leaf_hash(OFFER_BYTES).hex() == "1bc7a71e1cc447f2c26383964abfba216e3ea7cb67672704920dec9e4271e6ee"
    assert leaf_hash(encode(8, DECLINE)).hex() == "f4ba53eebc25372559da3c6abef67291416587f64df442d55af390ef21f85813"


def test_a_record_reads_back_to_its_fields() -> None:
    rec = decode(OFFER_BYTES)
    assert rec == {**OFFER.to_record(), "kind": "offered", "seq": 7}
    with pytest.raises(MalformedRecord):
        decode(OFFER_BYTES.replace(b'"attempt":2', b'"attempt":"2"'))

"""RFC 9162 hashing, the compact range and both proofs against a from-the-definition MTH."""

from __future__ import annotations

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.ledger.merkle import EMPTY_ROOT, MerkleTree, leaf_hash, node_hash, root_of, verify_consistency, verify_inclusion


def mth(data: list[bytes]) -> bytes:
    """MTH straight from RFC 9162 section 2.1.1."""
    n = len(data)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + data[0]).digest()
    k = 1
    while k * 2 < n:
        k *= 2
    return hashlib.sha256(b"\x01" + mth(data[:k]) + mth(data[k:])).digest()


def test_hashes_are_domain_separated() -> None:
    assert leaf_hash(b"a") == hashlib.sha256(b"\x00a").digest()
    assert node_hash(b"l", b"r") == hashlib.sha256(b"\x01lr").digest()
    assert root_of([]) == EMPTY_ROOT


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 70), data=st.data())
def test_compact_range_and_proofs_agree_with_the_definition(n: int, data: st.DataObject) -> None:
    items = [i.to_bytes(2, "big") for i in range(n)]
    leaves = [leaf_hash(x) for x in items]
    assert root_of(leaves) == mth(items)
    tree = MerkleTree(leaves)
    size = data.draw(st.integers(1, n))
    root = mth(items[:size])
    index = data.draw(st.integers(0, size - 1))
    path = tree.inclusion_proof(index, size)
    assert verify_inclusion(index, size, leaves[index], path, root)
    assert size == 1 or not verify_inclusion(index, size, leaves[(index + 1) % size], path, root)
    first = data.draw(st.integers(1, size))
    proof = tree.consistency_proof(first, size)
    assert verify_consistency(first, size, mth(items[:first]), root, proof)
    if first < size:
        assert not verify_consistency(first, size, mth([*items[:first - 1], b"x"]), root, proof)
        assert not verify_consistency(first, size, mth(items[:first]), mth([*items[:size - 1], b"y"]), proof)

"""RFC 9162 Merkle tree hashing, a compact range for O(log n) appends, and proofs.

Hashing (RFC 9162 section 2.1.1): a leaf is SHA-256(0x00 || record bytes), an interior
node SHA-256(0x01 || left || right), and a tree of n > 1 leaves splits at the largest
power of two below n. The writer keeps only the roots of the perfect subtrees on the
right edge (a *compact range*), so a checkpoint at any size costs O(log n) hashes;
proofs are made from the leaf hashes and checked with the algorithms of sections
2.1.3.2 (inclusion) and 2.1.4.2 (consistency), which need no access to the log.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

_sha256 = hashlib.sha256
EMPTY_ROOT = _sha256(b"").digest()  # MTH({}) = HASH() (RFC 9162 section 2.1.1)


def leaf_hash(record: bytes) -> bytes:
    return _sha256(b"\x00" + record).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return _sha256(b"\x01" + left + right).digest()


def _largest_power_of_two_below(n: int) -> int:
    """k with k < n <= 2k (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


class CompactRange:
    """The right edge of a growing tree: one root per set bit of ``size``, largest first.

    ``append`` merges equal-sized subtrees like a binary counter (amortised one node hash
    per leaf); ``root`` folds the edge right to left, which is exactly MTH of the whole
    tree because every left subtree in RFC 9162's split is perfect.
    """

    __slots__ = ("_hashes", "_sizes", "size")

    def __init__(self) -> None:
        self.size = 0
        self._hashes: list[bytes] = []
        self._sizes: list[int] = []

    def append(self, leaf: bytes) -> None:
        """Add one *leaf hash* (not record bytes)."""
        hashes, sizes = self._hashes, self._sizes
        h, s = leaf, 1
        while sizes and sizes[-1] == s:
            h = _sha256(b"\x01" + hashes.pop() + h).digest()
            s += sizes.pop()
        hashes.append(h)
        sizes.append(s)
        self.size += 1

    def extend(self, leaves: Sequence[bytes]) -> None:
        """Add many *leaf hashes*: the same tree as ``append`` one by one, hashed level by level.

        Each step takes the largest perfect subtree that may start at ``size`` (aligned to
        its lowest set bit, and no larger than what is left), hashes it a level at a time in
        a tight loop, and merges its root into the edge: about one hash per leaf, with no
        Python call per leaf.
        """
        sha = _sha256
        hashes, sizes = self._hashes, self._sizes
        i, n = 0, len(leaves)
        while i < n:
            room = self.size & -self.size or n
            k = min(room, 1 << ((n - i).bit_length() - 1))
            level = leaves[i : i + k]
            while len(level) > 1:
                level = [sha(b"\x01" + a + b).digest() for a, b in zip(level[::2], level[1::2], strict=True)]
            h, s = level[0], k
            while sizes and sizes[-1] == s:
                h = sha(b"\x01" + hashes.pop() + h).digest()
                s += sizes.pop()
            hashes.append(h)
            sizes.append(s)
            self.size += k
            i += k

    def root(self) -> bytes:
        hashes = self._hashes
        if not hashes:
            return EMPTY_ROOT
        r = hashes[-1]
        for h in reversed(hashes[:-1]):
            r = _sha256(b"\x01" + h + r).digest()
        return r


def root_of(leaves: Iterable[bytes]) -> bytes:
    """MTH of a sequence of leaf hashes."""
    cr = CompactRange()
    for leaf in leaves:
        cr.append(leaf)
    return cr.root()


BULK = 256  # perfect subtrees up to this many leaves are hashed level by level (and only their root cached)


class MerkleTree:
    """All leaf hashes of a log, with perfect subtrees cached: proofs in O(log^2 n) hashes."""

    def __init__(self, leaves: Sequence[bytes]) -> None:
        self.leaves = list(leaves)
        self._perfect: dict[tuple[int, int], bytes] = {}

    def __len__(self) -> int:
        return len(self.leaves)

    def mth(self, lo: int, hi: int) -> bytes:
        """MTH(D[lo:hi])."""
        n = hi - lo
        if n == 0:
            return EMPTY_ROOT
        if n == 1:
            return self.leaves[lo]
        perfect = n & (n - 1) == 0
        if perfect:
            cached = self._perfect.get((lo, n))
            if cached is not None:
                return cached
            if n <= BULK:  # a small perfect subtree: level by level in a tight loop, not a call per node
                sha = _sha256
                level = self.leaves[lo:hi]
                while len(level) > 1:
                    level = [sha(b"\x01" + a + b).digest() for a, b in zip(level[::2], level[1::2], strict=True)]
                self._perfect[(lo, n)] = level[0]
                return level[0]
        k = _largest_power_of_two_below(n)
        h = node_hash(self.mth(lo, lo + k), self.mth(lo + k, hi))
        if perfect:
            self._perfect[(lo, n)] = h
        return h

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """PATH(index, D[0:size]) (RFC 9162 section 2.1.3.1)."""
        if not 0 <= index < size <= len(self.leaves):
            raise ValueError(f"no leaf {index} in a tree of {size}")
        path: list[bytes] = []
        lo, hi, m = 0, size, index
        while hi - lo > 1:
            k = _largest_power_of_two_below(hi - lo)
            if m < k:
                path.append(self.mth(lo + k, hi))
                hi = lo + k
            else:
                path.append(self.mth(lo, lo + k))
                lo, m = lo + k, m - k
        path.reverse()
        return path

    def consistency_proof(self, first: int, second: int) -> list[bytes]:
        """PROOF(first, D[0:second]) (RFC 9162 section 2.1.4.1)."""
        if not 0 < first <= second <= len(self.leaves):
            raise ValueError(f"no consistency proof from {first} to {second}")
        path: list[bytes] = []
        lo, hi, m, whole = 0, second, first, True
        while m != hi - lo:
            k = _largest_power_of_two_below(hi - lo)
            if m <= k:
                path.append(self.mth(lo + k, hi))
                hi = lo + k
            else:
                path.append(self.mth(lo, lo + k))
                lo, m, whole = lo + k, m - k, False
        if not whole:
            path.append(self.mth(lo, hi))
        path.reverse()
        return path


def root_from_inclusion(index: int, size: int, leaf: bytes, path: Sequence[bytes]) -> bytes | None:
    """RFC 9162 section 2.1.3.2: the root implied by an audit path, or None if malformed."""
    if not 0 <= index < size:
        return None
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return r if sn == 0 else None


def verify_inclusion(index: int, size: int, leaf: bytes, path: Sequence[bytes], root: bytes) -> bool:
    return root_from_inclusion(index, size, leaf, path) == root


def verify_consistency(first: int, second: int, first_root: bytes, second_root: bytes, path: Sequence[bytes]) -> bool:
    """RFC 9162 section 2.1.4.2: is the tree of ``first`` leaves a prefix of the one of ``second``?"""
    if first == second:
        return not path and first_root == second_root
    if not 0 < first < second or not path:
        return False
    proof = list(path)
    if first & (first - 1) == 0:
        proof.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == first_root and sr == second_root

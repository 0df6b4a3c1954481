"""``audit verify``: integrity (Merkle tree, signed checkpoints, witness) and the contract.

One streaming pass over the records (a 1M-record ledger never sits in memory as objects):
each record is hashed into a compact range whose root must equal every signed checkpoint
on the way, then decoded strictly and fed to the independent checker. Records since the
last verified checkpoint are held back (as bytes) until their checkpoint verifies, so a
tampered record is reported as tampering, not as the contract breach it may fake. Every
problem becomes one ``FAIL: record N: why`` line; nothing a file can contain raises.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from scheduler.errors import LedgerError
from scheduler.invariants import InvariantChecker
from scheduler.ledger.merkle import CompactRange, leaf_hash
from scheduler.ledger.records import KIND_OF, MalformedRecord, decode_record
from scheduler.ledger.signing import NO_PREV, Checkpoint, default_public_key_path, key_id, load_public_key, parse_checkpoint
from scheduler.ledger.witness import read_witness

HOLD_BACK = 65_536  # records checked before their checkpoint when an operation is huge (memory bound)
EXPECTED_COLUMNS = {b"records": ["seq", "leaf"], b"checkpoints": ["size", "body", "signature"]}


def connect_readonly(path: Path) -> sqlite3.Connection:
    """A read-only connection that hands back raw bytes (forged TEXT cells cannot crash a reader)."""
    if not path.is_file():
        raise LedgerError(f"{path}: no such ledger")
    try:
        conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise LedgerError(f"{path}: not a usable ledger ({exc})") from None
    conn.text_factory = bytes
    return conn


@dataclass(frozen=True)
class VerifyReport:
    """The verdict: ``ok``, or the first bad record (``seq``), why, and the rule for contract breaches."""

    records: int
    jobs: int = 0
    seq: int | None = None
    reason: str = ""
    rule: str = ""
    summary: str = ""

    @property
    def ok(self) -> bool:
        return self.seq is None

    def line(self) -> str:
        if self.seq == 0:
            return f"FAIL: {self.reason}"
        if self.seq is not None:
            return f"FAIL: record {self.seq}: {self.reason}"
        return f"OK: {self.summary}"


class _Fail(Exception):
    def __init__(self, seq: int, reason: str, rule: str = "") -> None:
        super().__init__(reason)
        self.seq, self.reason, self.rule = seq, reason, rule


def verify_ledger(
    path: Path,
    public_key: Ed25519PublicKey | Path | None = None,
    witness: Path | None = None,
    *,
    conn: sqlite3.Connection | None = None,
) -> VerifyReport:
    """Verify the ledger at ``path`` (or on ``conn``) against a public key and a witness log."""
    own = conn is None
    checker = InvariantChecker()
    count = [0]
    try:
        if isinstance(public_key, Ed25519PublicKey):
            pub = public_key
        else:
            key_path = public_key or default_public_key_path()
            if not key_path.exists():
                raise _Fail(0, f"no public key at {key_path} (pass --public-key)")
            pub = load_public_key(key_path)
        if conn is None:
            conn = connect_readonly(path)
        summary = _verify(conn, pub, witness, checker, count)
        return VerifyReport(count[0], len(checker.jobs), summary=summary)
    except _Fail as f:
        return VerifyReport(count[0], len(checker.jobs), seq=f.seq, reason=f.reason, rule=f.rule)
    except LedgerError as exc:
        return VerifyReport(count[0], len(checker.jobs), seq=0, reason=str(exc))
    except sqlite3.Error as exc:
        return VerifyReport(count[0], len(checker.jobs), seq=count[0] + 1, reason=f"unreadable ledger ({exc})")
    except Exception as exc:
        return VerifyReport(count[0], len(checker.jobs), seq=count[0] + 1, reason=f"unreadable ({type(exc).__name__}: {exc})")
    finally:
        if own and conn is not None:
            conn.close()


def _schema(conn: sqlite3.Connection) -> None:
    tables = {r[0]: r[1] for r in conn.execute("SELECT name, type FROM sqlite_master WHERE type IN ('table', 'view')")}
    if b"ledger" in tables and b"records" not in tables:
        raise _Fail(0, "a v1 ledger (unsigned hash chain): it proves nothing against whoever has the file")
    for table, columns in EXPECTED_COLUMNS.items():
        if tables.get(table) != b"table":
            raise _Fail(0, f"not an mcsched ledger (no {table.decode()} table)")
        found = [r[1].decode() if isinstance(r[1], bytes) else str(r[1]) for r in conn.execute(f"PRAGMA table_info({table.decode()})")]
        if found != columns:
            raise _Fail(0, f"{table.decode()} table has columns {found}, expected {columns} (no column may be left unsigned)")


def _checkpoints(conn: sqlite3.Connection, pub: Ed25519PublicKey) -> list[Checkpoint]:
    """Every checkpoint, chained by ``prev``; the last one's signature must verify."""
    expected_key = key_id(pub)
    out: list[Checkpoint] = []
    prev_digest = NO_PREV
    for size_col, body, sig in conn.execute("SELECT size, body, signature FROM checkpoints ORDER BY size"):
        at = size_col if type(size_col) is int and size_col > 0 else 0
        if type(body) is not bytes or type(sig) is not bytes:
            raise _Fail(at, "checkpoint body and signature must be bytes")
        try:
            cp = parse_checkpoint(body, sig)
        except ValueError as exc:
            raise _Fail(at, f"checkpoint unreadable ({exc})") from None
        if cp.size != size_col:
            raise _Fail(at, f"checkpoint row says size {size_col!r} but its signed body says {cp.size}")
        if cp.key != expected_key:
            raise _Fail(cp.size, f"checkpoint signed by another key (key id {cp.key}, expected {expected_key})")
        if out and cp.origin != out[0].origin:
            raise _Fail(cp.size, f"checkpoint of another ledger (origin {cp.origin}, expected {out[0].origin})")
        if out and cp.time < out[-1].time:
            raise _Fail(cp.size, "checkpoint time goes backwards")
        if cp.prev != prev_digest:
            raise _Fail(cp.size, "checkpoint does not chain to the previous checkpoint (a checkpoint was altered, removed or inserted)")
        prev_digest = cp.digest()
        out.append(cp)
    if not out:
        raise _Fail(1, "no signed checkpoint: the ledger is empty or unsigned")
    if not out[-1].valid(pub):
        raise _Fail(out[-1].size, "checkpoint signature does not verify with the public key (forged or re-signed)")
    return out


def _verify(
    conn: sqlite3.Connection, pub: Ed25519PublicKey, witness: Path | None, checker: InvariantChecker, count: list[int]
) -> str:
    _schema(conn)
    cps = _checkpoints(conn, pub)
    origin = cps[0].origin
    by_size = {cp.size: cp for cp in cps}
    witnessed: dict[int, list[tuple[int, Checkpoint]]] = {}
    top_known = 0
    if witness is not None:
        for entry in read_witness(witness, origin, by_size):
            if entry.checkpoint is None:
                raise _Fail(0, f"witness {witness}: {entry.problem}")
            if entry.known:  # the ledger's own checkpoint, checked with the chain
                top_known = max(top_known, entry.checkpoint.size)
                continue
            witnessed.setdefault(entry.checkpoint.size, []).append((entry.line, entry.checkpoint))
    tree = CompactRange()
    held: list[tuple[int, bytes]] = []
    feed = checker.feed_record
    expected = 1
    sizes_seen: dict[int, bytes] = {}
    last = cps[-1].size
    for seq, leaf in conn.execute("SELECT seq, leaf FROM records ORDER BY seq"):
        if type(seq) is not int or seq != expected:
            raise _Fail(expected, f"missing (the next stored record is numbered {seq!r}): a record was deleted or renumbered")
        if type(leaf) is not bytes:
            raise _Fail(seq, "record is not a byte string")
        if seq > last:
            raise _Fail(seq, f"not covered by any signed checkpoint (the last one covers {last} records): inserted or appended")
        tree.append(leaf_hash(leaf))
        count[0] = seq
        held.append((seq, leaf))
        cp = by_size.get(seq)
        root = tree.root() if cp is not None or seq in witnessed else b""
        if seq in witnessed:
            sizes_seen[seq] = root
        if cp is not None:
            if root != cp.root:
                first = held[0][0]
                where = f"records {first}..{seq}" if first != seq else f"record {seq}"
                raise _Fail(
                    first,
                    f"{where} do not match the signed checkpoint of size {seq} (altered, inserted, deleted or reordered)",
                )
            _check(held, feed)
            held.clear()
        elif len(held) >= HOLD_BACK:
            _check(held, feed)
            held.clear()
        expected += 1
    n = expected - 1
    if n < last:
        raise _Fail(n + 1, f"missing: the signed checkpoint covers {last} records, the ledger has {n} (truncated)")
    if held:  # pragma: no cover - every record up to `last` ends at a checkpoint
        _check(held, feed)
    for v in checker.finish(n):
        raise _Fail(v.seq, f"{v.rule}: {v.message}", v.rule)
    top = top_known
    for size, entries in sorted(witnessed.items()):
        for line, wcp in entries:
            mine = by_size.get(size)
            same = mine is not None and mine.body() == wcp.body() and mine.signature == wcp.signature
            if not same and not wcp.valid(pub):
                raise _Fail(0, f"witness {witness} line {line}: signature does not verify")
            if size > n:
                raise _Fail(n + 1, f"missing: the witness saw {size} records (line {line}), the ledger has {n} (truncated)")
            if sizes_seen.get(size) != wcp.root:
                raise _Fail(size, f"records 1..{size} differ from the checkpoint witnessed at line {line} (history rewritten)")
            top = max(top, size)
    root_hex = cps[-1].root.hex()
    seen = f"witnessed up to {top}" if top else "not witnessed"
    return (
        f"{n} records, Merkle root {root_hex[:16]}, {len(cps)} signed checkpoints (key {key_id(pub)}), {seen}; "
        f"contract holds for {len(checker.jobs)} jobs"
    )


def _check(held: list[tuple[int, bytes]], feed: Any) -> None:
    kind_of = KIND_OF
    for seq, leaf in held:
        try:
            rec = decode_record(leaf)
        except MalformedRecord as exc:
            raise _Fail(seq, f"malformed record: {exc}") from None
        if rec.seq != seq:
            raise _Fail(seq, f"record says it is number {rec.seq}")
        kind = kind_of[type(rec)]
        try:
            found = feed(seq, kind, rec)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError, ArithmeticError) as exc:
            raise _Fail(seq, f"malformed record: {kind} cannot be checked ({type(exc).__name__}: {exc})") from None
        if found:
            v = found[0]
            raise _Fail(seq, f"{v.rule}: {v.message}", v.rule)

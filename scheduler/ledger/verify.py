"""``audit verify``: integrity (Merkle tree, signed checkpoints, witness) and the contract.

One streaming pass over the records (a 1M-record ledger never sits in memory as objects),
in big ``fetchmany`` batches: each batch is leaf-hashed in one tight loop and added to a
compact range level by level (``CompactRange.extend``), cut at every size where a root is
needed (each signed checkpoint, each witnessed size), then decoded strictly (msgspec) and
fed to the independent checker. Records since the last verified checkpoint are held back
(as bytes) until their checkpoint verifies, so a tampered record is reported as
tampering, not as the contract breach it may fake. Records after the last checkpoint are
checked and reported as unsigned (or refused with ``require_signed``). Every problem
becomes one ``FAIL: record N: why`` line; nothing a file can contain raises.
"""

from __future__ import annotations

import hashlib
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from scheduler.errors import LedgerError
from scheduler.gcpause import no_gc
from scheduler.invariants import InvariantChecker
from scheduler.ledger.merkle import CompactRange
from scheduler.ledger.records import DECODER, KIND_OF
from scheduler.ledger.signing import NO_PREV, Checkpoint, default_public_key_path, key_id, load_public_key, parse_checkpoint
from scheduler.ledger.witness import read_witness

HOLD_BACK = 65_536  # records checked before their checkpoint when an operation is huge (memory bound)
BATCH = 4096  # records per fetchmany
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
    require_signed: bool = False,
) -> VerifyReport:
    """Verify the ledger at ``path`` (or on ``conn``) against a public key and a witness log.

    Records after the last signed checkpoint (a live writer within its checkpoint interval,
    or one that crashed) are checked and counted in the OK line as unsigned;
    ``require_signed`` makes any such record a failure instead.
    """
    own = conn is None
    checker = InvariantChecker()
    count = [0]
    # One pass allocates millions of short-lived objects next to a growing, acyclic state
    # (jobs, pools): full cyclic collections would walk that state again and again for
    # nothing (~20% of the time at 200k records, more at 1M). Paused for the pass only.
    try:
        with no_gc():
            if isinstance(public_key, Ed25519PublicKey):
                pub = public_key
            else:
                key_path = public_key or default_public_key_path()
                if not key_path.exists():
                    raise _Fail(0, f"no public key at {key_path} (pass --public-key)")
                pub = load_public_key(key_path)
            if conn is None:
                conn = connect_readonly(path)
            summary = _verify(conn, pub, witness, checker, count, require_signed)
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
    conn: sqlite3.Connection,
    pub: Ed25519PublicKey,
    witness: Path | None,
    checker: InvariantChecker,
    count: list[int],
    require_signed: bool = False,
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
    last = cps[-1].size
    # The sizes where the root is needed, in order: every checkpoint, every witnessed size.
    needs = sorted(by_size.keys() | witnessed.keys())
    j = 0
    sizes_seen: dict[int, bytes] = {}
    tree = CompactRange()
    sha = hashlib.sha256
    pending: list[bytes] = []  # read, hashed, not yet decoded and checked: they wait for their checkpoint
    checked = 0  # records decoded and checked so far
    n = 0  # records read so far
    cur = conn.execute("SELECT seq, leaf FROM records ORDER BY seq")
    while batch := cur.fetchmany(BATCH):
        m = len(batch)
        seqs = [r[0] for r in batch]
        if seqs != list(range(n + 1, n + m + 1)) or len(set(map(type, seqs))) != 1 or type(seqs[0]) is not int:
            for k, seq in enumerate(seqs, n + 1):
                if type(seq) is not int or seq != k:
                    raise _Fail(k, f"missing (the next stored record is numbered {seq!r}): a record was deleted or renumbered")
        leaves = [r[1] for r in batch]
        if len(set(map(type, leaves))) != 1 or type(leaves[0]) is not bytes:
            for k, leaf in enumerate(leaves, n + 1):
                if type(leaf) is not bytes:
                    raise _Fail(k, "record is not a byte string")
        hashes = [sha(b"\x00" + leaf).digest() for leaf in leaves]
        pos = 0
        while j < len(needs) and needs[j] <= n + m:
            size = needs[j]
            j += 1
            cut = size - n
            tree.extend(hashes[pos:cut])
            pending += leaves[pos:cut]
            pos = cut
            root = tree.root()
            if size in witnessed:
                sizes_seen[size] = root
            cp = by_size.get(size)
            if cp is not None:
                if root != cp.root:
                    first = checked + 1
                    where = f"records {first}..{size}" if first != size else f"record {size}"
                    raise _Fail(
                        first,
                        f"{where} do not match the signed checkpoint of size {size} (altered, inserted, deleted or reordered)",
                    )
                count[0] = size
                checked = _check(checked, pending, checker, last)
        if require_signed and n + m > last:  # every checkpoint up to here verified: what follows is unsigned
            raise _Fail(max(n, last) + 1, f"not covered by any signed checkpoint (the last one covers {last} records): inserted or appended")
        tree.extend(hashes[pos:])
        pending += leaves[pos:]
        n += m
        count[0] = n
        if len(pending) >= HOLD_BACK:  # a huge operation (or an unsigned tail): bounded memory
            checked = _check(checked, pending, checker, last)
    if n < last:
        raise _Fail(n + 1, f"missing: the signed checkpoint covers {last} records, the ledger has {n} (truncated)")
    if pending:  # the unsigned tail (records after the last checkpoint)
        checked = _check(checked, pending, checker, last)
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
    tail = ""
    if n > last:
        tail = (
            f"; {n - last} records after the last signed checkpoint (records {last + 1}..{n}) are not signed yet "
            "(a live writer signs within its checkpoint interval; a crashed one when reopened): checked, but not evidence"
        )
    return (
        f"{n} records, Merkle root {root_hex[:16]}, {len(cps)} signed checkpoints (key {key_id(pub)}), {seen}; "
        f"contract holds for {len(checker.jobs)} jobs{tail}"
    )


def _check(checked: int, pending: list[bytes], checker: InvariantChecker, last: int) -> int:
    """Decode and check ``pending`` (records ``checked + 1``...) in order; empties it and returns the new count."""
    decode = DECODER.decode
    kind_of = KIND_OF
    check = checker.check
    seq = checked
    kind = "record"
    for leaf in pending:
        seq += 1
        try:
            rec = decode(leaf)
            if rec.seq != seq:
                raise _Fail(seq, f"record says it is number {rec.seq}" + _unsigned(seq, last))
            kind = kind_of[type(rec)]
            v = check(seq, kind, rec)
        except msgspec.DecodeError as exc:
            raise _Fail(seq, f"malformed record: {exc}" + _unsigned(seq, last)) from None
        except (KeyError, TypeError, ValueError, AttributeError, IndexError, ArithmeticError) as exc:
            raise _Fail(seq, f"malformed record: {kind} cannot be checked ({type(exc).__name__}: {exc})" + _unsigned(seq, last)) from None
        if v is not None:
            raise _Fail(seq, f"{v.rule}: {v.message}" + _unsigned(seq, last), v.rule)
    pending.clear()
    return seq


def _unsigned(seq: int, last: int) -> str:
    return f" (after the last signed checkpoint, size {last}: unsigned)" if seq > last else ""

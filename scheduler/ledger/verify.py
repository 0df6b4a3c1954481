"""``audit verify``: integrity (Merkle tree, every signed checkpoint, operator actions, witness cosignatures) and the contract.

One streaming pass over the records (a 1M-record ledger never sits in memory as objects),
in big ``fetchmany`` batches: each batch is leaf-hashed in one tight loop and added to a
compact range level by level (``CompactRange.extend``), cut at every checkpoint size, then
decoded strictly (msgspec) and fed to the independent checker. Records since the last
verified checkpoint are held back (as bytes) until their checkpoint verifies, so a
tampered record is reported as tampering, not as the contract breach it may fake.

Every checkpoint must be signed by the trusted key under the trusted origin, each must be
consistent with the one before (its root is the tree of exactly the first ``size``
records, so consecutive checkpoints are consistent by construction), every operator
action must be signed and named by every later checkpoint, and the last checkpoint must
cover the whole ledger: records after it fail unless ``allow_unsigned_tail`` (a live
writer's last second). With a trust file, the last checkpoint needs ``quorum`` witness
cosignatures and the contracts and catalogs recorded must be the pinned ones. Every
problem becomes one ``FAIL: record N: why`` line; nothing a file can contain raises.
"""

from __future__ import annotations

import hashlib
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from scheduler.errors import LedgerError, LedgerInputError
from scheduler.invariants import InvariantChecker
from scheduler.ledger import note
from scheduler.ledger.actions import Action, ActionFormatError, parse_action
from scheduler.ledger.clauses import ClauseChecker, ClauseViolation
from scheduler.ledger.merkle import CompactRange
from scheduler.ledger.records import DECODER, JOB_KINDS, KIND_OF
from scheduler.ledger.signing import (
    Checkpoint,
    CheckpointFormatError,
    default_public_key_path,
    load_public_key,
    log_verifier,
    parse_checkpoint,
)
from scheduler.ledger.trust import Trust

HOLD_BACK = 65_536  # records checked before their checkpoint when an operation is huge (memory bound)
BATCH = 4096  # records per fetchmany
V3_COLUMNS = {
    b"records": ["seq", "leaf", "mac"],
    b"checkpoints": ["id", "size", "note"],
    b"actions": ["id", "note"],
    b"cosignatures": ["checkpoint", "line"],
}
V2_CHECKPOINT_COLUMNS = ["size", "body", "signature"]


def connect_readonly(path: Path) -> sqlite3.Connection:
    """A read-only connection that hands back raw bytes (forged TEXT cells cannot crash a reader)."""
    if not path.is_file():
        raise LedgerInputError(f"{path}: {'a directory, not a ledger' if path.is_dir() else 'no such ledger'}")
    try:
        conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise LedgerError(f"{path}: not a usable ledger ({exc})") from None
    conn.text_factory = bytes
    return conn


def _columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [r[1].decode() if isinstance(r[1], bytes) else str(r[1]) for r in conn.execute(f"PRAGMA table_info({table})")]


def ledger_tables(conn: sqlite3.Connection) -> str:
    """``empty`` (no tables), ``v3``, ``v2`` (the home-made checkpoint format) or ``other`` (not a ledger)."""
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")}
    if not tables:
        return "empty"
    if b"checkpoints" in tables and _columns(conn, "checkpoints") == V2_CHECKPOINT_COLUMNS:
        return "v2"
    if b"records" in tables and b"checkpoints" in tables:
        return "v3"
    return "other"


@dataclass(frozen=True)
class VerifyReport:
    """The verdict: ``ok``, or the first bad record (``seq``), why, and the rule for contract breaches."""

    records: int
    jobs: int = 0
    seq: int | None = None
    reason: str = ""
    rule: str = ""
    summary: str = ""
    adopted: tuple[str, ...] = field(default=())

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
    *,
    trust: Trust | None = None,
    conn: sqlite3.Connection | None = None,
    allow_unsigned_tail: bool = False,
) -> VerifyReport:
    """Verify the ledger at ``path`` (or on ``conn``) against a trust file, or a bare public key.

    With ``trust`` the origin, the key, the witnesses and the documents in force are the
    trust file's. With only ``public_key`` the origin is the ledger's own (reported as not
    pinned) and no cosignature is required.
    """
    own = conn is None
    checker = InvariantChecker()
    count = [0]
    try:
        if trust is None:
            if isinstance(public_key, Ed25519PublicKey):
                pub = public_key
            else:
                key_path = public_key or default_public_key_path()
                if not key_path.exists():
                    raise _Fail(0, f"no public key at {key_path} (pass --trust or --public-key)")
                pub = load_public_key(key_path)
        if conn is None:
            conn = connect_readonly(path)
        _schema(conn)
        if trust is None:
            row = conn.execute("SELECT note FROM checkpoints ORDER BY id LIMIT 1").fetchone()
            if row is None or type(row[0]) is not bytes:
                raise _Fail(1, "no signed checkpoint: the ledger is empty or unsigned")
            try:
                origin = parse_checkpoint(row[0]).origin
            except CheckpointFormatError as exc:
                raise _Fail(0, f"first checkpoint unreadable ({exc})") from None
            trust = Trust(log_verifier(origin, pub), source="")
        summary, adopted = _verify(conn, trust, checker, count, allow_unsigned_tail)
        return VerifyReport(count[0], len(checker.jobs), summary=summary, adopted=adopted)
    except _Fail as f:
        return VerifyReport(count[0], len(checker.jobs), seq=f.seq, reason=f.reason, rule=f.rule)
    except LedgerInputError:
        raise  # what was passed (a key, a path) is unusable: bad input, not bad evidence
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
    kind = ledger_tables(conn)
    if kind == "v2":
        raise _Fail(0, "a v2 ledger (home-made checkpoints, no record MACs): verify it with mcsched before v3")
    if kind != "v3":
        raise _Fail(0, "not an mcsched ledger (no records and checkpoints tables)")
    for table, columns in V3_COLUMNS.items():
        found = _columns(conn, table.decode())
        if found != columns:
            raise _Fail(0, f"{table.decode()} table has columns {found}, expected {columns}")


def _actions(conn: sqlite3.Connection, trust: Trust) -> dict[str, tuple[Action, bytes, list[note.Signature]]]:
    """Every operator action by digest (signatures are checked where a checkpoint first names it)."""
    acts: dict[str, tuple[Action, bytes, list[note.Signature]]] = {}
    for (signed,) in conn.execute("SELECT note FROM actions ORDER BY id"):
        if type(signed) is not bytes:
            raise _Fail(0, "an action note is not bytes")
        try:
            act, text, sigs = parse_action(signed)
        except (ActionFormatError, UnicodeDecodeError) as exc:
            raise _Fail(0, f"an operator action is unreadable ({exc})") from None
        if act.origin != trust.origin:
            raise _Fail(0, f"operator action ({act.describe()}) is for origin {act.origin!r}")
        acts[act.digest] = (act, text, sigs)
    return acts


def _checkpoints(conn: sqlite3.Connection, trust: Trust) -> tuple[list[tuple[int, Checkpoint]], list[Action]]:
    """Every checkpoint in signing order, each signed by the key in force for the trusted origin.

    The key in force starts as the trust file's; a ``rotate`` action, signed by the key in
    force and named by a checkpoint that key signed, hands over to the key it names.
    """
    acts = _actions(conn, trust)
    key = trust.log
    named: list[Action] = []
    out: list[tuple[int, Checkpoint]] = []
    roots: dict[int, bytes] = {}
    for cp_id, size_col, signed in conn.execute("SELECT id, size, note FROM checkpoints ORDER BY id"):
        at = size_col if type(size_col) is int and size_col > 0 else 0
        if type(signed) is not bytes:
            raise _Fail(at, "checkpoint note must be bytes")
        try:
            cp = parse_checkpoint(signed)
        except CheckpointFormatError as exc:
            raise _Fail(at, f"checkpoint unreadable ({exc})") from None
        if cp.size != size_col:
            raise _Fail(at, f"checkpoint row says size {size_col!r} but its signed note says {cp.size}")
        if cp.origin != trust.origin:
            raise _Fail(0, f"checkpoint of size {cp.size} is for origin {cp.origin!r}, the trusted log is {trust.origin!r} (a fork or another ledger)")
        if not cp.verified_by(key):
            raise _Fail(at, f"checkpoint of size {cp.size} is not signed by the trusted key {key.vkey()[:48]}... (forged, re-signed or re-keyed)")
        if out and cp.size < out[-1][1].size:
            raise _Fail(cp.size, f"checkpoint of size {cp.size} follows one of size {out[-1][1].size} (rolled back)")
        if cp.actions[: len(named)] != tuple(a.digest for a in named):
            raise _Fail(cp.size, f"checkpoint of size {cp.size} drops an operator action named by the checkpoint before it")
        if roots.setdefault(cp.size, cp.root) != cp.root:
            raise _Fail(cp.size, f"two checkpoints of size {cp.size} with different roots (a fork)")
        for digest in cp.actions[len(named) :]:
            found = acts.get(digest)
            if found is None:
                raise _Fail(0, f"checkpoint of size {cp.size} names an operator action the ledger does not hold")
            act, text, sigs = found
            if not any(note.valid(text, s, key) for s in sigs):
                raise _Fail(0, f"operator action ({act.describe()}) is not signed by the trusted key")
            named.append(act)
            if act.kind == "rotate":
                try:
                    key = note.parse_vkey(act.key)
                except note.NoteError as exc:
                    raise _Fail(0, f"key rotation at size {act.after}: {exc}") from None
                if key.name != trust.origin or key.alg != note.ALG_ED25519:
                    raise _Fail(0, f"key rotation at size {act.after} names a key for {key.name!r}, not the log's")
        out.append((int(cp_id), cp))
    if not out:
        raise _Fail(1, "no signed checkpoint: the ledger is empty or unsigned")
    if len(named) != len(acts):
        raise _Fail(0, f"the operator actions stored ({len(acts)}) are not those the last checkpoint names ({len(named)})")
    return out, named


def _cosigned(conn: sqlite3.Connection, trust: Trust, cp_id: int, cp: Checkpoint) -> int:
    """How many trusted witnesses validly cosigned checkpoint ``cp_id``; a bad line from a trusted witness fails."""
    text = cp.text()
    good: set[str] = set()
    for (line,) in conn.execute("SELECT line FROM cosignatures WHERE checkpoint = ?", (cp_id,)):
        try:
            sig = note.parse_signature_line(bytes(line).rstrip(b"\n"))
        except (note.NoteError, TypeError):
            raise _Fail(0, f"an unreadable cosignature for the checkpoint of size {cp.size}") from None
        for w in trust.witnesses:
            if note.matches(sig, w):
                if note.cosignature_time(text, sig, w) is None:
                    raise _Fail(0, f"witness {w.name}'s cosignature of the checkpoint of size {cp.size} does not verify")
                good.add(w.vkey())
    return len(good)


def _verify(conn: sqlite3.Connection, trust: Trust, checker: InvariantChecker, count: list[int], allow_unsigned_tail: bool) -> tuple[str, tuple[str, ...]]:
    cps, acts = _checkpoints(conn, trust)
    last_id, last_cp = cps[-1]
    last = last_cp.size
    roots = {cp.size: cp.root for _, cp in cps}
    needs = sorted(s for s in roots if s > 0)
    j = 0
    tree = CompactRange()
    sha = hashlib.sha256
    pending: list[bytes] = []  # read, hashed, not yet decoded and checked: they wait for their checkpoint
    checked = 0  # records decoded and checked so far
    n = 0  # records read so far
    pins = trust if trust.contracts is not None or trust.catalogs is not None else None
    clauses = ClauseChecker()  # spill ranking and prices, beside the invariant checker's rules
    chain: dict[str, int] = {}  # job -> seq of its last record: the next one must name it as ``prev``
    clock = [float("-inf")]  # the last record's time: time never runs backwards
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
            if tree.root() != roots[size]:
                first = checked + 1
                where = f"records {first}..{size}" if first != size else f"record {size}"
                raise _Fail(first, f"{where} do not match the signed checkpoint of size {size} (altered, inserted, deleted or reordered)")
            count[0] = size
            checked = _check(checked, pending, checker, last, chain, clock, pins, clauses)
        if not allow_unsigned_tail and n + m > last:  # every checkpoint up to here verified: what follows is unsigned
            total = n + m + sum(1 for _ in cur)
            raise _Fail(
                last + 1,
                f"{total - last} records after checkpoint {last} are not signed (records {last + 1}..{total}): "
                "appended without the key, or a writer that crashed and was not reopened (--allow-unsigned-tail to check them anyway)",
            )
        tree.extend(hashes[pos:])
        pending += leaves[pos:]
        n += m
        count[0] = n
        if len(pending) >= HOLD_BACK:  # a huge operation (or an unsigned tail): bounded memory
            checked = _check(checked, pending, checker, last, chain, clock, pins, clauses)
    if n < last:
        raise _Fail(n + 1, f"missing: the signed checkpoint covers {last} records, the ledger has {n} (truncated)")
    if pending:  # the unsigned tail (records after the last checkpoint)
        checked = _check(checked, pending, checker, last, chain, clock, pins, clauses)
    for v in checker.finish(n):
        raise _Fail(v.seq, f"{v.rule}: {v.message}", v.rule)
    witnessed = "no witness required"
    if trust.witnesses:
        got = _cosigned(conn, trust, last_id, last_cp)
        if got < trust.quorum:
            raise _Fail(0, f"the last checkpoint (size {last}) has {got} of the {trust.quorum} witness cosignatures the trust file requires")
        witnessed = f"cosigned by {got} of {len(trust.witnesses)} witnesses (quorum {trust.quorum})"
    adopted = tuple(a.describe() for a in acts)
    pinned = f"origin {trust.origin} pinned by {trust.source}" if trust.source else f"origin {trust.origin} NOT pinned (pass --trust)"
    docs = "" if not trust.source else ("; contracts and catalogs pinned" if pins is not None else "; contracts and catalogs NOT pinned")
    tail = ""
    if n > last:
        tail = f"; {n - last} records after the last checkpoint (records {last + 1}..{n}) are not signed: checked, but not evidence"
    acted = "; operator actions: " + "; ".join(adopted) if adopted else ""
    return (
        f"{n} records, Merkle root {last_cp.root.hex()[:16]}, {len(cps)} signed checkpoints, {pinned}, {witnessed}{docs}; "
        f"contract holds for {len(checker.jobs)} jobs{tail}{acted}"
    ), adopted




def _check(
    checked: int,
    pending: list[bytes],
    checker: InvariantChecker,
    last: int,
    chain: dict[str, int],
    clock: list[float],
    pins: Trust | None,
    clauses: ClauseChecker,
) -> int:
    """Decode and check ``pending`` (records ``checked + 1``...) in order; empties it and returns the new count."""
    decode = DECODER.decode
    kind_of = KIND_OF
    job_kinds = JOB_KINDS
    check = checker.check
    clause = clauses.check
    seq = checked
    kind = "record"
    for leaf in pending:
        seq += 1
        try:
            rec = decode(leaf)
            if rec.seq != seq:
                raise _Fail(seq, f"record says it is number {rec.seq}" + _unsigned(seq, last))
            kind = kind_of[type(rec)]
            if rec.at < clock[0]:
                raise _Fail(seq, f"time runs backwards ({rec.at} after {clock[0]})" + _unsigned(seq, last), "time-order")
            clock[0] = rec.at
            if kind in job_kinds:
                before = chain.get(rec.job, 0)
                if rec.prev != before:
                    raise _Fail(seq, f"names record {rec.prev} as {rec.job}'s previous record, but that is record {before}" + _unsigned(seq, last), "job-chain")
                chain[rec.job] = seq
            if pins is not None and kind in ("configured", "reconfigured"):
                why = pins.pinned("contract", rec.contract, rec.at)
                if why is None and kind == "configured":
                    why = pins.pinned("catalog", rec.catalog, rec.at)
                if why is not None:
                    raise _Fail(seq, f"trust: {why}", "trust")
            v = check(seq, kind, rec)
            if v is None:
                clause(kind, rec)
        except ClauseViolation as bad:
            raise _Fail(seq, f"{bad.rule}: {bad.message}" + _unsigned(seq, last), bad.rule) from None
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

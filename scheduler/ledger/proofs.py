"""One job's evidence in one file: its records, each with an RFC 9162 inclusion proof.

``prove`` takes the job's records (and the configuration records, which name the holder)
from the ledger, with audit paths against the latest signed checkpoint (records after it,
not yet signed, cannot be proven). ``check_proof``
needs only that file and the public key: it verifies the signature, recomputes the root
from every record's bytes and path, and re-reads the ROFR story (each placement attempt
answered by the holder before any spill), so any altered byte fails.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from scheduler.errors import LedgerError, LedgerInputError
from scheduler.ledger import note
from scheduler.ledger.actions import parse_action
from scheduler.ledger.clauses import ClauseChecker, ClauseViolation
from scheduler.ledger.merkle import MerkleTree, leaf_hash, verify_consistency, verify_inclusion
from scheduler.ledger.records import MalformedRecord, decode
from scheduler.ledger.signing import Checkpoint, CheckpointFormatError, parse_checkpoint
from scheduler.ledger.verify import connect_readonly

if TYPE_CHECKING:
    from scheduler.ledger.trust import Trust

FORMAT = "mcsched-proof/v2"
MAX_PROOF = 64 << 20  # bytes: a proof is a few records and paths; anything larger is refused unread
CONFIG_KINDS = ("configured", "reconfigured")


def prove(db: Path, job: str, since: int | None = None) -> dict[str, Any]:
    """The proof document for ``job`` (raises LedgerError if the job or a checkpoint is missing).

    With ``since`` (a size someone already holds a signed checkpoint for, e.g. a witness),
    it also carries an RFC 9162 consistency proof that the latest checkpoint extends it.
    """
    if since is not None and since < 1:
        raise LedgerInputError(f"--since {since}: a consistency proof starts from a checkpoint of size 1 or more (every log extends the empty one)")
    conn = connect_readonly(db)
    try:
        row = conn.execute("SELECT note FROM checkpoints ORDER BY id DESC LIMIT 1").fetchone()
        if row is None:
            raise LedgerError(f"{db}: no signed checkpoint")
        cp = parse_checkpoint(bytes(row[0]))
        actions = [parse_action(bytes(n))[0] for (n,) in conn.execute("SELECT note FROM actions ORDER BY id")]
        older = None
        if since is not None and since > cp.size:  # whoever holds that checkpoint holds more than the log now signs
            raise LedgerError(f"{db}: --since {since}: the latest signed checkpoint has size {cp.size}, smaller: the log does not extend a checkpoint of size {since}")
        if since is not None and since < cp.size:
            got = conn.execute("SELECT note FROM checkpoints WHERE size = ? ORDER BY id LIMIT 1", (since,)).fetchone()
            if got is None:
                raise LedgerError(f"{db}: no checkpoint of size {since}")
            older = parse_checkpoint(bytes(got[0]))
        leaves: list[bytes] = []
        picked: list[tuple[int, bytes]] = []
        for seq, leaf in conn.execute("SELECT seq, leaf FROM records WHERE seq <= ? ORDER BY seq", (cp.size,)):
            leaf = bytes(leaf)
            leaves.append(leaf_hash(leaf))
            if b'"job":"' + job.encode() + b'"' in leaf or (b'"kind":"configured"' in leaf or b'"kind":"reconfigured"' in leaf):
                rec = decode(leaf)
                if rec.get("job") == job or rec["kind"] in CONFIG_KINDS:
                    picked.append((int(seq), leaf))
    except sqlite3.Error as exc:
        raise LedgerError(f"{db}: not a usable ledger ({exc})") from None
    except (CheckpointFormatError, MalformedRecord, TypeError, ValueError) as exc:
        raise LedgerError(f"{db}: run `mcsched audit verify` first ({exc})") from None
    finally:
        conn.close()
    if not any(b'"kind":"submitted"' in leaf for _, leaf in picked):
        raise LedgerError(f"{db}: no job {job!r} in the ledger up to its latest signed checkpoint (size {cp.size})")
    tree = MerkleTree(leaves)
    doc: dict[str, Any] = {
        "format": FORMAT,
        "job": job,
        "checkpoint": _cp_doc(cp),
        "records": [
            {"seq": seq, "record": leaf.decode("utf-8"), "inclusion": [h.hex() for h in tree.inclusion_proof(seq - 1, cp.size)]}
            for seq, leaf in picked
        ],
    }
    rotations = [a.note.decode("utf-8") for a in actions if a.kind == "rotate" and a.digest in cp.actions]
    if rotations:  # the checker follows them from the key it pins, as verify does
        doc["rotations"] = rotations
    if older is not None:
        proof = tree.consistency_proof(older.size, cp.size)
        doc["consistency"] = {"from": _cp_doc(older), "proof": [h.hex() for h in proof]}
    return doc


def _cp_doc(cp: Checkpoint) -> str:
    """The signed note as text: a C2SP checkpoint any note verifier reads."""
    return cp.note.decode("utf-8")


def _read_cp(cp_doc: Any, what: str) -> Checkpoint:
    try:
        if not isinstance(cp_doc, str):
            raise ValueError("a checkpoint must be a signed note (a string)")
        return parse_checkpoint(cp_doc.encode("utf-8"))
    except (ValueError, UnicodeError) as exc:
        raise _ProofError(f"{what} unreadable ({exc})") from None


@dataclass(frozen=True)
class ProofResult:
    ok: bool
    line: str


def check_proof(doc: Any, log: note.Verifier, held: Checkpoint | None = None, pins: Trust | None = None) -> ProofResult:
    """Check a proof document with nothing but the log's verifier key (origin + public key, from the trust file).

    ``held``: a checkpoint the auditor already holds (not from the proof); the proof must
    then carry a consistency proof from exactly that checkpoint. ``pins``: the trust file,
    whose contracts and catalogs (when it pins them) the proof's configuration must be.
    """
    try:
        return ProofResult(True, "OK: " + _check(doc, log, held, pins))
    except _ProofError as exc:
        return ProofResult(False, f"FAIL: {exc}")


class _ProofError(Exception):
    pass


def _check(doc: Any, log: note.Verifier, held: Checkpoint | None, pins: Trust | None = None) -> str:
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise _ProofError(f"not an {FORMAT} document")
    job, cp_doc, items = doc.get("job"), doc.get("checkpoint"), doc.get("records")
    if not isinstance(job, str) or not isinstance(items, list) or not items:
        raise _ProofError("proof needs job, checkpoint and records")
    cp = _read_cp(cp_doc, "checkpoint")
    log = _follow_rotations(doc.get("rotations", []), log, cp)
    if cp.origin != log.name:
        raise _ProofError(f"checkpoint is for origin {cp.origin!r}, the trusted log is {log.name!r}")
    if not cp.verified_by(log):
        raise _ProofError(f"checkpoint signature does not verify with the trusted key ({log.vkey()[:40]}...)")
    if held is not None and "consistency" not in doc and held.size != cp.size:
        raise _ProofError(f"the proof carries no consistency proof from the checkpoint you hold (size {held.size})")
    if held is not None and "consistency" not in doc and held.root != cp.root:
        raise _ProofError(f"the proof's checkpoint of size {cp.size} differs from the one you hold (a fork)")
    extends = ""
    if "consistency" in doc:
        cons = doc["consistency"]
        if not isinstance(cons, dict) or not isinstance(cons.get("proof"), list) or not all(_is_hash(h) for h in cons["proof"]):
            raise _ProofError("consistency needs from and proof")
        old = _read_cp(cons.get("from"), "consistency checkpoint")
        if old.origin != cp.origin or not old.verified_by(log):
            raise _ProofError("consistency checkpoint is not signed by the trusted key for the same log")
        if held is not None and (old.size, old.root) != (held.size, held.root):
            raise _ProofError(f"the consistency proof starts from a checkpoint of size {old.size}, not the one you hold (size {held.size})")
        if not verify_consistency(old.size, cp.size, old.root, cp.root, [bytes.fromhex(h) for h in cons["proof"]]):
            raise _ProofError(f"the checkpoint of size {cp.size} does not extend the one of size {old.size} (history rewritten)")
        extends = f", which extends the checkpoint of size {old.size}"
    recs: list[dict[str, Any]] = []
    last = 0
    prev = 0  # the job's previous record in the proof: each of its records names it
    at = float("-inf")
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise _ProofError(f"records[{i}] is not an object")
        seq, text, path = item.get("seq"), item.get("record"), item.get("inclusion")
        if type(seq) is not int or not isinstance(text, str) or not isinstance(path, list) or not all(_is_hash(h) for h in path):
            raise _ProofError(f"records[{i}] needs seq, record and inclusion")
        if seq <= last:
            raise _ProofError(f"records[{i}]: records out of order")
        last = seq
        try:
            leaf = text.encode("utf-8")
            hashes = [bytes.fromhex(h) for h in path]
            rec = decode(leaf)
        except (ValueError, UnicodeError) as exc:
            raise _ProofError(f"record {seq}: unreadable ({exc})") from None
        if not verify_inclusion(seq - 1, cp.size, leaf_hash(leaf), hashes, cp.root):
            raise _ProofError(f"record {seq}: not included in the signed checkpoint of size {cp.size} (altered)")
        if rec["seq"] != seq or (rec.get("job") != job and rec["kind"] not in CONFIG_KINDS):
            raise _ProofError(f"record {seq}: is not a record of {job}")
        if rec.get("job") == job:
            if rec["prev"] != prev:
                raise _ProofError(f"record {seq}: follows {job}'s record {rec['prev']}, which the proof leaves out (it holds {prev or 'none'} before it)")
            prev = seq
        if rec["at"] < at:
            raise _ProofError(f"record {seq}: time runs backwards ({rec['at']} after {at})")
        at = rec["at"]
        recs.append(rec)
    story = _story(job, recs)  # the ROFR order and the pins first: a breach of them is named as such
    _clauses(recs, pins)
    return f"{job}: {len(recs)} records included in the checkpoint of size {cp.size} (origin {cp.origin}){extends}; " + story


def _clauses(recs: list[dict[str, Any]], pins: Trust | None) -> None:
    """The configuration pinned by the trust file, and the contract's clauses (``clauses.py``) for this job's attempts."""
    checker = ClauseChecker()
    for rec in recs:
        kind = rec["kind"]
        if pins is not None and kind in CONFIG_KINDS:
            why = pins.pinned("contract", rec.get("contract"), rec["at"])
            if why is None and kind == "configured":
                why = pins.pinned("catalog", rec.get("catalog"), rec["at"])
            if why is not None:
                raise _ProofError(f"record {rec['seq']}: trust: {why}")
        try:
            checker.check(kind, SimpleNamespace(**rec))
        except ClauseViolation as v:
            raise _ProofError(f"record {rec['seq']}: {v.rule}: {v.message}") from None
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise _ProofError(f"record {rec['seq']}: {kind} cannot be checked ({type(exc).__name__}: {exc})") from None


def _story(job: str, recs: list[dict[str, Any]]) -> str:
    """The ROFR story the records tell; every placement must follow the holder's answer in its attempt."""
    holder = ""
    cls = ""
    pins: dict[str, list[str]] = {}
    answers: dict[int, tuple[str, str, str]] = {}
    offered: set[int] = set()
    steps: list[str] = []
    submitted = False
    for rec in recs:
        kind = rec["kind"]
        if kind in CONFIG_KINDS:
            try:
                holder = rec["contract"]["spec"]["rofr"]["holder"]
                pins = {str(k): [str(c) for c in v] for k, v in (rec["contract"]["spec"].get("pins") or {}).items()}
            except (KeyError, TypeError, AttributeError):
                raise _ProofError(f"record {rec['seq']}: contract names no holder") from None
        elif kind == "submitted":
            submitted = True
            cls = rec["cls"]
        elif kind == "offered":
            if rec["holder"] != holder:
                raise _ProofError(f"record {rec['seq']}: offered to {rec['holder']}, but the holder is {holder}")
            offered.add(rec["attempt"])
        elif kind == "answered":
            if rec["holder"] != holder:
                raise _ProofError(f"record {rec['seq']}: answered by {rec['holder']}, but the holder is {holder}")
            if rec["answer"] != "not-offered" and rec["attempt"] not in offered:
                raise _ProofError(f"record {rec['seq']}: answer without an offer in attempt {rec['attempt']}")
            answers[rec["attempt"]] = (rec["holder"], rec["answer"], rec["reason"])
        elif kind == "placed":
            ans = answers.get(rec["attempt"])
            if ans is None:
                raise _ProofError(f"record {rec['seq']}: placed on {rec['cloud']} without the holder's answer in attempt {rec['attempt']}")
            if rec["cloud"] != holder and ans[1] == "accepted":
                raise _ProofError(f"record {rec['seq']}: placed on {rec['cloud']} although {holder} accepted")
            allowed = pins.get(cls)
            if allowed is not None and rec["cloud"] not in allowed:
                raise _ProofError(f"record {rec['seq']}: a {cls} job placed on {rec['cloud']}, but the contract pins {cls} to {', '.join(allowed)}")
            first = "not offered to" if ans[1] == "not-offered" else "offered to"
            steps.append(
                f"attempt {rec['attempt']}: {first} {holder} first ({ans[1]} {ans[2]}), placed on {rec['cloud']}/{rec['region']} via {rec['via']}"
            )
        elif kind == "queued":
            ans = answers.get(rec["attempt"])
            if ans is None:
                raise _ProofError(f"record {rec['seq']}: queued without the holder's answer in attempt {rec['attempt']}")
            steps.append(f"attempt {rec['attempt']}: offered to {holder} first ({ans[1]} {ans[2]}), queued ({rec['reason']})")
        elif kind in ("released", "dequeued", "preempted"):
            steps.append(f"{kind} ({rec['reason']})")
    if not submitted:
        raise _ProofError(f"the proof holds no submitted record of {job}")
    return "; ".join(steps) if steps else "no decision yet"


def _follow_rotations(rotations: Any, log: note.Verifier, cp: Checkpoint) -> note.Verifier:
    """The key in force for ``cp``: the pinned key, handed over by each rotation it signed (and ``cp`` names)."""
    if not isinstance(rotations, list) or not all(isinstance(r, str) for r in rotations):
        raise _ProofError("rotations must be a list of signed notes")
    key = log
    for i, text in enumerate(rotations):
        try:
            act, body, sigs = parse_action(text.encode("utf-8"))
            if act.kind != "rotate":
                raise ValueError("not a key rotation")
            new = note.parse_vkey(act.key)
        except (ValueError, UnicodeError) as exc:
            raise _ProofError(f"rotations[{i}] unreadable ({exc})") from None
        if act.digest not in cp.actions:
            raise _ProofError(f"rotations[{i}] is not named by the checkpoint")
        if not any(note.valid(body, s, key) for s in sigs) or new.name != log.name or new.alg != note.ALG_ED25519:
            raise _ProofError(f"rotations[{i}] is not signed by the key in force ({key.vkey()[:40]}...)")
        key = new
    return key


def _is_hash(h: Any) -> bool:
    """Audit path entries in one form only (64 lower-case hex digits), so no byte is insignificant."""
    return isinstance(h, str) and len(h) == 64 and all(c in "0123456789abcdef" for c in h)


def load_proof(path: Path, limit: int = MAX_PROOF) -> Any:
    """The proof document, refused unread above ``limit`` bytes and without a traceback at any nesting depth."""
    try:
        size = path.stat().st_size
        if size > limit:
            raise LedgerError(f"{path}: {size} bytes, larger than any proof (limit {limit})")
        with path.open("rb") as fh:
            data = fh.read(limit + 1)
        if len(data) > limit:
            raise LedgerError(f"{path}: larger than any proof (limit {limit})")
        return json.loads(data)
    except OSError as exc:
        raise LedgerInputError(f"{path}: cannot read ({exc.strerror})") from None
    except RecursionError:
        raise LedgerError(f"{path}: not a proof (JSON nested too deep)") from None
    except (ValueError, UnicodeError) as exc:
        raise LedgerError(f"{path}: not a JSON proof ({exc})") from None

"""Ledgers written before v3 (``mcsched-ledger-checkpoint/v1`` checkpoints, no record MACs).

``migrate`` rewrites one into a new v3 ledger under a new origin: it checks the old
ledger's last signed checkpoint against the public key the operator names and against
the Merkle root of the records it covers, re-writes those records (now MAC'd, each naming
its job's previous record), and records the migration as an ``adopt`` action (which old
ledger, its origin, size, root and key, who, when, why), so ``audit verify`` lists it.
Records after the old ledger's last checkpoint were never signed and are left out (and
counted). The old file is only read.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import getpass
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from scheduler.errors import LedgerError
from scheduler.ledger.actions import Action
from scheduler.ledger.merkle import CompactRange, leaf_hash
from scheduler.ledger.records import to_event
from scheduler.ledger.signing import key_id
from scheduler.ledger.store import BATCH, Ledger
from scheduler.ledger.verify import V2_CHECKPOINT_COLUMNS, _columns, connect_readonly

V2_HEADER = "mcsched-ledger-checkpoint/v1"


@dataclass(frozen=True)
class V2Checkpoint:
    origin: str
    size: int
    root: bytes
    key: str


def _v2_checkpoint(body: bytes, signature: bytes, public: Ed25519PublicKey, where: Path) -> V2Checkpoint:
    lines = body.decode("ascii", errors="replace").split("\n")
    if len(lines) != 8 or lines[0] != V2_HEADER or not lines[2].isdigit():
        raise LedgerError(f"{where}: the last checkpoint is not a {V2_HEADER} body")
    try:
        root = base64.b64decode(lines[3], validate=True)
    except binascii.Error:
        raise LedgerError(f"{where}: the last checkpoint's root is not base64") from None
    try:
        public.verify(signature, body)
    except InvalidSignature:
        raise LedgerError(f"{where}: the last checkpoint is not signed by the given public key (key id {key_id(public)})") from None
    return V2Checkpoint(lines[1], int(lines[2]), root, lines[6][4:])


def migrate(old: Path, new: Path, public: Ed25519PublicKey, why: str, *, signing_key: Path | None = None, who: str | None = None) -> Action:
    """Write ``new`` (a v3 ledger that must not exist) from the signed prefix of the v2 ledger ``old``."""
    if not why.strip():
        raise LedgerError("migrate: --why must say why (it is recorded)")
    if new.exists():
        raise LedgerError(f"{new}: already exists; migrate writes a new ledger")
    conn = connect_readonly(old)
    try:
        try:
            if _columns(conn, "checkpoints") != V2_CHECKPOINT_COLUMNS:
                raise LedgerError(f"{old}: not a v2 ledger (no size/body/signature checkpoints)")
            row = conn.execute("SELECT body, signature FROM checkpoints ORDER BY size DESC LIMIT 1").fetchone()
            if row is None or type(row[0]) is not bytes or type(row[1]) is not bytes:
                raise LedgerError(f"{old}: no signed checkpoint to migrate from")
            cp = _v2_checkpoint(row[0], row[1], public, old)
            (total,) = conn.execute("SELECT COUNT(*) FROM records").fetchone()
            tree = CompactRange()
            events = []
            n = 0
            cur = conn.execute("SELECT seq, leaf FROM records WHERE seq <= ? ORDER BY seq", (cp.size,))
            while batch := cur.fetchmany(BATCH):
                for seq, leaf in batch:
                    n += 1
                    if seq != n or type(leaf) is not bytes:
                        raise LedgerError(f"{old}: record {n} is missing or not bytes")
                    tree.append(leaf_hash(leaf))
                    rec = json.loads(leaf)
                    if not isinstance(rec, dict) or rec.get("seq") != n:
                        raise LedgerError(f"{old}: record {n} is not numbered {n}")
                    events.append(to_event(rec))
        except sqlite3.DatabaseError as exc:
            raise LedgerError(f"{old}: not a usable ledger ({exc})") from None
        except (ValueError, TypeError, KeyError) as exc:
            raise LedgerError(f"{old}: record {n} cannot be read as an event ({type(exc).__name__}: {exc})") from None
    finally:
        conn.close()
    if n != cp.size or tree.root() != cp.root:
        raise LedgerError(f"{old}: records 1..{cp.size} do not match the signed checkpoint (root {cp.root.hex()[:16]}); nothing was migrated")
    ledger = Ledger(new, signing_key=signing_key, checkpoint_interval=3600.0)
    try:
        for start in range(0, len(events), BATCH):
            for ev in events[start : start + BATCH]:
                ledger(ev)
            ledger.flush()
        left_out = int(total) - cp.size
        note = (f"migrated from v2 ledger {old} (origin {cp.origin}, {cp.size} records, root {cp.root.hex()}, key id {cp.key}"
                f"{f'; {left_out} unsigned records after it left out' if left_out else ''}): {why}")
        when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return ledger.record_action(Action(ledger.origin, "adopt", 1, max(1, cp.size), 0, who or getpass.getuser(), when, note))
    finally:
        ledger.close()

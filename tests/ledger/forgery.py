"""How an attacker edits a ledger: raw SQL on the file, or a full re-hash (new leaves, new
Merkle tree, new checkpoints) signed with no key, their own key, or (an insider) the real one."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from scheduler.clock import ManualClock
from scheduler.engine import Engine
from scheduler.ledger import Ledger
from scheduler.ledger.merkle import CompactRange, leaf_hash
from scheduler.ledger.records import decode
from scheduler.ledger.signing import NO_PREV, Checkpoint, key_id, load_private_key, parse_checkpoint
from scheduler.ledger.store import SCHEMA
from scheduler.ledger.verify import VerifyReport, verify_ledger
from scheduler.specs import CloudCatalog, Contract
from tests.builders import a_contract, two_clouds

Records = list[dict[str, Any]]


CADENCES = ("per-operation", "deferred")


class World:
    """A ledger written by the real engine, one flush per operation, with its own key and witness.

    ``cadence``: ``"per-operation"`` signs every flush (``checkpoint_interval=0``);
    ``"deferred"`` is the default writer's maximum merge delay on a fake monotonic clock
    where each operation takes one second against a two-second interval, so a checkpoint
    covers every other operation and ``close()`` signs the rest.
    """

    def __init__(
        self, tmp: Path, catalog: CloudCatalog | None = None, contract: Contract | None = None, cadence: str = "per-operation"
    ) -> None:
        self.tmp = tmp
        self.db = tmp / "ledger.db"
        self.key = tmp / "ledger-signing.key"
        self.pub = tmp / "ledger-signing.pub"
        self.witness = tmp / "witness.jsonl"
        self.clock = ManualClock()
        self.mono = 0.0
        interval = 0.0 if cadence == "per-operation" else 2.0
        self.ledger = Ledger(
            self.db, signing_key=self.key, witness=self.witness, checkpoint_interval=interval, monotonic=lambda: self.mono
        )
        self.engine = Engine(catalog or two_clouds(), contract or a_contract(), self.clock)
        self.engine.subscribe(self.ledger)
        self.engine.announce()
        self.ledger.flush()

    def op(self, fn: Callable[[Engine], object]) -> None:
        fn(self.engine)
        self.mono += 1.0
        self.ledger.flush()

    def close(self) -> None:
        self.ledger.close()

    def verify(self, *, witness: bool = True, pub: Path | None = None) -> VerifyReport:
        return verify_ledger(self.db, pub or self.pub, self.witness if witness else None)

    def records(self) -> Records:
        conn = sqlite3.connect(self.db)
        out = [decode(bytes(leaf)) for (leaf,) in conn.execute("SELECT leaf FROM records ORDER BY seq")]
        conn.close()
        return out


def raw_sql(db: Path, sql: str, *args: object) -> None:
    """What anyone with the file can do: drop the append-only triggers and edit."""
    conn = sqlite3.connect(db)
    for trig in ("records_no_update", "records_no_delete", "checkpoints_no_update", "checkpoints_no_delete"):
        conn.execute(f"DROP TRIGGER IF EXISTS {trig}")
    conn.execute(sql, args)
    conn.commit()
    conn.close()


def canonical(rec: dict[str, Any]) -> bytes:
    import json

    return json.dumps(rec, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def rehash(
    world: World,
    mutate: Callable[[Records], Records],
    signer: str,
    *,
    raw: Callable[[bytes], bytes] | None = None,
) -> None:
    """Rewrite the whole ledger consistently: records renumbered, tree and checkpoints rebuilt.

    ``signer``: ``"none"`` (the attacker keeps the old signature bytes), ``"own"`` (signs
    with a key of their own), ``"real"`` (an insider with the real key).
    """
    conn = sqlite3.connect(world.db)
    old = conn.execute("SELECT body, signature FROM checkpoints ORDER BY size DESC LIMIT 1").fetchone()
    conn.close()
    last = parse_checkpoint(bytes(old[0]), bytes(old[1]))
    recs = mutate(world.records())
    leaves = []
    for i, rec in enumerate(recs, 1):
        rec = dict(rec)
        rec["seq"] = i
        leaf = canonical(rec)
        leaves.append(raw(leaf) if raw else leaf)
    tree = CompactRange()
    for leaf in leaves:
        tree.append(leaf_hash(leaf))
    key: Ed25519PrivateKey = load_private_key(world.key) if signer == "real" else Ed25519PrivateKey.generate()
    kid = key_id(key.public_key()) if signer != "none" else last.key
    cp = Checkpoint(last.origin, len(leaves), tree.root(), last.time, NO_PREV, kid)
    cp = cp.signed(key) if signer != "none" else Checkpoint(cp.origin, cp.size, cp.root, cp.time, cp.prev, cp.key, last.signature)
    conn = sqlite3.connect(world.db)
    conn.executescript("DROP TABLE records; DROP TABLE checkpoints;" + SCHEMA)
    conn.executemany("INSERT INTO records VALUES (?, ?)", list(enumerate(leaves, 1)))
    conn.execute("INSERT INTO checkpoints VALUES (?, ?, ?)", (cp.size, cp.body(), cp.signature))
    conn.commit()
    conn.close()

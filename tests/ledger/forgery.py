"""How an attacker edits a ledger: raw SQL on the file, or a full re-hash (new leaves, new
Merkle tree, new checkpoints) signed with no key, their own key, or (an insider) the real one.

``World`` writes a ledger with the real engine and pins it the way an auditor would: a
trust file (``Trust``) with the log's origin and public key, and optionally witnesses that
cosign its checkpoints in process (the same ``Witness`` the HTTP server runs).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from scheduler.clock import ManualClock
from scheduler.engine import Engine
from scheduler.ledger import Ledger, note
from scheduler.ledger.merkle import CompactRange, leaf_hash
from scheduler.ledger.records import decode
from scheduler.ledger.signing import Checkpoint, load_private_key, load_public_key, log_verifier, parse_checkpoint
from scheduler.ledger.store import SCHEMA
from scheduler.ledger.trust import Trust
from scheduler.ledger.verify import VerifyReport, verify_ledger
from scheduler.ledger.witness import Witness, WitnessRefusal, submit
from scheduler.specs import CloudCatalog, Contract
from tests.builders import a_contract, two_clouds

Records = list[dict[str, Any]]

ORIGIN = "test.example/ledger"
CADENCES = ("per-operation", "deferred")


def in_process(witnesses: dict[str, Witness]) -> Callable[[str, bytes, float], tuple[int, bytes]]:
    """A transport for ``witness.submit`` that calls the witnesses directly (``url`` names one)."""

    def post(url: str, body: bytes, _timeout: float) -> tuple[int, bytes]:
        try:
            return 200, witnesses[url].add_checkpoint(body)
        except WitnessRefusal as r:
            return r.status, (f"{r.size}\n" if r.size is not None else r.message).encode()

    return post


class World:
    """A ledger written by the real engine, one flush per operation, with its own key.

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
        self.clock = ManualClock()
        self.mono = 0.0
        interval = 0.0 if cadence == "per-operation" else 2.0
        self.ledger = Ledger(self.db, signing_key=self.key, origin=ORIGIN, checkpoint_interval=interval, monotonic=lambda: self.mono)
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

    def trust(self, pub: Path | None = None, witnesses: tuple[note.Verifier, ...] = (), quorum: int = 0, **pins: Any) -> Trust:
        return Trust(log_verifier(ORIGIN, load_public_key(pub or self.pub)), witnesses, quorum, source="trust.toml", **pins)

    def verify(self, *, pub: Path | None = None, trust: Trust | None = None, allow_unsigned_tail: bool = False) -> VerifyReport:
        return verify_ledger(self.db, trust=trust or self.trust(pub), allow_unsigned_tail=allow_unsigned_tail)

    def records(self) -> Records:
        conn = sqlite3.connect(self.db)
        out = [decode(bytes(leaf)) for (leaf,) in conn.execute("SELECT leaf FROM records ORDER BY seq")]
        conn.close()
        return out

    def cosign(self, witnesses: dict[str, Witness]) -> list[str]:
        return submit(self.db, list(witnesses), post=in_process(witnesses))


def a_witness(tmp: Path, name: str, clock: Callable[[], float] = lambda: 1_700_000_000.0) -> Witness:
    """A witness following ``ORIGIN`` under the key of the World in ``tmp``."""
    log = log_verifier(ORIGIN, load_public_key(tmp / "ledger-signing.pub"))
    return Witness(name, Ed25519PrivateKey.generate(), {ORIGIN: log}, tmp / f"{name.replace('/', '_')}.state", clock)


def raw_sql(db: Path, sql: str, *args: object) -> None:
    """What anyone with the file can do: drop the append-only triggers and edit."""
    conn = sqlite3.connect(db)
    for (trig,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
        conn.execute(f"DROP TRIGGER IF EXISTS {trig}")
    conn.execute(sql, args)
    conn.commit()
    conn.close()


def canonical(rec: dict[str, Any]) -> bytes:
    import json

    return json.dumps(rec, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def last_checkpoint(db: Path) -> Checkpoint:
    conn = sqlite3.connect(db)
    (signed,) = conn.execute("SELECT note FROM checkpoints ORDER BY id DESC LIMIT 1").fetchone()
    conn.close()
    return parse_checkpoint(bytes(signed))


def rehash(
    world: World,
    mutate: Callable[[Records], Records],
    signer: str,
    *,
    raw: Callable[[bytes], bytes] | None = None,
) -> None:
    """Rewrite the whole ledger consistently: records renumbered, tree and checkpoints rebuilt.

    ``signer``: ``"none"`` (the attacker keeps the old signature lines), ``"own"`` (signs
    with a key of their own, under the same origin), ``"real"`` (an insider with the real key).
    The record MACs are left as they were (nobody but the writer can make them).
    """
    last = last_checkpoint(world.db)
    recs = mutate(world.records())
    leaves = []
    chain: dict[str, int] = {}
    for i, rec in enumerate(recs, 1):
        rec = dict(rec)
        rec["seq"] = i
        if "prev" in rec and isinstance(rec.get("job"), str):  # a careful forger re-links each job's records
            rec["prev"] = chain.get(rec["job"], 0)
            chain[rec["job"]] = i
        leaf = canonical(rec)
        leaves.append(raw(leaf) if raw else leaf)
    tree = CompactRange()
    for leaf in leaves:
        tree.append(leaf_hash(leaf))
    cp = Checkpoint(last.origin, len(leaves), tree.root())
    if signer == "none":
        signed = cp.text() + b"\n" + b"".join(s.line() for s in last.signatures())
    else:
        key = load_private_key(world.key) if signer == "real" else Ed25519PrivateKey.generate()
        signed = cp.signed(key).note
    conn = sqlite3.connect(world.db)
    conn.executescript("DROP TABLE records; DROP TABLE checkpoints; DROP TABLE cosignatures;" + SCHEMA)
    conn.executemany("INSERT INTO records VALUES (?, ?, NULL)", list(enumerate(leaves, 1)))
    conn.execute("INSERT INTO checkpoints (size, note) VALUES (?, ?)", (cp.size, signed))
    conn.commit()
    conn.close()

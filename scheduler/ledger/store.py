"""The ledger's SQLite store: records as Merkle leaves, a signed checkpoint per operation.

It is both the proof of compliance and the scheduler's state store: replaying it rebuilds
the engine (``Engine.restore``) and ``verify`` re-checks every rule. Events are buffered
by the sink and written in one transaction per engine operation, together with the
checkpoint that signs the new tree, so a crash loses whole operations, never half of one.

Two tables and nothing a reader could trust unchecked: ``records(seq, leaf)`` where
``leaf`` is the canonical record (``records.encode``) and ``seq`` must equal its position
and the ``seq`` inside it; ``checkpoints(size, body, signature)`` where ``size`` must equal
the size inside the signed body.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from scheduler.errors import LedgerError
from scheduler.events import Configured, Event
from scheduler.ledger.merkle import CompactRange, leaf_hash
from scheduler.ledger.records import decode, encode, to_event
from scheduler.ledger.signing import (
    NO_PREV,
    Checkpoint,
    default_key_path,
    key_id,
    load_or_create_key,
    parse_checkpoint,
    public_path_for,
)
from scheduler.ledger.verify import VerifyReport, connect_readonly, verify_ledger
from scheduler.ledger.witness import Witness, default_witness_path

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY,
    leaf BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoints (
    size INTEGER PRIMARY KEY,
    body BLOB NOT NULL,
    signature BLOB NOT NULL
);
CREATE TRIGGER IF NOT EXISTS records_no_update BEFORE UPDATE ON records
BEGIN SELECT RAISE(ABORT, 'ledger is append-only'); END;
CREATE TRIGGER IF NOT EXISTS records_no_delete BEFORE DELETE ON records
BEGIN SELECT RAISE(ABORT, 'ledger is append-only'); END;
CREATE TRIGGER IF NOT EXISTS checkpoints_no_update BEFORE UPDATE ON checkpoints
BEGIN SELECT RAISE(ABORT, 'ledger is append-only'); END;
CREATE TRIGGER IF NOT EXISTS checkpoints_no_delete BEFORE DELETE ON checkpoints
BEGIN SELECT RAISE(ABORT, 'ledger is append-only'); END;
"""


class Ledger:
    """SQLite-backed event sink that signs a checkpoint per flush; also reads and verifies itself.

    ``signing_key`` defaults to ``$MCSCHED_SIGNING_KEY`` or ``$MCSCHED_HOME/ledger-signing.key``
    (created 0600 on first use), ``witness`` to ``$MCSCHED_WITNESS`` or
    ``$MCSCHED_HOME/witness.jsonl`` (``home`` replaces ``$MCSCHED_HOME``: the live scheduler
    keeps both in its state directory); ``on_checkpoint`` is called after each commit (metrics).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        readonly: bool = False,
        signing_key: str | Path | None = None,
        witness: str | Path | None = None,
        on_checkpoint: Callable[[Checkpoint], None] | None = None,
        home: str | Path | None = None,
    ) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self.on_checkpoint = on_checkpoint
        self.key_path = Path(signing_key) if signing_key is not None else default_key_path(home)
        self.witness_path = Path(witness) if witness is not None else default_witness_path(home)
        self._key: Ed25519PrivateKey | None = None
        self._key_id = ""
        self._witness: Witness | None = None
        self._buffer: list[Event] = []
        self._tree = CompactRange()
        self.checkpoint: Checkpoint | None = None
        if readonly:
            self.conn = connect_readonly(self.path)
        else:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.conn = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
                self.conn.text_factory = bytes
                tables = {r[0] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                if b"ledger" in tables and b"records" not in tables:
                    raise LedgerError(f"{self.path}: a v1 (unsigned, hash-chain) ledger; mcsched now writes signed v2 ledgers: use a new path")
                self.conn.execute("PRAGMA journal_mode=WAL")
                self.conn.execute("PRAGMA synchronous=NORMAL")
                self.conn.executescript(SCHEMA)
            except sqlite3.DatabaseError as exc:
                raise LedgerError(f"{self.path}: not a usable ledger ({exc})") from None
        self._load()

    def _load(self) -> None:
        """Rebuild the compact range and the last checkpoint (O(n) hashes, once per open)."""
        try:
            for (leaf,) in self.conn.execute("SELECT leaf FROM records ORDER BY seq"):
                self._tree.append(leaf_hash(bytes(leaf)))
            row = self.conn.execute("SELECT body, signature FROM checkpoints ORDER BY size DESC LIMIT 1").fetchone()
        except sqlite3.DatabaseError as exc:
            raise LedgerError(f"{self.path}: not a usable ledger ({exc})") from None
        except TypeError:
            raise LedgerError(f"{self.path}: not a usable ledger (a record is not bytes)") from None
        if row is not None:
            try:
                self.checkpoint = parse_checkpoint(bytes(row[0]), bytes(row[1]))
            except ValueError as exc:
                raise LedgerError(f"{self.path}: unreadable last checkpoint ({exc}); run `mcsched audit verify`") from None
        if not self.readonly and self._tree.size and (self.checkpoint is None or self.checkpoint.size != self._tree.size):
            raise LedgerError(f"{self.path}: records and checkpoints disagree; run `mcsched audit verify --db {self.path}`")

    # ------------------------------------------------------------------ writing

    def _signer(self) -> Ed25519PrivateKey:
        if self._key is None:
            self._key = load_or_create_key(self.key_path)
            self._key_id = key_id(self._key.public_key())
        return self._key

    def __call__(self, event: Event) -> None:
        self._buffer.append(event)

    def flush(self) -> int:
        """Write buffered events and a signed checkpoint in one transaction; returns how many were written."""
        if not self._buffer:
            return 0
        if self.readonly:
            raise LedgerError(f"{self.path}: opened read-only")
        key = self._signer()
        tree = self._tree
        start = tree.size
        rows = []
        for seq, event in enumerate(self._buffer, start + 1):
            leaf = encode(seq, event)
            tree.append(leaf_hash(leaf))
            rows.append((seq, leaf))
        prev = self.checkpoint
        cp = Checkpoint(
            origin=prev.origin if prev else uuid.uuid4().hex,
            size=tree.size,
            root=tree.root(),
            time=self._buffer[-1].at,
            prev=prev.digest() if prev else NO_PREV,
            key=self._key_id,
        ).signed(key)
        try:
            with self.conn:
                self.conn.execute("BEGIN IMMEDIATE")
                self.conn.executemany("INSERT INTO records VALUES (?, ?)", rows)
                self.conn.execute("INSERT INTO checkpoints VALUES (?, ?, ?)", (cp.size, cp.body(), cp.signature))
        except sqlite3.Error as exc:
            self._rollback(start)
            raise LedgerError(f"{self.path}: write failed ({exc})") from None
        self.checkpoint = cp
        if self._witness is None:
            self._witness = Witness(self.witness_path)
        self._witness.append(cp)
        if self.on_checkpoint is not None:
            self.on_checkpoint(cp)
        n = len(self._buffer)
        self._buffer.clear()
        return n

    def _rollback(self, size: int) -> None:
        """A failed commit: rebuild the compact range of the first ``size`` leaves."""
        self._tree = CompactRange()
        for (leaf,) in self.conn.execute("SELECT leaf FROM records WHERE seq <= ? ORDER BY seq", (size,)):
            self._tree.append(leaf_hash(bytes(leaf)))

    def discard(self) -> None:
        """Drop buffered events (an operation that failed validation wrote nothing)."""
        self._buffer.clear()

    def close(self) -> None:
        self.conn.close()
        if self._witness is not None:
            self._witness.close()
            self._witness = None

    @property
    def empty(self) -> bool:
        return self._tree.size == 0

    def __len__(self) -> int:
        return self._tree.size

    @property
    def root(self) -> bytes:
        return self._tree.root()

    # ------------------------------------------------------------------ reading

    def leaves(self) -> Iterator[tuple[int, bytes]]:
        """(seq, record bytes) in order, as stored."""
        for seq, leaf in self.conn.execute("SELECT seq, leaf FROM records ORDER BY seq"):
            yield seq, bytes(leaf)

    def records(self) -> Iterator[dict[str, object]]:
        """Decoded, type-checked records (seq, kind, at and the event's fields)."""
        for _seq, leaf in self.leaves():
            yield decode(leaf)

    def events(self) -> Iterator[Event]:
        for rec in self.records():
            yield to_event(rec)

    def last_configured(self) -> Configured | None:
        row = self.conn.execute(
            "SELECT leaf FROM records WHERE CAST(leaf AS TEXT) LIKE '%\"kind\":\"configured\"%' ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        if row is None:
            return None
        ev = to_event(decode(bytes(row[0])))
        return ev if isinstance(ev, Configured) else None

    def verify(self, public_key: str | Path | None = None, witness: str | Path | None = None) -> VerifyReport:
        """Everything ``mcsched audit verify`` checks, against this ledger's own key and witness by default."""
        if public_key is None and not self.readonly:
            pub = self._signer().public_key()
            return verify_ledger(self.path, pub, Path(witness) if witness is not None else self.witness_path, conn=self.conn)
        return verify_ledger(
            self.path,
            Path(public_key) if public_key is not None else public_path_for(self.key_path),
            Path(witness) if witness is not None else self.witness_path,
            conn=self.conn,
        )


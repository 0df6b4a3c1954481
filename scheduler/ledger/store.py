"""The ledger's SQLite store: records as Merkle leaves, signed checkpoints within a bounded delay.

It is both the proof of compliance and the scheduler's state store: replaying it rebuilds
the engine (``Engine.restore``) and ``verify`` re-checks every rule. Events are buffered
by the sink and written in one transaction per engine operation, so a crash loses whole
operations, never half of one.

Signing every operation (an Ed25519 signature, a Merkle root, a checkpoint row and a
witness line) cost more than the write itself, so checkpoints follow Certificate
Transparency's maximum merge delay: a transaction carries a checkpoint when
``checkpoint_interval`` seconds have passed since the last one, an idle writer signs from
a timer, and ``close()`` always signs, so every committed record is covered by a signed
checkpoint within the interval and a closed ledger is signed up to its last record.
Records after the last checkpoint (a live or crashed writer) are reported as unsigned by
``verify``; a writer reopening such a ledger signs them once the signed prefix matches.

Two tables and nothing a reader could trust unchecked: ``records(seq, leaf)`` where
``leaf`` is the canonical record (``records.encode``) and ``seq`` must equal its position
and the ``seq`` inside it; ``checkpoints(size, body, signature)`` where ``size`` must equal
the size inside the signed body.
"""
from __future__ import annotations

import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from scheduler.errors import LedgerError
from scheduler.events import Configured, Event
from scheduler.ledger.merkle import CompactRange, leaf_hash
from scheduler.ledger.records import MalformedRecord, decode, encode, to_event
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

log = logging.getLogger(__name__)

CHECKPOINT_INTERVAL = 1.0  # seconds: the maximum merge delay (every committed record is signed within it)
BATCH = 4096  # records per fetch and per bulk hash

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
    """SQLite-backed event sink that signs checkpoints; also reads and verifies itself.

    ``signing_key`` defaults to ``$MCSCHED_SIGNING_KEY`` or ``$MCSCHED_HOME/ledger-signing.key``
    (created 0600 on first use), ``witness`` to ``$MCSCHED_WITNESS`` or
    ``$MCSCHED_HOME/witness.jsonl`` (``home`` replaces ``$MCSCHED_HOME``: the live scheduler
    keeps both in its state directory); ``on_checkpoint`` is called after each checkpoint (metrics).

    ``checkpoint_interval`` is the maximum merge delay (Certificate Transparency's MMD): a
    flush signs a checkpoint when that many seconds have passed since the last one, an idle
    writer signs from a timer that long after its first unsigned commit, and ``close()``
    always signs; ``0`` signs every flush. ``monotonic`` is the clock it is measured on.
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
        checkpoint_interval: float = CHECKPOINT_INTERVAL,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self.on_checkpoint = on_checkpoint
        self.key_path = Path(signing_key) if signing_key is not None else default_key_path(home)
        self.witness_path = Path(witness) if witness is not None else default_witness_path(home)
        self.checkpoint_interval = checkpoint_interval
        self._monotonic = monotonic
        self._key: Ed25519PrivateKey | None = None
        self._key_id = ""
        self._witness: Witness | None = None
        self._buffer: list[Event] = []
        self._tree = CompactRange()  # every committed record up to _unhashed
        self._unhashed: list[bytes] = []  # committed leaves not yet in _tree (hashed in bulk at the next checkpoint)
        self._last_at = 0.0  # `at` of the last committed record: the next checkpoint's time
        self._signed_at = float("-inf")  # monotonic time of the last checkpoint: the first flush signs
        self._lock = threading.RLock()  # flush/close and the idle timer's checkpoint
        self._timer: threading.Timer | None = None
        self._closed = False
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
        """Rebuild the compact range and the last checkpoint (O(n) hashes, once per open).

        A writer finding records after the last checkpoint (the previous writer stopped
        within its checkpoint interval) checks that the signed prefix still matches its
        checkpoint, then signs the rest: evidence from here on, as the README says.
        """
        try:
            row = self.conn.execute("SELECT body, signature FROM checkpoints ORDER BY size DESC LIMIT 1").fetchone()
            if row is not None:
                self.checkpoint = parse_checkpoint(bytes(row[0]), bytes(row[1]))
            signed = self.checkpoint.size if self.checkpoint is not None else 0
            signed_root = None
            last = b""
            cur = self.conn.execute("SELECT leaf FROM records ORDER BY seq")
            while batch := cur.fetchmany(BATCH):
                leaves = [bytes(leaf) for (leaf,) in batch]
                cut = signed - self._tree.size
                if 0 < cut <= len(leaves):
                    self._tree.extend([leaf_hash(x) for x in leaves[:cut]])
                    signed_root = self._tree.root()
                    leaves = leaves[cut:]
                self._tree.extend([leaf_hash(x) for x in leaves])
                last = batch[-1][0]
        except sqlite3.DatabaseError as exc:
            raise LedgerError(f"{self.path}: not a usable ledger ({exc})") from None
        except TypeError:
            raise LedgerError(f"{self.path}: not a usable ledger (a record is not bytes)") from None
        except ValueError as exc:
            raise LedgerError(f"{self.path}: unreadable last checkpoint ({exc}); run `mcsched audit verify`") from None
        if self.readonly or not self._tree.size:
            return
        if self.checkpoint is not None and (self._tree.size < self.checkpoint.size or signed_root != self.checkpoint.root):
            raise LedgerError(f"{self.path}: records and checkpoints disagree; run `mcsched audit verify --db {self.path}`")
        try:
            self._last_at = float(decode(bytes(last))["at"])
        except (MalformedRecord, TypeError, ValueError) as exc:
            raise LedgerError(f"{self.path}: the last record is unreadable ({exc}); run `mcsched audit verify --db {self.path}`") from None
        if self._tree.size > signed:
            log.warning("%s: %d records after the last signed checkpoint (the writer stopped before signing them); signing them now",
                        self.path, self._tree.size - signed)
            self.sign()

    # ------------------------------------------------------------------ writing

    def _signer(self) -> Ed25519PrivateKey:
        if self._key is None:
            self._key = load_or_create_key(self.key_path)
            self._key_id = key_id(self._key.public_key())
        return self._key

    def __call__(self, event: Event) -> None:
        self._buffer.append(event)

    def flush(self) -> int:
        """Write buffered events in one transaction, with a signed checkpoint when one is due; returns how many."""
        if not self._buffer:
            return 0
        if self.readonly:
            raise LedgerError(f"{self.path}: opened read-only")
        with self._lock:
            if self._closed:
                raise LedgerError(f"{self.path}: closed")
            size = len(self)
            unhashed = self._unhashed
            rows = [(seq, encode(seq, event)) for seq, event in enumerate(self._buffer, size + 1)]
            unhashed.extend(leaf for _, leaf in rows)
            last_at = self._buffer[-1].at
            cp = None
            if self._monotonic() - self._signed_at >= self.checkpoint_interval:
                cp = self._next_checkpoint(last_at)
            try:
                with self.conn:
                    self.conn.execute("BEGIN IMMEDIATE")
                    self.conn.executemany("INSERT INTO records VALUES (?, ?)", rows)
                    if cp is not None:
                        self.conn.execute("INSERT INTO checkpoints VALUES (?, ?, ?)", (cp.size, cp.body(), cp.signature))
            except sqlite3.Error as exc:
                self._rollback(size)
                raise LedgerError(f"{self.path}: write failed ({exc})") from None
            self._last_at = last_at
            if cp is not None:
                self._published(cp)
            else:
                if len(unhashed) >= BATCH:  # bounded memory between checkpoints
                    self._tree.extend([leaf_hash(x) for x in unhashed])
                    unhashed.clear()
                self._arm()
            n = len(self._buffer)
            self._buffer.clear()
            return n

    def _next_checkpoint(self, at: float) -> Checkpoint:
        """The checkpoint over every committed leaf (those of this transaction included), signed."""
        key = self._signer()
        tree = self._tree
        if self._unhashed:
            tree.extend([leaf_hash(x) for x in self._unhashed])
            self._unhashed.clear()
        prev = self.checkpoint
        return Checkpoint(
            origin=prev.origin if prev else uuid.uuid4().hex,
            size=tree.size,
            root=tree.root(),
            time=at,
            prev=prev.digest() if prev else NO_PREV,
            key=self._key_id,
        ).signed(key)

    def _published(self, cp: Checkpoint) -> None:
        """A committed checkpoint: remember it, append it to the witness, tell the metrics."""
        self.checkpoint = cp
        self._signed_at = self._monotonic()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._witness is None:
            self._witness = Witness(self.witness_path)
        self._witness.append(cp)
        if self.on_checkpoint is not None:
            self.on_checkpoint(cp)

    def _arm(self) -> None:
        """An unsigned commit: make sure a checkpoint follows within the interval even if nothing else is written."""
        if self._timer is None and self.checkpoint_interval > 0:
            delay = max(0.0, self._signed_at + self.checkpoint_interval - self._monotonic())
            self._timer = threading.Timer(min(delay, self.checkpoint_interval), self._on_timer)
            self._timer.daemon = True
            self._timer.start()

    def _on_timer(self) -> None:
        with self._lock:
            self._timer = None
            if self._closed:
                return
            try:
                self.sign()
            except LedgerError as exc:  # the next flush or close() signs again
                log.warning("%s", exc)

    @property
    def unsigned(self) -> int:
        """Committed records not yet covered by a signed checkpoint (0 after ``sign`` or ``close``)."""
        return len(self) - (self.checkpoint.size if self.checkpoint is not None else 0)

    def sign(self) -> Checkpoint | None:
        """Sign a checkpoint over every committed record now (none if they are all signed)."""
        with self._lock:
            if self.readonly or self._closed or not self.unsigned:
                return None
            cp = self._next_checkpoint(self._last_at)
            try:
                with self.conn:
                    self.conn.execute("BEGIN IMMEDIATE")
                    self.conn.execute("INSERT INTO checkpoints VALUES (?, ?, ?)", (cp.size, cp.body(), cp.signature))
            except sqlite3.Error as exc:
                raise LedgerError(f"{self.path}: checkpoint write failed ({exc})") from None
            self._published(cp)
            return cp

    def _rollback(self, size: int) -> None:
        """A failed commit: forget the leaves of the first record past ``size``."""
        have = self._tree.size
        if size >= have:
            del self._unhashed[size - have :]
            return
        self._tree = CompactRange()  # the failed leaves were hashed in: rebuild from the store
        self._unhashed.clear()
        cur = self.conn.execute("SELECT leaf FROM records WHERE seq <= ? ORDER BY seq", (size,))
        while batch := cur.fetchmany(BATCH):
            self._tree.extend([leaf_hash(bytes(leaf)) for (leaf,) in batch])

    def discard(self) -> None:
        """Drop buffered events (an operation that failed validation wrote nothing)."""
        self._buffer.clear()

    def close(self) -> None:
        """Sign every committed record (the final checkpoint), then close."""
        with self._lock:
            if self._closed:
                return
            try:
                self.sign()
            finally:
                self._closed = True
                if self._timer is not None:
                    self._timer.cancel()
                    self._timer = None
                self.conn.close()
                if self._witness is not None:
                    self._witness.close()
                    self._witness = None

    @property
    def empty(self) -> bool:
        return len(self) == 0

    def __len__(self) -> int:
        return self._tree.size + len(self._unhashed)

    @property
    def root(self) -> bytes:
        with self._lock:
            if self._unhashed:
                self._tree.extend([leaf_hash(x) for x in self._unhashed])
                self._unhashed.clear()
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

    def verify(
        self, public_key: str | Path | None = None, witness: str | Path | None = None, *, require_signed: bool = False
    ) -> VerifyReport:
        """Everything ``mcsched audit verify`` checks, against this ledger's own key and witness by default.

        A writer signs what it has committed first, so its own verdict never has an unsigned tail,
        and holds its lock while reading (the idle timer must not write on this connection meanwhile).
        """
        with self._lock:
            self.sign()
            if public_key is None and not self.readonly:
                pub = self._signer().public_key()
                return verify_ledger(
                    self.path, pub, Path(witness) if witness is not None else self.witness_path, conn=self.conn, require_signed=require_signed
                )
            return verify_ledger(
                self.path,
                Path(public_key) if public_key is not None else public_path_for(self.key_path),
                Path(witness) if witness is not None else self.witness_path,
                conn=self.conn,
                require_signed=require_signed,
            )

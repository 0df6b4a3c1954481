"""The ledger's SQLite store: MAC'd records as Merkle leaves, C2SP checkpoints within a bounded delay.

It is both the proof of compliance and the scheduler's state store: replaying it rebuilds
the engine (``Engine.restore``) and ``verify`` re-checks every rule. Events are buffered
by the sink and written in one transaction per engine operation, so a crash loses whole
operations, never half of one.

**Never sign what this writer did not write.** Each transaction's records are
authenticated as they are appended by an HMAC-SHA256 under the writer's MAC key
(``signing.record_mac``), stored on the transaction's last record (one MAC per engine
operation, not per record: the MAC's fixed cost is most of its cost). On open,
the writer re-checks the records after its last checkpoint: those with a valid MAC (a
crash between checkpoints) are signed; the first one without a valid MAC and everything
after it are *quarantined*: never signed, never restored from, and the open fails with
``N records after checkpoint K are not authenticated`` until an operator runs
``mcsched audit adopt`` or ``mcsched audit truncate`` (``actions.py``), which is itself
signed and committed to by every later checkpoint.

**Checkpoints** follow Certificate Transparency's maximum merge delay: a transaction
carries a checkpoint when ``checkpoint_interval`` (1 s) has passed since the last one or
``max_unsigned`` (1,000) records are unsigned, an idle writer signs from a timer, and
``close()`` always signs, so every committed record is signed within a second or 1,000
records, and a closed ledger up to its last record. A new ledger starts with a signed
checkpoint of size 0, which fixes its origin (the checkpoints' first line and key name).

Tables: ``records(seq, leaf, mac)`` (``leaf`` is the canonical record, ``records.encode``;
``mac`` is the writer's, never read by verifiers), ``checkpoints(id, size, note)`` (signed
tlog-checkpoint notes, in signing order), ``actions(id, note)`` (operator actions) and
``cosignatures(checkpoint, line)`` (witness cosignature lines for a checkpoint).
"""
from __future__ import annotations

import datetime
import getpass
import hashlib
import itertools
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from scheduler.errors import LedgerError
from scheduler.events import Configured, Event
from scheduler.ledger.actions import Action, ActionFormatError, parse_action
from scheduler.ledger.merkle import EMPTY_ROOT, CompactRange, leaf_hash
from scheduler.ledger.records import JOB_EVENTS, JOB_OF, MalformedRecord, decode, encode, to_event
from scheduler.ledger.signing import (
    ACTION_LINE,
    Checkpoint,
    CheckpointFormatError,
    RecordMac,
    default_key_path,
    key_id,
    load_or_create_key,
    load_or_create_mac_key,
    log_verifier,
    mac_path_for,
    parse_checkpoint,
    public_path_for,
    record_mac,
)
from scheduler.ledger.verify import VerifyReport, connect_readonly, ledger_tables, verify_ledger

log = logging.getLogger(__name__)

CHECKPOINT_INTERVAL = 1.0  # seconds: the maximum merge delay (every committed record is signed within it)
MAX_UNSIGNED = 1000  # records: a checkpoint at least every 1,000 records, whatever the clock says
BATCH = 4096  # records per fetch and per bulk hash
IDLE_EXIT = 60.0  # seconds without a commit after which the idle signer's thread ends
ORIGIN_ENV = "MCSCHED_LEDGER_ORIGIN"

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY,
    leaf BLOB NOT NULL,
    mac BLOB
);
CREATE TABLE IF NOT EXISTS checkpoints (
    id INTEGER PRIMARY KEY,
    size INTEGER NOT NULL,
    note BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS actions (
    id INTEGER PRIMARY KEY,
    note BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS cosignatures (
    checkpoint INTEGER NOT NULL,
    line BLOB NOT NULL,
    PRIMARY KEY (checkpoint, line)
);
CREATE TRIGGER IF NOT EXISTS records_no_update BEFORE UPDATE OF seq, leaf ON records
BEGIN SELECT RAISE(ABORT, 'ledger is append-only'); END;
CREATE TRIGGER IF NOT EXISTS records_no_delete BEFORE DELETE ON records
BEGIN SELECT RAISE(ABORT, 'ledger is append-only'); END;
CREATE TRIGGER IF NOT EXISTS checkpoints_no_update BEFORE UPDATE ON checkpoints
BEGIN SELECT RAISE(ABORT, 'ledger is append-only'); END;
CREATE TRIGGER IF NOT EXISTS checkpoints_no_delete BEFORE DELETE ON checkpoints
BEGIN SELECT RAISE(ABORT, 'ledger is append-only'); END;
CREATE TRIGGER IF NOT EXISTS actions_no_change BEFORE UPDATE ON actions
BEGIN SELECT RAISE(ABORT, 'ledger is append-only'); END;
CREATE TRIGGER IF NOT EXISTS actions_no_delete BEFORE DELETE ON actions
BEGIN SELECT RAISE(ABORT, 'ledger is append-only'); END;
"""


def default_origin(public_key_id: str) -> str:
    """``$MCSCHED_LEDGER_ORIGIN``, else a fresh ``mcsched.local/<key id>/<random>`` (pin it in the trust file)."""
    return os.environ.get(ORIGIN_ENV) or f"mcsched.local/{public_key_id}/{uuid.uuid4().hex[:12]}"


class Quarantine(LedgerError):
    """Records after the last checkpoint without this writer's MAC: an operator must adopt or truncate them."""

    def __init__(self, path: Path, after: int, first: int, last: int) -> None:
        self.after, self.first, self.last = after, first, last
        super().__init__(
            f"{path}: {last - first + 1} records after checkpoint {after} are not authenticated (records {first}..{last}): "
            f"not signed, not restored; run `mcsched audit adopt --db {path} --why TEXT` or `mcsched audit truncate --db {path} --why TEXT`"
        )


def _create_private(path: Path) -> None:
    """Create the database file 0600 before SQLite does (its -wal and -shm files take its mode)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    except OSError as exc:
        raise LedgerError(f"{path}: cannot create the ledger ({exc.strerror})") from None
    os.close(fd)


class Ledger:
    """SQLite-backed event sink that MACs every record and signs checkpoints; also reads and verifies itself.

    ``signing_key`` defaults to ``$MCSCHED_SIGNING_KEY`` or ``$MCSCHED_HOME/ledger-signing.key``
    (created 0600 on first use; the record MAC key ``ledger-mac.key`` beside it) and
    ``home`` replaces ``$MCSCHED_HOME``; ``origin`` names a new ledger (default
    ``$MCSCHED_LEDGER_ORIGIN`` or a random one); ``on_checkpoint`` is called after each
    checkpoint (metrics, witness submission); ``on_leaves(start, hashes)`` with the leaf
    hashes of leaves ``start``, ``start + 1``, ... as they are computed (the witness
    cosigner's tree, so it does not hash the log again), and ``(start, [])`` when a failed
    commit takes back the leaves from ``start``.

    ``checkpoint_interval`` is the maximum merge delay: a flush signs when that many seconds
    have passed since the last checkpoint or ``max_unsigned`` records are unsigned, an idle
    writer signs from a timer, and ``close()`` always signs; ``0`` signs every flush.
    ``monotonic`` is the clock it is measured on. ``operator=True`` opens a ledger with
    quarantined records for ``adopt`` / ``truncate`` instead of refusing it.

    ``durable=False`` is for a ledger that nobody reads until ``close()`` and that is
    thrown away if its writer dies (a replay's, ``sim/worker.py``): SQLite keeps its
    rollback journal in memory and never syncs, so each page is written once (WAL writes
    it twice) and a crash can leave a corrupt file. The records, MACs and checkpoints are
    the same bytes either way.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        readonly: bool = False,
        signing_key: str | Path | None = None,
        on_checkpoint: Callable[[Checkpoint], None] | None = None,
        on_leaves: Callable[[int, list[bytes]], None] | None = None,
        home: str | Path | None = None,
        origin: str | None = None,
        checkpoint_interval: float = CHECKPOINT_INTERVAL,
        max_unsigned: int = MAX_UNSIGNED,
        monotonic: Callable[[], float] = time.monotonic,
        operator: bool = False,
        durable: bool = True,
    ) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self.on_checkpoint = on_checkpoint
        self.on_leaves = on_leaves
        self.key_path = Path(signing_key) if signing_key is not None else default_key_path(home)
        self.checkpoint_interval = checkpoint_interval
        self.max_unsigned = max_unsigned
        self._monotonic = monotonic
        self._key: Ed25519PrivateKey | None = None
        self._kid: tuple[object, bytes] = (None, b"")  # (the key, its note key ID under this origin)
        self._mac_key = b""
        self._macer: RecordMac | None = None
        self._macer_for: tuple[bytes, str] = (b"", "")
        self._buffer: list[Event] = []
        self._tree = CompactRange()  # every committed, authenticated record up to _unhashed
        self._unhashed: list[bytes] = []  # committed leaves not yet in _tree (hashed in bulk at the next checkpoint)
        self._last_at = 0.0  # `at` of the last committed record: the next checkpoint's time
        self._signed_at = float("-inf")  # monotonic time of the last checkpoint: the first flush signs
        self._lock = threading.RLock()  # flush/close and the idle signer's checkpoint
        self._idle = threading.Condition(self._lock)  # wakes the idle signer
        self._due: float | None = None  # when (time.monotonic) the idle signer signs, if nothing else does first
        self._idler: threading.Thread | None = None
        self._closed = False
        self.checkpoint: Checkpoint | None = None
        self.checkpoint_id = 0
        self.quarantine: Quarantine | None = None
        self.actions: list[Action] = []
        self._last_of: dict[str, int] = {}  # job -> seq of its last record (each record names its job's previous one)
        if readonly:
            self.conn = connect_readonly(self.path)
            self._load_readonly()
            return
        self._signer()  # the keys first: a bad key file must not leave a new, empty ledger behind
        self._mac_key = load_or_create_mac_key(mac_path_for(self.key_path))
        _create_private(self.path)
        try:
            self.conn = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise LedgerError(f"{self.path}: not a usable ledger ({exc})") from None
        self.conn.text_factory = bytes
        try:
            kind = ledger_tables(self.conn)
            if kind == "other":
                raise LedgerError(f"{self.path}: an SQLite file that is not an mcsched ledger; nothing was written")
            if kind == "v2":
                raise LedgerError(
                    f"{self.path}: a v2 ledger (home-made checkpoints, no record MACs); verify it with mcsched before v3 and start a new ledger"
                )
            if durable:
                self.conn.execute("PRAGMA journal_mode=WAL")
                self.conn.execute("PRAGMA synchronous=NORMAL")
            else:  # each page written once, never synced: a crash loses the file, which nobody reads before close()
                self.conn.execute("PRAGMA journal_mode=MEMORY")
                self.conn.execute("PRAGMA synchronous=OFF")
            self.conn.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:
            self.conn.close()
            raise LedgerError(f"{self.path}: not a usable ledger ({exc})") from None
        except LedgerError:
            self.conn.close()
            raise
        try:
            self._load(origin, operator)
        except LedgerError:
            self.conn.close()
            raise

    # ------------------------------------------------------------------ opening

    def _load_readonly(self) -> None:
        try:
            row = self.conn.execute("SELECT id, note FROM checkpoints ORDER BY id DESC LIMIT 1").fetchone()
            if row is not None:
                self.checkpoint_id, self.checkpoint = int(row[0]), parse_checkpoint(bytes(row[1]))
            (count,) = self.conn.execute("SELECT COUNT(*) FROM records").fetchone()
        except (sqlite3.Error, CheckpointFormatError, TypeError) as exc:
            raise LedgerError(f"{self.path}: not a usable ledger ({exc}); run `mcsched audit verify --db {self.path}`") from None
        self._readonly_size = int(count)

    def _load(self, origin: str | None, operator: bool) -> None:
        """Rebuild the compact range up to the last authenticated record, sign the authenticated tail, quarantine the rest."""
        key = self._signer()
        try:
            row = self.conn.execute("SELECT id, note FROM checkpoints ORDER BY id DESC LIMIT 1").fetchone()
            self.actions = [parse_action(bytes(n))[0] for (n,) in self.conn.execute("SELECT note FROM actions ORDER BY id")]
        except sqlite3.DatabaseError as exc:
            raise LedgerError(f"{self.path}: not a usable ledger ({exc})") from None
        except (ActionFormatError, TypeError, UnicodeDecodeError) as exc:
            raise LedgerError(f"{self.path}: an unreadable action note ({exc}); run `mcsched audit verify --db {self.path}`") from None
        if row is None:
            (count,) = self.conn.execute("SELECT COUNT(*) FROM records").fetchone()
            if count:
                raise LedgerError(f"{self.path}: {count} records and no checkpoint: not written by mcsched; nothing was written")
            name = origin or default_origin(key_id(key.public_key()))
            log_verifier(name, key.public_key())  # a usable key name, or a one-line error
            self._commit_checkpoint(Checkpoint(name, 0, EMPTY_ROOT).signed(key))
            self._signed_at = float("-inf")  # the origin is fixed; the first records are signed at once
            return
        try:
            cp = parse_checkpoint(bytes(row[1]))
        except (CheckpointFormatError, TypeError) as exc:
            raise LedgerError(f"{self.path}: unreadable last checkpoint ({exc}); run `mcsched audit verify --db {self.path}`") from None
        if not cp.verified_by(log_verifier(cp.origin, key.public_key())):
            raise LedgerError(f"{self.path}: the last checkpoint (size {cp.size}) is not signed by this writer's key {self.key_path}; nothing was written")
        self.checkpoint, self.checkpoint_id = cp, int(row[0])
        signed = cp.size
        signed_root = EMPTY_ROOT if signed == 0 else None
        mac_key, origin_name = self._mac_key, cp.origin
        expected_macs = record_mac
        first_bad = 0
        n = 0
        last_good = b""
        group: list[bytes] = []
        try:
            cur = self.conn.execute("SELECT seq, leaf, mac FROM records ORDER BY seq")
            while batch := cur.fetchmany(BATCH):
                for seq, leaf, mac in batch:
                    n += 1
                    if seq != n or type(leaf) is not bytes:
                        raise LedgerError(f"{self.path}: record {n} is missing or not bytes; run `mcsched audit verify --db {self.path}`")
                    if n <= signed:
                        self._unhashed.append(leaf)
                        if n == signed:
                            self._hash_pending()
                            signed_root = self._tree.root()
                        continue
                    if first_bad:
                        continue
                    group.append(leaf)  # a transaction's records: the last one carries the MAC of them all
                    if mac is None:
                        continue
                    if type(mac) is bytes and mac == expected_macs(mac_key, origin_name, group):
                        self._unhashed.extend(group)
                        last_good = leaf
                    else:
                        first_bad = n - len(group) + 1
                    group = []
                if len(self._unhashed) >= BATCH:
                    self._hash_pending()
        except sqlite3.DatabaseError as exc:
            raise LedgerError(f"{self.path}: not a usable ledger ({exc})") from None
        if group and not first_bad:  # records with no MAC after them: no transaction of this writer ends there
            first_bad = n - len(group) + 1
        self._index_jobs(1, (first_bad - 1) if first_bad else n)
        self._hash_pending()
        if n < signed or signed_root != cp.root:
            raise LedgerError(f"{self.path}: records and checkpoints disagree; run `mcsched audit verify --db {self.path}`")
        last_leaf = last_good
        if not last_leaf and signed:
            got = self.conn.execute("SELECT leaf FROM records WHERE seq = ?", (signed,)).fetchone()
            last_leaf = bytes(got[0]) if got else b""
        if last_leaf:
            try:
                self._last_at = float(decode(last_leaf)["at"])
            except (MalformedRecord, TypeError, ValueError) as exc:
                raise LedgerError(f"{self.path}: the last record is unreadable ({exc}); run `mcsched audit verify --db {self.path}`") from None
        if self._tree.size > signed:
            log.warning("%s: %d records after checkpoint %d carry this writer's MAC (it stopped before signing them); signing them now",
                        self.path, self._tree.size - signed, signed)
            self.sign()
        if first_bad:
            self.quarantine = Quarantine(self.path, self._tree.size, first_bad, n)
            log.error("%s", self.quarantine)
            if not operator:
                raise self.quarantine

    def _index_jobs(self, first: int, last: int) -> None:
        """Learn each job's last record among records ``first..last`` (where the next one's ``prev`` points)."""
        job_of = JOB_OF.decode
        chain = self._last_of
        cur = self.conn.execute("SELECT seq, leaf FROM records WHERE seq BETWEEN ? AND ? ORDER BY seq", (first, last))
        try:
            while batch := cur.fetchmany(BATCH):
                for seq, leaf in batch:
                    job = job_of(leaf).job
                    if job is not None:
                        chain[job] = seq
        except (msgspec.DecodeError, TypeError) as exc:
            raise LedgerError(f"{self.path}: record unreadable ({exc}); run `mcsched audit verify --db {self.path}`") from None

    # ------------------------------------------------------------------ writing

    def _signer(self) -> Ed25519PrivateKey:
        if self._key is None:
            self._key = load_or_create_key(self.key_path)
        return self._key

    @property
    def origin(self) -> str:
        return self.checkpoint.origin if self.checkpoint is not None else ""

    def __call__(self, event: Event) -> None:
        self._buffer.append(event)

    def extend(self, events: list[Event]) -> None:
        """Buffer a batch of events, as calling the sink on each of them does (one call, not one per event)."""
        self._buffer.extend(events)

    def _writable(self) -> None:
        if self.readonly:
            raise LedgerError(f"{self.path}: opened read-only")
        if self._closed:
            raise LedgerError(f"{self.path}: closed")
        if self.quarantine is not None:
            raise self.quarantine

    def flush(self) -> int:
        """Write buffered events in one transaction, with a signed checkpoint when one is due; returns how many."""
        if not self._buffer:
            return 0
        with self._lock:
            self._writable()
            size = len(self)
            if self._macer is None or self._macer_for != (self._mac_key, self.origin):
                self._macer, self._macer_for = RecordMac(self._mac_key, self.origin), (self._mac_key, self.origin)
            last_of: dict[str, int] = {}  # this transaction's links (applied once it commits)
            chain_get, link_get, job_events, enc = self._last_of.get, last_of.get, JOB_EVENTS, encode
            leaves: list[bytes] = []
            add = leaves.append
            for seq, event in enumerate(self._buffer, size + 1):
                if type(event) in job_events:
                    job = event.job  # type: ignore[attr-defined]
                    if job is not None:
                        add(enc(seq, event, link_get(job) or chain_get(job, 0)))
                        last_of[job] = seq
                        continue
                add(enc(seq, event))
            n = len(leaves)
            # (seq, leaf, mac) rows zipped in C, the MAC on the last one only: no tuple built per record in Python
            rows = zip(range(size + 1, size + n + 1), leaves, itertools.chain(itertools.repeat(None, n - 1), (self._macer(leaves),)), strict=True)
            chain = self._last_of
            self._unhashed.extend(leaves)
            last_at = self._buffer[-1].at
            cp = None
            unsigned = size + n - (self.checkpoint.size if self.checkpoint else 0)
            if self._monotonic() - self._signed_at >= self.checkpoint_interval or unsigned >= self.max_unsigned:
                cp = self._next_checkpoint(last_at)
            try:
                with self.conn:
                    self.conn.execute("BEGIN IMMEDIATE")
                    self.conn.executemany("INSERT INTO records VALUES (?, ?, ?)", rows)
                    cp_id = self._insert_checkpoint(cp) if cp is not None else 0
            except sqlite3.Error as exc:
                self._rollback(size)
                raise LedgerError(f"{self.path}: write failed ({exc})") from None
            self._last_at = last_at
            chain.update(last_of)
            if cp is not None:
                self._published(cp, cp_id)
            else:
                if len(self._unhashed) >= BATCH:  # bounded memory between checkpoints
                    self._hash_pending()
                self._arm()
            n = len(self._buffer)
            self._buffer.clear()
            return n

    def _hash_pending(self) -> None:
        if self._unhashed:
            sha = hashlib.sha256  # RFC 9162 leaf hashes (merkle.leaf_hash), inlined: one call per record saved
            hashes = [sha(b"\x00" + x).digest() for x in self._unhashed]
            if self.on_leaves is not None:
                self.on_leaves(self._tree.size, hashes)
            self._tree.extend(hashes)
            self._unhashed.clear()

    def _extensions(self) -> tuple[str, ...]:
        return tuple(ACTION_LINE + a.digest for a in self.actions)

    def _next_checkpoint(self, at: float) -> Checkpoint:
        """The checkpoint over every committed, authenticated leaf (those of this transaction included), signed."""
        self._hash_pending()
        key = self._signer()
        if self._kid[0] is not key:
            self._kid = (key, log_verifier(self.origin, key.public_key()).kid)
        return Checkpoint(self.origin, self._tree.size, self._tree.root(), self._extensions()).signed(key, at, self._kid[1])

    def _insert_checkpoint(self, cp: Checkpoint) -> int:
        cur = self.conn.execute("INSERT INTO checkpoints (size, note) VALUES (?, ?)", (cp.size, cp.note))
        return int(cur.lastrowid or 0)

    def _commit_checkpoint(self, cp: Checkpoint) -> None:
        try:
            with self.conn:
                self.conn.execute("BEGIN IMMEDIATE")
                cp_id = self._insert_checkpoint(cp)
        except sqlite3.Error as exc:
            raise LedgerError(f"{self.path}: checkpoint write failed ({exc})") from None
        self._published(cp, cp_id)

    def _published(self, cp: Checkpoint, cp_id: int) -> None:
        """A committed checkpoint: remember it, tell the metrics (and whoever submits it to witnesses)."""
        self.checkpoint, self.checkpoint_id = cp, cp_id
        self._signed_at = self._monotonic()
        self._due = None  # the idle signer goes back to waiting (it is not woken for this)
        if self.on_checkpoint is not None:
            self.on_checkpoint(cp)

    def _arm(self) -> None:
        """An unsigned commit: make sure a checkpoint follows within the interval even if nothing else is written.

        One idle-signer thread per writer, started on first need, waits on a condition for
        the deadline (a thread per checkpoint, as ``threading.Timer`` made, cost a thread
        start every second of a busy writer's life).
        """
        if self._due is None and self.checkpoint_interval > 0:
            delay = max(0.0, self._signed_at + self.checkpoint_interval - self._monotonic())
            self._due = time.monotonic() + min(delay, self.checkpoint_interval)
            if self._idler is None:
                self._idler = threading.Thread(target=self._idle_signer, name="mcsched-ledger-signer", daemon=True)
                self._idler.start()
            else:
                self._idle.notify()

    def _idle_signer(self) -> None:
        with self._lock:
            while not self._closed:
                due = self._due
                if due is None:
                    if not self._idle.wait(IDLE_EXIT) and self._due is None:  # a quiet writer: end (``_arm`` starts another)
                        self._idler = None
                        return
                    continue
                if due > time.monotonic():
                    self._idle.wait(due - time.monotonic())
                    continue
                self._due = None
                try:
                    self.sign()
                except LedgerError as exc:  # the next flush or close() signs again
                    log.warning("%s", exc)

    @property
    def unsigned(self) -> int:
        """Committed records not yet covered by a signed checkpoint (0 after ``sign`` or ``close``)."""
        return len(self) - (self.checkpoint.size if self.checkpoint is not None else 0)

    def sign(self) -> Checkpoint | None:
        """Sign a checkpoint over every committed, authenticated record now (none if they are all signed)."""
        with self._lock:
            if self.readonly or self._closed or not self.unsigned:
                return None
            cp = self._next_checkpoint(self._last_at)
            self._commit_checkpoint(cp)
            return cp

    def _rollback(self, size: int) -> None:
        """A failed commit: forget the leaves of the first record past ``size``."""
        have = self._tree.size
        if size >= have:
            del self._unhashed[size - have :]
            return
        self._tree = CompactRange()  # the failed leaves were hashed in: rebuild from the store
        self._unhashed.clear()
        if self.on_leaves is not None:
            self.on_leaves(size, [])
        cur = self.conn.execute("SELECT leaf FROM records WHERE seq <= ? ORDER BY seq", (size,))
        while batch := cur.fetchmany(BATCH):
            self._tree.extend([leaf_hash(bytes(leaf)) for (leaf,) in batch])

    def add_cosignature(self, cp_id: int, line: bytes) -> None:
        """Keep a witness's cosignature line for the checkpoint ``cp_id`` (checked by verify, not here)."""
        with self._lock:
            try:
                self.conn.execute("INSERT OR IGNORE INTO cosignatures VALUES (?, ?)", (cp_id, line))
            except sqlite3.Error as exc:
                raise LedgerError(f"{self.path}: cosignature write failed ({exc})") from None

    # ------------------------------------------------------------------ operator actions

    def resolve(self, kind: str, why: str, who: str | None = None) -> Action:
        """``adopt`` or ``truncate`` the quarantined records, as a signed action every later checkpoint names."""
        with self._lock:
            q = self.quarantine
            if q is None:
                raise LedgerError(f"{self.path}: no unauthenticated records: nothing to {kind}")
            if not why.strip():
                raise LedgerError(f"{kind}: --why must say why (it is recorded)")
            who = who or getpass.getuser()
            when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            act = Action(self.origin, kind, q.first, q.last, q.after, who, when, why).signed(self._signer())
            try:
                with self.conn:
                    self.conn.execute("BEGIN IMMEDIATE")
                    if kind == "adopt":
                        rows = self.conn.execute("SELECT seq, leaf FROM records WHERE seq >= ? ORDER BY seq", (q.first,)).fetchall()
                        leaves = [bytes(leaf) for _, leaf in rows]
                        self.conn.executemany(
                            "UPDATE records SET mac = ? WHERE seq = ?",
                            [(record_mac(self._mac_key, self.origin, [leaf]), seq) for (seq, _), leaf in zip(rows, leaves, strict=True)],
                        )
                    else:
                        leaves = []
                        self.conn.execute("DROP TRIGGER records_no_delete")
                        self.conn.execute("DELETE FROM records WHERE seq >= ?", (q.first,))
                    self.conn.execute("INSERT INTO actions (note) VALUES (?)", (act.note,))
                    if kind == "adopt":
                        self._index_jobs(q.first, q.last)
                    self.actions.append(act)
                    self._unhashed.extend(leaves)
                    cp = self._next_checkpoint(self._last_at)
                    cp_id = self._insert_checkpoint(cp)
            except sqlite3.Error as exc:
                self.actions.pop()
                raise LedgerError(f"{self.path}: {kind} failed ({exc}); nothing was changed") from None
            finally:
                self.conn.executescript(SCHEMA)  # the append-only triggers, back in place
            self.quarantine = None
            self._published(cp, cp_id)
            return act

    def record_action(self, act: Action) -> Action:
        """Sign ``act`` and a checkpoint naming it (a migration's provenance): every later checkpoint names it too."""
        with self._lock:
            self._writable()
            self.sign()
            act = act.signed(self._signer())
            self.actions.append(act)
            cp = self._next_checkpoint(self._last_at)
            try:
                with self.conn:
                    self.conn.execute("BEGIN IMMEDIATE")
                    self.conn.execute("INSERT INTO actions (note) VALUES (?)", (act.note,))
                    cp_id = self._insert_checkpoint(cp)
            except sqlite3.Error as exc:
                self.actions.pop()
                raise LedgerError(f"{self.path}: action write failed ({exc})") from None
            self._published(cp, cp_id)
            return act

    def rotate(self, new_key_path: Path, why: str, who: str | None = None) -> Action:
        """Hand the log over to the key at ``new_key_path`` (created 0600 if absent).

        The rotation is an action signed by the current key and named by a checkpoint the
        current key signs (its last); the same tree is then signed by the new key, so this
        writer (and the next one, opened with the new key) goes on from there, with the
        record MAC key beside the new key (created if absent): every record is signed at
        the handover, so none depends on the old MAC key.
        """
        with self._lock:
            self._writable()
            if not why.strip():
                raise LedgerError("rotate: --why must say why (it is recorded)")
            old_key = self._signer()
            new_key = load_or_create_key(new_key_path)
            if new_key.public_key() == old_key.public_key():
                raise LedgerError(f"{new_key_path}: that is the current key")
            new_mac = load_or_create_mac_key(mac_path_for(new_key_path))  # everything is signed below: the MAC key may change too
            self.sign()
            vkey = log_verifier(self.origin, new_key.public_key()).vkey()
            when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            act = Action(self.origin, "rotate", 0, 0, len(self), who or getpass.getuser(), when, why, key=vkey).signed(old_key)
            self.actions.append(act)
            last_by_old = self._next_checkpoint(self._last_at)
            first_by_new = Checkpoint(self.origin, last_by_old.size, last_by_old.root, last_by_old.extensions).signed(new_key, self._last_at)
            try:
                with self.conn:
                    self.conn.execute("BEGIN IMMEDIATE")
                    self.conn.execute("INSERT INTO actions (note) VALUES (?)", (act.note,))
                    self._insert_checkpoint(last_by_old)
                    cp_id = self._insert_checkpoint(first_by_new)
            except sqlite3.Error as exc:
                self.actions.pop()
                raise LedgerError(f"{self.path}: rotate failed ({exc}); nothing was changed") from None
            self._key, self.key_path, self._mac_key = new_key, Path(new_key_path), new_mac
            self._published(first_by_new, cp_id)
            return act

    def close(self) -> None:
        """Sign every committed record (the final checkpoint), then close."""
        with self._lock:
            if self._closed:
                return
            try:
                if self.quarantine is None:
                    self.sign()
            finally:
                self._closed = True
                self._due = None
                self._idle.notify_all()  # the idle signer sees ``_closed`` and ends
                self.conn.close()

    @property
    def empty(self) -> bool:
        return len(self) == 0

    def __len__(self) -> int:
        if self.readonly:
            return self._readonly_size
        return self._tree.size + len(self._unhashed)

    @property
    def root(self) -> bytes:
        with self._lock:
            self._hash_pending()
            return self._tree.root()

    # ------------------------------------------------------------------ reading

    def leaves(self) -> Iterator[tuple[int, bytes]]:
        """(seq, record bytes) in order: the authenticated records (all of them when read-only)."""
        limit = len(self) if not self.readonly else -1
        for seq, leaf in self.conn.execute("SELECT seq, leaf FROM records WHERE ? < 0 OR seq <= ? ORDER BY seq", (limit, limit)):
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

    def verify(self, public_key: str | Path | None = None, *, allow_unsigned_tail: bool | None = None) -> VerifyReport:
        """Everything ``mcsched audit verify`` checks, against this writer's own key and origin.

        A writer signs what it has committed first, so its own verdict has no unsigned tail,
        and holds its lock while reading (the idle timer must not write on this connection meanwhile).
        A read-only view may be watching a live writer within its checkpoint interval, so by
        default its unsigned tail is checked and reported rather than failed (``audit verify``,
        for closed ledgers, fails it unless told otherwise).
        """
        if allow_unsigned_tail is None:
            allow_unsigned_tail = self.readonly
        with self._lock:
            self.sign()
            if public_key is None and not self.readonly:
                pub = self._signer().public_key()
            else:
                from scheduler.ledger.signing import load_public_key

                pub = load_public_key(Path(public_key) if public_key is not None else public_path_for(self.key_path))
            return verify_ledger(self.path, pub, conn=self.conn, allow_unsigned_tail=allow_unsigned_tail)


"""The audit ledger: an append-only, hash-chained SQLite (WAL) log of every engine event.

It is both the proof of compliance and the scheduler's state store: replaying it rebuilds
the engine (``Engine.restore``) and re-checks every invariant (``verify``). Events are
buffered by the sink and written in one transaction per engine operation, so a crash
loses whole operations, never half of one.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from scheduler.errors import LedgerCorrupt, LedgerError
from scheduler.events import Configured, Event, event_from_record
from scheduler.invariants import InvariantChecker, Violation

GENESIS = "0" * 64
SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger (
    seq INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS ledger_no_update BEFORE UPDATE ON ledger
BEGIN SELECT RAISE(ABORT, 'ledger is append-only'); END;
CREATE TRIGGER IF NOT EXISTS ledger_no_delete BEFORE DELETE ON ledger
BEGIN SELECT RAISE(ABORT, 'ledger is append-only'); END;
"""


def record_hash(prev: str, seq: int, kind: str, payload: str) -> str:
    return hashlib.sha256(f"{prev}|{seq}|{kind}|{payload}".encode()).hexdigest()


def encode(event: Event) -> str:
    return json.dumps(event.to_record(), sort_keys=True, separators=(",", ":"), allow_nan=False)


@dataclass(frozen=True)
class VerifyReport:
    records: int
    jobs: int
    violation: Violation | None = None
    corrupt: LedgerCorrupt | None = None

    @property
    def ok(self) -> bool:
        return self.violation is None and self.corrupt is None

    def line(self) -> str:
        if self.corrupt is not None:
            return f"FAIL: {self.corrupt}"
        if self.violation is not None:
            return f"FAIL: {self.violation}"
        return f"OK: {self.records} records, hash chain intact, invariants hold for {self.jobs} jobs"


class Ledger:
    """SQLite-backed event sink with a hash chain; also reads and verifies itself."""

    def __init__(self, path: str | Path, *, readonly: bool = False) -> None:
        self.path = Path(path)
        if readonly and not self.path.exists():
            raise LedgerError(f"{self.path}: no such ledger")
        try:
            if not readonly:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            uri = f"file:{self.path}?mode=ro" if readonly else str(self.path)
            self.conn = sqlite3.connect(uri, uri=readonly, isolation_level=None, check_same_thread=False)
            if not readonly:
                self.conn.execute("PRAGMA journal_mode=WAL")
                self.conn.execute("PRAGMA synchronous=NORMAL")
                self.conn.executescript(SCHEMA)
            row = self.conn.execute("SELECT seq, hash FROM ledger ORDER BY seq DESC LIMIT 1").fetchone()
        except sqlite3.DatabaseError as exc:
            raise LedgerError(f"{self.path}: not a usable ledger ({exc})") from None
        self._seq: int = int(row[0]) if row else 0
        self._tip: str = str(row[1]) if row else GENESIS
        self._buffer: list[Event] = []

    # ------------------------------------------------------------------ writing

    def __call__(self, event: Event) -> None:
        self._buffer.append(event)

    def flush(self) -> int:
        """Write buffered events in one transaction; returns how many were written."""
        if not self._buffer:
            return 0
        rows = []
        seq, tip = self._seq, self._tip
        for event in self._buffer:
            seq += 1
            payload = encode(event)
            digest = record_hash(tip, seq, event.kind, payload)
            rows.append((seq, event.at, event.kind, payload, tip, digest))
            tip = digest
        try:
            with self.conn:
                self.conn.execute("BEGIN IMMEDIATE")
                self.conn.executemany("INSERT INTO ledger VALUES (?, ?, ?, ?, ?, ?)", rows)
        except sqlite3.Error as exc:
            raise LedgerError(f"{self.path}: write failed ({exc})") from None
        self._seq, self._tip = seq, tip
        n = len(self._buffer)
        self._buffer.clear()
        return n

    def discard(self) -> None:
        """Drop buffered events (an operation that failed validation wrote nothing)."""
        self._buffer.clear()

    def close(self) -> None:
        self.conn.close()

    @property
    def empty(self) -> bool:
        return self._seq == 0

    def __len__(self) -> int:
        return self._seq

    # ------------------------------------------------------------------ reading

    def rows(self) -> Iterator[tuple[int, float, str, str, str, str]]:
        yield from self.conn.execute("SELECT seq, at, kind, payload, prev_hash, hash FROM ledger ORDER BY seq")

    def events(self) -> Iterator[Event]:
        for _seq, _at, kind, payload, _prev, _hash in self.rows():
            yield event_from_record(kind, json.loads(payload))

    def last_configured(self) -> Configured | None:
        row = self.conn.execute("SELECT payload FROM ledger WHERE kind = 'configured' ORDER BY seq DESC LIMIT 1").fetchone()
        if row is None:
            return None
        ev = event_from_record("configured", json.loads(row[0]))
        assert isinstance(ev, Configured)
        return ev

    def verify(self) -> VerifyReport:
        """Check the hash chain record by record, then replay the invariants."""
        checker = InvariantChecker()
        prev, expected, count = GENESIS, 1, 0
        for seq, _at, kind, payload, prev_hash, digest in self.rows():
            count += 1
            if seq != expected:
                return VerifyReport(count, len(checker.jobs), corrupt=LedgerCorrupt(expected, f"missing (next record is {seq})"))
            if prev_hash != prev:
                return VerifyReport(
                    count, len(checker.jobs), corrupt=LedgerCorrupt(seq, "prev_hash does not match the previous record")
                )
            if record_hash(prev_hash, seq, kind, payload) != digest:
                return VerifyReport(count, len(checker.jobs), corrupt=LedgerCorrupt(seq, "hash mismatch (record was altered)"))
            try:
                event = event_from_record(kind, json.loads(payload))
            except (KeyError, TypeError, ValueError) as exc:
                return VerifyReport(count, len(checker.jobs), corrupt=LedgerCorrupt(seq, f"unreadable {kind!r} record ({exc})"))
            found = checker.feed(event, seq)
            if found:
                return VerifyReport(count, len(checker.jobs), violation=found[0])
            prev, expected = digest, seq + 1
        end = checker.finish(expected - 1)
        return VerifyReport(count, len(checker.jobs), violation=end[0] if end else None)

"""The writer's two ways to buffer and its two storage modes write the same ledger.

``Ledger(durable=False)`` (a replay's ledger, written by ``sim/worker.py``) keeps SQLite's
journal in memory and never syncs; ``extend`` buffers a batch in one call. Neither may change a
byte of what is signed: the same records, Merkle root and checkpoint sizes, and the result verifies.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from scheduler.events import Event
from scheduler.ledger import Ledger
from tests.builders import a_job, recording_engine, two_clouds


def _events() -> list[Event]:
    engine, events, clock = recording_engine(two_clouds(azure_h100=8, oci_h100=8))  # announced: the configured record
    for i in range(12):
        engine.submit(a_job().named(f"j{i}").gpus(8).obj())  # placed, declined, queued, ...
        clock.advance(60)
    engine.release("j0")
    engine.cancel("j11")
    return list(events)


def _rows(db: Path) -> list[tuple[int, bytes]]:
    conn = sqlite3.connect(db)
    try:
        return [(seq, bytes(leaf)) for seq, leaf in conn.execute("SELECT seq, leaf FROM records ORDER BY seq")]
    finally:
        conn.close()


def test_a_ledger_that_need_not_survive_a_crash_writes_the_same_records(tmp_path: Path) -> None:
    events = _events()
    key = tmp_path / "keys" / "ledger-signing.key"
    durable = Ledger(tmp_path / "durable.db", signing_key=key, origin="o", checkpoint_interval=0)
    fast = Ledger(tmp_path / "fast.db", signing_key=key, origin="o", checkpoint_interval=0, durable=False)
    for start in range(0, len(events), 7):  # several transactions, each with its checkpoint
        for ev in events[start : start + 7]:
            durable(ev)
        fast.extend(events[start : start + 7])
        assert durable.flush() == fast.flush()
    assert not (tmp_path / "fast.db-wal").exists()  # no write-ahead log: each page is written once
    assert (tmp_path / "durable.db-wal").exists()
    assert fast.root == durable.root and len(fast) == len(durable) == len(events) > 40
    durable.close()
    fast.close()
    assert _rows(tmp_path / "fast.db") == _rows(tmp_path / "durable.db")
    report = Ledger(tmp_path / "fast.db", readonly=True).verify(public_key=tmp_path / "keys" / "ledger-signing.pub",
                                                              allow_unsigned_tail=False)
    assert report.ok, report

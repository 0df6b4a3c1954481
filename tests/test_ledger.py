"""The ledger is a real SQLite file: chain, append-only triggers, tamper detection, replay."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from scheduler.clock import ManualClock
from scheduler.engine import Engine
from scheduler.errors import LedgerError
from scheduler.events import Answered, Placed
from scheduler.ledger import Ledger, record_hash
from tests.builders import a_contract, a_job, two_clouds


def fill(path: Path) -> Ledger:
    ledger = Ledger(path)
    engine = Engine(two_clouds(azure_h100=8), a_contract(), ManualClock())
    engine.subscribe(ledger)
    engine.announce()
    for i in range(4):
        engine.submit(a_job().named(f"j{i}").gpus(8).obj())
    engine.release("j0")
    engine.submit(a_job().named("j4").gpus(8).obj())
    engine.submit(a_job().named("api").cls("api-serving").gpus(8).priority(50).obj())
    ledger.flush()
    return ledger


def tamper(path: Path, sql: str, *args: object) -> None:
    conn = sqlite3.connect(path)
    conn.executescript("DROP TRIGGER ledger_no_update; DROP TRIGGER ledger_no_delete;")
    conn.execute(sql, args)
    conn.commit()
    conn.close()


def test_a_clean_ledger_verifies_and_replays(tmp_path: Path) -> None:
    ledger = fill(tmp_path / "l.db")
    report = ledger.verify()
    assert report.ok, report.line()
    assert report.records == len(ledger) and report.jobs == 6
    kinds = [e.kind for e in ledger.events()]
    assert kinds[0] == "configured" and "preempted" in kinds
    assert ledger.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_ledger_is_append_only_through_sqlite(tmp_path: Path) -> None:
    ledger = fill(tmp_path / "l.db")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        ledger.conn.execute("UPDATE ledger SET kind = 'x' WHERE seq = 2")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        ledger.conn.execute("DELETE FROM ledger WHERE seq = 2")


def test_edited_record_is_named(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    fill(path).close()
    row = sqlite3.connect(path).execute("SELECT seq, payload FROM ledger WHERE kind = 'placed' LIMIT 1").fetchone()
    payload = json.loads(row[1])
    payload["cloud"] = "oci"
    tamper(path, "UPDATE ledger SET payload = ? WHERE seq = ?", json.dumps(payload), row[0])
    report = Ledger(path, readonly=True).verify()
    assert not report.ok and report.corrupt is not None and report.corrupt.seq == row[0]
    assert "altered" in report.line()


def test_deleted_and_reordered_records_are_caught(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    fill(path).close()
    tamper(path, "DELETE FROM ledger WHERE seq = 5")
    report = Ledger(path, readonly=True).verify()
    assert report.corrupt is not None and report.corrupt.seq == 5 and "missing" in report.line()

    path2 = tmp_path / "l2.db"
    fill(path2).close()
    conn = sqlite3.connect(path2)
    rows = conn.execute("SELECT seq, payload, kind FROM ledger WHERE seq IN (3, 4) ORDER BY seq").fetchall()
    conn.close()
    tamper(path2, "UPDATE ledger SET payload = ?, kind = ? WHERE seq = 3", rows[1][1], rows[1][2])
    assert Ledger(path2, readonly=True).verify().corrupt.seq == 3


def test_a_rehashed_forgery_is_caught_by_the_invariant_replay(tmp_path: Path) -> None:
    """An attacker who rewrites the chain still cannot hide a contract breach."""
    path = tmp_path / "l.db"
    ledger = Ledger(path)
    engine = Engine(two_clouds(), a_contract(), ManualClock())
    engine.subscribe(ledger)
    engine.announce()
    engine.submit(a_job().named("x").obj())
    # Forge: rewrite history so the job went to oci after the holder *accepted*.
    events = list(ledger._buffer)
    events = [e for e in events if not isinstance(e, Placed)]
    ans = next(e for e in events if isinstance(e, Answered))
    events.append(Placed(0.0, "x", ans.attempt, "training", "oci", "us-ashburn-1", "H100", 8, 2.9, "after-decline", 0.0))
    ledger._buffer = events
    ledger.flush()
    report = ledger.verify()
    assert report.violation is not None and report.violation.rule == "rofr-order"
    assert report.violation.seq == len(ledger)


def test_hash_function_is_stable() -> None:
    assert record_hash("0" * 64, 1, "k", "{}") == record_hash("0" * 64, 1, "k", "{}")
    assert record_hash("0" * 64, 1, "k", "{}") != record_hash("0" * 64, 2, "k", "{}")


def test_reopening_continues_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    ledger = fill(path)
    n = len(ledger)
    ledger.close()
    again = Ledger(path)
    events = list(again.events())
    engine = Engine.restore(two_clouds(azure_h100=8), a_contract(), ManualClock(), events, [again])
    engine.submit(a_job().named("later").obj())
    again.flush()
    assert len(again) > n and again.verify().ok


def test_not_a_ledger_is_a_clear_error(tmp_path: Path) -> None:
    bogus = tmp_path / "x.db"
    bogus.write_text("hello, this is not sqlite" * 100)
    with pytest.raises(LedgerError, match="not a usable ledger"):
        Ledger(bogus, readonly=True)
    with pytest.raises(LedgerError, match="no such ledger"):
        Ledger(tmp_path / "missing.db", readonly=True)

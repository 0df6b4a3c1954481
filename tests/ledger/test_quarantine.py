"""Never sign what this writer did not write (issue 27, problem 1: the signer launders history).

Each record carries the writer's MAC. A reopened writer signs the records after its last
checkpoint only if their MAC is valid; anything else is quarantined (not signed, not
restored) until an operator adopts or truncates it, and that decision is signed, named by
every later checkpoint and listed by verify.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
from pathlib import Path

import pytest

from scheduler.cli import main
from scheduler.ledger import Ledger
from scheduler.ledger.store import Quarantine
from tests.builders import a_job, two_clouds
from tests.ledger.forgery import World, canonical, raw_sql


def crashed(tmp: Path, jobs: int = 4) -> World:
    """A writer that signed its first operations, then wrote more and died before signing them."""
    w = World(tmp, two_clouds(azure_h100=8), cadence="deferred")
    for i in range(jobs):
        w.clock.advance(5.0)
        w.op(lambda e, i=i: e.submit(a_job().named(f"j{i}").gpus(8).obj()))
    w.ledger.checkpoint_interval = 3600.0
    w.op(lambda e: e.submit(a_job().named("late").gpus(8).obj()))
    w.op(lambda e: e.release("j0"))
    assert w.ledger.unsigned > 0
    with w.ledger._lock:  # the process dies: the idle signer with it
        w.ledger._closed, w.ledger._due = True, None
        w.ledger._idle.notify_all()
    w.ledger.conn.close()
    return w


def signed_size(db: Path) -> int:
    return int(sqlite3.connect(db).execute("SELECT size FROM checkpoints ORDER BY id DESC LIMIT 1").fetchone()[0])


def erase_job(w: World, job: str) -> None:
    """The issue's laundering: someone with the file but no key erases a job from the unsigned tail and renumbers."""
    k = signed_size(w.db)
    recs = w.records()
    keep = recs[:k] + [r for r in recs[k:] if r.get("job") != job]
    raw_sql(w.db, "DELETE FROM records WHERE seq > ?", k)
    conn = sqlite3.connect(w.db)
    conn.executemany("INSERT INTO records VALUES (?, ?, NULL)", [(i, canonical({**r, "seq": i})) for i, r in enumerate(keep[k:], k + 1)])
    conn.commit()
    conn.close()


def cli(*args: str) -> tuple[int, str]:
    try:
        main(list(args))
    except SystemExit as exc:
        return int(exc.code or 0), ""
    return 0, ""


def test_a_reopened_writer_does_not_sign_a_fabricated_tail(tmp_path: Path) -> None:
    w = crashed(tmp_path)
    k = signed_size(w.db)
    erase_job(w, "late")
    n = len(w.records())
    with pytest.raises(Quarantine) as exc:
        Ledger(w.db, signing_key=w.key)
    assert f"{n - k} records after checkpoint {k} are not authenticated (records {k + 1}..{n})" in str(exc.value)
    assert "\n" not in str(exc.value) and "mcsched audit adopt" in str(exc.value)
    assert signed_size(w.db) == k  # nothing signed
    line = w.verify().line()
    assert line.startswith(f"FAIL: record {k + 1}: {n - k} records after checkpoint {k} are not signed"), line


def test_an_edited_record_in_a_crashed_tail_is_quarantined_from_there(tmp_path: Path) -> None:
    """Transactions before the edit carry the writer's MAC and are signed; the edited one's and the rest are not."""
    w = crashed(tmp_path)
    k, n = signed_size(w.db), len(w.records())
    conn = sqlite3.connect(w.db)
    ends = [seq for (seq,) in conn.execute("SELECT seq FROM records WHERE seq > ? AND mac IS NOT NULL ORDER BY seq", (k,))]
    conn.close()
    assert len(ends) >= 2  # two transactions after the checkpoint, each MAC'd on its last record
    edited = ends[-1]  # a record of the last transaction
    start = ends[-2] + 1
    leaf = sqlite3.connect(w.db).execute("SELECT leaf FROM records WHERE seq = ?", (edited,)).fetchone()[0]
    raw_sql(w.db, "UPDATE records SET leaf = ? WHERE seq = ?", bytes(leaf).replace(b'"at":', b'"at":1', 1), edited)
    with pytest.raises(Quarantine, match=f"{n - start + 1} records after checkpoint {start - 1} are not authenticated"):
        Ledger(w.db, signing_key=w.key)
    assert signed_size(w.db) == start - 1


def test_quarantined_records_are_never_restored_from(tmp_path: Path) -> None:
    w = crashed(tmp_path)
    erase_job(w, "late")
    k = signed_size(w.db)
    ledger = Ledger(w.db, signing_key=w.key, operator=True)
    assert ledger.quarantine is not None and len(list(ledger.events())) == k
    ledger(next(iter(ledger.events())))
    with pytest.raises(Quarantine):  # nothing is appended after records nobody vouches for
        ledger.flush()
    ledger.close()


def test_adoption_is_signed_recorded_and_listed_by_verify(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    w = crashed(tmp_path)
    erase_job(w, "late")
    k, n = signed_size(w.db), len(w.records())
    code, _ = cli("audit", "adopt", "--db", str(w.db), "--signing-key", str(w.key), "--why", "restored from backup, ticket 42", "--who", "alice")
    assert code == 0, capsys.readouterr()
    assert f"records {k + 1}..{n} adopted by alice at " in capsys.readouterr().out
    report = w.verify()
    assert report.ok, report.line()
    assert len(report.adopted) == 1 and report.adopted[0].startswith(f"records {k + 1}..{n} adopted by alice at ") and "(restored from backup, ticket 42)" in report.adopted[0]
    assert "operator actions: records" in report.line()
    again = Ledger(w.db, signing_key=w.key)  # the writer goes on; the action stays in every later checkpoint
    again.close()
    assert w.verify().adopted == report.adopted


def test_truncation_removes_the_records_and_is_recorded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    w = crashed(tmp_path)
    erase_job(w, "late")
    k, n = signed_size(w.db), len(w.records())
    assert cli("audit", "truncate", "--db", str(w.db), "--signing-key", str(w.key), "--why", "not ours", "--who", "bob")[0] == 0
    assert len(w.records()) == k
    report = w.verify()
    assert report.ok and report.adopted[0].startswith(f"records {k + 1}..{n} truncated by bob at "), report.line()
    with pytest.raises(sqlite3.IntegrityError):  # the append-only triggers are back
        conn = sqlite3.connect(w.db)
        conn.execute("DELETE FROM records WHERE seq = 1")


def test_a_hidden_action_fails_verify(tmp_path: Path) -> None:
    w = crashed(tmp_path)
    erase_job(w, "late")
    Ledger(w.db, signing_key=w.key, operator=True).resolve("adopt", "why not", "mallory")
    raw_sql(w.db, "DELETE FROM actions")
    assert "names an operator action the ledger does not hold" in w.verify().line()


def test_adopt_needs_a_reason_and_something_to_adopt(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    w = crashed(tmp_path)
    assert cli("audit", "adopt", "--db", str(w.db), "--signing-key", str(w.key))[0] == 2  # --why is required
    assert cli("audit", "adopt", "--db", str(w.db), "--signing-key", str(w.key), "--why", "x")[0] == 1  # nothing quarantined
    assert "no unauthenticated records" in capsys.readouterr().err


def test_files_the_ledger_creates_are_0600(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.op(lambda e: e.submit(a_job().named("a").gpus(8).obj()))
    for name in ("ledger.db", "ledger-signing.key", "ledger-signing.pub", "ledger-mac.key", "ledger.db-wal", "ledger.db-shm"):
        path = tmp_path / name
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, name
    w.close()
    assert len(json.dumps(w.records())) > 0


def test_a_transaction_without_its_mac_is_quarantined(tmp_path: Path) -> None:
    """Strip the MAC of the crashed tail's last transaction: its records are vouched for by nobody."""
    w = crashed(tmp_path)
    n = len(w.records())
    conn = sqlite3.connect(w.db)
    ends = [seq for (seq,) in conn.execute("SELECT seq FROM records WHERE mac IS NOT NULL ORDER BY seq")]
    conn.close()
    assert ends[-1] == n
    raw_sql(w.db, "UPDATE records SET mac = NULL WHERE seq = ?", n)
    with pytest.raises(Quarantine, match=f"{n - ends[-2]} records after checkpoint {ends[-2]} are not authenticated"):
        Ledger(w.db, signing_key=w.key)
    assert signed_size(w.db) == ends[-2]


def test_the_writer_mac_is_hmac_sha256_of_the_transaction() -> None:
    """The cached keyed state gives exactly RFC 2104 HMAC-SHA256 (the standard library's one-shot)."""
    import hmac as std

    from scheduler.ledger.signing import RecordMac, record_mac

    key, leaves = bytes(range(32)), [b'{"a":1}', b'{"b":2}']
    want = std.digest(key, b"o.example/l\n" + b'{"a":1}\n{"b":2}', "sha256")
    assert RecordMac(key, "o.example/l")(leaves) == record_mac(key, "o.example/l", leaves) == want

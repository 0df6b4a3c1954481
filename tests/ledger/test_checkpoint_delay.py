"""Checkpoints within a bounded delay (Certificate Transparency's maximum merge delay).

The writer signs when ``checkpoint_interval`` has passed since the last checkpoint, from a
timer when it idles, and always at ``close()``; records after the last checkpoint are
refused by ``verify`` (checked, with ``allow_unsigned_tail``), and a writer that reopens a
crashed ledger signs them only if the signed prefix is intact and each carries its MAC.
"""

from __future__ import annotations

import itertools
import logging
import sqlite3
import time
from pathlib import Path

import pytest

from scheduler.errors import LedgerError
from scheduler.ledger import Ledger, verify_ledger
from tests.builders import a_job, two_clouds
from tests.ledger.forgery import World, raw_sql


def checkpoint_sizes(db: Path) -> list[int]:
    conn = sqlite3.connect(db)
    try:
        return [r[0] for r in conn.execute("SELECT size FROM checkpoints WHERE size > 0 ORDER BY id")]
    finally:
        conn.close()


def busy_world(tmp: Path, jobs: int = 4) -> World:
    """A deferred-cadence world (checkpoint every other operation on its fake clock) with some work."""
    w = World(tmp, two_clouds(azure_h100=8), cadence="deferred")
    for i in range(jobs):
        w.clock.advance(5.0)
        w.op(lambda e, i=i: e.submit(a_job().named(f"j{i}").gpus(8).obj()))
    return w


def crash(w: World) -> None:
    """The process dies: no close(), nothing more signed (the idle signer dies with it)."""
    with w.ledger._lock:
        w.ledger._closed, w.ledger._due = True, None
        w.ledger._idle.notify_all()
    w.ledger.conn.close()


def test_a_flush_signs_only_when_the_interval_has_passed(tmp_path: Path) -> None:
    mono = [0.0]
    ledger = Ledger(tmp_path / "l.db", signing_key=tmp_path / "k.key", checkpoint_interval=10.0, monotonic=lambda: mono[0])
    from scheduler.clock import ManualClock
    from scheduler.engine import Engine
    from tests.builders import a_contract

    engine = Engine(two_clouds(azure_h100=8), a_contract(), ManualClock())
    engine.subscribe(ledger)
    engine.announce()
    ledger.flush()
    assert checkpoint_sizes(ledger.path) == [1]  # the first flush signs at once
    engine.submit(a_job().named("a").gpus(8).obj())
    mono[0] = 9.9
    ledger.flush()
    assert checkpoint_sizes(ledger.path) == [1] and ledger.unsigned == len(ledger) - 1 > 0
    engine.release("a")
    mono[0] = 10.0
    ledger.flush()  # due: the checkpoint rides in the same transaction and covers every record
    assert checkpoint_sizes(ledger.path) == [1, len(ledger)] and ledger.unsigned == 0
    assert ledger._due is None  # nothing left for the idle signer
    ledger.close()
    assert verify_ledger(tmp_path / "l.db", tmp_path / "k.pub").ok


def test_a_checkpoint_at_least_every_1000_records(tmp_path: Path) -> None:
    """The clock never falls due (an hour's interval): the record count does, at 1,000 unsigned records."""
    w = World(tmp_path, two_clouds(azure_h100=8), cadence="deferred")
    w.ledger.checkpoint_interval = 3600.0
    sizes_before = checkpoint_sizes(w.db)
    for i in range(260):  # ~4 records per submit
        w.op(lambda e, i=i: e.submit(a_job().named(f"j{i}").gpus(1).obj()))
        assert w.ledger.unsigned < 1000
    sizes = checkpoint_sizes(w.db)
    assert len(sizes) > len(sizes_before) and all(b - a < 1000 + 8 for a, b in itertools.pairwise(sizes)), sizes  # the transaction that reaches 1,000 signs
    w.close()


def test_close_always_leaves_a_checkpoint_over_every_record(tmp_path: Path) -> None:
    w = busy_world(tmp_path)
    w.ledger.checkpoint_interval = 3600.0  # nothing more falls due
    w.op(lambda e: e.release("j0"))
    n = len(w.ledger)
    assert w.ledger.unsigned > 0 and checkpoint_sizes(w.db)[-1] < n
    w.close()
    assert checkpoint_sizes(w.db)[-1] == n
    report = w.verify()
    assert report.ok and "not signed" not in report.line(), report.line()


def test_an_idle_writer_signs_within_the_interval(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.db", signing_key=tmp_path / "k.key", checkpoint_interval=0.05)
    from scheduler.clock import ManualClock
    from scheduler.engine import Engine
    from tests.builders import a_contract

    engine = Engine(two_clouds(azure_h100=8), a_contract(), ManualClock())
    engine.subscribe(ledger)
    engine.announce()
    ledger.flush()
    engine.submit(a_job().named("a").gpus(8).obj())
    ledger.flush()
    assert ledger.unsigned > 0  # within the interval of the first checkpoint: not yet
    deadline = time.monotonic() + 5.0
    while ledger.unsigned and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ledger.unsigned == 0, "no checkpoint from the idle timer"
    assert checkpoint_sizes(ledger.path)[-1] == len(ledger)
    report = verify_ledger(ledger.path, tmp_path / "k.pub")
    assert report.ok, report.line()
    ledger.close()


def test_an_unsigned_tail_fails_by_default_and_is_checked_on_request(tmp_path: Path) -> None:
    w = busy_world(tmp_path, jobs=3)
    crash(w)
    signed = checkpoint_sizes(w.db)[-1]
    n = len(w.records())
    assert n > signed
    strict = w.verify().line()
    assert strict.startswith(f"FAIL: record {signed + 1}: {n - signed} records after checkpoint {signed} are not signed (records {signed + 1}..{n})"), strict
    report = w.verify(allow_unsigned_tail=True)
    assert report.ok, report.line()
    assert f"{n - signed} records after the last checkpoint (records {signed + 1}..{n}) are not signed: checked, but not evidence" in report.line()


def test_an_unsigned_tail_is_still_checked_against_the_contract(tmp_path: Path) -> None:
    w = busy_world(tmp_path, jobs=3)
    crash(w)
    signed = checkpoint_sizes(w.db)[-1]
    recs = w.records()
    placed = next(r for r in recs if r["kind"] == "placed" and r["seq"] > signed)
    from tests.ledger.forgery import canonical

    forged = canonical({**placed, "region": "nowhere"})
    raw_sql(w.db, "UPDATE records SET leaf = ? WHERE seq = ?", forged, placed["seq"])
    line = w.verify(allow_unsigned_tail=True).line()
    assert line.startswith(f"FAIL: record {placed['seq']}: placement-mismatch") and "after the last signed checkpoint" in line, line


def test_a_reopened_writer_signs_a_crashed_tail(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    w = busy_world(tmp_path, jobs=3)
    crash(w)
    n = len(w.records())
    with caplog.at_level(logging.WARNING):
        ledger = Ledger(w.db, signing_key=w.key)
    assert ledger.unsigned == 0 and ledger.checkpoint is not None and ledger.checkpoint.size == n
    assert "carry this writer's MAC" in caplog.text
    ledger.close()
    report = w.verify()
    assert report.ok, report.line()


def test_a_reopened_writer_refuses_an_altered_signed_prefix(tmp_path: Path) -> None:
    w = busy_world(tmp_path, jobs=3)
    crash(w)
    leaf = sqlite3.connect(w.db).execute("SELECT leaf FROM records WHERE seq = 2").fetchone()[0]
    raw_sql(w.db, "UPDATE records SET leaf = ? WHERE seq = 2", bytes(leaf).replace(b'"at":', b'"at":1', 1))
    with pytest.raises(LedgerError, match="records and checkpoints disagree"):
        Ledger(w.db, signing_key=w.key)
    assert len(checkpoint_sizes(w.db)) == len(set(checkpoint_sizes(w.db)))  # nothing signed
    assert not w.verify().ok


def test_per_operation_cadence_signs_every_flush(tmp_path: Path) -> None:
    w = World(tmp_path, two_clouds(azure_h100=8))
    for i in range(3):
        w.op(lambda e, i=i: e.submit(a_job().named(f"j{i}").gpus(8).obj()))
        assert w.ledger.unsigned == 0
    w.close()
    assert len(checkpoint_sizes(w.db)) == 4 and sqlite3.connect(w.db).execute("SELECT min(size) FROM checkpoints").fetchone() == (0,)


def test_plan_db_signs_every_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``plan --db`` writes all its operations within one interval: close() must sign them."""
    from scheduler.cli import main
    from scheduler.paths import examples_dir

    home = tmp_path / "home"
    monkeypatch.setenv("MCSCHED_HOME", str(home))
    try:
        main(["plan", str(examples_dir() / "jobs" / "mixed.yaml"), "--db", str(tmp_path / "plan.db")])
    except SystemExit as exc:
        assert not exc.code
    n = sqlite3.connect(tmp_path / "plan.db").execute("SELECT count(*) FROM records").fetchone()[0]
    assert n > 1 and checkpoint_sizes(tmp_path / "plan.db")[-1] == n
    assert verify_ledger(tmp_path / "plan.db", home / "ledger-signing.pub").ok


def test_the_live_scheduler_signs_within_the_interval(tmp_path: Path) -> None:
    """The service never closes its ledger (the actor is killed): the idle timer must sign."""
    from tests.integration.conftest import job_doc
    from tests.runtime.test_service import FakeGangs, Svc

    s = Svc(tmp_path / "l.db", FakeGangs())
    s("submit", [job_doc("a", gpus=8)], True)
    s("submit", [job_doc("b", gpus=8)], True)
    ledger = s.svc.ledger
    assert ledger is not None and len(ledger) > 1
    deadline = time.monotonic() + 5.0
    while ledger.unsigned and time.monotonic() < deadline:
        time.sleep(0.02)
    assert ledger.unsigned == 0 and ledger.checkpoint is not None and ledger.checkpoint.size == len(ledger)
    report = verify_ledger(tmp_path / "l.db", tmp_path / "ledger-signing.pub")
    assert report.ok, report.line()
    ledger.close()

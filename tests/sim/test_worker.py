"""The replay's worker process (``mcsched simulate``): its ledger holds the very records the
in-process writer would, verifies and seals; its checker finds what the in-process one finds; its errors are one line."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from scheduler.errors import LedgerError
from scheduler.ledger import Ledger
from scheduler.ledger.compact import is_sealed, readable
from scheduler.loading import load_catalog, load_contract
from scheduler.paths import default_catalog, default_contract
from scheduler.sim.simulator import Simulation
from scheduler.sim.traces import TraceJob
from scheduler.sim.worker import ReplayWorker


def _leaves(db: Path) -> list[tuple[int, bytes]]:
    with readable(db) as path:
        conn = sqlite3.connect(path)
        try:
            return [(seq, bytes(leaf)) for seq, leaf in conn.execute("SELECT seq, leaf FROM records ORDER BY seq")]
        finally:
            conn.close()


def _replay(sinks: list[object], flush: object) -> None:
    catalog = load_catalog(default_catalog())
    sim = Simulation(catalog, load_contract(default_contract(), catalog), "contract", sinks=sinks)  # type: ignore[arg-type]
    classes = ("api-serving", "inference", "training")
    # enough jobs to queue, preempt and spill, with times that make exponents and tiny floats in the records
    sim.add_jobs(TraceJob(f"j{i}", i * 7.5 + 1e-5 * (i % 3), 1 + i % 8, 600.0 + i + 1e-6 * (i % 5), classes[i % 3])
                 for i in range(400))
    sim.run(flush=flush, flush_every=64, horizon=6000.0)  # type: ignore[arg-type]


@pytest.mark.parametrize("sealed", [False, True])
def test_the_worker_writes_the_records_the_in_process_one_writes(tmp_path: Path, sealed: bool) -> None:
    here = Ledger(tmp_path / "here.db", signing_key=tmp_path / "k1" / "ledger-signing.key")
    there = ReplayWorker(tmp_path / "there.db", signing_key=tmp_path / "k2" / "ledger-signing.key",
                             seal_to=tmp_path / "there.db.zst" if sealed else None)

    def flush() -> None:
        here.flush()
        there.flush()

    _replay([here, there.sink], flush)
    here.flush()
    here.close()
    there.end()
    there.wait()
    db = tmp_path / ("there.db.zst" if sealed else "there.db")
    assert is_sealed(db) == sealed and (tmp_path / "there.db").exists() != sealed  # sealed: the plain file is gone
    mine, theirs = _leaves(tmp_path / "here.db"), _leaves(db)
    assert len(mine) > 1500 and mine == theirs  # byte for byte (only the keys, origins and MACs differ)
    with readable(db) as path:
        report = Ledger(path, readonly=True).verify(public_key=tmp_path / "k2" / "ledger-signing.pub", allow_unsigned_tail=False)
    assert report.ok, report


def test_a_writer_that_cannot_open_the_ledger_is_one_ledger_error(tmp_path: Path) -> None:
    bad = tmp_path / "not-a-ledger.db"
    bad.write_bytes(b"this is not SQLite" * 100)
    with pytest.raises(LedgerError, match=r"not-a-ledger\.db") as err:
        ReplayWorker(bad, signing_key=tmp_path / "k" / "ledger-signing.key")
    assert "\n" not in str(err.value)


def test_a_writer_that_fails_midway_is_reported_at_the_next_call(tmp_path: Path) -> None:
    led = ReplayWorker(tmp_path / "l.db", signing_key=tmp_path / "k" / "ledger-signing.key",
                           seal_to=tmp_path / "missing-dir" / "l.db.zst")  # sealing fails: no such folder
    _replay([led.sink], led.flush)
    led.end()
    with pytest.raises(LedgerError, match="ledger writer failed: FileNotFoundError"):
        led.wait()


def test_abort_stops_the_writer(tmp_path: Path) -> None:
    led = ReplayWorker(tmp_path / "l.db", signing_key=tmp_path / "k" / "ledger-signing.key")
    led.abort()
    with pytest.raises(LedgerError, match="aborted"):
        led.wait()


def test_the_worker_checks_the_stream_as_the_in_process_checker_does(tmp_path: Path) -> None:
    """``cheapest`` breaks the contract's rules all the time: the worker's violations are the in-process checker's, in order
    (worded as ``audit verify`` words them: a value as recorded, ``'policy-ignores-contract'``, not the engine's enum member)."""
    catalog = load_catalog(default_catalog())
    contract = load_contract(default_contract(), catalog)
    worker = ReplayWorker(None, check=True)
    sim = Simulation(catalog, contract, "cheapest", sinks=[worker.sink])  # check=True: the in-process checker too
    classes = ("api-serving", "inference", "training")
    sim.add_jobs(TraceJob(f"j{i}", i * 5.0, 1 + i % 8, 900.0 + i, classes[i % 3]) for i in range(300))
    sim.run(flush=worker.flush, flush_every=50)
    worker.end()
    theirs = worker.wait()
    mine = sim.rec.checker.violations
    assert theirs is not None and len(mine) > 50
    assert [(v.seq, v.rule, v.job) for v in theirs] == [(v.seq, v.rule, v.job) for v in mine]
    other = Simulation(catalog, contract, "cheapest", check=False)
    other.adopt_checks(theirs)
    assert other.rec.check and other.rec.checker.violations == theirs

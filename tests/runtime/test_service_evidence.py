"""The live service's evidence (issue 27): it submits its checkpoints to witnesses in the
background and exports the witness lag; a ledger with records it cannot vouch for keeps the
actor up, restores nothing, refuses decisions with the one line and exports their count."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest

from scheduler.errors import LedgerError
from scheduler.ledger import Ledger
from scheduler.ledger.signing import load_or_create_key, log_verifier
from scheduler.ledger.trust import Trust
from scheduler.ledger.verify import verify_ledger
from scheduler.ledger.witness import Witness, open_witness, serve
from scheduler.metrics import Metrics
from scheduler.runtime.service import SchedulerService
from tests.builders import a_contract, two_clouds
from tests.integration.conftest import job_doc
from tests.ledger.forgery import raw_sql

ORIGIN = "test.example/service-ledger"


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The service's state dir, its origin pinned and its signing key made first (witnesses follow it)."""
    monkeypatch.setenv("MCSCHED_LEDGER_ORIGIN", ORIGIN)
    monkeypatch.delenv("MCSCHED_WITNESS_URLS", raising=False)
    load_or_create_key(tmp_path / "ledger-signing.key")
    return tmp_path


def log_vkey(state: Path) -> str:
    return log_verifier(ORIGIN, load_or_create_key(state / "ledger-signing.key").public_key()).vkey()


@pytest.fixture
def witnesses(state: Path) -> Iterator[list[tuple[str, Witness]]]:
    """Two loopback HTTP witnesses following the service's log, each with its own key and state."""
    servers, out = [], []
    for i in (1, 2):
        w = open_witness(f"azure.example/w{i}", state / f"w{i}.key", state / f"w{i}-state.json", [log_vkey(state)])
        server = serve(w, "127.0.0.1", 0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        out.append((f"http://127.0.0.1:{server.server_address[1]}", w))
    yield out
    for server in servers:
        server.shutdown()
        server.server_close()


class Svc:
    def __init__(self, state: Path, witnesses: list[str] | None = None) -> None:
        self.svc = SchedulerService(
            two_clouds(azure_h100=8).model_dump(mode="json", by_alias=True),
            a_contract().model_dump(mode="json", by_alias=True),
            str(state / "ledger.db"),
            metrics_port=None,
            witnesses=witnesses,
        )
        self.loop = asyncio.new_event_loop()

    def __call__(self, method: str, *args: Any) -> Any:
        return self.loop.run_until_complete(getattr(self.svc, method)(*args))

    def metric(self, name: str) -> float:
        assert self.svc.metrics is not None
        value = self.svc.metrics.registry.get_sample_value(name)
        assert value is not None, name
        return value

    def close(self) -> None:
        if self.svc.cosigner is not None:
            self.svc.cosigner.stop()
        if self.svc.ledger is not None:
            self.svc.ledger.close()
        self.loop.close()


def wait_for(what: Callable[[], bool], seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while not what():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def cosignatures(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM cosignatures").fetchone()[0])
    finally:
        conn.close()


def test_the_service_gets_its_checkpoints_cosigned_and_exports_the_witness_lag(state: Path, witnesses: list) -> None:
    (u1, w1), (u2, w2) = witnesses
    s = Svc(state, witnesses=[u1, u2])
    try:
        assert s("submit", [job_doc("a", gpus=8)])["ok"]
        assert s.metric("mcsched_ledger_witnesses") == 2
        s.svc.ledger.sign()  # type: ignore[union-attr]  # the idle timer would, within a second
        assert wait_for(lambda: s.svc.cosigner is not None and s.svc.cosigner.lag() == 0 and cosignatures(state / "ledger.db") >= 2)
        assert s.metric("mcsched_ledger_witness_lag_seconds") == 0
        assert "mcsched_ledger_witness_lag_seconds 0.0" in generate_latest(s.svc.metrics.registry).decode()  # type: ignore[union-attr]
    finally:
        s.close()
    trust = Trust(log_verifier(ORIGIN, load_or_create_key(state / "ledger-signing.key").public_key()), (w1.verifier, w2.verifier), 2, source="test")
    report = verify_ledger(state / "ledger.db", trust=trust)
    assert report.ok and "cosigned by 2 of 2 witnesses (quorum 2)" in report.line(), report.line()


def test_a_down_witness_delays_cosigning_never_a_decision_and_shows_as_lag(state: Path, witnesses: list) -> None:
    (u1, _), _ = witnesses
    s = Svc(state, witnesses=[u1, "http://127.0.0.1:9"])  # the discard port: nobody listens
    try:
        t = time.perf_counter()
        for i in range(3):
            assert s("submit", [job_doc(f"j{i}", gpus=1)])["ok"]
        assert time.perf_counter() - t < 2.0  # no decision waited for the witness
        assert wait_for(lambda: cosignatures(state / "ledger.db") >= 1)  # the live witness cosigned
        assert wait_for(lambda: s.metric("mcsched_ledger_witness_lag_seconds") > 0.05)
    finally:
        s.close()


def test_without_a_witness_the_service_says_so_in_its_metrics(state: Path, caplog: pytest.LogCaptureFixture) -> None:
    s = Svc(state)
    try:
        assert s("ping")["quarantined"] is None
        assert s.svc.cosigner is None
        assert s.metric("mcsched_ledger_witnesses") == 0 and s.metric("mcsched_ledger_witness_lag_seconds") == 0
        assert "not cosigned" in caplog.text
    finally:
        s.close()


def test_witness_urls_come_from_the_environment_when_not_given(state: Path, witnesses: list, monkeypatch: pytest.MonkeyPatch) -> None:
    (u1, _), (u2, _) = witnesses
    monkeypatch.setenv("MCSCHED_WITNESS_URLS", f"{u1}, {u2}")
    s = Svc(state)
    try:
        s("ping")
        assert s.svc.cosigner is not None and s.svc.cosigner.urls == [u1, u2]
        assert wait_for(lambda: cosignatures(state / "ledger.db") >= 2)
    finally:
        s.close()


def test_lag_metric_reads_the_cosigner_at_each_scrape() -> None:
    m = Metrics()
    lag = [0.0]
    m.ledger.watch_witnesses(1, lambda: lag[0])
    assert m.registry.get_sample_value("mcsched_ledger_witness_lag_seconds") == 0
    lag[0] = 7.5
    assert m.registry.get_sample_value("mcsched_ledger_witness_lag_seconds") == 7.5


def quarantined_ledger(state: Path) -> Path:
    """A ledger the service wrote, then a record appended by someone without the MAC key."""
    s = Svc(state)
    assert s("submit", [job_doc("a", gpus=8)])["ok"]
    s.close()
    db = state / "ledger.db"
    conn = sqlite3.connect(db)
    (seq, leaf) = conn.execute("SELECT seq, leaf FROM records ORDER BY seq DESC LIMIT 1").fetchone()
    conn.close()
    raw_sql(db, "INSERT INTO records VALUES (?, ?, NULL)", seq + 1, leaf.replace(f'"seq":{seq}'.encode(), f'"seq":{seq + 1}'.encode()))
    return db


def test_a_quarantined_ledger_keeps_the_actor_up_refuses_decisions_and_exports_the_count(state: Path) -> None:
    db = quarantined_ledger(state)
    s = Svc(state)
    try:
        pong = s("ping")  # the actor answers (Ray would not restart it in a loop), restoring nothing
        assert pong["jobs"] == 0 and "1 records after checkpoint" in pong["quarantined"] and "not authenticated" in pong["quarantined"]
        assert s.svc.engine is None
        assert s.metric("mcsched_ledger_unauthenticated_records") == 1
        with pytest.raises(LedgerError, match=r"not authenticated.*mcsched audit adopt"):
            s("submit", [job_doc("b", gpus=1)])
        with pytest.raises(LedgerError, match="not authenticated"):
            s("status", None)
        # The operator decides; the running actor picks it up on a later request.
        Ledger(db, operator=True, home=state).resolve("truncate", "test: a record nobody wrote")
        s.svc._quarantine_checked = 0.0  # as if QUARANTINE_RECHECK_SECONDS had passed
        assert s("ping")["quarantined"] is None
        assert s.metric("mcsched_ledger_unauthenticated_records") == 0
        assert [d["job"] for d in s("status", None)] == ["a"]
        assert s("submit", [job_doc("b", gpus=1)])["ok"]
    finally:
        s.close()

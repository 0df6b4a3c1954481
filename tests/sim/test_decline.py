"""The holder's decline rate (``--holder-decline-rate``): the share observed is the share asked for,
the same seed declines the same offers, and the ROFR still holds (a declined movable job spills only
after the recorded decline; api-serving never leaves the holder)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from scheduler.events import Answered, Configured, Event, Placed
from scheduler.invariants import InvariantChecker
from scheduler.sim.policies import with_holder_declines
from scheduler.sim.simulator import Simulation
from scheduler.sim.summary import summarise
from scheduler.sim.traces import TraceJob
from scheduler.specs import CloudCatalog
from tests.builders import a_catalog, a_contract
from tests.cli_runner import run_joined

N = 2000


def roomy(rate: float, seed: int = 0) -> CloudCatalog:
    """A holder with room for every job (so each offer is one it could accept) and a cloud to spill to."""
    catalog = (
        a_catalog()
        .cloud("azure", {"eastus": {"H100": 4096}}, price=3.6, latency=2, startup=120)
        .cloud("oci", {"us-ashburn-1": {"H100": 4096}}, price=1.8, latency=3, startup=60)
        .obj()
    )
    return with_holder_declines(catalog, "azure", rate, seed)


def jobs(api_every: int = 0) -> list[TraceJob]:
    return [
        TraceJob(f"j{i}", i * 10.0, 1 + i % 4, 600.0, "api-serving" if api_every and i % api_every == 0 else "training")
        for i in range(N)
    ]


def replay(rate: float, seed: int = 0, api_every: int = 0) -> tuple[dict[str, Any], list[Event]]:
    events: list[Event] = []
    sim = Simulation(roomy(rate, seed), a_contract(), sinks=[events.append])
    sim.add_jobs(jobs(api_every))
    sim.run()
    return summarise(sim, {"H100"}), events


def discretion(events: list[Event]) -> list[str]:
    return [e.job for e in events if isinstance(e, Answered) and e.reason == "at-discretion"]


@pytest.mark.parametrize("rate", [0.1, 0.3, 0.7])
def test_the_observed_decline_rate_is_the_one_asked_for(rate: float) -> None:
    s, events = replay(rate)
    answers = [e for e in events if isinstance(e, Answered)]
    assert len(answers) == N  # the holder had room every time: one offer per job
    declined = len(discretion(events))
    # binomial: the standard deviation is at most sqrt(0.25 / 2000) ~ 0.011; four of them
    assert declined / N == pytest.approx(rate, abs=0.045)
    assert s["rofr"]["declineAndLapseReasons"] == {"declined: at-discretion": declined}
    assert s["contractViolations"] == {}


def test_every_declined_job_spills_after_its_recorded_decline_and_no_other_does() -> None:
    _, events = replay(0.3)
    declined = set(discretion(events))
    answered: dict[tuple[str, int], str] = {}
    off_holder = set()
    for e in events:
        if isinstance(e, Answered):
            answered[(e.job, e.attempt)] = e.answer
        elif isinstance(e, Placed) and e.cloud != "azure":
            assert answered.get((e.job, e.attempt)) == "declined", f"{e.job} placed on {e.cloud} without a decline in attempt {e.attempt}"
            assert e.via == "after-decline"
            off_holder.add(e.job)
    assert off_holder == declined and declined


def test_api_serving_is_declined_too_but_never_spills() -> None:
    s, events = replay(0.5, api_every=2)
    api = {f"j{i}" for i in range(0, N, 2)}
    assert set(discretion(events)) & api, "the holder declines API offers at the same rate"
    for e in events:
        if isinstance(e, Placed) and e.job in api:
            assert e.cloud == "azure"
    assert sum(s["neverStarted"].values()) == 0  # every declined API job started on a later offer
    assert s["contractViolations"] == {}
    # a declined API job waits for its next offer: its first wait is longer than an accepted one's (2 s answer + 120 s start-up)
    assert s["waitSeconds"]["api-serving"]["first"]["max"] > 122.0


def test_the_same_seed_declines_the_same_offers_and_another_seed_others() -> None:
    _, a = replay(0.3, seed=1)
    _, b = replay(0.3, seed=1)
    _, c = replay(0.3, seed=2)
    assert discretion(a) == discretion(b)
    assert discretion(a) != discretion(c)


def test_no_decline_rate_is_the_engine_as_before() -> None:
    s, events = replay(0.0)
    assert discretion(events) == []
    assert all(e.cloud == "azure" for e in events if isinstance(e, Placed))
    assert s["rofr"]["declineAndLapseReasons"] == {}


def test_the_checker_re_derives_every_decline_at_discretion() -> None:
    """Each decline is a pure function of (declineSeed, job, attempt): the shared checker finds the
    same ones, and calls each a false answer once the configured holder declines nothing, or
    when a decline is moved to an offer whose draw accepts."""
    _, events = replay(0.3)
    assert discretion(events)
    configured = events[0]
    assert isinstance(configured, Configured)
    spec = configured.catalog["spec"]
    without = {**configured.catalog, "spec": {**spec, "backends": [
        {**b, "holderRules": {**b["holderRules"], "declineFraction": 0.0}} for b in spec["backends"]]}}
    edited = [Configured(configured.at, catalog=without, contract=configured.contract), *events[1:]]
    reseeded = {**configured.catalog, "spec": {**spec, "backends": [
        {**b, "holderRules": {**b["holderRules"], "declineSeed": b["holderRules"].get("declineSeed", 0) + 1}} for b in spec["backends"]]}}
    moved = [Configured(configured.at, catalog=reseeded, contract=configured.contract), *events[1:]]
    for stream, clean in ((events, True), (edited, False), (moved, False)):
        checker = InvariantChecker()
        feed = checker.watch()
        for e in stream:
            feed(e)
        bad = [v for v in checker.violations if v.rule == "holder-answer"]
        assert (not bad) == clean, bad[:2]
    assert len([v for v in _violations(edited) if v.rule == "holder-answer"]) >= 1


def _violations(stream: list) -> list:
    checker = InvariantChecker()
    feed = checker.watch()
    for e in stream:
        feed(e)
    return checker.violations


def test_the_cli_takes_a_decline_rate_and_refuses_a_bad_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = tmp_path / "t.csv"
    trace.write_text("t,n,d,c\n" + "".join(f"{i * 30},{1 + i % 4},600,{'api-serving' if i % 4 == 0 else 'training'}\n" for i in range(200)))
    base = ["simulate", "--trace", str(trace), "--format", "csv", "--columns", "arrival=t,gpus=n,duration=d,class=c", "--no-plots"]
    code, text = run_joined(capsys, *base, "--out", str(tmp_path / "bad"), "--holder-decline-rate", "1.5")
    assert code == 2 and len(text.splitlines()) == 1 and "--holder-decline-rate" in text, text
    assert not (tmp_path / "bad").exists()
    runs = []
    for name, seed in (("a", "3"), ("b", "3")):
        code, text = run_joined(capsys, *base, "--out", str(tmp_path / name), "--holder-decline-rate", "0.25", "--seed", seed)
        assert code == 0, text
        runs.append(json.loads((tmp_path / name / "summary.json").read_text()))
        assert "holder declines 25% of the offers it has room for" in (tmp_path / name / "report.md").read_text()
    assert runs[0]["rofr"] == runs[1]["rofr"] and runs[0]["rofr"]["declineAndLapseReasons"].get("declined: at-discretion", 0) > 0
    assert sum(runs[0]["contractViolations"].values()) == 0


def test_a_ledger_with_declines_at_discretion_verifies(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = tmp_path / "t.csv"
    trace.write_text("t,n,d\n" + "".join(f"{i * 30},2,600\n" for i in range(100)))
    code, text = run_joined(capsys, "simulate", "--trace", str(trace), "--format", "csv", "--columns", "arrival=t,gpus=n,duration=d", "--no-plots",
                            "--out", str(tmp_path / "o"), "--holder-decline-rate", "0.5", "--ledger", str(tmp_path / "l.db.zst"))
    assert code == 0, text
    assert "warning: the ledger" not in text
    ledgers = sorted(tmp_path.glob("l*.zst"))
    assert ledgers, list(tmp_path.iterdir())
    code, text = run_joined(capsys, "audit", "verify", "--db", str(ledgers[0]), "--public-key", f"{ledgers[0]}.pub")
    assert code == 0 and ": OK: " in text and "contract holds for 100 jobs" in text, text

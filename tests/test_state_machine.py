"""A stateful model of the scheduler under faults, checked at every step.

Rules interleave submissions, finishes, cancels, holder slowness (lapses), backend
outages and returns, capacity flapping, preemption, and restarts from the SQLite ledger
(the state store). After every step the DESIGN.md invariants must hold on the recorded
stream, the engine's books must balance, and no acknowledged job may be lost.
At least 10,000 executed steps run in CI (counted, and asserted).
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule, run_state_machine_as_test

from scheduler.clock import ManualClock
from scheduler.engine import Engine
from scheduler.errors import AdmissionError
from scheduler.invariants import InvariantChecker
from scheduler.ledger import Ledger
from scheduler.model import Job
from tests.builders import a_catalog, a_contract
from tests.strategies import sized
from tests.test_invariants import check_internal

STEPS = 80
PROGRAMS = 300
MIN_STEPS = 10_000
executed = {"steps": 0}


def world():
    return (
        a_catalog()
        .cloud("azure", {"eastus": {"H100": 16, "H200": 8}, "westus": {"H100": 8}}, price=3.4, latency=2.0,
               rules={"reserveForApiServingFraction": 0.25})
        .cloud("oci", {"ashburn": {"H100": 16}}, price=2.9, startup=60, latency=3.0)
        .cloud("stargate", {"abilene": {"H200": 16}}, price=3.3, startup=90)
        .cloud("aws", {"us-east-1": {"H100": 8}}, price=3.9, startup=30, jurisdiction="EU")
        .obj()
    )


class SchedulerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="mcsched-sm-"))
        self.catalog = world()
        self.names = itertools.count()  # per program, so hypothesis replays draw identically

    @initialize(mode=st.sampled_from(["first-look", "match"]), on_lapse=st.sampled_from(["deemed-declined", "queue"]), preempt=st.booleans())
    def start(self, mode: str, on_lapse: str, preempt: bool) -> None:
        self.contract = a_contract(mode=mode, window=10.0, on_lapse=on_lapse, preemption=preempt)
        self.clock = ManualClock()
        self.ledger = Ledger(self.tmp / "ledger.db")
        self.checker = InvariantChecker()
        self.seen = 0
        self.engine = Engine(self.catalog, self.contract, self.clock)
        self.engine.subscribe(self.ledger)
        self.engine.announce()
        self.acked: set[str] = set()
        self.ledger.flush()

    def _commit(self) -> None:
        self.ledger.flush()
        executed["steps"] += 1

    @rule(cls=st.sampled_from(["training", "inference", "api-serving"]), gpus=st.sampled_from([1, 2, 4, 8, 16]),
          gpu_type=st.sampled_from(["H100", "H200"]), priority=st.integers(-1, 3), jurisdiction=st.sampled_from([None, "US", "EU"]))
    def submit(self, cls: str, gpus: int, gpu_type: str, priority: int, jurisdiction: str | None) -> None:
        job = Job(name=f"j{next(self.names):04d}", cls=cls, gpus=gpus, gpu_type=gpu_type, priority=priority, jurisdiction=jurisdiction)
        before = len(self.engine.jobs)
        try:
            self.engine.submit(job)
            self.acked.add(job.name)
        except AdmissionError:
            assert len(self.engine.jobs) == before
        self._commit()

    @precondition(lambda self: any(r.state == "running" for r in self.engine.jobs.values()))
    @rule(pick=st.integers(0, 10**6), cancel=st.booleans())
    def finish(self, pick: int, cancel: bool) -> None:
        running = sorted(n for n, r in self.engine.jobs.items() if r.state == "running")
        name = running[pick % len(running)]
        self.engine.cancel(name) if cancel else self.engine.release(name)
        self._commit()

    @precondition(lambda self: len(self.engine.queue) > 0)
    @rule(pick=st.integers(0, 10**6))
    def cancel_queued(self, pick: int) -> None:
        queued = sorted(self.engine.queue.names())
        self.engine.cancel(queued[pick % len(queued)])
        self._commit()

    @rule(slow=st.booleans())
    def holder_slowness(self, slow: bool) -> None:
        self.engine.set_backend("azure", extra_latency_seconds=60.0 if slow else 0.0)
        self._commit()

    @rule(cloud=st.sampled_from(["azure", "oci", "stargate", "aws"]), up=st.booleans())
    def outage(self, cloud: str, up: bool) -> None:
        self.engine.set_backend(cloud, up=up)
        self._commit()

    @rule(pool=st.sampled_from([("oci", "ashburn", "H100"), ("azure", "eastus", "H100"), ("stargate", "abilene", "H200")]),
          capacity=st.sampled_from([0, 4, 8, 16, 24]))
    def capacity_flap(self, pool: tuple[str, str, str], capacity: int) -> None:
        self.engine.set_capacity(*pool, capacity)
        self._commit()

    @rule(seconds=st.floats(0, 7200))
    def tick(self, seconds: float) -> None:
        self.clock.advance(seconds)
        executed["steps"] += 1

    @rule()
    def restart_from_the_store(self) -> None:
        """Crash and recover: close the SQLite ledger, reopen it, rebuild the engine from it."""
        self.ledger.close()
        self.ledger = Ledger(self.ledger.path)
        events = list(self.ledger.events())
        old = {n: r.state for n, r in self.engine.jobs.items()}
        self.engine = Engine.restore(self.catalog, self.contract, self.clock, events, [self.ledger])
        assert {n: r.state for n, r in self.engine.jobs.items()} == old
        self._commit()

    @invariant()
    def contract_holds(self) -> None:
        if not hasattr(self, "engine"):
            return
        rows = list(self.ledger.events())[self.seen:]
        for seq, ev in enumerate(rows, self.seen + 1):
            found = self.checker.feed(ev, seq)
            assert not found, found
        self.seen += len(rows)
        check_internal(self.engine)
        states = {n: self.engine.jobs[n].state for n in self.acked}
        assert all(s in ("running", "queued", "finished", "cancelled") for s in states.values()), states

    def teardown(self) -> None:
        try:
            if hasattr(self, "ledger"):
                assert self.ledger.verify().ok
                self.ledger.close()
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)


@pytest.mark.parametrize("min_steps", sized(quick=MIN_STEPS // 4, full=MIN_STEPS))
def test_state_machine_runs_at_least_10000_steps_with_faults_and_restarts(min_steps: int) -> None:
    """At least 10,000 steps in the full run (a quarter of them in the quick profile)."""
    executed["steps"] = 0
    config = settings(
        max_examples=PROGRAMS * min_steps // MIN_STEPS, stateful_step_count=STEPS, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    rounds = 0
    while executed["steps"] < min_steps and rounds < 10:  # hypothesis picks program lengths; top up until the floor
        run_state_machine_as_test(SchedulerMachine, settings=config)
        rounds += 1
    assert executed["steps"] >= min_steps, executed

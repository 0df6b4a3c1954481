"""DESIGN.md's invariants under random catalogs, contracts, workloads and faults.

The checker is independent of the engine (it re-derives every rule from the recorded
events), and the negative tests below prove it catches each kind of violation, so a
green property test means something.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler.clock import ManualClock
from scheduler.engine import RUNNING, Engine
from scheduler.errors import AdmissionError
from scheduler.events import Answered, Event, Offered, Placed, Preempted, Submitted
from scheduler.invariants import InvariantChecker
from tests.builders import a_contract, a_job, recording_engine, two_clouds
from tests.strategies import catalogs, contracts, jobs, ops


def check_internal(engine: Engine) -> None:
    """The engine's own books balance: pools equal the sum of running gangs, queue equals queued."""
    for key, pool in engine.inventory.pools.items():
        running = engine.running[key]
        assert pool.allocated == sum(r.job.gpus for r in running.values())
        assert 0 <= pool.allocated <= pool.capacity
        assert all(r.state == RUNNING and r.pool is pool for r in running.values())
    queued = {n for n, r in engine.jobs.items() if r.state == "queued"}
    assert queued == set(engine.queue.names())


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data(), catalog=catalogs(), contract=contracts())
def test_invariants_hold_for_random_streams(data: st.DataObject, catalog, contract) -> None:
    clock = ManualClock()
    engine = Engine(catalog, contract, clock)
    checker = InvariantChecker()
    events: list[Event] = []

    def sink(ev: Event) -> None:
        events.append(ev)
        found = checker.feed(ev, len(events))
        assert not found, found

    engine.subscribe(sink)
    engine.announce()
    accepted: set[str] = set()
    for i, (op, arg) in enumerate(data.draw(st.lists(ops(catalog), max_size=40), label="ops")):
        before = len(events)
        if op == "submit":
            job = data.draw(jobs(f"j{i}", catalog))
            try:
                engine.submit(job)
                accepted.add(job.name)
            except AdmissionError:
                assert len(events) == before  # a refused request changes nothing
        elif op in ("release", "cancel"):
            live = sorted(
                n for n, r in engine.jobs.items() if r.state in (("running",) if op == "release" else ("running", "queued"))
            )
            if live:
                name = live[arg % len(live)]
                engine.release(name) if op == "release" else engine.cancel(name)
        elif op == "backend":
            cloud, up, extra = arg
            engine.set_backend(cloud, up=up, extra_latency_seconds=extra)
        elif op == "capacity":
            (cloud, region, sku), cap = arg
            engine.set_capacity(cloud, region, sku, cap)
        else:
            clock.advance(arg)
        check_internal(engine)
    assert checker.finish() == []
    # No acknowledged job is lost: each is placed, queued, or ended on purpose.
    assert {n for n in accepted if engine.jobs[n].state in ("running", "queued", "finished", "cancelled")} == accepted
    restored = Engine.restore(catalog, contract, clock, events)
    assert [(p.key, p.allocated, p.capacity) for p in restored.inventory.pools.values()] == [
        (p.key, p.allocated, p.capacity) for p in engine.inventory.pools.values()
    ]
    assert {n: r.state for n, r in restored.jobs.items()} == {n: r.state for n, r in engine.jobs.items()}


# --------------------------------------------------------------------- the checker has teeth


def violations(events: list[Event]) -> list[str]:
    checker = InvariantChecker()
    for seq, ev in enumerate(events, 1):
        checker.feed(ev, seq)
    checker.finish(len(events))
    return [v.rule for v in checker.violations]


@pytest.fixture
def world() -> tuple[list[Event], Engine]:
    engine, events, _ = recording_engine(two_clouds(azure_h100=8))
    return events, engine


def submitted(name: str = "x", cls: str = "training", gpus: int = 8) -> Submitted:
    job = a_job().named(name).cls(cls).gpus(gpus).obj()
    return Submitted(0.0, name, cls, gpus, "H100", 0, job.to_dict())


def placed(name: str, cloud: str, attempt: int = 1, gpus: int = 8, cls: str = "training") -> Placed:
    region = "eastus" if cloud == "azure" else "us-ashburn-1"
    return Placed(0.0, name, attempt, cls, cloud, region, "H100", gpus, 3.0, "x", 0.0)


def test_checker_flags_spill_without_a_holder_answer(world) -> None:
    events, _ = world
    assert violations([*events, submitted(), placed("x", "oci")]) == ["rofr-order"]


def test_checker_flags_spill_after_an_accept(world) -> None:
    events, _ = world
    ans = Answered(0.0, "x", 1, "azure", "accepted", "accepted", 1.0)
    assert violations([*events, submitted(), Offered(0.0, "x", 1, "azure", "first-look", 30.0), ans, placed("x", "oci")]) == [
        "rofr-order"
    ]


def test_checker_flags_a_decline_from_an_earlier_attempt(world) -> None:
    events, _ = world
    ans = Answered(0.0, "x", 1, "azure", "declined", "no-capacity", 1.0)
    assert "rofr-order" in violations([*events, submitted(), ans, placed("x", "oci", attempt=2)])


def test_checker_flags_an_unsupported_not_offered(world) -> None:
    events, _ = world
    ans = Answered(0.0, "x", 1, "azure", "not-offered", "gpu-type-unavailable", 0.0)  # azure has H100
    assert violations([*events, submitted(), ans, placed("x", "oci")]) == ["rofr-skipped"]


def test_checker_flags_api_serving_off_azure(world) -> None:
    events, _ = world
    ans = Answered(0.0, "api", 1, "azure", "declined", "no-capacity", 1.0)
    out = violations([*events, submitted("api", "api-serving"), ans, placed("api", "oci", cls="api-serving")])
    assert out == ["pinned-class-off-pins"]


def test_checker_flags_overcommit_double_placement_and_lost_jobs(world) -> None:
    events, _ = world
    acc = Answered(0.0, "a", 1, "azure", "accepted", "accepted", 1.0)
    assert "over-commit" in violations([*events, submitted("a", gpus=16), acc, placed("a", "azure", gpus=16)])
    assert "double-placement" in violations([*events, submitted("a"), acc, placed("a", "azure"), placed("a", "azure")])
    pre = Preempted(0.0, "a", "training", "azure", "eastus", "H100", 8, "pinned-job", "api", 0.0)
    assert violations([*events, submitted("a"), acc, placed("a", "azure"), pre]) == ["lost-job"]


def test_engine_with_preemption_disabled_never_preempts() -> None:
    engine, events, _ = recording_engine(two_clouds(azure_h100=8), a_contract(preemption=False))
    engine.submit(a_job().named("t").gpus(8).obj())
    engine.submit(a_job().named("api").cls("api-serving").gpus(8).priority(9).obj())
    assert not any(isinstance(e, Preempted) for e in events)

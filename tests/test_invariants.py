"""DESIGN.md's invariants under random catalogs, contracts, workloads and faults.

The checker is independent of the engine (it re-derives every rule from the recorded
events), and the negative tests below prove it catches each kind of violation, so a
green property test means something.
"""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import strategies as st

from scheduler.clock import ManualClock
from scheduler.engine import Engine
from scheduler.errors import AdmissionError
from scheduler.events import Answered, Event, Offered, Placed, Preempted, Queued, Released, Submitted
from scheduler.invariants import InvariantChecker
from scheduler.pipeline.outcomes import JobState
from tests.builders import a_contract, a_job, recording_engine, two_clouds
from tests.strategies import catalogs, check_property, contracts, jobs, ops, sized

RUNNING = JobState.RUNNING


def check_internal(engine: Engine) -> None:
    """The engine's own books balance: pools equal the sum of running gangs, queue equals queued."""
    for key, pool in engine.inventory.pools.items():
        running = engine.running[key]
        assert pool.allocated == sum(r.job.gpus for r in running.values())
        assert 0 <= pool.allocated <= pool.capacity
        assert all(r.state == RUNNING and r.pool is pool for r in running.values())
    queued = {n for n, r in engine.jobs.items() if r.state == "queued"}
    assert queued == set(engine.queue.names())


@pytest.mark.parametrize("examples", sized(quick=300, full=1000))
def test_invariants_hold_for_random_streams(examples: int) -> None:
    check_property(invariants_hold, examples, data=st.data(), catalog=catalogs(), contract=contracts())


def invariants_hold(data: st.DataObject, catalog, contract) -> None:
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


def fed(events: list[Event]) -> InvariantChecker:
    """The checker fed ``events`` one by one; the simulator's ``watch()`` sink must find the same violations, worded the same."""
    checker = InvariantChecker()
    for seq, ev in enumerate(events, 1):
        checker.feed(ev, seq)
    live = InvariantChecker()
    on_event = live.watch()
    for ev in events:
        on_event(ev)
    assert [(v.rule, v.job, v.message) for v in live.violations] == [(v.rule, v.job, v.message) for v in checker.violations]
    return checker


def violations(events: list[Event]) -> list[str]:
    checker = fed(events)
    checker.finish(len(events))
    return [v.rule for v in checker.violations]


@pytest.fixture
def world() -> tuple[list[Event], Engine]:
    engine, events, _ = recording_engine(two_clouds(azure_h100=8))
    return events, engine


def submitted(name: str = "x", cls: str = "training", gpus: int = 8, priority: int = 0) -> Submitted:
    job = a_job().named(name).cls(cls).gpus(gpus).priority(priority).obj()
    return Submitted(0.0, name, cls, gpus, "H100", priority, job.to_dict())


def placed(name: str, cloud: str, attempt: int = 1, gpus: int = 8, cls: str = "training", via: str = "after-decline") -> Placed:
    region = "eastus" if cloud == "azure" else "us-ashburn-1"
    return Placed(0.0, name, attempt, cls, cloud, region, "H100", gpus, 3.0, via, 0.0)


def offer(name: str = "x", attempt: int = 1) -> Offered:
    return Offered(0.0, name, attempt, "azure", "first-look", 30.0)


def answer(name: str, answer: str, reason: str, attempt: int = 1, holder: str = "azure", seconds: float = 1.0) -> Answered:
    return Answered(0.0, name, attempt, holder, answer, reason, seconds)


def first(events: list[Event]) -> str:
    found = violations(events)
    return found[0] if found else ""


def test_checker_flags_spill_without_a_holder_answer(world) -> None:
    events, _ = world  # azure has 8 free H100: it would accept
    assert first([*events, submitted(), placed("x", "oci")]) == "rofr-order"


def test_checker_flags_spill_after_an_accept(world) -> None:
    events, _ = world
    assert first([*events, submitted(), offer(), answer("x", "accepted", "accepted"), placed("x", "oci")]) == "rofr-order"


def test_checker_flags_a_decline_from_an_earlier_attempt(world) -> None:
    events, _ = world
    assert first([*events, submitted(), offer(), answer("x", "accepted", "accepted"), placed("x", "oci", attempt=2)]) == "rofr-order"


def test_checker_flags_an_unsupported_not_offered(world) -> None:
    events, _ = world  # azure has H100
    out = first([*events, submitted(), answer("x", "not-offered", "gpu-type-unavailable", seconds=0.0), placed("x", "oci", via="holder-not-offered")])
    assert out == "rofr-skipped"


def test_checker_flags_an_untrue_answer(world) -> None:
    events, _ = world
    assert first([*events, submitted(), offer(), answer("x", "declined", "no-capacity")]) == "holder-answer"
    assert first([*events, submitted(), offer(), answer("x", "lapsed", "no-answer-within-window", seconds=30.0)]) == "holder-answer"
    assert first([*events, submitted(), offer(), answer("x", "accepted", "accepted", seconds=2.0)]) == "holder-answer"


def test_checker_flags_an_answer_without_an_offer_or_from_another_cloud(world) -> None:
    events, _ = world
    assert first([*events, submitted(), answer("x", "accepted", "accepted")]) == "offer-missing"
    assert first([*events, submitted(), offer(), answer("x", "declined", "no-capacity", holder="oci")]) == "answer-not-holder"


def test_checker_flags_api_serving_off_azure() -> None:
    _engine, events, _ = recording_engine(two_clouds(azure_h100=0))
    out = first([*events, submitted("api", "api-serving"), offer("api"), answer("api", "declined", "no-capacity"), placed("api", "oci", cls="api-serving")])
    assert out == "pinned-class-off-pins"


def test_checker_flags_overcommit_double_placement_and_lost_jobs(world) -> None:
    events, _ = world
    acc = [offer("a"), answer("a", "accepted", "accepted")]
    assert first([*events, submitted("a", gpus=16), offer("a"), answer("a", "declined", "no-capacity"), placed("a", "azure", gpus=16)]) == "rofr-order"
    assert first([*events, submitted("a"), *acc, placed("a", "azure", via="rofr-accepted"), placed("a", "azure", via="rofr-accepted")]) == "double-placement"
    assert violations([*events, submitted("a"), *acc, placed("a", "oci", via="after-decline")])[0] == "rofr-order"
    assert violations([*events, submitted("a")]) == ["lost-job"]


def test_checker_flags_bad_preemptions(world) -> None:
    events, _ = world
    acc = [offer("a"), answer("a", "accepted", "accepted"), placed("a", "azure", via="rofr-accepted")]
    run = [*events, submitted("a", priority=30), *acc, submitted("api", "api-serving", priority=0)]
    pre = Preempted(0.0, "a", "training", "azure", "eastus", "H100", 8, "pinned-job", "api", 0.0)
    assert first([*run, offer("api"), answer("api", "declined", "no-capacity"), pre]) == "preemption"
    outage = Preempted(0.0, "a", "training", "azure", "eastus", "H100", 8, "backend-down", None, 0.0)
    assert first([*run[:-1], outage]) == "eviction"


def test_the_watch_sink_leaves_and_regains_its_fast_path_around_half_recorded_evictions() -> None:
    """A preemption's victims and a capacity loss's evictions are checked by ``check`` until their
    placement or capacity change; the watch sink must say what ``feed`` says, cut anywhere."""
    engine, events, _ = recording_engine(two_clouds(azure_h100=8))
    engine.submit(a_job().named("train").gpus(8).priority(0).obj())
    engine.submit(a_job().named("api").cls("api-serving").gpus(8).priority(100).obj())  # evicts train
    engine.submit(a_job().named("more").gpus(8).obj())
    engine.set_capacity("oci", "us-ashburn-1", "H100", 8)  # evicts some of what runs on oci
    engine.release("api")
    kinds = [e.kind for e in events]
    assert "preempted" in kinds and "capacity-changed" in kinds
    assert violations(events) == []
    for cut in range(1, len(events)):  # each record dropped in turn: the same violations either way (``fed`` compares)
        violations([*events[:cut], *events[cut + 1 :]])


def test_checker_flags_configuration_changes_outside_reconfigured(world) -> None:
    events, _ = world
    assert first([*events, events[0]]) == "configuration"
    assert first([submitted()]) == "configuration"


def test_checker_flags_releases_of_jobs_not_running(world) -> None:
    events, _ = world
    rel = Released(0.0, "x", "training", "azure", "eastus", "H100", 8, "finished", 0.0)
    assert first([*events, submitted(), rel]) == "release-not-running"


def test_engine_with_preemption_disabled_never_preempts() -> None:
    engine, events, _ = recording_engine(two_clouds(azure_h100=8), a_contract(preemption=False))
    engine.submit(a_job().named("t").gpus(8).obj())
    engine.submit(a_job().named("api").cls("api-serving").gpus(8).priority(9).obj())
    assert not any(isinstance(e, Preempted) for e in events)


# --------------------------------------------------------------------- fast paths say what the slow ones said
# The checker's per-event path tests the common case in one go and words a violation only
# when there is one; these pin the exact wording (taken from the straightforward code the
# fast paths replaced), so a shortcut that let a violation through or changed its message fails.


def messages(events: list[Event]) -> list[str]:
    return [str(v) for v in fed(events).violations]


def test_a_submission_names_the_first_field_its_spec_disagrees_with(world) -> None:
    events, _ = world
    n = len(events) + 1
    good = submitted()
    for key, value in (("name", "y"), ("cls", "inference"), ("gpus", 4), ("gpus", 8.0), ("gpu_type", "A100"), ("priority", 1), ("priority", 0.0)):
        bad = msgspec.structs.replace(good, spec={**good.spec, key: value})
        top = "job" if key == "name" else key
        shown = getattr(good, top)
        assert messages([*events, bad]) == [f"record {n}: malformed-record: submitted {top}={shown!r} disagrees with spec.{key}={value!r}"]
    nan = float("nan")  # the very same object in the record and its spec, yet not equal to itself
    assert messages([*events, msgspec.structs.replace(good, priority=nan, spec={**good.spec, "priority": nan})]) == [
        f"record {n}: malformed-record: submitted priority=nan disagrees with spec.priority=nan"
    ]
    both = msgspec.structs.replace(good, spec={**good.spec, "gpus": 4, "cls": "inference"})  # cls is checked before gpus
    assert messages([*events, both]) == [f"record {n}: malformed-record: submitted cls='training' disagrees with spec.cls='inference'"]
    assert messages([*events, msgspec.structs.replace(good, spec={**good.spec, "regions": []})]) == [
        f"record {n}: malformed-record: spec.regions must be a non-empty list of strings or null"
    ]


def test_an_untrue_acceptance_names_the_pool_that_had_room(world) -> None:
    events, _ = world
    n = len(events) + 3
    assert messages([*events, submitted(), offer(), answer("x", "declined", "no-capacity")]) == [
        f"record {n}: holder-answer: azure declined no-capacity for x, but the records say accepted accepted (azure/eastus/H100 had 8 free for 8)"
    ]


def test_an_outcome_out_of_turn_is_worded_as_before(world) -> None:
    events, _ = world
    acc = [submitted(), offer(), answer("x", "accepted", "accepted")]
    n = len(events) + 4
    run = placed("x", "azure", via="rofr-accepted")
    assert messages([*events, *acc, run, run])[-1] == f"record {n + 1}: double-placement: x placed on azure while already running on azure/eastus/H100"
    queued = Queued(0.0, "x", 1, "training", "no-capacity", "", ())
    assert messages([*events, submitted(), queued]) == [
        f"record {n - 2}: offer-missing: x queued in attempt 1 without a holder answer in that attempt"
    ]
    assert messages([*events, *acc, run, Released(0.0, "x", "training", "azure", "eastus", "H100", 8, "finished", 0.0), queued])[-1] == (
        f"record {n + 2}: double-placement: x queued after it was finished"
    )
    assert messages([*events, *acc, queued]) == [f"record {n}: rofr-order: x queued although azure accepted it in attempt 1"]
    declined = [submitted(gpus=16), offer(), answer("x", "declined", "no-capacity")]  # azure has only 8
    assert messages([*events, *declined, queued, queued]) == [f"record {n + 1}: attempt-order: attempt 1 of x already had its outcome"]


def test_an_offer_out_of_turn_is_worded_as_before(world) -> None:
    events, _ = world
    acc = [submitted(), offer(), answer("x", "accepted", "accepted"), placed("x", "azure", via="rofr-accepted")]
    n = len(events) + 5
    assert messages([*events, *acc, offer(attempt=1)]) == [f"record {n}: attempt-order: second offer of x in attempt 1"]
    assert messages([*events, *acc, offer(attempt=2)]) == [f"record {n}: attempt-order: offered for x while it is running"]
    assert messages([*events, submitted(), offer(attempt=2), offer(attempt=1)]) == [
        f"record {n - 2}: attempt-order: offered for x reuses attempt 1 (the last attempt was 2)"
    ]

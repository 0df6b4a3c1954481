"""The queue's promises (docs/queueing.md), one scenario per finding of issue 23.

Each scenario is what a user of a batch scheduler would try; the v2 engine failed each one.
"""

from __future__ import annotations

import pytest

from scheduler.engine import Engine
from scheduler.errors import AdmissionError
from scheduler.events import Event, Placed
from scheduler.specs import CloudCatalog
from tests.builders import a_catalog, a_contract, a_job, recording_engine
from tests.core.worlds import a_world, run_world, through_json

HOUR = 3600.0


def gang_start(outage: bool) -> float:
    """A 64-GPU priority-1000 gang waits behind eight running 1-hour jobs on Azure, in front of a
    stream of small priority -100 jobs (one every five minutes). Optionally OCI (where the gang
    cannot run) is down for 30 s first. Returns when the gang started."""
    catalog = a_catalog().cloud("azure", {"eastus": {"H100": 64}}, price=3.4).cloud("oci", {"ashburn": {"H100": 8}}, price=2.9).obj()
    engine, _events, clock = recording_engine(catalog)
    for i in range(8):
        engine.submit(a_job().named(f"run-{i}").gpus(8).hours(1).priority(-100).obj())
    engine.submit(a_job().named("on-oci").gpus(8).hours(100).priority(-100).obj())
    assert engine.submit(a_job().named("gang").gpus(64).hours(2).priority(1000).obj()).outcome == "queued"
    if outage:
        clock.advance(60)
        engine.set_backend("oci", up=False)
        clock.advance(30)
        engine.set_backend("oci", up=True)
    for step in range(1, 200):
        clock.t = step * 300.0
        for name, rec in sorted(engine.jobs.items()):
            if rec.state == "running" and rec.ends_at <= clock.t and name != "gang":
                engine.release(name)
        engine.submit(a_job().named(f"small-{step}").gpus(8).hours(1).priority(-100).obj())
        if engine.status("gang").outcome == "placed":
            return engine.jobs["gang"].placed_at
    raise AssertionError("the gang never started")


def test_1_an_outage_elsewhere_does_not_starve_a_waiting_gang() -> None:
    undisturbed = gang_start(outage=False)
    assert undisturbed == HOUR  # when the eight running jobs end
    assert gang_start(outage=True) <= undisturbed + 30.0  # the disturbance's own length at most


def test_2_backfill_within_one_pass_never_delays_a_planned_start_made_earlier_in_it() -> None:
    # Two pools. The head is planned on eastus at 2 h. westus frees 8 GPUs: in the same pass a
    # 3-hour job may not take them if that delays the head, a 30-minute one may.
    catalog = a_catalog().cloud("azure", {"eastus": {"H100": 16}}, price=3.4).obj()
    engine, _events, clock = recording_engine(catalog)
    engine.submit(a_job().named("a").gpus(8).hours(1).obj())
    engine.submit(a_job().named("b").gpus(8).hours(2).obj())
    assert engine.submit(a_job().named("head").gpus(16).hours(1).priority(10).obj()).outcome == "queued"
    assert engine.status("head").planned == ("azure", "eastus", 2 * HOUR)
    engine.submit(a_job().named("long").gpus(8).hours(3).obj())
    engine.submit(a_job().named("short").gpus(8).hours(0.5).obj())
    clock.advance(600)
    engine.release("a")  # ends early: 8 GPUs free from 10 min
    assert engine.status("short").outcome == "placed"  # ends at 40 min, before the head's start
    assert engine.status("long").outcome == "queued"  # would run to 3 h 10 min
    assert engine.status("head").planned == ("azure", "eastus", 2 * HOUR)


def test_3_gpus_a_planned_start_stops_claiming_go_to_a_job_that_fits() -> None:
    # The head is planned on eastus; when it starts elsewhere instead, the job held back by its
    # planned start must get eastus now, not at the next unrelated event.
    catalog = a_catalog().cloud("azure", {"eastus": {"H100": 16}, "westus": {"H100": 16}}, price=3.4).obj()
    engine, _events, _clock = recording_engine(catalog)
    engine.submit(a_job().named("east-1").gpus(8).hours(1).regions("eastus").obj())
    engine.submit(a_job().named("west").gpus(16).hours(2).regions("westus").obj())
    assert engine.submit(a_job().named("head").gpus(16).hours(1).priority(10).obj()).outcome == "queued"
    assert engine.status("head").planned == ("azure", "eastus", HOUR)
    held = engine.submit(a_job().named("held").gpus(8).hours(4).regions("eastus").obj())
    assert held.outcome == "queued"  # would delay the head on eastus
    engine.release("west")  # the head starts on westus now
    assert engine.status("head").outcome == "placed"
    assert engine.status("held").outcome == "placed"  # eastus is no longer claimed: it starts at once
    assert not engine.idle_for_plans()


def test_4_equal_priority_is_first_come_first_served() -> None:
    catalog = a_catalog().cloud("azure", {"eastus": {"H100": 16}}, price=3.4).obj()
    engine, events, _clock = recording_engine(catalog, a_contract(preemption=False))
    engine.submit(a_job().named("busy").gpus(16).hours(1).obj())
    engine.submit(a_job().named("first").gpus(16).hours(1).obj())  # earlier, larger
    engine.submit(a_job().named("second").gpus(8).hours(1).obj())  # later, smaller: fits sooner
    mark = len(events)
    engine.release("busy")
    started = [e.job for e in events[mark:] if isinstance(e, Placed)]
    assert started == ["first"]  # not "second" first: it would delay "first"


def test_5_a_job_that_needs_more_than_a_shrunk_pool_is_planned_when_capacity_returns() -> None:
    catalog = a_catalog().cloud("azure", {"eastus": {"H100": 16}}, price=3.4).obj()
    engine, _events, clock = recording_engine(catalog)
    engine.set_capacity("azure", "eastus", "H100", 8)
    big = engine.submit(a_job().named("big").gpus(16).hours(1).priority(10).obj())
    assert big.outcome == "queued" and big.planned is None
    assert big.waiting is not None and "has 8 of 16 H100" in big.waiting
    engine.submit(a_job().named("small-1").gpus(8).hours(2).obj())  # the shrunk pool: big cannot use it
    assert engine.status("small-1").outcome == "placed"
    clock.advance(60)
    engine.set_capacity("azure", "eastus", "H100", 16)
    assert engine.status("big").planned == ("azure", "eastus", 2 * HOUR + 0.0)
    small = engine.submit(a_job().named("small-2").gpus(8).hours(3).obj())
    assert small.outcome == "queued"  # would delay big's planned start: no overtaking


def test_6_admission_counts_the_api_serving_reserve_against_the_catalog() -> None:
    catalog = a_catalog().cloud("azure", {"eastus": {"H100": 64}}, price=3.4, rules={"reserveForApiServingFraction": 0.25}).obj()
    engine, _events, _ = recording_engine(catalog)
    try:
        engine.submit(a_job().named("too-big").gpus(56).obj())
    except AdmissionError as e:
        message = str(e)
    else:
        raise AssertionError("a job that can never fit was accepted")
    assert "too-big" in message and "azure/eastus" in message and "48 of its 64" in message and "\n" not in message
    assert engine.submit(a_job().named("api").cls("api-serving").gpus(64).obj()).outcome == "placed"  # the API may use it all
    assert engine.submit(a_job().named("fits").gpus(48).obj()).outcome == "queued"


def test_6_a_finished_jobs_name_may_be_used_again() -> None:
    engine, _events, _ = recording_engine(a_catalog().cloud("azure", {"eastus": {"H100": 8}}).obj())
    engine.submit(a_job().named("nightly").gpus(8).obj())
    engine.release("nightly")
    assert engine.submit(a_job().named("nightly").gpus(8).obj()).outcome == "placed"


def test_7_restore_is_live_and_a_reload_keeps_the_queue() -> None:
    # Every world restores its engine at random committed boundaries (tests/core/worlds.py):
    # the stream must be the one an engine that never stopped makes.
    for seed in range(200):
        world = a_world(seed, length=60)
        make = lambda c, k, clock: Engine(c, k, clock)  # noqa: E731
        assert run_world(world, make, restores=True) == run_world(world, make, restores=False), f"world {seed}"
    catalog = a_catalog().cloud("azure", {"eastus": {"H100": 8}}, price=3.4).obj()
    engine, _events, _clock = recording_engine(catalog)
    engine.submit(a_job().named("busy").gpus(8).obj())
    engine.submit(a_job().named("waiting").gpus(8).priority(5).obj())
    engine.reconfigure(a_contract(window=10.0), "renegotiated")
    assert engine.status("waiting").planned == ("azure", "eastus", HOUR)
    engine.release("busy")
    assert engine.status("waiting").outcome == "placed"


def test_8_status_shows_an_evicted_job_as_queued_with_its_current_reason() -> None:
    catalog: CloudCatalog = a_catalog().cloud("azure", {"eastus": {"H100": 8}}, price=3.4).cloud("oci", {"ashburn": {"H100": 8}}, price=2.9).obj()
    engine, events, clock = recording_engine(catalog)
    engine.submit(a_job().named("on-azure").gpus(8).hours(2).obj())
    assert engine.submit(a_job().named("mover").gpus(8).obj()).cloud == "oci"
    engine.set_backend("oci", up=False)
    d = engine.status("mover")
    assert (d.outcome, d.cloud, d.region) == ("queued", None, None)  # not shown at its old placement
    assert d.planned == ("azure", "eastus", 2 * HOUR) and d.waiting is not None and "planned start" in d.waiting
    assert [h[1] for h in d.history] == ["placed", "evicted"]
    restored = Engine.restore(catalog, a_contract(), clock, through_json(events))
    assert restored.status("mover") == d


def check_fixpoints(seeds: range, length: int, depths: tuple[int, ...]) -> int:
    """Run each world at each planning depth; after every request, re-plan what it re-planned
    again at the same instant and require that nothing happens. Returns the requests checked."""
    checked = 0

    def again(engine: Engine, types: set[str]) -> None:
        nonlocal checked
        extra: list[Event] = []
        engine.subscribe(extra.append)
        for gpu_type in sorted(types):
            engine.retry(gpu_type)
        engine.unsubscribe(extra.append)
        assert not extra, f"world {seed} (depth {depth}): re-planning {sorted(types)} again changed {[(e.kind, getattr(e, 'job', '')) for e in extra[:3]]}"
        checked += 1

    for seed in seeds:
        for depth in depths:
            run_world(a_world(seed, length=length), lambda c, k, clock, d=depth: Engine(c, k, clock, plan_depth=d), restores=False, after=again)
    return checked


def test_the_state_after_every_request_is_a_fixpoint() -> None:
    """(b) and (c): right after a request, re-planning what it re-planned again, at the same
    instant, changes nothing: no job that could start is left waiting (no GPU idles while a job
    that fits waits, unless a planned start of a job ahead claims it), no pinned job is left
    that could preempt, and the plans stand."""
    assert check_fixpoints(range(300), 40, (8,)) == 300 * 40


@pytest.mark.slow
def test_the_state_after_every_request_is_a_fixpoint_in_2000_longer_worlds() -> None:
    """The same on 120-request worlds at planning depths 8 and 1 (where few jobs hold a planned
    start, so more of them start by backfill). Two findings needed worlds this long, about one
    world in a thousand (worlds 4895, 5242, 5635 and 5822 of these): a pinned job declined
    because only the API share was free did not preempt, and one the holder had turned down at
    its discretion preempted at the same instant once later jobs had taken the room."""
    assert check_fixpoints(range(4_000, 6_000), 120, (8, 1)) == 2_000 * 2 * 120


def test_idle_for_plan_and_slips_are_metrics_that_agree_with_the_engine() -> None:
    from prometheus_client import CollectorRegistry

    from scheduler.metrics_plans import PlanMetrics

    catalog = a_catalog().cloud("azure", {"eastus": {"H100": 16}}, price=3.4).obj()
    engine, _events, clock = recording_engine(catalog)
    registry = CollectorRegistry()
    plans = PlanMetrics(registry)
    for ev in _events:
        plans(ev)
    engine.subscribe(plans)
    engine.submit(a_job().named("a").gpus(8).hours(1).obj())
    engine.submit(a_job().named("head").gpus(16).hours(1).priority(10).obj())  # planned at 1 h, 8 GPUs idle for it
    assert engine.idle_for_plans() == {("azure", "eastus", "H100"): 8}
    idle = registry.get_sample_value("mcsched_gpus_idle_for_plan", {"cloud": "azure", "region": "eastus", "gpu_type": "H100"})
    assert idle == 8
    clock.advance(HOUR + 60)  # "a" overruns: the head's planned start moves one overrun step later
    engine.submit(a_job().named("probe").gpus(16).hours(1).obj())
    assert engine.status("head").planned == ("azure", "eastus", HOUR + 600.0)
    assert registry.get_sample_value("mcsched_planned_start_slip_seconds_count") == 1
    assert registry.get_sample_value("mcsched_planned_start_slip_seconds_sum") == 600.0
    engine.release("a")
    assert engine.status("head").outcome == "placed" and not engine.idle_for_plans()
    assert registry.get_sample_value("mcsched_gpus_idle_for_plan", {"cloud": "azure", "region": "eastus", "gpu_type": "H100"}) == 0

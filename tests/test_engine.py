"""The placement pipeline, example by example: each test is one clause of the contract."""

from __future__ import annotations

import pytest

from scheduler.engine import Engine
from scheduler.errors import AdmissionError, UnknownJobError
from scheduler.events import Answered, Placed, Preempted, Queued
from scheduler.invariants import InvariantChecker
from tests.builders import a_catalog, a_contract, a_job, kinds, recording_engine, two_clouds


def assert_clean(events: list) -> None:
    checker = InvariantChecker()
    for seq, ev in enumerate(events, 1):
        checker.feed(ev, seq)
    checker.finish()
    assert checker.violations == []


def test_holder_with_capacity_accepts_and_nobody_else_is_asked() -> None:
    engine, events, _ = recording_engine(two_clouds())
    d = engine.submit(a_job().named("ft").gpus(8).obj())
    assert (d.outcome, d.cloud, d.via, d.rofr_answer) == ("placed", "azure", "rofr-accepted", "accepted")
    assert kinds(events, "ft") == ["submitted", "offered", "answered", "placed"]


def test_decline_comes_before_any_quote_and_the_job_spills() -> None:
    engine, events, _ = recording_engine(two_clouds(azure_h100=8))
    d = engine.submit(a_job().named("big").gpus(16).obj())
    assert (d.cloud, d.rofr_answer, d.rofr_reason, d.via) == ("oci", "declined", "no-capacity", "after-decline")
    assert kinds(events, "big") == ["submitted", "offered", "answered", "quoted", "placed"]
    assert_clean(events)


def test_api_serving_waits_for_azure_and_starts_when_capacity_frees() -> None:
    engine, events, _ = recording_engine(two_clouds(azure_h100=8), a_contract(preemption=False))
    engine.submit(a_job().named("train").gpus(8).priority(0).obj())
    d = engine.submit(a_job().named("api").cls("api-serving").gpus(8).obj())
    assert (d.outcome, d.reason) == ("queued", "pinned-holder-declined")
    assert not any(isinstance(e, Placed) and e.job == "api" for e in events)
    engine.release("train")
    assert engine.status("api").cloud == "azure"
    assert_clean(events)


def test_api_serving_preempts_lower_priority_movable_work_which_is_replaced_through_rofr() -> None:
    engine, events, _ = recording_engine(two_clouds(azure_h100=8))
    engine.submit(a_job().named("train").gpus(8).priority(0).obj())
    d = engine.submit(a_job().named("api").cls("api-serving").gpus(8).priority(100).obj())
    assert (d.cloud, d.via) == ("azure", "preemption")
    pre = [e for e in events if isinstance(e, Preempted)]
    assert [(p.job, p.by, p.reason) for p in pre] == [("train", "api", "pinned-job")]
    victim = engine.status("train")
    assert (victim.cloud, victim.rofr_answer, victim.attempt) == ("oci", "declined", 2)
    assert_clean(events)


@pytest.mark.parametrize(
    ("running", "why"),
    [
        (a_job().named("train").gpus(8).priority(100), "equal priority"),
        (a_job().named("train").gpus(8).priority(500), "higher priority"),
        (a_job().named("train").cls("api-serving").gpus(8).priority(0), "pinned work, even of lower priority"),
    ],
)
def test_preemption_never_evicts_equal_or_higher_priority_or_pinned_work(running, why: str) -> None:
    engine, events, _ = recording_engine(two_clouds(azure_h100=8))
    engine.submit(running.obj())
    d = engine.submit(a_job().named("api").cls("api-serving").gpus(8).priority(100).obj())
    assert d.outcome == "queued", why
    assert engine.status("train").cloud == "azure", why
    assert not any(isinstance(e, Preempted) for e in events), why


def test_slow_holder_lapses_at_the_window_and_the_job_spills() -> None:
    engine, events, _ = recording_engine(two_clouds(latency=45.0), a_contract(window=30))
    d = engine.submit(a_job().named("j").obj())
    ans = next(e for e in events if isinstance(e, Answered))
    assert (ans.answer, ans.response_seconds) == ("lapsed", 30.0)
    assert (d.cloud, d.via) == ("oci", "after-lapse")


def test_lapse_can_mean_wait_when_the_contract_says_so() -> None:
    engine, _, _ = recording_engine(two_clouds(latency=45.0), a_contract(window=30, on_lapse="queue"))
    d = engine.submit(a_job().named("j").obj())
    assert (d.outcome, d.reason) == ("queued", "holder-lapsed")
    engine.set_backend("azure", extra_latency_seconds=0.0)
    assert engine.status("j").outcome == "queued"  # latency is the catalog's 45 s, still too slow
    engine.backends["azure"].latency_seconds = 1.0
    engine.set_backend("azure", up=True)
    assert engine.status("j").cloud == "azure"


def test_match_mode_holder_meets_the_best_quote_or_declines_below_its_floor() -> None:
    cat = two_clouds(rules={"priceFloorUsdPerGpuHour": {"H100": 3.0}})
    engine, events, _ = recording_engine(cat, a_contract(mode="match"))
    d = engine.submit(a_job().named("m").obj())
    assert (d.cloud, d.rofr_answer, d.rofr_reason) == ("oci", "declined", "below-price-floor")
    assert kinds(events, "m")[:3] == ["submitted", "quoted", "offered"]
    cat2 = two_clouds(rules={"priceFloorUsdPerGpuHour": {"H100": 2.5}})
    engine2, _, _ = recording_engine(cat2, a_contract(mode="match"))
    d2 = engine2.submit(a_job().named("m").obj())
    assert (d2.cloud, d2.price, d2.rofr_reason) == ("azure", 2.9, "matched")


def test_holder_keeps_its_api_reserve() -> None:
    engine, _, _ = recording_engine(two_clouds(azure_h100=16, rules={"reserveForApiServingFraction": 0.5}))
    assert engine.submit(a_job().named("a").gpus(8).obj()).cloud == "azure"
    d = engine.submit(a_job().named("b").gpus(8).obj())
    assert (d.cloud, d.rofr_reason) == ("oci", "reserved-for-api-serving")
    assert engine.submit(a_job().named("api").cls("api-serving").gpus(8).obj()).cloud == "azure"


def test_holder_is_not_offered_only_for_recorded_static_reasons() -> None:
    cat = a_catalog().cloud("azure", {"eastus": {"H100": 64}}).cloud("stargate", {"abilene-tx": {"GB200": 64, "H100": 64}}).obj()
    engine, events, _ = recording_engine(cat)
    d = engine.submit(a_job().named("sg").regions("abilene-tx").obj())
    assert (d.cloud, d.rofr_answer, d.rofr_reason) == ("stargate", "not-offered", "region-constraint")
    d = engine.submit(a_job().named("gb").sku("GB200").obj())
    assert (d.rofr_answer, d.rofr_reason) == ("not-offered", "gpu-type-unavailable")
    assert_clean(events)


def test_a_job_cannot_waive_the_rofr_or_claim_a_pinned_cloud() -> None:
    engine, events, _ = recording_engine(two_clouds())
    with pytest.raises(AdmissionError, match="ROFR holder"):
        engine.submit(a_job().clouds("oci").obj())
    with pytest.raises(AdmissionError, match="pinned"):
        engine.submit(a_job().cls("api-serving").clouds("oci").obj())
    assert len(events) == 1  # only the configuration record: nothing else changed


def test_non_holder_outage_replaces_jobs_through_rofr_and_holder_outage_moves_nothing() -> None:
    engine, events, _ = recording_engine(two_clouds(azure_h100=8))
    engine.submit(a_job().named("on-oci").gpus(16).obj())
    engine.submit(a_job().named("on-azure").gpus(8).obj())
    engine.release("on-azure")
    engine.set_backend("oci", up=False)
    d = engine.status("on-oci")
    assert d.outcome == "queued" and d.attempt == 2
    assert any(isinstance(e, Answered) and e.job == "on-oci" and e.attempt == 2 for e in events)
    engine.submit(a_job().named("stay").gpus(8).obj())
    engine.set_backend("azure", up=False)
    assert engine.status("stay").cloud == "azure"
    engine.set_backend("oci", up=True)
    assert engine.status("on-oci").cloud == "oci"
    assert_clean(events)


def test_capacity_loss_evicts_youngest_lowest_priority_first_then_replaces() -> None:
    engine, events, clock = recording_engine(two_clouds(azure_h100=16, oci_h100=16))
    engine.submit(a_job().named("old").gpus(8).obj())
    clock.advance(10)
    engine.submit(a_job().named("young").gpus(8).obj())
    engine.set_capacity("azure", "eastus", "H100", 8)
    assert engine.status("old").cloud == "azure"
    assert engine.status("young").cloud == "oci"
    assert_clean(events)


def test_queued_jobs_are_retried_on_events_only_not_polled() -> None:
    engine, events, _ = recording_engine(two_clouds(azure_h100=8, oci_h100=8))
    engine.submit(a_job().named("a").gpus(8).obj())
    engine.submit(a_job().named("b").gpus(8).obj())
    engine.submit(a_job().named("c").gpus(8).obj())
    n = len(events)
    assert engine.retry() == 0
    assert len(events) == n  # nothing fits: not even re-offered
    engine.release("a")
    assert engine.status("c").cloud == "azure"


def test_retry_order_is_priority_then_arrival_across_shapes() -> None:
    engine, _, _ = recording_engine(two_clouds(azure_h100=8, oci_h100=0))
    engine.submit(a_job().named("hold").gpus(8).obj())
    engine.submit(a_job().named("low").gpus(4).priority(1).obj())
    engine.submit(a_job().named("high").gpus(8).priority(5).obj())
    engine.release("hold")
    assert engine.status("high").outcome == "placed"
    assert engine.status("low").outcome == "queued"


def test_cancel_queued_and_running_and_unknown() -> None:
    engine, events, _ = recording_engine(two_clouds(azure_h100=8, oci_h100=0))
    engine.submit(a_job().named("run").gpus(8).obj())
    engine.submit(a_job().named("wait").gpus(8).obj())
    assert engine.cancel("wait").outcome == "cancelled"
    assert engine.cancel("run").outcome == "cancelled"
    assert engine.usage()[0].allocated == 0
    with pytest.raises(UnknownJobError):
        engine.cancel("nope")
    with pytest.raises(AdmissionError):
        engine.cancel("run")
    assert_clean(events)


def test_batch_with_a_bad_job_changes_nothing() -> None:
    engine, events, _ = recording_engine(two_clouds())
    good = a_job().named("good").obj()
    bad = a_job().named("bad").sku("TPU").obj()
    with pytest.raises(AdmissionError):
        engine.place_many([good, bad])
    with pytest.raises(AdmissionError, match="duplicate"):
        engine.place_many([good, good])
    assert len(events) == 1 and engine.jobs == {}


def test_restore_from_events_rebuilds_the_same_state() -> None:
    engine, events, clock = recording_engine(two_clouds(azure_h100=8, oci_h100=16))
    for i in range(5):
        engine.submit(a_job().named(f"j{i}").gpus(8).obj())
    engine.release("j0")
    engine.cancel("j4")
    restored = Engine.restore(engine.catalog, engine.contract, clock, events)
    assert [(u.cloud, u.allocated) for u in restored.usage()] == [(u.cloud, u.allocated) for u in engine.usage()]
    assert {n: r.state for n, r in restored.jobs.items()} == {n: r.state for n, r in engine.jobs.items()}
    assert len(restored.queue) == len(engine.queue)


def test_restore_finishes_attempts_a_crash_cut_short() -> None:
    engine, events, clock = recording_engine(two_clouds())
    engine.submit(a_job().named("x").obj())
    cut = [e for e in events if not isinstance(e, Placed | Answered)]  # crash right after "submitted"
    recorded: list = []
    restored = Engine.restore(
        engine.catalog, engine.contract, clock, [e for e in cut if not isinstance(e, Queued)], [recorded.append]
    )
    assert restored.status("x").outcome == "placed"
    assert [e.kind for e in recorded] == ["offered", "answered", "placed"]


class TickingClock:
    """A wall clock as the live service sees it: every read is a little later."""

    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        self.t += 1.0
        return self.t


@pytest.mark.parametrize("fault", ["shrink", "outage"])
def test_a_fault_stamps_its_evictions_at_its_own_instant_and_time_never_runs_backwards(fault: str) -> None:
    """On a clock that moves at every read, a shrink's or an outage's evictions carry the request's
    time (a later read put them after the capacity record, and the ledger's time ran backwards)."""
    catalog = a_catalog().cloud("azure", {"eastus": {"H100": 8}}, price=3.4).cloud("oci", {"us-ashburn-1": {"H100": 8}}, price=2.9).obj()
    engine = Engine(catalog, a_contract(), TickingClock())
    events: list = []
    engine.subscribe(events.append)
    engine.announce()
    for i in range(4):
        engine.submit(a_job().named(f"t{i}").gpus(4).obj())
    assert any(isinstance(e, Placed) and e.cloud == "oci" for e in events)
    start = len(events)
    if fault == "shrink":
        engine.set_capacity("oci", "us-ashburn-1", "H100", 0)
    else:
        engine.set_backend("oci", up=False)
    request = events[start:]
    evicted = [e for e in request if isinstance(e, Preempted)]
    assert evicted and {e.at for e in evicted} == {request[0].at}
    times = [e.at for e in events]
    assert times == sorted(times), times

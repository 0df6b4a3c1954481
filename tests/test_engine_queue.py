"""Queue semantics: priority, then submission order; freed capacity offered to the queue in that
order; pinned jobs preempt on every retry; a blocked head keeps a reservation (backfill).

Each test reproduces one finding of the engine review (issue 11) that the v1 engine failed.
"""

from __future__ import annotations

import pytest

from scheduler.engine import Engine
from scheduler.errors import AdmissionError
from scheduler.events import Placed, Preempted, Reserved
from scheduler.specs import declines_at_discretion
from tests.builders import a_catalog, a_contract, a_job, recording_engine, two_clouds
from tests.test_engine import assert_clean


def placed_jobs(events: list, since: int = 0) -> list[str]:
    return [e.job for e in events[since:] if isinstance(e, Placed)]


def test_a_queued_api_job_preempts_once_the_holder_returns() -> None:
    # Azure full of priority-0 training; Azure goes down; the API job queues (the holder lapsed);
    # Azure comes back: the API job must preempt now, not wait forever with a stale reason.
    engine, events, _ = recording_engine(two_clouds(azure_h100=8, oci_h100=0))
    engine.submit(a_job().named("train").gpus(8).priority(0).obj())
    engine.set_backend("azure", up=False)
    d = engine.submit(a_job().named("api").cls("api-serving").gpus(8).priority(100).obj())
    assert (d.outcome, d.reason) == ("queued", "pinned-holder-lapsed")
    engine.set_backend("azure", up=True)
    api = engine.status("api")
    assert (api.outcome, api.cloud, api.via) == ("placed", "azure", "preemption")
    assert [(e.job, e.by) for e in events if isinstance(e, Preempted)] == [("train", "api")]
    assert engine.status("train").outcome == "queued"
    assert_clean(events)


def test_a_lower_priority_api_job_never_overtakes_a_waiting_higher_one() -> None:
    engine, events, _ = recording_engine(two_clouds(azure_h100=8, oci_h100=0))
    engine.submit(a_job().named("train").gpus(8).priority(0).obj())
    engine.set_backend("azure", up=False)
    engine.submit(a_job().named("api-100").cls("api-serving").gpus(8).priority(100).obj())
    engine.set_backend("azure", up=True)
    d = engine.submit(a_job().named("api-50").cls("api-serving").gpus(8).priority(50).obj())
    assert engine.status("api-100").cloud == "azure"
    assert d.outcome == "queued"  # it cannot preempt the priority-100 API job
    engine.release("api-100")
    assert engine.status("api-50").cloud == "azure"
    assert_clean(events)


def test_equal_priority_is_first_come_first_served_when_capacity_frees() -> None:
    engine, events, _ = recording_engine(two_clouds(azure_h100=8, oci_h100=0), a_contract(preemption=False))
    engine.submit(a_job().named("holder-of-azure").gpus(8).obj())
    for name in ("first", "second", "third"):
        engine.submit(a_job().named(name).cls("api-serving").gpus(8).priority(5).obj())
    mark = len(events)
    engine.release("holder-of-azure")
    assert placed_jobs(events, mark) == ["first"]
    engine.release("first")
    assert engine.status("second").outcome == "placed" and engine.status("third").outcome == "queued"


def test_a_big_high_priority_gang_is_not_starved_by_a_stream_of_small_jobs() -> None:
    # 64 GPUs on Azure busy with eight 8-GPU jobs; a 64-GPU gang at priority 1000 waits. Each
    # cycle one small job ends and a new priority -100 small job arrives: without a reservation
    # every freed 8 GPUs go to the newcomer and the gang never starts.
    catalog = (
        a_catalog().cloud("azure", {"eastus": {"H100": 64}}, price=3.4).cloud("oci", {"ashburn": {"H100": 8}}, price=2.9).obj()
    )
    engine, events, clock = recording_engine(catalog)
    small = [f"small-{i}" for i in range(8)]
    for name in small:
        engine.submit(a_job().named(name).gpus(8).priority(-100).obj())
    engine.submit(a_job().named("blocker-on-oci").gpus(8).priority(-100).obj())
    gang = engine.submit(a_job().named("gang").gpus(64).priority(1000).obj())
    assert gang.outcome == "queued"
    assert any(isinstance(e, Reserved) and e.job == "gang" and e.cloud == "azure" for e in events)
    for cycle in range(200):
        clock.advance(60)
        running = sorted(n for n, r in engine.jobs.items() if r.state == "running" and n != "gang" and r.pool.cloud == "azure")
        if engine.status("gang").outcome == "placed":
            break
        engine.release(running[0])
        engine.submit(a_job().named(f"late-{cycle}").gpus(8).priority(-100).obj())
    gang = engine.status("gang")
    assert (gang.outcome, gang.cloud) == ("placed", "azure")
    assert cycle <= 8, f"the gang waited {cycle} release cycles"
    assert_clean(events)


def test_a_short_job_backfills_a_reserved_pool_and_a_long_one_does_not() -> None:
    catalog = a_catalog().cloud("azure", {"eastus": {"H100": 64}}, price=3.4).obj()
    engine, events, clock = recording_engine(catalog)
    for i in range(7):  # 56 of 64 busy for an hour
        engine.submit(a_job().named(f"busy-{i}").gpus(8).obj())
    assert engine.submit(a_job().named("gang").gpus(64).priority(10).obj()).outcome == "queued"
    res = next(e for e in events if isinstance(e, Reserved) and e.job == "gang")
    assert res.start_at == 3600.0  # when the busy jobs are expected to end
    clock.advance(60)
    long = engine.submit(a_job().named("long").gpus(8).obj())  # would end after the reservation starts
    assert long.outcome == "queued"
    assert any("held for gang" in why for _, why in long.dropped) or "reserved" in (long.rofr_reason or "")
    short = engine.submit(a_job().named("short").gpus(8).hours(0.25).obj())
    assert (short.outcome, short.cloud) == ("placed", "azure")
    assert_clean(events)


def test_a_job_held_back_by_a_better_planned_start_lets_a_worse_short_job_backfill() -> None:
    """Two planned starts share the freed pool's story: the gang plans on eastus, the better
    1-GPU job plans on westus because on eastus it would run into the gang's start. A GPU freed
    on eastus goes to the worse job that ends in time, and neither plan moves."""
    catalog = a_catalog().cloud("azure", {"eastus": {"H100": 8}, "westus": {"H100": 4}}, price=3.4).obj()
    engine, events, _clock = recording_engine(catalog, a_contract(preemption=False))
    engine.submit(a_job().named("east-a").gpus(1).hours(0.1).regions("eastus").obj())
    engine.submit(a_job().named("east-b").gpus(7).hours(0.1).regions("eastus").obj())
    engine.submit(a_job().named("west").gpus(4).hours(0.1).regions("westus").obj())
    assert engine.submit(a_job().named("short").gpus(1).hours(0.1).obj()).outcome == "queued"
    assert engine.submit(a_job().named("gang").gpus(8).hours(0.1).priority(1).obj()).outcome == "queued"
    assert engine.submit(a_job().named("long").gpus(1).hours(1).priority(1).obj()).outcome == "queued"
    assert engine.status("gang").planned == ("azure", "eastus", 360.0)
    assert engine.status("long").planned == ("azure", "westus", 360.0)
    mark = len(events)
    engine.release("east-a")  # 1 GPU on eastus until the gang's start at 360 s
    assert placed_jobs(events, mark) == ["short"]
    assert (engine.status("short").cloud, engine.status("short").region) == ("azure", "eastus")
    assert engine.status("gang").planned == ("azure", "eastus", 360.0)
    assert engine.status("long").planned == ("azure", "westus", 360.0)
    assert_clean(events)


def test_a_decline_at_the_holders_discretion_does_not_hold_back_the_next_job_of_the_same_shape() -> None:
    """The holder draws its discretionary declines per job (holderRules.declineFraction): the job
    it turns down says nothing about the next one of the same shape, which gets its own offer."""
    rules = {"declineFraction": 0.5, "declineSeed": 5}  # at t=0 it declines "ahead" and takes "busy" and "behind"
    assert [declines_at_discretion(0.5, 5, name, 0.0) for name in ("busy", "ahead", "behind")] == [False, True, False]
    catalog = a_catalog().cloud("azure", {"eastus": {"H100": 8}}, price=3.4, rules=rules).obj()
    # planning depth 0: no job holds a planned start, as past the depth of a long queue
    engine, events, _clock = recording_engine(catalog, a_contract(preemption=False), plan_depth=0)
    engine.submit(a_job().named("busy").gpus(8).obj())
    assert engine.submit(a_job().named("ahead").gpus(4).priority(5).obj()).outcome == "queued"
    assert engine.submit(a_job().named("behind").gpus(4).obj()).outcome == "queued"
    mark = len(events)
    engine.release("busy")
    assert placed_jobs(events, mark) == ["behind"]
    assert engine.status("ahead").outcome == "queued"
    assert_clean(events)


def test_a_pinned_job_declined_for_the_api_share_preempts_as_it_would_with_no_room_at_all() -> None:
    """The holder keeps a quarter of the pool for the API: with 4 of 8 GPUs busy, an inference job
    (pinned to the holder) may use only 2 more. That is a decline for capacity like any other, so
    it preempts the lower-priority training job, as it would if those 2 GPUs were taken too (before,
    it waited here, and the next job to take the 2 GPUs let it preempt at the same instant)."""
    catalog = a_catalog().cloud("azure", {"eastus": {"H100": 8}}, price=3.4, rules={"reserveForApiServingFraction": 0.25}).obj()
    contract = a_contract(pins={"api-serving": ["azure"], "inference": ["azure"]})
    engine, events, _clock = recording_engine(catalog, contract)
    engine.submit(a_job().named("train").gpus(4).priority(0).obj())
    infer = engine.submit(a_job().named("infer").cls("inference").gpus(4).priority(1).obj())
    assert (infer.outcome, infer.via, infer.rofr_reason) == ("placed", "preemption", "reserved-for-api-serving")
    assert [e.job for e in events if isinstance(e, Preempted)] == ["train"]
    assert_clean(events)


def test_a_pinned_job_the_holder_turns_down_at_its_discretion_preempts_nothing_at_that_instant() -> None:
    """The holder's discretionary draw is one answer per job and instant. Where it has room it
    declines the offer; once others have taken that room, the same job at the same instant still
    preempts nothing, so re-planning at that instant changes nothing. At the next instant the job
    draws again, and preempts."""
    rules = {"declineFraction": 0.5, "declineSeed": 4}
    draws = [("api", 0.0), ("old", 0.0), ("filler", 0.0), ("late", 0.0), ("api", 60.0)]
    assert [declines_at_discretion(0.5, 4, name, at) for name, at in draws] == [True, False, False, True, False]
    catalog = a_catalog().cloud("azure", {"eastus": {"H100": 4}, "westus": {"H100": 8}}, price=3.4, rules=rules).obj()
    engine, events, clock = recording_engine(catalog, a_contract(), plan_depth=0)
    engine.submit(a_job().named("old").gpus(4).obj())  # eastus
    api = engine.submit(a_job().named("api").cls("api-serving").gpus(4).priority(1).obj())
    assert (api.outcome, api.rofr_reason) == ("queued", "at-discretion")  # westus had room
    assert engine.submit(a_job().named("filler").gpus(8).obj()).cloud == "azure"  # takes westus
    mark = len(events)
    engine.retry("H100")  # the same instant: nothing left to do
    assert events[mark:] == []
    assert engine.status("old").outcome == "placed"
    late = engine.submit(a_job().named("late").cls("api-serving").gpus(4).priority(1).obj())  # its draw says no too
    assert (late.outcome, late.rofr_reason) == ("queued", "no-capacity")
    assert late.detail == "azure declined: no-capacity; no other cloud allowed; azure turns it down at its discretion at this instant, so it preempts nothing"
    engine.end("late", "cancelled")
    clock.advance(60)
    engine.retry("H100")
    assert (engine.status("api").via, engine.status("old").outcome) == ("preemption", "queued")
    assert_clean(events)


def test_a_pool_shrink_that_evicts_more_than_needed_offers_the_rest_to_the_queue() -> None:
    catalog = (
        a_catalog().cloud("azure", {"eastus": {"H100": 16}}, price=3.4).cloud("oci", {"ashburn": {"H100": 8}}, price=2.9).obj()
    )
    engine, events, _ = recording_engine(catalog)
    engine.submit(a_job().named("a").gpus(8).obj())
    engine.submit(a_job().named("b").gpus(8).obj())
    engine.submit(a_job().named("c").gpus(8).obj())  # oci
    waiting = engine.submit(a_job().named("small").gpus(2).obj())
    assert waiting.outcome == "queued"
    engine.set_capacity("azure", "eastus", "H100", 10)  # evicts one 8-GPU job: 2 GPUs left over
    assert engine.status("small").cloud == "azure"
    assert_clean(events)


def test_a_preemption_that_frees_more_than_needed_offers_the_rest_to_the_queue() -> None:
    engine, events, _ = recording_engine(two_clouds(azure_h100=16, oci_h100=0))
    engine.submit(a_job().named("wide").gpus(16).priority(0).obj())
    waiting = engine.submit(a_job().named("infer").cls("inference").gpus(8).priority(5).obj())
    assert waiting.outcome == "queued"
    engine.submit(a_job().named("api").cls("api-serving").gpus(8).priority(100).obj())
    assert engine.status("api").via == "preemption"
    assert engine.status("infer").cloud == "azure"  # the 8 GPUs the API job did not need
    assert engine.status("wide").outcome == "queued"
    assert_clean(events)


def test_capacity_that_drops_and_returns_is_used_again() -> None:
    # v1 cached "gang-too-large" from the capacity of the moment: after a drop and a return,
    # jobs of that shape stayed queued and new ones were refused.
    engine, events, _ = recording_engine(two_clouds(azure_h100=8, oci_h100=64))
    engine.set_capacity("oci", "us-ashburn-1", "H100", 0)
    first = engine.submit(a_job().named("big").gpus(16).obj())
    assert first.outcome == "queued"
    engine.set_capacity("oci", "us-ashburn-1", "H100", 64)
    assert engine.status("big").cloud == "oci"
    assert engine.submit(a_job().named("big-2").gpus(16).obj()).cloud == "oci"
    assert_clean(events)


def test_an_api_job_the_holder_can_never_accept_is_refused_not_queued_forever() -> None:
    cat = (
        a_catalog()
        .cloud(
            "azure",
            {"eastus": {"H100": 64, "H200": 64}, "westus": {"H100": 16}},
            price=3.4,
            rules={"declineGpuTypes": ["H200"], "maxGangGpus": 32},
        )
        .cloud("oci", {"us-ashburn-1": {"H100": 64, "H200": 64}}, price=2.9)
        .obj()
    )
    engine, events, _ = recording_engine(cat)
    before = len(events)
    with pytest.raises(AdmissionError, match="never accepts"):
        engine.submit(a_job().named("a").cls("api-serving").sku("H200").gpus(8).obj())
    with pytest.raises(AdmissionError, match="maxGangGpus"):
        engine.submit(a_job().named("b").cls("api-serving").gpus(48).obj())
    with pytest.raises(AdmissionError, match="largest"):
        engine.submit(a_job().named("c").cls("api-serving").gpus(32).regions("westus").obj())
    assert len(events) == before
    # A movable job of the same shape is fine: the holder declines it and it spills ...
    assert engine.submit(a_job().named("d").gpus(48).obj()).cloud == "oci"
    # ... unless no other cloud could ever host it either.
    with pytest.raises(AdmissionError, match="only azure could ever host it"):
        engine.submit(a_job().named("e").sku("H200").gpus(8).regions("eastus").obj())


def test_a_lapse_is_reported_as_a_lapse_for_pinned_jobs() -> None:
    engine, _, _ = recording_engine(two_clouds(latency=45.0), a_contract(window=30))
    d = engine.submit(a_job().named("api").cls("api-serving").gpus(8).obj())
    assert (d.reason, d.rofr_answer) == ("pinned-holder-lapsed", "lapsed")


def test_explain_names_each_backend_once() -> None:
    cat = a_catalog().cloud("azure", {"eastus": {"H100": 8}}).cloud("oci", {"ashburn": {"H100": 64}}).obj()
    engine, _, _ = recording_engine(cat)
    d = engine.submit(a_job().named("x").regions("ashburn").obj())
    clouds = [c for c, _ in d.dropped]
    assert sorted(clouds) == sorted(set(clouds)) and "azure" in clouds


def test_a_moved_job_says_where_it_came_from() -> None:
    engine, _, _ = recording_engine(two_clouds(azure_h100=8, oci_h100=64))
    engine.submit(a_job().named("train").gpus(8).priority(0).obj())
    engine.submit(a_job().named("api").cls("api-serving").gpus(8).priority(100).obj())
    d = engine.status("train")
    assert d.line().startswith(
        "moved train to oci/us-ashburn-1 (8x H100, $2.90/GPU-h): preempted by api on azure/eastus; azure declined"
    )
    assert [h[1] for h in d.history] == ["placed", "evicted", "placed"]
    assert d.version == 3
    engine.release("train", "failed")
    ended = engine.status("train")
    assert (ended.outcome, ended.cloud, ended.region) == ("failed", "oci", "us-ashburn-1")


@pytest.mark.parametrize("reason", ["finished", "failed", "stopped", "cancelled"])
def test_every_end_state_is_kept_for_running_and_queued_jobs(reason: str) -> None:
    engine, events, _ = recording_engine(two_clouds(azure_h100=8, oci_h100=0))
    engine.submit(a_job().named("run").gpus(8).obj())
    engine.submit(a_job().named("wait").gpus(8).obj())
    if reason in ("stopped", "cancelled"):
        assert engine.release("wait", reason).outcome == reason
    else:  # a job that never ran cannot finish or fail
        with pytest.raises(AdmissionError, match="queued"):
            engine.release("wait", reason)
        assert engine.status("wait").outcome == "queued"
    assert engine.release("run", reason).outcome == reason
    with pytest.raises(AdmissionError, match="already"):
        engine.release("run", "finished")
    with pytest.raises(AdmissionError, match="unknown end reason"):
        engine.submit(a_job().named("x").gpus(1).obj()) and engine.release("x", "exploded")
    assert_clean(events)


def test_bind_refuses_a_stale_placement_attempt() -> None:
    engine, _, _ = recording_engine(two_clouds(azure_h100=8, oci_h100=64))
    d = engine.submit(a_job().named("train").gpus(8).obj())
    engine.bind("train", "pg-1", d.attempt)
    engine.submit(a_job().named("api").cls("api-serving").gpus(8).priority(100).obj())  # moves train
    with pytest.raises(AdmissionError, match="re-placed"):
        engine.bind("train", "pg-1", d.attempt)
    assert engine.bound_jobs() == {}
    moved = engine.status("train")
    engine.bind("train", "pg-2", moved.attempt)
    assert engine.bound_jobs() == {"train": (moved.attempt, "pg-2")}


def test_explanations_survive_a_restore() -> None:

    engine, events, clock = recording_engine(two_clouds(azure_h100=8, oci_h100=8))
    engine.submit(a_job().named("a").gpus(8).obj())
    engine.submit(a_job().named("b").gpus(8).obj())
    engine.submit(a_job().named("c").gpus(8).obj())
    restored = Engine.restore(engine.catalog, engine.contract, clock, events)
    for name in ("a", "b", "c"):
        live, again = engine.status(name).to_dict(explain=True), restored.status(name).to_dict(explain=True)
        assert again == live
        assert live["notUsed"], f"{name} lost its explanation"
    assert restored.status("c").reason == "no-capacity" and "oci" in restored.status("c").detail


def test_a_waiting_api_job_still_preempts_after_a_higher_priority_job_takes_the_freed_gpus() -> None:
    """A settle stops early once nothing offered can fit (``exhausted``), but not while an offered
    bucket may still preempt: here the release frees 8 GPUs, a priority-50 training job takes them
    first, and the priority-10 API job behind it can still start by evicting priority-0 work."""
    engine, events, _ = recording_engine(two_clouds(azure_h100=44, oci_h100=0))
    engine.submit(a_job().named("api-x").cls("api-serving").gpus(20).priority(100).obj())
    for i in range(3):
        engine.submit(a_job().named(f"train-{i}").gpus(8).priority(0).obj())
    # 0 free, 24 movable below priority 10: not enough for 32, so it waits
    assert engine.submit(a_job().named("api").cls("api-serving").gpus(32).priority(10).obj()).outcome == "queued"
    assert engine.submit(a_job().named("urgent").gpus(12).priority(50).clouds("azure").obj()).outcome == "queued"
    engine.release("api-x")  # 20 free: "urgent" (first by priority) takes 12; 8 free + 24 movable = the API job's 32
    assert engine.status("urgent").cloud == "azure"
    api = engine.status("api")
    assert (api.outcome, api.cloud, api.via) == ("placed", "azure", "preemption")
    assert sorted(e.job for e in events if isinstance(e, Preempted)) == ["train-0", "train-1", "train-2"]
    assert_clean(events)


def test_a_planned_start_moves_to_a_pool_that_frees_up_sooner() -> None:
    """Every release re-plans from the current state: a release on a pool other than the planned
    one moves the planned start there when the gang can now start there sooner."""
    catalog = a_catalog().cloud("azure", {"eastus": {"H100": 8}, "westus": {"H100": 8}}, price=3.4).obj()
    engine, events, _clock = recording_engine(catalog)
    engine.submit(a_job().named("east").gpus(8).hours(2).regions("eastus").obj())
    engine.submit(a_job().named("west-short").gpus(4).hours(1).regions("westus").obj())
    engine.submit(a_job().named("west-long").gpus(4).hours(3).regions("westus").obj())
    assert engine.submit(a_job().named("gang").gpus(8).priority(10).obj()).outcome == "queued"
    assert engine.status("gang").planned == ("azure", "eastus", 7200.0)
    engine.release("west-long")  # westus: 4 free now, the other 4 free at 1 h
    assert engine.status("gang").planned == ("azure", "westus", 3600.0)
    last = [e for e in events if isinstance(e, Reserved)][-1]
    assert (last.job, last.region, last.start_at) == ("gang", "westus", 3600.0)  # recorded, so a restore agrees
    assert_clean(events)

"""The simulator's numbers, each checked against an answer computed by hand on a tiny trace.

Unless a test says otherwise the world is: azure (the holder) answers in 2 s and starts
work 120 s after placement; oci answers in 3 s and starts in 60 s; the contract's window
is 30 s; class priorities api-serving 100 > inference 50 > training 0.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from scheduler.sim.scenario import Action
from scheduler.sim.simulator import Simulation
from scheduler.sim.summary import summarise
from scheduler.sim.traces import TraceJob
from scheduler.specs import CloudCatalog, Contract, ScenarioEvent
from tests.builders import a_catalog, a_contract


def world(azure: int = 8, oci: int = 64, azure_latency: float = 2.0, azure_extra: dict[str, int] | None = None) -> CloudCatalog:
    return (
        a_catalog()
        .cloud("azure", {"eastus": {"H100": azure, **(azure_extra or {})}}, price=3.6, latency=azure_latency, startup=120)
        .cloud("oci", {"us-ashburn-1": {"H100": oci}}, price=1.8, latency=3, startup=60)
        .obj()
    )


def job(name: str, at: float, gpus: int, seconds: float, cls: str = "training", **kw: object) -> TraceJob:
    return TraceJob(name, at, gpus, seconds, cls, **kw)  # type: ignore[arg-type]


def replay(jobs: list[TraceJob], catalog: CloudCatalog | None = None, policy: str = "contract", **kw: object) -> tuple[dict[str, Any], Simulation]:
    sim = Simulation(catalog or world(), a_contract(), policy, **kw)  # type: ignore[arg-type]
    sim.add_jobs(jobs)
    sim.run()
    return summarise(sim, {"H100"}), sim


def test_waits_charge_the_answer_latency_and_the_start_up() -> None:
    # a: azure accepts in 2 s, works from 0+2+120 = 122 to 1,122.
    # b (t=10): azure full -> declined in 2 s -> oci, works from 10+2+60 = 72: waited 62 s.
    s, sim = replay([job("a", 0, 8, 1000), job("b", 10, 8, 1000)])
    w = s["waitSeconds"]["training"]["first"]
    assert sorted(sim.rec.waits["training"]) == [62.0, 122.0]
    assert (w["count"], w["p50"], w["max"], w["atLeast"]) == (2, 62.0, 122.0, [])
    assert s["simulatedSeconds"] == 1122.0  # a's end; b ends at 72 + 1,000
    # GPUs are held (and paid) from placement: a 8 x 1,122 s at $3.6, b 8 x 1,062 s at $1.8
    assert s["costUsdPerCloud"] == pytest.approx({"azure": 8 * 1122 / 3600 * 3.6, "oci": 8 * 1062 / 3600 * 1.8})
    assert s["gpuHours"]["served"]["training"] == pytest.approx(16 * 1000 / 3600)
    assert s["costUsdPerServedGpuHour"] == pytest.approx(s["costUsdTotal"] / (16 * 1000 / 3600))
    assert s["contractViolations"] == {}


def test_a_lapsing_holder_strands_the_api_and_its_wait_is_censored() -> None:
    # azure answers in 40 s > the 30 s window: every offer lapses (charged 30 s).
    # api (pinned to azure) never starts; train spills to oci: starts 0+30+60 = 90, ends 1,090.
    s, _ = replay([job("api", 0, 8, 3600, "api-serving"), job("train", 0, 8, 1000)], world(azure_latency=40))
    assert s["apiStranded"] and s["neverPlaced"] == {"api-serving": 1}
    assert s["waitSeconds"]["training"]["first"]["p50"] == 90.0
    api = s["waitSeconds"]["api-serving"]
    assert (api["first"]["started"], api["first"]["censored"]) == (0, 1)
    # never reported as 0 nor left out: its wait so far is a lower bound of every percentile
    assert api["first"]["p50"] == 1090.0 and api["first"]["atLeast"] == ["p50", "p95", "p99", "max"]
    assert api["censored"] == {"count": 1, "p50": 1090.0, "max": 1090.0}
    assert s["neverStarted"] == {"api-serving": 1}
    assert s["gpuHours"]["unserved"] == {"training": 0.0, "api-serving": 8.0}
    assert s["rofr"]["declineAndLapseReasons"] == {"lapsed: no-answer-within-window": 2}
    from scheduler.sim.summary import headline

    assert headline(s, "t").startswith("API STRANDED under contract: 1 api-serving jobs never started")


def test_utilisation_counts_only_the_gpu_types_asked_for_over_the_horizon_and_the_steady_window() -> None:
    # azure has 8 H100 and 8 H200; the trace asks only for H100.
    # a: 4 GPUs held 0..1,122; b (t=2,000): 8 GPUs held 2,000..3,122. Run to 3,122.
    # Steady window = first to last arrival (0..2,000): only a's 4 x 1,122 held in it.
    catalog = world(azure_extra={"H200": 8})
    s, _ = replay([job("a", 0, 4, 1000), job("b", 2000, 8, 1000)], catalog)
    assert s["busySpan"]["seconds"] == 3122.0 and s["horizon"]["seconds"] == 3122.0
    assert (s["steadyWindow"]["start"], s["steadyWindow"]["end"]) == (0.0, 2000.0)
    util = s["utilisation"]
    assert set(util["azure"]) == {"H100"}  # H200 capacity never dilutes the figure
    assert util["azure"]["H100"]["horizon"] == pytest.approx((4 * 1122 + 8 * 1122) / (8 * 3122))
    assert util["azure"]["H100"]["steady"] == pytest.approx(4 * 1122 / (8 * 2000))
    assert util["oci"]["H100"]["horizon"] == 0.0
    assert util["azure"]["H100"]["peak"] == 1.0
    assert util["azure"]["H100"]["hoursNearFull"] == pytest.approx(1122 / 3600)  # b's 8 of 8, 2,000..3,122; a's 4 of 8 is not


def test_a_short_saturation_in_a_long_run_shows_in_its_peak_and_hours_near_full() -> None:
    # azure 8 H100. a: 4 GPUs held 0..1,122. At 500 the pool shrinks to 4: 4 of 4 held until
    # 1,122 (622 s near full). long: 1 GPU on azure from 2,000 for 100 days, so the busy span
    # is ~100 days and the mean ~25% (1 of 4), but the exact peak is 100% and the 622 s show.
    sim = Simulation(world(), a_contract(), "contract")
    sim.add_jobs([job("a", 0, 4, 1000), job("long", 2000, 1, 100 * 86400)])
    sim.add_capacity([(500.0, ("azure", "eastus", "H100"), 4)])
    sim.run()
    u = summarise(sim, {"H100"})["utilisation"]["azure"]["H100"]
    assert u["peak"] == 1.0 and u["hoursNearFull"] == pytest.approx(622 / 3600)
    assert u["horizon"] == pytest.approx(0.25, abs=0.001)  # the 100-day span averages the saturation away


def test_preemption_happens_in_a_replay_because_classes_have_priorities() -> None:
    # train holds all of azure from 0 (works from 122); api arrives at 500 and preempts it.
    # train: declined in 2 s -> oci, works from 500+2+60 = 562: waited 62 s after its eviction,
    # having done 378 s of 10,000; the rest (9,622 s) ends at 10,184.
    jobs = [job("train", 0, 8, 10_000), job("api", 500, 8, 600, "api-serving")]
    s, sim = replay(jobs)
    assert s["preemptions"] == {"pinned-job": 1}
    assert sim.rec.waits_after_eviction["training"] == [62.0]
    assert s["waitSeconds"]["training"]["afterEviction"]["count"] == 1
    assert s["waitSeconds"]["training"]["afterEviction"]["p50"] == 62.0 and s["waitSeconds"]["training"]["first"]["p50"] == 122.0
    assert s["waitSeconds"]["api-serving"]["first"]["p50"] == 122.0  # its own offer, then azure's start-up
    assert s["simulatedSeconds"] == 10_184.0
    assert s["gpuHours"]["served"]["training"] == pytest.approx(8 * 10_000 / 3600)
    # the spend accrued up to any instant (the cost plot) adds up to the booked cost, evictions included
    assert sim.rec.spent(sim.end) == pytest.approx(s["costUsdPerCloud"])
    # the same trace with every class at priority 0: the API waits for the training job instead
    flat, _ = replay(jobs, class_priorities={"api-serving": 0, "inference": 0, "training": 0})
    assert flat["preemptions"] == {}
    assert flat["waitSeconds"]["api-serving"]["first"]["p50"] == 10_122 - 500 + 122
    from scheduler.sim.summary import headline

    assert headline(flat).startswith("API DELAYED under contract: api-serving waits p50 2.7 h, p99 2.7 h to start")
    assert headline(s).startswith("API served under contract: every api-serving job started (p99 wait 2.0 min)")


def test_a_trace_row_priority_overrides_its_class() -> None:
    jobs = [job("train", 0, 8, 10_000, priority=500), job("api", 500, 8, 600, "api-serving")]
    s, _ = replay(jobs)
    assert s["preemptions"] == {}


def test_eviction_before_work_started_keeps_the_original_wait() -> None:
    # train placed at 0 on azure would work from 122; api preempts it at 100, before it started.
    # train re-placed on oci, works from 100+2+60 = 162: one wait of 162 s from submission.
    s, sim = replay([job("train", 0, 8, 1000), job("api", 100, 8, 600, "api-serving")])
    assert sim.rec.waits["training"] == [162.0] and not sim.rec.waits_after_eviction.get("training")
    assert s["gpuHours"]["served"]["training"] == pytest.approx(8 * 1000 / 3600)


def test_only_admission_errors_count_as_unplaceable() -> None:
    # azure has 8 GPUs, oci 64: a 16-GPU api-serving gang (azure only) and a 128-GPU training
    # gang can never run anywhere they are allowed: counted unplaceable, never queued forever
    sim = Simulation(world(), a_contract(), "contract")
    sim.add_jobs([job("big-api", 0, 16, 100, "api-serving"), job("huge", 0, 128, 100), job("ok", 0, 8, 100)])
    sim.run()
    s = summarise(sim, {"H100"})
    assert s["unplaceable"] == {"api-serving": 1, "training": 1} and s["neverPlaced"] == {"api-serving": 1, "training": 1}
    assert s["gpuHours"]["unserved"] == pytest.approx({"training": 128 * 100 / 3600, "api-serving": 16 * 100 / 3600})
    assert s["stillQueued"] == {} and s["apiStranded"]
    catalog = world()
    contract = a_contract()

    # a bug inside the engine (here: state it relies on is gone) must surface, not be counted unplaceable;
    # the engine is compiled, so its methods cannot be patched to raise
    sim = Simulation(catalog, contract, "contract")
    sim.engine.backends.clear()
    sim.add_jobs([job("ok", 0, 8, 100)])
    with pytest.raises(KeyError):
        sim.run()


def test_a_serving_replica_that_starts_late_still_ends_with_its_demand() -> None:
    # demand 0..600 s; azure starts it at 122: 478 s served, 122 s unserved
    s, _ = replay([job("r1", 0, 8, 600, "api-serving", fixed_end=True)])
    assert s["gpuHours"]["served"]["api-serving"] == pytest.approx(8 * 478 / 3600)
    assert s["gpuHours"]["unserved"]["api-serving"] == pytest.approx(8 * 122 / 3600)
    assert s["simulatedSeconds"] == 600.0 and not s["apiStranded"]


def test_a_scenario_outage_queues_the_api_until_the_holder_returns() -> None:
    # azure down 50..1,000: api at 100 lapses (backend-down), waits, is placed when azure is
    # back at 1,000 and works from 1,000+2+120: it waited 1,022 s.
    sim = Simulation(world(), a_contract(), "contract")
    sim.add_jobs([job("api", 100, 8, 600, "api-serving")])
    sim.add_scenario(
        [
            Action(50, ScenarioEvent(at=50, backend="azure", up=False), "azure down"),
            Action(1000, ScenarioEvent(at=1000, backend="azure", up=True), "azure up"),
        ]
    )
    sim.run()
    s = summarise(sim, {"H100"})
    assert s["waitSeconds"]["api-serving"]["first"]["p50"] == 1022.0
    assert s["rofr"]["declineAndLapseReasons"] == {"lapsed: backend-down": 1}
    assert sim.markers == [(50, "azure down"), (1000, "azure up")]


def test_policies_compare_as_the_contract_says() -> None:
    catalog = (
        a_catalog()
        .cloud("azure", {"eastus": {"H100": 16}}, price=3.4)
        .cloud("oci", {"us-ashburn-1": {"H100": 64}}, price=2.9, startup=60)
        .cloud("aws", {"us-east-1": {"H100": 32}}, price=3.9, startup=30)
        .obj()
    )
    jobs = [job(f"j{i}", i * 60.0, 8 if i % 3 else 4, 1800.0, "api-serving" if i % 5 == 0 else "training") for i in range(60)]
    contract, cheapest, azure_only = (replay(jobs, catalog, p)[0] for p in ("contract", "cheapest", "azure-only"))
    assert contract["contractViolations"] == {} and azure_only["contractViolations"] == {}
    assert sum(cheapest["contractViolations"].values()) > 0  # ignoring the ROFR breaks it, and the checker says so
    assert set(azure_only["jobsPerCloud"]) == {"azure"}
    assert cheapest["costUsdTotal"] < contract["costUsdTotal"]
    assert azure_only["holderShareOfGpuHours"] == 1.0 > contract["holderShareOfGpuHours"] > cheapest["holderShareOfGpuHours"]
    assert azure_only["waitSeconds"]["training"]["first"]["p95"] > contract["waitSeconds"]["training"]["first"]["p95"]


def spill_world() -> CloudCatalog:
    """The issue's case: after azure declines, oci costs $2.95 and starts in 300 s, gcp $3.70 in 240 s."""
    return (
        a_catalog()
        .cloud("azure", {"eastus": {"H100": 8}}, price=3.6, latency=2, startup=120)
        .cloud("oci", {"us-ashburn-1": {"H100": 8}}, price=2.95, latency=3, startup=300)
        .cloud("gcp", {"us-central1": {"H100": 8}}, price=3.70, latency=2, startup=240)
        .obj()
    )


def scored(spill: str, **weights: float) -> Contract:
    base = a_contract().model_dump(mode="json")
    base["spec"]["scoring"] = {"spill": spill, **({"weights": weights} if weights else {})}
    return Contract.model_validate(base)


@pytest.mark.parametrize(
    ("spill", "weights", "cloud", "wait"),
    [
        # a fills azure (works from 122); b (t=10) is declined in 2 s and spills.
        # price-first: oci ($2.95 < $3.70) although it starts later: 10 + 2 + 300 = 312, waited 302 s
        ("price-first", {}, "oci", 302.0),
        # start-first: gcp (240 s < 300 s): 10 + 2 + 240 = 252, waited 242 s
        ("start-first", {}, "gcp", 242.0),
        # weighted, 1 x price + 0.01 x start: oci 2.95 + 3.0 = 5.95 < gcp 3.70 + 2.4 = 6.10 -> oci
        ("weighted", {"price": 1.0, "startSeconds": 0.01}, "oci", 302.0),
        # weighted, 1 x price + 0.02 x start: oci 2.95 + 6.0 = 8.95 > gcp 3.70 + 4.8 = 8.50 -> gcp
        ("weighted", {"price": 1.0, "startSeconds": 0.02}, "gcp", 242.0),
    ],
)
def test_spill_after_a_decline_ranks_as_the_contract_says(spill: str, weights: dict[str, float], cloud: str, wait: float) -> None:
    from scheduler.sim.policies import spill_ranking

    contract = scored(spill, **weights)
    sim = Simulation(spill_world(), contract, "contract")
    sim.add_jobs([job("a", 0, 8, 1000), job("b", 10, 8, 1000)])
    sim.run()
    s = summarise(sim, {"H100"})
    assert s["jobsPerCloud"] == {"azure": 1, cloud: 1}
    assert sorted(sim.rec.waits["training"]) == sorted([122.0, wait])
    # b holds its 8 GPUs from 10 until its work ends (10 + wait + 1,000), at its cloud's price
    price = {"oci": 2.95, "gcp": 3.70}[cloud]
    assert s["costUsdPerCloud"][cloud] == pytest.approx(8 * (wait + 1000) / 3600 * price)
    assert spill_ranking(contract, "contract").startswith(spill)


def test_the_contract_sets_class_priorities_and_the_flag_overrides_it() -> None:
    from scheduler.sim.run import _priorities

    base = a_contract().model_dump(mode="json")
    base["spec"]["classPriorities"] = {"training": 200}
    contract = Contract.model_validate(base)
    assert _priorities(None, a_contract()) == ({"api-serving": 100, "inference": 50, "training": 0}, "default: api-serving > inference > training")
    assert _priorities(None, contract) == ({"api-serving": 100, "inference": 50, "training": 200}, "the contract's spec.classPriorities")
    assert _priorities("training=-5", contract) == ({"api-serving": 100, "inference": 50, "training": -5}, "--class-priorities")
    # training above api-serving by the contract: the API arriving at 500 cannot preempt it, so
    # it waits for the training job's end (0 + 122 + 10,000 = 10,122), then azure's 2 s and 120 s
    s, _ = replay([job("train", 0, 8, 10_000), job("api", 500, 8, 600, "api-serving")], class_priorities=_priorities(None, contract)[0])
    assert s["preemptions"] == {} and s["waitSeconds"]["api-serving"]["first"]["p50"] == 10_122 - 500 + 122


def test_the_library_replay_leaves_the_garbage_collector_alone() -> None:
    """GC settings belong to entry points (the CLI, the benchmark): ``run`` neither pauses nor tunes the collector."""
    import gc

    seen: list[bool] = []
    sim = Simulation(world(oci=4096), a_contract(), sinks=[lambda ev: seen.append(gc.isenabled())])
    sim.add_jobs([job(f"j{i}", i, 8, 500) for i in range(50)])
    enabled = gc.isenabled()
    gc.enable()
    try:
        sim.run()
    finally:
        if not enabled:
            gc.disable()
    assert seen and all(seen)
    assert summarise(sim, {"H100"})["jobs"] == 50


def test_wait_percentiles_are_nearest_rank_over_every_start() -> None:
    # 40 jobs on 16 azure + 16 oci GPUs: waits of many lengths, ties included; each figure is the
    # nearest-rank percentile (rank ceil(q x n), 1-based) of the sorted waits, the list sorted once
    s, sim = replay([job(f"j{k}", 7.0 * k, 8 if k % 3 else 4, 500 + 100 * (k % 5)) for k in range(40)])
    waits = sorted(sim.rec.waits["training"])
    assert len(set(waits)) > 5
    w = s["waitSeconds"]["training"]["first"]
    for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
        assert w[name] == waits[min(len(waits), max(1, math.ceil(q * len(waits)))) - 1]
    assert w["count"] == len(waits) and w["max"] == waits[-1]


# ------------------------------------------------------------------ v3: honest outcomes at a fixed horizon


def test_a_run_stops_at_its_horizon_and_counts_what_it_left_undone() -> None:
    # azure 8, oci 0 GPUs (oci has none: everything waits for azure). a: 8 GPUs 0+2+120 = 122 .. 1,122.
    # b (t=10) waits for a, placed at 1,122, works from 1,244. Horizon 1,000: a has done 878 s
    # (credited, charged 1,000 s of its GPUs), 122 s in progress; b never started: censored
    # at 990 s, unserved 8 x 600 s valued at the holder's $3.6.
    catalog = world(oci=0)
    sim = Simulation(catalog, a_contract(), "contract")
    sim.add_jobs([job("a", 0, 8, 1000), job("b", 10, 8, 600)])
    sim.run(horizon=1000)
    s = summarise(sim, {"H100"})
    assert s["horizon"] == {"seconds": 1000.0, "label": "16.7 minutes", "fixed": True, "arrivalsAfter": 0}
    assert s["gpuHours"]["served"]["training"] == pytest.approx(8 * 878 / 3600)
    assert s["gpuHours"]["inProgressAtHorizon"] == {"training": pytest.approx(8 * 122 / 3600)}
    assert s["gpuHours"]["unserved"]["training"] == pytest.approx(8 * 600 / 3600)
    assert s["neverStarted"] == {"training": 1} and s["runningAtHorizon"] == {"training": 1}
    assert s["unservedUsdPerGpuHour"] == {"H100": 3.6} and s["unservedValueUsd"] == pytest.approx(8 * 600 / 3600 * 3.6)
    assert s["costUsdPerCloud"] == pytest.approx({"azure": 8 * 1000 / 3600 * 3.6})
    assert s["costUsdWithUnserved"] == pytest.approx(s["costUsdTotal"] + s["unservedValueUsd"])
    first = s["waitSeconds"]["training"]["first"]
    assert (first["started"], first["censored"], first["p50"], first["max"]) == (1, 1, 122.0, 990.0)
    assert first["atLeast"] == ["p95", "p99", "max"]  # p50 is a's 122 s, exact; the top is b's >= 990 s
    assert summarise(sim, {"H100"}, unserved_rate=10.0)["unservedValueUsd"] == pytest.approx(8 * 600 / 3600 * 10)
    # without a horizon the same trace runs to its last event and every job is served
    full, _ = replay([job("a", 0, 8, 1000), job("b", 10, 8, 600)], catalog)
    assert full["neverStarted"] == {} and full["unservedValueUsd"] == 0.0


def test_capacity_changes_apply_up_to_the_horizon_after_the_last_job_would_have_ended() -> None:
    # azure 8 GPUs shrinks to 0 at 50 and comes back at 5,000, long after the job's arrival +
    # duration (600): the job waits for it and starts at 5,000 + 2 + 120.
    sim = Simulation(world(oci=0), a_contract(), "contract")
    sim.add_jobs([job("late", 100, 8, 600)])
    sim.add_capacity([(50.0, ("azure", "eastus", "H100"), 0), (5000.0, ("azure", "eastus", "H100"), 8)])
    sim.run(horizon=10_000)
    s = summarise(sim, {"H100"})
    assert s["waitSeconds"]["training"]["first"]["p50"] == 5122 - 100 and s["neverStarted"] == {}
    assert s["utilisation"]["azure"]["H100"]["horizon"] == pytest.approx(8 * (5722 - 5000) / (8 * 50 + 8 * 5000))


def test_holder_only_baseline_keeps_the_contracts_preemption_by_class() -> None:
    # azure-only: training fills azure; the API arrives and, as the contract says, preempts it there
    jobs = [job("train", 0, 8, 10_000), job("api", 500, 8, 600, "api-serving")]
    s, sim = replay(jobs, policy="azure-only")
    assert s["preemptions"] == {"pinned-job": 1} and set(s["jobsPerCloud"]) == {"azure"}
    assert [b.name for b in sim.catalog.spec.backends] == ["azure"] and s["contractViolations"] == {}


def test_violation_counts_are_contract_rules_only_the_checkers_notes_apart() -> None:
    catalog = (
        a_catalog()
        .cloud("azure", {"eastus": {"H100": 16}}, price=3.4)
        .cloud("oci", {"us-ashburn-1": {"H100": 64}}, price=2.9, startup=60)
        .obj()
    )
    jobs = [job(f"j{i}", i * 60.0, 8 if i % 3 else 4, 1800.0, "api-serving" if i % 5 == 0 else "training") for i in range(60)]
    s, sim = replay(jobs, catalog, "cheapest")
    every = {v.rule for v in sim.rec.checker.violations}
    from scheduler.sim.summary import CONTRACT_RULES

    assert set(s["contractViolations"]) == every & CONTRACT_RULES and s["contractViolations"]
    assert set(s["checkerNotes"]) == every - CONTRACT_RULES
    assert sum(s["contractViolations"].values()) + sum(s["checkerNotes"].values()) == len(sim.rec.checker.violations)


def test_an_admission_refusal_is_counted_with_its_reason_not_an_abort() -> None:
    s, _ = replay([job("big-api", 0, 16, 100, "api-serving"), job("ok", 0, 8, 100)])
    refused = s["refusedAtAdmission"]
    assert refused["count"] == 1 and refused["first"][0].startswith("big-api: ")
    assert s["neverStarted"] == {"api-serving": 1} and s["jobs"] == 2


def test_the_holder_only_baseline_ignores_events_of_the_clouds_it_leaves_out() -> None:
    sim = Simulation(world(), a_contract(), "azure-only")
    sim.add_jobs([job("a", 0, 8, 100)])
    sim.add_capacity([(10.0, ("oci", "us-ashburn-1", "H100"), 0)])
    sim.add_scenario([Action(20, ScenarioEvent(at=20, backend="oci", up=False), "oci down")])
    sim.run()
    assert summarise(sim, {"H100"})["jobsPerCloud"] == {"azure": 1} and sim.markers == [(20, "oci down")]

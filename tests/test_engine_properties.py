"""Properties of the engine over random worlds and operation streams.

1. Restore is "apply all": an engine restored from the recorded stream (JSON round-tripped,
   as the ledger stores it) and the live engine, continued with the same operations, make
   identical decisions with identical explanations.
2. The engine's shortcuts (skipping queue buckets that no longer fit, incremental
   reservations) are only shortcuts: with them off, the same operations emit the same events.
3. Priority holds: no job is placed on a holder pool while a queued job of higher priority
   (or equal priority, submitted earlier) could have started there, unless starting it would
   have run into the planned start of an even better job there (it could not backfill). A
   planned start is a job's: several jobs can hold one on the same pool.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import strategies as st

from scheduler.clock import ManualClock
from scheduler.engine import Engine
from scheduler.errors import AdmissionError
from scheduler.events import (
    BackendChanged,
    CapacityChanged,
    Configured,
    Dequeued,
    Event,
    Placed,
    Preempted,
    Released,
    ReservationCleared,
    Reserved,
    Submitted,
    event_from_record,
)
from scheduler.model import Job
from scheduler.specs import CloudCatalog, Contract
from tests.builders import a_catalog
from tests.strategies import catalogs, check_property, contracts, jobs, ops, sized

END_REASONS = ("finished", "failed", "stopped", "cancelled")


def run_op(engine: Engine, op: str, arg: Any, job: Job, clock: ManualClock, *, tick: bool = True) -> None:
    if op == "submit":
        with contextlib.suppress(AdmissionError):  # a refused request changes nothing
            engine.submit(job)
    elif op in ("release", "cancel"):
        states = ("running",) if op == "release" else ("running", "queued")
        live = sorted(n for n, r in engine.jobs.items() if r.state in states)
        if live:
            engine.release(live[arg % len(live)], END_REASONS[arg % 4] if op == "release" else "cancelled")
    elif op == "backend":
        cloud, up, extra = arg
        engine.set_backend(cloud, up=up, extra_latency_seconds=extra)
    elif op == "capacity":
        (cloud, region, sku), cap = arg
        engine.set_capacity(cloud, region, sku, cap)
    elif tick:
        clock.advance(arg)


def through_json(events: list[Event]) -> list[Event]:
    return [event_from_record(e.kind, json.loads(json.dumps(e.to_record()))) for e in events]


def snapshot(engine: Engine) -> tuple[Any, ...]:
    return (
        [d.to_dict(explain=True) for d in engine.decisions()],
        [(u.cloud, u.region, u.gpu_type, u.capacity, u.allocated) for u in engine.usage()],
        sorted((n, r.planned[0].key, r.planned[1]) for n, r in engine.jobs.items() if r.planned is not None),
        sorted(engine.queue.names()),
    )


@pytest.mark.parametrize("examples", sized(quick=300, full=1000))
def test_a_restored_engine_decides_exactly_like_the_live_one(examples: int) -> None:
    check_property(restored_decides_like_live, examples, data=st.data(), catalog=catalogs(), contract=contracts())


def restored_decides_like_live(data: st.DataObject, catalog: CloudCatalog, contract: Contract) -> None:
    stream = data.draw(st.lists(ops(catalog), max_size=40), label="ops")
    batch = [data.draw(jobs(f"j{i}", catalog)) for i in range(len(stream))]
    cut = data.draw(st.integers(0, len(stream)), label="cut")
    clock = ManualClock()
    live = Engine(catalog, contract, clock)
    events: list[Event] = []
    live.subscribe(events.append)
    live.announce()
    for (op, arg), job in zip(stream[:cut], batch[:cut], strict=True):
        run_op(live, op, arg, job, clock)
    restored = Engine.restore(catalog, contract, clock, through_json(events))
    assert snapshot(restored) == snapshot(live)
    tail_live: list[Event] = []
    tail_restored: list[Event] = []
    live.subscribe(tail_live.append)
    restored.subscribe(tail_restored.append)
    for (op, arg), job in zip(stream[cut:], batch[cut:], strict=True):
        run_op(live, op, arg, job, clock)
        run_op(restored, op, arg, job, clock, tick=False)
        assert [e.to_record() for e in tail_restored] == [e.to_record() for e in tail_live]
    assert snapshot(restored) == snapshot(live)


# --------------------------------------------------------------------------- priority oracle


@dataclass
class World:
    """The test's own model of the recorded stream (no engine code): pools, backends, reservations, jobs."""

    holder: str = ""
    window: float = 0.0
    rules: dict[str, Any] = field(default_factory=dict)
    pins: dict[str, list[str]] = field(default_factory=dict)
    capacity: dict[tuple[str, str, str], int] = field(default_factory=dict)
    allocated: dict[tuple[str, str, str], int] = field(default_factory=dict)
    jurisdiction: dict[tuple[str, str], str] = field(default_factory=dict)
    up: dict[str, bool] = field(default_factory=dict)
    latency: dict[str, float] = field(default_factory=dict)
    # A planned start belongs to a job (a job has at most one; several jobs can plan on one pool).
    planned: dict[str, tuple[tuple[str, str, str], float]] = field(default_factory=dict)
    spec: dict[str, dict[str, Any]] = field(default_factory=dict)
    seq: dict[str, int] = field(default_factory=dict)

    def feed(self, ev: Event) -> None:
        if isinstance(ev, Configured):
            self.holder = ev.contract["spec"]["rofr"]["holder"]
            self.window = ev.contract["spec"]["rofr"]["windowSeconds"]
            self.pins = ev.contract["spec"]["pins"]
            for b in ev.catalog["spec"]["backends"]:
                self.up[b["name"]] = b["up"]
                self.latency[b["name"]] = b["latencySeconds"] + b["faults"]["extraLatencySeconds"]
                if b["name"] == self.holder:
                    self.rules = b["holderRules"]
                for r in b["regions"]:
                    self.jurisdiction[(b["name"], r["name"])] = r["jurisdiction"]
                    for t, n in r["gpus"].items():
                        self.capacity[(b["name"], r["name"], t)] = n
                        self.allocated[(b["name"], r["name"], t)] = 0
        elif isinstance(ev, Submitted):
            self.spec[ev.job] = ev.spec
            self.seq[ev.job] = len(self.seq)
        elif isinstance(ev, Placed):
            self.allocated[(ev.cloud, ev.region, ev.gpu_type)] += ev.gpus
            self.planned.pop(ev.job, None)
        elif isinstance(ev, Preempted | Released):
            self.allocated[(ev.cloud, ev.region, ev.gpu_type)] -= ev.gpus
        elif isinstance(ev, BackendChanged):
            self.up[ev.cloud] = ev.up
            self.latency[ev.cloud] = ev.latency_seconds
        elif isinstance(ev, CapacityChanged):
            self.capacity[(ev.cloud, ev.region, ev.gpu_type)] = ev.capacity
        elif isinstance(ev, Reserved):
            self.planned[ev.job] = ((ev.cloud, ev.region, ev.gpu_type), ev.start_at)
        elif isinstance(ev, ReservationCleared | Dequeued):
            self.planned.pop(ev.job, None)

    def rank(self, job: str) -> tuple[int, int]:
        return (-int(self.spec[job]["priority"]), self.seq[job])

    def could_start_on_holder_pool(self, q: str, pool: tuple[str, str, str], at: float) -> bool:
        s = self.spec[q]
        cloud, region, gpu_type = pool
        if cloud != self.holder or not self.up[cloud] or self.latency[cloud] > self.window:
            return False
        pins = self.pins.get(s["cls"])
        if (pins is not None and cloud not in pins) or (s.get("clouds") and cloud not in s["clouds"]):
            return False
        if s["gpu_type"] != gpu_type or (s.get("regions") and region not in s["regions"]):
            return False
        if s.get("jurisdiction") and self.jurisdiction[(cloud, region)] != s["jurisdiction"]:
            return False
        if gpu_type in self.rules.get("declineGpuTypes", []):
            return False
        if self.rules.get("maxGangGpus") is not None and s["gpus"] > self.rules["maxGangGpus"]:
            return False
        cap, alloc = self.capacity[pool], self.allocated[pool]
        if cap - alloc < s["gpus"]:
            return False
        keep = 0.0 if s["cls"] == "api-serving" else self.rules.get("reserveForApiServingFraction", 0.0)
        if keep and alloc + s["gpus"] > int(cap * (1 - keep)):
            return False
        # Held back: starting now would run into the planned start of an even better job there.
        end = at + float(s["duration_hours"]) * 3600
        return not any(
            r != q and where == pool and self.rank(r) < self.rank(q) and end > start for r, (where, start) in self.planned.items()
        )


def contended_ops(catalog: CloudCatalog) -> st.SearchStrategy[tuple[str, Any]]:
    """Mostly submissions and releases, so queues build up and freed GPUs are contested."""
    return st.one_of(
        st.tuples(st.just("submit"), st.integers(0, 10**6)),
        st.tuples(st.just("submit"), st.integers(0, 10**6)),
        st.tuples(st.just("submit"), st.integers(0, 10**6)),
        st.tuples(st.just("release"), st.integers(0, 10**6)),
        st.tuples(st.just("release"), st.integers(0, 10**6)),
        ops(catalog),
    )


def contended_jobs(name: str, catalog: CloudCatalog) -> st.SearchStrategy[Job]:
    """Jobs that compete for the holder: mostly api-serving (pinned there), any priority."""
    return st.builds(
        Job,
        name=st.just(name),
        cls=st.sampled_from(["api-serving", "api-serving", "training", "inference"]),
        gpus=st.sampled_from([1, 2, 4, 8]),
        gpu_type=st.just("H100"),
        priority=st.integers(-3, 3),
        duration_hours=st.sampled_from([0.1, 1.0, 10.0]),
    )


def contended_world(azure: int, other: int) -> CloudCatalog:
    return (
        a_catalog()
        .cloud("azure", {"eastus": {"H100": azure}, "westus": {"H100": azure // 2}}, price=3.4, latency=2.0)
        .cloud("oci", {"ashburn": {"H100": other}}, price=2.9, startup=60)
        .obj()
    )


@pytest.mark.parametrize("examples", sized(quick=150, full=500))
def test_no_job_starts_on_capacity_a_better_queued_job_could_use(examples: int) -> None:
    check_property(no_start_on_capacity_a_better_job_could_use, examples,
                   data=st.data(), catalog=st.builds(contended_world, st.sampled_from([8, 16]), st.sampled_from([0, 8])), contract=contracts())


def no_start_on_capacity_a_better_job_could_use(data: st.DataObject, catalog: CloudCatalog, contract: Contract) -> None:
    clock = ManualClock()
    engine = Engine(catalog, contract, clock)
    world = World()
    op_events: list[Event] = []
    engine.subscribe(op_events.append)
    engine.announce()
    for ev in op_events:
        world.feed(ev)
    for i, (op, arg) in enumerate(data.draw(st.lists(contended_ops(catalog), max_size=60), label="ops")):
        op_events.clear()
        run_op(engine, op, arg, data.draw(contended_jobs(f"j{i}", catalog)), clock)
        queued = {n for n, r in engine.jobs.items() if r.state == "queued"}
        for ev in op_events:
            if isinstance(ev, Placed) and ev.via != "preemption":
                pool = (ev.cloud, ev.region, ev.gpu_type)
                better = [q for q in queued if q in world.seq and world.rank(q) < world.rank(ev.job)]
                starved = [q for q in better if world.could_start_on_holder_pool(q, pool, ev.at)]
                assert not starved, f"{ev.job} placed on {pool} while better queued {starved} could start there"
            world.feed(ev)

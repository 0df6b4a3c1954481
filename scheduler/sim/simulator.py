"""The discrete-event loop: trace arrivals, finishes and capacity changes drive the engine.

The engine is the production one with a ``ManualClock``; everything the summary reports is
derived from the same event stream the ledger records.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from scheduler.clock import ManualClock
from scheduler.engine import Engine
from scheduler.errors import AdmissionError
from scheduler.events import Answered, Event, Placed, Preempted, Queued, Released
from scheduler.invariants import InvariantChecker
from scheduler.model import Job
from scheduler.sim.policies import POLICIES, policy_for

__all__ = ["POLICIES", "Recorder", "Sample", "Simulation"]
from scheduler.sim.traces import SpotTrace, TraceJob
from scheduler.specs import CloudCatalog, Contract

CAPACITY, FINISH, ARRIVAL = 0, 1, 2  # same instant: capacity first, then frees, then arrivals


@dataclass
class Sample:
    t: float
    placements: dict[str, int]
    queued: dict[str, int]
    utilisation: dict[str, float]
    cost: dict[str, float]


@dataclass
class Recorder:
    """Event sink that keeps the figures the summary and plots need."""

    engine: Engine
    schedule_finish: Callable[[str, float], None]
    remaining: dict[str, float]
    arrival: dict[str, float]
    events: int = 0
    placements: Counter[str] = field(default_factory=Counter)
    answers: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    waits: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    gpu_seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    cost: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    queued: dict[str, str] = field(default_factory=dict)
    started: dict[str, float] = field(default_factory=dict)
    preemptions: Counter[str] = field(default_factory=Counter)
    checker: InvariantChecker = field(default_factory=InvariantChecker)

    def __call__(self, ev: Event) -> None:
        self.events += 1
        self.checker.feed(ev, self.events)
        if isinstance(ev, Answered):
            self.answers[ev.answer] += 1
            if ev.answer in ("declined", "lapsed"):
                self.reasons[f"{ev.answer}: {ev.reason}"] += 1
        elif isinstance(ev, Placed):
            self.queued.pop(ev.job, None)
            self.placements[ev.cloud] += 1
            now = ev.at
            if ev.job not in self.started:  # first placement: the queue wait the user felt
                self.waits[ev.cls].append(now - self.arrival[ev.job])
            self.started[ev.job] = now
            self.schedule_finish(ev.job, now + self.remaining[ev.job])
        elif isinstance(ev, Queued):
            self.queued[ev.job] = ev.cls
        elif isinstance(ev, Preempted | Released):
            ran = ev.at - self.started.get(ev.job, ev.at)
            self.gpu_seconds[ev.cloud] += ev.gpus * ran
            self.cost[ev.cloud] += ev.cost_usd
            if isinstance(ev, Preempted):
                self.preemptions[ev.reason] += 1
                self.remaining[ev.job] = max(self.remaining[ev.job] - ran, 1.0)  # resumes from its checkpoint


class Simulation:
    def __init__(self, catalog: CloudCatalog, contract: Contract, policy: str = "contract", sinks: list[Callable[[Event], None]] | None = None) -> None:
        self.clock = ManualClock()
        self.engine = Engine(catalog, contract, self.clock, policy=policy_for(policy, contract))
        self.policy = policy
        self.heap: list[tuple[float, int, int, Any]] = []
        self._seq = 0
        self._token: dict[str, int] = {}
        self.remaining: dict[str, float] = {}
        self.arrival: dict[str, float] = {}
        self.rec = Recorder(self.engine, self._schedule_finish, self.remaining, self.arrival)
        for sink in sinks or []:
            self.engine.subscribe(sink)
        self.engine.subscribe(self.rec)
        self.engine.announce()
        self.samples: list[Sample] = []
        self.sim_events = 0
        self.unplaceable = 0

    def _push(self, t: float, kind: int, data: Any) -> None:
        self._seq += 1
        heapq.heappush(self.heap, (t, kind, self._seq, data))

    def _schedule_finish(self, job: str, at: float) -> None:
        token = self._token.get(job, 0) + 1
        self._token[job] = token
        self._push(at, FINISH, (job, token))

    def add_jobs(self, jobs: list[TraceJob], speedup: float = 1.0) -> None:
        for j in jobs:
            t = j.arrival / speedup
            self.arrival[j.name] = t
            self.remaining[j.name] = j.duration
            self._push(t, ARRIVAL, j)

    def add_capacity_trace(self, traces: list[SpotTrace], cloud: str, gpu_type: str, speedup: float = 1.0) -> list[str]:
        """Drive ``cloud``'s pools of ``gpu_type`` (one zone file per pool, round robin)."""
        pools = [p for p in self.engine.inventory.by_cloud.get(cloud, []) if p.gpu_type == gpu_type]
        if not pools:
            raise ValueError(f"catalog has no {gpu_type} pools on {cloud} to drive")
        used = []
        for i, pool in enumerate(pools):
            trace = traces[i % len(traces)]
            base = pool.capacity
            prev = None
            for k, avail in enumerate(trace.data):
                cap = base if avail > 0 else 0
                if cap != prev:
                    self._push(k * trace.gap_seconds / speedup, CAPACITY, (pool.cloud, pool.region, pool.gpu_type, cap))
                    prev = cap
            used.append(f"{pool.region} <- {trace.zone}")
        return used

    def run(self, *, samples: int = 200, progress: Callable[[int], None] | None = None, flush: Callable[[], object] | None = None) -> None:
        heap, engine, clock = self.heap, self.engine, self.clock
        if not heap:
            return
        end = max(t for t, *_ in heap)
        step = max(end / samples, 1.0)
        next_sample = 0.0
        done = 0
        while heap:
            t, kind, _, data = heapq.heappop(heap)
            while t >= next_sample:
                self._sample(next_sample)
                next_sample += step
            if t > clock.t:
                clock.t = t
            self.sim_events += 1
            if kind == ARRIVAL:
                job = Job(name=data.name, cls=data.cls, gpus=data.gpus, gpu_type=data.gpu_type, duration_hours=data.duration / 3600)
                try:
                    engine.submit(job)
                except AdmissionError:
                    self.unplaceable += 1  # no allowed pool can ever host it: counted, never queued
                done += 1
                if progress is not None and done % 500 == 0:
                    progress(500)
            elif kind == FINISH:
                name, token = data
                if self._token.get(name) == token and engine.jobs[name].state == "running":
                    engine.release(name)
            else:
                engine.set_capacity(*data)
            if flush is not None and self.sim_events % 2000 == 0:
                flush()
        self._sample(clock.t)
        if progress is not None:
            progress(done % 500)

    def _sample(self, t: float) -> None:
        util: dict[str, float] = {}
        for cloud, pools in self.engine.inventory.by_cloud.items():
            cap = sum(p.capacity for p in pools)
            util[cloud] = sum(p.allocated for p in pools) / cap if cap else 0.0
        self.samples.append(
            Sample(t, dict(self.rec.placements), dict(Counter(self.rec.queued.values())), util, dict(self.rec.cost))
        )

    def summary(self) -> dict[str, Any]:
        rec = self.rec
        now = self.clock.t
        gpu_seconds: dict[str, float] = defaultdict(float, rec.gpu_seconds)
        cost: dict[str, float] = defaultdict(float, rec.cost)
        for rec_job in self.engine.jobs.values():  # still running at the end: count them up to now
            if rec_job.state == "running" and rec_job.pool is not None:
                ran = now - rec.started.get(rec_job.job.name, now)
                gpu_seconds[rec_job.pool.cloud] += rec_job.job.gpus * ran
                cost[rec_job.pool.cloud] += rec_job.price * rec_job.job.gpus * ran / 3600
        total_gpu_s = sum(gpu_seconds.values())
        capacity_s = {c: sum(p.capacity for p in pools) * now for c, pools in self.engine.inventory.by_cloud.items()}
        holder = self.engine.holder

        def pct(xs: list[float], q: float) -> float:
            if not xs:
                return 0.0
            s = sorted(xs)
            return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]

        return {
            "policy": self.policy,
            "simulatedSeconds": now,
            "jobs": len(self.engine.jobs),
            "unplaceable": self.unplaceable,
            "jobsPerCloud": dict(rec.placements),
            "rofr": {"answers": dict(rec.answers), "declineAndLapseReasons": dict(rec.reasons)},
            "holderShareOfGpuHours": (gpu_seconds[holder] / total_gpu_s) if total_gpu_s else 0.0,
            "gpuHoursPerCloud": {c: v / 3600 for c, v in gpu_seconds.items()},
            "waitSeconds": {
                cls: {"p50": pct(w, 0.5), "p95": pct(w, 0.95), "p99": pct(w, 0.99), "count": len(w)} for cls, w in sorted(rec.waits.items())
            },
            "stillQueued": dict(Counter(rec.queued.values())),
            "costUsdPerCloud": dict(cost),
            "costUsdTotal": sum(cost.values()),
            "utilisation": {c: (gpu_seconds[c] / cap if cap else 0.0) for c, cap in capacity_s.items()},
            "preemptions": dict(rec.preemptions),
            "contractViolations": dict(Counter(v.rule for v in rec.checker.violations)),
            "events": {"engine": rec.events, "simulation": self.sim_events},
        }

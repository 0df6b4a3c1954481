"""The placement engine's façade: requests in, events out, state changed only by applying them.

Pure Python: no Ray, no I/O, time from an injected clock. Each request (submit, end, a
backend or capacity change, a contract reload) emits the events that record it, then
re-plans the GPU types it touched (``scheduler.core.planner``): jobs start through the ROFR
gate (``scheduler.core.decide``) or get planned starts. Every event goes through
``State.apply`` and then to the subscribers (ledger, metrics), so a restored engine, which
applies the ledger's events, is the live one. Semantics: docs/queueing.md.
"""

from __future__ import annotations

from collections.abc import Iterable

from scheduler.backends import BackendState
from scheduler.clock import Clock
from scheduler.core import explain
from scheduler.core.planner import DEFAULT_PLAN_DEPTH, Replan, settle
from scheduler.core.queue import JobQueue
from scheduler.core.state import END_STATE, JobRecord, PoolKey, State
from scheduler.decision import Decision
from scheduler.errors import AdmissionError, UnknownJobError
from scheduler.events import (
    RUNTIME_KINDS,
    BackendChanged,
    Bound,
    CapacityChanged,
    Configured,
    Cordoned,
    Dequeued,
    Event,
    EventSink,
    Preempted,
    Reconfigured,
    Released,
    Submitted,
)
from scheduler.inventory import Inventory, PoolUsage
from scheduler.model import Job
from scheduler.pipeline.admit import Candidates
from scheduler.pipeline.outcomes import TERMINAL_STATES, EndReason, EvictReason, JobState
from scheduler.pipeline.policy import Policy
from scheduler.pipeline.preempt import choose_victims
from scheduler.specs import API_CLASS, CloudCatalog, Contract


class Engine:
    """Owns the scheduling state; the only writer of placements."""

    def __init__(
        self,
        catalog: CloudCatalog,
        contract: Contract,
        clock: Clock,
        *,
        policy: Policy | None = None,
        plan_depth: int = DEFAULT_PLAN_DEPTH,
        replan: Replan = settle,
    ) -> None:
        """``policy`` is for what-if runs (``scheduler/sim/policies.py``); live placement uses the contract's.
        ``plan_depth``: how many jobs of one GPU type hold a planned start at once. ``replan`` is
        the planner; tests pass their reference planner (tests/reference.py) to hold this one to it."""
        if plan_depth < 0:
            raise AdmissionError("plan_depth must be >= 0")
        self.clock = clock
        self.plan_depth = plan_depth
        self._replan = replan
        self.state = State(catalog, contract, policy)
        self._sinks: list[EventSink] = []

    # ------------------------------------------------------------------ read-only views of the state

    @property
    def catalog(self) -> CloudCatalog:
        return self.state.catalog

    @property
    def contract(self) -> Contract:
        return self.state.contract

    @property
    def holder(self) -> str:
        return self.state.holder

    @property
    def jobs(self) -> dict[str, JobRecord]:
        return self.state.jobs

    @property
    def queue(self) -> JobQueue:
        return self.state.queue

    @property
    def inventory(self) -> Inventory:
        return self.state.inventory

    @property
    def backends(self) -> dict[str, BackendState]:
        return self.state.backends

    @property
    def running(self) -> dict[PoolKey, dict[str, JobRecord]]:
        return self.state.running

    # ------------------------------------------------------------------ events

    def subscribe(self, sink: EventSink) -> None:
        self._sinks.append(sink)

    def unsubscribe(self, sink: EventSink) -> None:
        """Stop sending events to ``sink`` (the same object ``subscribe`` was given)."""
        self._sinks.remove(sink)

    def _emit(self, event: Event) -> None:
        self.state.apply(event)
        for sink in self._sinks:
            sink(event)

    def record(self, event: Event) -> None:
        """Record a runtime event (``events.RUNTIME_KINDS``: capacity blocks bought, joined,
        released) in the one stream, so the ledger and metrics see it; it changes no books."""
        if event.kind not in RUNTIME_KINDS:
            raise AdmissionError(f"{event.kind} is the engine's own event, not the runtime's")
        self._emit(event)

    def configured_event(self) -> Configured:
        return Configured(
            at=self.clock.now(),
            catalog=self.catalog.model_dump(mode="json", by_alias=True),
            contract=self.contract.model_dump(mode="json", by_alias=True),
        )

    def announce(self) -> None:
        """Record the configuration in force (first record of a ledger)."""
        self._emit(self.configured_event())

    def _settle(self, gpu_types: Iterable[str]) -> None:
        self._replan(self.state, self._emit, self.clock.now(), set(gpu_types), self.plan_depth)

    def _waiting_types(self) -> set[str]:
        return set(self.state.queue.gpu_types())

    # ------------------------------------------------------------------ requests

    def validate(self, job: Job) -> None:
        """Everything a request must satisfy before it is acknowledged (raises AdmissionError)."""
        state = self.state
        existing = state.jobs.get(job.name)
        if existing is not None and existing.state not in TERMINAL_STATES:
            raise AdmissionError(f"job {job.name!r} already exists ({existing.state})")
        pins = state.pins.get(job.cls)
        if pins is not None and job.clouds is not None:
            bad = [c for c in job.clouds if c not in pins]
            if bad:
                raise AdmissionError(f"{job.name}: {job.cls} jobs are pinned to {','.join(pins)}; cannot ask for {bad[0]}")
        if job.clouds is not None:
            unknown = [c for c in job.clouds if c not in state.backends]
            if unknown:
                raise AdmissionError(f"{job.name}: unknown cloud {unknown[0]!r}")
        cand = state.candidates(job)  # raises for a job no allowed cloud can ever host
        self._check_fits_catalog(job, cand)

    def _check_fits_catalog(self, job: Job, cand: Candidates) -> None:
        """A job must fit some allowed pool at the catalog's size, after the holder's API-serving
        reserve (a job that never fits would queue forever)."""
        if any(pools for _, pools in cand.others):
            return
        keep = 0.0 if job.cls == API_CLASS else self.state.backends[self.state.holder].api_reserve
        if keep <= 0.0:
            return
        best = None
        for pool in cand.holder_pools:
            room = int(pool.ceiling * (1.0 - keep))
            if best is None or room > best[0]:
                best = (room, pool)
        if best is not None and best[0] < job.gpus:
            room, pool = best
            raise AdmissionError(
                f"{job.name}: needs {job.gpus}x {job.gpu_type} but {pool.cloud}/{pool.region} lets {job.cls} jobs use at most "
                f"{room} of its {pool.ceiling} (reserveForApiServingFraction {keep:g}), and no other allowed cloud can host it"
            )

    def submit(self, job: Job) -> Decision:
        """Admit and place (or queue) one job; raises AdmissionError before any event on bad input."""
        self.post(job)
        return self.status(job.name)

    def post(self, job: Job) -> None:
        """``submit`` without building the Decision (bulk replays that only watch the events)."""
        self.validate(job)
        self._post(job)

    def _post(self, job: Job) -> None:
        self._emit(Submitted(self.clock.now(), job.name, job.cls, job.gpus, job.gpu_type, job.priority, job.to_dict()))
        self._settle((job.gpu_type,))

    def place_many(self, jobs: Iterable[Job]) -> list[Decision]:
        """Batch submission, one request: the whole batch is validated first (a bad job changes
        nothing), every job arrives at this instant, then one re-plan places them in queue order
        (docs/queueing.md, "Batches")."""
        batch = self.post_many(jobs)
        return [self.status(job.name) for job in batch]

    def post_many(self, jobs: Iterable[Job]) -> list[Job]:
        """``place_many`` without a Decision per job; returns the batch."""
        batch = self._validated(jobs)
        now = self.clock.now()
        for job in batch:
            self._emit(Submitted(now, job.name, job.cls, job.gpus, job.gpu_type, job.priority, job.to_dict()))
        self._settle({job.gpu_type for job in batch})
        return batch

    def _validated(self, jobs: Iterable[Job]) -> list[Job]:
        batch: list[Job] = []
        names: set[str] = set()
        for job in jobs:
            if job.name in names:
                raise AdmissionError(f"duplicate job name {job.name!r} in batch")
            names.add(job.name)
            self.validate(job)
            batch.append(job)
        return batch

    def release(self, name: str, reason: str = EndReason.FINISHED) -> Decision:
        """A job leaves for good: finished, failed, stopped or cancelled; its GPUs go to the queue."""
        self.end(name, reason)
        return self.status(name)

    def end(self, name: str, reason: str = EndReason.FINISHED) -> None:
        """``release`` without building the Decision."""
        if reason == "driver-exited":  # the v1 name for a dead driver
            reason = EndReason.STOPPED
        if reason not in END_STATE:
            raise AdmissionError(f"unknown end reason {reason!r} (expected one of {', '.join(END_STATE)})")
        rec = self._record(name)
        now = self.clock.now()
        job = rec.job
        if rec.state is JobState.RUNNING:
            pool = rec.pool
            assert pool is not None
            cost = rec.price * job.gpus * max(now - rec.placed_at, 0.0) / 3600.0
            self._emit(Released(now, name, job.cls, pool.cloud, pool.region, pool.gpu_type, job.gpus, reason, cost))
        elif rec.state is JobState.QUEUED:
            if reason not in (EndReason.STOPPED, EndReason.CANCELLED):
                raise AdmissionError(f"job {name!r} is queued: it can be stopped or cancelled, not {reason}")
            self._emit(Dequeued(now, name, job.cls, reason))
        else:
            raise AdmissionError(f"job {name!r} is already {rec.state}")
        self._settle((job.gpu_type,))

    def cancel(self, name: str) -> Decision:
        return self.release(name, EndReason.CANCELLED)

    def bind(self, name: str, ref: str, attempt: int | None = None) -> None:
        """A runtime holds the gang of this placement (``attempt``); a stale attempt is refused."""
        rec = self._record(name)
        if rec.state is not JobState.RUNNING:
            raise AdmissionError(f"job {name!r} is not placed ({rec.state})")
        if attempt is not None and attempt != rec.attempt:
            raise AdmissionError(f"job {name!r} was re-placed (attempt {rec.attempt}, not {attempt})")
        self._emit(Bound(self.clock.now(), name, rec.attempt, ref))

    def set_backend(self, cloud: str, *, up: bool | None = None, extra_latency_seconds: float | None = None) -> None:
        """Fault injection and recovery for a mock backend (outage, slowness)."""
        backend = self.state.backends.get(cloud)
        if backend is None:
            raise AdmissionError(f"unknown cloud {cloud!r}")
        now = self.clock.now()
        new_up = backend.up if up is None else up
        extra = backend.extra_latency_seconds if extra_latency_seconds is None else extra_latency_seconds
        self._emit(BackendChanged(now, cloud, new_up, backend.latency_seconds + extra))
        if not new_up and cloud != self.holder:
            # Work on a lost non-holder cloud is re-placed through the ROFR again; work on the
            # holder is never moved off it by the scheduler on its own.
            for victim in self._running_on(cloud):
                self._evict(victim, EvictReason.BACKEND_DOWN, now)
        self._settle(self._waiting_types())

    def drain(self, cloud: str, *, on: bool = True, move: bool = False) -> list[str]:
        """Cordon ``cloud`` (``on``) or open it again: a cordoned cloud gets no new placements or
        planned starts (the holder, cordoned, declines every offer: ``cordoned``). Its running
        work finishes where it runs, or with ``move`` the movable part is evicted now and placed
        again through the ROFR gate; pinned work stays (docs/queueing.md, "Drain").
        Returns the jobs moved."""
        backend = self.state.backends.get(cloud)
        if backend is None:
            raise AdmissionError(f"unknown cloud {cloud!r}")
        if move and not on:
            raise AdmissionError("--move drains a cloud: it cannot be combined with opening one")
        now = self.clock.now()
        self._emit(Cordoned(now, cloud, on))
        moved: list[str] = []
        if move:
            for victim in self._running_on(cloud):
                if self.state.movable(victim):
                    self._evict(victim, EvictReason.DRAINED, now)
                    moved.append(victim.job.name)
        self._settle(self._waiting_types())
        return moved

    def set_capacity(self, cloud: str, region: str, gpu_type: str, capacity: int) -> None:
        """Capacity that comes and goes (spot): a shrink evicts in the shared eviction order."""
        pool = self.state.inventory.pools.get((cloud, region, gpu_type))
        if pool is None:
            raise AdmissionError(f"unknown pool {cloud}/{region}/{gpu_type}")
        if capacity < 0:
            raise AdmissionError("capacity must be >= 0")
        now = self.clock.now()
        for victim in choose_victims(self.state.running[pool.key].values(), pool.allocated - capacity) or []:
            self._evict(victim, EvictReason.CAPACITY_LOST, now)
        self._emit(CapacityChanged(now, cloud, region, gpu_type, capacity))
        self._settle((gpu_type,))

    def _running_on(self, cloud: str) -> list[JobRecord]:
        """The cloud's running work, pool by pool in catalog order, each pool's in queue order:
        the order an outage or a drain evicts it in."""
        return [
            r
            for pool in self.state.inventory.by_cloud[cloud]
            for r in sorted(self.state.running[pool.key].values(), key=lambda r: r.key)
        ]

    def _evict(self, rec: JobRecord, reason: EvictReason, now: float) -> None:
        """Evict at the request's instant: every record a request makes carries one time (a clock
        read per eviction put a shrink's evictions after its capacity record on a wall clock)."""
        pool, job = rec.pool, rec.job
        assert pool is not None
        cost = rec.price * job.gpus * max(now - rec.placed_at, 0.0) / 3600.0
        self._emit(Preempted(now, job.name, job.cls, pool.cloud, pool.region, pool.gpu_type, job.gpus, reason, None, cost))

    def reconfigure(self, contract: Contract, reason: str) -> None:
        """A new contract from now on (recorded); the whole queue is re-planned under its terms.

        A queued job the new terms would refuse at submission is cancelled (its history says
        why); running work stays where it is, and is cancelled the same way if it is evicted
        later (docs/queueing.md, "Contract reloads")."""
        if contract.holder not in self.state.backends:
            raise AdmissionError(f"contract holder {contract.holder!r} is not in the catalog")
        now = self.clock.now()
        self._emit(Reconfigured(now, contract.model_dump(mode="json", by_alias=True), reason))
        for name in sorted(self.state.queue.names(), key=lambda n: self.state.jobs[n].key):
            rec = self.state.jobs[name]
            try:
                self.state.candidates(rec.job)
            except AdmissionError:
                self._emit(Dequeued(now, name, rec.job.cls, EndReason.CANCELLED))
        self._settle(self._waiting_types())

    def retry(self, gpu_type: str | None = None) -> int:
        """Re-plan now (every request already does; for callers whose clock moved). Returns jobs placed."""
        before = sum(len(r) for r in self.state.running.values())
        self._settle({gpu_type} if gpu_type else self._waiting_types())
        return sum(len(r) for r in self.state.running.values()) - before

    # ------------------------------------------------------------------ views

    def _record(self, name: str) -> JobRecord:
        rec = self.state.jobs.get(name)
        if rec is None:
            raise UnknownJobError(f"unknown job {name!r}")
        return rec

    def status(self, name: str) -> Decision:
        return explain.decision(self.state, self._record(name))

    def decisions(self) -> list[Decision]:
        return explain.decisions(self.state, self.state.jobs.values())

    def version(self, name: str) -> int:
        return self._record(name).version

    def bound_jobs(self) -> dict[str, tuple[int, str]]:
        return {n: r.binding for n, r in self.state.jobs.items() if r.state is JobState.RUNNING and r.binding is not None}

    def usage(self) -> list[PoolUsage]:
        return self.state.inventory.usage()

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for rec in self.state.jobs.values():
            out[rec.state] = out.get(rec.state, 0) + 1
        return out

    def idle_for_plans(self) -> dict[PoolKey, int]:
        """Free GPUs that planned starts hold back, per pool: the free GPUs, up to the planned
        starts' GPUs there (``mcsched_gpus_idle_for_plan`` reports the same from the events)."""
        held: dict[PoolKey, int] = {}
        for rec in self.state.planned.values():
            assert rec.planned is not None
            key = rec.planned[0].key
            held[key] = held.get(key, 0) + rec.job.gpus
        out = {}
        for key, gpus in held.items():
            pool = self.state.inventory.pools[key]
            idle = min(pool.capacity - pool.allocated, gpus)
            if idle > 0:
                out[key] = idle
        return out

    # ------------------------------------------------------------------ recovery

    @classmethod
    def restore(
        cls,
        catalog: CloudCatalog,
        contract: Contract,
        clock: Clock,
        events: Iterable[Event],
        sinks: Iterable[EventSink] = (),
        *,
        policy: Policy | None = None,
        plan_depth: int = DEFAULT_PLAN_DEPTH,
        replan: Replan = settle,
    ) -> Engine:
        """Apply every recorded event (the live handlers), then finish attempts a crash cut short.

        Sinks are attached only after the replay, so recovery records just the new decisions.
        """
        engine = cls(catalog, contract, clock, policy=policy, plan_depth=plan_depth, replan=replan)
        for ev in events:
            engine.state.apply(ev)
        for sink in sinks:
            engine.subscribe(sink)
        if engine.state.pending:
            engine._settle({r.job.gpu_type for r in engine.state.pending.values()})
        return engine

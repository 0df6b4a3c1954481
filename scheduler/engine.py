"""The placement engine: admit -> offer (ROFR) -> quote -> score -> bind, else queue/preempt.

Pure Python: no Ray, no I/O, time from an injected clock. Every state change is announced
as an event, and the state can be rebuilt from those events alone (``Engine.restore``),
which is how the Ray actor recovers and how the ledger's replay proves the invariants.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeVar

from scheduler.clock import Clock
from scheduler.decision import Decision
from scheduler.errors import AdmissionError, UnknownJobError
from scheduler.events import (
    Answered,
    BackendChanged,
    Bound,
    CapacityChanged,
    Configured,
    Dequeued,
    Event,
    EventSink,
    Offered,
    Placed,
    Preempted,
    Queued,
    Quoted,
    Released,
    Submitted,
)
from scheduler.inventory import Inventory, Pool, PoolUsage
from scheduler.model import Job
from scheduler.queue import PendingQueue
from scheduler.rofr import ACCEPTED, LAPSED, NOT_OFFERED, BackendState, HolderAnswer, Quote, holder_answer
from scheduler.specs import CloudCatalog, Contract

_T = TypeVar("_T")
QUEUED, RUNNING, PENDING, FINISHED, CANCELLED = "queued", "running", "pending", "finished", "cancelled"
TERMINAL = (FINISHED, CANCELLED)


@dataclass(frozen=True, slots=True)
class Candidates:
    """Admit stage result for one job signature: which pools each backend may offer.

    Static (depends on catalog, contract and job constraints only), so it is cached per
    signature; up/down and free capacity are checked per attempt.
    """

    holder_pools: tuple[Pool, ...]
    holder_skip: str
    others: tuple[tuple[str, tuple[Pool, ...]], ...]
    excluded: tuple[tuple[str, str], ...]
    locality: dict[str, int]


class JobRecord:
    __slots__ = (
        "attempt",
        "binding",
        "detail",
        "dropped",
        "job",
        "placed_at",
        "pool",
        "price",
        "reason",
        "rofr",
        "seq",
        "state",
        "submitted_at",
        "via",
    )

    def __init__(self, job: Job, seq: int, now: float) -> None:
        self.job = job
        self.state = PENDING
        self.attempt = 0
        self.seq = seq
        self.pool: Pool | None = None
        self.price = 0.0
        self.submitted_at = now
        self.placed_at = 0.0
        self.via = ""
        self.reason = ""
        self.detail = ""
        self.rofr: tuple[str, str] = ("", "")
        self.dropped: tuple[tuple[str, str], ...] = ()
        self.binding = ""


class Engine:
    """Owns inventory, queue and job records; the only writer of placement state."""

    def __init__(self, catalog: CloudCatalog, contract: Contract, clock: Clock, *, policy: str = "contract") -> None:
        """``policy="cheapest"`` ignores the contract (no ROFR, no pins, lowest price first):
        a what-if baseline for the simulator, never used to place real work."""
        self.catalog = catalog
        self.contract = contract
        self.clock = clock
        self.inventory = Inventory(catalog)
        self.backends: dict[str, BackendState] = {
            b.name: BackendState(b.name, b.up, b.latencySeconds, b.startupSeconds, b.holderRules, b.faults.extraLatencySeconds)
            for b in catalog.spec.backends
        }
        rofr = contract.spec.rofr
        if rofr.holder not in self.backends:
            raise AdmissionError(f"contract holder {rofr.holder!r} is not in the catalog")
        self.holder = rofr.holder
        self.window = rofr.windowSeconds
        self.match_mode = rofr.mode == "match"
        self.lapse_queues = rofr.onLapse == "queue"
        self.honor_contract = policy != "cheapest"
        self.pins: dict[str, tuple[str, ...]] = (
            {cls: tuple(c) for cls, c in contract.spec.pins.items()} if self.honor_contract else {}
        )
        self._rank = _start_first if self.honor_contract else _cost_first
        self.preemption = contract.spec.preemption.enabled
        self.jobs: dict[str, JobRecord] = {}
        self.queue = PendingQueue()
        self.running: dict[tuple[str, str, str], dict[str, JobRecord]] = {k: {} for k in self.inventory.pools}
        self._sinks: list[EventSink] = []
        self._candidates: dict[tuple[object, ...], Candidates] = {}
        self._seq = 0
        # Explanations repeat across jobs of a shape; share one copy (100k queued jobs stay small).
        self._shared: dict[object, object] = {}

    # ------------------------------------------------------------------ events

    def subscribe(self, sink: EventSink) -> None:
        self._sinks.append(sink)

    def _emit(self, event: Event) -> None:
        for sink in self._sinks:
            sink(event)

    def configured_event(self) -> Configured:
        return Configured(
            at=self.clock.now(),
            catalog=self.catalog.model_dump(mode="json", by_alias=True),
            contract=self.contract.model_dump(mode="json", by_alias=True),
        )

    def announce(self) -> None:
        """Record the configuration in force (first record of a ledger)."""
        self._emit(self.configured_event())

    # ------------------------------------------------------------------ stage 1: admit

    def _admit(self, job: Job) -> Candidates:
        sig = job.signature
        cached = self._candidates.get(sig)
        if cached is not None:
            return cached
        pins = self.pins.get(job.cls)
        locality = {r: i for i, r in enumerate(job.regions)} if job.regions else {}
        holder_pools: tuple[Pool, ...] = ()
        holder_skip = ""
        others: list[tuple[str, tuple[Pool, ...]]] = []
        excluded: list[tuple[str, str]] = []
        for cloud, pools in self.inventory.by_cloud.items():
            why = ""
            if pins is not None and cloud not in pins:
                why = f"contract pins {job.cls} to {','.join(pins)}"
            elif job.clouds is not None and cloud not in job.clouds:
                why = "excluded by job clouds constraint"
            fit: list[Pool] = []
            if not why:
                typed = [p for p in pools if p.gpu_type == job.gpu_type]
                if not typed:
                    why = f"gpu-type-unavailable: no {job.gpu_type}"
                else:
                    in_region = [p for p in typed if not job.regions or p.region in locality]
                    if not in_region:
                        why = "region-constraint: none of " + ",".join(job.regions or ())
                    else:
                        fit = [p for p in in_region if not job.jurisdiction or p.jurisdiction == job.jurisdiction]
                        if not fit:
                            why = f"jurisdiction: no {job.gpu_type} region in {job.jurisdiction}"
                        elif cloud != self.holder and max(p.capacity for p in fit) < job.gpus:
                            why = f"gang-too-large: largest {job.gpu_type} pool has {max(p.capacity for p in fit)}"
            fit.sort(key=lambda p: (locality.get(p.region, 0), p.order))
            if cloud == self.holder and not self.honor_contract:
                holder_skip = "policy-ignores-contract"
                if not why:
                    others.append((cloud, tuple(fit)))
                continue
            if cloud == self.holder:
                holder_pools = tuple(fit) if not why else ()
                holder_skip = why.split(":")[0] if why else ""
                if why.startswith("contract pins"):
                    holder_skip = "not-in-pins"
                elif why.startswith("excluded"):
                    raise AdmissionError(
                        f"{job.name}: spec.clouds must include the ROFR holder {self.holder!r}"
                        " (a job cannot waive the right of first refusal)"
                    )
            elif why:
                excluded.append((cloud, why))
            else:
                others.append((cloud, tuple(fit)))
        if holder_skip:
            excluded.insert(0, (self.holder, holder_skip))
        if not holder_pools and not others:
            raise AdmissionError(f"{job.name}: no allowed cloud can ever host {job.gpus}x {job.gpu_type} ({excluded})")
        cand = Candidates(holder_pools, holder_skip, tuple(others), tuple(excluded), locality)
        self._candidates[sig] = cand
        return cand

    # ------------------------------------------------------------------ stage 3: quote

    def _quote(self, job: Job, cand: Candidates) -> tuple[list[Quote], list[tuple[str, str]]]:
        quotes: list[Quote] = []
        dropped: list[tuple[str, str]] = []
        gpus = job.gpus
        for cloud, pools in cand.others:
            backend = self.backends[cloud]
            if not backend.up:
                dropped.append((cloud, "backend-down"))
                continue
            best_free = 0
            for pool in pools:
                free = pool.capacity - pool.allocated
                if free >= gpus:
                    quotes.append(Quote(pool, pool.price, backend.startup_seconds, cand.locality.get(pool.region, 0)))
                    break
                if free > best_free:
                    best_free = free
            else:
                dropped.append((cloud, self._no_capacity(job.gpu_type, best_free, gpus)))
        return quotes, dropped

    # ------------------------------------------------------------------ one attempt

    def _attempt(self, rec: JobRecord) -> bool:
        """Numbered like the pipeline: 1 admit, 2 offer, 3 quote, 4 score, 5 bind, 6 queue/7 preempt."""
        job = rec.job
        rec.attempt += 1
        attempt = rec.attempt
        now = self.clock.now()
        emit = self._emit
        holder = self.holder
        # 1. admit (cached per signature)
        cand = self._admit(job)
        quotes: list[Quote] | None = None
        dropped: list[tuple[str, str]] = []
        # 2. offer to the ROFR holder
        if cand.holder_pools:
            competing: Quote | None = None
            if self.match_mode:
                quotes, dropped = self._quote(job, cand)
                competing = min(quotes, key=self._rank) if quotes else None
                emit(Quoted(now, job.name, attempt, _quote_tuples(quotes), tuple(dropped)))
            emit(
                Offered(
                    now,
                    job.name,
                    attempt,
                    holder,
                    "match" if self.match_mode else "first-look",
                    self.window,
                    competing.price if competing else None,
                    competing.pool.cloud if competing else None,
                )
            )
            ans = holder_answer(job, self.backends[holder], cand.holder_pools, self.window, competing, self.match_mode)
            emit(Answered(now, job.name, attempt, holder, ans.answer, ans.reason, ans.response_seconds))
            rec.rofr = (ans.answer, ans.reason)
            if ans.answer == ACCEPTED and ans.pool is not None and ans.pool.reserve(job.gpus):
                return self._bind(rec, ans.pool, ans.price, "rofr-accepted", now, dropped)
            if ans.answer == LAPSED and self.lapse_queues:
                return self._enqueue(rec, "holder-lapsed", f"{holder} lapsed: {ans.reason}", now, dropped)
        else:
            ans = HolderAnswer(NOT_OFFERED, cand.holder_skip, 0.0)
            emit(Answered(now, job.name, attempt, holder, NOT_OFFERED, cand.holder_skip, 0.0))
            rec.rofr = (NOT_OFFERED, cand.holder_skip)
        holder_note = (holder, f"{ans.answer}: {ans.reason}")
        # 3. quote the others, only now that the holder declined or lapsed
        if not cand.others:
            may_preempt = self.preemption and job.cls in self.pins and ans.answer != NOT_OFFERED and ans.reason == "no-capacity"
            if may_preempt and self._preempt_for(rec, cand, now):
                return True
            return self._enqueue(
                rec,
                "pinned-holder-declined" if job.cls in self.pins else "holder-declined",
                f"{holder} {ans.answer}: {ans.reason}; no other cloud allowed",
                now,
                [holder_note, *cand.excluded],
            )
        if quotes is None:
            quotes, dropped = self._quote(job, cand)
            emit(Quoted(now, job.name, attempt, _quote_tuples(quotes), tuple(dropped)))
        # 4. score, 5. bind (next quote on a lost race)
        via = "after-lapse" if ans.answer == LAPSED else "holder-not-offered" if ans.answer == NOT_OFFERED else "after-decline"
        for quote in sorted(quotes, key=self._rank):
            if quote.pool.reserve(job.gpus):
                losers = [
                    (q.pool.cloud, f"outscored: ${q.price:.2f}/GPU-h, start +{q.start_seconds:.0f}s")
                    for q in quotes
                    if q is not quote
                ]
                return self._bind(rec, quote.pool, quote.price, via, now, [holder_note, *losers, *dropped, *cand.excluded])
        # 6. queue
        all_down = bool(dropped) and all(why == "backend-down" for _, why in dropped) and not quotes
        return self._enqueue(
            rec,
            "backend-down" if all_down else "no-capacity",
            f"{holder} {ans.answer}: {ans.reason}; " + "; ".join(f"{c} {why}" for c, why in dropped),
            now,
            [holder_note, *dropped, *cand.excluded],
        )

    def _bind(self, rec: JobRecord, pool: Pool, price: float, via: str, now: float, dropped: list[tuple[str, str]]) -> bool:
        job = rec.job
        rec.state = RUNNING
        rec.pool = pool
        rec.price = price
        rec.placed_at = now
        rec.via = via
        rec.reason = rec.detail = ""
        rec.dropped = self._share(tuple(dropped))
        self.running[(pool.cloud, pool.region, pool.gpu_type)][job.name] = rec
        self._emit(
            Placed(
                now,
                job.name,
                rec.attempt,
                job.cls,
                pool.cloud,
                pool.region,
                pool.gpu_type,
                job.gpus,
                price,
                via,
                now - rec.submitted_at,
            )
        )
        return True

    def _enqueue(self, rec: JobRecord, reason: str, detail: str, now: float, dropped: list[tuple[str, str]]) -> bool:
        job = rec.job
        rec.state = QUEUED
        rec.reason = reason
        rec.detail = self._share(detail)
        rec.dropped = self._share(tuple(dropped))
        self.queue.push(job.name, job.signature, job.gpu_type, job.priority, rec.seq)
        self._emit(Queued(now, job.name, rec.attempt, job.cls, reason, detail))
        return False

    def _no_capacity(self, gpu_type: str, free: int, gpus: int) -> str:
        key = ("no-capacity", gpu_type, free, gpus)
        text = self._shared.get(key)
        if text is None:
            text = self._shared[key] = f"no-capacity: {gpu_type} {free} free, {gpus} needed"
        return text  # type: ignore[return-value]

    def _share(self, value: _T) -> _T:
        shared = self._shared
        if len(shared) > 100_000:  # explanations are bounded in kind; this only guards odd catalogs
            shared.clear()
        return shared.setdefault(value, value)  # type: ignore[return-value]

    def _decision(self, rec: JobRecord) -> Decision:
        job = rec.job
        pool = rec.pool if rec.state == RUNNING else None
        return Decision(
            job=job.name,
            cls=job.cls,
            outcome="placed" if rec.state == RUNNING else rec.state,
            gpu_type=job.gpu_type,
            gpus=job.gpus,
            holder=self.holder,
            rofr_answer=rec.rofr[0],
            rofr_reason=rec.rofr[1],
            cloud=pool.cloud if pool else None,
            region=pool.region if pool else None,
            price=rec.price if pool else None,
            via=rec.via if pool else None,
            reason=rec.reason if rec.state == QUEUED else None,
            detail=rec.detail if rec.state == QUEUED else None,
            attempt=rec.attempt,
            dropped=rec.dropped,
        )

    # ------------------------------------------------------------------ 7. preemption

    def _preempt_for(self, rec: JobRecord, cand: Candidates, now: float) -> bool:
        """Evict the fewest lower-priority movable GPUs on the holder that make the gang fit."""
        job = rec.job
        best: tuple[int, int, Pool, list[JobRecord]] | None = None
        for pool in cand.holder_pools:
            need = job.gpus - (pool.capacity - pool.allocated)
            victims: list[JobRecord] = []
            movable = sorted(
                (
                    r
                    for r in self.running[(pool.cloud, pool.region, pool.gpu_type)].values()
                    if r.job.cls not in self.pins and r.job.priority < job.priority
                ),
                key=lambda r: (r.job.priority, -r.placed_at, r.seq),
            )
            freed = 0
            for victim in movable:
                if freed >= need:
                    break
                victims.append(victim)
                freed += victim.job.gpus
            if freed >= need and (best is None or (freed, len(victims)) < best[:2]):
                best = (freed, len(victims), pool, victims)
        if best is None:
            return False
        pool, victims = best[2], best[3]
        for victim in victims:
            self._evict(victim, "pinned-job", job.name, now)
        if not pool.reserve(job.gpus):  # pragma: no cover - guarded by the arithmetic above
            raise AssertionError("preemption freed too little")
        self._bind(rec, pool, pool.price, "preemption", now, [])
        for victim in victims:
            self._attempt(victim)
        return True

    def _evict(self, rec: JobRecord, reason: str, by: str | None, now: float) -> None:
        pool = rec.pool
        assert pool is not None
        job = rec.job
        pool.release(job.gpus)
        del self.running[(pool.cloud, pool.region, pool.gpu_type)][job.name]
        rec.state = PENDING
        rec.pool = None
        rec.binding = ""
        cost = rec.price * job.gpus * max(now - rec.placed_at, 0.0) / 3600.0
        self._emit(Preempted(now, job.name, job.cls, pool.cloud, pool.region, pool.gpu_type, job.gpus, reason, by, cost))

    # ------------------------------------------------------------------ public API

    def validate(self, job: Job) -> None:
        """Everything a request must satisfy before it is acknowledged (raises AdmissionError)."""
        existing = self.jobs.get(job.name)
        if existing is not None and existing.state not in TERMINAL:
            raise AdmissionError(f"job {job.name!r} already exists ({existing.state})")
        pins = self.pins.get(job.cls)
        if pins is not None and job.clouds is not None:
            bad = [c for c in job.clouds if c not in pins]
            if bad:
                raise AdmissionError(f"{job.name}: {job.cls} jobs are pinned to {','.join(pins)}; cannot ask for {bad[0]}")
        if job.clouds is not None:
            unknown = [c for c in job.clouds if c not in self.backends]
            if unknown:
                raise AdmissionError(f"{job.name}: unknown cloud {unknown[0]!r}")
        self._admit(job)

    def submit(self, job: Job) -> Decision:
        """Admit and place (or queue) one job; raises AdmissionError before any event on bad input."""
        self.validate(job)
        now = self.clock.now()
        self._seq += 1
        rec = JobRecord(job, self._seq, now)
        self.jobs[job.name] = rec
        self._emit(Submitted(now, job.name, job.cls, job.gpus, job.gpu_type, job.priority, job.to_dict()))
        self._attempt(rec)
        return self._decision(rec)

    def place_many(self, jobs: Iterable[Job]) -> list[Decision]:
        """Batch submission; validates the whole batch first so a bad job changes nothing."""
        batch = list(jobs)
        names: set[str] = set()
        for job in batch:
            if job.name in names:
                raise AdmissionError(f"duplicate job name {job.name!r} in batch")
            names.add(job.name)
            self.validate(job)
        return [self.submit(job) for job in batch]

    def release(self, name: str, reason: str = "finished") -> Decision:
        """A placed job is done (finished, failed, cancelled): free its gang, retry the queue."""
        rec = self._record(name)
        if rec.state != RUNNING:
            raise AdmissionError(f"job {name!r} is not running ({rec.state})")
        now = self.clock.now()
        pool = rec.pool
        assert pool is not None
        job = rec.job
        pool.release(job.gpus)
        del self.running[(pool.cloud, pool.region, pool.gpu_type)][name]
        rec.state = CANCELLED if reason == "cancelled" else FINISHED
        rec.reason = reason
        rec.binding = ""
        cost = rec.price * job.gpus * max(now - rec.placed_at, 0.0) / 3600.0
        self._emit(Released(now, name, job.cls, pool.cloud, pool.region, pool.gpu_type, job.gpus, reason, cost))
        decision = self._decision(rec)
        self.retry(job.gpu_type)
        return decision

    def cancel(self, name: str) -> Decision:
        rec = self._record(name)
        if rec.state == RUNNING:
            return self.release(name, "cancelled")
        if rec.state == QUEUED:
            self.queue.remove(name)
            rec.state = CANCELLED
            rec.reason = "cancelled"
            self._emit(Dequeued(self.clock.now(), name, rec.job.cls, "cancelled"))
            return self._decision(rec)
        raise AdmissionError(f"job {name!r} is already {rec.state}")

    def bind(self, name: str, ref: str) -> None:
        """Record that a runtime now holds this placed job's gang (survives restarts via the ledger)."""
        rec = self._record(name)
        if rec.state != RUNNING:
            raise AdmissionError(f"job {name!r} is not placed ({rec.state})")
        rec.binding = ref
        self._emit(Bound(self.clock.now(), name, rec.attempt, ref))

    def bound_jobs(self) -> dict[str, str]:
        return {n: r.binding for n, r in self.jobs.items() if r.state == RUNNING and r.binding}

    def status(self, name: str) -> Decision:
        return self._decision(self._record(name))

    def _record(self, name: str) -> JobRecord:
        rec = self.jobs.get(name)
        if rec is None:
            raise UnknownJobError(f"unknown job {name!r}")
        return rec

    def set_backend(self, cloud: str, *, up: bool | None = None, extra_latency_seconds: float | None = None) -> None:
        """Fault injection and recovery for a mock backend (outage, slowness)."""
        backend = self.backends.get(cloud)
        if backend is None:
            raise AdmissionError(f"unknown cloud {cloud!r}")
        now = self.clock.now()
        if up is not None:
            backend.up = up
        if extra_latency_seconds is not None:
            backend.extra_latency_seconds = extra_latency_seconds
        self._emit(BackendChanged(now, cloud, backend.up, backend.response_seconds))
        if not backend.up and cloud != self.holder:
            # Work on a lost non-holder cloud is re-placed through the ROFR again; work on the
            # holder is never moved off it by the scheduler on its own.
            victims = [r for pool in self.inventory.by_cloud[cloud] for r in self.running[pool.key].values()]
            for victim in victims:
                self._evict(victim, "backend-down", None, now)
            for victim in victims:
                self._attempt(victim)
        self.retry()

    def set_capacity(self, cloud: str, region: str, gpu_type: str, capacity: int) -> None:
        """Capacity that comes and goes (spot): shrink evicts youngest low-priority work first."""
        pool = self.inventory.pools.get((cloud, region, gpu_type))
        if pool is None:
            raise AdmissionError(f"unknown pool {cloud}/{region}/{gpu_type}")
        if capacity < 0:
            raise AdmissionError("capacity must be >= 0")
        now = self.clock.now()
        victims: list[JobRecord] = []
        if capacity < pool.allocated:
            ordered = sorted(self.running[pool.key].values(), key=lambda r: (r.job.priority, -r.placed_at, r.seq))
            excess = pool.allocated - capacity
            for victim in ordered:
                if excess <= 0:
                    break
                victims.append(victim)
                excess -= victim.job.gpus
            for victim in victims:
                self._evict(victim, "capacity-lost", None, now)
        grew = capacity > pool.capacity
        pool.capacity = capacity
        self._emit(CapacityChanged(now, cloud, region, gpu_type, capacity))
        for victim in victims:
            self._attempt(victim)
        if grew:
            self.retry(gpu_type)

    def retry(self, gpu_type: str | None = None) -> int:
        """Capacity event: try bucket heads best-priority first; a bucket that fails is closed.

        One heap over bucket heads keeps this O(placements x log buckets), independent of
        how many jobs wait behind each head.
        """
        heap = self.queue.head_heap(gpu_type)
        if not heap:
            return 0
        # Free capacity only shrinks during this loop, so the starting maximum is a safe filter.
        pools = self.inventory.pools.values() if gpu_type is None else self.inventory.by_type.get(gpu_type, [])
        most_free = 0
        for p in pools:
            if p.capacity - p.allocated > most_free:
                most_free = p.capacity - p.allocated
        placed = 0
        while heap:
            head, sig = heapq.heappop(heap)
            current = self.queue.head(sig)
            if current != head:  # the bucket changed under us (a victim was re-queued into it)
                if current is not None:
                    heapq.heappush(heap, (current, sig))
                continue
            rec = self.jobs[head[2]]
            if rec.job.gpus > most_free or not self._could_fit(rec.job):
                continue
            self.queue.pop(head[2])
            if not self._attempt(rec):
                continue
            placed += 1
            nxt = self.queue.head(sig)
            if nxt is not None:
                heapq.heappush(heap, (nxt, sig))
        return placed

    def _could_fit(self, job: Job) -> bool:
        """Cheap pre-check so an event does not re-offer jobs that obviously cannot fit."""
        cand = self._admit(job)
        gpus = job.gpus
        if cand.holder_pools:
            holder = self.backends[self.holder]
            if holder.up and holder.response_seconds <= self.window:
                for p in cand.holder_pools:
                    if p.capacity - p.allocated >= gpus:
                        return True
            elif self.lapse_queues:
                return False
        for cloud, pools in cand.others:
            if self.backends[cloud].up:
                for p in pools:
                    if p.capacity - p.allocated >= gpus:
                        return True
        return False

    # ------------------------------------------------------------------ views

    def usage(self) -> list[PoolUsage]:
        return self.inventory.usage()

    def decisions(self) -> list[Decision]:
        return [self._decision(r) for r in self.jobs.values()]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for rec in self.jobs.values():
            out[rec.state] = out.get(rec.state, 0) + 1
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
    ) -> Engine:
        """Rebuild state from recorded events, then finish any attempt a crash cut short.

        Sinks are attached only after the replay, so recovery records just the new attempts.
        """
        engine = cls(catalog, contract, clock)
        for ev in events:
            engine._apply(ev)
        for sink in sinks:
            engine.subscribe(sink)
        for rec in list(engine.jobs.values()):
            if rec.state == PENDING:
                engine._attempt(rec)
        return engine

    def _apply(self, ev: Event) -> None:
        if isinstance(ev, Submitted):
            self._seq += 1
            self.jobs[ev.job] = JobRecord(Job.from_dict(ev.spec), self._seq, ev.at)
        elif isinstance(ev, Answered):
            self.jobs[ev.job].rofr = (ev.answer, ev.reason)
            self.jobs[ev.job].attempt = ev.attempt
        elif isinstance(ev, Placed):
            rec = self.jobs[ev.job]
            pool = self.inventory.pool(ev.cloud, ev.region, ev.gpu_type)
            if not pool.reserve(ev.gpus):
                raise AssertionError(f"replay over-commits {pool}")
            rec.state, rec.pool, rec.price, rec.placed_at, rec.via = RUNNING, pool, ev.price, ev.at, ev.via
            rec.attempt = ev.attempt
            self.running[pool.key][ev.job] = rec
            self.queue.remove(ev.job)
        elif isinstance(ev, Queued):
            rec = self.jobs[ev.job]
            rec.state, rec.reason, rec.detail, rec.attempt = QUEUED, ev.reason, ev.detail, ev.attempt
            if ev.job not in self.queue:
                self.queue.push(ev.job, rec.job.signature, rec.job.gpu_type, rec.job.priority, rec.seq)
        elif isinstance(ev, Preempted | Released):
            rec = self.jobs[ev.job]
            pool = self.inventory.pool(ev.cloud, ev.region, ev.gpu_type)
            pool.release(ev.gpus)
            del self.running[pool.key][ev.job]
            rec.pool = None
            rec.binding = ""
            if isinstance(ev, Released):
                rec.state = CANCELLED if ev.reason == "cancelled" else FINISHED
            else:
                rec.state = PENDING
        elif isinstance(ev, Bound):
            self.jobs[ev.job].binding = ev.ref
        elif isinstance(ev, Dequeued):
            self.queue.remove(ev.job)
            self.jobs[ev.job].state = CANCELLED
        elif isinstance(ev, BackendChanged):
            b = self.backends[ev.cloud]
            b.up = ev.up
            b.extra_latency_seconds = max(ev.latency_seconds - b.latency_seconds, 0.0)
        elif isinstance(ev, CapacityChanged):
            self.inventory.pool(ev.cloud, ev.region, ev.gpu_type).capacity = ev.capacity
        # Configured / Offered / Quoted carry no state beyond what the above rebuild.


def _start_first(q: Quote) -> tuple[float, float, int, int]:
    return q.rank


def _cost_first(q: Quote) -> tuple[float, float, int, int]:
    return (q.price, q.start_seconds, q.locality, q.pool.order)


def _quote_tuples(quotes: list[Quote]) -> tuple[tuple[str, str, float, float], ...]:
    return tuple((q.pool.cloud, q.pool.region, q.price, q.start_seconds) for q in quotes)

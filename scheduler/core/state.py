"""The engine's state and its one mutation path: ``State.apply(event)``.

Everything the engine knows (jobs, pools, backends, the queue, planned starts) changes only
here, one handler per event type, live and on restore alike: a restored engine is the live
one by construction (Nomad's plan/apply split, the ledger as the event log). Deciding what
to emit lives elsewhere (``decide``, ``planner``); nothing here chooses anything.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, TypeVar

from scheduler.backends import BackendState
from scheduler.core.queue import JobQueue, OrderKey
from scheduler.core.recall import WalkRecord
from scheduler.decision import HistoryEntry
from scheduler.errors import AdmissionError
from scheduler.events import (
    Answered,
    BackendChanged,
    BlockJoined,
    BlockPurchased,
    BlockReleased,
    Bound,
    CapacityChanged,
    Configured,
    Cordoned,
    Dequeued,
    Event,
    Offered,
    Placed,
    Preempted,
    Queued,
    Quoted,
    Reconfigured,
    Released,
    ReservationCleared,
    Reserved,
    Submitted,
)
from scheduler.inventory import Inventory, Pool
from scheduler.model import Job
from scheduler.pipeline.admit import Candidates, admit
from scheduler.pipeline.offer import responsive
from scheduler.pipeline.outcomes import EndReason, EvictReason, JobState
from scheduler.pipeline.policy import Policy, Ranker
from scheduler.specs import API_CLASS, CloudCatalog, Contract

PoolKey = tuple[str, str, str]
END_STATE = {r.value: JobState(r.value) for r in EndReason}


class JobRecord:
    """One job as the engine knows it; written only by ``State``'s handlers."""

    __slots__ = (
        "attempt",
        "binding",
        "detail",
        "dropped",
        "ends_at",
        "history",
        "job",
        "last_pool",
        "placed_at",
        "planned",
        "pool",
        "price",
        "reason",
        "rofr",
        "seq",
        "shape",
        "state",
        "submitted_at",
        "version",
        "via",
    )

    def __init__(self, job: Job, seq: int, now: float) -> None:
        self.job = job
        self.seq = seq
        self.shape: Hashable = (*job.signature, job.duration_hours)  # see JobQueue
        self.state = JobState.PENDING
        self.attempt = 0
        self.pool: Pool | None = None  # where it runs now
        self.last_pool: Pool | None = None  # where it ran last (kept after it ends)
        self.price = 0.0
        self.submitted_at = now
        self.placed_at = 0.0
        self.ends_at = 0.0  # expected end while running: placed_at + durationHours
        self.via = ""
        self.reason = ""
        self.detail = ""
        self.rofr: tuple[str, str] = ("", "")
        self.dropped: tuple[tuple[str, str], ...] = ()
        self.binding: tuple[int, str] | None = None
        self.version = 0
        self.history: list[HistoryEntry] = []
        self.planned: tuple[Pool, float] | None = None  # its planned start while queued: (pool, time)

    @property
    def key(self) -> OrderKey:
        return (-self.job.priority, self.seq, self.job.name)

    @property
    def gpus(self) -> int:  # what victim selection reads (pipeline.preempt.Running)
        return self.job.gpus

    @property
    def priority(self) -> int:
        return self.job.priority

    @property
    def duration(self) -> float:
        return self.job.duration_hours * 3600.0

    def note(self, at: float, what: str, pool: Pool | None, detail: str) -> None:
        """An assignment change (placed, evicted, ended): bumps the version drivers watch."""
        self.version += 1
        self.history.append((at, what, pool.cloud if pool else "", pool.region if pool else "", detail))


def eviction_text(reason: str, by: str | None) -> str:
    if reason == EvictReason.PINNED_JOB:
        return f"preempted by {by}"
    if reason == EvictReason.BACKEND_DOWN:
        return "its cloud went down"
    if reason == EvictReason.DRAINED:
        return "its cloud was drained"
    return "capacity lost"


T = TypeVar("T", bound=Hashable)


class SharedValues:
    """One copy of each equal explanation the books keep (a queued job's detail and the clouds
    it could not use, a placed job's losing quotes, the holder's answer).

    A long queue is mostly jobs waiting for the same reasons: the soak's 100k queued jobs held
    136 distinct explanations, about 1 KB of strings and tuples per job when each kept its own
    copy. Equal values share one object here, so the soak's scheduler stays under 300 MB
    (benchmarks/soak.py; tests/core/test_state_memory.py). The table is cleared when it reaches
    ``limit`` entries, so varied explanations cannot grow it without bound (sharing restarts)."""

    __slots__ = ("_values", "limit")

    def __init__(self, limit: int = 4096) -> None:
        self._values: dict[Any, Any] = {}
        self.limit = limit

    def share(self, value: T) -> T:
        values = self._values
        kept: T | None = values.get(value)
        if kept is None:
            if len(values) >= self.limit:
                values.clear()
            values[value] = kept = value
        return kept


class State:
    """Jobs, pools, backends, queue and contract terms, changed only by ``apply``."""

    def __init__(self, catalog: CloudCatalog, contract: Contract, policy: Policy | None = None) -> None:
        self.catalog = catalog
        self.inventory = Inventory(catalog)
        self.backends: dict[str, BackendState] = {
            b.name: BackendState(b.name, b.up, b.latencySeconds, b.startupSeconds, b.holderRules, b.faults.extraLatencySeconds)
            for b in catalog.spec.backends
        }
        self.jobs: dict[str, JobRecord] = {}
        self.queue = JobQueue()  # pending and queued jobs
        self.running: dict[PoolKey, dict[str, JobRecord]] = {k: {} for k in self.inventory.pools}
        self.planned: dict[str, JobRecord] = {}  # queued jobs with a recorded planned start
        self.pending: dict[str, JobRecord] = {}  # submitted or evicted, awaiting their attempt
        # per pool: GPUs of running movable work by priority (what a pinned job could preempt),
        # and a version bumped by every change to the pool's work or size (what a profile is of)
        self.movable_gpus: dict[PoolKey, dict[int, int]] = {k: {} for k in self.inventory.pools}
        self.pool_version: dict[PoolKey, int] = dict.fromkeys(self.inventory.pools, 0)
        # ... and, per GPU type, the pools changed since the last pass over it began (the
        # planner empties it as a pass begins: scheduler/core/recall.py)
        self.changed_pools: dict[str, list[PoolKey]] = {t: [] for t in self.inventory.by_type}
        # Not state: the planner's memo of pool profiles, each valid for the pool version and
        # time it was built at (scheduler/core/planner.py, ``Pass.profile``).
        self.profile_memo: dict[tuple[PoolKey, float], tuple[int, float, Any]] = {}
        # ... and its notes of the last pass over each GPU type (scheduler/core/recall.py), valid
        # while the terms (contract and backends, counted by ``terms_version``) and time stay.
        self.walks: dict[str, WalkRecord] = {}
        self.terms_version = 0
        self._seq = 0
        self._texts = SharedValues()
        self._given_policy = policy
        self._candidates: dict[Hashable, Candidates] = {}
        self._handlers: dict[type[Event], Callable[[Any], None]] = {
            Configured: lambda ev: None,
            Reconfigured: lambda ev: self.configure(Contract.model_validate(ev.contract)),
            Submitted: self._on_submitted,
            Offered: self._on_attempted,
            Quoted: self._on_attempted,
            Answered: self._on_answered,
            Placed: self._on_placed,
            Queued: self._on_queued,
            Preempted: self._on_preempted,
            Released: self._on_released,
            Dequeued: self._on_dequeued,
            Bound: self._on_bound,
            BackendChanged: self._on_backend_changed,
            CapacityChanged: self._on_capacity_changed,
            Cordoned: self._on_cordoned,
            Reserved: self._on_reserved,
            ReservationCleared: self._on_reservation_cleared,
            # the runtime's capacity blocks (Engine.record): the capacity itself arrives as capacity-changed
            BlockPurchased: lambda ev: None,
            BlockJoined: lambda ev: None,
            BlockReleased: lambda ev: None,
        }
        self.configure(contract)

    # ------------------------------------------------------------------ contract terms

    def configure(self, contract: Contract) -> None:
        """The contract in force (a reload keeps jobs, queue and plans; the planner re-plans)."""
        rofr = contract.spec.rofr
        if rofr.holder not in self.backends:
            raise AdmissionError(f"contract holder {rofr.holder!r} is not in the catalog")
        self.terms_version += 1
        self.contract = contract
        self.policy = self._given_policy or Policy.from_contract(contract)
        self.holder = rofr.holder
        self.window = rofr.windowSeconds
        self.match_mode = rofr.mode == "match"
        self.lapse_queues = rofr.onLapse == "queue"
        self.gate = self.policy.offer_holder_first  # the ROFR gate (off only in what-if baselines)
        self.pins = self.policy.effective_pins(contract)
        self.rank: Ranker = self.policy.rank
        self.preemption = contract.spec.preemption.enabled
        self._candidates.clear()
        # which classes are movable follows the pins
        for key in self.movable_gpus:
            self.movable_gpus[key] = {}
            for rec in self.running[key].values():
                self._count_movable(key, rec, +1)

    def _count_movable(self, key: PoolKey, rec: JobRecord, sign: int) -> None:
        if self.movable(rec):
            by_priority = self.movable_gpus[key]
            left = by_priority.get(rec.job.priority, 0) + sign * rec.job.gpus
            if left:
                by_priority[rec.job.priority] = left
            else:
                del by_priority[rec.job.priority]

    def movable_below(self, key: PoolKey, priority: int) -> int:
        """GPUs of running movable work below ``priority`` on a pool."""
        return sum(gpus for p, gpus in self.movable_gpus[key].items() if p < priority)

    def candidates(self, job: Job) -> Candidates:
        """Where a job of this signature may ever go (static; raises AdmissionError if nowhere)."""
        sig = job.signature
        cand = self._candidates.get(sig)
        if cand is None:
            cand = self._candidates[sig] = admit(job, self.inventory, self.holder if self.gate else None, self.pins, self.backends)
        return cand

    def holder_responsive(self) -> bool:
        return responsive(self.backends[self.holder], self.window)

    def holder_turns_down(self, job: str, at: float) -> bool:
        """Whether the holder's discretionary draw (``holderRules.declineFraction``) turns this job
        down at this instant. It is one answer for the instant: where the holder has room it
        declines ``at-discretion``, and where it has none the job does not preempt in its place
        either, so a job's fate at one instant does not hang on the order of the pass."""
        return self.backends[self.holder].at_discretion(job, at)  # False at once for a holder that never declines

    def api_keep(self, job: Job, pool: Pool) -> float:
        """The share of ``pool`` this job must leave free: the holder's API-serving reserve, for other classes."""
        if pool.cloud != self.holder or job.cls == API_CLASS:
            return 0.0
        return self.backends[self.holder].api_reserve

    def movable(self, rec: JobRecord) -> bool:
        """Work the scheduler may evict for a pinned job: anything of an unpinned class."""
        return rec.job.cls not in self.pins

    # ------------------------------------------------------------------ the one mutation path

    def apply(self, event: Event) -> None:
        self._handlers[type(event)](event)

    def _on_submitted(self, ev: Submitted) -> None:
        self._seq += 1
        rec = JobRecord(Job.from_dict(ev.spec), self._seq, ev.at)
        self.jobs[ev.job] = rec
        self.pending[ev.job] = rec
        self.queue.add(ev.job, rec.job.gpu_type, rec.shape, rec.key)

    def _on_attempted(self, ev: Offered | Quoted) -> None:
        self.jobs[ev.job].attempt = ev.attempt

    def _on_answered(self, ev: Answered) -> None:
        rec = self.jobs[ev.job]
        rec.attempt = ev.attempt
        rec.rofr = self._texts.share((ev.answer, ev.reason))

    def _on_placed(self, ev: Placed) -> None:
        rec = self.jobs[ev.job]
        pool = self.inventory.pools[(ev.cloud, ev.region, ev.gpu_type)]
        pool.take(ev.gpus)
        self._clear_plan(rec)
        rec.state, rec.pool, rec.last_pool = JobState.RUNNING, pool, pool
        rec.price, rec.placed_at, rec.via, rec.attempt = ev.price, ev.at, ev.via, ev.attempt
        rec.ends_at = ev.at + rec.duration
        rec.reason = rec.detail = ""
        rec.dropped = self._texts.share(ev.not_used)
        rec.binding = None
        self.running[pool.key][ev.job] = rec
        self._count_movable(pool.key, rec, +1)
        self._touch(pool.key)
        self.pending.pop(ev.job, None)
        self.queue.remove(ev.job)
        rec.note(ev.at, "placed", pool, ev.via)

    def _on_queued(self, ev: Queued) -> None:
        rec = self.jobs[ev.job]
        rec.state, rec.reason, rec.attempt = JobState.QUEUED, ev.reason, ev.attempt
        rec.detail, rec.dropped = self._texts.share(ev.detail), self._texts.share(ev.not_used)
        self.pending.pop(ev.job, None)

    def _free(self, rec: JobRecord, cloud: str, region: str, gpu_type: str, gpus: int) -> Pool:
        pool = self.inventory.pools[(cloud, region, gpu_type)]
        pool.release(gpus)
        del self.running[pool.key][rec.job.name]
        self._count_movable(pool.key, rec, -1)
        self._touch(pool.key)
        rec.pool = None
        rec.binding = None
        return pool

    def _on_preempted(self, ev: Preempted) -> None:
        rec = self.jobs[ev.job]
        pool = self._free(rec, ev.cloud, ev.region, ev.gpu_type, ev.gpus)
        rec.state = JobState.PENDING
        self.pending[ev.job] = rec
        self.queue.add(ev.job, rec.job.gpu_type, rec.shape, rec.key)
        rec.note(ev.at, "evicted", pool, eviction_text(ev.reason, ev.by))

    def _on_released(self, ev: Released) -> None:
        rec = self.jobs[ev.job]
        pool = self._free(rec, ev.cloud, ev.region, ev.gpu_type, ev.gpus)
        rec.state, rec.reason = END_STATE[ev.reason], ev.reason
        rec.note(ev.at, "ended", pool, ev.reason)

    def _on_dequeued(self, ev: Dequeued) -> None:
        rec = self.jobs[ev.job]
        self.queue.remove(ev.job)
        self.pending.pop(ev.job, None)
        self._clear_plan(rec)
        rec.state, rec.reason, rec.detail = END_STATE[ev.reason], ev.reason, ""
        rec.note(ev.at, "ended", None, ev.reason)

    def _on_bound(self, ev: Bound) -> None:
        self.jobs[ev.job].binding = (ev.attempt, ev.ref)

    def _on_backend_changed(self, ev: BackendChanged) -> None:
        b = self.backends[ev.cloud]
        self.terms_version += 1
        b.up = ev.up
        b.extra_latency_seconds = max(ev.latency_seconds - b.latency_seconds, 0.0)

    def _on_cordoned(self, ev: Cordoned) -> None:
        self.backends[ev.cloud].cordoned = ev.on
        self.terms_version += 1

    def _on_capacity_changed(self, ev: CapacityChanged) -> None:
        key = (ev.cloud, ev.region, ev.gpu_type)
        self.inventory.pools[key].capacity = ev.capacity
        self._touch(key)

    def _touch(self, key: PoolKey) -> None:
        self.pool_version[key] += 1
        self.changed_pools[key[2]].append(key)

    def _on_reserved(self, ev: Reserved) -> None:
        rec = self.jobs[ev.job]
        rec.planned = (self.inventory.pools[(ev.cloud, ev.region, ev.gpu_type)], ev.start_at)
        self.planned[ev.job] = rec

    def _on_reservation_cleared(self, ev: ReservationCleared) -> None:
        self._clear_plan(self.jobs[ev.job])

    def _clear_plan(self, rec: JobRecord) -> None:
        rec.planned = None
        self.planned.pop(rec.job.name, None)

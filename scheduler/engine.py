"""The placement engine: admit -> offer (ROFR) -> quote -> score -> bind, else queue or preempt.

Pure Python: no Ray, no I/O, time from an injected clock. The engine *decides* by calling
the pipeline's stages and *changes state* only by applying the events it emits
(``_emit`` -> ``_apply``): the same handlers rebuild a restored engine from its ledger, so
the live engine and a restored one cannot drift apart (Nomad's plan/apply split).

Queue semantics (README, "Queueing"): priority, then submission order; every capacity event
offers the freed capacity to the queue in that order and pinned jobs consider preemption on
every retry; the best blocked job of each GPU type holds a reservation on the pool where it
can start earliest, and only work expected to end by then may start there (backfill).
"""

from __future__ import annotations

import heapq
from bisect import bisect_left, insort
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final, TypeVar, cast

from scheduler.backends import BackendState
from scheduler.clock import Clock
from scheduler.decision import Decision, HistoryEntry
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
    Reconfigured,
    Released,
    ReservationCleared,
    Reserved,
    Submitted,
)
from scheduler.gcpause import no_gc
from scheduler.inventory import Inventory, Pool, PoolUsage
from scheduler.model import Job
from scheduler.pipeline.admit import Candidates, admit
from scheduler.pipeline.backfill import earliest_start, may_backfill
from scheduler.pipeline.offer import HolderAnswer, PoolFit, api_ceiling, classify, holder_answer, responsive
from scheduler.pipeline.outcomes import (
    TERMINAL_STATES,
    Answer,
    DeclineReason,
    EndReason,
    EvictReason,
    JobState,
    QueueReason,
    SkipReason,
    Via,
)
from scheduler.pipeline.policy import Policy
from scheduler.pipeline.preempt import choose_victims
from scheduler.pipeline.quote import Blocker, Quote, collect_quotes, no_capacity
from scheduler.queue import Key, PendingQueue
from scheduler.specs import API_CLASS, CloudCatalog, Contract

_T = TypeVar("_T")
PoolKey = tuple[str, str, str]
# Final: module constants the compiled core reads from C statics, not the module's dict (scheduler/native.py)
PENDING: Final = JobState.PENDING
QUEUED: Final = JobState.QUEUED
RUNNING: Final = JobState.RUNNING
FINISHED, FAILED, STOPPED, CANCELLED = JobState.FINISHED, JobState.FAILED, JobState.STOPPED, JobState.CANCELLED
TERMINAL: Final = TERMINAL_STATES
END_STATE: Final = {r.value: JobState(r.value) for r in EndReason}
_OUTCOME: Final = {state: "placed" if state is RUNNING else state.value for state in JobState}  # Decision.outcome
CAPACITY_REASONS: Final = frozenset({QueueReason.NO_CAPACITY, QueueReason.PINNED_HOLDER_DECLINED})
PREEMPTIBLE_DECLINES: Final = frozenset({DeclineReason.NO_CAPACITY, DeclineReason.RESERVED_FOR_QUEUED_JOB})


class JobRecord:
    """The engine's view of one job; written only by the event handlers."""

    __slots__ = (
        "attempt",
        "binding",
        "cand",
        "detail",
        "dropped",
        "ends_at",
        "gpus",
        "history",
        "job",
        "last_pool",
        "placed_at",
        "pool",
        "price",
        "priority",
        "reason",
        "rofr",
        "seq",
        "sig",
        "state",
        "submitted_at",
        "version",
        "via",
    )

    def __init__(self, job: Job, seq: int, now: float, sig: int) -> None:
        self.job = job
        # the Job's fields the hot loops read, as fields of this (compiled) record: a Job is a
        # Python dataclass, each read of its fields a generic attribute look-up (type, then slot)
        self.gpus = job.gpus
        self.priority = job.priority
        self.sig = sig  # its signature's number: its queue bucket and admission cache key
        self.state = PENDING
        self.attempt = 0
        self.seq = seq
        self.pool: Pool | None = None
        self.last_pool: Pool | None = None  # where it ran last; kept after it ends
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
        self.history: list[HistoryEntry] | None = None
        self.cand: tuple[int, Candidates] | None = None  # (configuration generation, static candidates)

    def note(self, at: float, what: str, pool: Pool | None, detail: str) -> None:
        """An assignment change (placed, evicted, ended): bumps the version drivers watch."""
        self.version += 1
        if self.history is None:
            self.history = []
        self.history.append((at, what, pool.cloud if pool else "", pool.region if pool else "", detail))


@dataclass(frozen=True, slots=True)
class Reservation:
    job: str
    pool: Pool
    start_at: float
    priority: int
    seq: int


class _Verdict(Enum):
    CAN_START = 0
    BLOCKED = 1
    RESERVED_ONLY = 2  # would fit, but only on a pool reserved for a higher-priority job


_PENDING_ITEM: Final = 0
_HEAD_ITEM: Final = 1
_PROBE_ITEM: Final = 2
# Builds an event from its fields in order, as Event(...) does but without the NamedTuple's
# Python-level __new__: half the cost, on the ~5 events of every placement decision.
_new: Final = tuple.__new__
_NO_GANG: Final = 1 << 62  # larger than any gang
# What one attempt that queues emits, each starting (at, job, attempt): a replayable tape.
_ATTEMPT_EVENTS: Final = frozenset({Offered, Answered, Quoted, Queued})


def _never_blocked(_pool: Pool) -> str | None:
    return None


class Engine:
    """Owns inventory, queue and job records; the only writer of placement state."""

    def __init__(
        self, catalog: CloudCatalog, contract: Contract, clock: Clock, *, policy: Policy | None = None, shortcuts: bool = True
    ) -> None:
        """``policy`` is for what-if runs (``scheduler/sim/policies.py``); live placement uses the contract's.

        ``shortcuts=False`` decides everything the long way, to check the shortcuts against
        (tests/test_engine_properties.py): they must never change a decision, only skip work.
        """
        # a bucket whose gang no longer fits the freed pools is not checked, and a reservation
        # looks only at pools whose work changed
        self._skip_unfit_buckets = shortcuts
        self._incremental_reservations = shortcuts
        # An attempt that queued leaves the world as it was, so the next job of the same shape
        # and standing that finds the same world would queue the same way: its events are
        # replayed (job, time and attempt swapped in) instead of decided again.
        self._replay_queued_attempts = shortcuts
        #: attempts decided in full (the others replayed a queued attempt's events)
        self.decided = 0
        self.catalog = catalog
        self.clock = clock
        self.inventory = Inventory(catalog)
        self.backends: dict[str, BackendState] = {
            b.name: BackendState(b.name, b.up, b.latencySeconds, b.startupSeconds, b.holderRules, b.faults.extraLatencySeconds)
            for b in catalog.spec.backends
        }
        self._given_policy = policy
        self.jobs: dict[str, JobRecord] = {}
        self.queue = PendingQueue()
        self.running: dict[tuple[str, str, str], dict[str, JobRecord]] = {k: {} for k in self.inventory.pools}
        # each pool's running work as (expected end, GPUs, seq), kept sorted: when a gang could start there
        self._ends: dict[PoolKey, list[tuple[float, int, int]]] = {k: [] for k in self.inventory.pools}
        self.reservations: dict[str, Reservation] = {}  # GPU type -> the one reservation among its pools
        # GPU types whose reservation target may have changed (a better job became capacity-blocked, or the target left)
        self._res_dirty: set[str] = set(self.inventory.by_type)
        # queue buckets that could use each pool: signature -> (gang size, may preempt there, may use the
        # holder's api-serving reserve)
        self._signature_numbers: dict[tuple[Any, ...], int] = {}  # see _signature_number
        self._sigs_by_pool: dict[PoolKey, dict[Hashable, tuple[int, bool, bool]]] = {k: {} for k in self.inventory.pools}
        self._generation = 0
        self._sinks: list[EventSink] = []
        self._seq = 0
        self._pending: list[JobRecord] = []
        self._incoming: Job | None = None
        self._incoming_sig = 0  # its signature number, from validation
        self._max_free: dict[str, int] = {}  # GPU type -> most free GPUs in one pool (an upper bound)
        self._pool_version: dict[tuple[str, str, str], int] = dict.fromkeys(self.inventory.pools, 0)
        # pool -> priority -> GPUs of running movable (unpinned) work: what a pinned job could preempt
        self._movable: dict[tuple[str, str, str], dict[int, int]] = {k: {} for k in self.inventory.pools}
        self._starts: dict[tuple[int, float, tuple[str, str, str]], tuple[int, float | None]] = {}
        # Reservation upkeep is incremental: per GPU type, the pools whose work changed since the
        # last look, the last answer, and (per job shape) where the reserved job could go.
        self._res_touched: dict[str, set[PoolKey]] = {}
        self._res_memo: dict[str, tuple[str, float, tuple[int, int], tuple[float, int, int] | None, Pool | None]] = {}
        self._res_plans: dict[tuple[Hashable, tuple[int, int]], dict[PoolKey, tuple[int, Pool, float]]] = {}
        self._backend_epoch = 0
        # Per GPU type, bumped by anything an attempt for that type reads: pools, their work,
        # the reservation. With the backend epoch and the configuration generation it dates
        # an attempt's outcome (see _replay_queued_attempts).
        self._type_version: dict[str, int] = dict.fromkeys(self.inventory.by_type, 0)
        self._queued_tapes: dict[tuple[Any, ...], tuple[int, int, int, tuple[tuple[type[Event], tuple[Any, ...]], ...]]] = {}
        # Explanations repeat across jobs of a shape; share one copy (100k queued jobs stay small).
        self._shared: dict[object, object] = {}
        self._handlers: dict[type[Event], Callable[[Any], None]] = {
            Configured: self._on_configured,
            Reconfigured: self._on_reconfigured,
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
            Reserved: self._on_reserved,
            ReservationCleared: self._on_reservation_cleared,
        }
        self._configure(contract)

    def _configure(self, contract: Contract) -> None:
        rofr = contract.spec.rofr
        if rofr.holder not in self.backends:
            raise AdmissionError(f"contract holder {rofr.holder!r} is not in the catalog")
        self.contract = contract
        self.policy = self._given_policy or Policy.from_contract(contract)
        self.holder = rofr.holder
        self.window = rofr.windowSeconds
        self.match_mode = rofr.mode == "match"
        self.lapse_queues = rofr.onLapse == "queue"
        self.gate = self.policy.offer_holder_first
        self.pins = self.policy.effective_pins(contract)
        self._rank = self.policy.rank
        self.preemption = contract.spec.preemption.enabled
        self._holder_responsive = responsive(self.backends[self.holder], self.window)
        self._candidates: dict[int, Candidates] = {}
        self._generation += 1
        # Candidates (and so which classes are movable) follow the contract: re-index what depends on them.
        for sigs in self._sigs_by_pool.values():
            sigs.clear()
        for head, sig in self.queue.head_heap():
            self._index_bucket(self.jobs[head[2]], sig)
        for pool_key, running in self.running.items():
            self._movable[pool_key] = {}
            for r in running.values():
                self._count_movable(pool_key, r.job, +1)

    # ------------------------------------------------------------------ events: the one mutation path

    def subscribe(self, sink: EventSink) -> None:
        self._sinks.append(sink)

    def _emit(self, event: Event) -> None:
        self._handlers[type(event)](event)
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

    def _on_configured(self, ev: Configured) -> None:
        """The engine was built with this configuration (a restored engine from the ledger's record)."""

    def _on_reconfigured(self, ev: Reconfigured) -> None:
        self._configure(Contract.model_validate(ev.contract))
        self._res_dirty.update(self.inventory.by_type)

    def _on_submitted(self, ev: Submitted) -> None:
        self._seq += 1
        job = self._incoming  # live: the Job the spec was made from (equal to rebuilding it, as a replay does)
        if job is None or job.name != ev.job:
            job = Job.from_dict(ev.spec)
            sig = self._signature_number(job)
        else:
            sig = self._incoming_sig
        self._incoming = None
        self.jobs[ev.job] = JobRecord(job, self._seq, ev.at, sig)

    def _on_attempted(self, ev: Offered | Quoted) -> None:
        self.jobs[ev.job].attempt = ev.attempt

    def _on_answered(self, ev: Answered) -> None:
        rec = self.jobs[ev.job]
        rec.attempt = ev.attempt
        rec.rofr = (ev.answer, ev.reason)

    def _on_placed(self, ev: Placed) -> None:
        rec = self.jobs[ev.job]
        pool = self.inventory.pools[(ev.cloud, ev.region, ev.gpu_type)]
        pool.take(ev.gpus)
        rec.state, rec.pool, rec.last_pool = RUNNING, pool, pool
        rec.price, rec.placed_at, rec.via, rec.attempt = ev.price, ev.at, ev.via, ev.attempt
        rec.ends_at = ev.at + rec.job.duration_hours * 3600.0
        insort(self._ends[pool.key], (rec.ends_at, rec.gpus, rec.seq))
        rec.reason = rec.detail = ""
        rec.dropped = ev.not_used
        rec.binding = None
        self.running[pool.key][ev.job] = rec
        self._count_movable(pool.key, rec.job, +1)
        self.queue.remove(ev.job)
        self._pool_version[pool.key] += 1
        self._touch(pool)
        rec.note(ev.at, "placed", pool, ev.via)

    def _on_queued(self, ev: Queued) -> None:
        rec = self.jobs[ev.job]
        job = rec.job
        rec.state, rec.reason, rec.detail, rec.attempt, rec.dropped = QUEUED, ev.reason, ev.detail, ev.attempt, ev.not_used
        sig = rec.sig
        if self.queue.push(ev.job, sig, job.gpu_type, job.priority, rec.seq, job.duration_hours * 3600.0):
            self._index_bucket(rec, sig)
        res = self.reservations.get(job.gpu_type)
        if res is None or (-job.priority, rec.seq) <= (-res.priority, res.seq):
            self._res_dirty.add(job.gpu_type)

    def _free(self, rec: JobRecord, cloud: str, region: str, gpu_type: str, gpus: int) -> Pool:
        pool = self.inventory.pools[(cloud, region, gpu_type)]
        pool.release(gpus)
        del self.running[pool.key][rec.job.name]
        ends = self._ends[pool.key]
        del ends[bisect_left(ends, (rec.ends_at, rec.gpus, rec.seq))]
        self._count_movable(pool.key, rec.job, -1)
        rec.pool = None
        rec.binding = None
        self._pool_version[pool.key] += 1
        self._touch(pool)
        self._max_free.pop(gpu_type, None)
        return pool

    def _index_bucket(self, rec: JobRecord, sig: Hashable) -> None:
        cand = self._cand(rec)
        gpus, preempts, api = rec.job.gpus, cand.pinned and self.preemption, rec.job.cls == API_CLASS
        for pool in cand.pools:
            self._sigs_by_pool[pool.key][sig] = (gpus, preempts and pool.cloud == self.holder, api)

    def _count_movable(self, key: tuple[str, str, str], job: Job, sign: int) -> None:
        if job.cls not in self.pins:
            by_priority = self._movable[key]
            left = by_priority.get(job.priority, 0) + sign * job.gpus
            if left:
                by_priority[job.priority] = left
            else:
                by_priority.pop(job.priority, None)

    def _movable_gpus_below(self, pool: Pool, priority: int) -> int:
        return sum(gpus for p, gpus in self._movable[pool.key].items() if p < priority)

    def _on_preempted(self, ev: Preempted) -> None:
        rec = self.jobs[ev.job]
        pool = self._free(rec, ev.cloud, ev.region, ev.gpu_type, ev.gpus)
        rec.state = PENDING
        rec.note(ev.at, "evicted", pool, _eviction_text(ev.reason, ev.by))

    def _on_released(self, ev: Released) -> None:
        rec = self.jobs[ev.job]
        pool = self._free(rec, ev.cloud, ev.region, ev.gpu_type, ev.gpus)
        rec.state, rec.reason = END_STATE[ev.reason], ev.reason
        rec.note(ev.at, "ended", pool, ev.reason)

    def _on_dequeued(self, ev: Dequeued) -> None:
        rec = self.jobs[ev.job]
        self.queue.remove(ev.job)
        rec.state, rec.reason, rec.detail = END_STATE[ev.reason], ev.reason, ""
        rec.note(ev.at, "ended", None, ev.reason)

    def _on_bound(self, ev: Bound) -> None:
        self.jobs[ev.job].binding = (ev.attempt, ev.ref)

    def _on_backend_changed(self, ev: BackendChanged) -> None:
        self._backend_epoch += 1
        b = self.backends[ev.cloud]
        b.up = ev.up
        b.extra_latency_seconds = max(ev.latency_seconds - b.latency_seconds, 0.0)
        self._holder_responsive = responsive(self.backends[self.holder], self.window)
        self._res_dirty.update(self.inventory.by_type)  # which pools can be reserved may have changed

    def _on_capacity_changed(self, ev: CapacityChanged) -> None:
        pool = self.inventory.pools[(ev.cloud, ev.region, ev.gpu_type)]
        pool.capacity = ev.capacity
        self._pool_version[pool.key] += 1
        self._touch(pool)
        self._max_free.pop(ev.gpu_type, None)
        self._res_dirty.add(ev.gpu_type)

    def _on_reserved(self, ev: Reserved) -> None:
        rec = self.jobs[ev.job]
        pool = self.inventory.pools[(ev.cloud, ev.region, ev.gpu_type)]
        self.reservations[ev.gpu_type] = Reservation(ev.job, pool, ev.start_at, rec.job.priority, rec.seq)
        self._type_version[ev.gpu_type] += 1

    def _on_reservation_cleared(self, ev: ReservationCleared) -> None:
        res = self.reservations.get(ev.gpu_type)
        if res is not None and res.job == ev.job:
            del self.reservations[ev.gpu_type]
            self._res_dirty.add(ev.gpu_type)
            self._type_version[ev.gpu_type] += 1

    # ------------------------------------------------------------------ stage 1: admit (static, cached)

    def _signature_number(self, job: Job) -> int:
        """A small int per distinct job signature, the key of every per-shape table (queue buckets,
        pools' bucket index, admission cache, replay tapes): a signature is a tuple that would be
        hashed and compared field by field at every look-up, an int is not."""
        numbers = self._signature_numbers
        sig = job.signature
        number = numbers.get(sig)
        if number is None:
            number = numbers[sig] = len(numbers)
        return number

    def _admit(self, job: Job, sig: int | None = None) -> Candidates:
        if sig is None:
            sig = self._signature_number(job)
        cand = self._candidates.get(sig)
        if cand is None:
            cand = admit(job, self.inventory, self.holder if self.gate else None, self.pins, self.backends)
            self._candidates[sig] = cand
        return cand

    def _cand(self, rec: JobRecord) -> Candidates:
        cached = rec.cand
        if cached is not None and cached[0] == self._generation:
            return cached[1]
        cand = self._admit(rec.job, rec.sig)
        rec.cand = (self._generation, cand)
        return cand

    # ------------------------------------------------------------------ one attempt

    def _attempt(self, rec: JobRecord) -> bool:
        """One placement attempt; True when the job was placed.

        An attempt that queued changed nothing but the queue, so its events are kept per job
        shape and standing (``_replay_queued_attempts``): the next such job that finds the same
        world queues the same way, and gets the same events without deciding again. Standing is
        whether a reservation holds against the job and, for a job that may preempt, its
        priority; any other job's priority plays no part in a decision (a reservation is the
        only way it does, and that is the first part).
        """
        if not self._replay_queued_attempts:
            return self._decide(rec)
        job = rec.job
        now = self.clock.now()
        preempts = self.preemption and self._cand(rec).pinned
        key = (rec.sig, job.priority if preempts else None, self._reservation_blocks(rec, now))
        dated = (self._type_version.get(job.gpu_type, 0), self._backend_epoch, self._generation)
        tape = self._queued_tapes.get(key)
        if tape is not None and tape[:3] == dated:
            name, attempt, emit = job.name, rec.attempt + 1, self._emit
            for cls, rest in tape[3]:
                emit(_new(cls, (now, name, attempt, *rest)))  # type: ignore[type-var]
            return False
        recorded: list[Event] = []
        self._sinks.append(recorded.append)  # the tape: a sink for the length of one attempt
        try:
            placed = self._decide(rec)
        finally:
            self._sinks.remove(recorded.append)
        if not placed and all(type(ev) in _ATTEMPT_EVENTS for ev in recorded):
            if len(self._queued_tapes) > 10_000:
                self._queued_tapes.clear()
            self._queued_tapes[key] = (*dated, tuple((type(ev), cast(tuple[Any, ...], ev)[3:]) for ev in recorded))
        return placed

    def _reservation_blocks(self, rec: JobRecord, now: float) -> bool:
        """Whether the reservation of the job's GPU type holds its pool against this job (see ``_blocker``)."""
        job = rec.job
        res = self.reservations.get(job.gpu_type)
        if res is None or res.job == job.name:
            return False
        outranked = (-res.priority, res.seq) <= (-job.priority, rec.seq)
        return outranked and not may_backfill(now, job.duration_hours * 3600.0, res.start_at)

    def _decide(self, rec: JobRecord) -> bool:
        """Numbered like the pipeline: 1 admit, 2 offer, 3 quote, 4 score, 5 bind, 7 preempt, 6 queue."""
        self.decided += 1
        job = rec.job
        name = job.name
        attempt = rec.attempt + 1
        now = self.clock.now()
        emit = self._emit
        holder = self.holder
        # 1. admit (static, cached per signature)
        cand = self._cand(rec)
        blocked = self._blocker(rec, now)
        quotes: list[Quote] | None = None
        dropped: list[tuple[str, str]] = []
        # 2. offer to the ROFR holder
        if self.gate and cand.holder_skip is None:
            competing: Quote | None = None
            if self.match_mode:
                quotes, dropped = self._quote(job, cand, blocked)
                competing = min(quotes, key=self._rank) if quotes else None
                emit(_new(Quoted, (now, name, attempt, _quote_tuples(quotes), tuple(dropped))))
            emit(
                _new(
                    Offered,
                    (
                        now,
                        name,
                        attempt,
                        holder,
                        "match" if self.match_mode else "first-look",
                        self.window,
                        competing.price if competing else None,
                        competing.pool.cloud if competing else None,
                    ),
                )
            )
            ans = holder_answer(job, self.backends[holder], cand.holder_pools, self.window, competing, self.match_mode, blocked)
            emit(_new(Answered, (now, name, attempt, holder, ans.answer, ans.reason, ans.response_seconds)))
            if ans.answer == Answer.ACCEPTED and ans.pool is not None:
                return self._place(
                    rec,
                    attempt,
                    ans.pool,
                    ans.price,
                    Via.ROFR_ACCEPTED,
                    now,
                    self._share((*dropped, *cand.excluded)) if quotes is not None else cand.accepted_not_used,
                )
        else:
            skip = cand.holder_skip if self.gate else SkipReason.POLICY_IGNORES_CONTRACT
            ans = HolderAnswer(Answer.NOT_OFFERED, skip or SkipReason.POLICY_IGNORES_CONTRACT, 0.0)
            emit(_new(Answered, (now, name, attempt, holder, ans.answer, ans.reason, 0.0)))
        note_key = ("note", holder, ans.answer, ans.reason)
        holder_note = cast("tuple[str, str] | None", self._shared.get(note_key))  # the common case, without the maker
        if holder_note is None:
            holder_note = self._text(note_key, lambda: (holder, f"{ans.answer}: {ans.reason}"))
        lapsed = ans.answer == Answer.LAPSED
        may_preempt = self.preemption and cand.pinned and ans.answer == Answer.DECLINED and ans.reason in PREEMPTIBLE_DECLINES
        if lapsed and self.lapse_queues and cand.others:
            return self._enqueue(
                rec,
                attempt,
                QueueReason.HOLDER_LAPSED,
                f"{holder} lapsed: {ans.reason}",
                now,
                (holder_note, *dropped, *cand.excluded),
            )
        if not cand.others:  # pinned to the holder alone: wait for it, or preempt there
            if may_preempt and self._preempt_for(rec, attempt, cand, now, blocked, holder_note):
                return True
            return self._enqueue(
                rec,
                attempt,
                QueueReason.PINNED_HOLDER_LAPSED if lapsed else QueueReason.PINNED_HOLDER_DECLINED,
                f"{holder} {ans.answer}: {ans.reason}; no other cloud allowed",
                now,
                (holder_note, *cand.excluded),
            )
        # 3. quote the others, only now that the holder declined or lapsed
        if quotes is None:
            quotes, dropped = self._quote(job, cand, blocked)
            emit(_new(Quoted, (now, name, attempt, _quote_tuples(quotes), tuple(dropped))))
        # 4. score, 5. bind
        if quotes:
            best = min(quotes, key=self._rank)
            via = Via.AFTER_LAPSE if lapsed else Via.HOLDER_NOT_OFFERED if ans.answer == Answer.NOT_OFFERED else Via.AFTER_DECLINE
            losers = [self._outscored(q) for q in quotes if q is not best]
            return self._place(
                rec, attempt, best.pool, best.price, via, now, self._share((holder_note, *losers, *dropped, *cand.excluded))
            )
        # 7. a pinned job may still preempt movable work on the holder
        if may_preempt and self._preempt_for(rec, attempt, cand, now, blocked, holder_note):
            return True
        # 6. queue
        all_down = bool(dropped) and all(why == "backend-down" for _, why in dropped)
        return self._enqueue(
            rec,
            attempt,
            QueueReason.BACKEND_DOWN if all_down else QueueReason.NO_CAPACITY,
            self._text(
                ("detail", holder, ans.answer, ans.reason, tuple(dropped)),
                lambda: f"{holder} {ans.answer}: {ans.reason}; " + "; ".join(f"{c} {why}" for c, why in dropped),
            ),
            now,
            (holder_note, *dropped, *cand.excluded),
        )

    def _quote(self, job: Job, cand: Candidates, blocked: Blocker) -> tuple[list[Quote], list[tuple[str, str]]]:
        return collect_quotes(job.gpus, job.gpu_type, cand.others, self.backends, cand.locality, blocked, self._no_capacity)

    def _place(
        self, rec: JobRecord, attempt: int, pool: Pool, price: float, via: Via, now: float, not_used: tuple[tuple[str, str], ...]
    ) -> bool:
        """Place the job (``not_used``: the explanations, already shared: see ``_share``)."""
        job = rec.job
        res = self.reservations.get(job.gpu_type)
        if res is not None and res.job == job.name:
            self._emit(_new(ReservationCleared, (now, job.name, res.pool.cloud, res.pool.region, res.pool.gpu_type)))
        self._emit(
            _new(
                Placed,
                (
                    now,
                    job.name,
                    attempt,
                    job.cls,
                    pool.cloud,
                    pool.region,
                    pool.gpu_type,
                    job.gpus,
                    price,
                    via,
                    now - rec.submitted_at,
                    not_used,
                ),
            )
        )
        return True

    def _enqueue(
        self, rec: JobRecord, attempt: int, reason: QueueReason, detail: str, now: float, not_used: tuple[tuple[str, str], ...]
    ) -> bool:
        job = rec.job
        self._emit(_new(Queued, (now, job.name, attempt, job.cls, reason, self._share(detail), self._share(not_used))))
        return False

    def _blocker(self, rec: JobRecord, now: float) -> Blocker:
        """Which pools a reservation holds against this job (a higher-priority job's, unless it backfills).

        One reservation per GPU type, so at most one pool: whether it holds against this job
        at all is decided here, once per attempt, not per pool looked at.
        """
        res = self.reservations.get(rec.job.gpu_type) if self.reservations else None
        if res is None or not self._reservation_blocks(rec, now):
            return _never_blocked
        held = res.pool

        def blocked(pool: Pool) -> str | None:
            if pool is not held:
                return None
            return f"reserved: {pool.region} held for {res.job} from t={res.start_at:.0f}s"

        return blocked

    # ------------------------------------------------------------------ 7. preemption

    def _preempt_for(
        self, rec: JobRecord, attempt: int, cand: Candidates, now: float, blocked: Blocker, holder_note: tuple[str, str]
    ) -> bool:
        """Evict the fewest lower-priority movable GPUs on a holder pool that make the gang fit."""
        job = rec.job
        keep = 0.0 if job.cls == API_CLASS else self.backends[self.holder].api_reserve
        best: tuple[tuple[int, int, int], Pool, list[JobRecord]] | None = None
        for pool in cand.holder_pools:
            if pool.capacity < job.gpus or blocked(pool) is not None:
                continue
            need = job.gpus - (pool.capacity - pool.allocated)
            if keep > 0.0:
                need = max(need, pool.allocated + job.gpus - api_ceiling(pool, keep))
            if self._movable_gpus_below(pool, job.priority) < need:
                continue
            victims = choose_victims(self.running[pool.key].values(), need, lambda r: self._movable_below(r, job.priority))
            if victims is None:
                continue
            key = (sum(v.gpus for v in victims), len(victims), pool.order)
            if best is None or key < best[0]:
                best = (key, pool, victims)
        if best is None:
            return False
        _, pool, victims = best
        for victim in victims:
            self._evict(victim, EvictReason.PINNED_JOB, job.name, now)
        return self._place(rec, attempt, pool, pool.price, Via.PREEMPTION, now, self._share((holder_note, *cand.excluded)))

    def _movable_below(self, r: JobRecord, priority: int) -> bool:
        return r.job.cls not in self.pins and r.job.priority < priority

    def _evict(self, rec: JobRecord, reason: EvictReason, by: str | None, now: float) -> None:
        pool = rec.pool
        assert pool is not None
        job = rec.job
        cost = rec.price * job.gpus * max(now - rec.placed_at, 0.0) / 3600.0
        self._emit(_new(Preempted, (now, job.name, job.cls, pool.cloud, pool.region, pool.gpu_type, job.gpus, reason, by, cost)))
        self._pending.append(rec)

    # ------------------------------------------------------------------ settling: pending jobs and the queue

    def _settle(self, gpu_type: str | None, scope: set[PoolKey] | None) -> int:
        """Decide every pending job, then offer freed capacity to the queue, best priority first.

        ``scope`` is the set of pools whose capacity grew (None: anything may have changed,
        e.g. a backend came back). Queued jobs were blocked everywhere at their last attempt,
        so only a pool in scope can let one start now.
        1. pending jobs (just evicted) and the head of every queue bucket go into one heap
           ordered by (priority, submission);
        2. a pending job always gets an attempt; a bucket head only when it could start now
           on a pool in scope (a cheap check that makes no events), else its bucket waits; a
           head held back only by a reservation lets a job of its bucket short enough to
           backfill go instead;
        3. an attempt that preempts adds its victims to the heap and any GPUs it freed beyond
           its need to the scope;
        4. the reservation of every GPU type involved is brought up to date.
        Returns how many jobs were placed.
        """
        if not self._pending and not self.queue and not self.reservations:
            # Nothing waits and nothing is reserved (the common release on a cluster with room):
            # nothing can start and no reservation can change (types left dirty are looked at later).
            return 0
        heap: list[tuple[Key, int, Any]] = []
        seen: set[Hashable] = set()
        keep = self.backends[self.holder].api_reserve
        reserve = self.gate and keep > 0.0
        pools_by_key = self.inventory.pools
        sigs_by_pool = self._sigs_by_pool
        skip_unfit = self._skip_unfit_buckets

        def room(pool: Pool) -> tuple[int, int]:
            """Free GPUs for api-serving and for other work (the holder keeps a share for the API)."""
            free = pool.capacity - pool.allocated
            return free, (min(free, api_ceiling(pool, keep) - pool.allocated) if reserve and pool.cloud == self.holder else free)

        def usable(pool: Pool, gpus: int, preempts: bool, api: bool, priority: int) -> bool:
            """Whether a gang of this bucket could start on ``pool`` now: it fits what is free there
            (earlier starts took GPUs), or it may preempt there and enough lower-priority movable work runs."""
            free, free_other = room(pool)
            if gpus <= (free if api else free_other):
                return True
            return preempts and free + self._movable_gpus_below(pool, priority) >= gpus

        def may_use(sig: Hashable, key: Key) -> bool:
            """Whether the bucket (``key`` is its head) could start on a pool in scope now."""
            if scope is None:
                return True
            for pool_key in scope:
                entry = sigs_by_pool[pool_key].get(sig)
                if entry is not None and usable(pools_by_key[pool_key], *entry, -key[0]):
                    return True
            return False

        # Lower bound of the gangs of every bucket offered so far (``unbounded``: every bucket was
        # offered), and the offered buckets that may preempt: once no pool in scope has that much
        # free and none of those could still preempt, no bucket in the heap can start.
        gang_floor, unbounded = _NO_GANG, False
        preempters: list[tuple[Pool, int, int]] = []  # (pool, gang, priority) of offered buckets that may preempt there

        def offer(pools: Iterable[PoolKey] | None) -> None:
            """Put the heads of the buckets that could use these pools (None: every bucket) in the heap."""
            nonlocal gang_floor, unbounded
            tops = self.queue.tops
            fresh: list[tuple[Key, int, Any]] = []
            if pools is None:
                for key, sig in self.queue.head_heap(gpu_type):
                    seen.add(sig)
                    fresh.append((key, _HEAD_ITEM, sig))
                unbounded = True  # any bucket: no bound
            else:  # buckets whose gang fits what is free there now (or that could preempt there)
                for pool_key in pools:
                    pool = pools_by_key[pool_key]
                    free, free_other = room(pool)
                    for sig, (gpus, preempts, api) in sigs_by_pool[pool_key].items():
                        if sig in seen:
                            continue
                        if gpus > (free if api else free_other) and not preempts:
                            continue
                        # The bucket's heap top, not its checked head: a top removed since (a lower
                        # bound of the head) is seen as stale when popped and the head pushed then.
                        heap_of = tops.get(sig)
                        if not heap_of:
                            continue
                        top = heap_of[0]
                        seen.add(sig)
                        # Too little lower-priority movable work to preempt: free plus such work
                        # only shrinks within a settle, so it cannot start here later either.
                        if preempts and skip_unfit and not usable(pool, gpus, preempts, api, -top[0]):
                            continue
                        fresh.append((top, _HEAD_ITEM, sig))
                        if gpus < gang_floor:
                            gang_floor = gpus
                        if preempts:
                            preempters.append((pool, gpus, -top[0]))
            if heap:
                for item in fresh:
                    heapq.heappush(heap, item)
            else:
                heap.extend(fresh)
                heapq.heapify(heap)

        def exhausted() -> bool:
            """No bucket in the heap fits any pool in scope any more (and none may preempt): the rest stay blocked."""
            if scope is None or unbounded or pending_in_heap or pending:
                return False
            if any(pool.capacity - pool.allocated >= gang_floor for pool in (pools_by_key[k] for k in scope)):
                return False
            return not any(usable(pool, gpus, True, True, priority) for pool, gpus, priority in preempters)

        offer(scope)
        types: set[str] = set(self.reservations) if gpu_type is None else {gpu_type}
        if gpu_type is None:
            types.update(self.queue_types())
        placed = 0
        pending = self._pending
        pending_in_heap = 0
        while True:
            while pending:
                rec = pending.pop()
                if rec.state == PENDING:
                    types.add(rec.job.gpu_type)
                    pool = rec.last_pool
                    if scope is not None and pool is not None and pool.key not in scope:
                        scope.add(pool.key)  # what its eviction freed beyond the preemptor's need
                        offer((pool.key,))
                    heapq.heappush(heap, ((-rec.job.priority, rec.seq, rec.job.name), _PENDING_ITEM, rec))
                    pending_in_heap += 1
            if not heap:
                break
            key, kind, item = heapq.heappop(heap)
            if kind == _PENDING_ITEM:
                pending_in_heap -= 1
                if item.state == PENDING:
                    placed += self._attempt(item)
                continue
            if kind == _PROBE_ITEM:
                rec = self.jobs[key[2]]
                if rec.state == QUEUED and self._could_start(rec, scope) is _Verdict.CAN_START:
                    placed += self._attempt(rec)
                continue
            sig = item
            current = self.queue.head(sig)
            if current != key:  # the bucket changed under us (a victim re-queued into it)
                if current is not None:
                    heapq.heappush(heap, (current, _HEAD_ITEM, sig))
                continue
            if skip_unfit and not may_use(sig, key):  # the bucket waits; a later capacity event offers it again
                continue
            rec = self.jobs[key[2]]
            verdict = self._could_start(rec, scope)
            if verdict is _Verdict.CAN_START:
                if self._attempt(rec):
                    placed += 1
                    if skip_unfit and exhausted():
                        heap.clear()
                        continue
                    nxt = self.queue.head(sig)
                    if nxt is not None:
                        heapq.heappush(heap, (nxt, _HEAD_ITEM, sig))
            elif verdict is _Verdict.RESERVED_ONLY:
                self._probe_backfill(sig, rec, heap)
        now = self.clock.now()
        for t in sorted(types):
            self._update_reservation(t, now)
        return placed

    def queue_types(self) -> set[str]:
        return {self.jobs[key[2]].job.gpu_type for key, _ in self.queue.head_heap()}

    def _probe_backfill(self, sig: Hashable, head: JobRecord, heap: list[tuple[Key, int, Any]]) -> None:
        res = self.reservations.get(head.job.gpu_type)
        if res is None:
            return
        limit = res.start_at - self.clock.now()
        shortest = self.queue.shortest(sig)
        if shortest is None or shortest > limit:
            return
        key = self.queue.best_within(sig, limit)
        if key is not None and key[2] != head.job.name:
            heapq.heappush(heap, (key, _PROBE_ITEM, sig))

    def _most_free(self, gpu_type: str) -> int:
        """Most free GPUs in one pool of this type: an upper bound, refreshed whenever GPUs are freed."""
        value = self._max_free.get(gpu_type)
        if value is None:
            value = max((p.capacity - p.allocated for p in self.inventory.by_type.get(gpu_type, ())), default=0)
            self._max_free[gpu_type] = value
        return value

    def _could_start(self, rec: JobRecord, scope: set[PoolKey] | None) -> _Verdict:
        """Whether an attempt now would place the job, looking only at pools in ``scope`` (no events)."""
        job = rec.job
        gpus = job.gpus
        cand = self._cand(rec)
        may_preempt = cand.pinned and self.preemption
        if scope is None:
            if gpus > self._most_free(job.gpu_type) and not may_preempt:
                return _Verdict.BLOCKED
            pools: Iterable[Pool] = cand.pools
        else:  # the loop below looks at what is free on each pool in scope
            keys = cand.pool_keys
            pools = [self.inventory.pools[k] for k in scope if k in keys]
            if not pools:
                return _Verdict.BLOCKED
        holder = self.holder if self.gate and cand.holder_skip is None else None
        holder_ok = holder is not None and self._holder_responsive
        if holder is not None and not holder_ok and (not cand.others or self.lapse_queues):
            return _Verdict.BLOCKED
        holder_state = self.backends[self.holder]
        declines = holder_state.declines(job.gpu_type, gpus)
        blocked = self._blocker(rec, self.clock.now())
        reserved = False
        holder_pools: list[Pool] = []
        for pool in pools:
            if pool.cloud == holder:
                holder_pools.append(pool)
                if holder_ok and not declines:
                    fit = classify(pool, job, holder_state.api_reserve, blocked)
                    if fit is PoolFit.FITS:
                        return _Verdict.CAN_START
                    reserved = reserved or fit is PoolFit.RESERVED
            elif pool.capacity - pool.allocated >= gpus and self.backends[pool.cloud].up:
                if blocked(pool) is None:
                    return _Verdict.CAN_START
                reserved = True
        if may_preempt and holder_ok and self._preemptable(rec, holder_pools, blocked):
            return _Verdict.CAN_START
        return _Verdict.RESERVED_ONLY if reserved else _Verdict.BLOCKED

    def _preemptable(self, rec: JobRecord, holder_pools: Iterable[Pool], blocked: Blocker) -> bool:
        job = rec.job
        for pool in holder_pools:
            if pool.capacity < job.gpus or blocked(pool) is not None:
                continue
            if pool.capacity - pool.allocated + self._movable_gpus_below(pool, job.priority) >= job.gpus:
                return True
        return False

    # ------------------------------------------------------------------ reservations (backfill)

    def _update_reservation(self, gpu_type: str, now: float) -> None:
        """The best capacity-blocked queued job of this type holds the pool where it starts earliest."""
        current = self.reservations.get(gpu_type)
        target: JobRecord | None = None
        if gpu_type not in self._res_dirty:  # same target as last time; only its start may move
            if current is None:
                return
            target = self.jobs[current.job]
        else:
            self._res_dirty.discard(gpu_type)
            heads = self.queue.head_heap(gpu_type)
            while heads:
                key, _sig = heapq.heappop(heads)
                rec = self.jobs[key[2]]
                if rec.reason in CAPACITY_REASONS:
                    target = rec
                    break
        choice = self._reservation_pool(target, now) if target is not None else None
        if choice is None or target is None:
            if current is not None:
                self._emit(_new(ReservationCleared, (now, current.job, current.pool.cloud, current.pool.region, gpu_type)))
            return
        pool, start = choice
        if current is not None and current.job == target.job.name and current.pool is pool and current.start_at == start:
            return
        if current is not None and (current.job != target.job.name or current.pool is not pool):
            self._emit(_new(ReservationCleared, (now, current.job, current.pool.cloud, current.pool.region, gpu_type)))
        self._emit(_new(Reserved, (now, target.job.name, pool.cloud, pool.region, gpu_type, start)))

    def _touch(self, pool: Pool) -> None:
        self._type_version[pool.gpu_type] += 1
        touched = self._res_touched.get(pool.gpu_type)
        if touched is None:
            touched = self._res_touched[pool.gpu_type] = set()
        touched.add(pool.key)

    def _reservation_plan(self, rec: JobRecord, epoch: tuple[int, int]) -> dict[PoolKey, tuple[int, Pool, float]]:
        """Where a reservation for this job shape may go: pool -> (rank: holder 0, others 1; pool; API share kept)."""
        job = rec.job
        key = (rec.sig, epoch)
        plan = self._res_plans.get(key)
        if plan is None:
            cand = self._cand(rec)
            holder_state = self.backends[self.holder]
            keep = 0.0 if job.cls == API_CLASS else holder_state.api_reserve
            declines = holder_state.declines(job.gpu_type, job.gpus)
            holder_pools = cand.holder_pools if self.gate and holder_state.up and not declines else ()
            plan = {p.key: (0, p, keep) for p in holder_pools}
            plan.update((p.key, (1, p, 0.0)) for c, ps in cand.others if self.backends[c].up for p in ps)
            if len(self._res_plans) > 10_000:
                self._res_plans.clear()
            self._res_plans[key] = plan
        return plan

    def _reservation_pool(self, rec: JobRecord, now: float) -> tuple[Pool, float] | None:
        """The pool where the job starts earliest (ties: the holder, then catalog order).

        Only pools whose work changed since the last look can have moved, so when the job,
        the clock, the contract and the backends are as they were, only those are looked at.
        """
        job = rec.job
        epoch = (self._generation, self._backend_epoch)
        plan = self._reservation_plan(rec, epoch)
        touched = self._res_touched.pop(job.gpu_type, None)
        memo = self._res_memo.get(job.gpu_type) if self._incremental_reservations else None
        best: tuple[float, int, int] | None = None
        best_pool: Pool | None = None
        same_question = memo is not None and memo[:3] == (job.name, now, epoch)
        if memo is not None and same_question and (memo[4] is None or touched is None or memo[4].key not in touched):
            best, best_pool = memo[3], memo[4]  # the best pool did not change; only a touched one can beat it now
            looks: Iterable[tuple[int, Pool, float]] = [plan[k] for k in touched if k in plan] if touched else ()
        else:
            looks = plan.values()
        for rank, pool, keep in looks:
            start = self._start_on(job, pool, keep, now)
            if start is not None and (best is None or (start, rank, pool.order) < best):
                best, best_pool = (start, rank, pool.order), pool
        self._res_memo[job.gpu_type] = (job.name, now, epoch, best, best_pool)
        return (best_pool, best[0]) if best is not None and best_pool is not None else None

    def _start_on(self, job: Job, pool: Pool, keep: float, now: float) -> float | None:
        """Earliest start of this gang on ``pool``, cached until the work on the pool changes."""
        key = (job.gpus, keep, pool.key)
        version = self._pool_version[pool.key]
        cached = self._starts.get(key)
        if cached is not None and cached[0] == version:
            return cached[1]
        capacity = api_ceiling(pool, keep) if keep > 0.0 else pool.capacity
        free = capacity - pool.allocated
        start = earliest_start(free, capacity, job.gpus, self._ends[pool.key], now)
        if free < job.gpus:  # a start "now" depends on the clock: not cached
            if len(self._starts) > 100_000:
                self._starts.clear()
            self._starts[key] = (version, start)
        return start

    # ------------------------------------------------------------------ public API

    def validate(self, job: Job) -> None:
        """Everything a request must satisfy before it is acknowledged (raises AdmissionError)."""
        self._validate(job)

    def _validate(self, job: Job) -> int:
        """``validate``, giving the job's signature number (``_post`` records it with the job)."""
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
        sig = self._signature_number(job)
        self._admit(job, sig)
        return sig

    def submit(self, job: Job) -> Decision:
        """Admit and place (or queue) one job; raises AdmissionError before any event on bad input."""
        self.post(job)
        return self._decision(self.jobs[job.name])

    def post(self, job: Job) -> None:
        """``submit`` without building the Decision (bulk replays that only watch the events)."""
        self._post(job, self._validate(job))

    def _post(self, job: Job, sig: int) -> None:
        now = self.clock.now()
        self._incoming, self._incoming_sig = job, sig
        self._emit(_new(Submitted, (now, job.name, job.cls, job.gpus, job.gpu_type, job.priority, job.to_dict())))
        rec = self.jobs[job.name]
        if self._attempt(rec):
            if self._pending:  # it preempted: decide the victims, offer any leftover to the queue
                self._settle(job.gpu_type, set())
        elif job.gpu_type in self._res_dirty:  # it may now be the best blocked job of its type
            self._update_reservation(job.gpu_type, now)

    def place_many(self, jobs: Iterable[Job]) -> list[Decision]:
        """Batch submission; validates the whole batch first so a bad job changes nothing."""
        batch = self._validated(jobs)
        decisions: list[Decision] = []
        with no_gc():  # a batch adds thousands of long-lived records: see scheduler/gcpause.py
            for job, sig in batch:  # validated above; one job's placement cannot make another invalid
                self._post(job, sig)
                decisions.append(self._decision(self.jobs[job.name]))
        return decisions

    def post_many(self, jobs: Iterable[Job]) -> None:
        """``place_many`` without a Decision per job (``plan`` prints where jobs end up, not each submission)."""
        batch = self._validated(jobs)
        with no_gc():
            for job, sig in batch:
                self._post(job, sig)

    def _validated(self, jobs: Iterable[Job]) -> list[tuple[Job, int]]:
        """The whole batch, each job validated (with its signature number) and no name twice
        (raises AdmissionError before any event)."""
        batch: list[tuple[Job, int]] = []
        names: set[str] = set()
        for job in jobs:
            if job.name in names:
                raise AdmissionError(f"duplicate job name {job.name!r} in batch")
            names.add(job.name)
            batch.append((job, self._validate(job)))
        return batch

    def release(self, name: str, reason: str = EndReason.FINISHED) -> Decision:
        """A job leaves for good: finished, failed, stopped or cancelled; its GPUs go to the queue."""
        rec = self._record(name)
        self.end(name, reason)
        return self._decision(rec)

    def end(self, name: str, reason: str = EndReason.FINISHED) -> None:
        """``release`` without building the Decision."""
        if reason == "driver-exited":  # the v1 name for a dead driver
            reason = EndReason.STOPPED
        if reason not in END_STATE:
            raise AdmissionError(f"unknown end reason {reason!r} (expected one of {', '.join(END_STATE)})")
        rec = self._record(name)
        now = self.clock.now()
        job = rec.job
        scope: set[PoolKey] = set()
        if rec.state == RUNNING:
            pool = rec.pool
            assert pool is not None
            cost = rec.price * job.gpus * max(now - rec.placed_at, 0.0) / 3600.0
            self._emit(_new(Released, (now, name, job.cls, pool.cloud, pool.region, pool.gpu_type, job.gpus, reason, cost)))
            scope.add(pool.key)
        elif rec.state == QUEUED:
            if reason not in (EndReason.STOPPED, EndReason.CANCELLED):
                raise AdmissionError(f"job {name!r} is queued: it can be stopped or cancelled, not {reason}")
            res = self.reservations.get(job.gpu_type)
            if res is not None and res.job == name:  # the pool it held is open to the queue again
                self._emit(ReservationCleared(now, name, res.pool.cloud, res.pool.region, res.pool.gpu_type))
                scope.add(res.pool.key)
            self._emit(Dequeued(now, name, job.cls, reason))
        else:
            raise AdmissionError(f"job {name!r} is already {rec.state}")
        self._settle(job.gpu_type, scope)

    def cancel(self, name: str) -> Decision:
        return self.release(name, EndReason.CANCELLED)

    def bind(self, name: str, ref: str, attempt: int | None = None) -> None:
        """A runtime holds the gang of this placement (``attempt``); a stale attempt is refused."""
        rec = self._record(name)
        if rec.state != RUNNING:
            raise AdmissionError(f"job {name!r} is not placed ({rec.state})")
        if attempt is not None and attempt != rec.attempt:
            raise AdmissionError(f"job {name!r} was re-placed (attempt {rec.attempt}, not {attempt})")
        self._emit(Bound(self.clock.now(), name, rec.attempt, ref))

    def bound_jobs(self) -> dict[str, tuple[int, str]]:
        return {n: r.binding for n, r in self.jobs.items() if r.state == RUNNING and r.binding is not None}

    def version(self, name: str) -> int:
        return self._record(name).version

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
        new_up = backend.up if up is None else up
        extra = backend.extra_latency_seconds if extra_latency_seconds is None else extra_latency_seconds
        self._emit(BackendChanged(now, cloud, new_up, backend.latency_seconds + extra))
        if not new_up and cloud != self.holder:
            # Work on a lost non-holder cloud is re-placed through the ROFR again; work on the
            # holder is never moved off it by the scheduler on its own.
            victims = [r for pool in self.inventory.by_cloud[cloud] for r in self.running[pool.key].values()]
            for victim in victims:
                self._evict(victim, EvictReason.BACKEND_DOWN, None, now)
        self._settle(None, None)

    def set_capacity(self, cloud: str, region: str, gpu_type: str, capacity: int) -> None:
        """Capacity that comes and goes (spot): a shrink evicts in the shared eviction order."""
        pool = self.inventory.pools.get((cloud, region, gpu_type))
        if pool is None:
            raise AdmissionError(f"unknown pool {cloud}/{region}/{gpu_type}")
        if capacity < 0:
            raise AdmissionError("capacity must be >= 0")
        now = self.clock.now()
        victims = choose_victims(self.running[pool.key].values(), pool.allocated - capacity) or []
        for victim in victims:
            self._evict(victim, EvictReason.CAPACITY_LOST, None, now)
        self._emit(CapacityChanged(now, cloud, region, gpu_type, capacity))
        self._settle(gpu_type, {pool.key})

    def reconfigure(self, contract: Contract, reason: str) -> None:
        """A new contract from now on (recorded); the queue is offered capacity under its terms."""
        if contract.holder not in self.backends:
            raise AdmissionError(f"contract holder {contract.holder!r} is not in the catalog")
        self._emit(Reconfigured(self.clock.now(), contract.model_dump(mode="json", by_alias=True), reason))
        self._settle(None, None)

    def retry(self, gpu_type: str | None = None) -> int:
        """Offer free capacity to the queue now (normally every capacity event does this itself)."""
        return self._settle(gpu_type, None)

    # ------------------------------------------------------------------ views

    def _decision(self, rec: JobRecord) -> Decision:
        job = rec.job
        state = rec.state
        pool = rec.pool if state is RUNNING else rec.last_pool
        queued = state is QUEUED
        history = rec.history
        return _new(  # every field in order: built once per submission and release
            Decision,
            (
                job.name,
                job.cls,
                _OUTCOME[state],
                job.gpu_type,
                job.gpus,
                self.holder,
                rec.rofr[0],
                rec.rofr[1],
                pool.cloud if pool else None,
                pool.region if pool else None,
                rec.price if pool else None,
                rec.via if pool else None,
                rec.reason if queued else None,
                rec.detail if queued else None,
                rec.attempt,
                rec.dropped,
                rec.version,
                tuple(history) if history else (),
            ),
        )

    def usage(self) -> list[PoolUsage]:
        return self.inventory.usage()

    def decisions(self) -> list[Decision]:
        return [self._decision(r) for r in self.jobs.values()]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for rec in self.jobs.values():
            out[rec.state] = out.get(rec.state, 0) + 1
        return out

    def _no_capacity(self, gpu_type: str, free: int, gpus: int) -> str:
        key = ("no-capacity", gpu_type, free, gpus)
        text = self._shared.get(key)  # the common case, without building the maker
        return text if text is not None else self._text(key, lambda: no_capacity(gpu_type, free, gpus))  # type: ignore[return-value]

    def _outscored(self, q: Quote) -> tuple[str, str]:
        key = ("outscored", q.pool.cloud, q.price, q.start_seconds)
        text = self._shared.get(key)
        if text is not None:
            return text  # type: ignore[return-value]
        return self._text(key, lambda: (q.pool.cloud, f"outscored: ${q.price:.2f}/GPU-h, start +{q.start_seconds:.0f}s"))

    def _text(self, key: Hashable, make: Callable[[], _T]) -> _T:
        """An explanation built once per distinct key (they repeat across the jobs of a shape)."""
        shared = self._shared
        text = shared.get(key)
        if text is None:
            if len(shared) > 100_000:
                shared.clear()
            text = shared[key] = make()
        return text  # type: ignore[return-value]

    def _share(self, value: _T) -> _T:
        shared = self._shared
        if len(shared) > 100_000:  # explanations are bounded in kind; this only guards odd catalogs
            shared.clear()
        return shared.setdefault(value, value)  # type: ignore[return-value]

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
    ) -> Engine:
        """Apply every recorded event (the same handlers as live), then finish attempts a crash cut short.

        Sinks are attached only after the replay, so recovery records just the new decisions.
        """
        engine = cls(catalog, contract, clock, policy=policy)
        apply = engine._handlers
        for ev in events:
            apply[type(ev)](ev)
        for sink in sinks:
            engine.subscribe(sink)
        engine._pending = [r for r in engine.jobs.values() if r.state == PENDING]
        if engine._pending:
            engine._settle(None, None)
        return engine


def _eviction_text(reason: str, by: str | None) -> str:
    if reason == EvictReason.PINNED_JOB:
        return f"preempted by {by}"
    if reason == EvictReason.BACKEND_DOWN:
        return "its cloud went down"
    return "capacity lost"


def _quote_tuples(quotes: list[Quote]) -> tuple[tuple[str, str, float, float], ...]:
    return tuple((q.pool.cloud, q.pool.region, q.price, q.start_seconds) for q in quotes)

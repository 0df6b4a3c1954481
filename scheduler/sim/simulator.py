"""The discrete-event loop: trace arrivals, finishes, capacity and scenario events drive the engine.

The engine is the production one with a ``ManualClock``; every figure is derived from the
same event stream the ledger records, with the time a user would feel:

1. a placement at ``t`` starts work at ``t + holder answer latency (capped at the window)
   + the chosen cloud's startupSeconds``; GPUs are held (and paid for) from ``t``;
2. a wait runs from submission, or from an eviction, to the start of work; a job evicted
   before it started keeps waiting from where it was; a job still waiting at the end is
   *censored* (its wait so far is reported, apart);
3. evicted work resumes from its checkpoint (remaining duration); a fixed-end job (a
   serving replica) ends when its demand ends, however late it started;
4. served GPU-hours are work done; unserved = requested - served - work still in progress
   at the horizon (never placed, refused at admission, cut short, not started by the horizon);
5. a run may stop at a fixed *horizon*: nothing after it is applied; jobs running then are
   credited (and charged) up to it, jobs that have not started are censored at it.

Only the engine's ``AdmissionError`` counts a job as refused at admission (unplaceable); any
other exception is a bug and propagates. GC tuning belongs to the entry points
(``mcsched simulate``, the benchmark), not here.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any

from scheduler.clock import ManualClock
from scheduler.errors import AdmissionError
from scheduler.events import Answered, CapacityChanged, Dequeued, Event, Placed, Preempted, Queued, Released
from scheduler.invariants import InvariantChecker, Violation
from scheduler.model import Job
from scheduler.sim.policies import build_engine, catalog_for
from scheduler.sim.scenario import Action
from scheduler.sim.traces import TraceJob
from scheduler.specs import JOB_CLASSES, CloudCatalog, Contract

# Same instant: capacity and scenario changes first, then frees, then arrivals.
CAPACITY, SCENARIO, FINISH = 0, 1, 2
DEFAULT_CLASS_PRIORITIES = {"api-serving": 100, "inference": 50, "training": 0}
PoolKey = tuple[str, str, str]
Books = tuple[list[float], list[float]]  # one pool's ``pool_state`` entry and its (cloud, GPU type)'s ``type_state``


class Track:
    """The simulator's view of one live job (what the engine's events do not carry)."""

    __slots__ = (
        "attempt",
        "cloud",
        "cls",
        "end_at",
        "ever_placed",
        "ever_started",
        "evicted",
        "gpu_type",
        "gpus",
        "latency",
        "placed",
        "queued",
        "rate",
        "remaining",
        "running",
        "since",
        "start",
    )

    def __init__(self, tj: TraceJob, at: float) -> None:
        self.cls = tj.cls
        self.gpu_type = tj.gpu_type
        self.gpus = tj.gpus
        self.remaining = tj.duration  # seconds of work still to do
        self.end_at = at + tj.duration if tj.fixed_end else None
        self.since = at  # the current wait began here (submission or eviction)
        self.evicted = False  # the current wait follows an eviction
        self.start = 0.0
        self.placed = 0.0
        self.attempt = 0
        self.latency = 0.0
        self.rate = 0.0  # USD/h while placed
        self.cloud = ""
        self.running = False
        self.queued = False
        self.ever_placed = False
        self.ever_started = False


@dataclass
class Sample:
    """The state at one instant, for the plots."""

    t: float
    alloc: dict[tuple[str, str], int]  # (cloud, gpu type) -> GPUs held
    cap: dict[tuple[str, str], int]
    queued_jobs: dict[str, int]
    queued_gpus: dict[str, int]
    running_gpus: dict[tuple[str, str], int]  # (class, cloud) -> GPUs held
    cost_rate: dict[str, float]  # cloud -> USD/h being accrued
    answers: dict[tuple[str, str], int]  # (declined|lapsed, reason) -> cumulative count
    # (cloud, gpu type) -> the most GPUs held, and the highest share of capacity held, at any
    # moment since the previous sample: a saturation shorter than the sampling step still shows
    peak_alloc: dict[tuple[str, str], int] = field(default_factory=dict)
    peak_share: dict[tuple[str, str], float] = field(default_factory=dict)
    peak_queued_gpus: dict[str, int] = field(default_factory=dict)  # class -> most GPUs queued since the previous sample
    spent: dict[str, float] = field(default_factory=dict)  # cloud -> USD accrued from the start to this instant (exact)


_ARRIVAL = attrgetter("arrival")  # the arrivals' sort key, without a Python call per job
_REFUSALS = frozenset({"declined", "lapsed"})  # the holder's answers counted by reason
NEAR_FULL = 0.95  # a (cloud, GPU type) at or above this share held counts as near full


def _retype(agg: list[float], d_held: int, d_cap: int, now: float) -> None:
    """Move one (cloud, GPU type) aggregate to ``now``: time near full so far, then the change, then the peaks.

    ``agg``: [held, capacity, last change, seconds near full, peak share; since the last
    sample: most held, highest share; committed GPUs, GPU-seconds held above them].
    """
    held, cap = agg[0], agg[1]
    if cap > 0 and held >= NEAR_FULL * cap:
        agg[3] += now - agg[2]
    if held > agg[7]:
        agg[8] += (held - agg[7]) * (now - agg[2])
    agg[2] = now
    held += d_held
    cap += d_cap
    agg[0], agg[1] = held, cap
    if held > agg[5]:
        agg[5] = held
    if cap > 0 and held > agg[6] * cap:
        share = held / cap
        agg[6] = share
        if share > agg[4]:
            agg[4] = share


def _per_class() -> dict[str, float]:
    return dict.fromkeys(JOB_CLASSES, 0.0)


@dataclass
class Recorder:
    """Event sink keeping every figure the summary and plots need (O(1) per event).

    A job's track is dropped when it ends, so a million-job replay stays small; what the
    summary needs from it is folded into per-class totals on the way out.
    """

    window: float
    startup: dict[str, float]
    pools: dict[PoolKey, int]
    schedule_finish: Callable[[str, float, int], None]
    check: bool = True
    committed: dict[tuple[str, str], int] = field(default_factory=dict)  # (cloud, GPU type) -> GPUs paid for, used or not
    tracks: dict[str, Track] = field(default_factory=dict)
    _count: list[int] = field(default_factory=lambda: [0])  # engine events seen (``events``)
    placements: Counter[str] = field(default_factory=Counter)
    placed_gpus: Counter[tuple[str, str]] = field(default_factory=Counter)  # (cloud, GPU type) -> GPUs over every placement (start-up billing)
    answers: Counter[tuple[str, str]] = field(default_factory=Counter)
    preemptions: Counter[str] = field(default_factory=Counter)
    waits: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))  # submission -> start
    waits_after_eviction: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    censored: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))  # never started: wait so far
    censored_after_eviction: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))  # never restarted
    never_placed: Counter[str] = field(default_factory=Counter)
    requested: dict[str, float] = field(default_factory=_per_class)  # class -> GPU-seconds asked for
    served: dict[str, float] = field(default_factory=_per_class)  # class -> GPU-seconds of work done
    requested_by_type: dict[str, float] = field(default_factory=lambda: defaultdict(float))  # GPU type -> GPU-seconds asked for
    served_by_type: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    # at the horizon: class -> GPU-seconds of work still to do by jobs running then (neither served nor unserved)
    in_progress: dict[str, float] = field(default_factory=_per_class)
    in_progress_by_type: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    never_started: Counter[str] = field(default_factory=Counter)  # jobs whose work never started (by the horizon)
    running_at_end: Counter[str] = field(default_factory=Counter)
    # the steady window (first to last arrival): GPU-seconds held per pool up to the last arrival
    steady: tuple[float, float] | None = None
    steady_held: dict[PoolKey, float] = field(default_factory=dict)
    cost: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    queued_jobs: dict[str, int] = field(default_factory=lambda: dict.fromkeys(JOB_CLASSES, 0))
    queued_gpus: dict[str, int] = field(default_factory=lambda: dict.fromkeys(JOB_CLASSES, 0))
    queued_gpus_peak: dict[str, int] = field(default_factory=lambda: dict.fromkeys(JOB_CLASSES, 0))  # since the last sample
    running_gpus: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    rate: dict[str, float] = field(default_factory=lambda: defaultdict(float))  # cloud -> USD/h accruing now
    # cloud -> sum over running placements of rate x placement time: with ``rate`` and the booked
    # ``cost`` it gives the spend accrued up to any instant (``spent``) with no work per event
    rate_since: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    checker: InvariantChecker = field(default_factory=InvariantChecker)
    first_alloc: float | None = None
    last_free: float = 0.0
    # per pool: [allocated, capacity, last change, allocated GPU-seconds]; capacity history apart
    pool_state: dict[PoolKey, list[float]] = field(default_factory=dict)
    cap_history: dict[PoolKey, list[tuple[float, int]]] = field(default_factory=dict)
    # per (cloud, gpu type), exact at every change: [held, capacity, last change, seconds >= NEAR_FULL held, peak held/capacity,
    # (since the last sample) most held, highest share, committed GPUs, GPU-seconds held above the commitment]
    type_state: dict[tuple[str, str], list[float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._books: dict[PoolKey, Books] = {}
        for key, cap in self.pools.items():
            st = self.pool_state[key] = [0, cap, 0.0, 0.0]
            self.cap_history[key] = [(0.0, cap)]
            agg = self.type_state.setdefault((key[0], key[2]), [0, 0, 0.0, 0.0, 0.0, 0, 0.0, self.committed.get((key[0], key[2]), 0), 0.0])
            agg[1] += cap
            self._books[key] = (st, agg)
        self._handlers: dict[type[Event], Callable[[Any], None]] = {
            Answered: self._answered,
            Placed: self._placed,
            Queued: self._queued,
            Preempted: self._preempted,
            Released: self._settle,
            Dequeued: self._dequeued,
            CapacityChanged: self._capacity,
        }

    def __call__(self, ev: Event) -> None:
        self.events += 1
        handler = self._handlers.get(ev.__class__)
        if handler is not None:
            handler(ev)

    def sink(self) -> Callable[[Event], None]:
        """``self`` as a plain function, feeding the contract's checker too when ``check``.

        One sink for both saves the engine a call per event (this runs for every engine event):
        the checker's ``watch`` runs the recorder's handler for the event's class first.
        """
        if self.check:
            return self.checker.watch(self._handlers, self._count)
        get = self._handlers.get
        count = self._count

        def on_event(ev: Event) -> None:
            count[0] += 1
            handler = get(ev.__class__)
            if handler is not None:
                handler(ev)

        return on_event

    @property
    def events(self) -> int:
        return self._count[0]

    @events.setter
    def events(self, value: int) -> None:
        self._count[0] = value

    # ------------------------------------------------------------------ pools

    def _capacity(self, ev: CapacityChanged) -> None:
        key = (ev.cloud, ev.region, ev.gpu_type)
        st = self.pool_state[key]
        st[3] += st[0] * (ev.at - st[2])
        st[2] = ev.at
        _retype(self._books[key][1], 0, ev.capacity - int(st[1]), ev.at)
        st[1] = ev.capacity
        self.cap_history[key].append((ev.at, ev.capacity))

    def spent(self, now: float) -> dict[str, float]:
        """USD accrued per cloud from the start to ``now``, the replay's current instant (the sampler's):
        what ended (booked) plus what runs, held since its placement."""
        clouds = set(self.cost) | set(self.rate)
        return {c: self.cost.get(c, 0.0) + (self.rate.get(c, 0.0) * now - self.rate_since.get(c, 0.0)) / 3600 for c in clouds}

    # ------------------------------------------------------------------ jobs

    def _answered(self, ev: Answered) -> None:
        tr = self.tracks.get(ev.job)
        if tr is not None:
            latency, window = ev.response_seconds, self.window
            tr.latency = window if window < latency else latency  # ``min(latency, window)``
        if ev.answer in _REFUSALS:
            self.answers[(ev.answer, ev.reason)] += 1

    def _unqueue(self, tr: Track) -> None:
        if tr.queued:
            tr.queued = False
            self.queued_jobs[tr.cls] -= 1
            self.queued_gpus[tr.cls] -= tr.gpus

    def _placed(self, ev: Placed) -> None:
        tr = self.tracks[ev.job]
        now = ev.at
        cloud = ev.cloud
        gpus = ev.gpus
        if tr.queued:
            self._unqueue(tr)
        tr.running = tr.ever_placed = True
        tr.attempt = ev.attempt
        tr.cloud = cloud
        tr.placed = now
        tr.start = start = now + tr.latency + self.startup[cloud]
        tr.rate = rate = ev.price * gpus
        self.placements[cloud] += 1
        self.placed_gpus[(cloud, ev.gpu_type)] += gpus
        # GPUs taken in the pool, then in its (cloud, GPU type): ``_retype`` inlined (every placement)
        st, agg = self._books[(cloud, ev.region, ev.gpu_type)]
        st[3] += st[0] * (now - st[2])
        st[2] = now
        st[0] += gpus
        held, cap = agg[0], agg[1]
        if cap > 0 and held >= NEAR_FULL * cap:
            agg[3] += now - agg[2]
        if held > agg[7]:
            agg[8] += (held - agg[7]) * (now - agg[2])
        agg[2] = now
        agg[0] = held = held + gpus
        if gpus > 0:  # only taking GPUs can raise a peak
            if held > agg[5]:
                agg[5] = held
            if cap > 0 and held > agg[6] * cap:
                agg[6] = share = held / cap
                if share > agg[4]:
                    agg[4] = share
        self.running_gpus[(tr.cls, cloud)] += gpus
        self.rate[cloud] += rate
        self.rate_since[cloud] += rate * now
        if self.first_alloc is None:
            self.first_alloc = now
        if tr.end_at is None:
            self.schedule_finish(ev.job, start + tr.remaining, ev.attempt)

    def _queued(self, ev: Queued) -> None:
        tr = self.tracks[ev.job]
        if not tr.queued:
            tr.queued = True
            self.queued_jobs[tr.cls] += 1
            queued = self.queued_gpus[tr.cls] = self.queued_gpus[tr.cls] + tr.gpus
            if queued > self.queued_gpus_peak[tr.cls]:
                self.queued_gpus_peak[tr.cls] = queued

    def _settle(self, ev: Preempted | Released, evicted: bool = False) -> None:
        """Close a placement: credit the work done, and close the wait if work had started; a released job's track goes."""
        tr = self.tracks[ev.job] if evicted else self.tracks.pop(ev.job)
        now, cloud, gpus = ev.at, ev.cloud, ev.gpus
        tr.running = False
        # GPUs freed in the pool, then in its (cloud, GPU type): ``_retype`` inlined (every release); no peak can rise
        st, agg = self._books[(cloud, ev.region, ev.gpu_type)]
        st[3] += st[0] * (now - st[2])
        st[2] = now
        st[0] -= gpus
        held, cap = agg[0], agg[1]
        if cap > 0 and held >= NEAR_FULL * cap:
            agg[3] += now - agg[2]
        if held > agg[7]:
            agg[8] += (held - agg[7]) * (now - agg[2])
        agg[2] = now
        agg[0] = held - gpus
        self.running_gpus[(tr.cls, cloud)] -= gpus
        rate = tr.rate
        self.rate[cloud] -= rate
        self.rate_since[cloud] -= rate * tr.placed
        self.cost[cloud] += ev.cost_usd
        self.last_free = now
        start = tr.start
        if now >= start:
            work, remaining = now - start, tr.remaining
            if remaining < work:  # ``min(work, remaining)``
                work = remaining
            (self.waits_after_eviction if tr.evicted else self.waits)[tr.cls].append(start - tr.since)
            tr.ever_started = True
            tr.remaining -= work
            self.served[tr.cls] += work * tr.gpus
            self.served_by_type[tr.gpu_type] += work * tr.gpus
            if evicted:
                tr.since = now
                tr.evicted = True
        elif not evicted:  # ended before its work started (a serving replica whose demand ended)
            self._censor(tr, now - tr.since)
            if not tr.ever_started:
                self.never_started[tr.cls] += 1

    def _censor(self, tr: Track, wait: float) -> None:
        """A wait that never ended in a start (its length so far is a lower bound)."""
        (self.censored_after_eviction if tr.evicted else self.censored)[tr.cls].append(wait)

    def _preempted(self, ev: Preempted) -> None:
        self.preemptions[ev.reason] += 1
        self._settle(ev, True)

    def _dequeued(self, ev: Dequeued) -> None:
        tr = self.tracks.pop(ev.job)
        self._unqueue(tr)
        self._censor(tr, ev.at - tr.since)
        if not tr.ever_placed:
            self.never_placed[tr.cls] += 1
        if not tr.ever_started:
            self.never_started[tr.cls] += 1

    def mark_steady(self, first: float, last: float) -> None:
        """The last arrival is in: remember the GPU-seconds held so far (utilisation over the steady window)."""
        self.steady = (first, last)
        for key, st in self.pool_state.items():
            self.steady_held[key] = st[3] + st[0] * (last - st[2])

    def close(self, now: float) -> None:
        """End of the run (the horizon, or the last event): what still waits is censored at ``now``;
        what runs is credited its work and charged its GPUs up to ``now``, the rest of its work is in progress."""
        for tr in self.tracks.values():
            if tr.running:
                self.running_at_end[tr.cls] += 1
                self.cost[tr.cloud] += tr.rate * (now - tr.placed) / 3600
                if now >= tr.start:
                    work = min(now - tr.start, tr.remaining)
                    (self.waits_after_eviction if tr.evicted else self.waits)[tr.cls].append(tr.start - tr.since)
                    tr.ever_started = True
                    tr.remaining -= work
                    self.served[tr.cls] += work * tr.gpus
                    self.served_by_type[tr.gpu_type] += work * tr.gpus
                    left = tr.remaining if tr.end_at is None else min(tr.remaining, max(tr.end_at - now, 0.0))
                    self.in_progress[tr.cls] += left * tr.gpus
                    self.in_progress_by_type[tr.gpu_type] += left * tr.gpus
                else:  # placed, still starting up: not started by the horizon
                    self._censor(tr, now - tr.since)
            elif tr.queued:
                self._censor(tr, now - tr.since)
                if not tr.ever_placed:
                    self.never_placed[tr.cls] += 1
            if not tr.ever_started:
                self.never_started[tr.cls] += 1


class Simulation:
    """One replay of one policy: add work and events, ``run()``, then read the recorder."""

    def __init__(
        self,
        catalog: CloudCatalog,
        contract: Contract,
        policy: str = "contract",
        sinks: Iterable[Callable[[Event], None]] = (),
        *,
        class_priorities: dict[str, int] | None = None,
        check: bool = True,
        committed: dict[tuple[str, str], int] | None = None,
    ) -> None:
        self.clock = ManualClock()
        catalog = catalog_for(policy, catalog, contract)
        self.catalog = catalog
        self.contract = contract
        self.engine = build_engine(catalog, contract, self.clock, policy)
        self.policy = policy
        self.holder = contract.holder
        self.priorities = {**DEFAULT_CLASS_PRIORITIES, **(class_priorities or {})}
        self.heap: list[tuple[float, int, int, Any]] = []
        self._seq = itertools.count(1)  # ties at one instant and kind keep their order of scheduling
        self.arrivals: list[TraceJob] = []
        pools = {(b.name, r.name, t): n for b in catalog.spec.backends for r in b.regions for t, n in r.gpus.items()}
        heap, seq, push = self.heap, self._seq, heapq.heappush

        def schedule_finish(job: str, at: float, attempt: int) -> None:
            """The recorder calls this at every placement: one call, straight onto the heap."""
            push(heap, (at, FINISH, next(seq), (job, attempt)))

        self.rec = Recorder(
            contract.spec.rofr.windowSeconds,
            {b.name: b.startupSeconds for b in catalog.spec.backends},
            pools,
            schedule_finish,
            check,
            dict(committed or {}),
        )
        for sink in sinks:
            self.engine.subscribe(sink)
        # the recorder, and the contract's checker on the same stream (violations are a what-if's result too)
        self.engine.subscribe(self.rec.sink())
        self.engine.announce()
        self.samples: list[Sample] = []
        self.markers: list[tuple[float, str]] = []
        self.sim_events = 0
        self.unplaceable: Counter[str] = Counter()
        self.refusals: list[str] = []  # the first few admission refusals, ``job: why``
        self.end = 0.0
        self.stop: float = math.inf  # the horizon this run stopped at (inf: at its last event)
        self.after_horizon = 0  # arrivals after the horizon, never submitted

    def adopt_checks(self, violations: list[Violation]) -> None:
        """The contract checker's verdicts on this run's event stream, from a checker that watched it
        elsewhere (``mcsched simulate`` runs it in a worker process, ``sim.worker``); built with ``check=False``."""
        self.rec.check = True
        self.rec.checker.violations[:] = violations

    def _push(self, t: float, kind: int, data: Any) -> None:
        heapq.heappush(self.heap, (t, kind, next(self._seq), data))

    # ------------------------------------------------------------------ inputs

    def add_jobs(self, jobs: Iterable[TraceJob]) -> None:
        """Arrivals (any order); fixed-end jobs get their end scheduled now."""
        self.arrivals.extend(jobs)
        self.arrivals.sort(key=_ARRIVAL)
        for j in self.arrivals:
            if j.fixed_end:
                self._push(j.arrival + j.duration, FINISH, (j.name, -1))

    def add_capacity(self, changes: Iterable[tuple[float, PoolKey, int]]) -> None:
        """Pool capacity over time; changes to clouds this policy's catalog leaves out (``azure-only``) do not apply."""
        clouds = set(self.catalog.backend_names)
        for t, pool, cap in changes:
            if pool[0] in clouds:
                self._push(t, CAPACITY, (pool, cap))

    def add_scenario(self, actions: Iterable[Action]) -> None:
        """Scripted events (all marked on the plots; those of clouds this policy's catalog leaves out do not apply)."""
        clouds = set(self.catalog.backend_names)
        for a in actions:
            if (a.event.backend or a.event.cloud) in clouds:
                self._push(a.at, SCENARIO, a)
            self.markers.append((a.at, a.label))

    @property
    def horizon(self) -> float:
        """When the workload would end if nothing waited (the sampling span's estimate)."""
        ends = [j.arrival + j.duration for j in self.arrivals]
        return max([*ends, *(t for t, _ in self.markers), 0.0])

    # ------------------------------------------------------------------ the loop

    def run(
        self,
        *,
        samples: int = 400,
        progress: Callable[[int], None] | None = None,
        flush: Callable[[], object] | None = None,
        horizon: float | None = None,
        flush_every: int = 4096,
    ) -> None:
        """Replay everything added up to ``horizon`` (``None``: to the last event).

        Nothing after the horizon is applied; see ``Recorder.close`` for what it does to
        the jobs still running or waiting then. ``flush`` (the ledger's) is called every
        ``flush_every`` simulation events.
        """
        if horizon is not None and not horizon > 0:
            raise ValueError(f"horizon must be > 0, got {horizon}")
        self.stop = math.inf if horizon is None else horizon
        self._loop(samples, progress, flush, max(flush_every, 1))

    def _loop(self, samples: int, progress: Callable[[int], None] | None, flush: Callable[[], object] | None, flush_every: int) -> None:
        heap, engine, clock, rec = self.heap, self.engine, self.clock, self.rec
        tracks = rec.tracks
        arrivals = self.arrivals
        n_arr = len(arrivals)
        i = 0
        stop = self.stop
        # 0. when to sample: a regular grid, plus just before and after each scenario event
        step = max((stop if stop < math.inf else self.horizon) / samples, 1e-3)
        extra = sorted({x for t, _ in self.markers for x in (t, t + min(step / 10, 600.0))})
        grid = iter(sorted({k * step for k in range(samples + 1)} | set(extra)))
        next_sample = next(grid)
        priorities = self.priorities
        n_events = self.sim_events
        pop, post, end = heapq.heappop, engine.post, engine.end
        next_arrival = arrivals[0].arrival if n_arr else math.inf
        while i < n_arr or heap:
            # 1. the next event: an arrival, unless a heap event comes first (ties: heap first)
            if heap and heap[0][0] <= next_arrival:
                t, kind, _, data = pop(heap)
                tj = None
            else:
                tj = arrivals[i]
                t, kind, data = tj.arrival, -1, None
                i += 1
                next_arrival = arrivals[i].arrival if i < n_arr else math.inf
            if t > stop:  # past the horizon: nothing more is applied
                if tj is not None:
                    i -= 1
                break
            # 2. sample the state just before this instant
            while t >= next_sample:
                self._sample(next_sample)
                # past the grid (waits ran beyond the horizon) the spacing widens, so a long tail stays a few hundred samples
                next_sample = next(grid, next_sample + step * (1 + len(self.samples) // samples))
            if t > clock.t:
                clock.t = t
            n_events += 1
            # 3. apply it
            if tj is not None:
                tracks[tj.name] = Track(tj, t)
                rec.requested[tj.cls] += tj.gpus * tj.duration
                rec.requested_by_type[tj.gpu_type] += tj.gpus * tj.duration
                priority = tj.priority if tj.priority is not None else priorities[tj.cls]
                job = Job(tj.name, tj.cls, tj.gpus, tj.gpu_type, priority, tj.duration / 3600)
                try:
                    post(job)  # submit without building a Decision nobody reads
                except AdmissionError as exc:
                    # the engine refuses it (no allowed pool can ever host it): counted, reported and unserved, never queued
                    del tracks[tj.name]
                    self.unplaceable[tj.cls] += 1
                    rec.never_started[tj.cls] += 1
                    if len(self.refusals) < 5:
                        self.refusals.append(f"{tj.name}: {exc}")
                if i == n_arr:
                    rec.mark_steady(arrivals[0].arrival, t)
                if progress is not None and i % 1000 == 0:
                    progress(1000)
            elif kind == FINISH:
                name, attempt = data
                tr = tracks.get(name)
                if tr is None:  # it ended already (or was unplaceable)
                    pass
                elif attempt == -1:  # a fixed-end job's demand ends: stop it, or take it off the queue
                    if tr.running:
                        end(name, "finished")
                    elif tr.queued:
                        end(name, "cancelled")
                elif tr.running and tr.attempt == attempt and tr.end_at is None:
                    end(name, "finished")
            elif kind == CAPACITY:
                (cloud, region, gpu_type), cap = data
                engine.set_capacity(cloud, region, gpu_type, cap)
            else:
                ev = data.event
                if ev.backend is not None:
                    engine.set_backend(ev.backend, up=ev.up, extra_latency_seconds=ev.extraLatencySeconds)
                else:
                    engine.set_capacity(ev.cloud, ev.region, ev.gpuType, ev.capacity)
            if flush is not None and n_events % flush_every == 0:
                flush()
        self.sim_events = n_events
        self.after_horizon = n_arr - i
        if stop < math.inf:
            clock.t = stop
            while next_sample < stop:  # the quiet stretch before the horizon is sampled too
                self._sample(next_sample)
                next_sample = next(grid, stop)
        self.end = clock.t
        self._sample(clock.t)  # before ``close`` books the running jobs' spend: ``spent`` counts it already
        rec.close(clock.t)
        if progress is not None:
            progress(n_arr % 1000)
        if rec.check:
            rec.checker.finish(rec.events + 1)

    def _sample(self, t: float) -> None:
        rec = self.rec
        alloc: dict[tuple[str, str], int] = defaultdict(int)
        cap: dict[tuple[str, str], int] = defaultdict(int)
        for (cloud, _region, gpu_type), st in rec.pool_state.items():
            alloc[(cloud, gpu_type)] += int(st[0])
            cap[(cloud, gpu_type)] += int(st[1])
        peak_alloc: dict[tuple[str, str], int] = {}
        peak_share: dict[tuple[str, str], float] = {}
        for key, agg in rec.type_state.items():
            held, size = agg[0], agg[1]
            peak_alloc[key] = int(agg[5])
            peak_share[key] = agg[6]
            agg[5] = held  # the next interval starts from what is held now
            agg[6] = held / size if size > 0 else 0.0
        self.samples.append(
            Sample(
                t,
                dict(alloc),
                dict(cap),
                dict(rec.queued_jobs),
                dict(rec.queued_gpus),
                {k: v for k, v in rec.running_gpus.items() if v},
                dict(rec.rate),
                dict(rec.answers),
                peak_alloc,
                peak_share,
                dict(rec.queued_gpus_peak),
                rec.spent(t),
            )
        )
        rec.queued_gpus_peak.update(rec.queued_gpus)  # the next interval starts from what is queued now

"""Re-planning: walk the queue in order from the current state; each job starts or is planned.

One *pass* covers the waiting jobs of one GPU type at one instant (docs/queueing.md):

1. every waiting job is visited in queue order (priority, submission, name);
2. a job just submitted or evicted gets a placement attempt through the ROFR gate; a job
   already queued gets one when it could start now; either starts only where it delays no
   planned start of a job ahead of it (conservative backfill);
3. a job that does not start gets a planned start on the pool where it can start earliest,
   from running work's expected ends and the planned starts ahead of it, while fewer than
   ``depth`` jobs of its GPU type hold one (Slurm's ``bf_max_job_test``);
4. a preemption changes what is free, so the pass starts over (victims are evicted jobs now).

Jobs of one shape that cannot start or be planned make every later job of that shape fail
the same way in the same pass (capacity only shrinks and planned starts only accumulate
within a pass), so the walk skips them; tests/reference.py visits every job one by one and
the differential test holds the two to the same event stream.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from enum import Enum

from scheduler.core.decide import decide, never_blocked
from scheduler.core.profile import Claim, Profile, expected_end
from scheduler.core.state import JobRecord, PoolKey, State
from scheduler.events import Event, ReservationCleared, Reserved
from scheduler.inventory import Pool
from scheduler.pipeline.offer import api_ceiling
from scheduler.pipeline.outcomes import TERMINAL_STATES, JobState
from scheduler.pipeline.quote import Blocker

#: Jobs of one GPU type that hold a planned start at once (docs/queueing.md, "Planning depth").
DEFAULT_PLAN_DEPTH = 8

Emit = Callable[[Event], None]
#: A planner: re-plan these GPU types of the state at this time, emitting through ``emit``.
Replan = Callable[[State, Emit, float, set[str], int], None]


class Visit(Enum):
    STARTED = 0
    PLANNED = 1
    STUCK = 2  # neither started nor planned: later jobs of its shape cannot do better this pass
    RESTART = 3  # it preempted: what is free changed, walk again


class Pass:
    """What one walk knows besides the state: the planned starts made so far, per pool."""

    def __init__(self, state: State, now: float, depth: int) -> None:
        self.state = state
        self.now = now
        self.depth = depth
        self.claims: dict[PoolKey, list[tuple[Claim, float]]] = {}  # per pool, in the order made: (claim, its job's API keep)
        self.count = 0  # planned starts made in this pass
        # The most GPUs free in one pool of a cloud that is up, per GPU type, as the pass began:
        # an upper bound for the whole pass (starts only take GPUs; a preemption restarts the
        # pass), so a job larger than it cannot start without preempting. Most queue heads of a
        # busy cluster stop here (docs/queueing.md; 2x on benchmarks/engine.py).
        self._most_free: dict[str, int] = {}
        self._room: dict[tuple[PoolKey, int], int] = {}

    def profile(self, pool: Pool, keep: float) -> Profile:
        """The pool's free GPUs over time for a job that must leave ``keep`` of it (API reserve).

        Kept across passes while the pool's work and the time are the same (``pool_version``
        counts every change apply makes to a pool): most passes look at pools no request
        changed (worth 1.3x on benchmarks/engine.py; the differential test covers it)."""
        key = (pool.key, keep)
        version = self.state.pool_version[pool.key]
        memo = self.state.profile_memo.get(key)
        if memo is not None and memo[0] == version and memo[1] == self.now:
            prof: Profile = memo[2]
            return prof
        capacity = api_ceiling(pool, keep) if keep > 0.0 else pool.capacity
        ends = [(expected_end(r.ends_at, self.now), r.job.gpus) for r in self.state.running[pool.key].values()]
        prof = Profile(capacity - pool.allocated, capacity, ends)
        self.state.profile_memo[key] = (version, self.now, prof)
        return prof

    def blocker(self, rec: JobRecord) -> Blocker:
        """Pools where starting ``rec`` now would delay a planned start made earlier in this pass:
        with ``rec`` running there until its expected end, some planned start no longer fits at
        its time (each checked as it was planned: in its own job's share of the pool, around the
        planned starts made before it)."""
        if not self.claims:
            return never_blocked
        state, job, now = self.state, rec.job, self.now
        end = now + rec.duration

        def blocked(pool: Pool) -> str | None:
            claims = self.claims.get(pool.key)
            if not claims or self.profile(pool, state.api_keep(job, pool)).free_now < job.gpus:
                return None  # nothing planned here, or it does not fit at all: not the planned starts' doing
            for i, (claim, keep) in enumerate(claims):
                with_it = self.profile(pool, keep).with_running(end, job.gpus)
                if not with_it.fits([c for c, _ in claims[:i]], claim.gpus, claim.start, claim.end - claim.start):
                    return f"reserved: {pool.region} planned for {claim.job} from t={claim.start:.0f}s"
            return None

        return blocked

    def held(self, pool: Pool) -> bool:
        return bool(self.claims.get(pool.key))

    def may_start(self, rec: JobRecord) -> bool:
        """A necessary condition for an attempt to place ``rec`` now (makes no events), read off
        the ROFR gate: a holder pool with room under the job's share that no planned start ahead
        holds, while the holder answers and its rules take the job; a pool of another cloud that
        is up, likewise, unless a lapse must queue; or enough movable work to preempt. Most queued
        jobs of a busy cluster fail it, and get no attempt."""
        state, job = self.state, rec.job
        gpus = job.gpus
        cand = state.candidates(job)
        backends = state.backends
        most = self._most_free.get(job.gpu_type)
        if most is None:
            typed = state.inventory.by_type.get(job.gpu_type, ())
            most = self._most_free[job.gpu_type] = max((p.capacity - p.allocated for p in typed if backends[p.cloud].up), default=0)
        answers = state.holder_responsive()
        offered = state.gate and cand.holder_skip is None
        takes = answers and not backends[state.holder].declines(job.gpu_type, gpus)
        if gpus <= most:
            blocked: Blocker | None = None
            for pool in cand.holder_pools if offered and takes else ():
                keep = state.api_keep(job, pool)
                if (api_ceiling(pool, keep) if keep > 0.0 else pool.capacity) - pool.allocated >= gpus:
                    blocked = blocked or self.blocker(rec)
                    if blocked(pool) is None:
                        return True
            spill = not (offered and not answers and state.lapse_queues)
            for cloud, pools in cand.others if spill else ():
                if backends[cloud].up:
                    for pool in pools:
                        if pool.capacity - pool.allocated >= gpus:
                            blocked = blocked or self.blocker(rec)
                            if blocked(pool) is None:
                                return True
        if state.preemption and cand.pinned and offered and takes:
            for pool in cand.holder_pools:
                if pool.capacity >= gpus and self._preemptible(pool, job.priority) >= gpus:
                    return True
        return False

    def _preemptible(self, pool: Pool, priority: int) -> int:
        """Free GPUs plus movable work below ``priority`` on a holder pool, as first read in this
        pass: an upper bound for the rest of it (a start there takes free GPUs and adds at most as
        much movable work), so a job it rules out stays ruled out until the next pass."""
        key = (pool.key, priority)
        value = self._room.get(key)
        if value is None:
            value = self._room[key] = pool.capacity - pool.allocated + self.state.movable_below(pool.key, priority)
        return value

    def plan_pools(self, rec: JobRecord) -> list[tuple[int, Pool]]:
        """Where ``rec`` may be planned: (0, holder pool) while the holder answers and its rules
        allow the job, then (1, pool) of every other allowed cloud that is up."""
        state, job = self.state, rec.job
        cand = state.candidates(job)
        out: list[tuple[int, Pool]] = []
        if state.gate and cand.holder_skip is None:
            if not state.holder_responsive():
                if state.lapse_queues or not cand.others:
                    return []  # it waits for the holder to answer again
            elif not state.backends[state.holder].declines(job.gpu_type, job.gpus):
                out.extend((0, p) for p in cand.holder_pools)
        out.extend((1, p) for cloud, pools in cand.others if state.backends[cloud].up for p in pools)
        return out

    def plan(self, rec: JobRecord) -> tuple[Pool, float] | None:
        """The earliest start of ``rec`` (ties: the holder, then catalog order), or None."""
        if self.count >= self.depth:
            return None
        job, state = rec.job, self.state
        best: tuple[float, int, int] | None = None
        where: Pool | None = None
        for rank, pool in self.plan_pools(rec):
            prof = self.profile(pool, state.api_keep(job, pool))
            start = prof.earliest_start([c for c, _ in self.claims.get(pool.key, ())], job.gpus, rec.duration, self.now)
            if start is not None and (best is None or (start, rank, pool.order) < best):
                best, where = (start, rank, pool.order), pool
        if best is None or where is None:
            return None
        claim = Claim(best[0], best[0] + rec.duration, job.gpus, job.name)
        self.claims.setdefault(where.key, []).append((claim, state.api_keep(job, where)))
        self.count += 1
        return where, best[0]


def settle(state: State, emit: Emit, now: float, gpu_types: set[str], depth: int) -> None:
    """Re-plan every given GPU type (in name order), walking again after each preemption."""
    for gpu_type in sorted(gpu_types):
        while walk(state, emit, now, gpu_type, depth):
            pass


def walk(state: State, emit: Emit, now: float, gpu_type: str, depth: int) -> bool:
    """One pass over the waiting jobs of ``gpu_type``; True when a preemption calls for another."""
    p = Pass(state, now, depth)
    # The queue's own lists, not copies (a copy per pass costs the whole backlog): within a pass
    # a list only loses the job being visited (it starts, or a reloaded contract refuses it),
    # and anything that adds to the queue (an eviction) ends the pass.
    shapes = list(state.queue.shapes(gpu_type).values())
    heap: list[tuple[tuple[int, int, str], int, int]] = [(keys[0], i, 0) for i, keys in enumerate(shapes)]
    # jobs visited whatever their shape does: each needs its attempt, or has a planned start to revise
    for rec in (*state.pending.values(), *state.planned.values()):
        if rec.job.gpu_type == gpu_type:
            heap.append((rec.key, -1, 0))
    heapq.heapify(heap)
    outcome: dict[str, Visit] = {}
    while heap:
        key, shape, pos = heapq.heappop(heap)
        name = key[2]
        visit = outcome.get(name)
        if visit is None:
            visit = outcome[name] = _visit(p, state.jobs[name], emit)
            if visit is Visit.RESTART:
                return True
        if shape >= 0 and visit is not Visit.STUCK:
            keys = shapes[shape]
            nxt = pos + 1 if pos < len(keys) and keys[pos] == key else pos  # the visited job may have left its list
            if nxt < len(keys):
                heapq.heappush(heap, (keys[nxt], shape, nxt))
    return False


def _visit(p: Pass, rec: JobRecord, emit: Emit) -> Visit:
    state = p.state
    if rec.state is JobState.PENDING or (rec.state is JobState.QUEUED and p.may_start(rec)):
        fresh = rec.state is JobState.PENDING
        attempt = decide(state, rec, p.now, p.blocker(rec), p.held)
        if attempt.placed or fresh:
            for ev in attempt.events:
                emit(ev)
        if attempt.preempted:
            return Visit.RESTART
        if rec.state in TERMINAL_STATES:  # refused by a reloaded contract: so is every job of its shape
            return Visit.STUCK
        if attempt.placed:
            return Visit.STARTED
    plan = p.plan(rec)
    recorded = rec.planned
    if plan is None:
        if recorded is not None:
            emit(ReservationCleared(p.now, rec.job.name, recorded[0].cloud, recorded[0].region, recorded[0].gpu_type))
        return Visit.STUCK
    pool, start = plan
    if recorded is None or recorded[0] is not pool or recorded[1] != start:
        emit(Reserved(p.now, rec.job.name, pool.cloud, pool.region, pool.gpu_type, start))
    return Visit.PLANNED

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
within a pass), so the walk skips them. The one exception is a job the holder turns down at
its discretion (``holderRules.declineFraction``, drawn per job and time: it declines the
job's offer, or bars its preemption): the next job of the shape gets its own draw and is
still visited. tests/reference.py visits every job one by one and the differential test holds
the two to the same event stream.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Set
from enum import Enum

from scheduler.core.decide import decide, never_blocked
from scheduler.core.profile import Claim, Profile, expected_end
from scheduler.core.recall import Entry, Note, WalkRecord
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
    OWN_ANSWER = 4  # neither, but the holder turned down this job at its discretion: the next of its shape gets its own draw


class Pass:
    """What one walk knows besides the state: the planned starts made so far, per pool."""

    def __init__(self, state: State, now: float, depth: int, gpu_type: str) -> None:
        self.state = state
        self.now = now
        self.depth = depth
        context = (now, state.terms_version, depth)
        last = state.walks.get(gpu_type)
        # The last pass's notes hold at this instant under these terms (scheduler/core/recall.py);
        # ``changed``: the type's pools whose work or size changed since that pass began (the
        # state's log of them, emptied here so that it says the same to the next pass), and later
        # those changed by starts in this pass; ``in_sync``: every planned start made so far is
        # the last pass's, in order.
        self.last: WalkRecord | None = last if last is not None and last.context == context else None
        log = state.changed_pools[gpu_type]
        self.changed: set[PoolKey] = set() if self.last is None else set(log)
        log.clear()
        self.in_sync = self.last is not None
        self.record = state.walks[gpu_type] = WalkRecord(context)
        self.claims: dict[PoolKey, list[Claim]] = {}  # per pool, in the order made
        self.keeps: dict[PoolKey, list[float]] = {}  # per pool, each claim's job's API keep there
        self.count = 0  # planned starts made in this pass
        self._room: dict[tuple[PoolKey, int], int] = {}
        self._plan_pools: dict[int, list[tuple[int, Pool, float]]] = {}

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
            for i, (claim, keep) in enumerate(zip(claims, self.keeps[pool.key], strict=True)):
                with_it = self.profile(pool, keep).with_running(end, job.gpus)
                if not with_it.fits(claims[:i], claim.gpus, claim.start, claim.end - claim.start):
                    return f"reserved: {pool.region} planned for {claim.job} from t={claim.start:.0f}s"
            return None

        return blocked

    def held(self, pool: Pool) -> bool:
        return bool(self.claims.get(pool.key))

    def may_start(self, rec: JobRecord, only: Set[PoolKey] | None = None) -> bool:
        """A necessary condition for an attempt to place ``rec`` now (makes no events), read off
        the ROFR gate: a holder pool with room under the job's share that no planned start ahead
        holds, while the holder answers and its rules take the job; a pool of another cloud that
        is up, likewise, unless a lapse must queue; or enough movable work to preempt. Most queued
        jobs of a busy cluster fail it, and get no attempt. ``only``: look at these pools alone
        (the rest are known to fail it, from the last pass's note)."""
        state, job = self.state, rec.job
        gpus = job.gpus
        cand = state.candidates(job)
        answers = state.holder_responsive()
        offered = state.gate and cand.holder_skip is None
        takes = answers and not state.backends[state.holder].declines(job.gpu_type, gpus)
        to_holder = offered and takes
        spill = not (offered and not answers and state.lapse_queues)
        blocked: Blocker | None = None
        for pool in cand.pools if only is None else [state.inventory.pools[k] for k in only]:
            if pool.key in cand.holder_keys:
                if not to_holder:
                    continue
                keep = state.api_keep(job, pool)
                room = (api_ceiling(pool, keep) if keep > 0.0 else pool.capacity) - pool.allocated
            else:
                if not spill or not state.backends[pool.cloud].accepting:
                    continue
                room = pool.capacity - pool.allocated
            if room >= gpus:
                blocked = blocked or self.blocker(rec)
                if blocked(pool) is None:
                    return True
        if state.preemption and cand.pinned and to_holder:
            pools = state.inventory.pools
            for pool in cand.holder_pools if only is None else [pools[k] for k in only if k in cand.holder_keys]:
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

    def plan_pools(self, rec: JobRecord) -> list[tuple[int, Pool, float]]:
        """Where ``rec`` may be planned, with its API keep there: (0, holder pool) while the holder
        answers and its rules allow the job, then (1, pool) of every other allowed cloud that is
        up. The same for every job of a signature within a pass (backends do not change in one)."""
        state, job = self.state, rec.job
        cand = state.candidates(job)
        out = self._plan_pools.get(id(cand))
        if out is not None:
            return out
        out = []
        if state.gate and cand.holder_skip is None:
            if not state.holder_responsive():
                if state.lapse_queues or not cand.others:
                    self._plan_pools[id(cand)] = out
                    return out  # it waits for the holder to answer again
            elif not state.backends[state.holder].declines(job.gpu_type, job.gpus):
                out.extend((0, p, state.api_keep(job, p)) for p in cand.holder_pools)
        out.extend((1, p, 0.0) for cloud, pools in cand.others if state.backends[cloud].accepting for p in pools)
        self._plan_pools[id(cand)] = out
        return out

    def starts(self, rec: JobRecord, only: Set[PoolKey] | None = None) -> list[Entry]:
        """Where ``rec`` could start earliest on each pool it may be planned on (``only``: these)."""
        gpus, duration, now = rec.job.gpus, rec.duration, self.now
        out: list[Entry] = []
        for rank, pool, keep in self.plan_pools(rec):
            if only is not None and pool.key not in only:
                continue
            start = self.profile(pool, keep).earliest_start(self.claims.get(pool.key, ()), gpus, duration, now)
            if start is not None:
                out.append((start, rank, pool.order, pool, keep))
        return out

    def claim(self, rec: JobRecord, entries: list[Entry] | None) -> tuple[Pool, float] | None:
        """Plan ``rec`` at the best of ``entries`` (earliest; ties: the holder, then catalog order)."""
        if not entries:
            return None
        start, _, _, pool, keep = min(entries)  # pool orders differ, so pools are never compared
        name = rec.job.name
        self.claims.setdefault(pool.key, []).append(Claim(start, start + rec.duration, rec.job.gpus, name))
        self.keeps.setdefault(pool.key, []).append(keep)
        made = (name, pool.key, start)
        if self.in_sync and (self.last is None or len(self.last.plans) <= self.count or self.last.plans[self.count] != made):
            self.in_sync = False
        self.record.plans.append(made)
        self.count += 1
        return pool, start

    def recalled(self, rec: JobRecord) -> Note | None:
        """This visit's note, made from the last pass's note of ``rec`` and a fresh look at its
        changed pools, when that note holds (scheduler/core/recall.py) and no changed pool may
        let it start; None when the visit must be made in full."""
        if not self.in_sync or self.last is None:
            return None
        note = self.last.notes.get(rec.job.name)
        if note is None or note.ahead != self.count:
            return None
        changed = self.changed.intersection(self.state.candidates(rec.job).pool_keys)
        if not changed:
            return note
        if self.may_start(rec, changed):
            return None
        if note.entries is None:
            return note
        return Note(self.count, [e for e in note.entries if e[3].key not in changed] + self.starts(rec, changed))


PLANNED, PENDING = -1, -2  # heap entries of these streams, beside the shapes (0, 1, ...)


def settle(state: State, emit: Emit, now: float, gpu_types: set[str], depth: int) -> None:
    """Re-plan every given GPU type (in name order), walking again after each preemption."""
    for gpu_type in sorted(gpu_types):
        while walk(state, emit, now, gpu_type, depth):
            pass


def walk(state: State, emit: Emit, now: float, gpu_type: str, depth: int) -> bool:
    """One pass over the waiting jobs of ``gpu_type``; True when a preemption calls for another."""
    if not state.queue.shapes(gpu_type):
        # Nothing waits: the pass would visit no one and emit nothing, and leave no notes. Most
        # passes of a replay below saturation are such (scheduler/core/recall.py: what this pays).
        state.walks.pop(gpu_type, None)
        state.changed_pools[gpu_type].clear()
        return False
    p = Pass(state, now, depth, gpu_type)
    # The queue's own lists, not copies (a copy per pass costs the whole backlog): within a pass
    # a list only loses the job being visited (it starts, or a reloaded contract refuses it),
    # and anything that adds to the queue (an eviction) ends the pass.
    shapes = list(state.queue.shapes(gpu_type).values())
    heap: list[tuple[tuple[int, int, str], int, int]] = [(keys[0], i, 0) for i, keys in enumerate(shapes)]
    # jobs visited whatever their shape does: each needs its attempt, or has a planned start to
    # revise. The pending ones (a whole batch) come as one sorted stream, so the heap stays as
    # small as the number of shapes (a heap of a 100k batch cost a quarter of ``mcsched plan``).
    heap.extend((rec.key, PLANNED, 0) for rec in state.planned.values() if rec.job.gpu_type == gpu_type)
    pending = sorted(rec.key for rec in state.pending.values() if rec.job.gpu_type == gpu_type)
    if pending:
        heap.append((pending[0], PENDING, 0))
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
        if shape == PENDING:
            if pos + 1 < len(pending):
                heapq.heappush(heap, (pending[pos + 1], PENDING, pos + 1))
        elif shape >= 0 and visit is not Visit.STUCK:
            keys = shapes[shape]
            nxt = pos + 1 if pos < len(keys) and keys[pos] == key else pos  # the visited job may have left its list
            if nxt < len(keys):
                heapq.heappush(heap, (keys[nxt], shape, nxt))
    return False


def _visit(p: Pass, rec: JobRecord, emit: Emit) -> Visit:
    state = p.state
    unplanned = Visit.STUCK  # what a visit that neither starts nor plans means for the rest of its shape
    note = p.recalled(rec) if rec.state is JobState.QUEUED else None
    if note is None:
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
                assert rec.pool is not None
                p.changed.add(rec.pool.key)
                return Visit.STARTED
            if state.holder_turns_down(rec.job.name, p.now):  # its answer (and whether it may preempt) is its own
                unplanned = Visit.OWN_ANSWER
            entries = p.starts(rec) if p.count < p.depth else None  # an attempt was made: no note
        else:
            entries = p.starts(rec) if p.count < p.depth else None
            p.record.notes[rec.job.name] = Note(p.count, entries)
    else:
        entries = note.entries
        p.record.notes[rec.job.name] = note
    plan = p.claim(rec, entries) if p.count < p.depth else None
    recorded = rec.planned
    if plan is None:
        if recorded is not None:
            emit(ReservationCleared(p.now, rec.job.name, recorded[0].cloud, recorded[0].region, recorded[0].gpu_type))
        return unplanned
    pool, start = plan
    if recorded is None or recorded[0] is not pool or recorded[1] != start:
        emit(Reserved(p.now, rec.job.name, pool.cloud, pool.region, pool.gpu_type, start))
    return Visit.PLANNED

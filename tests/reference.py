"""The executable reference of docs/queueing.md: a deliberately plain planner.

It re-plans the way the document reads, with nothing clever: every waiting job of the GPU
type is visited, one by one, in queue order; every one of them gets a full placement attempt
(its events kept only when it places, or when the job was just submitted or evicted); free
GPUs are counted from the running jobs at each instant where anything changes. No caches, no
indices, no skipping of shapes, no cheap pre-check. ``Engine(..., replan=reference_replan)``
is the reference engine; the differential test (tests/core/test_planner_reference.py) holds
the real planner to the same event stream.

It shares with the engine only what the differential test does not question: the state and
its ``apply`` and one placement attempt through the ROFR gate (``decide``), which the
independent invariant checker audits on every test stream instead.
"""

from __future__ import annotations

from collections.abc import Callable

from scheduler.core.decide import decide
from scheduler.core.state import JobRecord, State
from scheduler.events import Event, ReservationCleared, Reserved
from scheduler.inventory import Pool
from scheduler.pipeline.outcomes import JobState

OVERRUN_STEP = 600.0  # docs/queueing.md, "Overruns"

# a plan: (pool, start, end, GPUs, job, its job's record)
Plan = tuple[Pool, float, float, int, str, JobRecord]


def reference_replan(state: State, emit: Callable[[Event], None], now: float, gpu_types: set[str], depth: int) -> None:
    for gpu_type in sorted(gpu_types):
        while one_pass(state, emit, now, gpu_type, depth):
            pass


def one_pass(state: State, emit: Callable[[Event], None], now: float, gpu_type: str, depth: int) -> bool:
    """True when a preemption happened (the pass starts over)."""
    waiting = [r for r in state.jobs.values() if r.job.gpu_type == gpu_type and r.state in (JobState.PENDING, JobState.QUEUED)]
    waiting.sort(key=lambda r: (-r.job.priority, r.seq, r.job.name))
    plans: list[Plan] = []
    for rec in waiting:
        fresh = rec.state is JobState.PENDING
        attempt = decide(state, rec, now, blocker(state, rec, plans, now), lambda pool: any(p[0] is pool for p in plans))
        if attempt.placed or fresh:
            for ev in attempt.events:
                emit(ev)
        if attempt.preempted:
            return True
        if attempt.placed or rec.state not in (JobState.PENDING, JobState.QUEUED):
            continue
        plan = None
        if len(plans) < depth:
            best: tuple[float, int, int, Pool] | None = None
            for rank, pool in plan_pools(state, rec):
                start = earliest(state, rec, pool, plans, now)
                if start is not None and (best is None or (start, rank, pool.order) < best[:3]):
                    best = (start, rank, pool.order, pool)
            if best is not None:
                plan = (best[3], best[0])
                plans.append((best[3], best[0], best[0] + rec.duration, rec.job.gpus, rec.job.name, rec))
        old = rec.planned
        if plan is None:
            if old is not None:
                emit(ReservationCleared(now, rec.job.name, old[0].cloud, old[0].region, old[0].gpu_type))
        elif old is None or old[0] is not plan[0] or old[1] != plan[1]:
            emit(Reserved(now, rec.job.name, plan[0].cloud, plan[0].region, plan[0].gpu_type, plan[1]))
    return False


def expected_end(ends_at: float, now: float) -> float:
    end = ends_at
    while end <= now:
        end += OVERRUN_STEP
    return end


def ceiling(state: State, rec: JobRecord, pool: Pool) -> int:
    keep = state.api_keep(rec.job, pool)
    return int(pool.capacity * (1.0 - keep)) if keep > 0.0 else pool.capacity


def free_at(state: State, rec: JobRecord, pool: Pool, t: float, now: float, extra: tuple[float, int] = (0.0, 0)) -> int:
    """Free GPUs of ``pool`` for this job at ``t``: its ceiling less the work still running then
    (``extra``: another job's (end, GPUs), running from now)."""
    busy = sum(r.job.gpus for r in state.running[pool.key].values() if expected_end(r.ends_at, now) > t)
    busy += extra[1] if extra[0] > t else 0
    return ceiling(state, rec, pool) - busy


def fits(state: State, rec: JobRecord, pool: Pool, plans: list[Plan], start: float, now: float, extra: tuple[float, int] = (0.0, 0)) -> bool:
    """Whether ``rec`` fits on ``pool`` from ``start`` for its duration around ``plans``, checked at
    every instant where anything on the pool changes."""
    stop = start + rec.duration
    mine = [p for p in plans if p[0] is pool]
    ends = [expected_end(r.ends_at, now) for r in state.running[pool.key].values()] + [extra[0]]
    instants = {start} | {t for t in [*ends, *(p[1] for p in mine), *(p[2] for p in mine)] if start < t < stop}
    for t in instants:
        held = sum(p[3] for p in mine if p[1] <= t < p[2])
        if free_at(state, rec, pool, t, now, extra) - held < rec.job.gpus:
            return False
    return True


def earliest(state: State, rec: JobRecord, pool: Pool, plans: list[Plan], now: float) -> float | None:
    if rec.job.gpus > ceiling(state, rec, pool):
        return None
    ends = [expected_end(r.ends_at, now) for r in state.running[pool.key].values()]
    for t in sorted({now} | {e for e in ends if e > now} | {p[2] for p in plans if p[0] is pool and p[2] > now}):
        if fits(state, rec, pool, plans, t, now):
            return t
    return None


def blocker(state: State, rec: JobRecord, plans: list[Plan], now: float) -> Callable[[Pool], str | None]:
    """A pool is held against ``rec`` when, with ``rec`` running there from now, a plan made
    earlier in the pass no longer fits at its time (each as it was planned)."""

    def blocked(pool: Pool) -> str | None:
        mine = [p for p in plans if p[0] is pool]
        if not mine or free_at(state, rec, pool, now, now) < rec.job.gpus:
            return None
        running = (now + rec.duration, rec.job.gpus)
        for i, plan in enumerate(mine):
            owner = plan[5]
            if not fits(state, owner, pool, mine[:i], plan[1], now, running):
                return f"reserved: {pool.region} planned for {plan[4]} from t={plan[1]:.0f}s"
        return None

    return blocked


def plan_pools(state: State, rec: JobRecord) -> list[tuple[int, Pool]]:
    """The holder's pools first while it answers in time and its rules take the job (and it is not
    cordoned), then every other allowed cloud that is up and not cordoned; nothing at all while the job must wait for the holder."""
    job = rec.job
    cand = state.candidates(job)
    holder = state.backends[state.holder]
    out: list[tuple[int, Pool]] = []
    if state.gate and cand.holder_skip is None:
        answers = holder.up and holder.response_seconds <= state.window
        if not answers and (state.lapse_queues or not cand.others):
            return []
        rules_decline = (
            holder.cordoned or job.gpu_type in holder.decline_gpu_types or (holder.max_gang_gpus is not None and job.gpus > holder.max_gang_gpus)
        )
        if answers and not rules_decline:
            out += [(0, p) for p in cand.holder_pools]
    out += [(1, p) for cloud, pools in cand.others if state.backends[cloud].accepting for p in pools]
    return out

"""One placement attempt: admit -> offer (ROFR) -> quote -> score -> bind, else preempt or queue.

``decide`` reads the state and returns the events the attempt makes, applying none of them:
the caller applies them (or, for a job that was already queued and would only queue again,
drops them). The stages are the pipeline's (``scheduler.pipeline``); this module only runs
them in the contract's order and words the explanations.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from scheduler.core.state import JobRecord, State
from scheduler.errors import AdmissionError
from scheduler.events import Answered, Dequeued, Event, Offered, Placed, Preempted, Queued, Quoted
from scheduler.inventory import Pool
from scheduler.pipeline.admit import Candidates
from scheduler.pipeline.offer import HolderAnswer, api_ceiling, holder_answer
from scheduler.pipeline.outcomes import Answer, DeclineReason, EndReason, EvictReason, QueueReason, SkipReason, Via
from scheduler.pipeline.preempt import choose_victims
from scheduler.pipeline.quote import Blocker, Quote, collect_quotes
from scheduler.specs import API_CLASS

PREEMPTIBLE_DECLINES = frozenset({DeclineReason.NO_CAPACITY, DeclineReason.RESERVED_FOR_API_SERVING, DeclineReason.RESERVED_FOR_QUEUED_JOB})


class Attempt(NamedTuple):
    """What one attempt would do: its events, and whether it places the job (and by preempting)."""

    events: list[Event]
    placed: bool
    preempted: bool


def never_blocked(_pool: Pool) -> str | None:
    return None


def never_held(_pool: Pool) -> bool:
    return False


def decide(
    state: State, rec: JobRecord, now: float, blocked: Blocker = never_blocked, held: Callable[[Pool], bool] = never_held
) -> Attempt:
    """One attempt for ``rec`` at ``now``. ``blocked`` says which pools it may not start on now
    because that would delay a planned start of a job ahead of it (conservative backfill);
    ``held`` which pools hold such a planned start at all (never preempted on for this job).
    Numbered like the pipeline (DESIGN.md)."""
    job = rec.job
    name = job.name
    attempt = rec.attempt + 1
    holder = state.holder
    events: list[Event] = []
    # 1. admit (static: the candidates of the job's signature)
    try:
        cand = state.candidates(job)
    except AdmissionError:  # evicted after a contract reload that no longer admits it (docs/queueing.md)
        return Attempt([Dequeued(now, name, job.cls, EndReason.CANCELLED)], False, False)
    quotes: list[Quote] | None = None
    dropped: list[tuple[str, str]] = []
    # 2. offer to the ROFR holder
    if state.gate and cand.holder_skip is None:
        competing: Quote | None = None
        if state.match_mode:
            quotes, dropped = _quote(state, rec, cand, blocked)
            competing = min(quotes, key=state.rank) if quotes else None
            events.append(Quoted(now, name, attempt, _quote_tuples(quotes), tuple(dropped)))
        events.append(
            Offered(
                now,
                name,
                attempt,
                holder,
                "match" if state.match_mode else "first-look",
                state.window,
                competing.price if competing else None,
                competing.pool.cloud if competing else None,
            )
        )
        ans = holder_answer(job, state.backends[holder], cand.holder_pools, state.window, competing, state.match_mode, blocked, now)
        events.append(Answered(now, name, attempt, holder, ans.answer, ans.reason, ans.response_seconds))
        if ans.answer == Answer.ACCEPTED and ans.pool is not None:
            not_used = (*dropped, *cand.excluded) if quotes is not None else cand.accepted_not_used
            return _place(events, rec, attempt, ans.pool, ans.price, Via.ROFR_ACCEPTED, now, not_used)
    else:
        skip = cand.holder_skip if state.gate else SkipReason.POLICY_IGNORES_CONTRACT
        ans = HolderAnswer(Answer.NOT_OFFERED, skip or SkipReason.POLICY_IGNORES_CONTRACT, 0.0)
        events.append(Answered(now, name, attempt, holder, ans.answer, ans.reason, 0.0))
    holder_note = (holder, f"{ans.answer}: {ans.reason}")
    lapsed = ans.answer == Answer.LAPSED
    may_preempt = state.preemption and cand.pinned and ans.answer == Answer.DECLINED and ans.reason in PREEMPTIBLE_DECLINES
    turned_down = may_preempt and state.holder_turns_down(name, now)  # the holder's discretionary no holds for the instant
    may_preempt = may_preempt and not turned_down
    no_preemption = f"; {holder} turns it down at its discretion at this instant, so it preempts nothing" if turned_down else ""
    if lapsed and state.lapse_queues and cand.others:
        return _queue(events, rec, attempt, QueueReason.HOLDER_LAPSED, f"{holder} lapsed: {ans.reason}", now, (holder_note, *dropped, *cand.excluded))
    if not cand.others:  # pinned to the holder alone: wait for it, or preempt there
        if may_preempt:
            done = _preempt_for(state, events, rec, attempt, cand, now, held, holder_note)
            if done is not None:
                return done
        reason = QueueReason.PINNED_HOLDER_LAPSED if lapsed else QueueReason.PINNED_HOLDER_DECLINED
        detail = f"{holder} {ans.answer}: {ans.reason}; no other cloud allowed{no_preemption}"
        return _queue(events, rec, attempt, reason, detail, now, (holder_note, *cand.excluded))
    # 3. quote the others, only now that the holder declined or lapsed
    if quotes is None:
        quotes, dropped = _quote(state, rec, cand, blocked)
        events.append(Quoted(now, name, attempt, _quote_tuples(quotes), tuple(dropped)))
    # 4. score, 5. bind
    if quotes:
        best = min(quotes, key=state.rank)
        via = Via.AFTER_LAPSE if lapsed else Via.HOLDER_NOT_OFFERED if ans.answer == Answer.NOT_OFFERED else Via.AFTER_DECLINE
        losers = [(q.pool.cloud, f"outscored: ${q.price:.2f}/GPU-h, start +{q.start_seconds:.0f}s") for q in quotes if q is not best]
        return _place(events, rec, attempt, best.pool, best.price, via, now, (holder_note, *losers, *dropped, *cand.excluded))
    # 7. a pinned job may still preempt movable work on the holder
    if may_preempt:
        done = _preempt_for(state, events, rec, attempt, cand, now, held, holder_note)
        if done is not None:
            return done
    # 6. queue
    all_down = bool(dropped) and all(why == "backend-down" for _, why in dropped)
    detail = f"{holder} {ans.answer}: {ans.reason}; " + "; ".join(f"{c} {why}" for c, why in dropped) + no_preemption
    reason = QueueReason.BACKEND_DOWN if all_down else QueueReason.NO_CAPACITY
    return _queue(events, rec, attempt, reason, detail, now, (holder_note, *dropped, *cand.excluded))


def _quote(state: State, rec: JobRecord, cand: Candidates, blocked: Blocker) -> tuple[list[Quote], list[tuple[str, str]]]:
    job = rec.job
    return collect_quotes(job.gpus, job.gpu_type, cand.others, state.backends, cand.locality, blocked)


def _place(
    events: list[Event], rec: JobRecord, attempt: int, pool: Pool, price: float, via: Via, now: float, not_used: tuple[tuple[str, str], ...]
) -> Attempt:
    job = rec.job
    events.append(
        Placed(now, job.name, attempt, job.cls, pool.cloud, pool.region, pool.gpu_type, job.gpus, price, via, now - rec.submitted_at, not_used)
    )
    return Attempt(events, True, any(isinstance(e, Preempted) for e in events))


def _queue(
    events: list[Event], rec: JobRecord, attempt: int, reason: QueueReason, detail: str, now: float, not_used: tuple[tuple[str, str], ...]
) -> Attempt:
    job = rec.job
    events.append(Queued(now, job.name, attempt, job.cls, reason, detail, not_used))
    return Attempt(events, False, False)


def _preempt_for(
    state: State,
    events: list[Event],
    rec: JobRecord,
    attempt: int,
    cand: Candidates,
    now: float,
    held: Callable[[Pool], bool],
    holder_note: tuple[str, str],
) -> Attempt | None:
    """Evict the fewest lower-priority movable GPUs on a holder pool that make the gang fit.

    A pool holding a planned start of a job ahead is not preempted on (the evicted work would
    go to this job, not to the one planned there)."""
    job = rec.job
    keep = 0.0 if job.cls == API_CLASS else state.backends[state.holder].api_reserve
    eligible: Callable[[JobRecord], bool] = lambda r: state.movable(r) and r.job.priority < job.priority  # noqa: E731
    best: tuple[tuple[int, int, int], Pool, list[JobRecord]] | None = None
    for pool in cand.holder_pools:
        if pool.capacity < job.gpus or held(pool):
            continue
        need = job.gpus - (pool.capacity - pool.allocated)
        if keep > 0.0:
            need = max(need, pool.allocated + job.gpus - api_ceiling(pool, keep))
        if need > 0 and state.movable_below(pool.key, job.priority) < need:
            continue  # the eligible work here is too small: what choose_victims would find, read off the counts
        victims = choose_victims(state.running[pool.key].values(), need, eligible)
        if not victims:
            continue
        key = (sum(v.job.gpus for v in victims), len(victims), pool.order)
        if best is None or key < best[0]:
            best = (key, pool, victims)
    if best is None:
        return None
    _, pool, victims = best
    for v in victims:
        vjob = v.job
        cost = v.price * vjob.gpus * max(now - v.placed_at, 0.0) / 3600.0
        events.append(Preempted(now, vjob.name, vjob.cls, pool.cloud, pool.region, pool.gpu_type, vjob.gpus, EvictReason.PINNED_JOB, job.name, cost))
    return _place(events, rec, attempt, pool, pool.price, Via.PREEMPTION, now, (holder_note, *cand.excluded))


def _quote_tuples(quotes: list[Quote]) -> tuple[tuple[str, str, float, float], ...]:
    return tuple((q.pool.cloud, q.pool.region, q.price, q.start_seconds) for q in quotes)

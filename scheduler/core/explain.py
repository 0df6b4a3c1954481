"""Views of a job for people and drivers: its current state, reason, planned start and history.

A view is read from the state at the moment it is asked for, never stored: a queued job
evicted from OCI shows as queued with its current reason and planned start, not at OCI.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from scheduler.core.state import JobRecord, State
from scheduler.decision import Decision
from scheduler.pipeline.outcomes import TERMINAL_STATES, JobState


def outcome(state: JobState) -> str:
    return "placed" if state is JobState.RUNNING else str(state)


def waiting_for(state: State, rec: JobRecord) -> str:
    """Why a queued job has not started, as of now: its planned start, or what it waits for."""
    if rec.planned is not None:
        pool, start = rec.planned
        return f"planned start t={start:.0f}s on {pool.cloud}/{pool.region} (when running work there is expected to end)"
    job = rec.job
    cand = state.candidates(job)
    down = sorted({p.cloud for p in cand.pools if not state.backends[p.cloud].up})
    cordoned = sorted({p.cloud for p in cand.pools if state.backends[p.cloud].up and state.backends[p.cloud].cordoned})
    shrunk = [p for p in cand.pools if p.capacity < p.ceiling and p.capacity < job.gpus]
    if shrunk or down or cordoned:
        parts = [f"{p.cloud}/{p.region} has {p.capacity} of {p.ceiling} {p.gpu_type}" for p in shrunk[:3]]
        parts += [f"{c} is down" for c in down]
        parts += [f"{c} is cordoned" for c in cordoned]
        return "waiting for capacity to return: " + "; ".join(parts)
    return "no planned start: beyond the planning depth (it starts by backfill or when jobs ahead start)"


def decisions(state: State, records: Iterable[JobRecord]) -> list[Decision]:
    """The views of many jobs at one moment. A queued job without a planned start waits for
    the same thing as every such job of its signature (its pools, their capacity, the clouds
    up), so that answer is found once per signature: it scanned the job's pools for each of
    the 99k queued jobs of a 100k-job plan."""
    unplanned: dict[tuple[Any, ...], str] = {}
    return [decision(state, rec, unplanned) for rec in records]


def decision(state: State, rec: JobRecord, unplanned: dict[tuple[Any, ...], str] | None = None) -> Decision:
    """One job's view; ``unplanned`` memoizes ``waiting_for`` of unplanned jobs by signature
    (only while the state does not change: see ``decisions``)."""
    job = rec.job
    st = rec.state
    queued = st is JobState.QUEUED or st is JobState.PENDING
    pool = rec.pool if st is JobState.RUNNING else rec.last_pool if st in TERMINAL_STATES else None
    planned = None
    if queued and rec.planned is not None:
        ppool, start = rec.planned
        planned = (ppool.cloud, ppool.region, start)
    return Decision(
        job.name,
        job.cls,
        outcome(JobState.QUEUED if st is JobState.PENDING else st),
        job.gpu_type,
        job.gpus,
        state.holder,
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
        tuple(rec.history),
        planned,
        (_waiting(state, rec, unplanned) if unplanned is not None else waiting_for(state, rec)) if queued else None,
    )


def _waiting(state: State, rec: JobRecord, unplanned: dict[tuple[Any, ...], str]) -> str:
    if rec.planned is not None:
        return waiting_for(state, rec)
    sig = rec.job.signature
    why = unplanned.get(sig)
    if why is None:
        why = unplanned[sig] = waiting_for(state, rec)
    return why

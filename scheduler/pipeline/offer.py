"""Stage 2: the right-of-first-refusal gate, the holder's answer to one offer.

A gate with a timeout (Pending -> Accepted | Declined | Lapsed), not a branch in a scorer:
the holder answers on its own rules, and an answer that would arrive after the contract's
response window is a lapse whatever it would have said. The order of the checks is part of
the contract and re-derived by the ledger's checker (docs/audit.md).
"""

from __future__ import annotations

from enum import Enum
from typing import NamedTuple

from scheduler.backends import BackendState
from scheduler.inventory import Pool
from scheduler.model import Job
from scheduler.pipeline.outcomes import AcceptReason, Answer, DeclineReason, LapseReason
from scheduler.pipeline.quote import Blocker, Quote
from scheduler.specs import API_CLASS


class HolderAnswer(NamedTuple):
    """The holder's answer to one offer (a tuple: one is built per attempt)."""

    answer: Answer
    reason: str
    response_seconds: float
    pool: Pool | None = None
    price: float = 0.0


class PoolFit(Enum):
    FITS = 0
    NO_ROOM = 1
    RESERVED = 2  # held for a higher-priority queued job (mcsched's queue)
    API_RESERVE = 3  # the holder keeps this share for api-serving


def api_ceiling(pool: Pool, keep: float) -> int:
    """GPUs of ``pool`` the holder lets non-API work use."""
    return int(pool.capacity * (1.0 - keep))


def classify(pool: Pool, job: Job, keep: float, blocked: Blocker) -> PoolFit:
    if pool.capacity - pool.allocated < job.gpus:
        return PoolFit.NO_ROOM
    if blocked(pool) is not None:
        return PoolFit.RESERVED
    if job.cls != API_CLASS and keep > 0.0 and pool.allocated + job.gpus > api_ceiling(pool, keep):
        return PoolFit.API_RESERVE
    return PoolFit.FITS


def responsive(holder: BackendState, window_seconds: float) -> bool:
    return holder.up and holder.response_seconds <= window_seconds


def holder_answer(
    job: Job,
    holder: BackendState,
    pools: tuple[Pool, ...],
    window_seconds: float,
    competing: Quote | None,
    match_mode: bool,
    blocked: Blocker,
    at: float,
) -> HolderAnswer:
    """Evaluate one offer on the holder's own terms (and, in match mode, against ``competing``).
    ``at``, the offer's time, is what a decline at discretion is drawn on (with the job)."""
    if not holder.up:
        return HolderAnswer(Answer.LAPSED, LapseReason.BACKEND_DOWN, window_seconds)
    response = holder.response_seconds
    if response > window_seconds:
        return HolderAnswer(Answer.LAPSED, LapseReason.NO_ANSWER_WITHIN_WINDOW, window_seconds)
    if holder.cordoned:
        return HolderAnswer(Answer.DECLINED, DeclineReason.CORDONED, response)
    if job.gpu_type in holder.decline_gpu_types:
        return HolderAnswer(Answer.DECLINED, DeclineReason.GPU_TYPE_NOT_OFFERED, response)
    if holder.max_gang_gpus is not None and job.gpus > holder.max_gang_gpus:
        return HolderAnswer(Answer.DECLINED, DeclineReason.GANG_TOO_LARGE, response)
    keep = holder.api_reserve
    chosen: Pool | None = None
    api_reserve = reserved = False  # what kept a pool with room from fitting (flags: an Enum hashes in Python)
    gpus = job.gpus
    for pool in pools:
        if pool.capacity - pool.allocated < gpus:  # the common case on a busy holder, without a call
            continue
        fit = classify(pool, job, keep, blocked)
        if fit is PoolFit.FITS:
            chosen = pool
            break
        if fit is PoolFit.API_RESERVE:
            api_reserve = True
        elif fit is PoolFit.RESERVED:
            reserved = True
    if chosen is None:
        if api_reserve:
            return HolderAnswer(Answer.DECLINED, DeclineReason.RESERVED_FOR_API_SERVING, response)
        if reserved:
            return HolderAnswer(Answer.DECLINED, DeclineReason.RESERVED_FOR_QUEUED_JOB, response)
        return HolderAnswer(Answer.DECLINED, DeclineReason.NO_CAPACITY, response, None, 0.0)
    if holder.decline_fraction and holder.at_discretion(job.name, at):  # room, but it turns this offer down
        return HolderAnswer(Answer.DECLINED, DeclineReason.AT_DISCRETION, response)
    price = chosen.price
    if match_mode and competing is not None:
        if competing.start_seconds < holder.startup_seconds:
            return HolderAnswer(Answer.DECLINED, DeclineReason.CANNOT_MATCH_START, response)
        if competing.price < price:
            floor = holder.price_floors.get(job.gpu_type, 0.0)
            if competing.price < floor:
                return HolderAnswer(Answer.DECLINED, DeclineReason.BELOW_PRICE_FLOOR, response)
            return HolderAnswer(Answer.ACCEPTED, AcceptReason.MATCHED, response, chosen, competing.price)
    return HolderAnswer(Answer.ACCEPTED, AcceptReason.ACCEPTED, response, chosen, price)

"""The right-of-first-refusal gate: the holder's answer to one offer.

Modelled as a gate with a timeout (Pending -> Accepted | Declined | Lapsed), not as a
branch in a scorer: the holder answers on its own rules, and an answer that would arrive
after the contract's response window is a lapse whatever it would have said.
"""

from __future__ import annotations

from dataclasses import dataclass

from scheduler.inventory import Pool
from scheduler.model import Job
from scheduler.specs import HolderRules

ACCEPTED = "accepted"
DECLINED = "declined"
LAPSED = "lapsed"
NOT_OFFERED = "not-offered"


@dataclass(frozen=True, slots=True)
class Quote:
    """A non-holder's answer: it can host the gang in ``pool`` at ``price`` from ``start_seconds``."""

    pool: Pool
    price: float
    start_seconds: float
    locality: int

    @property
    def rank(self) -> tuple[float, float, int, int]:
        """Score key: earliest start, then lowest cost, then locality, then catalog order."""
        return (self.start_seconds, self.price, self.locality, self.pool.order)


@dataclass(frozen=True, slots=True)
class HolderAnswer:
    answer: str
    reason: str
    response_seconds: float
    pool: Pool | None = None
    price: float = 0.0


class BackendState:
    """Live, mutable view of one backend: up/down, response time, the holder's rules."""

    __slots__ = ("extra_latency_seconds", "latency_seconds", "name", "rules", "startup_seconds", "up")

    def __init__(
        self, name: str, up: bool, latency_seconds: float, startup_seconds: float, rules: HolderRules, extra: float = 0.0
    ) -> None:
        self.name = name
        self.up = up
        self.latency_seconds = latency_seconds
        self.extra_latency_seconds = extra
        self.startup_seconds = startup_seconds
        self.rules = rules

    @property
    def response_seconds(self) -> float:
        return self.latency_seconds + self.extra_latency_seconds


def holder_answer(
    job: Job,
    holder: BackendState,
    pools: tuple[Pool, ...],
    window_seconds: float,
    competing: Quote | None,
    match_mode: bool,
) -> HolderAnswer:
    """Evaluate one offer on the holder's own terms (and, in match mode, against ``competing``)."""
    if not holder.up:
        return HolderAnswer(LAPSED, "backend-down", window_seconds)
    response = holder.response_seconds
    if response > window_seconds:
        return HolderAnswer(LAPSED, "no-answer-within-window", window_seconds)
    rules = holder.rules
    if job.gpu_type in rules.declineGpuTypes:
        return HolderAnswer(DECLINED, "gpu-type-not-offered", response)
    if rules.maxGangGpus is not None and job.gpus > rules.maxGangGpus:
        return HolderAnswer(DECLINED, "gang-too-large", response)
    keep = 0.0 if job.cls == "api-serving" else rules.reserveForApiServingFraction
    chosen: Pool | None = None
    raw_fit = False
    for pool in pools:
        if pool.capacity - pool.allocated < job.gpus:
            continue
        raw_fit = True
        if keep == 0.0 or pool.allocated + job.gpus <= int(pool.capacity * (1.0 - keep)):
            chosen = pool
            break
    if chosen is None:
        return HolderAnswer(DECLINED, "reserved-for-api-serving" if raw_fit else "no-capacity", response)
    price = chosen.price
    if match_mode and competing is not None:
        if competing.start_seconds < holder.startup_seconds:
            return HolderAnswer(DECLINED, "cannot-match-start", response)
        if competing.price < price:
            floor = rules.priceFloorUsdPerGpuHour.get(job.gpu_type, 0.0)
            if competing.price < floor:
                return HolderAnswer(DECLINED, "below-price-floor", response)
            price = competing.price
    return HolderAnswer(ACCEPTED, "matched" if price != chosen.price else "accepted", response, chosen, price)

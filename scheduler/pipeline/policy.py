"""What-if knobs: which contract clauses the engine honours and how it ranks spill quotes.

Live scheduling always uses ``Policy.from_contract(contract)``: the holder first, the
contract's pins, and the contract's spill ranking. The simulator's baselines (``cheapest``
ignores the ROFR and the pins; ``azure-only`` pins every class to the holder) are built in
``scheduler/sim/policies.py`` from the same parts, so the core has no branch per baseline.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from scheduler.pipeline.quote import Quote
from scheduler.specs import Contract, Scoring

RankKey = tuple[float, ...]
Ranker = Callable[[Quote], RankKey]


def price_first(q: Quote) -> RankKey:
    """Lowest price, then earliest start, then the job's region preference, then catalog order."""
    return (q.price, q.start_seconds, q.locality, q.pool.order)


def start_first(q: Quote) -> RankKey:
    """Earliest start, then lowest price, then region preference, then catalog order."""
    return (q.start_seconds, q.price, q.locality, q.pool.order)


def weighted(price_weight: float, start_weight: float) -> Ranker:
    """``price_weight * USD/GPU-h + start_weight * start seconds`` (lower wins), ties as in price-first."""

    def rank(q: Quote) -> RankKey:
        return (price_weight * q.price + start_weight * q.start_seconds, q.price, q.start_seconds, q.locality, q.pool.order)

    return rank


def ranker(scoring: Scoring) -> Ranker:
    if scoring.spill == "start-first":
        return start_first
    if scoring.spill == "weighted":
        return weighted(scoring.weights.price, scoring.weights.startSeconds)
    return price_first


@dataclass(frozen=True)
class Policy:
    name: str
    rank: Ranker = price_first
    offer_holder_first: bool = True  # the ROFR gate; False only in what-if baselines
    pins: Mapping[str, tuple[str, ...]] | None = None  # None: the contract's pins

    @classmethod
    def from_contract(cls, contract: Contract) -> Policy:
        return cls("contract", ranker(contract.spec.scoring))

    def effective_pins(self, contract: Contract) -> dict[str, tuple[str, ...]]:
        if self.pins is not None:
            return dict(self.pins)
        return {c: tuple(clouds) for c, clouds in contract.spec.pins.items()}

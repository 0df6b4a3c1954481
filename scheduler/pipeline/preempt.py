"""Stage 7: which running jobs to evict, shared by preemption and capacity loss.

One eviction order for both: lowest priority first, then the youngest placement (it has
the least work to lose), then the latest submission, so two engines given the same
history always pick the same victims.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol, TypeVar


class Running(Protocol):
    """What victim selection needs to know about a running job."""

    @property
    def priority(self) -> int: ...
    @property
    def gpus(self) -> int: ...
    @property
    def placed_at(self) -> float: ...
    @property
    def seq(self) -> int: ...


R = TypeVar("R", bound=Running)


def eviction_order(running: Iterable[R]) -> list[R]:
    return sorted(running, key=lambda r: (r.priority, -r.placed_at, -r.seq))


def choose_victims(running: Iterable[R], need: int, eligible: Callable[[R], bool] = lambda r: True) -> list[R] | None:
    """The first eligible jobs in eviction order that free at least ``need`` GPUs, or None."""
    if need <= 0:
        return []
    victims: list[R] = []
    freed = 0
    for r in eviction_order(running):
        if not eligible(r):
            continue
        victims.append(r)
        freed += r.gpus
        if freed >= need:
            return victims
    return None

"""Stage 3: quotes from the non-holder clouds, asked only after the holder declined or lapsed.

Each allowed cloud answers with its first pool (in the job's region preference, then
catalog order) that can host the whole gang now and is not held for a higher-priority
queued job; a cloud that cannot says why.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import NamedTuple

from scheduler.backends import BackendState
from scheduler.inventory import Pool

Blocker = Callable[[Pool], str | None]


class Quote(NamedTuple):
    """A non-holder's answer: it can host the gang in ``pool`` at ``price`` from ``start_seconds``."""

    pool: Pool
    price: float
    start_seconds: float
    locality: int


def no_capacity(gpu_type: str, free: int, gpus: int) -> str:
    return f"no-capacity: {gpu_type} {free} free, {gpus} needed"


def collect_quotes(
    gpus: int,
    gpu_type: str,
    others: tuple[tuple[str, tuple[Pool, ...]], ...],
    backends: Mapping[str, BackendState],
    locality: Mapping[str, int],
    blocked: Blocker,
    explain: Callable[[str, int, int], str] = no_capacity,
) -> tuple[list[Quote], list[tuple[str, str]]]:
    quotes: list[Quote] = []
    dropped: list[tuple[str, str]] = []
    for cloud, pools in others:
        backend = backends[cloud]
        if not backend.up:
            dropped.append((cloud, "backend-down"))
            continue
        if backend.cordoned:
            dropped.append((cloud, "cordoned"))
            continue
        best_free = 0
        held: str | None = None
        for pool in pools:
            free = pool.capacity - pool.allocated
            if free >= gpus:
                why = blocked(pool)
                if why is None:
                    quotes.append(Quote(pool, pool.price, backend.startup_seconds, locality.get(pool.region, 0)))
                    break
                held = held or why
            elif free > best_free:
                best_free = free
        else:
            dropped.append((cloud, held or explain(gpu_type, best_free, gpus)))
    return quotes, dropped

"""When a blocked gang could start on a pool, from the expected ends of the work running there.

The reservation this yields is what keeps a large, high-priority gang from starving behind
a stream of small jobs (Slurm-style backfill): until ``start_at`` only work expected to end
by then may start on the reserved pool.
"""

from __future__ import annotations

from collections.abc import Iterable


def earliest_start(free: int, capacity: int, gpus: int, ends: Iterable[tuple[float, int, int]], now: float) -> float | None:
    """First time at which ``gpus`` fit, given ``free`` now and the running work's
    (end time, GPUs, ...) in end order (the engine keeps each pool's sorted as work starts and ends).

    ``None`` when the pool can never hold the gang at its current size. An end in the past
    (overdue work) stays in the past, so nothing backfills until that work really ends, and
    the value does not drift with the clock (a reservation is re-recorded only when the
    work on its pool changes).
    """
    if gpus > capacity:
        return None
    if free >= gpus:
        return now
    acc = free
    for end, n, _ in ends:
        acc += n
        if acc >= gpus:
            return end
    return None


def may_backfill(now: float, duration_seconds: float, start_at: float) -> bool:
    """A lower-priority job may use a reserved pool only if it is expected to end before the reservation starts."""
    return now + duration_seconds <= start_at

"""When GPUs of one pool are free, now and later: the arithmetic behind planned starts.

A pool's *profile* is its free GPUs over time: what is free now, plus the GPUs of each
running job from its expected end on. *Claims* are the planned starts of queued jobs on the
pool: (start, end, GPUs) intervals taken out of the profile. Conservative backfill asks one
question of it: does this gang fit from ``start`` for its whole duration without taking a
GPU that a claim needs? Plain arithmetic on sorted lists; no engine state.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from itertools import accumulate
from typing import NamedTuple

#: An overdue job (running past its expected end) is expected to end within this step;
#: the expectation moves one step later each time it passes (docs/queueing.md, "Overruns").
OVERRUN_STEP_SECONDS = 600.0


class Claim(NamedTuple):
    """GPUs a planned start holds on a pool from ``start`` to ``end``."""

    start: float
    end: float
    gpus: int
    job: str


def expected_end(ends_at: float, now: float) -> float:
    """The running job's expected end as seen at ``now``: its estimate, or for an overdue job the
    estimate extended by whole overrun steps until it lies in the future."""
    if ends_at > now:
        return ends_at
    steps = int((now - ends_at) // OVERRUN_STEP_SECONDS) + 1
    return ends_at + steps * OVERRUN_STEP_SECONDS


class Profile:
    """Free GPUs of one pool over time, from ``free_now`` and the running work's expected ends."""

    __slots__ = ("_alone", "capacity", "ends", "free_now", "times", "totals")

    def __init__(self, free_now: int, capacity: int, ends: Iterable[tuple[float, int]]) -> None:
        ordered = sorted(ends)
        self.ends = ordered
        self.free_now = free_now  # may be negative under an API-serving ceiling
        self.capacity = capacity  # the most this job may ever use here (the pool's size, or its API ceiling)
        self.times = [e for e, _ in ordered]
        self.totals = list(accumulate(n for _, n in ordered))  # GPUs freed by each time
        self._alone: dict[int, float | None] = {}  # gang size -> earliest start with no planned starts here

    def with_running(self, end: float, gpus: int) -> Profile:
        """The profile once another job of ``gpus`` runs here from now until ``end``."""
        return Profile(self.free_now - gpus, self.capacity, [*self.ends, (end, gpus)])

    def free_at(self, t: float) -> int:
        i = bisect_right(self.times, t)
        return self.free_now + (self.totals[i - 1] if i else 0)

    def fits(self, claims: Sequence[Claim], gpus: int, start: float, duration: float) -> bool:
        """Whether ``gpus`` fit from ``start`` for ``duration`` seconds without taking a claimed GPU.
        Free GPUs only grow between claim starts, so ``start`` and each claim start inside the
        window are the only points to check."""
        stop = start + duration
        for t in (start, *(c.start for c in claims if start < c.start < stop)):
            held = sum(c.gpus for c in claims if c.start <= t < c.end)
            if self.free_at(t) - held < gpus:
                return False
        return True

    def earliest_start(self, claims: Sequence[Claim], gpus: int, duration: float, now: float) -> float | None:
        """The first time from ``now`` at which ``gpus`` fit for ``duration`` around ``claims``;
        None when the pool at its current size can never hold the gang."""
        if gpus > self.capacity:
            return None
        if not claims:  # the common case: the first time enough running work has ended
            if self.free_now >= gpus:
                return now
            start = self._alone.get(gpus, now)  # ``now`` stands for "not known yet": a start "now" is answered above
            if start == now:
                i = bisect_left(self.totals, gpus - self.free_now)
                start = self._alone[gpus] = self.times[i] if i < len(self.totals) else None
            return start
        candidates = sorted({now, *(t for t in self.times if t > now), *(c.end for c in claims if c.end > now)})
        for t in candidates:
            if self.fits(claims, gpus, t, duration):
                return t
        return None

"""Notes of the last pass over a GPU type, so the next pass at the same instant revisits only
what changed (incremental planning; docs/queueing.md, "How a pass is computed").

A queued job's visit reads the contract terms and backends, the time, the planning depth,
its candidate pools (their work and size: ``State.changed_pools`` lists those changed since
the last pass over the type began, and each pass empties it as it begins) and the planned
starts made ahead of it in the pass. The next pass at the same instant, under the same terms
and depth, that reaches the job having made exactly the last pass's first planned starts (same
jobs, pools and times, in order) and as many of them as the job saw then, sees everything
the job saw then except the candidate pools that changed since the last pass began or
earlier in this pass. Only those need a fresh look: the rest of the outcome is in the note.

Requests at one instant are common (a batch, a burst of ends, a fault and the re-placements
it causes): on ``benchmarks/engine.py`` this takes a pass from looking at every candidate pool
of every job it visits to the one or two pools a release changed, 1.16-1.21x decisions per
CPU-second at the 10k backlog (measured against the same tree without notes, in one sitting). The reference planner
(tests/reference.py) keeps no notes; the differential test holds the two to one event stream.

A pass over a type with nothing waiting is skipped outright (``planner.walk``): it would visit
no one and leave no notes. A replay below saturation is mostly such passes (one per arrival
and one per end): with the log of changed pools above instead of a snapshot of every pool's
version per pass, the 100k-job synthetic replay of benchmarks/simulate.py takes 6.1-6.8 s of
CPU instead of 7.0-7.3 s (four interleaved pairs: 1.04-1.16x, 1.14x on the fastest of each).
"""

from __future__ import annotations

from typing import NamedTuple

from scheduler.inventory import Pool

PoolKey = tuple[str, str, str]
#: A pool where a job could be planned: (start, rank, pool order, pool, the job's API keep there).
#: Tuples compare in preference order: earliest start, the holder first, then catalog order.
Entry = tuple[float, int, int, Pool, float]


class Note(NamedTuple):
    """A queued job's visit that made no placement attempt (its cheap pre-check failed)."""

    ahead: int  # planned starts made ahead of it in the pass
    entries: list[Entry] | None  # where it could be planned then; None when the depth was reached


class WalkRecord:
    """One pass over one GPU type: the context it is valid in, what it saw and what it planned."""

    __slots__ = ("context", "notes", "plans")

    def __init__(self, context: tuple[float, int, int]) -> None:
        self.context = context  # (time, State.terms_version, depth)
        self.notes: dict[str, Note] = {}
        self.plans: list[tuple[str, PoolKey, float]] = []  # planned starts in the order made: (job, pool, start)

"""The collector's settings for an mcsched process, applied by its entry points only.

Both kinds of mcsched process build large, long-lived, acyclic state: the ``mcsched``
command (100k-job files) and the scheduler actor (the engine's books, the ledger's chain
index, the invariant checker's model of every job). With the default thresholds a young
collection starts every 700 allocations and the heap's growth starts full collections that
walk all of that state to find next to nothing. Freezing what start-up made and raising the
thresholds keeps the collector on, for the cycles it exists for, at a fraction of the cost.
This is a process's choice: only entry points call ``tune_gc`` (``scheduler/cli``'s ``main``,
the actor's shell in ``runtime/actor.py``, and the soak benchmark, which runs the actor's body).
"""

from __future__ import annotations

import gc

GC_THRESHOLDS = (100_000, 50, 100)


def tune_gc() -> None:
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)

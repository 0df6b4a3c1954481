"""Pausing Python's cyclic garbage collector around bulk work.

Loading 100k documents, placing a batch of 100k jobs, replaying a million-job trace and
verifying a million-record ledger each make millions of objects next to a large, acyclic,
long-lived state (job records, pools, the checker's books). Every few hundred allocations
the collector would scan young objects, and every so often the whole heap, to find next to
nothing: 20-30% of such runs. Reference counting still frees everything; the collector is
restored (if it was on) when the work ends.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def no_gc() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        # What the work left alive goes to the oldest generation in one step (``freeze`` +
        # ``unfreeze``: two list splices), as collections would have promoted it; otherwise
        # the first allocation after the pause scans all of it as young objects, to find
        # nothing. Cyclic garbage among it is still found, by the next full collection.
        gc.freeze()
        gc.unfreeze()
        if enabled:
            gc.enable()

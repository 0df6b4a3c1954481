"""The real clock, for adapters only (the engine gets it injected)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator


class WallClock:
    """``time.time()`` that never runs backwards: the system clock may step back (NTP), but the
    ledger's records must keep time order (``audit verify`` fails a ledger whose time does not)."""

    def __init__(self) -> None:
        self._last = 0.0
        self._held: float | None = None
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            if self._held is not None:
                return self._held
            self._last = max(self._last, time.time())
            return self._last

    @contextlib.contextmanager
    def held(self) -> Iterator[float]:
        """One instant for every reading inside: a change made of several events (a pool shrunk,
        its work evicted) is recorded at one time, as the simulator's clock records it.

        Why: ``Engine.set_capacity`` reads the clock once for its ``CapacityChanged`` and again
        for each eviction it emits first, so with a running clock the ledger got a record older
        than the one before it, which ``audit verify`` rightly fails ("time runs backwards")."""
        with self._lock:
            self._last = max(self._last, time.time())
            self._held = self._last
        try:
            yield self._last
        finally:
            with self._lock:
                self._held = None

"""The real clock, for adapters only (the engine gets it injected)."""

from __future__ import annotations

import threading
import time


class WallClock:
    """``time.time()`` that never runs backwards: the system clock may step back (NTP), but the
    ledger's records must keep time order (``audit verify`` fails a ledger whose time does not)."""

    def __init__(self) -> None:
        self._last = 0.0
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            self._last = max(self._last, time.time())
            return self._last

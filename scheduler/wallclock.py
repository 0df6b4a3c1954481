"""The real clock, for adapters only (the engine gets it injected)."""

from __future__ import annotations

import time


class WallClock:
    def now(self) -> float:
        return time.time()

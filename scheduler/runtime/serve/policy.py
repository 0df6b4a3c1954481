"""When to ask the scheduler for one more replica, and when to give one back (pure, clocked).

The rule is Ray Serve's (desired replicas = ceil(ongoing requests / target per replica),
clamped to ``[min, max]``), but it only *proposes* a step: scaling up is a placement request
to the engine, one at a time, and scaling down happens only after the load has stayed
below the current size for ``scaleDownDelaySeconds``, one replica per cool-down.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from enum import IntEnum


class Step(IntEnum):
    DOWN = -1
    HOLD = 0
    UP = 1


@dataclass(frozen=True)
class ScalingPolicy:
    min_replicas: int
    max_replicas: int
    target_ongoing: float
    down_delay_seconds: float
    look_back_seconds: float = 2.0


class Autoscaler:
    """Feed it the total of in-flight requests; ask it for a step."""

    def __init__(self, policy: ScalingPolicy) -> None:
        self.policy = policy
        self._samples: deque[tuple[float, float]] = deque()
        self._low_since: float | None = None

    def observe(self, now: float, total_ongoing: float) -> None:
        self._samples.append((now, total_ongoing))
        while self._samples and self._samples[0][0] < now - self.policy.look_back_seconds:
            self._samples.popleft()

    def load(self) -> float:
        """Mean in-flight requests over the look-back window."""
        return sum(v for _, v in self._samples) / len(self._samples) if self._samples else 0.0

    def desired(self) -> int:
        p = self.policy
        return min(max(math.ceil(self.load() / p.target_ongoing - 1e-9), p.min_replicas), p.max_replicas)

    def decide(self, now: float, ready: int, pending: int) -> Step:
        """``ready``: replicas answering; ``pending``: asked for but not answering yet."""
        p = self.policy
        want = self.desired()
        if pending == 0 and (ready < p.min_replicas or (want > ready and ready < p.max_replicas)):
            self._low_since = None
            return Step.UP
        if want >= ready or ready <= p.min_replicas or pending:
            self._low_since = None
            return Step.HOLD
        if self._low_since is None:
            self._low_since = now
        if now - self._low_since >= p.down_delay_seconds:
            self._low_since = now  # the next step down needs another full cool-down
            return Step.DOWN
        return Step.HOLD

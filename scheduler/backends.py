"""The live state of each mock cloud backend: up or down, how fast it answers, its holder rules."""

from __future__ import annotations

from scheduler.specs import HolderRules


class BackendState:
    """Mutable view of one backend; changed only by the engine applying ``backend-changed`` events."""

    __slots__ = ("extra_latency_seconds", "latency_seconds", "name", "rules", "startup_seconds", "up")

    def __init__(
        self, name: str, up: bool, latency_seconds: float, startup_seconds: float, rules: HolderRules, extra: float = 0.0
    ) -> None:
        self.name = name
        self.up = up
        self.latency_seconds = latency_seconds
        self.extra_latency_seconds = extra
        self.startup_seconds = startup_seconds
        self.rules = rules

    @property
    def response_seconds(self) -> float:
        """Time to answer an offer: the catalog's latency plus any injected slowness."""
        return self.latency_seconds + self.extra_latency_seconds

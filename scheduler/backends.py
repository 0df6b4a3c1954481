"""The live state of each mock cloud backend: up or down, how fast it answers, its holder rules."""

from __future__ import annotations

from scheduler.specs import HolderRules, declines_at_discretion


class BackendState:
    """Mutable view of one backend; changed only by the engine applying ``backend-changed`` events."""

    __slots__ = (
        "api_reserve",
        "cordoned",
        "decline_fraction",
        "decline_gpu_types",
        "decline_seed",
        "extra_latency_seconds",
        "latency_seconds",
        "max_gang_gpus",
        "name",
        "price_floors",
        "rules",
        "startup_seconds",
        "up",
    )

    def __init__(
        self, name: str, up: bool, latency_seconds: float, startup_seconds: float, rules: HolderRules, extra: float = 0.0
    ) -> None:
        self.name = name
        self.up = up
        self.cordoned = False  # closed to new placements; its running work stays (``Cordoned``)
        self.latency_seconds = latency_seconds
        self.extra_latency_seconds = extra
        self.startup_seconds = startup_seconds
        self.rules = rules
        # The holder rules again as plain fields: read at every offer, where a pydantic model's
        # attribute read (its __getattr__ hook, a long MRO) costs more than the check itself.
        self.decline_gpu_types = frozenset(rules.declineGpuTypes)
        self.max_gang_gpus = rules.maxGangGpus
        self.api_reserve = rules.reserveForApiServingFraction
        self.price_floors = dict(rules.priceFloorUsdPerGpuHour)
        self.decline_fraction = rules.declineFraction
        self.decline_seed = rules.declineSeed

    def declines(self, gpu_type: str, gpus: int) -> bool:
        """Whether the holder refuses this GPU type or gang size whatever is free (its rules, or a cordon)."""
        return self.cordoned or gpu_type in self.decline_gpu_types or (self.max_gang_gpus is not None and gpus > self.max_gang_gpus)

    @property
    def accepting(self) -> bool:
        """Whether new work may be placed here: up and not cordoned."""
        return self.up and not self.cordoned

    def at_discretion(self, job: str, at: float) -> bool:
        """Whether the holder turns down this offer it has room for (``holderRules.declineFraction``)."""
        return declines_at_discretion(self.decline_fraction, self.decline_seed, job, at)

    @property
    def response_seconds(self) -> float:
        """Time to answer an offer: the catalog's latency plus any injected slowness."""
        return self.latency_seconds + self.extra_latency_seconds

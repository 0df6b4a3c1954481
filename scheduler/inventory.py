"""GPU pools (one per cloud, region and GPU type) and the atomic gang reservation on them."""

from __future__ import annotations

from dataclasses import dataclass

from scheduler.specs import CloudCatalog


class Pool:
    """Mutable capacity counter; the only place GPUs are reserved and freed."""

    __slots__ = ("allocated", "capacity", "ceiling", "cloud", "gpu_type", "jurisdiction", "key", "order", "price", "region")

    def __init__(
        self, cloud: str, region: str, gpu_type: str, jurisdiction: str, capacity: int, price: float, order: int
    ) -> None:
        self.cloud = cloud
        self.region = region
        self.gpu_type = gpu_type
        self.jurisdiction = jurisdiction
        self.capacity = capacity
        self.ceiling = capacity  # the catalog's size: what admission may count on (capacity varies below it)
        self.allocated = 0
        self.price = price
        self.order = order
        self.key = (cloud, region, gpu_type)

    @property
    def free(self) -> int:
        return self.capacity - self.allocated

    def take(self, gpus: int) -> None:
        """All or nothing: a gang gets every GPU in this pool (the decision checked it fits)."""
        if self.capacity - self.allocated < gpus:
            raise AssertionError(f"{gpus} GPUs do not fit {self!r}")
        self.allocated += gpus

    def release(self, gpus: int) -> None:
        if gpus > self.allocated:
            raise AssertionError(f"release of {gpus} GPUs exceeds {self.allocated} allocated in {self.key}")
        self.allocated -= gpus

    def __repr__(self) -> str:
        return f"Pool({self.cloud}/{self.region} {self.gpu_type} {self.allocated}/{self.capacity})"


@dataclass(frozen=True, slots=True)
class PoolUsage:
    cloud: str
    region: str
    gpu_type: str
    capacity: int
    allocated: int
    price: float


class Inventory:
    """All pools of a catalog, indexed for the lookups the pipeline makes."""

    def __init__(self, catalog: CloudCatalog) -> None:
        self.pools: dict[tuple[str, str, str], Pool] = {}
        self.by_cloud: dict[str, list[Pool]] = {}
        self.by_type: dict[str, list[Pool]] = {}
        order = 0
        for b in catalog.spec.backends:
            self.by_cloud[b.name] = []
            for r in b.regions:
                for gpu_type, count in r.gpus.items():
                    pool = Pool(b.name, r.name, gpu_type, r.jurisdiction, count, b.prices[gpu_type], order)
                    order += 1
                    self.pools[pool.key] = pool
                    self.by_cloud[b.name].append(pool)
                    self.by_type.setdefault(gpu_type, []).append(pool)

    def pool(self, cloud: str, region: str, gpu_type: str) -> Pool:
        return self.pools[(cloud, region, gpu_type)]

    def usage(self) -> list[PoolUsage]:
        return [PoolUsage(p.cloud, p.region, p.gpu_type, p.capacity, p.allocated, p.price) for p in self.pools.values()]

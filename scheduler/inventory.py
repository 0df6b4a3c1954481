"""GPU pools (one per cloud, region and GPU type) and the atomic gang reservation on them."""

from __future__ import annotations

from dataclasses import dataclass

from scheduler.specs import CloudCatalog


class Pool:
    """Mutable capacity counter; the only place GPUs are reserved and freed."""

    __slots__ = ("allocated", "capacity", "cloud", "gpu_type", "jurisdiction", "order", "price", "region")

    def __init__(
        self, cloud: str, region: str, gpu_type: str, jurisdiction: str, capacity: int, price: float, order: int
    ) -> None:
        self.cloud = cloud
        self.region = region
        self.gpu_type = gpu_type
        self.jurisdiction = jurisdiction
        self.capacity = capacity
        self.allocated = 0
        self.price = price
        self.order = order

    @property
    def free(self) -> int:
        return self.capacity - self.allocated

    def reserve(self, gpus: int) -> bool:
        """All or nothing: a gang gets every GPU in this pool or none."""
        if self.capacity - self.allocated < gpus:
            return False
        self.allocated += gpus
        return True

    def release(self, gpus: int) -> None:
        if gpus > self.allocated:
            raise AssertionError(f"release of {gpus} GPUs exceeds {self.allocated} allocated in {self.key}")
        self.allocated -= gpus

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.cloud, self.region, self.gpu_type)

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

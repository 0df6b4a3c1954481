"""A cloud's capacity is what its live Ray nodes advertise (pure: no Ray).

Ray sees a node lost first (the GCS's health check, or the node unregistering); the scheduler
notices on its next reconcile tick. ``plan_nodes`` compares the books (each pool's capacity,
each cloud's up state) with the GCS node table and says what to change:

1. managed clouds: a cloud is *node-managed* once any Ray node labelled ``cloud=<name>`` has
   been seen (alive or dead). A cluster whose head carries every pool (``--nodes single``, or
   a user's own cluster without labels) has none, and nothing here ever changes its books;
2. Ray's capacity of a managed cloud's pool: the sum of that pool's resource over its cloud's
   *alive* nodes, at most the catalog's count (the pool's ceiling);
3. drift: the books' capacity minus Ray's, per pool (exported, 0 at rest);
4. repairs: a pool whose books differ from Ray gets Ray's capacity (``Engine.set_capacity``:
   a shrink evicts the pool's work, which is placed again through the ROFR gate, the holder
   first); a cloud with no alive node is down, one with any alive node is up
   (``Engine.set_backend``). A cordon (``mcsched drain``) is the engine's own, not a capacity.

The order of repairs matters and is the caller's (``SchedulerService._apply_nodes``): a cloud
going down is marked down *before* its pools shrink (so evicted work is not offered back to
it), a cloud coming back gets its capacity *before* it is marked up (so the queue sees the
whole cloud at once).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from scheduler.runtime.nodes import cloud_of
from scheduler.runtime.resources import pool_resource

PoolKey = tuple[str, str, str]  # (cloud, region, gpu_type)


@dataclass(frozen=True, slots=True)
class RayNode:
    """One row of the GCS node table (``ray.nodes()``): its total resources, not what is free,
    and its host's name (on KubeRay, its pod's name)."""

    node_id: str
    alive: bool
    labels: Mapping[str, str]
    resources: Mapping[str, float]
    hostname: str = ""


@dataclass(frozen=True, slots=True)
class PoolBooks:
    """One pool as the engine's books have it."""

    capacity: int
    ceiling: int  # the catalog's count
    allocated: int = 0


@dataclass(frozen=True)
class NodePlan:
    drift: dict[PoolKey, int]  # books' capacity minus Ray's, managed pools only
    capacity: dict[PoolKey, int] = field(default_factory=dict)  # pools to set to this capacity
    up: dict[str, bool] = field(default_factory=dict)  # clouds whose up state must change
    nodes: dict[tuple[str, str], int] = field(default_factory=dict)  # (cloud, alive|dead) -> node count
    managed: frozenset[str] = frozenset()

    @property
    def at_rest(self) -> bool:
        return not self.capacity and not self.up and not any(self.drift.values())


def plan_nodes(
    pools: Mapping[PoolKey, PoolBooks],
    backends_up: Mapping[str, bool],
    nodes: Iterable[RayNode],
) -> NodePlan:
    """Numbered as in the module's docstring."""
    nodes = list(nodes)
    # 1. managed clouds, and the node counts by state
    counts: dict[tuple[str, str], int] = {}  # (cloud, alive|dead)
    managed: set[str] = set()
    alive_clouds: set[str] = set()
    for n in nodes:
        cloud = cloud_of(n.labels)
        if cloud is None or cloud not in backends_up:
            continue
        managed.add(cloud)
        state = (cloud, "alive" if n.alive else "dead")
        counts[state] = counts.get(state, 0) + 1
        if n.alive:
            alive_clouds.add(cloud)
    # 2. Ray's capacity per managed pool
    by_resource = {pool_resource(*key): key for key in pools if key[0] in managed}
    ray_capacity: dict[PoolKey, float] = dict.fromkeys(by_resource.values(), 0.0)
    for n in nodes:
        if not n.alive or cloud_of(n.labels) not in managed:
            continue
        for resource, amount in n.resources.items():
            pool = by_resource.get(resource)
            if pool is not None and pool[0] == cloud_of(n.labels):
                ray_capacity[pool] += amount
    drift: dict[PoolKey, int] = {}
    capacity: dict[PoolKey, int] = {}
    for key, amount in ray_capacity.items():
        books = pools[key]
        target = min(int(amount), books.ceiling)
        # 3. drift
        drift[key] = books.capacity - target
        # 4. repairs
        if books.capacity != target:
            capacity[key] = target
    up = {cloud: cloud in alive_clouds for cloud in managed if backends_up[cloud] != (cloud in alive_clouds)}
    return NodePlan(drift, capacity, up, counts, frozenset(managed))

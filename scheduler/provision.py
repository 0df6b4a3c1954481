"""Buying capacity in blocks: which block to buy for which queued job, which bought node to release (pure).

A pool bought in blocks (``specs.CapacityBlocks``) has its cloud's node with the initial
blocks and, beyond them, one Ray worker node per block bought. The catalog's count (every
block bought) is what admission checks; the books' capacity is what the live nodes advertise
(``runtime/nodewatch.py``). This module decides, from the books alone:

1. **purchases** (``plan_purchases``), over the queued jobs in queue order. A job that could
   start on a pool it may use now, or on the GPUs a purchase in flight will bring, buys
   nothing (it waits for something else, or for that purchase: never two purchases for one
   need). Otherwise it buys the fewest blocks that make one of its pools big enough, chosen in
   ROFR order: the holder's growable pools first (when the holder may take it), then the
   other clouds' growable pools ranked by the contract's spill ranking on quotes that include
   the provisioning time (start = the cloud's startup + the block's provisioning seconds). A
   pool is skipped when it cannot grow enough within ``max`` blocks, when its cloud is down,
   or when the job's planned start comes no later than the block would be ready (waiting is
   then as quick and costs nothing). The job is placed once the node joined, by the engine,
   through the ROFR gate like any other.
2. **releases** (``plan_releases``): a bought node is idle while Ray has no work on it and its
   pool's allocation would still fit without its block; one idle for its pool's
   ``idleReleaseSeconds`` is released. Only bought nodes are ever released, so a pool never
   goes below its initial blocks.

The runtime (``runtime/provisioner.py``) feeds this from the engine and the GCS node table,
starts and stops the nodes, and records the purchases, joins and releases as events.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from scheduler.inventory import Pool
from scheduler.pipeline.policy import Ranker
from scheduler.pipeline.quote import Quote

PoolKey = tuple[str, str, str]  # (cloud, region, gpu_type)


@dataclass(frozen=True, slots=True)
class Group:
    """A pool bought in blocks, as it stands now (the catalog's terms and the blocks bought so far)."""

    key: PoolKey
    block_gpus: int
    initial: int
    max: int
    provisioning_seconds: float
    idle_release_seconds: float
    bought: int = 0  # bought blocks whose node has joined
    in_flight: int = 0  # bought blocks whose node has not joined yet

    @property
    def blocks(self) -> int:
        return self.initial + self.bought + self.in_flight


@dataclass(frozen=True, slots=True)
class PoolNow:
    """A pool in the books now."""

    capacity: int
    allocated: int
    up: bool = True  # its cloud is up

    @property
    def free(self) -> int:
        return max(self.capacity - self.allocated, 0)


@dataclass(frozen=True, slots=True)
class Offer:
    """A pool a job may use (its admission candidates): the holder's, or another cloud's."""

    pool: Pool
    startup_seconds: float
    locality: int = 0
    holder: bool = False


@dataclass(frozen=True, slots=True)
class Need:
    """A queued job: its gang, the pools it may use (holder's first) and its planned start, if any."""

    job: str
    gpus: int
    offers: tuple[Offer, ...]
    planned_start: float | None = None


@dataclass(frozen=True, slots=True)
class Purchase:
    """``blocks`` blocks of ``key`` bought for ``job`` on a quote: ``price`` USD/GPU-h from ``start_seconds``."""

    job: str
    key: PoolKey
    blocks: int
    block_gpus: int
    price: float
    start_seconds: float
    ready_at: float

    def text(self, now: float) -> str:
        """The job's status line while the purchase is in flight."""
        left = max(self.ready_at - now, 0.0)
        plural = "block" if self.blocks == 1 else "blocks"
        return f"buying {self.blocks} {plural} of {'/'.join(self.key)}, ready in ~{left:.0f} s"


def plan_purchases(
    needs: Iterable[Need],
    pools: Mapping[PoolKey, PoolNow],
    groups: Mapping[PoolKey, Group],
    now: float,
    rank: Ranker,
) -> list[Purchase]:
    """Numbered 1 in the module's docstring. ``needs`` in queue order; ``groups`` the growable pools."""
    free = {k: p.free for k, p in pools.items()}
    coming = {k: g.in_flight * g.block_gpus for k, g in groups.items()}  # GPUs bought, not joined yet
    blocks = {k: g.blocks for k, g in groups.items()}
    out: list[Purchase] = []
    for need in needs:
        usable = [o for o in need.offers if (p := pools.get(o.pool.key)) is not None and p.up]
        now_fit = next((o.pool.key for o in usable if free[o.pool.key] >= need.gpus), None)
        if now_fit is not None:  # it can start now: it waits for something else
            free[now_fit] -= need.gpus
            continue
        soon = next((o.pool.key for o in usable if o.pool.key in coming and free[o.pool.key] + coming[o.pool.key] >= need.gpus), None)
        if soon is not None:  # a purchase in flight covers it: never buy twice
            _claim(free, coming, soon, need.gpus)
            continue
        choice = _choose(need, usable, free, coming, blocks, groups, now, rank)
        if choice is None:
            continue
        offer, n = choice
        key, g = offer.pool.key, groups[offer.pool.key]
        blocks[key] += n
        coming[key] += n * g.block_gpus
        _claim(free, coming, key, need.gpus)
        start = offer.startup_seconds + g.provisioning_seconds
        out.append(Purchase(need.job, key, n, g.block_gpus, offer.pool.price, start, now + g.provisioning_seconds))
    return out


def _claim(free: dict[PoolKey, int], coming: dict[PoolKey, int], key: PoolKey, gpus: int) -> None:
    """``gpus`` of ``key`` spoken for: the free ones first, then those in flight."""
    take = min(free[key], gpus)
    free[key] -= take
    coming[key] -= gpus - take


def _choose(
    need: Need,
    usable: list[Offer],
    free: Mapping[PoolKey, int],
    coming: Mapping[PoolKey, int],
    blocks: Mapping[PoolKey, int],
    groups: Mapping[PoolKey, Group],
    now: float,
    rank: Ranker,
) -> tuple[Offer, int] | None:
    """The pool to grow for ``need`` and by how many blocks: the holder's first, then the best-ranked quote."""
    feasible: list[tuple[Offer, int]] = []
    for o in usable:
        g = groups.get(o.pool.key)
        if g is None:
            continue
        if need.planned_start is not None and need.planned_start <= now + g.provisioning_seconds:
            continue  # its planned start is as soon: waiting costs nothing
        short = need.gpus - free[o.pool.key] - coming[o.pool.key]
        n = max(math.ceil(short / g.block_gpus), 1)
        if blocks[o.pool.key] + n > g.max:
            continue
        feasible.append((o, n))
    holder = [f for f in feasible if f[0].holder]
    if holder:
        return holder[0]
    if not feasible:
        return None

    def key(f: tuple[Offer, int]) -> tuple[float, ...]:
        o = f[0]
        return rank(Quote(o.pool, o.pool.price, o.startup_seconds + groups[o.pool.key].provisioning_seconds, o.locality))

    return min(feasible, key=key)


@dataclass(frozen=True, slots=True)
class BoughtNode:
    """A bought block's node that has joined."""

    name: str
    key: PoolKey
    gpus: int
    busy: bool  # Ray has work on it (a placement group's bundle)


def plan_releases(
    nodes: Iterable[BoughtNode],
    pools: Mapping[PoolKey, PoolNow],
    groups: Mapping[PoolKey, Group],
    idle_since: Mapping[str, float],
    now: float,
) -> tuple[list[str], dict[str, float]]:
    """Numbered 2 in the module's docstring: the nodes to release now, and each idle node's idle-since time."""
    shrunk: dict[PoolKey, int] = {}  # GPUs this pass already releases, per pool
    release: list[str] = []
    idle: dict[str, float] = {}
    for n in nodes:
        pool, g = pools.get(n.key), groups.get(n.key)
        if pool is None or g is None:
            continue
        left = pool.capacity - shrunk.get(n.key, 0) - n.gpus
        if n.busy or pool.allocated > left:
            continue  # work on it, or its pool's work would not fit without it
        since = idle[n.name] = idle_since.get(n.name, now)
        if now - since >= g.idle_release_seconds:
            release.append(n.name)
            shrunk[n.key] = shrunk.get(n.key, 0) + n.gpus
            del idle[n.name]
    return release, idle

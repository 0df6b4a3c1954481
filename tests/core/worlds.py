"""Random worlds for the differential tests: a small catalog, a contract and a stream of requests.

Plain ``random.Random(seed)`` (not hypothesis): ten thousand worlds must run in minutes, and
a failure names its seed, which replays it exactly (``run_world(seed)``).
"""

from __future__ import annotations

import contextlib
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from scheduler.clock import ManualClock
from scheduler.engine import Engine
from scheduler.errors import AdmissionError
from scheduler.events import Event, event_from_record
from scheduler.model import Job
from scheduler.specs import CloudCatalog, Contract
from tests.builders import a_contract

CLOUDS = ("azure", "oci", "aws")
SKUS = ("H100", "H200")


def a_world_catalog(rng: random.Random) -> CloudCatalog:
    backends = []
    for cloud in CLOUDS[: rng.randint(2, 3)]:
        regions = []
        for r in range(rng.randint(1, 2)):
            gpus = {s: rng.choice([0, 4, 8, 16, 24]) for s in SKUS if rng.random() < 0.8} or {"H100": 8}
            regions.append({"name": f"{cloud}-r{r}", "jurisdiction": rng.choice(["US", "US", "EU"]), "gpus": gpus})
        backends.append(
            {
                "name": cloud,
                "latencySeconds": rng.choice([0.5, 5.0, 50.0]) if cloud == "azure" else 1.0,
                "startupSeconds": rng.choice([0.0, 60.0]),
                "prices": {s: rng.choice([2.0, 3.0, 4.0]) for s in SKUS},
                "regions": regions,
                "holderRules": {
                    "reserveForApiServingFraction": rng.choice([0.0, 0.0, 0.25]),
                    "priceFloorUsdPerGpuHour": {"H100": rng.choice([0.0, 2.5])},
                    "declineGpuTypes": rng.choice([[], [], ["H200"]]),
                    **({"maxGangGpus": 8} if rng.random() < 0.2 else {}),
                    # a holder that declines a share of the offers it has room for (at discretion)
                    **({"declineFraction": rng.choice([0.2, 0.5]), "declineSeed": rng.randrange(100)} if rng.random() < 0.15 else {}),
                },
            }
        )
    return CloudCatalog.model_validate(
        {"apiVersion": "mcsched.io/v1", "kind": "CloudCatalog", "metadata": {"name": "w"}, "spec": {"backends": backends}}
    )


def a_world_contract(rng: random.Random) -> Contract:
    pins: dict[str, list[str]] = {"api-serving": ["azure"]}
    if rng.random() < 0.3:
        pins["inference"] = ["azure", "oci"]
    return a_contract(
        mode=rng.choice(["first-look", "first-look", "match"]),
        window=rng.choice([1.0, 10.0, 30.0]),
        on_lapse=rng.choice(["deemed-declined", "queue"]),
        pins=pins,
        preemption=rng.random() < 0.7,
    )


def a_world_job(rng: random.Random, name: str, catalog: CloudCatalog, contended: bool = False) -> Job:
    regions = [r.name for b in catalog.spec.backends for r in b.regions]
    if contended:  # few shapes, many durations: long jobs held back by planned starts, short ones of the same shape backfilling
        return Job(
            name=name,
            cls=rng.choice(["training", "training", "api-serving"]),
            gpus=rng.choice([4, 8, 16]),
            gpu_type="H100",
            priority=rng.choice([0, 0, 1, 5]),
            duration_hours=rng.choice([0.05, 0.25, 1.0, 4.0]),
        )
    return Job(
        name=name,
        cls=rng.choice(["training", "training", "inference", "api-serving"]),
        gpus=rng.choice([1, 2, 4, 8, 8, 16]),
        gpu_type=rng.choice(SKUS),
        priority=rng.randint(-2, 2),
        duration_hours=rng.choice([0.1, 0.5, 1.0, 1.0, 3.0]),
        regions=tuple(rng.sample(regions, 1)) if rng.random() < 0.15 else None,
        jurisdiction=rng.choice([None, None, None, "US"]),
    )


END_REASONS = ("finished", "finished", "failed", "stopped")


@dataclass
class World:
    """One random world: the same requests are made of every engine built by ``make``."""

    seed: int
    catalog: CloudCatalog
    contract: Contract
    requests: list[tuple[str, Any]] = field(default_factory=list)


def a_world(seed: int, length: int = 40) -> World:
    rng = random.Random(seed)
    catalog = a_world_catalog(rng)
    world = World(seed, catalog, a_world_contract(rng))
    contended = rng.random() < 0.4
    clouds = [b.name for b in catalog.spec.backends]
    pools = [(b.name, r.name, t, n) for b in catalog.spec.backends for r in b.regions for t, n in r.gpus.items()]
    for i in range(length):
        x = rng.random()
        if x < 0.45:
            world.requests.append(("submit", a_world_job(rng, f"j{i % 30}", catalog, contended)))  # names come back: reuse after an end
        elif x < 0.65:
            world.requests.append(("end", (rng.randrange(10**6), rng.choice(END_REASONS), rng.random() < 0.3)))
        elif x < 0.72:
            world.requests.append(("backend", (rng.choice(clouds), rng.random() < 0.6, rng.choice([0.0, 0.0, 100.0]))))
        elif x < 0.79:
            cloud, region, sku, full = rng.choice(pools)
            world.requests.append(("capacity", ((cloud, region, sku), rng.choice([0, full // 2, full, full]))))
        elif x < 0.805:
            world.requests.append(("reconfigure", a_world_contract(rng)))
        elif x < 0.82:  # cordon (sometimes moving the movable work away), or open again
            world.requests.append(("drain", (rng.choice(clouds), rng.random() < 0.6, rng.random() < 0.4)))
        elif x < 0.88:
            world.requests.append(("restore", None))
        else:
            world.requests.append(("tick", rng.choice([60.0, 900.0, 3600.0, 7200.0])))
    return world


def through_json(events: list[Event]) -> list[Event]:
    return [event_from_record(e.kind, json.loads(json.dumps(e.to_record()))) for e in events]


def run_world(
    world: World,
    make: Callable[[CloudCatalog, Contract, ManualClock], Engine],
    *,
    restores: bool,
    after: Callable[[Engine, set[str]], None] | None = None,
) -> list[dict[str, Any]]:
    """Make every request of the world; returns the records of every event. With ``restores``,
    each ``restore`` request rebuilds the engine from its events so far (a crash at a committed
    boundary): what follows must not change. ``after(engine, types)`` runs after each request
    with the GPU types it re-planned (docs/queueing.md, "When the queue is re-planned")."""
    clock = ManualClock()
    engine = make(world.catalog, world.contract, clock)
    events: list[Event] = []
    engine.subscribe(events.append)
    engine.announce()
    for op, arg in world.requests:
        types: set[str] = set()
        if op == "submit":
            with contextlib.suppress(AdmissionError):  # a refused request changes nothing
                engine.submit(arg)
                types = {arg.gpu_type}
        elif op == "end":
            pick, reason, cancel_queued = arg
            states = ("running", "queued") if cancel_queued else ("running",)
            live = sorted(n for n, r in engine.jobs.items() if r.state in states)
            if live:
                name = live[pick % len(live)]
                types = {engine.jobs[name].job.gpu_type}
                engine.end(name, "cancelled" if engine.jobs[name].state == "queued" else reason)
        elif op == "backend":
            cloud, up, extra = arg
            types = set(engine.queue.gpu_types())
            engine.set_backend(cloud, up=up, extra_latency_seconds=extra)
        elif op == "capacity":
            (cloud, region, sku), cap = arg
            engine.set_capacity(cloud, region, sku, cap)
            types = {sku}
        elif op == "drain":
            cloud, on, move = arg
            types = set(engine.queue.gpu_types()) | {r.job.gpu_type for r in engine.jobs.values() if r.pool is not None and r.pool.cloud == cloud}
            engine.drain(cloud, on=on, move=move and on)
        elif op == "reconfigure":
            types = set(engine.queue.gpu_types())
            engine.reconfigure(arg, "test reload")
        elif op == "restore" and restores:
            engine = Engine.restore(world.catalog, world.contract, clock, through_json(events), [events.append], plan_depth=engine.plan_depth)
        elif op == "tick":
            clock.advance(arg)
        if after is not None:
            after(engine, types)
    return [{"kind": e.kind, **e.to_record()} for e in events]

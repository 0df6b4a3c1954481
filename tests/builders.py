"""Fluent builders so tests read like the domain: a_job().gpus(8).sku("H100").cls("training")."""

from __future__ import annotations

from typing import Any

from scheduler.clock import ManualClock
from scheduler.core.planner import DEFAULT_PLAN_DEPTH
from scheduler.engine import Engine
from scheduler.events import Event
from scheduler.model import Job
from scheduler.specs import CloudCatalog, Contract


class JobBuilder:
    _n = 0

    def __init__(self) -> None:
        JobBuilder._n += 1
        self._d: dict[str, Any] = {"name": f"job-{JobBuilder._n}", "cls": "training", "gpus": 8, "gpu_type": "H100"}

    def named(self, name: str) -> JobBuilder:
        self._d["name"] = name
        return self

    def gpus(self, n: int) -> JobBuilder:
        self._d["gpus"] = n
        return self

    def sku(self, gpu_type: str) -> JobBuilder:
        self._d["gpu_type"] = gpu_type
        return self

    def cls(self, cls: str) -> JobBuilder:
        self._d["cls"] = cls
        return self

    def priority(self, p: int) -> JobBuilder:
        self._d["priority"] = p
        return self

    def regions(self, *regions: str) -> JobBuilder:
        self._d["regions"] = regions
        return self

    def clouds(self, *clouds: str) -> JobBuilder:
        self._d["clouds"] = clouds
        return self

    def hours(self, h: float) -> JobBuilder:
        self._d["duration_hours"] = h
        return self

    def jurisdiction(self, j: str) -> JobBuilder:
        self._d["jurisdiction"] = j
        return self

    def obj(self) -> Job:
        return Job(**self._d)


def a_job() -> JobBuilder:
    return JobBuilder()


class CatalogBuilder:
    def __init__(self) -> None:
        self._backends: list[dict[str, Any]] = []

    def cloud(
        self,
        name: str,
        regions: dict[str, dict[str, int]],
        *,
        price: float = 3.0,
        latency: float = 1.0,
        startup: float = 0.0,
        up: bool = True,
        jurisdiction: str = "US",
        rules: dict[str, Any] | None = None,
        prices: dict[str, float] | None = None,
    ) -> CatalogBuilder:
        types = {t for gpus in regions.values() for t in gpus}
        self._backends.append(
            {
                "name": name,
                "latencySeconds": latency,
                "startupSeconds": startup,
                "up": up,
                "prices": prices or {t: price for t in types},
                "regions": [{"name": r, "jurisdiction": jurisdiction, "gpus": g} for r, g in regions.items()],
                "holderRules": rules or {},
            }
        )
        return self

    def obj(self) -> CloudCatalog:
        return CloudCatalog.model_validate(
            {
                "apiVersion": "mcsched.io/v1",
                "kind": "CloudCatalog",
                "metadata": {"name": "t"},
                "spec": {"backends": self._backends},
            }
        )


def a_catalog() -> CatalogBuilder:
    return CatalogBuilder()


def a_contract(
    holder: str = "azure",
    mode: str = "first-look",
    window: float = 30.0,
    on_lapse: str = "deemed-declined",
    pins: dict[str, list[str]] | None = None,
    preemption: bool = True,
) -> Contract:
    return Contract.model_validate(
        {
            "apiVersion": "mcsched.io/v1",
            "kind": "Contract",
            "metadata": {"name": "t"},
            "spec": {
                "rofr": {"holder": holder, "mode": mode, "windowSeconds": window, "onLapse": on_lapse},
                "pins": pins if pins is not None else {"api-serving": [holder]},
                "preemption": {"enabled": preemption},
            },
        }
    )


def two_clouds(azure_h100: int = 16, oci_h100: int = 64, **azure: Any) -> CloudCatalog:
    """The smallest interesting world: the holder and one cheaper competitor."""
    return (
        a_catalog()
        .cloud("azure", {"eastus": {"H100": azure_h100}}, price=3.4, **azure)
        .cloud("oci", {"us-ashburn-1": {"H100": oci_h100}}, price=2.9, startup=60)
        .obj()
    )


def recording_engine(
    catalog: CloudCatalog, contract: Contract | None = None, *, plan_depth: int = DEFAULT_PLAN_DEPTH
) -> tuple[Engine, list[Event], ManualClock]:
    clock = ManualClock()
    engine = Engine(catalog, contract or a_contract(), clock, plan_depth=plan_depth)
    events: list[Event] = []
    engine.subscribe(events.append)
    engine.announce()
    return engine, events, clock


def kinds(events: list[Event], job: str) -> list[str]:
    return [e.kind for e in events if getattr(e, "job", None) == job]

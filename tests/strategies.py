"""Hypothesis strategies for random worlds: catalogs, contracts and operation streams."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler.model import Job
from scheduler.specs import CloudCatalog, Contract
from tests.builders import a_contract

#: The settings of the random-world property tests, but for their number of examples (``sized``).
PROPERTY = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def check_property(check: Callable[..., None], examples: int, **strategies: st.SearchStrategy[Any]) -> None:
    """Run ``check`` on ``examples`` draws of ``strategies`` (PROPERTY's settings). A fresh ``given``
    wrapper per call: hypothesis refuses settings applied twice to one test, and a full run calls
    each size of a test (quick and full) in one process."""
    settings(PROPERTY, max_examples=examples)(given(**strategies)(check))()


def sized(quick: int, full: int) -> list[Any]:
    """A randomised test's sizes (examples, steps): ``quick`` in the quick profile, and ``full``
    too (marked slow) in the full run. The quick profile must stay under 3 minutes on a slow
    2-core day; the full run, which CI runs, still draws the full count."""
    return [pytest.param(quick, id=str(quick)), pytest.param(full, id=str(full), marks=pytest.mark.slow)]


CLOUDS = ("azure", "oci", "stargate", "aws")
SKUS = ("H100", "H200")
REGIONS = ("r1", "r2", "r3")


@st.composite
def catalogs(draw: st.DrawFn) -> CloudCatalog:
    n = draw(st.integers(2, len(CLOUDS)))
    backends = []
    for cloud in CLOUDS[:n]:
        regions = []
        for r in draw(st.lists(st.sampled_from(REGIONS), min_size=1, max_size=3, unique=True)):
            gpus = {s: draw(st.integers(0, 32)) for s in draw(st.lists(st.sampled_from(SKUS), min_size=1, unique=True))}
            regions.append({"name": f"{cloud}-{r}", "jurisdiction": draw(st.sampled_from(["US", "EU"])), "gpus": gpus})
        backends.append(
            {
                "name": cloud,
                "latencySeconds": draw(st.sampled_from([0.5, 5.0, 50.0])),
                "startupSeconds": draw(st.sampled_from([0.0, 60.0])),
                "up": draw(st.booleans()) if cloud != "azure" else True,
                "prices": {s: draw(st.sampled_from([2.0, 3.0, 4.0])) for s in SKUS},
                "regions": regions,
                "holderRules": {
                    "reserveForApiServingFraction": draw(st.sampled_from([0.0, 0.25])),
                    "priceFloorUsdPerGpuHour": {"H100": draw(st.sampled_from([0.0, 2.5]))},
                    "declineGpuTypes": draw(st.sampled_from([[], ["H200"]])),
                },
            }
        )
    return CloudCatalog.model_validate(
        {"apiVersion": "mcsched.io/v1", "kind": "CloudCatalog", "metadata": {"name": "h"}, "spec": {"backends": backends}}
    )


@st.composite
def contracts(draw: st.DrawFn) -> Contract:
    pins: dict[str, list[str]] = {"api-serving": ["azure"]}
    if draw(st.booleans()):
        pins["inference"] = ["azure", "oci"]
    return a_contract(
        mode=draw(st.sampled_from(["first-look", "match"])),
        window=draw(st.sampled_from([1.0, 10.0, 30.0])),
        on_lapse=draw(st.sampled_from(["deemed-declined", "queue"])),
        pins=pins,
        preemption=draw(st.booleans()),
    )


def jobs(name: str, catalog: CloudCatalog) -> st.SearchStrategy[Job]:
    regions = [r.name for b in catalog.spec.backends for r in b.regions]
    return st.builds(
        Job,
        name=st.just(name),
        cls=st.sampled_from(["training", "inference", "api-serving"]),
        gpus=st.sampled_from([1, 2, 4, 8, 16]),
        gpu_type=st.sampled_from(SKUS),
        priority=st.integers(-2, 2),
        regions=st.one_of(st.none(), st.lists(st.sampled_from(regions), min_size=1, max_size=2, unique=True).map(tuple)),
        jurisdiction=st.sampled_from([None, None, "US", "EU"]),
    )


def ops(catalog: CloudCatalog) -> st.SearchStrategy[tuple[str, Any]]:
    clouds = [b.name for b in catalog.spec.backends]
    pools = [(b.name, r.name, t) for b in catalog.spec.backends for r in b.regions for t in r.gpus]
    return st.one_of(
        st.tuples(st.just("submit"), st.integers(0, 10**6)),
        st.tuples(st.just("submit"), st.integers(0, 10**6)),
        st.tuples(st.just("release"), st.integers(0, 10**6)),
        st.tuples(st.just("cancel"), st.integers(0, 10**6)),
        st.tuples(st.just("backend"), st.tuples(st.sampled_from(clouds), st.booleans(), st.sampled_from([0.0, 100.0]))),
        st.tuples(st.just("capacity"), st.tuples(st.sampled_from(pools), st.integers(0, 40))),
        st.tuples(st.just("tick"), st.floats(0, 3600)),
    )

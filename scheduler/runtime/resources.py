"""How a mock cloud's GPUs appear to Ray: one custom resource per pool.

A placed job's placement group asks for its pool's resource, so Ray itself can only run
the work where that cloud's capacity is advertised (one local node carries every cloud;
on KubeRay each cloud's worker group carries its own).
"""

from __future__ import annotations

import re

from scheduler.specs import BUNDLE_GPUS, CloudCatalog

PREFIX = "mcsched_"
CLOUD_LABEL = "mcsched.io/cloud"


def pool_resource(cloud: str, region: str, gpu_type: str) -> str:
    return PREFIX + re.sub(r"[^A-Za-z0-9]", "_", f"{cloud}__{region}__{gpu_type}")


def is_pool_resource(name: str) -> bool:
    """A pool's resource (``pool_resource``), not another of mcsched's (the head's ``mcsched_scheduler``)."""
    return name.startswith(PREFIX) and "__" in name


def cloud_resources(catalog: CloudCatalog, cloud: str | None = None) -> dict[str, float]:
    """Ray resources a node (or worker group) advertises for one cloud, or for all."""
    out: dict[str, float] = {}
    for b in catalog.spec.backends:
        if cloud is not None and b.name != cloud:
            continue
        for r in b.regions:
            for gpu_type, count in r.gpus.items():
                if count > 0:
                    out[pool_resource(b.name, r.name, gpu_type)] = float(count)
    return out


def bundles(resource: str, gpus: int, per_bundle: int = BUNDLE_GPUS) -> list[dict[str, float]]:
    """A gang as node-sized bundles (8 GPUs each, like a DGX/HGX node)."""
    full, rest = divmod(gpus, per_bundle)
    out = [{resource: float(per_bundle)} for _ in range(full)]
    if rest:
        out.append({resource: float(rest)})
    return out

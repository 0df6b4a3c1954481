"""Capacity what-ifs: spot-availability traces mapped onto pools, and capacity scaling.

A spot trace is a few single-node series per *zone*; a pool is hundreds of GPUs in a
*region* of some cloud. The mapping between them is a modelling choice, so it is explicit
(``--capacity-map zone=cloud/region/gpuType``) or follows a documented default that
respects geography, and it *scales* a pool rather than switching it fully:

- default: each zone drives the pools of the driven cloud in the same place: the region
  of the same name (``us-east-1a`` -> ``us-east-1``), else a region in the same area (US
  east / central / west, EU, UK, JP, read from the region's name), else the nearest US
  area; never across a jurisdiction. Only GPU types the trace asks for are driven.
- a pool driven by zones ``z1..zk`` has capacity ``base x ((1 - spot) + spot x a(t))``
  where ``a(t)`` is the fraction of its zones available at ``t`` and ``spot`` the share
  of the pool that is spot (``--spot-share``, default 1.0).
- the series repeats to cover the run and is applied up to the workload's horizon.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass

from scheduler.errors import TraceError
from scheduler.sim.traces import Rule, SpotTrace
from scheduler.specs import CloudCatalog

Pool = tuple[str, str, str]  # cloud, region, gpu type

# Coarse geography: an area and, inside the US, a west-to-east position for "nearest".
_US_POSITION = {"us-west": 0, "us-central": 1, "us-east": 2}
_AREA_WORDS: tuple[tuple[str, str], ...] = (
    ("southcentral", "us-central"),
    ("northcentral", "us-central"),
    ("central", "us-central"),
    ("east", "us-east"),
    ("west", "us-west"),
    ("ashburn", "us-east"),
    ("virginia", "us-east"),
    ("ohio", "us-east"),
    ("lordstown", "us-east"),
    ("phoenix", "us-west"),
    ("oregon", "us-west"),
    ("california", "us-west"),
    ("abilene", "us-central"),
    ("texas", "us-central"),
    ("-tx", "us-central"),
    ("iowa", "us-central"),
)
_ZONE_JURISDICTION = {"us": "US", "eu": "EU", "uk": "UK", "ap-northeast": "JP", "ca": "CA"}


def region_area(name: str, jurisdiction: str) -> str:
    """``eastus`` -> us-east, ``us-phoenix-1`` -> us-west, ``westeurope`` (EU) -> EU."""
    if jurisdiction != "US":
        return jurisdiction
    low = name.lower()
    for word, area in _AREA_WORDS:
        if word in low:
            return area
    return "US"


def zone_place(zone: str) -> tuple[str, str, str]:
    """An AWS-style zone -> (its region name, jurisdiction, area)."""
    region = re.sub(r"[a-z]$", "", zone)
    jurisdiction = next((j for prefix, j in _ZONE_JURISDICTION.items() if zone.startswith(prefix + "-")), "")
    return region, jurisdiction, region_area(region, jurisdiction) if jurisdiction else ""


@dataclass(frozen=True)
class Binding:
    zone: str
    pool: Pool
    why: str


def _typed_pools(catalog: CloudCatalog, cloud: str, gpu_types: set[str]) -> list[tuple[str, str, str]]:
    """(region, jurisdiction, gpu type) of ``cloud``'s pools of the wanted GPU types."""
    backend = catalog.backend(cloud)
    if backend is None:
        raise TraceError(f"--capacity-cloud: {cloud!r} is not in the catalog (it has {', '.join(catalog.backend_names)})")
    return [(r.name, r.jurisdiction, t) for r in backend.regions for t in r.gpus if t in gpu_types]


def default_bindings(traces: list[SpotTrace], catalog: CloudCatalog, cloud: str, gpu_types: set[str]) -> tuple[list[Binding], list[str]]:
    """The geography-respecting default; returns the bindings and the zones left unused (with why)."""
    pools = _typed_pools(catalog, cloud, gpu_types)
    if not pools:
        backend = catalog.backend(cloud)
        has = sorted({t for r in backend.regions for t in r.gpus}) if backend else []
        raise TraceError(
            f"--capacity-cloud: {cloud} has no {'/'.join(sorted(gpu_types))} pools (it has {', '.join(has)}); the trace asks "
            f"only for {', '.join(sorted(gpu_types))}: drive another cloud, or map zones with --capacity-map zone=cloud/region/gpuType"
        )
    bindings: list[Binding] = []
    unused: list[str] = []
    for tr in traces:
        region, jurisdiction, area = zone_place(tr.zone)
        same_name = [p for p in pools if p[0] == region]
        in_j = [p for p in pools if p[1] == jurisdiction]
        same_area = [p for p in in_j if region_area(p[0], p[1]) == area]
        if same_name:
            chosen, why = same_name, "same region"
        elif same_area:
            chosen, why = same_area, f"same area ({area})"
        elif in_j and area in _US_POSITION:
            def distance(p: tuple[str, str, str], area: str = area) -> int:
                return abs(_US_POSITION.get(region_area(p[0], p[1]), 1) - _US_POSITION[area])

            best = min(distance(p) for p in in_j)
            chosen, why = [p for p in in_j if distance(p) == best], f"nearest {jurisdiction} area to {area}"
        else:
            unused.append(f"{tr.zone}: {cloud} has no {'/'.join(sorted(gpu_types))} pool in {jurisdiction or 'its jurisdiction'}")
            continue
        first = chosen[0][0]
        for p in chosen:
            if p[0] == first:  # one region per zone: the first of equally near ones, in catalog order
                bindings.append(Binding(tr.zone, (cloud, p[0], p[2]), why))
    if not bindings:
        raise TraceError(
            f"--capacity-cloud: no zone of the capacity trace ({', '.join(t.zone for t in traces)}) lies in a jurisdiction where "
            f"{cloud} has {'/'.join(sorted(gpu_types))} pools; map zones explicitly with --capacity-map zone=cloud/region/gpuType"
        )
    return bindings, unused


def parse_capacity_map(spec: str, traces: list[SpotTrace], catalog: CloudCatalog) -> list[Binding]:
    """``zone=cloud/region/gpuType,...`` (a zone may drive several pools)."""
    zones = {t.zone for t in traces}
    out: list[Binding] = []
    for part in spec.split(","):
        if not part.strip():
            continue
        zone, sep, target = part.partition("=")
        zone = zone.strip()
        bits = target.strip().split("/")
        if not sep or len(bits) != 3:
            raise TraceError(f"--capacity-map: bad mapping {part!r} (expected zone=cloud/region/gpuType)")
        if zone not in zones:
            raise TraceError(f"--capacity-map: {part.strip()}: no zone {zone!r} in the capacity trace (it has {', '.join(sorted(zones))})")
        cloud, region, gpu_type = (b.strip() for b in bits)
        backend = catalog.backend(cloud)
        if backend is None:
            raise TraceError(f"--capacity-map: {part.strip()}: unknown cloud {cloud!r} (the catalog has {', '.join(catalog.backend_names)})")
        reg = next((r for r in backend.regions if r.name == region), None)
        if reg is None:
            raise TraceError(f"--capacity-map: {part.strip()}: {cloud} has no region {region!r} (it has {', '.join(r.name for r in backend.regions)})")
        if gpu_type not in reg.gpus:
            raise TraceError(f"--capacity-map: {part.strip()}: {cloud}/{region} has no {gpu_type} pool (it has {', '.join(reg.gpus)})")
        out.append(Binding(zone, (cloud, region, gpu_type), "explicit"))
    if not out:
        raise TraceError("--capacity-map: no mapping given")
    return out


def capacity_schedule(
    bindings: list[Binding], traces: list[SpotTrace], base: dict[Pool, int], spot_share: float, horizon: float
) -> tuple[list[tuple[float, Pool, int]], list[Rule]]:
    """Capacity changes ``(t, pool, capacity)`` over ``[0, horizon]``, and one rule per pool with its effect."""
    if not 0.0 <= spot_share <= 1.0:
        raise TraceError("--spot-share: must be within 0..1")
    by_zone = {t.zone: t for t in traces}
    zones_of: dict[Pool, list[str]] = defaultdict(list)
    why_of: dict[Pool, set[str]] = defaultdict(set)
    for b in bindings:
        if b.zone not in zones_of[b.pool]:
            zones_of[b.pool].append(b.zone)
        why_of[b.pool].add(b.why)
    changes: list[tuple[float, Pool, int]] = []
    rules: list[Rule] = []
    for pool, zones in zones_of.items():
        series = [by_zone[z] for z in zones]
        gap = min(s.gap_seconds for s in series)
        length = max(len(s.data) * s.gap_seconds for s in series)
        full = base[pool]
        prev: int | None = None
        low, high, weighted, covered = full, 0, 0.0, 0.0
        t = 0.0
        while t <= horizon:
            k = t % length
            avail = sum(1 for s in series if s.data[min(int(k // s.gap_seconds), len(s.data) - 1)] > 0) / len(series)
            cap = round(full * ((1.0 - spot_share) + spot_share * avail))
            if cap != prev:
                changes.append((t, pool, cap))
                prev = cap
            step = min(gap, horizon - t) if t < horizon else gap
            low, high = min(low, cap), max(high, cap)
            weighted += cap * step
            covered += step
            t += gap
        mean = weighted / covered if covered else float(full)
        rules.append(
            Rule(
                f"{', '.join(zones)} -> {'/'.join(pool)} ({', '.join(sorted(why_of[pool]))}; spot share {spot_share:.0%})",
                f"capacity {low:,}..{high:,} of {full:,} GPUs, mean {mean:,.0f} ({mean / full if full else 0:.0%})",
            )
        )
    changes.sort(key=lambda c: c[0])
    return changes, rules


def parse_scale(spec: str | None, catalog: CloudCatalog) -> dict[tuple[str, str | None, str | None], float]:
    """``--scale-capacity azure=0.5,oci/us-ashburn-1=2,aws/us-east-1/H100=0``."""
    out: dict[tuple[str, str | None, str | None], float] = {}
    for part in (spec or "").split(","):
        if not part.strip():
            continue
        target, sep, raw = part.partition("=")
        bits = target.strip().split("/")
        try:
            factor = float(raw)
        except ValueError:
            factor = -1.0
        if not sep or not 1 <= len(bits) <= 3 or not 0 <= factor <= 1000:
            raise TraceError(f"--scale-capacity: bad setting {part!r} (expected cloud[/region[/gpuType]]=factor, factor 0..1000)")
        cloud, region, gpu_type = bits[0], bits[1] if len(bits) > 1 else None, bits[2] if len(bits) > 2 else None
        backend = catalog.backend(cloud)
        if backend is None:
            raise TraceError(f"--scale-capacity: {part.strip()}: unknown cloud {cloud!r} (catalog has {', '.join(catalog.backend_names)})")
        regions = [r for r in backend.regions if region in (None, "*", r.name)]
        if not regions or not any(gpu_type in (None, "*") or gpu_type in r.gpus for r in regions):
            raise TraceError(f"--scale-capacity: {part.strip()}: the catalog has no such pool on {cloud}")
        out[(cloud, None if region == "*" else region, None if gpu_type == "*" else gpu_type)] = factor
    return out


def scale_catalog(catalog: CloudCatalog, scale: dict[tuple[str, str | None, str | None], float]) -> tuple[CloudCatalog, list[Rule]]:
    """A copy of the catalog with pools scaled (most specific setting wins); rules say by how much."""
    if not scale:
        return catalog, []
    backends = []
    before: dict[tuple[str, str], int] = defaultdict(int)
    after: dict[tuple[str, str], int] = defaultdict(int)
    for b in catalog.spec.backends:
        regions = []
        for r in b.regions:
            gpus = {}
            for t, n in r.gpus.items():
                f = next((scale[k] for k in ((b.name, r.name, t), (b.name, None, t), (b.name, r.name, None), (b.name, None, None)) if k in scale), None)
                gpus[t] = n if f is None else round(n * f)
                if f is not None:
                    before[(b.name, t)] += n
                    after[(b.name, t)] += gpus[t]
            regions.append(r.model_copy(update={"gpus": gpus}))
        backends.append(b.model_copy(update={"regions": regions}))
    spec = catalog.spec.model_copy(update={"backends": backends})
    scaled = catalog.model_copy(update={"spec": spec})
    settings = ", ".join(f"{'/'.join(x for x in k if x)}={v:g}" for k, v in scale.items())
    effect = "; ".join(f"{c} {t} {before[(c, t)]:,} -> {after[(c, t)]:,} GPUs" for c, t in sorted(before))
    return scaled, [Rule(f"--scale-capacity {settings}", effect)]

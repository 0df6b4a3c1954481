"""``--costs FILE``: what a planner pays, not only what held GPUs cost at list price.

Per cloud and GPU type, a cost model gives:

- **committed** GPUs: a number, an hourly rate and a term. They are paid for the whole
  horizon whether used or not (prorated from the term: a 365-day commitment over a 30-day
  horizon costs 30 days of it). Usage up to the commitment costs nothing more; the part of
  the commitment left idle is reported as *idle committed cost*.
- **on-demand** rate (default: the catalog's price) for usage above the commitment.
- **spot**: the share of above-commitment usage bought as spot (``spotShare``), at the
  catalog's spot price (``spec.backends[].spotPrices``: the catalog is the one source of a
  cloud's rates); spot *availability* is the capacity trace's job (``--capacity-trace``,
  ``--spot-share``). A GPU type without a spot price in the catalog is bought on demand.
- **start-up billing**: ``billStartup: false`` takes each placement's start-up GPU-seconds
  off the usage billed above the commitment (clouds that bill from the first useful second).

Without a cost file every cloud is on-demand at the catalog's prices with start-up billed,
which is exactly what the held GPUs cost (``summary.costUsdTotal`` of earlier versions).
The file is YAML, checked in full before anything runs: one line per problem, file, field
and why, exit 2.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, ValidationError

from scheduler.errors import SpecError, TraceError
from scheduler.io.yamldocs import parse_documents
from scheduler.specs import CloudCatalog, GpuType, Strict

Usd = Annotated[float, Field(ge=0.0, le=10_000.0)]


class Commitment(Strict):
    gpus: Annotated[int, Field(ge=0, le=1_000_000)]
    usdPerGpuHour: Usd
    termDays: Annotated[float, Field(gt=0.0, le=3650.0)] = 365.0


class CloudCosts(Strict):
    committed: dict[GpuType, Commitment] = Field(default_factory=dict)
    onDemandUsdPerGpuHour: dict[GpuType, Usd] = Field(default_factory=dict)
    spotShare: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0
    billStartup: bool = True


class CostModel(Strict):
    clouds: dict[str, CloudCosts] = Field(default_factory=dict)


def load_costs(path: Path, catalog: CloudCatalog) -> CostModel:
    """Read and check a cost file against the catalog (clouds, GPU types, commitments within capacity)."""
    try:  # the spec files' loader: no aliases, no duplicate keys (a repeated cloud would drop its commitments silently)
        docs = parse_documents(path.read_text(encoding="utf-8"), str(path))
    except OSError as exc:
        raise TraceError(f"--costs: {path}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise TraceError(f"--costs: {path}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    except SpecError as exc:
        raise TraceError(f"--costs: {path}: {'' if exc.line is None else f'line {exc.line}: '}{exc.reason}") from None
    if len(docs) > 1:
        raise TraceError(f"--costs: {path}: line {docs[1].line}: one cost model per file (a second YAML document starts here)")
    raw = docs[0].data if docs else None
    if isinstance(raw, dict) and isinstance(raw.get("clouds"), dict):
        for cloud, c in raw["clouds"].items():
            if isinstance(c, dict) and "spotUsdPerGpuHour" in c:
                where = _catalog_field(catalog, str(cloud), "spotPrices")
                raise TraceError(f"--costs: {path}: clouds.{cloud}.spotUsdPerGpuHour: spot prices are the catalog's now: set {where}")
    try:
        model = CostModel.model_validate(raw if raw is not None else {})
    except ValidationError as exc:
        errors = exc.errors()
        first = errors[0]
        where = ".".join(str(x) for x in first["loc"]) or "(top)"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise TraceError(f"--costs: {path}: {where}: {first['msg']}{more}") from None
    for cloud, costs in model.clouds.items():
        backend = catalog.backend(cloud)
        if backend is None:
            raise TraceError(f"--costs: {path}: clouds.{cloud}: not in the catalog (it has {', '.join(catalog.backend_names)})")
        have: dict[str, int] = defaultdict(int)
        for r in backend.regions:
            for t, n in r.gpus.items():
                have[t] += n
        for field_name in ("committed", "onDemandUsdPerGpuHour"):
            for t in getattr(costs, field_name):
                if t not in have:
                    raise TraceError(f"--costs: {path}: clouds.{cloud}.{field_name}.{t}: {cloud} has no {t} pools (it has {', '.join(sorted(have))})")
        for t, c in costs.committed.items():
            if c.gpus > have[t]:
                raise TraceError(f"--costs: {path}: clouds.{cloud}.committed.{t}.gpus: {c.gpus:,} committed but the catalog has {have[t]:,} {t} on {cloud}")
        if costs.spotShare > 0 and not backend.spotPrices:
            raise TraceError(f"--costs: {path}: clouds.{cloud}.spotShare: {costs.spotShare:g} of the usage as spot needs spot prices: "
                             f"the catalog ({catalog.metadata.name}) has none in {_catalog_field(catalog, cloud, 'spotPrices')}")
    return model


def _catalog_field(catalog: CloudCatalog, cloud: str, field_name: str) -> str:
    """Where a cloud's field is in the catalog, as its error messages name it (``spec.backends[1].spotPrices``)."""
    index = next((i for i, b in enumerate(catalog.spec.backends) if b.name == cloud), None)
    return f"spec.backends[{index}].{field_name} ({cloud})" if index is not None else f"spec.backends[].{field_name} of {cloud}"


def committed_gpus(model: CostModel | None) -> dict[tuple[str, str], int]:
    """(cloud, GPU type) -> committed GPUs: what the replay's recorder measures usage above."""
    if model is None:
        return {}
    return {(cloud, t): c.gpus for cloud, costs in model.clouds.items() for t, c in costs.committed.items()}


@dataclass(frozen=True)
class Usage:
    """What one (cloud, GPU type) did over the horizon, from the replay."""

    held_gpu_seconds: float
    above_commit_gpu_seconds: float
    startup_gpu_seconds: float


def bill(model: CostModel | None, catalog: CloudCatalog, usage: dict[tuple[str, str], Usage], horizon: float) -> dict[str, Any]:
    """The bill over ``horizon`` seconds: per cloud and in total, with its parts.

    ``catalog`` gives the default on-demand prices; ``usage`` covers the clouds the policy ran
    on (a commitment on a cloud the policy left out is paid and idle all the same).
    """
    model = model or CostModel()
    hours = horizon / 3600
    per_cloud: dict[str, dict[str, float]] = {}
    keys = set(usage) | set(committed_gpus(model))
    for cloud, gpu_type in sorted(keys):
        costs = model.clouds.get(cloud, CloudCosts())
        u = usage.get((cloud, gpu_type), Usage(0.0, 0.0, 0.0))
        commit = costs.committed.get(gpu_type)
        backend = catalog.backend(cloud)
        list_price = backend.prices.get(gpu_type, 0.0) if backend is not None else 0.0
        on_demand_rate = costs.onDemandUsdPerGpuHour.get(gpu_type, list_price)
        spot_rate = backend.spotPrices.get(gpu_type, on_demand_rate) if backend is not None else on_demand_rate
        above = u.above_commit_gpu_seconds
        startup = u.startup_gpu_seconds
        if not costs.billStartup:
            above = max(above - startup, 0.0)
        within = u.held_gpu_seconds - u.above_commit_gpu_seconds
        committed = commit.gpus * commit.usdPerGpuHour * hours if commit else 0.0
        idle = max(commit.gpus * horizon - within, 0.0) * commit.usdPerGpuHour / 3600 if commit else 0.0
        on_demand = above * (1 - costs.spotShare) * on_demand_rate / 3600
        spot = above * costs.spotShare * spot_rate / 3600
        row = per_cloud.setdefault(cloud, defaultdict(float))
        row["committedUsd"] += committed
        row["idleCommittedUsd"] += idle
        row["onDemandUsd"] += on_demand
        row["spotUsd"] += spot
        row["startupUsd"] += startup * on_demand_rate / 3600 if costs.billStartup else 0.0
        row["totalUsd"] += committed + on_demand + spot
        row["committedGpus"] += commit.gpus if commit else 0
        row["gpuHoursHeld"] += u.held_gpu_seconds / 3600
    clouds = {c: dict(v) for c, v in per_cloud.items()}
    total = {k: sum(v[k] for v in clouds.values()) for k in ("committedUsd", "idleCommittedUsd", "onDemandUsd", "spotUsd", "startupUsd", "totalUsd")}
    return {"perCloud": clouds, **total, "from": "--costs" if model.clouds else "the catalog's on-demand prices (no --costs)"}


def describe(model: CostModel, path: Path, catalog: CloudCatalog) -> str:
    """One line for the report's inputs: every commitment and rate the file sets (spot prices: the catalog's)."""
    parts = []
    for cloud, c in model.clouds.items():
        bits = [f"{t} {x.gpus:,} committed at ${x.usdPerGpuHour:g}/GPU-h ({x.termDays:g}-day term)" for t, x in c.committed.items()]
        bits += [f"{t} on demand ${r:g}" for t, r in c.onDemandUsdPerGpuHour.items()]
        backend = catalog.backend(cloud)
        if c.spotShare > 0 and backend is not None:
            bits += [f"{t} spot ${r:g} (the catalog's) for {c.spotShare:.0%} of the usage above the commitment" for t, r in backend.spotPrices.items()]
        if not c.billStartup:
            bits.append("start-up not billed")
        parts.append(f"{cloud}: {', '.join(bits) or 'catalog prices'}")
    return f"cost model {path.name}: " + "; ".join(parts)

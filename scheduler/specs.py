"""The user-facing spec formats (Kubernetes-style YAML) as strict pydantic models.

Unknown fields are errors everywhere: a typo in a contract must never silently change
who holds the right of first refusal.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

NAME_PATTERN = r"^[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?$"
REGION_PATTERN = r"^[A-Za-z0-9]([-A-Za-z0-9_]{0,61}[A-Za-z0-9])?$"
GPU_TYPE_PATTERN = r"^[A-Za-z0-9][-A-Za-z0-9_.]{0,31}$"
JURISDICTION_PATTERN = r"^[A-Z]{2,8}$"
PATTERN_HELP = {
    NAME_PATTERN: "must be a lowercase DNS-style name: a-z, 0-9, '-' or '.', starting and ending with a letter or digit",
    REGION_PATTERN: "must be a region name: letters, digits, '-' or '_', starting and ending with a letter or digit",
    GPU_TYPE_PATTERN: "must be a GPU type such as H100: letters, digits, '-', '_' or '.', no spaces",
    JURISDICTION_PATTERN: "must be an upper-case jurisdiction code such as US or EU",
}
MAX_GANG_GPUS = 4096
MAX_POOL_GPUS = 1_000_000

Name = Annotated[str, Field(pattern=NAME_PATTERN, max_length=63)]
RegionName = Annotated[str, Field(pattern=REGION_PATTERN, max_length=63)]
GpuType = Annotated[str, Field(pattern=GPU_TYPE_PATTERN)]
Jurisdiction = Annotated[str, Field(pattern=JURISDICTION_PATTERN)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, strict=True, allow_inf_nan=False)


JobClass = Literal["training", "inference", "api-serving"]
RofrMode = Literal["first-look", "match"]
OnLapse = Literal["deemed-declined", "queue"]
JOB_CLASSES: tuple[str, ...] = ("training", "inference", "api-serving")


class Metadata(Strict):
    name: Name
    labels: dict[str, str] = Field(default_factory=dict)


# --------------------------------------------------------------------------- catalog


MAX_BLOCKS = 64


#: GPUs of one placement-group bundle: a gang runs as bundles of this size (runtime/resources.py).
BUNDLE_GPUS = 8


class CapacityBlocks(Strict):
    """A pool bought in blocks (issue #25, docs/nodes.md "Buying capacity"): one Ray worker node each.

    The pool's count in ``gpus`` stays the most it can ever have (every block bought), so
    admission is unchanged; its capacity at any time is what its live nodes advertise. The
    cloud's own node carries ``initial`` blocks; each block bought beyond is a node of its own,
    started when queued work needs it and stopped after ``idleReleaseSeconds`` without work.
    """

    gpus: Annotated[int, Field(ge=1, le=MAX_POOL_GPUS)]  # GPUs of one block (one node)
    initial: Annotated[int, Field(ge=0, le=MAX_BLOCKS)] = 1  # blocks held from `mcsched up` on, never released
    max: Annotated[int, Field(ge=1, le=MAX_BLOCKS)]  # blocks with everything bought: max x gpus = the pool's count
    provisioningSeconds: Annotated[float, Field(ge=0.0, le=86_400.0)] = 20.0  # quoted: purchase -> node joined
    idleReleaseSeconds: Annotated[float, Field(ge=0.0, le=86_400.0)] = 300.0  # a bought node without work this long is stopped

    @model_validator(mode="after")
    def _initial_within(self) -> CapacityBlocks:
        if self.gpus % BUNDLE_GPUS:
            raise ValueError(
                f"gpus ({self.gpus}) must be a multiple of {BUNDLE_GPUS}: a gang runs as {BUNDLE_GPUS}-GPU bundles, one node each, "
                "so a smaller or uneven block node could never hold a bundle"
            )
        if self.initial > self.max:
            raise ValueError(f"initial ({self.initial}) must be <= max ({self.max})")
        return self


class Region(Strict):
    name: RegionName
    jurisdiction: Jurisdiction
    gpus: dict[GpuType, Annotated[int, Field(ge=0, le=MAX_POOL_GPUS)]]
    # Pools bought in capacity blocks (GPU type -> blocks); a pool not named here is all there from the start.
    blocks: dict[GpuType, CapacityBlocks] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _blocks_match_pools(self) -> Region:
        for gpu_type, b in self.blocks.items():
            if gpu_type not in self.gpus:
                raise ValueError(f"blocks.{gpu_type}: no {gpu_type} pool in gpus")
            if b.gpus * b.max != self.gpus[gpu_type]:
                raise ValueError(
                    f"blocks.{gpu_type}: max x gpus ({b.max} x {b.gpus} = {b.gpus * b.max}) must equal the pool's count "
                    f"gpus.{gpu_type} ({self.gpus[gpu_type]}), its size with every block bought"
                )
        return self


class HolderRules(Strict):
    """The holder's own terms for answering an offer (only used while it holds the ROFR)."""

    reserveForApiServingFraction: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    priceFloorUsdPerGpuHour: dict[GpuType, Annotated[float, Field(ge=0.0)]] = Field(default_factory=dict)
    declineGpuTypes: list[GpuType] = Field(default_factory=list)
    maxGangGpus: Annotated[int, Field(ge=1, le=MAX_GANG_GPUS)] | None = None
    # A holder that turns down work it could take (a mock backend's behaviour, and the simulator's
    # decline-rate knob): this share of the offers it would accept is declined ``at-discretion``.
    # Which ones is a pure function of (declineSeed, job, time) (``declines_at_discretion``),
    # so a replay is deterministic by seed and an auditor re-derives every such decline.
    declineFraction: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0
    declineSeed: Annotated[int, Field(ge=0, le=2**63 - 1)] = 0


def declines_at_discretion(fraction: float, seed: int, job: str, at: float) -> bool:
    """Whether a holder with ``declineFraction`` = ``fraction`` turns down this offer it has room
    for: a draw that is a pure function of (``declineSeed``, job, time of the offer). No
    generator state, so the engine live, restored or replayed, its reference planner and the
    ledger's checker all get the same answer; a declined job gets a fresh draw when it is
    offered again later (a re-offer at the same instant would be the same offer)."""
    if fraction <= 0.0:
        return False
    digest = hashlib.blake2b(f"{seed}:{job}:{at!r}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64 < fraction


class Faults(Strict):
    """Mock-backend faults: the backend is part of the product, so its failures are too."""

    extraLatencySeconds: Annotated[float, Field(ge=0.0, le=86_400.0)] = 0.0


class Backend(Strict):
    name: Name
    displayName: str = ""
    jurisdiction: Jurisdiction | None = None
    latencySeconds: Annotated[float, Field(ge=0.0, le=86_400.0)] = 1.0
    startupSeconds: Annotated[float, Field(ge=0.0, le=86_400.0)] = 0.0
    up: bool = True
    prices: dict[GpuType, Annotated[float, Field(gt=0.0, le=1000.0)]]
    # USD per GPU-hour bought as spot (the simulator's cost model, ``--costs`` ``spotShare``); the
    # catalog is the one source of every rate a cloud sells at, on demand or spot
    spotPrices: dict[GpuType, Annotated[float, Field(gt=0.0, le=1000.0)]] = Field(default_factory=dict)
    regions: Annotated[list[Region], Field(min_length=1)]
    holderRules: HolderRules = Field(default_factory=HolderRules)
    faults: Faults = Field(default_factory=Faults)

    @field_validator("spotPrices")
    @classmethod
    def _spot_has_on_demand(cls, spot: dict[str, float], info: ValidationInfo) -> dict[str, float]:
        prices = info.data.get("prices")
        if isinstance(prices, dict):
            missing = sorted(set(spot) - set(prices))
            if missing:
                raise ValueError(f"GPU type {missing[0]!r} has a spot price but no on-demand price in prices")
        return spot

    @model_validator(mode="after")
    def _consistent(self) -> Backend:
        names = [r.name for r in self.regions]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"duplicate region {sorted(dup)[0]!r}")
        for i, r in enumerate(self.regions):
            missing = sorted(set(r.gpus) - set(self.prices))
            if missing:
                raise ValueError(f"regions[{i}] ({r.name}) has GPU type {missing[0]!r} without a price in prices")
            if self.jurisdiction and r.jurisdiction != self.jurisdiction:
                raise ValueError(
                    f"regions[{i}] ({r.name}) is in {r.jurisdiction} but backend is restricted to {self.jurisdiction}"
                )
        return self


class CatalogSpec(Strict):
    backends: Annotated[list[Backend], Field(min_length=1)]

    @model_validator(mode="after")
    def _unique(self) -> CatalogSpec:
        names = [b.name for b in self.backends]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"duplicate backend {sorted(dup)[0]!r}")
        return self


class CloudCatalog(Strict):
    apiVersion: Literal["mcsched.io/v1"]
    kind: Literal["CloudCatalog"]
    metadata: Metadata
    spec: CatalogSpec

    def backend(self, name: str) -> Backend | None:
        return next((b for b in self.spec.backends if b.name == name), None)

    @property
    def backend_names(self) -> list[str]:
        return [b.name for b in self.spec.backends]


# --------------------------------------------------------------------------- contract


class Rofr(Strict):
    holder: Name = "azure"
    mode: RofrMode = "first-look"
    windowSeconds: Annotated[float, Field(gt=0.0, le=86_400.0)] = 30.0
    onLapse: OnLapse = "deemed-declined"


class Preemption(Strict):
    enabled: bool = True


SpillRanking = Literal["price-first", "start-first", "weighted"]


class SpillWeights(Strict):
    """``weighted`` ranking: score = price * USD/GPU-h + startSeconds * seconds to start (lower wins)."""

    price: Annotated[float, Field(ge=0.0, le=1e6)] = 1.0
    startSeconds: Annotated[float, Field(ge=0.0, le=1e6)] = 0.0


class Scoring(Strict):
    """How the other clouds' quotes are ranked after the holder declines or lapses."""

    spill: SpillRanking = "price-first"
    weights: SpillWeights = Field(default_factory=SpillWeights)


API_CLASS = "api-serving"


class ContractSpec(Strict):
    rofr: Rofr = Field(default_factory=Rofr)
    pins: dict[JobClass, Annotated[list[Name], Field(min_length=1)]] = Field(default_factory=dict)
    preemption: Preemption = Field(default_factory=Preemption)
    scoring: Scoring = Field(default_factory=Scoring)
    classPriorities: dict[JobClass, Annotated[int, Field(ge=-1000, le=1000)]] | None = None

    @model_validator(mode="before")
    @classmethod
    def _api_pin_default(cls, data: object) -> object:
        """Without pins, api-serving is pinned to the holder (the contract's second clause)."""
        if isinstance(data, dict) and "pins" not in data:
            rofr = data.get("rofr")
            holder = rofr.get("holder", "azure") if isinstance(rofr, dict) else "azure"
            return {**data, "pins": {API_CLASS: [holder]}}
        return data

    @field_validator("pins")
    @classmethod
    def _api_exclusive(cls, pins: dict[str, list[str]], info: ValidationInfo) -> dict[str, list[str]]:
        rofr = info.data.get("rofr")
        holder = rofr.holder if isinstance(rofr, Rofr) else "azure"
        got = pins.get(API_CLASS)
        if got != [holder]:
            raise ValueError(
                f"api-serving must be pinned to exactly [{holder}] (the ROFR holder), got {got if got is not None else 'no pin'}: "
                "API exclusivity is a clause of the contract, not an option"
            )
        return pins


class Contract(Strict):
    apiVersion: Literal["mcsched.io/v1"]
    kind: Literal["Contract"]
    metadata: Metadata
    spec: ContractSpec = Field(default_factory=ContractSpec)

    @property
    def holder(self) -> str:
        return self.spec.rofr.holder

    def pinned_clouds(self, cls: JobClass) -> list[str] | None:
        return self.spec.pins.get(cls)


# --------------------------------------------------------------------------- job


class Workload(Strict):
    """A simulated workload: steps of fixed length, checkpoints, an optional injected failure."""

    steps: Annotated[int, Field(ge=1, le=1_000_000)] = 10
    stepSeconds: Annotated[float, Field(ge=0.0, le=3600.0)] = 0.1
    checkpointEvery: Annotated[int, Field(ge=1, le=1_000_000)] = 5
    failAtStep: Annotated[int, Field(ge=1)] | None = None


MODEL_PATTERN = r"^[A-Za-z0-9][-A-Za-z0-9_.:/]{0,127}$"
PATTERN_HELP[MODEL_PATTERN] = "must be a model name: letters, digits, '-', '_', '.', ':' or '/', at most 128 characters"


class ServeReplicas(Strict):
    min: Annotated[int, Field(ge=1, le=1000)] = 1
    max: Annotated[int, Field(ge=1, le=1000)] = 1

    @model_validator(mode="after")
    def _ordered(self) -> ServeReplicas:
        if self.max < self.min:
            raise ValueError(f"max ({self.max}) must be >= min ({self.min})")
        return self


class Serve(Strict):
    """An api-serving job as a Ray Serve application: each replica is one placement of
    ``gpusPerReplica`` through the engine (see scheduler/runtime/serve/)."""

    model: Annotated[str, Field(pattern=MODEL_PATTERN)]
    gpusPerReplica: Annotated[int, Field(ge=1, le=MAX_GANG_GPUS)]
    replicas: ServeReplicas = Field(default_factory=ServeReplicas)
    targetOngoingRequests: Annotated[float, Field(gt=0.0, le=10_000.0)] = 4.0
    tokensPerSecond: Annotated[float, Field(gt=0.0, le=100_000.0)] = 50.0
    scaleDownDelaySeconds: Annotated[float, Field(ge=0.0, le=86_400.0)] = 30.0


class JobSpec(Strict):
    class_: JobClass = Field(alias="class")
    gpus: Annotated[int, Field(ge=1, le=MAX_GANG_GPUS)]
    gpuType: GpuType
    regions: Annotated[list[RegionName], Field(min_length=1)] | None = None
    clouds: Annotated[list[Name], Field(min_length=1)] | None = None
    jurisdiction: Jurisdiction | None = None
    priority: Annotated[int, Field(ge=-1000, le=1000)] = 0
    durationHours: Annotated[float, Field(gt=0.0, le=8760.0)] = 1.0
    entrypoint: Annotated[str, Field(min_length=1, max_length=8192)] | None = None
    workload: Workload | None = None
    serve: Serve | None = None
    # Graceful eviction (scheduler/runtime/driver.py): seconds the work gets to checkpoint and exit; default 30.
    terminationGracePeriodSeconds: Annotated[float, Field(ge=0.0, le=3600.0)] | None = None

    @model_validator(mode="before")
    @classmethod
    def _serve_gpus(cls, data: object) -> object:
        """``gpus`` of a served model defaults to its ceiling: ``replicas.max x gpusPerReplica``."""
        if isinstance(data, dict) and "gpus" not in data and isinstance(data.get("serve"), dict):
            serve, reps = data["serve"], data["serve"].get("replicas", {})
            per, top = serve.get("gpusPerReplica"), reps.get("max", 1) if isinstance(reps, dict) else None
            # Not computable: serve's own errors explain it, so do not also report gpus missing.
            data = {**data, "gpus": per * top if type(per) is int and type(top) is int else 1}
        return data

    @model_validator(mode="after")
    def _one_body(self) -> JobSpec:
        if self.entrypoint is not None and self.workload is not None:
            raise ValueError("set either entrypoint or workload, not both")
        if self.serve is not None:
            if self.class_ != "api-serving":
                raise ValueError(f"serve is only for api-serving jobs (class is {self.class_})")
            if self.entrypoint is not None or self.workload is not None:
                raise ValueError("a served model runs the serve replicas: drop entrypoint/workload")
            ceiling = self.serve.replicas.max * self.serve.gpusPerReplica
            if self.gpus != ceiling:
                raise ValueError(f"gpus ({self.gpus}) must equal serve.replicas.max x serve.gpusPerReplica ({ceiling}), or be left out")
        return self


class JobDoc(Strict):
    apiVersion: Literal["mcsched.io/v1"]
    kind: Literal["Job"]
    metadata: Metadata
    spec: JobSpec


SPEC_KINDS: dict[str, type[Strict]] = {"CloudCatalog": CloudCatalog, "Contract": Contract, "Job": JobDoc}


# --------------------------------------------------------------------------- scenario (simulator what-ifs)


class ScenarioEvent(Strict):
    """One what-if event at ``at`` seconds from the trace's start: a backend change or a pool's new capacity.

    Either ``backend`` with ``up`` and/or ``extraLatencySeconds``, or ``cloud``, ``region``,
    ``gpuType`` and ``capacity``: the engine's two fault ports (``set_backend``,
    ``set_capacity``), so a scenario is exactly what could happen live.
    """

    at: Annotated[float, Field(ge=0.0, le=10 * 365 * 86_400.0)]
    backend: Name | None = None
    up: bool | None = None
    extraLatencySeconds: Annotated[float, Field(ge=0.0, le=86_400.0)] | None = None
    cloud: Name | None = None
    region: RegionName | None = None
    gpuType: GpuType | None = None
    capacity: Annotated[int, Field(ge=0, le=MAX_POOL_GPUS)] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> ScenarioEvent:
        pool = (self.cloud, self.region, self.gpuType, self.capacity)
        if self.backend is not None:
            if any(x is not None for x in pool):
                raise ValueError("an event changes either a backend (backend, up, extraLatencySeconds) or a pool (cloud, region, gpuType, capacity), not both")
            if self.up is None and self.extraLatencySeconds is None:
                raise ValueError("a backend event needs up and/or extraLatencySeconds")
        elif all(x is not None for x in pool):
            if self.up is not None or self.extraLatencySeconds is not None:
                raise ValueError("up/extraLatencySeconds belong to a backend event (set backend)")
        else:
            missing = [n for n, v in zip(("cloud", "region", "gpuType", "capacity"), pool, strict=True) if v is None]
            raise ValueError(f"set backend (with up and/or extraLatencySeconds), or a whole pool: missing {', '.join(missing)}")
        return self


class ScenarioSpec(Strict):
    events: Annotated[list[ScenarioEvent], Field(min_length=1, max_length=100_000)]


class Scenario(Strict):
    apiVersion: Literal["mcsched.io/v1"]
    kind: Literal["Scenario"]
    metadata: Metadata
    spec: ScenarioSpec


SPEC_KINDS["Scenario"] = Scenario

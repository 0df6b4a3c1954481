"""The checker's own model of the recorded world: jobs, pools, backends, violations.

Nothing here is shared with the engine: the checker rebuilds everything from the records.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

Pool = tuple[str, str, str]  # (cloud, region, gpu_type)
Rec = Any  # an Event, or a typed ledger record with the same attributes

# Rule names (also the bounded label set of mcsched_contract_violations_total).
RULES = (
    "malformed-record",
    "configuration",
    "unknown-job",
    "duplicate-job",
    "attempt-order",
    "offer-missing",
    "offer-terms",
    "answer-not-holder",
    "rofr-skipped",
    "holder-answer",
    "rofr-order",
    "placement-mismatch",
    "pinned-class-off-pins",
    "over-commit",
    "double-placement",
    "preemption",
    "eviction",
    "release-not-running",
    "reservation",
    "lost-job",
)
END_REASONS = frozenset({"finished", "failed", "stopped", "cancelled"})
DEQUEUE_REASONS = frozenset({"cancelled", "stopped"})  # rule 8: a job that never ran neither finished nor failed
STATIC_SKIPS = ("not-in-pins", "gpu-type-unavailable", "region-constraint", "jurisdiction")
VIA_FOR_ANSWER = {"declined": "after-decline", "lapsed": "after-lapse", "not-offered": "holder-not-offered"}
TOLERANCE = 1e-9
_UNSET = object()  # a cache miss
_NO_COMPETITOR = (None, None)  # an offer's (competing price, cloud) when it names none: shared, not one per job


@dataclass(frozen=True, slots=True)
class Violation:
    seq: int
    rule: str
    job: str | None
    message: str

    def __str__(self) -> str:
        return f"record {self.seq}: {self.rule}: {self.message}"


class _Bad(Exception):
    """Raised inside a handler: the record breaks ``rule``."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule
        self.message = message


@dataclass(slots=True)
class _Backend:
    name: str
    up: bool
    response: float  # catalog latency, then the latest backend-changed latency_seconds
    startup: float
    price: dict[str, float]
    decline_types: frozenset[str]
    max_gang: int | None
    api_fraction: float
    floors: dict[str, float]
    decline_fraction: float = 0.0  # holderRules.declineFraction / declineSeed: declines at discretion
    decline_seed: int = 0
    cordoned: bool = False  # closed to new placements by a ``cordoned`` record (``mcsched drain``)


@dataclass(slots=True)
class _PoolState:
    key: Pool
    jurisdiction: str
    capacity: int
    price: float
    keep: float  # its cloud's reserveForApiServingFraction
    allocated: int = 0
    api_limit: int = 0  # the GPUs a job of another class may fill up to when its cloud holds (``set_capacity``)

    def set_capacity(self, capacity: int) -> None:
        self.capacity = capacity
        self.api_limit = int(capacity * (1.0 - self.keep))


class _Job:
    """Only what the rules need: a 100k-job replay must stay small."""

    __slots__ = (
        "answer",
        "answer_attempt",
        "attempt",
        "clouds",
        "cls",
        "competing",
        "done_attempt",
        "duration",
        "gpu_type",
        "gpus",
        "jurisdiction",
        "name",
        "offered_attempt",
        "order",
        "placed_at",
        "placed_attempt",
        "pool",
        "priority",
        "quoted_attempt",
        "quotes",
        "reason",
        "regions",
        "state",
    )

    def __init__(self, name: str, cls: str, gpus: int, gpu_type: str, priority: int, spec: dict[str, Any], order: int) -> None:
        """The submission's fields and its ``spec``, already known to be a dict (``_on_submitted`` checked it)."""
        self.name = name
        self.cls = cls
        self.gpus = gpus
        self.gpu_type = gpu_type
        self.priority = priority
        regions = spec.get("regions")
        self.regions = None if regions is None else _str_tuple(regions, "regions")
        clouds = spec.get("clouds")
        self.clouds = None if clouds is None else _str_tuple(clouds, "clouds")
        jur = spec.get("jurisdiction")
        if jur is not None and type(jur) is not str:
            raise _Bad("malformed-record", "spec.jurisdiction must be a string or null")
        self.jurisdiction: str | None = jur
        duration = spec.get("duration_hours", 1.0)
        if type(duration) is not float or not 0 < duration <= 8760:  # the common case in one test
            if type(duration) is not int or not 0 < duration <= 8760:
                raise _Bad("malformed-record", "spec.duration_hours must be a number in (0, 8760]")
            duration = float(duration)
        self.duration: float = duration
        self.order = order
        self.state = "pending"
        self.pool: Pool | None = None
        self.attempt = 0  # the current placement attempt
        self.quoted_attempt = 0
        self.quotes: Sequence[Any] = ()
        self.offered_attempt = 0
        self.competing: tuple[Any, Any] = _NO_COMPETITOR
        self.answer_attempt = 0
        self.answer = ""
        self.reason = ""
        self.done_attempt = 0  # the attempt whose outcome (placed/queued) is recorded
        self.placed_attempt = 0
        self.placed_at = 0.0


def _unknown(name: str) -> _Bad:
    return _Bad("unknown-job", f"{name} was never submitted")


def _spec_disagrees(rec: Rec, spec: dict[str, Any]) -> None:
    """Raise for the first of a submission's fields its spec disagrees with (value or type)."""
    for key, top, value in (
        ("name", "job", rec.job),
        ("cls", "cls", rec.cls),
        ("gpus", "gpus", rec.gpus),
        ("gpu_type", "gpu_type", rec.gpu_type),
        ("priority", "priority", rec.priority),
    ):
        found = spec.get(key)
        if found != value or type(found) is not type(value):
            raise _Bad("malformed-record", f"submitted {top}={value!r} disagrees with spec.{key}={found!r}")


def _str_tuple(value: Any, name: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if type(value) not in (list, tuple) or not value or any(type(v) is not str for v in value):
        raise _Bad("malformed-record", f"spec.{name} must be a non-empty list of strings or null")
    return tuple(value)


def _ahead(a: _Job, b: _Job) -> bool:
    """Queue order: higher priority first, then earlier submission."""
    return a.priority > b.priority or (a.priority == b.priority and a.order < b.order)


OVERRUN_STEP_SECONDS = 600.0  # docs/queueing.md, "Overruns" (the engine's own copy is scheduler/core/profile.py)


def _expected_end(ends_at: float, now: float) -> float:
    if ends_at > now:
        return ends_at
    return ends_at + (int((now - ends_at) // OVERRUN_STEP_SECONDS) + 1) * OVERRUN_STEP_SECONDS


def _evidence(evidence: str | _PoolState, job: _Job) -> str:
    """``_expected_answer``'s evidence in words: a reason as given, or the pool that had room."""
    if isinstance(evidence, str):
        return evidence
    return f"{_fmt(evidence.key)} had {evidence.capacity - evidence.allocated} free for {job.gpus}"


def _fmt(key: Pool | None) -> str:
    return "nowhere" if key is None else f"{key[0]}/{key[1]}/{key[2]}"

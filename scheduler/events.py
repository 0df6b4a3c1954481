"""The one event stream the engine emits; the ledger, metrics and tests all consume it.

Events are plain frozen records with a stable ``kind`` and a flat, JSON-ready payload, so
the ledger can store them verbatim and a verifier can replay them without the engine. They
are also the engine's only way to change its own state: ``Engine._apply(event)`` is the one
mutation path, live and on replay, so each event carries everything a view needs
(explanations included) and nothing is written twice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, ClassVar


@dataclass(frozen=True, slots=True)
class Event:
    kind: ClassVar[str] = "event"
    at: float

    def to_record(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in _FIELDS[type(self)]}


@dataclass(frozen=True, slots=True)
class Configured(Event):
    """The catalog and contract in force from here on (first record of every ledger)."""

    kind: ClassVar[str] = "configured"
    catalog: dict[str, Any]
    contract: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Reconfigured(Event):
    """A new contract in force from here on (it must keep api-serving pinned to its holder)."""

    kind: ClassVar[str] = "reconfigured"
    contract: dict[str, Any]
    reason: str


@dataclass(frozen=True, slots=True)
class Submitted(Event):
    kind: ClassVar[str] = "submitted"
    job: str
    cls: str
    gpus: int
    gpu_type: str
    priority: int
    spec: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Offered(Event):
    """The holder is shown the job (and in match mode the best competing quote)."""

    kind: ClassVar[str] = "offered"
    job: str
    attempt: int
    holder: str
    mode: str
    window_seconds: float
    competing_price: float | None = None
    competing_cloud: str | None = None


@dataclass(frozen=True, slots=True)
class Answered(Event):
    """The ROFR gate's outcome: accepted, declined, lapsed, or not-offered (with why)."""

    kind: ClassVar[str] = "answered"
    job: str
    attempt: int
    holder: str
    answer: str
    reason: str
    response_seconds: float


@dataclass(frozen=True, slots=True)
class Quoted(Event):
    """Non-holder answers for one attempt: ``quotes`` are (cloud, region, usd/gpu-h, start s)."""

    kind: ClassVar[str] = "quoted"
    job: str
    attempt: int
    quotes: tuple[tuple[str, str, float, float], ...]
    dropped: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Placed(Event):
    kind: ClassVar[str] = "placed"
    job: str
    attempt: int
    cls: str
    cloud: str
    region: str
    gpu_type: str
    gpus: int
    price: float
    via: str
    waited_seconds: float
    not_used: tuple[tuple[str, str], ...] = ()  # (cloud, why) for every backend not chosen


@dataclass(frozen=True, slots=True)
class Queued(Event):
    kind: ClassVar[str] = "queued"
    job: str
    attempt: int
    cls: str
    reason: str
    detail: str
    not_used: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Preempted(Event):
    """A movable job is evicted (for a pinned job or lost capacity); it will be re-placed."""

    kind: ClassVar[str] = "preempted"
    job: str
    cls: str
    cloud: str
    region: str
    gpu_type: str
    gpus: int
    reason: str
    by: str | None
    cost_usd: float


@dataclass(frozen=True, slots=True)
class Released(Event):
    """A placed job leaves for good; ``reason`` is its final state: finished, failed, stopped or cancelled."""

    kind: ClassVar[str] = "released"
    job: str
    cls: str
    cloud: str
    region: str
    gpu_type: str
    gpus: int
    reason: str
    cost_usd: float


@dataclass(frozen=True, slots=True)
class Bound(Event):
    """A runtime holds the gang of placement ``attempt`` (a Ray placement group): its loss stops the job."""

    kind: ClassVar[str] = "bound"
    job: str
    attempt: int
    ref: str


@dataclass(frozen=True, slots=True)
class Dequeued(Event):
    """A queued job leaves without being placed again (``reason``: cancelled or stopped)."""

    kind: ClassVar[str] = "dequeued"
    job: str
    cls: str
    reason: str


@dataclass(frozen=True, slots=True)
class BackendChanged(Event):
    kind: ClassVar[str] = "backend-changed"
    cloud: str
    up: bool
    latency_seconds: float


@dataclass(frozen=True, slots=True)
class CapacityChanged(Event):
    kind: ClassVar[str] = "capacity-changed"
    cloud: str
    region: str
    gpu_type: str
    capacity: int


@dataclass(frozen=True, slots=True)
class Reserved(Event):
    """The pool is held for a blocked queued job from ``start_at`` (expected ends of running work).

    Until then only work expected to end by ``start_at`` may start there (backfill); one
    reservation per pool, taken by the highest-priority blocked job that starts earliest there.
    """

    kind: ClassVar[str] = "reserved"
    job: str
    cloud: str
    region: str
    gpu_type: str
    start_at: float


@dataclass(frozen=True, slots=True)
class ReservationCleared(Event):
    """The pool's reservation for ``job`` ends (it was placed elsewhere, left, or a higher-priority job took over)."""

    kind: ClassVar[str] = "reservation-cleared"
    job: str
    cloud: str
    region: str
    gpu_type: str


EVENT_TYPES: dict[str, type[Event]] = {
    t.kind: t
    for t in (
        Configured,
        Reconfigured,
        Submitted,
        Offered,
        Answered,
        Quoted,
        Placed,
        Queued,
        Preempted,
        Released,
        Bound,
        Dequeued,
        BackendChanged,
        CapacityChanged,
        Reserved,
        ReservationCleared,
    )
}
_FIELDS: dict[type[Event], tuple[str, ...]] = {t: tuple(f.name for f in fields(t)) for t in EVENT_TYPES.values()}
_TUPLE_FIELDS = {"quotes", "dropped", "not_used"}

EventSink = Callable[[Event], None]


def event_from_record(kind: str, record: dict[str, Any]) -> Event:
    """Rebuild an event from its ledger record (JSON turns tuples into lists)."""
    cls = EVENT_TYPES[kind]
    data = dict(record)
    for name in _TUPLE_FIELDS & data.keys():
        data[name] = tuple(tuple(x) for x in data[name])
    return cls(**data)

"""The one event stream the engine emits; the ledger, metrics and tests all consume it.

Each event type is defined once, here: a frozen msgspec Struct with a stable ``kind`` and a
flat, JSON-ready payload, so the ledger stores it verbatim (``scheduler/ledger/records.py``
derives its typed records from these classes) and a verifier replays it without the engine.
Events are also the engine's only way to change its own state (``State.apply``), live and on
restore, so each carries everything a view needs and nothing is written twice.

Adding an event type is one class below: ``EVENT_TYPES`` finds it, the ledger's reader
derives its record type, and ``State`` must say how to apply it (its handler table names
every type, so a missing handler fails at import of the tests, not in production).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import msgspec


class Event(msgspec.Struct, frozen=True):
    """What every event has: a kind, a time and a JSON-ready record."""

    kind: ClassVar[str] = "event"
    at: float

    def to_record(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__struct_fields__}


class Configured(Event, frozen=True):
    """The catalog and contract in force from here on (first record of every ledger)."""

    kind: ClassVar[str] = "configured"
    catalog: dict[str, Any]
    contract: dict[str, Any]


class Reconfigured(Event, frozen=True):
    """A new contract in force from here on (it must keep api-serving pinned to its holder)."""

    kind: ClassVar[str] = "reconfigured"
    contract: dict[str, Any]
    reason: str


class Submitted(Event, frozen=True):
    kind: ClassVar[str] = "submitted"
    job: str
    cls: str
    gpus: int
    gpu_type: str
    priority: int
    spec: dict[str, Any]


class Offered(Event, frozen=True):
    """The holder is shown the job (and in match mode the best competing quote)."""

    kind: ClassVar[str] = "offered"
    job: str
    attempt: int
    holder: str
    mode: str
    window_seconds: float
    competing_price: float | None = None
    competing_cloud: str | None = None


class Answered(Event, frozen=True):
    """The ROFR gate's outcome: accepted, declined, lapsed, or not-offered (with why)."""

    kind: ClassVar[str] = "answered"
    job: str
    attempt: int
    holder: str
    answer: str
    reason: str
    response_seconds: float


class Quoted(Event, frozen=True):
    """Non-holder answers for one attempt: ``quotes`` are (cloud, region, usd/gpu-h, start s)."""

    kind: ClassVar[str] = "quoted"
    job: str
    attempt: int
    quotes: tuple[tuple[str, str, float, float], ...]
    dropped: tuple[tuple[str, str], ...]


class Placed(Event, frozen=True):
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


class Queued(Event, frozen=True):
    kind: ClassVar[str] = "queued"
    job: str
    attempt: int
    cls: str
    reason: str
    detail: str
    not_used: tuple[tuple[str, str], ...] = ()


class Preempted(Event, frozen=True):
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


class Released(Event, frozen=True):
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


class Bound(Event, frozen=True):
    """A runtime holds the gang of placement ``attempt`` (a Ray placement group): its loss stops the job."""

    kind: ClassVar[str] = "bound"
    job: str
    attempt: int
    ref: str


class Dequeued(Event, frozen=True):
    """A waiting job leaves without being placed again (``reason``: cancelled or stopped)."""

    kind: ClassVar[str] = "dequeued"
    job: str
    cls: str
    reason: str


class BackendChanged(Event, frozen=True):
    kind: ClassVar[str] = "backend-changed"
    cloud: str
    up: bool
    latency_seconds: float


class Cordoned(Event, frozen=True):
    """A cloud is closed to new placements (``on``) or opened again (docs/queueing.md, "Drain").

    Running work there stays unless the drain moves it: those moves are ``preempted`` records
    with reason ``drained`` right after this one."""

    kind: ClassVar[str] = "cordoned"
    cloud: str
    on: bool


class CapacityChanged(Event, frozen=True):
    kind: ClassVar[str] = "capacity-changed"
    cloud: str
    region: str
    gpu_type: str
    capacity: int


class Reserved(Event, frozen=True):
    """A queued job's planned start: it can start on this pool from ``start_at`` (docs/queueing.md).

    Until then a job behind it may start there only if that delays this start (backfill). A
    job has at most one; a new one replaces it; it ends when the job starts or leaves, or with
    a ``reservation-cleared``.
    """

    kind: ClassVar[str] = "reserved"
    job: str
    cloud: str
    region: str
    gpu_type: str
    start_at: float


class ReservationCleared(Event, frozen=True):
    """The job no longer has a planned start (beyond the planning depth, or nowhere to plan it)."""

    kind: ClassVar[str] = "reservation-cleared"
    job: str
    cloud: str
    region: str
    gpu_type: str


EVENT_TYPES: dict[str, type[Event]] = {cls.kind: cls for cls in Event.__subclasses__()}
_TUPLE_FIELDS = {"quotes", "dropped", "not_used"}

EventSink = Callable[[Event], None]


def event_fields(cls: type[Event]) -> tuple[str, ...]:
    """The field names of an event type, in record order (``at`` first)."""
    return cls.__struct_fields__


def event_from_record(kind: str, record: dict[str, Any]) -> Event:
    """Rebuild an event from its ledger record (JSON turns tuples into lists)."""
    cls = EVENT_TYPES[kind]
    data = dict(record)
    for name in _TUPLE_FIELDS & data.keys():
        data[name] = tuple(tuple(x) for x in data[name])
    return cls(**data)

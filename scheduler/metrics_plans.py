"""Metrics of the queue's planned starts (docs/queueing.md), folded from the event stream.

``mcsched_planned_start_slip_seconds``: how much later a job's planned start moved each time
it moved later (an overrun, a disturbance, a higher-priority arrival). ``mcsched_gpus_idle_for_plan``:
free GPUs of a pool that its planned starts hold back (backfill may use them only for work
that ends in time), so "idle while jobs wait" is told apart from "idle on purpose".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, Histogram

from scheduler.events import (
    CapacityChanged,
    Configured,
    Dequeued,
    Event,
    Placed,
    Preempted,
    Released,
    ReservationCleared,
    Reserved,
    Submitted,
)

Pool = tuple[str, str, str]
SLIP_BUCKETS = (1, 10, 60, 300, 600, 1800, 3600, 4 * 3600, 12 * 3600, 24 * 3600, 7 * 24 * 3600)


class PlanMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.slip = Histogram(
            "mcsched_planned_start_slip_seconds",
            "How much later a queued job's planned start moved, each time it moved later.",
            buckets=SLIP_BUCKETS,
            registry=registry,
        )
        self.idle = Gauge(
            "mcsched_gpus_idle_for_plan",
            "Free GPUs a pool holds back for planned starts of queued jobs.",
            ["cloud", "region", "gpu_type"],
            registry=registry,
        )
        self._gpus: dict[str, int] = {}  # waiting or running job -> its gang size
        self._plans: dict[str, tuple[Pool, float]] = {}  # queued job -> its planned start
        self._capacity: dict[Pool, int] = {}
        self._allocated: dict[Pool, int] = {}
        self._held: dict[Pool, int] = {}  # GPUs of the planned starts per pool
        self._idle: dict[Pool, Any] = {}  # the gauge's child per pool
        self._table: dict[type[Event], Callable[[Any], None]] = {
            Configured: self._on_configured, Submitted: self._on_submitted, Reserved: self._on_reserved,
            ReservationCleared: self._on_cleared, Dequeued: self._on_cleared, Placed: self._on_placed,
            Preempted: self._on_ended, Released: self._on_ended, CapacityChanged: self._on_capacity,
        }
        self._dispatch: dict[type[Event], Callable[[Any], None] | None] = {}

    def __call__(self, ev: Event) -> None:
        kind = type(ev)
        try:
            handle = self._dispatch[kind]
        except KeyError:
            handle = self._dispatch[kind] = self.handler(kind)
        if handle is not None:
            handle(ev)

    def handler(self, kind: type[Event]) -> Callable[[Any], None] | None:
        """What this sink does with events of class ``kind`` (None: nothing; a subclass is handled
        as its base), for a caller that looks it up once per class (``Metrics``): the events this
        sink ignores then cost no call at all, where a chain of ``isinstance`` tests ran for each."""
        return next((self._table[c] for c in kind.__mro__ if c in self._table), None)

    def _on_configured(self, ev: Configured) -> None:
        for b in ev.catalog["spec"]["backends"]:
            for r in b["regions"]:
                for gpu_type, count in r["gpus"].items():
                    self._capacity[(b["name"], r["name"], gpu_type)] = count
                    self.idle.labels(b["name"], r["name"], gpu_type).set(0)

    def _on_submitted(self, ev: Submitted) -> None:
        self._gpus[ev.job] = ev.gpus

    def _on_reserved(self, ev: Reserved) -> None:
        pool = (ev.cloud, ev.region, ev.gpu_type)
        old = self._unplan(ev.job)
        if old is not None and ev.start_at > old[1]:
            self.slip.observe(ev.start_at - old[1])
        self._plans[ev.job] = (pool, ev.start_at)
        self._held[pool] = self._held.get(pool, 0) + self._gpus.get(ev.job, 0)
        self._set(pool)
        if old is not None:
            self._set(old[0])

    def _on_cleared(self, ev: ReservationCleared | Dequeued) -> None:
        old = self._unplan(ev.job)
        if isinstance(ev, Dequeued):
            self._gpus.pop(ev.job, None)
        if old is not None:
            self._set(old[0])

    def _on_placed(self, ev: Placed) -> None:
        old = self._unplan(ev.job)
        if old is not None:
            self._set(old[0])
        touched = (ev.cloud, ev.region, ev.gpu_type)
        self._allocated[touched] = self._allocated.get(touched, 0) + ev.gpus
        self._set(touched)

    def _on_ended(self, ev: Preempted | Released) -> None:
        touched = (ev.cloud, ev.region, ev.gpu_type)
        self._allocated[touched] = self._allocated.get(touched, 0) - ev.gpus
        if isinstance(ev, Released):
            self._gpus.pop(ev.job, None)
        self._set(touched)

    def _on_capacity(self, ev: CapacityChanged) -> None:
        touched = (ev.cloud, ev.region, ev.gpu_type)
        self._capacity[touched] = ev.capacity
        self._set(touched)

    def _unplan(self, job: str) -> tuple[Pool, float] | None:
        old = self._plans.pop(job, None)
        if old is not None:
            self._held[old[0]] -= self._gpus.get(job, 0)
        return old

    def _set(self, pool: Pool) -> None:
        free = self._capacity.get(pool, 0) - self._allocated.get(pool, 0)
        child = self._idle.get(pool)
        if child is None:  # labels() validates and locks on every call: once per pool
            child = self._idle[pool] = self.idle.labels(*pool)
        child.set(max(min(free, self._held.get(pool, 0)), 0))

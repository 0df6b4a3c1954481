"""Metrics of the queue's planned starts (docs/queueing.md), folded from the event stream.

``mcsched_planned_start_slip_seconds``: how much later a job's planned start moved each time
it moved later (an overrun, a disturbance, a higher-priority arrival). ``mcsched_gpus_idle_for_plan``:
free GPUs of a pool that its planned starts hold back (backfill may use them only for work
that ends in time), so "idle while jobs wait" is told apart from "idle on purpose".
"""

from __future__ import annotations

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

    def __call__(self, ev: Event) -> None:
        touched: Pool | None = None
        if isinstance(ev, Configured):
            for b in ev.catalog["spec"]["backends"]:
                for r in b["regions"]:
                    for gpu_type, count in r["gpus"].items():
                        self._capacity[(b["name"], r["name"], gpu_type)] = count
                        self.idle.labels(b["name"], r["name"], gpu_type).set(0)
        elif isinstance(ev, Submitted):
            self._gpus[ev.job] = ev.gpus
        elif isinstance(ev, Reserved):
            pool = (ev.cloud, ev.region, ev.gpu_type)
            old = self._unplan(ev.job)
            if old is not None and ev.start_at > old[1]:
                self.slip.observe(ev.start_at - old[1])
            self._plans[ev.job] = (pool, ev.start_at)
            self._held[pool] = self._held.get(pool, 0) + self._gpus.get(ev.job, 0)
            self._set(pool)
            touched = old[0] if old is not None else None
        elif isinstance(ev, ReservationCleared | Dequeued):
            old = self._unplan(ev.job)
            touched = old[0] if old is not None else None
            if isinstance(ev, Dequeued):
                self._gpus.pop(ev.job, None)
        elif isinstance(ev, Placed):
            old = self._unplan(ev.job)
            if old is not None:
                self._set(old[0])
            touched = (ev.cloud, ev.region, ev.gpu_type)
            self._allocated[touched] = self._allocated.get(touched, 0) + ev.gpus
        elif isinstance(ev, Preempted | Released):
            touched = (ev.cloud, ev.region, ev.gpu_type)
            self._allocated[touched] = self._allocated.get(touched, 0) - ev.gpus
            if isinstance(ev, Released):
                self._gpus.pop(ev.job, None)
        elif isinstance(ev, CapacityChanged):
            touched = (ev.cloud, ev.region, ev.gpu_type)
            self._capacity[touched] = ev.capacity
        if touched is not None:
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

"""Rule 7: evictions only for a pinned job on the holder, an outage elsewhere, lost capacity,
or a drain that moves movable work off a cordoned cloud; backends and pools change as recorded."""

from __future__ import annotations

from scheduler.invariants.base import CheckerBase
from scheduler.invariants.model import Rec, _Bad, _fmt


class EvictionRules(CheckerBase):
    def _on_preempted(self, rec: Rec) -> None:
        """Rule 7."""
        job = self._job(rec.job)
        reason, cloud = rec.reason, rec.cloud
        if reason == "pinned-job":
            by = rec.by
            winner = self.jobs.get(by) if isinstance(by, str) else None
            if winner is None:
                raise _Bad("preemption", f"{job.name} evicted for unknown job {by!r}")
            if not self.preemption:
                raise _Bad("preemption", f"{job.name} evicted for {by}, but the contract disables preemption")
            if cloud != self.holder:
                raise _Bad("preemption", f"{job.name} evicted for {by} on {cloud}, not on the holder")
            if job.cls in self.pins:
                raise _Bad("preemption", f"pinned {job.cls} job {job.name} evicted for {by}")
            if winner.cls not in self.pins:
                raise _Bad("preemption", f"{job.name} evicted for {by}, a {winner.cls} job (only pinned classes preempt)")
            if not job.priority < winner.priority:
                raise _Bad("preemption", f"priority-{job.priority} {job.name} evicted for priority-{winner.priority} {by}")
            if winner.state not in ("pending", "queued"):
                raise _Bad("preemption", f"{job.name} evicted for {by}, which is {winner.state}")
            self._leave(job, rec, "evicted")
            self._preempting = by
            self._plain = False
        elif reason == "backend-down":
            if cloud == self.holder:
                raise _Bad(
                    "eviction", f"{job.name} evicted from the holder {cloud} for an outage (holder outages never move work)"
                )
            if self.backends.get(cloud) is None or self.backends[cloud].up:
                raise _Bad("eviction", f"{job.name} evicted for backend-down while {cloud} was up")
            self._leave(job, rec, "evicted")
        elif reason == "drained":
            if self.backends.get(cloud) is None or not self.backends[cloud].cordoned:
                raise _Bad("eviction", f"{job.name} evicted for a drain while {cloud} was not cordoned")
            if job.cls in self.pins:
                raise _Bad("eviction", f"pinned {job.cls} job {job.name} moved by a drain of {cloud}")
            self._leave(job, rec, "evicted")
        elif reason == "capacity-lost":
            key = (cloud, rec.region, rec.gpu_type)
            before = self._shrinking[1] if self._shrinking is not None else self.pools[key].allocated if key in self.pools else 0
            self._leave(job, rec, "evicted")
            self._shrinking = (key, before)
            self._plain = False
        else:
            raise _Bad("eviction", f"unknown eviction reason {reason!r}")
        job.state = "pending"

    # ------------------------------------------------------------------ backends and pools

    def _on_backend_changed(self, rec: Rec) -> None:
        b = self.backends.get(rec.cloud)
        if b is None:
            raise _Bad("configuration", f"backend-changed for unknown cloud {rec.cloud!r}")
        b.up, b.response = rec.up, rec.latency_seconds

    def _on_cordoned(self, rec: Rec) -> None:
        b = self.backends.get(rec.cloud)
        if b is None:
            raise _Bad("configuration", f"cordoned for unknown cloud {rec.cloud!r}")
        b.cordoned = rec.on

    def _on_capacity_changed(self, rec: Rec) -> None:
        key = (rec.cloud, rec.region, rec.gpu_type)
        pool = self.pools.get(key)
        if pool is None:
            raise _Bad("configuration", f"capacity-changed for unknown pool {_fmt(key)}")
        capacity = rec.capacity
        if capacity < 0:
            raise _Bad("malformed-record", f"negative capacity {capacity}")
        shrinking, self._shrinking = self._shrinking, None
        pool.set_capacity(capacity)
        if shrinking is not None and not capacity < shrinking[1]:
            raise _Bad(
                "eviction",
                f"capacity-lost evictions on {_fmt(key)}, yet it shrank only to {capacity} of {shrinking[1]} allocated",
            )
        if pool.allocated > capacity:
            raise _Bad("over-commit", f"{_fmt(key)} shrank to {capacity} with {pool.allocated} allocated")

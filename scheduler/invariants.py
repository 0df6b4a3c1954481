"""The contract's invariants, checked by replaying the event stream.

Pure and independent of the engine: it trusts only the recorded events and the recorded
configuration, so the same checker proves a ledger (``mcsched audit verify``), watches the
live stream (the ``contract_violations`` metric) and judges randomised tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from scheduler.events import (
    Answered,
    CapacityChanged,
    Configured,
    Dequeued,
    Event,
    Placed,
    Preempted,
    Queued,
    Released,
    Submitted,
)


@dataclass(frozen=True, slots=True)
class Violation:
    seq: int
    rule: str
    job: str | None
    message: str

    def __str__(self) -> str:
        return f"record {self.seq}: {self.rule}: {self.message}"


@dataclass(slots=True)
class _JobState:
    """Only what the rules need: a 100k-job replay must stay small."""

    cls: str
    gpu_type: str
    regions: tuple[str, ...] | None
    jurisdiction: str | None
    state: str = "pending"
    pool: tuple[str, str, str] | None = None
    gpus: int = 0
    attempt: int = 0
    answer: tuple[int, str, str] | None = None  # (attempt, answer, reason)


@dataclass
class InvariantChecker:
    """Feed events in order; violations accumulate (and are returned by ``feed``)."""

    holder: str = ""
    pins: dict[str, list[str]] = field(default_factory=dict)
    capacity: dict[tuple[str, str, str], int] = field(default_factory=dict)
    allocated: dict[tuple[str, str, str], int] = field(default_factory=dict)
    regions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    jobs: dict[str, _JobState] = field(default_factory=dict)
    violations: list[Violation] = field(default_factory=list)
    configured: bool = False

    def _bad(self, seq: int, rule: str, job: str | None, message: str) -> None:
        self.violations.append(Violation(seq, rule, job, message))

    def feed(self, event: Event, seq: int = 0) -> list[Violation]:
        before = len(self.violations)
        handler = getattr(self, "_on_" + event.kind.replace("-", "_"), None)
        if not self.configured and not isinstance(event, Configured):
            self._bad(seq, "unconfigured", None, f"{event.kind} before any configured record")
        elif handler is not None:
            handler(event, seq)
        return self.violations[before:]

    def finish(self, seq: int = 0) -> list[Violation]:
        """End-of-stream rules: no job may be left between an eviction and a decision."""
        before = len(self.violations)
        for name, job in self.jobs.items():
            if job.state == "pending":
                self._bad(seq, "lost-job", name, f"{name} was submitted or evicted but never placed or queued")
        return self.violations[before:]

    # ------------------------------------------------------------------ handlers

    def _on_configured(self, ev: Configured, seq: int) -> None:
        self.configured = True
        self.holder = ev.contract["spec"]["rofr"]["holder"]
        self.pins = {k: list(v) for k, v in ev.contract["spec"]["pins"].items()}
        self.regions = {}
        for b in ev.catalog["spec"]["backends"]:
            self.regions[b["name"]] = b["regions"]
            for r in b["regions"]:
                for gpu_type, count in r["gpus"].items():
                    key = (b["name"], r["name"], gpu_type)
                    self.capacity[key] = count
                    self.allocated.setdefault(key, 0)

    def _on_submitted(self, ev: Submitted, seq: int) -> None:
        old = self.jobs.get(ev.job)
        if old is not None and old.state not in ("finished", "cancelled"):
            self._bad(seq, "duplicate-job", ev.job, f"{ev.job} submitted again while {old.state}")
        spec = ev.spec
        regions = spec.get("regions")
        self.jobs[ev.job] = _JobState(ev.cls, ev.gpu_type, tuple(regions) if regions else None, spec.get("jurisdiction"))

    def _job(self, name: str, seq: int) -> _JobState | None:
        job = self.jobs.get(name)
        if job is None:
            self._bad(seq, "unknown-job", name, f"{name} was never submitted")
        return job

    def _on_answered(self, ev: Answered, seq: int) -> None:
        job = self._job(ev.job, seq)
        if job is None:
            return
        job.answer = (ev.attempt, ev.answer, ev.reason)
        if ev.answer == "not-offered" and not self._truly_not_allowed(job, ev.reason):
            self._bad(
                seq, "rofr-skipped", ev.job, f"holder not offered {ev.job} for {ev.reason!r}, which the record does not support"
            )

    def _truly_not_allowed(self, job: _JobState, reason: str) -> bool:
        """Re-derive from the recorded catalog that the holder really could not be offered the job."""
        pins = self.pins.get(job.cls)
        if reason == "not-in-pins":
            return pins is not None and self.holder not in pins
        regions = self.regions.get(self.holder, [])
        typed = [r for r in regions if job.gpu_type in r["gpus"]]
        if reason == "gpu-type-unavailable":
            return not typed
        wanted = job.regions
        in_region = [r for r in typed if not wanted or r["name"] in wanted]
        if reason == "region-constraint":
            return bool(typed) and not in_region
        if reason == "jurisdiction":
            want = job.jurisdiction
            return bool(in_region) and want is not None and all(r["jurisdiction"] != want for r in in_region)
        return False

    def _on_placed(self, ev: Placed, seq: int) -> None:
        job = self._job(ev.job, seq)
        if job is None:
            return
        if job.state == "running":
            self._bad(seq, "double-placement", ev.job, f"{ev.job} placed on {ev.cloud} while already running on {job.pool}")
        if job.state in ("finished", "cancelled"):
            self._bad(seq, "placed-after-end", ev.job, f"{ev.job} placed after it was {job.state}")
        pins = self.pins.get(job.cls)
        if pins is not None and ev.cloud not in pins:
            self._bad(seq, "pinned-class-off-pins", ev.job, f"{job.cls} job {ev.job} placed on {ev.cloud}, pinned to {pins}")
        answer = job.answer
        spill_ok = answer is not None and answer[0] == ev.attempt and answer[1] in ("declined", "lapsed", "not-offered")
        if ev.cloud != self.holder and not spill_ok:
            self._bad(seq, "rofr-order", ev.job, f"{ev.job} placed on {ev.cloud} without a holder decline or lapse in attempt {ev.attempt}")
        key = (ev.cloud, ev.region, ev.gpu_type)
        if key not in self.capacity:
            self._bad(seq, "unknown-pool", ev.job, f"{ev.job} placed on unknown pool {key}")
            return
        self.allocated[key] += ev.gpus
        if self.allocated[key] > self.capacity[key]:
            self._bad(seq, "over-commit", ev.job, f"{key} has {self.allocated[key]} GPUs allocated of {self.capacity[key]}")
        job.state, job.pool, job.gpus = "running", key, ev.gpus

    def _free(self, name: str, seq: int, new_state: str) -> None:
        job = self._job(name, seq)
        if job is None:
            return
        if job.state != "running" or job.pool is None:
            self._bad(seq, "release-not-running", name, f"{name} released/evicted while {job.state}")
            return
        self.allocated[job.pool] -= job.gpus
        job.state, job.pool = new_state, None

    def _on_preempted(self, ev: Preempted, seq: int) -> None:
        job = self.jobs.get(ev.job)
        if job is not None and self.pins.get(job.cls) is not None and ev.reason == "pinned-job":
            self._bad(seq, "pinned-evicted", ev.job, f"pinned job {ev.job} was evicted for another pinned job")
        self._free(ev.job, seq, "pending")

    def _on_released(self, ev: Released, seq: int) -> None:
        self._free(ev.job, seq, "cancelled" if ev.reason == "cancelled" else "finished")

    def _on_queued(self, ev: Queued, seq: int) -> None:
        job = self._job(ev.job, seq)
        if job is not None:
            if job.state == "running":
                self._bad(seq, "queued-while-running", ev.job, f"{ev.job} queued while running")
            job.state = "queued"

    def _on_dequeued(self, ev: Dequeued, seq: int) -> None:
        job = self._job(ev.job, seq)
        if job is not None:
            job.state = "cancelled"

    def _on_capacity_changed(self, ev: CapacityChanged, seq: int) -> None:
        key = (ev.cloud, ev.region, ev.gpu_type)
        self.capacity[key] = ev.capacity
        if self.allocated.get(key, 0) > ev.capacity:
            self._bad(seq, "over-commit", None, f"{key} shrank to {ev.capacity} with {self.allocated[key]} allocated")

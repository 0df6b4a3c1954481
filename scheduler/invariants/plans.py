"""Rule 9: planned starts (docs/queueing.md): only for queued jobs, on pools they may use;
backfill never takes GPUs a planned start of a job ahead needs."""

from __future__ import annotations

from scheduler.invariants.base import CheckerBase
from scheduler.invariants.model import Pool, Rec, _ahead, _Bad, _expected_end, _fmt, _Job


class PlanRules(CheckerBase):
    def _reserved_against(self, job: _Job, key: Pool, now: float, keep: float) -> bool:
        """Rule 9: starting ``job`` on ``key`` now would delay a planned start of a job ahead of it
        (conservative backfill): with ``job`` running there until its expected end, some planned
        start recorded for the pool no longer fits at its time, each checked as it was planned
        (in its job's share of the pool, around the planned starts of the jobs ahead of that job).
        Rebuilt from the records: running work's expected ends, overdue work one overrun step at a time."""
        ahead = sorted(
            (other.priority * -1, other.order, other, start)
            for name, (where, start) in self.reservations.items()
            if where == key and name != job.name and _ahead(other := self.jobs[name], job)
        )
        if not ahead:
            return False
        pool = self.pools[key]
        if (pool.api_limit if keep > 0.0 else pool.capacity) - pool.allocated < job.gpus:
            return False  # no room under its ceiling: not the planned starts' doing
        ends = [(_expected_end(r.placed_at + r.duration * 3600.0, now), r.gpus) for r in self.running_on.get(key, {}).values()]
        ends.append((now + job.duration * 3600.0, job.gpus))
        allocated = pool.allocated + job.gpus
        earlier: list[tuple[float, float, int]] = []
        for _, _, other, start in ahead:
            limit = pool.capacity if other.cls == "api-serving" or pool.keep <= 0.0 or key[0] != self.holder else pool.api_limit
            stop = start + other.duration * 3600.0
            for t in (start, *(c[0] for c in earlier if start < c[0] < stop)):
                free = limit - allocated + sum(n for end, n in ends if end <= t)
                held = sum(n for s, e, n in earlier if s <= t < e)
                if free - held < other.gpus:
                    return True
            earlier.append((start, stop, other.gpus))
        return False

    # ------------------------------------------------------------------ rule 9: reservations

    def _on_reserved(self, rec: Rec) -> None:
        """A queued job's planned start on a pool it may run on (it replaces the job's previous one)."""
        job = self._job(rec.job)
        key = (rec.cloud, rec.region, rec.gpu_type)
        if job.state != "queued":
            raise _Bad("reservation", f"{_fmt(key)} reserved for {job.name}, which is {job.state}")
        if key not in self.pools or not self._allowed(job, key[0]) or self.pools[key] not in self._candidates_on(job, key[0]):
            raise _Bad("reservation", f"{_fmt(key)} reserved for {job.name}, which cannot run there")
        if rec.start_at < rec.at:
            raise _Bad(
                "reservation", f"{job.name} planned to start at t={rec.start_at:g}s, before the record's time t={rec.at:g}s"
            )
        self.reservations[job.name] = (key, rec.start_at)

    def _on_reservation_cleared(self, rec: Rec) -> None:
        self.reservations.pop(rec.job, None)

"""Rules 5, 6 and 8: a placement follows its attempt's answer, matches its job, fits its pool;
a job leaves only from where it runs, for a known reason."""

from __future__ import annotations

from scheduler.invariants.base import CheckerBase
from scheduler.invariants.model import DEQUEUE_REASONS, END_REASONS, VIA_FOR_ANSWER, Pool, Rec, _Bad, _fmt, _Job, _unknown


class PlacementRules(CheckerBase):
    def _on_placed(self, rec: Rec) -> None:
        """Rules 5 and 6."""
        job = self.jobs.get(rec.job)
        if job is None:
            raise _unknown(rec.job)
        attempt, cloud, via = rec.attempt, rec.cloud, rec.via
        key: Pool = (cloud, rec.region, rec.gpu_type)
        state = job.state
        if not (
            (state == "pending" or state == "queued")
            and job.answer_attempt == attempt == job.attempt
            and job.done_attempt != attempt
        ):
            self._outcome(job, attempt, cloud)  # raises: ``_outcome``'s common case, inlined
        answer = job.answer
        if via == "preemption":
            if self._preempting != job.name:
                raise _Bad("preemption", f"{job.name} placed via preemption without its victims' evictions right before")
            self._preempting = None
            if cloud != self.holder or job.cls not in self.pins or not self.preemption:
                raise _Bad(
                    "preemption",
                    f"preemption placement of {job.cls} job {job.name} on {cloud} (only pinned jobs, on the holder, when enabled)",
                )
        elif cloud == self.holder:
            if via != "rofr-accepted" or answer != "accepted":
                raise _Bad("rofr-order", f"{job.name} placed on the holder via {via} after {answer} (needs an accepted offer)")
        else:
            if answer == "accepted":
                raise _Bad("rofr-order", f"{job.name} placed on {cloud} although {self.holder} accepted it in attempt {attempt}")
            if VIA_FOR_ANSWER.get(answer) != via:
                raise _Bad("rofr-order", f"{job.name} placed on {cloud} via {via} after the holder {answer}")
            if answer == "lapsed" and self.on_lapse == "queue":
                raise _Bad("rofr-order", f"{job.name} spilled to {cloud} after a lapse, but the contract queues on lapse")
        # Rule 6: the placement matches the job.
        pool = self.pools.get(key)
        if pool is None:
            raise _Bad("placement-mismatch", f"{job.name} placed on unknown pool {_fmt(key)}")
        if rec.gpus != job.gpus or rec.gpu_type != job.gpu_type or rec.cls != job.cls:
            raise _Bad(
                "placement-mismatch",
                f"{job.name} placed as {rec.gpus}x {rec.gpu_type} {rec.cls}, submitted as {job.gpus}x {job.gpu_type} {job.cls}",
            )
        pins = self.pins.get(job.cls)
        if pins is not None and cloud not in pins:
            raise _Bad("pinned-class-off-pins", f"{job.cls} job {job.name} placed on {cloud}, pinned to {list(pins)}")
        if job.clouds is not None and cloud not in job.clouds:  # ``_allowed``, its pins half checked just above
            raise _Bad("placement-mismatch", f"{job.name} placed on {cloud}, outside its clouds {list(job.clouds or ())}")
        if job.regions is not None and key[1] not in job.regions:
            raise _Bad("placement-mismatch", f"{job.name} placed in {key[1]}, outside its regions {list(job.regions)}")
        if job.jurisdiction is not None and pool.jurisdiction != job.jurisdiction:
            raise _Bad("placement-mismatch", f"{job.name} placed in {pool.jurisdiction}, its jurisdiction is {job.jurisdiction}")
        if not self.backends[cloud].up:
            raise _Bad("placement-mismatch", f"{job.name} placed on {cloud} while it was down")
        if self.backends[cloud].cordoned:
            raise _Bad("placement-mismatch", f"{job.name} placed on {cloud} while it was cordoned")
        if pool.allocated + job.gpus > pool.capacity:
            raise _Bad("over-commit", f"{_fmt(key)} would hold {pool.allocated + job.gpus} GPUs of {pool.capacity}")
        pool.allocated += job.gpus
        job.state, job.pool, job.done_attempt, job.placed_attempt = "running", key, attempt, attempt
        job.placed_at = rec.at
        self.running_on.setdefault(key, {})[job.name] = job
        self.reservations.pop(job.name, None)

    def _outcome(self, job: _Job, attempt: int, cloud: str | None) -> None:
        """An attempt's one outcome (placed on ``cloud``, or queued: None) for a job awaiting it, after the holder's answer.

        The common case is one test; the wording of a violation is only built when there is one.
        """
        state = job.state
        if (
            (state == "pending" or state == "queued")
            and job.answer_attempt == attempt == job.attempt
            and job.done_attempt != attempt
        ):
            return
        what = "queued" if cloud is None else f"placed on {cloud}"
        unanswered_rule = "offer-missing" if cloud is None else "rofr-order"
        if job.state == "running":
            raise _Bad("double-placement", f"{job.name} {what} while already running on {_fmt(job.pool)}")
        if job.state not in ("pending", "queued"):
            raise _Bad("double-placement", f"{job.name} {what} after it was {job.state}")
        if job.answer_attempt != attempt or attempt != job.attempt:
            raise _Bad(unanswered_rule, f"{job.name} {what} in attempt {attempt} without a holder answer in that attempt")
        if job.done_attempt == attempt:
            raise _Bad("attempt-order", f"attempt {attempt} of {job.name} already had its outcome")

    def _on_queued(self, rec: Rec) -> None:
        job = self._job(rec.job)
        attempt = rec.attempt
        self._outcome(job, attempt, None)
        if job.answer == "accepted":
            raise _Bad("rofr-order", f"{job.name} queued although {self.holder} accepted it in attempt {attempt}")
        job.state, job.done_attempt = "queued", attempt

    def _on_released(self, rec: Rec) -> None:
        """Rule 8: only a running job is released, for one of the end reasons."""
        job = self.jobs.get(rec.job)
        if job is None:
            raise _unknown(rec.job)
        if rec.reason not in END_REASONS:
            raise _Bad("release-not-running", f"{job.name} released for {rec.reason!r} (finished, failed, stopped or cancelled)")
        key = (rec.cloud, rec.region, rec.gpu_type)
        if job.state == "running" and key == job.pool and rec.gpus == job.gpus:  # ``_leave``'s common case, inlined
            self.pools[key].allocated -= job.gpus
            del self.running_on[key][job.name]
            job.pool = None
        else:
            self._leave(job, rec, "released")
        job.state = rec.reason

    def _on_dequeued(self, rec: Rec) -> None:
        job = self._job(rec.job)
        if job.state != "queued" and job.state != "pending":  # pending: evicted, then refused by a reloaded contract
            raise _Bad("release-not-running", f"{job.name} dequeued while {job.state}")
        if rec.reason not in DEQUEUE_REASONS:
            raise _Bad("release-not-running", f"{job.name} dequeued for {rec.reason!r} (cancelled or stopped)")
        job.state = rec.reason
        self.reservations.pop(job.name, None)

    def _on_bound(self, rec: Rec) -> None:
        job = self._job(rec.job)
        if job.state != "running" or rec.attempt != job.placed_attempt:
            raise _Bad(
                "attempt-order",
                f"{job.name} bound for attempt {rec.attempt}, but it is {job.state} (attempt {job.placed_attempt})",
            )

"""Rules 2-4: every attempt offers the holder first, on the contract's terms, and the holder's
answer is the one the records imply (capacity, rules, window, match terms)."""

from __future__ import annotations

from scheduler.invariants.base import CheckerBase
from scheduler.invariants.model import _NO_COMPETITOR, _UNSET, TOLERANCE, Rec, _Bad, _evidence, _Job, _PoolState, _unknown
from scheduler.specs import declines_at_discretion


class RofrRules(CheckerBase):
    def _expected_answer(self, job: _Job, now: float) -> tuple[str, str, str | _PoolState]:
        """Rule 4, the holder's gate in order: (answer, reason, evidence) from the rebuilt state.

        An acceptance's evidence is the pool that fits, worded by ``_evidence`` only if a
        violation needs it (formatting it for every accepted offer was a measurable cost).
        """
        hb = self.backends[self.holder]
        if not hb.up:
            return "lapsed", "backend-down", f"{hb.name} was down"
        if hb.response > self.window:
            return "lapsed", "no-answer-within-window", f"{hb.name} answers in {hb.response:g}s > {self.window:g}s window"
        if hb.cordoned:
            return "declined", "cordoned", f"{hb.name} was cordoned"
        if job.gpu_type in hb.decline_types:
            return "declined", "gpu-type-not-offered", f"{hb.name} declines {job.gpu_type}"
        if hb.max_gang is not None and job.gpus > hb.max_gang:
            return "declined", "gang-too-large", f"{job.gpus} > maxGangGpus {hb.max_gang}"
        keep = 0.0 if job.cls == "api-serving" else hb.api_fraction
        api_reserve = reserved = False
        fit: _PoolState | None = None
        reservations = self.reservations
        candidates = self._candidates.get(
            (self.holder, job.gpu_type, job.regions, job.jurisdiction)
        )  # ``_candidates_on``'s cache
        if candidates is None:
            candidates = self._candidates_on(job, self.holder)
        gpus = job.gpus
        for p in candidates:
            allocated = p.allocated
            if p.capacity - allocated < gpus:
                continue
            if reservations and self._reserved_against(job, p.key, now, keep):
                reserved = True
                continue
            if keep > 0.0 and allocated + gpus > p.api_limit:  # ``int(p.capacity * (1.0 - keep))``: keep is p's cloud's
                api_reserve = True
                continue
            fit = p
            break
        if fit is None:
            if api_reserve:
                return "declined", "reserved-for-api-serving", "only the API share was free"
            if reserved:
                return "declined", "reserved-for-queued-job", "the free pools were reserved"
            return "declined", "no-capacity", "no holder pool had room"
        if declines_at_discretion(hb.decline_fraction, hb.decline_seed, job.name, now):
            return "declined", "at-discretion", f"declineFraction {hb.decline_fraction:g}: this offer's draw declines it"
        if self.mode == "match":
            c_price, c_cloud = job.competing
            if c_price is not None:
                start = next((q[3] for q in job.quotes if q[0] == c_cloud and q[2] == c_price), None)
                if start is not None and start < hb.startup:
                    return "declined", "cannot-match-start", f"competing start {start:g}s < startup {hb.startup:g}s"
                if c_price < hb.price.get(job.gpu_type, fit.price):
                    if c_price < hb.floors.get(job.gpu_type, 0.0):
                        return "declined", "below-price-floor", f"competing ${c_price:g} below the floor"
                    return "accepted", "matched", fit
        return "accepted", "accepted", fit

    def _on_quoted(self, rec: Rec) -> None:
        job = self.jobs.get(rec.job)
        if job is None:
            raise _unknown(rec.job)
        attempt = rec.attempt
        if attempt != job.attempt:
            self._new_attempt(job, attempt, "quoted")
        elif job.quoted_attempt == attempt:
            raise _Bad("attempt-order", f"second quoted record for {job.name} attempt {attempt}")
        job.quoted_attempt = attempt
        quotes = rec.quotes
        job.quotes = quotes if type(quotes) is tuple else list(quotes)  # an event's tuple is immutable: no copy

    def _on_offered(self, rec: Rec) -> None:
        """Rule 2: a fresh offer per attempt, from the current holder, on the contract's terms."""
        job = self.jobs.get(rec.job)  # ``_job`` inlined in the handlers every job goes through
        if job is None:
            raise _unknown(rec.job)
        attempt = rec.attempt
        if rec.holder != self.holder:
            raise _Bad("answer-not-holder", f"{job.name} offered to {rec.holder}, but the holder is {self.holder}")
        if self.mode == "match":
            if job.quoted_attempt != attempt or attempt != job.attempt:
                raise _Bad("offer-missing", f"match mode: {job.name} attempt {attempt} offered without its quotes first")
        elif attempt != job.attempt:
            if attempt > job.attempt and (job.state == "pending" or job.state == "queued"):
                job.attempt = attempt  # ``_new_attempt`` inlined: every job's first offer
            else:
                self._new_attempt(job, attempt, "offered")
        if job.offered_attempt == attempt:
            raise _Bad("attempt-order", f"second offer of {job.name} in attempt {attempt}")
        job.offered_attempt = attempt
        window = rec.window_seconds
        if rec.mode != self.mode or (window != self.window and abs(window - self.window) > TOLERANCE):
            raise _Bad(
                "offer-terms",
                f"offer of {job.name} says {rec.mode}/{rec.window_seconds}s, contract says {self.mode}/{self.window}s",
            )
        blocked = self._blocked.get((job.cls, job.gpu_type, job.regions, job.jurisdiction), _UNSET)  # ``_holder_blocked``'s cache
        if blocked is _UNSET:
            blocked = self._holder_blocked(job)
        if blocked is not None:
            raise _Bad("offer-terms", f"{job.name} offered to {self.holder} although {blocked} rules it out")
        c_price, c_cloud = rec.competing_price, rec.competing_cloud
        job.competing = _NO_COMPETITOR if c_price is None and c_cloud is None else (c_price, c_cloud)
        if self.mode == "match":
            quotes = job.quotes
            if not quotes:
                if c_price is not None or c_cloud is not None:
                    raise _Bad("offer-terms", f"offer of {job.name} names a competing quote that was never made")
                return
            named = [q for q in quotes if q[0] == c_cloud and q[2] == c_price]
            if not named:
                raise _Bad("offer-terms", f"offer of {job.name} names {c_cloud} at {c_price}, which is not among its quotes")
            if self.spill == "price-first" and c_price > min(q[2] for q in quotes):
                raise _Bad("offer-terms", f"offer of {job.name} names {c_cloud} at ${c_price}, not the best (lowest-price) quote")
            if self.spill == "start-first" and named[0][3] > min(q[3] for q in quotes):
                raise _Bad("offer-terms", f"offer of {job.name} names {c_cloud}, not the best (earliest-start) quote")
            if self.spill == "weighted":
                wp, ws = self.weights
                if min(wp * q[2] + ws * q[3] for q in named) > min(wp * q[2] + ws * q[3] for q in quotes) + TOLERANCE:
                    raise _Bad("offer-terms", f"offer of {job.name} names {c_cloud}, not the best (weighted) quote")

    def _on_answered(self, rec: Rec) -> None:
        """Rules 2-4: the current holder answers each attempt once, and truthfully."""
        job = self.jobs.get(rec.job)
        if job is None:
            raise _unknown(rec.job)
        attempt, answer, reason = rec.attempt, rec.answer, rec.reason
        if rec.holder != self.holder:
            raise _Bad("answer-not-holder", f"answer for {job.name} recorded from {rec.holder}, but the holder is {self.holder}")
        if job.answer_attempt == attempt and attempt == job.attempt:
            raise _Bad("attempt-order", f"second answer for {job.name} in attempt {attempt}")
        if answer == "not-offered":
            if job.offered_attempt == attempt:
                raise _Bad("attempt-order", f"{job.name} attempt {attempt} was offered, yet answered not-offered")
            if attempt != job.attempt:
                self._new_attempt(job, attempt, "answered")
            job.answer_attempt, job.answer, job.reason = attempt, answer, reason
            if not self._skip_reason_holds(job, reason):
                raise _Bad(
                    "rofr-skipped", f"holder not offered {job.name} for {reason!r}, which the catalog and contract do not support"
                )
            return
        if job.offered_attempt != attempt or attempt != job.attempt:
            raise _Bad("offer-missing", f"{job.name} answered {answer} in attempt {attempt} without an offer in that attempt")
        job.answer_attempt, job.answer, job.reason = attempt, answer, reason
        expected, why, evidence = self._expected_answer(job, rec.at)
        if answer != expected or reason != why:
            raise _Bad(
                "holder-answer",
                f"{self.holder} {answer} {reason} for {job.name}, but the records say {expected} {why} ({_evidence(evidence, job)})",
            )
        want = self.window if answer == "lapsed" else self.backends[self.holder].response
        seconds = rec.response_seconds
        if seconds != want and abs(seconds - want) > TOLERANCE * (want if want > 1.0 else 1.0):
            raise _Bad(
                "holder-answer",
                f"{answer} for {job.name} records a {rec.response_seconds:g}s response; the records say {want:g}s",
            )

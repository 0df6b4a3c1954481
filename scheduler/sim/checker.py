"""The contract's checker for replays where the holder declines a share of offers at random.

A holder with ``holderRules.declineFraction > 0`` turns down, ``at-discretion``, some offers
it has room for (``scheduler.pipeline.offer``). The shared checker (``scheduler.invariants``)
re-derives every answer from the records and knows no such decline, so it would call each
one a false answer. This checker accepts an ``at-discretion`` decline exactly where the
records say the holder *could* have taken the job (the shared rules' answer is an acceptance,
or a match-mode refusal that only a fitting pool reaches) and the configuration in force
allows discretionary declines; anywhere else it is the same violation as before. Every other
rule (ROFR before any spill, pins, preemption, capacity) is the shared checker's, unchanged:
a declined movable job must still show the decline before it spills, and a pinned one still
never leaves the holder.

Which offers are declined is not re-derived: the draws follow the engine's own sequence of
attempts, some of which it drops (a queued job that would only queue again). The decline
*rate* is a statistical property the tests check (tests/sim/test_decline.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from scheduler.invariants import InvariantChecker

AT_DISCRETION = "at-discretion"
#: the shared rules' answers that mean a holder pool fitted the job (it had room to accept)
_FITTED = frozenset({("accepted", "accepted"), ("accepted", "matched"), ("declined", "cannot-match-start"), ("declined", "below-price-floor")})


@dataclass
class DiscretionChecker(InvariantChecker):
    """``InvariantChecker`` that also accepts the holder's declines at discretion where it had room."""

    HANDLERS: ClassVar[dict[str, Any]] = {}
    _answer_reason: str = ""
    _fractions: dict[str, float] | None = None

    def _on_configured(self, rec: Any) -> None:
        super()._on_configured(rec)
        catalog = rec.catalog
        self._fractions = {b["name"]: float(b.get("holderRules", {}).get("declineFraction", 0.0)) for b in catalog["spec"]["backends"]}

    def _on_answered(self, rec: Any) -> None:
        self._answer_reason = rec.reason
        try:
            super()._on_answered(rec)
        finally:
            self._answer_reason = ""

    def _expected_answer(self, job: Any, now: float) -> tuple[str, str, Any]:
        expected = super()._expected_answer(job, now)
        if self._answer_reason == AT_DISCRETION and (expected[0], expected[1]) in _FITTED and (self._fractions or {}).get(self.holder, 0.0) > 0.0:
            return "declined", AT_DISCRETION, expected[2]
        return expected


DiscretionChecker.HANDLERS = {
    **InvariantChecker.HANDLERS,
    "configured": DiscretionChecker._on_configured,
    "answered": DiscretionChecker._on_answered,
}

"""The independent checker: rebuild the state from the records and re-derive every answer.

It shares no code with the engine's decision path. From the records alone it rebuilds
the configuration in force (catalog, contract, holder), every pool's capacity and
allocation, each backend's up/down state and response time, the running jobs, the queue
and the reservations, and then re-derives what the contract demands of each record (the
rules of TEAM.md section 5, numbered below). The same checker proves a ledger
(``mcsched audit verify``), watches the live stream (``mcsched_contract_violations_total``)
and judges the simulator and the randomised tests, so it is written for speed: records
are plain dicts (decoded JSON or ``Event.to_record()``), state is a few dicts and slots.
"""

from __future__ import annotations

from scheduler.invariants.eviction import EvictionRules
from scheduler.invariants.model import RULES, Violation
from scheduler.invariants.placement import PlacementRules
from scheduler.invariants.plans import PlanRules
from scheduler.invariants.rofr import RofrRules

__all__ = ["RULES", "InvariantChecker", "Violation"]


class InvariantChecker(RofrRules, PlacementRules, EvictionRules, PlanRules):
    """Every rule group over one state (``CheckerBase``)."""


InvariantChecker.HANDLERS = {
    "configured": InvariantChecker._on_configured,
    "reconfigured": InvariantChecker._on_reconfigured,
    "submitted": InvariantChecker._on_submitted,
    "quoted": InvariantChecker._on_quoted,
    "offered": InvariantChecker._on_offered,
    "answered": InvariantChecker._on_answered,
    "placed": InvariantChecker._on_placed,
    "queued": InvariantChecker._on_queued,
    "preempted": InvariantChecker._on_preempted,
    "released": InvariantChecker._on_released,
    "dequeued": InvariantChecker._on_dequeued,
    "bound": InvariantChecker._on_bound,
    "backend-changed": InvariantChecker._on_backend_changed,
    "capacity-changed": InvariantChecker._on_capacity_changed,
    "cordoned": InvariantChecker._on_cordoned,
    "reserved": InvariantChecker._on_reserved,
    "reservation-cleared": InvariantChecker._on_reservation_cleared,
}

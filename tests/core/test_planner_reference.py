"""The planner against its executable reference (tests/reference.py) on random worlds.

Each world is a small catalog and contract and forty requests: submissions (names reused
after jobs end), ends, cancels, outages and slow holders, shrinks and growth, contract
reloads, the clock moving (so running work ends early, on time or late), and restores of the
engine under test from its own events at random committed boundaries. The engine must emit
exactly the reference's event stream, tie-breaks included, and every stream must satisfy the
independent invariant checker. 1,000 worlds in the quick profile, 10,000 in the full run,
with planning depths 0, 1, 3 and 8 in turn.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from scheduler.clock import ManualClock
from scheduler.engine import Engine
from scheduler.events import EVENT_TYPES, RUNTIME_KINDS, event_from_record
from scheduler.invariants import InvariantChecker
from scheduler.specs import CloudCatalog, Contract
from tests.core.worlds import a_world, run_world
from tests.reference import reference_replan

#: Planning depths, one per world in turn: mostly 3 (small worlds reach it), and the edges
#: (no planned starts at all, one, more than a small world queues).
DEPTHS = (3, 3, 1, 0, 8)


def real(depth: int) -> Callable[[CloudCatalog, Contract, ManualClock], Engine]:
    return lambda catalog, contract, clock: Engine(catalog, contract, clock, plan_depth=depth)


def reference(depth: int) -> Callable[[CloudCatalog, Contract, ManualClock], Engine]:
    return lambda catalog, contract, clock: Engine(catalog, contract, clock, plan_depth=depth, replan=reference_replan)


def check_seeds(seeds: range) -> None:
    kinds: set[str] = set()
    for seed in seeds:
        world = a_world(seed)
        depth = DEPTHS[seed % len(DEPTHS)]
        got = run_world(world, real(depth), restores=True)
        want = run_world(world, reference(depth), restores=False)
        if got != want:
            first = next((i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b), min(len(got), len(want)))
            pytest.fail(
                f"world {seed} (planning depth {depth}): the engine diverges from the reference at event {first}:\n"
                f"  engine:    {got[first] if first < len(got) else 'nothing'}\n  reference: {want[first] if first < len(want) else 'nothing'}"
            )
        checker = InvariantChecker()
        for i, rec in enumerate(got):
            kind = rec["kind"]
            checker.feed(event_from_record(kind, {k: v for k, v in rec.items() if k != "kind"}), i)
        checker.finish()
        assert not checker.violations, f"world {seed}: {checker.violations[:3]}"
        kinds.update(rec["kind"] for rec in got)
    missing = set(EVENT_TYPES) - kinds - {"bound"} - RUNTIME_KINDS  # the runtime's, not the engine's
    assert not missing, f"the worlds never produced {sorted(missing)}: they test too little"


def test_the_planner_matches_the_reference_on_1000_worlds() -> None:
    check_seeds(range(1_000))


@pytest.mark.slow
@pytest.mark.timeout(1800)  # about 2 min alone; a loaded 2-core host can take several times that
def test_the_planner_matches_the_reference_on_9000_more_worlds() -> None:
    check_seeds(range(1_000, 10_000))

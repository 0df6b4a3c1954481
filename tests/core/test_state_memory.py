"""What the books cost per waiting job: a long queue must fit the scheduler's memory budget
(benchmarks/soak.py: under 300 MB with 100k jobs pending), so equal explanations are kept once."""

from __future__ import annotations

import gc
import tracemalloc

from scheduler.clock import ManualClock
from scheduler.core.state import SharedValues
from scheduler.engine import Engine
from scheduler.loading import load_catalog, load_contract
from scheduler.model import Job
from scheduler.paths import default_catalog, default_contract

#: Measured here: ~740 bytes per queued job with shared explanations, ~1,830 when each job
#: kept its own copy of the same strings and tuples.
BUDGET_BYTES_PER_QUEUED_JOB = 1_200


def full_engine() -> Engine:
    """The shipped catalog with every H100 taken, so what comes next queues."""
    catalog = load_catalog(default_catalog())
    engine = Engine(catalog, load_contract(default_contract(), catalog), ManualClock())
    n = 0
    while True:
        engine.post(Job(f"fill-{n}", "training", 8, "H100"))
        if engine.jobs[f"fill-{n}"].state != "running":
            engine.end(f"fill-{n}", "cancelled")
            return engine
        n += 1


def test_a_queued_job_costs_a_bounded_number_of_bytes_however_many_wait_for_the_same_reason() -> None:
    engine = full_engine()
    batch = [Job(f"q-{i}", "training", 8, "H100", duration_hours=float(1 + i % 7)) for i in range(3_000)]
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        engine.place_many(batch)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    decisions = [engine.status(job.name) for job in batch[:2]]
    assert all(d.outcome == "queued" for d in decisions), decisions
    assert decisions[0].detail == decisions[1].detail and "no-capacity" in decisions[0].detail  # the same reason, shown in full
    per_job = (after - before) / len(batch)
    assert per_job < BUDGET_BYTES_PER_QUEUED_JOB, f"{per_job:.0f} bytes per queued job"


def test_shared_values_keeps_one_copy_of_equal_values_and_stays_bounded() -> None:
    def why(free: int) -> tuple[str, str]:  # built at run time, as the engine builds them
        return ("aws", f"no-capacity: H100 {free} free, 8 needed")

    table = SharedValues(limit=3)
    first, again = why(0), why(0)
    assert first is not again
    assert table.share(first) is first and table.share(again) is first
    for i in range(10):  # more distinct values than the limit: the table restarts instead of growing
        assert table.share(("gcp", str(i))) == ("gcp", str(i))
    assert table.share(why(0)) == first

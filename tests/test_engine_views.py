"""``Engine.decisions``: every job's view at one moment, the same as asking ``status`` job by job."""

from __future__ import annotations

from scheduler.engine import Engine
from scheduler.model import Job
from tests.builders import a_contract, a_job, two_clouds


def test_decisions_are_the_statuses_of_every_job_as_of_now() -> None:
    from scheduler.clock import ManualClock

    engine = Engine(two_clouds(azure_h100=16, oci_h100=16), a_contract(), ManualClock(), plan_depth=1)
    jobs: list[Job] = [a_job().named(f"j{i}").gpus(8 if i % 3 else 16).priority(i % 4).obj() for i in range(12)]
    engine.post_many(jobs)
    views = engine.decisions()
    assert views == [engine.status(j.name) for j in jobs]
    assert {d.outcome for d in views} == {"placed", "queued"}
    # queued jobs with and without a planned start, and unplanned ones of one signature share their reason
    waits = {d.waiting for d in views if d.outcome == "queued"}
    assert any(w and w.startswith("planned start") for w in waits) and any(w and w.startswith("no planned start") for w in waits)
    # the answer follows the state: a cloud going down changes what unplanned jobs wait for
    engine.set_backend("oci", up=False)
    views = engine.decisions()
    assert views == [engine.status(j.name) for j in jobs]
    assert any(d.waiting and "oci is down" in d.waiting for d in views)

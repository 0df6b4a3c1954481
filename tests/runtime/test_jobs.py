"""``mcsched submit``'s side of the Jobs API, without Ray: a name that already has a live Ray job is refused."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from scheduler.errors import AdmissionError
from scheduler.runtime.jobs import refuse_live_duplicates
from scheduler.specs import JobDoc
from tests.integration.conftest import job_doc


class FakeJobs:
    def __init__(self, *jobs: tuple[str | None, str]) -> None:
        self.jobs = [SimpleNamespace(submission_id=sid, status=SimpleNamespace(value=status)) for sid, status in jobs]

    def list_jobs(self) -> list[SimpleNamespace]:
        return self.jobs


def docs(*names: str) -> list[JobDoc]:
    return [JobDoc.model_validate(job_doc(n)) for n in names]


def test_a_name_with_a_live_ray_job_refuses_the_whole_batch() -> None:
    """Submitted twice, the second driver adopted the first's placement and died on its gang's name
    (a traceback in the Ray job's log) while `mcsched submit` exited 0."""
    live = FakeJobs(("mcsched-my-train-0a1b2c", "RUNNING"), ("mcsched-other-ffffff", "PENDING"))
    with pytest.raises(AdmissionError) as exc:
        refuse_live_duplicates(live, docs("fresh", "my-train"))
    assert exc.value.exit_code == 2 and str(exc.value) == (
        "job 'my-train' is already submitted (Ray job mcsched-my-train-0a1b2c, RUNNING): cancel it first (mcsched cancel my-train) or use another name"
    )


def test_ended_jobs_other_names_and_foreign_ray_jobs_do_not_count() -> None:
    jobs = FakeJobs(
        ("mcsched-my-train-0a1b2c", "SUCCEEDED"),  # ended: the name may be used again (docs/queueing.md)
        ("mcsched-my-train-2-0a1b2c", "RUNNING"),  # another job, whose name starts the same
        ("raysubmit_abc", "RUNNING"),  # not submitted by mcsched
        (None, "RUNNING"),  # a driver run by hand
    )
    refuse_live_duplicates(jobs, docs("my-train"))

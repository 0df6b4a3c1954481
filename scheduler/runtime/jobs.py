"""``mcsched submit``: each Job document becomes one Ray job (Jobs SDK) running the mcsched driver.

The job's spec travels as the Ray job's working directory (one ``job.yaml``), so the driver
on the cluster runs exactly ``python -m scheduler run job.yaml`` - the same command a user
gives ``ray job submit``. Ray is imported only here, after the caller has put the cluster's
token into the environment (importing ray fixes its auth settings).
"""

from __future__ import annotations

import logging
import re
import tempfile
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from scheduler.errors import AdmissionError
from scheduler.runtime.cluster import jobs_client
from scheduler.specs import JobDoc

ENTRYPOINT = "python -m scheduler run job.yaml"
#: The submission id ``submit_jobs`` gives a job's Ray job: its name and six hex digits.
SUBMISSION_ID = re.compile(r"^mcsched-(?P<name>.+)-[0-9a-f]{6}$")
LIVE = ("PENDING", "RUNNING")


def refuse_live_duplicates(client: Any, docs: Sequence[JobDoc]) -> None:
    """Refuse the whole batch when one of its names already has a live Ray job of ours: its driver
    would adopt the running job's placement and fail on its gang (a second Ray job of one mcsched
    job), or the scheduler would refuse it only in that Ray job's log, after `submit` said nothing."""
    names = {d.metadata.name for d in docs}
    for job in client.list_jobs():
        m = SUBMISSION_ID.match(job.submission_id or "")
        status = str(getattr(job.status, "value", job.status))
        if m and m.group("name") in names and status in LIVE:
            name = m.group("name")
            raise AdmissionError(
                f"job {name!r} is already submitted (Ray job {job.submission_id}, {status}): cancel it first (mcsched cancel {name}) or use another name"
            )


def submit_jobs(docs: Sequence[JobDoc], url: str, on_submitted: Callable[[str, str], None]) -> list[str]:
    """Submit every job to the Jobs API at ``url``; calls ``on_submitted(name, submission_id)`` as each lands."""
    client = jobs_client(url)
    refuse_live_duplicates(client, docs)
    # "Uploading package ..." for every job is noise here; Ray sets these loggers to INFO on import.
    for name in ("ray.dashboard.modules.dashboard_sdk", "ray._private.runtime_env.packaging"):
        logging.getLogger(name).setLevel(logging.WARNING)
    ids: list[str] = []
    with tempfile.TemporaryDirectory(prefix="mcsched-submit-") as root:
        for i, doc in enumerate(docs):
            work = Path(root, str(i))
            work.mkdir()
            (work / "job.yaml").write_text(yaml.safe_dump(doc.model_dump(mode="json", by_alias=True, exclude_none=True)))
            sid = client.submit_job(
                entrypoint=ENTRYPOINT,
                runtime_env={"working_dir": str(work)},
                submission_id=f"mcsched-{doc.metadata.name}-{uuid.uuid4().hex[:6]}",
            )
            ids.append(sid)
            on_submitted(doc.metadata.name, sid)
    return ids

"""One state vocabulary: what each mcsched job state is in Ray's Jobs API.

A job run through ``ray job submit -- python -m scheduler run job.yaml`` has two states, the
scheduler's (``mcsched status``) and its Ray job's (``ray job list``). They must tell the same
story, so the driver makes Ray's follow the books:

========================  ======================  =================================================
mcsched (``outcome``)      Ray job status           how
========================  ======================  =================================================
(not yet submitted)        ``PENDING``              Ray has not started the driver
``queued``                 ``RUNNING``              the driver waits in mcsched's queue, holding nothing
``placed``                 ``RUNNING``              the driver runs the work in its placement group
``finished``               ``SUCCEEDED``            the driver exits 0
``failed``                 ``FAILED``               the driver exits 1 (or the work's own code)
``cancelled``              ``STOPPED``              ``mcsched cancel``: the driver stops its own Ray job
``stopped``                ``STOPPED``              ``ray job stop``: Ray stops the driver
========================  ======================  =================================================

A driver that is not a Ray job (a plain ``python -m scheduler run`` in a shell) has no Ray
job to stop: it exits with ``EXIT_CODES["cancelled"]`` (130) instead.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable

#: mcsched outcome -> the Ray JobStatus its driver's Ray job shows.
RAY_JOB_STATUS: dict[str, str] = {
    "queued": "RUNNING",
    "placed": "RUNNING",
    "finished": "SUCCEEDED",
    "failed": "FAILED",
    "cancelled": "STOPPED",
    "stopped": "STOPPED",
}
#: The driver's exit code per ending (a Ray job that exits non-zero is FAILED, unless stopped).
EXIT_CODES = {"finished": 0, "failed": 1, "cancelled": 130, "stopped": 143}
#: How long a cancelled driver waits for Ray's SIGTERM after asking Ray to stop its job; Ray
#: marks the job STOPPED only if the driver is still running when the stop arrives.
STOP_WAIT_SECONDS = 20.0
#: Where Ray's job supervisor passes the job's config (runtime env, metadata) to the driver.
_JOB_CONFIG_VAR = "RAY_JOB_CONFIG_JSON_ENV_VAR"


def submission_id(environ: dict[str, str] | None = None) -> str | None:
    """This driver's Ray job submission id, or None when it is not running as a Ray job.

    Ray's job supervisor hands the driver its job config, whose metadata carries the
    submission id (``job_submission_id``), as every Ray job's ``JobConfig`` does.
    """
    raw = (environ if environ is not None else os.environ).get(_JOB_CONFIG_VAR)
    if not raw:
        return None
    try:
        sid = json.loads(raw).get("metadata", {}).get("job_submission_id")
    except (ValueError, AttributeError):
        return None
    return sid if isinstance(sid, str) and sid else None


def stop_own_ray_job(stopped: Callable[[], bool], *, wait: float = STOP_WAIT_SECONDS, sleep: Callable[[float], None] = time.sleep) -> bool:
    """Ask Ray's Jobs API to stop this driver's own Ray job, then wait for its SIGTERM
    (``stopped()`` turns true) so that Ray records STOPPED. False if this is not a Ray job
    or the Jobs API would not stop it (the caller then exits with its own code)."""
    sid = submission_id()
    if sid is None:
        return False
    from ray.job_submission import JobSubmissionClient

    try:
        # No address: Ray resolves the Jobs API from RAY_ADDRESS, the GCS address it gave this driver.
        if not JobSubmissionClient().stop_job(sid):
            return False
    except Exception:  # the dashboard is down: the books are right, Ray will say FAILED
        return False
    deadline = time.monotonic() + wait
    while not stopped() and time.monotonic() < deadline:
        sleep(0.1)
    return stopped()

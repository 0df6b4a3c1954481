"""The state vocabulary without Ray: the table, the exit codes, and a driver finding its Ray job."""

from __future__ import annotations

import json

from scheduler.runtime.states import EXIT_CODES, RAY_JOB_STATUS, stop_own_ray_job, submission_id


def test_every_ending_has_one_ray_status_and_an_exit_code_that_agrees() -> None:
    assert set(RAY_JOB_STATUS) == {"queued", "placed", *EXIT_CODES}
    for ending, code in EXIT_CODES.items():
        # Ray calls a driver that exits 0 SUCCEEDED and non-zero FAILED, unless it was stopped.
        assert RAY_JOB_STATUS[ending] == ("SUCCEEDED" if code == 0 else "FAILED" if ending == "failed" else "STOPPED")


def test_a_driver_finds_its_submission_id_in_the_job_config_ray_gives_it() -> None:
    config = {"runtime_env": {}, "metadata": {"job_submission_id": "raysubmit_abc", "job_name": "raysubmit_abc"}}
    assert submission_id({"RAY_JOB_CONFIG_JSON_ENV_VAR": json.dumps(config)}) == "raysubmit_abc"
    assert submission_id({}) is None
    assert submission_id({"RAY_JOB_CONFIG_JSON_ENV_VAR": "{not json"}) is None
    assert submission_id({"RAY_JOB_CONFIG_JSON_ENV_VAR": json.dumps({"metadata": {}})}) is None


def test_outside_a_ray_job_there_is_nothing_to_stop(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    assert stop_own_ray_job(lambda: False, wait=0) is False

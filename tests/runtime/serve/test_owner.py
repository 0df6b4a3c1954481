"""The scheduler actor owns served models (serve/owner.py through SchedulerService, no Ray):
a service outlives the caller that asked for it, and a restarted actor resumes it from its file."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from scheduler.runtime.serve.owner import SERVING_FILE
from scheduler.runtime.service import SchedulerService
from tests.builders import a_contract, two_clouds

SERVED = {
    "apiVersion": "mcsched.io/v1",
    "kind": "Job",
    "metadata": {"name": "chat"},
    "spec": {"class": "api-serving", "gpuType": "H100", "priority": 100,
             "serve": {"model": "tiny", "gpusPerReplica": 2, "replicas": {"min": 1, "max": 2}}},
}


class FakeController:
    """Stands for controller.own_service: records how each run began and ends when told."""

    def __init__(self) -> None:
        self.runs: list[tuple[str, bool]] = []
        self.running = threading.Event()

    def __call__(self, doc: dict[str, Any], endpoint: tuple[str, int], say: Callable[[str], None], *,
                 resume: bool, stop: Callable[[], str | None]) -> str:
        self.runs.append((doc["metadata"]["name"], resume))
        say(f"{'resumed' if resume else 'serving'} {doc['spec']['serve']['model']} on port {endpoint[1]}")
        self.running.set()
        while (reason := stop()) is None:
            time.sleep(0.01)
        say(f"undeployed: {reason}")
        return reason


def service(path: Path, runner: FakeController) -> tuple[SchedulerService, asyncio.AbstractEventLoop]:
    svc = SchedulerService(
        two_clouds(azure_h100=8).model_dump(mode="json", by_alias=True),
        a_contract().model_dump(mode="json", by_alias=True),
        str(path / "ledger.db"),
        metrics_port=None,
        serve_runner=runner,
    )
    return svc, asyncio.new_event_loop()


def until_ended(svc: SchedulerService, loop: asyncio.AbstractEventLoop, job: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    got: dict[str, Any] = {}
    while time.monotonic() < deadline:
        got = loop.run_until_complete(svc.serve_follow(job, 0, 0.5))
        if got["ended"] is not None:
            return got
    raise AssertionError(f"{job} did not end: {got}")


def test_a_served_model_runs_in_the_actor_until_stopped_and_a_second_start_only_follows(tmp_path: Path) -> None:
    runner = FakeController()
    svc, loop = service(tmp_path, runner)
    first = loop.run_until_complete(svc.serve_start(SERVED, "127.0.0.1", 8123))
    assert first["ok"] and first["started"] is True and first["log"] == svc._served_models().log_id
    assert runner.running.wait(5)
    # The caller is gone (nothing holds the start call): the service still runs in the actor.
    assert loop.run_until_complete(svc.serving()) == {"chat": "serving"}
    again = loop.run_until_complete(svc.serve_start(SERVED, "127.0.0.1", 8123))
    assert again["ok"] and again["started"] is False and runner.runs == [("chat", False)]
    got = loop.run_until_complete(svc.serve_follow("chat", 0, 1.0))
    assert got["known"] and got["lines"] == ["serving tiny on port 8123"] and got["ended"] is None
    assert loop.run_until_complete(svc.serve_stop("chat", "stopped")) is True
    ended = until_ended(svc, loop, "chat")
    assert ended["ended"] == "stopped" and ended["lines"][-1] == "undeployed: stopped"
    assert loop.run_until_complete(svc.serve_stop("chat", "stopped")) is False  # nothing left to stop
    assert (tmp_path / SERVING_FILE).read_text() == "{}"  # an ended service is not resumed


def test_a_restarted_actor_resumes_the_services_it_owned_and_finishes_a_stop_it_was_doing(tmp_path: Path) -> None:
    first = FakeController()
    svc, loop = service(tmp_path, first)
    loop.run_until_complete(svc.serve_start(SERVED, "127.0.0.1", 8124))
    other = {**SERVED, "metadata": {"name": "chat2"}, "spec": {**SERVED["spec"], "serve": {**SERVED["spec"]["serve"], "model": "t2"}}}
    loop.run_until_complete(svc.serve_start(other, "127.0.0.1", 8124))
    deadline = time.monotonic() + 5
    while len(first.runs) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    # The actor dies (its threads with it) while chat2's stop was under way; a new one starts on the same state dir.
    # (The file as serve_stop leaves it, written here so that the first "actor"'s threads cannot act on the stop.)
    book = json.loads((tmp_path / SERVING_FILE).read_text())
    assert set(book) == {"chat", "chat2"} and book["chat"]["endpoint"] == ["127.0.0.1", 8124]
    book["chat2"]["stopping"] = "cancelled"
    (tmp_path / SERVING_FILE).write_text(json.dumps(book))
    second = FakeController()
    restarted, loop2 = service(tmp_path, second)
    assert loop2.run_until_complete(restarted.ping())["jobs"] == 0  # any first call recovers, and resumes serving
    assert second.running.wait(5)
    deadline = time.monotonic() + 5
    while len(second.runs) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sorted(second.runs) == [("chat", True), ("chat2", True)]
    assert until_ended(restarted, loop2, "chat2")["ended"] == "cancelled"
    assert loop2.run_until_complete(restarted.serving()) == {"chat": "serving", "chat2": "cancelled"}
    assert loop2.run_until_complete(restarted.serve_follow("chat", 0, 0.5))["lines"] == ["resumed tiny on port 8124"]
    loop2.run_until_complete(restarted.serve_stop("chat", "stopped"))
    until_ended(restarted, loop2, "chat")
    loop.run_until_complete(svc.serve_stop("chat", "stopped"))  # the first "actor"'s threads end too


def test_a_start_without_spec_serve_is_refused_with_its_field(tmp_path: Path) -> None:
    svc, loop = service(tmp_path, FakeController())
    plain = {**SERVED, "spec": {k: v for k, v in SERVED["spec"].items() if k != "serve"} | {"gpus": 2}}
    got = loop.run_until_complete(svc.serve_start(plain, "127.0.0.1", 8000))
    assert got == {"ok": False, "error": "spec.serve: required to serve a model", "started": False, "log": None}
    bad = {**SERVED, "spec": {**SERVED["spec"], "serve": {**SERVED["spec"]["serve"], "gpusPerReplica": "two"}}}
    assert loop.run_until_complete(svc.serve_start(bad, "127.0.0.1", 8000))["error"].startswith("spec.serve.gpusPerReplica")

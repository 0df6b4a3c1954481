"""Serving outlives its deployer (issue #28, item 9), on a real local Ray cluster with real Ray Serve.

The scheduler's detached actor owns the served model: `kill -9` of the Ray job driver that asked
for it changes nothing for clients; a restart of the actor resumes its controller, which adopts
the running replica (clients are answered throughout) and still obeys `mcsched cancel`.
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from scheduler.runtime.cluster import free_port
from tests.builders import a_catalog, a_contract
from tests.integration.conftest import Cluster, running, wait_for

pytestmark = pytest.mark.slow

CLUSTER_CATALOG = a_catalog().cloud("azure", {"eastus": {"H100": 4}}, price=3.4, latency=1).obj().model_dump(mode="json", by_alias=True)
CLUSTER_CONTRACT = a_contract(preemption=False).model_dump(mode="json", by_alias=True)
MODEL = "owned-llama"
SERVED = {
    "apiVersion": "mcsched.io/v1",
    "kind": "Job",
    "metadata": {"name": "owned"},
    "spec": {"class": "api-serving", "gpuType": "H100", "priority": 100,
             "serve": {"model": MODEL, "gpusPerReplica": 2, "replicas": {"min": 1, "max": 1}, "tokensPerSecond": 200}},
}
KEY: list[str] = []


def ask(url: str, path: str = "/v1/chat/completions") -> int:
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}).encode()
    req = urllib.request.Request(url + path, data=body, headers={"content-type": "application/json", "authorization": f"Bearer {KEY[0]}"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


def answers_for(url: str, seconds: float) -> Counter[int]:
    codes: Counter[int] = Counter()
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        codes[ask(url)] += 1
        time.sleep(0.2)
    return codes


def replicas(cluster: Cluster) -> dict[str, dict[str, Any]]:
    return {r["job"]: r for r in cluster.call("status", "owned") if r["job"].startswith("owned-r")}


@pytest.fixture(scope="module")
def served(cluster: Cluster) -> Iterator[tuple[str, str]]:
    """The model's URL and the Ray job id of the driver that asked for it."""
    from ray.job_submission import JobSubmissionClient

    KEY.append(cluster.mcsched("api-keys", "add", "owner-tests", "--rate", "1000").stdout.strip())
    work = cluster.state / "served"
    work.mkdir()
    (work / "api.yaml").write_text(yaml.safe_dump(SERVED))
    port = free_port()
    client = JobSubmissionClient(cluster.info.dashboard_url)
    sid = client.submit_job(entrypoint="python -m scheduler run api.yaml",
                            runtime_env={"working_dir": str(work), "env_vars": {"MCSCHED_SERVE_PORT": str(port)}})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: ask(url) == 200, 240, 1.0, "the served model to answer")
        yield url, sid
    finally:
        client.stop_job(sid)


def test_kill_9_of_the_deploying_driver_changes_nothing_for_clients(cluster: Cluster, served: tuple[str, str]) -> None:
    from ray.job_submission import JobStatus, JobSubmissionClient

    url, sid = served
    client = JobSubmissionClient(cluster.info.dashboard_url)
    assert "serving owned-llama for owned" in client.get_job_logs(sid)  # the driver prints the actor's controller lines
    info = client.get_job_info(sid)
    assert info.driver_info is not None
    pid = int(info.driver_info.pid)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not running(pid), 30, what="the driver gone")
    wait_for(lambda: client.get_job_status(sid) in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.SUCCEEDED), 60, what="the Ray job over")
    # Longer than two sweeps of the gateway (5 s each), which undeployed an orphaned service before.
    codes = answers_for(url, 12.0)
    assert set(codes) == {200}, codes
    assert {n: r["outcome"] for n, r in replicas(cluster).items()} == {"owned-r1": "placed"}
    assert cluster.call("serving") == {"owned": "serving"}


def test_an_actor_restart_resumes_the_service_clients_are_answered_throughout_and_cancel_still_works(
    cluster: Cluster, served: tuple[str, str]
) -> None:
    url, _ = served
    actor, ray = cluster.actor()
    old_pid = ray.get(actor.pid.remote(), timeout=30)
    ray.kill(actor, no_restart=False)  # Ray restarts it (max_restarts=-1); it recovers from the ledger and serving.json

    def new_pid() -> bool:
        try:
            return int(cluster.call("pid")) != old_pid
        except Exception:
            return False

    codes: Counter[int] = Counter()
    deadline = time.monotonic() + 120
    while not new_pid():
        assert time.monotonic() < deadline, "the actor did not restart"
        codes[ask(url)] += 1
    codes += answers_for(url, 6.0)  # and while the resumed controller adopts the replica
    assert set(codes) == {200}, codes
    assert cluster.call("serving") == {"owned": "serving"}
    resumed = cluster.call("serve_follow", "owned", 0, 0.0)
    assert any("resumed by the scheduler actor with 1 replica(s): owned-r1 ready" in line for line in resumed["lines"]), resumed
    assert {n: r["outcome"] for n, r in replicas(cluster).items()} == {"owned-r1": "placed"}  # adopted, not placed again
    # The resumed controller obeys a cancel: undeployed, released, its mailbox gone.
    cluster.mcsched("cancel", "owned")
    wait_for(lambda: ask(url) == 404, 90, 0.5, "the model undeployed")
    wait_for(lambda: cluster.call("serving") == {"owned": "cancelled"}, 60, what="the service ended")
    assert {r["outcome"] for r in replicas(cluster).values()} == {"cancelled"}
    wait_for(lambda: ray.available_resources().get("mcsched_azure__eastus__H100", 0) == 4, 60, what="Ray resources free again")
    with pytest.raises(ValueError):
        ray.get_actor("mcsched-serve:owned", namespace="mcsched")

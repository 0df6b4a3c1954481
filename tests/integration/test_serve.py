"""Served models on a real local Ray cluster with real Ray Serve, deployed through `ray job submit`.

One service for the whole module, in order: it answers from Azure (JSON and streaming),
shrugs off bad requests, refuses callers without a valid API key or over its rate, scales 1 -> >=2 under a burst and back after it, preempts
priority-0 training to scale up when Azure is full, and `ray job stop` releases it all.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from scheduler.ledger import Ledger
from scheduler.runtime.cluster import free_port
from tests.builders import a_catalog, a_contract
from tests.integration.conftest import NON_LOOPBACK_ALLOWED, Cluster, exposed, job_doc, listening, wait_for

pytestmark = pytest.mark.slow

# Azure holds 8 GPUs: four 2-GPU replicas at most; OCI takes what Azure gives up.
CLUSTER_CATALOG = (
    a_catalog()
    .cloud("azure", {"eastus": {"H100": 8}}, price=3.4, latency=1)
    .cloud("oci", {"us-ashburn-1": {"H100": 64}}, price=2.9, latency=1)
    .obj()
    .model_dump(mode="json", by_alias=True)
)
CLUSTER_CONTRACT = a_contract(preemption=True).model_dump(mode="json", by_alias=True)
MODEL = "tiny-llama"
SERVED = {
    "apiVersion": "mcsched.io/v1",
    "kind": "Job",
    "metadata": {"name": "chat"},
    "spec": {
        "class": "api-serving",
        "gpuType": "H100",
        "priority": 100,
        "serve": {"model": MODEL, "gpusPerReplica": 2, "replicas": {"min": 1, "max": 3},
                  "targetOngoingRequests": 2, "tokensPerSecond": 20, "scaleDownDelaySeconds": 3},
    },
}


KEYS: dict[str, str] = {}  # name -> key, made by `mcsched api-keys add` when the service starts


def post(
    url: str, body: bytes | dict[str, Any] | None, path: str = "/v1/chat/completions", key: str | None = "tests", method: str | None = None
) -> tuple[int, dict[str, str], bytes]:
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    headers = {"content-type": "application/json"}
    if key is not None:
        headers["authorization"] = f"Bearer {KEYS.get(key, key)}"
    req = urllib.request.Request(url + path, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


def chat(max_tokens: int = 8, **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": "Say something nice."}], "max_tokens": max_tokens, **extra}


def engine_rows(cluster: Cluster) -> dict[str, dict[str, Any]]:
    return {r["job"]: r for r in cluster.call("status", None)}


def replicas_placed(cluster: Cluster) -> dict[str, dict[str, Any]]:
    return {n: r for n, r in engine_rows(cluster).items() if n.startswith("chat-r") and r["outcome"] == "placed"}


def azure_used(cluster: Cluster) -> int:
    return sum(u["allocated"] for u in cluster.call("usage") if u["cloud"] == "azure")


@pytest.fixture(scope="module")
def service(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """The served model's URL and its Ray job id; `ray job stop`ped at the end if a test did not."""
    from ray.job_submission import JobSubmissionClient

    for name, rate in (("tests", "1000"), ("slow", "2")):
        KEYS[name] = cluster.mcsched("api-keys", "add", name, "--rate", rate).stdout.strip()
    work = tmp_path_factory.mktemp("served")
    (work / "api.yaml").write_text(yaml.safe_dump(SERVED))
    port = free_port()
    client = JobSubmissionClient(cluster.info.dashboard_url)
    sid = client.submit_job(
        entrypoint="python -m scheduler run api.yaml",
        runtime_env={"working_dir": str(work), "env_vars": {"MCSCHED_SERVE_PORT": str(port)}},
    )
    url = f"http://127.0.0.1:{port}"

    def answering() -> bool:
        try:
            return post(url, chat(1))[0] == 200
        except OSError:
            return False

    try:
        wait_for(answering, 180, 1.0, "the served model to answer")
        yield url, sid
    finally:
        client.stop_job(sid)


def test_served_model_answers_json_and_streams_from_azure(cluster: Cluster, service: tuple[str, str]) -> None:
    url, _ = service
    code, _, raw = post(url, None, "/v1/models", method="GET")
    assert code == 200 and [m["id"] for m in json.loads(raw)["data"]] == [MODEL]
    code, headers, body = post(url, chat(7))
    answer = json.loads(body)
    assert code == 200 and headers["x-mcsched-cloud"] == "azure" and headers["x-mcsched-region"] == "eastus"
    assert headers["x-mcsched-replica"] == "chat-r1"
    assert answer["usage"]["completion_tokens"] == 7 and answer["choices"][0]["finish_reason"] == "length"
    assert json.loads(post(url, chat(7))[2])["choices"] == answer["choices"]  # deterministic text
    code, headers, raw = post(url, {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 5, "stream": True,
                                    "stream_options": {"include_usage": True}}, "/v1/completions")
    events = [line[6:] for line in raw.decode().splitlines() if line.startswith("data: ")]
    assert code == 200 and headers["content-type"].startswith("text/event-stream") and headers["x-mcsched-cloud"] == "azure"
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert "".join(c["choices"][0]["text"] for c in chunks if c["choices"]).count(" ") == 4  # five words
    assert chunks[-1]["usage"] == {"prompt_tokens": 4, "completion_tokens": 5, "total_tokens": 9}
    # The books and Ray agree: one replica placed on Azure, its placement group holding the pool's resource.
    placed = replicas_placed(cluster)
    assert list(placed) == ["chat-r1"] and placed["chat-r1"]["cloud"] == "azure" and azure_used(cluster) == 2
    _, ray = cluster.actor()
    wait_for(lambda: ray.available_resources().get("mcsched_azure__eastus__H100", 0) == 6, 30, what="Ray holds the replica's 2 GPUs")


def test_bad_requests_get_4xx_and_the_next_good_request_succeeds(service: tuple[str, str]) -> None:
    url, _ = service
    bad = [
        (b"{not json", 400),
        (chat(-1), 400),
        (chat(10**9), 400),
        (chat("8"), 400),
        ({"model": MODEL, "messages": "hi"}, 400),
        ({"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]}, 404),
        (b"x" * (2 << 20), 413),
        (chat(3, max_tokenz=4), 400),  # strict: an unknown field is refused, named
        (b'{"model":"' + MODEL.encode() + b'","messages":' + b"[" * 1000 + b"]" * 1000 + b"}", 400),  # was a RecursionError 500
    ]
    for body, status in bad:
        code, headers, raw = post(url, body)
        err = json.loads(raw)["error"]
        assert code == status and err["message"] and err["type"] == "invalid_request_error", (body[:40], code, raw[:200])
        # Every response says who answered: here the gateway itself, no replica and so no cloud.
        assert (headers["x-mcsched-replica"], headers["x-mcsched-cloud"], headers["x-mcsched-region"]) == ("gateway", "none", "none")
    code, headers, _ = post(url, chat(3))
    assert code == 200 and headers["x-mcsched-cloud"] == "azure"
    code, _, raw = post(url, chat(3), "/v1/embeddings")  # an unknown path: our OpenAI 404, not Serve's text
    assert code == 404 and json.loads(raw)["error"]["message"] == "Invalid URL (POST /v1/embeddings)"


def _metric(cluster: Cluster, prefix: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{cluster.metrics_port}/metrics", timeout=10) as r:
        return sum(float(line.rsplit(" ", 1)[1]) for line in r.read().decode().splitlines() if line.startswith(prefix))


def test_api_keys_401_without_or_with_a_wrong_or_revoked_key_429_over_the_rate_and_all_counted(
    cluster: Cluster, service: tuple[str, str]
) -> None:
    url, _ = service
    for key, expect in ((None, "missing_api_key"), ("mcs-not-a-key", "invalid_api_key")):
        for path, body in (("/v1/chat/completions", chat(2)), ("/v1/models", None)):
            code, _, raw = post(url, body, path, key=key, method="GET" if body is None else None)
            assert code == 401 and json.loads(raw)["error"]["code"] == expect, (path, key, raw[:200])
    codes = Counter(post(url, chat(1), key="slow")[0] for _ in range(12))  # 2/s, burst 2: most are refused
    assert codes[429] >= 5 and set(codes) <= {200, 429}, codes
    code, headers, raw = post(url, chat(1), key="slow")
    if code == 429:
        assert int(headers["retry-after"]) >= 1 and json.loads(raw)["error"]["type"] == "requests"
    # Revoked: refused within the gateway's refresh, with no restart.
    cluster.mcsched("api-keys", "revoke", "slow")
    wait_for(lambda: post(url, chat(1), key="slow")[0] == 401, 30, 0.5, "the revoked key to be refused")
    assert post(url, chat(1))[0] == 200  # the other key still works
    # Every refusal reaches the exporter, by status, error code and key name (bounded).
    wait_for(lambda: _metric(cluster, 'mcsched_serve_errors_total{code="429",error="rate_limit_exceeded",key="slow"}') >= 5, 30,
             what="429s counted")
    assert _metric(cluster, 'mcsched_serve_errors_total{code="401",error="invalid_api_key",key="none"}') >= 2
    assert _metric(cluster, 'mcsched_serve_errors_total{code="400",error="invalid_json",key="tests"}') >= 1


def test_with_serve_running_only_the_stated_sockets_listen_off_loopback(cluster: Cluster, service: tuple[str, str]) -> None:
    """docs/serving.md states the exposure: with models served, only each Serve replica's
    inter-deployment gRPC server (one port per replica, Ray binds [::]:0) listens off loopback."""
    stated, unstated = exposed(cluster.info.temp_dir)
    assert not unstated, f"listening off loopback and not stated in docs/serving.md: {unstated}"
    titles = [title for _, _, title in stated]
    assert any("mcsched-gateway" in t for t in titles) and any("mcsched-chat-r1" in t for t in titles), stated  # measured, not vacuous
    assert len(titles) == len(set(titles)), f"a replica with more than one off-loopback port: {stated}"
    assert set(NON_LOOPBACK_ALLOWED) == {"ray::ServeReplica:"}
    # Serve's HTTP proxy (the endpoint) itself stays on loopback.
    port = int(service[0].rsplit(":", 1)[1])
    assert {ip for ip, p, _ in listening(cluster.info.temp_dir) if p == port} == {"127.0.0.1"}


def _series(cluster: Cluster) -> set[str]:
    """Every exported series (name and labels, no value) of mcsched, or an empty set while the exporter is down."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{cluster.metrics_port}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return set()
    return {line.rsplit(" ", 1)[0] for line in text.splitlines() if line.startswith("mcsched_") and "_created" not in line}


def test_every_series_returns_after_the_scheduler_actor_is_killed(cluster: Cluster, service: tuple[str, str]) -> None:
    url, _ = service
    wait_for(lambda: any(s.startswith("mcsched_serve_replicas{") for s in _series(cluster)), 30, what="replica gauge exported")
    before = _series(cluster)
    replicas = {s for s in before if s.startswith("mcsched_serve_replicas{") and 'model="tiny-llama"' in s}
    assert replicas and any(s.startswith("mcsched_serve_errors_total{") for s in before)
    actor, ray = cluster.actor()
    old_pid = ray.get(actor.pid.remote(), timeout=30)
    ray.kill(actor, no_restart=False)  # Ray restarts it (max_restarts=-1); it recovers from the ledger
    killed = time.monotonic()
    wait_for(lambda: (p := _pid(cluster)) is not None and p != old_pid, 120, 0.5, "the actor restarted")
    missing = lambda: before - _series(cluster)  # noqa: E731
    wait_for(lambda: not missing(), 60, 0.5, "every series back")
    print(f"every series back {time.monotonic() - killed:.1f}s after the kill ({len(before)} series)")
    assert post(url, chat(2))[0] == 200


def _pid(cluster: Cluster) -> int | None:
    try:
        return int(cluster.call("pid"))
    except Exception:
        return None


async def _burst(url: str, concurrency: int, until: Callable[[Counter[str]], bool], at_most: float = 150.0) -> Counter[str]:
    """Streams of 40 tokens at 20 tokens/s (2 s each), ``concurrency`` at a time, for at least
    10 s and until ``until(replicas seen)`` holds (a replica's start is slow on a busy machine)."""
    import aiohttp

    seen: Counter[str] = Counter()
    started = time.monotonic()

    def going() -> bool:
        elapsed = time.monotonic() - started
        return elapsed < 10 or (elapsed < at_most and not until(seen))

    async def worker(session: aiohttp.ClientSession) -> None:
        while going():
            async with session.post(url + "/v1/chat/completions", json=chat(40, stream=True)) as resp:
                assert resp.status == 200 and resp.headers["x-mcsched-cloud"] == "azure"
                seen[resp.headers["x-mcsched-replica"]] += 1
                async for _ in resp.content:
                    pass

    async with aiohttp.ClientSession(headers={"authorization": f"Bearer {KEYS['tests']}"}) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return seen


def test_a_burst_scales_up_on_azure_through_the_scheduler_and_back_down_after(cluster: Cluster, service: tuple[str, str]) -> None:
    url, _ = service
    seen = asyncio.run(_burst(url, 8, lambda seen: len(seen) >= 2))
    assert len(seen) >= 2, seen  # requests were answered by at least two replicas
    # Every replica the burst used was a placement on Azure, recorded in the ledger.
    events = list(Ledger(cluster.state / "ledger.db", readonly=True).events())
    placed = {e.job: e for e in events if e.kind == "placed" and e.job.startswith("chat-r")}
    assert set(seen) <= set(placed) and {e.cloud for e in placed.values()} == {"azure"}
    # After the burst: back to one replica after the cool-down, capacity released to the queue.
    wait_for(lambda: len(replicas_placed(cluster)) == 1, 150, 1.0, "scale back down to one replica")
    assert azure_used(cluster) == 2
    assert any(e.kind == "released" and e.job in seen and e.reason == "finished" for e in Ledger(cluster.state / "ledger.db", readonly=True).events())
    assert post(url, chat(2))[0] == 200


def test_scaling_up_on_a_full_azure_preempts_priority_0_training_which_moves(
    cluster: Cluster, service: tuple[str, str], tmp_path: Path
) -> None:
    from ray.job_submission import JobStatus, JobSubmissionClient

    url, _ = service
    client = JobSubmissionClient(cluster.info.dashboard_url)
    # Azure's other 6 GPUs go to a real priority-0 training Ray job (its driver holds them in Ray).
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(
        job_doc("filler", gpus=6, priority=0, workload={"steps": 2000, "stepSeconds": 0.25, "checkpointEvery": 4})
    ))
    sid = client.submit_job(entrypoint="python -m scheduler run train.yaml", runtime_env={"working_dir": str(tmp_path)})
    try:
        wait_for(lambda: "[filler] checkpoint saved at step 4" in client.get_job_logs(sid), 180, 1.0, "filler running on azure")
        assert "on azure/eastus" in client.get_job_logs(sid) and azure_used(cluster) == 8
        before = set(engine_rows(cluster))
        seen = asyncio.run(_burst(url, 8, lambda seen: bool(set(seen) - before)))
        assert set(seen) - before, seen  # a new replica answered
        events = list(Ledger(cluster.state / "ledger.db", readonly=True).events())
        pre = [e for e in events if e.kind == "preempted" and e.job == "filler"]
        assert pre and pre[0].by.startswith("chat-r") and pre[0].reason == "pinned-job"
        assert any(e.kind == "placed" and e.job == pre[0].by and e.via == "preemption" and e.cloud == "azure" for e in events)
        assert pre[0].by in seen  # the preempting replica answered requests from Azure
        # The training moved through the ROFR and carries on in the same Ray job, from its checkpoint.
        assert engine_rows(cluster)["filler"]["cloud"] == "oci"
        wait_for(lambda: "[filler] resuming from checkpoint at step" in client.get_job_logs(sid), 120, 1.0, "filler resumed on oci")
        log = client.get_job_logs(sid)
        assert "moved filler to oci/us-ashburn-1" in log and f"preempted by {pre[0].by}" in log
        # Graceful eviction: told to stop, the work checkpointed the step it was on (not only every
        # 4th) within the grace period, and resumed from exactly there on OCI.
        told = re.search(r"\[filler\] stop requested: checkpoint saved at step (\d+)", log)
        assert told and "filler: its work stopped" in log, log[-2000:]
        assert f"[filler] resuming from checkpoint at step {told[1]}" in log
        assert client.get_job_status(sid) == JobStatus.RUNNING
        resumed_at = log.index("[filler] resuming from checkpoint at step")
        assert " on oci/us-ashburn-1" in log[resumed_at:] and " on azure/" not in log[resumed_at:]
    finally:
        client.stop_job(sid)
    wait_for(lambda: client.get_job_status(sid) in (JobStatus.STOPPED, JobStatus.FAILED, JobStatus.SUCCEEDED), 60, what="filler ended")
    wait_for(lambda: engine_rows(cluster)["filler"]["outcome"] == "stopped", 60, what="filler stopped in the books")


def test_ray_job_stop_undeploys_and_releases_every_replica_and_the_ledger_verifies(cluster: Cluster, service: tuple[str, str]) -> None:
    from ray.job_submission import JobStatus, JobSubmissionClient

    url, sid = service
    client = JobSubmissionClient(cluster.info.dashboard_url)
    client.stop_job(sid)
    wait_for(lambda: client.get_job_status(sid) in (JobStatus.STOPPED, JobStatus.SUCCEEDED, JobStatus.FAILED), 60, what="job stopped")
    wait_for(lambda: not replicas_placed(cluster) and azure_used(cluster) == 0, 30, what="every replica released")
    _, ray = cluster.actor()
    wait_for(lambda: ray.available_resources().get("mcsched_azure__eastus__H100", 0) == 8, 60, what="Ray resources free again")

    def replica_groups() -> list[str]:
        return [pg["name"] for pg in ray.util.placement_group_table().values()
                if pg["name"].startswith("SERVE_REPLICA::mcsched-") and pg["state"] != "REMOVED"]

    wait_for(lambda: not replica_groups(), 60, what="the replicas' placement groups removed")
    assert "released" in client.get_job_logs(sid)
    code, _, raw = post(url, chat(1))  # the gateway stays: no model left is OpenAI's 404, not Serve's text
    assert code == 404 and json.loads(raw)["error"]["code"] == "model_not_found"
    verify = cluster.mcsched("audit", "verify", "--db", str(Path(cluster.state) / "ledger.db"), "--allow-unsigned-tail", check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_mcsched_cancel_of_a_served_model_is_stopped_in_ray_as_cancelled_in_the_books(
    cluster: Cluster, service: tuple[str, str], tmp_path: Path
) -> None:
    """runtime/states.py for a served model: `mcsched cancel` -> books cancelled, Ray job STOPPED
    (it was SUCCEEDED: the controller exited 0)."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    url, _ = service  # Serve's proxy keeps the port the first model fixed
    doc = {**SERVED, "metadata": {"name": "chat2"},
           "spec": {**SERVED["spec"], "serve": {**SERVED["spec"]["serve"], "model": "tiny-2", "replicas": {"min": 1, "max": 1}}}}
    (tmp_path / "api.yaml").write_text(yaml.safe_dump(doc))
    client = JobSubmissionClient(cluster.info.dashboard_url)
    port = url.rsplit(":", 1)[1]
    sid = client.submit_job(entrypoint="python -m scheduler run api.yaml",
                            runtime_env={"working_dir": str(tmp_path), "env_vars": {"MCSCHED_SERVE_PORT": port}})
    try:
        wait_for(lambda: post(url, {**chat(1), "model": "tiny-2"})[0] == 200, 180, 1.0, "tiny-2 answering")
        cluster.mcsched("cancel", "chat2")
        wait_for(lambda: client.get_job_status(sid) in (JobStatus.STOPPED, JobStatus.SUCCEEDED, JobStatus.FAILED), 90, 1.0, "chat2 ended")
        assert client.get_job_status(sid) == JobStatus.STOPPED, client.get_job_logs(sid)[-2000:]
        rows = [r for r in cluster.call("status", None) if r["job"].startswith("chat2-r")]
        assert rows and {r["outcome"] for r in rows} == {"cancelled"}, rows
        again = cluster.mcsched("cancel", "chat2", check=False)  # said "unknown job 'chat2'", as if it had never run
        assert again.returncode == 2 and again.stderr.strip().startswith("error: job 'chat2' is already "), again.stderr
        assert post(url, {**chat(1), "model": "tiny-2"})[0] == 404
    finally:
        client.stop_job(sid)

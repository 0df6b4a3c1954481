"""Ray carries out every decision, also after a job started: on a real local cluster, through
the Ray CLI (`ray job submit`), one cluster for the module.

Azure (the holder) has 16 H100, OCI and AWS 24 each; preemption is on.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from scheduler.ledger import Ledger
from tests.builders import a_catalog, a_contract
from tests.integration.conftest import ROOT, Cluster, job_doc, wait_for

pytestmark = pytest.mark.slow

CATALOG = (
    a_catalog()
    .cloud("azure", {"eastus": {"H100": 16}}, price=3.4, latency=1)
    .cloud("oci", {"us-ashburn-1": {"H100": 24}}, price=2.9, latency=1)
    .cloud("aws", {"us-east-1": {"H100": 24}}, price=3.1, latency=1)
    .obj()
    .model_dump(mode="json", by_alias=True)
)
CLUSTER_CATALOG = CATALOG  # the conftest's module-scoped `cluster` starts this world
CLUSTER_CONTRACT = a_contract(preemption=True).model_dump(mode="json", by_alias=True)
FINAL = ("SUCCEEDED", "FAILED", "STOPPED")


def submit(c: Cluster, tmp: Path, doc: dict[str, Any], wait: bool = False) -> subprocess.CompletedProcess[str]:
    """`ray job submit` (submission id = job name), as a user types it."""
    work = tmp / doc["metadata"]["name"]
    work.mkdir(parents=True, exist_ok=True)
    (work / "job.yaml").write_text(yaml.safe_dump(doc))
    ray = str(Path(sys.executable).with_name("ray"))
    args = [ray, "job", "submit", "--address", c.info.dashboard_url, "--submission-id", doc["metadata"]["name"]]
    args += [] if wait else ["--no-wait"]
    args += ["--working-dir", str(work), "--", "python", "-m", "scheduler", "run", "job.yaml"]
    return subprocess.run(args, env=c.env, capture_output=True, text=True, timeout=300, cwd=ROOT)


def client(c: Cluster) -> Any:
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(c.info.dashboard_url)


def ray_status(c: Cluster, sid: str) -> str:
    return str(client(c).get_job_status(sid).value)


def logs(c: Cluster, sid: str) -> str:
    return str(client(c).get_job_logs(sid))


def wait_final(c: Cluster, sid: str, timeout: float = 240) -> str:
    status: str = wait_for(lambda: (s := ray_status(c, sid)) in FINAL and s, timeout, 1.0, f"{sid} finished in Ray")
    return status


def wait_log(c: Cluster, sid: str, text: str, timeout: float = 120) -> None:
    wait_for(lambda: text in logs(c, sid), timeout, 0.5, f"{sid} log shows {text!r}")


def events(c: Cluster, job: str) -> list[Any]:
    return [e for e in Ledger(c.state / "ledger.db", readonly=True).events() if getattr(e, "job", None) == job]


def metric(c: Cluster, name: str, **labels: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{c.metrics_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        series, _, value = line.rpartition(" ")
        if series.split("{")[0] == name and all(f'{k}="{v}"' in series for k, v in labels.items()):
            return float(value)
    raise AssertionError(f"no sample {name}{{{want}}}")


def at_rest(c: Cluster) -> None:
    """The reconciler saw books equal to Ray: drift 0 on every pool, nothing to repair."""
    wait_for(lambda: c.call("drift")["at_rest"], 60, 1.0, "books equal Ray (drift 0)")


def steps_by_worker(log: str, job: str) -> dict[str, set[str]]:
    """Workload pid -> the clouds its step lines ran on."""
    out: dict[str, set[str]] = {}
    for pid, cloud in re.findall(rf"pid=(\d+)\)\S* \[{re.escape(job)}\] step \d+/\d+ \S+ on (\w+)/", log):
        out.setdefault(pid, set()).add(cloud)
    return out


def test_api_job_preempts_and_the_training_job_moves_and_resumes_from_its_checkpoint(cluster: Cluster, tmp_path: Path) -> None:
    c = cluster
    # Long enough to outlive the api job's `ray job submit` start-up (~10 s on a busy machine).
    train = job_doc("train-a", gpus=16, priority=0, workload={"steps": 160, "stepSeconds": 0.25, "checkpointEvery": 4})
    assert submit(c, tmp_path, train).returncode == 0
    wait_log(c, "train-a", "[train-a] checkpoint saved at step 8")
    api = job_doc("api-a", cls="api-serving", gpus=8, priority=100, workload={"steps": 4, "stepSeconds": 0.1})
    r = submit(c, tmp_path, api, wait=True)
    assert r.returncode == 0, r.stdout + r.stderr
    api_log = logs(c, "api-a")
    assert "api-a running on azure/eastus" in api_log and "resources mcsched_azure__eastus__H100=8" in api_log
    # The preemptor ran within seconds of its decision (never the old 60 s placement-group failure).
    took = metric(c, "mcsched_enforcement_seconds_sum", action="preemptor-running")
    assert metric(c, "mcsched_enforcement_seconds_count", action="preemptor-running") == 1 and took < 20, took
    assert metric(c, "mcsched_enforcement_seconds_count", action="victim-stopped") == 1

    assert wait_final(c, "train-a") == "SUCCEEDED"
    log = logs(c, "train-a")
    assert "train-a evicted from azure/eastus" in log and "moved train-a to " in log and "preempted by api-a" in log
    resumed = int(re.findall(r"\[train-a\] resuming from checkpoint at step (\d+)", log)[0])
    assert resumed > 1
    workers = steps_by_worker(log, "train-a")
    on_azure = {p for p, clouds in workers.items() if "azure" in clouds}
    elsewhere = {p for p, clouds in workers.items() if clouds - {"azure"}}
    assert on_azure and elsewhere and not on_azure & elsewhere  # never again on Azure after it left
    assert re.search(r"\[train-a\] step 160/160 \S+ on (oci|aws)/", log)
    # Books agree with where the work ran: the last placement is the one that finished it.
    placed = [e for e in events(c, "train-a") if e.kind == "placed"]
    assert placed[0].cloud == "azure" and placed[-1].cloud in ("oci", "aws") and len(placed) == 2
    assert f"running on {placed[-1].cloud}/{placed[-1].region}" in log
    assert events(c, "train-a")[-1].kind == "released" and events(c, "train-a")[-1].reason == "finished"
    st = json.loads(c.mcsched("status", "train-a", "-o", "json", "--explain").stdout)[0]
    assert st["outcome"] == "finished" and st["cloud"] == placed[-1].cloud  # an ended job shows where it ran
    assert [(h["what"], h["cloud"]) for h in st["history"]] == [
        ("placed", "azure"), ("evicted", "azure"), ("placed", placed[-1].cloud), ("ended", placed[-1].cloud)]
    assert "OK:" in c.mcsched("audit", "verify", "--db", str(c.state / "ledger.db"), "--allow-unsigned-tail").stdout
    at_rest(c)


def test_non_holder_outage_moves_work_through_the_rofr_and_a_holder_outage_requeues_its_work(cluster: Cluster, tmp_path: Path) -> None:
    """`fault CLOUD --down` stops that cloud's Ray node (docs/nodes.md): its work is gone in Ray, so
    the books move it (a non-holder's through the ROFR gate) or, with nowhere to go, queue it."""
    c = cluster
    # 24 GPUs: Azure (16) declines, OCI is cheapest. 8 GPUs: Azure accepts.
    submit(c, tmp_path, job_doc("on-oci", gpus=24, workload={"steps": 100, "stepSeconds": 0.25, "checkpointEvery": 4}))
    submit(c, tmp_path, job_doc("on-azure", gpus=8, workload={"steps": 240, "stepSeconds": 0.25, "checkpointEvery": 4}))
    wait_log(c, "on-oci", "[on-oci] checkpoint saved at step 4")
    wait_log(c, "on-azure", "[on-azure] checkpoint saved at step 4")
    c.mcsched("fault", "oci", "--down")
    wait_log(c, "on-oci", "on-oci running on aws/us-east-1", 90)
    c.mcsched("fault", "azure", "--down")  # the holder's node is gone: OCI is down and AWS full, so it waits
    wait_for(lambda: c.call("status", "on-azure")[0]["outcome"] == "queued", 60, 0.5, "on-azure queued")
    c.mcsched("fault", "azure", "--up")
    c.mcsched("fault", "oci", "--up")
    assert wait_final(c, "on-oci") == "SUCCEEDED" and wait_final(c, "on-azure") == "SUCCEEDED"
    log = logs(c, "on-oci")
    assert "on-oci evicted from oci/us-ashburn-1" in log and "moved on-oci to aws/us-east-1" in log
    assert int(re.findall(r"resuming from checkpoint at step (\d+)", log)[0]) > 1
    # The move went through the ROFR: the holder answered attempt 2 before the AWS placement.
    evs = events(c, "on-oci")
    second = next(e for e in evs if e.kind == "placed" and e.cloud == "aws")
    assert any(e.kind == "answered" and e.attempt == second.attempt and e.holder == "azure" for e in evs)
    assert [e.reason for e in evs if e.kind == "preempted"] == ["backend-down"]
    assert [e.reason for e in events(c, "on-azure") if e.kind == "preempted"] == ["capacity-lost"]
    assert int(re.findall(r"resuming from checkpoint at step (\d+)", logs(c, "on-azure"))[0]) > 1
    at_rest(c)


def test_a_failing_workload_ends_failed_in_ray_the_ledger_and_metrics(cluster: Cluster, tmp_path: Path) -> None:
    c = cluster
    r = submit(c, tmp_path, job_doc("fails", gpus=8, workload={"steps": 6, "stepSeconds": 0.05, "failAtStep": 3}), wait=True)
    assert r.returncode != 0 and ray_status(c, "fails") == "FAILED"
    assert "injected failure at step 3" in logs(c, "fails")
    assert events(c, "fails")[-1].reason == "failed"
    st = c.call("status", "fails")[0]
    assert st["outcome"] == "failed" and st["cloud"] == "azure"
    assert metric(c, "mcsched_jobs_ended_total", **{"class": "training", "reason": "failed"}) >= 1
    assert sum(u["allocated"] for u in c.call("usage")) == 0


def test_ray_job_stop_of_a_moved_job_releases_its_new_placement_and_cancel_stops_the_ray_job(
    cluster: Cluster, tmp_path: Path
) -> None:
    c = cluster
    submit(c, tmp_path, job_doc("stop-me", gpus=16, workload={"steps": 2000, "stepSeconds": 0.25, "checkpointEvery": 4}))
    wait_log(c, "stop-me", "stop-me running on azure/eastus")
    assert submit(c, tmp_path, job_doc("api-b", cls="api-serving", gpus=8, priority=100, workload={"steps": 2}), wait=True).returncode == 0
    wait_log(c, "stop-me", "stop-me running on oci/us-ashburn-1")
    assert ray_status(c, "stop-me") == "RUNNING", logs(c, "stop-me")[-3000:]  # the same Ray job, moved
    client(c).stop_job("stop-me")
    wait_for(lambda: events(c, "stop-me")[-1].kind == "released", 30, 0.5, "stop-me released")
    assert events(c, "stop-me")[-1].reason == "stopped" and events(c, "stop-me")[-1].cloud == "oci"
    assert wait_final(c, "stop-me", 60) == "STOPPED"
    st = c.call("status", "stop-me")[0]
    assert st["outcome"] == "stopped" and st["cloud"] == "oci"
    assert sum(u["allocated"] for u in c.call("usage")) == 0
    at_rest(c)

    submit(c, tmp_path, job_doc("cancel-me", gpus=8, workload={"steps": 2000, "stepSeconds": 0.25}))
    wait_log(c, "cancel-me", "cancel-me running on azure/eastus")
    assert c.mcsched("cancel", "cancel-me").stdout.strip() == "cancel-me: cancelled"
    assert wait_final(c, "cancel-me", 60) == "STOPPED"  # the books say cancelled: Ray says STOPPED (runtime/states.py)
    assert "cancel-me cancelled by the scheduler; its Ray work is stopped" in logs(c, "cancel-me")
    assert events(c, "cancel-me")[-1].reason == "cancelled" and c.call("status", "cancel-me")[0]["outcome"] == "cancelled"
    at_rest(c)


def test_kill_9_of_the_scheduler_actor_during_a_move_loses_and_duplicates_nothing(cluster: Cluster, tmp_path: Path) -> None:
    c = cluster
    submit(c, tmp_path, job_doc("k9-train", gpus=16, workload={"steps": 240, "stepSeconds": 0.25, "checkpointEvery": 4}))
    wait_log(c, "k9-train", "[k9-train] checkpoint saved at step 4")
    pid = c.call("pid")
    submit(c, tmp_path, job_doc("k9-api", cls="api-serving", gpus=8, priority=100, workload={"steps": 8, "stepSeconds": 0.25}))
    wait_for(lambda: any(e.kind == "preempted" for e in events(c, "k9-train")), 180, 0.2, "the preemption decision")
    os.kill(pid, signal.SIGKILL)
    assert wait_final(c, "k9-api") == "SUCCEEDED" and wait_final(c, "k9-train") == "SUCCEEDED"
    assert c.call("pid") != pid  # it really restarted
    for job in ("k9-train", "k9-api"):
        kinds = [e.kind for e in events(c, job)]
        assert kinds.count("submitted") == 1 and kinds[-1] == "released" and kinds.count("released") == 1
        assert events(c, job)[-1].reason == "finished"  # live drivers were not taken for ghosts
    assert "OK:" in c.mcsched("audit", "verify", "--db", str(c.state / "ledger.db"), "--allow-unsigned-tail").stdout
    at_rest(c)


def test_a_driver_killed_with_sigkill_is_ended_as_stopped_and_frees_its_gpus(cluster: Cluster, tmp_path: Path) -> None:
    c = cluster
    work = tmp_path / "ghost"
    work.mkdir()
    (work / "job.yaml").write_text(yaml.safe_dump(job_doc("ghost", gpus=8, workload={"steps": 2000, "stepSeconds": 0.25})))
    proc = subprocess.Popen([sys.executable, "-m", "scheduler", "run", str(work / "job.yaml")], env=c.env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: c.call("status", None) and any(r["job"] == "ghost" and r["outcome"] == "placed" for r in c.call("status", None)),
                 60, 0.5, "ghost placed")
        wait_for(lambda: c.call("drift")["at_rest"], 60, 1.0, "ghost's gang granted")
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    # Its lease expires (15 s) with no placement group left: the reconciler ends it.
    wait_for(lambda: events(c, "ghost")[-1].kind == "released", 90, 1.0, "ghost released by the reconciler")
    assert events(c, "ghost")[-1].reason == "stopped" and c.call("status", "ghost")[0]["outcome"] == "stopped"
    assert metric(c, "mcsched_reconciler_repairs_total", action="ended-job") >= 1
    at_rest(c)

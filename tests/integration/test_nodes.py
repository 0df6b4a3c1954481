"""Clouds as Ray nodes (issue #25) on a real local cluster: the small profile, the holder and two
clouds, each a labelled Ray worker node started by `mcsched up`.

Where work runs is read from Ray's state API (the Workload actors' node ids -> the GCS node
table's labels), never from mcsched's own books. Node loss is a `kill -9` of the raylet of a
node this cluster started (its recorded handle), seen by the GCS's health check.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from scheduler.runtime.resources import pool_resource
from scheduler.runtime.workers import kill_node
from tests.builders import a_contract
from tests.integration.conftest import Cluster, exposed, job_doc, wait_for
from tests.integration.test_enforcement import CATALOG, client, events, logs, metric, submit, wait_final, wait_log

pytestmark = pytest.mark.slow

CLUSTER_CATALOG = CATALOG  # the enforcement tests' small profile: the holder and two clouds
CLUSTER_CONTRACT = a_contract(preemption=True).model_dump(mode="json", by_alias=True)
LONG = {"steps": 400, "stepSeconds": 0.25, "checkpointEvery": 4}


def ray_nodes(c: Cluster) -> list[dict[str, Any]]:
    _, ray = c.actor()
    return list(ray.nodes())


def clouds_running(c: Cluster, sid: str) -> list[str]:
    """The `cloud` labels of the nodes Ray runs this Ray job's live Workload actors on (Ray's state API)."""
    from ray.util.state import list_actors

    c.actor()
    job_id = client(c).get_job_info(sid).job_id
    labels = {n["NodeID"]: n.get("Labels") or {} for n in ray_nodes(c)}
    actors = list_actors(
        address=c.info.gcs_address, filters=[("class_name", "=", "Workload"), ("state", "=", "ALIVE")], detail=True, limit=1000
    )
    return sorted(labels.get(a.node_id, {}).get("cloud", "?") for a in actors if a.job_id == job_id)


def books(c: Cluster) -> dict[str, Any]:
    return dict(c.call("nodes"))


def node_of(c: Cluster, cloud: str) -> Any:
    from scheduler.runtime.cluster import ClusterInfo

    info = ClusterInfo.load(c.state)
    assert info is not None
    return info, next(n for n in info.worker_nodes() if n.cloud == cloud)


def test_up_starts_one_labelled_worker_node_per_cloud_on_loopback(cluster: Cluster) -> None:
    c = cluster
    recorded = c.info.worker_nodes()
    assert [(n.name, n.cloud) for n in recorded] == [("azure", "azure"), ("oci", "oci"), ("aws", "aws")]
    alive = {n["NodeName"]: n for n in ray_nodes(c) if n["Alive"]}
    for w in recorded:
        row = alive[w.node_name]
        assert {k: v for k, v in row["Labels"].items() if not k.startswith("ray.io/")} == {
            "cloud": w.cloud, "jurisdiction": "US", "region": w.labels["region"]}  # fmt: skip
        pools = {k: v for k, v in row["Resources"].items() if k.startswith("mcsched_") and k != "mcsched_scheduler"}
        assert pools == w.resources and row["NodeManagerAddress"] == "127.0.0.1"
    head = next(n for n in alive.values() if "mcsched_scheduler" in n["Resources"])
    assert not any(k.startswith("mcsched_") and k != "mcsched_scheduler" for k in head["Resources"])  # no cloud on the head
    assert exposed(c.info.temp_dir)[1] == []  # every node's sockets on loopback
    seen = wait_for(lambda: (b := books(c))["reconciled"] and b, 30, what="a node reconcile")
    assert seen["managed"] == ["aws", "azure", "oci"] and seen["at_rest"]
    assert metric(c, "mcsched_nodes", cloud="oci", state="alive") == 1


def test_a_job_placed_on_oci_runs_only_on_the_oci_node(cluster: Cluster, tmp_path: Path) -> None:
    c = cluster
    # 24 GPUs: Azure (16) declines; OCI is the cheapest of the rest.
    submit(c, tmp_path, job_doc("on-oci", gpus=24, workload={"steps": 40, "stepSeconds": 0.1}))
    wait_log(c, "on-oci", "on-oci running on oci/us-ashburn-1")
    assert clouds_running(c, "on-oci") == ["oci"]
    assert wait_final(c, "on-oci") == "SUCCEEDED"
    r = c.mcsched("run", str(_job(tmp_path / "env", job_doc("env-oci", gpus=24, entrypoint="echo RAN-ON=$MCSCHED_CLOUD/$MCSCHED_REGION/$MCSCHED_JOB"))))
    assert "RAN-ON=oci/us-ashburn-1/env-oci" in r.stdout + r.stderr


def _job(work: Path, doc: dict[str, Any]) -> Path:
    import yaml

    work.mkdir(parents=True, exist_ok=True)
    (work / "job.yaml").write_text(yaml.safe_dump(doc))
    return work / "job.yaml"


def test_killing_the_oci_node_moves_its_job_through_the_holder_and_api_work_stays_on_azure(cluster: Cluster, tmp_path: Path) -> None:
    c = cluster
    submit(c, tmp_path, job_doc("mover", gpus=24, workload=LONG))
    submit(c, tmp_path, job_doc("api-1", cls="api-serving", gpus=8, workload=LONG))
    wait_log(c, "mover", "[mover] checkpoint saved at step 4")
    wait_log(c, "api-1", "api-1 running on azure/eastus")
    assert clouds_running(c, "mover") == ["oci"] and clouds_running(c, "api-1") == ["azure"]
    info, oci = node_of(c, "oci")
    killed = time.monotonic()
    assert kill_node(oci, info.temp_dir)  # kill -9 of the OCI node's raylet
    wait_for(lambda: not books(c)["up"]["oci"], 40, 0.5, "the scheduler sees OCI down (GCS node state)")
    seen_down = time.monotonic() - killed
    wait_log(c, "mover", "mover running on aws/us-east-1", 90)
    assert clouds_running(c, "mover") == ["aws"] and clouds_running(c, "api-1") == ["azure"]
    log = logs(c, "mover")
    assert "mover evicted from oci/us-ashburn-1" in log and int(_resumed(log)) > 1
    evs = events(c, "mover")
    second = next(e for e in evs if e.kind == "placed" and e.cloud == "aws")
    assert any(e.kind == "answered" and e.attempt == second.attempt and e.holder == "azure" for e in evs)  # holder first
    assert [e.reason for e in evs if e.kind == "preempted"] == ["backend-down"]
    assert not any(e.kind == "preempted" for e in events(c, "api-1"))
    assert metric(c, "mcsched_nodes", cloud="oci", state="dead") >= 1
    assert seen_down < 30, seen_down
    # a replacement node brings the capacity back
    c.mcsched("fault", "oci", "--up")
    assert books(c)["up"]["oci"] and {u["cloud"]: u["capacity"] for u in c.call("usage")}["oci"] == 24
    for sid in ("mover", "api-1"):
        c.mcsched("cancel", sid)


def _resumed(log: str) -> str:
    import re

    found = re.findall(r"resuming from checkpoint at step (\d+)", log)
    return found[0] if found else "0"


def test_losing_the_azure_node_makes_api_work_wait_and_moves_training_off_azure(cluster: Cluster, tmp_path: Path) -> None:
    c = cluster
    submit(c, tmp_path, job_doc("api-2", cls="api-serving", gpus=8, workload=LONG))
    submit(c, tmp_path, job_doc("small", gpus=8, workload=LONG))
    wait_log(c, "api-2", "api-2 running on azure/eastus")
    wait_log(c, "small", "small running on azure/eastus")
    c.mcsched("fault", "azure", "--down")  # stops the Azure node (a real outage): Ray marks it dead at once
    assert not books(c)["up"]["azure"]
    wait_log(c, "small", "small running on oci/us-ashburn-1", 90)
    assert clouds_running(c, "small") == ["oci"]
    wait_for(lambda: c.call("status", "api-2")[0]["outcome"] == "queued", 60, 0.5, "api-2 waits for Azure")
    assert clouds_running(c, "api-2") == []  # pinned to Azure: it runs nowhere else
    c.mcsched("fault", "azure", "--up")
    wait_for(lambda: logs(c, "api-2").count("api-2 running on azure/eastus") == 2, 90, 0.5, "api-2 running on Azure again")
    assert clouds_running(c, "api-2") == ["azure"]
    for sid in ("api-2", "small"):
        c.mcsched("cancel", sid)


def test_a_drift_injected_by_hand_is_seen_logged_and_repaired(cluster: Cluster) -> None:
    c = cluster
    before = metric(c, "mcsched_reconciler_repairs_total", action="node-capacity")
    c.call("capacity", "aws", "us-east-1", "H100", 4)  # the books say 4 GPUs; the AWS node advertises 24
    wait_for(lambda: {u["cloud"]: u["capacity"] for u in c.call("usage")}["aws"] == 24, 30, 0.5, "the books repaired")
    assert metric(c, "mcsched_reconciler_repairs_total", action="node-capacity") == before + 1
    assert metric(c, "mcsched_node_capacity_drift_gpus", cloud="aws", region="us-east-1", gpu_type="H100") == 0
    wait_for(lambda: books(c)["at_rest"], 30, 0.5, "books = Ray")
    assert pool_resource("aws", "us-east-1", "H100") in next(n for n in ray_nodes(c) if n["Alive"] and n["Labels"].get("cloud") == "aws")["Resources"]


def test_drain_cordons_a_cloud_in_the_books(cluster: Cluster, tmp_path: Path) -> None:
    c = cluster
    assert "oci: cordoned" in c.mcsched("drain", "oci").stdout
    r = c.mcsched("run", str(_job(tmp_path / "d", job_doc("after-drain", gpus=24, workload={"steps": 1, "stepSeconds": 0.01}))))
    assert "placed after-drain on aws/us-east-1" in r.stdout  # OCI is cheaper but cordoned
    assert "oci: open" in c.mcsched("drain", "oci", "--undo").stdout
    wait_for(lambda: {u["cloud"]: u["capacity"] for u in c.call("usage")}["oci"] == 24, 30, 0.5, "OCI open again")


def test_a_driver_on_the_head_prestarts_no_worker_there_but_one_on_a_clouds_node_would(cluster: Cluster) -> None:
    """The head of the cloud layout carries no pool: a worker prestarted there could never host
    a job's work (it would only take CPU from the one Ray starts on the cloud's node)."""
    from scheduler.runtime.workload import pools_here

    c = cluster
    _, ray = c.actor()  # this test process is a driver on the head, as `ray job submit`'s are
    assert not pools_here()
    pool = pool_resource("oci", "us-ashburn-1", "H100")
    assert pool in next(n for n in ray_nodes(c) if n["Alive"] and n["Labels"].get("cloud") == "oci")["Resources"]
    on_oci = ray.remote(num_cpus=0, resources={pool: 0.001})(pools_here)
    assert ray.get(on_oci.remote(), timeout=120)

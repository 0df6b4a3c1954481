"""Losing one of the holder's nodes (issue #25): Azure is two Ray worker nodes (one per region,
`mcsched up --nodes region`). When the eastus node is killed, the api-serving job that ran there
waits for Azure or preempts movable work on Azure's remaining node; it never leaves Azure.

Where work runs is read from Ray's state API (the Workload actors' node ids -> the GCS node
table's labels), never from mcsched's own books.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from scheduler.runtime.cluster import ClusterInfo
from scheduler.runtime.workers import kill_node
from tests.builders import a_catalog, a_contract
from tests.integration.conftest import Cluster, job_doc, wait_for
from tests.integration.test_enforcement import client, events, submit, wait_log

pytestmark = pytest.mark.slow

CLUSTER_CATALOG = (
    a_catalog()
    .cloud("azure", {"eastus": {"H100": 16}, "westus": {"H100": 16}}, price=3.4, latency=1)
    .cloud("oci", {"us-ashburn-1": {"H100": 24}}, price=2.9, latency=1)
    .obj()
    .model_dump(mode="json", by_alias=True)
)
CLUSTER_CONTRACT = a_contract(preemption=True).model_dump(mode="json", by_alias=True)
CLUSTER_UP_ARGS = ("--nodes", "region")
LONG = {"steps": 600, "stepSeconds": 0.25, "checkpointEvery": 4}


def where_running(c: Cluster, sid: str) -> list[tuple[str, str]]:
    """(cloud, region) labels of the nodes Ray runs this Ray job's live Workload actors on."""
    from ray.util.state import list_actors

    _, ray = c.actor()
    labels = {n["NodeID"]: n.get("Labels") or {} for n in ray.nodes()}
    job_id = client(c).get_job_info(sid).job_id
    actors = list_actors(
        address=c.info.gcs_address, filters=[("class_name", "=", "Workload"), ("state", "=", "ALIVE")], detail=True, limit=1000
    )
    return sorted(
        (labels.get(a.node_id, {}).get("cloud", "?"), labels.get(a.node_id, {}).get("region", "?"))
        for a in actors
        if a.job_id == job_id
    )


def test_losing_an_azure_node_makes_api_work_preempt_movable_work_on_the_remaining_azure_node(
    cluster: Cluster, tmp_path: Path
) -> None:
    c = cluster
    info = ClusterInfo.load(c.state)
    assert info is not None
    assert sorted((n.cloud, n.labels.get("region")) for n in info.worker_nodes()) == [
        ("azure", "eastus"), ("azure", "westus"), ("oci", "us-ashburn-1")]  # fmt: skip
    submit(c, tmp_path, job_doc("api-a", cls="api-serving", gpus=8, priority=10, workload=LONG))
    wait_log(c, "api-a", "api-a running on azure/eastus")
    submit(c, tmp_path, job_doc("fill-e", gpus=8, workload=LONG))
    wait_log(c, "fill-e", "fill-e running on azure/eastus")
    submit(c, tmp_path, job_doc("fill-w", gpus=16, workload=LONG))
    wait_log(c, "fill-w", "fill-w running on azure/westus")
    assert where_running(c, "api-a") == [("azure", "eastus")] and where_running(c, "fill-w") == [("azure", "westus")]

    eastus = next(n for n in info.worker_nodes() if n.labels.get("region") == "eastus")
    assert kill_node(eastus, info.temp_dir)  # kill -9 of the eastus node's raylet; westus stays
    # the api job preempts the movable job on Azure's remaining node, and never leaves Azure
    wait_log(c, "api-a", "api-a running on azure/westus", 90)
    assert where_running(c, "api-a") == [("azure", "westus")]
    api_events = events(c, "api-a")
    assert not any(e.kind == "placed" and e.cloud != "azure" for e in api_events)
    assert [e.via for e in api_events if e.kind == "placed"][-1] == "preemption"
    assert [(e.reason, e.by) for e in events(c, "fill-w") if e.kind == "preempted"] == [("pinned-job", "api-a")]
    # the moved training goes through the holder (which declines: no room) to OCI
    wait_log(c, "fill-w", "fill-w running on oci/us-ashburn-1", 90)
    assert where_running(c, "fill-w") == [("oci", "us-ashburn-1")]
    fill_w = events(c, "fill-w")
    second = [e for e in fill_w if e.kind == "placed"][-1]
    assert any(e.kind == "answered" and e.attempt == second.attempt and e.holder == "azure" for e in fill_w)
    wait_for(lambda: c.call("status", "fill-e")[0]["outcome"] in ("placed", "queued"), 60, 0.5, "fill-e re-placed or queued")
    for sid in ("api-a", "fill-e", "fill-w"):
        c.mcsched("cancel", sid)

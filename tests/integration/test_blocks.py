"""Buying capacity (issue #25) on a real local cluster: the holder and two clouds, OCI's pool bought
in one 16-GPU block (none held at `mcsched up`). A job bigger than every pool's capacity now makes
the scheduler buy the block, the block's Ray worker node joins, the job runs on it (Ray's state
API: the Workload actor's node carries the `block` label), and once the job is done the idle
node is released after the catalog's short timeout. Ledger and metrics show both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from scheduler.ledger import Ledger
from tests.builders import a_catalog, a_contract
from tests.integration.conftest import Cluster, job_doc, wait_for
from tests.integration.test_enforcement import client, metric, submit, wait_final, wait_log

pytestmark = pytest.mark.slow


def _catalog() -> dict[str, Any]:
    doc = (
        a_catalog()
        .cloud("azure", {"eastus": {"H100": 8}}, price=3.4, latency=1)
        .cloud("oci", {"us-ashburn-1": {"H100": 16}}, price=2.9, latency=1)
        .cloud("aws", {"us-east-1": {"H100": 8}}, price=3.1, latency=1)
        .obj()
        .model_dump(mode="json", by_alias=True)
    )
    oci = next(b for b in doc["spec"]["backends"] if b["name"] == "oci")
    oci["regions"][0]["blocks"] = {"H100": {"gpus": 16, "initial": 0, "max": 1, "provisioningSeconds": 15, "idleReleaseSeconds": 3}}
    return doc


CLUSTER_CATALOG = _catalog()
CLUSTER_CONTRACT = a_contract(preemption=True).model_dump(mode="json", by_alias=True)


def blocks_running(c: Cluster, sid: str) -> list[str]:
    """The `block` labels of the nodes Ray runs this Ray job's live Workload actors on (Ray's state API)."""
    from ray.util.state import list_actors

    _, ray = c.actor()
    job_id = client(c).get_job_info(sid).job_id
    labels = {n["NodeID"]: n.get("Labels") or {} for n in ray.nodes()}
    actors = list_actors(
        address=c.info.gcs_address, filters=[("class_name", "=", "Workload"), ("state", "=", "ALIVE")], detail=True, limit=1000
    )
    return sorted(labels.get(a.node_id, {}).get("block", "-") for a in actors if a.job_id == job_id)


def waiting(c: Cluster, job: str) -> str:
    """The job's `waiting` line in `mcsched status` ("" until its driver has submitted it)."""
    rows = [r for r in c.call("status", None) if r["job"] == job]
    return str(rows[0].get("waiting") or "") if rows else ""


def ledger(c: Cluster) -> list[Any]:
    return list(Ledger(c.state / "ledger.db", readonly=True).events())


def test_a_job_bigger_than_capacity_buys_a_block_runs_on_its_node_and_the_idle_node_is_released(cluster: Cluster, tmp_path: Path) -> None:
    c = cluster
    wait_for(lambda: {u["cloud"]: u["capacity"] for u in c.call("usage")}["oci"] == 0, 30, 0.5, "OCI at its initial 0 blocks")
    # 16 GPUs: Azure (8) declines, AWS has 8; OCI can grow by one 16-GPU block
    submit(c, tmp_path, job_doc("grow", gpus=16, workload={"steps": 30, "stepSeconds": 0.2, "checkpointEvery": 10}))
    buying = wait_for(lambda: (w := waiting(c, "grow")).startswith("buying") and w, 90, 0.5, "a block bought for grow")
    assert buying.startswith("buying 1 block of oci/us-ashburn-1/H100, ready in ~")
    wait_log(c, "grow", "grow running on oci/us-ashburn-1", 120)
    assert blocks_running(c, "grow") == ["oci-b1"]  # on the bought node, per Ray
    evs = ledger(c)
    kinds = [(e.kind, getattr(e, "node", None) or getattr(e, "job", None)) for e in evs]
    bought = next(e for e in evs if e.kind == "block-purchased")
    assert (bought.node, bought.for_job, bought.cloud, bought.gpus, bought.start_seconds) == ("oci-b1", "grow", "oci", 16, 15.0)
    joined = next(e for e in evs if e.kind == "block-joined")
    assert kinds.index(("block-purchased", "oci-b1")) < kinds.index(("block-joined", "oci-b1")) < kinds.index(("placed", "grow"))
    placed = next(e for e in evs if e.kind == "placed" and e.job == "grow")
    assert placed.cloud == "oci" and any(e.kind == "answered" and e.job == "grow" and e.attempt == placed.attempt for e in evs)  # holder asked
    assert 0 < joined.provisioning_seconds < 60
    assert metric(c, "mcsched_node_provisioning_seconds_count", cloud="oci") == 1
    assert metric(c, "mcsched_capacity_blocks_total", cloud="oci", what="purchased") == 1
    # scale-down: the job ends, the node idles 3 s and is released; OCI's capacity is 0 again
    assert wait_final(c, "grow") == "SUCCEEDED"
    wait_for(lambda: any(e.kind == "block-released" for e in ledger(c)), 60, 0.5, "the idle block released")
    released = next(e for e in ledger(c) if e.kind == "block-released")
    assert (released.node, released.reason) == ("oci-b1", "idle")
    wait_for(lambda: {u["cloud"]: u["capacity"] for u in c.call("usage")}["oci"] == 0, 30, 0.5, "OCI back to 0 GPUs")
    _, ray = c.actor()
    assert not any(n["Alive"] and (n.get("Labels") or {}).get("block") == "oci-b1" for n in ray.nodes())
    assert metric(c, "mcsched_nodes", cloud="oci", state="released") == 1
    assert metric(c, "mcsched_capacity_blocks_total", cloud="oci", what="released-idle") == 1
    assert "OK" in c.mcsched("audit", "verify", "--db", str(c.state / "ledger.db")).stdout  # the checker accepts the block records

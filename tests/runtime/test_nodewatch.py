"""Clouds as Ray nodes, without Ray: the books follow the GCS node table (nodewatch.plan_nodes and the
service's reconcile step), a lost node is an outage whose work is re-placed through the ROFR gate."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from scheduler.ledger import Ledger
from scheduler.runtime.nodewatch import PoolBooks, RayNode, plan_nodes
from scheduler.runtime.resources import pool_resource
from scheduler.runtime.service import SchedulerService
from tests.builders import a_catalog, a_contract
from tests.integration.conftest import job_doc

AZ = ("azure", "eastus", "H100")
OCI = ("oci", "us-ashburn-1", "H100")
AWS = ("aws", "us-east-1", "H100")


def node(node_id: str, pool: tuple[str, str, str], gpus: float, alive: bool = True) -> RayNode:
    return RayNode(node_id, alive, {"cloud": pool[0]}, {pool_resource(*pool): gpus, "CPU": 1.0})


def test_plan_follows_live_nodes_and_leaves_unmanaged_clouds_alone() -> None:
    pools = {AZ: PoolBooks(16, 16), OCI: PoolBooks(24, 24), AWS: PoolBooks(24, 24)}
    up = {"azure": True, "oci": True, "aws": True}
    # AWS has no labelled node (the head carries it): never touched
    head = RayNode("head", True, {}, {pool_resource(*AWS): 24.0})
    at_rest = plan_nodes(pools, up, [head, node("a", AZ, 16), node("o", OCI, 24)])
    assert at_rest.at_rest and at_rest.managed == {"azure", "oci"}
    lost = plan_nodes(pools, up, [head, node("a", AZ, 16), node("o", OCI, 24, alive=False)])
    assert lost.capacity == {OCI: 0} and lost.up == {"oci": False} and lost.drift[OCI] == 24
    assert lost.nodes[("oci", "dead")] == 1 and AWS not in lost.drift
    # two nodes of a cloud: losing one halves it; the cloud stays up
    half = plan_nodes({AZ: PoolBooks(16, 16)}, {"azure": True}, [node("a1", AZ, 8), node("a2", AZ, 8, alive=False)])
    assert half.capacity == {AZ: 8} and half.up == {}
    back = plan_nodes({OCI: PoolBooks(0, 24)}, {"oci": False}, [node("o2", OCI, 24)])
    assert back.capacity == {OCI: 24} and back.up == {"oci": True}
    # never above the catalog
    assert plan_nodes({OCI: PoolBooks(24, 24)}, {"oci": True}, [node("o", OCI, 99)]).at_rest


class FakeNodes:
    def __init__(self, *nodes: RayNode) -> None:
        self.nodes = list(nodes)

    def read(self) -> list[RayNode]:
        return list(self.nodes)

    def kill(self, node_id: str) -> None:
        self.nodes = [RayNode(n.node_id, False if n.node_id == node_id else n.alive, n.labels, n.resources) for n in self.nodes]


def service(path: Path, nodes: FakeNodes) -> tuple[SchedulerService, Any]:
    catalog = (
        a_catalog()
        .cloud("azure", {"eastus": {"H100": 16}}, price=3.4, latency=1)
        .cloud("oci", {"us-ashburn-1": {"H100": 24}}, price=2.9, latency=1)
        .cloud("aws", {"us-east-1": {"H100": 24}}, price=3.1, latency=1)
        .obj()
    )
    svc = SchedulerService(
        catalog.model_dump(mode="json", by_alias=True),
        a_contract(preemption=True).model_dump(mode="json", by_alias=True),
        str(path), metrics_port=None, nodes=nodes,
    )  # fmt: skip
    loop = asyncio.new_event_loop()
    return svc, lambda method, *args: loop.run_until_complete(getattr(svc, method)(*args))


def where(call: Any, job: str) -> tuple[str, str]:
    d = call("status", job)[0]
    return d["outcome"], d.get("cloud")


def test_a_lost_oci_node_moves_its_job_through_the_holder_and_api_work_never_leaves_azure(tmp_path: Path) -> None:
    nodes = FakeNodes(node("az", AZ, 16), node("oc", OCI, 24), node("aw", AWS, 24))
    svc, call = service(tmp_path / "l.db", nodes)
    call("submit", [job_doc("train", gpus=24), job_doc("api", cls="api-serving", gpus=8)])
    assert where(call, "train") == ("placed", "oci") and where(call, "api") == ("placed", "azure")
    assert svc.reconcile_nodes(nodes.read()) == 0  # at rest
    nodes.kill("oc")
    assert svc.reconcile_nodes(nodes.read()) == 2  # oci down, its pool emptied
    assert where(call, "train") == ("placed", "aws") and where(call, "api") == ("placed", "azure")
    evs: list[Any] = [e for e in Ledger(tmp_path / "l.db", readonly=True).events() if getattr(e, "job", None) == "train"]
    second = next(e for e in evs if e.kind == "placed" and e.cloud == "aws")
    assert any(e.kind == "answered" and e.attempt == second.attempt and e.holder == "azure" for e in evs)  # the holder first
    assert svc.metrics is not None
    assert svc.metrics.registry.get_sample_value("mcsched_nodes", {"cloud": "oci", "state": "dead"}) == 1
    assert svc.metrics.registry.get_sample_value("mcsched_reconciler_repairs_total", {"action": "backend-down"}) == 1
    assert call("nodes")["up"]["oci"] is False and call("nodes")["at_rest"] is False
    # a replacement node brings the capacity back
    nodes.nodes.append(node("oc2", OCI, 24))
    assert svc.reconcile_nodes(nodes.read()) == 2 and call("nodes")["up"]["oci"] is True
    assert svc.reconcile_nodes(nodes.read()) == 0 and call("nodes")["at_rest"] is True


def test_a_lost_azure_node_requeues_pinned_api_work_and_moves_training_off_the_holder(tmp_path: Path) -> None:
    nodes = FakeNodes(node("az", AZ, 16), node("oc", OCI, 24), node("aw", AWS, 24))
    svc, call = service(tmp_path / "l.db", nodes)
    call("submit", [job_doc("api", cls="api-serving", gpus=8), job_doc("small", gpus=8)])
    assert where(call, "api") == ("placed", "azure") and where(call, "small") == ("placed", "azure")
    nodes.kill("az")
    svc.reconcile_nodes(nodes.read())
    assert where(call, "api")[0] == "queued"  # pinned to Azure: it waits, it never leaves
    assert where(call, "small") == ("placed", "oci")
    nodes.nodes.append(node("az2", AZ, 16))
    svc.reconcile_nodes(nodes.read())
    assert where(call, "api") == ("placed", "azure")


def test_drift_injected_by_hand_is_repaired_and_exported(tmp_path: Path) -> None:
    nodes = FakeNodes(node("az", AZ, 16), node("oc", OCI, 24), node("aw", AWS, 24))
    svc, call = service(tmp_path / "l.db", nodes)
    call("capacity", "oci", "us-ashburn-1", "H100", 8)  # the books say 8; the node advertises 24
    assert svc.reconcile_nodes(nodes.read()) == 1
    assert svc.last_node_plan is not None and svc.last_node_plan.drift[OCI] == -16
    assert {u["cloud"]: u["capacity"] for u in call("usage")}["oci"] == 24
    assert svc.reconcile_nodes(nodes.read()) == 0


def test_drain_cordons_a_cloud_new_work_goes_elsewhere_and_undo_reopens_it(tmp_path: Path) -> None:
    nodes = FakeNodes(node("az", AZ, 16), node("oc", OCI, 24), node("aw", AWS, 24))
    _, call = service(tmp_path / "l.db", nodes)
    call("submit", [job_doc("fill", gpus=16), job_doc("first", gpus=17)])  # Azure full; 7 GPUs free on OCI
    assert where(call, "fill") == ("placed", "azure") and where(call, "first") == ("placed", "oci")
    assert call("cordon", "oci", True) == {"cordoned": ["oci"], "moved": []}
    call("submit", [job_doc("second", gpus=4)])
    assert where(call, "first") == ("placed", "oci")  # running work stays
    assert where(call, "second") == ("placed", "aws")  # OCI is cheaper and has room, but cordoned
    assert call("cordon", "oci", False) == {"cordoned": [], "moved": []}
    assert {u["cloud"]: u["capacity"] for u in call("usage")}["oci"] == 24
    assert call("cordon", "aws", True, True) == {"cordoned": ["aws"], "moved": ["second"]}  # --move
    assert where(call, "second") == ("placed", "oci")


def test_a_lost_node_moves_its_job_to_the_holder_when_the_holder_accepts(tmp_path: Path) -> None:
    nodes = FakeNodes(node("az", AZ, 16), node("oc", OCI, 24), node("aw", AWS, 24))
    svc, call = service(tmp_path / "l.db", nodes)
    call("submit", [job_doc("fill", gpus=16), job_doc("eight", gpus=8)])
    assert where(call, "eight") == ("placed", "oci")  # Azure was full
    call("release", "fill")
    nodes.kill("oc")
    svc.reconcile_nodes(nodes.read())
    assert where(call, "eight") == ("placed", "azure")  # offered to the holder first, which accepts
    evs: list[Any] = [e for e in Ledger(tmp_path / "l.db", readonly=True).events() if getattr(e, "job", None) == "eight"]
    last = [e for e in evs if e.kind == "placed"][-1]
    assert any(e.kind == "answered" and e.attempt == last.attempt and e.holder == "azure" and e.answer == "accepted" for e in evs)


def test_a_lost_node_records_its_evictions_in_time_order_and_the_ledger_verifies(tmp_path: Path) -> None:
    """Engine.set_capacity reads the clock again for each eviction it emits before its own
    record; the service holds one instant per repair so the ledger never runs backwards."""
    nodes = FakeNodes(node("az", AZ, 16), node("oc", OCI, 24), node("aw", AWS, 24))
    svc, call = service(tmp_path / "l.db", nodes)
    call("submit", [job_doc("api", cls="api-serving", gpus=8), job_doc("small", gpus=8)])
    nodes.kill("az")
    svc.reconcile_nodes(nodes.read())
    times = [e.at for e in Ledger(tmp_path / "l.db", readonly=True).events()]
    assert times == sorted(times)
    assert call("verify").startswith("OK"), call("verify")

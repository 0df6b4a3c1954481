"""Buying capacity on KubeRay (``scheduler/kube/scaling.py``). No API server runs here: the
official client talks HTTP to an in-process fake of the two calls the provider makes (GET and
PATCH of the RayCluster, ``tests/kube/fakeapi.py``), and a fake operator turns each group's
``replicas`` into pods and Ray nodes. The same decisions as on a local cluster (the scheduler
service's reconcile tick) buy a block as ``replicas`` + 1 and release an idle bought node as
``replicas`` - 1 with its pod in ``scaleStrategy.workersToDelete``."""

from __future__ import annotations

import asyncio
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from scheduler.kube.render import raycluster
from scheduler.kube.scaling import KubeBlocks, ScalingError, attribute, buy_patch, in_kuberay, kube_blocks, release_patch
from scheduler.ledger import Ledger
from scheduler.paths import PACKAGE_DIR
from scheduler.runtime.nodewatch import RayNode
from scheduler.runtime.provisioner import Block
from scheduler.runtime.service import SchedulerService
from scheduler.specs import CloudCatalog
from tests.integration.conftest import job_doc
from tests.kube.fakeapi import FakeApiServer, FakeOperator

ROOT = PACKAGE_DIR.parent
AZ_GROUP, OCI_GROUP = "azure-eastus-h100-blocks", "oci-us-ashburn-1-h100-blocks"
JSON_PATCH = "application/json-patch+json"


def blocks_catalog(idle: float = 0.0) -> dict[str, Any]:
    """deploy/examples/blocks/catalog.yaml with ``idleReleaseSeconds`` set (0: released at once)."""
    doc = yaml.safe_load((ROOT / "deploy" / "examples" / "blocks" / "catalog.yaml").read_text())
    for b in doc["spec"]["backends"]:
        for r in b["regions"]:
            for spec in (r.get("blocks") or {}).values():
                spec["idleReleaseSeconds"] = idle
    return doc


def contract() -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "deploy" / "examples" / "contract.yaml").read_text()))


@pytest.fixture
def cluster() -> Iterator[tuple[FakeApiServer, CloudCatalog]]:
    catalog = CloudCatalog.model_validate(blocks_catalog())
    with FakeApiServer(raycluster(catalog)) as server:
        yield server, catalog


def index(server: FakeApiServer, group: str) -> int:
    return [g["groupName"] for g in server.rc["spec"]["workerGroupSpecs"]].index(group)


# ---------------------------------------------------------------------------------- the provider alone


def test_buying_a_block_is_one_json_patch_raising_its_groups_replicas(cluster: tuple[FakeApiServer, CloudCatalog]) -> None:
    server, catalog = cluster
    kb = KubeBlocks(catalog, "mcsched", "mcsched", api=server.api())
    from scheduler.runtime.nodes import block_node_type

    kb.start(block_node_type(catalog, "azure", "eastus", "H100", "azure-b1"))
    i = index(server, AZ_GROUP)
    assert server.patches == [
        (JSON_PATCH, [
            {"op": "test", "path": "/metadata/resourceVersion", "value": "1"},
            {"op": "add", "path": f"/spec/workerGroupSpecs/{i}/replicas", "value": 2},
        ])
    ]  # fmt: skip
    assert server.gets == 1 and server.group(AZ_GROUP)["replicas"] == 2
    assert kb.running("azure-b1")
    with pytest.raises(ScalingError, match="maxReplicas"):  # azure's pool has max 2 blocks
        kb.start(block_node_type(catalog, "azure", "eastus", "H100", "azure-b2"))
    assert server.group(AZ_GROUP)["replicas"] == 2


def test_releasing_a_bought_node_lowers_replicas_and_names_its_pod_in_workers_to_delete(cluster: tuple[FakeApiServer, CloudCatalog]) -> None:
    server, catalog = cluster
    server.group(OCI_GROUP).update(replicas=3, scaleStrategy={"workersToDelete": ["gone-1"]})
    kb = KubeBlocks(catalog, "mcsched", "mcsched", api=server.api())
    b = Block("oci-b1", "oci", "us-ashburn-1", "H100", 8, "big", 0.0, 20.0, 2.95, 30.0, joined_at=5.0, node_id="n7")
    kb.identify([RayNode("n7", True, {"cloud": "oci", "block": OCI_GROUP}, {}, "mcsched-oci-pod-7")], [b])
    kb.stop("oci-b1")
    i = index(server, OCI_GROUP)
    assert server.patches[-1] == (JSON_PATCH, [
        {"op": "test", "path": "/metadata/resourceVersion", "value": "1"},
        {"op": "add", "path": f"/spec/workerGroupSpecs/{i}/replicas", "value": 2},
        {"op": "add", "path": f"/spec/workerGroupSpecs/{i}/scaleStrategy", "value": {"workersToDelete": ["gone-1", "mcsched-oci-pod-7"]}},
    ])  # fmt: skip
    assert not kb.running("oci-b1")


def test_a_change_between_read_and_patch_is_refused_and_the_patch_made_again(cluster: tuple[FakeApiServer, CloudCatalog]) -> None:
    server, catalog = cluster
    kb = KubeBlocks(catalog, "mcsched", "mcsched", api=server.api())
    from scheduler.runtime.nodes import block_node_type

    server.race_next_patch = True
    kb.start(block_node_type(catalog, "oci", "us-ashburn-1", "H100", "oci-b1"))
    assert server.gets == 2 and len(server.patches) == 2
    assert server.patches[1][1][0] == {"op": "test", "path": "/metadata/resourceVersion", "value": "2"}
    assert server.group(OCI_GROUP)["replicas"] == 2  # once, not twice


def test_an_unreachable_or_wrong_cluster_is_a_scaling_error_not_a_traceback(cluster: tuple[FakeApiServer, CloudCatalog]) -> None:
    server, catalog = cluster
    from scheduler.runtime.nodes import block_node_type

    node = block_node_type(catalog, "oci", "us-ashburn-1", "H100", "oci-b1")
    with pytest.raises(ScalingError, match="404"):
        KubeBlocks(catalog, "other", "mcsched", api=server.api()).start(node)
    from kubernetes import client

    closed = client.CustomObjectsApi(client.ApiClient(client.Configuration(host="http://127.0.0.1:9")))  # discard port: refused
    closed.api_client.configuration.retries = 0
    with pytest.raises(ScalingError, match="RayCluster mcsched/mcsched: MaxRetryError"):
        KubeBlocks(catalog, "mcsched", "mcsched", api=closed).start(node)
    rc = server.rc
    rc["spec"]["workerGroupSpecs"] = [g for g in rc["spec"]["workerGroupSpecs"] if g["groupName"] != OCI_GROUP]
    with pytest.raises(ScalingError, match="no worker group 'oci-us-ashburn-1-h100-blocks'"):
        buy_patch(rc, OCI_GROUP)


def test_release_at_min_replicas_changes_nothing_and_keeps_at_most_max_names() -> None:
    rc = {"metadata": {"name": "mcsched", "resourceVersion": "9"},
          "spec": {"workerGroupSpecs": [{"groupName": "g", "replicas": 1, "minReplicas": 1, "maxReplicas": 3}]}}  # fmt: skip
    assert release_patch(rc, "g", "p") is None
    rc["spec"]["workerGroupSpecs"][0].update(replicas=3, scaleStrategy={"workersToDelete": ["a", "b", "c", "d"]})
    ops = release_patch(rc, "g", "p")
    assert ops is not None and ops[-1]["value"] == {"workersToDelete": ["c", "d", "p"]}
    assert release_patch(rc, "g", None) == ops[:2]  # a pod never seen: the operator picks


def test_the_provider_travels_to_the_actor_without_its_client(cluster: tuple[FakeApiServer, CloudCatalog]) -> None:
    server, catalog = cluster
    kb = pickle.loads(pickle.dumps(KubeBlocks(catalog, "mcsched", "mcsched", api=server.api())))
    assert kb._api is None and kb.cluster == "mcsched" and set(kb.groups) == {("azure", "eastus", "H100"), ("oci", "us-ashburn-1", "H100")}


def test_selected_only_inside_kuberay_with_a_catalog_that_buys(monkeypatch: pytest.MonkeyPatch) -> None:
    catalog = CloudCatalog.model_validate(blocks_catalog())
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("MCSCHED_RAYCLUSTER", "mcsched")
    assert in_kuberay() is None and kube_blocks(catalog) is None
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("POD_NAMESPACE", "ns1")
    kb = kube_blocks(catalog)
    assert kb is not None and (kb.cluster, kb.namespace) == ("mcsched", "ns1")
    default = CloudCatalog.model_validate(yaml.safe_load((ROOT / "deploy" / "examples" / "catalog.yaml").read_text()))
    assert kube_blocks(default) is None  # nothing bought: no provider, no API call
    monkeypatch.delenv("MCSCHED_RAYCLUSTER")
    assert kube_blocks(catalog) is None

    from scheduler.runtime.actor import block_provider

    monkeypatch.setenv("MCSCHED_RAYCLUSTER", "mcsched")
    assert isinstance(block_provider("/nonexistent/ledger.db", blocks_catalog()), KubeBlocks)


# ---------------------------------------------------------------------------------- which node is which block


def row(node_id: str, group: str, alive: bool = True, pod: str = "") -> RayNode:
    return RayNode(node_id, alive, {"cloud": "oci", "block": group}, {}, pod or f"pod-{node_id}")


def test_nodes_of_a_block_group_are_attributed_to_bought_blocks_beyond_the_initial_ones() -> None:
    from scheduler.kube.scaling import GroupInfo

    groups = {("oci", "r", "H100"): GroupInfo("g", 1)}
    joined = Block("oci-b1", "oci", "r", "H100", 8, "j", 0.0, 20.0, 1.0, 1.0, joined_at=3.0, node_id="n5")
    waiting = Block("oci-b2", "oci", "r", "H100", 8, "k", 10.0, 30.0, 1.0, 1.0)
    other = RayNode("x", True, {"cloud": "aws"}, {}, "aws-pod")
    # one initial node (n1), b1's node (n5), and one newcomer (n9) for b2; a dead row of nobody
    rows, pods = attribute([row("n1", "g"), row("n5", "g"), row("n9", "g"), row("n0", "g", alive=False), other], [joined, waiting], groups)
    assert {r.node_id: r.labels.get("block") for r in rows} == {"n1": None, "n5": "oci-b1", "n9": "oci-b2", "n0": None, "x": None}
    assert pods == {"oci-b1": "pod-n5", "oci-b2": "pod-n9"}
    assert rows[-1] is other
    # no newcomer yet: the waiting block stays unjoined (the initial node is not taken for it)
    rows, pods = attribute([row("n1", "g"), row("n5", "g")], [joined, waiting], groups)
    assert [r.labels.get("block") for r in rows] == [None, "oci-b1"] and "oci-b2" not in pods
    # b1's node died: its dead row keeps its name, so the provisioner sees it lost
    rows, _ = attribute([row("n1", "g"), row("n5", "g", alive=False)], [joined], groups)
    assert [(r.labels.get("block"), r.alive) for r in rows] == [(None, True), ("oci-b1", False)]


# ---------------------------------------------------------------------------------- through the scheduler service


def service(path: Path, server: FakeApiServer, catalog: CloudCatalog, operator: FakeOperator) -> tuple[SchedulerService, Any]:
    svc = SchedulerService(blocks_catalog(), contract(), str(path), metrics_port=None, nodes=operator,
                           blocks=KubeBlocks(catalog, "mcsched", "mcsched", api=server.api(), busy=operator.busy_nodes))  # fmt: skip
    loop = asyncio.new_event_loop()

    def call(method: str, *args: Any) -> Any:
        return loop.run_until_complete(getattr(svc, method)(*args))

    return svc, call


def tick(svc: SchedulerService, operator: FakeOperator, call: Any) -> int:
    """The reconcile loop's node step (as on a local cluster), then the operator's reconcile."""
    changed = int(call("provision", operator.read()))
    svc.reconcile_nodes(operator.read())
    return changed


def started_with_initial_pods(tmp_path: Path, server: FakeApiServer, catalog: CloudCatalog) -> tuple[FakeOperator, SchedulerService, Any]:
    """A scheduler on the fake cluster after its first tick: each group's initial pod has joined."""
    operator = FakeOperator(server)
    svc, call = service(tmp_path / "l.db", server, catalog, operator)
    call("ping")
    tick(svc, operator, call)
    return operator, svc, call


def test_a_queued_job_buys_a_pod_of_the_holders_block_group_runs_on_it_and_its_pod_is_released(
    tmp_path: Path, cluster: tuple[FakeApiServer, CloudCatalog]
) -> None:
    server, catalog = cluster
    operator, svc, call = started_with_initial_pods(tmp_path, server, catalog)
    assert {u["cloud"]: u["capacity"] for u in call("usage")} == {"azure": 8, "oci": 8, "aws": 8}  # the initial pods
    initial_azure_pod = operator.pod_of(AZ_GROUP)
    call("submit", [job_doc("big", gpus=16)])
    assert call("status", "big")[0]["outcome"] == "queued"
    assert tick(svc, operator, call) == 1  # bought: the holder's group, not cheaper OCI's
    i = index(server, AZ_GROUP)
    assert server.patches == [(JSON_PATCH, [
        {"op": "test", "path": "/metadata/resourceVersion", "value": "1"},
        {"op": "add", "path": f"/spec/workerGroupSpecs/{i}/replicas", "value": 2},
    ])]  # fmt: skip
    assert call("status", "big")[0]["waiting"].startswith("buying 1 block of azure/eastus/H100")
    tick(svc, operator, call)
    assert len(server.patches) == 1  # never bought twice while the pod comes up
    operator.sync()  # KubeRay creates the pod; its Ray node joins with the group's labels
    bought_pod = operator.pod_of(AZ_GROUP)
    assert bought_pod != initial_azure_pod
    tick(svc, operator, call)
    tick(svc, operator, call)
    d = call("status", "big")[0]
    assert (d["outcome"], d["cloud"], d["via"]) == ("placed", "azure", "rofr-accepted")
    operator.busy = {operator.pods[bought_pod][1]}  # Ray has the job's bundle on the bought pod's node
    call("release", "big")
    tick(svc, operator, call)
    assert len(server.patches) == 1  # never released with work on it
    operator.busy = set()
    tick(svc, operator, call)  # idle timeout 0: released at once
    assert server.patches[-1] == (JSON_PATCH, [
        {"op": "test", "path": "/metadata/resourceVersion", "value": "2"},
        {"op": "add", "path": f"/spec/workerGroupSpecs/{i}/replicas", "value": 1},
        {"op": "add", "path": f"/spec/workerGroupSpecs/{i}/scaleStrategy", "value": {"workersToDelete": [bought_pod]}},
    ])  # fmt: skip
    operator.sync()
    assert operator.deleted == [bought_pod]  # that pod, not the initial one
    tick(svc, operator, call)
    assert {u["cloud"]: u["capacity"] for u in call("usage")}["azure"] == 8
    evs = list(Ledger(tmp_path / "l.db", readonly=True).events())
    kinds = [e.kind for e in evs]
    assert kinds.index("block-purchased") < kinds.index("block-joined") < kinds.index("placed")
    released = next(e for e in evs if e.kind == "block-released")
    assert (released.node, released.reason) == ("azure-b1", "idle")
    assert call("verify").startswith("OK: ")


def test_a_pod_that_never_joins_fails_after_the_kuberay_join_timeout_and_only_replicas_is_lowered(
    tmp_path: Path, cluster: tuple[FakeApiServer, CloudCatalog]
) -> None:
    from scheduler.kube.scaling import JOIN_TIMEOUT
    from scheduler.runtime.provisioner import JOIN_TIMEOUT as LOCAL_JOIN_TIMEOUT

    server, catalog = cluster
    operator, svc, call = started_with_initial_pods(tmp_path, server, catalog)
    call("submit", [job_doc("big", gpus=16)])
    tick(svc, operator, call)  # bought; the operator never makes the pod (no GPU node to schedule it on)
    prov, engine = svc.provisioner, svc.engine
    assert prov is not None and engine is not None
    b = prov.blocks["azure-b1"]
    managed = {"azure", "oci", "aws"}
    assert LOCAL_JOIN_TIMEOUT < JOIN_TIMEOUT
    assert prov.plan(engine, operator.read(), set(), managed, b.bought_at + LOCAL_JOIN_TIMEOUT + 1).gone == []  # a pod takes longer
    step = prov.plan(engine, operator.read(), set(), managed, b.bought_at + JOIN_TIMEOUT + 1)
    assert step.gone == [(b, "failed")]
    prov.nodes.stop(b.name)
    i = index(server, AZ_GROUP)
    assert server.patches[-1] == (JSON_PATCH, [
        {"op": "test", "path": "/metadata/resourceVersion", "value": "2"},
        {"op": "add", "path": f"/spec/workerGroupSpecs/{i}/replicas", "value": 1},
    ])  # fmt: skip

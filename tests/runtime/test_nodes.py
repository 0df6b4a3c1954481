"""The clouds as Ray node types, from the catalog; the manifests' worker groups are the same node types."""

from __future__ import annotations

from scheduler.kube.render import raycluster
from scheduler.loading import load_catalog
from scheduler.paths import default_catalog
from scheduler.runtime.nodes import Layout, node_types
from scheduler.runtime.resources import cloud_resources, pool_resource
from scheduler.runtime.workers import WorkerNode
from scheduler.specs import CloudCatalog
from tests.builders import a_catalog


def catalog() -> CloudCatalog:
    return (
        a_catalog()
        .cloud("azure", {"eastus": {"H100": 16, "H200": 8}, "westeurope": {"H100": 8}}, price=3.4)
        .cloud("oci", {"us-ashburn-1": {"H100": 24}}, price=2.9)
        .obj()
    )


def test_one_node_per_cloud_carries_its_pools_and_labels() -> None:
    types = {t.name: t for t in node_types(catalog())}
    assert list(types) == ["azure", "oci"]
    assert types["azure"].resources == cloud_resources(catalog(), "azure")
    assert types["oci"].resources == {pool_resource("oci", "us-ashburn-1", "H100"): 24.0}
    # region and jurisdiction only where the node holds exactly one
    assert dict(types["azure"].labels) == {"cloud": "azure", "jurisdiction": "US"}  # two regions: no region label
    assert dict(types["oci"].labels) == {"cloud": "oci", "jurisdiction": "US", "region": "us-ashburn-1"}
    assert types["oci"].labels_arg() == "cloud=oci,jurisdiction=US,region=us-ashburn-1"


def test_region_layout_splits_a_cloud_and_single_has_no_workers() -> None:
    types = {t.name: t for t in node_types(catalog(), Layout.REGION)}
    assert list(types) == ["azure-eastus", "azure-westeurope", "oci-us-ashburn-1"]
    assert dict(types["azure-westeurope"].labels) == {"cloud": "azure", "jurisdiction": "US", "region": "westeurope"}
    merged: dict[str, float] = {}
    for t in types.values():
        merged.update(t.resources)
    assert merged == cloud_resources(catalog())  # every pool on exactly one node
    assert node_types(catalog(), Layout.SINGLE) == []
    assert [t.name for t in node_types(catalog(), clouds=["oci"])] == ["oci"]


def test_manifests_worker_groups_are_the_local_node_types() -> None:
    """`mcsched manifests` and `mcsched up` agree: one worker group per local node type, same labels and resources."""
    cat = load_catalog(default_catalog())
    assert "jurisdiction" not in dict(node_types(cat)[0].labels)  # Azure spans US, EU and JP: no single jurisdiction
    groups = raycluster(cat)["spec"]["workerGroupSpecs"]
    local = node_types(cat)
    assert [g["groupName"] for g in groups] == [t.name for t in local] == cat.backend_names
    for g, t in zip(groups, local, strict=True):
        assert {k: float(v) for k, v in g["resources"].items()} == dict(t.resources)
        assert {k: v for k, v in g["labels"].items() if "/" not in k} == dict(t.labels)


def test_worker_record_round_trips_through_cluster_json() -> None:
    t = node_types(catalog())[1]
    node = WorkerNode(t.name, t.cloud, dict(t.labels), dict(t.resources), 4242, "abc")
    assert WorkerNode.from_dict(node.to_dict()) == node
    assert node.node_type() == t and node.node_name == "mcsched-oci"

"""The RayCluster rendered from a catalog that buys capacity: a KubeRay worker group per pool bought
in blocks (one pod = one block), the cloud's own group keeping the rest, and the scheduler told
which RayCluster to scale. The default catalog buys nothing, so its manifests do not change."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from scheduler.errors import SpecError
from scheduler.kube.render import CLUSTER_ENV, raycluster, render, render_example, scale_rbac
from scheduler.loading import load_catalog
from scheduler.paths import PACKAGE_DIR, default_catalog
from scheduler.runtime.nodes import block_groups, group_name
from scheduler.runtime.resources import CLOUD_LABEL, cloud_resources, pool_resource
from scheduler.specs import CloudCatalog

ROOT = PACKAGE_DIR.parent
BLOCKS = ROOT / "deploy" / "examples" / "blocks" / "catalog.yaml"


def groups(catalog: CloudCatalog) -> dict[str, dict]:  # type: ignore[type-arg]
    return {g["groupName"]: g for g in raycluster(catalog)["spec"]["workerGroupSpecs"]}


def sidecar_env(catalog: CloudCatalog) -> list[str]:
    head = raycluster(catalog)["spec"]["headGroupSpec"]["template"]["spec"]["containers"]
    return [e["name"] for e in next(c for c in head if c["name"] == "mcsched-serve")["env"]]


def test_each_growable_pool_is_a_group_of_block_pods_with_the_catalogs_min_max_and_replicas() -> None:
    cat = load_catalog(BLOCKS)
    by_name = groups(cat)
    assert list(by_name) == ["azure", "oci", "aws", "azure-eastus-h100-blocks", "oci-us-ashburn-1-h100-blocks"]
    expected = {  # from the catalog: (cloud, region, gpu type) -> (block GPUs, initial, max)
        ("azure", "eastus", "H100"): (8, 1, 2),
        ("oci", "us-ashburn-1", "H100"): (8, 1, 3),
    }
    assert {g.key for g in block_groups(cat)} == set(expected)
    for key, (gpus, initial, most) in expected.items():
        g = by_name[group_name(*key)]
        assert (g["replicas"], g["minReplicas"], g["maxReplicas"]) == (initial, initial, most)
        assert g["resources"] == {pool_resource(*key): str(gpus)}  # one pod = one block
        cloud, region, _ = key
        assert g["labels"] == {CLOUD_LABEL: cloud, "cloud": cloud, "region": region, "jurisdiction": "US", "block": g["groupName"]}
        assert "numOfHosts" not in g and "hostname" not in g["template"]["spec"]  # one host per pod, named as the pod
    # the clouds' own groups keep what is not bought in blocks (AWS's fixed pool; Azure and OCI nothing)
    assert by_name["aws"]["resources"] == {pool_resource("aws", "us-east-1", "H100"): "8"}
    assert by_name["azure"]["resources"] == {} and by_name["oci"]["resources"] == {}
    assert "block" not in by_name["oci"]["labels"] and by_name["oci"]["labels"]["cloud"] == "oci"
    # every pool's full count is reachable: fixed + max blocks
    most = {pool_resource(*g.key): g.max * g.node.resources[pool_resource(*g.key)] for g in block_groups(cat)}
    fixed = {k: float(v) for g in by_name.values() if "block" not in g["labels"] for k, v in g["resources"].items()}
    assert {**fixed, **most} == cloud_resources(cat)
    assert CLUSTER_ENV in sidecar_env(cat)


def test_a_catalog_without_blocks_renders_as_before() -> None:
    cat = load_catalog(default_catalog())
    assert block_groups(cat) == [] and list(groups(cat)) == cat.backend_names
    assert CLUSTER_ENV not in sidecar_env(cat)
    for cloud, g in groups(cat).items():
        assert (g["replicas"], g["minReplicas"], g["maxReplicas"]) == (1, 1, 1)
        assert {k: float(v) for k, v in g["resources"].items()} == cloud_resources(cat, cloud)


def test_the_blocks_example_grants_get_and_patch_on_its_raycluster_only() -> None:
    role, binding = scale_rbac()
    assert role["rules"] == [{"apiGroups": ["ray.io"], "resources": ["rayclusters"], "resourceNames": ["mcsched"], "verbs": ["get", "patch"]}]
    assert binding["roleRef"]["name"] == role["metadata"]["name"] and binding["subjects"][0]["name"] == "mcsched"
    assert set(render_example(ROOT, "blocks")) == {"raycluster.yaml", "config.yaml", "rbac.yaml"}


def test_the_ledger_origin_and_witnesses_come_from_optional_keys_of_the_signing_secret() -> None:
    """Auditors pin the log's origin in their trust file, so a deployment must be able to name it
    (else the ledger picks a random one on first write); the actor runs in the head container,
    the supervisor in the sidecar: both get it."""
    from scheduler.kube.render import SIGNING_SECRET
    from scheduler.ledger.store import ORIGIN_ENV
    from scheduler.runtime.service import WITNESS_ENV

    containers = raycluster(load_catalog(default_catalog()))["spec"]["headGroupSpec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["ray-head", "mcsched-serve"]
    for container in containers:
        env = {e["name"]: e for e in container["env"]}
        for name, key in ((ORIGIN_ENV, "origin"), (WITNESS_ENV, "witness-urls")):
            assert env[name]["valueFrom"] == {"secretKeyRef": {"name": SIGNING_SECRET, "key": key, "optional": True}}, (container["name"], name)


@pytest.mark.parametrize(
    ("source", "content", "expect"),
    [
        ("deploy/grafana/dashboards/mcsched.json", "{bad", "deploy/grafana/dashboards/mcsched.json:1: invalid JSON: Expecting property name enclosed in double quotes"),
        ("deploy/prometheus/rules/mcsched-rules.yml", "groups: [\n", "deploy/prometheus/rules/mcsched-rules.yml:2: invalid YAML: expected the node content, but found '<stream end>'"),
        ("deploy/prometheus/rules/mcsched-rules.yml", None, "deploy/prometheus/rules/mcsched-rules.yml: cannot read (No such file or directory)"),
    ],
    ids=["dashboard-not-json", "rules-not-yaml", "rules-missing"],
)
def test_a_broken_single_source_is_one_line_naming_it(tmp_path: Path, source: str, content: str | None, expect: str) -> None:
    """The dashboard and the alert rules are sources users edit (docs/kubernetes.md); a broken one was a
    traceback (JSONDecodeError, ParserError, FileNotFoundError) where a broken catalog is one line."""
    for rel in ("deploy/examples/catalog.yaml", "deploy/examples/contract.yaml", "deploy/grafana/dashboards/mcsched.json",
                "deploy/prometheus/rules/mcsched-rules.yml"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / rel, tmp_path / rel)
    assert render(tmp_path) == render(ROOT)
    if content is None:
        (tmp_path / source).unlink()
    else:
        (tmp_path / source).write_text(content)
    with pytest.raises(SpecError) as exc:
        render(tmp_path)
    assert str(exc.value) == f"{tmp_path}/{expect}"

"""The Kubernetes manifests, validated offline: kustomize renders, built-in kinds validate
strictly, custom resources validate against the vendored CRD schemas, and the pieces agree
with their single sources in deploy/."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from scheduler.kube.render import stale
from scheduler.loading import load_catalog
from scheduler.runtime.resources import CLOUD_LABEL, cloud_resources
from tests.shared import needs_shared, shared

ROOT = Path(__file__).resolve().parents[2]
CRDS = shared("schemas", "crds")
needs_crds = needs_shared("schemas", "crds")
OVERLAYS = ["dev", "production"]
EXAMPLES = ["examples/blocks"]  # manifests/examples/<name>: the base with a catalog of its own
KUBE_VERSIONS = ["1.30.0", "1.33.0"]
CRD_FILES = {
    ("ray.io", "RayCluster"): "ray.io_rayclusters.yaml",
    ("ray.io", "RayJob"): "ray.io_rayjobs.yaml",
    ("monitoring.coreos.com", "ServiceMonitor"): "monitoring.coreos.com_servicemonitors.yaml",
    ("monitoring.coreos.com", "PodMonitor"): "monitoring.coreos.com_podmonitors.yaml",
    ("monitoring.coreos.com", "PrometheusRule"): "monitoring.coreos.com_prometheusrules.yaml",
}


def kubectl() -> str:
    exe = Path(sys.executable).with_name("kubectl")
    return str(exe) if exe.exists() else (shutil.which("kubectl") or "kubectl")


@cache
def rendered(overlay: str) -> tuple[dict[str, Any], ...]:
    where = ROOT / "manifests" / (overlay if "/" in overlay else f"overlays/{overlay}")
    r = subprocess.run([kubectl(), "kustomize", str(where)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return tuple(d for d in yaml.safe_load_all(r.stdout) if d)


def by_kind(overlay: str, kind: str) -> list[dict[str, Any]]:
    return [d for d in rendered(overlay) if d["kind"] == kind]


def strict(schema: dict[str, Any]) -> dict[str, Any]:
    """Reject unknown fields like the API server's strict field validation does."""
    schema = copy.deepcopy(schema)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "properties" in node and "additionalProperties" not in node and not node.get("x-kubernetes-preserve-unknown-fields"):
                node["additionalProperties"] = False
            if isinstance(node.get("pattern"), str) and "(?i)" in node["pattern"]:
                node["pattern"] = "(?i)" + node["pattern"].replace("(?i)", "")  # Go allows mid-pattern flags, Python does not
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(schema)
    return schema


@cache
def crd_schema(group: str, kind: str, version: str) -> dict[str, Any]:
    crd = yaml.safe_load((CRDS / CRD_FILES[(group, kind)]).read_text())
    ver = next(v for v in crd["spec"]["versions"] if v["name"] == version)
    return strict(ver["schema"]["openAPIV3Schema"])


@pytest.mark.parametrize("overlay", OVERLAYS + EXAMPLES)
def test_kustomize_renders_every_overlay(overlay: str) -> None:
    kinds = sorted(d["kind"] for d in rendered(overlay))
    for needed in ["Namespace", "ServiceAccount", "Role", "RoleBinding", "RayCluster", "Service", "NetworkPolicy",
                   "ServiceMonitor", "PodMonitor", "PrometheusRule", "ConfigMap", "PersistentVolumeClaim"]:
        assert needed in kinds, needed
    assert all(d["metadata"].get("namespace") == "mcsched" for d in rendered(overlay) if d["kind"] != "Namespace")


@pytest.mark.parametrize("version", KUBE_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS + EXAMPLES)
def test_builtin_objects_validate_strictly(overlay: str, version: str) -> None:
    for doc in rendered(overlay):
        if "." in doc["apiVersion"].split("/")[0] and not doc["apiVersion"].startswith(("rbac.authorization.k8s.io", "networking.k8s.io")):
            continue  # custom resources: validated against their CRDs below
        kubernetes_validate.validate(doc, version, strict=True)


@needs_crds
@pytest.mark.parametrize("overlay", OVERLAYS + EXAMPLES)
def test_custom_resources_validate_against_the_crds(overlay: str) -> None:
    seen = set()
    for doc in rendered(overlay):
        group, _, version = doc["apiVersion"].rpartition("/")
        if (group, doc["kind"]) in CRD_FILES:
            jsonschema.Draft7Validator(crd_schema(group, doc["kind"], version)).validate(doc)
            seen.add(doc["kind"])
    assert seen == {"RayCluster", "ServiceMonitor", "PodMonitor", "PrometheusRule"}


@needs_crds
def test_crd_validation_has_teeth() -> None:
    rc = copy.deepcopy(by_kind("dev", "RayCluster")[0])
    rc["spec"]["workerGroupSpecs"][0]["replicaz"] = 1
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(crd_schema("ray.io", "RayCluster", "v1")).validate(rc)


def test_generated_files_match_their_sources() -> None:
    assert stale(ROOT) == [], "run `mcsched manifests`"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_consistency_with_catalog_exporter_rules_and_dashboard(overlay: str) -> None:
    catalog = load_catalog(ROOT / "deploy" / "examples" / "catalog.yaml")
    rc = by_kind(overlay, "RayCluster")[0]
    groups = {g["groupName"]: g for g in rc["spec"]["workerGroupSpecs"]}
    assert list(groups) == catalog.backend_names
    for cloud, g in groups.items():
        assert {k: float(v) for k, v in g["resources"].items()} == cloud_resources(catalog, cloud)
        assert g["labels"][CLOUD_LABEL] == cloud
    assert rc["spec"]["authOptions"]["mode"] == "token"
    # ServiceMonitor port -> Service port -> container port == the exporter's port.
    sm = by_kind(overlay, "ServiceMonitor")[0]
    svc = next(s for s in by_kind(overlay, "Service") if s["metadata"]["name"] == "mcsched-metrics")
    port = next(p for p in svc["spec"]["ports"] if p["name"] == sm["spec"]["endpoints"][0]["port"])
    serve = next(c for c in rc["spec"]["headGroupSpec"]["template"]["spec"]["containers"] if c["name"] == "mcsched-serve")
    assert port["targetPort"] == int(serve["command"][serve["command"].index("--metrics-port") + 1]) == 9464
    rule = by_kind(overlay, "PrometheusRule")[0]
    assert rule["spec"] == yaml.safe_load((ROOT / "deploy" / "prometheus" / "rules" / "mcsched-rules.yml").read_text())
    dash_cm = next(c for c in by_kind(overlay, "ConfigMap") if c["metadata"]["name"] == "mcsched-grafana-dashboard")
    assert dash_cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dash_cm["data"]["mcsched.json"]) == json.loads((ROOT / "deploy" / "grafana" / "dashboards" / "mcsched.json").read_text())
    cfg = next(c for c in by_kind(overlay, "ConfigMap") if c["metadata"]["name"] == "mcsched-config")
    assert cfg["data"]["catalog.yaml"] == (ROOT / "deploy" / "examples" / "catalog.yaml").read_text()
    assert cfg["data"]["contract.yaml"] == (ROOT / "deploy" / "examples" / "contract.yaml").read_text()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_is_limited_non_root_and_pinned(overlay: str) -> None:
    rc = by_kind(overlay, "RayCluster")[0]
    pods = [rc["spec"]["headGroupSpec"]["template"]] + [g["template"] for g in rc["spec"]["workerGroupSpecs"]]
    containers = [c for p in pods for c in p["spec"]["containers"]]
    assert len(containers) == 2 + len(rc["spec"]["workerGroupSpecs"])
    for pod in pods:
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
        assert not pod["spec"].get("hostNetwork")
    for c in containers:
        assert {"cpu", "memory"} <= c["resources"]["limits"].keys(), c["name"]
        sc = c["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["allowPrivilegeEscalation"] is False and sc["runAsUser"] != 0
        image = c["image"]
        assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"), image
    for svc in by_kind(overlay, "Service"):
        assert svc["spec"].get("type", "ClusterIP") == "ClusterIP"
    role = by_kind(overlay, "Role")[0]
    assert role["rules"] == [{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["mcsched-config"], "verbs": ["get"]}]


def test_overlays_differ_in_size() -> None:
    def head_cpu(o: str) -> str:
        return by_kind(o, "RayCluster")[0]["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"]

    assert head_cpu("dev") == "1" and head_cpu("production") == "8"


def test_dockerfile_builds_the_image_the_manifests_name() -> None:
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    image = by_kind("dev", "RayCluster")[0]["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["image"]
    assert image in text and "USER 1000" in text and ":latest" not in text


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_served_models_api_is_exposed_by_a_service_and_the_network_policy(overlay: str) -> None:
    from scheduler.runtime.serve.naming import DEFAULT_PORT

    rc = by_kind(overlay, "RayCluster")[0]
    head = rc["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    port = next(p["containerPort"] for p in head["ports"] if p["name"] == "serve")
    env = {e["name"]: e.get("value") for e in head["env"]}
    assert port == DEFAULT_PORT and env["MCSCHED_SERVE_PORT"] == str(port) and env["MCSCHED_SERVE_HOST"] == "0.0.0.0"
    svc = next(s for s in by_kind(overlay, "Service") if s["metadata"]["name"] == "mcsched-serve")
    assert svc["spec"]["selector"]["ray.io/node-type"] == "head" and [p["targetPort"] for p in svc["spec"]["ports"]] == [port]
    policy = by_kind(overlay, "NetworkPolicy")[0]
    admitted = [r for r in policy["spec"]["ingress"] if any(p["port"] == port for p in r.get("ports", []))]
    assert admitted and all("namespaceSelector" in f for r in admitted for f in r["from"])


# ---------------------------------------------------------------------------------- buying capacity on KubeRay


def test_the_blocks_example_follows_its_catalog_and_may_scale_its_raycluster() -> None:
    from scheduler.kube.render import raycluster

    catalog_path = ROOT / "deploy" / "examples" / "blocks" / "catalog.yaml"
    rc = by_kind("examples/blocks", "RayCluster")[0]
    assert rc["spec"]["workerGroupSpecs"] == raycluster(load_catalog(catalog_path))["spec"]["workerGroupSpecs"]
    base = by_kind("dev", "RayCluster")[0]
    assert rc["spec"]["headGroupSpec"]["rayStartParams"] == base["spec"]["headGroupSpec"]["rayStartParams"]
    cfg = next(c for c in by_kind("examples/blocks", "ConfigMap") if c["metadata"]["name"] == "mcsched-config")
    assert cfg["data"]["catalog.yaml"] == catalog_path.read_text()
    roles = {r["metadata"]["name"]: r["rules"] for r in by_kind("examples/blocks", "Role")}
    assert roles["mcsched-scale"] == [{"apiGroups": ["ray.io"], "resources": ["rayclusters"], "resourceNames": [rc["metadata"]["name"]], "verbs": ["get", "patch"]}]
    assert roles["mcsched-scheduler"] == by_kind("dev", "Role")[0]["rules"]  # the base Role is unchanged
    binding = next(b for b in by_kind("examples/blocks", "RoleBinding") if b["metadata"]["name"] == "mcsched-scale")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "mcsched", "namespace": "mcsched"}]


def kubectl_patch(obj: dict[str, Any], ops: list[dict[str, Any]], tmp: Path) -> dict[str, Any]:
    """``kubectl patch --local``: the API server's own JSON Patch implementation, offline."""
    path = tmp / "rc.json"
    path.write_text(json.dumps(obj))
    r = subprocess.run([kubectl(), "patch", "--local", "-f", str(path), "--type", "json", "-p", json.dumps(ops), "-o", "json"],
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    return dict(json.loads(r.stdout))


@needs_crds
def test_the_scaling_patches_apply_to_the_rendered_raycluster_and_it_still_validates(tmp_path: Path) -> None:
    """The provider's bodies (``kube/scaling.py``), applied by kubectl's JSON Patch as the API server would."""
    from scheduler.kube.scaling import buy_patch, release_patch

    rc = copy.deepcopy(by_kind("examples/blocks", "RayCluster")[0])
    rc["metadata"]["resourceVersion"] = "41"
    schema = jsonschema.Draft7Validator(crd_schema("ray.io", "RayCluster", "v1"))
    group = "oci-us-ashburn-1-h100-blocks"
    i = [g["groupName"] for g in rc["spec"]["workerGroupSpecs"]].index(group)
    bought = kubectl_patch(rc, buy_patch(rc, group), tmp_path)
    schema.validate(bought)
    assert bought["spec"]["workerGroupSpecs"][i]["replicas"] == 2
    bought["metadata"]["resourceVersion"] = "42"
    released = kubectl_patch(bought, release_patch(bought, group, "mcsched-oci-us-ashburn-1-h100-blocks-worker-x7k2p") or [], tmp_path)
    schema.validate(released)
    g = released["spec"]["workerGroupSpecs"][i]
    assert g["replicas"] == 1 and g["scaleStrategy"] == {"workersToDelete": ["mcsched-oci-us-ashburn-1-h100-blocks-worker-x7k2p"]}
    others = [x for k, x in enumerate(released["spec"]["workerGroupSpecs"]) if k != i]
    assert others == [x for k, x in enumerate(rc["spec"]["workerGroupSpecs"]) if k != i]  # nothing else touched
    # a patch made from a stale read is refused (the resourceVersion test), not applied
    stale_ops = buy_patch(rc, group)  # made from version 41; the object is at 42 now
    path = tmp_path / "rc.json"
    path.write_text(json.dumps(released))
    r = subprocess.run([kubectl(), "patch", "--local", "-f", str(path), "--type", "json", "-p", json.dumps(stale_ops), "-o", "json"],
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode != 0 and "test" in r.stderr

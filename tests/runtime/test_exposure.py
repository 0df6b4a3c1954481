"""The stated exposure, offline: the NetworkPolicy admits Ray's unlisted ports (the Serve replicas'
ephemeral gRPC servers among them) only from this Ray cluster's own pods."""

from __future__ import annotations

from pathlib import Path

import yaml

POLICY = Path(__file__).resolve().parents[2] / "manifests" / "base" / "networkpolicy.yaml"
CLUSTER = {"ray.io/cluster": "mcsched"}


def test_any_port_only_from_this_clusters_ray_pods_named_ports_for_everyone_else() -> None:
    policy = yaml.safe_load(POLICY.read_text())
    assert policy["spec"]["podSelector"]["matchLabels"] == CLUSTER and policy["spec"]["policyTypes"] == ["Ingress"]
    for rule in policy["spec"]["ingress"]:
        if "ports" not in rule:  # every port, the ephemeral gRPC ones included: Ray pods of this cluster only
            assert rule["from"] == [{"podSelector": {"matchLabels": CLUSTER}}], rule
    admitted = {(p["port"], p["protocol"]) for rule in policy["spec"]["ingress"] for p in rule.get("ports", [])}
    assert admitted == {(6379, "TCP"), (8265, "TCP"), (10001, "TCP"), (9464, "TCP"), (8080, "TCP"), (8000, "TCP")}

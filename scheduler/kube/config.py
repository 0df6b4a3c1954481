"""Read the scheduler's catalog and contract from its ConfigMap, in-cluster.

The scheduler talks to the Kubernetes API with the official client and a ServiceAccount
whose Role allows exactly ``get`` on this one ConfigMap.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from scheduler.errors import MCSchedError, SpecError
from scheduler.io.yamldocs import parse_documents
from scheduler.loading import check_contract, validate_document
from scheduler.specs import CloudCatalog, Contract

SA_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def current_namespace() -> str:
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    if SA_NAMESPACE.exists():
        return SA_NAMESPACE.read_text().strip()
    return "default"


def core_api() -> Any:
    from kubernetes import client, config

    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]
    return client.CoreV1Api()


def _one(text: str, where: str, kind: type[CloudCatalog] | type[Contract]) -> Any:
    docs = parse_documents(text, where)
    if len(docs) != 1:
        raise SpecError(where, f"expected exactly one {kind.__name__} document, found {len(docs)}")
    loaded = validate_document(docs[0])
    if not isinstance(loaded.model, kind):
        raise SpecError(where, f"expected kind {kind.__name__}")
    return loaded


def config_from_configmap(name: str, namespace: str | None = None, api: Any | None = None) -> tuple[CloudCatalog, Contract]:
    """Fetch and validate ``catalog.yaml`` and ``contract.yaml`` from a ConfigMap."""
    ns = namespace or current_namespace()
    api = api or core_api()
    try:
        cm = api.read_namespaced_config_map(name, ns)
    except Exception as exc:  # ApiException and connection errors alike
        raise MCSchedError(f"cannot read ConfigMap {ns}/{name}: {getattr(exc, 'reason', exc)}") from None
    data = cm.data or {}
    for key in ("catalog.yaml", "contract.yaml"):
        if key not in data:
            raise SpecError(f"configmap/{ns}/{name}", f"missing key {key!r}")
    catalog = _one(data["catalog.yaml"], f"configmap/{ns}/{name}/catalog.yaml", CloudCatalog)
    contract = _one(data["contract.yaml"], f"configmap/{ns}/{name}/contract.yaml", Contract)
    errors = check_contract(contract.model, catalog.model, contract.doc)
    if errors:
        raise errors[0]
    return catalog.model, contract.model

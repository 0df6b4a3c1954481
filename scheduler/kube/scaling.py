"""Capacity blocks on KubeRay: the scheduler scales a growable pool's worker group.

The decisions are the local cluster's (``runtime/provisioner.py`` through the pure
``scheduler.provision``: which block to buy for which queued job, which idle bought node to
release); only carrying them out differs. Each pool bought in blocks is a KubeRay worker
group of its own (``kube/render.py``: one pod = one block, ``minReplicas`` = the initial
blocks, ``maxReplicas`` = ``max``), and:

- **buy** one block of pool P: ``replicas`` of P's group + 1; KubeRay's operator creates the
  pod, whose Ray node joins with the group's labels;
- **release** a bought node: ``replicas`` - 1 and ``scaleStrategy.workersToDelete`` naming its
  pod, which is how KubeRay's own autoscaler scales a chosen pod down
  (``ray.autoscaler._private.kuberay.node_provider``: a JSON Patch of these two paths).

Each change is one GET and one PATCH of the RayCluster custom resource with the official
client (``CustomObjectsApi``): a JSON Patch (RFC 6902) whose first operation tests the
``resourceVersion`` that was read, so a concurrent change (the operator's own status
writes, ``kubectl``, another patch) makes the API server refuse it (409/422) and it is read
and tried again. A merge patch would not do: ``workerGroupSpecs`` is a list, which a merge
patch replaces whole. ``workersToDelete`` keeps the names already there (at most the group's
``max``): a release right after another must not drop a pod the operator has not deleted
yet, or the operator (in-tree autoscaling off) would delete a pod of its own choosing.

**Which Ray node is which bought block** (``identify``): KubeRay names the pods, so a block
node cannot carry ``block=<its name>`` as a local one does; every pod of a block group carries
``block=<group name>``. A joined block keeps the Ray node id it was matched with (kept in
``blocks.json``); a block in flight takes an alive node of its group that no block holds,
beyond the group's ``initial`` ones. The pods of a group are alike, so which of them stands
for the initial blocks does not matter. A node's pod is its ``NodeManagerHostname`` in Ray's
node table: a pod's hostname is its name (the block groups set no ``hostname`` and one host
per pod). A block whose node has not joined ``JOIN_TIMEOUT`` (600 s) after its purchase has
failed; it has no known pod: its release lowers ``replicas`` alone
and the operator picks the pod.

Selected when the scheduler runs in a KubeRay cluster (``in_kuberay``): the sidecar's
``MCSCHED_RAYCLUSTER`` (rendered from the head pod's ``ray.io/cluster`` label when the
catalog buys capacity) and the in-cluster service account; its Role allows ``get`` and
``patch`` on that one RayCluster (``render.scale_rbac``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from scheduler.errors import MCSchedError
from scheduler.kube.render import CLUSTER_ENV
from scheduler.runtime.nodes import BLOCK, NodeType, block_groups
from scheduler.runtime.nodewatch import RayNode
from scheduler.runtime.provisioner import Block, busy_nodes
from scheduler.specs import CloudCatalog

log = logging.getLogger("mcsched.kube.scaling")
GROUP, VERSION, PLURAL = "ray.io", "v1", "rayclusters"
JSON_PATCH = "application/json-patch+json"
#: A bought pod's Ray node not joined this long after the purchase has failed: the pod may wait for
#: a GPU node (a cluster autoscaler adds one in minutes) and pull the image (a local node: 120 s).
JOIN_TIMEOUT = 600.0
#: Tries of one read-and-patch when the RayCluster changed in between (409/422 from the test op).
ATTEMPTS = 3
PoolKey = tuple[str, str, str]


class ScalingError(MCSchedError):
    """The RayCluster could not be read or patched (or has no such group, or it is at its limit)."""


@dataclass(frozen=True)
class GroupInfo:
    """A block group as ``attribute`` needs it: its name (its pods' ``block`` label) and initial pods."""

    name: str
    initial: int


def attribute(nodes: Iterable[RayNode], blocks: Iterable[Block], groups: Mapping[PoolKey, GroupInfo]) -> tuple[list[RayNode], dict[str, str]]:
    """The node table as the provisioner reads it: a node of a block group labelled with the
    bought block it stands for (``block=<block name>``), its ``block`` label dropped when it
    stands for none (an initial block, or a dead row of no block); and each block's pod name.

    1. a joined block keeps its node id; 2. the blocks in flight of a group, oldest purchase
    first, take its alive nodes that no block holds, beyond the group's ``initial`` ones
    (node id order: the pods are alike)."""
    nodes = list(nodes)
    by_group = {g.name: g for g in groups.values()}
    holds: dict[str, str] = {}  # node id -> block name
    waiting: dict[str, list[Block]] = {}
    for b in blocks:
        g = groups.get(b.key)
        if g is None:
            continue
        if b.joined_at is not None and b.node_id:
            holds[b.node_id] = b.name  # 1
        else:
            waiting.setdefault(g.name, []).append(b)
    for name, pending in waiting.items():  # 2
        free = sorted(n.node_id for n in nodes if n.alive and n.labels.get(BLOCK) == name and n.node_id not in holds)
        for b, node_id in zip(sorted(pending, key=lambda b: (b.bought_at, b.name)), free[by_group[name].initial :], strict=False):
            holds[node_id] = b.name
    rows: list[RayNode] = []
    pods: dict[str, str] = {}
    for n in nodes:
        if n.labels.get(BLOCK) not in by_group:
            rows.append(n)
            continue
        labels = {k: v for k, v in n.labels.items() if k != BLOCK}
        block = holds.get(n.node_id)
        if block is not None:
            labels[BLOCK] = block
            if n.hostname and (n.alive or block not in pods):
                pods[block] = n.hostname
        rows.append(replace(n, labels=labels))
    return rows, pods


def buy_patch(raycluster: Mapping[str, Any], group: str) -> list[dict[str, Any]]:
    """The JSON Patch that buys one block of ``group``: its ``replicas`` + 1."""
    i, spec = _group(raycluster, group)
    replicas = int(spec.get("replicas", spec.get("minReplicas", 0)))
    if replicas >= int(spec["maxReplicas"]):
        raise ScalingError(f"RayCluster {_name(raycluster)}: group {group} is at maxReplicas ({spec['maxReplicas']})")
    return [_test_version(raycluster), {"op": "add", "path": f"/spec/workerGroupSpecs/{i}/replicas", "value": replicas + 1}]


def release_patch(raycluster: Mapping[str, Any], group: str, pod: str | None) -> list[dict[str, Any]] | None:
    """The JSON Patch that releases one bought node of ``group``: ``replicas`` - 1 and, when its
    pod is known, that pod in ``scaleStrategy.workersToDelete``. None: the group is already at
    ``minReplicas`` (someone else scaled it down), nothing to release."""
    i, spec = _group(raycluster, group)
    replicas = int(spec.get("replicas", spec.get("minReplicas", 0)))
    if replicas <= int(spec.get("minReplicas", 0)):
        return None
    ops = [_test_version(raycluster), {"op": "add", "path": f"/spec/workerGroupSpecs/{i}/replicas", "value": replicas - 1}]
    if pod:
        before = [p for p in (spec.get("scaleStrategy") or {}).get("workersToDelete") or [] if p != pod]
        keep = before[-(int(spec["maxReplicas"]) - 1) :] if int(spec["maxReplicas"]) > 1 else []
        ops.append({"op": "add", "path": f"/spec/workerGroupSpecs/{i}/scaleStrategy", "value": {"workersToDelete": [*keep, pod]}})
    return ops


def _group(raycluster: Mapping[str, Any], group: str) -> tuple[int, Mapping[str, Any]]:
    for i, spec in enumerate(raycluster.get("spec", {}).get("workerGroupSpecs") or []):
        if spec.get("groupName") == group:
            return i, spec
    raise ScalingError(f"RayCluster {_name(raycluster)} has no worker group {group!r} (render the manifests from this catalog)")


def _name(raycluster: Mapping[str, Any]) -> str:
    meta = raycluster.get("metadata", {})
    return f"{meta.get('namespace', '?')}/{meta.get('name', '?')}"


def _test_version(raycluster: Mapping[str, Any]) -> dict[str, Any]:
    return {"op": "test", "path": "/metadata/resourceVersion", "value": raycluster["metadata"]["resourceVersion"]}


def custom_api() -> Any:
    """The official client's ``CustomObjectsApi`` with the pod's service account (or a kubeconfig)."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]
    return client.CustomObjectsApi()


class KubeBlocks:
    """Block nodes as pods of a KubeRay RayCluster's block groups (``provisioner.BlockNodes``, and
    ``provisioner.NamesNodes``: it says which Ray node is which bought block)."""

    def __init__(
        self, catalog: CloudCatalog, cluster: str, namespace: str, api: Any | None = None, busy: Callable[[], set[str]] = busy_nodes
    ) -> None:
        """``api``: a ``CustomObjectsApi`` (None: made in the actor, in-cluster); ``busy``: the Ray
        node ids with work on them (Ray's placement groups; tests pass their own)."""
        self.cluster = cluster
        self.namespace = namespace
        self.groups = {g.key: GroupInfo(g.name, g.initial) for g in block_groups(catalog)}
        self._by_resource = {r: g.name for g in block_groups(catalog) for r in g.node.resources}
        self._api = api
        self._busy = busy
        self.join_timeout = JOIN_TIMEOUT
        self._group_of: dict[str, str] = {}  # block name -> group name
        self._pods: dict[str, str] = {}  # block name -> pod name (from the last node table)

    def __getstate__(self) -> dict[str, Any]:
        """Sent to the scheduler actor without a client: it makes its own there (in-cluster)."""
        return {**self.__dict__, "_api": None}

    def api(self) -> Any:
        if self._api is None:
            self._api = custom_api()
        return self._api

    # ------------------------------------------------------------------ provisioner.NamesNodes

    def identify(self, nodes: list[RayNode], blocks: Sequence[Block]) -> list[RayNode]:
        rows, self._pods = attribute(nodes, blocks, self.groups)
        for b in blocks:
            g = self.groups.get(b.key)
            if g is not None:
                self._group_of[b.name] = g.name
        return rows

    # ------------------------------------------------------------------ provisioner.BlockNodes

    def start(self, node: NodeType) -> None:
        """Buy the block ``node`` stands for: its group's ``replicas`` + 1."""
        group = next((self._by_resource[r] for r in node.resources if r in self._by_resource), None)
        if group is None:
            raise ScalingError(f"block {node.name}: its pool is not bought in blocks in this catalog")
        self._group_of[node.name] = group
        self._patch(lambda rc: buy_patch(rc, group))
        log.warning("RayCluster %s/%s: %s replicas + 1 (block %s)", self.namespace, self.cluster, group, node.name)

    def stop(self, name: str) -> None:
        """Release bought block ``name``: its group's ``replicas`` - 1, deleting its pod when known."""
        group = self._group_of.get(name)
        if group is None:
            log.warning("block %s: no group known (not bought through this RayCluster); nothing to release", name)
            return
        pod = self._pods.get(name)
        done = self._patch(lambda rc: release_patch(rc, group, pod))
        log.warning("RayCluster %s/%s: %s replicas - 1 (block %s, pod %s)%s", self.namespace, self.cluster, group, name,
                    pod or "unknown: the operator picks", "" if done else ": already at minReplicas")  # fmt: skip
        self._group_of.pop(name, None)

    def running(self, name: str) -> bool:
        """The replica request stands until released: a block that does not join is failed by the
        provisioner's join timeout."""
        return name in self._group_of

    def busy_nodes(self) -> set[str]:
        return self._busy()

    # ------------------------------------------------------------------ the two API calls

    def _patch(self, make: Any) -> bool:
        """Read the RayCluster, make the patch from it, send it; again if it changed in between.
        False: ``make`` found nothing to change."""
        from kubernetes.client.exceptions import ApiException

        api = self.api()
        where = f"RayCluster {self.namespace}/{self.cluster}"
        for attempt in range(1, ATTEMPTS + 1):
            try:
                rc = api.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, self.cluster)
                body = make(rc)
                if body is None:
                    return False
                api.patch_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, self.cluster, body, _content_type=JSON_PATCH)
                return True
            except ApiException as exc:
                if exc.status in (409, 422) and attempt < ATTEMPTS:
                    continue  # changed since read: the test op failed
                raise ScalingError(f"{where}: {exc.status} {exc.reason}") from None
            except ScalingError:
                raise
            except Exception as exc:  # connection refused, TLS, a bad answer: urllib3's errors and others alike
                raise ScalingError(f"{where}: {type(exc).__name__}: {exc}") from None
        raise AssertionError("unreachable")


def in_kuberay() -> str | None:
    """The RayCluster this scheduler runs in (None: not in a KubeRay pod with a scaling Role)."""
    if not os.environ.get("KUBERNETES_SERVICE_HOST"):
        return None
    return os.environ.get(CLUSTER_ENV) or None


def kube_blocks(catalog: CloudCatalog) -> KubeBlocks | None:
    """The KubeRay provider when the scheduler runs in a KubeRay cluster and the catalog buys capacity."""
    from scheduler.kube.config import current_namespace

    cluster = in_kuberay()
    if cluster is None or not block_groups(catalog):
        return None
    return KubeBlocks(catalog, cluster, current_namespace())

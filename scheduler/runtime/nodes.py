"""Each mock cloud as a group of Ray worker nodes, derived from the catalog (pure: no Ray).

The catalog is the one source of the cluster's shape. A *node type* is one kind of Ray
worker node: the cloud (and, in the ``region`` layout, the region) it stands for, the Ray
node labels it carries (``cloud``, ``jurisdiction`` and ``region`` where the node holds
exactly one) and that cloud's GPU pools as custom resources with the catalog's counts
(``resources.pool_resource``). ``mcsched up`` starts one worker node per node type on this
machine (``workers.py``) and ``mcsched manifests`` renders one KubeRay worker group per node
type (``kube/render.py``), so the local cluster and the deployed one have the same shape; a
test checks that both agree with this module.

A placed job's placement group asks for its pool's resource, which only its cloud's nodes
advertise: Ray itself can then run the work nowhere else.

``Layout``:
- ``cloud`` (default): one worker node per cloud, carrying every pool of the cloud;
- ``region``: one worker node per cloud x region;
- ``single``: no worker nodes, the head carries every pool (the shape before issue #25, kept
  for a machine too small for several nodes).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from scheduler.runtime.resources import pool_resource
from scheduler.specs import Backend, CloudCatalog, Region

#: The Ray node labels mcsched sets (Ray 2.60: ``ray start --labels k=v,...``, ``label_selector``).
CLOUD = "cloud"
REGION = "region"
JURISDICTION = "jurisdiction"
#: The label of a capacity-block node (one block bought beyond the initial ones): its node type's name.
BLOCK = "block"


class Layout(StrEnum):
    CLOUD = "cloud"
    REGION = "region"
    SINGLE = "single"


@dataclass(frozen=True)
class NodeType:
    """One kind of worker node: ``name`` is unique in the cluster (``oci``, ``oci-us-ashburn-1``)."""

    name: str
    cloud: str
    labels: Mapping[str, str]
    resources: Mapping[str, float] = field(default_factory=dict)

    def labels_arg(self) -> str:
        """``ray start --labels`` in Ray's ``k=v,k=v`` form (sorted: the same text every time)."""
        return ",".join(f"{k}={v}" for k, v in sorted(self.labels.items()))


def _labels(backend: Backend, regions: list[Region]) -> dict[str, str]:
    labels = {CLOUD: backend.name}
    jurisdictions = {r.jurisdiction for r in regions}
    if len(jurisdictions) == 1:
        labels[JURISDICTION] = jurisdictions.pop()
    if len(regions) == 1:
        labels[REGION] = regions[0].name
    return labels


def _resources(backend: Backend, regions: Iterable[Region], blocks_apart: bool = False) -> dict[str, float]:
    """A pool bought in blocks (``Region.blocks``) is on the cloud's node with its initial blocks
    only, or not at all with ``blocks_apart`` (on KubeRay its blocks are a worker group of their own)."""
    out: dict[str, float] = {}
    for r in regions:
        for gpu_type, count in r.gpus.items():
            blocks = r.blocks.get(gpu_type)
            held = count if blocks is None else 0 if blocks_apart else blocks.initial * blocks.gpus
            if held > 0:
                out[pool_resource(backend.name, r.name, gpu_type)] = float(held)
    return out


def node_types(
    catalog: CloudCatalog, layout: Layout = Layout.CLOUD, clouds: Iterable[str] | None = None, blocks_apart: bool = False
) -> list[NodeType]:
    """The worker node types of ``catalog`` in ``layout`` (catalog order), optionally only of ``clouds``.
    ``blocks_apart``: the pools bought in blocks are left to their ``block_groups`` (KubeRay)."""
    if layout is Layout.SINGLE:
        return []
    wanted = None if clouds is None else set(clouds)
    out: list[NodeType] = []
    for b in catalog.spec.backends:
        if wanted is not None and b.name not in wanted:
            continue
        groups = [[r] for r in b.regions] if layout is Layout.REGION else [list(b.regions)]
        for regions in groups:
            name = b.name if layout is Layout.CLOUD else f"{b.name}-{regions[0].name.lower()}"
            out.append(NodeType(name, b.name, _labels(b, regions), _resources(b, regions, blocks_apart)))
    return out


def block_node_type(catalog: CloudCatalog, cloud: str, region: str, gpu_type: str, name: str) -> NodeType:
    """A bought block's node ``name`` of a pool bought in blocks (``Region.blocks``): its cloud's
    labels (one region, so ``region`` and ``jurisdiction`` too), ``block=<name>``, and one
    block of the pool's GPUs."""
    backend = catalog.backend(cloud)
    assert backend is not None, cloud
    reg = next(r for r in backend.regions if r.name == region)
    labels = {**_labels(backend, [reg]), BLOCK: name}
    return NodeType(name, cloud, labels, {pool_resource(cloud, region, gpu_type): float(reg.blocks[gpu_type].gpus)})


@dataclass(frozen=True)
class BlockGroup:
    """A pool bought in blocks as a group of identical nodes, one block each (a KubeRay worker
    group: ``initial`` pods from the start, at most ``max``). Its nodes carry the cloud's labels
    for the pool's region and ``block=<group name>``: on KubeRay a pod's name is not ours to
    choose, so the group's label is what says a node is one of this pool's blocks."""

    name: str
    key: tuple[str, str, str]  # (cloud, region, gpu_type)
    node: NodeType  # one block's node (its name is the group's)
    initial: int
    max: int


def group_name(cloud: str, region: str, gpu_type: str) -> str:
    """A growable pool's group name: a DNS label (KubeRay names the group's pods after it)."""
    return re.sub(r"[^a-z0-9-]+", "-", f"{cloud}-{region}-{gpu_type}-blocks".lower()).strip("-")[:63].strip("-")


def block_groups(catalog: CloudCatalog) -> list[BlockGroup]:
    """The pools bought in blocks (catalog order), each as its group of block nodes."""
    out: list[BlockGroup] = []
    for b in catalog.spec.backends:
        for r in b.regions:
            for gpu_type, spec in r.blocks.items():
                name = group_name(b.name, r.name, gpu_type)
                node = block_node_type(catalog, b.name, r.name, gpu_type, name)
                out.append(BlockGroup(name, (b.name, r.name, gpu_type), node, spec.initial, spec.max))
    return out


def cloud_of(labels: Mapping[str, str]) -> str | None:
    """The cloud a Ray node stands for, from its labels (None: not one of mcsched's cloud nodes)."""
    return labels.get(CLOUD) or None

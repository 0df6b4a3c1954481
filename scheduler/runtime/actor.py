"""Ray is applied here, in a factory: a detached, named, restartable scheduler actor."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray

from scheduler.errors import RuntimeUnavailable
from scheduler.gctune import tune_gc
from scheduler.runtime.nodewatch import RayNode
from scheduler.runtime.provisioner import BlockNodes, LocalBlocks
from scheduler.runtime.reconciler import Gang
from scheduler.runtime.service import SchedulerService

ACTOR_NAME = "mcsched-scheduler"
SCHEDULER_RESOURCE = "mcsched_scheduler"
NAMESPACE = "mcsched"


class RayGangs:
    """The reconciler's view of Ray: placement groups as the GCS has them, and their removal.

    ``placement_group_table`` is one GCS read (no dashboard round trip, unlike
    ``ray.util.state.list_placement_groups``), cheap enough for every second.
    """

    def read(self) -> list[Gang]:
        out: list[Gang] = []
        for pg_id, info in ray.util.placement_group_table().items():
            held: dict[str, float] = {}
            for bundle in (info.get("bundles") or {}).values():
                for resource, amount in bundle.items():
                    held[resource] = held.get(resource, 0.0) + float(amount)
            out.append(Gang(pg_id, info.get("name") or "", info.get("state") or "", held))
        return out

    def remove(self, pg_id: str) -> None:
        from ray.util.placement_group import PlacementGroup

        ray.util.remove_placement_group(PlacementGroup(ray.PlacementGroupID(bytes.fromhex(pg_id))))

    def creator(self, pg_id: str) -> str:
        """Who made a placement group: its creator's Ray job id (the state API; asked once per group)."""
        from ray.util.state import get_placement_group

        try:  # the GCS address explicitly: a worker's default ("auto") would look in /tmp/ray, not this cluster's temp dir
            state = get_placement_group(pg_id, address=ray.get_runtime_context().gcs_address, timeout=10)
        except Exception as exc:  # the dashboard is busy or down: report it without a creator
            return f"unknown ({type(exc).__name__})"
        return f"ray job {state.creator_job_id}" if state is not None and state.creator_job_id else "unknown"


class SchedulerActor(SchedulerService):
    """The actor's process entry: the service, in a Ray worker process that runs nothing else,
    with the collector settings of an mcsched process (``scheduler/gctune.py``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        tune_gc()
        super().__init__(*args, **kwargs)


class RayNodes:
    """The GCS node table (``ray.nodes()``: one GCS read), alive and dead nodes with labels and total resources."""

    def read(self) -> list[RayNode]:
        return [
            RayNode(
                str(n.get("NodeID", "")),
                bool(n.get("Alive")),
                dict(n.get("Labels") or {}),
                dict(n.get("Resources") or {}),
                str(n.get("NodeManagerHostname") or ""),
            )
            for n in ray.nodes()  # type: ignore[no-untyped-call]
        ]


def local_blocks(ledger_path: str) -> LocalBlocks | None:
    """The block nodes' starter when the ledger's state dir holds a local cluster with worker nodes
    (``mcsched up``); None elsewhere."""
    from scheduler.runtime.cluster import ClusterInfo
    from scheduler.runtime.nodes import Layout

    state_dir = os.path.dirname(os.path.abspath(ledger_path))
    info = ClusterInfo.load(Path(state_dir))
    if info is None or info.layout == Layout.SINGLE.value:
        return None
    return LocalBlocks(state_dir)


def block_provider(ledger_path: str, catalog: dict[str, Any]) -> BlockNodes | None:
    """Who buys capacity blocks: a local cluster's own nodes (``mcsched up``), else a KubeRay
    RayCluster the scheduler runs in (``kube/scaling.py``), else nobody (your own Ray cluster:
    nothing is bought)."""
    local = local_blocks(ledger_path)
    if local is not None:
        return local
    from scheduler.kube.scaling import in_kuberay, kube_blocks
    from scheduler.specs import CloudCatalog

    return kube_blocks(CloudCatalog.model_validate(catalog)) if in_kuberay() else None


def start_actor(
    catalog: dict[str, Any],
    contract: dict[str, Any],
    ledger_path: str,
    metrics_port: int | None,
    metrics_host: str = "127.0.0.1",
    foreign_groups: str = "report",
    witnesses: list[str] | None = None,
) -> Any:
    """Create (or find) the scheduler actor; it survives the creating driver and restarts on failure.

    ``foreign_groups``: what to do with placement groups on the pools that mcsched did not
    create (``report`` them, or ``evict`` them); see ``reconciler.py``. ``witnesses``: the
    base URLs the actor submits each signed checkpoint to (None: ``$MCSCHED_WITNESS_URLS``
    in the actor's process; empty: not cosigned).
    """
    cls = ray.remote(SchedulerActor)
    blocks = block_provider(ledger_path, catalog)
    # Pin the actor to the node that holds the ledger volume when the cluster marks one.
    on_head = {SCHEDULER_RESOURCE: 0.001} if ray.cluster_resources().get(SCHEDULER_RESOURCE) else {}  # type: ignore[no-untyped-call]
    handle: Any = cls.options(
        resources=on_head,
        name=ACTOR_NAME,
        namespace=NAMESPACE,
        lifetime="detached",
        get_if_exists=True,
        max_restarts=-1,
        max_task_retries=-1,
        num_cpus=0,
        max_concurrency=1000,
    ).remote(catalog, contract, ledger_path, metrics_port, metrics_host, RayGangs(), foreign_groups=foreign_groups, witnesses=witnesses, nodes=RayNodes(), blocks=blocks)
    ray.get(handle.ping.remote())
    return handle


def ensure_actor(
    catalog: dict[str, Any],
    contract: dict[str, Any],
    ledger_path: str,
    metrics_port: int | None,
    metrics_host: str = "127.0.0.1",
    foreign_groups: str = "report",
    witnesses: list[str] | None = None,
) -> Any:
    """The supervisor's step: find the actor, or create it (pinned to the node holding the ledger)."""
    try:
        handle = ray.get_actor(ACTOR_NAME, namespace=NAMESPACE)
        ray.get(handle.ping.remote(), timeout=60)
        return handle
    except ValueError:
        return start_actor(catalog, contract, ledger_path, metrics_port, metrics_host, foreign_groups, witnesses)


def supervise(ensure: Callable[[], Any], *, every: float = 15.0, keep_going: Callable[[], bool] = lambda: True) -> None:
    """``mcsched serve --supervise``: run ``ensure`` (find or re-create the actor) every ``every`` seconds.

    A sidecar's loop: if the Ray cluster loses the actor (node restart, GCS failover), the
    next step re-creates it and it recovers from its ledger.
    """
    while keep_going():
        time.sleep(every)
        ensure()


def get_actor() -> Any:
    try:
        return ray.get_actor(ACTOR_NAME, namespace=NAMESPACE)
    except ValueError:
        raise RuntimeUnavailable(
            "the mcsched scheduler actor is not running on this Ray cluster (start it with `mcsched up` or `mcsched serve`)"
        ) from None

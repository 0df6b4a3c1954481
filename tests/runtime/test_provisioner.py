"""Capacity blocks through the scheduler service, without Ray: a queued job buys a block, the
block's node joins, the job is placed through the ROFR gate, an idle block is released, and
every step is an event in the ledger (which ``audit verify``'s checker accepts) and a metric."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from scheduler.invariants import InvariantChecker
from scheduler.ledger import Ledger
from scheduler.runtime.nodes import NodeType, node_types
from scheduler.runtime.nodewatch import RayNode
from scheduler.runtime.resources import pool_resource
from scheduler.runtime.service import SchedulerService
from scheduler.specs import CloudCatalog
from tests.builders import a_catalog, a_contract
from tests.integration.conftest import job_doc

AZ = ("azure", "eastus", "H100")
OCI = ("oci", "us-ashburn-1", "H100")


def growable(catalog: dict[str, Any], cloud: str, blocks: dict[str, Any]) -> dict[str, Any]:
    for b in catalog["spec"]["backends"]:
        if b["name"] == cloud:
            b["regions"][0]["blocks"] = {"H100": blocks}
    return catalog


CATALOG = growable(
    growable(
        a_catalog()
        .cloud("azure", {"eastus": {"H100": 16}}, price=3.4, latency=1)
        .cloud("oci", {"us-ashburn-1": {"H100": 24}}, price=2.9, latency=1)
        .obj()
        .model_dump(mode="json", by_alias=True),
        "oci", {"gpus": 8, "initial": 1, "max": 3, "provisioningSeconds": 20, "idleReleaseSeconds": 0},
    ),
    "azure", {"gpus": 8, "initial": 1, "max": 2, "provisioningSeconds": 20, "idleReleaseSeconds": 0},
)  # fmt: skip


class FakeCluster:
    """The GCS node table and the block nodes' starter: a started node joins when ``join`` is called."""

    def __init__(self) -> None:
        self.rows = [
            RayNode(f"base-{t.name}", True, dict(t.labels), dict(t.resources)) for t in node_types(CloudCatalog.model_validate(CATALOG))
        ]
        self.starting: dict[str, NodeType] = {}
        self.stopped: list[str] = []
        self.busy: set[str] = set()

    def read(self) -> list[RayNode]:
        return list(self.rows)

    def start(self, node: NodeType) -> None:
        self.starting[node.name] = node

    def join(self) -> list[str]:
        names = list(self.starting)
        for name, t in self.starting.items():
            self.rows.append(RayNode(f"id-{name}", True, dict(t.labels), dict(t.resources)))
        self.starting.clear()
        return names

    def stop(self, name: str) -> None:
        self.stopped.append(name)
        self.rows = [RayNode(r.node_id, r.alive and r.labels.get("block") != name, r.labels, r.resources) for r in self.rows]

    def running(self, name: str) -> bool:
        return name in self.starting or any(r.labels.get("block") == name and r.alive for r in self.rows)

    def busy_nodes(self) -> set[str]:
        return set(self.busy)


def service(path: Path, fake: FakeCluster) -> tuple[SchedulerService, Any]:
    svc = SchedulerService(
        CATALOG, a_contract(preemption=True).model_dump(mode="json", by_alias=True), str(path),
        metrics_port=None, nodes=fake, blocks=fake,
    )  # fmt: skip
    loop = asyncio.new_event_loop()

    def call(method: str, *args: Any) -> Any:
        return loop.run_until_complete(getattr(svc, method)(*args))

    return svc, call


def tick(svc: SchedulerService, fake: FakeCluster, call: Any) -> int:
    """The reconcile loop's node step: capacity blocks, then the books brought to the nodes."""
    changed = int(call("provision", fake.read()))
    svc.reconcile_nodes(fake.read())
    return changed


def test_a_job_bigger_than_the_initial_blocks_buys_the_holders_block_first_and_starts_when_it_joins(tmp_path: Path) -> None:
    fake = FakeCluster()
    svc, call = service(tmp_path / "l.db", fake)
    call("ping")
    tick(svc, fake, call)  # the books follow the base nodes: 8 GPUs on each cloud
    assert {u["cloud"]: u["capacity"] for u in call("usage")} == {"azure": 8, "oci": 8}
    call("submit", [job_doc("big", gpus=16)])
    assert call("status", "big")[0]["outcome"] == "queued"
    assert tick(svc, fake, call) == 1 and list(fake.starting) == ["azure-b1"]  # the holder's block, not cheaper OCI's
    row = call("status", "big")[0]
    assert row["waiting"].startswith("buying 1 block of azure/eastus/H100, ready in ~")
    assert tick(svc, fake, call) == 0 and list(fake.starting) == ["azure-b1"]  # never bought twice
    fake.join()
    assert tick(svc, fake, call) >= 1
    d = call("status", "big")[0]
    assert (d["outcome"], d["cloud"], d["via"]) == ("placed", "azure", "rofr-accepted")
    evs = list(Ledger(tmp_path / "l.db", readonly=True).events())
    bought = next(e for e in evs if e.kind == "block-purchased")
    assert (bought.node, bought.for_job, bought.gpus, bought.start_seconds) == ("azure-b1", "big", 8, 20.0)
    joined = next(e for e in evs if e.kind == "block-joined")
    assert joined.node == "azure-b1" and joined.provisioning_seconds >= 0
    kinds = [e.kind for e in evs]
    assert kinds.index("block-joined") < kinds.index("placed")
    assert svc.metrics is not None
    reg = svc.metrics.registry
    assert reg.get_sample_value("mcsched_node_provisioning_seconds_count", {"cloud": "azure"}) == 1
    assert reg.get_sample_value("mcsched_capacity_blocks_total", {"cloud": "azure", "what": "purchased"}) == 1


def test_an_idle_block_is_released_but_never_one_with_work_and_the_ledger_stays_valid(tmp_path: Path) -> None:
    fake = FakeCluster()
    svc, call = service(tmp_path / "l.db", fake)
    call("ping")
    tick(svc, fake, call)
    call("submit", [job_doc("api", cls="api-serving", gpus=8), job_doc("big", cls="api-serving", gpus=8)])
    tick(svc, fake, call)
    assert list(fake.starting) == ["azure-b1"]
    fake.join()
    tick(svc, fake, call)
    assert call("status", "big")[0]["outcome"] == "placed"
    fake.busy = {"id-azure-b1"}  # Ray has the job's bundle on the bought node
    tick(svc, fake, call)
    tick(svc, fake, call)
    assert fake.stopped == []
    fake.busy = set()
    call("release", "big")
    tick(svc, fake, call)  # idle timeout 0: released at once
    assert fake.stopped == ["azure-b1"]
    tick(svc, fake, call)
    assert {u["cloud"]: u["capacity"] for u in call("usage")}["azure"] == 8  # back to the initial block
    assert call("status", "api")[0]["outcome"] == "placed"  # the initial block's work is untouched
    evs = list(Ledger(tmp_path / "l.db", readonly=True).events())
    released = next(e for e in evs if e.kind == "block-released")
    assert (released.node, released.reason) == ("azure-b1", "idle")
    checker = InvariantChecker()
    for i, ev in enumerate(evs):
        checker.feed(ev, i)
    checker.finish()
    assert not checker.violations, checker.violations[:3]
    assert call("verify").startswith("OK: ")  # `mcsched audit verify` on this ledger
    assert svc.metrics is not None
    assert svc.metrics.registry.get_sample_value("mcsched_nodes", {"cloud": "azure", "state": "released"}) == 1
    # bought again: a new node name (the GCS keeps the released node's dead row under its old labels)
    call("submit", [job_doc("again", cls="api-serving", gpus=8)])
    tick(svc, fake, call)
    assert list(fake.starting) == ["azure-b2"]
    tick(svc, fake, call)
    assert list(fake.starting) == ["azure-b2"] and fake.stopped == ["azure-b1"]  # not taken for failed
    fake.join()
    tick(svc, fake, call)
    assert call("status", "again")[0]["outcome"] == "placed"


def test_a_catalog_pool_bought_in_blocks_puts_only_its_initial_blocks_on_the_clouds_node() -> None:
    types = {t.cloud: t for t in node_types(CloudCatalog.model_validate(CATALOG))}
    assert types["oci"].resources == {pool_resource(*OCI): 8.0} and types["azure"].resources == {pool_resource(*AZ): 8.0}

"""Observability proven on a real Prometheus: every dashboard query has data, counters agree
with the ledger, promtool accepts the scrape, and the backend-down alert fires."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scheduler.ledger import Ledger
from scheduler.runtime.cluster import free_port
from scheduler.runtime.nodes import NodeType, node_types
from scheduler.runtime.nodewatch import RayNode
from scheduler.runtime.promlocal import start_prometheus
from scheduler.runtime.service import SchedulerService
from scheduler.specs import CloudCatalog
from tests.builders import a_catalog, a_contract
from tests.integration.conftest import ROOT, job_doc, wait_for

pytestmark = pytest.mark.slow
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "mcsched.json"

CATALOG = (
    a_catalog()
    .cloud("azure", {"eastus": {"H100": 32}}, price=3.4, latency=2, rules={"reserveForApiServingFraction": 0.25})
    .cloud("oci", {"us-ashburn-1": {"H100": 64}}, price=2.9, latency=3, startup=60)
    .cloud("coreweave", {"US-EAST-04": {"H100": 16}}, price=2.7, latency=1, startup=90)
    .cloud("aws", {"us-east-1": {"H100": 24}}, price=3.9, latency=1)
    .obj()
    .model_dump(mode="json", by_alias=True)
)
# AWS's pool is bought in capacity blocks (docs/nodes.md, "Buying capacity"): one of three from the start
CATALOG["spec"]["backends"][3]["regions"][0]["blocks"] = {
    "H100": {"gpus": 8, "initial": 1, "max": 3, "provisioningSeconds": 20, "idleReleaseSeconds": 0}
}
CONTRACT = a_contract(preemption=True).model_dump(mode="json", by_alias=True)


def catalog_nodes() -> list[RayNode]:
    """One live labelled Ray node per cloud, as `mcsched up` starts them (a pool bought in blocks: its initial ones)."""
    return [RayNode(f"node-{t.name}", True, dict(t.labels), dict(t.resources)) for t in node_types(CloudCatalog.model_validate(CATALOG))]


class BlockNodes:
    """The GCS node table beside the catalog's nodes, and the block nodes' starter (no Ray in
    this module: a started block node joins when ``join`` is called)."""

    def __init__(self) -> None:
        self.rows = catalog_nodes()
        self.started: list[NodeType] = []

    def read(self) -> list[RayNode]:
        return list(self.rows)

    def join(self) -> None:
        self.rows += [RayNode(f"node-{t.name}", True, dict(t.labels), dict(t.resources)) for t in self.started]
        self.started = []

    def start(self, node: NodeType) -> None:
        self.started.append(node)

    def stop(self, name: str) -> None:
        self.rows = [r for r in self.rows if r.labels.get("block") != name]

    def running(self, name: str) -> bool:
        return any(t.name == name for t in self.started) or any(r.labels.get("block") == name for r in self.rows)

    def busy_nodes(self) -> set[str]:
        return set()


def query(prom: str, expr: str) -> list[dict[str, Any]]:
    url = f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as r:
        body = json.loads(r.read())
    assert body["status"] == "success", body
    return body["data"]["result"]


class Driver:
    """Runs the (plain-class) scheduler service on one event loop, as the actor would."""

    def __init__(self, svc: SchedulerService) -> None:
        self.svc = svc
        self.loop = asyncio.new_event_loop()

    def __call__(self, method: str, *args: Any) -> Any:
        return self.loop.run_until_complete(getattr(self.svc, method)(*args))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Driver, str, Path, int]]:
    if shutil.which("prometheus") is None:
        pytest.skip("Debian's prometheus is not installed (.ci/run installs it)")
    tmp = tmp_path_factory.mktemp("obs")
    port = free_port()
    nodes = BlockNodes()
    svc = SchedulerService(CATALOG, CONTRACT, str(tmp / "ledger.db"), port, "127.0.0.1", blocks=nodes)
    drive = Driver(svc)
    svc.reconcile_nodes(nodes.read())  # the GCS node table as `mcsched up` makes it: a live node per cloud
    mixed_workload(drive)
    svc.reconcile([])  # no Ray here: nothing runs, so every booked GPU is drift
    proc, url = start_prometheus(tmp / "prom", f"127.0.0.1:{port}", interval="1s")
    try:
        wait_for(lambda: _up(url), 60, 0.5, "first scrape")
        # More activity while Prometheus watches, so rates are non-zero.
        for i in range(6):
            drive("submit", [job_doc(f"late-{i}", gpus=2, cls="inference")])
            drive("serve_report", serve_report(i))
            time.sleep(1)
        buy_and_release_a_block(drive, svc, nodes)
        yield drive, url, tmp / "ledger.db", port
    finally:
        proc.terminate()
        proc.wait(30)
        drive.loop.close()


def _up(url: str) -> bool:
    try:
        return any(s["value"][1] == "1" for s in query(url, 'up{job="mcsched"}'))
    except OSError:
        return False


def serve_report(i: int) -> dict[str, Any]:
    """What a serving controller and its gateway push: replicas by pool, requests, TTFT, scale steps."""
    return {
        "replicas": {"model": "llama", "pools": [["azure", "eastus", 1 + i % 2]]},
        "scale": [["llama", "up" if i % 2 == 0 else "down"]],
        "requests": [["llama", "200", 5 + i], ["none", "400", 1]],
        "ttft": {"llama": [0.1 * (1 + i), 0.3]},
    }


def buy_and_release_a_block(drive: Driver, svc: SchedulerService, nodes: BlockNodes) -> None:
    """A job bigger than AWS's initial block buys what it needs, runs once the nodes joined,
    ends, and the idle block is released: each step an event and a metric (the block panels)."""
    drive("submit", [job_doc("on-aws", gpus=16, clouds=["azure", "aws"])])
    assert drive("provision", nodes.read()) >= 1  # bought (one or two blocks: the late jobs may hold some of the first)
    nodes.join()
    drive("provision", nodes.read())  # joined
    svc.reconcile_nodes(nodes.read())  # the pool's capacity follows the node table: the job is placed
    assert drive("status", "on-aws")[0]["cloud"] == "aws"
    drive("release", "on-aws", "finished")
    drive("provision", nodes.read())  # idle: released
    svc.reconcile_nodes(nodes.read())
    time.sleep(2)  # scraped


def mixed_workload(drive: Driver) -> None:
    """Accepts, declines, lapses, spill-over, queueing and preemption, in that order."""
    for i in range(3):
        drive("submit", [job_doc(f"train-{i}", gpus=8, priority=1)])  # azure accepts (24 of 32, the 75% limit)
    drive("submit", [job_doc("train-spill", gpus=8)])  # declined: reserved-for-api-serving -> spill
    drive("submit", [job_doc("api-a", cls="api-serving", gpus=8, priority=100)])  # accepted
    drive("submit", [job_doc("api-b", cls="api-serving", gpus=16, priority=100)])  # preempts two trainings
    drive("fault", "azure", None, 100.0)  # slow holder: offers lapse
    drive("submit", [job_doc(f"lapse-{i}", gpus=4) for i in range(3)])
    drive("submit", [job_doc("api-wait", cls="api-serving", gpus=8, priority=100)])  # lapsed -> queued, never spills
    drive("submit", [job_doc("too-big", gpus=64)])  # no capacity anywhere -> queued
    drive("fault", "azure", None, 0.0)
    drive("release", "train-spill", "finished")


def test_scrape_passes_promtool_check_metrics(stack) -> None:
    _, _, _, port = stack
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read()
    res = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True)
    assert res.returncode == 0, res.stdout.decode() + res.stderr.decode()


def test_every_dashboard_panel_query_returns_data(stack) -> None:
    _, url, _, _ = stack
    dash = json.loads(DASHBOARD.read_text())
    subst = {"$cloud": ".*", "$__rate_interval": "1m", "$__range": "10m", "$__interval": "15s"}
    empty = []
    for panel in dash["panels"]:
        for target in panel["targets"]:
            expr = target["expr"]
            for k, v in subst.items():
                expr = expr.replace(k, v)
            assert "$" not in re.sub(r"\{\{.*?\}\}", "", expr), expr
            if not query(url, expr):
                empty.append(f"{panel['title']}: {expr}")
    assert not empty, "panels without data:\n" + "\n".join(empty)


def test_counters_agree_with_the_ledger(stack) -> None:
    _, url, db, _ = stack
    time.sleep(3)  # a scrape after the last event
    events = list(Ledger(db, readonly=True).events())
    placed = Counter(e.cloud for e in events if e.kind == "placed")
    answers = Counter(e.answer for e in events if e.kind == "answered")
    prom_placed = {s["metric"]["cloud"]: float(s["value"][1]) for s in query(url, "sum by (cloud) (mcsched_placements_total)")}
    prom_answers = {s["metric"]["answer"]: float(s["value"][1]) for s in query(url, "sum by (answer) (mcsched_rofr_offers_total)")}
    assert prom_placed == {k: float(v) for k, v in placed.items()}
    assert prom_answers == {k: float(v) for k, v in answers.items()}
    assert {"accepted", "declined", "lapsed"} <= set(answers)
    assert placed["oci"] + placed["coreweave"] > 0 and any(e.kind == "preempted" for e in events)
    assert any(e.kind == "queued" and e.cls == "api-serving" for e in events)
    assert float(query(url, "sum(mcsched_contract_violations_total)")[0]["value"][1]) == 0
    assert float(query(url, 'sum(mcsched_placements_total{class="api-serving", cloud!="azure"}) or vector(0)')[0]["value"][1]) == 0


def test_backend_down_alert_fires(stack) -> None:
    drive, url, _, _ = stack
    drive("fault", "oci", False, None)

    def firing() -> bool:
        with urllib.request.urlopen(f"{url}/api/v1/alerts", timeout=10) as r:
            alerts = json.loads(r.read())["data"]["alerts"]
        return any(a["labels"].get("alertname") == "MCSchedBackendDown" and a["labels"].get("cloud") == "oci"
                   and a["state"] == "firing" for a in alerts)

    wait_for(firing, 90, 1.0, "MCSchedBackendDown firing for oci")

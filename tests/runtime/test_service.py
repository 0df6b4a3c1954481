"""The scheduler service (the actor's body) without Ray: batching, idempotent retries,
recovery from the ledger, assignment versions for drivers, and the reconcile step."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from scheduler.errors import UnknownJobError
from scheduler.ledger import Ledger
from scheduler.runtime.reconciler import Gang, gang_name
from scheduler.runtime.resources import pool_resource
from scheduler.runtime.service import SchedulerService
from tests.builders import a_contract, two_clouds
from tests.integration.conftest import job_doc


class FakeGangs:
    """Ray's side as the reconciler sees it: a dict of placement groups."""

    def __init__(self) -> None:
        self.pgs: dict[str, Gang] = {}
        self.removed: list[str] = []

    def hold(self, job: str, attempt: int, pool: tuple[str, str, str], gpus: int) -> str:
        pg_id = f"pg-{job}-{attempt}"
        self.pgs[pg_id] = Gang(pg_id, gang_name(job, attempt), "CREATED", {pool_resource(*pool): float(gpus)})
        return pg_id

    def read(self) -> list[Gang]:
        return list(self.pgs.values())

    def remove(self, pg_id: str) -> None:
        self.removed.append(pg_id)
        self.pgs.pop(pg_id, None)

    def creator(self, pg_id: str) -> str:
        return f"ray job 0{len(pg_id)}000000"


class Svc:
    def __init__(self, path: Path, gangs: FakeGangs, lease_seconds: float = 15.0, foreign_groups: str = "report") -> None:
        self.gangs = gangs
        self.svc = SchedulerService(
            two_clouds(azure_h100=8).model_dump(mode="json", by_alias=True),
            a_contract(preemption=True).model_dump(mode="json", by_alias=True),
            str(path),
            metrics_port=None,
            gangs=gangs,
            lease_seconds=lease_seconds,
            foreign_groups=foreign_groups,
        )
        self.loop = asyncio.new_event_loop()

    def __call__(self, method: str, *args: Any) -> Any:
        return self.loop.run_until_complete(getattr(self.svc, method)(*args))

    def reconcile(self) -> int:
        return self.svc.reconcile(self.gangs.read())


AZ = ("azure", "eastus", "H100")
OCI = ("oci", "us-ashburn-1", "H100")


def ledger_of(path: Path, job: str) -> list[tuple[str, Any]]:
    return [(e.kind, getattr(e, "reason", None)) for e in Ledger(path, readonly=True).events() if getattr(e, "job", None) == job]


def test_bad_batch_changes_nothing_and_retries_are_idempotent(tmp_path: Path) -> None:
    s = Svc(tmp_path / "l.db", FakeGangs())
    bad = s("submit", [job_doc("ok", gpus=8), job_doc("bad", gpus=8, clouds=["oci"])])
    assert not bad["ok"] and "ROFR holder" in bad["error"] and s("status", None) == []
    first = s("submit", [job_doc("a", gpus=8)])
    again = s("submit", [job_doc("a", gpus=8)])  # the same call retried after an actor restart
    assert first["decisions"] == again["decisions"]
    events = [e.kind for e in Ledger(tmp_path / "l.db", readonly=True).events()]
    assert events.count("submitted") == 1


def test_every_call_that_changes_the_books_is_in_the_ledger_before_the_next_call(tmp_path: Path) -> None:
    """A drain's records used to wait in the writer's buffer for the next job event, and a refused
    submit threw the buffer away: the ledger lost the cordons, an actor restarted from it had other
    books than the live one, and `audit verify` failed an honest run ("azure accepted ... but the
    records say declined cordoned"). Now each call commits what it changed, and a refused submit
    (validated whole before any event) has nothing of its own to drop."""
    path = tmp_path / "l.db"
    s = Svc(path, FakeGangs())
    assert s("submit", [job_doc("a", gpus=8)])["ok"]
    s("cordon", "azure", True)
    s("cordon", "azure", False)
    refused = s("submit", [job_doc("a", cls="inference", gpus=16)])  # the name of a running job
    assert not refused["ok"] and "already exists" in refused["error"]
    cordons = [(e.cloud, e.on) for e in Ledger(path, readonly=True, home=tmp_path).events() if e.kind == "cordoned"]
    assert cordons == [("azure", True), ("azure", False)]
    s("cordon", "oci", True)
    s("fault", "oci", False)
    s2 = Svc(path, FakeGangs())  # the actor restarts from the ledger alone
    assert s2("nodes")["cordoned"] == ["oci"] == s("nodes")["cordoned"]
    assert s2("status", None) == s("status", None)
    assert s2("submit", [job_doc("api", cls="api-serving", gpus=8, priority=100)])["ok"]  # azure, open again, takes it
    assert Ledger(path, readonly=True, home=tmp_path).verify().ok


def test_a_preemption_wakes_the_victims_long_poll_with_its_new_placement(tmp_path: Path) -> None:
    s = Svc(tmp_path / "l.db", FakeGangs())
    train = s("submit", [job_doc("train", gpus=8)], True)["views"][0]
    assert train["decision"]["cloud"] == "azure"
    assert s("bind", "train", "pg-train-1", train["attempt"])

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        waiting = asyncio.ensure_future(s.svc.wait_change("train", train["version"], 30.0))
        await asyncio.sleep(0.05)
        assert not waiting.done()  # nothing changed yet: the poll waits
        api = await s.svc.submit([job_doc("api", cls="api-serving", gpus=8, priority=100)], True)
        return await asyncio.wait_for(waiting, 5.0), api

    moved, api = s.loop.run_until_complete(scenario())
    assert api["decisions"][0]["cloud"] == "azure" and api["decisions"][0]["via"] == "preemption"
    assert moved["version"] != train["version"] and moved["attempt"] > train["attempt"]
    assert moved["decision"]["cloud"] == "oci"
    # The old attempt is stale: binding it is refused, and ending it changes nothing.
    assert not s("bind", "train", "pg-old", train["attempt"])
    assert s("end", "train", train["attempt"], "failed")["decision"]["outcome"] == "placed"
    # Reports close the enforcement timings.
    s("report", "train", train["attempt"], "stopped")
    s("report", "api", api["views"][0]["attempt"], "running")
    s("report", "train", moved["attempt"], "running")
    metrics = s.svc.metrics
    assert metrics is not None
    counts = {a: metrics.registry.get_sample_value("mcsched_enforcement_seconds_count", {"action": a})
              for a in ("victim-stopped", "preemptor-running", "moved-running")}
    assert counts == {"victim-stopped": 1.0, "preemptor-running": 1.0, "moved-running": 1.0}


def test_reconcile_exports_drift_and_removes_the_stale_gang_of_a_moved_job(tmp_path: Path) -> None:
    gangs = FakeGangs()
    s = Svc(tmp_path / "l.db", gangs)
    train = s("submit", [job_doc("train", gpus=8, terminationGracePeriodSeconds=0)], True)["views"][0]
    gangs.hold("train", train["attempt"], AZ, 8)
    assert s.reconcile() == 0 and s.svc.last_plan is not None and s.svc.last_plan.at_rest
    s("submit", [job_doc("api", cls="api-serving", gpus=8, priority=100)], True)
    # The victim's driver has not reacted yet: Ray still holds train's azure gang.
    assert s.reconcile() == 1 and gangs.removed == [f"pg-train-{train['attempt']}"]
    # Azure's books (api, 8) equal what Ray held there this tick (train's stale 8): drift hides
    # the swap, which is why stale gangs are found by name and attempt, not by counts.
    assert s.svc.last_plan is not None and s.svc.last_plan.drift[AZ] == 0
    metrics = s.svc.metrics
    assert metrics is not None
    assert metrics.registry.get_sample_value("mcsched_books_drift_gpus", {"cloud": "oci", "region": "us-ashburn-1", "gpu_type": "H100"}) == 8
    assert metrics.registry.get_sample_value("mcsched_reconciler_repairs_total", {"action": "removed-gang"}) == 1
    engine = s.svc.engine
    assert engine is not None
    gangs.hold("train", engine.status("train").attempt, OCI, 8)  # the drivers converge
    gangs.hold("api", engine.status("api").attempt, AZ, 8)
    s.reconcile()
    assert s.svc.last_plan is not None and s.svc.last_plan.at_rest


def test_an_evicted_gang_is_left_to_its_live_driver_for_the_grace_period_then_removed(tmp_path: Path) -> None:
    """Graceful eviction: the driver drains the work (checkpoint) before it removes the gang;
    the reconciler waits the job's grace period, but not for a driver that is gone."""
    gangs = FakeGangs()
    s = Svc(tmp_path / "l.db", gangs, lease_seconds=0.5)
    slow = s("submit", [job_doc("slow", gpus=4, terminationGracePeriodSeconds=0.6)], True)["views"][0]
    dead = s("submit", [job_doc("dead", gpus=4, terminationGracePeriodSeconds=60)], True)["views"][0]
    gangs.hold("slow", slow["attempt"], AZ, 4)
    gangs.hold("dead", dead["attempt"], AZ, 4)
    s("submit", [job_doc("api", cls="api-serving", gpus=8, priority=100)])  # evicts both from azure (no driver: no lease)
    assert s.reconcile() == 0 and not gangs.removed  # both drivers are alive: theirs to drain
    time.sleep(0.55)
    s.svc.leases["slow"] = time.time()  # slow's driver renews its lease; dead's lapses
    assert s.reconcile() == 2 and gangs.removed == [f"pg-dead-{dead['attempt']}"]  # its gang removed, the ghost ended
    assert s("status", "dead")[0]["outcome"] == "stopped" and s("status", "slow")[0]["outcome"] == "placed"
    time.sleep(0.1)  # slow's grace period (0.6 s) is over: removed even though its driver lives
    s.svc.leases["slow"] = time.time()
    assert s.reconcile() == 1 and gangs.removed[-1] == f"pg-slow-{slow['attempt']}"


@pytest.mark.parametrize("policy", ["report", "evict"])
def test_foreign_groups_are_reported_with_their_creator_and_evicted_only_when_told(tmp_path: Path, policy: str) -> None:
    gangs = FakeGangs()
    s = Svc(tmp_path / "l.db", gangs, foreign_groups=policy)
    s("ping")
    gangs.pgs["pg-foreign"] = Gang("pg-foreign", "", "CREATED", {pool_resource(*AZ): 3.0})
    assert s.reconcile() == (1 if policy == "evict" else 0)
    drift = s("drift")
    assert drift["foreignPolicy"] == policy and [f["creator"] for f in drift["foreign"]] == ["ray job 010000000"]
    metrics = s.svc.metrics
    assert metrics is not None
    assert metrics.registry.get_sample_value("mcsched_foreign_gangs_gpus", {"cloud": "azure", "region": "eastus", "gpu_type": "H100"}) == 3
    assert (gangs.removed == ["pg-foreign"]) is (policy == "evict")
    if policy == "evict":
        assert metrics.registry.get_sample_value("mcsched_reconciler_repairs_total", {"action": "removed-foreign"}) == 1
        s.reconcile()
        assert metrics.registry.get_sample_value("mcsched_foreign_gangs_gpus", {"cloud": "azure", "region": "eastus", "gpu_type": "H100"}) == 0


def test_an_unknown_foreign_groups_policy_is_refused(tmp_path: Path) -> None:
    from scheduler.errors import AdmissionError

    with pytest.raises(AdmissionError, match="foreignGroups"):
        Svc(tmp_path / "l.db", FakeGangs(), foreign_groups="ignore")


def test_ghosts_after_down_and_up_are_ended_but_an_actor_restart_spares_live_drivers(tmp_path: Path) -> None:
    gangs = FakeGangs()
    s = Svc(tmp_path / "l.db", gangs, lease_seconds=0.2)
    s("submit", [job_doc("ghost", gpus=8), job_doc("alive", gpus=8)], True)
    s("submit", [job_doc("waits", gpus=64)], True)  # queued behind both (oci has 64, 8 used)
    s("submit", [job_doc("books-only", gpus=8)])  # no driver: never ended by the reconciler
    assert s.svc.engine is not None
    alive = s.svc.engine.status("alive")
    assert alive.cloud and alive.region
    gangs.hold("alive", alive.attempt, (alive.cloud, alive.region, "H100"), 8)
    # The actor restarts (a new service on the same ledger): leases get a fresh grace period.
    s2 = Svc(tmp_path / "l.db", gangs, lease_seconds=0.2)
    s2("ping")
    assert s2.reconcile() == 0
    time.sleep(0.3)
    s2("wait_change", "alive", -1, 0.0)  # the live driver renews its lease
    assert s2.reconcile() == 2  # the ghost (no driver, no gang) and the queued job whose driver is gone
    outcomes = {r["job"]: r["outcome"] for r in s2("status", None)}
    assert outcomes["alive"] == "placed" and outcomes["books-only"] == "placed"
    assert outcomes["ghost"] == "stopped" and outcomes["waits"] == "stopped"
    assert ledger_of(tmp_path / "l.db", "ghost")[-1] == ("released", "stopped")
    assert Ledger(tmp_path / "l.db", readonly=True, home=tmp_path).verify().ok


def test_the_driver_ends_only_its_own_attempt_and_cancel_wakes_it(tmp_path: Path) -> None:
    s = Svc(tmp_path / "l.db", FakeGangs())
    v = s("submit", [job_doc("a", gpus=8)], True)["views"][0]
    s("cancel", "a")
    woke = s("wait_change", "a", v["version"], 5.0)
    assert woke["decision"]["outcome"] == "cancelled"
    v = s("submit", [job_doc("b", gpus=8, workload={"steps": 1})], True)["views"][0]
    assert s("end", "b", v["attempt"], "failed")["decision"]["outcome"] == "failed"
    assert ledger_of(tmp_path / "l.db", "b")[-1] == ("released", "failed")


def test_status_finds_a_served_model_by_its_own_name(tmp_path: Path) -> None:
    s = Svc(tmp_path / "l.db", FakeGangs())
    s("submit", [job_doc(f"chat-r{k}", cls="api-serving", gpus=2) for k in (1, 2, 10)] + [job_doc("chat-rx", gpus=1)])
    rows = s("status", "chat")
    assert [r["job"] for r in rows] == ["chat-r1", "chat-r2", "chat-r10"]  # in replica order, not text order
    assert all(r["cloud"] == "azure" for r in rows)
    with pytest.raises(UnknownJobError):
        s("status", "nothing")


def test_a_job_submitted_again_after_it_ended_is_fresh_and_starts_without_the_old_checkpoint(tmp_path: Path) -> None:
    """The README's walk-through run twice: `pretrain-jp`, cancelled at step 90, submitted again,
    printed "resuming from checkpoint at step 90" at its first start. A retry for the live job
    (a driver re-attaching) is not fresh and keeps its checkpoint."""
    from scheduler.runtime.driver import forget_old_checkpoint

    s = Svc(tmp_path / "l.db", FakeGangs())
    first = s("submit", [job_doc("a", gpus=8)], True)
    assert first["fresh"] == ["a"]
    ckpt = tmp_path / "checkpoints" / "a"
    ckpt.mkdir(parents=True)
    (ckpt / "latest.json").write_text('{"step": 90}')
    retry = s("submit", [job_doc("a", gpus=8)], True)
    assert retry["ok"] and retry["fresh"] == []
    forget_old_checkpoint(retry, "a", ckpt)
    assert (ckpt / "latest.json").exists()  # the live job resumes from it
    s("cancel", "a")
    again = s("submit", [job_doc("a", gpus=8)], True)
    assert again["ok"] and again["fresh"] == ["a"]
    forget_old_checkpoint(again, "a", ckpt)
    assert not ckpt.exists()


def series(svc: SchedulerService) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every exported sample: (name, labels) -> value."""
    assert svc.metrics is not None
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in svc.metrics.registry.collect()
        for s in family.samples
        if not s.name.endswith("_created")
    }


def test_a_restarted_service_exports_every_series_again_serving_ones_included(tmp_path: Path) -> None:
    """The actor killed and restarted: every series is back at start-up, without waiting for a
    controller or a gateway to report (mcsched_serve_replicas vanished for ~85 s, some forever)."""
    first = Svc(tmp_path / "ledger.db", FakeGangs())
    replica = job_doc("chat-r1", cls="api-serving", gpus=2)
    replica["metadata"]["labels"] = {"mcsched.io/service": "chat"}
    assert first("submit", [replica, job_doc("train", gpus=2)])["ok"]
    first("serve_report", {"replicas": {"model": "tiny", "service": "chat", "pools": [["azure", "eastus", 1]]}, "scale": [["tiny", "up"]]})
    first("serve_report", {"requests": [["tiny", "200", 5]], "errors": [["401", "invalid_api_key", "none", 2]], "ttft": {"tiny": [0.1]}})
    before = series(first.svc)
    assert first.svc.ledger is not None
    first.svc.ledger.close()  # the actor died
    assert before[("mcsched_serve_replicas", (("cloud", "azure"), ("model", "tiny"), ("region", "eastus")))] == 1
    restarted = Svc(tmp_path / "ledger.db", FakeGangs())
    restarted("ping")
    after = series(restarted.svc)
    assert set(before) <= set(after), sorted(set(before) - set(after))
    for key, value in before.items():  # gauges and the books' series come back with their values
        if key[0].startswith(("mcsched_serve_replicas", "mcsched_gpus", "mcsched_running_jobs", "mcsched_placements_total")):
            assert after[key] == value, key
    # A service that ended while the actor was down shows no replicas after the restart.
    restarted("release", "chat-r1", "stopped")
    assert restarted.svc.ledger is not None
    restarted.svc.ledger.close()
    again = Svc(tmp_path / "ledger.db", FakeGangs())
    again("ping")
    assert ("mcsched_serve_replicas", (("cloud", "azure"), ("model", "tiny"), ("region", "eastus"))) not in series(again.svc)

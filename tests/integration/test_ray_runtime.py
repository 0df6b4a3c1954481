"""The Ray runtime against a real local Ray cluster: the Ray CLI path, stop, waiting, recovery."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from scheduler.ledger import Ledger
from tests.integration.conftest import ROOT, Cluster, job_doc, wait_for

pytestmark = pytest.mark.slow


def ray_cli(cluster: Cluster, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    ray = str(Path(os.sys.executable).with_name("ray"))
    return subprocess.run([ray, "job", *args], env=cluster.env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def write_job(tmp: Path, doc: dict) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "job.yaml").write_text(yaml.safe_dump(doc))
    return tmp


def cancel_leftovers(cluster: Cluster) -> None:
    """Tests share one cluster: cancel what earlier tests left placed or queued."""
    for row in cluster.call("status", None):
        if row["outcome"] in ("placed", "queued"):
            cluster.call("cancel", row["job"])


def job_status(cluster: Cluster, name: str) -> dict:
    """The job's status row, or {} while the scheduler has not seen it yet."""
    return next((r for r in cluster.call("status", None) if r["job"] == name), {})


def usage(cluster: Cluster, cloud: str) -> int:
    return sum(u["allocated"] for u in cluster.call("usage") if u["cloud"] == cloud)


def test_ray_job_submit_places_and_runs_on_the_chosen_clouds_resources(cluster: Cluster, tmp_path: Path) -> None:
    # Azure has 8 GPUs: a 32-GPU gang is declined; coreweave (cheapest) has only 16, so it must
    # really run on oci's Ray resources.
    work = write_job(tmp_path / "w", job_doc("spill-32", gpus=32, workload={"steps": 3, "stepSeconds": 0.05}))
    r = ray_cli(cluster, "submit", "--address", cluster.info.dashboard_url, "--working-dir", str(work), "--",
                "python", "-m", "scheduler", "run", "job.yaml")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "placed spill-32 on oci/us-ashburn-1 (32x H100, $2.90/GPU-h): azure declined: no-capacity" in r.stdout
    assert "resources mcsched_oci__us_ashburn_1__H100=8" in r.stdout  # Ray assigned that cloud's pool
    assert "spill-32 finished on oci/us-ashburn-1; capacity released" in r.stdout
    assert usage(cluster, "oci") == 0


def test_entrypoint_gets_its_placement_in_the_environment(cluster: Cluster, tmp_path: Path) -> None:
    doc = job_doc("entry", gpus=4, entrypoint="echo RAN-ON=$MCSCHED_CLOUD/$MCSCHED_REGION/$MCSCHED_JOB")
    work = write_job(tmp_path / "e", doc)
    r = cluster.mcsched("run", str(work / "job.yaml"))
    assert "RAN-ON=azure/eastus/entry" in r.stdout + r.stderr


def test_failing_workload_exits_non_zero_and_releases(cluster: Cluster, tmp_path: Path) -> None:
    work = write_job(tmp_path / "f", job_doc("fails", gpus=8, workload={"steps": 5, "stepSeconds": 0.01, "failAtStep": 2}))
    r = cluster.mcsched("run", str(work / "job.yaml"), check=False)
    assert r.returncode == 1 and "injected failure at step 2" in r.stdout
    assert usage(cluster, "azure") == 0


def test_bad_job_is_refused_with_one_line_and_changes_nothing(cluster: Cluster, tmp_path: Path) -> None:
    before = len(cluster.call("status", None))
    work = write_job(tmp_path / "b", job_doc("sneaky", cls="api-serving", clouds=["oci"]))
    r = cluster.mcsched("run", str(work / "job.yaml"), check=False)
    assert r.returncode == 2 and "pinned" in r.stderr and "Traceback" not in r.stderr
    assert len(cluster.call("status", None)) == before


def test_ray_job_stop_releases_capacity_and_the_next_queued_job_starts(cluster: Cluster, tmp_path: Path) -> None:
    from ray.job_submission import JobStatus, JobSubmissionClient

    client = JobSubmissionClient(cluster.info.dashboard_url)
    long = write_job(tmp_path / "l", job_doc("long-train", gpus=8, workload={"steps": 600, "stepSeconds": 0.1}))
    sid = client.submit_job(entrypoint="python -m scheduler run job.yaml", runtime_env={"working_dir": str(long)})
    wait_for(lambda: usage(cluster, "azure") == 8, 60, what="long-train placed on azure")
    _, ray = cluster.actor()
    pool = "mcsched_azure__eastus__H100"
    # Capacity accounting matches Ray: the driver's placement group holds exactly the gang.
    wait_for(lambda: ray.available_resources().get(pool, 0) == 0, 60, what="Ray reserves the gang")
    # An api-serving job must wait for Azure (never spill) while long-train holds it.
    api = write_job(tmp_path / "a", job_doc("api-wait", cls="api-serving", gpus=8, workload={"steps": 2, "stepSeconds": 0.01}))
    api_sid = client.submit_job(entrypoint="python -m scheduler run job.yaml", runtime_env={"working_dir": str(api)})
    wait_for(lambda: job_status(cluster, "api-wait").get("outcome") == "queued", 60, what="api job queued")
    assert cluster.call("status", "api-wait")[0]["reason"] == "pinned-holder-declined"
    time.sleep(2)
    assert job_status(cluster, "api-wait").get("outcome") == "queued"  # still waiting, not spilled
    stopped_at = time.monotonic()
    client.stop_job(sid)
    wait_for(lambda: job_status(cluster, "long-train").get("outcome") == "stopped", 30, what="release")
    released_in = time.monotonic() - stopped_at
    assert released_in < 15, released_in
    kinds = [e.kind for e in Ledger(cluster.state / "ledger.db", readonly=True).events() if getattr(e, "job", None) == "long-train"]
    assert "bound" in kinds
    wait_for(lambda: client.get_job_status(api_sid) == JobStatus.SUCCEEDED, 90, what="api job succeeded")
    api_status = cluster.call("status", "api-wait")[0]
    assert api_status["outcome"] == "finished" or api_status["cloud"] == "azure"
    logs = client.get_job_logs(api_sid)
    assert "placed api-wait on azure/eastus" in logs and "resources mcsched_azure__eastus__H100=8" in logs
    kinds = [e.kind for e in Ledger(cluster.state / "ledger.db", readonly=True).events() if getattr(e, "job", None) == "long-train"]
    assert kinds[-1] == "released"
    last = [e for e in Ledger(cluster.state / "ledger.db", readonly=True).events() if getattr(e, "job", None) == "long-train"][-1]
    assert last.reason == "stopped"  # `ray job stop` is recorded as such, not as finished


def test_kill_9_during_1000_submissions_loses_and_duplicates_nothing(cluster: Cluster) -> None:
    actor, ray = cluster.actor()
    acked: dict[str, dict] = {}
    errors: list[str] = []

    def submit_all() -> None:
        for b in range(40):
            docs = [job_doc(f"bulk-{b}-{i}", gpus=[1, 2, 4, 8][i % 4]) for i in range(25)]
            for _attempt in range(60):
                try:
                    resp = ray.get(actor.submit.remote(docs), timeout=60)
                except Exception as exc:  # actor died mid-call: retry the same batch, like any client
                    errors.append(type(exc).__name__)
                    time.sleep(0.5)
                    continue
                assert resp["ok"], resp
                for d in resp["decisions"]:
                    acked[d["job"]] = d
                break
            else:
                raise AssertionError("batch never acknowledged")

    t = threading.Thread(target=submit_all)
    t.start()
    wait_for(lambda: len(acked) >= 200, 60, every=0.05, what="first batches")
    pid = ray.get(actor.pid.remote())
    os.kill(pid, signal.SIGKILL)
    t.join(300)
    assert not t.is_alive()
    assert len(acked) == 1000
    statuses = {r["job"]: r for r in ray.get(actor.status.remote(None)) if r["job"].startswith("bulk-")}
    assert set(statuses) == set(acked)
    assert all(r["outcome"] in ("placed", "queued") for r in statuses.values())
    assert ray.get(actor.pid.remote()) != pid  # it really restarted
    ledger = Ledger(cluster.state / "ledger.db", readonly=True)
    submitted = Counter(e.job for e in ledger.events() if e.kind == "submitted" and e.job.startswith("bulk-"))
    assert set(submitted) == set(acked) and set(submitted.values()) == {1}  # exactly once
    # Capacity accounting: the actor's books equal a fresh replay of the ledger, and no pool is over.
    from scheduler.engine import Engine
    from scheduler.specs import CloudCatalog, Contract
    from scheduler.wallclock import WallClock

    cfg = ledger.last_configured()
    assert cfg is not None
    replay = Engine.restore(CloudCatalog.model_validate(cfg.catalog), Contract.model_validate(cfg.contract), WallClock(), ledger.events())
    live = {(u["cloud"], u["region"], u["gpu_type"]): u["allocated"] for u in ray.get(actor.usage.remote())}
    assert live == {(u.cloud, u.region, u.gpu_type): u.allocated for u in replay.usage()}
    r = cluster.mcsched("audit", "verify", "--db", str(cluster.state / "ledger.db"), "--allow-unsigned-tail")
    assert "OK:" in r.stdout
    cancel_leftovers(cluster)


def test_local_mode_is_loopback_only_with_token_auth(cluster: Cluster) -> None:
    import json
    import socket
    import urllib.error
    import urllib.request

    assert cluster.info.dashboard_url.startswith("http://127.0.0.1:")
    assert cluster.info.auth_token_path and oct(Path(cluster.info.auth_token_path).stat().st_mode)[-3:] == "600"
    # Without the token the Jobs API refuses; with it (what `mcsched up` prints) it answers.
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{cluster.info.dashboard_url}/api/jobs/", timeout=10)
    assert refused.value.code in (401, 403)
    token = Path(cluster.info.auth_token_path).read_text().strip()
    req = urllib.request.Request(f"{cluster.info.dashboard_url}/api/jobs/", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10) as ok:
        assert isinstance(json.loads(ok.read()), list)
    # The dashboard and the metrics endpoint are bound to loopback, not to other interfaces.
    port = int(cluster.info.dashboard_url.rsplit(":", 1)[1])
    other = [a for a in socket.gethostbyname_ex(socket.gethostname())[2] if not a.startswith("127.")]
    for addr in other:
        with socket.socket() as s:
            s.settimeout(1)
            assert s.connect_ex((addr, port)) != 0
            assert s.connect_ex((addr, cluster.metrics_port)) != 0
    # The metrics endpoint is read-only: writes are refused outright.
    post = urllib.request.Request(f"http://127.0.0.1:{cluster.metrics_port}/metrics", data=b"x", method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused_write:
        urllib.request.urlopen(post, timeout=5)
    assert refused_write.value.code == 405


def test_convenience_commands_submit_status_list_cancel_fault(cluster: Cluster, tmp_path: Path) -> None:
    cancel_leftovers(cluster)
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text(yaml.safe_dump_all([
        job_doc("cli-quick", gpus=2, workload={"steps": 2, "stepSeconds": 0.01}),
        job_doc("cli-long", gpus=4, workload={"steps": 600, "stepSeconds": 0.1}),
    ]))
    r = cluster.mcsched("submit", str(jobs), "--clouds", str(cluster.state / "catalog.yaml"), "--contract", str(cluster.state / "contract.yaml"))
    ids = dict(line.split("\t") for line in r.stdout.strip().splitlines())
    assert set(ids) == {"cli-quick", "cli-long"} and all(v.startswith("mcsched-") for v in ids.values())
    wait_for(lambda: job_status(cluster, "cli-quick").get("outcome") == "finished", 90, what="cli-quick finished")
    wait_for(lambda: job_status(cluster, "cli-long").get("outcome") == "placed", 90, what="cli-long placed")
    st = json.loads(cluster.mcsched("status", "cli-long", "-o", "json", "--explain").stdout)
    assert st[0]["cloud"] == "azure" and st[0]["rofr"]["answer"] == "accepted" and "notUsed" in st[0]
    assert "placed cli-long on azure/eastus" in cluster.mcsched("list").stdout
    assert cluster.mcsched("cancel", "cli-long").stdout.strip() == "cli-long: cancelled"
    bad = cluster.mcsched("status", "no-such-job", check=False)
    assert bad.returncode != 0 and "unknown job 'no-such-job'" in bad.stderr and "Traceback" not in bad.stderr
    assert cluster.mcsched("fault", "azure", "--extra-latency", "60").stdout.strip() == "azure: +60s latency"
    slow = cluster.mcsched("run", str(write_job(tmp_path / "slow", job_doc("while-slow", gpus=2, workload={"steps": 1, "stepSeconds": 0.01})) / "job.yaml"))
    assert "azure lapsed: no-answer-within-window" in slow.stdout  # a slow holder lapses; the job spills
    cluster.mcsched("fault", "azure", "--extra-latency", "0")
    unknown = cluster.mcsched("fault", "ibm", "--down", check=False)
    assert unknown.returncode != 0 and "unknown cloud 'ibm'" in unknown.stderr and "Traceback" not in unknown.stderr
    cluster.mcsched("fault", "oci", "--down")
    assert next(u for u in cluster.call("status", None) if u["job"] == "cli-long")["outcome"] == "cancelled"
    r = cluster.mcsched("run", str(write_job(tmp_path / "s", job_doc("after-fault", gpus=16, workload={"steps": 1, "stepSeconds": 0.01})) / "job.yaml"))
    assert "placed after-fault on coreweave/US-EAST-04" in r.stdout  # oci is down: the spill goes elsewhere
    cluster.mcsched("fault", "oci", "--up")


def test_local_prometheus_scrapes_the_live_scheduler(cluster: Cluster) -> None:
    import shutil
    import urllib.request

    if shutil.which("prometheus") is None:
        pytest.skip("Debian's prometheus is not installed (.ci/run installs it)")
    from scheduler.runtime.cluster import ClusterInfo
    from scheduler.runtime.promlocal import start_local_prometheus

    info = start_local_prometheus(cluster.info, cluster.metrics_port)
    assert ClusterInfo.load(cluster.state).prometheus_pid == info.prometheus_pid
    cluster.info = info  # the fixture's `mcsched down` must stop it: stop_cluster fails the run if it survives

    def scraped() -> bool:
        url = f"{info.prometheus_url}/api/v1/query?query=" + "mcsched_backend_up"
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return len(json.loads(r.read())["data"]["result"]) == 3
        except OSError:
            return False

    wait_for(scraped, 60, 1.0, "Prometheus scraped the scheduler")
    os.kill(info.prometheus_pid, 0)  # alive now; the fixture's teardown asserts `mcsched down` stopped it


def test_after_mcsched_env_rays_own_commands_reach_this_cluster(cluster: Cluster, tmp_path: Path) -> None:
    """`eval "$(mcsched env)"`, then Ray's CLI as its docs show it: status, list nodes, job submit/list/logs/stop."""
    from tests.integration.conftest import clean_env

    cancel_leftovers(cluster)
    work = write_job(tmp_path / "cli", job_doc("ray-cli", gpus=2, workload={"steps": 600, "stepSeconds": 0.1}))
    env = {k: v for k, v in clean_env(cluster.state).items() if not k.startswith("RAY_ENABLE")}
    env["PATH"] = f"{Path(os.sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"

    def shell(cmd: str, timeout: float = 180) -> str:
        r = subprocess.run(["bash", "-c", f'eval "$(python -m scheduler env)" && {cmd}'], env=env, capture_output=True, text=True,
                           timeout=timeout, cwd=work)
        assert r.returncode == 0, f"{cmd} -> {r.returncode}\n{r.stdout}\n{r.stderr}"
        return r.stdout + r.stderr

    status = shell("ray status")
    assert "mcsched_azure__eastus__H100" in status and "Node status" in status  # this cluster's pools, via the GCS
    nodes = shell("ray list nodes --format json")
    listed = json.loads(nodes[nodes.index("["):nodes.rindex("]") + 1])
    # this cluster's head, alive (a worker node that died earlier stays listed as DEAD, in any position)
    assert [n["state"] for n in listed if n["is_head_node"]] == ["ALIVE"], listed
    submitted = shell("ray job submit --no-wait --submission-id ray-cli-1 --working-dir . -- python -m scheduler run job.yaml")
    assert "ray-cli-1" in submitted
    wait_for(lambda: job_status(cluster, "ray-cli").get("outcome") == "placed", 90, what="ray-cli placed")
    assert "ray-cli-1" in shell("ray job list")
    wait_for(lambda: "placed ray-cli on azure/eastus" in shell("ray job logs ray-cli-1"), 60, what="its logs")
    shell("ray job stop ray-cli-1")
    wait_for(lambda: job_status(cluster, "ray-cli").get("outcome") == "stopped", 60, what="ray-cli stopped in the books")
    wait_for(lambda: "was stopped" in shell("ray job status ray-cli-1"), 60, what="Ray to say STOPPED")


def test_each_mcsched_state_is_its_ray_job_status(cluster: Cluster, tmp_path: Path) -> None:
    """The state table of runtime/states.py, pair by pair, on real Ray jobs."""
    from ray.job_submission import JobSubmissionClient

    from scheduler.runtime.states import RAY_JOB_STATUS

    cancel_leftovers(cluster)
    client = JobSubmissionClient(cluster.info.dashboard_url)
    specs = {
        "st-finished": {"steps": 2, "stepSeconds": 0.01},
        "st-failed": {"steps": 5, "stepSeconds": 0.01, "failAtStep": 2},
        "st-cancelled": {"steps": 600, "stepSeconds": 0.1},
        "st-stopped": {"steps": 600, "stepSeconds": 0.1},
        "st-queued": {"steps": 600, "stepSeconds": 0.1},  # azure's 8 GPUs are taken: an api-serving job waits
    }
    sids = {}
    for name, workload in specs.items():
        doc = job_doc(name, cls="api-serving" if name == "st-queued" else "training", gpus=8 if name == "st-queued" else 2, workload=workload)
        sids[name] = client.submit_job(entrypoint="python -m scheduler run job.yaml", runtime_env={"working_dir": str(write_job(tmp_path / name, doc))})

    def pair(name: str) -> tuple[str, str]:
        return job_status(cluster, name).get("outcome", ""), str(client.get_job_status(sids[name]).value)

    for name in ("st-cancelled", "st-stopped"):
        wait_for(lambda n=name: pair(n)[0] == "placed", 120, what=f"{name} placed")
    wait_for(lambda: pair("st-queued")[0] == "queued", 60, what="st-queued queued")
    assert pair("st-cancelled")[1] == RAY_JOB_STATUS["placed"] and pair("st-queued")[1] == RAY_JOB_STATUS["queued"]
    cluster.mcsched("cancel", "st-queued")  # first: freed capacity would place it
    assert cluster.mcsched("cancel", "st-cancelled").stdout.strip() == "st-cancelled: cancelled"
    client.stop_job(sids["st-stopped"])
    terminal = ("finished", "failed", "cancelled", "stopped")
    for name in specs:
        try:
            wait_for(lambda n=name: pair(n)[0] in terminal and pair(n)[1] in ("SUCCEEDED", "FAILED", "STOPPED"), 120, what=f"{name} ended")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {pair(name)}\n{client.get_job_logs(sids[name])[-3000:]}") from None
    got = {name: pair(name) for name in specs}
    assert got == {
        "st-finished": ("finished", "SUCCEEDED"),
        "st-failed": ("failed", "FAILED"),
        "st-cancelled": ("cancelled", "STOPPED"),
        "st-stopped": ("stopped", "STOPPED"),
        "st-queued": ("cancelled", "STOPPED"),
    }
    assert all(RAY_JOB_STATUS[ours] == theirs for ours, theirs in got.values())


def test_a_placement_group_made_behind_the_schedulers_back_is_reported_with_its_creator(cluster: Cluster) -> None:
    """Anyone with the cluster token can call placement_group on a pool's resource: the
    reconciler reports it (foreignGroups: report, the default) with the Ray job that made it."""
    from ray.util.placement_group import placement_group, remove_placement_group

    cancel_leftovers(cluster)
    _, ray = cluster.actor()
    pg = placement_group([{"mcsched_azure__eastus__H100": 2}], name="behind-its-back")
    ray.get(pg.ready(), timeout=60)
    try:
        drift = wait_for(lambda: (d := cluster.call("drift"))["foreign"] and d, 30, 0.5, "the foreign group reported")
        (found,) = drift["foreign"]
        me = ray.get_runtime_context().get_job_id()
        assert found["id"] == pg.id.hex() and found["name"] == "behind-its-back" and found["creator"] == f"ray job {me}"
        assert drift["foreignPolicy"] == "report" and not drift["at_rest"]
        assert usage(cluster, "azure") == 0  # reported, not booked: the books stay the scheduler's
    finally:
        remove_placement_group(pg)
    wait_for(lambda: not cluster.call("drift")["foreign"], 30, 0.5, "the report cleared once it is gone")

"""Local clusters coexist and stay on loopback (real Ray): two `mcsched up` at once, each
running a job through a bare `ray job submit` with only the printed exports; every listening
socket on 127.0.0.1; a foreign `ray start --head` cluster untouched by `up` and `down`; `down`
then `up` at once recovers the ledger; a failed `up` leaves nothing behind."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import yaml

from scheduler.runtime.cluster import ClusterInfo, cluster_processes, free_port, port_free, ray_bin, stop_head
from tests.integration.conftest import (
    LOOPBACK,
    ROOT,
    Cluster,
    clean_env,
    exposed,
    job_doc,
    listening,
    start_cluster,
    stop_cluster,
    wait_for,
)

pytestmark = pytest.mark.slow



@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[Cluster, Cluster]]:
    a = start_cluster()
    try:
        b = start_cluster()
    except BaseException:
        stop_cluster(a)
        raise
    try:
        yield a, b
    finally:
        stop_cluster(a)
        stop_cluster(b)


def bare_submit(c: Cluster, work: Path) -> subprocess.Popen[str]:
    """What the README shows: eval the exports, then `ray job submit` with no --address."""
    env = {k: v for k, v in clean_env(c.state).items() if not k.startswith("RAY_ENABLE")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    script = f'eval "$(mcsched env)" && cd {work} && ray job submit --working-dir . -- python -m scheduler run job.yaml'
    return subprocess.Popen(["bash", "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_two_clusters_each_run_a_job_through_bare_ray_job_submit(pair: tuple[Cluster, Cluster], tmp_path: Path) -> None:
    procs = {}
    for c, name in zip(pair, ("job-a", "job-b"), strict=True):
        work = tmp_path / name
        work.mkdir()
        (work / "job.yaml").write_text(yaml.safe_dump(job_doc(name, gpus=4, workload={"steps": 2, "stepSeconds": 0.01})))
        procs[name] = bare_submit(c, work)
    for name, proc in procs.items():
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out
        assert f"placed {name} on azure/eastus" in out and f"{name} finished" in out and "capacity released" in out, out
        assert "succeeded" in out
    for c, mine, theirs in ((pair[0], "job-a", "job-b"), (pair[1], "job-b", "job-a")):
        listed = plain(c, "list").stdout
        assert f"finished {mine}" in listed and theirs not in listed


def plain(c: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    """An mcsched command in a shell without any exports: it finds the state dir's cluster and token."""
    r = subprocess.run([sys.executable, "-m", "scheduler", *args], env=clean_env(c.state), capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def test_mcsched_submit_needs_no_exports(pair: tuple[Cluster, Cluster], tmp_path: Path) -> None:
    b = pair[1]
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text(yaml.safe_dump(job_doc("no-exports", gpus=2, workload={"steps": 1, "stepSeconds": 0.01})))
    out = plain(b, "submit", str(jobs), "--clouds", str(b.state / "catalog.yaml"), "--contract", str(b.state / "contract.yaml"))
    name, sid = out.stdout.strip().split("\t")
    assert name == "no-exports" and sid.startswith("mcsched-no-exports-") and "Uploading package" not in out.stderr
    wait_for(lambda: "finished no-exports" in plain(b, "list").stdout, 180, every=2, what="no-exports finished")


def test_every_listening_socket_is_on_loopback(pair: tuple[Cluster, Cluster]) -> None:
    for c in pair:
        sockets = listening(c.info.temp_dir)
        ports = {port for _, port, _ in sockets}
        assert {c.info.ports["gcs"], c.info.ports["dashboard"], c.metrics_port} <= ports, sockets
        stated, unstated = exposed(c.info.temp_dir)
        assert not unstated and not stated, f"listening off loopback with no model served: {stated + unstated}"
    assert pair[0].info.dashboard_url != pair[1].info.dashboard_url  # 8265 at most once


def test_up_prometheus_on_a_running_cluster_adds_only_prometheus(pair: tuple[Cluster, Cluster]) -> None:
    if shutil.which("prometheus") is None:
        pytest.skip("Debian's prometheus is not installed (.ci/run installs it)")
    a = pair[0]
    gcs_before = a.info.gcs_address
    r = a.mcsched("up", "--prometheus")
    assert "already up" in r.stderr and "started a local Prometheus for it" in r.stderr, r.stderr
    info = ClusterInfo.load(a.state)
    assert info is not None and info.gcs_address == gcs_before and info.prometheus_pid
    assert f"Prometheus:     {info.prometheus_url}" in r.stdout
    again = a.mcsched("up", "--prometheus")
    assert "its local Prometheus is already running" in again.stderr
    prom = psutil.Process(info.prometheus_pid)
    assert all(c.laddr.ip in LOOPBACK for c in prom.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN)


def start_foreign(temp: Path) -> int:
    """A plain `ray start --head` the user runs themselves: own temp dir, free ports, loopback."""
    gcs = free_port()
    env = {**clean_env(temp), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
           "AUTOSCALER_METRIC_PORT": str(free_port()), "DASHBOARD_METRIC_PORT": str(free_port())}
    ports = ["--port", str(gcs), "--dashboard-port", str(free_port()), "--ray-client-server-port", str(free_port()),
             "--dashboard-agent-listen-port", str(free_port()), "--dashboard-agent-grpc-port", str(free_port()),
             "--runtime-env-agent-port", str(free_port()), "--metrics-export-port", str(free_port()),
             "--node-manager-port", str(free_port()), "--object-manager-port", str(free_port())]
    cmd = [ray_bin(), "start", "--head", "--node-ip-address", "127.0.0.1", "--temp-dir", str(temp / "ray"),
           "--num-cpus", "1", "--include-dashboard", "false", "--disable-usage-stats", *ports]
    for _attempt in range(2):  # Ray gives a head 30 s to register: a busy shared machine may need a second try
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        if r.returncode == 0:
            return gcs
        stop_head(str(temp / "ray"))
    raise AssertionError(r.stdout + r.stderr)


def test_a_foreign_cluster_survives_down_and_up_and_up_right_after_down_recovers(pair: tuple[Cluster, Cluster]) -> None:
    a, b = pair
    foreign = Path(tempfile.mkdtemp(prefix="mcs-f-", dir="/tmp"))
    try:
        gcs = start_foreign(foreign)
        theirs = {p.pid for p in cluster_processes(str(foreign / "ray"))}
        b_pids = {p.pid for p in cluster_processes(b.info.temp_dir)}
        assert theirs and b_pids
        recorded = ClusterInfo.load(a.state)
        prometheus_pid = recorded.prometheus_pid if recorded else None

        down = a.mcsched("down", timeout=300)
        assert down.stdout.strip().startswith(f"stopped the cluster of {a.state}") and "ports are free" in down.stdout
        assert cluster_processes(a.info.temp_dir) == []
        assert all(port_free(p) for p in a.info.ports.values())
        assert prometheus_pid is None or not psutil.pid_exists(prometheus_pid)  # its Prometheus too
        assert not (a.state / "cluster.json").exists()
        # At once, with the same metrics port: the scheduler recovers from the state dir's ledger.
        a.mcsched("up", "--clouds", str(a.state / "catalog.yaml"), "--contract", str(a.state / "contract.yaml"),
                  "--metrics-port", str(a.metrics_port), timeout=600)
        new = ClusterInfo.load(a.state)
        assert new is not None
        a.info = new
        a.env.update(new.client_env())
        assert "job-a" in a.mcsched("list").stdout

        alive = {p.pid for p in psutil.process_iter() if p.pid in theirs | b_pids and p.is_running()}
        assert alive == theirs | b_pids, "mcsched up/down touched processes it did not start"
        with socket.create_connection(("127.0.0.1", gcs), timeout=5):
            pass
    finally:
        stop_head(str(foreign / "ray"))
        assert cluster_processes(str(foreign / "ray")) == []
        shutil.rmtree(foreign, ignore_errors=True)


def test_a_failed_up_leaves_no_head_and_no_cluster_json(tmp_path: Path) -> None:
    state = Path(tempfile.mkdtemp(prefix="mcs-", dir="/tmp"))
    port = free_port()
    script = (
        "import scheduler.runtime.cluster as c\n"
        "from scheduler.errors import RuntimeUnavailable\n"
        "def boom(url, timeout=90.0, ray_temp=None):\n"
        "    raise RuntimeUnavailable('Ray Jobs API not ready (injected failure)')\n"
        "c.wait_jobs_api = boom\n"
        "from scheduler.cli import main\n"
        f"main(['up', '--state-dir', {str(state)!r}, '--metrics-port', '{port}'])\n"
    )
    try:
        r = subprocess.run([sys.executable, "-c", script], env=clean_env(state), capture_output=True, text=True, timeout=600, cwd=ROOT)
        assert r.returncode == 3, r.stderr
        assert r.stderr.strip().splitlines()[-1] == "error: Ray Jobs API not ready (injected failure)"
        assert "start-up failed; stopping what it started" in r.stderr and "Traceback" not in r.stderr
        assert not (state / "cluster.json").exists()
        assert cluster_processes(str(state / "ray")) == []
        assert port_free(port)
    finally:
        stop_head(str(state / "ray"))
        shutil.rmtree(state, ignore_errors=True)


def test_cluster_json_records_every_port_it_listens_on(pair: tuple[Cluster, Cluster]) -> None:
    b = pair[1]
    recorded = json.loads((b.state / "cluster.json").read_text())["ports"]
    listening_ports = {port for _, port, _ in listening(b.info.temp_dir)}
    for name in ("gcs", "dashboard", "node-manager", "object-manager", "ray-client-server", "dashboard-agent-listen",
                 "dashboard-agent-grpc", "runtime-env-agent", "metrics"):
        assert recorded[name] in listening_ports, (name, recorded[name])


def test_two_clusters_up_at_once_announce_different_serve_ports(pair: tuple[Cluster, Cluster]) -> None:
    """Serve binds late (at the first deployment), so the second `up` must not pick the first's port."""
    a, b = pair
    assert a.info.ports["serve"] != b.info.ports["serve"]

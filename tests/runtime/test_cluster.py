"""The local cluster's bookkeeping without starting Ray: cluster.json, the exports, stale state,
which address mcsched joins, and ports."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from scheduler.errors import RuntimeUnavailable
from scheduler.runtime.cluster import (
    STATE_FILE,
    ClusterInfo,
    down,
    ephemeral_range,
    free_port,
    free_port_block,
    port_free,
    resolve_address,
    wait_ports_free,
)


def dead_port() -> int:
    return free_port()  # nothing listens there once the probe socket is closed


def info_for(state: Path, gcs_port: int, **kw) -> ClusterInfo:
    """A recorded cluster; 8265/9464 may belong to a real cluster on this machine (the quickstart's): never waited for."""
    return ClusterInfo(
        f"127.0.0.1:{gcs_port}", "http://127.0.0.1:8265", "http://127.0.0.1:9464/metrics", str(state), str(state / "ray"),
        auth_token_path=str(state / "auth_token"), **kw,
    )  # fmt: skip


def test_cluster_json_round_trips_and_old_files_still_load(tmp_path: Path) -> None:
    info = info_for(tmp_path, 1234, ports={"gcs": 1234, "dashboard": 8265})
    info.save()
    assert ClusterInfo.load(tmp_path) == info
    raw = json.loads((tmp_path / STATE_FILE).read_text())
    del raw["ports"]  # written before ports were recorded
    raw["future_field"] = 1  # written by a newer mcsched
    (tmp_path / STATE_FILE).write_text(json.dumps(raw))
    assert ClusterInfo.load(tmp_path) == info_for(tmp_path, 1234)
    (tmp_path / STATE_FILE).write_text("{not json")
    with pytest.raises(RuntimeUnavailable, match="unreadable"):
        ClusterInfo.load(tmp_path)
    (tmp_path / STATE_FILE).write_text("[1, 2]")  # JSON, but not an object: was an AttributeError traceback
    with pytest.raises(RuntimeUnavailable, match=r"unreadable \(a JSON list, not an object\); remove it"):
        ClusterInfo.load(tmp_path)


def test_exports_follow_rays_conventions_and_survive_eval(tmp_path: Path) -> None:
    state = tmp_path / "my state"  # a space: the lines must still eval
    info = info_for(state, 1234)
    # As `ray start --head` tells its users: RAY_ADDRESS the GCS (`ray status`), RAY_API_SERVER_ADDRESS the Jobs API.
    assert info.export_lines()[:2] == ["export RAY_ADDRESS=127.0.0.1:1234", "export RAY_API_SERVER_ADDRESS=http://127.0.0.1:8265"]
    script = "\n".join(info.export_lines()) + '\necho "$RAY_ADDRESS|$RAY_API_SERVER_ADDRESS|$RAY_AUTH_MODE|$RAY_AUTH_TOKEN_PATH"'
    r = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == f"127.0.0.1:1234|http://127.0.0.1:8265|token|{state}/auth_token"


def test_down_on_a_stale_state_dir_cleans_it_with_a_clear_message(tmp_path: Path) -> None:
    info_for(tmp_path, dead_port()).save()
    result = down(tmp_path)
    assert result.line(tmp_path) == f"the cluster recorded in {tmp_path} was not running (stale state); cleaned up"
    assert not (tmp_path / STATE_FILE).exists()
    assert down(tmp_path).line(tmp_path) == f"nothing to stop: no cluster recorded in {tmp_path}"


def test_the_cli_reports_stale_state_and_an_absent_cluster(tmp_path: Path) -> None:
    info_for(tmp_path, dead_port()).save()
    run = [sys.executable, "-m", "scheduler"]
    r = subprocess.run([*run, "down", "--state-dir", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 0 and "stale state" in r.stdout
    r = subprocess.run([*run, "env", "--state-dir", str(tmp_path)], capture_output=True, text=True)
    assert (
        r.returncode == 3
        and r.stdout == ""
        and r.stderr.strip() == f"error: no running cluster in {tmp_path}: run `mcsched up` first"
    )


def test_which_cluster_mcsched_joins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as gcs:  # a live "GCS": something answers on the recorded port
        gcs.bind(("127.0.0.1", 0))
        gcs.listen()
        port = gcs.getsockname()[1]
        info_for(tmp_path, port).save()
        for var in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH"):
            monkeypatch.delenv(var, raising=False)
        # No exports: the state dir's cluster, with its token.
        assert resolve_address(None, tmp_path) == f"127.0.0.1:{port}"
        import os

        assert os.environ["RAY_AUTH_TOKEN_PATH"] == str(tmp_path / "auth_token")
        # RAY_ADDRESS set to a Jobs API URL (as Ray's Jobs docs show): not joinable; the state dir wins.
        monkeypatch.setenv("RAY_ADDRESS", "http://127.0.0.1:8265")
        assert resolve_address(None, tmp_path) == f"127.0.0.1:{port}"
        assert resolve_address("http://127.0.0.1:8265", tmp_path) == f"127.0.0.1:{port}"  # its own dashboard
        with pytest.raises(RuntimeUnavailable, match="Jobs API"):
            resolve_address("http://10.0.0.1:8265", tmp_path)
        # Inside a Ray job, RAY_ADDRESS is the GCS address Ray set.
        monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:7777")
        assert resolve_address(None, tmp_path) == "127.0.0.1:7777"
        assert resolve_address("10.1.2.3:6379", tmp_path) == "10.1.2.3:6379"
    monkeypatch.delenv("RAY_ADDRESS")
    assert resolve_address(None, tmp_path) is None  # its GCS is gone


def test_ports(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        assert not port_free(busy)
        assert wait_ports_free([busy], timeout=0.3) == [busy]
    assert wait_ports_free([busy], timeout=5) == []
    start = free_port_block(20)
    assert all(port_free(p) for p in range(start, start + 20))
    # Below the kernel's ephemeral range: no port-0 bind (Ray's own picks) can land in the workers' block.
    assert start + 20 <= ephemeral_range()[0]


def test_only_the_ports_ray_cannot_choose_are_chosen_by_mcsched() -> None:
    from scheduler.runtime.cluster import RAY_CHOSEN, choose_ports

    ports, worker_lo = choose_ports()
    assert set(ports) == {"dashboard", "serve", "ray-client-server", "dashboard-agent-listen", "autoscaler-metrics", "dashboard-metrics"}
    assert not set(ports) & set(RAY_CHOSEN) and "gcs" not in ports  # the GCS port is Ray's (--port 0)
    assert len(set(ports.values())) == len(ports) and not set(ports.values()) & set(range(worker_lo, worker_lo + 200))


def test_the_gcs_address_is_read_from_rays_address_file(tmp_path: Path) -> None:
    from scheduler.runtime.cluster import gcs_address

    with pytest.raises(RuntimeUnavailable, match="no address file"):
        gcs_address(tmp_path)
    (tmp_path / "ray_current_cluster").write_text("127.0.0.1:41234\n")
    assert gcs_address(tmp_path) == "127.0.0.1:41234"
    (tmp_path / "ray_current_cluster").write_text("garbage")
    with pytest.raises(RuntimeUnavailable, match="not a Ray address"):
        gcs_address(tmp_path)


def test_stopping_a_process_that_another_program_has_not_reaped_counts_it_as_stopped() -> None:
    """`mcsched down` stops a Prometheus that `up --prometheus` (or a test) started: once it
    exits it can stay a zombie of its parent, which `down` cannot reap. That is stopped, not a
    failure (it once made `down` give up before stopping the Ray head)."""
    import time

    import psutil

    from scheduler.runtime.cluster import _terminate

    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, time; p = subprocess.Popen(['sleep', '60']); print(p.pid, flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert parent.stdout is not None
        child = psutil.Process(int(parent.stdout.readline()))
        t0 = time.monotonic()
        _terminate([child], grace=5.0)
        assert time.monotonic() - t0 < 5.0
        assert child.status() == psutil.STATUS_ZOMBIE  # exited, its parent never reaped it
    finally:
        parent.kill()
        parent.wait()


class _FakeJobs:
    """Ray's Jobs API as it behaves: a job's monitor sees its supervisor exit a loop after the job
    finished, and re-creates the record as FAILED if the job was deleted before that."""

    def __init__(self) -> None:
        from ray.job_submission import JobStatus

        self.status = JobStatus
        self.jobs: dict[str, JobStatus] = {"user-job": JobStatus.SUCCEEDED}
        self.unmonitored: set[str] = set()  # finished, supervisor exit not yet seen by the monitor

    def submit_job(self, entrypoint: str, submission_id: str) -> str:
        self.jobs[submission_id] = self.status.SUCCEEDED  # `true` finishes at once
        self.unmonitored.add(submission_id)
        return submission_id

    def get_job_status(self, sid: str) -> object:
        return self.jobs[sid]

    def list_jobs(self) -> list[object]:
        from types import SimpleNamespace

        return [SimpleNamespace(submission_id=sid, status=st) for sid, st in self.jobs.items()]

    def delete_job(self, sid: str) -> bool:
        del self.jobs[sid]
        return True

    def tick(self) -> None:
        """One loop of Ray's job monitor: a deleted job whose exit it had not seen comes back FAILED."""
        for sid in self.unmonitored:
            if sid not in self.jobs:
                self.jobs[sid] = self.status.FAILED
        self.unmonitored.clear()


def test_up_leaves_no_readiness_probe_in_the_users_job_list(monkeypatch: pytest.MonkeyPatch) -> None:
    """`ray job list` on every fresh cluster showed a FAILED `mcsched-ready-...` job: the probe was
    deleted before Ray's job monitor saw it end, and the monitor wrote it back. Time passes only
    through ``sleep`` here; the user's own jobs stay."""
    import scheduler.runtime.cluster as cluster

    fake = _FakeJobs()
    monkeypatch.setattr(cluster, "jobs_client", lambda url: fake)
    monkeypatch.setattr(cluster.time, "sleep", lambda s: fake.tick())
    cluster.wait_jobs_api("http://127.0.0.1:1", timeout=30)
    fake.tick()  # the monitor's next loop, after `up` returned
    assert list(fake.jobs) == ["user-job"]


def test_a_jobs_api_that_never_gets_its_agent_names_the_agents_last_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Round 2 of a newcomer check failed `mcsched up` with only Ray's "No available agent"; the
    test had removed the state dir and with it the agent's log. The error now quotes that log."""
    import scheduler.runtime.cluster as cluster

    class NoAgent:
        def submit_job(self, **_: object) -> str:
            raise RuntimeError("Request failed with status code 500: No available agent to submit job, please try again later.")

    logs = tmp_path / "ray" / "session_2026-12-07_21-00-00_1" / "logs"
    logs.mkdir(parents=True)
    (logs / "dashboard_agent.log").write_text("INFO starting\nERROR OSError: [Errno 98] Address already in use\nINFO exiting\n")
    monkeypatch.setattr(cluster, "jobs_client", lambda url: NoAgent())
    with pytest.raises(cluster.RuntimeUnavailable) as err:
        cluster.wait_jobs_api("http://127.0.0.1:1", timeout=0.6, ray_temp=tmp_path / "ray")
    message = str(err.value)
    assert "No available agent" in message and "\n" not in message
    assert f"(dashboard agent: ERROR OSError: [Errno 98] Address already in use; log: {logs / 'dashboard_agent.log'})" in message
    with pytest.raises(cluster.RuntimeUnavailable) as bare:  # no log to quote: the plain message
        cluster.wait_jobs_api("http://127.0.0.1:1", timeout=0.6, ray_temp=tmp_path / "none")
    assert str(bare.value).endswith("please try again later.")


def test_the_clusters_processes_use_its_state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`mcsched up --state-dir /tmp/a`: its jobs' drivers checkpointed into ~/.mcsched (the default),
    shared by every cluster. The head's environment, which its processes inherit, names the state dir."""
    from scheduler.runtime.cluster import head_env

    monkeypatch.setenv("MCSCHED_HOME", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("RAY_ADDRESS", "http://127.0.0.1:8265")
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", "http://127.0.0.1:8265")
    ports = {"autoscaler-metrics": 40001, "dashboard-metrics": 40002, "serve": 8000}
    env = head_env(tmp_path / "a", ports, None)
    assert env["MCSCHED_HOME"] == str(tmp_path / "a")
    assert env["MCSCHED_SERVE_PORT"] == "8000" and "RAY_ADDRESS" not in env and "RAY_API_SERVER_ADDRESS" not in env


@pytest.mark.parametrize("command", [["list"], ["status", "some-job"], ["cancel", "some-job"], ["fault", "oci", "--down"]])
def test_a_recorded_cluster_that_died_is_named_not_reported_missing(tmp_path: Path, command: list[str]) -> None:
    """After the cluster's processes die, `cluster.json` remains: say that cluster is not running
    and how to clean up, not "no Ray cluster found" (which sent users looking elsewhere)."""
    info_for(tmp_path, dead_port()).save()  # nothing listens on its GCS port
    r = subprocess.run(
        [sys.executable, "-m", "scheduler", *command, "--state-dir", str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert f"the cluster recorded in {tmp_path} is not running" in r.stderr and "mcsched down --state-dir" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_no_recorded_cluster_says_where_it_looked(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "scheduler", "list", "--state-dir", str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert r.returncode != 0 and f"no Ray cluster found in {tmp_path}: run `mcsched up` first" in r.stderr, r.stderr


def test_a_serve_port_another_running_cluster_was_given_is_not_given_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Serve binds its port only when a model is deployed, so two `mcsched up` in a row both saw
    8000 free and both announced it; the second deployment then failed. The port the other
    cluster's Ray processes were given counts as taken."""
    import shutil

    import scheduler.runtime.cluster as cluster

    port = free_port()
    monkeypatch.setattr(cluster, "SERVE_PORT", port)
    monkeypatch.delenv("MCSCHED_SERVE_PORT", raising=False)
    assert cluster.choose_ports()[0]["serve"] == port  # nobody claims it
    raylet = tmp_path / "raylet"  # a process named like another cluster's raylet, given that port
    shutil.copy(shutil.which("sleep") or "/bin/sleep", raylet)
    proc = subprocess.Popen([str(raylet), "60"], env={"MCSCHED_SERVE_PORT": str(port)})
    try:
        import time

        deadline = time.monotonic() + 5
        while port not in cluster.claimed_serve_ports() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert cluster.choose_ports()[0]["serve"] != port
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("home", ["/root", "/tmp/pytest-of-someone/pytest-1234/test_a_long_name0/home", "/tmp/newcomer.LqPLZ6/home"])
def test_the_ray_temp_dir_leaves_room_for_every_node_socket(home: str) -> None:
    """A Unix socket's path is at most 107 bytes: a worker node's plasma socket under a long home
    failed to bind, and `mcsched up` with it (a newcomer's HOME under /tmp did this)."""
    from scheduler.loading import load_catalog
    from scheduler.paths import default_catalog
    from scheduler.runtime.cluster import ray_temp_dir
    from scheduler.runtime.nodes import node_types

    state = Path(home) / ".mcsched"
    temp = ray_temp_dir(state)
    assert temp == ray_temp_dir(Path(home) / ".mcsched")  # up, down and the next up agree
    session = "session_2026-12-07_00-55-41_964764_4194304"  # the longest: a 7-digit pid
    longest = max(len(t.name) for t in node_types(load_catalog(default_catalog())))
    socket_path = f"{temp}/w-{'x' * longest}/{session}/sockets/plasma_store"
    assert len(socket_path) <= 107, socket_path
    if len(str(state / "ray")) <= 24:
        assert temp == state / "ray"  # a short state dir keeps Ray's files inside it


def test_down_removes_the_short_ray_folder_that_stood_in_for_the_state_dirs(tmp_path: Path) -> None:
    """A long state dir's Ray files live under /tmp (``ray_temp_dir``); ``down`` leaves nothing there."""
    from scheduler.runtime.cluster import ray_temp_dir

    state = tmp_path / ("a-long-state-dir-name-" * 3)
    state.mkdir()
    temp = ray_temp_dir(state)
    assert temp != state / "ray"
    (temp / "session_x").mkdir(parents=True)
    down(state)
    assert not temp.exists()

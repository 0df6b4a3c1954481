"""The embedded default: a local Ray head carrying every mock cloud, plus the scheduler actor.

Everything binds to 127.0.0.1 (dashboard, Jobs API, metrics); Ray's temp dir lives under
the mcsched state directory. ``up`` records what it started in ``cluster.json`` so
``down``, ``run`` and the CLI find it again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from scheduler.errors import RuntimeUnavailable
from scheduler.runtime.resources import cloud_resources
from scheduler.specs import CloudCatalog, Contract

STATE_FILE = "cluster.json"
WORKER_PORTS = 200


@dataclass(frozen=True)
class ClusterInfo:
    gcs_address: str
    dashboard_url: str
    metrics_url: str
    state_dir: str
    temp_dir: str
    prometheus_url: str | None = None
    prometheus_pid: int | None = None
    auth_token_path: str | None = None

    def client_env(self) -> dict[str, str]:
        """What a Ray client (ray job submit, ray.init) needs in its environment."""
        return auth_env(self.auth_token_path) if self.auth_token_path else {}

    def export_lines(self) -> list[str]:
        return [f"export {k}={v}" for k, v in self.client_env().items()]

    def save(self) -> None:
        Path(self.state_dir, STATE_FILE).write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, state_dir: Path) -> ClusterInfo | None:
        path = state_dir / STATE_FILE
        if not path.exists():
            return None
        return cls(**json.loads(path.read_text()))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def ray_bin() -> str:
    candidate = Path(sys.executable).with_name("ray")
    return str(candidate) if candidate.exists() else (shutil.which("ray") or "ray")


def auth_env(token_path: str | Path) -> dict[str, str]:
    """Ray token authentication: the same two variables for the head, its jobs and every client."""
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_path)}


def token_auth_supported() -> bool:
    """Ray >= 2.52 enforces a static bearer token when RAY_AUTH_MODE=token.

    Read from package metadata: importing ray would freeze its auth settings too early.
    """
    from importlib.metadata import version

    major, minor = (int(x) for x in version("ray").split(".")[:2])
    return (major, minor) >= (2, 52)


def make_token(state_dir: Path) -> Path:
    path = state_dir / "auth_token"
    if not path.exists():
        path.touch(mode=0o600)
        path.write_text(secrets.token_hex(32))
    path.chmod(0o600)
    return path


def apply_client_env(info: ClusterInfo) -> None:
    """Make this process a client of the recorded cluster (token auth included)."""
    os.environ.update(info.client_env())


def start_head(
    catalog: CloudCatalog, state_dir: Path, *, num_cpus: int = 2, object_store_mb: int = 128, auth_token: Path | None = None
) -> tuple[str, str]:
    """``ray start --head`` on loopback advertising every cloud's pools; returns (gcs, dashboard)."""
    temp_dir = state_dir / "ray"
    temp_dir.mkdir(parents=True, exist_ok=True)
    gcs_port, dash_port = free_port(), free_port()
    worker_lo = free_port_block(WORKER_PORTS)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("RAY_ADDRESS", None)
    if auth_token is not None:
        env.update(auth_env(auth_token))
    cmd = [
        ray_bin(), "start", "--head",
        "--node-ip-address", "127.0.0.1",
        "--port", str(gcs_port),
        "--dashboard-host", "127.0.0.1",
        "--dashboard-port", str(dash_port),
        # Every other port free too (Ray's fixed defaults, e.g. 52365 and 10001, clash with a
        # second cluster on the machine).
        "--object-manager-port", str(free_port()),
        "--node-manager-port", str(free_port()),
        "--ray-client-server-port", str(free_port()),
        "--dashboard-agent-listen-port", str(free_port()),
        "--dashboard-agent-grpc-port", str(free_port()),
        "--runtime-env-agent-port", str(free_port()),
        "--metrics-export-port", str(free_port()),
        "--min-worker-port", str(worker_lo),
        "--max-worker-port", str(worker_lo + WORKER_PORTS - 1),
        "--temp-dir", str(temp_dir),
        "--num-cpus", str(num_cpus),
        "--object-store-memory", str(object_store_mb * 1024 * 1024),
        "--resources", json.dumps({**cloud_resources(catalog), "mcsched_scheduler": 1}),
        "--disable-usage-stats",
        "--include-dashboard", "true",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RuntimeUnavailable(f"ray start failed: {tail[0]}")
    return f"127.0.0.1:{gcs_port}", f"http://127.0.0.1:{dash_port}"


def free_port_block(size: int, lo: int = 20_000, hi: int = 60_000) -> int:
    """The first port of ``size`` consecutive free loopback ports (Ray's worker range)."""
    import random

    for _ in range(200):
        start = random.randrange(lo, hi - size)
        if all(port_free(p) for p in range(start, start + size)):
            return start
    raise RuntimeUnavailable(f"no block of {size} free ports between {lo} and {hi}")


def cluster_processes(temp_dir: str) -> list[Any]:
    """Processes of the Ray cluster whose temp dir is ``temp_dir`` (and their children), nothing else."""
    import psutil

    roots = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(temp_dir in arg for arg in (proc.info["cmdline"] or [])):
                roots.append(proc)
        except psutil.Error:
            continue
    found = {p.pid: p for p in roots}
    for p in roots:
        with contextlib.suppress(psutil.Error):
            for child in p.children(recursive=True):
                found.setdefault(child.pid, child)
    return list(found.values())


def stop_head(temp_dir: str, timeout: float = 15.0) -> int:
    """Stop only the cluster that owns ``temp_dir`` (``ray stop --force`` would kill every cluster of the user)."""
    import psutil

    procs = cluster_processes(temp_dir)
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.terminate()
    _gone, alive = psutil.wait_procs(procs, timeout=timeout)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(alive, timeout=5)
    return len(procs)


def connect(address: str, *, log_to_driver: bool = False) -> None:
    """Join the cluster as a client; only the job driver streams worker output."""
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(address=address, namespace="mcsched", logging_level=logging.WARNING, log_to_driver=log_to_driver)


def wait_jobs_api(url: str, timeout: float = 90.0) -> None:
    """Wait until the Jobs API really accepts a job (its agent starts after the dashboard)."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            client = JobSubmissionClient(url)
            sid = client.submit_job(entrypoint="true", submission_id=f"mcsched-ready-{time.time_ns()}")
            while time.monotonic() < deadline:
                if client.get_job_status(sid) in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
                    client.delete_job(sid)
                    return
                time.sleep(0.2)
        except Exception as exc:  # connection refused / "No available agent" while starting
            last = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            time.sleep(0.5)
    raise RuntimeUnavailable(f"Ray Jobs API at {url} not ready within {timeout:.0f}s: {last}")


def up(
    catalog: CloudCatalog,
    contract: Contract,
    state_dir: Path,
    *,
    metrics_port: int = 9464,
    log: Any = print,
) -> ClusterInfo:
    """Start the local head and the scheduler actor (idempotent while a cluster is recorded)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    existing = ClusterInfo.load(state_dir)
    if existing is not None and alive(existing):
        log(f"mcsched is already up (Ray at {existing.gcs_address}); `mcsched down` first to restart it")
        return existing
    if not port_free(metrics_port):
        raise RuntimeUnavailable(f"metrics port 127.0.0.1:{metrics_port} is in use (pass --metrics-port)")
    token = make_token(state_dir) if token_auth_supported() else None
    if token is not None:  # before anything imports ray in this process
        os.environ.update(auth_env(token))
    log("starting a local Ray head (loopback only, token auth " + ("on" if token else "unsupported by this Ray") + ") ...")
    gcs, dash = start_head(catalog, state_dir, auth_token=token)
    info = ClusterInfo(
        gcs, dash, f"http://127.0.0.1:{metrics_port}/metrics", str(state_dir), str(state_dir / "ray"),
        auth_token_path=str(token) if token else None,
    )
    info.save()
    wait_jobs_api(dash)
    from scheduler.runtime.actor import start_actor  # imports ray: only now that auth is in the env

    log("starting the scheduler actor (detached, restartable) ...")
    connect(gcs)
    start_actor(
        catalog.model_dump(mode="json", by_alias=True),
        contract.model_dump(mode="json", by_alias=True),
        str(state_dir / "ledger.db"),
        metrics_port,
    )
    return info


def alive(info: ClusterInfo) -> bool:
    host, _, port = info.gcs_address.rpartition(":")
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex((host, int(port))) == 0


def down(state_dir: Path) -> bool:
    info = ClusterInfo.load(state_dir)
    if info is None:
        return False
    if info.prometheus_pid:
        with contextlib.suppress(ProcessLookupError):
            os.kill(info.prometheus_pid, 15)
    stop_head(info.temp_dir)
    (state_dir / STATE_FILE).unlink(missing_ok=True)
    return True


def resolve_address(address: str | None, state_dir: Path) -> str | None:
    """--address, then RAY_ADDRESS (set inside Ray jobs), then the recorded local cluster."""
    if address:
        return address
    if os.environ.get("RAY_ADDRESS"):
        return os.environ["RAY_ADDRESS"]
    info = ClusterInfo.load(state_dir)
    if info is not None and alive(info):
        apply_client_env(info)
        return info.gcs_address
    return None

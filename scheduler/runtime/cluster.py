"""The embedded default: a local Ray head, one Ray worker node per mock cloud, and the scheduler actor.

A state directory owns one cluster. ``up`` starts a Ray head whose every port is chosen free
(so it coexists with any other Ray cluster on the machine, including another ``mcsched up``
with a different state directory), binds it to 127.0.0.1 wherever Ray allows it, turns on
token authentication and records what it started in ``cluster.json``. ``down`` stops only
that cluster's processes (found by its Ray temp directory, never by name) and returns when
they are gone and their ports are free.

The cluster has the deployed shape (``nodes.py``): the head carries the scheduler actor, the
Jobs API and Serve's HTTP proxy; each cloud is a labelled worker node (``workers.py``)
advertising that cloud's GPU pools, so a cloud lost is a node lost, which Ray sees first.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from scheduler.errors import RuntimeUnavailable
from scheduler.runtime.nodes import Layout, NodeType, node_types
from scheduler.runtime.resources import cloud_resources
from scheduler.runtime.workers import WorkerNode, start_node, stop_node, wait_joined
from scheduler.specs import CloudCatalog, Contract

STATE_FILE = "cluster.json"
WORKER_PORTS = 200
#: Ray's documented dashboard port: taken when free, so ``RAY_ADDRESS=http://127.0.0.1:8265``
#: works exactly as in Ray's docs; otherwise any free port (printed by ``up`` and ``env``).
DASHBOARD_PORT = 8265
DEFAULT_METRICS_PORT = 9464
#: Ray Serve's HTTP proxy (served models' OpenAI API): this one when free, else a free one,
#: handed to every job of the cluster as ``MCSCHED_SERVE_PORT``.
SERVE_PORT = 8000
#: Seconds ``down`` waits for Ray's processes to exit on SIGTERM before it SIGKILLs them. The
#: ledger commits every change before acknowledging it (SQLite WAL), so a kill loses nothing.
STOP_GRACE_SECONDS = 3.0

#: Ray's single-node switch (see ``loopback_env``).
SINGLE_NODE_VAR = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"

#: The GCS's health check of every raylet (Ray's defaults: every 3 s, 10 s deadline, dead after
#: 5 misses, about 15-25 s). Here: every 2 s, a 3 s deadline, dead after 4 misses in a row, so a
#: killed node is seen dead about 8-11 s after it went away. Tighter would be quicker but on this
#: loaded 2-core host a raylet whose only I/O thread is starved for a few seconds must not be
#: declared dead (a false death evicts its work): this setting needs 8 s of total silence.
#: A node stopped gracefully (``fault --down``) unregisters and is dead at once.
HEALTH_CHECK = {
    "RAY_health_check_period_ms": "2000",
    "RAY_health_check_timeout_ms": "3000",
    "RAY_health_check_failure_threshold": "4",
    "RAY_health_check_initial_delay_ms": "2000",
}

Log = Callable[[str], None]


@dataclass(frozen=True)
class ClusterInfo:
    """What ``up`` started, as recorded in ``<state dir>/cluster.json``."""

    gcs_address: str
    dashboard_url: str
    metrics_url: str
    state_dir: str
    temp_dir: str
    prometheus_url: str | None = None
    prometheus_pid: int | None = None
    auth_token_path: str | None = None
    #: Every port the cluster listens on by name, so ``down`` can wait until they are free.
    ports: dict[str, int] = field(default_factory=dict)
    #: ``nodes.Layout``: how the clouds map to worker nodes.
    layout: str = Layout.SINGLE.value
    #: The worker nodes this cluster started (``workers.WorkerNode.to_dict``), with their handles.
    nodes: list[dict[str, Any]] = field(default_factory=list)

    def worker_nodes(self) -> list[WorkerNode]:
        return [WorkerNode.from_dict(n) for n in self.nodes]

    def client_env(self) -> dict[str, str]:
        """What Ray's CLI needs, as ``ray start --head`` itself tells its users: ``RAY_ADDRESS`` the
        GCS address (``ray status``, ``ray list``, ``ray.init``) and ``RAY_API_SERVER_ADDRESS`` the
        Jobs API (``ray job submit/list/stop/logs`` read it before ``RAY_ADDRESS``); the token; and
        Ray's single-node switch so that ``ray.init`` keeps 127.0.0.1 (see ``loopback_env``)."""
        env = {"RAY_ADDRESS": self.gcs_address, "RAY_API_SERVER_ADDRESS": self.dashboard_url}
        if self.auth_token_path:
            env.update(auth_env(self.auth_token_path))
        env[SINGLE_NODE_VAR] = "0"
        return env

    def export_lines(self) -> list[str]:
        """Shell lines for ``eval "$(mcsched env)"``; values quoted for any state-dir path."""
        return [f"export {k}={shlex.quote(v)}" for k, v in self.client_env().items()]

    @property
    def metrics_port(self) -> int:
        return int(self.metrics_url.rsplit(":", 1)[1].split("/", 1)[0])

    def save(self) -> None:
        path = Path(self.state_dir, STATE_FILE)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(path)  # atomic: a crash never leaves half a cluster.json

    @classmethod
    def load(cls, state_dir: Path) -> ClusterInfo | None:
        path = state_dir / STATE_FILE
        if not path.exists():
            return None
        try:
            raw = json.loads(path.read_text())
            if not isinstance(raw, dict):
                raise TypeError(f"a JSON {type(raw).__name__}, not an object")
            known = {f.name for f in dataclasses.fields(cls)}
            return cls(**{k: v for k, v in raw.items() if k in known})
        except (ValueError, TypeError) as exc:
            raise RuntimeUnavailable(f"{path}: unreadable ({exc}); remove it and run `mcsched up` again") from None


# ---------------------------------------------------------------------------------- ports


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_free(port: int) -> bool:
    """Could a server listen on 127.0.0.1:port now? (SO_REUSEADDR like servers: TIME_WAIT is no obstacle.)"""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def ephemeral_range() -> tuple[int, int]:
    """The kernel's range for port-0 binds (Linux; the IANA range elsewhere)."""
    try:
        lo, hi = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        return 49152, 65535
    return lo, hi


def free_port_block(size: int, lo: int = 20_000, hi: int | None = None, avoid: Iterable[int] = ()) -> int:
    """The first port of ``size`` consecutive free loopback ports (Ray's worker range), none in ``avoid``.

    Below the kernel's ephemeral range by default: no port-0 bind (Ray's own picks, any other
    program's) can then land inside the block after it was chosen.
    """
    import random

    if hi is None:
        below = ephemeral_range()[0]
        hi = below if below - lo > 4 * size else 60_000
    avoided = set(avoid)
    for _ in range(200):
        start = random.randrange(lo, hi - size)
        block = range(start, start + size)
        if not avoided.intersection(block) and all(port_free(p) for p in block):
            return start
    raise RuntimeUnavailable(f"no block of {size} free ports between {lo} and {hi}")


def wait_ports_free(ports: Iterable[int], timeout: float = 30.0) -> list[int]:
    """Wait until every port can be listened on again; returns those still busy at the deadline."""
    busy = sorted(set(ports))
    deadline = time.monotonic() + timeout
    while busy:
        busy = [p for p in busy if not port_free(p)]
        if not busy or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    return busy


# ---------------------------------------------------------------------------------- auth


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
    """Make this process a client of the recorded cluster (its token), before it imports ray.

    The addresses are left alone: mcsched passes the GCS address to ``ray.init`` itself.
    """
    os.environ.update({k: v for k, v in info.client_env().items() if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")})


# ---------------------------------------------------------------------------------- start


def loopback_env(autoscaler_metrics_port: int, dashboard_metrics_port: int) -> dict[str, str]:
    """Environment that keeps a single-node Ray head on 127.0.0.1.

    ``ray start --node-ip-address 127.0.0.1`` alone is not enough: Ray "resolves" a loopback
    node address to the host's routable one unless cluster mode is off, and with the host's
    address its GCS, raylet, agents and client server listen on that address or on all
    interfaces. ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` is Ray's own single-node switch (the
    default on macOS and Windows): the node address stays 127.0.0.1 and every component
    binds to it. A client's ``ray.init`` resolves addresses the same way, so every process
    joining the cluster needs it too (``ClusterInfo.client_env``). The autoscaler's and dashboard's metrics ports are fixed defaults (44217,
    44227) settable only through these variables; free ones avoid clashing with another
    cluster on the machine.
    """
    return {
        SINGLE_NODE_VAR: "0",
        # The raylet waits this long for its agents to report their ports (30 s by default),
        # which a loaded machine can exceed while the agents import.
        "RAY_agent_register_timeout_ms": "120000",
        "AUTOSCALER_METRIC_PORT": str(autoscaler_metrics_port),
        "DASHBOARD_METRIC_PORT": str(dashboard_metrics_port),
    }


#: Worker nodes started at once. Each is ~5 processes, three of them Python importing Ray; all
#: six of the default catalog at once on a loaded 2-core host starved one past the fixed 30 s
#: ``ray start`` gives a raylet to register. Waves of this many join reliably.
NODE_WAVE = 3

#: ``ray start`` gives its processes a fixed 30 s to come up; on a saturated machine that can
#: fail and succeed on the next try.
START_ATTEMPTS = 3


def choose_ports(reserved: Iterable[int] = ()) -> tuple[dict[str, int], int]:
    """The ports Ray cannot choose itself without clashing with a second cluster on the machine
    (its fixed defaults: 8265, 10001, 52365, 44217, 44227, the workers' 10002-19999), free
    and distinct, plus the first of the workers' range. The GCS, node manager, object
    manager, metrics export and agents' ports are left to Ray (``RAY_CHOSEN``) and read back.
    """
    taken = set(reserved)
    worker_lo = free_port_block(WORKER_PORTS, avoid=taken | {DASHBOARD_PORT, SERVE_PORT})
    taken.update(range(worker_lo, worker_lo + WORKER_PORTS))

    def pick() -> int:
        port = free_port()
        while port in taken:
            port = free_port()
        taken.add(port)
        return port

    def preferred(port: int) -> int:
        chosen = port if port not in taken and port_free(port) else pick()
        taken.add(chosen)
        return chosen

    dashboard = preferred(DASHBOARD_PORT)
    serve_env = os.environ.get("MCSCHED_SERVE_PORT", "")
    # Serve binds its port only when a model is deployed: a free port now may be another
    # running cluster's, so ports other clusters' processes were given are taken too.
    taken.update(claimed_serve_ports())
    serve = int(serve_env) if serve_env.isdigit() else preferred(SERVE_PORT)
    taken.add(serve)
    names = ["ray-client-server", "dashboard-agent-listen", "autoscaler-metrics", "dashboard-metrics"]
    return {"dashboard": dashboard, "serve": serve, **{name: pick() for name in names}}, worker_lo


#: Ports Ray picks itself (``--port 0`` for the GCS, its own choice when the other flags are
#: absent), by our name -> the GCS node table's field (``ray.nodes()``) they are read back from.
RAY_CHOSEN = {
    "node-manager": "NodeManagerPort",
    "object-manager": "ObjectManagerPort",
    "metrics-export": "MetricsExportPort",
    "dashboard-agent-grpc": "MetricsAgentPort",
    "runtime-env-agent": "RuntimeEnvAgentPort",
}


def gcs_address(temp_dir: Path) -> str:
    """The GCS address ``ray start --head --port 0`` chose, from the address file Ray writes
    into its temp dir (``ray_current_cluster``, what ``ray.init("auto")`` reads)."""
    try:
        address = (temp_dir / "ray_current_cluster").read_text().strip()
    except OSError as exc:
        raise RuntimeUnavailable(f"ray start wrote no address file in {temp_dir}: {exc.strerror}") from None
    if not address.rsplit(":", 1)[-1].isdigit():
        raise RuntimeUnavailable(f"{temp_dir / 'ray_current_cluster'}: not a Ray address: {address!r}")
    return address


def node_ports() -> dict[str, int]:
    """The ports Ray chose for this cluster's head, read from the GCS node table."""
    import ray

    from scheduler.runtime.workers import NODE_PREFIX

    # the head: the worker nodes (named mcsched-<node>) have ports of their own
    nodes = [n for n in ray.nodes() if n.get("Alive") and not str(n.get("NodeName", "")).startswith(NODE_PREFIX)]  # type: ignore[no-untyped-call]
    if not nodes:
        return {}
    return {name: int(nodes[0][field]) for name, field in RAY_CHOSEN.items() if nodes[0].get(field)}


def claimed_serve_ports() -> set[int]:
    """Serve ports handed to the Ray processes of this user's other running mcsched clusters."""
    import psutil

    claimed: set[int] = set()
    for proc in psutil.process_iter(["name", "uids"]):
        try:
            if proc.info["uids"] is None or proc.info["uids"].real != os.getuid() or proc.info["name"] not in ("gcs_server", "raylet"):
                continue
            port = proc.environ().get("MCSCHED_SERVE_PORT", "")
        except psutil.Error:
            continue
        if port.isdigit():
            claimed.add(int(port))
    return claimed


def _failure(output: str) -> str:
    """The informative line of a failed ``ray start`` (its last line is often a pointer to a log)."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "Error" in ln or "Exception" in ln or "failed" in ln]
    return (errors or lines or ["no output"])[-1]


def head_env(state_dir: Path, ports: dict[str, int], auth_token: Path | None) -> dict[str, str]:
    """The environment of ``ray start --head``, which every process of the cluster inherits.

    ``MCSCHED_HOME`` is this state dir: a job's driver keeps its checkpoints in its cluster's
    state dir. Without it, the jobs of ``mcsched up --state-dir /tmp/a`` checkpointed into
    ``~/.mcsched`` (shared by every cluster, so same-named jobs resumed each other's steps).
    """
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        **loopback_env(ports["autoscaler-metrics"], ports["dashboard-metrics"]),
    }
    env.pop("RAY_ADDRESS", None)
    env.pop("RAY_API_SERVER_ADDRESS", None)
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    env["MCSCHED_HOME"] = str(state_dir)
    env["MCSCHED_SERVE_PORT"] = str(ports["serve"])  # the jobs of this cluster serve models here
    for key, value in HEALTH_CHECK.items():
        env.setdefault(key, value)
    if auth_token is not None:
        env.update(auth_env(auth_token))
    return env


#: The longest Ray temp dir that leaves room for a node's sockets: a worker node's plasma socket
#: is ``TEMP/w-NODE/session_<date>_<time>_<usec>_<pid>/sockets/plasma_store``, about 67 bytes
#: plus the node's name past TEMP, and a Unix socket's path is at most 107 bytes.
RAY_TEMP_MAX = 24


def ray_temp_dir(state_dir: Path) -> Path:
    """The Ray temp dir of the cluster kept in ``state_dir``: ``STATE/ray`` while it is short
    enough for Ray's socket paths, else a short folder named for the state dir under /tmp (as
    Ray's own default, /tmp/ray). A function of the state dir alone, so ``up``, ``down`` and a
    later ``up`` find the same one."""
    inside = state_dir / "ray"
    if len(str(inside)) <= RAY_TEMP_MAX:
        return inside
    digest = hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:8]
    return Path("/tmp") / f"mcsched-{digest}"


def start_head(
    catalog: CloudCatalog,
    state_dir: Path,
    *,
    num_cpus: int = 2,
    object_store_mb: int = 128,
    auth_token: Path | None = None,
    reserved: Iterable[int] = (),
    log: Log = print,
    pools_on_head: bool = False,
) -> tuple[str, str, dict[str, int]]:
    """``ray start --head`` on loopback; returns (gcs, dashboard, ports).

    The head advertises the clouds' pools itself only when ``pools_on_head`` (``Layout.SINGLE``);
    otherwise the worker nodes do and the head carries the scheduler's resource alone.
    """
    temp_dir = ray_temp_dir(state_dir)
    temp_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    for attempt in range(1, START_ATTEMPTS + 1):
        ports, worker_lo = choose_ports(reserved)  # fresh each try: another program may have taken one
        env = head_env(state_dir, ports, auth_token)
        cmd = [
            ray_bin(), "start", "--head",
            "--node-ip-address", "127.0.0.1",
            "--port", "0",  # Ray picks the GCS port; read back from its address file
            "--dashboard-host", "127.0.0.1",
            "--dashboard-port", str(ports["dashboard"]),
            "--ray-client-server-port", str(ports["ray-client-server"]),
            "--dashboard-agent-listen-port", str(ports["dashboard-agent-listen"]),
            "--min-worker-port", str(worker_lo),
            "--max-worker-port", str(worker_lo + WORKER_PORTS - 1),
            "--temp-dir", str(temp_dir),
            "--num-cpus", str(num_cpus),
            "--object-store-memory", str(object_store_mb * 1024 * 1024),
            "--resources", json.dumps({**(cloud_resources(catalog) if pools_on_head else {}), "mcsched_scheduler": 1}),
            "--disable-usage-stats",
            "--include-dashboard", "true",
        ]  # fmt: skip
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if proc.returncode == 0:
            gcs = gcs_address(temp_dir)
            return gcs, f"http://127.0.0.1:{ports['dashboard']}", {**ports, "gcs": int(gcs.rsplit(":", 1)[1])}
        reason = _failure(proc.stderr + "\n" + proc.stdout)
        stop_head(str(temp_dir))  # a half-started head (GCS up, raylet dead) must not linger
        if attempt < START_ATTEMPTS:
            log(f"ray start failed ({reason}); retrying ({attempt + 1}/{START_ATTEMPTS}) ...")
    raise RuntimeUnavailable(f"ray start failed: {reason} (logs: {temp_dir})")


# ---------------------------------------------------------------------------------- stop


def _ray_package_dir() -> str | None:
    import importlib.util

    spec = importlib.util.find_spec("ray")
    locations = list(spec.submodule_search_locations or []) if spec else []
    return locations[0] if locations else None


def cluster_processes(temp_dir: str) -> list[Any]:
    """The processes of the Ray cluster whose temp dir is ``temp_dir`` (and their children), nothing else.

    A Ray process belongs to the cluster when its command line names the temp dir (GCS,
    raylet, dashboard, monitor) or it holds a file open under it (its log: the client
    server, the agents); its children (workers, job drivers, the dashboard's modules)
    belong too. Only Ray's own programs of this user qualify (never, say, a ``tail -f`` of a
    log), and never this process or its ancestors.
    """
    import psutil

    root = os.path.realpath(temp_dir).rstrip("/") + "/"
    ray_dir = _ray_package_dir()
    me = os.getpid()
    spared = {me} | {p.pid for p in psutil.Process(me).parents()}
    uid = os.getuid()

    def is_ray(cmdline: list[str], name: str) -> bool:
        text = " ".join(cmdline)
        return (
            name.startswith("ray::")
            or text.startswith("ray::")
            or bool(ray_dir and ray_dir in text)
            or "/site-packages/ray/" in text  # Ray of another environment (a second clone's .venv)
            or " -m ray." in f" {text}"
            or " -m scheduler.runtime.raystart " in f" {text} "  # a worker node's `ray start` (workers.py)
        )

    def belongs(proc: Any, cmdline: list[str]) -> bool:
        if any(root in f"{arg}/" or root.rstrip("/") in arg for arg in cmdline):
            return True
        with contextlib.suppress(psutil.Error):
            return any(f.path.startswith(root) for f in proc.open_files())
        return False

    roots = []
    for proc in psutil.process_iter(["cmdline", "name", "uids"]):
        try:
            if proc.pid in spared or (proc.info["uids"] and proc.info["uids"].real != uid):
                continue
            cmdline = proc.info["cmdline"] or []
            if is_ray(cmdline, proc.info["name"] or "") and belongs(proc, cmdline):
                roots.append(proc)
        except psutil.Error:
            continue
    found = {p.pid: p for p in roots}
    for p in roots:
        with contextlib.suppress(psutil.Error):
            for child in p.children(recursive=True):
                if child.pid not in spared:
                    found.setdefault(child.pid, child)
    return list(found.values())


def _terminate(procs: list[Any], grace: float) -> None:
    """SIGTERM, wait ``grace`` seconds, SIGKILL what is left, wait until all are gone."""
    import psutil

    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.terminate()
    alive = _wait_exited(procs, grace)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
    alive = _wait_exited(alive, 10.0)
    if alive:
        raise RuntimeUnavailable(f"could not stop processes {', '.join(str(p.pid) for p in alive)}")


def exited(proc: Any) -> bool:
    """Gone, or a zombie: it has exited and only waits for its parent (say, the program that
    started it in-process) to collect its status, which this process cannot do for it
    (``psutil.wait_procs`` would count a zombie as running until its timeout)."""
    import psutil

    try:
        return not proc.is_running() or bool(proc.status() == psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return True


def _wait_exited(procs: list[Any], timeout: float) -> list[Any]:
    """Wait up to ``timeout`` seconds for ``procs`` to exit; return those still running."""
    deadline = time.monotonic() + timeout
    while True:
        alive = [p for p in procs if not exited(p)]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.05)


def stop_head(temp_dir: str, grace: float = STOP_GRACE_SECONDS) -> int:
    """Stop only the cluster that owns ``temp_dir`` (``ray stop`` would stop every cluster of the user).

    Repeats until no process of the cluster is left: a raylet may start a worker while its
    siblings are being stopped.
    """
    total = 0
    for _ in range(5):
        procs = cluster_processes(temp_dir)
        if not procs:
            break
        _terminate(procs, grace)
        total += len(procs)
    return total


def stop_prometheus(info: ClusterInfo) -> bool:
    """Stop the Prometheus ``up --prometheus`` started, if that pid is still that Prometheus."""
    import psutil

    if not info.prometheus_pid:
        return False
    try:
        proc = psutil.Process(info.prometheus_pid)
        if not any(info.state_dir in arg for arg in proc.cmdline()):
            return False  # the pid was reused by another program
    except psutil.Error:
        return False
    _terminate([proc], 10.0)
    return True


# ---------------------------------------------------------------------------------- up / down


def connect(address: str, *, log_to_driver: bool = False) -> None:
    """Join the cluster as a client; only the job driver streams worker output.

    A loopback GCS is a single-node mcsched head: Ray's single-node switch must be set before
    ray is imported, or ``ray.init`` would "resolve" 127.0.0.1 to the host's address and wait forever.
    """
    host = address.removeprefix("ray://").rpartition(":")[0]
    if host in ("127.0.0.1", "localhost", "[::1]") and "ray" not in sys.modules:
        os.environ.setdefault(SINGLE_NODE_VAR, "0")
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(address=address, namespace="mcsched", logging_level=logging.WARNING, log_to_driver=log_to_driver)


def jobs_client(url: str) -> Any:
    """A Jobs API client for exactly ``url``.

    Ray lets ``RAY_API_SERVER_ADDRESS`` and ``RAY_ADDRESS`` override the address a client is
    given, so a shell exported for another cluster would silently redirect mcsched's own
    submissions; this process drops them (mcsched passes every address explicitly).
    """
    for var in ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS"):
        os.environ.pop(var, None)
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(url)


#: Submission ids of the readiness probes ``wait_jobs_api`` submits (``true``, then deleted).
PROBE_PREFIX = "mcsched-ready-"
#: How long Ray's job monitor (a 1 s loop) may take to see a finished probe's supervisor exit.
PROBE_SETTLE_SECONDS = 2.0


def _delete_probes(client: Any, settle: float = PROBE_SETTLE_SECONDS) -> None:
    """Delete the finished readiness probes so that `ray job list` shows only the user's jobs.

    Ray's job monitor notices a finished job's supervisor exit up to a loop later and, if the
    job's record is gone by then, writes it again as FAILED ("Entrypoint not found.",
    JOB_SUPERVISOR_ACTOR_DIED): deleting at once left exactly that in every fresh cluster's
    job list. So wait ``settle`` seconds first, and delete again what the monitor re-created.
    """
    for _ in range(2):
        time.sleep(settle)
        with contextlib.suppress(Exception):
            for job in client.list_jobs():
                sid = job.submission_id or ""
                if sid.startswith(PROBE_PREFIX) and job.status.is_terminal():
                    with contextlib.suppress(Exception):
                        client.delete_job(sid)


def wait_jobs_api(url: str, timeout: float = 90.0, ray_temp: Path | None = None) -> None:
    """Wait until the Jobs API really accepts a job (its agent starts after the dashboard).

    ``ray_temp``: the cluster's Ray temp dir. On a timeout the error quotes the informative
    line of the head's dashboard agent log from it, because a failed ``up`` stops the cluster
    and a test then removes its state dir: the message is all that is left to read."""
    from ray.job_submission import JobStatus

    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            client = jobs_client(url)
            sid = client.submit_job(entrypoint="true", submission_id=f"{PROBE_PREFIX}{time.time_ns()}")
            while time.monotonic() < deadline:
                if client.get_job_status(sid) in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
                    _delete_probes(client)
                    return
                time.sleep(0.2)
        except Exception as exc:  # connection refused / "No available agent" while starting
            last = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            time.sleep(0.5)
    raise RuntimeUnavailable(f"Ray Jobs API at {url} not ready within {timeout:.0f}s: {last}{_agent_log(ray_temp)}")


def _agent_log(ray_temp: Path | None) -> str:
    """`` (dashboard agent: LINE; log: PATH)`` for the newest session's agent log, or ""."""
    logs = sorted(ray_temp.glob("session_*/logs/dashboard_agent*.log"), key=lambda p: p.stat().st_mtime) if ray_temp else []
    if not logs:
        return ""
    try:
        line = _failure(logs[-1].read_text(errors="replace")[-20_000:])
    except OSError:
        return ""
    return f" (dashboard agent: {line}; log: {logs[-1]})"


def no_cluster(state_dir: Path, hint: str = "run `mcsched up` first or pass --address") -> str:
    """Why there is no cluster to talk to: none recorded in the state dir, or a recorded one that died."""
    info = ClusterInfo.load(state_dir)
    if info is not None and not alive(info):
        return (
            f"the cluster recorded in {state_dir} is not running (nothing answers at its GCS {info.gcs_address}): "
            f"`mcsched down --state-dir {state_dir}` cleans it up, then `mcsched up` starts a new one"
        )
    return f"no Ray cluster found in {state_dir}: {hint}"


def alive(info: ClusterInfo) -> bool:
    host, _, port = info.gcs_address.rpartition(":")
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex((host, int(port))) == 0


@dataclass(frozen=True)
class UpResult:
    info: ClusterInfo
    started: bool  # False: the state dir's cluster was already running


def up(
    catalog: CloudCatalog,
    contract: Contract,
    state_dir: Path,
    *,
    metrics_port: int | None = None,
    foreign_groups: str = "report",
    witnesses: list[str] | None = None,
    log: Log = print,
    layout: Layout = Layout.CLOUD,
) -> UpResult:
    """Start the local head, a worker node per cloud (``layout``) and the scheduler actor; a no-op
    while this state dir's cluster runs.

    The scheduler actor recovers from the state dir's ledger, so ``down`` then ``up`` carries
    on with the same jobs. A failed start stops what it started and removes ``cluster.json``.
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    existing = ClusterInfo.load(state_dir)
    if existing is not None:
        if alive(existing):
            return UpResult(existing, started=False)
        log(f"{state_dir}: its cluster is gone (stale state); cleaning up first")
        down(state_dir)
    elif cluster_processes(str(ray_temp_dir(state_dir))):
        log(f"{state_dir}: stopping leftover Ray processes of an earlier run")
        stop_head(str(ray_temp_dir(state_dir)))
    if metrics_port is None:  # the documented default when free, like the dashboard's 8265
        metrics_port = DEFAULT_METRICS_PORT if port_free(DEFAULT_METRICS_PORT) else free_port()
        if metrics_port != DEFAULT_METRICS_PORT:
            log(f"metrics port {DEFAULT_METRICS_PORT} is in use; serving metrics on {metrics_port} instead")
    elif not port_free(metrics_port):
        raise RuntimeUnavailable(f"metrics port 127.0.0.1:{metrics_port} is in use (pass another --metrics-port)")
    token = make_token(state_dir) if token_auth_supported() else None
    if token is not None:  # before anything imports ray in this process
        os.environ.update(auth_env(token))
    os.environ[SINGLE_NODE_VAR] = "0"  # this process joins the loopback-only head below
    log("starting a local Ray head (loopback only, token auth " + ("on" if token else "unsupported by this Ray") + ") ...")
    try:
        gcs, dash, ports = start_head(
            catalog, state_dir, auth_token=token, reserved=[metrics_port], log=log, pools_on_head=layout is Layout.SINGLE
        )
        info = ClusterInfo(
            gcs, dash, f"http://127.0.0.1:{metrics_port}/metrics", str(state_dir), str(ray_temp_dir(state_dir)),
            auth_token_path=str(token) if token else None,
            ports={**ports, "metrics": metrics_port}, layout=layout.value,
        )  # fmt: skip
        info.save()
        # Clouds the catalog marks down start with no nodes (`mcsched fault CLOUD --up` starts them).
        types = node_types(catalog, layout, clouds=[b.name for b in catalog.spec.backends if b.up])
        if types:
            log(f"starting {len(types)} worker node(s): {', '.join(t.name for t in types)} ...")
        taken = {*ports.values(), metrics_port}

        def launch(t: NodeType) -> WorkerNode:
            return start_node(t, gcs, ray_temp_dir(state_dir), head_env(state_dir, ports, token), state_dir / "nodes", taken)

        # The first wave starts now, beside the Jobs API's start; the rest after it joined (below).
        started = [launch(t) for t in types[:NODE_WAVE]]
        info = dataclasses.replace(info, nodes=[n.to_dict() for n in started])
        info.save()  # the handles first: a failed join still leaves them for `down`
        wait_jobs_api(dash, ray_temp=ray_temp_dir(state_dir))
        from scheduler.runtime.actor import start_actor  # imports ray: only now that auth is in the env

        ledger = state_dir / "ledger.db"
        log(("recovering" if ledger.exists() else "starting") + " the scheduler actor (detached, restartable) ...")
        connect(gcs)
        info = dataclasses.replace(info, ports={**info.ports, **node_ports()})  # what Ray chose, for `down` to wait on
        joined = wait_joined(started, restart=lambda n: launch(n.node_type()))
        for i in range(NODE_WAVE, len(types), NODE_WAVE):
            wave = [launch(t) for t in types[i : i + NODE_WAVE]]
            info = dataclasses.replace(info, nodes=[n.to_dict() for n in joined + wave])
            info.save()
            joined += wait_joined(wave, restart=lambda n: launch(n.node_type()))
        info = dataclasses.replace(info, nodes=[n.to_dict() for n in joined])
        info.save()
        start_actor(
            catalog.model_dump(mode="json", by_alias=True),
            contract.model_dump(mode="json", by_alias=True),
            str(ledger),
            metrics_port,
            foreign_groups=foreign_groups,
            witnesses=witnesses,
        )
    except BaseException:
        log("start-up failed; stopping what it started")
        _disconnect()
        stop_head(str(ray_temp_dir(state_dir)))
        (state_dir / STATE_FILE).unlink(missing_ok=True)
        raise
    return UpResult(info, started=True)


def start_cloud_nodes(info: ClusterInfo, catalog: CloudCatalog, cloud: str) -> ClusterInfo:
    """``fault CLOUD --up``: start the cloud's worker nodes that are not running; the new record.

    The recorded nodes of the cloud come back as they were (same name, labels, resources); a
    cloud that never had one (down in the catalog at ``up``) gets the catalog's node types. The
    caller has joined the cluster (the wait reads the GCS node table).
    """
    temp = info.temp_dir
    token = Path(info.auth_token_path) if info.auth_token_path else None
    recorded = [n for n in info.worker_nodes() if n.cloud == cloud]
    others = [n for n in info.worker_nodes() if n.cloud != cloud]
    types = [n.node_type() for n in recorded] or node_types(catalog, Layout(info.layout), clouds=[cloud])
    running = [n for n in recorded if owned(n, temp)]
    names = {n.name for n in running}
    env = head_env(Path(info.state_dir), info.ports, token)
    taken = set(info.ports.values())
    fresh = [start_node(t, info.gcs_address, Path(temp), env, Path(info.state_dir) / "nodes", taken) for t in types if t.name not in names]
    new = dataclasses.replace(info, nodes=[n.to_dict() for n in others + running + fresh])
    new.save()  # the handles first: a failed join still leaves them for `down`
    def again(n: WorkerNode) -> WorkerNode:
        return start_node(n.node_type(), info.gcs_address, Path(temp), env, Path(info.state_dir) / "nodes", taken)

    new = dataclasses.replace(info, nodes=[n.to_dict() for n in others + running + wait_joined(fresh, restart=again)])
    new.save()
    return new


def stop_cloud_nodes(info: ClusterInfo, cloud: str) -> int:
    """``fault CLOUD --down``: stop the cloud's worker nodes, its bought capacity blocks too (a real outage); processes stopped."""
    from scheduler.runtime.provisioner import block_nodes

    return sum(stop_node(n, info.temp_dir) for n in [*info.worker_nodes(), *block_nodes(info.state_dir)] if n.cloud == cloud)


def owned(node: WorkerNode, temp_dir: str) -> bool:
    from scheduler.runtime.workers import owned_process

    return owned_process(node, temp_dir) is not None


def _disconnect() -> None:
    """Leave the cluster if this process joined it (so stopping it does not hang this process)."""
    if "ray" in sys.modules:
        import ray

        with contextlib.suppress(Exception):
            if ray.is_initialized():
                ray.shutdown()


@dataclass(frozen=True)
class DownResult:
    was_recorded: bool  # a cluster.json existed
    was_running: bool  # its GCS still answered
    stopped: int  # processes stopped (Ray's and Prometheus)

    def line(self, state_dir: Path) -> str:
        if not self.was_recorded:
            return (
                f"stopped {self.stopped} leftover Ray process(es) of {state_dir}"
                if self.stopped
                else f"nothing to stop: no cluster recorded in {state_dir}"
            )
        if not self.was_running:
            return f"the cluster recorded in {state_dir} was not running (stale state); cleaned up"
        return f"stopped the cluster of {state_dir} ({self.stopped} processes); its ports are free"


def down(state_dir: Path) -> DownResult:
    """Stop this state dir's cluster and local Prometheus; return once they are gone and their ports free."""
    info = ClusterInfo.load(state_dir)
    temp_dir = info.temp_dir if info else str(ray_temp_dir(state_dir))
    running = info is not None and alive(info)
    _disconnect()
    try:
        stopped = int(stop_prometheus(info)) if info else 0
    finally:  # a Prometheus that would not stop must not keep the Ray cluster running
        stopped_ray = stop_head(temp_dir)
    stopped += stopped_ray
    if info is not None:
        # Only ports this call freed are waited for: a stale state dir's ports may belong to others by now.
        busy = wait_ports_free([*info.ports.values(), info.metrics_port]) if stopped else []
        if busy:
            raise RuntimeUnavailable(
                f"the cluster of {state_dir} stopped but port(s) {', '.join(map(str, busy))} are still in use by another program"
            )
        (state_dir / STATE_FILE).unlink(missing_ok=True)
    if Path(temp_dir) != state_dir / "ray" and Path(temp_dir) == ray_temp_dir(state_dir):
        # the short folder under /tmp stood in for STATE/ray (``ray_temp_dir``): it is this
        # cluster's alone and goes with it, as STATE/ray would go with the state dir
        shutil.rmtree(temp_dir, ignore_errors=True)
    return DownResult(info is not None, running, stopped)


def resolve_address(address: str | None, state_dir: Path) -> str | None:
    """The GCS address to join: --address, then a GCS ``RAY_ADDRESS``, then the state dir's running cluster.

    ``RAY_ADDRESS`` is a GCS address inside Ray jobs and after ``eval "$(mcsched env)"``; a user
    may still have set it to a Jobs API URL (as Ray's Jobs docs show): such a URL is not
    joinable, so mcsched uses its state dir's cluster then. The state dir's token is applied whenever its cluster
    is the one joined, so no exports are needed.
    """
    info = ClusterInfo.load(state_dir)
    local = info if info is not None and alive(info) else None
    if address and address.startswith(("http://", "https://")):
        if local is None or address.rstrip("/") != local.dashboard_url:
            raise RuntimeUnavailable(
                f"--address {address} is a Jobs API (dashboard) URL; pass the cluster's GCS address (HOST:PORT)"
            )
        address = local.gcs_address
    env_address = os.environ.get("RAY_ADDRESS", "")
    candidate = address or (env_address if env_address and not env_address.startswith(("http://", "https://")) else None)
    if candidate is None and local is not None:
        candidate = local.gcs_address
    if candidate is not None and local is not None and candidate.removeprefix("ray://") == local.gcs_address:
        apply_client_env(local)
    return candidate

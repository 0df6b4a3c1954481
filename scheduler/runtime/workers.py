"""The local cluster's worker nodes: one ``ray start --address ... --block`` process per node type.

``mcsched up`` starts them and records each one's handle (the pid of its ``ray start --block``
process, which is the parent of the node's raylet and agents) in ``cluster.json``; ``mcsched
fault CLOUD --down`` stops exactly those processes and ``--up`` starts them again. Nothing
is ever found by name: a recorded pid is used only while its command line still names this
cluster's temp dir and the node's name (a reused pid is left alone).

``--block`` makes the node die as a whole: if its raylet is killed (``kill -9``), the
``ray start`` process kills the node's other processes and exits, as a lost VM would. The
GCS then sees the node dead after its health check (settings in ``cluster.HEALTH_CHECK``).
A stop by ``fault --down`` is graceful instead: a SIGTERM'd raylet unregisters from the GCS,
which marks the node dead at once.

Every node stays on 127.0.0.1 with its own free ports (agent port and worker-port block), so
several nodes - and other Ray clusters of the user - share this host without clashes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from scheduler.errors import RuntimeUnavailable
from scheduler.runtime.nodes import NodeType

SINGLE_NODE_VAR = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # cluster.SINGLE_NODE_VAR (cluster imports this module)

NODE_PREFIX = "mcsched-"
#: Ports for a worker node's Ray workers (a node runs a handful of actors here).
NODE_WORKER_PORTS = 40
NODE_CPUS = 1
NODE_OBJECT_STORE_MB = 80  # Ray's floor is 75 MB; nothing large moves through a mock cloud's store
JOIN_TIMEOUT = 120.0


@dataclass(frozen=True)
class WorkerNode:
    """One worker node this cluster started, as recorded in ``cluster.json``."""

    name: str
    cloud: str
    labels: dict[str, str]
    resources: dict[str, float]
    pid: int
    node_id: str = ""
    log: str = ""  # its `ray start`'s output

    @property
    def node_name(self) -> str:
        """Ray's ``--node-name`` (``NodeName`` in the GCS node table)."""
        return NODE_PREFIX + self.name

    def node_type(self) -> NodeType:
        return NodeType(self.name, self.cloud, dict(self.labels), dict(self.resources))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> WorkerNode:
        return cls(
            str(raw["name"]), str(raw["cloud"]), dict(raw["labels"]), {k: float(v) for k, v in raw["resources"].items()},
            int(raw["pid"]), str(raw.get("node_id", "")), str(raw.get("log", "")),
        )  # fmt: skip


#: The ports a worker node is given explicitly (``ray start`` flag -> name). Left to Ray, nodes
#: started together on one host raced for the same ports, and a raylet waited for its agents'
#: port files and gave up on a loaded machine; given, every port is distinct and known at once.
NODE_PORT_FLAGS = (
    "--node-manager-port",
    "--object-manager-port",
    "--metrics-export-port",
    "--dashboard-agent-grpc-port",
    "--dashboard-agent-listen-port",
    "--runtime-env-agent-port",
)


def start_node(nt: NodeType, gcs: str, temp_dir: Path, env: Mapping[str, str], log_dir: Path, taken: set[int]) -> WorkerNode:
    """Start one worker node (``ray start --block`` in its own session, so it outlives ``mcsched up``).

    Its Ray temp dir is its own, under the cluster's (``temp_dir/w-NAME``): nodes sharing one
    picked the same numbered log and socket names when started together (Ray numbers them by
    looking at what exists), and a raylet then failed to bind its socket.

    ``taken``: ports already handed out (this call adds the node's own), so nodes started
    together never pick the same port.
    """
    from scheduler.runtime.cluster import free_port, free_port_block

    worker_lo = free_port_block(NODE_WORKER_PORTS, avoid=taken)
    taken.update(range(worker_lo, worker_lo + NODE_WORKER_PORTS))
    ports: list[str] = []
    for flag in NODE_PORT_FLAGS:
        port = free_port()
        while port in taken:
            port = free_port()
        taken.add(port)
        ports += [flag, str(port)]
    cmd = [
        sys.executable, "-m", "scheduler.runtime.raystart", "start", "--block",
        "--address", gcs,
        "--node-ip-address", "127.0.0.1",
        "--node-name", NODE_PREFIX + nt.name,
        "--temp-dir", str(temp_dir / f"w-{nt.name}"),
        "--num-cpus", str(NODE_CPUS),
        "--object-store-memory", str(NODE_OBJECT_STORE_MB * 1024 * 1024),
        "--resources", json.dumps(dict(nt.resources)),
        "--labels", nt.labels_arg(),
        *ports,
        "--min-worker-port", str(worker_lo),
        "--max-worker-port", str(worker_lo + NODE_WORKER_PORTS - 1),
        "--disable-usage-stats",
    ]  # fmt: skip
    log_dir.mkdir(parents=True, exist_ok=True)
    # `ray start` through raystart.py: Ray's single-node switch stays on (loopback only) and the node may join.
    node_env = {**env, SINGLE_NODE_VAR: "0"}
    with open(log_dir / f"{nt.name}.log", "ab") as out:
        proc = subprocess.Popen(cmd, env=node_env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    return WorkerNode(nt.name, nt.cloud, dict(nt.labels), dict(nt.resources), proc.pid, log=str(log_dir / f"{nt.name}.log"))


#: A node's `ray start` gives its raylet a fixed 30 s to register with the GCS; on a loaded
#: machine that can fail and succeed on the next try.
START_ATTEMPTS = 3


def wait_joined(
    nodes: list[WorkerNode], timeout: float = JOIN_TIMEOUT, restart: Callable[[WorkerNode], WorkerNode] | None = None
) -> list[WorkerNode]:
    """Wait until every node is alive in the GCS node table; the nodes with their Ray node ids.

    A node whose ``ray start`` process exited before joining is started again through
    ``restart`` (up to ``START_ATTEMPTS`` in all), or fails the wait at once (its log says why).
    """
    import ray

    deadline = time.monotonic() + timeout
    current = {n.node_name: n for n in nodes}
    attempts = dict.fromkeys(current, 1)
    while True:
        alive = {e["NodeName"]: e["NodeID"] for e in ray.nodes() if e.get("Alive") and e.get("NodeName") in current}  # type: ignore[no-untyped-call]
        if len(alive) == len(current):
            return [dataclasses.replace(n, node_id=alive[key]) for key, n in current.items()]
        for key, n in list(current.items()):
            if key in alive or _running(n.pid):
                continue
            if restart is None or attempts[key] >= START_ATTEMPTS:
                raise RuntimeUnavailable(f"worker node {n.name} exited before joining the cluster: {_last_error(n)}")
            attempts[key] += 1
            current[key] = restart(n)
        if time.monotonic() > deadline:
            missing = sorted(set(current) - set(alive))
            raise RuntimeUnavailable(f"worker node(s) {', '.join(missing)} did not join within {timeout:.0f}s")
        time.sleep(0.25)


def _last_error(node: WorkerNode) -> str:
    """The informative line of a node's failed ``ray start`` (its log is the caller's ``nodes/NAME.log``)."""
    from scheduler.runtime.cluster import _failure

    try:
        return f"{_failure(Path(node.log).read_text(errors='replace')[-20_000:])} (log: {node.log})"
    except OSError:
        return f"no log at {node.log!r}"


def _running(pid: int) -> bool:
    import psutil

    from scheduler.runtime.cluster import exited

    try:
        return not exited(psutil.Process(pid))
    except psutil.Error:
        return False


def owned_process(node: WorkerNode, temp_dir: str) -> Any:
    """The node's ``ray start --block`` process if the recorded pid is still that process, else None."""
    import psutil

    try:
        proc = psutil.Process(node.pid)
        cmdline = proc.cmdline()
    except psutil.Error:
        return None
    text = " ".join(cmdline)
    if node.node_name not in cmdline or temp_dir not in text:
        return None  # the pid was reused by another program
    return proc


def node_processes(node: WorkerNode, temp_dir: str) -> list[Any]:
    """The node's processes: its ``ray start`` process and everything under it (raylet, agents, workers)."""
    import psutil

    proc = owned_process(node, temp_dir)
    if proc is None:
        return []
    with contextlib.suppress(psutil.Error):
        return [proc, *proc.children(recursive=True)]
    return [proc]


def raylet_of(node: WorkerNode, temp_dir: str) -> Any:
    """The node's raylet process (a child of its ``ray start``), or None."""
    import psutil

    for p in node_processes(node, temp_dir)[1:]:
        with contextlib.suppress(psutil.Error):
            if p.name() == "raylet":
                return p
    return None


def kill_node(node: WorkerNode, temp_dir: str) -> bool:
    """A node lost as a VM is lost: ``kill -9`` of its raylet (its ``ray start`` ends the rest)."""
    raylet = raylet_of(node, temp_dir)
    if raylet is None:
        return False
    os.kill(raylet.pid, signal.SIGKILL)
    return True


def stop_node(node: WorkerNode, temp_dir: str, grace: float = 5.0) -> int:
    """Stop the node gracefully: SIGTERM its raylet first (it unregisters, so the GCS marks the
    node dead at once), then the rest; SIGKILL what outlives ``grace``. Returns the processes stopped."""
    import psutil

    from scheduler.runtime.cluster import _terminate

    procs = node_processes(node, temp_dir)
    if not procs:
        return 0
    raylet = next((p for p in procs if _name(p) == "raylet"), None)
    if raylet is not None:
        with contextlib.suppress(psutil.Error):
            raylet.terminate()
            raylet.wait(grace)
    _terminate(procs, grace)
    return len(procs)


def _name(proc: Any) -> str:
    import psutil

    try:
        return str(proc.name())
    except psutil.Error:
        return ""

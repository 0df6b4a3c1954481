"""The work a placed job runs, inside its placement group on the chosen cloud's resources.

Simulated workloads stand in for real training/inference but are honest about where they
ran: each reports the Ray node and the resources Ray actually assigned to it, so a test can
prove the placement was honoured by Ray and not only recorded. The work runs in a Ray actor
(``Workload``) so that its driver knows when it really started (``where``) and can stop it.
An eviction is graceful, as Kubernetes evicts a pod: the driver calls ``request_stop`` (a
simulated workload checkpoints at the step it is on and returns; an entrypoint gets
SIGTERM), waits up to the job's grace period, then kills the actor (``ray.kill``). A
simulated workload also checkpoints every ``checkpointEvery`` steps and resumes from its
last checkpoint when placed again.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray

from scheduler.runtime.resources import is_pool_resource
from scheduler.runtime.steps import simulate_steps


def _where() -> dict[str, Any]:
    ctx = ray.get_runtime_context()
    return {"node_id": ctx.get_node_id(), "assigned": ctx.get_assigned_resources()}  # type: ignore[no-untyped-call]


def _die_with_parent() -> None:
    """The entrypoint's shell dies with the workload's worker (killed on eviction), never orphaned."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: best effort
        pass


def _entrypoint(spec: dict[str, Any], placement: dict[str, str], started: Callable[[subprocess.Popen[bytes]], None]) -> dict[str, Any]:
    env = {**os.environ, "MCSCHED_CLOUD": placement["cloud"], "MCSCHED_REGION": placement["region"], "MCSCHED_JOB": spec["name"]}
    proc = subprocess.Popen(spec["entrypoint"], shell=True, env=env, stdout=sys.stdout, stderr=sys.stderr, preexec_fn=_die_with_parent)
    started(proc)
    return {"exit_code": proc.wait()}


@ray.remote(num_cpus=0)
def prestart() -> None:
    """Nothing: sent by a driver as soon as it joins the cluster, so that Ray starts this Ray
    job's worker processes while the driver asks for its placement and reserves its gang. The
    job's ``Workload`` actor then starts in an idle worker (~0.1 s) instead of a new process
    (~1 s, most of the fixed cost of a short job; benchmarks/ray_e2e.py).

    Ray runs it on the driver's own node (a task that needs no resource stays local), so it
    helps only where that node carries the pools (``pools_here``)."""


def pools_here() -> bool:
    """Whether this process's Ray node advertises an mcsched pool: the head of the ``single``
    layout does; in the ``cloud`` and ``region`` layouts only the clouds' worker nodes do, and
    a worker prestarted on the head would never host the job's work (it would only take CPU
    from the worker Ray starts for it on the cloud's node)."""
    here = ray.get_runtime_context().get_node_id()
    return any(n["NodeID"] == here and any(is_pool_resource(k) for k in n["Resources"]) for n in ray.nodes())  # type: ignore[no-untyped-call]


# ``request_stop`` runs in its own concurrency group, beside ``run``; ``where`` and ``run`` stay
# in the default group, one at a time and in the order the driver called them.
@ray.remote(num_cpus=0, max_restarts=0, concurrency_groups={"control": 1})  # type: ignore[call-overload]
class Workload:
    """One placement's work. ``where`` answers as soon as Ray has started the worker."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._proc: subprocess.Popen[bytes] | None = None

    def where(self) -> dict[str, Any]:
        return _where()

    def run(self, spec: dict[str, Any], placement: dict[str, str], checkpoint_dir: str) -> dict[str, Any]:
        """Run the job's entrypoint or simulated workload; report where Ray ran it."""
        if spec.get("entrypoint"):
            result = _entrypoint(spec, placement, self._started)
        else:
            result = simulate_steps(spec, placement, Path(checkpoint_dir), self._stop)
        return {**result, **_where()}

    def _started(self, proc: subprocess.Popen[bytes]) -> None:
        self._proc = proc
        if self._stop.is_set():
            proc.terminate()

    @ray.method(concurrency_group="control")
    def request_stop(self) -> None:
        """Eviction: checkpoint and exit (an entrypoint gets SIGTERM, as a pod does)."""
        self._stop.set()
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()

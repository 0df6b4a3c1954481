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

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray


def _where() -> dict[str, Any]:
    ctx = ray.get_runtime_context()
    return {"node_id": ctx.get_node_id(), "assigned": ctx.get_assigned_resources()}  # type: ignore[no-untyped-call]


def _save(ckpt: Path, step: int, placement: dict[str, str]) -> None:
    tmp = ckpt.with_suffix(".tmp")
    tmp.write_text(json.dumps({"step": step, "cloud": placement["cloud"], "region": placement["region"]}))
    tmp.replace(ckpt)  # atomic: a kill mid-write leaves the previous checkpoint


def _simulate(
    spec: dict[str, Any], placement: dict[str, str], checkpoint_dir: Path, stop: threading.Event | None = None
) -> dict[str, Any]:
    w = spec.get("workload") or {}
    steps, step_s, every = int(w.get("steps", 10)), float(w.get("stepSeconds", 0.1)), int(w.get("checkpointEvery", 5))
    fail_at = w.get("failAtStep")
    cls, name = spec["cls"], spec["name"]
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    ckpt = checkpoint_dir / "latest.json"
    start = json.loads(ckpt.read_text())["step"] if ckpt.exists() else 0
    if start:
        print(f"[{name}] resuming from checkpoint at step {start}", flush=True)
    where = f"{placement['cloud']}/{placement['region']}"
    for step in range(start + 1, steps + 1):
        if stop is not None and stop.wait(step_s):  # told to stop: checkpoint what is done, then exit
            if step - 1 > start:
                _save(ckpt, step - 1, placement)
            print(f"[{name}] stop requested: checkpoint saved at step {step - 1}", flush=True)
            return {"steps": step - 1, "resumed_from": start, "exit_code": 0, "stopped": True}
        if stop is None:
            time.sleep(step_s)
        if fail_at is not None and step == int(fail_at):
            raise RuntimeError(f"{name}: injected failure at step {step}")
        if cls == "training":
            print(f"[{name}] step {step}/{steps} loss={2.5 / (1 + 0.1 * step):.3f} on {where}", flush=True)
        elif cls == "inference":
            print(f"[{name}] batch {step}/{steps}: 512 prompts done on {where}", flush=True)
        else:
            print(f"[{name}] serving tick {step}/{steps}: {40 + step} req/s p50=180ms on {where}", flush=True)
        if step % every == 0 or step == steps:
            _save(ckpt, step, placement)
            print(f"[{name}] checkpoint saved at step {step}", flush=True)
    ckpt.unlink(missing_ok=True)  # finished: the next run of this name starts fresh
    return {"steps": steps, "resumed_from": start, "exit_code": 0}


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
            result = _simulate(spec, placement, Path(checkpoint_dir), self._stop)
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

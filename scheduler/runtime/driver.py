"""``python -m scheduler run JOB.yaml``: the Ray job driver for one mcsched job.

1. ask the scheduler actor for a placement and print the decision line;
2. wait while queued (printing why) - the job waits in mcsched's queue, never in Ray;
3. reserve the gang as a placement group on the chosen pool's Ray resource;
4. run the workload inside it, printing progress;
5. release the capacity on success, failure, ``ray job stop`` or Ctrl-C.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from scheduler.decision import Decision
from scheduler.errors import AdmissionError, MCSchedError, RuntimeUnavailable
from scheduler.runtime.actor import get_actor
from scheduler.runtime.resources import bundles, pool_resource
from scheduler.runtime.workload import run_workload

PG_READY_SECONDS = 60.0


class Stopped(Exception):
    """SIGTERM from ``ray job stop``."""


def _on_sigterm(_signum: int, _frame: Any) -> None:
    raise Stopped()


def run_job(doc: dict[str, Any], source: str, checkpoint_root: Path, say: Callable[[str], None] = print) -> int:
    """Drive one job to completion; returns the process exit code."""
    if doc["spec"].get("serve") is not None:  # a served model: replicas placed and scaled by the serve controller
        from scheduler.runtime.serve.controller import run_service

        return run_service(doc, say)
    actor = get_actor()
    name = doc["metadata"]["name"]
    resp = ray.get(actor.submit.remote([doc]))
    if not resp["ok"]:
        raise AdmissionError(f"{source}: {resp['error']}")
    d = Decision.from_dict(resp["decisions"][0])
    say(d.line())
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        last = d.reason
        while d.outcome == "queued":
            d = Decision.from_dict(ray.get(actor.wait_placed.remote(name, 10.0)))
            if d.outcome == "queued" and d.reason != last:
                say(f"still queued: {d.reason}: {d.detail}")
                last = d.reason
        if d.outcome != "placed":
            say(f"{name} ended without running ({d.outcome})")
            return 1
        if last is not None and last != d.reason:
            say(d.line())
        return _run_placed(actor, d, doc, checkpoint_root / name, say)
    except (Stopped, KeyboardInterrupt):
        say(f"{name}: stopped; releasing its capacity")
        ray.get(actor.release.remote(name, "stopped"))
        return 130


def _run_placed(actor: Any, d: Any, doc: dict[str, Any], checkpoint_dir: Path, say: Callable[[str], None]) -> int:
    name = d.job
    resource = pool_resource(d.cloud, d.region, d.gpu_type)
    pg = placement_group(bundles(resource, d.gpus), strategy="PACK", name=f"mcsched-{name}")
    try:
        try:
            ray.get(pg.ready(), timeout=PG_READY_SECONDS)
        except ray.exceptions.GetTimeoutError:
            ray.get(actor.release.remote(name, "failed"))
            raise RuntimeUnavailable(f"{name}: Ray could not reserve {d.gpus}x {resource} within {PG_READY_SECONDS:.0f}s") from None
        ray.get(actor.bind.remote(name, pg.id.hex()))
        spec = {**doc["spec"], "name": name, "cls": doc["spec"]["class"]}
        placement = {"cloud": d.cloud, "region": d.region}
        started = time.monotonic()
        try:
            result = ray.get(
                run_workload.options(
                    scheduling_strategy=PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=0),
                    resources={resource: bundles(resource, d.gpus)[0][resource]},
                ).remote(spec, placement, str(checkpoint_dir))
            )
        except ray.exceptions.RayTaskError as exc:
            say(f"{name} failed on {d.cloud}/{d.region}: {str(exc.cause) if exc.cause else exc}".splitlines()[0])
            ray.get(actor.release.remote(name, "failed"))
            return 1
        assigned = ", ".join(f"{k}={v:g}" for k, v in sorted(result["assigned"].items()))
        say(f"{name} ran on {d.cloud}/{d.region} (Ray node {result['node_id'][:12]}, resources {assigned}) in {time.monotonic() - started:.1f}s")
        code = int(result.get("exit_code", 0))
        ray.get(actor.release.remote(name, "finished" if code == 0 else "failed"))
        say(f"{name} {'finished' if code == 0 else f'failed (exit {code})'}; capacity released")
        return code
    finally:
        try:
            remove_placement_group(pg)
        except MCSchedError:
            raise
        except Exception:  # the cluster may already be gone; the actor's reconciler releases anyway
            pass

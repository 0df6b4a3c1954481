"""End-to-end Ray benchmark: batched decisions through the actor, and per-job overhead.

1. Submit N jobs through the scheduler actor's batch API (the ledger commits every batch)
   and print decisions/s and p50/p99 submit-to-placed latency of the jobs placed at once.
2. Run the same job via the Ray Jobs SDK, alternating R times: through mcsched
   (``python -m scheduler run``: ROFR decision, placement group, workload actor) and raw
   (the same workload as the entrypoint, with equivalent ``entrypoint_resources``), and
   print the median wall time of each, their ratio and the fixed seconds per job (median
   through mcsched minus median raw). Targets: >= 5,000 decisions/s; ratio <= 1.10 and
   <= 1 s fixed for a 10 s job (the defaults: 5 runs of 50 steps x 0.2 s).

    python benchmarks/ray_e2e.py [--jobs 5000] [--batch 500] [--repeats 5] [--steps 50 --step-seconds 0.2]

``--jobs 0`` skips the batched part, ``--repeats 0`` the overhead. ``--baseline REV`` adds a third arm, interleaved with
the other two on the same cluster: the job through the driver of git revision REV (exported
with ``git archive``; the job's ``runtime_env`` puts that tree first on ``PYTHONPATH``, so its
driver and workload run REV's code against this tree's scheduler actor). Interleaving keeps
the before and after figures fair on a shared, noisy machine: each run of the three arms
sees the same load.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scheduler.loading import load_catalog, load_contract  # noqa: E402
from scheduler.paths import default_catalog, default_contract  # noqa: E402
from scheduler.runtime.cluster import ClusterInfo, down, up  # noqa: E402
from scheduler.runtime.resources import pool_resource  # noqa: E402


def job_doc(name: str, gpus: int, cls: str = "training", **spec: object) -> dict[str, Any]:
    return {"apiVersion": "mcsched.io/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {"class": cls, "gpus": gpus, "gpuType": "H100", **spec}}


def batched(info: ClusterInfo, n: int, batch: int) -> None:
    import ray

    from scheduler.runtime.actor import get_actor
    from scheduler.runtime.cluster import connect

    connect(info.gcs_address)
    actor = get_actor()
    sizes = [1, 2, 4, 8]
    latencies: list[float] = []
    decided = 0
    t0 = time.perf_counter()
    for b in range(0, n, batch):
        docs = [job_doc(f"bench-{i}", sizes[i % 4], "api-serving" if i % 10 == 0 else "training") for i in range(b, min(n, b + batch))]
        sent = time.perf_counter()
        resp = ray.get(actor.submit.remote(docs))
        took = time.perf_counter() - sent
        assert resp["ok"], resp["error"]
        decided += len(resp["decisions"])
        latencies += [took for d in resp["decisions"] if d["outcome"] == "placed"]
    total = time.perf_counter() - t0
    latencies.sort()

    def p(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000

    print(f"batched submit: {decided:,} decisions in {total:.2f}s = {decided / total:,.0f} decisions/s "
          f"(batch {batch}; target >= 5,000)")
    print(f"submit-to-placed for the {len(latencies):,} jobs placed at once: p50 {p(0.5):.0f} ms, p99 {p(0.99):.0f} ms "
          f"(a job is acknowledged with its batch, after the ledger commit)")
    for d in ray.get(actor.status.remote(None)):
        if d["job"].startswith("bench-") and d["outcome"] in ("placed", "queued"):
            ray.get(actor.cancel.remote(d["job"]))


def overhead(info: ClusterInfo, repeats: int, steps: int, step_seconds: float, baseline: tuple[str, Path] | None = None) -> None:
    from ray.job_submission import JobStatus

    from scheduler.runtime.cluster import jobs_client

    client = jobs_client(info.dashboard_url)
    work = Path(tempfile.mkdtemp(prefix="mcsched-bench-"))
    res = pool_resource("azure", "eastus", "H100")

    def timed(entrypoint: str, **kw: object) -> float:
        start = time.perf_counter()
        sid = client.submit_job(entrypoint=entrypoint, **kw)
        while (status := client.get_job_status(sid)) not in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
            time.sleep(0.05)
        assert status == JobStatus.SUCCEEDED, client.get_job_logs(sid)[-2000:]
        return time.perf_counter() - start

    try:
        _compare(timed, work, res, repeats, steps, step_seconds, baseline)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _compare(timed: Callable[..., float], work: Path, res: str, repeats: int, steps: int, step_seconds: float,
             baseline: tuple[str, Path] | None = None) -> None:
    raw_cmd = f"python -c \"import time\nfor i in range({steps}):\n    time.sleep({step_seconds}); print('step', i + 1, flush=True)\""
    arms: dict[str, list[float]] = {"mcsched": [], "raw": []}
    if baseline is not None:
        arms[f"mcsched@{baseline[0]}"] = []
    for r in range(repeats):
        for arm, runs in arms.items():  # the arms take turns, so each run of them sees the same load
            (work / "job.yaml").write_text(yaml.safe_dump(job_doc(f"overhead-{r}-{len(runs)}-{arm.replace('@', '-')[:20]}".lower(), 8,
                                                                  workload={"steps": steps, "stepSeconds": step_seconds, "checkpointEvery": steps})))
            if arm == "raw":
                runs.append(timed(raw_cmd, runtime_env={"working_dir": str(work)}, entrypoint_resources={res: 8}))
            elif arm == "mcsched":
                runs.append(timed("python -m scheduler run job.yaml", runtime_env={"working_dir": str(work)}))
            else:
                assert baseline is not None
                env = {"PYTHONPATH": os.pathsep.join([str(baseline[1]), os.environ.get("PYTHONPATH", "")])}
                runs.append(timed("python -m scheduler run job.yaml", runtime_env={"working_dir": str(work), "env_vars": env}))
        print("  run " + f"{r + 1}: " + ", ".join(f"{arm} {runs[-1]:.2f}s" for arm, runs in arms.items()), flush=True)
    raw = statistics.median(arms["raw"])
    print(f"same job ({steps} x {step_seconds}s) via Jobs SDK, median of {repeats}: raw {raw:.2f}s")
    for arm, runs in arms.items():
        if arm != "raw":
            via = statistics.median(runs)
            print(f"  {arm:<24} median {via:.2f}s, overhead ratio {via / raw:.3f} (target <= 1.10), "
                  f"fixed {via - raw:.2f}s per job (target <= 1 s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--step-seconds", type=float, default=0.2)
    parser.add_argument("--baseline", metavar="REV", help="also run the job through git revision REV's driver, interleaved, for before/after figures")
    args = parser.parse_args()
    # The cluster's processes (the actor, every job's driver and workload) run this tree's code,
    # not whatever `scheduler` the environment has installed.
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    print(f"== this tree ({ROOT})", flush=True)
    state = Path(tempfile.mkdtemp(prefix="mcsb-", dir="/tmp"))
    os.environ["MCSCHED_HOME"] = str(state)
    catalog = load_catalog(default_catalog())
    from scheduler.runtime.cluster import free_port

    old = export(args.baseline) if args.baseline else None
    try:
        info = up(catalog, load_contract(default_contract(), catalog), state, metrics_port=free_port(), log=lambda m: print(m, file=sys.stderr)).info
        if args.jobs > 0:
            batched(info, args.jobs, args.batch)
        if args.repeats > 0:
            overhead(info, args.repeats, args.steps, args.step_seconds, (args.baseline, old) if old is not None else None)
    finally:
        down(state)  # leaves the cluster first, so no raylet-death noise reaches this process
        shutil.rmtree(state, ignore_errors=True)  # Ray's session logs and the ledger: hundreds of MB
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def export(rev: str) -> Path:
    """Git revision ``rev`` of this repository as a plain tree in a temp dir."""
    import subprocess

    work = Path(tempfile.mkdtemp(prefix="mcsb-base-"))
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(work)], input=archive, check=True)
    print(f"== baseline {rev} (exported to {work}): its driver runs beside this tree's", flush=True)
    return work


if __name__ == "__main__":
    main()

"""End-to-end Ray benchmark: batched decisions through the actor, and per-job overhead.

1. Submit N jobs through the scheduler actor's batch API (the ledger commits every batch)
   and print decisions/s and p50/p99 submit-to-placed latency of the jobs placed at once.
2. Run the same job via the Ray Jobs SDK twice, alternating R times: through mcsched
   (``python -m scheduler run``: ROFR decision, placement group, workload task) and raw
   (the same workload as the entrypoint, with equivalent ``entrypoint_resources``), and
   print the ratio of median wall times. Targets: >= 5,000 decisions/s; ratio <= 1.10.

    python benchmarks/ray_e2e.py [--jobs 5000] [--batch 500] [--repeats 3] [--steps 150 --step-seconds 0.2]   (a 30 s job)

``--baseline REV`` first runs the same benchmark of git revision REV (exported with ``git
archive``, its own cluster started from that tree and stopped again), then this tree's: the
before and after figures of one run, on the same machine a few minutes apart.
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


def overhead(info: ClusterInfo, repeats: int, steps: int, step_seconds: float) -> None:
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
        _compare(timed, work, res, repeats, steps, step_seconds)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _compare(timed: Callable[..., float], work: Path, res: str, repeats: int, steps: int, step_seconds: float) -> None:
    via, raw = [], []
    raw_cmd = f"python -c \"import time\nfor i in range({steps}):\n    time.sleep({step_seconds}); print('step', i + 1, flush=True)\""
    for r in range(repeats):
        (work / "job.yaml").write_text(yaml.safe_dump(job_doc(f"overhead-{r}", 8, workload={"steps": steps, "stepSeconds": step_seconds, "checkpointEvery": steps})))
        via.append(timed("python -m scheduler run job.yaml", runtime_env={"working_dir": str(work)}))
        raw.append(timed(raw_cmd, runtime_env={"working_dir": str(work)}, entrypoint_resources={res: 8}))
        print(f"  run {r + 1}: via mcsched {via[-1]:.2f}s, raw {raw[-1]:.2f}s")
    ratio = statistics.median(via) / statistics.median(raw)
    print(f"same job ({steps} x {step_seconds}s) via Jobs SDK: mcsched median {statistics.median(via):.2f}s, "
          f"raw median {statistics.median(raw):.2f}s, overhead ratio {ratio:.3f} (target <= 1.10)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--step-seconds", type=float, default=0.2)
    parser.add_argument("--baseline", metavar="REV", help="first run this benchmark as of git revision REV, for before/after figures")
    args = parser.parse_args()
    if args.baseline:
        baseline(args)
    # The cluster's processes (the actor, every job's driver and workload) run this tree's code,
    # not whatever `scheduler` the environment has installed.
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    print(f"== this tree ({ROOT})", flush=True)
    state = Path(tempfile.mkdtemp(prefix="mcsb-", dir="/tmp"))
    os.environ["MCSCHED_HOME"] = str(state)
    catalog = load_catalog(default_catalog())
    from scheduler.runtime.cluster import free_port

    try:
        info = up(catalog, load_contract(default_contract(), catalog), state, metrics_port=free_port(), log=lambda m: print(m, file=sys.stderr)).info
        batched(info, args.jobs, args.batch)
        overhead(info, args.repeats, args.steps, args.step_seconds)
    finally:
        down(state)  # leaves the cluster first, so no raylet-death noise reaches this process
        shutil.rmtree(state, ignore_errors=True)  # Ray's session logs and the ledger: hundreds of MB


def baseline(args: argparse.Namespace) -> None:
    import subprocess

    work = Path(tempfile.mkdtemp(prefix="mcsb-base-"))
    try:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.baseline], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(work)], input=archive, check=True)
        print(f"== baseline {args.baseline} (exported to {work})", flush=True)
        flags = ["--jobs", str(args.jobs), "--batch", str(args.batch), "--repeats", str(args.repeats),
                 "--steps", str(args.steps), "--step-seconds", str(args.step_seconds)]
        env = {**os.environ, "PYTHONPATH": str(work)}
        subprocess.run([sys.executable, str(work / "benchmarks" / "ray_e2e.py"), *flags], cwd=work, env=env, check=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

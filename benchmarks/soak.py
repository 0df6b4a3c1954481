"""Soak: 100,000 submissions with finishes and cancels through the scheduler service.

Runs the same ``SchedulerService`` the Ray actor runs (real SQLite ledger, real metrics
registry), in batches, finishing a share of running jobs and cancelling some queued ones
after every batch. Prints peak RSS, decisions/s per window of submissions (on wall and on
CPU time: the fairer figure on a shared machine), and a final ledger verification (Merkle
tree, signed checkpoints, witness, contract checker). Targets: the scheduler's peak RSS <
300 MB with 100k pending (the auditor's verification afterwards is reported on its own);
throughput (CPU time) does not decay by more than 2x over the run. A missed target is
flagged and makes the exit code 1.

    python benchmarks/soak.py [--jobs 100000] [--batch 500]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scheduler.gctune import tune_gc  # noqa: E402
from scheduler.loading import load_catalog, load_contract  # noqa: E402
from scheduler.paths import default_catalog, default_contract  # noqa: E402
from scheduler.runtime.service import SchedulerService  # noqa: E402


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def doc(name: str, rng: random.Random) -> dict[str, Any]:
    cls = rng.choice(["training"] * 6 + ["inference"] * 3 + ["api-serving"])
    return {"apiVersion": "mcsched.io/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {"class": cls, "gpus": rng.choice([8, 16, 32, 64]), "gpuType": rng.choice(["H100", "H100", "H200", "GB200"]),
                     "priority": rng.randint(0, 5)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--pending", type=int, default=100_000, help="keep submitting until this many jobs are pending")
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    tune_gc()  # the actor's process settings (runtime/actor.py's SchedulerActor), as the service runs there
    rng = random.Random(args.seed)
    catalog = load_catalog(default_catalog())
    contract = load_contract(default_contract(), catalog)
    tmp = Path(tempfile.mkdtemp(prefix="mcsched-soak-"))
    try:
        run(args, rng, catalog, contract, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # a 100k-job ledger


def run(args: argparse.Namespace, rng: random.Random, catalog: Any, contract: Any, tmp: Path) -> None:
    svc = SchedulerService(catalog.model_dump(mode="json", by_alias=True), contract.model_dump(mode="json", by_alias=True),
                           str(tmp / "ledger.db"), metrics_port=None)
    loop = asyncio.new_event_loop()

    def call(method: str, *args: Any) -> Any:
        return loop.run_until_complete(getattr(svc, method)(*args))

    call("ping")
    engine = svc.engine
    assert engine is not None
    window = 10_000
    submitted = finished = cancelled = 0
    t_window, cpu_window = time.perf_counter(), time.process_time()
    t_start, cpu_start = t_window, cpu_window
    decisions_at_window = 0
    rates: list[float] = []
    cpu_rates: list[float] = []
    print(f"{'submitted':>10} {'pending':>8} {'running':>8} {'finished':>9} {'cancelled':>9} {'dec/s wall':>11} {'dec/s cpu':>10} {'peak RSS MB':>12}")
    counting = {"n": 0}
    engine.subscribe(lambda ev: counting.__setitem__("n", counting["n"] + (ev.kind in ("placed", "queued"))))
    while submitted < args.jobs or len(engine.queue) < args.pending:
        n = args.batch
        resp = call("submit", [doc(f"s{submitted + i}", rng) for i in range(n)])
        assert resp["ok"], resp["error"]
        submitted += n
        running = [name for name, r in engine.jobs.items() if r.state == "running"] if submitted % 5000 == 0 else None
        if running:
            for name in rng.sample(running, len(running) // 3):  # a third of running work finishes
                call("release", name, "finished")
                finished += 1
            queued = list(engine.queue.names())
            for name in rng.sample(queued, min(len(queued) // 50, 400)):  # 2% of the queue gives up
                call("cancel", name)
                cancelled += 1
        if submitted % window == 0 or (submitted >= args.jobs and len(engine.queue) >= args.pending):
            now, cpu_now = time.perf_counter(), time.process_time()
            made = counting["n"] - decisions_at_window
            rate, cpu_rate = made / (now - t_window), made / max(cpu_now - cpu_window, 1e-9)
            rates.append(rate)
            cpu_rates.append(cpu_rate)
            t_window, cpu_window, decisions_at_window = now, cpu_now, counting["n"]
            counts = engine.counts()
            print(f"{submitted:>10,} {counts.get('queued', 0):>8,} {counts.get('running', 0):>8,} {finished:>9,} {cancelled:>9,} "
                  f"{rate:>11,.0f} {cpu_rate:>10,.0f} {rss_mb():>12.0f}")
    wall, cpu = time.perf_counter() - t_start, time.process_time() - cpu_start
    print(f"whole run: {counting['n']:,} decisions in {cpu:.1f} s CPU / {wall:.1f} s wall = {counting['n'] / cpu:,.0f} decisions/s (cpu), "
          f"{counting['n'] / wall:,.0f} (wall); ledger and metrics on (issue #28's goal: 12,000/s)")
    rss_before_verify = rss_mb()
    pending = engine.counts().get("queued", 0)
    report = svc.ledger.verify() if svc.ledger else None
    missed = []
    ok = rss_before_verify < 300
    missed += [] if ok else ["RSS"]
    print(f"{submitted:,} submissions; the scheduler's peak RSS {rss_before_verify:.0f} MB with {pending:,} pending (target < 300 MB)"
          f"{'' if ok else '  MISSED'}")
    print(f"the ledger's verification afterwards (an auditor's step, same process): peak RSS {rss_mb():.0f} MB")
    if cpu_rates:
        decay = max(cpu_rates) / min(cpu_rates)
        ok = decay <= 2
        missed += [] if ok else ["decay"]
        print(f"throughput (cpu) first window {cpu_rates[0]:,.0f} dec/s, last {cpu_rates[-1]:,.0f} dec/s, decay {decay:.2f}x (target <= 2x)"
              f"{'' if ok else '  MISSED'}; on wall time {rates[0]:,.0f} -> {rates[-1]:,.0f} dec/s, decay {max(rates) / min(rates):.2f}x")
    print(f"final check: {report.line() if report else 'no ledger'}")
    if missed:
        print(f"missed: {', '.join(missed)}")
        sys.exit(1)


if __name__ == "__main__":
    main()
